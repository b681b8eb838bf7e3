//! The commit log: one append-only log per node, in numbered segments.
//!
//! Segment file: the 8-byte magic `CAIRNCL1`, then records. Record:
//! `len: u32 LE | crc32c(payload): u32 LE | payload`. A record is written with
//! one `write` call under the log mutex, so the only damage a crash can do is a
//! torn record at a segment's tail; replay stops reading that segment there
//! (the record was never acknowledged) and goes on with the next one. Other
//! damage (a bad checksum or length inside the segment) skips exactly the
//! damaged record where it can (see `Walk`).
//!
//! Group commit: writers append and then wait in [`CommitLog::wait_durable`];
//! one syncer thread `fdatasync`s whatever has been written and wakes them all,
//! so concurrent writers share one fsync. With [`FsyncPolicy::Periodic`] the
//! syncer runs every period and writers do not wait.
//!
//! A failed fdatasync fails every record of that segment not synced before,
//! including records appended while it ran, and the segment is never synced
//! again: Linux reports a writeback error to one fsync only, and the next
//! one returns Ok over pages that never reached the disk. The next append
//! starts a new segment, whose records are acknowledged as usual.

use crate::error::{Error, Result};
use parking_lot::{Condvar, Mutex};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const MAGIC: &[u8; 8] = b"CAIRNCL1";
/// A record larger than this is treated as corruption on replay.
const MAX_RECORD: u32 = 1 << 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Every acknowledged write has been fdatasync'ed (group commit).
    Always,
    /// fdatasync every period; writes are acknowledged once written to the OS.
    Periodic(Duration),
}

/// What the log knows about a segment: which block windows its samples touch,
/// so it can be removed once all of them are on disk in filesets.
#[derive(Debug, Default, Clone)]
pub struct SegmentInfo {
    pub blocks: BTreeSet<i64>,
    pub bytes: u64,
}

/// A segment file open for appending.
struct SegFile {
    file: File,
    no: u64,
    path: PathBuf,
    /// Held across every fdatasync of this file and the recording of its
    /// outcome. Linux reports a writeback error to one fsync only (later ones
    /// return Ok, the pages are gone), so two fsyncs racing on one file can
    /// see Err and Ok: the Ok must not be recorded before the Err is.
    io: Mutex<()>,
    /// Set (under `io`) once an fdatasync of this file failed: nothing in it
    /// that was not synced before is ever reported durable, it is never
    /// synced again, and the next append starts a new segment.
    sync_failed: AtomicBool,
}

impl SegFile {
    fn new(dir: &Path, no: u64, file: File) -> Arc<Self> {
        Arc::new(Self {
            file,
            no,
            path: seg_path(dir, no),
            io: Mutex::new(()),
            sync_failed: AtomicBool::new(false),
        })
    }

    fn sync(&self) -> std::io::Result<()> {
        crate::fault::io_fault("commitlog-sync", &self.path)?;
        self.file.sync_data()
    }

    fn failed(&self) -> bool {
        self.sync_failed.load(Ordering::SeqCst)
    }
}

struct Active {
    seg: Arc<SegFile>,
    bytes: u64,
    /// Sequence number of the segment's first record (its last is
    /// `written_seq` while it is active). Records of sealed segments are
    /// all settled, synced or failed, when they are sealed.
    first_seq: u64,
    /// Set after a failed write: the segment may end in a torn record, so
    /// the next append starts a fresh one (what it holds can still be synced).
    torn: bool,
    /// Records written to the segment so far.
    records: u64,
    /// When the segment was started.
    opened: std::time::Instant,
}

/// Where an appended record lands: its segment and its position there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordPos {
    pub segment: u64,
    /// Records before it in the segment.
    pub index: u64,
}

struct Inner {
    active: Active,
    segments: BTreeMap<u64, SegmentInfo>,
    written_seq: u64,
    /// The framing buffer, reused from one record to the next.
    buf: Vec<u8>,
}

struct SyncState {
    synced_seq: u64,
    /// Records up to this sequence number were covered by an fsync that
    /// failed: they are never reported durable (after a failed fsync the
    /// kernel may have dropped their pages). Later records are, once a sync
    /// of the segment they went to succeeds, so the log recovers by itself
    /// when the fault (a full disk) goes away.
    failed_upto: u64,
    last_error: String,
}

impl std::fmt::Debug for CommitLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommitLog").finish_non_exhaustive()
    }
}

pub struct CommitLog {
    dir: PathBuf,
    policy: FsyncPolicy,
    max_segment_bytes: u64,
    inner: Mutex<Inner>,
    sync: Mutex<SyncState>,
    /// Signalled when new data is written (wakes the syncer) and when a sync
    /// completes (wakes waiting writers).
    written_cv: Condvar,
    synced_cv: Condvar,
    shutdown: AtomicBool,
    /// Test hook run once by the syncer between choosing what to sync and
    /// syncing it.
    #[cfg(test)]
    pub(crate) before_sync: Mutex<Option<SyncHook>>,
}

#[cfg(test)]
type SyncHook = Box<dyn FnOnce(&CommitLog) + Send>;

fn seg_path(dir: &Path, no: u64) -> PathBuf {
    dir.join(format!("{no:016}.log"))
}

fn io_err(context: String) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Io { context, source }
}

/// Creates segment `no` with its header, synced. On failure nothing is left
/// behind (a partial file would make the next attempt fail with "File
/// exists"); a header-only or empty file left by a crash is replaced.
fn create_segment(dir: &Path, no: u64) -> Result<File> {
    let path = seg_path(dir, no);
    crate::fault::io_fault("commitlog-create-segment", &path).map_err(io_err(format!(
        "creating commit log segment {}",
        path.display()
    )))?;
    let open = || OpenOptions::new().create_new(true).append(true).open(&path);
    let mut f = match open() {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            // Numbers never repeat, so an existing file can only be one whose
            // creation did not complete: without records it holds nothing.
            let len = fs::metadata(&path).map(|m| m.len()).unwrap_or(u64::MAX);
            if len > MAGIC.len() as u64 {
                return Err(Error::Io {
                    context: format!(
                        "creating commit log segment {}: it exists and holds {len} bytes",
                        path.display()
                    ),
                    source: e,
                });
            }
            let _ = fs::remove_file(&path);
            open()
        }
        r => r,
    }
    .map_err(io_err(format!(
        "creating commit log segment {}",
        path.display()
    )))?;
    if let Err(e) = f.write_all(MAGIC).and_then(|_| f.sync_data()) {
        drop(f);
        let _ = fs::remove_file(&path);
        return Err(Error::Io {
            context: format!("writing commit log segment {}", path.display()),
            source: e,
        });
    }
    // Make the new directory entry durable too.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(f)
}

impl CommitLog {
    /// Opens the log in `dir`, replaying every existing segment after
    /// `replay_after` into `apply` (oldest first, with the segment number;
    /// those up to `replay_after` are covered by a head snapshot and only
    /// kept for removal). `apply` returns the block
    /// windows whose data from that record now lives only in memory.
    /// Afterwards a fresh segment is started for new writes, numbered above
    /// every existing one and above `min_next` (numbers never repeat, since
    /// filesets refer to them).
    ///
    /// A record that fails its checksum (other than a torn tail) or that
    /// `apply` refuses with `Error::Corrupt` is skipped, counted and logged
    /// with its segment and offset; with `strict` the open fails instead.
    /// Other errors of `apply` fail the open.
    pub fn open(
        dir: &Path,
        policy: FsyncPolicy,
        max_segment_bytes: u64,
        min_next: u64,
        replay_after: u64,
        strict: bool,
        mut apply: impl FnMut(u64, &[u8]) -> Result<BTreeSet<i64>>,
    ) -> Result<(Arc<Self>, ReplayStats)> {
        fs::create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))?;
        let mut nos: Vec<u64> = fs::read_dir(dir)
            .map_err(io_err(format!("listing {}", dir.display())))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().to_string();
                name.strip_suffix(".log").and_then(|n| n.parse().ok())
            })
            .collect();
        nos.sort_unstable();
        let mut stats = ReplayStats::default();
        let mut segments = BTreeMap::new();
        for &no in &nos {
            let path = seg_path(dir, no);
            if no <= replay_after {
                let bytes = fs::metadata(&path).map_or(0, |m| m.len());
                segments.insert(
                    no,
                    SegmentInfo {
                        bytes,
                        ..Default::default()
                    },
                );
                continue;
            }
            let mut buf = Vec::new();
            File::open(&path)
                .and_then(|mut f| f.read_to_end(&mut buf))
                .map_err(io_err(format!(
                    "reading commit log segment {}",
                    path.display()
                )))?;
            let mut info = SegmentInfo {
                bytes: buf.len() as u64,
                ..Default::default()
            };
            if buf.len() < MAGIC.len() || &buf[..MAGIC.len()] != MAGIC {
                tracing::warn!(segment = %path.display(), "commit log segment without header, skipped");
                stats.torn_segments += 1;
                segments.insert(no, info);
                continue;
            }
            for step in Walk::new(&buf, MAGIC.len()) {
                let (pos, why) = match step {
                    Step::Record { pos, payload } => match apply(no, payload) {
                        Ok(blocks) => {
                            info.blocks.extend(blocks);
                            stats.records += 1;
                            continue;
                        }
                        Err(Error::Corrupt(why)) => (pos, why),
                        Err(e) => return Err(e),
                    },
                    Step::Damaged { pos, why } => (pos, why),
                    Step::TornTail { pos } => {
                        tracing::warn!(segment = %path.display(), offset = pos, "torn commit log record; rest of segment skipped (it was never acknowledged)");
                        stats.torn_segments += 1;
                        break;
                    }
                };
                if strict {
                    return Err(Error::Corrupt(format!(
                        "commit log segment {} at byte {pos}: {why} (storage.strict-replay refuses to start; set it to false to skip the record)",
                        path.display()
                    )));
                }
                tracing::error!(segment = %path.display(), offset = pos, reason = %why, "corrupt commit log record skipped on replay: its data is lost");
                stats.skipped_records += 1;
            }
            segments.insert(no, info);
        }
        let next_no = nos.last().map_or(1, |n| n + 1).max(min_next);
        let file = create_segment(dir, next_no)?;
        segments.insert(next_no, SegmentInfo::default());
        let log = Arc::new(CommitLog {
            dir: dir.to_path_buf(),
            policy,
            max_segment_bytes,
            inner: Mutex::new(Inner {
                active: Active {
                    seg: SegFile::new(dir, next_no, file),
                    bytes: MAGIC.len() as u64,
                    first_seq: 1,
                    torn: false,
                    records: 0,
                    opened: std::time::Instant::now(),
                },
                segments,
                written_seq: 0,
                buf: Vec::new(),
            }),
            sync: Mutex::new(SyncState {
                synced_seq: 0,
                failed_upto: 0,
                last_error: String::new(),
            }),
            written_cv: Condvar::new(),
            synced_cv: Condvar::new(),
            shutdown: AtomicBool::new(false),
            #[cfg(test)]
            before_sync: Mutex::new(None),
        });
        let l2 = log.clone();
        std::thread::Builder::new()
            .name("commitlog-sync".into())
            .spawn(move || l2.syncer())
            .map_err(io_err("spawning commit log syncer".into()))?;
        Ok((log, stats))
    }

    /// Records that every record up to `upto` is durable.
    fn settle_synced(&self, upto: u64) {
        let mut s = self.sync.lock();
        s.synced_seq = s.synced_seq.max(upto);
        self.synced_cv.notify_all();
    }

    /// Records that no record up to `upto` not already reported durable
    /// ever will be; `err` is the failure (None: one recorded before).
    fn settle_failed(&self, upto: u64, err: Option<&std::io::Error>) {
        let mut s = self.sync.lock();
        s.failed_upto = s.failed_upto.max(upto);
        if let Some(e) = err {
            s.last_error = e.to_string();
        }
        self.synced_cv.notify_all();
    }

    fn syncer(&self) {
        loop {
            let (seg, target) = {
                let mut g = self.inner.lock();
                match self.policy {
                    FsyncPolicy::Always => {
                        // Records covered by a failed sync are settled too:
                        // they are never synced again.
                        while g.written_seq <= {
                            let s = self.sync.lock();
                            s.synced_seq.max(s.failed_upto)
                        } && !self.shutdown.load(Ordering::Acquire)
                        {
                            self.written_cv.wait_for(&mut g, Duration::from_millis(200));
                        }
                    }
                    FsyncPolicy::Periodic(p) => {
                        self.written_cv.wait_for(&mut g, p);
                    }
                }
                if g.active.seg.failed() {
                    // A segment whose sync failed is never synced again (the
                    // next sync would return Ok over lost pages): whatever
                    // it holds fails. Appends start a new segment first.
                    self.settle_failed(g.written_seq, None);
                    drop(g);
                    if self.shutdown.load(Ordering::Acquire) {
                        return;
                    }
                    continue;
                }
                (g.active.seg.clone(), g.written_seq)
            };
            #[cfg(test)]
            {
                let hook = self.before_sync.lock().take();
                if let Some(hook) = hook {
                    hook(self);
                }
            }
            let failed = {
                let _io = seg.io.lock();
                if seg.failed() {
                    // Failed by a rotation meanwhile, which settled it.
                    false
                } else {
                    match seg.sync() {
                        Ok(()) => {
                            self.settle_synced(target);
                            false
                        }
                        Err(e) => {
                            tracing::error!(segment = seg.no, ?e, "commit log fsync failed; the writes in the segment not synced before fail, the next write starts a new segment");
                            seg.sync_failed.store(true, Ordering::SeqCst);
                            self.settle_failed(target, Some(&e));
                            true
                        }
                    }
                }
            };
            if failed {
                // Records appended while the sync ran went to the same file,
                // into the same failed writeback: fail everything written to
                // it. Appends from here on see the flag and rotate first; if
                // the segment was rotated meanwhile, the rotation (after the
                // flag was set) failed all it held.
                let g = self.inner.lock();
                if Arc::ptr_eq(&g.active.seg, &seg) {
                    self.settle_failed(g.written_seq, None);
                }
                drop(g);
                std::thread::sleep(Duration::from_millis(50));
            }
            if self.shutdown.load(Ordering::Acquire) {
                return;
            }
        }
    }

    /// Appends one record (written to the OS, not yet synced) and returns its
    /// sequence number for [`wait_durable`](Self::wait_durable).
    pub fn append(&self, payload: &[u8], blocks: &BTreeSet<i64>) -> Result<u64> {
        self.append_with(blocks, |_, out| {
            out.extend_from_slice(payload);
            Ok(())
        })
    }

    /// Appends one record whose payload `encode` writes into the buffer it
    /// is given, told where the record lands: a record whose encoding
    /// depends on the records before it in its segment (the record format's
    /// per-segment series refs) is encoded here, under the log's lock, in
    /// the order records are written. `encode` runs after any rotation, so
    /// `pos.segment` is the segment the record goes to and `pos.index` its
    /// position there (0 for the first). An error of `encode` (or a payload
    /// the framing refuses) appends nothing and ends the segment: the next
    /// record starts a new one. Returns the sequence number for
    /// [`wait_durable`](Self::wait_durable).
    pub fn append_with(
        &self,
        blocks: &BTreeSet<i64>,
        encode: impl FnOnce(RecordPos, &mut Vec<u8>) -> Result<()>,
    ) -> Result<u64> {
        let mut g = self.inner.lock();
        if g.active.torn || g.active.seg.failed() || g.active.bytes >= self.max_segment_bytes {
            self.rotate_locked(&mut g)?;
        }
        let pos = RecordPos {
            segment: g.active.seg.no,
            index: g.active.records,
        };
        let mut rec = std::mem::take(&mut g.buf);
        rec.clear();
        rec.extend_from_slice(&[0; 8]);
        let encoded = encode(pos, &mut rec);
        let len = rec.len() - 8;
        let framed = encoded.and_then(|()| {
            if len == 0 || len > MAX_RECORD as usize {
                return Err(Error::Invalid(format!(
                    "commit log record of {len} bytes (1 to {MAX_RECORD} allowed)"
                )));
            }
            let crc = crc32c::crc32c(&rec[8..]);
            rec[..4].copy_from_slice(&(len as u32).to_le_bytes());
            rec[4..8].copy_from_slice(&crc.to_le_bytes());
            Ok(())
        });
        if let Err(e) = framed {
            // Nothing is written, but an encoder may have counted the
            // record in its state for this segment (refs, previous
            // values): the next record starts a new segment, whatever
            // the encoder did.
            g.active.torn = true;
            g.buf = rec;
            return Err(e);
        }
        let written = crate::fault::io_fault("commitlog-append", &self.dir)
            .and_then(|()| (&g.active.seg.file).write_all(&rec));
        let rec_len = rec.len() as u64;
        // The buffer is kept for the next record unless it grew large.
        if rec.capacity() <= 4 << 20 {
            g.buf = rec;
        }
        if let Err(e) = written {
            g.active.torn = true;
            return Err(Error::Io {
                context: format!("appending to commit log segment {}", g.active.seg.no),
                source: e,
            });
        }
        g.active.bytes += rec_len;
        g.active.records += 1;
        let (no, bytes) = (g.active.seg.no, g.active.bytes);
        if let Some(info) = g.segments.get_mut(&no) {
            info.blocks.extend(blocks.iter().copied());
            info.bytes = bytes;
        }
        g.written_seq += 1;
        let seq = g.written_seq;
        drop(g);
        self.written_cv.notify_one();
        Ok(seq)
    }

    /// Blocks until record `seq` is durable under the policy.
    pub fn wait_durable(&self, seq: u64) -> Result<()> {
        if let FsyncPolicy::Periodic(_) = self.policy {
            return Ok(());
        }
        let mut s = self.sync.lock();
        loop {
            if seq <= s.failed_upto {
                return Err(Error::Unavailable(format!(
                    "commit log fsync failed: {}",
                    s.last_error
                )));
            }
            if s.synced_seq >= seq {
                return Ok(());
            }
            self.synced_cv.wait(&mut s);
        }
    }

    /// Makes every record appended so far durable now, whatever the
    /// policy: for a writer that must know it before it records progress.
    pub fn sync_now(&self) -> Result<()> {
        let (seg, target) = {
            let g = self.inner.lock();
            (g.active.seg.clone(), g.written_seq)
        };
        let _io = seg.io.lock();
        if seg.failed() {
            return Err(Error::Unavailable(
                "commit log segment failed an earlier fsync".into(),
            ));
        }
        match seg.sync() {
            Ok(()) => {
                self.settle_synced(target);
                Ok(())
            }
            Err(e) => {
                tracing::error!(segment = seg.no, ?e, "commit log fsync failed");
                seg.sync_failed.store(true, Ordering::SeqCst);
                self.settle_failed(target, Some(&e));
                Err(Error::Unavailable(format!("commit log fsync failed: {e}")))
            }
        }
    }

    /// Starts segment `active + 1`. The old one is synced first and its
    /// records settled before anything else can fail: synced, or (its sync
    /// failed, now or before) failed, never reported durable. If the new
    /// segment cannot be created the old one stays active (one whose sync
    /// failed or whose last write failed is left at the next append again).
    fn rotate_locked(&self, g: &mut Inner) -> Result<u64> {
        let old = g.active.seg.clone();
        let written = g.written_seq;
        {
            let _io = old.io.lock();
            if old.failed() {
                self.settle_failed(written, None);
            } else {
                match old.sync() {
                    Ok(()) => self.settle_synced(written),
                    Err(e) => {
                        tracing::error!(
                            segment = old.no,
                            records = ?(g.active.first_seq..=written),
                            ?e,
                            "syncing the sealed commit log segment failed; its unsynced writes fail"
                        );
                        old.sync_failed.store(true, Ordering::SeqCst);
                        self.settle_failed(written, Some(&e));
                    }
                }
            }
        }
        let no = old.no + 1;
        let file = create_segment(&self.dir, no)?;
        g.active = Active {
            seg: SegFile::new(&self.dir, no, file),
            bytes: MAGIC.len() as u64,
            first_seq: written + 1,
            torn: false,
            records: 0,
            opened: std::time::Instant::now(),
        };
        g.segments.insert(no, SegmentInfo::default());
        Ok(old.no)
    }

    /// The active segment's number, and whether a record was appended to it.
    pub fn active_segment(&self) -> (u64, bool) {
        let g = self.inner.lock();
        (g.active.seg.no, g.active.records > 0)
    }

    /// How long ago the active segment was started.
    pub fn active_age(&self) -> Duration {
        self.inner.lock().active.opened.elapsed()
    }

    /// Seals the active segment and starts a new one; returns the sealed number.
    pub fn rotate(&self) -> Result<u64> {
        let mut g = self.inner.lock();
        self.rotate_locked(&mut g)
    }

    /// Removes sealed segments up to and including `upto` for which `keep`
    /// says false. Returns how many were removed.
    pub fn remove_segments(&self, upto: u64, keep: impl Fn(&SegmentInfo) -> bool) -> usize {
        let mut g = self.inner.lock();
        let active = g.active.seg.no;
        let doomed: Vec<u64> = g
            .segments
            .iter()
            .filter(|(&no, info)| no <= upto && no != active && !keep(info))
            .map(|(&no, _)| no)
            .collect();
        for no in &doomed {
            let path = seg_path(&self.dir, *no);
            match fs::remove_file(&path) {
                Ok(()) => {
                    g.segments.remove(no);
                }
                Err(e) => {
                    tracing::warn!(segment = %path.display(), ?e, "removing commit log segment failed")
                }
            }
        }
        doomed.len()
    }

    /// Segment numbers and sizes, oldest first.
    pub fn segments(&self) -> Vec<(u64, u64)> {
        self.inner
            .lock()
            .segments
            .iter()
            .map(|(n, i)| (*n, i.bytes))
            .collect()
    }

    /// Syncs what was written and stops the syncer (graceful shutdown).
    /// Fails if the active segment cannot be synced; records it holds that
    /// were not synced before are then failed, never reported durable.
    pub fn close(&self) -> Result<()> {
        let g = self.inner.lock();
        let seg = g.active.seg.clone();
        let written = g.written_seq;
        let res = {
            let _io = seg.io.lock();
            if seg.failed() {
                // Its unsynced records failed already; nothing is lost now.
                self.settle_failed(written, None);
                Ok(())
            } else {
                match seg.sync() {
                    Ok(()) => {
                        self.settle_synced(written);
                        Ok(())
                    }
                    Err(e) => {
                        seg.sync_failed.store(true, Ordering::SeqCst);
                        self.settle_failed(written, Some(&e));
                        Err(Error::Io {
                            context: "syncing commit log on shutdown".into(),
                            source: e,
                        })
                    }
                }
            }
        };
        drop(g);
        self.shutdown.store(true, Ordering::Release);
        self.written_cv.notify_all();
        self.synced_cv.notify_all();
        res
    }
}

/// The record at `pos`: its payload and the offset after it, or None when the
/// bytes there are not a whole, checksum-valid record. Payloads are never
/// empty, so zeroes (a file extended but not written before a crash) are no
/// record.
pub(crate) fn next_record(buf: &[u8], pos: usize) -> Option<(&[u8], usize)> {
    let hdr = buf.get(pos..pos.checked_add(8)?)?;
    let len = u32::from_le_bytes(hdr[..4].try_into().ok()?);
    let crc = u32::from_le_bytes(hdr[4..].try_into().ok()?);
    if len == 0 || len > MAX_RECORD {
        return None;
    }
    let end = pos + 8 + len as usize;
    let payload = buf.get(pos + 8..end)?;
    (crc32c::crc32c(payload) == crc).then_some((payload, end))
}

/// One step of replaying a segment's bytes.
#[derive(Debug)]
pub(crate) enum Step<'a> {
    /// A whole, checksum-valid record at `pos`.
    Record { pos: usize, payload: &'a [u8] },
    /// Damaged bytes at `pos` (a record, or more when its length is bad),
    /// skipped; the walk goes on after them.
    Damaged { pos: usize, why: String },
    /// From `pos` on, the segment holds a record cut short and no whole
    /// record after it: the tail of a write a crash interrupted, never
    /// acknowledged. The walk ends.
    TornTail { pos: usize },
}

/// Walks a segment's records from an offset, resynchronising after damage.
///
/// A record that is not whole and checksum-valid is told apart by its
/// header. With a plausible length and its extent inside the segment, it is
/// a damaged record: the walk resumes right after it when a valid record
/// starts there; else it scans for one beyond it, never inside it (its
/// payload holds client bytes, such as sample values, that could form a
/// framed record with a valid checksum). With a plausible length reaching
/// past the end of the segment, the record was cut short: a torn tail. With
/// an implausible length (zero, or above the largest record) the walk scans
/// from the next byte; finding no record, it is a torn tail too (a crash
/// can leave zeroes).
pub(crate) struct Walk<'a> {
    buf: &'a [u8],
    pos: usize,
    /// No valid record starts at or after this offset (a scan found none),
    /// so no stretch of the segment is scanned twice.
    none_from: usize,
}

impl<'a> Walk<'a> {
    pub(crate) fn new(buf: &'a [u8], pos: usize) -> Self {
        Self {
            buf,
            pos,
            none_from: buf.len(),
        }
    }

    /// The offset of the first whole, checksum-valid record at or after
    /// `from`. Only lengths that fit in the rest of the buffer are
    /// checksummed.
    fn find_record(&mut self, from: usize) -> Option<usize> {
        let buf = self.buf;
        let found = (from..self.none_from.min(buf.len().saturating_sub(8))).find(|&q| {
            let len = u32::from_le_bytes([buf[q], buf[q + 1], buf[q + 2], buf[q + 3]]) as usize;
            len != 0 && len <= buf.len() - q - 8 && next_record(buf, q).is_some()
        });
        if found.is_none() {
            self.none_from = self.none_from.min(from);
        }
        found
    }
}

impl<'a> Iterator for Walk<'a> {
    type Item = Step<'a>;

    fn next(&mut self) -> Option<Step<'a>> {
        let (buf, pos) = (self.buf, self.pos);
        if pos >= buf.len() {
            return None;
        }
        if let Some((payload, next)) = next_record(buf, pos) {
            self.pos = next;
            return Some(Step::Record { pos, payload });
        }
        let torn = Step::TornTail { pos };
        let Some(hdr) = buf.get(pos..pos + 8) else {
            self.pos = buf.len();
            return Some(torn);
        };
        let len = u32::from_le_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]);
        let (next, why) = if len != 0 && len <= MAX_RECORD {
            let end = pos + 8 + len as usize;
            if end > buf.len() {
                self.pos = buf.len();
                return Some(torn);
            }
            if end == buf.len() || next_record(buf, end).is_some() {
                (
                    end,
                    format!("checksum mismatch, record of {len} bytes skipped"),
                )
            } else {
                match self.find_record(end) {
                    Some(q) => (
                        q,
                        format!(
                            "checksum mismatch over {len} bytes, no record right after them, {} bytes skipped up to the next record",
                            q - pos
                        ),
                    ),
                    // Nothing valid after it: the record is skipped and
                    // the walk goes on from its end (a torn tail after it
                    // is still a torn tail).
                    None => (end, format!("checksum mismatch, record of {len} bytes skipped")),
                }
            }
        } else {
            match self.find_record(pos + 1) {
                Some(q) => (
                    q,
                    format!("bad record length {len}, {} bytes skipped", q - pos),
                ),
                None => {
                    self.pos = buf.len();
                    return Some(torn);
                }
            }
        };
        self.pos = next;
        Some(Step::Damaged { pos, why })
    }
}

#[derive(Debug, Default, Clone, Copy)]
pub struct ReplayStats {
    pub records: u64,
    pub torn_segments: u64,
    /// Damaged records skipped (not counting torn tails).
    pub skipped_records: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path, seen: &mut Vec<Vec<u8>>) -> Arc<CommitLog> {
        CommitLog::open(dir, FsyncPolicy::Always, 1 << 20, 0, 0, false, |_, p| {
            seen.push(p.to_vec());
            Ok(BTreeSet::from([7]))
        })
        .unwrap()
        .0
    }

    #[test]
    fn records_survive_reopen_and_torn_tail_is_skipped() {
        let d = tempfile::tempdir().unwrap();
        let mut seen = Vec::new();
        let log = open(d.path(), &mut seen);
        for i in 0..100u32 {
            let s = log.append(&i.to_le_bytes(), &BTreeSet::from([1])).unwrap();
            log.wait_durable(s).unwrap();
        }
        log.close().unwrap();
        drop(log);
        // Tear the last record of the last segment.
        let (last, _) = *CommitLog::segments_on_disk(d.path()).last().unwrap();
        let p = seg_path(d.path(), last);
        let len = fs::metadata(&p).unwrap().len();
        let f = OpenOptions::new().write(true).open(&p).unwrap();
        f.set_len(len - 2).unwrap();
        let mut seen = Vec::new();
        let log = open(d.path(), &mut seen);
        assert_eq!(seen.len(), 99);
        assert_eq!(seen[98], 98u32.to_le_bytes());
        // Segments whose blocks are flushed can be removed; the active one stays.
        let sealed = log.rotate().unwrap();
        assert!(log.remove_segments(sealed, |_| false) >= 1);
        assert_eq!(log.segments().len(), 1);
    }

    #[test]
    fn garbage_segment_is_survivable() {
        let d = tempfile::tempdir().unwrap();
        fs::write(seg_path(d.path(), 1), b"CAIRNCL1\xff\xff\xff\xff\x00\x00").unwrap();
        fs::write(seg_path(d.path(), 2), b"junk").unwrap();
        let mut seen = Vec::new();
        let _log = open(d.path(), &mut seen);
        assert!(seen.is_empty());
    }

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut r = (payload.len() as u32).to_le_bytes().to_vec();
        r.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
        r.extend_from_slice(payload);
        r
    }

    /// Replays one segment holding `bytes` after the header: the payloads
    /// seen and the stats, or the open's error.
    fn replay(bytes: &[u8], strict: bool) -> Result<(Vec<Vec<u8>>, ReplayStats)> {
        let d = tempfile::tempdir().unwrap();
        let mut seg = MAGIC.to_vec();
        seg.extend_from_slice(bytes);
        fs::write(seg_path(d.path(), 1), seg).unwrap();
        let mut seen = Vec::new();
        let (log, stats) = CommitLog::open(
            d.path(),
            FsyncPolicy::Always,
            1 << 20,
            0,
            0,
            strict,
            |_, p| {
                seen.push(p.to_vec());
                Ok(BTreeSet::new())
            },
        )?;
        log.close()?;
        Ok((seen, stats))
    }

    /// A payload with a whole framed record (valid checksum) inside it, as
    /// a client's sample values could spell one.
    fn with_forged(forged: &[u8]) -> Vec<u8> {
        let mut p = b"client bytes: ".to_vec();
        p.extend_from_slice(&frame(forged));
        p.extend_from_slice(b" more client bytes");
        p
    }

    /// A byte flipped in a middle record's payload skips exactly that
    /// record, even when its payload holds a record-shaped frame (which is
    /// never replayed); the records after it replay. Strict replay refuses.
    #[test]
    fn damaged_middle_record_is_skipped_exactly() {
        let b = with_forged(b"tenant=other forged");
        let mut bytes = frame(b"first");
        let at = bytes.len() + 8 + 3;
        bytes.extend_from_slice(&frame(&b));
        bytes.extend_from_slice(&frame(b"third"));
        bytes.extend_from_slice(&frame(b"fourth"));
        bytes[at] ^= 0x40;
        let (seen, stats) = replay(&bytes, false).unwrap();
        assert_eq!(
            seen,
            vec![b"first".to_vec(), b"third".to_vec(), b"fourth".to_vec()]
        );
        assert_eq!((stats.skipped_records, stats.torn_segments), (1, 0));
        let e = replay(&bytes, true).unwrap_err().to_string();
        assert!(
            e.contains("strict-replay") && e.contains("checksum mismatch"),
            "{e}"
        );
    }

    /// A damaged record whose length field is bad too: with an implausible
    /// length the walk scans to the next record; with a plausible one
    /// pointing at no record it scans from the end of that extent.
    #[test]
    fn damaged_length_resyncs_at_the_next_record() {
        let mut bytes = frame(b"first");
        let at = bytes.len();
        bytes.extend_from_slice(&frame(b"second, damaged"));
        bytes.extend_from_slice(&frame(b"third"));
        let mut implausible = bytes.clone();
        implausible[at + 3] = 0x7f;
        let (seen, stats) = replay(&implausible, false).unwrap();
        assert_eq!(seen, vec![b"first".to_vec(), b"third".to_vec()]);
        assert_eq!((stats.skipped_records, stats.torn_segments), (1, 0));
        let mut short = bytes.clone();
        short[at] = 3;
        let (seen, stats) = replay(&short, false).unwrap();
        assert_eq!(seen, vec![b"first".to_vec(), b"third".to_vec()]);
        assert_eq!((stats.skipped_records, stats.torn_segments), (1, 0));
    }

    /// A last record cut short is a torn tail: not counted as corruption,
    /// strict replay starts, and a record-shaped frame inside what is left
    /// of its payload is not replayed. A whole last record with a bad
    /// checksum is corruption, not a torn tail.
    #[test]
    fn torn_last_record_is_a_torn_tail_and_a_damaged_one_is_not() {
        let mut bytes = frame(b"first");
        let last = frame(&with_forged(b"tenant=other forged"));
        let at = bytes.len();
        bytes.extend_from_slice(&last);
        let torn = &bytes[..bytes.len() - 4];
        for strict in [false, true] {
            let (seen, stats) = replay(torn, strict).unwrap();
            assert_eq!(seen, vec![b"first".to_vec()]);
            assert_eq!((stats.skipped_records, stats.torn_segments), (0, 1));
        }
        // Only the header, or part of it.
        for cut in [at + 8, at + 5] {
            let (seen, stats) = replay(&bytes[..cut], true).unwrap();
            assert_eq!(seen, vec![b"first".to_vec()]);
            assert_eq!((stats.skipped_records, stats.torn_segments), (0, 1));
        }
        // Zeroes after the last record (a file extended, not written).
        let mut zeroes = bytes.clone();
        zeroes.extend_from_slice(&[0; 64]);
        let (seen, stats) = replay(&zeroes, true).unwrap();
        assert_eq!(seen.len(), 2);
        assert_eq!((stats.skipped_records, stats.torn_segments), (0, 1));
        let mut damaged = bytes.clone();
        *damaged.last_mut().unwrap() ^= 1;
        let (seen, stats) = replay(&damaged, false).unwrap();
        assert_eq!(seen, vec![b"first".to_vec()]);
        assert_eq!((stats.skipped_records, stats.torn_segments), (1, 0));
        assert!(replay(&damaged, true).is_err());
    }

    fn open_empty(dir: &Path) -> Arc<CommitLog> {
        CommitLog::open(dir, FsyncPolicy::Always, 1 << 20, 0, 0, false, |_, _| {
            Ok(BTreeSet::new())
        })
        .unwrap()
        .0
    }

    /// `append_with` tells the encoder where each record lands: its
    /// segment and index there, 0 again after a rotation; an encoding that
    /// fails appends nothing and ends the segment (an encoder may have
    /// counted the record), so the next record starts a new one at index 0.
    #[test]
    fn append_with_tells_where_records_land() {
        let d = tempfile::tempdir().unwrap();
        let log = open_empty(d.path());
        let none = BTreeSet::new();
        let mut seen = Vec::new();
        let mut put = |log: &CommitLog, fail: bool| {
            log.append_with(&none, |pos, out| {
                seen.push(pos);
                out.push(1);
                if fail {
                    Err(Error::Invalid("no".into()))
                } else {
                    Ok(())
                }
            })
        };
        put(&log, false).unwrap();
        put(&log, false).unwrap();
        let first = log.rotate().unwrap();
        put(&log, false).unwrap();
        assert!(put(&log, true).is_err());
        put(&log, false).unwrap();
        let pos = |segment, index| RecordPos { segment, index };
        assert_eq!(
            seen,
            vec![
                pos(first, 0),
                pos(first, 1),
                pos(first + 1, 0),
                pos(first + 1, 1),
                pos(first + 2, 0),
            ]
        );
        log.close().unwrap();
        drop(log);
        let mut payloads = Vec::new();
        let _log = open(d.path(), &mut payloads);
        assert_eq!(payloads.len(), 4, "the failed record is not in the log");
    }

    /// A sync that fails once (the next one on the file succeeds, as on
    /// Linux) fails the record it was started for and one appended while it
    /// ran; the syncer never acknowledges either later, and the next write
    /// goes to a new segment and is acknowledged.
    #[test]
    fn a_failed_sync_fails_every_write_in_its_segment() {
        let d = tempfile::tempdir().unwrap();
        let log = open_empty(d.path());
        let none = BTreeSet::new();
        let a = log.append(b"a", &none).unwrap();
        log.wait_durable(a).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        *log.before_sync.lock() = Some(Box::new(move |log: &CommitLog| {
            tx.send(log.append(b"c", &BTreeSet::new()).unwrap())
                .unwrap();
        }));
        crate::fault::arm_io_fault_times("commitlog-sync", d.path(), 1);
        let segs = log.segments().len();
        let b = log.append(b"b", &none).unwrap();
        let c = rx.recv().unwrap();
        assert!(c > b);
        assert!(log.wait_durable(b).is_err());
        assert!(log.wait_durable(c).is_err());
        assert!(log.sync.lock().synced_seq < b);
        let e = log.append(b"e", &none).unwrap();
        log.wait_durable(e).unwrap();
        assert_eq!(log.segments().len(), segs + 1);
        assert!(log.wait_durable(b).is_err() && log.wait_durable(c).is_err());
    }

    /// A rotation whose sync of the old segment fails, followed by a failed
    /// segment creation, still fails the old segment's unsynced records: a
    /// later sync of the file (by the syncer, held back here until then)
    /// does not acknowledge them. Writes succeed again once a segment can
    /// be created.
    #[test]
    fn a_failed_sync_at_rotation_is_kept_when_the_new_segment_fails() {
        let d = tempfile::tempdir().unwrap();
        let log = open_empty(d.path());
        let none = BTreeSet::new();
        let a = log.append(b"a", &none).unwrap();
        log.wait_durable(a).unwrap();
        let (held_tx, held_rx) = std::sync::mpsc::channel();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        *log.before_sync.lock() = Some(Box::new(move |_: &CommitLog| {
            held_tx.send(()).unwrap();
            let _ = go_rx.recv();
        }));
        let b = log.append(b"b", &none).unwrap();
        held_rx.recv().unwrap();
        crate::fault::arm_io_fault_times("commitlog-sync", d.path(), 1);
        crate::fault::arm_io_fault("commitlog-create-segment", d.path(), true);
        assert!(log.rotate().is_err());
        go_tx.send(()).unwrap();
        assert!(log.wait_durable(b).is_err());
        assert!(log.append(b"c", &none).is_err());
        crate::fault::arm_io_fault("commitlog-create-segment", d.path(), false);
        let c = log.append(b"c", &none).unwrap();
        log.wait_durable(c).unwrap();
        assert!(log.wait_durable(b).is_err());
    }

    impl CommitLog {
        fn segments_on_disk(dir: &Path) -> Vec<(u64, u64)> {
            let mut v: Vec<(u64, u64)> = fs::read_dir(dir)
                .unwrap()
                .filter_map(|e| e.ok())
                .filter_map(|e| {
                    let n = e.file_name().to_string_lossy().to_string();
                    let no = n.strip_suffix(".log")?.parse().ok()?;
                    Some((no, e.metadata().ok()?.len()))
                })
                .collect();
            v.sort();
            v
        }
    }
}
