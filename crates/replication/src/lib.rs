//! `cairn-replication`: the cluster's data path — a store made of
//! replicated shards, itself a store of the storage contract, so the engine,
//! the API and the gateway use a cluster exactly as they use one node.
//!
//! Owns: [`ReplicatedStore`] — writes split by shard (the placement's
//! [`Placement::shard_of`], the storage node's own function) and sent to
//! every writable replica of each shard at once, acknowledged when every
//! shard reached the write level, else refused as Unavailable naming the
//! shard, the level and the replicas that failed; reads sent to each node
//! once for the shards it holds readable, checked per shard at the read
//! level, and merged per series (replicas deduplicated by timestamp before
//! anything downstream sees them). Errors that are the request's own
//! (invalid input, not found, limit exceeded) are returned as they are, not
//! counted against a replica. [`Hints`]: the replica writes that failed,
//! kept and replayed to their replica when it answers again (hinted
//! handoff).
//!
//! Must never depend on: RocksDB, the storage crate, tonic or tokio — its
//! replicas are any stores of the contract (the local node, a
//! `cairn_rpc::RemoteNode`, an in-memory store in tests).

use cairn_cluster::{evaluate, LevelNotMet, NodeId, Outcome, Placement, ReadLevel, Tally};
use cairn_common::{
    ExemplarSeries, Labels, MetricMetadata, PreparedBatch, Sample, SeriesId, WriteOutcome,
};
use cairn_storage_api::{
    cut_to_limit, guarded, next_batch, stream_from_vec, BoxFuture, Cardinality, ErrorKind,
    SelectRequest, SeriesQuery, SeriesReader, SeriesSamples, SeriesStream, ShardSet, ShardWriter,
    StoreError, StoredSeries, Warnings, WriteRequest,
};
use futures_util::future::join_all;
use futures_util::stream::{FuturesUnordered, StreamExt};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

mod aggregate;
mod hints;
use hints::Hint;
pub use hints::{HintStats, Hints};

/// A replica's store: anything that reads and writes the contract.
pub trait NodeStore: SeriesReader + ShardWriter {}
impl<T: SeriesReader + ShardWriter + ?Sized> NodeStore for T {}

/// Series per batch of a merged select.
const MERGED_BATCH: usize = 1024;

/// A store over the nodes of a placement.
pub struct ReplicatedStore {
    placement: RwLock<Arc<Placement>>,
    nodes: HashMap<NodeId, Arc<dyn NodeStore>>,
    read_level: ReadLevel,
    spawner: Option<Spawner>,
    /// The node reads ask first (this one: in process).
    preferred: Option<NodeId>,
    /// Replica writes that failed, kept to replay (hinted handoff).
    hints: Option<Arc<Hints>>,
    /// What digest reads found (for `/metrics`).
    reads: ReadCounters,
    /// Computes partial aggregations: this node's part of one pushed
    /// down, and the parts aggregated here (`aggregate`).
    aggregator: Option<Arc<dyn cairn_storage_api::Aggregator>>,
}

/// Counters of the replicated reads.
#[derive(Debug, Default)]
struct ReadCounters {
    /// Shards read in full from a replica whose digests differed.
    digest_rereads: std::sync::atomic::AtomicU64,
    /// Shards whose data came from a replica that sent digests (the first
    /// replica had failed).
    data_fallbacks: std::sync::atomic::AtomicU64,
    /// Aggregations answered from the nodes' partials.
    aggregations_pushed: std::sync::atomic::AtomicU64,
    /// Shards of those aggregated on this node from their replicas'
    /// series instead (a replica failed or disagreed).
    aggregation_fallback_shards: std::sync::atomic::AtomicU64,
    /// Replica answers of those taken from equal shard sums (no per-series
    /// digests read).
    aggregation_shards_by_sums: std::sync::atomic::AtomicU64,
}

/// What the replicated reads found, since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadStats {
    /// Shards read in full from a replica whose digests differed from the
    /// data (a replica behind or ahead: read repair's trigger).
    pub digest_rereads: u64,
    /// Shards whose data came from a replica that had sent digests, the
    /// first replica in read order having failed.
    pub data_fallbacks: u64,
    /// Aggregations answered from partials computed on the nodes.
    pub aggregations_pushed: u64,
    /// Shards of pushed-down aggregations aggregated on the query node
    /// from their replicas' series (a replica failed or disagreed).
    pub aggregation_fallback_shards: u64,
    /// Replica answers to those that were equal shard sums (the replica
    /// read no series).
    pub aggregation_shards_by_sums: u64,
}

/// Runs a future to its end without the caller (e.g. `tokio::spawn`): the
/// replica writes still pending once a write's level is decided.
pub type Spawner = Arc<dyn Fn(BoxFuture<'static, ()>) + Send + Sync>;

impl std::fmt::Debug for ReplicatedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicatedStore")
            .field("nodes", &self.nodes.keys().collect::<Vec<_>>())
            .field("read_level", &self.read_level)
            .finish_non_exhaustive()
    }
}

impl ReplicatedStore {
    /// A store over `placement`, reaching each of its nodes through
    /// `nodes`; reads at `read_level`. Every node of the placement needs a
    /// store (an InvalidInput error names the first that has none).
    pub fn new(
        placement: Placement,
        nodes: HashMap<NodeId, Arc<dyn NodeStore>>,
        read_level: ReadLevel,
    ) -> Result<Self, StoreError> {
        check_nodes(&placement, &nodes)?;
        Ok(ReplicatedStore {
            placement: RwLock::new(Arc::new(placement)),
            nodes,
            read_level,
            spawner: None,
            preferred: None,
            hints: None,
            reads: ReadCounters::default(),
            aggregator: None,
        })
    }

    /// A replica write that fails (down, restarting, timed out — not a
    /// refusal of the request) is kept in `hints` and replayed to that
    /// replica by [`deliver_hints`](Self::deliver_hints).
    pub fn with_hints(mut self, hints: Arc<Hints>) -> Self {
        self.hints = Some(hints);
        self
    }

    /// What the replicated reads found since start.
    pub fn read_stats(&self) -> ReadStats {
        use std::sync::atomic::Ordering::Relaxed;
        ReadStats {
            digest_rereads: self.reads.digest_rereads.load(Relaxed),
            data_fallbacks: self.reads.data_fallbacks.load(Relaxed),
            aggregations_pushed: self.reads.aggregations_pushed.load(Relaxed),
            aggregation_fallback_shards: self.reads.aggregation_fallback_shards.load(Relaxed),
            aggregation_shards_by_sums: self.reads.aggregation_shards_by_sums.load(Relaxed),
        }
    }

    /// The hints this store keeps, per replica.
    pub fn hint_stats(&self) -> Vec<(NodeId, HintStats)> {
        self.hints.as_ref().map(|h| h.stats()).unwrap_or_default()
    }

    /// One delivery round: each replica holding hints gets them replayed,
    /// oldest first, until one fails (that replica is still away: the rest
    /// wait for the next round). A hint the replica refuses as a request
    /// error is dropped (counted). Returns the samples delivered; a round
    /// already running elsewhere makes this one return 0 at once.
    pub fn deliver_hints(&self) -> BoxFuture<'_, u64> {
        Box::pin(async move {
            let Some(hints) = &self.hints else { return 0 };
            let Some(_turn) = hints.begin_delivery() else {
                return 0;
            };
            let replicas: Vec<NodeId> = hints
                .nodes()
                .into_iter()
                .filter(|n| self.nodes.contains_key(n))
                .collect();
            let rounds = replicas.into_iter().map(|node| async move {
                let store = self.node(&node).clone();
                let mut sent = 0u64;
                while let Some(h) = hints.front(&node) {
                    let w = WriteRequest {
                        tenant: h.tenant.clone(),
                        namespace: h.namespace.clone(),
                        shard: h.shard,
                        batch: (*h.batch).clone(),
                        consistency: cairn_cluster::WriteLevel::One,
                        applied: None,
                        encoded: Default::default(),
                    };
                    match store.write(w).await {
                        Ok(_) => {
                            sent += h.batch.sample_count() as u64;
                            hints.done(&node, &h, true);
                        }
                        Err(e) if is_request_error(&e) => hints.done(&node, &h, false),
                        Err(_) => break,
                    }
                }
                sent
            });
            join_all(rounds).await.into_iter().sum()
        })
    }

    /// Writes return once their level is decided; the replica answers
    /// still pending run on in `spawner`. Without one, a write waits for
    /// every replica's answer (or its timeout).
    pub fn with_spawner(mut self, spawner: Spawner) -> Self {
        self.spawner = Some(spawner);
        self
    }

    /// Reads ask `node` first for the shards it holds (the local node).
    pub fn preferring(mut self, node: NodeId) -> Self {
        self.preferred = Some(node);
        self
    }

    /// The placement reads and writes follow now.
    pub fn placement(&self) -> Arc<Placement> {
        self.placement
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Follows a new placement (from the metadata store): requests already
    /// running finish on the one they started with.
    pub fn set_placement(&self, placement: Placement) -> Result<(), StoreError> {
        check_nodes(&placement, &self.nodes)?;
        *self.placement.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(placement);
        Ok(())
    }

    fn node(&self, id: &NodeId) -> &Arc<dyn NodeStore> {
        // Present: checked against every placement this store follows.
        &self.nodes[id]
    }

    /// The readable replicas of `shard` in the order reads ask them: the
    /// preferred node (this one, in process) first, the others rotated by
    /// shard so the peers share the reads.
    fn read_order(&self, p: &Placement, shard: u32) -> Vec<NodeId> {
        let mut r = self.spread_order(p, shard);
        if let Some(i) = self
            .preferred
            .as_ref()
            .and_then(|me| r.iter().position(|n| n == me))
        {
            let me = r.remove(i);
            r.insert(0, me);
        }
        r
    }

    /// The readable replicas of `shard` rotated by shard, whichever node
    /// this is: the order in which every node takes a part of the work
    /// (a pushed-down aggregation's partials).
    fn spread_order(&self, p: &Placement, shard: u32) -> Vec<NodeId> {
        let mut r: Vec<NodeId> = p.readable(shard).map(|r| r.node.clone()).collect();
        r.sort();
        if !r.is_empty() {
            let k = shard as usize % r.len();
            r.rotate_left(k);
        }
        r
    }

    /// Runs `call` on as few replicas as the read level wants answers
    /// from — `wanted_acks`: a majority for `unstrict_majority` and
    /// `majority`, which overlaps every majority write — each node once
    /// with the shards it is asked for; a replica that fails is replaced
    /// by the shard's next one, round by round, until every shard has its
    /// answers or none is left. Then every shard is checked at the level
    /// (an Unavailable error for the first below it; shards that met it
    /// with fewer than a majority are noted in `warnings`, once per read).
    async fn fan_out<T, F>(
        &self,
        wanted: &ShardSet,
        level: Option<ReadLevel>,
        warnings: &Warnings,
        order: fn(&Self, &Placement, u32) -> Vec<NodeId>,
        call: F,
    ) -> Result<Vec<T>, StoreError>
    where
        F: Fn(&NodeId, Arc<dyn NodeStore>, ShardSet) -> BoxFuture<'static, Result<T, StoreError>>,
    {
        struct Shard {
            order: Vec<NodeId>,
            next: usize,
            ok: usize,
            failed: Vec<NodeId>,
        }
        let p = self.placement();
        let rf = p.replication_factor();
        let level = level.unwrap_or(self.read_level);
        let want = level.wanted_acks(rf).max(1);
        let mut shards: BTreeMap<u32, Shard> = (0..p.num_shards())
            .filter(|s| wanted.contains(*s))
            .map(|s| {
                (
                    s,
                    Shard {
                        order: order(self, &p, s),
                        next: 0,
                        ok: 0,
                        failed: Vec::new(),
                    },
                )
            })
            .collect();
        let mut out = Vec::new();
        loop {
            let mut plan: BTreeMap<NodeId, Vec<u32>> = BTreeMap::new();
            for (&shard, st) in shards.iter_mut() {
                let need = want.saturating_sub(st.ok);
                let take = need.min(st.order.len() - st.next);
                for n in &st.order[st.next..st.next + take] {
                    plan.entry(n.clone()).or_default().push(shard);
                }
                st.next += take;
            }
            if plan.is_empty() {
                break;
            }
            // This node's own read runs on this thread when polled: the
            // peers' calls first, so they are on their way meanwhile.
            let mut plan: Vec<(NodeId, Vec<u32>)> = plan.into_iter().collect();
            plan.sort_by_key(|(n, _)| Some(n) == self.preferred.as_ref());
            let calls = plan.into_iter().map(|(node, asked)| {
                let fut = call(
                    &node,
                    self.node(&node).clone(),
                    ShardSet::only(asked.clone()),
                );
                async move { (node, asked, fut.await) }
            });
            for (node, asked, r) in join_all(calls).await {
                match r {
                    Ok(v) => {
                        out.push(v);
                        for s in asked {
                            if let Some(st) = shards.get_mut(&s) {
                                st.ok += 1;
                            }
                        }
                    }
                    Err(e) if is_request_error(&e) => return Err(e),
                    Err(_) => {
                        for s in asked {
                            if let Some(st) = shards.get_mut(&s) {
                                st.failed.push(node.clone());
                            }
                        }
                    }
                }
            }
        }
        let mut short: Vec<u32> = Vec::new();
        let mut down: Vec<NodeId> = Vec::new();
        for (shard, st) in &shards {
            match evaluate(*shard, level, rf, st.ok, &st.failed) {
                Outcome::Failure(e) => return Err(level_error(&e)),
                Outcome::Warning(_) => {
                    short.push(*shard);
                    for n in &st.failed {
                        if !down.contains(n) {
                            down.push(n.clone());
                        }
                    }
                }
                Outcome::Success => {}
            }
        }
        if !short.is_empty() {
            down.sort();
            warnings.push(format!(
                "read at {}: {} of the shards read were answered by fewer than a majority of their replicas (first: shard {}; unavailable: {}); samples written since may be missing",
                level,
                short.len(),
                short[0],
                down.iter().map(|n| n.as_str()).collect::<Vec<_>>().join(", ")
            ));
        }
        Ok(out)
    }
}

impl ReplicatedStore {
    /// [`fan_out`](Self::fan_out) of a label or exemplar read: each node
    /// gets `q` for its shards, without the limit (applied after the merge).
    async fn fan_out_query<T, F>(&self, q: &SeriesQuery, call: F) -> Result<Vec<T>, StoreError>
    where
        F: Fn(Arc<dyn NodeStore>, SeriesQuery) -> BoxFuture<'static, Result<T, StoreError>>,
    {
        let order = Self::read_order;
        self.fan_out(
            &q.shards,
            q.read_level,
            &q.warnings,
            order,
            |_, node, shards| {
                let mut q = q.clone();
                q.shards = shards;
                q.limit = 0;
                call(node, q)
            },
        )
        .await
    }
}

/// The nodes' answers as one sorted list without repeats.
fn sorted_union<T: Ord>(answers: Vec<Vec<T>>) -> Vec<T> {
    let mut all: Vec<T> = answers.into_iter().flatten().collect();
    all.sort();
    all.dedup();
    all
}

fn check_nodes(
    placement: &Placement,
    nodes: &HashMap<NodeId, Arc<dyn NodeStore>>,
) -> Result<(), StoreError> {
    match placement
        .nodes()
        .iter()
        .find(|n| !nodes.contains_key(&n.id))
    {
        Some(n) => Err(StoreError::invalid(format!(
            "placement node {} has no store to reach it",
            n.id
        ))),
        None => Ok(()),
    }
}

/// Errors that say the request is wrong, whichever replica answers it.
fn is_request_error(e: &StoreError) -> bool {
    matches!(
        e.kind(),
        ErrorKind::InvalidInput | ErrorKind::NotFound | ErrorKind::LimitExceeded
    )
}

fn level_error(e: &LevelNotMet) -> StoreError {
    StoreError::unavailable(e.to_string())
}

/// What one node answered to a replicated select: the series of the
/// shards it was the first replica of, the digests of the others'.
struct Answer {
    node: NodeId,
    data_shards: Vec<u32>,
    digest_shards: Vec<u32>,
    data: Vec<StoredSeries>,
    digests: Vec<StoredSeries>,
}

/// Every batch of a select from `node`.
async fn read_all(
    node: &dyn SeriesReader,
    r: SelectRequest,
) -> Result<Vec<StoredSeries>, StoreError> {
    let mut stream = node.select(r).await?;
    let mut got = Vec::new();
    while let Some(batch) = next_batch(&mut stream).await {
        got.extend(batch?);
    }
    Ok(got)
}

/// The digest of a series' samples in `[start, end]`, however they came.
fn digest_of(
    s: &SeriesSamples,
    start: i64,
    end: i64,
) -> Result<cairn_storage_api::SampleDigest, StoreError> {
    Ok(match s {
        SeriesSamples::Digest(d) => *d,
        SeriesSamples::Decoded(v)
            if v.first().is_none_or(|x| x.t >= start) && v.last().is_none_or(|x| x.t <= end) =>
        {
            cairn_storage_api::SampleDigest::of(v)
        }
        other => cairn_storage_api::SampleDigest::of(&other.clone().decode(start, end)?),
    })
}

/// The nodes' answers (each sorted by labels, as the contract has a
/// select answer; one that is not is sorted first) merged in one pass:
/// series in label order, the copies of a series from several replicas
/// made one by [`merge_replicas`].
fn merge_sorted(
    answers: Vec<Vec<StoredSeries>>,
    start: i64,
    end: i64,
) -> Result<Vec<StoredSeries>, StoreError> {
    let mut lists: Vec<std::iter::Peekable<std::vec::IntoIter<StoredSeries>>> = answers
        .into_iter()
        .map(|mut a| {
            if !a.windows(2).all(|w| w[0].labels <= w[1].labels) {
                a.sort_by(|x, y| x.labels.cmp(&y.labels));
            }
            a.into_iter().peekable()
        })
        .collect();
    let total: usize = lists.iter().map(|l| l.len()).max().unwrap_or(0);
    let mut out: Vec<StoredSeries> = Vec::with_capacity(total);
    loop {
        // The smallest label set at the head of any list.
        let mut least: Option<Arc<Labels>> = None;
        for l in lists.iter_mut() {
            if let Some(s) = l.peek() {
                if least.as_ref().is_none_or(|m| s.labels < *m) {
                    least = Some(s.labels.clone());
                }
            }
        }
        let Some(labels) = least else { break };
        let mut parts = Vec::with_capacity(lists.len());
        for l in lists.iter_mut() {
            while let Some(s) = l.next_if(|s| s.labels == labels) {
                parts.push(s.samples);
            }
        }
        out.push(StoredSeries {
            labels,
            samples: merge_replicas(parts, start, end)?,
        });
    }
    Ok(out)
}

/// One series' samples from the replicas that answered: one copy as it
/// came when there is one, or when every copy is the same chunks (each
/// node re-encodes a series' samples in the range as one chunk, so equal
/// samples give equal bytes); else decoded, trimmed to `[start, end]` and
/// merged (`merge_samples`), a copy equal to the others kept as it is.
fn merge_replicas(
    mut parts: Vec<SeriesSamples>,
    start: i64,
    end: i64,
) -> Result<SeriesSamples, StoreError> {
    if parts.len() == 1 || parts.windows(2).all(|w| w[0] == w[1]) {
        return Ok(parts.swap_remove(0));
    }
    let decoded: Vec<Vec<Sample>> = parts
        .into_iter()
        .map(|p| p.decode(start, end))
        .collect::<Result<_, _>>()?;
    Ok(SeriesSamples::Decoded(merge_samples(decoded)))
}

/// Samples of one series from several replicas: sorted by time, one per
/// timestamp (replicas hold the same samples; the first copy is kept).
fn merge_samples(mut parts: Vec<Vec<Sample>>) -> Vec<Sample> {
    if parts.windows(2).all(|w| w[0] == w[1]) {
        return parts.swap_remove(0);
    }
    if parts.len() == 1 {
        return parts.pop().unwrap_or_default();
    }
    let mut all: Vec<Sample> = parts.into_iter().flatten().collect();
    all.sort_by_key(|s| s.t);
    all.dedup_by_key(|s| s.t);
    all
}

/// A write's parts by replica set: each shard is looked up once (its
/// replicas, then the group holding that replica set).
#[derive(Default)]
struct Groups {
    by_shard: HashMap<u32, usize>,
    list: Vec<Group>,
}

/// The shards of one replica set in a write, and their part of the batch.
struct Group {
    replicas: Vec<NodeId>,
    shards: Vec<u32>,
    batch: PreparedBatch,
}

impl Groups {
    /// The group of `shard`, made on first sight.
    fn of(&mut self, p: &Placement, shard: u32) -> &mut Group {
        let i = match self.by_shard.get(&shard) {
            Some(&i) => i,
            None => {
                let replicas: Vec<NodeId> = p.writable(shard).map(|r| r.node.clone()).collect();
                let i = match self.list.iter().position(|g| g.replicas == replicas) {
                    Some(i) => i,
                    None => {
                        self.list.push(Group {
                            replicas,
                            shards: Vec::new(),
                            batch: PreparedBatch::default(),
                        });
                        self.list.len() - 1
                    }
                };
                self.list[i].shards.push(shard);
                self.by_shard.insert(shard, i);
                i
            }
        };
        &mut self.list[i]
    }
}

/// The shard of a metadata entry: by tenant and family, so every write of
/// one family's metadata lands on the same replicas.
fn metadata_shard(p: &Placement, tenant: &str, family: &str) -> u32 {
    p.shard_of(SeriesId::of_pairs(
        tenant,
        std::iter::once((cairn_common::METRIC_NAME, family)),
    ))
}

impl SeriesReader for ReplicatedStore {
    /// The replicas the read level wants answers from asked (a majority,
    /// this node first; see `fan_out`): each shard's first replica in read
    /// order for its series (encoded chunks from another node, decoded from
    /// this one), the others for **digests** only (per series, the count and
    /// a hash of its samples in the range — Cassandra's digest reads), so a
    /// majority read does not move and decode every series twice. A shard
    /// whose first replica failed has its data read from one that sent a
    /// digest; a replica whose digests differ from the data (a series it
    /// holds with other samples, or one the data lacks) has those shards
    /// read in full and merged (replicas deduplicated by timestamp). Then
    /// handed out in label order, in batches.
    fn select(&self, req: SelectRequest) -> BoxFuture<'_, Result<SeriesStream<'_>, StoreError>> {
        Box::pin(async move {
            req.check()?;
            let (start, end) = (req.start, req.end);
            let p = self.placement();
            // This node's sums of the shards it reads first, taken before
            // its data: a replica whose sum is the same holds the same
            // samples and leaves the shard out of its digests.
            let mut mine: BTreeMap<u32, Option<u64>> = BTreeMap::new();
            if let Some(me) = &self.preferred {
                let firsts: Vec<u32> = (0..p.num_shards())
                    .filter(|&s| {
                        req.shards.contains(s) && self.read_order(&p, s).first() == Some(me)
                    })
                    .collect();
                if !firsts.is_empty() {
                    let r = req.clone().with_shards(ShardSet::only(firsts));
                    mine = self
                        .node(me)
                        .shard_sums(r)
                        .await
                        .unwrap_or_default()
                        .into_iter()
                        .collect();
                }
            }
            let answers = self
                .fan_out(
                    &req.shards,
                    req.read_level,
                    &req.warnings,
                    Self::read_order,
                    |id, node, shards| {
                        let asked = match &shards {
                            ShardSet::Only(v) => v.clone(),
                            ShardSet::All => (0..p.num_shards()).collect(),
                        };
                        let (data, digest): (Vec<u32>, Vec<u32>) = asked
                            .into_iter()
                            .partition(|&s| self.read_order(&p, s).first() == Some(id));
                        let chunks = self.preferred.as_ref() != Some(id);
                        let data_req = (!data.is_empty()).then(|| {
                            req.clone()
                                .with_shards(ShardSet::only(data.clone()))
                                .with_chunks(chunks)
                        });
                        let digest_req = (!digest.is_empty()).then(|| {
                            let unless = digest
                                .iter()
                                .filter_map(|s| mine.get(s).map(|v| (*s, *v)))
                                .collect();
                            req.clone()
                                .with_shards(ShardSet::only(digest.clone()))
                                .with_digest(true)
                                .with_digest_unless(unless)
                                .with_any_order(true)
                        });
                        let id = id.clone();
                        Box::pin(async move {
                            let mut a = Answer {
                                node: id,
                                data_shards: data,
                                digest_shards: digest,
                                data: Vec::new(),
                                digests: Vec::new(),
                            };
                            if let Some(r) = data_req {
                                a.data = read_all(&*node, r).await?;
                            }
                            if let Some(r) = digest_req {
                                a.digests = read_all(&*node, r).await?;
                            }
                            Ok(a)
                        })
                    },
                )
                .await?;
            let mut data: Vec<Vec<StoredSeries>> = Vec::new();
            let mut with_data: std::collections::BTreeSet<u32> = Default::default();
            let mut digests: Vec<(NodeId, Vec<u32>, Vec<StoredSeries>)> = Vec::new();
            for mut a in answers {
                with_data.extend(a.data_shards.iter().copied());
                data.push(std::mem::take(&mut a.data));
                // A store that answers a digest select with samples: data.
                let (dg, samples): (Vec<StoredSeries>, Vec<StoredSeries>) = a
                    .digests
                    .into_iter()
                    .partition(|s| matches!(s.samples, SeriesSamples::Digest(_)));
                if !samples.is_empty() {
                    with_data.extend(a.digest_shards.iter().copied());
                    data.push(samples);
                }
                if !a.digest_shards.is_empty() {
                    digests.push((a.node, a.digest_shards, dg));
                }
            }
            // Shards whose first replica failed: their data from a replica
            // that sent digests (compared below like any other), the next
            // such replica when one fails.
            let mut sources: BTreeMap<u32, Vec<NodeId>> = BTreeMap::new();
            for (node, shards, _) in &digests {
                for &s in shards {
                    if !with_data.contains(&s) {
                        sources.entry(s).or_default().push(node.clone());
                    }
                }
            }
            while !sources.is_empty() {
                let mut plan: BTreeMap<NodeId, Vec<u32>> = BTreeMap::new();
                for (&s, nodes) in &sources {
                    match nodes.first() {
                        Some(n) => plan.entry(n.clone()).or_default().push(s),
                        None => {
                            return Err(StoreError::unavailable(format!(
                                "shard {s}: no replica answered with its data (its first replica failed, and so did every one that sent digests)"
                            )))
                        }
                    }
                }
                for (node, shards) in plan {
                    let r = req
                        .clone()
                        .with_shards(ShardSet::only(shards.clone()))
                        .with_chunks(true);
                    match read_all(&**self.node(&node), r).await {
                        Ok(v) => {
                            data.push(v);
                            self.reads.data_fallbacks.fetch_add(
                                shards.len() as u64,
                                std::sync::atomic::Ordering::Relaxed,
                            );
                            for s in shards {
                                sources.remove(&s);
                                with_data.insert(s);
                            }
                        }
                        Err(e) if is_request_error(&e) => return Err(e),
                        Err(_) => {
                            for s in shards {
                                if let Some(n) = sources.get_mut(&s) {
                                    n.retain(|x| *x != node);
                                }
                            }
                        }
                    }
                }
            }
            let mut merged = merge_sorted(data, start, end)?;
            // Digests against the data: the shards where a replica differs
            // are read from it in full and merged in. Digests are looked up
            // by series id (the storage node names them so; one named by its
            // labels is hashed here), the data's ids hashed once a series.
            let mut reread: BTreeMap<NodeId, std::collections::BTreeSet<u32>> = BTreeMap::new();
            let mut own: Vec<Option<cairn_storage_api::SampleDigest>> = vec![None; merged.len()];
            let mut ids: Vec<Option<SeriesId>> = vec![None; merged.len()];
            for (node, shards, dg) in &digests {
                let mut theirs: cairn_common::IdMap<cairn_storage_api::SampleDigest> = dg
                    .iter()
                    .filter_map(|g| match g.samples {
                        SeriesSamples::Digest(d) => Some((
                            d.series
                                .unwrap_or_else(|| SeriesId::of(&req.tenant, &g.labels)),
                            d,
                        )),
                        _ => None,
                    })
                    .collect();
                for i in 0..merged.len() {
                    let id =
                        *ids[i].get_or_insert_with(|| SeriesId::of(&req.tenant, &merged[i].labels));
                    let shard = p.shard_of(id);
                    if shards.binary_search(&shard).is_err() {
                        continue;
                    }
                    let Some(d) = theirs.remove(&id) else {
                        continue;
                    };
                    let mine = match own[i] {
                        Some(m) => m,
                        None => *own[i].insert(digest_of(&merged[i].samples, start, end)?),
                    };
                    if !mine.same_samples(&d) {
                        reread.entry(node.clone()).or_default().insert(shard);
                    }
                }
                // Series the data lacks (of the shards asked: a store may
                // answer for more).
                for id in theirs.keys() {
                    let shard = p.shard_of(*id);
                    if shards.binary_search(&shard).is_ok() {
                        reread.entry(node.clone()).or_default().insert(shard);
                    }
                }
            }
            if !reread.is_empty() {
                let mut extra = vec![std::mem::take(&mut merged)];
                for (node, shards) in reread {
                    self.reads
                        .digest_rereads
                        .fetch_add(shards.len() as u64, std::sync::atomic::Ordering::Relaxed);
                    let r = req
                        .clone()
                        .with_shards(ShardSet::only(shards.into_iter().collect()))
                        .with_chunks(self.preferred.as_ref() != Some(&node));
                    match read_all(&**self.node(&node), r).await {
                        Ok(v) => extra.push(v),
                        Err(e) if is_request_error(&e) => return Err(e),
                        Err(e) => req.warnings.push(format!(
                            "replica {node} holds samples the others do not and did not answer when asked for them ({e}); they may be missing"
                        )),
                    }
                }
                merged = merge_sorted(extra, start, end)?;
            }
            Ok(guarded(stream_from_vec(merged, MERGED_BATCH), &req))
        })
    }

    /// Pushed down (see `aggregate.rs`) when this store has an aggregator.
    fn aggregate(
        &self,
        req: cairn_storage_api::AggregateRequest,
    ) -> BoxFuture<'_, Result<Option<cairn_storage_api::PartialAggregate>, StoreError>> {
        Box::pin(self.aggregate_replicated(req))
    }

    fn series(&self, q: SeriesQuery) -> BoxFuture<'_, Result<Vec<Labels>, StoreError>> {
        Box::pin(async move {
            q.validate()?;
            let answers = self
                .fan_out_query(&q, |node, q| Box::pin(async move { node.series(q).await }))
                .await?;
            Ok(q.truncate(sorted_union(answers)))
        })
    }

    fn label_names(&self, q: SeriesQuery) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
        Box::pin(async move {
            q.validate()?;
            let answers = self
                .fan_out_query(&q, |node, q| {
                    Box::pin(async move { node.label_names(q).await })
                })
                .await?;
            Ok(q.truncate(sorted_union(answers)))
        })
    }

    fn label_values(
        &self,
        q: SeriesQuery,
        name: String,
    ) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
        Box::pin(async move {
            q.validate()?;
            let answers = self
                .fan_out_query(&q, |node, q| {
                    let name = name.clone();
                    Box::pin(async move { node.label_values(q, name).await })
                })
                .await?;
            Ok(q.truncate(sorted_union(answers)))
        })
    }

    fn exemplars(&self, q: SeriesQuery) -> BoxFuture<'_, Result<Vec<ExemplarSeries>, StoreError>> {
        Box::pin(async move {
            q.validate()?;
            let answers = self
                .fan_out_query(&q, |node, q| {
                    Box::pin(async move { node.exemplars(q).await })
                })
                .await?;
            let mut by_labels: BTreeMap<Labels, Vec<cairn_common::Exemplar>> = BTreeMap::new();
            for s in answers.into_iter().flatten() {
                let e = by_labels.entry(s.labels).or_default();
                for x in s.exemplars {
                    if !e.contains(&x) {
                        e.push(x);
                    }
                }
            }
            let all = by_labels
                .into_iter()
                .map(|(labels, mut exemplars)| {
                    exemplars.sort_by_key(|e| e.t);
                    ExemplarSeries { labels, exemplars }
                })
                .collect();
            Ok(q.truncate(all))
        })
    }

    fn metadata(
        &self,
        tenant: String,
        metric: Option<String>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<(String, MetricMetadata)>, StoreError>> {
        Box::pin(async move {
            let answers = self
                .fan_out(
                    &ShardSet::All,
                    None,
                    &Warnings::default(),
                    Self::read_order,
                    |_, node, _| {
                        let (tenant, metric) = (tenant.clone(), metric.clone());
                        Box::pin(async move { node.metadata(tenant, metric, 0).await })
                    },
                )
                .await?;
            let mut all: Vec<(String, MetricMetadata)> = Vec::new();
            for (family, md) in answers.into_iter().flatten() {
                if !all.iter().any(|(f, m)| *f == family && *m == md) {
                    all.push((family, md));
                }
            }
            all.sort_by(|a, b| a.0.cmp(&b.0));
            Ok(cut_to_limit(all, limit))
        })
    }

    /// Counted over the union of the replicas' label sets ([`series`]:
    /// every node asked for its readable shards, answers merged by labels),
    /// so a series held by RF replicas counts once. Not summed from the
    /// nodes' own counts: a node may answer for more shards than asked
    /// (the in-memory store ignores shard sets), and a sum would count such
    /// series once per replica. The price: every matching label set crosses
    /// the network.
    ///
    /// [`series`]: SeriesReader::series
    fn cardinality(&self, q: SeriesQuery) -> BoxFuture<'_, Result<Cardinality, StoreError>> {
        Box::pin(async move {
            let sets = self.series(q.with_limit(0)).await?;
            Ok(Cardinality::of_series(&sets))
        })
    }
}

impl ShardWriter for ReplicatedStore {
    /// The batch split by shard, each shard's part sent to all its writable
    /// replicas at once; acknowledged when every shard has the write level's
    /// acknowledgements (each replica's answer, or its own timeout, is
    /// awaited). A request error (e.g. a refused batch) is returned as is.
    fn write(&self, req: WriteRequest) -> BoxFuture<'_, Result<WriteOutcome, StoreError>> {
        Box::pin(async move {
            let p = self.placement();
            let rf = p.replication_factor();
            let level = req.consistency;
            // Shards with the same writable replicas travel together: one
            // call per replica per replica set, not per shard (with RF 3 on
            // 3 nodes, one call per node). Its tally is that of each of its
            // shards, since they have the same replicas; errors name the
            // group's first shard.
            let mut groups = Groups::default();
            for s in req.batch.series {
                let g = groups.of(&p, p.shard_of(s.id));
                g.batch.series.push(s);
            }
            for (family, md) in req.batch.metadata {
                let g = groups.of(&p, metadata_shard(&p, &req.tenant, &family));
                g.batch.metadata.push((family, md));
            }
            let mut calls = Vec::new();
            let mut tallies: BTreeMap<u32, Tally> = BTreeMap::new();
            // Tenant and namespace, shared by every call's would-be hint.
            let names = Arc::new((req.tenant.clone(), req.namespace.clone()));
            for Group {
                replicas,
                mut shards,
                batch: part,
            } in groups.list
            {
                shards.sort_unstable();
                let first = shards[0];
                tallies.insert(first, Tally::new(first, level, rf, replicas.len()));
                // A single shard is named, so the node checks its series.
                let shard = (shards.len() == 1).then_some(first);
                let part = Arc::new(part);
                // Encoded once for all the group's remote replicas.
                let encoded = cairn_storage_api::EncodedOnce::default();
                for node in replicas {
                    let w = WriteRequest {
                        tenant: req.tenant.clone(),
                        namespace: req.namespace.clone(),
                        shard,
                        batch: (*part).clone(),
                        consistency: level,
                        // The turn is given back when the write returns.
                        applied: None,
                        encoded: encoded.clone(),
                    };
                    let store = self.node(&node).clone();
                    let hint = self.hints.clone().map(|h| (h, names.clone(), part.clone()));
                    let call: BoxFuture<'static, _> = Box::pin(async move {
                        let r = store.write(w).await;
                        // Missed by this replica (not refused): kept to
                        // replay when it is back, whatever the write's
                        // outcome (the level may still allow it).
                        if let (Err(e), Some((hints, names, part))) = (&r, hint) {
                            if !is_request_error(e) {
                                hints.push(&node, Hint::new(&names.0, &names.1, shard, part));
                            }
                        }
                        (first, node, r)
                    });
                    calls.push(call);
                }
            }
            let mut outcomes: BTreeMap<u32, WriteOutcome> = BTreeMap::new();
            let mut refused: Option<StoreError> = None;
            let mut pending: FuturesUnordered<_> = calls.into_iter().collect();
            // Decided as early as the level allows: the answers still
            // pending then go on without the caller (the spawner's task),
            // so a slow replica delays no write the level allows.
            while let Some((shard, node, r)) = pending.next().await {
                let t = tallies.get_mut(&shard).expect("a tally per shard");
                match r {
                    Ok(o) => {
                        t.success();
                        outcomes.entry(shard).or_insert(o);
                    }
                    Err(e) if is_request_error(&e) => {
                        refused.get_or_insert(e);
                        break;
                    }
                    Err(_) => t.failure(node),
                }
                let decided: Vec<_> = tallies.values().map(Tally::decided).collect();
                if decided
                    .iter()
                    .any(|d| matches!(d, Some(Outcome::Failure(_))))
                    || decided.iter().all(Option::is_some)
                {
                    break;
                }
            }
            if !pending.is_empty() {
                let rest = async move { while pending.next().await.is_some() {} };
                match &self.spawner {
                    Some(spawn) => spawn(Box::pin(rest)),
                    None => rest.await,
                }
            }
            if let Some(e) = refused {
                return Err(e);
            }
            // A shard decided as failed names its failed replicas; shards
            // left undecided (the loop stopped at that failure) come after.
            let (decided, open): (Vec<_>, Vec<_>) =
                tallies.into_values().partition(|t| t.decided().is_some());
            for outcome in decided
                .iter()
                .filter_map(Tally::decided)
                .chain(open.into_iter().map(Tally::finish))
            {
                if let Outcome::Failure(e) = outcome {
                    return Err(level_error(&e));
                }
            }
            let mut out = WriteOutcome::default();
            for o in outcomes.into_values() {
                out.accepted_samples += o.accepted_samples;
                out.accepted_exemplars += o.accepted_exemplars;
                out.rejections.extend(o.rejections);
            }
            Ok(out)
        })
    }
}

#[cfg(test)]
mod tests;
