//! Flush: closed block windows (or, forced, all of them) from the head to
//! filesets, then commit-log segments whose blocks are all on disk deleted;
//! and the background task that runs it (with retention) and that
//! shutdown stops and joins.

use crate::commitlog::CommitLog;
use crate::config::Clock;
use crate::error::{Error, Result};
use crate::index::Index;
use crate::metrics::Metrics;
use crate::namespace::block_end;
use crate::shard::{Flushing, Shard};
use crate::snapshot;
use parking_lot::{Mutex, RwLock};
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A block of a shard to write: (shard, block start, its buffers).
type Job = (usize, i64, Flushing);

/// What a flush works on: the node's parts, borrowed for one run.
pub(crate) struct FlushCtx<'a> {
    pub shards: &'a [Mutex<Shard>],
    pub log: &'a CommitLog,
    pub index: &'a Index,
    /// Writers hold it shared across log-append + head-apply; the flush
    /// takes it exclusively to seal the log.
    pub apply_lock: &'a RwLock<()>,
    pub metrics: &'a Metrics,
    pub clock: &'a Clock,
    /// Filesets directory of the namespace.
    pub root: &'a Path,
    pub block_ms: i64,
    pub buffer_past: Duration,
    /// Where head snapshots go (`<data-dir>/snapshots`).
    pub snapshots: &'a Path,
}

/// One flush at a time, and the blocks whose fileset write failed.
#[derive(Default)]
pub(crate) struct Flusher {
    lock: Mutex<()>,
    /// Detached blocks whose fileset write failed; retried first next flush.
    retry: Mutex<Vec<Job>>,
}

/// A flush with nothing to write seals the commit log's segment only once
/// it is this old.
const SEAL_AGE: Duration = Duration::from_secs(30 * 60);

impl Flusher {
    /// Flushes closed windows (or, with `force`, everything) to filesets and
    /// truncates the commit log. Returns the number of filesets written.
    pub(crate) fn run(&self, cx: &FlushCtx<'_>, force: bool) -> Result<usize> {
        let _one = self.lock.lock();
        let started = Instant::now();
        let now = (cx.clock)();
        let horizon = now.saturating_sub(cx.buffer_past.as_millis() as i64);
        let block_ms = cx.block_ms;
        let pick = |b: i64| force || block_end(b, block_ms) <= horizon;
        // Seal the log where the head holds everything written so far; each
        // shard is then detached and written in turn, so the extra memory a
        // flush needs is one shard's worth, not the whole head's. Data a shard
        // receives after the seal and before its turn is flushed too (replay
        // of it is idempotent); `sealed` stays a correct lower bound.
        // With nothing to write the log is sealed only once its segment is
        // SEAL_AGE old: the series refs of its records are declared once
        // per segment (a seal every flush interval would declare every
        // series again each time, 16 bytes each), and the log still holds
        // at most about a window and SEAL_AGE more.
        if !force && self.retry.lock().is_empty() && cx.log.active_age() < SEAL_AGE {
            let mut in_memory = BTreeSet::new();
            for sh in cx.shards {
                sh.lock().blocks_in_memory(&mut in_memory);
            }
            if !in_memory.iter().any(|&b| pick(b)) {
                cx.metrics.flushes.inc();
                return Ok(0);
            }
        }
        let sealed = {
            let _w = cx.apply_lock.write();
            cx.log.rotate()?
        };
        let mut written = 0;
        let mut failed = 0;
        let mut run = |jobs: Vec<Job>| {
            for (shard, block, data) in jobs {
                let written_ok = Shard::flush_block(
                    &cx.shards[shard],
                    cx.root,
                    shard as u32,
                    block,
                    &data,
                    sealed,
                );
                match written_ok {
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
        for (i, sh) in cx.shards.iter().enumerate() {
            let detached = sh.lock().detach_for_flush(pick);
            run(detached.into_iter().map(|(b, d)| (i, b, d)).collect());
        }
        cx.index.persist()?;
        cx.index.compact_postings();
        let mut in_memory = BTreeSet::new();
        for sh in cx.shards {
            sh.lock().blocks_in_memory(&mut in_memory);
        }
        let removed = cx.log.remove_segments(sealed, |info| {
            info.blocks.iter().any(|b| in_memory.contains(b))
        });
        cx.metrics.flushes.inc();
        cx.metrics.filesets_written.inc_by(written as u64);
        cx.metrics.flush_failures.inc_by(failed);
        cx.metrics
            .flush_seconds
            .inc_by(started.elapsed().as_secs_f64());
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
}

impl Flusher {
    /// Takes a head snapshot (see `snapshot.rs`), never at the same time as
    /// a flush: seals the commit log where the head holds everything
    /// written so far, writes every shard's in-memory buffers (the head's
    /// and any waiting to be retried) as of its turn — data a shard gets
    /// after the seal is in the snapshot too, and replaying it again is
    /// idempotent — persists the index (the series, exemplars and metadata
    /// of the segments about to go), makes the snapshot current, then
    /// removes the snapshots before the previous one and the segments the
    /// previous one covers (the previous one and the log after it stay, so a
    /// damaged snapshot falls back to them). Returns the segment covered.
    pub(crate) fn snapshot(&self, cx: &FlushCtx<'_>) -> Result<u64> {
        let _one = self.lock.lock();
        let started = Instant::now();
        let res = (|| {
            // Nothing written since the newest snapshot sealed the log: it
            // still covers everything, and sealing again would only make
            // the next segment declare its series anew.
            if let (Some(&newest), (active, false)) = (
                snapshot::list(cx.snapshots)?.first(),
                cx.log.active_segment(),
            ) {
                if active == newest + 1 {
                    return Ok(newest);
                }
            }
            let sealed = {
                let _w = cx.apply_lock.write();
                cx.log.rotate()?
            };
            let mut w = snapshot::Writer::begin(cx.snapshots, sealed, cx.shards.len() as u32)?;
            for (i, sh) in cx.shards.iter().enumerate() {
                let chunks = sh.lock().snapshot_chunks().map_err(|e| {
                    Error::Corrupt(format!(
                        "encoding shard {i}'s buffers for a head snapshot: {e}"
                    ))
                })?;
                w.shard(&chunks)?;
            }
            cx.index.persist()?;
            let bytes = w.finish()?;
            crate::fault::fail_point("snapshot-after-rename");
            snapshot::remove_older(cx.snapshots, 2)?;
            let removed = match snapshot::list(cx.snapshots)?.get(1) {
                Some(&prev) => cx.log.remove_segments(prev, |_| false),
                None => 0,
            };
            cx.metrics.snapshot_bytes.set(bytes as i64);
            tracing::info!(
                covers_segment = sealed,
                bytes,
                segments_removed = removed,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "head snapshot written"
            );
            Ok(sealed)
        })();
        cx.metrics
            .snapshot_seconds
            .inc_by(started.elapsed().as_secs_f64());
        match &res {
            Ok(_) => {
                cx.metrics.snapshots.inc();
            }
            Err(e) => {
                cx.metrics.snapshot_failures.inc();
                tracing::error!(?e, "head snapshot failed; the commit log stays in charge");
            }
        }
        res
    }
}

impl std::fmt::Debug for FlushTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlushTask").finish_non_exhaustive()
    }
}

/// The background flush thread: every `flush-interval` a flush of closed
/// windows and retention; every few seconds a check of head memory.
/// [`FlushTask::stop`] wakes it, waits for a flush under way to finish, and
/// joins it.
pub struct FlushTask {
    stop: mpsc::Sender<()>,
    handle: JoinHandle<()>,
}

impl FlushTask {
    /// Starts the thread: `tick(periodic)` every `min(every, 5s)`, with
    /// `periodic` true once `every` has passed since the last periodic
    /// call; the thread ends when `tick` returns false or at
    /// [`stop`](Self::stop).
    pub(crate) fn spawn(
        every: Duration,
        mut tick: impl FnMut(bool) -> bool + Send + 'static,
    ) -> Result<Self> {
        let (stop, stopped) = mpsc::channel::<()>();
        let period = every.min(Duration::from_secs(5));
        let handle = std::thread::Builder::new()
            .name("storage-flush".into())
            .spawn(move || {
                let mut last = Instant::now();
                // Ends on a stop message or when the sender is dropped.
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(period) {
                    let periodic = last.elapsed() >= every;
                    if periodic {
                        last = Instant::now();
                    }
                    if !tick(periodic) {
                        return;
                    }
                }
            })
            .map_err(|source| Error::Io {
                context: "starting the storage flush thread".into(),
                source,
            })?;
        Ok(Self { stop, handle })
    }

    /// Stops the thread and waits for it (a flush under way completes first).
    pub fn stop(self) {
        let _ = self.stop.send(());
        if self.handle.join().is_err() {
            tracing::error!("the storage flush thread panicked");
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::test_support::*;
    use cairn_common::SampleWriter;
    use std::sync::atomic::Ordering;

    #[test]
    fn commit_log_is_truncated_after_flush() {
        let f = Fixture::new();
        let now = f.now.load(Ordering::SeqCst);
        let s = f.open();
        for i in 0..50 {
            s.write(
                "t",
                batch(vec![(
                    labels("m", &format!("j{i}")),
                    vec![(now - 3 * H + i, i as f64)],
                )]),
            )
            .unwrap();
        }
        // Closed windows are flushed without force; the open one stays in memory.
        s.write("t", batch(vec![(labels("m", "open"), vec![(now, 1.0)])]))
            .unwrap();
        s.flush(false).unwrap();
        let segs_before = s.disk_stats().0 .0;
        s.flush(true).unwrap();
        let ((segs, _), (filesets, _)) = s.disk_stats();
        assert!(segs <= segs_before);
        assert_eq!(
            segs, 1,
            "only the active segment remains after a full flush"
        );
        assert!(filesets >= 2);
        drop(s);
        let s = f.open();
        assert_eq!(read(&s, "t", "m").len(), 51);
    }

    /// A flush with no window due leaves the commit log's segment open
    /// while it is younger than SEAL_AGE (its series stay declared there);
    /// once a window is due, the flush seals it and writes the window.
    #[test]
    fn a_flush_with_nothing_due_does_not_seal_the_log() {
        let f = Fixture::new();
        let now = f.now.load(Ordering::SeqCst);
        let s = f.open();
        let write = |t: i64| {
            s.write("t", batch(vec![(labels("m", "a"), vec![(t, 1.0)])]))
                .unwrap();
        };
        write(now);
        let segs = s.disk_stats().0 .0;
        assert_eq!(s.flush(false).unwrap(), 0);
        write(now + 1);
        assert_eq!(s.disk_stats().0 .0, segs, "not sealed");
        write(now - 3 * H);
        assert_eq!(s.flush(false).unwrap(), 1);
        assert_eq!(s.disk_stats().0 .0, segs + 1, "sealed");
        s.close().unwrap();
        drop(s);
        let s = f.open();
        assert_eq!(read(&s, "t", "m")[0].1.len(), 3);
    }

    /// ENOSPC while appending, at segment rotation and at flush: writes
    /// fail retryably, nothing is left in the way, and once space is back
    /// writes and flushes work again without a restart; every acknowledged
    /// sample is there after a reopen.
    #[test]
    fn disk_full_at_rotation_and_flush_then_recovery() {
        let f = Fixture::new();
        let now = f.now.load(Ordering::SeqCst);
        let s = f.open();
        let dir = f.dir.path().to_path_buf();
        let w = |i: i64| {
            s.write(
                "t",
                batch(vec![(labels("d", "a"), vec![(now - 1000 + i, i as f64)])]),
            )
        };
        let mut acked = vec![];
        w(0).unwrap();
        acked.push(0);
        // Rotation fails: the flush fails, no partial segment stays.
        crate::fault::arm_io_fault("commitlog-create-segment", &dir, true);
        let segs = seg_files(&dir);
        assert!(s.flush(true).is_err());
        assert_eq!(seg_files(&dir), segs);
        // The active segment still takes writes.
        w(1).unwrap();
        acked.push(1);
        // Appends fail too (disk full): retryable errors.
        crate::fault::arm_io_fault("commitlog-append", &dir, true);
        for i in 2..5 {
            let e = w(i).unwrap_err();
            assert!(e.is_retryable(), "{e}");
        }
        // Space back for appends, not yet for new segments: the broken
        // segment must be left, so writes still fail.
        crate::fault::arm_io_fault("commitlog-append", &dir, false);
        assert!(w(5).unwrap_err().is_retryable());
        crate::fault::arm_io_fault("commitlog-create-segment", &dir, false);
        w(6).unwrap();
        acked.push(6);
        // Fileset writes fail at flush; the data stays readable.
        crate::fault::arm_io_fault("fileset-write", &dir, true);
        assert!(s.flush(true).is_err());
        assert_eq!(read(&s, "t", "d")[0].1.len(), acked.len());
        crate::fault::arm_io_fault("fileset-write", &dir, false);
        assert!(s.flush(true).unwrap() >= 1);
        w(7).unwrap();
        acked.push(7);
        drop(s);
        let s = f.open();
        let want: Vec<(i64, u64)> = acked
            .iter()
            .map(|&i| (now - 1000 + i, (i as f64).to_bits()))
            .collect();
        assert_eq!(read(&s, "t", "d")[0].1, want);
    }

    /// `stop` returns once the thread has ended: the closure it ran (and
    /// everything it held) is dropped by then.
    #[test]
    fn stop_joins_the_thread() {
        use std::sync::atomic::AtomicUsize;
        use std::sync::Arc;
        let ticks = Arc::new(AtomicUsize::new(0));
        let held = ticks.clone();
        let task = super::FlushTask::spawn(std::time::Duration::from_millis(1), move |_| {
            held.fetch_add(1, Ordering::SeqCst);
            true
        })
        .unwrap();
        while ticks.load(Ordering::SeqCst) == 0 {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        task.stop();
        assert_eq!(
            Arc::strong_count(&ticks),
            1,
            "the thread still holds its closure"
        );
    }

    /// `close` stops and joins the background flush thread the store started.
    #[test]
    fn close_joins_the_background_flush() {
        let f = Fixture::new();
        let s = f.open_with(|c| c.flush_interval = std::time::Duration::from_millis(1));
        s.start_background();
        assert!(s.flush_task.lock().is_some());
        s.close().unwrap();
        assert!(s.flush_task.lock().is_none());
        // The thread held the store only weakly and is gone.
        assert_eq!(std::sync::Arc::strong_count(&s), 1);
    }
}
