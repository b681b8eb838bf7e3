//! A router over an in-memory store, and calling it, for the handlers'
//! tests.

use crate::{router, Admin, ApiConfig, AppState, Backend};
use axum::body::Body;
use axum::http::Request;
use cairn_common::MemStore;
use cairn_storage_api::{SeriesReader, ShardWriter};
use std::sync::Arc;
use tower::ServiceExt;

struct NoAdmin;
impl Admin for NoAdmin {
    fn flush(&self) -> Result<usize, String> {
        Ok(0)
    }
    fn register_metrics(&self, _: &mut prometheus_client::registry::Registry) {}
}

pub(crate) fn app(m: Arc<MemStore>) -> axum::Router {
    app_with(m, ApiConfig::default()).0
}

/// The router and its state, with `cfg`.
pub(crate) fn app_with(m: Arc<MemStore>, cfg: ApiConfig) -> (axum::Router, AppState) {
    let st = AppState::new(cfg).unwrap();
    st.set_ready(Backend {
        reader: m.clone() as Arc<dyn SeriesReader>,
        writer: m as Arc<dyn ShardWriter>,
        admin: Arc::new(NoAdmin),
    });
    (router(st.clone()), st)
}

pub(crate) async fn call(app: &axum::Router, req: Request<Body>) -> (u16, String) {
    let r = app.clone().oneshot(req).await.unwrap();
    let status = r.status().as_u16();
    let b = axum::body::to_bytes(r.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, String::from_utf8(b.to_vec()).unwrap())
}

pub(crate) fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).unwrap()
}
