//! The read pool: every query and heavy read (PromQL, series, labels,
//! export, remote read, exemplars) runs on one of `max_concurrency`
//! long-lived threads with a known, large stack, behind a queue of at most
//! `max_queued` waiting reads; past that a read gets 503 at once (Prometheus
//! runs 20 queries at a time and queues the rest).
//!
//! A read is cancelled when its caller stops waiting — the client went away
//! (the server drops the handler's future) or the query timeout passed: a
//! guard sets the read's cancel flag, a queued read is then skipped, and a
//! running query stops at its next step or series batch.

use crate::error::ApiError;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

type Job = Box<dyn FnOnce() + Send>;

/// Stack of each read thread: parsing, evaluating and dropping a query tree
/// recurse once per level, and `query.max-nesting-depth` levels must fit
/// with room to spare. Only the pages a query touches become resident.
pub(crate) const READ_STACK_BYTES: usize = 64 << 20;

/// Counters of the pool, published on `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct PoolStats {
    /// Reads admitted and not finished (running + queued): a [`Slot`] each.
    pub admitted: Arc<AtomicUsize>,
    pub running: AtomicUsize,
    pub queued: AtomicUsize,
    pub rejected: AtomicU64,
    pub cancelled: AtomicU64,
}

/// Where jobs meet threads. An idle thread waits on its own condvar; a job
/// goes to the thread that went idle last (a stack), so a light load keeps
/// reusing the same few threads and their allocator heaps instead of
/// spreading its memory over every thread of the pool; with none idle it
/// waits in `queue`, which finishing threads drain first.
struct Dispatch {
    state: Mutex<DispatchState>,
    wake: Vec<Condvar>,
}

struct DispatchState {
    idle: Vec<usize>,
    slots: Vec<Option<Job>>,
    queue: VecDeque<Job>,
}

impl Dispatch {
    fn lock(&self) -> std::sync::MutexGuard<'_, DispatchState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn submit(&self, job: Job) {
        let mut g = self.lock();
        match g.idle.pop() {
            Some(w) => {
                g.slots[w] = Some(job);
                drop(g);
                self.wake[w].notify_one();
            }
            None => g.queue.push_back(job),
        }
    }
}

pub(crate) struct ReadPool {
    dispatch: Arc<Dispatch>,
    /// Set at shutdown: every read's cancel check sees it.
    pub stopping: Arc<AtomicBool>,
    max_concurrency: usize,
    max_queued: usize,
    pub stats: Arc<PoolStats>,
    /// Cancel flags of the reads admitted so far (dead ones pruned on use).
    live: Mutex<Vec<std::sync::Weak<AtomicBool>>>,
}

/// One of at most N concurrent uses of something (an admitted read, a
/// remote read), released when dropped.
pub(crate) struct Slot(Arc<AtomicUsize>);

impl Slot {
    /// A slot of `counter` if fewer than `max` are taken.
    pub(crate) fn take(counter: &Arc<AtomicUsize>, max: usize) -> Option<Slot> {
        counter
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(counter.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Sets the flag when dropped: the caller stopped waiting.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl ReadPool {
    /// Starts `max_concurrency` read threads. A thread that cannot be
    /// started is logged; the pool runs with the others (at least one is
    /// required, else an error).
    pub(crate) fn new(max_concurrency: usize, max_queued: usize) -> std::io::Result<ReadPool> {
        let n = max_concurrency.max(1);
        let dispatch = Arc::new(Dispatch {
            state: Mutex::new(DispatchState {
                idle: Vec::with_capacity(n),
                slots: (0..n).map(|_| None).collect(),
                queue: VecDeque::new(),
            }),
            wake: (0..n).map(|_| Condvar::new()).collect(),
        });
        let stats = Arc::new(PoolStats::default());
        let mut started = 0;
        for i in 0..n {
            let d = dispatch.clone();
            let res = std::thread::Builder::new()
                .name(format!("cairn-read-{i}"))
                .stack_size(READ_STACK_BYTES)
                .spawn(move || worker(&d, i));
            match res {
                Ok(_) => started += 1,
                Err(e) if started > 0 => {
                    tracing::warn!(?e, started, "could not start every read thread")
                }
                Err(e) => return Err(e),
            }
        }
        Ok(ReadPool {
            dispatch,
            stopping: Arc::new(AtomicBool::new(false)),
            max_concurrency: started,
            max_queued,
            stats,
            live: Mutex::new(Vec::new()),
        })
    }

    /// Cancels every read and waits up to `wait` for the running ones to
    /// stop; true when none is left.
    pub(crate) async fn stop(&self, wait: std::time::Duration) -> bool {
        self.stopping.store(true, Ordering::Relaxed);
        for w in self.live.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            if let Some(f) = w.upgrade() {
                f.store(true, Ordering::Relaxed);
            }
        }
        let deadline = tokio::time::Instant::now() + wait;
        while self.stats.running.load(Ordering::Relaxed) > 0 {
            if tokio::time::Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        true
    }

    /// Runs `f` on a read thread; `f` gets the cancel flag to hand to the
    /// engine. 503 when the queue is full, 500 when `f` panics.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(Arc<AtomicBool>) -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let cap = self.max_concurrency + self.max_queued;
        let Some(slot) = Slot::take(&self.stats.admitted, cap) else {
            self.stats.rejected.fetch_add(1, Ordering::Relaxed);
            return Err(ApiError::unavailable(format!(
                    "too many concurrent queries: {} running and {} waiting (query.max-concurrency, query.max-queued); retry later",
                    self.max_concurrency, self.max_queued
                ),
            ));
        };
        let cancel = Arc::new(AtomicBool::new(self.stopping.load(Ordering::Relaxed)));
        {
            let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
            live.retain(|w| w.strong_count() > 0);
            live.push(Arc::downgrade(&cancel));
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let stats = self.stats.clone();
        let flag = cancel.clone();
        let job: Job = Box::new(move || {
            // The admission ends with the job, however it ends.
            let _slot = slot;
            stats.queued.fetch_sub(1, Ordering::Relaxed);
            if flag.load(Ordering::Relaxed) {
                stats.cancelled.fetch_add(1, Ordering::Relaxed);
                return;
            }
            stats.running.fetch_add(1, Ordering::Relaxed);
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(flag.clone())));
            stats.running.fetch_sub(1, Ordering::Relaxed);
            if flag.load(Ordering::Relaxed) {
                stats.cancelled.fetch_add(1, Ordering::Relaxed);
            }
            let _ = tx.send(r);
        });
        self.stats.queued.fetch_add(1, Ordering::Relaxed);
        self.dispatch.submit(job);
        let _guard = CancelOnDrop(cancel);
        match rx.await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(_)) => Err(ApiError::internal("task failed: the query panicked")),
            Err(_) => Err(ApiError::unavailable("the query was dropped before it ran")),
        }
    }
}

static IDLE_HOOK: std::sync::OnceLock<fn()> = std::sync::OnceLock::new();

/// Sets what a read thread runs when it goes idle after work (once per
/// process; later calls are ignored). The binary passes its allocator's
/// collect, so memory a finished read freed on its thread is returned
/// rather than kept in that thread's heap while the thread sleeps.
pub fn set_idle_hook(hook: fn()) {
    let _ = IDLE_HOOK.set(hook);
}

/// Read thread `w`: runs queued jobs first, then waits idle for its slot.
fn worker(d: &Dispatch, w: usize) {
    let mut g = d.lock();
    let mut worked = false;
    loop {
        let job = match g.queue.pop_front() {
            Some(j) => j,
            None => {
                if let (true, Some(hook)) = (worked, IDLE_HOOK.get()) {
                    worked = false;
                    drop(g);
                    hook();
                    g = d.lock();
                    continue;
                }
                g.idle.push(w);
                loop {
                    if let Some(j) = g.slots[w].take() {
                        break j;
                    }
                    g = d.wake[w].wait(g).unwrap_or_else(|p| p.into_inner());
                }
            }
        };
        drop(g);
        job();
        worked = true;
        g = d.lock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;
    use std::time::Duration;

    /// One read at a time keeps landing on the same thread or two (a read
    /// may arrive before the last one's thread has parked again), not on
    /// all eight in turn: the other threads' heaps stay empty.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sequential_reads_reuse_the_last_idle_thread() {
        let pool = ReadPool::new(8, 8).unwrap();
        let mut names = std::collections::BTreeSet::new();
        for _ in 0..50 {
            let n = pool
                .run(|_| std::thread::current().name().map(str::to_string))
                .await
                .unwrap();
            names.insert(n);
            // Let the thread park again before the next read arrives: wait
            // until every thread is idle (a fixed short sleep was not
            // enough on a loaded machine).
            let parked = std::time::Instant::now();
            while pool.dispatch.lock().idle.len() < 8 {
                assert!(
                    parked.elapsed() < Duration::from_secs(5),
                    "threads never idle"
                );
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        assert!(names.len() <= 2, "{names:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn full_queue_is_503_and_dropped_callers_cancel() {
        let pool = Arc::new(ReadPool::new(1, 1).unwrap());
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        // One running read that spins until cancelled.
        let p = pool.clone();
        let running = tokio::spawn(async move {
            p.run(move |cancel| {
                let _ = started_tx.send(());
                while !cancel.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(5));
                }
                "stopped"
            })
            .await
        });
        started_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        // One queued read fills the queue; the next is refused with 503.
        let p = pool.clone();
        let queued = tokio::spawn(async move { p.run(|_| 1).await });
        for _ in 0..200 {
            if pool.stats.queued.load(Ordering::Relaxed) == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let refused = pool.run(|_| 2).await.unwrap_err();
        assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
        // Dropping the running read's caller cancels it; the queued one runs.
        running.abort();
        assert_eq!(queued.await.unwrap().unwrap(), 1);
        assert!(pool.stats.cancelled.load(Ordering::Relaxed) >= 1);
        let panicked = pool.run(|_| -> u8 { panic!("boom") }).await.unwrap_err();
        assert_eq!(panicked.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
