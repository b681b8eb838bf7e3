//! The async read and write traits every store implements: the on-disk
//! storage node, the in-memory store, and (with the cluster) a remote
//! shard's gRPC client. Object-safe, so callers hold `Arc<dyn SeriesReader>`.

use crate::{
    AggregateRequest, Cardinality, PartialAggregate, SelectRequest, SeriesQuery, StoreError,
    StoredSeries, WriteRequest,
};
use cairn_common::{ExemplarSeries, Labels, MetricMetadata, SeriesData, SeriesId, WriteOutcome};
use futures_core::Stream;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// A boxed, sendable future (what the traits' methods return).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A select's answer: batches of series in label order, each batch a few
/// hundred to a few thousand series, so a caller folding series one by one
/// holds one batch at a time. An error ends the stream.
pub type SeriesStream<'a> =
    Pin<Box<dyn Stream<Item = Result<Vec<StoredSeries>, StoreError>> + Send + 'a>>;

/// The read contract. Times are milliseconds, both ends inclusive.
pub trait SeriesReader: Send + Sync {
    /// Series of the request's tenant and namespace matching every matcher,
    /// with their samples in `[start, end]`, sorted by labels, in batches.
    /// Series without samples in the range may be left out. A store
    /// enforces `limits` (LimitExceeded) and `deadline` (Timeout).
    fn select(&self, req: SelectRequest) -> BoxFuture<'_, Result<SeriesStream<'_>, StoreError>>;

    /// Label sets of the matching series (no samples), sorted.
    fn series(&self, q: SeriesQuery) -> BoxFuture<'_, Result<Vec<Labels>, StoreError>>;

    /// Sorted, distinct label names; with matchers, only of matching series.
    fn label_names(&self, q: SeriesQuery) -> BoxFuture<'_, Result<Vec<String>, StoreError>>;

    /// Sorted, distinct values of label `name`; with matchers, only of matching series.
    fn label_values(
        &self,
        q: SeriesQuery,
        name: String,
    ) -> BoxFuture<'_, Result<Vec<String>, StoreError>>;

    /// Exemplars of matching series in the range.
    fn exemplars(&self, q: SeriesQuery) -> BoxFuture<'_, Result<Vec<ExemplarSeries>, StoreError>>;

    /// Metadata by metric family name (all when `metric` is None), at most
    /// `limit` families (0: all).
    fn metadata(
        &self,
        tenant: String,
        metric: Option<String>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<(String, MetricMetadata)>, StoreError>>;

    /// How the matching series (of the query's tenant, shards and range,
    /// as [`series`](Self::series) selects them) spread over label pairs,
    /// in full: `q.limit` is ignored, since a cut answer could not be
    /// merged with another store's. Each series is counted once, however
    /// many replicas hold it.
    ///
    /// The default counts the label sets `series` returns (every matching
    /// label set materialized, over the wire for a remote store); a store
    /// that can count from its index does so instead.
    fn cardinality(&self, q: SeriesQuery) -> BoxFuture<'_, Result<Cardinality, StoreError>> {
        Box::pin(async move {
            let q = q.with_limit(0);
            let sets = self.series(q).await?;
            Ok(Cardinality::of_series(&sets))
        })
    }

    /// A partial aggregation computed where the data is (a cluster's
    /// nodes, each over shards it holds), or `None` when this store does
    /// not push aggregations down (the default): the caller then selects
    /// the series and aggregates them itself.
    fn aggregate(
        &self,
        req: AggregateRequest,
    ) -> BoxFuture<'_, Result<Option<PartialAggregate>, StoreError>> {
        let _ = req;
        Box::pin(async { Ok(None) })
    }

    /// Per shard of `req.shards` (by number), a sum over every sample the
    /// store took into the block windows overlapping `[req.start,
    /// req.end]` of `req.namespace` (every tenant's) since it opened —
    /// equal on two replicas that took the same samples, whatever order
    /// they came in — or None where it cannot tell (data it recovered at
    /// open). A replicated read compares them to skip reading a replica
    /// known to hold the same. By default nothing is known (empty).
    fn shard_sums(
        &self,
        req: SelectRequest,
    ) -> BoxFuture<'_, Result<crate::ShardSums, StoreError>> {
        let _ = req;
        Box::pin(async { Ok(Vec::new()) })
    }

    /// How far downsampled namespace `namespace` is written: its windows
    /// starting before the time returned are in it. `None` when the store
    /// cannot tell (the reader then estimates from the clock).
    fn downsampled_until(&self, namespace: &str) -> Option<i64> {
        let _ = namespace;
        None
    }
}

/// The write contract: one validated batch to one shard (or routed by
/// series id). Resolves once the accepted part is durable on as many
/// replicas as the request's consistency level asks.
pub trait ShardWriter: Send + Sync {
    fn write(&self, req: WriteRequest) -> BoxFuture<'_, Result<WriteOutcome, StoreError>>;

    /// Of `ids` (series of `tenant` in `namespace`), those this store does
    /// not hold, so a write must carry their labels: a write may give a
    /// series it holds by id alone (no labels; a node sends its replicas
    /// label sets only for series they are new to). By default every id is
    /// unknown (the store takes no series by id alone).
    fn unknown_series(&self, tenant: &str, namespace: &str, ids: &[SeriesId]) -> Vec<SeriesId> {
        let _ = (tenant, namespace);
        ids.to_vec()
    }
}

/// The next batch of a stream (None at its end).
pub async fn next_batch(
    stream: &mut SeriesStream<'_>,
) -> Option<Result<Vec<StoredSeries>, StoreError>> {
    std::future::poll_fn(|cx| stream.as_mut().poll_next(cx)).await
}

/// Every series of a select with samples in its range, decoded and trimmed
/// to the range.
pub async fn select_all(
    reader: &dyn SeriesReader,
    req: SelectRequest,
) -> Result<Vec<SeriesData>, StoreError> {
    let (start, end) = (req.start, req.end);
    let mut stream = reader.select(req).await?;
    let mut out = Vec::new();
    while let Some(batch) = next_batch(&mut stream).await {
        out.extend(decode_batch(batch?, start, end)?);
    }
    Ok(out)
}

/// The series of a batch with samples in `[start, end]`, decoded and trimmed.
pub fn decode_batch(
    batch: Vec<StoredSeries>,
    start: i64,
    end: i64,
) -> Result<Vec<SeriesData>, StoreError> {
    let mut out = Vec::with_capacity(batch.len());
    for s in batch {
        let d = s.decode(start, end)?;
        if !d.samples.is_empty() {
            out.push(d);
        }
    }
    Ok(out)
}

/// A select read batch by batch on the calling thread (for synchronous
/// callers such as the read pool's threads): each batch decoded as
/// [`decode_batch`] and handed to `f`, which returns false to stop early —
/// the rest is then never read.
pub fn select_batched(
    reader: &dyn SeriesReader,
    req: SelectRequest,
    f: &mut dyn FnMut(Vec<SeriesData>) -> bool,
) -> Result<(), StoreError> {
    block_on(async {
        let (start, end) = (req.start, req.end);
        let mut stream = reader.select(req).await?;
        while let Some(batch) = next_batch(&mut stream).await {
            if !f(decode_batch(batch?, start, end)?) {
                break;
            }
        }
        Ok(())
    })
}

/// A stream over an iterator of batches (for stores whose reads are local
/// and synchronous: each batch is produced when polled).
pub fn stream_from_iter<'a, I>(iter: I) -> SeriesStream<'a>
where
    I: Iterator<Item = Result<Vec<StoredSeries>, StoreError>> + Send + Unpin + 'a,
{
    Box::pin(IterStream(iter))
}

/// A stream over series already in memory, handed out `per_batch` at a
/// time (for stores that hold the whole answer: the in-memory store, a
/// merge of replicas).
pub fn stream_from_vec<'a>(series: Vec<StoredSeries>, per_batch: usize) -> SeriesStream<'a> {
    stream_from_iter(VecBatches {
        it: series.into_iter(),
        per_batch: per_batch.max(1),
    })
}

struct VecBatches {
    it: std::vec::IntoIter<StoredSeries>,
    per_batch: usize,
}

impl Iterator for VecBatches {
    type Item = Result<Vec<StoredSeries>, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        let batch: Vec<StoredSeries> = self.it.by_ref().take(self.per_batch).collect();
        (!batch.is_empty()).then_some(Ok(batch))
    }
}

struct IterStream<I>(I);

impl<I> Stream for IterStream<I>
where
    I: Iterator<Item = Result<Vec<StoredSeries>, StoreError>> + Unpin,
{
    type Item = Result<Vec<StoredSeries>, StoreError>;

    fn poll_next(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Poll::Ready(self.0.next())
    }
}

/// Runs a future to completion on the calling thread (parking it while the
/// future waits). For synchronous callers such as the read pool's threads;
/// a future that needs a runtime (e.g. a tonic client) needs that runtime
/// entered first (`tokio::runtime::Handle::enter`).
pub fn block_on<F: Future>(fut: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.unpark();
        }
        fn wake_by_ref(self: &std::sync::Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(std::sync::Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        match fut.as_mut().poll(&mut cx) {
            Poll::Ready(v) => return v,
            Poll::Pending => std::thread::park(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::task::Poll;

    #[test]
    fn block_on_waits_for_a_future_woken_from_another_thread() {
        let (tx, rx) = std::sync::mpsc::channel::<std::task::Waker>();
        let waker_thread = std::thread::spawn(move || {
            let w = rx.recv().expect("the future sends its waker");
            std::thread::sleep(std::time::Duration::from_millis(20));
            w.wake();
        });
        let mut polls = 0;
        let f = std::future::poll_fn(|cx| {
            polls += 1;
            if polls == 1 {
                tx.send(cx.waker().clone())
                    .expect("the waker thread listens");
                Poll::Pending
            } else {
                Poll::Ready(polls)
            }
        });
        assert!(super::block_on(f) >= 2);
        waker_thread.join().expect("the waker thread ends");
    }
}
