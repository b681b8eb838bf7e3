//! The contracts the rest of Cairn sees, for [`Storage`], here and nowhere
//! else: the storage contract of `cairn-storage-api` ([`SeriesReader`],
//! [`ShardWriter`]: selects streamed in batches as they are read), and the
//! synchronous [`SampleWriter`] and [`SeriesSource`] the engine and the API
//! still call directly.

use crate::node::Storage;
use cairn_common::{
    ExemplarSeries, Labels, Matcher, MetricMetadata, PreparedBatch, SampleWriter, SeriesData,
    SeriesId, SeriesSource, StorageError, Timestamp, WriteOutcome,
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
    fn write(&self, tenant: &str, batch: PreparedBatch) -> Result<WriteOutcome, StorageError> {
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

    /// The store of `q`'s namespace, once `q` is checked.
    fn query_checks(&self, q: &SeriesQuery) -> Result<&Storage, StoreError> {
        let s = self.in_namespace(&q.namespace)?;
        q.check()?;
        Ok(s)
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
    digest: bool,
    tenant: String,
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
            let batch = if self.digest {
                // Named by id: no label set crosses for a digest.
                let none = Arc::new(Labels::default());
                data.into_iter()
                    .map(|s| {
                        let mut d = cairn_storage_api::SampleDigest::of(&s.samples);
                        d.series = Some(SeriesId::of(&self.tenant, &s.labels));
                        StoredSeries {
                            samples: cairn_storage_api::SeriesSamples::Digest(d),
                            labels: none.clone(),
                        }
                    })
                    .collect()
            } else if self.chunks {
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
    fn downsampled_until(&self, namespace: &str) -> Option<i64> {
        self.downsampled_until(namespace)
    }

    /// Matchers resolved in the index at once; samples read a batch of
    /// [`READ_BATCH`] series at a time as the stream is polled, in the
    /// index's label order (unless the caller takes any order); with `prefer_chunks` each series' merged samples
    /// are re-encoded as one chunk.
    fn select(&self, req: SelectRequest) -> BoxFuture<'_, Result<SeriesStream<'_>, StoreError>> {
        Box::pin(async move {
            let me = self.in_namespace(&req.namespace)?;
            req.check()?;
            // Other shards' series dropped before the sort, which a caller
            // taking them in any order skips; so are, in a digest answer,
            // the shards whose sums equal the caller's.
            let n = me.cfg.num_shards.max(1);
            let mut same = vec![false; n as usize];
            if req.digest {
                for &(s, sum) in &req.digest_unless {
                    if let (Some(theirs), Some(sh)) = (sum, me.shards.get(s as usize)) {
                        let mine = sh.lock().sums.of_range(req.start, req.end, me.block_ms);
                        same[s as usize] = mine == Some(theirs);
                    }
                }
            }
            // Every shard asked the same as the caller's: nothing to read.
            let all_same = match &req.shards {
                ShardSet::Only(v) => v.iter().all(|&s| same.get(s as usize) == Some(&true)),
                ShardSet::All => same.iter().all(|&x| x),
            };
            if req.digest && all_same {
                return Ok(guarded(stream_from_iter(std::iter::empty()), &req));
            }
            let take =
                |s: u32| req.shards.contains(s) && !same.get(s as usize).copied().unwrap_or(false);
            let some = req.shards != ShardSet::All || same.contains(&true);
            let sel = me
                .index
                .select_where(
                    &req.tenant,
                    &req.matchers,
                    some.then_some((n, &take as &dyn Fn(u32) -> bool)),
                    !req.any_order,
                )
                .map_err(|e| StoreError::from(StorageError::from(e)))?;
            let batches = Batches {
                store: me,
                sel,
                pos: 0,
                start: req.start,
                end: req.end,
                chunks: req.prefer_chunks,
                digest: req.digest,
                tenant: req.tenant.clone(),
            };
            Ok(guarded(stream_from_iter(batches), &req))
        })
    }

    /// From each shard's write sums (`shard::WriteSums`).
    fn shard_sums(
        &self,
        req: SelectRequest,
    ) -> BoxFuture<'_, Result<cairn_storage_api::ShardSums, StoreError>> {
        Box::pin(async move {
            let me = self.in_namespace(&req.namespace)?;
            req.validate()?;
            Ok((0..me.shards.len() as u32)
                .filter(|s| req.shards.contains(*s))
                .map(|s| {
                    let sum =
                        me.shards[s as usize]
                            .lock()
                            .sums
                            .of_range(req.start, req.end, me.block_ms);
                    (s, sum)
                })
                .collect())
        })
    }

    fn series(&self, q: SeriesQuery) -> BoxFuture<'_, Result<Vec<Labels>, StoreError>> {
        Box::pin(async move {
            let me = self.query_checks(&q)?;
            let v = me.series_of(&q)?;
            Ok(q.truncate(v))
        })
    }

    fn label_names(&self, q: SeriesQuery) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
        Box::pin(async move {
            let me = self.query_checks(&q)?;
            let v = if q.shards == ShardSet::All {
                SeriesSource::label_names(me, &q.tenant, &q.matchers, q.start, q.end)?
            } else {
                cairn_common::distinct_names(&me.series_of(&q)?)
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
            let me = self.query_checks(&q)?;
            let v = if q.shards == ShardSet::All {
                SeriesSource::label_values(me, &q.tenant, &name, &q.matchers, q.start, q.end)?
            } else {
                cairn_common::distinct_values(&me.series_of(&q)?, &name)
            };
            Ok(q.truncate(v))
        })
    }

    fn exemplars(&self, q: SeriesQuery) -> BoxFuture<'_, Result<Vec<ExemplarSeries>, StoreError>> {
        Box::pin(async move {
            let me = self.query_checks(&q)?;
            let mut v = SeriesSource::exemplars(me, &q.tenant, &q.matchers, q.start, q.end)?;
            if q.shards != ShardSet::All {
                let n = me.cfg.num_shards.max(1);
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

    /// See [`Storage::count_series`]: from the index, no label set built.
    fn cardinality(&self, q: SeriesQuery) -> BoxFuture<'_, Result<Cardinality, StoreError>> {
        Box::pin(async move {
            let me = self.query_checks(&q)?;
            me.count_series(&q)
        })
    }
}

impl Storage {
    /// The counts of [`SeriesReader::cardinality`], from the index without
    /// building a label set: matchers resolved to refs from postings, then
    /// one walk over the tenant's postings keys (so the cost grows with the
    /// tenant's distinct label pairs). Over all retained time and every
    /// shard nothing more is read; otherwise (a time range, as `date` asks,
    /// or some shards only) each candidate's id is read from its registry
    /// entry to keep those of the shards asked with data in a block window
    /// overlapping the range (as [`SeriesReader::series`] keeps them).
    fn count_series(&self, q: &SeriesQuery) -> Result<Cardinality, StoreError> {
        let index = |e: crate::error::Error| StoreError::from(StorageError::from(e));
        let all_time = self.covers_retained_time(q.start, q.end);
        if q.shards == ShardSet::All && all_time && q.matchers.is_empty() {
            return self.index.cardinality(&q.tenant, None).map_err(index);
        }
        let mut refs = self
            .index
            .matching_refs(&q.tenant, &q.matchers)
            .map_err(index)?;
        if q.shards != ShardSet::All || !all_time {
            let n = self.cfg.num_shards.max(1);
            let mut by_shard: Vec<Vec<(u64, SeriesId)>> = vec![Vec::new(); n as usize];
            for (r, id) in self.index.ids_of(&q.tenant, &refs).map_err(index)? {
                let shard = id.shard(n);
                if q.shards.contains(shard) {
                    by_shard[shard as usize].push((r, id));
                }
            }
            refs.clear();
            for (shard, ids) in by_shard.iter().enumerate() {
                if ids.is_empty() {
                    continue;
                }
                let sh = self.shards[shard].lock();
                refs.extend(
                    ids.iter()
                        .filter(|(_, id)| {
                            all_time || sh.has_data(*id, q.start, q.end, self.block_ms)
                        })
                        .map(|(r, _)| *r),
                );
            }
            refs.sort_unstable();
        }
        self.index
            .cardinality(&q.tenant, Some(&refs))
            .map_err(index)
    }
}

impl ShardWriter for Storage {
    /// The ids the namespace's head does not know (the head's map is the
    /// set of registered series).
    fn unknown_series(&self, tenant: &str, namespace: &str, ids: &[SeriesId]) -> Vec<SeriesId> {
        let _ = tenant;
        match self.in_namespace(namespace) {
            Ok(me) => ids.iter().copied().filter(|&id| !me.knows(id)).collect(),
            Err(_) => ids.to_vec(),
        }
    }

    /// A write to one shard must hold only that shard's series (InvalidInput
    /// naming the first that is not); consistency is the caller's business
    /// (this is one replica).
    fn write(&self, req: WriteRequest) -> BoxFuture<'_, Result<WriteOutcome, StoreError>> {
        Box::pin(async move {
            let me = self.in_namespace(&req.namespace)?;
            if let Some(shard) = req.shard {
                let n = me.cfg.num_shards.max(1);
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
            let applied = req.applied;
            // Rollup inputs: their windows are the raw node's to mark late
            // (before and after they land, as a raw write's are).
            let input_times: Vec<i64> =
                if req.namespace == cairn_storage_api::ROLLUP_INPUTS_NAMESPACE {
                    req.batch
                        .series
                        .iter()
                        .flat_map(|s| s.samples.iter().map(|x| x.t))
                        .collect()
                } else {
                    Vec::new()
                };
            self.mark_late_times(&input_times)
                .map_err(StorageError::from)?;
            let out = me
                .write_inner_then(&req.tenant, req.batch, || {
                    if let Some(a) = &applied {
                        a.call();
                    }
                })
                .map_err(StorageError::from)?;
            self.mark_late_times(&input_times)
                .map_err(StorageError::from)?;
            Ok(out)
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

    /// A write's `applied` hook runs once the batch is in the head, while
    /// its fsync is still pending (the HTTP layer gives the write's turn
    /// back there); the write itself returns only once durable.
    #[test]
    fn the_applied_hook_runs_before_the_fsync_and_the_write_waits_for_it() {
        use crate::test_support::{batch, labels};
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::{mpsc, Arc};
        let f = Fixture::new();
        let now = f.now.load(Ordering::SeqCst);
        let s = f.open();
        let (held_tx, held_rx) = mpsc::channel::<()>();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        *s.log.before_sync.lock() = Some(Box::new(move |_: &crate::commitlog::CommitLog| {
            held_tx.send(()).unwrap();
            let _ = go_rx.recv();
        }));
        let applied = Arc::new(AtomicBool::new(false));
        let returned = Arc::new(AtomicBool::new(false));
        let (a, r, s2) = (applied.clone(), returned.clone(), s.clone());
        let writer = std::thread::spawn(move || {
            let b = batch(vec![(labels("m", "x"), vec![(now, 1.0)])]);
            let req = WriteRequest::new("t", b).on_applied(move || a.store(true, Ordering::SeqCst));
            block_on(s2.write(req)).unwrap();
            r.store(true, Ordering::SeqCst);
        });
        held_rx.recv().unwrap();
        // The fsync is held: the hook has run, the write has not returned.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !applied.load(Ordering::SeqCst) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert!(
            applied.load(Ordering::SeqCst),
            "the hook did not run before the fsync"
        );
        assert!(
            !returned.load(Ordering::SeqCst),
            "the write returned before it was durable"
        );
        go_tx.send(()).unwrap();
        writer.join().unwrap();
        assert!(returned.load(Ordering::SeqCst));
        s.close().unwrap();
    }

    /// An aggregated namespace from the config is its own store: writes
    /// and reads naming it see only it, it keeps data for its own
    /// retention (a sample raw refuses as too old is kept), its data lives
    /// under `<data-dir>/namespaces/<name>` and survives a restart both
    /// from its commit log and from its filesets; an unknown namespace is
    /// NotFound naming those held.
    #[test]
    fn aggregated_namespaces_are_stores_of_their_own() {
        use crate::test_support::{batch, labels, DAY};
        use crate::Namespace;
        use cairn_common::{MatchOp, Matcher, PreparedBatch};
        use cairn_storage_api::{select_all, SelectRequest, SeriesQuery, SeriesReader};
        use std::sync::atomic::Ordering;
        let f = Fixture::new();
        let now = f.now.load(Ordering::SeqCst);
        let agg = Namespace::aggregated("5m:1y".parse().unwrap(), None).unwrap();
        let tune = |c: &mut crate::StorageConfig| c.namespaces.push(agg.clone());
        let s = f.open_with(tune);
        let names: Vec<&str> = s.namespaces().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["raw", "agg_5m_1y"]);
        let old = now - 60 * DAY;
        let write = |s: &crate::Storage, ns: &str, name: &str, t: i64| {
            let b = batch(vec![(labels(name, "x"), vec![(t, 1.5)])]);
            let mut req = WriteRequest::new("t", b);
            req.namespace = ns.to_string();
            block_on(s.write(req))
        };
        let o = write(&s, "agg_5m_1y", "m", old).unwrap();
        assert_eq!((o.accepted_samples, o.rejections.len()), (1, 0));
        let o = write(&s, "raw", "too_old", old).unwrap();
        assert_eq!(o.accepted_samples, 0, "raw keeps 30 days");
        write(&s, "raw", "r", now).unwrap();
        let read = |s: &crate::Storage, ns: &str, name: &str| -> Vec<(String, Vec<i64>)> {
            let m = vec![Matcher::new(MatchOp::Equal, "__name__", name).unwrap()];
            let req = SelectRequest::new("t", m, 0, now + DAY).with_namespace(ns);
            block_on(select_all(s, req))
                .unwrap()
                .into_iter()
                .map(|d| {
                    (
                        d.labels.to_string(),
                        d.samples.iter().map(|x| x.t).collect(),
                    )
                })
                .collect()
        };
        let m_agg = vec![("m{job=\"x\"}".to_string(), vec![old])];
        let check = |s: &crate::Storage| {
            assert_eq!(read(s, "agg_5m_1y", "m"), m_agg);
            assert!(read(s, "raw", "m").is_empty());
            assert!(read(s, "agg_5m_1y", "r").is_empty());
            assert_eq!(read(s, "raw", "r").len(), 1);
            let q = SeriesQuery::new("t", vec![], 0, now + DAY);
            let mut agg_q = q.clone();
            agg_q.namespace = "agg_5m_1y".into();
            assert_eq!(
                block_on(s.label_values(agg_q, "__name__".into())).unwrap(),
                ["m"]
            );
            // (raw registers a series whose samples it refused, as before.)
            assert_eq!(
                block_on(s.label_values(q, "__name__".into())).unwrap(),
                ["r", "too_old"]
            );
        };
        check(&s);
        assert!(f.dir.path().join("namespaces/agg_5m_1y/commitlog").exists());
        // From the commit log (no snapshot, no flush), then from filesets.
        s.close().unwrap();
        drop(s);
        let s = f.open_with(tune);
        check(&s);
        assert!(s.flush(true).unwrap() >= 2, "both namespaces flushed");
        s.close().unwrap();
        drop(s);
        let s = f.open_with(tune);
        check(&s);
        let (_, (filesets, _)) = s.disk_stats();
        assert!(filesets >= 2, "{filesets}");
        let e = match block_on(
            s.write(WriteRequest::new("t", PreparedBatch::default()).with_namespace("agg_1h_5y")),
        ) {
            Err(e) => e,
            Ok(_) => panic!("an unknown namespace was written"),
        };
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert!(
            e.message().contains("agg_1h_5y") && e.message().contains("raw, agg_5m_1y"),
            "{e}"
        );
        s.close().unwrap();
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

    /// The node's counts over a time range or some shards (registry ids
    /// read to filter refs) equal counting the label sets `series` returns
    /// for the same query, before and after a flush.
    #[test]
    fn filtered_cardinality_equals_counting_label_sets() {
        use cairn_common::{Labels, MatchOp, Matcher, SampleWriter};
        use cairn_storage_api::{Cardinality, SeriesQuery, SeriesReader, ShardSet};
        let f = Fixture::new();
        let now = now_ms();
        f.now.store(now, std::sync::atomic::Ordering::SeqCst);
        let s = f.open();
        let (old, new) = (now - 6 * 3_600_000, now - 60_000);
        let series: Vec<(Labels, Vec<(i64, f64)>)> = (0..200)
            .map(|i| {
                let l = Labels::from_pairs(&[
                    ("__name__", if i % 3 == 0 { "a" } else { "b" }),
                    ("i", &i.to_string()),
                    ("g", &(i % 7).to_string()),
                ]);
                let t = if i % 2 == 0 { old } else { new };
                (l, vec![(t, 1.0)])
            })
            .collect();
        SampleWriter::write(&*s, "t", crate::test_support::batch(series)).unwrap();
        let n = s.cfg.num_shards;
        let queries = |s: &crate::node::Storage| {
            let mut qs = Vec::new();
            for (start, end) in [(i64::MIN, i64::MAX), (new - 1000, now), (old, old), (0, 1)] {
                for ms in [
                    vec![],
                    vec![Matcher::new(MatchOp::Equal, "__name__", "a").unwrap()],
                    vec![Matcher::new(MatchOp::NotEqual, "g", "3").unwrap()],
                ] {
                    for shards in [
                        ShardSet::All,
                        ShardSet::only(vec![0, n - 1]),
                        ShardSet::only(vec![1]),
                    ] {
                        let mut q = SeriesQuery::new("t", ms.clone(), start, end);
                        q.shards = shards;
                        qs.push(q);
                    }
                }
            }
            for q in qs {
                let got = block_on(s.cardinality(q.clone())).unwrap();
                let want = Cardinality::of_series(&block_on(s.series(q.clone())).unwrap());
                assert_eq!(got, want, "{q:?}");
            }
        };
        queries(&s);
        let all =
            block_on(s.cardinality(SeriesQuery::new("t", vec![], i64::MIN, i64::MAX))).unwrap();
        assert_eq!(all.series, 200);
        let recent =
            block_on(s.cardinality(SeriesQuery::new("t", vec![], new - 1000, now))).unwrap();
        assert_eq!(
            recent.series, 100,
            "only the series with data in the range's block windows"
        );
        s.flush(true).unwrap();
        queries(&s);
    }

    #[test]
    fn a_shard_write_refuses_series_of_other_shards() {
        let f = Fixture::new();
        f.now.store(now_ms(), std::sync::atomic::Ordering::SeqCst);
        let s = f.open();
        let prepared = crate::test_support::batch(vec![(
            crate::test_support::labels("up", "a"),
            vec![(now_ms() - 1000, 1.0)],
        )]);
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
