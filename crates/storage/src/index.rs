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
//! The next ref is one past the largest `r` key, found at open. Data written
//! by the older layout (`s` id → tenant, labels; one `p … 0 id(16)` key per
//! posting) is converted at open.

use crate::enc::{put_bytes, put_labels_within, put_uvarint, Bounds, Reader};
use crate::{Error, Result};
use cairn_common::{
    Exemplar, Labels, MatchOp, Matcher, MetricMetadata, MetricType, SeriesId, METRIC_NAME,
};
use parking_lot::{MappedRwLockReadGuard, Mutex, RwLock, RwLockReadGuard};
use rocksdb::{
    BlockBasedOptions, DBCompressionType, Direction, IteratorMode, MergeOperands, Options,
    ReadOptions, WriteBatch, DB,
};
use rustc_hash::FxHashMap;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

/// Decoded label sets of recently selected series, by ref, within a byte
/// budget: two generations, the older dropped whole when the newer fills
/// its half (a hit in the older moves the entry up). A ref's labels never
/// change (refs are not reused), so entries need no invalidation.
struct SeriesCache {
    cur: FxHashMap<u64, (SeriesId, Arc<Labels>)>,
    prev: FxHashMap<u64, (SeriesId, Arc<Labels>)>,
    cur_bytes: usize,
    budget: usize,
}

/// Heap bytes of a label set as cached (vector, strings, Arc, map slot).
fn cached_size(l: &Labels) -> usize {
    96 + l
        .iter()
        .map(|x| std::mem::size_of::<cairn_common::Label>() + x.name.len() + x.value.len() + 16)
        .sum::<usize>()
}

impl SeriesCache {
    fn get(&mut self, r: u64) -> Option<(SeriesId, Arc<Labels>)> {
        if let Some(v) = self.cur.get(&r) {
            return Some(v.clone());
        }
        let v = self.prev.remove(&r)?;
        self.insert(r, v.clone());
        Some(v)
    }

    fn insert(&mut self, r: u64, v: (SeriesId, Arc<Labels>)) {
        if self.budget == 0 {
            return;
        }
        self.cur_bytes += cached_size(&v.1);
        self.cur.insert(r, v);
        if self.cur_bytes > self.budget / 2 {
            self.prev = std::mem::take(&mut self.cur);
            self.cur_bytes = 0;
        }
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

/// The id lookup key holds only the id's first 8 bytes (the id is a uniform
/// hash); its value lists the refs of every series sharing them.
fn id_key(id: SeriesId) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = b'i';
    k[1..].copy_from_slice(&id.to_be_bytes()[..8]);
    k
}

/// The layout version key; absent in the first ref layout, which keyed
/// `i` by the whole id.
const VERSION_KEY: &[u8] = b"v";
const VERSION: &[u8] = b"2";

fn ref_key(r: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = b'r';
    k[1..].copy_from_slice(&r.to_be_bytes());
    k
}

fn postings_prefix(tenant: &str, name: &str, value: Option<&str>) -> Vec<u8> {
    let mut k = Vec::with_capacity(3 + tenant.len() + name.len() + value.map_or(0, str::len) + 1);
    k.push(b'p');
    k.extend_from_slice(tenant.as_bytes());
    k.push(0);
    k.extend_from_slice(name.as_bytes());
    k.push(0);
    if let Some(v) = value {
        k.extend_from_slice(v.as_bytes());
        k.push(0);
    }
    k
}

/// The smallest key after every key starting with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0xff; 32]
}

fn ts_key(t: i64) -> [u8; 8] {
    ((t as u64) ^ (1 << 63)).to_be_bytes()
}

fn metadata_key(tenant: &str, metric: &str) -> Vec<u8> {
    let mut k = vec![b'm'];
    k.extend_from_slice(tenant.as_bytes());
    k.push(0);
    k.extend_from_slice(metric.as_bytes());
    k
}

/// Appends refs (ascending, distinct) as uvarint deltas, the first from 0.
fn encode_refs(out: &mut Vec<u8>, refs: &[u64]) {
    let mut prev = 0;
    for &r in refs {
        put_uvarint(out, r - prev);
        prev = r;
    }
}

/// Decodes a postings value; `None` when malformed.
fn decode_refs_into(buf: &[u8], out: &mut Vec<u64>) -> Option<()> {
    let mut prev = 0u64;
    let mut v = 0u64;
    let mut shift = 0u32;
    for &b in buf {
        if shift >= 64 {
            return None;
        }
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            prev = prev.checked_add(v)?;
            out.push(prev);
            v = 0;
            shift = 0;
        } else {
            shift += 7;
        }
    }
    (shift == 0).then_some(())
}

fn decode_refs(buf: &[u8]) -> Result<Vec<u64>> {
    let mut out = Vec::with_capacity(buf.len());
    decode_refs_into(buf, &mut out).ok_or_else(|| Error::Corrupt("postings value".into()))?;
    Ok(out)
}

/// First and last ref of an encoded list and the byte length of the first
/// varint; `None` when empty or malformed.
fn refs_bounds(buf: &[u8]) -> Option<(u64, u64, usize)> {
    let mut first = None;
    let mut prev = 0u64;
    let mut v = 0u64;
    let mut shift = 0u32;
    for (i, &b) in buf.iter().enumerate() {
        if shift >= 64 {
            return None;
        }
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            prev = prev.checked_add(v)?;
            if first.is_none() {
                first = Some((prev, i + 1));
            }
            v = 0;
            shift = 0;
        } else {
            shift += 7;
        }
    }
    if shift != 0 {
        return None;
    }
    first.map(|(f, len)| (f, prev, len))
}

/// The postings merge operator: the union of ascending ref lists. Refs are
/// assigned in increasing order, so an operand nearly always starts after the
/// end of what precedes it and is appended without decoding into a list.
fn merge_postings(
    _key: &[u8],
    existing: Option<&[u8]>,
    operands: &MergeOperands,
) -> Option<Vec<u8>> {
    let mut parts: Vec<&[u8]> = Vec::with_capacity(operands.len() + 1);
    parts.extend(existing);
    parts.extend(operands.iter());
    merge_parts(&parts)
}

/// [`merge_postings`] over the existing value and the operands, in order.
fn merge_parts(parts: &[&[u8]]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(parts.iter().map(|p| p.len()).sum());
    let mut last: Option<u64> = None;
    for (i, part) in parts.iter().enumerate() {
        let Some((first, end, first_len)) = refs_bounds(part) else {
            if part.is_empty() {
                continue;
            }
            return None;
        };
        match last {
            None => out.extend_from_slice(part),
            Some(l) if first > l => {
                put_uvarint(&mut out, first - l);
                out.extend_from_slice(&part[first_len..]);
            }
            Some(_) => return merge_postings_slow(&parts[i..], out),
        }
        last = Some(end);
    }
    Some(out)
}

fn merge_postings_slow(rest: &[&[u8]], done: Vec<u8>) -> Option<Vec<u8>> {
    let mut refs = Vec::new();
    decode_refs_into(&done, &mut refs)?;
    for part in rest {
        decode_refs_into(part, &mut refs)?;
    }
    refs.sort_unstable();
    refs.dedup();
    let mut out = Vec::with_capacity(done.len() + rest.iter().map(|p| p.len()).sum::<usize>());
    encode_refs(&mut out, &refs);
    Some(out)
}

/// Union of ascending ref lists.
fn union_sorted(mut lists: Vec<Vec<u64>>) -> Vec<u64> {
    match lists.len() {
        0 => Vec::new(),
        1 => lists.pop().unwrap_or_default(),
        _ => {
            let mut all: Vec<u64> = Vec::with_capacity(lists.iter().map(Vec::len).sum());
            for l in &lists {
                all.extend_from_slice(l);
            }
            all.sort_unstable();
            all.dedup();
            all
        }
    }
}

/// Intersection of two ascending ref lists (`small` the shorter).
fn intersect_sorted(small: &[u64], large: &[u64]) -> Vec<u64> {
    let mut out = Vec::with_capacity(small.len());
    if small.len() * 16 < large.len() {
        let mut rest = large;
        for &r in small {
            match rest.binary_search(&r) {
                Ok(i) => {
                    out.push(r);
                    rest = &rest[i + 1..];
                }
                Err(i) => rest = &rest[i..],
            }
        }
    } else {
        let (mut i, mut j) = (0, 0);
        while i < small.len() && j < large.len() {
            match small[i].cmp(&large[j]) {
                std::cmp::Ordering::Less => i += 1,
                std::cmp::Ordering::Greater => j += 1,
                std::cmp::Ordering::Equal => {
                    out.push(small[i]);
                    i += 1;
                    j += 1;
                }
            }
        }
    }
    out
}

/// A decoded registry entry.
struct Entry {
    tenant: String,
    labels: Labels,
    /// Present only when the id is not `SeriesId::of(tenant, labels)`.
    id: Option<SeriesId>,
}

impl Entry {
    fn id(&self) -> SeriesId {
        self.id
            .unwrap_or_else(|| SeriesId::of(&self.tenant, &self.labels))
    }
}

/// A registry entry; `Invalid` when the labels are beyond `bounds` (the
/// hard ones for new series; for series replayed or converted, what the
/// decoder accepts, so nothing is stored that cannot be read back).
fn encode_entry(tenant: &str, labels: &Labels, id: SeriesId, bounds: Bounds) -> Result<Vec<u8>> {
    let mut v = Vec::with_capacity(16 + labels.len() * 24);
    put_bytes(&mut v, tenant.as_bytes());
    put_labels_within(&mut v, labels, bounds)?;
    if SeriesId::of(tenant, labels) != id {
        v.extend_from_slice(&id.to_be_bytes());
    }
    Ok(v)
}

fn decode_entry(v: &[u8]) -> Result<Entry> {
    let mut r = Reader::new(v, "index series entry");
    let tenant = r.string()?;
    let labels = r.labels()?;
    let id = if r.is_empty() {
        None
    } else {
        Some(SeriesId::from_be_bytes(r.fixed::<16>()?))
    };
    Ok(Entry { tenant, labels, id })
}

/// The id of an encoded registry entry, without building its labels.
fn entry_id(v: &[u8]) -> Result<SeriesId> {
    let mut r = Reader::new(v, "index series entry");
    let tenant = std::str::from_utf8(r.bytes()?)
        .map_err(|_| Error::Corrupt("index series entry: tenant not UTF-8".into()))?;
    let n = r.uvarint()?;
    let mut pairs = Vec::with_capacity(n.min(256) as usize);
    for _ in 0..n {
        pairs.push((r.bytes()?, r.bytes()?));
    }
    if r.is_empty() {
        Ok(SeriesId::of_bytes(tenant, pairs.into_iter()))
    } else {
        Ok(SeriesId::from_be_bytes(r.fixed::<16>()?))
    }
}

/// The tenant of an encoded registry entry, without decoding the labels.
fn entry_tenant(v: &[u8]) -> Result<&[u8]> {
    Reader::new(v, "index series entry").bytes()
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
    opts.set_compression_type(DBCompressionType::Zstd);
    opts.set_bottommost_compression_type(DBCompressionType::Zstd);
    // Level 6: ~8% smaller than the default 3; the index is small, so
    // the extra compression CPU at flush and compaction is too.
    opts.set_compression_options(-14, 6, 0, 0);
    opts.set_bottommost_compression_options(-14, 6, 0, 0, true);
    let mut table = BlockBasedOptions::default();
    table.set_block_size(32 << 10);
    // Registering a series first looks its id up, nearly always a miss:
    // without a filter every miss decompresses a large block per level.
    table.set_bloom_filter(10.0, false);
    let cache = rocksdb::Cache::new_lru_cache((cache_bytes / 4).max(1 << 20))
        .map_err(|e| Error::Index(format!("creating the index block cache: {e}")))?;
    table.set_block_cache(&cache);
    opts.set_block_based_table_factory(&table);
    opts.set_write_buffer_size(32 << 20);
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
pub const DEFAULT_CACHE_BYTES: usize = 64 << 20;

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
            series_cache: Mutex::new(SeriesCache {
                cur: FxHashMap::default(),
                prev: FxHashMap::default(),
                cur_bytes: 0,
                budget: cache_bytes - cache_bytes / 4,
            }),
            next_ref: Mutex::new(0),
            postings_dirty: std::sync::atomic::AtomicBool::new(true),
            last_compaction: Mutex::new(None),
            bad_keys: Mutex::new(Default::default()),
            skipped: std::sync::atomic::AtomicU64::new(0),
        };
        *index.next_ref.get_mut() = index.max_ref()?.map_or(0, |r| r + 1);
        index.upgrade_id_keys()?;
        index.convert_legacy()?;
        Ok(index)
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

    /// The largest assigned ref.
    fn max_ref(&self) -> Result<Option<u64>> {
        let db = self.db()?;
        let mut it = db.raw_iterator();
        it.seek_for_prev(ref_key(u64::MAX));
        it.status().map_err(db_err("finding the last series ref"))?;
        Ok(match it.key() {
            Some(k) if k.len() == 9 && k[0] == b'r' => {
                Some(u64::from_be_bytes(k[1..].try_into().unwrap_or_default()))
            }
            _ => None,
        })
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
            let key_hex: String = key.iter().take(64).map(|b| format!("{b:02x}")).collect();
            tracing::error!(key = %key_hex, %err, skipped_total = n, "undecodable index entry skipped (the series, exemplar or metadata entry is left out of reads)");
        }
    }

    /// Undecodable entries met so far (self-metric).
    pub fn skipped_entries(&self) -> u64 {
        self.skipped.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Converts the pre-ref layout (`s` registry, one postings key per id).
    fn convert_legacy(&self) -> Result<()> {
        let mut old: Vec<(SeriesId, String, Labels)> = Vec::new();
        for item in self
            .db()?
            .iterator(IteratorMode::From(b"s", Direction::Forward))
        {
            let (k, v) = item.map_err(db_err("scanning legacy series registry"))?;
            if k.first() != Some(&b's') {
                break;
            }
            let Ok(id) = <[u8; 16]>::try_from(&k[1..]) else {
                continue;
            };
            let mut r = Reader::new(&v, "legacy index series entry");
            match r.string().and_then(|t| Ok((t, r.labels()?))) {
                Ok((tenant, labels)) => old.push((SeriesId::from_be_bytes(id), tenant, labels)),
                Err(e) => self.skip_entry(&k, &e),
            }
        }
        if old.is_empty() {
            return Ok(());
        }
        tracing::info!(
            series = old.len(),
            "converting the label index to series refs"
        );
        let mut wb = WriteBatch::default();
        // Legacy postings keys all end in a 16-byte id: every `p` key goes.
        wb.delete_range(b"p".as_slice(), b"q".as_slice());
        wb.delete_range(b"s".as_slice(), b"t".as_slice());
        let mut by_tenant: BTreeMap<&str, Vec<(SeriesId, &Labels)>> = BTreeMap::new();
        for (id, tenant, labels) in &old {
            by_tenant.entry(tenant).or_default().push((*id, labels));
        }
        let mut next = self.next_ref.lock();
        let mut n = *next;
        for (tenant, series) in by_tenant {
            n = self.register(&mut wb, n, tenant, &series, Bounds::Stored)?;
        }
        self.write(wb, "writing converted index")?;
        *next = n;
        // Drop the legacy keys from disk now rather than at some later compaction.
        self.db()?.compact_range::<&[u8], &[u8]>(None, None);
        Ok(())
    }

    /// Every registered series id (startup: the write path's known set).
    pub fn all_series_ids(&self) -> Result<Vec<SeriesId>> {
        let mut out = Vec::new();
        for item in prefix_iter(&*self.db()?, b"r") {
            let (k, v) = item.map_err(db_err("scanning series registry"))?;
            match entry_id(&v) {
                Ok(id) => out.push(id),
                Err(e) => self.skip_entry(&k, &e),
            }
        }
        Ok(out)
    }

    /// The ref and registry entry of `id`.
    fn lookup(&self, id: SeriesId) -> Result<Option<(u64, Entry)>> {
        let db = self.db()?;
        let Some(v) = db
            .get_pinned(id_key(id))
            .map_err(db_err("reading series ref"))?
        else {
            return Ok(None);
        };
        for r in decode_refs(&v)? {
            match self.entry(r) {
                Ok(Some(e)) if e.id() == id => return Ok(Some((r, e))),
                Ok(_) => {}
                Err(e @ Error::Corrupt(_)) => self.skip_entry(&ref_key(r), &e),
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// Rewrites the `i` keys of the first ref layout (whole 16-byte ids).
    fn upgrade_id_keys(&self) -> Result<()> {
        if self
            .db()?
            .get_pinned(VERSION_KEY)
            .map_err(db_err("reading index version"))?
            .is_some()
        {
            return Ok(());
        }
        let mut wb = WriteBatch::default();
        if self.max_ref()?.is_some() {
            tracing::info!("rewriting the label index's id keys");
            wb.delete_range(b"i".as_slice(), b"j".as_slice());
            let mut v = Vec::new();
            for item in prefix_iter(&*self.db()?, b"r") {
                let (k, e) = item.map_err(db_err("scanning series registry"))?;
                let r = u64::from_be_bytes(
                    k[1..]
                        .try_into()
                        .map_err(|_| Error::Corrupt("registry key".into()))?,
                );
                let id = match entry_id(&e) {
                    Ok(id) => id,
                    Err(err) => {
                        self.skip_entry(&k, &err);
                        continue;
                    }
                };
                v.clear();
                encode_refs(&mut v, &[r]);
                wb.merge(id_key(id), &v);
            }
        }
        wb.put(VERSION_KEY, VERSION);
        self.write(wb, "writing index version")
    }

    fn entry(&self, r: u64) -> Result<Option<Entry>> {
        let db = self.db()?;
        let Some(v) = db
            .get_pinned(ref_key(r))
            .map_err(db_err("reading series labels"))?
        else {
            return Ok(None);
        };
        Ok(Some(decode_entry(&v)?))
    }

    /// Adds registry and postings entries for the series not yet registered
    /// to `wb`, assigning refs from `next`; returns the next free ref.
    fn register(
        &self,
        wb: &mut WriteBatch,
        mut next: u64,
        tenant: &str,
        series: &[(SeriesId, &Labels)],
        bounds: Bounds,
    ) -> Result<u64> {
        let mut postings: BTreeMap<Vec<u8>, Vec<u64>> = BTreeMap::new();
        let mut batch: HashMap<SeriesId, &Labels> = HashMap::new();
        for &(id, labels) in series {
            if let Some(&prev) = batch.get(&id) {
                if prev == labels {
                    continue;
                }
                return Err(Error::Invalid(format!(
                    "series id collision: {labels} collides with {prev} (tenant {tenant})"
                )));
            }
            if let Some((_, e)) = self.lookup(id)? {
                if e.tenant == tenant && &e.labels == labels {
                    continue;
                }
                return Err(Error::Invalid(format!(
                    "series id collision: {labels} collides with {} (tenant {})",
                    e.labels, e.tenant
                )));
            }
            batch.insert(id, labels);
            let r = next;
            next += 1;
            let mut rv = Vec::with_capacity(3);
            encode_refs(&mut rv, &[r]);
            wb.merge(id_key(id), rv);
            wb.put(ref_key(r), encode_entry(tenant, labels, id, bounds)?);
            for l in labels.iter() {
                postings
                    .entry(postings_prefix(tenant, &l.name, Some(&l.value)))
                    .or_default()
                    .push(r);
            }
        }
        let mut v = Vec::new();
        for (k, refs) in postings {
            v.clear();
            encode_refs(&mut v, &refs);
            wb.merge(k, &v);
        }
        Ok(next)
    }

    /// Registers new series (registry + postings) in one batch. A registered
    /// id whose stored labels differ is a hash collision and is refused, so
    /// is a label set beyond the hard bounds (`Invalid`).
    pub fn add_series(&self, tenant: &str, series: &[(SeriesId, &Labels)]) -> Result<()> {
        self.add_series_within(tenant, series, Bounds::Hard)
    }

    /// [`add_series`](Self::add_series) for series read back from the
    /// commit log on replay: any label set the decoders accept, since a
    /// release before the hard bounds may have written it.
    pub fn add_replayed_series(&self, tenant: &str, series: &[(SeriesId, &Labels)]) -> Result<()> {
        self.add_series_within(tenant, series, Bounds::Stored)
    }

    fn add_series_within(
        &self,
        tenant: &str,
        series: &[(SeriesId, &Labels)],
        bounds: Bounds,
    ) -> Result<()> {
        self.recover()?;
        let mut next = self.next_ref.lock();
        let mut wb = WriteBatch::default();
        let n = self.register(&mut wb, *next, tenant, series, bounds)?;
        if n == *next {
            return Ok(());
        }
        self.write(wb, "writing series to index")?;
        self.postings_dirty
            .store(true, std::sync::atomic::Ordering::Relaxed);
        *next = n;
        Ok(())
    }

    pub fn series_labels(&self, id: SeriesId) -> Result<Option<(String, Labels)>> {
        Ok(self.lookup(id)?.map(|(_, e)| (e.tenant, e.labels)))
    }

    /// The refs of one label pair, ascending.
    fn postings_eq(&self, tenant: &str, name: &str, value: &str) -> Result<Vec<u64>> {
        match self
            .db()?
            .get_pinned(postings_prefix(tenant, name, Some(value)))
            .map_err(db_err("reading postings"))?
        {
            Some(v) => decode_refs(&v),
            None => Ok(Vec::new()),
        }
    }

    /// Refs of series with label `name` whose value satisfies `pred`.
    /// Only values starting with `value_prefix` are scanned.
    fn postings_where(
        &self,
        tenant: &str,
        name: &str,
        value_prefix: &str,
        pred: impl Fn(&str) -> bool,
    ) -> Result<Vec<u64>> {
        let prefix = postings_prefix(tenant, name, None);
        let mut scan = prefix.clone();
        scan.extend_from_slice(value_prefix.as_bytes());
        let mut lists = Vec::new();
        for item in prefix_iter(&*self.db()?, &scan) {
            let (k, v) = item.map_err(db_err("scanning postings"))?;
            let Some(value) = k[prefix.len()..].strip_suffix(&[0]) else {
                continue;
            };
            let Ok(value) = std::str::from_utf8(value) else {
                continue;
            };
            if pred(value) {
                lists.push(decode_refs(&v)?);
            }
        }
        Ok(union_sorted(lists))
    }

    /// Series of `tenant` matching every matcher, with their labels, sorted
    /// by labels. Matchers that match the empty string are checked against the
    /// labels; the others select postings, smallest set first.
    pub fn select(
        &self,
        tenant: &str,
        matchers: &[Matcher],
    ) -> Result<Vec<(SeriesId, Arc<Labels>)>> {
        let mut sets: Vec<Vec<u64>> = Vec::new();
        for m in matchers.iter().filter(|m| !m.matches_empty()) {
            let set = match m.op {
                MatchOp::Equal => self.postings_eq(tenant, &m.name, &m.value)?,
                MatchOp::RegexMatch if m.set_matches().is_some() => {
                    let mut lists = Vec::new();
                    for v in m.set_matches().unwrap_or_default() {
                        lists.push(self.postings_eq(tenant, &m.name, &v)?);
                    }
                    union_sorted(lists)
                }
                _ => {
                    self.postings_where(tenant, &m.name, m.literal_prefix().unwrap_or(""), |v| {
                        m.matches(v)
                    })?
                }
            };
            if set.is_empty() {
                return Ok(Vec::new());
            }
            sets.push(set);
        }
        let candidates: Vec<u64> = if sets.is_empty() {
            // Every series has a metric name, so its postings list them all.
            self.postings_where(tenant, METRIC_NAME, "", |_| true)?
        } else {
            sets.sort_by_key(Vec::len);
            let mut it = sets.into_iter();
            let first = it.next().unwrap_or_default();
            it.fold(first, |acc, s| intersect_sorted(&acc, &s))
        };
        let mut out = Vec::with_capacity(candidates.len());
        let mut missing = Vec::new();
        {
            let mut cache = self.series_cache.lock();
            for &r in &candidates {
                match cache.get(r) {
                    Some(v) => out.push(v),
                    None => missing.push(r),
                }
            }
        }
        if !missing.is_empty() {
            let mut got = Vec::with_capacity(missing.len());
            self.for_each_entry(&missing, |r, v| {
                // Postings are per tenant; the check guards against damage.
                let decoded = entry_tenant(v).and_then(|t| {
                    Ok(if t == tenant.as_bytes() {
                        Some(decode_entry(v)?)
                    } else {
                        None
                    })
                });
                match decoded {
                    Ok(Some(e)) => got.push((r, (e.id(), Arc::new(e.labels)))),
                    Ok(None) => {}
                    Err(e) => self.skip_entry(&ref_key(r), &e),
                }
                Ok(())
            })?;
            let mut cache = self.series_cache.lock();
            for (r, v) in got {
                cache.insert(r, v.clone());
                out.push(v);
            }
        }
        // Postings already enforce the matchers that need a value; those
        // that match the empty string are checked against the labels.
        let checks: Vec<&Matcher> = matchers.iter().filter(|m| m.matches_empty()).collect();
        if !checks.is_empty() {
            out.retain(|(_, l)| {
                checks
                    .iter()
                    .all(|m| m.matches(l.get(&m.name).unwrap_or("")))
            });
        }
        // Label sets are distinct, so an unstable sort gives the same order.
        out.sort_unstable_by(|a, b| a.1.cmp(&b.1));
        Ok(out)
    }

    /// Calls `f` with the registry entry of each ref (ascending) that has
    /// one: one iterator, stepping over near gaps and seeking over far ones.
    fn for_each_entry(
        &self,
        refs: &[u64],
        mut f: impl FnMut(u64, &[u8]) -> Result<()>,
    ) -> Result<()> {
        let (Some(&lo), Some(&hi)) = (refs.first(), refs.last()) else {
            return Ok(());
        };
        let mut ro = ReadOptions::default();
        let mut upper = ref_key(hi).to_vec();
        upper.push(0);
        ro.set_iterate_upper_bound(upper);
        let db = self.db()?;
        let mut it = db.raw_iterator_opt(ro);
        it.seek(ref_key(lo));
        for &r in refs {
            let want = ref_key(r);
            let mut steps = 0;
            while let Some(k) = it.key() {
                match k.cmp(want.as_slice()) {
                    std::cmp::Ordering::Less if steps < 8 => {
                        it.next();
                        steps += 1;
                    }
                    std::cmp::Ordering::Less => {
                        it.seek(want);
                        break;
                    }
                    _ => break,
                }
            }
            if it.key() == Some(want.as_slice()) {
                if let Some(v) = it.value() {
                    f(r, v)?;
                }
            }
        }
        it.status().map_err(db_err("reading series entries"))
    }

    /// Distinct label names of a tenant's series (all, when no matchers).
    pub fn label_names(&self, tenant: &str) -> Result<Vec<String>> {
        let mut prefix = vec![b'p'];
        prefix.extend_from_slice(tenant.as_bytes());
        prefix.push(0);
        let mut names = Vec::new();
        let mut ro = ReadOptions::default();
        ro.set_iterate_upper_bound(prefix_end(&prefix));
        let db = self.db()?;
        let mut it = db.raw_iterator_opt(ro);
        it.seek(&prefix);
        while let Some(k) = it.key() {
            let rest = &k[prefix.len()..];
            let Some(end) = rest.iter().position(|&b| b == 0) else {
                break;
            };
            let name = String::from_utf8_lossy(&rest[..end]).to_string();
            // Skip past every key of this name: name + 1 (the byte after the separator).
            let mut seek = prefix.clone();
            seek.extend_from_slice(name.as_bytes());
            seek.push(1);
            names.push(name);
            it.seek(&seek);
        }
        it.status().map_err(db_err("scanning label names"))?;
        Ok(names)
    }

    /// Distinct values of label `name` (all of the tenant's series).
    pub fn label_values(&self, tenant: &str, name: &str) -> Result<Vec<String>> {
        let prefix = postings_prefix(tenant, name, None);
        let mut ro = ReadOptions::default();
        ro.set_iterate_upper_bound(prefix_end(&prefix));
        let db = self.db()?;
        let mut it = db.raw_iterator_opt(ro);
        it.seek(&prefix);
        let mut values = Vec::new();
        while let Some(k) = it.key() {
            if let Some(v) = k[prefix.len()..].strip_suffix(&[0]) {
                values.push(String::from_utf8_lossy(v).to_string());
            }
            it.next();
        }
        it.status().map_err(db_err("scanning label values"))?;
        Ok(values)
    }

    /// Stores exemplars; `Invalid` for a label set beyond the hard bounds.
    pub fn put_exemplars(&self, items: &[(SeriesId, Exemplar)]) -> Result<()> {
        self.put_exemplars_within(items, Bounds::Hard)
    }

    /// [`put_exemplars`](Self::put_exemplars) for exemplars read back from
    /// the commit log on replay (any label set the decoders accept).
    pub fn put_replayed_exemplars(&self, items: &[(SeriesId, Exemplar)]) -> Result<()> {
        self.put_exemplars_within(items, Bounds::Stored)
    }

    fn put_exemplars_within(&self, items: &[(SeriesId, Exemplar)], bounds: Bounds) -> Result<()> {
        self.recover()?;
        let mut wb = WriteBatch::default();
        for (id, e) in items {
            let mut k = Vec::with_capacity(25);
            k.push(b'e');
            k.extend_from_slice(&id.to_be_bytes());
            k.extend_from_slice(&ts_key(e.t));
            let mut v = e.value.to_bits().to_le_bytes().to_vec();
            put_labels_within(&mut v, &e.labels, bounds)?;
            wb.put(k, v);
        }
        self.write(wb, "writing exemplars")
    }

    pub fn exemplars(&self, id: SeriesId, start: i64, end: i64) -> Result<Vec<Exemplar>> {
        let mut prefix = vec![b'e'];
        prefix.extend_from_slice(&id.to_be_bytes());
        let mut from = prefix.clone();
        from.extend_from_slice(&ts_key(start));
        let mut out = Vec::new();
        for item in self
            .db()?
            .iterator(IteratorMode::From(&from, Direction::Forward))
        {
            let (k, v) = item.map_err(db_err("scanning exemplars"))?;
            if !k.starts_with(&prefix) || k.len() != 25 {
                break;
            }
            let t =
                (u64::from_be_bytes(k[17..25].try_into().unwrap_or_default()) ^ (1 << 63)) as i64;
            if t > end {
                break;
            }
            let mut r = Reader::new(&v, "exemplar entry");
            match r
                .u64()
                .and_then(|bits| Ok((f64::from_bits(bits), r.labels()?)))
            {
                Ok((value, labels)) => out.push(Exemplar { labels, value, t }),
                Err(e) => self.skip_entry(&k, &e),
            }
        }
        Ok(out)
    }

    pub fn put_metadata(&self, tenant: &str, items: &[(String, MetricMetadata)]) -> Result<()> {
        self.recover()?;
        let mut wb = WriteBatch::default();
        for (name, md) in items {
            let mut v = Vec::new();
            put_bytes(&mut v, md.metric_type.as_str().as_bytes());
            put_bytes(&mut v, md.help.as_bytes());
            put_bytes(&mut v, md.unit.as_bytes());
            wb.put(metadata_key(tenant, name), v);
        }
        self.write(wb, "writing metadata")
    }

    pub fn metadata(
        &self,
        tenant: &str,
        metric: Option<&str>,
    ) -> Result<Vec<(String, MetricMetadata)>> {
        let prefix = metadata_key(tenant, metric.unwrap_or(""));
        let mut out = Vec::new();
        for item in self
            .db()?
            .iterator(IteratorMode::From(&prefix, Direction::Forward))
        {
            let (k, v) = item.map_err(db_err("scanning metadata"))?;
            if !k.starts_with(&prefix) {
                break;
            }
            let base = metadata_key(tenant, "").len();
            let name = String::from_utf8_lossy(&k[base..]).to_string();
            if metric.is_some_and(|m| m != name) {
                continue;
            }
            let mut r = Reader::new(&v, "metadata entry");
            let decoded = (|| -> Result<MetricMetadata> {
                Ok(MetricMetadata {
                    metric_type: MetricType::parse(&r.string()?),
                    help: r.string()?,
                    unit: r.string()?,
                })
            })();
            match decoded {
                Ok(md) => out.push((name, md)),
                Err(e) => self.skip_entry(&k, &e),
            }
        }
        Ok(out)
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

/// Fuzzing: a registry entry value. Its decoders must agree: the id read
/// without building labels is the decoded entry's id, the tenant read alone
/// is its tenant.
pub(crate) fn fuzz_entry(v: &[u8]) {
    let Ok(e) = decode_entry(v) else {
        return;
    };
    assert_eq!(
        entry_id(v).ok(),
        Some(e.id()),
        "entry_id of a decodable entry"
    );
    assert_eq!(entry_tenant(v).ok(), Some(e.tenant.as_bytes()));
}

/// Fuzzing: `parts` as postings values (existing value and merge operands).
/// Decoding and bounds must agree; merging lists that are ascending and
/// distinct gives their sorted union.
pub(crate) fn fuzz_postings(parts: &[&[u8]]) {
    let mut lists = Vec::with_capacity(parts.len());
    for p in parts {
        let decoded = decode_refs(p).ok();
        let bounds = refs_bounds(p);
        match &decoded {
            Some(l) if !l.is_empty() => {
                let (first, last, _) = bounds.expect("bounds of a decodable list");
                assert_eq!((first, last), (l[0], l[l.len() - 1]));
            }
            _ => assert!(bounds.is_none(), "bounds of an empty or bad list"),
        }
        lists.push(decoded);
    }
    let merged = merge_parts(parts);
    let all_good = lists.iter().all(|l| {
        l.as_ref()
            .is_some_and(|l| l.windows(2).all(|w| w[0] < w[1]))
    });
    if !all_good {
        return;
    }
    let want = union_sorted(lists.into_iter().flatten().collect());
    let merged = merged.expect("merging valid postings");
    assert_eq!(decode_refs(&merged).ok(), Some(want), "merged postings");
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_common::limits::hard;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn build_matcher(op: u8, mname: u8, val: u8) -> (Matcher, &'static str) {
        let ops = [
            MatchOp::Equal,
            MatchOp::NotEqual,
            MatchOp::RegexMatch,
            MatchOp::RegexNoMatch,
        ];
        let op = ops[op as usize % 4];
        let value = match val {
            3 => String::new(),
            4 => "v.*".to_string(),
            // Literal prefixes: the index scans only values starting with them.
            5 => "v1.*".to_string(),
            6 => "v[12]".to_string(),
            _ => format!("w{val}|v{val}"),
        };
        let value = if matches!(op, MatchOp::Equal | MatchOp::NotEqual) {
            value.split('|').next().unwrap_or("").to_string()
        } else {
            value
        };
        let lname = ["x", "y", "__name__"][mname as usize % 3];
        (Matcher::new(op, lname, value).unwrap(), lname)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        /// The index answers like a naive scan over a Vec of label sets, with
        /// series added in several batches (some repeated, some with ids that
        /// are not the label hash) and the index reopened in between.
        #[test]
        fn select_agrees_with_naive_model(
            series in proptest::collection::vec(
                (0u8..3, 0u8..4, 0u8..3, any::<bool>(), any::<bool>()), 1..60),
            batch in 1usize..7,
            reopen_at in 0usize..60,
            ms in proptest::collection::vec((0u8..4, 0u8..3, 0u8..7), 1..3),
        ) {
            let d = tempfile::tempdir().unwrap();
            let mut idx = Index::open(d.path()).unwrap();
            let mut model: BTreeMap<Labels, SeriesId> = BTreeMap::new();
            let mut all: BTreeMap<SeriesId, (String, Labels)> = BTreeMap::new();
            let mut items = Vec::new();
            for (n, a, b, tenant_b, odd_id) in &series {
                let tenant = if *tenant_b { "b" } else { "a" };
                let mut pairs = vec![("__name__".to_string(), format!("m{n}")), ("x".into(), format!("v{a}"))];
                if *b > 0 { pairs.push(("y".into(), format!("w{b}"))); }
                let labels = Labels::from_pairs(&pairs);
                let mut id = SeriesId::of(tenant, &labels);
                if *odd_id { id = SeriesId(id.0 ^ 0x5a5a); }
                if let Some((t, l)) = all.get(&id) {
                    // Same id again: the same series (the generator repeats).
                    prop_assert!(t == tenant && *l == labels);
                } else if all.values().any(|(t, l)| t == tenant && *l == labels) {
                    continue; // the other id of these labels: skip
                }
                all.insert(id, (tenant.to_string(), labels.clone()));
                if tenant == "a" { model.insert(labels.clone(), id); }
                items.push((tenant, id, labels));
            }
            for (ci, chunk) in items.chunks(batch).enumerate() {
                if ci * batch >= reopen_at && ci * batch < reopen_at + batch {
                    drop(idx);
                    idx = Index::open(d.path()).unwrap();
                }
                for tenant in ["a", "b"] {
                    let refs: Vec<(SeriesId, &Labels)> = chunk
                        .iter()
                        .filter(|(t, _, _)| *t == tenant)
                        .map(|(_, id, l)| (*id, l))
                        .collect();
                    idx.add_series(tenant, &refs).unwrap();
                    // Registering again is a no-op.
                    idx.add_series(tenant, &refs).unwrap();
                }
            }
            let matchers: Vec<(Matcher, &str)> = ms.iter().map(|(op, n, v)| build_matcher(*op, *n, *v)).collect();
            let ms: Vec<Matcher> = matchers.iter().map(|(m, _)| m.clone()).collect();
            let got: Vec<(SeriesId, Labels)> = idx
                .select("a", &ms)
                .unwrap()
                .into_iter()
                .map(|(i, l)| (i, Arc::unwrap_or_clone(l)))
                .collect();
            let want: Vec<(SeriesId, Labels)> = model
                .iter()
                .filter(|(l, _)| matchers.iter().all(|(m, n)| m.matches(l.get(n).unwrap_or(""))))
                .map(|(l, id)| (*id, l.clone()))
                .collect();
            prop_assert_eq!(got, want);
            // Ids and labels survive a reopen; refs are distinct.
            drop(idx);
            let idx = Index::open(d.path()).unwrap();
            let mut ids = idx.all_series_ids().unwrap();
            ids.sort();
            prop_assert_eq!(ids, all.keys().copied().collect::<Vec<_>>());
            for (id, (t, l)) in &all {
                prop_assert_eq!(idx.series_labels(*id).unwrap(), Some((t.clone(), l.clone())));
            }
            let refs: std::collections::HashSet<u64> =
                all.keys().map(|id| idx.lookup(*id).unwrap().unwrap().0).collect();
            prop_assert_eq!(refs.len(), all.len());
            let every: Vec<Labels> = idx.select("a", &[]).unwrap().into_iter().map(|(_, l)| Arc::unwrap_or_clone(l)).collect();
            prop_assert_eq!(every, model.keys().cloned().collect::<Vec<_>>());
        }

        /// The merge operator is a set union whatever the operand order.
        #[test]
        fn merge_is_union(lists in proptest::collection::vec(
            proptest::collection::btree_set(0u64..300, 0..20), 1..6)) {
            let d = tempfile::tempdir().unwrap();
            let idx = Index::open(d.path()).unwrap();
            let mut want = std::collections::BTreeSet::new();
            for (i, l) in lists.iter().enumerate() {
                let refs: Vec<u64> = l.iter().copied().collect();
                let mut v = Vec::new();
                encode_refs(&mut v, &refs);
                idx.db().unwrap().merge(b"pt\0n\0v\0", &v).unwrap();
                want.extend(refs);
                if i == 2 {
                    idx.persist().unwrap();
                }
            }
            let got = idx.postings_eq("t", "n", "v").unwrap();
            prop_assert_eq!(got, want.into_iter().collect::<Vec<_>>());
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Registry entries round-trip over the accepted domain: any tenant,
        /// label sets up to the hard bounds, ids that are or are not the
        /// label hash.
        #[test]
        fn entries_round_trip_over_the_accepted_domain(
            tenant in "\\PC{0,16}",
            n in prop_oneof![4 => 0usize..6, 1 => Just(hard::MAX_LABELS)],
            name_len in prop_oneof![3 => 4usize..12, 1 => Just(hard::MAX_LABEL_NAME_BYTES)],
            value in prop_oneof![3 => "\\PC{0,8}", 1 => Just("v".repeat(hard::MAX_LABEL_VALUE_BYTES))],
            odd_id in proptest::option::of(any::<u128>()),
        ) {
            let v: Vec<cairn_common::Label> = (0..n)
                .map(|i| {
                    let nl = if i < 2 { name_len } else { 6 };
                    let name = format!("{i:04}{}", "n".repeat(nl - 4));
                    let value = if i < 2 { value.clone() } else { format!("{i}") };
                    cairn_common::Label::new(name, value)
                })
                .collect();
            let labels = Labels::from_sorted_unchecked(v);
            let id = odd_id.map_or_else(|| SeriesId::of(&tenant, &labels), SeriesId);
            let bytes = encode_entry(&tenant, &labels, id, Bounds::Hard).unwrap();
            let e = decode_entry(&bytes).unwrap();
            prop_assert_eq!(&e.tenant, &tenant);
            prop_assert_eq!(&e.labels, &labels);
            prop_assert_eq!(e.id(), id);
            prop_assert_eq!(entry_id(&bytes).unwrap(), id);
            prop_assert_eq!(entry_tenant(&bytes).unwrap(), tenant.as_bytes());
        }
    }

    #[test]
    fn entries_beyond_the_bounds_are_not_encoded() {
        let v: Vec<cairn_common::Label> = (0..=hard::MAX_LABELS)
            .map(|i| cairn_common::Label::new(format!("l{i:05}"), "x"))
            .collect();
        let labels = Labels::from_sorted_unchecked(v);
        let id = SeriesId::of("t", &labels);
        assert!(matches!(
            encode_entry("t", &labels, id, Bounds::Hard),
            Err(Error::Invalid(_))
        ));
        let d = tempfile::tempdir().unwrap();
        let idx = Index::open(d.path()).unwrap();
        assert!(matches!(
            idx.add_series("t", &[(id, &labels)]),
            Err(Error::Invalid(_))
        ));
        assert!(idx.all_series_ids().unwrap().is_empty());
    }

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
            match idx
                .add_series("t", &[(id, &l)])
                .and_then(|()| idx.persist())
            {
                Ok(()) => stored.push(id),
                Err(e) => {
                    eprintln!("full: {e}");
                    failed = true;
                    break;
                }
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

    #[test]
    fn small_series_cache_answers_like_no_cache() {
        let d = tempfile::tempdir().unwrap();
        let e = tempfile::tempdir().unwrap();
        // 8 KiB for label sets: a few dozen series, so generations rotate.
        let small = Index::open_with_cache(d.path(), 8 << 10).unwrap();
        let none = Index::open_with_cache(e.path(), 0).unwrap();
        for t in ["t", "u"] {
            let all: Vec<(SeriesId, Labels)> = (0..300)
                .map(|i| {
                    let l = Labels::from_pairs(&[
                        ("__name__", if i % 2 == 0 { "up" } else { "down" }),
                        ("i", &format!("{i:03}")),
                        ("g", &format!("{}", i % 7)),
                    ]);
                    (SeriesId::of(t, &l), l)
                })
                .collect();
            let refs: Vec<(SeriesId, &Labels)> = all.iter().map(|(i, l)| (*i, l)).collect();
            small.add_series(t, &refs).unwrap();
            none.add_series(t, &refs).unwrap();
        }
        for round in 0..3 {
            for g in 0..7 {
                for (t, name) in [("t", "up"), ("u", "down"), ("t", "down")] {
                    let ms = [
                        Matcher::new(MatchOp::Equal, "__name__", name).unwrap(),
                        Matcher::new(MatchOp::RegexMatch, "g", format!("{g}|{}", (g + round) % 7))
                            .unwrap(),
                    ];
                    let a = small.select(t, &ms).unwrap();
                    let b = none.select(t, &ms).unwrap();
                    assert!(!a.is_empty());
                    assert_eq!(a, b, "{t} {name} g={g} round {round}");
                }
            }
        }
    }

    #[test]
    fn collision_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let idx = Index::open(d.path()).unwrap();
        let l1 = Labels::from_pairs(&[("__name__", "up"), ("job", "a")]);
        let l2 = Labels::from_pairs(&[("__name__", "up"), ("job", "b")]);
        let id = SeriesId::of("t", &l1);
        idx.add_series("t", &[(id, &l1)]).unwrap();
        assert!(idx.add_series("t", &[(id, &l2)]).is_err());
        assert!(idx.add_series("u", &[(id, &l1)]).is_err());
        let other = SeriesId(7);
        assert!(idx.add_series("t", &[(other, &l2), (other, &l1)]).is_err());
        assert_eq!(idx.all_series_ids().unwrap(), vec![id]);
    }

    #[test]
    fn ids_sharing_a_lookup_key() {
        let d = tempfile::tempdir().unwrap();
        let l1 = Labels::from_pairs(&[("__name__", "up"), ("job", "a")]);
        let l2 = Labels::from_pairs(&[("__name__", "up"), ("job", "b")]);
        let l3 = Labels::from_pairs(&[("__name__", "up"), ("job", "c")]);
        let (i1, i2, i3) = (
            SeriesId(1 << 64),
            SeriesId((1 << 64) | 1),
            SeriesId(5 << 64),
        );
        {
            let idx = Index::open(d.path()).unwrap();
            idx.add_series("t", &[(i1, &l1), (i2, &l2)]).unwrap();
            idx.add_series("t", &[(i3, &l3)]).unwrap();
            assert!(idx.add_series("t", &[(i2, &l1)]).is_err());
            idx.persist().unwrap();
        }
        let idx = Index::open(d.path()).unwrap();
        idx.add_series("t", &[(i2, &l2), (i1, &l1)]).unwrap();
        assert_eq!(idx.series_labels(i1).unwrap(), Some(("t".into(), l1)));
        assert_eq!(idx.series_labels(i2).unwrap(), Some(("t".into(), l2)));
        assert_eq!(idx.series_labels(SeriesId((1 << 64) | 2)).unwrap(), None);
        let mut ids = idx.all_series_ids().unwrap();
        ids.sort();
        assert_eq!(ids, vec![i1, i2, i3]);
        assert_eq!(*idx.next_ref.lock(), 3);
    }

    #[test]
    fn upgrades_whole_id_keys() {
        let d = tempfile::tempdir().unwrap();
        let l1 = Labels::from_pairs(&[("__name__", "up"), ("job", "a")]);
        let l2 = Labels::from_pairs(&[("__name__", "up"), ("job", "b")]);
        let (i1, i2) = (SeriesId::of("t", &l1), SeriesId(42));
        {
            let idx = Index::open(d.path()).unwrap();
            idx.add_series("t", &[(i1, &l1), (i2, &l2)]).unwrap();
            // Back to the first ref layout: whole-id `i` keys, no version.
            let mut wb = WriteBatch::default();
            wb.delete_range(b"i".as_slice(), b"j".as_slice());
            idx.db().unwrap().write(wb).unwrap();
            idx.db().unwrap().delete(VERSION_KEY).unwrap();
            for (r, id) in [(0u64, i1), (1, i2)] {
                let mut k = vec![b'i'];
                k.extend_from_slice(&id.to_be_bytes());
                let mut v = Vec::new();
                put_uvarint(&mut v, r);
                idx.db().unwrap().put(k, v).unwrap();
            }
        }
        let idx = Index::open(d.path()).unwrap();
        assert_eq!(idx.series_labels(i1).unwrap(), Some(("t".into(), l1)));
        assert_eq!(idx.series_labels(i2).unwrap(), Some(("t".into(), l2)));
        let mut ids = idx.all_series_ids().unwrap();
        ids.sort();
        let mut want = vec![i1, i2];
        want.sort();
        assert_eq!(ids, want);
        let n = prefix_iter(&idx.db().unwrap(), b"i").count();
        assert_eq!(n, 2);
    }

    /// The pre-ref layout is converted, including an entry beyond the hard
    /// bounds (2,000 labels, a 70 KiB value) as releases before them wrote.
    #[test]
    fn converts_legacy_layout() {
        let d = tempfile::tempdir().unwrap();
        let l1 = Labels::from_pairs(&[("__name__", "up"), ("job", "a")]);
        let mut big: Vec<(String, String)> =
            vec![("__name__".into(), "up".into()), ("job".into(), "b".into())];
        big.extend((0..2000).map(|i| (format!("x{i:05}"), "v".to_string())));
        big.push(("z".into(), "v".repeat(70 * 1024)));
        let l2 = Labels::from_sorted_unchecked(
            big.iter()
                .map(|(n, v)| cairn_common::Label::new(n.as_str(), v.as_str()))
                .collect(),
        );
        assert!(crate::enc::labels_unstorable(
            l2.iter().map(|l| (l.name.as_str(), l.value.as_str()))
        )
        .is_some());
        let (i1, i2) = (SeriesId::of("t", &l1), SeriesId(42));
        {
            let mut opts = Options::default();
            opts.create_if_missing(true);
            let db = DB::open(&opts, d.path()).unwrap();
            for (id, l) in [(i1, &l1), (i2, &l2)] {
                let mut k = vec![b's'];
                k.extend_from_slice(&id.to_be_bytes());
                // The old release's encoding, unchecked.
                let mut v = Vec::new();
                put_bytes(&mut v, b"t");
                put_uvarint(&mut v, l.len() as u64);
                for lb in l.iter() {
                    put_bytes(&mut v, lb.name.as_bytes());
                    put_bytes(&mut v, lb.value.as_bytes());
                }
                db.put(k, v).unwrap();
                for lb in l.iter() {
                    let mut k = postings_prefix("t", &lb.name, Some(&lb.value));
                    k.extend_from_slice(&id.to_be_bytes());
                    db.put(k, b"").unwrap();
                }
            }
        }
        let idx = Index::open(d.path()).unwrap();
        let m = Matcher::new(MatchOp::Equal, "__name__", "up").unwrap();
        assert_eq!(
            idx.select("t", &[m]).unwrap(),
            vec![(i1, Arc::new(l1.clone())), (i2, Arc::new(l2.clone()))]
        );
        assert_eq!(idx.label_values("t", "job").unwrap(), vec!["a", "b"]);
        assert_eq!(idx.label_names("t").unwrap().len(), 2 + 2000 + 1);
        assert_eq!(idx.series_labels(i2).unwrap(), Some(("t".into(), l2)));
        assert_eq!(idx.skipped_entries(), 0);
        drop(idx);
        let idx = Index::open(d.path()).unwrap();
        assert_eq!(idx.all_series_ids().unwrap().len(), 2);
        assert_eq!(*idx.next_ref.lock(), 2);
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
