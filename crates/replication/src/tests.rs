//! The replicated store against the storage contract's conformance suite
//! (in memory, and through real gRPC servers on loopback), and with
//! replicas down at each consistency level.

use crate::{NodeStore, ReplicatedStore};
use cairn_cluster::{Node, NodeId, Placement, ReadLevel, WriteLevel};
use cairn_common::{
    ExemplarSeries, Labels, MatchOp, Matcher, MemStore, MetricMetadata, PreparedBatch, Sample,
    SeriesWrite, WriteOutcome,
};
use cairn_storage_api::{
    block_on, select_all, BoxFuture, ErrorKind, SelectRequest, SeriesQuery, SeriesReader,
    SeriesStream, ShardWriter, StoreError, WriteRequest,
};
use std::collections::HashMap;
use std::sync::Arc;

/// The label, exemplar and metadata reads of a wrapper, passed through to
/// the store at `$($inner).+` (the wrappers differ in `select` or writes).
macro_rules! pass_reads {
    ($($inner:tt).+) => {
        fn series(&self, q: SeriesQuery) -> BoxFuture<'_, Result<Vec<Labels>, StoreError>> {
            self.$($inner).+.series(q)
        }
        fn label_names(&self, q: SeriesQuery) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
            self.$($inner).+.label_names(q)
        }
        fn label_values(
            &self,
            q: SeriesQuery,
            n: String,
        ) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
            self.$($inner).+.label_values(q, n)
        }
        fn exemplars(
            &self,
            q: SeriesQuery,
        ) -> BoxFuture<'_, Result<Vec<ExemplarSeries>, StoreError>> {
            self.$($inner).+.exemplars(q)
        }
        fn metadata(
            &self,
            t: String,
            m: Option<String>,
            l: usize,
        ) -> BoxFuture<'_, Result<Vec<(String, MetricMetadata)>, StoreError>> {
            self.$($inner).+.metadata(t, m, l)
        }
    };
}

/// A node that is down: every call fails as unreachable.
#[derive(Debug)]
struct Down;

fn down<T>() -> BoxFuture<'static, Result<T, StoreError>> {
    Box::pin(async { Err(StoreError::unavailable("connection refused")) })
}

impl SeriesReader for Down {
    fn select(&self, _: SelectRequest) -> BoxFuture<'_, Result<SeriesStream<'_>, StoreError>> {
        down()
    }
    fn series(&self, _: SeriesQuery) -> BoxFuture<'_, Result<Vec<Labels>, StoreError>> {
        down()
    }
    fn label_names(&self, _: SeriesQuery) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
        down()
    }
    fn label_values(
        &self,
        _: SeriesQuery,
        _: String,
    ) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
        down()
    }
    fn exemplars(&self, _: SeriesQuery) -> BoxFuture<'_, Result<Vec<ExemplarSeries>, StoreError>> {
        down()
    }
    fn metadata(
        &self,
        _: String,
        _: Option<String>,
        _: usize,
    ) -> BoxFuture<'_, Result<Vec<(String, MetricMetadata)>, StoreError>> {
        down()
    }
}

impl ShardWriter for Down {
    fn write(&self, _: WriteRequest) -> BoxFuture<'_, Result<WriteOutcome, StoreError>> {
        down()
    }
}

fn placement(n: usize, rf: usize) -> Placement {
    let nodes = (1..=n)
        .map(|i| {
            Node::new(
                format!("node-{i}"),
                format!("127.0.0.1:{}", 9200 + i),
                format!("127.0.0.1:{}", 9300 + i),
            )
        })
        .collect();
    Placement::initial(nodes, 8, rf).unwrap()
}

/// Three nodes, RF 3; the named ones down.
fn cluster(down_nodes: &[&str], read: ReadLevel) -> (ReplicatedStore, Vec<Arc<MemStore>>) {
    let p = placement(3, 3);
    let mut nodes: HashMap<NodeId, Arc<dyn NodeStore>> = HashMap::new();
    let mut mems = Vec::new();
    for n in p.nodes() {
        if down_nodes.contains(&n.id.as_str()) {
            nodes.insert(n.id.clone(), Arc::new(Down));
        } else {
            let m = Arc::new(MemStore::new());
            mems.push(m.clone());
            nodes.insert(n.id.clone(), m);
        }
    }
    (ReplicatedStore::new(p, nodes, read).unwrap(), mems)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn batch(tenant: &str, n: usize, t: i64) -> PreparedBatch {
    let series = (0..n)
        .map(|i| SeriesWrite {
            labels: Labels::from_pairs(&[("__name__", "up"), ("i", &i.to_string())]),
            samples: vec![Sample::new(t, i as f64)],
            exemplars: vec![],
        })
        .collect();
    PreparedBatch::from_series(tenant, series, vec![])
}

fn up() -> Vec<Matcher> {
    vec![Matcher::new(MatchOp::Equal, "__name__", "up").unwrap()]
}

#[test]
fn three_replicas_pass_the_conformance_suite() {
    let (store, mems) = cluster(&[], ReadLevel::UnstrictMajority);
    cairn_storage_api::conformance::run(&store);
    // Every replica holds every series (RF 3 of 3 nodes).
    let t = now_ms();
    block_on(store.write(WriteRequest::new("t", batch("t", 50, t)))).unwrap();
    for m in mems {
        let got = block_on(select_all(&*m, SelectRequest::new("t", up(), t, t))).unwrap();
        assert_eq!(got.len(), 50);
    }
}

/// RF 3: every replica holds every series, and each still counts once —
/// also with a replica down.
#[test]
fn cardinality_counts_each_series_once_whatever_the_replicas() {
    let t = now_ms();
    for down_nodes in [&[][..], &["node-1"][..]] {
        let (store, mems) = cluster(down_nodes, ReadLevel::UnstrictMajority);
        block_on(store.write(WriteRequest::new("t", batch("t", 40, t)))).unwrap();
        let c = block_on(store.cardinality(SeriesQuery::new("t", vec![], t, t))).unwrap();
        assert_eq!(c.series, 40, "down: {down_nodes:?}");
        assert_eq!(c.pairs["__name__"]["up"], 40);
        assert_eq!(c.pairs["i"].len(), 40);
        assert!(c.pairs["i"].values().all(|&n| n == 1), "{:?}", c.pairs["i"]);
        // Each replica alone holds all 40: a sum over replicas would be 3×.
        let one = block_on(mems[0].cardinality(SeriesQuery::new("t", vec![], t, t))).unwrap();
        assert_eq!(one.series, 40);
    }
}

#[test]
fn one_node_down_changes_nothing_at_the_default_levels() {
    let (store, _) = cluster(&["node-2"], ReadLevel::UnstrictMajority);
    cairn_storage_api::conformance::run(&store);
}

#[test]
fn two_nodes_down_fail_majority_and_pass_one() {
    let (store, _) = cluster(&["node-2", "node-3"], ReadLevel::UnstrictMajority);
    let t = now_ms();
    let e = block_on(store.write(WriteRequest::new("t", batch("t", 20, t)))).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(e.is_retryable());
    let msg = e.message();
    assert!(msg.contains("shard ") && msg.contains("majority"), "{msg}");
    assert!(
        msg.contains("node-2") && msg.contains("node-3"),
        "names the failed replicas: {msg}"
    );
    // At `one` the same write succeeds, and reads at unstrict_majority see it.
    let w = WriteRequest::new("t", batch("t", 20, t)).with_consistency(WriteLevel::One);
    assert_eq!(block_on(store.write(w)).unwrap().accepted_samples, 20);
    let got = block_on(select_all(&store, SelectRequest::new("t", up(), t, t))).unwrap();
    assert_eq!(got.len(), 20);
    // At `majority`, reads fail with a clear error naming the shard and level.
    let (strict, _) = cluster(&["node-2", "node-3"], ReadLevel::Majority);
    let e = block_on(select_all(&strict, SelectRequest::new("t", up(), t, t))).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(e.message().contains("majority"), "{e}");
    let e = block_on(strict.series(SeriesQuery::new("t", up(), t, t))).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
}

#[test]
fn all_fails_with_one_node_down() {
    let (store, _) = cluster(&["node-3"], ReadLevel::UnstrictMajority);
    let t = now_ms();
    let w = WriteRequest::new("t", batch("t", 20, t)).with_consistency(WriteLevel::All);
    let e = block_on(store.write(w)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(
        e.message().contains("all") && e.message().contains("node-3"),
        "{e}"
    );
}

#[test]
fn replicas_are_deduplicated_and_writes_split_by_shard() {
    // RF 2 over 3 nodes: each series on exactly two nodes, every node some.
    let p = placement(3, 2);
    let mems: Vec<Arc<MemStore>> = (0..3).map(|_| Arc::new(MemStore::new())).collect();
    let nodes: HashMap<NodeId, Arc<dyn NodeStore>> = p
        .nodes()
        .iter()
        .zip(&mems)
        .map(|(n, m)| (n.id.clone(), m.clone() as Arc<dyn NodeStore>))
        .collect();
    let store = ReplicatedStore::new(p, nodes, ReadLevel::UnstrictMajority).unwrap();
    let t = now_ms();
    block_on(store.write(WriteRequest::new("t", batch("t", 300, t)))).unwrap();
    let per_node: Vec<usize> = mems
        .iter()
        .map(|m| {
            block_on(select_all(&**m, SelectRequest::new("t", up(), t, t)))
                .unwrap()
                .len()
        })
        .collect();
    assert_eq!(
        per_node.iter().sum::<usize>(),
        600,
        "two copies of each: {per_node:?}"
    );
    assert!(
        per_node.iter().all(|&n| n > 0 && n < 300),
        "split by shard: {per_node:?}"
    );
    let got = block_on(select_all(&store, SelectRequest::new("t", up(), t, t))).unwrap();
    assert_eq!(got.len(), 300);
    assert!(
        got.iter().all(|s| s.samples.len() == 1),
        "one sample per series after dedup"
    );
    assert!(
        got.windows(2).all(|w| w[0].labels < w[1].labels),
        "label order"
    );
}

#[test]
fn a_placement_node_without_a_store_is_refused() {
    let p = placement(3, 3);
    let e = ReplicatedStore::new(p, HashMap::new(), ReadLevel::One).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(e.message().contains("node-1"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_remote_replicas_pass_the_conformance_suite_over_grpc() {
    let p = placement(3, 3);
    let mut nodes: HashMap<NodeId, Arc<dyn NodeStore>> = HashMap::new();
    let mut stops = Vec::new();
    let mut servers = Vec::new();
    for n in p.nodes() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let svc = cairn_rpc::NodeService::new(
            Arc::new(MemStore::new()),
            n.id.as_str(),
            Arc::new(std::sync::atomic::AtomicBool::new(true)),
        );
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        servers.push(tokio::spawn(svc.serve(listener, async {
            let _ = rx.await;
        })));
        stops.push(tx);
        let client = cairn_rpc::RemoteNode::new(
            &format!("http://{addr}"),
            std::time::Duration::from_secs(10),
        )
        .unwrap();
        nodes.insert(n.id.clone(), Arc::new(client));
    }
    let store = ReplicatedStore::new(p, nodes, ReadLevel::UnstrictMajority).unwrap();
    cairn_storage_api::conformance::run_with(&store, &store).await;
    for tx in stops {
        let _ = tx.send(());
    }
    for s in servers {
        s.await.unwrap().unwrap();
    }
}

/// A replica that never answers a write (a hung node).
#[derive(Debug)]
struct Hung(Arc<MemStore>);

impl ShardWriter for Hung {
    fn write(&self, _: WriteRequest) -> BoxFuture<'_, Result<WriteOutcome, StoreError>> {
        Box::pin(std::future::pending())
    }
}

/// With a spawner, a write returns once its level is decided: a hung
/// replica delays no `majority` write, while `all` still waits on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_replica_delays_no_write_the_level_allows() {
    let p = placement(3, 3);
    let mut nodes: HashMap<NodeId, Arc<dyn NodeStore>> = HashMap::new();
    for n in p.nodes() {
        let m = Arc::new(MemStore::new());
        if n.id.as_str() == "node-3" {
            nodes.insert(n.id.clone(), Arc::new(HungNode(Hung(m))));
        } else {
            nodes.insert(n.id.clone(), m);
        }
    }
    let handle = tokio::runtime::Handle::current();
    let store = ReplicatedStore::new(p, nodes, ReadLevel::UnstrictMajority)
        .unwrap()
        .with_spawner(Arc::new(move |f| {
            handle.spawn(f);
        }));
    let t = now_ms();
    let w = store
        .write(WriteRequest::new("t", batch("t", 20, t)).with_consistency(WriteLevel::Majority));
    let out = tokio::time::timeout(std::time::Duration::from_secs(5), w)
        .await
        .expect("a majority write returns without the hung replica")
        .unwrap();
    assert_eq!(out.accepted_samples, 20);
    let w = store
        .write(WriteRequest::new("t", batch("t", 20, t + 1)).with_consistency(WriteLevel::All));
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(300), w)
            .await
            .is_err(),
        "an `all` write cannot be decided while a replica has not answered"
    );
}

/// [`Hung`] as a whole node: reads from its store, writes never answered.
#[derive(Debug)]
struct HungNode(Hung);

impl SeriesReader for HungNode {
    fn select(&self, r: SelectRequest) -> BoxFuture<'_, Result<SeriesStream<'_>, StoreError>> {
        self.0 .0.select(r)
    }
    pass_reads!(0.0);
}

impl ShardWriter for HungNode {
    fn write(&self, r: WriteRequest) -> BoxFuture<'_, Result<WriteOutcome, StoreError>> {
        self.0.write(r)
    }
}

/// A replica that counts the selects it is asked.
#[derive(Debug)]
struct Counting(Arc<MemStore>, Arc<std::sync::atomic::AtomicUsize>);

impl SeriesReader for Counting {
    fn select(&self, r: SelectRequest) -> BoxFuture<'_, Result<SeriesStream<'_>, StoreError>> {
        self.1.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.0.select(r)
    }
    pass_reads!(0);
}

impl ShardWriter for Counting {
    fn write(&self, r: WriteRequest) -> BoxFuture<'_, Result<WriteOutcome, StoreError>> {
        self.0.write(r)
    }
}

/// A read asks a majority of each shard's replicas, the preferred (local)
/// node first, and the next replica only for a shard whose asked one
/// failed: with RF 3 and nothing down, the local node and one peer per
/// shard; the answer is complete either way.
#[test]
fn reads_ask_a_majority_preferring_the_local_replica() {
    let p = placement(3, 3);
    let calls: Vec<Arc<std::sync::atomic::AtomicUsize>> =
        (0..3).map(|_| Default::default()).collect();
    let mut nodes: HashMap<NodeId, Arc<dyn NodeStore>> = HashMap::new();
    for (i, n) in p.nodes().iter().enumerate() {
        nodes.insert(
            n.id.clone(),
            Arc::new(Counting(Arc::new(MemStore::new()), calls[i].clone())),
        );
    }
    let store = ReplicatedStore::new(p.clone(), nodes.clone(), ReadLevel::UnstrictMajority)
        .unwrap()
        .preferring(NodeId::new("node-1".to_string()));
    let now = now_ms();
    block_on(store.write(WriteRequest::new("t", batch("t", 50, now)))).unwrap();
    let got = block_on(select_all(
        &store,
        SelectRequest::new("t", up(), now - 1000, now + 1000),
    ))
    .unwrap();
    assert_eq!(got.len(), 50);
    let n: Vec<usize> = calls
        .iter()
        .map(|c| c.swap(0, std::sync::atomic::Ordering::Relaxed))
        .collect();
    // node-1 once for every shard, the two peers once each for their share.
    assert_eq!(n, vec![1, 1, 1], "calls per node");
    // node-1 holds every shard and is asked first: one peer per shard joins.
    // With node-2 down, its shards go to node-3 in a second round.
    nodes.insert(NodeId::new("node-2".to_string()), Arc::new(Down));
    let store = ReplicatedStore::new(p, nodes, ReadLevel::UnstrictMajority)
        .unwrap()
        .preferring(NodeId::new("node-1".to_string()));
    let w = cairn_storage_api::Warnings::default();
    let mut req = SelectRequest::new("t", up(), now - 1000, now + 1000);
    req.warnings = w.clone();
    let got = block_on(select_all(&store, req)).unwrap();
    assert_eq!(got.len(), 50);
    assert_eq!(
        calls[2].load(std::sync::atomic::Ordering::Relaxed),
        2,
        "node-3: its share, then node-2's"
    );
    assert!(
        w.take().is_empty(),
        "every shard had a majority: {:?}",
        w.take()
    );
}

/// A replica that can be taken down and brought back: down, its calls fail
/// as unreachable; up, it is the in-memory store behind it.
struct Switch {
    store: Arc<MemStore>,
    down: std::sync::atomic::AtomicBool,
}

impl Switch {
    fn is_down(&self) -> bool {
        self.down.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl SeriesReader for Switch {
    fn select(&self, r: SelectRequest) -> BoxFuture<'_, Result<SeriesStream<'_>, StoreError>> {
        if self.is_down() {
            return down();
        }
        self.store.select(r)
    }
    fn series(&self, q: SeriesQuery) -> BoxFuture<'_, Result<Vec<Labels>, StoreError>> {
        if self.is_down() {
            return down();
        }
        self.store.series(q)
    }
    fn label_names(&self, q: SeriesQuery) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
        if self.is_down() {
            return down();
        }
        self.store.label_names(q)
    }
    fn label_values(
        &self,
        q: SeriesQuery,
        n: String,
    ) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
        if self.is_down() {
            return down();
        }
        self.store.label_values(q, n)
    }
    fn exemplars(&self, q: SeriesQuery) -> BoxFuture<'_, Result<Vec<ExemplarSeries>, StoreError>> {
        if self.is_down() {
            return down();
        }
        self.store.exemplars(q)
    }
    fn metadata(
        &self,
        t: String,
        m: Option<String>,
        l: usize,
    ) -> BoxFuture<'_, Result<Vec<(String, MetricMetadata)>, StoreError>> {
        if self.is_down() {
            return down();
        }
        self.store.metadata(t, m, l)
    }
}

impl ShardWriter for Switch {
    fn write(&self, w: WriteRequest) -> BoxFuture<'_, Result<WriteOutcome, StoreError>> {
        if self.is_down() {
            return down();
        }
        self.store.write(w)
    }
}

/// Hinted handoff: writes node 3 missed while it was down are kept on the
/// gateway and replayed when it is back, so it then holds exactly what the
/// others hold; while it is away a delivery round leaves them pending.
#[test]
fn a_replica_back_from_down_gets_the_writes_it_missed() {
    let p = placement(3, 3);
    let mems: Vec<Arc<MemStore>> = (0..3).map(|_| Arc::new(MemStore::new())).collect();
    let third = Arc::new(Switch {
        store: mems[2].clone(),
        down: std::sync::atomic::AtomicBool::new(true),
    });
    let mut nodes: HashMap<NodeId, Arc<dyn NodeStore>> = HashMap::new();
    nodes.insert(NodeId::new("node-1"), mems[0].clone());
    nodes.insert(NodeId::new("node-2"), mems[1].clone());
    nodes.insert(NodeId::new("node-3"), third.clone());
    let hints = Arc::new(crate::Hints::new(64 << 20));
    let store = ReplicatedStore::new(p, nodes, ReadLevel::UnstrictMajority)
        .unwrap()
        .with_hints(hints.clone());
    let t = now_ms();
    for k in 0..5 {
        let w = WriteRequest::new("t", batch("t", 30, t + k));
        assert_eq!(block_on(store.write(w)).unwrap().accepted_samples, 30);
    }
    let n3 = NodeId::new("node-3");
    let stats = |h: &crate::Hints| {
        h.stats()
            .into_iter()
            .find(|(n, _)| *n == n3)
            .map(|(_, s)| s)
            .unwrap_or_default()
    };
    assert_eq!(stats(&hints).pending_samples, 150, "{:?}", hints.stats());
    assert_eq!(block_on(store.deliver_hints()), 0, "still down");
    assert_eq!(stats(&hints).pending_samples, 150);
    let held = |m: &MemStore| {
        block_on(select_all(m, SelectRequest::new("t", up(), t, t + 10)))
            .unwrap()
            .into_iter()
            .map(|s| (s.labels.to_string(), s.samples))
            .collect::<Vec<_>>()
    };
    assert!(held(&mems[2]).is_empty());
    third.down.store(false, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(block_on(store.deliver_hints()), 150);
    let s = stats(&hints);
    assert_eq!((s.pending, s.delivered_samples), (0, 150), "{s:?}");
    assert_eq!(held(&mems[2]), held(&mems[0]), "node 3 caught up");
    assert_eq!(held(&mems[2]).len(), 30);
    assert_eq!(block_on(store.deliver_hints()), 0, "nothing left");
    // No hints without failures, and only the nodes that failed get them.
    assert!(hints
        .stats()
        .iter()
        .all(|(n, s)| *n == n3 || s.pending + s.delivered_samples == 0));
}

/// Replicas' copies of a series: identical chunks are kept as they came
/// (not decoded here); a decoded copy and a chunk copy of the same samples
/// give those samples once; copies that differ are merged by timestamp and
/// trimmed to the range.
#[test]
fn replica_copies_merge_without_decoding_when_identical() {
    use cairn_storage_api::{EncodedChunk, SeriesSamples};
    let a: Vec<Sample> = (0..50).map(|k| Sample::new(k * 10, k as f64)).collect();
    let chunk = |s: &[Sample]| SeriesSamples::Chunks(vec![EncodedChunk::encode(s).unwrap()]);
    let same = crate::merge_replicas(vec![chunk(&a), chunk(&a)], 0, 1000).unwrap();
    assert_eq!(same, chunk(&a), "kept encoded");
    let mixed =
        crate::merge_replicas(vec![SeriesSamples::Decoded(a.clone()), chunk(&a)], 0, 1000).unwrap();
    assert_eq!(mixed, SeriesSamples::Decoded(a.clone()));
    // One replica missed the second half and has one sample the other lacks.
    let mut b: Vec<Sample> = a[..25].to_vec();
    b.push(Sample::new(245, -1.0));
    let merged =
        crate::merge_replicas(vec![SeriesSamples::Decoded(b), chunk(&a)], 100, 300).unwrap();
    let mut want: Vec<Sample> = a
        .iter()
        .filter(|s| (100..=300).contains(&s.t))
        .copied()
        .collect();
    want.push(Sample::new(245, -1.0));
    want.sort_by_key(|s| s.t);
    assert_eq!(merged, SeriesSamples::Decoded(want));
}

/// Digest reads: a replica holding samples the others lack (here written
/// to it alone) is found out by its digests and read in full, so a read
/// at `all` returns the union; with every replica equal, the answer is
/// the data of one.
/// An in-memory replica that answers only for the shards asked (the
/// storage node does; the in-memory store ignores shard sets).
struct Sharded(Arc<MemStore>);

impl SeriesReader for Sharded {
    fn select(&self, r: SelectRequest) -> BoxFuture<'_, Result<SeriesStream<'_>, StoreError>> {
        Box::pin(async move {
            let shards = r.shards.clone();
            let tenant = r.tenant.clone();
            let mut stream = self.0.select(r).await?;
            let mut all = Vec::new();
            while let Some(b) = cairn_storage_api::next_batch(&mut stream).await {
                all.extend(b?.into_iter().filter(|s| {
                    let id = match &s.samples {
                        cairn_storage_api::SeriesSamples::Digest(d) => d.series,
                        _ => None,
                    }
                    .unwrap_or_else(|| cairn_common::SeriesId::of(&tenant, &s.labels));
                    shards.contains(id.shard(8))
                }));
            }
            Ok(cairn_storage_api::stream_from_vec(all, 100))
        })
    }
    pass_reads!(0);
}

impl ShardWriter for Sharded {
    fn write(&self, w: WriteRequest) -> BoxFuture<'_, Result<WriteOutcome, StoreError>> {
        self.0.write(w)
    }
}

#[test]
fn a_replica_that_differs_is_found_by_its_digests_and_merged() {
    let p = placement(3, 3);
    let mems: Vec<Arc<MemStore>> = (0..3).map(|_| Arc::new(MemStore::new())).collect();
    let nodes: HashMap<NodeId, Arc<dyn NodeStore>> = p
        .nodes()
        .iter()
        .zip(&mems)
        .map(|(n, m)| {
            (
                n.id.clone(),
                Arc::new(Sharded(m.clone())) as Arc<dyn NodeStore>,
            )
        })
        .collect();
    let store = ReplicatedStore::new(p, nodes, ReadLevel::All).unwrap();
    let t = now_ms();
    block_on(store.write(WriteRequest::new("t", batch("t", 40, t)))).unwrap();
    let read = |s: &ReplicatedStore| {
        let mut v: Vec<(String, Vec<Sample>)> =
            block_on(select_all(s, SelectRequest::new("t", up(), t - 10, t + 10)))
                .unwrap()
                .into_iter()
                .map(|s| (s.labels.to_string(), s.samples))
                .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    let equal = read(&store);
    assert_eq!(equal.len(), 40);
    assert!(equal.iter().all(|(_, s)| s.len() == 1));
    assert_eq!(
        store.read_stats().digest_rereads,
        0,
        "equal replicas: no re-read"
    );
    // Node 2 alone gets one more sample of every series.
    block_on(mems[1].write(WriteRequest::new("t", batch("t", 40, t + 5)))).unwrap();
    let got = read(&store);
    assert_eq!(got.len(), 40);
    for (l, s) in &got {
        let ts: Vec<i64> = s.iter().map(|x| x.t).collect();
        assert_eq!(ts, vec![t, t + 5], "{l}");
    }
    assert!(
        store.read_stats().digest_rereads > 0,
        "{:?}",
        store.read_stats()
    );
}

/// A shard-aware in-memory replica that also reports shard sums: a hash
/// of the samples it holds of each shard in the range (what the storage
/// node counts as it takes them).
struct Summed(Sharded, Arc<std::sync::atomic::AtomicUsize>);

impl SeriesReader for Summed {
    /// A digest select leaves out the shards whose sums equal the caller's
    /// (as the storage node does); it counts the digests it sends.
    fn select(&self, r: SelectRequest) -> BoxFuture<'_, Result<SeriesStream<'_>, StoreError>> {
        Box::pin(async move {
            let same: Vec<u32> = if r.digest && !r.digest_unless.is_empty() {
                let mine = self.shard_sums(r.clone()).await?;
                r.digest_unless
                    .iter()
                    .filter(|x| x.1.is_some() && mine.contains(x))
                    .map(|x| x.0)
                    .collect()
            } else {
                Vec::new()
            };
            let digest = r.digest;
            let tenant = r.tenant.clone();
            let all = read_all_of(&self.0, r).await?;
            let kept: Vec<_> = all
                .into_iter()
                .filter(|s| {
                    let id = match &s.samples {
                        cairn_storage_api::SeriesSamples::Digest(d) => d.series,
                        _ => None,
                    }
                    .unwrap_or_else(|| cairn_common::SeriesId::of(&tenant, &s.labels));
                    !same.contains(&id.shard(8))
                })
                .collect();
            if digest {
                self.1
                    .fetch_add(kept.len(), std::sync::atomic::Ordering::Relaxed);
            }
            Ok(cairn_storage_api::stream_from_vec(kept, 100))
        })
    }
    fn shard_sums(
        &self,
        r: SelectRequest,
    ) -> BoxFuture<'_, Result<cairn_storage_api::ShardSums, StoreError>> {
        Box::pin(async move {
            let all = select_all(
                &*self.0 .0,
                SelectRequest::new(r.tenant.clone(), vec![], r.start, r.end),
            )
            .await?;
            let mut sums = [0u64; 8];
            for s in all {
                let id = cairn_common::SeriesId::of(&r.tenant, &s.labels);
                let d = cairn_storage_api::SampleDigest::of(&s.samples);
                let k = id.shard(8) as usize;
                sums[k] = sums[k].wrapping_add(d.hash ^ (id.0 as u64));
            }
            Ok((0..8u32)
                .filter(|s| r.shards.contains(*s))
                .map(|s| (s, Some(sums[s as usize])))
                .collect())
        })
    }
    pass_reads!(0.0);
}

impl ShardWriter for Summed {
    fn write(&self, w: WriteRequest) -> BoxFuture<'_, Result<WriteOutcome, StoreError>> {
        self.0.write(w)
    }
}

async fn read_all_of(
    s: &dyn SeriesReader,
    r: SelectRequest,
) -> Result<Vec<cairn_storage_api::StoredSeries>, StoreError> {
    let mut stream = s.select(r).await?;
    let mut all = Vec::new();
    while let Some(b) = cairn_storage_api::next_batch(&mut stream).await {
        all.extend(b?);
    }
    Ok(all)
}

/// A select at `all` whose local replica's shard sums equal a peer's gets
/// no digests from that peer for those shards (it holds the same); a peer
/// that took one sample more has a different sum, sends its digests, and
/// is read in full: the answer is the union either way.
#[test]
fn replicas_with_equal_shard_sums_send_no_digests() {
    let p = placement(3, 3);
    let mems: Vec<Arc<MemStore>> = (0..3).map(|_| Arc::new(MemStore::new())).collect();
    let sent: Vec<Arc<std::sync::atomic::AtomicUsize>> =
        (0..3).map(|_| Default::default()).collect();
    let nodes: HashMap<NodeId, Arc<dyn NodeStore>> = p
        .nodes()
        .iter()
        .zip(mems.iter().zip(&sent))
        .map(|(n, (m, c))| {
            let s: Arc<dyn NodeStore> = Arc::new(Summed(Sharded(m.clone()), c.clone()));
            (n.id.clone(), s)
        })
        .collect();
    let store = ReplicatedStore::new(p, nodes, ReadLevel::All)
        .unwrap()
        .preferring(NodeId::from("node-1"));
    let t = now_ms();
    block_on(store.write(WriteRequest::new("t", batch("t", 40, t)))).unwrap();
    let read = || {
        let mut v: Vec<(String, Vec<Sample>)> = block_on(select_all(
            &store,
            SelectRequest::new("t", up(), t - 10, t + 10),
        ))
        .unwrap()
        .into_iter()
        .map(|s| (s.labels.to_string(), s.samples))
        .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    let got = read();
    assert_eq!(got.len(), 40);
    assert!(got.iter().all(|(_, s)| s.len() == 1));
    let digests = |k: usize| sent[k].load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!((digests(1), digests(2)), (0, 0), "equal sums: no digests");
    // Node 2 alone takes one more sample of every series.
    block_on(mems[1].write(WriteRequest::new("t", batch("t", 40, t + 5)))).unwrap();
    let got = read();
    assert_eq!(got.len(), 40);
    for (l, s) in &got {
        let ts: Vec<i64> = s.iter().map(|x| x.t).collect();
        assert_eq!(ts, vec![t, t + 5], "{l}");
    }
    assert!(
        digests(1) > 0 && digests(2) == 0,
        "{} {}",
        digests(1),
        digests(2)
    );
    assert!(store.read_stats().digest_rereads > 0);
}

/// A replica that answers digest selects but fails reads of data.
struct DigestsOnly(Sharded);

impl SeriesReader for DigestsOnly {
    fn select(&self, r: SelectRequest) -> BoxFuture<'_, Result<SeriesStream<'_>, StoreError>> {
        if !r.digest {
            return down();
        }
        self.0.select(r)
    }
    pass_reads!(0.0);
}

impl ShardWriter for DigestsOnly {
    fn write(&self, w: WriteRequest) -> BoxFuture<'_, Result<WriteOutcome, StoreError>> {
        self.0.write(w)
    }
}

/// A shard whose first replica is down has its data read from one that
/// sent digests — the next such one when that read fails — so the answer
/// is whole at `all`-minus-one; with no replica left to read, the error
/// names the shard.
#[test]
fn data_comes_from_the_next_replica_when_the_first_and_a_digest_one_fail() {
    let p = placement(3, 3);
    let mems: Vec<Arc<MemStore>> = (0..3).map(|_| Arc::new(MemStore::new())).collect();
    let t = now_ms();
    for m in &mems {
        block_on(m.write(WriteRequest::new("t", batch("t", 40, t)))).unwrap();
    }
    let build = |third_ok: bool| {
        let mut nodes: HashMap<NodeId, Arc<dyn NodeStore>> = HashMap::new();
        nodes.insert(NodeId::new("node-1"), Arc::new(Down));
        nodes.insert(
            NodeId::new("node-2"),
            Arc::new(DigestsOnly(Sharded(mems[1].clone()))),
        );
        let third: Arc<dyn NodeStore> = if third_ok {
            Arc::new(Sharded(mems[2].clone()))
        } else {
            Arc::new(DigestsOnly(Sharded(mems[2].clone())))
        };
        nodes.insert(NodeId::new("node-3"), third);
        ReplicatedStore::new(p.clone(), nodes, ReadLevel::UnstrictMajority).unwrap()
    };
    let store = build(true);
    let got = block_on(select_all(
        &store,
        SelectRequest::new("t", up(), t - 10, t + 10),
    ))
    .unwrap();
    assert_eq!(got.len(), 40);
    assert!(
        store.read_stats().data_fallbacks > 0,
        "{:?}",
        store.read_stats()
    );
    let e = block_on(select_all(
        &build(false),
        SelectRequest::new("t", up(), t - 10, t + 10),
    ))
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(e.message().contains("shard "), "{e}");
}

/// Counter series `req_total{job, i}` every 15 s over 30 minutes from `t0`,
/// and a gauge `temp{job, i}`.
fn counters(tenant: &str, n: usize, t0: i64) -> PreparedBatch {
    let mut series = Vec::new();
    for i in 0..n {
        let job = format!("j{}", i % 3);
        let is = i.to_string();
        let samples = (0..120)
            .map(|k| Sample::new(t0 + k * 15_000, (k * (i as i64 + 1)) as f64 * 0.5))
            .collect();
        series.push(SeriesWrite {
            labels: Labels::from_pairs(&[("__name__", "req_total"), ("i", &is), ("job", &job)]),
            samples,
            exemplars: vec![],
        });
        let samples = (0..120)
            .map(|k| {
                Sample::new(
                    t0 + k * 15_000,
                    ((k * 7 + i as i64 * 13) % 50) as f64 - 20.0,
                )
            })
            .collect();
        series.push(SeriesWrite {
            labels: Labels::from_pairs(&[("__name__", "temp"), ("i", &is), ("job", &job)]),
            samples,
            exemplars: vec![],
        });
    }
    PreparedBatch::from_series(tenant, series, vec![])
}

fn close_values(a: &cairn_promql::Value, b: &cairn_promql::Value) -> Result<(), String> {
    use cairn_promql::Value;
    if let (Value::Vector(a), Value::Vector(b)) = (a, b) {
        let sorted = |v: &[cairn_promql::InstantSample]| {
            let mut v: Vec<(String, i64, f64)> =
                v.iter().map(|s| (s.labels.to_string(), s.t, s.v)).collect();
            v.sort_by(|x, y| x.0.cmp(&y.0));
            v
        };
        let (a, b) = (sorted(a), sorted(b));
        let same = a.len() == b.len()
            && a.iter().zip(&b).all(|(x, y)| {
                x.0 == y.0
                    && x.1 == y.1
                    && (x.2 - y.2).abs() <= 1e-9 * x.2.abs().max(y.2.abs()).max(1.0)
            });
        return if same {
            Ok(())
        } else {
            Err(format!("{a:?} against {b:?}"))
        };
    }
    let (Value::Matrix(a), Value::Matrix(b)) = (a, b) else {
        return Err(format!("not two matrices: {a:?} / {b:?}"));
    };
    if a.len() != b.len() {
        return Err(format!("{} series against {}", a.len(), b.len()));
    }
    for (x, y) in a.iter().zip(b) {
        if x.labels != y.labels || x.samples.len() != y.samples.len() {
            return Err(format!(
                "{} ({}) against {} ({})",
                x.labels,
                x.samples.len(),
                y.labels,
                y.samples.len()
            ));
        }
        for (s, r) in x.samples.iter().zip(&y.samples) {
            let tol = 1e-9 * s.v.abs().max(r.v.abs()).max(1.0);
            if s.t != r.t || (s.v - r.v).abs() > tol {
                return Err(format!("{}: {:?} against {:?}", x.labels, s, r));
            }
        }
    }
    Ok(())
}

const PUSHED: [&str; 8] = [
    "sum by (job) (rate(req_total[5m]))",
    "avg by (job) (temp)",
    "max by (job) (max_over_time(temp[2m]))",
    "min(temp)",
    "count by (job) (req_total)",
    "group by (job) (temp)",
    "sum without (i) (increase(req_total[10m]))",
    "avg(rate(req_total[1m]))",
];

/// Aggregations pushed down to the replicas — each shard's partial from
/// one replica, checked against the digests of as many others as the
/// read level asks — answer what the same query over one store holding
/// every sample answers, over several step grids. A replica that holds
/// samples the others lack (seen at `all`) has the shards it disagrees
/// on aggregated from the merged series; a node down changes nothing at
/// the default level.
#[test]
fn pushed_down_aggregations_answer_what_one_store_does() {
    pushed_down_aggregations(false);
}

/// The same with replicas that report shard sums: equal sums stand for the
/// replica's answer, unequal ones send it to per-series digests.
#[test]
fn pushed_down_aggregations_take_equal_shard_sums_for_answers() {
    pushed_down_aggregations(true);
}

fn pushed_down_aggregations(summed: bool) {
    use cairn_promql::{Engine, EngineOptions};
    let p = placement(3, 3);
    let mems: Vec<Arc<MemStore>> = (0..3).map(|_| Arc::new(MemStore::new())).collect();
    let nodes = |down: Option<usize>| -> HashMap<NodeId, Arc<dyn NodeStore>> {
        p.nodes()
            .iter()
            .zip(&mems)
            .enumerate()
            .map(|(k, (n, m))| {
                let s: Arc<dyn NodeStore> = if down == Some(k) {
                    Arc::new(Down)
                } else if summed {
                    Arc::new(Summed(Sharded(m.clone()), Default::default()))
                } else {
                    Arc::new(Sharded(m.clone()))
                };
                (n.id.clone(), s)
            })
            .collect()
    };
    let engine = Engine::new(EngineOptions::default());
    let agg: Arc<dyn cairn_storage_api::Aggregator> = Arc::new(engine.clone());
    let store = |level, down| {
        ReplicatedStore::new(p.clone(), nodes(down), level)
            .unwrap()
            .preferring(NodeId::from("node-1"))
            .with_aggregator(agg.clone())
    };
    let single = MemStore::new();
    let t0 = 1_700_000_000_000;
    let data = counters("t", 30, t0);
    let default = store(ReadLevel::UnstrictMajority, None);
    block_on(default.write(WriteRequest::new("t", data.clone()))).unwrap();
    block_on(single.write(WriteRequest::new("t", data))).unwrap();
    let grids = [
        (t0 + 300_000, t0 + 1_785_000, 60_000),
        (t0, t0 + 1_800_000, 15_000),
        (t0 + 7_000, t0 + 900_000, 33_000),
    ];
    let check = |s: &ReplicatedStore, single: &MemStore, what: &str| {
        for q in PUSHED {
            for (a, b, step) in grids {
                let want = engine.range_query(single, "t", q, a, b, step).unwrap();
                let got = engine.range_query(s, "t", q, a, b, step).unwrap();
                if let Err(e) = close_values(&got.value, &want.value) {
                    panic!("{what}: {q} over {a}..{b} step {step}: {e}");
                }
                assert!(got.warnings.is_empty(), "{what}: {q}: {:?}", got.warnings);
            }
            for t in [t0 + 299_000, t0 + 1_000_000, t0 + 1_785_000, t0 + 2_000_000] {
                let want = engine.instant_query(single, "t", q, t).unwrap();
                let got = engine.instant_query(s, "t", q, t).unwrap();
                if let Err(e) = close_values(&got.value, &want.value) {
                    panic!("{what}: {q} at {t}: {e}");
                }
            }
        }
    };
    check(&default, &single, "equal replicas");
    let stats = default.read_stats();
    assert_eq!(
        stats.aggregations_pushed,
        (PUSHED.len() * (grids.len() + 4)) as u64,
        "{stats:?}"
    );
    assert_eq!(stats.aggregation_fallback_shards, 0, "{stats:?}");
    assert_eq!(stats.aggregation_shards_by_sums > 0, summed, "{stats:?}");
    // One node down: the shards it computed come from the replicated
    // select, its digests from the third replica.
    for down in 0..3 {
        check(
            &store(ReadLevel::UnstrictMajority, Some(down)),
            &single,
            &format!("node {down} down"),
        );
    }
    // Node 2 alone holds more samples of some series.
    let extra: Vec<SeriesWrite> = (0..10)
        .map(|i| SeriesWrite {
            labels: Labels::from_pairs(&[
                ("__name__", "temp"),
                ("i", &i.to_string()),
                ("job", &format!("j{}", i % 3)),
            ]),
            samples: (0..20)
                .map(|k| Sample::new(t0 + 7_500 + k * 60_000, 100.0 + k as f64))
                .collect(),
            exemplars: vec![],
        })
        .collect();
    let extra = PreparedBatch::from_series("t", extra, vec![]);
    block_on(mems[1].write(WriteRequest::new("t", extra.clone()))).unwrap();
    block_on(single.write(WriteRequest::new("t", extra))).unwrap();
    let all = store(ReadLevel::All, None);
    check(&all, &single, "one replica ahead, read at all");
    let stats = all.read_stats();
    assert!(stats.aggregation_fallback_shards > 0, "{stats:?}");
    assert!(stats.aggregations_pushed > 0, "{stats:?}");
}
