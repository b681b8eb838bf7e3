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
