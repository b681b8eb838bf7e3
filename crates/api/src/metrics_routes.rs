//! The request-metrics layer ([`count_requests`]) and `GET /metrics`,
//! which encodes the registry of [`crate::metrics`].

use crate::metrics::{to_classic, CLASSIC, OPENMETRICS};
use crate::state::{blocking, AppState};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderMap};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Counts every request by the route it matched and its status
/// (`cairn_api_http_requests_total`); unmatched paths count as `unmatched`.
pub(crate) async fn count_requests(
    State(st): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    // MatchedPath is a shared string: cloning it copies no text.
    let route = req.extensions().get::<MatchedPath>().cloned();
    let resp = next.run(req).await;
    st.0.metrics.count(
        route.as_ref().map_or("unmatched", |m| m.as_str()),
        resp.status(),
    );
    resp
}

/// `GET /metrics`: everything in the registry — the HTTP layer's, the read
/// pool's, the process's and the store's self-metrics — as OpenMetrics
/// text when the `Accept` header allows it, else in the classic text
/// format. Encoded off the async threads: the store's collector takes its
/// shard locks.
pub(crate) async fn metrics(State(st): State<AppState>, headers: HeaderMap) -> Response {
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    match blocking(move || st.0.metrics.encode()).await {
        Ok(out) if openmetrics => ([(header::CONTENT_TYPE, OPENMETRICS)], out).into_response(),
        Ok(out) => ([(header::CONTENT_TYPE, CLASSIC)], to_classic(&out)).into_response(),
        Err(e) => e.into_response(),
    }
}
