//! `cairn-api`: the HTTP surface of Cairn.
//!
//! Owns: remote write (`/api/v1/write`), the Prometheus read API (`series`,
//! `labels`, `label/<name>/values`), the PromQL query API and remote read
//! (module `query`), VictoriaMetrics-style `/api/v1/export`,
//! admin (`/admin/v1/flush`), `/metrics`, `/-/healthy`, `/-/ready`. Maps
//! errors to the status codes clients expect (remote write: 400 is never
//! retried, 429/5xx are).
//!
//! Must never depend on: `cairn-storage` or RocksDB. It talks to the store
//! only through the `cairn-common` traits plus the small [`Admin`] trait, so
//! the same router serves an in-process store or a cluster client.

// Handlers return `Result<_, Response>` so an early error is the response
// itself (the axum idiom); its size does not matter next to a request.
#![allow(clippy::result_large_err)]

#[doc(hidden)]
pub mod fuzzing;
mod params;
mod pool;
mod process;
mod query;
mod selector;
mod server;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use cairn_common::{Labels, Matcher, SampleWriter, SeriesSource, StorageError};
use params::Params;
pub use params::{parse_duration_ms, parse_time_ms};
pub use query::{format_float, write_timestamp, PROMETHEUS_COMPAT_VERSION};
pub use selector::parse_selector;
use serde_json::{json, Value};
pub use server::ServerOptions;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// Store operations the HTTP layer needs beyond reads and writes.
pub trait Admin: Send + Sync {
    /// Seals and flushes everything in the head; returns filesets written.
    fn flush(&self) -> Result<usize, String>;
    /// Appends the store's self-metrics (Prometheus text format).
    fn render_metrics(&self, out: &mut String);
}

/// What the router serves from, set once recovery is complete.
pub struct Backend {
    pub source: Arc<dyn SeriesSource>,
    pub writer: Arc<dyn SampleWriter>,
    pub admin: Arc<dyn Admin>,
}

#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Largest accepted request body (compressed), bytes.
    pub max_body_size: usize,
    /// PromQL engine limits (lookback delta, max samples, query timeout).
    pub engine: cairn_promql::EngineOptions,
    /// Reads (queries, series, export, remote read) running at once
    /// (`query.max-concurrency`).
    pub max_concurrency: usize,
    /// Reads waiting for a thread before new ones get 503 (`query.max-queued`).
    pub max_queued: usize,
    /// Ingest limits (labels, series per request, future window, decoded size).
    pub ingest: cairn_common::IngestLimits,
    /// Most samples one remote read may return (`query.remote-read-sample-limit`).
    pub remote_read_sample_limit: usize,
    /// Remote reads running at once (`query.remote-read-concurrent-limit`).
    pub remote_read_concurrent_limit: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            max_body_size: 64 << 20,
            engine: cairn_promql::EngineOptions::default(),
            max_concurrency: 20,
            max_queued: 200,
            ingest: cairn_common::IngestLimits::default(),
            remote_read_sample_limit: 10_000_000,
            remote_read_concurrent_limit: 10,
        }
    }
}

#[derive(Default)]
struct HttpMetrics {
    /// Requests by matched route and status (one middleware counts them all).
    requests: Mutex<BTreeMap<String, BTreeMap<u16, u64>>>,
    samples_received: AtomicU64,
    samples_invalid: AtomicU64,
    samples_rejected: AtomicU64,
    exemplars_received: AtomicU64,
}

struct Inner {
    cfg: ApiConfig,
    backend: OnceLock<Backend>,
    metrics: HttpMetrics,
    reads: pool::ReadPool,
    /// Remote reads in flight (a [`pool::Slot`] each).
    remote_reads: Arc<AtomicUsize>,
}

/// Shared state of the router. Cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

impl AppState {
    /// Fails only when no read thread can be started.
    pub fn new(cfg: ApiConfig) -> std::io::Result<Self> {
        let reads = pool::ReadPool::new(cfg.max_concurrency, cfg.max_queued)?;
        Ok(Self(Arc::new(Inner {
            cfg,
            backend: OnceLock::new(),
            metrics: HttpMetrics::default(),
            reads,
            remote_reads: Arc::new(AtomicUsize::new(0)),
        })))
    }

    /// Cancels every read (queries stop at their next step, exports at their
    /// next chunk) and waits up to `wait` for them; true when none is left.
    pub async fn stop_reads(&self, wait: std::time::Duration) -> bool {
        self.0.reads.stop(wait).await
    }

    /// Installs the backend; from then on `/-/ready` answers 200.
    pub fn set_ready(&self, backend: Backend) {
        let _ = self.0.backend.set(backend);
    }

    fn backend(&self) -> Result<&Backend, Response> {
        self.0.backend.get().ok_or_else(|| {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: recovery in progress\n",
            )
                .into_response()
        })
    }

    fn count(&self, route: &str, status: StatusCode) {
        let mut m = self
            .0
            .metrics
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        // Looked up by &str: a String is built only for a route's first request.
        if let Some(by_code) = m.get_mut(route) {
            *by_code.entry(status.as_u16()).or_default() += 1;
        } else {
            m.insert(route.to_string(), BTreeMap::from([(status.as_u16(), 1)]));
        }
    }
}

/// The full router.
pub fn router(state: AppState) -> Router {
    let limit = state.0.cfg.max_body_size;
    Router::new()
        .route("/api/v1/write", post(remote_write))
        .route("/api/v1/prom/remote/write", post(remote_write))
        .route("/api/v1/series", get(series).post(series))
        .route("/api/v1/labels", get(labels).post(labels))
        .route("/api/v1/label/{name}/values", get(label_values))
        .route("/api/v1/export", get(export).post(export))
        .route(
            "/api/v1/query",
            get(query::instant_query).post(query::instant_query),
        )
        .route(
            "/api/v1/query_range",
            get(query::range_query).post(query::range_query),
        )
        .route(
            "/api/v1/query_exemplars",
            get(query::query_exemplars).post(query::query_exemplars),
        )
        .route("/api/v1/metadata", get(query::metadata))
        .route(
            "/api/v1/format_query",
            get(query::format_query).post(query::format_query),
        )
        .route("/api/v1/status/buildinfo", get(query::buildinfo))
        .route("/api/v1/status/config", get(query::status_config))
        .route("/api/v1/status/flags", get(query::status_flags))
        .route("/api/v1/read", post(query::remote_read))
        .route("/admin/v1/flush", post(flush))
        .route("/metrics", get(metrics))
        .route("/-/healthy", get(|| async { "Cairn is Healthy.\n" }))
        .route("/-/ready", get(ready))
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            count_requests,
        ))
        .with_state(state)
}

/// Counts every request by the route it matched and its status
/// (`cairn_api_http_requests_total`); unmatched paths count as `unmatched`.
async fn count_requests(
    State(st): State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    // MatchedPath is a shared string: cloning it copies no text.
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .cloned();
    let resp = next.run(req).await;
    st.count(
        route.as_ref().map_or("unmatched", |m| m.as_str()),
        resp.status(),
    );
    resp
}

/// Serves `router` on an already-bound listener until `shutdown` resolves,
/// with the default [`ServerOptions`].
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, router, ServerOptions::default(), shutdown).await
}

/// Serves `router` on an already-bound listener with the given timeouts and
/// connection cap until `shutdown` resolves; then stops accepting, closes
/// idle connections and returns once the requests in flight are answered.
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    router: Router,
    opts: ServerOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    server::run(listener, router, opts, shutdown).await
}

fn tenant(headers: &HeaderMap) -> Result<String, Response> {
    let h = headers
        .get("x-scope-orgid")
        .map(|v| v.to_str().unwrap_or("\u{fffd}"));
    cairn_ingest::tenant_from_header(h)
        .map_err(|e| api_error(StatusCode::BAD_REQUEST, "bad_data", &e.to_string()))
}

/// At most `selector::ECHO_MAX` bytes of request input, for an error message.
fn echo(s: &str) -> std::borrow::Cow<'_, str> {
    cairn_common::limits::truncate_str(s, selector::ECHO_MAX)
}

/// Longest error message sent: a safety net for errors from the parser,
/// engine or store that quote request input (a query, a regex) whole.
const MAX_ERROR_MESSAGE: usize = 1024;

fn api_error(status: StatusCode, kind: &str, msg: &str) -> Response {
    let msg = cairn_common::limits::truncate_str(msg, MAX_ERROR_MESSAGE);
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        json!({"status": "error", "errorType": kind, "error": msg}).to_string(),
    )
        .into_response()
}

fn storage_error(e: StorageError) -> Response {
    let status = match &e {
        StorageError::Invalid(_) => StatusCode::BAD_REQUEST,
        e if e.is_retryable() => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let kind = if status == StatusCode::BAD_REQUEST {
        "bad_data"
    } else {
        "internal"
    };
    api_error(status, kind, &e.to_string())
}

fn success(data: Value) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        json!({"status": "success", "data": data}).to_string(),
    )
        .into_response()
}

/// Runs a read on the read pool (bounded concurrency, a known stack, a
/// queue; see `pool`) within `timeout`. `f` gets the read's cancel flag,
/// set when the caller stops waiting (client gone, timeout passed).
pub(crate) async fn blocking_read<T: Send + 'static>(
    st: &AppState,
    timeout: std::time::Duration,
    f: impl FnOnce(Arc<std::sync::atomic::AtomicBool>) -> T + Send + 'static,
) -> Result<T, Response> {
    match tokio::time::timeout(timeout, st.0.reads.run(f)).await {
        Ok(r) => r,
        Err(_) => Err(api_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            &format!(
                "query timed out after {:?} waiting for or running on a query thread (query.timeout)",
                timeout
            ),
        )),
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Response> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        api_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            &format!("task failed: {e}"),
        )
    })
}

fn text(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

async fn remote_write(State(st): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let resp = remote_write_inner(&st, &headers, body)
        .await
        .unwrap_or_else(|r| r);
    resp
}

async fn remote_write_inner(
    st: &AppState,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response, Response> {
    let backend = st.backend()?;
    let hv = |name: header::HeaderName| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_ascii_lowercase)
    };
    if let Some(ct) = hv(header::CONTENT_TYPE) {
        let mut parts = ct.split(';').map(str::trim);
        let media = parts.next().unwrap_or("");
        if media != "application/x-protobuf" {
            return Err(text(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "unsupported Content-Type {:?}: remote write expects application/x-protobuf\n",
                    echo(media)
                ),
            ));
        }
        if let Some(proto) = parts.find_map(|p| p.strip_prefix("proto=")) {
            if proto != "prometheus.writerequest" {
                return Err(text(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    format!("unsupported remote-write message {:?}: this endpoint accepts prometheus.WriteRequest (remote write 1.0)\n", echo(proto)),
                ));
            }
        }
    }
    if let Some(enc) = hv(header::CONTENT_ENCODING) {
        if enc != "snappy" {
            return Err(text(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "unsupported Content-Encoding {:?}: remote write expects snappy\n",
                    echo(&enc)
                ),
            ));
        }
    }
    let tenant = tenant(headers)?;
    let limits = st.0.cfg.ingest.clone();
    let now = chrono::Utc::now().timestamp_millis();
    // Decoding a large body is CPU work: off the async workers, with the write.
    let writer = backend.writer.clone();
    let body_for_decode = body.clone();
    let (decoded, outcome) = blocking(move || {
        let (batch, invalid) =
            cairn_ingest::decode_prepared(&tenant, &body_for_decode, &limits, now)?;
        let n_samples = batch.sample_count() as u64;
        let outcome = if batch.series.is_empty() && batch.metadata.is_empty() {
            None
        } else {
            Some(writer.write_prepared(&tenant, batch))
        };
        Ok::<_, cairn_ingest::IngestError>(((n_samples, invalid), outcome))
    })
    .await?
    .map_err(|e| {
        let status = match e {
            cairn_ingest::IngestError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            _ => StatusCode::BAD_REQUEST,
        };
        text(status, format!("{e}\n"))
    })?;
    let (n_samples, invalid) = decoded;
    let m = &st.0.metrics;
    m.samples_invalid.fetch_add(
        invalid.iter().map(|i| i.samples as u64).sum(),
        Ordering::Relaxed,
    );
    // A refused series is echoed cut short: it may hold thousands of labels.
    let shown = |s: &str| cairn_common::limits::truncate_str(s, 512).into_owned();
    let mut problems: Vec<String> = invalid
        .iter()
        .map(|i| format!("series {}: {}", shown(&i.series), i.reason))
        .collect();
    if let Some(outcome) = outcome {
        let outcome = outcome.map_err(|e| {
            let status = match &e {
                StorageError::Invalid(_) => StatusCode::BAD_REQUEST,
                e if e.is_retryable() => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            if status != StatusCode::BAD_REQUEST {
                tracing::warn!(?e, "remote write failed in storage");
            }
            text(status, format!("storage error: {e}\n"))
        })?;
        m.samples_received.fetch_add(n_samples, Ordering::Relaxed);
        m.exemplars_received
            .fetch_add(outcome.accepted_exemplars as u64, Ordering::Relaxed);
        m.samples_rejected.fetch_add(
            outcome.rejections.iter().map(|r| r.samples as u64).sum(),
            Ordering::Relaxed,
        );
        problems.extend(
            outcome
                .rejections
                .iter()
                .map(|r| format!("series {}: {}", shown(&r.series), r.reason)),
        );
    }
    if problems.is_empty() {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let total = problems.len();
    let mut body = String::new();
    for p in problems.iter().take(20) {
        let _ = writeln!(body, "{p}");
    }
    if total > 20 {
        let _ = writeln!(body, "... and {} more invalid series", total - 20);
    }
    let _ = writeln!(body, "(the valid rest of the request was stored)");
    Ok(text(StatusCode::BAD_REQUEST, body))
}

/// Parsed `match[]`, `start`, `end` of the read endpoints.
struct ReadArgs {
    matchers: Vec<Vec<Matcher>>,
    start: i64,
    end: i64,
}

fn read_args(p: &Params, require_match: bool) -> Result<ReadArgs, Response> {
    let bad = |m: String| api_error(StatusCode::BAD_REQUEST, "bad_data", &m);
    let mut matchers = Vec::new();
    for s in p.all("match[]") {
        matchers.push(parse_selector(s).map_err(bad)?);
    }
    if require_match && matchers.is_empty() {
        return Err(bad("no match[] parameter provided".into()));
    }
    let start = match p.get("start") {
        Some(s) => {
            parse_time_ms(s).map_err(|e| bad(format!("invalid parameter \"start\": {e}")))?
        }
        None => params::MIN_TIME,
    };
    let end = match p.get("end") {
        Some(s) => parse_time_ms(s).map_err(|e| bad(format!("invalid parameter \"end\": {e}")))?,
        None => params::MAX_TIME,
    };
    if end < start {
        return Err(bad(
            "invalid parameter \"end\": end timestamp must not be before start time".into(),
        ));
    }
    Ok(ReadArgs {
        matchers,
        start,
        end,
    })
}

/// Runs `f` once per `match[]` selector (once with no matchers when there are
/// none) and returns the sorted union, as Prometheus does for several `match[]`.
fn union_over_matches<T: Ord>(
    matchers: &[Vec<Matcher>],
    mut f: impl FnMut(&[Matcher]) -> Result<Vec<T>, StorageError>,
) -> Result<Vec<T>, StorageError> {
    if matchers.is_empty() {
        return f(&[]);
    }
    let mut all = Vec::new();
    for m in matchers {
        all.extend(f(m)?);
    }
    all.sort();
    all.dedup();
    Ok(all)
}

fn labels_json(l: &Labels) -> Value {
    Value::Object(
        l.iter()
            .map(|l| (l.name.clone(), Value::String(l.value.clone())))
            .collect(),
    )
}

async fn series(
    State(st): State<AppState>,
    method: Method,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    let r = async {
        let backend = st.backend()?;
        let tenant = tenant(&headers)?;
        let p = Params::parse(q.as_deref(), &method, &headers, &body);
        let args = read_args(&p, true)?;
        let src = backend.source.clone();
        let sets = blocking_read(&st, st.0.cfg.engine.timeout, move |_| {
            union_over_matches(&args.matchers, |m| {
                src.series(&tenant, m, args.start, args.end)
            })
        })
        .await?
        .map_err(storage_error)?;
        Ok::<_, Response>(success(Value::Array(
            sets.iter().map(labels_json).collect(),
        )))
    }
    .await
    .unwrap_or_else(|r| r);
    r
}

async fn labels(
    State(st): State<AppState>,
    method: Method,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    let r = async {
        let backend = st.backend()?;
        let tenant = tenant(&headers)?;
        let p = Params::parse(q.as_deref(), &method, &headers, &body);
        let args = read_args(&p, false)?;
        let src = backend.source.clone();
        let names = blocking_read(&st, st.0.cfg.engine.timeout, move |_| {
            union_over_matches(&args.matchers, |m| {
                src.label_names(&tenant, m, args.start, args.end)
            })
        })
        .await?
        .map_err(storage_error)?;
        Ok::<_, Response>(success(json!(names)))
    }
    .await
    .unwrap_or_else(|r| r);
    r
}

async fn label_values(
    State(st): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let r = async {
        let backend = st.backend()?;
        let tenant = tenant(&headers)?;
        let p = Params::parse(q.as_deref(), &Method::GET, &headers, &[]);
        let args = read_args(&p, false)?;
        let src = backend.source.clone();
        let values = blocking_read(&st, st.0.cfg.engine.timeout, move |_| {
            union_over_matches(&args.matchers, |m| {
                src.label_values(&tenant, &name, m, args.start, args.end)
            })
        })
        .await?
        .map_err(storage_error)?;
        Ok::<_, Response>(success(json!(values)))
    }
    .await
    .unwrap_or_else(|r| r);
    r
}

/// A float as VictoriaMetrics's export writes it: a JSON number, or a string
/// for the values JSON cannot hold.
fn export_value(v: f64) -> Value {
    if v.is_finite() {
        serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number)
    } else if v.is_nan() {
        Value::String("NaN".into())
    } else if v > 0.0 {
        Value::String("+Inf".into())
    } else {
        Value::String("-Inf".into())
    }
}

async fn export(
    State(st): State<AppState>,
    method: Method,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    let r = async {
        let backend = st.backend()?;
        let tenant = tenant(&headers)?;
        let p = Params::parse(q.as_deref(), &method, &headers, &body);
        let args = read_args(&p, true)?;
        let src = backend.source.clone();
        let max_samples = st.0.cfg.engine.max_samples;
        let stall = st.0.cfg.engine.timeout;
        // Lines go out in chunks as series batches are read; a full channel
        // holds the reader back, a closed one (client gone) stops it.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<ExportChunk>(4);
        let reads = st.clone();
        let failed = tx.clone();
        tokio::spawn(async move {
            let res = reads
                .0
                .reads
                .run(move |cancel| export_lines(&*src, &tenant, &args, max_samples, stall, &cancel, &tx))
                .await;
            // Refused by the pool or panicked: say so, before or in the stream.
            if let Err(r) = res {
                let status = r.status();
                let msg = match status {
                    StatusCode::SERVICE_UNAVAILABLE => "too many concurrent reads (query.max-concurrency, query.max-queued); retry later",
                    _ => "export failed: the read panicked",
                };
                let _ = failed.send(Err((status, msg.to_string()))).await;
            }
        });
        // The first chunk decides the status: an error before any line is
        // an ordinary error response; after that the stream is cut.
        let first = match rx.recv().await {
            None => Bytes::new(),
            Some(Ok(b)) => b,
            Some(Err((status, e))) => {
                let kind = if status == StatusCode::UNPROCESSABLE_ENTITY {
                    "execution"
                } else if status.is_server_error() && status != StatusCode::INTERNAL_SERVER_ERROR {
                    "unavailable"
                } else {
                    "internal"
                };
                return Err(api_error(status, kind, &e));
            }
        };
        let body = ChunkBody {
            first: Some(first),
            rx,
        };
        Ok::<_, Response>(
            (
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/stream+json"),
                )],
                axum::body::Body::new(body),
            )
                .into_response(),
        )
    }
    .await
    .unwrap_or_else(|r| r);
    r
}

/// One piece of an export: lines, or why it stopped (with the status to
/// answer when nothing was sent yet).
type ExportChunk = Result<Bytes, (StatusCode, String)>;

/// Export chunk size: lines are sent once this much is buffered.
const EXPORT_CHUNK_BYTES: usize = 256 << 10;

/// Hands `chunk` to the response, waiting while the client reads the ones
/// before it, at most `stall` without progress. False when the client is
/// gone or stalled: the export stops and its read thread is free again.
fn send_chunk(
    tx: &tokio::sync::mpsc::Sender<ExportChunk>,
    mut chunk: ExportChunk,
    stall: std::time::Duration,
    cancel: &std::sync::atomic::AtomicBool,
) -> bool {
    use tokio::sync::mpsc::error::TrySendError;
    let deadline = std::time::Instant::now() + stall;
    let mut nap = std::time::Duration::from_micros(200);
    loop {
        match tx.try_send(chunk) {
            Ok(()) => return true,
            Err(TrySendError::Closed(_)) => return false,
            Err(TrySendError::Full(c)) => {
                if cancel.load(Ordering::Relaxed) {
                    return false;
                }
                if std::time::Instant::now() > deadline {
                    tracing::warn!(
                        ?stall,
                        "export stopped: the client read nothing for the query timeout"
                    );
                    return false;
                }
                chunk = c;
                std::thread::sleep(nap);
                nap = (nap * 2).min(std::time::Duration::from_millis(50));
            }
        }
    }
}

/// Writes the export's JSON lines to `tx` in chunks, reading series in
/// batches; at most `max_samples` samples, else an error ends the stream.
fn export_lines(
    src: &dyn SeriesSource,
    tenant: &str,
    args: &ReadArgs,
    max_samples: usize,
    stall: std::time::Duration,
    cancel: &std::sync::atomic::AtomicBool,
    tx: &tokio::sync::mpsc::Sender<ExportChunk>,
) {
    let mut out = String::new();
    let mut seen = std::collections::HashSet::new();
    let mut total = 0usize;
    let mut failed: Option<(StatusCode, String)> = None;
    let mut gone = false;
    for m in &args.matchers {
        let res = src.select_batched(tenant, m, args.start, args.end, &mut |batch| {
            for s in batch {
                if !seen.insert(s.labels.clone()) {
                    continue;
                }
                total += s.samples.len();
                if total > max_samples {
                    failed = Some((StatusCode::UNPROCESSABLE_ENTITY, format!(
                        "export would return more than {max_samples} samples (query.max-samples): narrow match[] or the time range"
                    )));
                    return false;
                }
                let line = json!({
                    "metric": labels_json(&s.labels),
                    "values": s.samples.iter().map(|x| export_value(x.v)).collect::<Vec<_>>(),
                    "timestamps": s.samples.iter().map(|x| x.t).collect::<Vec<_>>(),
                });
                let _ = writeln!(out, "{line}");
                if out.len() >= EXPORT_CHUNK_BYTES {
                    let chunk = Bytes::from(std::mem::take(&mut out));
                    if !send_chunk(tx, Ok(chunk), stall, cancel) {
                        gone = true;
                        return false;
                    }
                }
            }
            !cancel.load(Ordering::Relaxed)
        });
        if let Err(e) = res {
            let status = if e.is_retryable() {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::INTERNAL_SERVER_ERROR
            };
            failed = Some((status, format!("export failed: {e}")));
        }
        if failed.is_none() && !gone && cancel.load(Ordering::Relaxed) {
            // Cut the stream with an error so a partial export never looks whole.
            failed = Some((
                StatusCode::SERVICE_UNAVAILABLE,
                "export cancelled: the server is shutting down".into(),
            ));
        }
        if failed.is_some() || gone {
            break;
        }
    }
    if let Some(e) = failed {
        tracing::warn!(%tenant, err = %e.1, "export stopped");
        let _ = send_chunk(tx, Err(e), stall, cancel);
        return;
    }
    if !out.is_empty() && !gone {
        let _ = send_chunk(tx, Ok(Bytes::from(out)), stall, cancel);
    }
}

/// A response body fed by a channel of chunks; an `Err` chunk aborts it.
struct ChunkBody {
    first: Option<Bytes>,
    rx: tokio::sync::mpsc::Receiver<ExportChunk>,
}

impl http_body::Body for ChunkBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
        if let Some(b) = self.first.take() {
            if !b.is_empty() {
                return std::task::Poll::Ready(Some(Ok(http_body::Frame::data(b))));
            }
        }
        self.rx.poll_recv(cx).map(|c| {
            c.map(|r| {
                r.map(http_body::Frame::data)
                    .map_err(|(_, e)| std::io::Error::other(e))
            })
        })
    }
}

async fn flush(State(st): State<AppState>) -> Response {
    let r = async {
        let admin = st.backend()?.admin.clone();
        let n = blocking(move || admin.flush()).await?.map_err(|e| {
            api_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                &format!("flush failed: {e}"),
            )
        })?;
        Ok::<_, Response>(success(json!({"filesets_written": n})))
    }
    .await
    .unwrap_or_else(|r| r);
    r
}

async fn ready(State(st): State<AppState>) -> Response {
    match st.backend() {
        Ok(_) => "Cairn is Ready.\n".into_response(),
        Err(r) => r,
    }
}

async fn metrics(State(st): State<AppState>) -> Response {
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
