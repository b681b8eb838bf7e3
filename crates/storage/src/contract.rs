//! The contracts the rest of Cairn sees: [`SampleWriter`] and
//! [`SeriesSource`] for [`Storage`], both here and nowhere else.

use crate::node::Storage;
use cairn_common::{
    ExemplarSeries, Labels, LazyLabels, Matcher, MetricMetadata, PreparedBatch, PreparedSeries,
    SampleWriter, SeriesData, SeriesId, SeriesSource, StorageError, Timestamp, WriteBatch,
    WriteOutcome,
};
use std::sync::Arc;

/// Series per batch of a batched select: enough for reads to walk the
/// filesets forward, few enough that a streaming caller holds ~1.5 MiB of
/// samples (1024 series × 100 samples) rather than the whole selection.
pub(crate) const READ_BATCH: usize = 1024;

impl SampleWriter for Storage {
    /// The slow path (tests, promqltest): labels are serialised into one
    /// buffer so both paths share `write_inner`.
    fn write(&self, tenant: &str, batch: WriteBatch) -> Result<WriteOutcome, StorageError> {
        let mut buf = Vec::new();
        let mut all_spans = Vec::with_capacity(batch.series.len());
        for s in &batch.series {
            let mut spans = Vec::with_capacity(s.labels.len());
            for l in s.labels.iter() {
                let n0 = buf.len() as u32;
                buf.extend_from_slice(l.name.as_bytes());
                let v0 = buf.len() as u32;
                buf.extend_from_slice(l.value.as_bytes());
                spans.push([n0, v0, v0, buf.len() as u32]);
            }
            all_spans.push(spans);
        }
        let buf = Arc::new(buf);
        let series = batch
            .series
            .into_iter()
            .zip(all_spans)
            .map(|(s, spans)| PreparedSeries {
                id: SeriesId::of(tenant, &s.labels),
                labels: LazyLabels::new(buf.clone(), spans),
                samples: s.samples,
                exemplars: s.exemplars,
            })
            .collect();
        Ok(self.write_inner(
            tenant,
            PreparedBatch {
                series,
                metadata: batch.metadata,
            },
        )?)
    }

    fn write_prepared(
        &self,
        tenant: &str,
        batch: PreparedBatch,
    ) -> Result<WriteOutcome, StorageError> {
        Ok(self.write_inner(tenant, batch)?)
    }
}

impl SeriesSource for Storage {
    fn select(
        &self,
        tenant: &str,
        matchers: &[Matcher],
        start: Timestamp,
        end: Timestamp,
    ) -> Result<Vec<SeriesData>, StorageError> {
        let sel = self.index.select(tenant, matchers)?;
        Ok(self.read_series(&sel, start, end)?)
    }

    /// Batches of [`READ_BATCH`] series in the index's label order, each
    /// read as `select` reads.
    fn select_batched(
        &self,
        tenant: &str,
        matchers: &[Matcher],
        start: Timestamp,
        end: Timestamp,
        f: &mut dyn FnMut(Vec<SeriesData>) -> bool,
    ) -> Result<(), StorageError> {
        let sel = self.index.select(tenant, matchers)?;
        for chunk in sel.chunks(READ_BATCH) {
            if !f(self.read_series(chunk, start, end)?) {
                break;
            }
        }
        Ok(())
    }

    /// Series with data in a block window overlapping `[start, end]` (as
    /// Prometheus, at block granularity: no chunk is decoded); the whole
    /// index when the range covers all retained time.
    fn series(
        &self,
        tenant: &str,
        matchers: &[Matcher],
        start: Timestamp,
        end: Timestamp,
    ) -> Result<Vec<Labels>, StorageError> {
        let sel = self.index.select(tenant, matchers)?;
        let now = (self.clock)();
        let everything = start
            <= now
                .saturating_sub(self.ns.retention_ms())
                .saturating_sub(self.block_ms)
            && end >= now.saturating_add(self.block_ms);
        let n = self.cfg.num_shards.max(1);
        let mut out = Vec::with_capacity(sel.len());
        for (id, l) in sel {
            if everything
                || self.shards[id.shard(n) as usize]
                    .lock()
                    .has_data(id, start, end, self.block_ms)
            {
                out.push(Arc::unwrap_or_clone(l));
            }
        }
        Ok(out)
    }

    fn label_names(
        &self,
        tenant: &str,
        matchers: &[Matcher],
        start: Timestamp,
        end: Timestamp,
    ) -> Result<Vec<String>, StorageError> {
        if matchers.is_empty() {
            return Ok(self.index.label_names(tenant)?);
        }
        Ok(cairn_common::distinct_names(
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
        if matchers.is_empty() {
            return Ok(self.index.label_values(tenant, name)?);
        }
        Ok(cairn_common::distinct_values(
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
        let mut out = Vec::new();
        for (id, labels) in self.index.select(tenant, matchers)? {
            let exemplars = self.index.exemplars(id, start, end)?;
            if !exemplars.is_empty() {
                out.push(ExemplarSeries {
                    labels: Arc::unwrap_or_clone(labels),
                    exemplars,
                });
            }
        }
        Ok(out)
    }

    fn metadata(
        &self,
        tenant: &str,
        metric: Option<&str>,
    ) -> Result<Vec<(String, MetricMetadata)>, StorageError> {
        Ok(self.index.metadata(tenant, metric)?)
    }
}
