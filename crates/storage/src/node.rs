//! The node: one storage node's state — its namespace's shards, the commit
//! log, the label index — opened by recovery, written through the write
//! path here, read through `contract.rs`, flushed by `flush.rs`, closed
//! at shutdown (flush task joined, log synced). A node holding aggregated
//! namespaces opens one such store per namespace under
//! `<data-dir>/namespaces/<name>/` (its own commit log, index, head,
//! filesets, snapshots and retention) and routes each request by the
//! namespace it names.

use crate::commitlog::CommitLog;
use crate::config::{Clock, CommitLogFormat, StorageConfig};
use crate::downsample::{self, Downsampler};
use crate::enc;
use crate::error::{Error, Result};
use crate::fileset::Fileset;
use crate::flush::{FlushCtx, FlushTask, Flusher};
use crate::index::Index;
use crate::metrics::{GaugeSource, Gauges, Metrics};
use crate::namespace::{self, block_start, Namespace};
use crate::record;
use crate::recovery;
use crate::shard::Shard;
use cairn_common::limits::{hard, truncate_str};
use cairn_common::{
    Labels, PreparedBatch, PreparedSeries, Sample, SeriesData, SeriesId, SeriesWrite, Timestamp,
    WriteOutcome, WriteRejection,
};
use parking_lot::{Mutex, RwLock};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Instant;

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage").finish_non_exhaustive()
    }
}

/// One storage node: open it with [`Storage::open`], hand it to the rest of
/// Cairn as a `SampleWriter` and a `SeriesSource`, start its background
/// flush with [`Storage::start_background`], and [`Storage::close`] it at
/// shutdown.
pub struct Storage {
    pub(crate) cfg: StorageConfig,
    /// The namespace written and read (`raw`; see [`namespace::validate`]).
    pub(crate) ns: Namespace,
    /// `<data-dir>/data/<namespace>`: its filesets.
    ns_root: PathBuf,
    pub(crate) block_ms: i64,
    pub(crate) index: Index,
    pub(crate) log: Arc<CommitLog>,
    pub(crate) shards: Vec<Mutex<Shard>>,
    /// Writers hold it shared across log-append + head-apply; a flush takes it
    /// exclusively to seal the log at a point where the head holds everything
    /// written so far.
    apply_lock: RwLock<()>,
    /// The version 2 record encoder (its per-segment refs and previous
    /// values): locked only inside the log's append, so it sees records in
    /// the order they land.
    encoder: Mutex<record::Encoder>,
    flusher: Flusher,
    /// `<data-dir>/snapshots`.
    snapshots: PathBuf,
    /// When the last head snapshot was taken (or the node opened).
    last_snapshot: Mutex<Instant>,
    /// The background flush thread, stopped and joined by [`Storage::close`].
    pub(crate) flush_task: Mutex<Option<FlushTask>>,
    /// The stores of the aggregated namespaces (none of their own), in the
    /// config's order; the node's flush, snapshot, background work and
    /// close reach them too.
    aggregated: Vec<Arc<Storage>>,
    /// Per aggregated namespace (same order): its downsampling state.
    downsamplers: Vec<Downsampler>,
    /// The newest sample time written, or held in the head at open (the
    /// downsampling watermark's base; `i64::MIN`: none).
    newest: AtomicI64,
    /// The tenants' mapping rules (none: every series into every
    /// aggregated namespace); set by the binary once the store is open.
    mapping: RwLock<Option<Arc<dyn downsample::Mapping>>>,
    pub(crate) clock: Clock,
    pub metrics: Metrics,
}

/// Where the store of aggregated namespace `name` keeps its files.
pub(crate) fn namespace_dir(data_dir: &std::path::Path, name: &str) -> PathBuf {
    data_dir.join("namespaces").join(name)
}

/// Writes the queued rollup series, tenant by tenant; a rollup the
/// namespace refuses (older than its retention) is dropped, as it would be
/// expired anyway.
fn write_rollups(
    agg: &Storage,
    pending: &mut std::collections::BTreeMap<String, Vec<SeriesWrite>>,
) -> Result<()> {
    for (tenant, series) in std::mem::take(pending) {
        let batch = PreparedBatch::from_series(&tenant, series, Vec::new());
        let out = agg.write_inner(&tenant, batch)?;
        if !out.rejections.is_empty() {
            tracing::debug!(rejected = out.rejections.len(), "rollups refused");
        }
    }
    Ok(())
}

/// A series in Prometheus text form for a rejection, at most 1 KiB of it
/// (a series written by id alone: `id:` and its id in hex, which the
/// sender maps back to its labels).
fn series_text(s: &PreparedSeries) -> String {
    if s.labels.is_empty() {
        return format!("id:{:032x}", s.id.0);
    }
    truncate_str(&s.labels.materialize().to_string(), 1024).into_owned()
}

impl Storage {
    /// Opens the store: RocksDB index, filesets, then commit-log replay.
    /// Returns once recovery is complete (the node may then report ready).
    pub fn open(cfg: StorageConfig, clock: Clock) -> Result<Arc<Self>> {
        let (raw, aggregated) = namespace::validate(&cfg.namespaces)?;
        let raw = raw.clone();
        let mut stores = Vec::with_capacity(aggregated.len());
        let mut downsamplers = Vec::with_capacity(aggregated.len());
        // With aggregated namespaces, also the internal one of rollup
        // rules' input copies (raw samples, kept a few hours; last, so the
        // downsamplers stay in step with the aggregated ones).
        let inputs = cfg.rollup_inputs();
        for ns in aggregated.iter().copied().chain(inputs.iter()) {
            let _span = tracing::info_span!("namespace", name = %ns.name).entered();
            let mut c = cfg.clone();
            c.data_dir = namespace_dir(&cfg.data_dir, &ns.name);
            c.namespaces = vec![ns.clone()];
            // Its writes are the node's own rollups, not clients' requests.
            c.max_new_series_per_request = usize::MAX;
            if let Some(r) = ns.resolution {
                downsamplers.push(Downsampler::open(
                    &c.data_dir,
                    (r.as_millis() as i64).max(1),
                )?);
            }
            stores.push(Self::open_one(
                c,
                ns.clone(),
                Vec::new(),
                Vec::new(),
                clock.clone(),
            )?);
        }
        Self::open_one(cfg, raw, stores, downsamplers, clock)
    }

    /// Opens the store of one namespace, `ns`, in `cfg.data_dir`.
    fn open_one(
        cfg: StorageConfig,
        ns: Namespace,
        aggregated: Vec<Arc<Storage>>,
        downsamplers: Vec<Downsampler>,
        clock: Clock,
    ) -> Result<Arc<Self>> {
        let started = Instant::now();
        let data_dir = cfg.data_dir.clone();
        std::fs::create_dir_all(&data_dir).map_err(|source| Error::Io {
            context: format!("creating data dir {}", data_dir.display()),
            source,
        })?;
        let index =
            Index::open_with_cache(&data_dir.join("index"), cfg.index_cache_bytes as usize)?;
        // Reads of some shards skip the others' series before their labels.
        index.track_shards(cfg.num_shards)?;
        let ns_root = data_dir.join("data").join(&ns.name);
        let metrics = Metrics::default();
        let (mut shards, log) = recovery::recover(started, &cfg, &ns, &ns_root, &index, &metrics)?;
        for s in &mut shards {
            s.start_counting();
        }
        metrics
            .recovery_seconds
            .set(started.elapsed().as_secs_f64());
        // The downsampling watermark's base survives a restart as far as
        // the head holds it (what was flushed was downsampled before).
        let newest = if downsamplers.is_empty() {
            i64::MIN
        } else {
            shards
                .iter()
                .filter_map(|s| s.head.newest())
                .max()
                .unwrap_or(i64::MIN)
        };
        Ok(Arc::new(Storage {
            block_ms: ns.block_ms(),
            ns,
            ns_root,
            index,
            log,
            shards: shards.into_iter().map(Mutex::new).collect(),
            apply_lock: RwLock::new(()),
            encoder: Mutex::new(record::Encoder::new(match cfg.commitlog_format {
                CommitLogFormat::V2(c) => c,
                CommitLogFormat::V1 => record::Compression::None,
            })),
            flusher: Flusher::default(),
            snapshots: crate::snapshot::root(&data_dir),
            last_snapshot: Mutex::new(Instant::now()),
            flush_task: Mutex::new(None),
            aggregated,
            downsamplers,
            newest: AtomicI64::new(newest),
            mapping: RwLock::new(None),
            clock,
            metrics,
            cfg,
        }))
    }

    /// The store of namespace `name`: this one, or one of its aggregated
    /// namespaces'; NotFound naming the namespaces held otherwise.
    pub(crate) fn in_namespace(
        &self,
        name: &str,
    ) -> std::result::Result<&Storage, cairn_storage_api::StoreError> {
        if name == self.ns.name {
            return Ok(self);
        }
        if let Some(s) = self.aggregated.iter().find(|s| s.ns.name == name) {
            return Ok(s);
        }
        let held: Vec<&str> = self.namespaces().map(|n| n.name.as_str()).collect();
        Err(cairn_storage_api::StoreError::not_found(format!(
            "namespace {name:?} does not exist on this node (it holds {})",
            held.join(", ")
        )))
    }

    /// Every namespace this node holds: `raw` first, then the aggregated
    /// ones in the config's order.
    /// The namespaces of the config (raw and the aggregated ones; not the
    /// internal one of rollup rules' inputs).
    pub fn namespaces(&self) -> impl Iterator<Item = &Namespace> {
        std::iter::once(&self.ns).chain(
            self.aggregated
                .iter()
                .map(|s| &s.ns)
                .filter(|n| n.name != cairn_storage_api::ROLLUP_INPUTS_NAMESPACE),
        )
    }

    pub fn config(&self) -> &StorageConfig {
        &self.cfg
    }

    /// The namespace writes go to unless they name another (`raw`).
    pub fn namespace(&self) -> &Namespace {
        &self.ns
    }

    /// Whether series `id` is registered here (its head knows it).
    pub(crate) fn knows(&self, id: SeriesId) -> bool {
        self.shard_of(id).lock().head.knows(id)
    }

    fn shard_of(&self, id: SeriesId) -> &Mutex<Shard> {
        &self.shards[id.shard(self.cfg.num_shards.max(1)) as usize]
    }

    fn block_of(&self, t: Timestamp) -> i64 {
        block_start(t, self.block_ms)
    }

    /// Starts the background flush thread (replacing one started before):
    /// every `flush-interval` it flushes closed windows and applies
    /// retention; every few seconds it checks head memory and, above
    /// `head-max-bytes`, flushes everything (open windows included) so the
    /// head stays bounded. [`close`](Self::close) stops and joins it.
    pub fn start_background(self: &Arc<Self>) {
        for s in &self.aggregated {
            s.start_background();
        }
        let me = Arc::downgrade(self);
        let task = FlushTask::spawn(self.cfg.flush_interval, move |periodic| {
            let Some(s) = me.upgrade() else {
                return false;
            };
            s.background_tick(periodic);
            true
        });
        match task {
            Ok(task) => {
                let old = self.flush_task.lock().replace(task);
                if let Some(old) = old {
                    old.stop();
                }
            }
            Err(e) => tracing::error!(%e, "background flush not started"),
        }
    }

    /// Logs of an aggregated namespace's store name it.
    fn log_span(&self) -> tracing::span::EnteredSpan {
        if self.ns.name == namespace::RAW {
            tracing::Span::none().entered()
        } else {
            tracing::info_span!("namespace", name = %self.ns.name).entered()
        }
    }

    fn background_tick(&self, periodic: bool) {
        let _span = self.log_span();
        let (_, head_bytes, _) = self.head_stats();
        if head_bytes as u64 > self.cfg.head_max_bytes {
            tracing::warn!(
                head_bytes,
                limit = self.cfg.head_max_bytes,
                "head above storage.head-max-bytes: flushing open windows early"
            );
            if let Err(e) = self.flush(true) {
                tracing::error!(?e, "memory-pressure flush failed");
            }
        }
        if periodic {
            if let Err(e) = self.flush(false) {
                tracing::error!(?e, "background flush failed");
            }
            self.enforce_retention();
        }
        let every = self.cfg.snapshot_interval;
        if !every.is_zero() && self.last_snapshot.lock().elapsed() >= every {
            // A failure is logged and counted; the next tick tries again.
            let _ = self.snapshot();
        }
    }

    /// Writes the aggregated namespaces' closed windows (see
    /// [`downsample`](crate::downsample)), then flushes closed blocks (or,
    /// with `force`, everything) to filesets and truncates the commit log,
    /// in every namespace. Returns the number of filesets written.
    pub fn flush(&self, force: bool) -> Result<usize> {
        self.downsample()?;
        let span = self.log_span();
        let mut n = self.flusher.run(&self.flush_ctx(), force)?;
        drop(span);
        for s in &self.aggregated {
            n += s.flush(force)?;
        }
        Ok(n)
    }

    /// Follows `mapping` (the tenants' mapping rules) from the next
    /// downsampling pass on: which aggregated namespaces each series'
    /// windows are written into.
    pub fn set_mapping(&self, mapping: Arc<dyn downsample::Mapping>) {
        *self.mapping.write() = Some(mapping);
    }

    /// Each aggregated namespace's downsampling progress (for `/metrics`).
    fn downsample_lag(&self) -> Vec<crate::metrics::DownsampleLag> {
        let newest = self.newest.load(Ordering::Acquire);
        self.aggregated
            .iter()
            .zip(&self.downsamplers)
            .map(|(agg, d)| {
                let done = d.done();
                let r = d.resolution_ms.max(1);
                let closed = (newest != i64::MIN).then(|| d.closed_before(newest));
                crate::metrics::DownsampleLag {
                    namespace: agg.ns.name.clone(),
                    lag_seconds: done
                        .filter(|_| newest != i64::MIN)
                        .map(|w| (newest - w).max(0) as f64 / 1000.0),
                    windows_pending: match (closed, done) {
                        (Some(c), Some(w)) => ((c - w).max(0) / r) as u64,
                        _ => 0,
                    },
                    late_windows_pending: d.dirty().len() as u64,
                }
            })
            .collect()
    }

    /// How far aggregated namespace `name` is written: its windows
    /// starting before the time returned (None: no pass yet, or no such
    /// namespace).
    pub fn downsampled_until(&self, name: &str) -> Option<i64> {
        let i = self.aggregated.iter().position(|s| s.ns.name == name)?;
        self.downsamplers.get(i)?.done()
    }

    /// One downsampling pass over every aggregated namespace (see
    /// [`downsample`](crate::downsample)): the windows closed since the
    /// last pass and the late ones, computed from the raw samples and
    /// written as rollup series, durable before the progress marker moves.
    /// Returns the windows written.
    pub fn downsample(&self) -> Result<usize> {
        let newest = self.newest.load(Ordering::Acquire);
        let mut n = 0;
        for (agg, d) in self.aggregated.iter().zip(&self.downsamplers) {
            let _span = agg.log_span();
            let _one = d.running.lock();
            let r = d.resolution_ms;
            let marks = d.dirty();
            let dirty: Vec<i64> = marks.iter().map(|m| m.0).collect();
            let retained =
                cairn_downsample::window_start((self.clock)() - self.ns.retention_ms(), r);
            let done = d.done().unwrap_or(retained);
            let until = if newest == i64::MIN {
                done
            } else {
                d.closed_before(newest).max(done)
            };
            // Ranges of whole windows: the late ones (before `done`), then
            // the newly closed ones.
            let mut ranges: Vec<(i64, i64)> = Vec::new();
            for &w in &dirty {
                match ranges.last_mut() {
                    Some(last) if last.1 == w => last.1 = w + r,
                    _ => ranges.push((w, w + r)),
                }
            }
            if until > done {
                ranges.push((done, until));
            }
            if ranges.is_empty() {
                continue;
            }
            d.begin(until);
            let written = match self.downsample_ranges(agg, r, &ranges, done) {
                Ok(n) => n,
                Err(e) => {
                    d.begin(i64::MIN);
                    return Err(e);
                }
            };
            crate::fault::fail_point("downsample-before-sync");
            agg.log.sync_now()?;
            crate::fault::fail_point("downsample-before-marker");
            d.advance(until, &marks)?;
            if written > 0 {
                self.metrics.downsample_passes.inc();
                self.metrics.downsample_windows.inc_by(written as u64);
                tracing::debug!(windows = written, ?ranges, "downsampled");
            }
            n += written;
        }
        Ok(n)
    }

    /// Writes into `agg` the rollups of every series' windows in `ranges`
    /// (whole windows of `r` ms, oldest first; those starting before
    /// `recompute_before` were written before), and each classic
    /// histogram's p99 and max exemplar per window; returns the windows
    /// written.
    fn downsample_ranges(
        &self,
        agg: &Storage,
        r: i64,
        ranges: &[(i64, i64)],
        recompute_before: i64,
    ) -> Result<usize> {
        // The value a range's first window carries in is the last one
        // before it: looked for back as far as retention.
        let oldest = (self.clock)() - self.ns.retention_ms();
        let mut pending: std::collections::BTreeMap<String, Vec<SeriesWrite>> = Default::default();
        let mut queued = 0usize;
        let mut windows = 0usize;
        let mapping = self.mapping.read().clone();
        let mut histograms = downsample::Histograms::default();
        for id in self.index.all_series_ids()? {
            let mut wins = self.series_windows(id, r, ranges, oldest)?;
            if wins.is_empty() {
                continue;
            }
            let Some((tenant, labels)) = self.index.series_labels(id)? else {
                continue;
            };
            if let Some(m) = &mapping {
                let rules = m.rules(&tenant, &labels);
                if !rules.is_empty() {
                    self.apply_mapping(&rules, &agg.ns.name, &mut wins);
                    if wins.is_empty() {
                        continue;
                    }
                }
            }
            windows += wins.len();
            if let Some(le) = downsample::bucket_bound(&labels) {
                let (lo, hi) = (wins[0].win.start, wins[wins.len() - 1].win.start + r - 1);
                let exemplars = self.index.exemplars(id, lo, hi)?;
                histograms.add(&tenant, &labels, le, &wins, exemplars);
            }
            let writes = downsample::rollup_writes(&labels, &wins);
            queued += writes.len();
            pending.entry(tenant).or_default().extend(writes);
            if queued >= 10_000 {
                write_rollups(agg, &mut pending)?;
                queued = 0;
            }
        }
        // Rollup rules: the inputs copied to the output's shard, summed by
        // output series per window (in id order: every replica adds alike).
        if let Some(inputs) = self.rollup_inputs() {
            let mut sums: std::collections::BTreeMap<
                (String, Labels),
                std::collections::BTreeMap<i64, f64>,
            > = Default::default();
            for id in inputs.index.all_series_ids()? {
                let wins = inputs.series_windows(id, r, ranges, oldest)?;
                if wins.is_empty() {
                    continue;
                }
                let Some((tenant, labels)) = inputs.index.series_labels(id)? else {
                    continue;
                };
                let per = sums
                    .entry((tenant, labels.without(&[cairn_common::INPUT_LABEL])))
                    .or_default();
                for w in &wins {
                    let inc = downsample::Rollup::Increase.samples(&w.win, w.prev_t);
                    if let Some(x) = inc.first() {
                        *per.entry(w.win.start).or_default() += x.v;
                    }
                }
            }
            for ((tenant, labels), mut per) in sums {
                // An output is kept at the policies the tenant's mapping
                // rules give its own labels (every namespace when none match).
                if let Some(m) = &mapping {
                    let rules = m.rules(&tenant, &labels);
                    if !rules.is_empty() {
                        let before = per.len();
                        per.retain(|&w, _| cairn_downsample::keeps(&rules, &agg.ns.name, w, false));
                        self.metrics
                            .downsample_mapped_out
                            .inc_by((before - per.len()) as u64);
                        if per.is_empty() {
                            continue;
                        }
                    }
                }
                windows += per.len();
                pending.entry(tenant).or_default().push(SeriesWrite {
                    labels: downsample::rollup_labels(&labels, downsample::Rollup::Increase),
                    samples: per
                        .iter()
                        .map(|(&w, &v)| Sample::new(w + r - 1, v))
                        .collect(),
                    exemplars: vec![],
                });
            }
        }
        write_rollups(agg, &mut pending)?;
        let (clear, items) = histograms.exemplars(r, recompute_before);
        agg.index.replace_exemplars(&clear, &items)?;
        Ok(windows)
    }

    /// The windows in `ranges` (whole windows of `r` ms) of series `id` of
    /// this store, from its raw samples (the value carried into the first
    /// window looked for a day back, then as far as `oldest`).
    fn series_windows(
        &self,
        id: SeriesId,
        r: i64,
        ranges: &[(i64, i64)],
        oldest: i64,
    ) -> Result<Vec<downsample::SeriesWindow>> {
        const NEAR: i64 = 86_400_000;
        let mut wins = Vec::new();
        let sh = self.shard_of(id).lock();
        for &(from, to) in ranges {
            if !sh.has_data(id, from, to - 1, self.block_ms) {
                continue;
            }
            let samples = sh.read(id, from - NEAR, to - 1, self.block_ms)?;
            let prev = if samples.first().is_some_and(|s| s.t < from) {
                None
            } else {
                sh.read(id, oldest, from - NEAR - 1, self.block_ms)?
                    .iter()
                    .rev()
                    .find(|s| !cairn_common::is_stale_nan(s.v))
                    .copied()
            };
            wins.extend(downsample::windows(r, from, to, &samples, prev)?);
        }
        Ok(wins)
    }

    /// The store of rollup rules' input copies, when this node has one.
    fn rollup_inputs(&self) -> Option<&Storage> {
        self.aggregated
            .iter()
            .find(|s| s.ns.name == cairn_storage_api::ROLLUP_INPUTS_NAMESPACE)
            .map(|s| &**s)
    }

    /// Marks late, in every aggregated namespace, the windows of `times`
    /// already written or being written (see `write_inner`).
    pub(crate) fn mark_late_times(&self, times: &[i64]) -> Result<()> {
        let Some(&lo) = times.iter().min() else {
            return Ok(());
        };
        for d in &self.downsamplers {
            if d.may_be_late(lo) {
                let n = d.mark_late(times.iter().copied())?;
                self.metrics.downsample_late_windows.inc_by(n as u64);
            }
        }
        Ok(())
    }

    /// Keeps of `wins` the windows that the mapping rules a series matched
    /// (`rules`) send to namespace `ns`, counting those left out and those
    /// a dry-run rule would have decided otherwise.
    fn apply_mapping(
        &self,
        rules: &[cairn_downsample::MatchedMapping],
        ns: &str,
        wins: &mut Vec<downsample::SeriesWindow>,
    ) {
        let before = wins.len();
        let mut dry_changed = 0u64;
        wins.retain(|w| {
            let keep = cairn_downsample::keeps(rules, ns, w.win.start, false);
            if keep != cairn_downsample::keeps(rules, ns, w.win.start, true) {
                dry_changed += 1;
            }
            keep
        });
        self.metrics
            .downsample_mapped_out
            .inc_by((before - wins.len()) as u64);
        self.metrics.downsample_dry_run_changed.inc_by(dry_changed);
    }

    /// Takes a head snapshot now, of every namespace (see
    /// [`Storage::start_background`] for when it happens by itself);
    /// returns the commit-log segment it covers in `raw`.
    pub fn snapshot(&self) -> Result<u64> {
        let span = self.log_span();
        let covered = self.flusher.snapshot(&self.flush_ctx())?;
        drop(span);
        *self.last_snapshot.lock() = Instant::now();
        for s in &self.aggregated {
            s.snapshot()?;
        }
        Ok(covered)
    }

    fn flush_ctx(&self) -> FlushCtx<'_> {
        FlushCtx {
            shards: &self.shards,
            log: &self.log,
            index: &self.index,
            apply_lock: &self.apply_lock,
            metrics: &self.metrics,
            clock: &self.clock,
            root: &self.ns_root,
            block_ms: self.block_ms,
            buffer_past: self.cfg.buffer_past,
            snapshots: &self.snapshots,
        }
    }

    /// Deletes filesets whose whole window is older than retention (each
    /// namespace its own).
    pub fn enforce_retention(&self) {
        for s in &self.aggregated {
            s.enforce_retention();
        }
        let cutoff = (self.clock)().saturating_sub(self.ns.retention_ms());
        for sh in &self.shards {
            let doomed: Vec<Arc<Fileset>> = sh.lock().expire(cutoff, self.block_ms);
            for f in doomed {
                tracing::info!(fileset = %f.dir.display(), "retention: removing fileset");
                let _ = std::fs::remove_dir_all(&f.dir);
            }
        }
    }

    /// Graceful stop: the flush thread is stopped and joined (a flush under
    /// way completes), nothing more is flushed, a head snapshot is taken
    /// (unless snapshots are off) so the next start replays almost nothing,
    /// the commit log is synced.
    pub fn close(&self) -> Result<()> {
        // Every namespace is closed, the first failure reported.
        let mut first_err = None;
        for s in &self.aggregated {
            if let Err(e) = s.close() {
                tracing::error!(namespace = %s.ns.name, %e, "closing namespace");
                first_err.get_or_insert(e);
            }
        }
        let task = self.flush_task.lock().take();
        if let Some(task) = task {
            task.stop();
        }
        if !self.cfg.snapshot_interval.is_zero() {
            // On failure the commit log still holds everything (logged).
            let _ = self.snapshot();
        }
        let _w = self.apply_lock.write();
        self.log.close()?;
        self.index.persist()?;
        first_err.map_or(Ok(()), Err)
    }

    /// (active series, head bytes, head samples) for self-metrics, over
    /// every namespace.
    pub fn head_stats(&self) -> (usize, usize, usize) {
        let mut t = (0, 0, 0);
        for s in &self.aggregated {
            let (a, b, n) = s.head_stats();
            t.0 += a;
            t.1 += b;
            t.2 += n;
        }
        for sh in &self.shards {
            let (a, b, s) = sh.lock().memory();
            t.0 += a;
            t.1 += b;
            t.2 += s;
        }
        t
    }

    /// (segments, bytes) of the commit logs; (filesets, bytes) on disk;
    /// over every namespace.
    pub fn disk_stats(&self) -> ((usize, u64), (usize, u64)) {
        let segs = self.log.segments();
        let mut cl: (usize, u64) = (segs.len(), segs.iter().map(|s| s.1).sum());
        let mut fsn = 0;
        let mut fsb = 0;
        for s in &self.aggregated {
            let ((n, b), (f, fb)) = s.disk_stats();
            cl.0 += n;
            cl.1 += b;
            fsn += f;
            fsb += fb;
        }
        for sh in &self.shards {
            let (n, b) = sh.lock().disk();
            fsn += n;
            fsb += b;
        }
        (cl, (fsn, fsb))
    }

    /// Registers the store's self-metrics in `reg`: its counters, and a
    /// collector that reads the head and disk figures at each scrape (and
    /// holds the store weakly).
    pub fn register_metrics(self: &Arc<Self>, reg: &mut prometheus_client::registry::Registry) {
        let me: Arc<dyn GaugeSource> = self.clone();
        self.metrics.register(reg, Arc::downgrade(&me));
    }

    /// The samples in `[start, end]` of the selected series, in `sel`'s
    /// order, leaving out series without any. Read shard by shard in id
    /// order (filesets are sorted by id, so lookups and chunk reads walk
    /// each file forward), a bounded batch per lock.
    pub(crate) fn read_series(
        &self,
        sel: &[(SeriesId, Arc<Labels>)],
        start: i64,
        end: i64,
    ) -> Result<Vec<SeriesData>> {
        let n = self.cfg.num_shards.max(1);
        let mut order: Vec<u32> = (0..sel.len() as u32).collect();
        order.sort_unstable_by_key(|&i| {
            let id = sel[i as usize].0;
            (id.shard(n), id)
        });
        let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); sel.len()];
        // One thread: reading with two cost ~20% more CPU (cross-thread
        // frees, cold caches) for a small gain in latency, and dashboards
        // run queries side by side anyway.
        for (k, s) in self.read_ordered(sel, &order, start, end)? {
            samples[k as usize] = s;
        }
        Ok(sel
            .iter()
            .zip(samples)
            .filter(|(_, s)| !s.is_empty())
            .map(|((_, labels), samples)| SeriesData {
                labels: labels.clone(),
                samples,
            })
            .collect())
    }

    /// Samples of `sel[k]` for each `k` in `order` (sorted by shard, then
    /// id), a bounded batch of reads per shard lock.
    fn read_ordered(
        &self,
        sel: &[(SeriesId, Arc<Labels>)],
        order: &[u32],
        start: i64,
        end: i64,
    ) -> Result<Vec<(u32, Vec<Sample>)>> {
        // Small batches: writers to the shard wait at most this many reads.
        const BATCH: usize = 64;
        let n = self.cfg.num_shards.max(1);
        let mut out = Vec::with_capacity(order.len());
        let mut i = 0;
        // Fileset positions found so far in this shard: later batches of
        // the same shard search on from them (positions only guide the
        // search, so a fileset added between batches costs nothing but
        // time).
        let mut hints = Vec::new();
        let mut last_shard = None;
        while i < order.len() {
            let shard = sel[order[i] as usize].0.shard(n);
            let g = self.shards[shard as usize].lock();
            let stop = (i + BATCH).min(order.len());
            if last_shard != Some(shard) {
                hints.clear();
                last_shard = Some(shard);
            }
            while i < stop && sel[order[i] as usize].0.shard(n) == shard {
                let k = order[i];
                out.push((
                    k,
                    g.read_hinted(sel[k as usize].0, start, end, self.block_ms, &mut hints)?,
                ));
                i += 1;
            }
        }
        Ok(out)
    }

    pub(crate) fn write_inner(&self, tenant: &str, batch: PreparedBatch) -> Result<WriteOutcome> {
        self.write_inner_then(tenant, batch, || {})
    }

    /// [`write_inner`](Self::write_inner), calling `applied` once the
    /// write is in the head and the index, before waiting for its commit-log
    /// record to be durable.
    pub(crate) fn write_inner_then(
        &self,
        tenant: &str,
        mut batch: PreparedBatch,
        applied: impl FnOnce(),
    ) -> Result<WriteOutcome> {
        let now = (self.clock)();
        let min_t = now
            .saturating_sub(self.ns.retention_ms())
            .max(hard::MIN_TIME_MS);
        let mut out = WriteOutcome::default();

        // Series the store has never seen (the head's map is the set of
        // registered series, looked up for every series anyway): counted
        // against the limit before anything is stored or materialised.
        // Shard by shard: one lock per shard touched, not per series (a
        // locked instruction per series would also serialise the lookups'
        // cache misses). The same order applies the batch below.
        let n = self.cfg.num_shards.max(1);
        let shard_order = |series: &[cairn_common::PreparedSeries]| {
            let mut order: Vec<(u32, usize)> = series
                .iter()
                .enumerate()
                .map(|(i, s)| (s.id.shard(n), i))
                .collect();
            order.sort_unstable();
            order
        };
        let mut order = shard_order(&batch.series);
        let mut new_at: Vec<usize> = Vec::new();
        for run in order.chunk_by(|a, b| a.0 == b.0) {
            let g = self.shards[run[0].0 as usize].lock();
            new_at.extend(
                run.iter()
                    .filter(|(_, i)| !g.head.knows(batch.series[*i].id))
                    .map(|(_, i)| *i),
            );
        }
        // In the batch's order, each new series once.
        new_at.sort_unstable();
        let mut seen_new: cairn_common::IdMap<()> = Default::default();
        new_at.retain(|&i| seen_new.insert(batch.series[i].id, ()).is_none());
        // A series given by id alone must be one the store holds (checked by
        // the sender's `unknown_series` first; a series that left the head
        // since is refused whole, as retryable, before anything is stored).
        if let Some(&i) = new_at.iter().find(|&&i| batch.series[i].labels.is_empty()) {
            return Err(Error::Unavailable(format!(
                "series {:032x} {}; resend it with its labels",
                batch.series[i].id.0,
                cairn_storage_api::NOT_HELD_BY_ID
            )));
        }
        let limit = self.cfg.max_new_series_per_request;
        if new_at.len() > limit {
            return Err(Error::Invalid(format!(
                "the request would create {} new series, above the limit of {limit} (ingest.max-new-series-per-request)",
                new_at.len()
            )));
        }
        // New series whose labels the codecs cannot store (the ingest
        // limits normally refuse them first) are refused whole.
        let mut new_series: Vec<(SeriesId, Labels)> = Vec::with_capacity(new_at.len());
        let mut unstorable: cairn_common::IdMap<String> = Default::default();
        for &i in &new_at {
            let s = &batch.series[i];
            match enc::labels_unstorable(s.labels.pairs()) {
                None => new_series.push((s.id, s.labels.materialize())),
                Some(why) => {
                    unstorable.insert(s.id, why);
                }
            }
        }
        if !unstorable.is_empty() {
            order.clear();
            batch.series.retain(|s| {
                let Some(why) = unstorable.get(&s.id) else {
                    return true;
                };
                out.rejections.push(WriteRejection {
                    series: series_text(s),
                    reason: format!("series not stored: {why}"),
                    samples: s.samples.len(),
                });
                false
            });
        }

        // Retention and time-range checks (the rare path allocates; the
        // common one does not).
        for s in batch.series.iter_mut() {
            if s.samples
                .iter()
                .all(|x| x.t >= min_t && x.t <= hard::MAX_TIME_MS)
            {
                continue;
            }
            let old: Vec<i64> = s
                .samples
                .iter()
                .filter(|x| x.t < min_t)
                .map(|x| x.t)
                .collect();
            let late = s.samples.iter().filter(|x| x.t > hard::MAX_TIME_MS).count();
            s.samples
                .retain(|x| x.t >= min_t && x.t <= hard::MAX_TIME_MS);
            if !old.is_empty() {
                self.metrics
                    .samples_rejected_too_old
                    .inc_by(old.len() as u64);
                out.rejections.push(WriteRejection {
                    series: series_text(s),
                    reason: format!(
                        "{} sample(s) older than the retention period ({}s): oldest timestamp {}",
                        old.len(),
                        self.ns.retention.as_secs(),
                        old.iter().min().copied().unwrap_or_default()
                    ),
                    samples: old.len(),
                });
            }
            if late > 0 {
                self.metrics
                    .samples_rejected_out_of_range
                    .inc_by(late as u64);
                out.rejections.push(WriteRejection {
                    series: series_text(s),
                    reason: format!(
                        "{late} sample(s) with a timestamp after the latest storable time {} ms",
                        hard::MAX_TIME_MS
                    ),
                    samples: late,
                });
            }
        }
        let mut exemplars = Vec::new();
        for s in batch.series.iter_mut() {
            let taken = std::mem::take(&mut s.exemplars);
            for e in taken {
                let pairs = e.labels.iter().map(|l| (l.name.as_str(), l.value.as_str()));
                if let Some(why) = enc::labels_unstorable(pairs) {
                    out.rejections.push(WriteRejection {
                        series: series_text(s),
                        reason: format!("exemplar not stored: {why}"),
                        samples: 0,
                    });
                    continue;
                }
                exemplars.push((s.id, e));
            }
        }
        let prepared: Vec<(SeriesId, &[Sample])> = batch
            .series
            .iter()
            .map(|s| (s.id, s.samples.as_slice()))
            .collect();
        if !new_series.is_empty() {
            let refs: Vec<(SeriesId, &Labels)> = new_series.iter().map(|(i, l)| (*i, l)).collect();
            self.index.add_series(tenant, &refs)?;
            self.metrics.series_created.inc_by(new_series.len() as u64);
        }
        let mut blocks = BTreeSet::new();
        let mut last_block = None;
        let (mut lo, mut hi) = (i64::MAX, i64::MIN);
        for (_, samples) in &prepared {
            for x in samples.iter() {
                let b = self.block_of(x.t);
                if last_block != Some(b) {
                    blocks.insert(b);
                    last_block = Some(b);
                }
            }
            if let (Some(a), Some(b)) = (samples.first(), samples.last()) {
                lo = lo.min(a.t);
                hi = hi.max(b.t);
            }
        }
        if hi > i64::MIN && !self.downsamplers.is_empty() {
            self.newest.fetch_max(hi, Ordering::AcqRel);
        }
        // Samples in windows already downsampled, or being downsampled by
        // a pass in progress: those windows are marked to be computed again
        // (persisted before the write is acknowledged) — here, and once
        // more after the samples are in the head, for a pass that began
        // in between (it may have read their series before they landed).
        for d in &self.downsamplers {
            if d.may_be_late(lo) {
                let times = prepared.iter().flat_map(|(_, s)| s.iter().map(|x| x.t));
                let n = d.mark_late(times)?;
                self.metrics.downsample_late_windows.inc_by(n as u64);
            }
        }
        let parts = record::Parts {
            tenant,
            new_series: &new_series,
            samples: &prepared,
            exemplars: &exemplars,
            metadata: &batch.metadata,
        };
        // Version 1 is encoded before taking the log's lock; version 2
        // under it (its refs and values follow the records before it).
        let v1 = match self.cfg.commitlog_format {
            CommitLogFormat::V1 => {
                let mut p =
                    Vec::with_capacity(64 + batch.sample_count() * 12 + batch.series.len() * 20);
                record::encode_v1(&parts, &mut p)?;
                Some(p)
            }
            CommitLogFormat::V2(_) => None,
        };
        out.accepted_samples += batch.sample_count();

        let seq = {
            let _r = self.apply_lock.read();
            let seq = match &v1 {
                Some(p) => self.log.append(p, &blocks)?,
                None => self.log.append_with(&blocks, |pos, out| {
                    self.encoder.lock().encode(pos, &parts, out)
                })?,
            };
            // Apply shard by shard (`order`, found again if series were
            // refused since).
            if order.is_empty() {
                order = shard_order(&batch.series);
            }
            let mut i = 0;
            while i < order.len() {
                let shard = order[i].0;
                let mut g = self.shards[shard as usize].lock();
                while i < order.len() && order[i].0 == shard {
                    let (id, samples) = prepared[order[i].1];
                    if samples.is_empty() {
                        g.head.register(id);
                    } else {
                        g.head.append(id, self.block_ms, samples);
                        g.sums.add(id, self.block_ms, samples);
                    }
                    i += 1;
                }
            }
            crate::fault::fail_point("after-commitlog-append");
            // Still under the lock: a head snapshot seals the log only once
            // every record before the seal is in the index too (it persists
            // the index, then removes segments).
            if !exemplars.is_empty() {
                self.index.put_exemplars(&exemplars)?;
            }
            if !batch.metadata.is_empty() {
                self.index.put_metadata(tenant, &batch.metadata)?;
            }
            seq
        };
        for d in &self.downsamplers {
            if d.may_be_late(lo) {
                let times = prepared.iter().flat_map(|(_, s)| s.iter().map(|x| x.t));
                let n = d.mark_late(times)?;
                self.metrics.downsample_late_windows.inc_by(n as u64);
            }
        }
        drop(batch);
        applied();
        self.log.wait_durable(seq)?;
        out.accepted_exemplars = exemplars.len();
        self.metrics
            .samples_appended
            .inc_by(out.accepted_samples as u64);
        self.metrics
            .exemplars_appended
            .inc_by(exemplars.len() as u64);
        Ok(out)
    }
}

#[cfg(test)]
#[path = "node_tests.rs"]
mod tests;

impl GaugeSource for Storage {
    fn gauges(&self) -> Gauges {
        let (active_series, head_bytes, head_samples) = self.head_stats();
        let ((commitlog_segments, commitlog_bytes), (filesets, fileset_bytes)) = self.disk_stats();
        Gauges {
            active_series,
            head_bytes,
            head_samples,
            commitlog_segments,
            commitlog_bytes,
            filesets,
            fileset_bytes,
            index_entries_skipped: self.index.skipped_entries(),
            downsample: self.downsample_lag(),
        }
    }
}
