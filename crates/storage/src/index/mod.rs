//! The label index and series registry, in RocksDB.
//!
//! Every series gets a node-local sequential *ref* (u64, assigned in
//! [`Index::add_series`], never reused), so postings are small sorted
//! integers that delta-encode to about a byte each instead of one key per
//! (label, 16-byte random id).
//!
//! Keys (one column family, prefixed by kind):
//! - `i` id(first 8 of 16)                       → refs, as postings      (id → ref)
//! - `r` ref(8, big-endian)                      → tenant, labels [, id(16)]
//!   (registry; the id is stored only when it is not `SeriesId::of(tenant, labels)`)
//! - `p` tenant 0 name 0 value 0                 → refs, ascending, uvarint deltas
//!   (postings; one value per label pair, appended with the merge operator)
//! - `e` id(16) t(8, big-endian, sign-flipped)   → value, labels    (exemplars)
//! - `m` tenant 0 metric                         → type, help, unit (metadata)
//! - `v`                                         → layout version ("2")
//!
//! Tenant, label names and values are valid UTF-8 without NUL (ingest
//! validates that), so `0` separates key parts unambiguously.
//!
//! The next ref is one past the largest `r` key, found at open. An index
//! without the `v` key (the unreleased layouts before version 2) is refused
//! at open; nothing converts it.
//!
//! Modules: [`keys`] (key layout and decoding), [`postings`] (values and
//! the merge operator), [`cache`] (decoded label sets), [`registry`]
//! (series entries, registration), [`select`] (matchers → series, label
//! names and values), [`cardinality`] (series counts per label pair from
//! postings alone), [`exemplars`], [`metadata`]. This file holds the
//! database handle: opening, writing, reopening after an I/O error,
//! persisting, compaction, and the count of undecodable entries.

mod cache;
mod cardinality;
mod exemplars;
mod keys;
mod metadata;
pub(crate) mod postings;
pub(crate) mod registry;
mod select;

use crate::error::{Error, Result};
use cache::SeriesCache;
use keys::{hex, prefix_end, ref_key, ref_of_key, VERSION, VERSION_KEY};
use parking_lot::{MappedRwLockReadGuard, Mutex, RwLock, RwLockReadGuard};
use postings::merge_postings;
use rocksdb::{
    BlockBasedOptions, DBCompressionType, Direction, IteratorMode, Options, ReadOptions,
    WriteBatch, DB,
};
use std::path::Path;

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index").finish_non_exhaustive()
    }
}

pub struct Index {
    /// `None` only while a reopen after an I/O error failed (every call
    /// then answers `Unavailable` until the next attempt succeeds).
    db: RwLock<Option<DB>>,
    path: std::path::PathBuf,
    cache_bytes: usize,
    /// A write or flush failed: RocksDB keeps a background error until it
    /// is reopened, so the next write reopens it first (at most once a
    /// second).
    poisoned: std::sync::atomic::AtomicBool,
    last_recovery: Mutex<Option<std::time::Instant>>,
    series_cache: Mutex<SeriesCache>,
    /// The next ref to assign; also serializes registration so that a series
    /// registered concurrently by two writers gets one ref.
    next_ref: Mutex<u64>,
    /// Per ref, its series' shard (`u16::MAX`: not known), once
    /// [`track_shards`](Self::track_shards) set the shard count: a select
    /// of some shards drops the others' refs before decoding their labels.
    ref_shards: parking_lot::RwLock<(u32, Vec<u16>)>,
    /// Postings were appended since the last compaction (true at open, so
    /// operands left by an earlier run are folded at the first flush).
    postings_dirty: std::sync::atomic::AtomicBool,
    /// When postings were last compacted (rate limit).
    last_compaction: Mutex<Option<std::time::Instant>>,
    /// Keys of entries found undecodable (each logged once; bounded).
    bad_keys: Mutex<std::collections::HashSet<Vec<u8>>>,
    /// Undecodable entries met (distinct while `bad_keys` has room).
    skipped: std::sync::atomic::AtomicU64,
}

/// Distinct undecodable keys remembered (and logged) at most.
const MAX_BAD_KEYS: usize = 10_000;

fn db_err(context: &str) -> impl FnOnce(rocksdb::Error) -> Error + '_ {
    move |e| Error::Index(format!("{context}: {e}"))
}

/// Opens the RocksDB database of the index (see [`Index::open_with_cache`]).
fn open_db(path: &Path, cache_bytes: usize) -> Result<DB> {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.set_keep_log_file_num(2);
    opts.set_max_log_file_size(1 << 20);
    // RocksDB's own LOG only for its header (options at open) and fatal
    // errors: the Debian build we link keeps RocksDB's assertions, and one
    // fires (aborting the process) when the LOG file, having failed a
    // write on a full disk, is written again — which error handling does
    // right away. Errors reach our log through the returned statuses.
    opts.set_log_level(rocksdb::LogLevel::Fatal);
    // Labels and delta-encoded postings compress well with Zstd over
    // large blocks; the index is small and read mostly from cache.
    // Zstd level 6 where data settles (the last level: ~8% smaller than
    // level 3), LZ4 above it: memtable flushes and the L0 files that
    // compactions soon rewrite anyway. With Zstd 6 on every level, 1M new
    // series spent ~14% of the server's ingest CPU compressing index
    // blocks, most of them rewritten within seconds.
    opts.set_compression_per_level(&[DBCompressionType::Lz4; 7]);
    opts.set_bottommost_compression_type(DBCompressionType::Zstd);
    opts.set_bottommost_compression_options(-14, 6, 0, 0, true);
    // Fewer, larger L0 -> L1 compactions: new series' id keys are uniform
    // hashes, so every compaction rewrites all of L1 (the default, 4 L0
    // files, rewrote a 1M-series index every few seconds of ingest).
    opts.set_level_zero_file_num_compaction_trigger(8);
    let mut table = BlockBasedOptions::default();
    table.set_block_size(32 << 10);
    // Registering a series first looks its id up, nearly always a miss:
    // without a filter every miss decompresses a large block per level.
    table.set_bloom_filter(10.0, false);
    let cache = rocksdb::Cache::new_lru_cache((cache_bytes / 4).max(1 << 20))
        .map_err(|e| Error::Index(format!("creating the index block cache: {e}")))?;
    table.set_block_cache(&cache);
    opts.set_block_based_table_factory(&table);
    // A small memtable: what is not yet flushed is also in RocksDB's WAL,
    // uncompressed (the first scrape of 100k series: 25 MiB of WAL with
    // 32 MiB memtables, 2.6 bytes a sample of the data dir before a
    // flush); flushed, it is Zstd-compressed SSTs. Measured no slower at
    // 100k and 1M new series (BENCHMARKS.md, "Commit log").
    opts.set_write_buffer_size(4 << 20);
    opts.set_max_background_jobs(2);
    opts.set_merge_operator_associative("cairn.postings.union.v1", merge_postings);
    DB::open(&opts, path)
        .map_err(|e| Error::Index(format!("opening RocksDB index at {}: {e}", path.display())))
}

/// Bytes of RocksDB's write-ahead logs in `dir` (what a reopen replays).
fn wal_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Bytes free for unprivileged writers on the filesystem holding `dir`.
fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs(3) with a NUL-terminated path and a zeroed out-struct.
    #[allow(unsafe_code)]
    let st = unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        (libc::statvfs(c.as_ptr(), &mut st) == 0).then_some(st)
    }?;
    Some(st.f_bavail as u64 * st.f_frsize as u64)
}

/// An iterator over the keys of `db` starting with `prefix`.
fn prefix_iter<'a>(db: &'a DB, prefix: &[u8]) -> rocksdb::DBIteratorWithThreadMode<'a, DB> {
    let mut ro = ReadOptions::default();
    ro.set_iterate_upper_bound(prefix_end(prefix));
    db.iterator_opt(IteratorMode::From(prefix, Direction::Forward), ro)
}

/// Default size of the index's caches (see `StorageConfig`).
pub const DEFAULT_CACHE_BYTES: usize = 128 << 20;

impl Index {
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_with_cache(path, DEFAULT_CACHE_BYTES)
    }

    /// Opens the index with caches of `cache_bytes` in all: a quarter for
    /// RocksDB's block cache (uncompressed blocks of postings and series
    /// entries; smaller than the hot part of the index, every lookup would
    /// decompress a 32 KiB block), the rest for decoded label sets of
    /// selected series, so repeated queries skip RocksDB altogether.
    pub fn open_with_cache(path: &Path, cache_bytes: usize) -> Result<Self> {
        let db = open_db(path, cache_bytes)?;
        let mut index = Self {
            db: RwLock::new(Some(db)),
            path: path.to_path_buf(),
            cache_bytes,
            poisoned: std::sync::atomic::AtomicBool::new(false),
            last_recovery: Mutex::new(None),
            series_cache: Mutex::new(SeriesCache::new(cache_bytes - cache_bytes / 4)),
            next_ref: Mutex::new(0),
            ref_shards: parking_lot::RwLock::new((0, Vec::new())),
            postings_dirty: std::sync::atomic::AtomicBool::new(true),
            last_compaction: Mutex::new(None),
            bad_keys: Mutex::new(Default::default()),
            skipped: std::sync::atomic::AtomicU64::new(0),
        };
        index.check_version()?;
        *index.next_ref.get_mut() = index.max_ref()?.map_or(0, |r| r + 1);
        Ok(index)
    }

    /// Writes the layout version into a new index; refuses an index of
    /// another layout (the unreleased ones before version 2 have no `v`
    /// key, so any other key without it means one of them).
    fn check_version(&self) -> Result<()> {
        let db = self.db()?;
        let found = db
            .get_pinned(VERSION_KEY)
            .map_err(db_err("reading index version"))?
            .map(|v| v.to_vec());
        match found {
            Some(v) if v == VERSION => Ok(()),
            Some(v) => Err(Error::Corrupt(format!(
                "label index at {}: layout version {:?}, this release reads {:?}",
                self.path.display(),
                String::from_utf8_lossy(&v),
                String::from_utf8_lossy(VERSION),
            ))),
            None => {
                let mut it = db.raw_iterator();
                it.seek_to_first();
                it.status()
                    .map_err(db_err("reading the index's first key"))?;
                if let Some(k) = it.key() {
                    return Err(Error::Corrupt(format!(
                        "label index at {}: no layout version but key {} (a layout from before version {}, which this release does not convert); move the data dir aside",
                        self.path.display(),
                        hex(k),
                        String::from_utf8_lossy(VERSION),
                    )));
                }
                drop(it);
                drop(db);
                let mut wb = WriteBatch::default();
                wb.put(VERSION_KEY, VERSION);
                self.write(wb, "writing index version")
            }
        }
    }

    /// The database, or `Unavailable` while a reopen after an I/O error has
    /// not succeeded. Recursive read locks: callers may nest.
    fn db(&self) -> Result<MappedRwLockReadGuard<'_, DB>> {
        RwLockReadGuard::try_map(self.db.read_recursive(), Option::as_ref).map_err(|_| {
            Error::Unavailable(format!(
                "the label index at {} is closed after an I/O error; reopening at the next write",
                self.path.display()
            ))
        })
    }

    /// Writes a batch; a failure marks the database for a reopen (RocksDB
    /// refuses every write after a background error until then).
    fn write(&self, wb: WriteBatch, what: &str) -> Result<()> {
        let res = self.db()?.write(wb);
        res.map_err(|e| {
            self.poisoned
                .store(true, std::sync::atomic::Ordering::Release);
            Error::Index(format!("{what}: {e}"))
        })
    }

    /// [`write`](Self::write), synced to disk before it returns.
    fn write_synced(&self, wb: WriteBatch, what: &str) -> Result<()> {
        let mut wo = rocksdb::WriteOptions::default();
        wo.set_sync(true);
        let res = self.db()?.write_opt(wb, &wo);
        res.map_err(|e| {
            self.poisoned
                .store(true, std::sync::atomic::Ordering::Release);
            Error::Index(format!("{what}: {e}"))
        })
    }

    /// After a failed write or flush, reopens the database (which clears
    /// RocksDB's sticky background error and replays its WAL), at most once
    /// a second and only when the disk has room for the replay. Called
    /// before each write; costs one atomic load when nothing failed.
    fn recover(&self) -> Result<()> {
        use std::sync::atomic::Ordering;
        if !self.poisoned.load(Ordering::Acquire) {
            return Ok(());
        }
        {
            let mut last = self.last_recovery.lock();
            if last.is_some_and(|t| t.elapsed() < std::time::Duration::from_secs(1)) {
                return Err(Error::Unavailable(format!(
                    "the label index at {} failed to write; retrying",
                    self.path.display()
                )));
            }
            *last = Some(std::time::Instant::now());
        }
        let need = wal_bytes(&self.path) * 2 + (1 << 20);
        if let Some(free) = free_bytes(&self.path) {
            if free < need {
                return Err(Error::Unavailable(format!(
                    "the label index at {} failed to write and the disk has {free} bytes free, {need} needed to reopen it",
                    self.path.display()
                )));
            }
        }
        let mut slot = self.db.write();
        if !self.poisoned.load(Ordering::Acquire) {
            return Ok(()); // another writer reopened it meanwhile
        }
        tracing::warn!(index = %self.path.display(), "reopening the label index after a write error");
        *slot = None; // closes it: the WAL holds every acknowledged write
        let db = open_db(&self.path, self.cache_bytes).inspect_err(|e| {
            tracing::error!(index = %self.path.display(), %e, "reopening the label index failed; retried at the next write");
        })?;
        *slot = Some(db);
        self.poisoned.store(false, Ordering::Release);
        tracing::info!(index = %self.path.display(), "label index reopened");
        Ok(())
    }

    /// The largest assigned ref; an error when the last registry key is
    /// not a ref key (refs would otherwise be handed out again).
    fn max_ref(&self) -> Result<Option<u64>> {
        let db = self.db()?;
        let mut it = db.raw_iterator();
        it.seek_for_prev(ref_key(u64::MAX));
        it.status().map_err(db_err("finding the last series ref"))?;
        match it.key() {
            Some(k) if k.first() == Some(&b'r') => ref_of_key(k).map(Some),
            _ => Ok(None),
        }
    }

    /// Records an entry that failed to decode (disk damage, or written by a
    /// version with wider bounds): it is left out of every answer, logged
    /// once at ERROR and counted, instead of failing whatever touches it.
    fn skip_entry(&self, key: &[u8], err: &Error) {
        let mut bad = self.bad_keys.lock();
        if bad.contains(key) {
            return;
        }
        let n = self
            .skipped
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        if bad.len() < MAX_BAD_KEYS {
            bad.insert(key.to_vec());
            tracing::error!(key = %hex(key), %err, skipped_total = n, "undecodable index entry skipped (the series, exemplar or metadata entry is left out of reads)");
        }
    }

    /// Undecodable entries met so far (self-metric).
    pub fn skipped_entries(&self) -> u64 {
        self.skipped.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Flushes memtables so the index no longer needs the commit log.
    pub fn persist(&self) -> Result<()> {
        self.recover()?;
        let res = self.db()?.flush();
        res.map_err(|e| {
            self.poisoned
                .store(true, std::sync::atomic::Ordering::Release);
            Error::Index(format!("flushing index: {e}"))
        })
    }

    /// Compacts the postings so each list is one value again: appends
    /// accumulate as merge operands (one per write batch), which every
    /// read would otherwise merge.
    /// At most once per 10 minutes, so churn between frequent flushes does
    /// not rewrite every postings list each time; not exclusive, so
    /// RocksDB's own compactions go on meanwhile.
    pub fn compact_postings(&self) {
        const MIN_INTERVAL: std::time::Duration = std::time::Duration::from_secs(600);
        let mut last = self.last_compaction.lock();
        if last.is_some_and(|t| t.elapsed() < MIN_INTERVAL) {
            return;
        }
        if self
            .postings_dirty
            .swap(false, std::sync::atomic::Ordering::Relaxed)
        {
            *last = Some(std::time::Instant::now());
            // Force the bottommost level too: without a compaction filter
            // RocksDB skips it, and operands already there would stay.
            let mut co = rocksdb::CompactOptions::default();
            co.set_bottommost_level_compaction(rocksdb::BottommostLevelCompaction::Force);
            co.set_exclusive_manual_compaction(false);
            if let Ok(db) = self.db() {
                db.compact_range_opt(Some(b"p"), Some(b"q"), &co);
            }
        }
    }
}

#[cfg(test)]
impl Index {
    /// Overwrites the registry entry of ref `r` with bytes that do not decode.
    pub(crate) fn corrupt_entry_for_test(&self, r: u64) {
        let db = self.db().unwrap();
        db.put(ref_key(r), [0x01, b't', 0xff, 0xff, 0xff, 0xff, 0x0f])
            .unwrap();
        db.flush().unwrap();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_common::{Exemplar, Labels, MetricMetadata, MetricType, SeriesId};

    /// The index on a real full disk (a small tmpfs; skipped where it
    /// cannot be mounted): writes fail while it is full and work again once
    /// space is freed, without reopening the store from outside.
    #[test]
    fn recovers_from_a_full_disk() {
        let d = tempfile::tempdir().unwrap();
        let mnt = d.path().join("mnt");
        std::fs::create_dir_all(&mnt).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=24m", "tmpfs"])
            .arg(&mnt)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("skipped: cannot mount a tmpfs here (needs root)");
            return;
        }
        struct Unmount(std::path::PathBuf);
        impl Drop for Unmount {
            fn drop(&mut self) {
                let _ = std::process::Command::new("umount")
                    .arg("-l")
                    .arg(&self.0)
                    .status();
            }
        }
        let _guard = Unmount(mnt.clone());
        let idx = Index::open(&mnt.join("index")).unwrap();
        let filler = mnt.join("filler");
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&filler).unwrap();
            let block = vec![7u8; 1 << 16];
            while f.write_all(&block).is_ok() {}
        }
        let series = |i: usize| {
            Labels::from_pairs(&[
                ("__name__", "up".to_string()),
                ("v", format!("{i}{}", "x".repeat(60_000))),
            ])
        };
        let mut failed = false;
        let mut stored = Vec::new();
        for i in 0..2000 {
            let l = series(i);
            let id = SeriesId::of("t", &l);
            // A series whose add returned Ok is stored (in RocksDB's WAL),
            // even when the flush after it fails: the disk filled there.
            let added = idx.add_series("t", &[(id, &l)]);
            if added.is_ok() {
                stored.push(id);
            }
            if let Err(e) = added.and_then(|()| idx.persist()) {
                eprintln!("full: {e}");
                failed = true;
                break;
            }
        }
        assert!(failed, "the disk never filled");
        std::fs::remove_file(&filler).unwrap();
        let l = series(99_999);
        let id = SeriesId::of("t", &l);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            match idx
                .add_series("t", &[(id, &l)])
                .and_then(|()| idx.persist())
            {
                Ok(()) => break,
                Err(e) if std::time::Instant::now() < deadline => {
                    eprintln!("not yet: {e}");
                    std::thread::sleep(std::time::Duration::from_millis(300));
                }
                Err(e) => panic!("the index did not recover: {e}"),
            }
        }
        stored.push(id);
        let mut ids = idx.all_series_ids().unwrap();
        ids.sort();
        stored.sort();
        assert_eq!(ids, stored);
        drop(idx);
        let idx = Index::open(&mnt.join("index")).unwrap();
        assert_eq!(idx.all_series_ids().unwrap().len(), stored.len());
    }

    /// A new index gets the layout version; an index holding keys but no
    /// version (the unreleased layouts before it) is refused at open with
    /// an error naming the index and a key, and left as it was.
    #[test]
    fn an_index_without_its_layout_version_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let l1 = Labels::from_pairs(&[("__name__", "up"), ("job", "a")]);
        let id = SeriesId::of("t", &l1);
        {
            let idx = Index::open(d.path()).unwrap();
            idx.add_series("t", &[(id, &l1)]).unwrap();
            assert_eq!(
                idx.db().unwrap().get(VERSION_KEY).unwrap().as_deref(),
                Some(VERSION)
            );
        }
        {
            let idx = Index::open(d.path()).unwrap();
            assert_eq!(
                idx.series_labels(id).unwrap(),
                Some(("t".into(), l1.clone()))
            );
            idx.db().unwrap().delete(VERSION_KEY).unwrap();
        }
        let e = Index::open(d.path()).expect_err("opening without a version");
        let msg = e.to_string();
        assert!(matches!(e, Error::Corrupt(_)), "{msg}");
        assert!(
            msg.contains(&d.path().display().to_string()) && msg.contains("no layout version"),
            "{msg}"
        );
        {
            let db = DB::open_default(d.path()).unwrap();
            db.put(VERSION_KEY, b"1").unwrap();
        }
        let msg = Index::open(d.path())
            .expect_err("opening version 1")
            .to_string();
        assert!(msg.contains("layout version \"1\""), "{msg}");
    }

    /// A registry key of the wrong shape as the last ref key stops the open
    /// (refs would be handed out again), naming the key.
    #[test]
    fn a_corrupt_last_ref_key_is_an_error_at_open() {
        let d = tempfile::tempdir().unwrap();
        let l1 = Labels::from_pairs(&[("__name__", "up"), ("job", "a")]);
        {
            let idx = Index::open(d.path()).unwrap();
            idx.add_series("t", &[(SeriesId::of("t", &l1), &l1)])
                .unwrap();
            idx.db().unwrap().put(b"r\xff\x01", b"x").unwrap();
        }
        let msg = Index::open(d.path()).expect_err("opening").to_string();
        assert!(msg.contains("series registry key 72ff01"), "{msg}");
    }

    #[test]
    fn names_values_exemplars_metadata() {
        let d = tempfile::tempdir().unwrap();
        let idx = Index::open(d.path()).unwrap();
        let l1 = Labels::from_pairs(&[("__name__", "up"), ("job", "a")]);
        let l2 = Labels::from_pairs(&[("__name__", "up"), ("job", "b"), ("zone", "z")]);
        let (i1, i2) = (SeriesId::of("t", &l1), SeriesId::of("t", &l2));
        idx.add_series("t", &[(i1, &l1), (i2, &l2)]).unwrap();
        idx.add_series("u", &[(SeriesId::of("u", &l1), &l1)])
            .unwrap();
        assert_eq!(
            idx.label_names("t").unwrap(),
            vec!["__name__", "job", "zone"]
        );
        assert_eq!(idx.label_values("t", "job").unwrap(), vec!["a", "b"]);
        assert_eq!(idx.label_values("u", "job").unwrap(), vec!["a"]);
        assert_eq!(idx.all_series_ids().unwrap().len(), 3);
        let ex = Exemplar {
            labels: Labels::from_pairs(&[("trace_id", "abc")]),
            value: 1.5,
            t: -5,
        };
        idx.put_exemplars(&[(i1, ex.clone())]).unwrap();
        assert_eq!(idx.exemplars(i1, -10, 10).unwrap(), vec![ex]);
        assert!(idx.exemplars(i1, 0, 10).unwrap().is_empty());
        let md = MetricMetadata {
            metric_type: MetricType::Counter,
            help: "h".into(),
            unit: String::new(),
        };
        idx.put_metadata("t", &[("up".into(), md.clone())]).unwrap();
        assert_eq!(
            idx.metadata("t", Some("up")).unwrap(),
            vec![("up".to_string(), md)]
        );
        assert!(idx.metadata("u", None).unwrap().is_empty());
    }
}
