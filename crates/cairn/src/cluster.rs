//! Cluster mode: this node as one member of a cluster (`cluster.members`).
//!
//! The [`ClusterRole`] serves gRPC (the node service over this node's own
//! store, and the metadata group's raft service) from the start, so peers
//! reach it while its store is still recovering (node calls then answer
//! Unavailable); once the store is open, every HTTP route serves from a
//! [`ReplicatedStore`] over this node (in process) and its peers (gRPC), so
//! any node accepts writes and queries. Writes are acknowledged at the
//! write level (`cluster.write-consistency`, or the request's
//! `X-Cairn-Write-Consistency` header), reads answered at
//! `cluster.read-consistency`. The data path follows the metadata store's
//! placement from its cache; it never waits on raft.

use crate::roles::{BoxFuture, Service};
use anyhow::{Context, Result};
use cairn_api::{Admin, AppState, Backend};
use cairn_cluster::{ClusterSection, NodeId, Placement};
use cairn_common::{ExemplarSeries, Labels, MetricMetadata, WriteOutcome};
use cairn_replication::{Hints, NodeStore, ReplicatedStore};
use cairn_rpc::{Incoming, NodeService, RemoteNode};
use cairn_storage::Storage;
use cairn_storage_api::{
    SelectRequest, SeriesQuery, SeriesReader, SeriesStream, ShardWriter, StoreError, WriteRequest,
};
use serde_json::json;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// What computes partial aggregations (this node's part of one pushed
/// down by the query role, a peer's request for its part): the engine,
/// the request giving its steps, lookback and limits.
fn aggregator() -> Arc<dyn cairn_storage_api::Aggregator> {
    Arc::new(cairn_promql::Engine::new(
        cairn_promql::EngineOptions::default(),
    ))
}

/// This node's own store as the cluster reaches it: Unavailable until
/// recovery has opened it.
#[derive(Debug, Default)]
pub(crate) struct LocalStore(OnceLock<Arc<Storage>>);

impl LocalStore {
    fn get(&self) -> Result<&Arc<Storage>, StoreError> {
        self.0
            .get()
            .ok_or_else(|| StoreError::unavailable("this node's store is still recovering"))
    }
}

impl SeriesReader for LocalStore {
    fn downsampled_until(&self, namespace: &str) -> Option<i64> {
        self.get().ok()?.downsampled_until(namespace)
    }

    fn select(&self, req: SelectRequest) -> BoxFuture<'_, Result<SeriesStream<'_>, StoreError>> {
        match self.get() {
            Ok(s) => s.select(req),
            Err(e) => Box::pin(async { Err(e) }),
        }
    }
    fn shard_sums(
        &self,
        req: SelectRequest,
    ) -> BoxFuture<'_, Result<cairn_storage_api::ShardSums, StoreError>> {
        match self.get() {
            Ok(s) => s.shard_sums(req),
            Err(e) => Box::pin(async { Err(e) }),
        }
    }
    fn series(&self, q: SeriesQuery) -> BoxFuture<'_, Result<Vec<Labels>, StoreError>> {
        match self.get() {
            Ok(s) => s.series(q),
            Err(e) => Box::pin(async { Err(e) }),
        }
    }
    fn label_names(&self, q: SeriesQuery) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
        match self.get() {
            Ok(s) => s.label_names(q),
            Err(e) => Box::pin(async { Err(e) }),
        }
    }
    fn label_values(
        &self,
        q: SeriesQuery,
        name: String,
    ) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
        match self.get() {
            Ok(s) => s.label_values(q, name),
            Err(e) => Box::pin(async { Err(e) }),
        }
    }
    fn exemplars(&self, q: SeriesQuery) -> BoxFuture<'_, Result<Vec<ExemplarSeries>, StoreError>> {
        match self.get() {
            Ok(s) => s.exemplars(q),
            Err(e) => Box::pin(async { Err(e) }),
        }
    }
    fn metadata(
        &self,
        tenant: String,
        metric: Option<String>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<(String, MetricMetadata)>, StoreError>> {
        match self.get() {
            Ok(s) => s.metadata(tenant, metric, limit),
            Err(e) => Box::pin(async { Err(e) }),
        }
    }
}

impl ShardWriter for LocalStore {
    fn unknown_series(
        &self,
        tenant: &str,
        namespace: &str,
        ids: &[cairn_common::SeriesId],
    ) -> Vec<cairn_common::SeriesId> {
        match self.get() {
            Ok(s) => s.unknown_series(tenant, namespace, ids),
            Err(_) => ids.to_vec(),
        }
    }

    /// On the blocking pool: the store's write waits for its commit-log sync.
    fn write(&self, req: WriteRequest) -> BoxFuture<'_, Result<WriteOutcome, StoreError>> {
        let store = match self.get() {
            Ok(s) => s.clone(),
            Err(e) => return Box::pin(async { Err(e) }),
        };
        Box::pin(async move {
            tokio::task::spawn_blocking(move || cairn_storage_api::block_on(store.write(req)))
                .await
                .map_err(|e| StoreError::internal(format!("write task: {e}")))?
        })
    }
}

/// The running gRPC server.
struct GrpcServer {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::result::Result<(), tonic::transport::Error>>,
}

/// This node as a cluster member: gRPC, the peers, and the replicated store
/// every route serves from once the local store is open.
pub(crate) struct ClusterRole {
    section: ClusterSection,
    data_dir: std::path::PathBuf,
    meta: Arc<OnceLock<cairn_meta::Meta>>,
    local: Arc<LocalStore>,
    ready: Arc<AtomicBool>,
    peers: Vec<(NodeId, RemoteNode)>,
    metrics: PeerMetrics,
    grpc: Option<GrpcServer>,
}

impl ClusterRole {
    /// The role for a validated cluster section (its members include this
    /// node). Peers are connected lazily.
    pub(crate) fn new(section: ClusterSection, data_dir: std::path::PathBuf) -> Result<Self> {
        let me = section.node();
        let timeout = section.replica_timeout.get();
        let peers = section
            .members
            .iter()
            .filter(|m| m.id != me.as_str())
            .map(|m| {
                let client = RemoteNode::new(&format!("http://{}", m.grpc), timeout)
                    .with_context(|| format!("cluster member {}", m.id))?;
                Ok((NodeId::new(m.id.clone()), client))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(ClusterRole {
            section,
            data_dir,
            meta: Arc::default(),
            local: Arc::default(),
            ready: Arc::default(),
            peers,
            metrics: PeerMetrics::new(),
            grpc: None,
        })
    }

    /// The metadata member this role starts (set at start).
    pub(crate) fn meta_cell(&self) -> Arc<OnceLock<cairn_meta::Meta>> {
        self.meta.clone()
    }

    /// What the storage role calls once the store is open: the replicated
    /// store over this node and its peers becomes every route's backend.
    pub(crate) fn publisher(&self, state: AppState) -> Result<crate::roles::Publish> {
        let section = self.section.clone();
        let local = self.local.clone();
        let ready = self.ready.clone();
        let peers = self.peers.clone();
        let metrics = self.metrics.clone();
        let meta = self.meta.clone();
        let handle = tokio::runtime::Handle::current();
        Ok(Arc::new(move |storage: Arc<Storage>| {
            let _ = local.0.set(storage.clone());
            let (section, local, ready, peers, metrics, meta, state) = (
                section.clone(),
                local.clone(),
                ready.clone(),
                peers.clone(),
                metrics.clone(),
                meta.clone(),
                state.clone(),
            );
            let spawner = handle.clone();
            // Ready once the store is open and the placement is known (from
            // this node's own raft log after a restart; at the cluster's
            // creation, once a majority has elected a leader and committed
            // it).
            handle.spawn(async move {
                let (meta, mut rx, placement) = loop {
                    if let Some(m) = meta.get() {
                        let mut rx = m.placement();
                        let current = rx.borrow_and_update().clone();
                        if let Some(p) = current {
                            break (m.clone(), rx, p);
                        }
                        if rx.changed().await.is_err() {
                            return;
                        }
                        continue;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                };
                let mut nodes: HashMap<NodeId, Arc<dyn NodeStore>> = HashMap::new();
                nodes.insert(section.node(), local.clone());
                for (id, client) in &peers {
                    let peer = Peer::new(id.clone(), client.clone(), metrics.clone());
                    nodes.insert(id.clone(), Arc::new(peer));
                }
                let hints = Arc::new(Hints::new(section.hints_max_size.0));
                let store = match ReplicatedStore::new(
                    (*placement).clone(),
                    nodes,
                    section.read_consistency,
                ) {
                    // Replica answers still pending once a write is decided
                    // run on: a slow replica delays no write the level allows.
                    // Reads ask this node first: its replica is in process.
                    // What a replica misses is kept and replayed to it.
                    // Aggregations are computed in parts on the nodes.
                    Ok(s) => Arc::new(
                        s.preferring(section.node())
                            .with_spawner(Arc::new(move |f| {
                                spawner.spawn(f);
                            }))
                            .with_hints(hints.clone())
                            .with_aggregator(aggregator()),
                    ),
                    Err(e) => {
                        tracing::error!(%e, "cannot build the cluster's store");
                        return;
                    }
                };
                ready.store(true, Ordering::Release);
                // Each gateway enforces its share of a tenant's rate: the
                // rate ÷ the members answering (this one included).
                state.set_gateways(peers.len() + 1);
                {
                    let (peers, state) = (peers.clone(), state.clone());
                    tokio::spawn(async move {
                        loop {
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            let mut live = 1;
                            for (_, c) in &peers {
                                if let Ok(Ok(_)) =
                                    tokio::time::timeout(Duration::from_secs(1), c.health()).await
                                {
                                    live += 1;
                                }
                            }
                            state.set_gateways(live);
                        }
                    });
                }
                // Hinted handoff: each second, the replicas that missed
                // writes get them replayed (a round stops at a replica's
                // first failure: it is still away).
                {
                    let store = store.clone();
                    tokio::spawn(async move {
                        loop {
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            let sent = store.deliver_hints().await;
                            if sent > 0 {
                                tracing::info!(
                                    samples = sent,
                                    "replayed hinted writes to replicas"
                                );
                            }
                        }
                    });
                }
                state.set_ready(Backend {
                    reader: store.clone(),
                    writer: store.clone(),
                    admin: Arc::new(ClusterAdmin {
                        storage,
                        store: store.clone(),
                        me: section.node(),
                        peers: peers.clone(),
                        metrics: metrics.clone(),
                        meta: meta.clone(),
                    }),
                });
                tracing::info!(
                    version = placement.version(),
                    "cluster placement known; ready"
                );
                // The data path follows the placement from its cache.
                while rx.changed().await.is_ok() {
                    let next = rx.borrow_and_update().clone();
                    if let Some(p) = next {
                        if let Err(e) = store.set_placement((*p).clone()) {
                            tracing::error!(%e, "cannot follow the new placement");
                        }
                    }
                }
            });
        }))
    }
}

impl Service for ClusterRole {
    fn name(&self) -> &'static str {
        "cluster"
    }

    fn start(&mut self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async {
            let addr = self
                .section
                .grpc_listen_addr()
                .context("cluster.node-id is not among cluster.members")?;
            let listener = tokio::net::TcpListener::bind(&addr)
                .await
                .with_context(|| format!("binding cluster gRPC {addr}"))?;
            tracing::info!(%addr, node = %self.section.node_id, "cluster gRPC listening");
            let node = NodeService::new(
                self.local.clone(),
                self.section.node_id.clone(),
                self.ready.clone(),
            )
            .with_aggregator(aggregator());
            let raft_id = self.section.raft_id().context("cluster.node-id")?;
            let peers = self
                .section
                .members
                .iter()
                .enumerate()
                .map(|(i, m)| (i as u64 + 1, m.grpc.clone()))
                .collect();
            let meta = cairn_meta::Meta::start(cairn_meta::MetaConfig {
                id: raft_id,
                data_dir: self.data_dir.clone(),
                peers,
                initial_placement: self.section.initial_placement()?,
                snapshot_every: 1000,
            })
            .context("starting the cluster metadata (raft)")?;
            let raft = meta.raft_service();
            let _ = self.meta.set(meta);
            let (stop, rx) = tokio::sync::oneshot::channel::<()>();
            let task = tokio::spawn(
                tonic::transport::Server::builder()
                    .tcp_nodelay(true)
                    .add_service(node.into_server())
                    .add_service(raft)
                    .serve_with_incoming_shutdown(Incoming(listener), async move {
                        let _ = rx.await;
                    }),
            );
            self.grpc = Some(GrpcServer { stop, task });
            Ok(())
        })
    }

    fn stop(&mut self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async {
            if let Some(g) = self.grpc.take() {
                let _ = g.stop.send(());
                match tokio::time::timeout(Duration::from_secs(10), g.task).await {
                    Ok(Ok(Ok(()))) => {}
                    Ok(Ok(Err(e))) => tracing::warn!(%e, "cluster gRPC server error"),
                    Ok(Err(e)) => tracing::warn!(%e, "cluster gRPC task failed"),
                    Err(_) => tracing::warn!("cluster gRPC server did not stop within 10s"),
                }
            }
            if let Some(m) = self.meta.get() {
                m.stop().await;
            }
            Ok(())
        })
    }
}

/// Admin in a cluster: flush and self-metrics are this node's; the cluster
/// view asks every peer for its health.
struct ClusterAdmin {
    storage: Arc<Storage>,
    store: Arc<ReplicatedStore>,
    me: NodeId,
    peers: Vec<(NodeId, RemoteNode)>,
    metrics: PeerMetrics,
    meta: cairn_meta::Meta,
}

impl Admin for ClusterAdmin {
    fn flush(&self) -> std::result::Result<usize, String> {
        self.storage.flush(true).map_err(|e| e.to_string())
    }
    fn snapshot(&self) -> std::result::Result<u64, String> {
        self.storage.snapshot().map_err(|e| e.to_string())
    }
    fn register_metrics(&self, registry: &mut cairn_api::MetricsRegistry) {
        self.storage.register_metrics(registry);
        self.metrics.register(registry);
        registry.register_collector(Box::new(HintCollector(Arc::downgrade(&self.store))));
    }
    fn cluster(&self) -> Option<BoxFuture<'static, serde_json::Value>> {
        let placement = self.store.placement();
        let me = self.me.clone();
        let peers = self.peers.clone();
        let meta = self.meta.status();
        Some(Box::pin(async move {
            let checks = peers.iter().map(|(id, c)| async move {
                let h = tokio::time::timeout(Duration::from_secs(2), c.health()).await;
                let (healthy, ready, error) = match h {
                    Ok(Ok((_, ready))) => (true, ready, None),
                    Ok(Err(e)) => (false, false, Some(e.to_string())),
                    Err(_) => (false, false, Some("no answer within 2s".to_string())),
                };
                (id.clone(), healthy, ready, error)
            });
            let health: HashMap<NodeId, (bool, bool, Option<String>)> =
                futures_util::future::join_all(checks)
                    .await
                    .into_iter()
                    .map(|(id, h, r, e)| (id, (h, r, e)))
                    .collect();
            let mut v = cluster_view(&placement, &me, &health);
            let leader = meta
                .leader
                .and_then(|l| placement.nodes().get(l as usize - 1))
                .map(|n| n.id.as_str().to_string());
            v["meta"] = json!({
                "raft_id": meta.id,
                "role": meta.role,
                "leader_raft_id": meta.leader,
                "leader": leader,
                "term": meta.term,
                "commit": meta.commit,
                "applied": meta.applied,
            });
            v
        }))
    }
}

/// The hinted-handoff queues' gauges and counters, read at scrape time.
#[derive(Debug)]
struct HintCollector(std::sync::Weak<ReplicatedStore>);

impl prometheus_client::collector::Collector for HintCollector {
    fn encode(
        &self,
        mut enc: prometheus_client::encoding::DescriptorEncoder,
    ) -> std::result::Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::counter::ConstCounter;
        use prometheus_client::metrics::gauge::ConstGauge;
        use prometheus_client::metrics::MetricType;
        let Some(store) = self.0.upgrade() else {
            return Ok(());
        };
        let stats = store.hint_stats();
        type Get = fn(&cairn_replication::HintStats) -> u64;
        let families: [(&str, &str, bool, Get); 6] = [
            (
                "cairn_cluster_hints_pending",
                "Writes a replica missed, kept here to replay to it (hinted handoff).",
                false,
                |s| s.pending,
            ),
            (
                "cairn_cluster_hint_pending_samples",
                "Samples in the writes kept for a replica.",
                false,
                |s| s.pending_samples,
            ),
            (
                "cairn_cluster_hint_pending_bytes",
                "Estimated memory of the writes kept for a replica (bounded by cluster.hints-max-size).",
                false,
                |s| s.pending_bytes,
            ),
            (
                "cairn_cluster_hint_delivered_samples",
                "Samples of missed writes replayed to a replica, which acknowledged them.",
                true,
                |s| s.delivered_samples,
            ),
            (
                "cairn_cluster_hint_dropped_samples",
                "Samples of missed writes dropped, oldest first, because the replica's budget (cluster.hints-max-size) was full.",
                true,
                |s| s.dropped_samples,
            ),
            (
                "cairn_cluster_hint_refused_samples",
                "Samples of missed writes the replica refused when replayed (e.g. past its retention by then).",
                true,
                |s| s.refused_samples,
            ),
        ];
        let reads = store.read_stats();
        for (name, help, v) in [
            (
                "cairn_cluster_digest_rereads",
                "Shards a read took in full from a replica whose digests differed from the data (a replica behind or ahead)",
                reads.digest_rereads,
            ),
            (
                "cairn_cluster_read_data_fallbacks",
                "Shards whose data a read took from a replica that had sent digests, the first replica having failed",
                reads.data_fallbacks,
            ),
            (
                "cairn_cluster_aggregations_pushed_down",
                "Aggregations answered from partials the nodes computed over their shards",
                reads.aggregations_pushed,
            ),
            (
                "cairn_cluster_aggregation_fallback_shards",
                "Shards of pushed-down aggregations aggregated on the query node from their replicas' series instead (a replica failed or its digests differed)",
                reads.aggregation_fallback_shards,
            ),
        ] {
            let c = ConstCounter::new(v);
            c.encode(enc.encode_descriptor(name, help, None, c.metric_type())?)?;
        }
        for (name, help, counter, get) in families {
            let kind = if counter {
                MetricType::Counter
            } else {
                MetricType::Gauge
            };
            let mut family = enc.encode_descriptor(name, help, None, kind)?;
            for (node, s) in &stats {
                let labels = [("peer", node.as_str())];
                if counter {
                    ConstCounter::new(get(s)).encode(family.encode_family(&labels)?)?;
                } else {
                    ConstGauge::new(get(s) as i64).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        Ok(())
    }
}

/// The `/admin/v1/cluster` document.
fn cluster_view(
    p: &Placement,
    me: &NodeId,
    health: &HashMap<NodeId, (bool, bool, Option<String>)>,
) -> serde_json::Value {
    let members: Vec<_> = p
        .nodes()
        .iter()
        .map(|n| {
            let (healthy, ready, error) = if &n.id == me {
                (true, true, None)
            } else {
                health.get(&n.id).cloned().unwrap_or((false, false, None))
            };
            json!({
                "id": n.id.as_str(),
                "http": n.http_addr,
                "grpc": n.grpc_addr,
                "isolation_group": n.isolation_group,
                "self": &n.id == me,
                "healthy": healthy,
                "ready": ready,
                "error": error,
                "shards": p.shards_of(&n.id).len(),
            })
        })
        .collect();
    let shards: Vec<_> = (0..p.num_shards())
        .map(|s| {
            json!({
                "shard": s,
                "replicas": p.replicas(s).iter().map(|r| json!({
                    "node": r.node.as_str(),
                    "state": r.state.as_str(),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "node": me.as_str(),
        "members": members,
        "placement": {
            "version": p.version(),
            "num_shards": p.num_shards(),
            "replication_factor": p.replication_factor(),
            "shards": shards,
        },
    })
}

/// Most calls to one peer in flight at once; past it a call fails at once
/// as Unavailable (that replica counts as failed for the write or read)
/// instead of queueing without bound behind a slow peer.
const PEER_MAX_IN_FLIGHT: usize = 512;

/// Labels of the per-peer RPC metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct PeerLabels {
    peer: String,
    method: &'static str,
}

/// Per-peer RPC self-metrics: latency, errors, calls in flight.
#[derive(Debug, Clone)]
pub(crate) struct PeerMetrics {
    latency: prometheus_client::metrics::family::Family<
        PeerLabels,
        prometheus_client::metrics::histogram::Histogram,
        fn() -> prometheus_client::metrics::histogram::Histogram,
    >,
    errors: prometheus_client::metrics::family::Family<
        PeerLabels,
        prometheus_client::metrics::counter::Counter,
    >,
    in_flight: prometheus_client::metrics::family::Family<
        PeerLabels,
        prometheus_client::metrics::gauge::Gauge,
    >,
}

fn latency_histogram() -> prometheus_client::metrics::histogram::Histogram {
    prometheus_client::metrics::histogram::Histogram::new(
        prometheus_client::metrics::histogram::exponential_buckets(0.0005, 2.0, 16),
    )
}

impl PeerMetrics {
    fn new() -> Self {
        PeerMetrics {
            latency: prometheus_client::metrics::family::Family::new_with_constructor(
                latency_histogram,
            ),
            errors: Default::default(),
            in_flight: Default::default(),
        }
    }

    fn register(&self, reg: &mut cairn_api::MetricsRegistry) {
        reg.register(
            "cairn_cluster_peer_rpc_duration_seconds",
            "Calls to a peer node by method, from send to answer",
            self.latency.clone(),
        );
        reg.register(
            "cairn_cluster_peer_rpc_errors",
            "Calls to a peer node that failed (unreachable, timed out, refused), by method",
            self.errors.clone(),
        );
        reg.register(
            "cairn_cluster_peer_rpc_in_flight",
            "Calls to a peer node waiting for its answer (the peer's queue depth here)",
            self.in_flight.clone(),
        );
    }
}

/// A peer as the replicated store reaches it: its gRPC client, metered,
/// with a bound on the calls in flight.
#[derive(Debug)]
struct Peer {
    id: NodeId,
    client: RemoteNode,
    slots: Arc<tokio::sync::Semaphore>,
    metrics: PeerMetrics,
}

impl Peer {
    fn new(id: NodeId, client: RemoteNode, metrics: PeerMetrics) -> Self {
        Peer {
            id,
            client,
            slots: Arc::new(tokio::sync::Semaphore::new(PEER_MAX_IN_FLIGHT)),
            metrics,
        }
    }

    /// Runs `call` metered under one of the peer's slots.
    fn metered<'a, T: Send + 'a>(
        &'a self,
        method: &'static str,
        call: BoxFuture<'a, Result<T, StoreError>>,
    ) -> BoxFuture<'a, Result<T, StoreError>> {
        let labels = PeerLabels {
            peer: self.id.as_str().to_string(),
            method,
        };
        Box::pin(async move {
            let Ok(_slot) = self.slots.clone().try_acquire_owned() else {
                self.metrics.errors.get_or_create(&labels).inc();
                return Err(StoreError::unavailable(format!(
                    "node {}: {PEER_MAX_IN_FLIGHT} calls already in flight",
                    self.id
                )));
            };
            let gauge = self.metrics.in_flight.get_or_create(&labels).clone();
            gauge.inc();
            let began = std::time::Instant::now();
            let r = call.await;
            gauge.dec();
            self.metrics
                .latency
                .get_or_create(&labels)
                .observe(began.elapsed().as_secs_f64());
            if r.is_err() {
                self.metrics.errors.get_or_create(&labels).inc();
            }
            r
        })
    }
}

impl SeriesReader for Peer {
    fn select(&self, req: SelectRequest) -> BoxFuture<'_, Result<SeriesStream<'_>, StoreError>> {
        self.metered("select", self.client.select(req))
    }
    fn aggregate(
        &self,
        req: cairn_storage_api::AggregateRequest,
    ) -> BoxFuture<'_, Result<Option<cairn_storage_api::PartialAggregate>, StoreError>> {
        self.metered("aggregate", self.client.aggregate(req))
    }
    fn shard_sums(
        &self,
        req: SelectRequest,
    ) -> BoxFuture<'_, Result<cairn_storage_api::ShardSums, StoreError>> {
        self.metered("shard_sums", self.client.shard_sums(req))
    }
    fn series(&self, q: SeriesQuery) -> BoxFuture<'_, Result<Vec<Labels>, StoreError>> {
        self.metered("series", self.client.series(q))
    }
    fn label_names(&self, q: SeriesQuery) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
        self.metered("label_names", self.client.label_names(q))
    }
    fn label_values(
        &self,
        q: SeriesQuery,
        name: String,
    ) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
        self.metered("label_values", self.client.label_values(q, name))
    }
    fn exemplars(&self, q: SeriesQuery) -> BoxFuture<'_, Result<Vec<ExemplarSeries>, StoreError>> {
        self.metered("exemplars", self.client.exemplars(q))
    }
    fn metadata(
        &self,
        tenant: String,
        metric: Option<String>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<(String, MetricMetadata)>, StoreError>> {
        self.metered("metadata", self.client.metadata(tenant, metric, limit))
    }
}

impl ShardWriter for Peer {
    fn write(&self, req: WriteRequest) -> BoxFuture<'_, Result<WriteOutcome, StoreError>> {
        self.metered("write", self.client.write(req))
    }
}
