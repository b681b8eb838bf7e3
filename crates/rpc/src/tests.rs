//! The storage contract's conformance suite through a real gRPC server on
//! loopback: a [`RemoteNode`] in front of an in-memory store must behave
//! exactly as the store itself.

use crate::{NodeService, RemoteNode};
use cairn_common::MemStore;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_node_passes_the_storage_conformance_suite() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let ready = Arc::new(AtomicBool::new(true));
    let svc = NodeService::new(Arc::new(MemStore::new()), "node-a", ready);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(svc.serve(listener, async {
        let _ = stop_rx.await;
    }));
    let node = RemoteNode::new(&format!("http://{addr}"), Duration::from_secs(10)).unwrap();
    assert_eq!(node.health().await.unwrap(), ("node-a".to_string(), true));
    cairn_storage_api::conformance::run_with(&node, &node).await;
    let _ = stop_tx.send(());
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn an_unreachable_node_is_unavailable_and_named() {
    // A port nothing listens on: bind, note it, close.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let node = RemoteNode::new(&format!("http://{addr}"), Duration::from_secs(2)).unwrap();
    let e = node.health().await.unwrap_err();
    assert_eq!(e.kind(), cairn_storage_api::ErrorKind::Unavailable, "{e}");
    assert!(e.is_retryable());
    assert!(e.message().contains(&addr.to_string()), "{e}");
}

/// An in-memory store that takes series by id alone once it has seen
/// their labels (as the storage node does), counting how many came so.
#[derive(Default)]
struct Remembering {
    mem: MemStore,
    labels: std::sync::Mutex<
        std::collections::HashMap<cairn_common::SeriesId, cairn_common::LazyLabels>,
    >,
    by_id: std::sync::atomic::AtomicUsize,
}

impl cairn_storage_api::SeriesReader for Remembering {
    fn select(
        &self,
        r: cairn_storage_api::SelectRequest,
    ) -> cairn_storage_api::BoxFuture<
        '_,
        Result<cairn_storage_api::SeriesStream<'_>, cairn_storage_api::StoreError>,
    > {
        self.mem.select(r)
    }
    fn series(
        &self,
        q: cairn_storage_api::SeriesQuery,
    ) -> cairn_storage_api::BoxFuture<
        '_,
        Result<Vec<cairn_common::Labels>, cairn_storage_api::StoreError>,
    > {
        self.mem.series(q)
    }
    fn label_names(
        &self,
        q: cairn_storage_api::SeriesQuery,
    ) -> cairn_storage_api::BoxFuture<'_, Result<Vec<String>, cairn_storage_api::StoreError>> {
        self.mem.label_names(q)
    }
    fn label_values(
        &self,
        q: cairn_storage_api::SeriesQuery,
        n: String,
    ) -> cairn_storage_api::BoxFuture<'_, Result<Vec<String>, cairn_storage_api::StoreError>> {
        self.mem.label_values(q, n)
    }
    fn exemplars(
        &self,
        q: cairn_storage_api::SeriesQuery,
    ) -> cairn_storage_api::BoxFuture<
        '_,
        Result<Vec<cairn_common::ExemplarSeries>, cairn_storage_api::StoreError>,
    > {
        self.mem.exemplars(q)
    }
    fn metadata(
        &self,
        t: String,
        m: Option<String>,
        l: usize,
    ) -> cairn_storage_api::BoxFuture<
        '_,
        Result<Vec<(String, cairn_common::MetricMetadata)>, cairn_storage_api::StoreError>,
    > {
        self.mem.metadata(t, m, l)
    }
}

impl cairn_storage_api::ShardWriter for Remembering {
    fn write(
        &self,
        mut req: cairn_storage_api::WriteRequest,
    ) -> cairn_storage_api::BoxFuture<
        '_,
        Result<cairn_common::WriteOutcome, cairn_storage_api::StoreError>,
    > {
        {
            let mut known = self.labels.lock().unwrap();
            for s in &mut req.batch.series {
                if s.labels.is_empty() {
                    self.by_id.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    s.labels = known[&s.id].clone();
                } else {
                    known.insert(s.id, s.labels.clone());
                }
            }
        }
        self.mem.write(req)
    }

    fn unknown_series(
        &self,
        _: &str,
        _: &str,
        ids: &[cairn_common::SeriesId],
    ) -> Vec<cairn_common::SeriesId> {
        let known = self.labels.lock().unwrap();
        ids.iter()
            .copied()
            .filter(|id| !known.contains_key(id))
            .collect()
    }
}

/// Label sets cross once: a series the receiver holds is written by id
/// alone; new ones (told by the receiver) go again with their labels, and
/// the store ends with every series under its own labels.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn label_sets_cross_only_for_series_new_to_the_receiver() {
    use cairn_common::{Labels, MatchOp, Matcher, PreparedBatch, Sample, SeriesWrite};
    use cairn_storage_api::{select_all, SelectRequest, ShardWriter, WriteRequest};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let store = Arc::new(Remembering::default());
    let svc = NodeService::new(store.clone(), "node-a", Arc::new(AtomicBool::new(true)));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(svc.serve(listener, async {
        let _ = stop_rx.await;
    }));
    let node = RemoteNode::new(&format!("http://{addr}"), Duration::from_secs(10)).unwrap();
    let batch = |from: usize, to: usize, t: i64| {
        let series = (from..to)
            .map(|i| SeriesWrite {
                labels: Labels::from_pairs(&[("__name__", "up"), ("i", &i.to_string())]),
                samples: vec![Sample::new(t, i as f64)],
                exemplars: vec![],
            })
            .collect();
        PreparedBatch::from_series("t", series, vec![])
    };
    let by_id = || store.by_id.load(std::sync::atomic::Ordering::SeqCst);
    node.write(WriteRequest::new("t", batch(0, 10, 1000)))
        .await
        .unwrap();
    assert_eq!(by_id(), 0, "all new: sent again with labels");
    // 10 known, 5 new: the known ones by id alone.
    let out = node
        .write(WriteRequest::new("t", batch(0, 15, 2000)))
        .await
        .unwrap();
    assert_eq!(out.accepted_samples, 15);
    assert_eq!(by_id(), 10);
    let up = vec![Matcher::new(MatchOp::Equal, "__name__", "up").unwrap()];
    let got = select_all(&node, SelectRequest::new("t", up, 0, 3000))
        .await
        .unwrap();
    assert_eq!(got.len(), 15);
    for s in &got {
        let i: usize = s.labels.get("i").unwrap().parse().unwrap();
        let want: Vec<Sample> = [1000, 2000]
            .iter()
            .filter(|&&t| t == 2000 || i < 10)
            .map(|&t| Sample::new(t, i as f64))
            .collect();
        assert_eq!(s.samples, want, "{}", s.labels);
    }
    let _ = stop_tx.send(());
    server.await.unwrap().unwrap();
}
