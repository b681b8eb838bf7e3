//! The storage contracts: [`SeriesSource`] for reads, [`SampleWriter`] for
//! writes, and [`MemStore`], a small in-memory implementation of both that
//! tests and `cairn promqltest --storage memory` use.

use crate::labels::Labels;
use crate::matcher::Matcher;
use crate::prepared::PreparedBatch;
use crate::sample::{Sample, Timestamp};
use crate::series::{
    Exemplar, ExemplarSeries, MetricMetadata, SeriesData, StorageError, WriteOutcome,
};
use std::collections::BTreeMap;
use std::sync::RwLock;

/// The read contract. Times are milliseconds, both ends inclusive.
/// Implementations: the in-process storage node, a remote shard client, and
/// [`MemStore`].
pub trait SeriesSource: Send + Sync {
    /// Series of `tenant` matching every matcher, with their samples in
    /// `[start, end]`, sorted by labels. Series without samples in the range
    /// may be left out.
    fn select(
        &self,
        tenant: &str,
        matchers: &[Matcher],
        start: Timestamp,
        end: Timestamp,
    ) -> Result<Vec<SeriesData>, StorageError>;

    /// [`select`](Self::select)'s answer handed to `f` in consecutive
    /// batches, in the same order, so a caller that folds series one by one
    /// holds a batch of samples at a time rather than all of them. `f`
    /// returns false to stop early. The default hands out one batch.
    fn select_batched(
        &self,
        tenant: &str,
        matchers: &[Matcher],
        start: Timestamp,
        end: Timestamp,
        f: &mut dyn FnMut(Vec<SeriesData>) -> bool,
    ) -> Result<(), StorageError> {
        f(self.select(tenant, matchers, start, end)?);
        Ok(())
    }

    /// Label sets of the series matching every matcher (no samples), sorted.
    fn series(
        &self,
        tenant: &str,
        matchers: &[Matcher],
        start: Timestamp,
        end: Timestamp,
    ) -> Result<Vec<Labels>, StorageError>;

    /// Sorted, distinct label names; with matchers, only of matching series.
    fn label_names(
        &self,
        tenant: &str,
        matchers: &[Matcher],
        start: Timestamp,
        end: Timestamp,
    ) -> Result<Vec<String>, StorageError>;

    /// Sorted, distinct values of label `name`; with matchers, only of matching series.
    fn label_values(
        &self,
        tenant: &str,
        name: &str,
        matchers: &[Matcher],
        start: Timestamp,
        end: Timestamp,
    ) -> Result<Vec<String>, StorageError>;

    /// Exemplars of matching series in the range.
    fn exemplars(
        &self,
        tenant: &str,
        matchers: &[Matcher],
        start: Timestamp,
        end: Timestamp,
    ) -> Result<Vec<ExemplarSeries>, StorageError>;

    /// Metadata by metric family name (all when `metric` is None).
    fn metadata(
        &self,
        tenant: &str,
        metric: Option<&str>,
    ) -> Result<Vec<(String, MetricMetadata)>, StorageError>;
}

/// The write contract: a validated batch for one tenant. Returns once the
/// accepted samples are durable under the store's fsync policy.
pub trait SampleWriter: Send + Sync {
    fn write(&self, tenant: &str, batch: PreparedBatch) -> Result<WriteOutcome, StorageError>;
}

#[derive(Default)]
struct MemInner {
    /// (tenant, labels) → samples by timestamp (last write wins).
    series: BTreeMap<(String, Labels), BTreeMap<Timestamp, f64>>,
    exemplars: BTreeMap<(String, Labels), Vec<Exemplar>>,
    metadata: BTreeMap<(String, String), MetricMetadata>,
}

impl std::fmt::Debug for MemStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemStore").finish_non_exhaustive()
    }
}

/// An in-memory store implementing both contracts. Not for production: no
/// durability, no compression; it exists so engines and decoders can be tested
/// without RocksDB.
#[derive(Default)]
pub struct MemStore {
    inner: RwLock<MemInner>,
    /// Series per [`SeriesSource::select_batched`] batch (0: one batch).
    batch: usize,
}

fn matches_all(labels: &Labels, matchers: &[Matcher]) -> bool {
    matchers
        .iter()
        .all(|m| m.matches(labels.get(&m.name).unwrap_or("")))
}

impl MemStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// A store that hands out batched selects `n` series at a time (to test
    /// callers against sources that stream).
    pub fn with_batch_size(n: usize) -> Self {
        Self {
            batch: n,
            ..Self::default()
        }
    }

    /// Adds one sample (test helper).
    pub fn add(&self, tenant: &str, labels: &Labels, t: Timestamp, v: f64) {
        let mut g = self.inner.write().unwrap_or_else(|p| p.into_inner());
        g.series
            .entry((tenant.to_string(), labels.clone()))
            .or_default()
            .insert(t, v);
    }

    /// Drops everything (promqltest's `clear`).
    pub fn clear(&self) {
        let mut g = self.inner.write().unwrap_or_else(|p| p.into_inner());
        *g = MemInner::default();
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, MemInner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }
}

impl SampleWriter for MemStore {
    fn write(&self, tenant: &str, mut batch: PreparedBatch) -> Result<WriteOutcome, StorageError> {
        let mut out = WriteOutcome::default();
        let mut g = self.inner.write().unwrap_or_else(|p| p.into_inner());
        let metadata = std::mem::take(&mut batch.metadata);
        for s in batch.into_series() {
            let key = (tenant.to_string(), s.labels);
            let e = g.series.entry(key.clone()).or_default();
            for smp in &s.samples {
                e.insert(smp.t, smp.v);
            }
            out.accepted_samples += s.samples.len();
            if !s.exemplars.is_empty() {
                out.accepted_exemplars += s.exemplars.len();
                g.exemplars.entry(key).or_default().extend(s.exemplars);
            }
        }
        for (name, md) in metadata {
            g.metadata.insert((tenant.to_string(), name), md);
        }
        Ok(out)
    }
}

impl SeriesSource for MemStore {
    fn select(
        &self,
        tenant: &str,
        matchers: &[Matcher],
        start: Timestamp,
        end: Timestamp,
    ) -> Result<Vec<SeriesData>, StorageError> {
        let g = self.read();
        let mut out = Vec::new();
        for ((t, labels), samples) in g.series.iter() {
            if t != tenant || !matches_all(labels, matchers) {
                continue;
            }
            let samples: Vec<Sample> = samples
                .range(start..=end)
                .map(|(&t, &v)| Sample { t, v })
                .collect();
            if !samples.is_empty() {
                out.push(SeriesData {
                    labels: std::sync::Arc::new(labels.clone()),
                    samples,
                });
            }
        }
        Ok(out)
    }

    fn select_batched(
        &self,
        tenant: &str,
        matchers: &[Matcher],
        start: Timestamp,
        end: Timestamp,
        f: &mut dyn FnMut(Vec<SeriesData>) -> bool,
    ) -> Result<(), StorageError> {
        let mut all = self.select(tenant, matchers, start, end)?;
        if self.batch == 0 {
            f(all);
            return Ok(());
        }
        while !all.is_empty() {
            let rest = all.split_off(self.batch.min(all.len()));
            if !f(std::mem::replace(&mut all, rest)) {
                break;
            }
        }
        Ok(())
    }

    fn series(
        &self,
        tenant: &str,
        matchers: &[Matcher],
        start: Timestamp,
        end: Timestamp,
    ) -> Result<Vec<Labels>, StorageError> {
        Ok(self
            .select(tenant, matchers, start, end)?
            .into_iter()
            .map(|s| std::sync::Arc::unwrap_or_clone(s.labels))
            .collect())
    }

    fn label_names(
        &self,
        tenant: &str,
        matchers: &[Matcher],
        start: Timestamp,
        end: Timestamp,
    ) -> Result<Vec<String>, StorageError> {
        Ok(crate::labels::distinct_names(
            &self.series(tenant, matchers, start, end)?,
        ))
    }

    fn label_values(
        &self,
        tenant: &str,
        name: &str,
        matchers: &[Matcher],
        start: Timestamp,
        end: Timestamp,
    ) -> Result<Vec<String>, StorageError> {
        Ok(crate::labels::distinct_values(
            &self.series(tenant, matchers, start, end)?,
            name,
        ))
    }

    fn exemplars(
        &self,
        tenant: &str,
        matchers: &[Matcher],
        start: Timestamp,
        end: Timestamp,
    ) -> Result<Vec<ExemplarSeries>, StorageError> {
        let g = self.read();
        Ok(g.exemplars
            .iter()
            .filter(|((t, l), _)| t == tenant && matches_all(l, matchers))
            .map(|((_, l), ex)| ExemplarSeries {
                labels: l.clone(),
                exemplars: ex
                    .iter()
                    .filter(|e| e.t >= start && e.t <= end)
                    .cloned()
                    .collect(),
            })
            .filter(|s| !s.exemplars.is_empty())
            .collect())
    }

    fn metadata(
        &self,
        tenant: &str,
        metric: Option<&str>,
    ) -> Result<Vec<(String, MetricMetadata)>, StorageError> {
        let g = self.read();
        Ok(g.metadata
            .iter()
            .filter(|((t, n), _)| t == tenant && metric.is_none_or(|m| m == n))
            .map(|((_, n), md)| (n.clone(), md.clone()))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matcher::MatchOp;

    #[test]
    fn mem_source_isolates_tenants_and_filters_range() {
        let m = MemStore::new();
        let l = Labels::from_pairs(&[("__name__", "up"), ("job", "a")]);
        m.add("t1", &l, 10, 1.0);
        m.add("t1", &l, 20, 2.0);
        m.add("t2", &l, 10, 9.0);
        let sel = [Matcher::new(MatchOp::Equal, "__name__", "up").unwrap()];
        let r = m.select("t1", &sel, 15, 30).unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].samples, vec![Sample::new(20, 2.0)]);
        assert_eq!(m.select("t3", &sel, 0, 30).unwrap().len(), 0);
        assert_eq!(m.label_values("t1", "job", &[], 0, 30).unwrap(), vec!["a"]);
    }
}
