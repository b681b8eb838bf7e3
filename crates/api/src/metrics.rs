//! Self-metrics: the one request-metrics layer ([`count_requests`], keyed
//! by the matched route, so a label is bounded by the router's routes),
//! the remote-write counters, and `/metrics`, which renders them with the
//! process's, the read pool's and the store's.

use crate::{blocking, process, AppState};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

#[derive(Default)]
pub(crate) struct HttpMetrics {
    /// Requests by matched route and status (one middleware counts them all).
    requests: Mutex<BTreeMap<String, BTreeMap<u16, u64>>>,
    pub(crate) samples_received: AtomicU64,
    pub(crate) samples_invalid: AtomicU64,
    pub(crate) samples_rejected: AtomicU64,
    pub(crate) exemplars_received: AtomicU64,
}

impl HttpMetrics {
    fn count(&self, route: &str, status: StatusCode) {
        let mut m = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        // Looked up by &str: a String is built only for a route's first request.
        if let Some(by_code) = m.get_mut(route) {
            *by_code.entry(status.as_u16()).or_default() += 1;
        } else {
            m.insert(route.to_string(), BTreeMap::from([(status.as_u16(), 1)]));
        }
    }
}

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

/// `GET /metrics`: the HTTP layer's, the process's and the store's
/// self-metrics, in Prometheus text format.
pub(crate) async fn metrics(State(st): State<AppState>) -> Response {
    let mut out = String::new();
    let m = &st.0.metrics;
    let _ = writeln!(out, "# HELP cairn_api_http_requests_total HTTP requests by route and status code.\n# TYPE cairn_api_http_requests_total counter");
    {
        let reqs = m.requests.lock().unwrap_or_else(|p| p.into_inner());
        for (route, by_code) in reqs.iter() {
            for (code, n) in by_code {
                let _ = writeln!(
                    out,
                    "cairn_api_http_requests_total{{route=\"{route}\",code=\"{code}\"}} {n}"
                );
            }
        }
    }
    let c = |a: &AtomicU64| a.load(Ordering::Relaxed);
    for (name, help, v) in [
        (
            "cairn_ingest_samples_received_total",
            "Valid samples received over remote write.",
            c(&m.samples_received),
        ),
        (
            "cairn_ingest_samples_invalid_total",
            "Samples dropped because their series was invalid.",
            c(&m.samples_invalid),
        ),
        (
            "cairn_ingest_samples_rejected_total",
            "Samples refused by the store (e.g. older than retention).",
            c(&m.samples_rejected),
        ),
        (
            "cairn_ingest_exemplars_received_total",
            "Exemplars stored.",
            c(&m.exemplars_received),
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
        );
    }
    process::render(&mut out);
    let ps = &st.0.reads.stats;
    for (name, kind, help, v) in [
        (
            "cairn_api_reads_running",
            "gauge",
            "Reads (queries, series, export, remote read) running on the read threads.",
            ps.running.load(Ordering::Relaxed) as u64,
        ),
        (
            "cairn_api_reads_queued",
            "gauge",
            "Reads waiting for a read thread.",
            ps.queued.load(Ordering::Relaxed) as u64,
        ),
        (
            "cairn_api_reads_rejected_total",
            "counter",
            "Reads refused with 503 because the queue was full.",
            ps.rejected.load(Ordering::Relaxed),
        ),
        (
            "cairn_api_reads_cancelled_total",
            "counter",
            "Reads stopped or skipped because their caller stopped waiting (client gone, timeout).",
            ps.cancelled.load(Ordering::Relaxed),
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
        );
    }
    if let Some(b) = st.0.backend.get() {
        let admin = b.admin.clone();
        if let Ok(s) = blocking(move || {
            let mut s = String::new();
            admin.render_metrics(&mut s);
            s
        })
        .await
        {
            out.push_str(&s);
        }
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use crate::test_util::{app, call, get};
    use cairn_common::MemSource;
    use std::sync::Arc;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requests_are_counted_by_matched_route() {
        let app = app(Arc::new(MemSource::new()));
        assert_eq!(call(&app, get("/api/v1/query?query=1")).await.0, 200);
        assert_eq!(call(&app, get("/api/v1/query?query=1%2B")).await.0, 400);
        assert_eq!(call(&app, get("/api/v1/label/job/values")).await.0, 200);
        assert_eq!(call(&app, get("/nope")).await.0, 404);
        let (_, m) = call(&app, get("/metrics")).await;
        for want in [
            r#"route="/api/v1/query",code="200"} 1"#,
            r#"route="/api/v1/query",code="400"} 1"#,
            r#"route="/api/v1/label/{name}/values",code="200"} 1"#,
            r#"route="unmatched",code="404"} 1"#,
        ] {
            assert!(m.contains(want), "{want} not in {m}");
        }
    }
}
