//! The node service in front of any store: each call is converted, checked
//! and handed to the store on the blocking pool (a local store's reads and
//! writes block on its disk); a select streams its batches back as the store
//! produces them, at most two batches ahead of the client.

use crate::convert::*;
use crate::node as pb;
use crate::node::node_server::{Node, NodeServer};
use cairn_storage_api::{block_on, next_batch, Aggregator, SeriesReader, ShardWriter, StoreError};
use futures_core::Stream;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use tonic::{Request, Response, Status};

/// Serves one store as the node service.
pub struct NodeService<S> {
    store: Arc<S>,
    node_id: String,
    ready: Arc<AtomicBool>,
    /// Computes the partial aggregations peers push down (none: `Aggregate`
    /// answers UNIMPLEMENTED and the peer reads the series instead).
    aggregator: Option<Arc<dyn Aggregator>>,
}

impl<S> std::fmt::Debug for AggregatorSlot<'_, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.aggregator.is_some() {
            "yes"
        } else {
            "no"
        })
    }
}

struct AggregatorSlot<'a, S>(&'a NodeService<S>);

impl<S> std::fmt::Debug for NodeService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeService")
            .field("node_id", &self.node_id)
            .field("aggregator", &AggregatorSlot(self))
            .finish_non_exhaustive()
    }
}

impl<S: SeriesReader + ShardWriter + 'static> NodeService<S> {
    /// `ready` is what `Health` reports (the node's own shards recovered).
    pub fn new(store: Arc<S>, node_id: impl Into<String>, ready: Arc<AtomicBool>) -> Self {
        NodeService {
            store,
            node_id: node_id.into(),
            ready,
            aggregator: None,
        }
    }

    /// Partial aggregations pushed down by peers are computed by
    /// `aggregator` (the query engine) over this node's store.
    pub fn with_aggregator(mut self, aggregator: Arc<dyn Aggregator>) -> Self {
        self.aggregator = Some(aggregator);
        self
    }

    /// The tonic service, message sizes bounded by [`crate::MAX_MESSAGE_BYTES`].
    pub fn into_server(self) -> NodeServer<Self> {
        NodeServer::new(self)
            .max_decoding_message_size(crate::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(crate::MAX_MESSAGE_BYTES)
    }

    /// Serves on `listener` until `shutdown` resolves.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), tonic::transport::Error> {
        tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .add_service(self.into_server())
            .serve_with_incoming_shutdown(Incoming(listener), shutdown)
            .await
    }
}

/// Accepted connections of a listener, as tonic's server wants them (for a
/// server carrying more services than the node's).
#[derive(Debug)]
pub struct Incoming(pub tokio::net::TcpListener);

impl Stream for Incoming {
    type Item = std::io::Result<tokio::net::TcpStream>;

    /// Each accepted connection without Nagle's delay: tonic's
    /// `tcp_nodelay` applies only to the listeners it opens itself, and a
    /// small answer written in two segments would otherwise wait for the
    /// peer's delayed ACK (40 ms on Linux) — every small cross-node read.
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_accept(cx).map(|r| {
            Some(r.map(|(s, _)| {
                let _ = s.set_nodelay(true);
                s
            }))
        })
    }
}

impl std::fmt::Debug for SelectBatches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SelectBatches").finish_non_exhaustive()
    }
}

/// A select's batches on their way to the client (the `Select` stream).
pub struct SelectBatches(tokio::sync::mpsc::Receiver<Result<pb::SeriesBatch, Status>>);

impl Stream for SelectBatches {
    type Item = Result<pb::SeriesBatch, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}

/// Runs `f` (which blocks on the store) on the blocking pool.
async fn on_store<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, Status> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(|e| status_from(&e)),
        Err(e) => Err(status_from(&StoreError::internal(format!(
            "the store call failed: {e}"
        )))),
    }
}

fn invalid(e: StoreError) -> Status {
    status_from(&e)
}

#[tonic::async_trait]
impl<S: SeriesReader + ShardWriter + 'static> Node for NodeService<S> {
    type SelectStream = SelectBatches;

    async fn write(
        &self,
        req: Request<pb::WriteRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let r = write_from(req.into_inner()).map_err(invalid)?;
        // Series given by id alone must be ones the store holds: else
        // nothing is written and the sender is told which to send again
        // with their labels.
        let by_id: Vec<cairn_common::SeriesId> = r
            .batch
            .series
            .iter()
            .filter(|s| s.labels.is_empty())
            .map(|s| s.id)
            .collect();
        let store = self.store.clone();
        let out = on_store(move || {
            if !by_id.is_empty() {
                let unknown = store.unknown_series(&r.tenant, &r.namespace, &by_id);
                if !unknown.is_empty() {
                    return Ok(Err(unknown));
                }
            }
            match block_on(store.write(r)) {
                // A series given by id left the store between the check and
                // the write (nothing was stored): all of them again, with
                // their labels.
                Err(e) if e.message().contains(cairn_storage_api::NOT_HELD_BY_ID) => Ok(Err(by_id)),
                other => other.map(Ok),
            }
        })
        .await?;
        Ok(Response::new(match out {
            Ok(o) => outcome_to(o),
            Err(unknown) => pb::WriteResponse {
                unknown_ids: ids_to_bytes(&unknown),
                ..Default::default()
            },
        }))
    }

    async fn select(
        &self,
        req: Request<pb::SelectRequest>,
    ) -> Result<Response<Self::SelectStream>, Status> {
        let r = select_from(req.into_inner()).map_err(invalid)?;
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || {
            block_on(async {
                let mut stream = match store.select(r).await {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = tx.blocking_send(Err(status_from(&e)));
                        return;
                    }
                };
                while let Some(b) = next_batch(&mut stream).await {
                    let item = b.map(batch_to).map_err(|e| status_from(&e));
                    let failed = item.is_err();
                    // A send error: the client went away; stop reading.
                    if tx.blocking_send(item).is_err() || failed {
                        return;
                    }
                }
            })
        });
        Ok(Response::new(SelectBatches(rx)))
    }

    async fn series(
        &self,
        req: Request<pb::SeriesQuery>,
    ) -> Result<Response<pb::LabelSets>, Status> {
        let q = query_from(req.into_inner()).map_err(invalid)?;
        let store = self.store.clone();
        let v = on_store(move || block_on(store.series(q))).await?;
        Ok(Response::new(label_sets_to(v)))
    }

    async fn label_names(
        &self,
        req: Request<pb::SeriesQuery>,
    ) -> Result<Response<pb::Strings>, Status> {
        let q = query_from(req.into_inner()).map_err(invalid)?;
        let store = self.store.clone();
        let values = on_store(move || block_on(store.label_names(q))).await?;
        Ok(Response::new(pb::Strings { values }))
    }

    async fn label_values(
        &self,
        req: Request<pb::LabelValuesRequest>,
    ) -> Result<Response<pb::Strings>, Status> {
        let r = req.into_inner();
        let q = query_from(r.query.unwrap_or_default()).map_err(invalid)?;
        let store = self.store.clone();
        let values = on_store(move || block_on(store.label_values(q, r.name))).await?;
        Ok(Response::new(pb::Strings { values }))
    }

    async fn exemplars(
        &self,
        req: Request<pb::SeriesQuery>,
    ) -> Result<Response<pb::ExemplarsResponse>, Status> {
        let q = query_from(req.into_inner()).map_err(invalid)?;
        let store = self.store.clone();
        let v = on_store(move || block_on(store.exemplars(q))).await?;
        Ok(Response::new(exemplars_to(v)))
    }

    async fn metadata(
        &self,
        req: Request<pb::MetadataRequest>,
    ) -> Result<Response<pb::MetadataResponse>, Status> {
        let r = req.into_inner();
        let store = self.store.clone();
        let v = on_store(move || block_on(store.metadata(r.tenant, r.metric, r.limit as usize)))
            .await?;
        Ok(Response::new(metadata_list_to(v)))
    }

    async fn aggregate(
        &self,
        req: Request<pb::AggregateRequest>,
    ) -> Result<Response<pb::AggregateResponse>, Status> {
        let Some(agg) = self.aggregator.clone() else {
            return Err(Status::unimplemented(
                "this node computes no partial aggregations",
            ));
        };
        let r = aggregate_from(req.into_inner()).map_err(invalid)?;
        let store = self.store.clone();
        let p = on_store(move || {
            let store: &dyn SeriesReader = &*store;
            block_on(agg.partial(store, r))
        })
        .await?;
        Ok(Response::new(partial_to(p)))
    }

    async fn shard_sums(
        &self,
        req: Request<pb::SelectRequest>,
    ) -> Result<Response<pb::ShardSumList>, Status> {
        let r = select_from(req.into_inner()).map_err(invalid)?;
        let store = self.store.clone();
        let v = on_store(move || block_on(store.shard_sums(r))).await?;
        Ok(Response::new(sums_to(&v)))
    }

    async fn health(
        &self,
        _req: Request<pb::HealthRequest>,
    ) -> Result<Response<pb::HealthResponse>, Status> {
        Ok(Response::new(pb::HealthResponse {
            node_id: self.node_id.clone(),
            ready: self.ready.load(Ordering::Acquire),
        }))
    }
}
