//! `cairn-storage`: the storage node.
//!
//! Owns the write path below the gateway — commit log ([`commitlog`]) → head
//! ([`head`]) → immutable filesets ([`fileset`]) — and the label index in
//! RocksDB ([`index`]). Implements the `cairn-common` contracts
//! [`SampleWriter`] and [`SeriesSource`], which is all the rest of Cairn sees.
//!
//! A write: validate age against retention → register new series in the index
//! → append one commit-log record (series definitions, samples, exemplars,
//! metadata) → apply it to the head → wait until the record is durable → ack.
//! A flush (periodic, or `POST /admin/v1/flush`): seal the commit-log segment,
//! detach closed block windows from the head, write each as a fileset (merging
//! a previous volume of the same block), then delete commit-log segments whose
//! blocks are all on disk.
//!
//! Must never depend on: the HTTP layer, PromQL, ingest decoders. This crate
//! and `meta` are the only RocksDB users.

pub mod commitlog;
mod enc;
pub mod fileset;
#[doc(hidden)]
pub mod fuzzing;
pub mod head;
pub mod index;

use cairn_common::limits::{hard, truncate_str};
use cairn_common::{
    Exemplar, ExemplarSeries, Labels, LazyLabels, Matcher, MetricMetadata, MetricType,
    PreparedBatch, PreparedSeries, Sample, SampleWriter, SeriesData, SeriesId, SeriesSource,
    StorageError, Timestamp, WriteBatch, WriteOutcome, WriteRejection,
};
pub use commitlog::FsyncPolicy;
use enc::{put_bytes, put_labels, put_uvarint, put_varint, Reader};
use head::HeadShard;
use parking_lot::{Mutex, RwLock};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("I/O error {context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("corrupt data: {0}")]
    Corrupt(String),
    #[error("index error: {0}")]
    Index(String),
    #[error("{0}")]
    Invalid(String),
    #[error("unavailable: {0}")]
    Unavailable(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Series per batch of a batched select: enough for reads to walk the
/// filesets forward, few enough that a streaming caller holds ~1.5 MiB of
/// samples (1024 series × 100 samples) rather than the whole selection.
const READ_BATCH: usize = 1024;

impl From<Error> for StorageError {
    fn from(e: Error) -> Self {
        match e {
            Error::Io { context, source } => StorageError::Io { context, source },
            Error::Corrupt(m) => StorageError::Corrupt(m),
            Error::Index(m) => StorageError::Unavailable(m),
            Error::Invalid(m) => StorageError::Invalid(m),
            Error::Unavailable(m) => StorageError::Unavailable(m),
        }
    }
}

/// The clock the store reads "now" from (ms). Tests pass a fixed one.
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

pub fn system_clock() -> Clock {
    Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    })
}

#[derive(Debug, Clone)]
pub struct StorageConfig {
    pub data_dir: PathBuf,
    pub fsync: FsyncPolicy,
    /// Block window of the raw namespace (default 2h).
    pub block: Duration,
    /// Raw namespace retention (default 30d).
    pub retention: Duration,
    /// How long after a window's end writes into it are still expected
    /// before it is flushed (default 10m).
    pub buffer_past: Duration,
    pub num_shards: u32,
    pub max_segment_bytes: u64,
    /// Background flush check period (default 1m).
    pub flush_interval: Duration,
    /// Head memory above which open windows are flushed early (default 4 GiB).
    pub head_max_bytes: u64,
    /// Block cache of the RocksDB label index (default 64 MiB).
    pub index_cache_bytes: u64,
    /// Series a write may create that the store has never seen (config
    /// `ingest.max-new-series-per-request`, default 100,000): a request
    /// creating more is refused whole, before anything is stored.
    pub max_new_series_per_request: usize,
    /// `storage.strict-replay`: a commit-log record that fails its checksum
    /// or decoding on replay (other than a torn tail) stops the start
    /// instead of being skipped and counted (default false).
    pub strict_replay: bool,
}

impl StorageConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            fsync: FsyncPolicy::Always,
            block: Duration::from_secs(2 * 3600),
            retention: Duration::from_secs(30 * 24 * 3600),
            buffer_past: Duration::from_secs(600),
            num_shards: 64,
            max_segment_bytes: 128 << 20,
            flush_interval: Duration::from_secs(60),
            head_max_bytes: 4 << 30,
            index_cache_bytes: index::DEFAULT_CACHE_BYTES as u64,
            max_new_series_per_request: 100_000,
            strict_replay: false,
        }
    }
}

/// Counters published on `/metrics`.
#[derive(Default)]
pub struct Metrics {
    pub samples_appended: AtomicU64,
    pub samples_rejected_too_old: AtomicU64,
    pub samples_rejected_out_of_range: AtomicU64,
    pub exemplars_appended: AtomicU64,
    pub series_created: AtomicU64,
    pub flushes: AtomicU64,
    pub flush_failures: AtomicU64,
    pub flush_seconds_total_ms: AtomicU64,
    pub filesets_written: AtomicU64,
    pub commitlog_records_replayed: AtomicU64,
    pub commitlog_records_skipped: AtomicU64,
    pub recovery_ms: AtomicU64,
}

pub struct Storage {
    cfg: StorageConfig,
    block_ms: i64,
    index: index::Index,
    log: Arc<commitlog::CommitLog>,
    shards: Vec<Mutex<HeadShard>>,
    /// Writers hold it shared across log-append + head-apply; a flush takes it
    /// exclusively to seal the log at a point where the head holds everything
    /// written so far.
    apply_lock: RwLock<()>,
    flush_lock: Mutex<()>,
    /// Detached blocks whose fileset write failed; retried first next flush.
    retry: Mutex<Vec<(usize, i64, head::Flushing)>>,
    clock: Clock,
    stopping: AtomicBool,
    pub metrics: Metrics,
}

const RECORD_VERSION: u8 = 1;

/// A series in Prometheus text form for a rejection, at most 1 KiB of it.
fn series_text(labels: &LazyLabels) -> String {
    truncate_str(&labels.materialize().to_string(), 1024).into_owned()
}

/// A decoded commit-log record.
struct Record {
    tenant: String,
    new_series: Vec<(SeriesId, Labels)>,
    samples: Vec<(SeriesId, Vec<Sample>)>,
    exemplars: Vec<(SeriesId, Exemplar)>,
    metadata: Vec<(String, MetricMetadata)>,
}

/// Appends a record's body (after version and tenant) to `payload`; calls
/// `on_sample` with each sample's time. `Invalid` when a label set is beyond
/// what [`decode_record`] accepts (the write path refuses those series
/// first, so a write never gets here with one).
fn encode_record(
    payload: &mut Vec<u8>,
    new_series: &[(SeriesId, Labels)],
    samples: &[(SeriesId, &[Sample])],
    exemplars: &[(SeriesId, Exemplar)],
    metadata: &[(String, MetricMetadata)],
    mut on_sample: impl FnMut(i64),
) -> Result<()> {
    put_uvarint(payload, new_series.len() as u64);
    for (id, labels) in new_series {
        payload.extend_from_slice(&id.to_be_bytes());
        put_labels(payload, labels)?;
    }
    let with_samples = samples.iter().filter(|p| !p.1.is_empty()).count();
    put_uvarint(payload, with_samples as u64);
    for (id, samples) in samples.iter().filter(|p| !p.1.is_empty()) {
        payload.extend_from_slice(&id.to_be_bytes());
        put_uvarint(payload, samples.len() as u64);
        let mut prev = 0i64;
        for s in samples.iter() {
            put_varint(payload, s.t.wrapping_sub(prev));
            prev = s.t;
            payload.extend_from_slice(&s.v.to_bits().to_le_bytes());
            on_sample(s.t);
        }
    }
    put_uvarint(payload, exemplars.len() as u64);
    for (id, e) in exemplars {
        payload.extend_from_slice(&id.to_be_bytes());
        put_varint(payload, e.t);
        payload.extend_from_slice(&e.value.to_bits().to_le_bytes());
        put_labels(payload, &e.labels)?;
    }
    put_uvarint(payload, metadata.len() as u64);
    for (name, md) in metadata {
        put_bytes(payload, name.as_bytes());
        put_bytes(payload, md.metric_type.as_str().as_bytes());
        put_bytes(payload, md.help.as_bytes());
        put_bytes(payload, md.unit.as_bytes());
    }
    Ok(())
}

fn decode_record(p: &[u8]) -> Result<Record> {
    let mut r = Reader::new(p, "commit log record");
    let v = r.u8()?;
    if v != RECORD_VERSION {
        return Err(Error::Corrupt(format!("commit log record version {v}")));
    }
    let tenant = r.string()?;
    let id = |r: &mut Reader| -> Result<SeriesId> { Ok(SeriesId::from_be_bytes(r.fixed::<16>()?)) };
    let n = r.uvarint()? as usize;
    let mut new_series = Vec::with_capacity(n.min(1 << 16));
    for _ in 0..n {
        new_series.push((id(&mut r)?, r.labels()?));
    }
    let n = r.uvarint()? as usize;
    let mut samples = Vec::with_capacity(n.min(1 << 16));
    for _ in 0..n {
        let sid = id(&mut r)?;
        let k = r.uvarint()? as usize;
        let mut v = Vec::with_capacity(k.min(1 << 16));
        let mut t = 0i64;
        for _ in 0..k {
            t = t.wrapping_add(r.varint()?);
            v.push(Sample {
                t,
                v: f64::from_bits(r.u64()?),
            });
        }
        samples.push((sid, v));
    }
    let n = r.uvarint()? as usize;
    let mut exemplars = Vec::with_capacity(n.min(1 << 16));
    for _ in 0..n {
        let sid = id(&mut r)?;
        let t = r.varint()?;
        let value = f64::from_bits(r.u64()?);
        exemplars.push((
            sid,
            Exemplar {
                labels: r.labels()?,
                value,
                t,
            },
        ));
    }
    let n = r.uvarint()? as usize;
    let mut metadata = Vec::with_capacity(n.min(1 << 16));
    for _ in 0..n {
        let name = r.string()?;
        let metric_type = MetricType::parse(&r.string()?);
        let help = r.string()?;
        let unit = r.string()?;
        metadata.push((
            name,
            MetricMetadata {
                metric_type,
                help,
                unit,
            },
        ));
    }
    if !r.is_empty() {
        return Err(Error::Corrupt(
            "commit log record has trailing bytes".into(),
        ));
    }
    Ok(Record {
        tenant,
        new_series,
        samples,
        exemplars,
        metadata,
    })
}

impl Storage {
    /// Opens the store: RocksDB index, filesets, then commit-log replay.
    /// Returns once recovery is complete (the node may then report ready).
    pub fn open(cfg: StorageConfig, clock: Clock) -> Result<Arc<Self>> {
        let started = Instant::now();
        let data_dir = cfg.data_dir.clone();
        std::fs::create_dir_all(&data_dir).map_err(|source| Error::Io {
            context: format!("creating data dir {}", data_dir.display()),
            source,
        })?;
        let index =
            index::Index::open_with_cache(&data_dir.join("index"), cfg.index_cache_bytes as usize)?;
        let block_ms = (cfg.block.as_millis() as i64).max(1);
        let num_shards = cfg.num_shards.max(1);
        let mut shards: Vec<HeadShard> = (0..num_shards).map(|_| HeadShard::default()).collect();
        for id in index.all_series_ids()? {
            shards[id.shard(num_shards) as usize]
                .series
                .entry(id)
                .or_default();
        }
        for (shard, fs) in fileset::load_all(&data_dir.join("data").join("raw"))? {
            if let Some(s) = shards.get_mut(shard as usize) {
                s.filesets.insert(fs.block_start, Arc::new(fs));
            }
        }
        let mut replayed = 0u64;
        let mut skipped = 0u64;
        let mut out_of_range = 0u64;
        let min_next = shards
            .iter()
            .flat_map(|s| s.filesets.values().map(|f| f.log_upto + 1))
            .max()
            .unwrap_or(1);
        let (log, stats) = commitlog::CommitLog::open(
            &data_dir.join("commitlog"),
            cfg.fsync,
            cfg.max_segment_bytes,
            min_next,
            cfg.strict_replay,
            |seg, payload| {
                let rec = decode_record(payload)?;
                let refs: Vec<(SeriesId, &Labels)> =
                    rec.new_series.iter().map(|(i, l)| (*i, l)).collect();
                index.add_replayed_series(&rec.tenant, &refs)?;
                let mut blocks = BTreeSet::new();
                for (id, _) in &rec.new_series {
                    shards[id.shard(num_shards) as usize]
                        .series
                        .entry(*id)
                        .or_default();
                }
                for (id, samples) in &rec.samples {
                    let shard = &mut shards[id.shard(num_shards) as usize];
                    // Samples a fileset already holds are not replayed: the
                    // fileset may hold a newer value for the same timestamp.
                    // Samples outside the storable range (written before it
                    // was enforced) are dropped: no read could reach them.
                    let oor_before = out_of_range;
                    let pending: Vec<Sample> = samples
                        .iter()
                        .filter(|s| {
                            if s.t < hard::MIN_TIME_MS || s.t > hard::MAX_TIME_MS {
                                out_of_range += 1;
                                return false;
                            }
                            let b = head::block_start(s.t, block_ms);
                            shard.filesets.get(&b).is_none_or(|f| f.log_upto < seg)
                        })
                        .copied()
                        .collect();
                    skipped += (samples.len() - pending.len()) as u64 - (out_of_range - oor_before);
                    blocks.extend(pending.iter().map(|s| head::block_start(s.t, block_ms)));
                    shard.append(*id, block_ms, &pending);
                    replayed += pending.len() as u64;
                }
                index.put_replayed_exemplars(&rec.exemplars)?;
                index.put_metadata(&rec.tenant, &rec.metadata)?;
                Ok(blocks)
            },
        )?;
        let store = Arc::new(Storage {
            block_ms,
            index,
            log,
            shards: shards.into_iter().map(Mutex::new).collect(),
            apply_lock: RwLock::new(()),
            flush_lock: Mutex::new(()),
            retry: Mutex::new(Vec::new()),
            clock,
            stopping: AtomicBool::new(false),
            metrics: Metrics::default(),
            cfg,
        });
        store
            .metrics
            .commitlog_records_replayed
            .store(stats.records, Ordering::Relaxed);
        store
            .metrics
            .commitlog_records_skipped
            .store(stats.skipped_records, Ordering::Relaxed);
        if out_of_range > 0 {
            tracing::warn!(
                samples = out_of_range,
                "commit log held samples outside the storable time range; dropped on replay"
            );
        }
        store
            .metrics
            .recovery_ms
            .store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
        tracing::info!(
            records = stats.records,
            samples = replayed,
            samples_already_flushed = skipped,
            torn_segments = stats.torn_segments,
            corrupt_records_skipped = stats.skipped_records,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "recovery complete"
        );
        Ok(store)
    }

    pub fn config(&self) -> &StorageConfig {
        &self.cfg
    }

    fn shard_of(&self, id: SeriesId) -> &Mutex<HeadShard> {
        &self.shards[id.shard(self.cfg.num_shards.max(1)) as usize]
    }

    fn block_of(&self, t: Timestamp) -> i64 {
        head::block_start(t, self.block_ms)
    }

    /// Starts the periodic flush + retention thread.
    /// Starts the background thread: every `flush-interval` it flushes
    /// closed windows and applies retention; every few seconds it checks head
    /// memory and, above `head-max-bytes`, flushes everything (open windows
    /// included) so the head stays bounded.
    pub fn start_background(self: &Arc<Self>) {
        let me = Arc::downgrade(self);
        let every = self.cfg.flush_interval;
        let tick = every.min(Duration::from_secs(5));
        let _ = std::thread::Builder::new()
            .name("storage-flush".into())
            .spawn(move || {
                let mut last = Instant::now();
                loop {
                    std::thread::sleep(tick);
                    let Some(s) = me.upgrade() else { return };
                    if s.stopping.load(Ordering::Acquire) {
                        return;
                    }
                    let (_, head_bytes, _) = s.head_stats();
                    if head_bytes as u64 > s.cfg.head_max_bytes {
                        tracing::warn!(
                            head_bytes,
                            limit = s.cfg.head_max_bytes,
                            "head above storage.head-max-bytes: flushing open windows early"
                        );
                        if let Err(e) = s.flush(true) {
                            tracing::error!(?e, "memory-pressure flush failed");
                        }
                    }
                    if last.elapsed() >= every {
                        last = Instant::now();
                        if let Err(e) = s.flush(false) {
                            tracing::error!(?e, "background flush failed");
                        }
                        s.enforce_retention();
                    }
                }
            });
    }

    /// Flushes closed windows (or, with `force`, everything) to filesets and
    /// truncates the commit log. Returns the number of filesets written.
    pub fn flush(&self, force: bool) -> Result<usize> {
        let _one = self.flush_lock.lock();
        let started = Instant::now();
        let now = (self.clock)();
        let horizon = now.saturating_sub(self.cfg.buffer_past.as_millis() as i64);
        let block_ms = self.block_ms;
        let pick = |b: i64| force || head::block_end(b, block_ms) <= horizon;
        // Seal the log where the head holds everything written so far; each
        // shard is then detached and written in turn, so the extra memory a
        // flush needs is one shard's worth, not the whole head's. Data a shard
        // receives after the seal and before its turn is flushed too (replay
        // of it is idempotent); `sealed` stays a correct lower bound.
        let sealed = {
            let _w = self.apply_lock.write();
            self.log.rotate()?
        };
        let mut written = 0;
        let mut failed = 0;
        let mut run = |jobs: Vec<(usize, i64, head::Flushing)>| {
            for (shard, block, data) in jobs {
                match self.flush_one(shard, block, &data, sealed) {
                    Ok(()) => written += 1,
                    Err(e) => {
                        failed += 1;
                        tracing::error!(
                            shard,
                            block,
                            ?e,
                            "flush of block failed; data stays readable in memory and in the commit log, retried at the next flush"
                        );
                        self.retry.lock().push((shard, block, data));
                    }
                }
            }
        };
        // Blocks whose earlier flush failed go first (their data is older).
        run(std::mem::take(&mut *self.retry.lock()));
        for (i, sh) in self.shards.iter().enumerate() {
            let jobs: Vec<(usize, i64, head::Flushing)> = {
                let mut g = sh.lock();
                let detached = g.detach(pick);
                let mut jobs = Vec::with_capacity(detached.len());
                for (block, data) in detached {
                    let data: head::Flushing = Arc::new(data);
                    g.flushing.push((block, data.clone()));
                    jobs.push((i, block, data));
                }
                jobs
            };
            run(jobs);
        }
        self.index.persist()?;
        self.index.compact_postings();
        let mut in_memory = BTreeSet::new();
        for sh in &self.shards {
            sh.lock().blocks_in_memory(&mut in_memory);
        }
        let removed = self.log.remove_segments(sealed, |info| {
            info.blocks.iter().any(|b| in_memory.contains(b))
        });
        self.metrics.flushes.fetch_add(1, Ordering::Relaxed);
        self.metrics
            .filesets_written
            .fetch_add(written as u64, Ordering::Relaxed);
        self.metrics
            .flush_failures
            .fetch_add(failed, Ordering::Relaxed);
        self.metrics
            .flush_seconds_total_ms
            .fetch_add(started.elapsed().as_millis() as u64, Ordering::Relaxed);
        if written > 0 {
            tracing::info!(
                filesets = written,
                segments_removed = removed,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "flush complete"
            );
        }
        if failed > 0 {
            return Err(Error::Unavailable(format!("{failed} block flushes failed")));
        }
        Ok(written)
    }

    /// Writes one block of one shard. `sealed`: every commit-log segment up to
    /// it had been applied to the head when the data was detached.
    fn flush_one(
        &self,
        shard: usize,
        block: i64,
        data: &head::Flushing,
        sealed: u64,
    ) -> Result<()> {
        let existing = self.shards[shard].lock().filesets.get(&block).cloned();
        let volume = existing.as_ref().map_or(0, |f| f.volume + 1);
        let mut new: Vec<(&SeriesId, &head::BlockBuf)> = data.iter().collect();
        new.sort_unstable_by_key(|(id, _)| **id);
        let codec_err = |id: SeriesId| {
            move |e: cairn_codec::CodecError| Error::Corrupt(format!("encoding series {id}: {e}"))
        };
        // Merge-join with the previous volume by id: series only in one side
        // keep their chunk bytes as they are; only series in both are decoded.
        let old_count = existing.as_ref().map_or(0, |f| f.series_count());
        let mut chunks: Vec<(SeriesId, Vec<u8>)> = Vec::with_capacity(old_count.max(new.len()));
        let (mut i, mut j) = (0usize, 0usize);
        while i < old_count || j < new.len() {
            let old_id = existing
                .as_ref()
                .filter(|_| i < old_count)
                .map(|f| (f, f.raw(i)));
            match (old_id, new.get(j)) {
                (Some((_, r)), None) => {
                    let (id, chunk) = r?;
                    chunks.push((id, chunk.to_vec()));
                    i += 1;
                }
                (None, Some((id, buf))) => {
                    chunks.push((**id, buf.chunk().map_err(codec_err(**id))?));
                    j += 1;
                }
                (Some((f, r)), Some((nid, buf))) => {
                    let (oid, chunk) = r?;
                    if oid < **nid {
                        chunks.push((oid, chunk.to_vec()));
                        i += 1;
                    } else if **nid < oid {
                        chunks.push((**nid, buf.chunk().map_err(codec_err(**nid))?));
                        j += 1;
                    } else {
                        let merged = head::merge_newer_wins(f.decode(i)?, buf.samples());
                        chunks.push((oid, fileset::encode(&merged).map_err(codec_err(oid))?));
                        i += 1;
                        j += 1;
                    }
                }
                (None, None) => break,
            }
        }
        let root = self.cfg.data_dir.join("data").join("raw");
        let dir = fileset::fileset_dir(&root, shard as u32, block, volume);
        fileset::write_chunks(&dir, &chunks, sealed)?;
        let fs = fileset::Fileset::open(&dir, block, volume)?.ok_or_else(|| {
            Error::Corrupt(format!(
                "fileset {} incomplete right after writing",
                dir.display()
            ))
        })?;
        {
            let mut g = self.shards[shard].lock();
            g.filesets.insert(block, Arc::new(fs));
            g.flushing
                .retain(|(b, d)| !(*b == block && Arc::ptr_eq(d, data)));
        }
        if let Some(old) = existing {
            let _ = std::fs::remove_dir_all(&old.dir);
        }
        Ok(())
    }

    /// Deletes filesets whose whole window is older than retention.
    pub fn enforce_retention(&self) {
        let cutoff = (self.clock)().saturating_sub(self.cfg.retention.as_millis() as i64);
        for sh in &self.shards {
            let doomed: Vec<Arc<fileset::Fileset>> = {
                let mut g = sh.lock();
                let old: Vec<i64> = g
                    .filesets
                    .keys()
                    .copied()
                    .filter(|&b| head::block_end(b, self.block_ms) <= cutoff)
                    .collect();
                old.iter().filter_map(|b| g.filesets.remove(b)).collect()
            };
            for f in doomed {
                tracing::info!(fileset = %f.dir.display(), "retention: removing fileset");
                let _ = std::fs::remove_dir_all(&f.dir);
            }
        }
    }

    /// Graceful stop: flush nothing, sync the commit log.
    pub fn close(&self) -> Result<()> {
        self.stopping.store(true, Ordering::Release);
        let _w = self.apply_lock.write();
        self.log.close()?;
        self.index.persist()
    }

    /// (active series, head bytes, head samples) for self-metrics.
    pub fn head_stats(&self) -> (usize, usize, usize) {
        let mut t = (0, 0, 0);
        for sh in &self.shards {
            let (a, b, s) = sh.lock().memory();
            t.0 += a;
            t.1 += b;
            t.2 += s;
        }
        t
    }

    /// (segments, bytes) of the commit log; (filesets, bytes) on disk.
    pub fn disk_stats(&self) -> ((usize, u64), (usize, u64)) {
        let segs = self.log.segments();
        let cl = (segs.len(), segs.iter().map(|s| s.1).sum());
        let mut fsn = 0;
        let mut fsb = 0;
        for sh in &self.shards {
            let g = sh.lock();
            fsn += g.filesets.len();
            fsb += g.filesets.values().map(|f| f.disk_bytes()).sum::<u64>();
        }
        (cl, (fsn, fsb))
    }

    /// Samples in `[start, end]` of the series `order` points at in `sel`
    /// (`order` sorted by shard, then id), shard by shard, a bounded batch
    /// per lock, walking each fileset forward.
    /// The samples in `[start, end]` of the selected series, in `sel`'s
    /// order, leaving out series without any. Read shard by shard in id
    /// order (filesets are sorted by id, so lookups and chunk reads walk
    /// each file forward), a bounded batch per lock.
    fn read_series(
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

    fn write_inner(&self, tenant: &str, mut batch: PreparedBatch) -> Result<WriteOutcome> {
        let now = (self.clock)();
        let min_t = now
            .saturating_sub(self.cfg.retention.as_millis() as i64)
            .max(hard::MIN_TIME_MS);
        let mut out = WriteOutcome::default();

        // Series the store has never seen (the head's map is the set of
        // registered series, looked up for every series anyway): counted
        // against the limit before anything is stored or materialised.
        let mut new_at: Vec<usize> = Vec::new();
        let mut seen_new: cairn_common::IdMap<()> = Default::default();
        for (i, s) in batch.series.iter().enumerate() {
            if !self.shard_of(s.id).lock().series.contains_key(&s.id)
                && seen_new.insert(s.id, ()).is_none()
            {
                new_at.push(i);
            }
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
            batch.series.retain(|s| {
                let Some(why) = unstorable.get(&s.id) else {
                    return true;
                };
                out.rejections.push(WriteRejection {
                    series: series_text(&s.labels),
                    reason: format!("series not stored: {why}"),
                    samples: s.samples.len(),
                });
                false
            });
        }

        let mut payload =
            Vec::with_capacity(64 + batch.sample_count() * 12 + batch.series.len() * 20);
        payload.push(RECORD_VERSION);
        put_bytes(&mut payload, tenant.as_bytes());

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
                    .fetch_add(old.len() as u64, Ordering::Relaxed);
                out.rejections.push(WriteRejection {
                    series: series_text(&s.labels),
                    reason: format!(
                        "{} sample(s) older than the retention period ({}s): oldest timestamp {}",
                        old.len(),
                        self.cfg.retention.as_secs(),
                        old.iter().min().copied().unwrap_or_default()
                    ),
                    samples: old.len(),
                });
            }
            if late > 0 {
                self.metrics
                    .samples_rejected_out_of_range
                    .fetch_add(late as u64, Ordering::Relaxed);
                out.rejections.push(WriteRejection {
                    series: series_text(&s.labels),
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
            for e in s.exemplars.drain(..) {
                let pairs = e.labels.iter().map(|l| (l.name.as_str(), l.value.as_str()));
                if let Some(why) = enc::labels_unstorable(pairs) {
                    out.rejections.push(WriteRejection {
                        series: series_text(&s.labels),
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
            self.metrics
                .series_created
                .fetch_add(new_series.len() as u64, Ordering::Relaxed);
        }
        let mut blocks = BTreeSet::new();
        encode_record(
            &mut payload,
            &new_series,
            &prepared,
            &exemplars,
            &batch.metadata,
            |t| {
                blocks.insert(self.block_of(t));
            },
        )?;
        out.accepted_samples += batch.sample_count();

        let seq = {
            let _r = self.apply_lock.read();
            let seq = self.log.append(&payload, &blocks)?;
            // Apply shard by shard: one lock per shard touched, not per series.
            let n = self.cfg.num_shards.max(1);
            let mut order: Vec<(u32, usize)> = prepared
                .iter()
                .enumerate()
                .map(|(i, p)| (p.0.shard(n), i))
                .collect();
            order.sort_unstable();
            let mut i = 0;
            while i < order.len() {
                let shard = order[i].0;
                let mut g = self.shards[shard as usize].lock();
                while i < order.len() && order[i].0 == shard {
                    let (id, samples) = prepared[order[i].1];
                    if samples.is_empty() {
                        g.series.entry(id).or_default();
                    } else {
                        g.append(id, self.block_ms, samples);
                    }
                    i += 1;
                }
            }
            seq
        };
        fileset::fail_point("after-commitlog-append");
        if !exemplars.is_empty() {
            self.index.put_exemplars(&exemplars)?;
        }
        if !batch.metadata.is_empty() {
            self.index.put_metadata(tenant, &batch.metadata)?;
        }
        self.log.wait_durable(seq)?;
        out.accepted_exemplars = exemplars.len();
        self.metrics
            .samples_appended
            .fetch_add(out.accepted_samples as u64, Ordering::Relaxed);
        self.metrics
            .exemplars_appended
            .fetch_add(exemplars.len() as u64, Ordering::Relaxed);
        Ok(out)
    }

    /// Self-metrics in Prometheus text format.
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write;
        let m = &self.metrics;
        let c = |v: &AtomicU64| v.load(Ordering::Relaxed);
        let (active, head_bytes, head_samples) = self.head_stats();
        let ((segs, seg_bytes), (fsn, fsb)) = self.disk_stats();
        let rows: [(&str, &str, &str, f64); 17] = [
            (
                "cairn_storage_samples_appended_total",
                "counter",
                "Samples appended to the head.",
                c(&m.samples_appended) as f64,
            ),
            (
                "cairn_storage_samples_rejected_too_old_total",
                "counter",
                "Samples refused as older than retention.",
                c(&m.samples_rejected_too_old) as f64,
            ),
            (
                "cairn_storage_samples_rejected_out_of_range_total",
                "counter",
                "Samples refused as after the latest storable time.",
                c(&m.samples_rejected_out_of_range) as f64,
            ),
            (
                "cairn_storage_commitlog_records_skipped_total",
                "counter",
                "Commit-log records skipped on replay as corrupt (not torn tails).",
                c(&m.commitlog_records_skipped) as f64,
            ),
            (
                "cairn_storage_index_entries_skipped_total",
                "counter",
                "Index entries (series labels, exemplars, metadata) skipped as undecodable.",
                self.index.skipped_entries() as f64,
            ),
            (
                "cairn_storage_exemplars_appended_total",
                "counter",
                "Exemplars stored.",
                c(&m.exemplars_appended) as f64,
            ),
            (
                "cairn_storage_series_created_total",
                "counter",
                "Series registered in the index.",
                c(&m.series_created) as f64,
            ),
            (
                "cairn_storage_flushes_total",
                "counter",
                "Flush runs.",
                c(&m.flushes) as f64,
            ),
            (
                "cairn_storage_flush_failures_total",
                "counter",
                "Block flushes that failed.",
                c(&m.flush_failures) as f64,
            ),
            (
                "cairn_storage_flush_seconds_total",
                "counter",
                "Time spent flushing.",
                c(&m.flush_seconds_total_ms) as f64 / 1000.0,
            ),
            (
                "cairn_storage_filesets_written_total",
                "counter",
                "Filesets written.",
                c(&m.filesets_written) as f64,
            ),
            (
                "cairn_storage_head_active_series",
                "gauge",
                "Series with data in the head.",
                active as f64,
            ),
            (
                "cairn_storage_head_bytes",
                "gauge",
                "Approximate head memory.",
                head_bytes as f64,
            ),
            (
                "cairn_storage_head_bytes_per_active_series",
                "gauge",
                "Head memory per active series.",
                if active > 0 {
                    head_bytes as f64 / active as f64
                } else {
                    0.0
                },
            ),
            (
                "cairn_storage_head_samples",
                "gauge",
                "Samples held in the head.",
                head_samples as f64,
            ),
            (
                "cairn_storage_commitlog_bytes",
                "gauge",
                "Commit log bytes on disk.",
                seg_bytes as f64,
            ),
            (
                "cairn_storage_fileset_bytes",
                "gauge",
                "Fileset bytes on disk.",
                fsb as f64,
            ),
        ];
        for (name, kind, help, v) in rows {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        }
        let _ = writeln!(out, "# HELP cairn_storage_commitlog_segments Commit log segments on disk.\n# TYPE cairn_storage_commitlog_segments gauge\ncairn_storage_commitlog_segments {segs}");
        let _ = writeln!(out, "# HELP cairn_storage_filesets Filesets on disk.\n# TYPE cairn_storage_filesets gauge\ncairn_storage_filesets {fsn}");
        let _ = writeln!(out, "# HELP cairn_storage_recovery_seconds Time the last recovery took.\n# TYPE cairn_storage_recovery_seconds gauge\ncairn_storage_recovery_seconds {}", c(&m.recovery_ms) as f64 / 1000.0);
    }
}

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
                .saturating_sub(self.cfg.retention.as_millis() as i64)
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

#[cfg(test)]
mod tests;
