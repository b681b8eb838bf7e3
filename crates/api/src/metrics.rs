//! Self-metrics: one `prometheus-client` [`Registry`] per `AppState`
//! holding the request-metrics layer's family (`count_requests`, keyed by
//! the matched route, so a label is bounded by the router's routes; the
//! layer and the `/metrics` handler are in `metrics_routes`), the
//! remote-write counters, collectors that read the read pool and the
//! process at scrape time, and whatever the backend registers through
//! `Admin::register_metrics` once it is
//! ready; and `/metrics`, which encodes it.
//!
//! The crate's encoder writes OpenMetrics text (`# EOF` last, `# UNIT`
//! where a unit is given, a counter's family named without `_total`):
//! served as is to a scraper that asks for it (Prometheus does, first),
//! and turned into the classic text format (`text/plain; version=0.0.4`,
//! what `/metrics` always served) for everyone else ([`to_classic`]).
//! Counters are registered without `_total`: the encoder appends it.

use crate::pool::PoolStats;
use crate::process;
use axum::http::StatusCode;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError, RwLock};

/// The content type of `/metrics` for a scraper that accepts OpenMetrics.
pub(crate) const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The content type of `/metrics` otherwise.
pub(crate) const CLASSIC: &str = "text/plain; version=0.0.4; charset=utf-8";

/// OpenMetrics text as the classic text format: a counter's `# HELP` and
/// `# TYPE` name its samples' name (with `_total`), and the `# UNIT` and
/// `# EOF` lines, which that format lacks, are left out. The encoder writes
/// a family's `# HELP` line just before its `# TYPE` line.
pub(crate) fn to_classic(om: &str) -> String {
    let mut out = String::with_capacity(om.len());
    let mut help: Option<&str> = None;
    for line in om.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        if line.starts_with("# HELP ") {
            if let Some(h) = help.replace(line) {
                out.push_str(h);
                out.push('\n');
            }
            continue;
        }
        let counter = line
            .strip_prefix("# TYPE ")
            .and_then(|t| t.strip_suffix(" counter"))
            .filter(|name| !name.ends_with("_total"));
        match (counter, help.take()) {
            (Some(name), h) => {
                if let Some(h) = h {
                    let text = h.strip_prefix("# HELP ").unwrap_or(h);
                    let text = text.strip_prefix(name).unwrap_or(text);
                    out.push_str("# HELP ");
                    out.push_str(name);
                    out.push_str("_total");
                    out.push_str(text);
                    out.push('\n');
                }
                out.push_str("# TYPE ");
                out.push_str(name);
                out.push_str("_total counter\n");
            }
            (None, h) => {
                if let Some(h) = h {
                    out.push_str(h);
                    out.push('\n');
                }
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    if let Some(h) = help {
        out.push_str(h);
        out.push('\n');
    }
    out
}

/// The labels of `cairn_api_http_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    code: u16,
}

#[derive(Debug)]
pub(crate) struct HttpMetrics {
    /// Requests by matched route and status (one middleware counts them all).
    requests: Family<RequestLabels, Counter>,
    pub(crate) samples_received: Counter,
    pub(crate) samples_invalid: Counter,
    pub(crate) samples_rejected: Counter,
    pub(crate) exemplars_received: Counter,
    /// Everything `/metrics` serves; written only at start and when the
    /// backend is installed.
    registry: RwLock<Registry>,
}

impl HttpMetrics {
    /// The registry with this layer's metrics, `pool`'s and the process's.
    pub(crate) fn new(pool: &Arc<PoolStats>) -> Self {
        let m = Self {
            requests: Family::default(),
            samples_received: Counter::default(),
            samples_invalid: Counter::default(),
            samples_rejected: Counter::default(),
            exemplars_received: Counter::default(),
            registry: RwLock::new(Registry::default()),
        };
        {
            let mut reg = m.registry.write().unwrap_or_else(PoisonError::into_inner);
            // The registry ends every help text with a full stop itself.
            reg.register(
                "cairn_api_http_requests",
                "HTTP requests by route and status code",
                m.requests.clone(),
            );
            for (name, help, c) in [
                (
                    "cairn_ingest_samples_received",
                    "Valid samples received over remote write.",
                    &m.samples_received,
                ),
                (
                    "cairn_ingest_samples_invalid",
                    "Samples dropped because their series was invalid.",
                    &m.samples_invalid,
                ),
                (
                    "cairn_ingest_samples_rejected",
                    "Samples refused by the store (e.g. older than retention).",
                    &m.samples_rejected,
                ),
                (
                    "cairn_ingest_exemplars_received",
                    "Exemplars stored.",
                    &m.exemplars_received,
                ),
            ] {
                reg.register(name, help.trim_end_matches('.'), c.clone());
            }
            reg.register_collector(Box::new(process::ProcessCollector));
            reg.register_collector(Box::new(PoolCollector(pool.clone())));
        }
        m
    }

    /// Lets `f` register more metrics (the backend's).
    pub(crate) fn register(&self, f: impl FnOnce(&mut Registry)) {
        f(&mut self
            .registry
            .write()
            .unwrap_or_else(PoisonError::into_inner));
    }

    pub(crate) fn count(&self, route: &str, status: StatusCode) {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.to_string(),
                code: status.as_u16(),
            })
            .inc();
    }

    /// The exposition text of everything registered.
    pub(crate) fn encode(&self) -> String {
        let mut out = String::new();
        let reg = self.registry.read().unwrap_or_else(PoisonError::into_inner);
        // Writing to a String cannot fail, and no collector here fails.
        let _ = prometheus_client::encoding::text::encode(&mut out, &reg);
        out
    }
}

/// The read pool's gauges and counters, read at scrape time.
#[derive(Debug)]
struct PoolCollector(Arc<PoolStats>);

impl Collector for PoolCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let ps = &self.0;
        for (name, help, v) in [
            (
                "cairn_api_reads_running",
                "Reads (queries, series, export, remote read) running on the read threads.",
                ps.running.load(Ordering::Relaxed),
            ),
            (
                "cairn_api_reads_queued",
                "Reads waiting for a read thread.",
                ps.queued.load(Ordering::Relaxed),
            ),
        ] {
            let g = ConstGauge::new(v as i64);
            g.encode(enc.encode_descriptor(name, help, None, g.metric_type())?)?;
        }
        for (name, help, v) in [
            (
                "cairn_api_reads_rejected",
                "Reads refused with 503 because the queue was full.",
                ps.rejected.load(Ordering::Relaxed),
            ),
            (
                "cairn_api_reads_cancelled",
                "Reads stopped or skipped because their caller stopped waiting (client gone, timeout).",
                ps.cancelled.load(Ordering::Relaxed),
            ),
        ] {
            let c = ConstCounter::new(v);
            c.encode(enc.encode_descriptor(name, help, None, c.metric_type())?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::test_util::{app, call, get};
    use cairn_common::MemStore;
    use std::sync::Arc;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requests_are_counted_by_matched_route() {
        let app = app(Arc::new(MemStore::new()));
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

    /// Every name `/metrics` served before the registry, with its type,
    /// parsed as a scraper would.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn exposition_parses_with_the_names_it_always_had() {
        let app = app(Arc::new(MemStore::new()));
        assert_eq!(call(&app, get("/api/v1/query?query=1")).await.0, 200);
        let (code, text) = call(&app, get("/metrics")).await;
        assert_eq!(code, 200);
        assert!(
            !text.contains("# EOF") && !text.contains("# UNIT"),
            "{text}"
        );
        assert!(!text.contains(".."), "{text}");
        let lines = text.lines().map(|l| Ok(l.to_string()));
        let scrape = prometheus_parse::Scrape::parse(lines).expect("parses");
        let value = |name: &str| {
            scrape
                .samples
                .iter()
                .find(|s| s.metric == name)
                .map(|s| s.value.clone())
                .unwrap_or_else(|| panic!("{name} missing in {text}"))
        };
        use prometheus_parse::Value;
        for name in [
            "cairn_api_http_requests_total",
            "cairn_ingest_samples_received_total",
            "cairn_ingest_samples_invalid_total",
            "cairn_ingest_samples_rejected_total",
            "cairn_ingest_exemplars_received_total",
            "cairn_api_reads_rejected_total",
            "cairn_api_reads_cancelled_total",
        ] {
            assert!(matches!(value(name), Value::Counter(_)), "{name}");
        }
        for name in ["cairn_api_reads_running", "cairn_api_reads_queued"] {
            assert!(matches!(value(name), Value::Gauge(_)), "{name}");
        }
        #[cfg(target_os = "linux")]
        {
            assert!(matches!(
                value("process_cpu_seconds_total"),
                Value::Counter(_)
            ));
            for name in [
                "process_start_time_seconds",
                "process_virtual_memory_bytes",
                "process_resident_memory_bytes",
                "process_open_fds",
                "process_max_fds",
            ] {
                match value(name) {
                    Value::Gauge(v) => assert!(v > 0.0, "{name} = {v}"),
                    v => panic!("{name}: {v:?}"),
                }
            }
        }
    }

    /// A scraper that asks for OpenMetrics gets it as the encoder wrote it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn openmetrics_when_accepted() {
        use axum::body::Body;
        use tower::ServiceExt;
        let app = app(Arc::new(MemStore::new()));
        let req = axum::http::Request::get("/metrics")
            .header(
                "accept",
                "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
            )
            .body(Body::empty())
            .unwrap();
        let r = app.oneshot(req).await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], super::OPENMETRICS);
        let b = axum::body::to_bytes(r.into_body(), usize::MAX)
            .await
            .unwrap();
        let text = String::from_utf8(b.to_vec()).unwrap();
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert!(
            text.contains("# TYPE cairn_api_reads_cancelled counter\n"),
            "{text}"
        );
        assert!(
            text.contains("\ncairn_api_reads_cancelled_total 0\n"),
            "{text}"
        );
    }

    #[test]
    fn classic_names_counter_families_with_total() {
        let om = "# HELP a_seconds Time.\n# TYPE a_seconds counter\n# UNIT a_seconds seconds\na_seconds_total 1.5\n# HELP g Gauge.\n# TYPE g gauge\ng 2\n# EOF\n";
        assert_eq!(
            super::to_classic(om),
            "# HELP a_seconds_total Time.\n# TYPE a_seconds_total counter\na_seconds_total 1.5\n# HELP g Gauge.\n# TYPE g gauge\ng 2\n"
        );
    }
}
