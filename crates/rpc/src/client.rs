//! A remote node as a store: [`RemoteNode`] implements the storage contract
//! over one reused gRPC channel (reconnected on demand), every call bounded
//! by the request's deadline and the client's own timeout.

use crate::convert::*;
use crate::node as pb;
use crate::node::node_client::NodeClient;
use cairn_common::{ExemplarSeries, Labels, MetricMetadata, WriteOutcome};
use cairn_storage_api::{
    AggregateRequest, BoxFuture, PartialAggregate, SelectRequest, SeriesQuery, SeriesReader,
    SeriesStream, ShardWriter, StoreError, StoredSeries, WriteRequest,
};
use futures_core::Stream;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tonic::transport::{Channel, Endpoint};

/// A `Node.Write` request already encoded (shared by the replicas a
/// shard group goes to).
struct PreEncoded(std::sync::Arc<Vec<u8>>);

/// The codec of a pre-encoded write: its bytes as they are out, the
/// answer decoded with prost.
struct PreEncodedCodec;

impl tonic::codec::Codec for PreEncodedCodec {
    type Encode = PreEncoded;
    type Decode = pb::WriteResponse;
    type Encoder = PreEncodedCodec;
    type Decoder = WriteResponseDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        PreEncodedCodec
    }
    fn decoder(&mut self) -> Self::Decoder {
        WriteResponseDecoder
    }
}

impl tonic::codec::Encoder for PreEncodedCodec {
    type Item = PreEncoded;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: PreEncoded,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(dst, &item.0);
        Ok(())
    }
}

struct WriteResponseDecoder;

impl tonic::codec::Decoder for WriteResponseDecoder {
    type Item = pb::WriteResponse;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<pb::WriteResponse>, tonic::Status> {
        prost::Message::decode(src)
            .map(Some)
            .map_err(|e| tonic::Status::internal(format!("decoding a write's answer: {e}")))
    }
}

/// One remote node's storage, through its node service.
#[derive(Debug, Clone)]
pub struct RemoteNode {
    client: NodeClient<Channel>,
    channel: Channel,
    endpoint: String,
    timeout: Duration,
}

impl RemoteNode {
    /// A client of the node at `endpoint` (`http://host:port`). Connects on
    /// first use and again after a failure, so it can be made before the
    /// node is up. Calls without a deadline of their own give up after
    /// `timeout`.
    pub fn new(endpoint: &str, timeout: Duration) -> Result<RemoteNode, StoreError> {
        let channel = Endpoint::from_shared(endpoint.to_string())
            .map_err(|e| StoreError::invalid(format!("node endpoint {endpoint:?}: {e}")))?
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5))
            .connect_lazy();
        let client = NodeClient::new(channel.clone())
            .max_decoding_message_size(crate::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(crate::MAX_MESSAGE_BYTES);
        Ok(RemoteNode {
            client,
            channel,
            endpoint: endpoint.to_string(),
            timeout,
        })
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// One `Node.Write` call with an encoded request.
    async fn send_write(
        &self,
        bytes: std::sync::Arc<Vec<u8>>,
    ) -> Result<pb::WriteResponse, StoreError> {
        if bytes.len() > crate::MAX_MESSAGE_BYTES {
            return Err(StoreError::invalid(format!(
                "a write of {} bytes to node {} is above the {}-byte message limit",
                bytes.len(),
                self.endpoint,
                crate::MAX_MESSAGE_BYTES
            )));
        }
        let r = self.request(PreEncoded(bytes), None)?;
        let mut grpc = tonic::client::Grpc::new(self.channel.clone())
            .max_decoding_message_size(crate::MAX_MESSAGE_BYTES);
        grpc.ready()
            .await
            .map_err(|e| StoreError::unavailable(format!("node {}: {e}", self.endpoint)))?;
        let path =
            tonic::codegen::http::uri::PathAndQuery::from_static("/cairn.node.v1.Node/Write");
        let v = grpc
            .unary(r, path, PreEncodedCodec)
            .await
            .map_err(|s| self.error(&s))?;
        Ok(v.into_inner())
    }

    /// The request with its grpc-timeout: the deadline's remainder, at most
    /// the client's timeout; a deadline already passed is a Timeout here,
    /// without a call.
    fn request<T>(
        &self,
        msg: T,
        deadline: Option<Instant>,
    ) -> Result<tonic::Request<T>, StoreError> {
        let left = match deadline {
            None => self.timeout,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(StoreError::timeout(format!(
                        "deadline exceeded before calling node {}",
                        self.endpoint
                    )));
                }
                left.min(self.timeout)
            }
        };
        let mut r = tonic::Request::new(msg);
        r.set_timeout(left);
        Ok(r)
    }

    /// Whether the node answers and says it is ready.
    pub async fn health(&self) -> Result<(String, bool), StoreError> {
        let r = self.request(pb::HealthRequest {}, None)?;
        let h = self
            .client
            .clone()
            .health(r)
            .await
            .map_err(|s| self.error(&s))?
            .into_inner();
        Ok((h.node_id, h.ready))
    }

    /// The status as a store error; unreachable nodes are Unavailable and
    /// name the endpoint.
    fn error(&self, s: &tonic::Status) -> StoreError {
        let e = error_from(s);
        if s.code() == tonic::Code::Unavailable || s.code() == tonic::Code::Unknown {
            let msg = format!("node {}: {}", self.endpoint, e.message());
            return StoreError::new(e.kind(), msg).with_retryable(e.is_retryable());
        }
        e
    }
}

/// A select's batches as they arrive.
struct RemoteBatches {
    inner: tonic::Streaming<pb::SeriesBatch>,
    node: RemoteNode,
}

impl Stream for RemoteBatches {
    type Item = Result<Vec<StoredSeries>, StoreError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match Pin::new(&mut self.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(b))) => Poll::Ready(Some(batch_from(b))),
            Poll::Ready(Some(Err(s))) => Poll::Ready(Some(Err(self.node.error(&s)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl SeriesReader for RemoteNode {
    fn select(&self, req: SelectRequest) -> BoxFuture<'_, Result<SeriesStream<'_>, StoreError>> {
        Box::pin(async move {
            let r = self.request(select_to(&req), req.deadline)?;
            let inner = self
                .client
                .clone()
                .select(r)
                .await
                .map_err(|s| self.error(&s))?
                .into_inner();
            let s: SeriesStream<'_> = Box::pin(RemoteBatches {
                inner,
                node: self.clone(),
            });
            Ok(s)
        })
    }

    /// Computed by the node (None: it computes none, or folding would not
    /// pay there).
    fn aggregate(
        &self,
        req: AggregateRequest,
    ) -> BoxFuture<'_, Result<Option<PartialAggregate>, StoreError>> {
        Box::pin(async move {
            let r = self.request(aggregate_to(&req), req.select.deadline)?;
            match self.client.clone().aggregate(r).await {
                Ok(v) => partial_from(v.into_inner()),
                Err(s) if s.code() == tonic::Code::Unimplemented => Ok(None),
                Err(s) => Err(self.error(&s)),
            }
        })
    }

    fn shard_sums(
        &self,
        req: SelectRequest,
    ) -> BoxFuture<'_, Result<cairn_storage_api::ShardSums, StoreError>> {
        Box::pin(async move {
            let r = self.request(select_to(&req), req.deadline)?;
            match self.client.clone().shard_sums(r).await {
                Ok(v) => sums_from(Some(v.into_inner())),
                // A node from before shard sums: nothing known.
                Err(s) if s.code() == tonic::Code::Unimplemented => Ok(Vec::new()),
                Err(s) => Err(self.error(&s)),
            }
        })
    }

    fn series(&self, q: SeriesQuery) -> BoxFuture<'_, Result<Vec<Labels>, StoreError>> {
        Box::pin(async move {
            let r = self.request(query_to(&q), q.deadline)?;
            let v = self
                .client
                .clone()
                .series(r)
                .await
                .map_err(|s| self.error(&s))?;
            Ok(label_sets_from(v.into_inner()))
        })
    }

    fn label_names(&self, q: SeriesQuery) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
        Box::pin(async move {
            let r = self.request(query_to(&q), q.deadline)?;
            let v = self
                .client
                .clone()
                .label_names(r)
                .await
                .map_err(|s| self.error(&s))?;
            Ok(v.into_inner().values)
        })
    }

    fn label_values(
        &self,
        q: SeriesQuery,
        name: String,
    ) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
        Box::pin(async move {
            let msg = pb::LabelValuesRequest {
                query: Some(query_to(&q)),
                name,
            };
            let r = self.request(msg, q.deadline)?;
            let v = self
                .client
                .clone()
                .label_values(r)
                .await
                .map_err(|s| self.error(&s))?;
            Ok(v.into_inner().values)
        })
    }

    fn exemplars(&self, q: SeriesQuery) -> BoxFuture<'_, Result<Vec<ExemplarSeries>, StoreError>> {
        Box::pin(async move {
            let r = self.request(query_to(&q), q.deadline)?;
            let v = self
                .client
                .clone()
                .exemplars(r)
                .await
                .map_err(|s| self.error(&s))?;
            Ok(exemplars_from(v.into_inner()))
        })
    }

    fn metadata(
        &self,
        tenant: String,
        metric: Option<String>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<(String, MetricMetadata)>, StoreError>> {
        Box::pin(async move {
            let msg = pb::MetadataRequest {
                tenant,
                metric,
                limit: limit as u64,
            };
            let r = self.request(msg, None)?;
            let v = self
                .client
                .clone()
                .metadata(r)
                .await
                .map_err(|s| self.error(&s))?;
            Ok(metadata_list_from(v.into_inner()))
        })
    }
}

impl ShardWriter for RemoteNode {
    /// The series (without exemplars) given by id alone — a node's
    /// replicas hold most of the series it writes, so label sets cross
    /// only for the series a replica answers it does not hold, in a second
    /// call (and, should one have left it meanwhile, all labels in a
    /// third). The first form is encoded once for every replica it goes to
    /// (the request's [`encoded`](WriteRequest::encoded) slot).
    fn write(&self, req: WriteRequest) -> BoxFuture<'_, Result<WriteOutcome, StoreError>> {
        Box::pin(async move {
            let first = req
                .encoded
                .get_or_init(|| prost::Message::encode_to_vec(&write_eliding(&req, &|_| true)));
            let mut answer = self.send_write(first).await?;
            if !answer.unknown_ids.is_empty() {
                let unknown: std::collections::HashSet<cairn_common::SeriesId> =
                    ids_from_bytes(&answer.unknown_ids).into_iter().collect();
                let again = write_eliding(&req, &|id| !unknown.contains(&id));
                answer = self
                    .send_write(std::sync::Arc::new(prost::Message::encode_to_vec(&again)))
                    .await?;
            }
            if !answer.unknown_ids.is_empty() {
                let all = prost::Message::encode_to_vec(&write_to(&req));
                answer = self.send_write(std::sync::Arc::new(all)).await?;
            }
            let mut out = outcome_from(answer);
            // A refused series given by id alone is named by its labels.
            for r in &mut out.rejections {
                if let Some(hex) = r.series.strip_prefix("id:") {
                    if let Some(s) = u128::from_str_radix(hex, 16)
                        .ok()
                        .and_then(|id| req.batch.series.iter().find(|s| s.id.0 == id))
                    {
                        r.series = cairn_common::limits::truncate_str(
                            &s.labels.materialize().to_string(),
                            1024,
                        )
                        .into_owned();
                    }
                }
            }
            Ok(out)
        })
    }
}
