//! The contracts the rest of Cairn sees, for [`Storage`], here and nowhere
//! else: the storage contract of `cairn-storage-api` ([`SeriesReader`],
//! [`ShardWriter`]: selects streamed in batches as they are read), and the
//! synchronous [`SampleWriter`] and [`SeriesSource`] the engine and the API
//! still call directly.

use crate::node::Storage;
use cairn_common::{
    ExemplarSeries, Labels, Matcher, MetricMetadata, PreparedBatch, SampleWriter, SeriesData,
    SeriesId, SeriesSource, StorageError, Timestamp, WriteBatch, WriteOutcome,
};
use cairn_storage_api::{
    cut_to_limit, guarded, stream_from_iter, BoxFuture, Cardinality, EncodedChunk, SelectRequest,
    SeriesQuery, SeriesReader, SeriesStream, ShardSet, ShardWriter, StoreError, StoredSeries,
    WriteRequest,
};
use std::sync::Arc;

/// Series per batch of a batched select: enough for reads to walk the
/// filesets forward, few enough that a streaming caller holds ~1.5 MiB of
/// samples (1024 series × 100 samples) rather than the whole selection.
pub(crate) const READ_BATCH: usize = 1024;

impl SampleWriter for Storage {
    /// The slow path (tests, promqltest): the batch prepared as the fast
    /// path's is, so both share `write_inner`.
    fn write(&self, tenant: &str, batch: WriteBatch) -> Result<WriteOutcome, StorageError> {
        Ok(self.write_inner(tenant, PreparedBatch::from_batch(tenant, batch))?)
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
        let everything = self.covers_retained_time(start, end);
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
        Ok(cairn_common::distinct_names(&SeriesSource::series(
            self, tenant, matchers, start, end,
        )?))
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
            &SeriesSource::series(self, tenant, matchers, start, end)?,
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

impl Storage {
    /// NotFound unless `namespace` is the one this node holds.
    fn check_namespace(&self, namespace: &str) -> Result<(), StoreError> {
        if namespace != self.ns.name {
            return Err(StoreError::not_found(format!(
                "namespace {namespace:?} does not exist on this node (it holds {:?})",
                self.ns.name
            )));
        }
        Ok(())
    }

    /// Whether `[start, end]` covers every retained block window (and the
    /// next one), so every series of the index is in range.
    fn covers_retained_time(&self, start: Timestamp, end: Timestamp) -> bool {
        let now = (self.clock)();
        start
            <= now
                .saturating_sub(self.ns.retention_ms())
                .saturating_sub(self.block_ms)
            && end >= now.saturating_add(self.block_ms)
    }

    fn query_checks(&self, q: &SeriesQuery) -> Result<(), StoreError> {
        self.check_namespace(&q.namespace)?;
        q.check()
    }

    /// Label sets of `q`, restricted to its shards.
    fn series_of(&self, q: &SeriesQuery) -> Result<Vec<Labels>, StoreError> {
        let mut v = SeriesSource::series(self, &q.tenant, &q.matchers, q.start, q.end)?;
        if q.shards != ShardSet::All {
            let n = self.cfg.num_shards.max(1);
            v.retain(|l| q.shards.contains(SeriesId::of(&q.tenant, l).shard(n)));
        }
        Ok(v)
    }
}

/// A select's batches, each read from the shards when the stream is polled.
struct Batches<'a> {
    store: &'a Storage,
    sel: Vec<(SeriesId, Arc<Labels>)>,
    pos: usize,
    start: Timestamp,
    end: Timestamp,
    chunks: bool,
}

impl Batches<'_> {
    fn read(&mut self) -> Result<Option<Vec<StoredSeries>>, StoreError> {
        while self.pos < self.sel.len() {
            let to = (self.pos + READ_BATCH).min(self.sel.len());
            let data = self
                .store
                .read_series(&self.sel[self.pos..to], self.start, self.end)
                .map_err(|e| StoreError::from(StorageError::from(e)))?;
            self.pos = to;
            if data.is_empty() {
                continue;
            }
            let batch = if self.chunks {
                data.into_iter()
                    .map(|s| {
                        Ok(StoredSeries {
                            samples: cairn_storage_api::SeriesSamples::Chunks(vec![
                                EncodedChunk::encode(&s.samples)?,
                            ]),
                            labels: s.labels,
                        })
                    })
                    .collect::<Result<Vec<_>, StoreError>>()?
            } else {
                data.into_iter().map(StoredSeries::from).collect()
            };
            return Ok(Some(batch));
        }
        Ok(None)
    }
}

impl Iterator for Batches<'_> {
    type Item = Result<Vec<StoredSeries>, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.read() {
            Ok(b) => b.map(Ok),
            Err(e) => {
                self.pos = self.sel.len();
                Some(Err(e))
            }
        }
    }
}

impl SeriesReader for Storage {
    /// Matchers resolved in the index at once; samples read a batch of
    /// [`READ_BATCH`] series at a time as the stream is polled, in the
    /// index's label order; with `prefer_chunks` each series' merged samples
    /// are re-encoded as one chunk.
    fn select(&self, req: SelectRequest) -> BoxFuture<'_, Result<SeriesStream<'_>, StoreError>> {
        Box::pin(async move {
            self.check_namespace(&req.namespace)?;
            req.check()?;
            let mut sel = self
                .index
                .select(&req.tenant, &req.matchers)
                .map_err(|e| StoreError::from(StorageError::from(e)))?;
            if req.shards != ShardSet::All {
                let n = self.cfg.num_shards.max(1);
                sel.retain(|(id, _)| req.shards.contains(id.shard(n)));
            }
            let batches = Batches {
                store: self,
                sel,
                pos: 0,
                start: req.start,
                end: req.end,
                chunks: req.prefer_chunks,
            };
            Ok(guarded(stream_from_iter(batches), &req))
        })
    }

    fn series(&self, q: SeriesQuery) -> BoxFuture<'_, Result<Vec<Labels>, StoreError>> {
        Box::pin(async move {
            self.query_checks(&q)?;
            let v = self.series_of(&q)?;
            Ok(q.truncate(v))
        })
    }

    fn label_names(&self, q: SeriesQuery) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
        Box::pin(async move {
            self.query_checks(&q)?;
            let v = if q.shards == ShardSet::All {
                SeriesSource::label_names(self, &q.tenant, &q.matchers, q.start, q.end)?
            } else {
                cairn_common::distinct_names(&self.series_of(&q)?)
            };
            Ok(q.truncate(v))
        })
    }

    fn label_values(
        &self,
        q: SeriesQuery,
        name: String,
    ) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
        Box::pin(async move {
            self.query_checks(&q)?;
            let v = if q.shards == ShardSet::All {
                SeriesSource::label_values(self, &q.tenant, &name, &q.matchers, q.start, q.end)?
            } else {
                cairn_common::distinct_values(&self.series_of(&q)?, &name)
            };
            Ok(q.truncate(v))
        })
    }

    fn exemplars(&self, q: SeriesQuery) -> BoxFuture<'_, Result<Vec<ExemplarSeries>, StoreError>> {
        Box::pin(async move {
            self.query_checks(&q)?;
            let mut v = SeriesSource::exemplars(self, &q.tenant, &q.matchers, q.start, q.end)?;
            if q.shards != ShardSet::All {
                let n = self.cfg.num_shards.max(1);
                v.retain(|s| {
                    q.shards
                        .contains(SeriesId::of(&q.tenant, &s.labels).shard(n))
                });
            }
            Ok(q.truncate(v))
        })
    }

    fn metadata(
        &self,
        tenant: String,
        metric: Option<String>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<(String, MetricMetadata)>, StoreError>> {
        Box::pin(async move {
            let v = SeriesSource::metadata(self, &tenant, metric.as_deref())?;
            Ok(cut_to_limit(v, limit))
        })
    }

    /// See [`Storage::count_series`]: from the postings when the query
    /// spans all retained time and every shard.
    fn cardinality(&self, q: SeriesQuery) -> BoxFuture<'_, Result<Cardinality, StoreError>> {
        Box::pin(async move {
            self.query_checks(&q)?;
            self.count_series(&q)
        })
    }
}

impl Storage {
    /// The counts of [`SeriesReader::cardinality`]. Over all retained time
    /// and every shard, from the postings alone (matchers resolved to refs,
    /// then one walk over the tenant's postings keys: no label set is read,
    /// so the cost grows with the tenant's distinct label pairs, not with
    /// how many label sets would be decoded). Otherwise (a time range, as
    /// `date` asks, or some shards only: which series those are needs each
    /// series' id, hence its registry entry) from the label sets
    /// [`SeriesReader::series`] selects, series in range at block-window
    /// granularity as there.
    fn count_series(&self, q: &SeriesQuery) -> Result<Cardinality, StoreError> {
        if q.shards == ShardSet::All && self.covers_retained_time(q.start, q.end) {
            let index = |e: crate::error::Error| StoreError::from(StorageError::from(e));
            let refs = if q.matchers.is_empty() {
                None
            } else {
                Some(
                    self.index
                        .matching_refs(&q.tenant, &q.matchers)
                        .map_err(index)?,
                )
            };
            return self
                .index
                .cardinality(&q.tenant, refs.as_deref())
                .map_err(index);
        }
        Ok(Cardinality::of_series(&self.series_of(q)?))
    }
}

impl ShardWriter for Storage {
    /// A write to one shard must hold only that shard's series (InvalidInput
    /// naming the first that is not); consistency is the caller's business
    /// (this is one replica).
    fn write(&self, req: WriteRequest) -> BoxFuture<'_, Result<WriteOutcome, StoreError>> {
        Box::pin(async move {
            self.check_namespace(&req.namespace)?;
            if let Some(shard) = req.shard {
                let n = self.cfg.num_shards.max(1);
                if shard >= n {
                    return Err(StoreError::not_found(format!(
                        "shard {shard} does not exist (this node has {n})"
                    )));
                }
                if let Some(s) = req.batch.series.iter().find(|s| s.id.shard(n) != shard) {
                    return Err(StoreError::invalid(format!(
                        "series {} belongs to shard {}, not {shard}",
                        s.labels.materialize(),
                        s.id.shard(n)
                    )));
                }
            }
            Ok(self
                .write_inner(&req.tenant, req.batch)
                .map_err(StorageError::from)?)
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::test_support::Fixture;
    use cairn_storage_api::{block_on, ErrorKind, ShardWriter, WriteRequest};

    fn now_ms() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
    }

    #[test]
    fn the_storage_node_passes_the_conformance_suite() {
        let f = Fixture::new();
        f.now.store(now_ms(), std::sync::atomic::Ordering::SeqCst);
        let s = f.open();
        cairn_storage_api::conformance::run(&*s);
        // Again with a flush after each write (reads from filesets), after
        // a restart.
        s.close().unwrap();
        drop(s);
        let s = f.open();
        let flush = || {
            s.flush(true).unwrap();
        };
        block_on(cairn_storage_api::conformance::run_flushing(
            &*s, &*s, &flush,
        ));
        let (_, (filesets, _)) = s.disk_stats();
        assert!(filesets > 0, "the reads came from filesets");
    }

    #[test]
    fn a_shard_write_refuses_series_of_other_shards() {
        let f = Fixture::new();
        f.now.store(now_ms(), std::sync::atomic::Ordering::SeqCst);
        let s = f.open();
        let batch = crate::test_support::batch(vec![(
            crate::test_support::labels("up", "a"),
            vec![(now_ms() - 1000, 1.0)],
        )]);
        let prepared = cairn_common::PreparedBatch::from_batch("t", batch);
        let own = prepared.series[0].id.shard(4);
        let wrong = (own + 1) % 4;
        let e = block_on(s.write(WriteRequest::new("t", prepared.clone()).to_shard(wrong)))
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
        assert!(e.message().contains(&format!("shard {own}")), "{e}");
        let e =
            block_on(s.write(WriteRequest::new("t", prepared.clone()).to_shard(9))).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
        let ok = block_on(s.write(WriteRequest::new("t", prepared).to_shard(own))).unwrap();
        assert_eq!(ok.accepted_samples, 1);
    }
}
