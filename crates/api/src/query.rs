//! The PromQL half of the Prometheus HTTP API: `query`, `query_range`,
//! `query_exemplars`, `metadata`, `format_query`, `status/buildinfo`,
//! `status/config`, `status/flags`, and remote read (`POST /api/v1/read`).
//!
//! Results are written as Prometheus writes them, byte for byte (the e2e
//! test `json_is_byte_identical_to_prometheus` compares with a real one):
//! sample values as strings per Prometheus's `jsonutil.MarshalValue` (Go's
//! shortest `'f'` form, `'e'` below 1e-6 and from 1e21; `"NaN"`, `"+Inf"`),
//! timestamps as Unix seconds with a 3-digit millisecond fraction when
//! non-zero (`jsonutil.MarshalTimestamp`), `warnings`/`infos` only when
//! non-empty.
//! The engine is synchronous; every evaluation runs on the blocking pool.

use crate::params::{Params, MAX_TIME, MIN_TIME};
use crate::{
    api_error, blocking_read, labels_json, parse_duration_ms, parse_time_ms, success, tenant,
};
use crate::{AppState, Backend};
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use cairn_common::{ExemplarSeries, Labels, MatchOp, Matcher, StorageError};
use cairn_promql::{Engine, EngineOptions, QueryError, QueryResult, Value as PValue};
use promql_parser::parser::Expr;
use serde_json::json;
use std::time::Duration;

/// Prometheus's cap on points per series of a range query.
const MAX_POINTS_PER_SERIES: i64 = 11_000;

/// The Prometheus version reported by `status/buildinfo`. Grafana reads
/// `version` to decide which query features to offer; Cairn implements the
/// 2.53 API surface, so it reports that and its own version separately.
pub const PROMETHEUS_COMPAT_VERSION: &str = "2.53.0";

// ------------------------------------------------------------- formatting

/// Appends `v` as Prometheus writes a sample value (without quotes), i.e.
/// its `jsonutil.MarshalValue` (see [`cairn_common::gofmt::write_json_float`]).
pub fn write_float(out: &mut String, v: f64) {
    cairn_common::gofmt::write_json_float(out, v);
}

/// `v` formatted by [`write_float`].
pub fn format_float(v: f64) -> String {
    let mut s = String::new();
    write_float(&mut s, v);
    s
}

/// Appends a millisecond timestamp as Prometheus's `MarshalTimestamp` does:
/// whole seconds, then `.` and three fraction digits when the fraction is
/// non-zero (`1700000000`, `1700000000.500`, `-0.001`). A JSON number.
pub fn write_timestamp(out: &mut String, t_ms: i64) {
    if t_ms < 0 {
        out.push('-');
    }
    let a = t_ms.unsigned_abs();
    out.push_str(itoa::Buffer::new().format(a / 1000));
    let frac = a % 1000;
    if frac != 0 {
        let d = [
            b'.',
            b'0' + (frac / 100) as u8,
            b'0' + (frac / 10 % 10) as u8,
            b'0' + (frac % 10) as u8,
        ];
        out.push_str(std::str::from_utf8(&d).unwrap_or(""));
    }
}

fn write_json_str(out: &mut String, s: &str) {
    // serde_json escapes exactly what JSON requires; writing into a String
    // cannot fail, and a &str always serialises.
    if let Ok(q) = serde_json::to_string(s) {
        out.push_str(&q);
    }
}

fn write_labels(out: &mut String, l: &Labels) {
    out.push('{');
    for (i, lb) in l.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_json_str(out, &lb.name);
        out.push(':');
        write_json_str(out, &lb.value);
    }
    out.push('}');
}

/// `[t,"v"]`.
fn write_point(out: &mut String, t: i64, v: f64) {
    out.push('[');
    write_timestamp(out, t);
    out.push_str(",\"");
    write_float(out, v);
    out.push_str("\"]");
}

/// The `data` object of a query answer: `{"resultType":…,"result":…}`.
pub fn write_data(out: &mut String, value: &PValue) {
    out.push_str("{\"resultType\":\"");
    out.push_str(value.type_name());
    out.push_str("\",\"result\":");
    match value {
        PValue::Scalar { t, v } => write_point(out, *t, *v),
        PValue::String { t, v } => {
            out.push('[');
            write_timestamp(out, *t);
            out.push(',');
            write_json_str(out, v);
            out.push(']');
        }
        PValue::Vector(samples) => {
            out.push('[');
            for (i, s) in samples.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str("{\"metric\":");
                write_labels(out, &s.labels);
                out.push_str(",\"value\":");
                write_point(out, s.t, s.v);
                out.push('}');
            }
            out.push(']');
        }
        PValue::Matrix(series) => {
            out.push('[');
            for (i, s) in series.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str("{\"metric\":");
                write_labels(out, &s.labels);
                out.push_str(",\"values\":[");
                for (j, p) in s.samples.iter().enumerate() {
                    if j > 0 {
                        out.push(',');
                    }
                    write_point(out, p.t, p.v);
                }
                out.push_str("]}");
            }
            out.push(']');
        }
    }
    out.push('}');
}

fn write_str_array(out: &mut String, key: &str, items: &[String]) {
    if items.is_empty() {
        return;
    }
    out.push_str(",\"");
    out.push_str(key);
    out.push_str("\":[");
    for (i, w) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_json_str(out, w);
    }
    out.push(']');
}

/// The whole success body of a query answer.
pub fn render_result(r: &QueryResult) -> String {
    let points = match &r.value {
        PValue::Matrix(m) => m.iter().map(|s| s.samples.len()).sum::<usize>(),
        PValue::Vector(v) => v.len(),
        _ => 1,
    };
    let mut out = String::with_capacity(64 + points * 32);
    out.push_str("{\"status\":\"success\",\"data\":");
    write_data(&mut out, &r.value);
    write_str_array(&mut out, "warnings", &r.warnings);
    write_str_array(&mut out, "infos", &r.infos);
    out.push('}');
    out
}

fn json_response(body: String) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

// ------------------------------------------------------------------ errors

fn bad_data(msg: impl AsRef<str>) -> Response {
    api_error(StatusCode::BAD_REQUEST, "bad_data", msg.as_ref())
}

fn query_error(e: QueryError) -> Response {
    let status = match &e {
        QueryError::Parse(_) => StatusCode::BAD_REQUEST,
        QueryError::Execution(_) | QueryError::TooManySamples(_) => {
            StatusCode::UNPROCESSABLE_ENTITY
        }
        QueryError::Timeout(_) | QueryError::Cancelled(_) => StatusCode::SERVICE_UNAVAILABLE,
        QueryError::Storage(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    if status.is_server_error() {
        tracing::warn!(err = %e, kind = e.error_type(), "query failed");
    }
    api_error(status, e.error_type(), &e.to_string())
}

fn storage_error(e: StorageError) -> Response {
    crate::storage_error(e)
}

// -------------------------------------------------------------- parameters

fn param_time(p: &Params, name: &str, default: Option<i64>) -> Result<i64, Response> {
    match p.get(name) {
        Some(s) if !s.is_empty() => {
            parse_time_ms(s).map_err(|e| bad_data(format!("invalid parameter {name:?}: {e}")))
        }
        _ => default.ok_or_else(|| {
            bad_data(format!(
                "invalid parameter {name:?}: cannot parse \"\" to a valid timestamp"
            ))
        }),
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The engine for one request: the configured options, narrowed by the
/// request's `timeout` and overridden by its `lookback_delta`.
fn engine_for(base: &EngineOptions, p: &Params) -> Result<Engine, Response> {
    let mut opts = base.clone();
    if let Some(s) = p.get("timeout").filter(|s| !s.is_empty()) {
        let ms = parse_duration_ms(s)
            .map_err(|e| bad_data(format!("invalid parameter \"timeout\": {e}")))?;
        let d = Duration::from_millis(ms as u64);
        if d < opts.timeout {
            opts.timeout = d;
        }
    }
    if let Some(s) = p.get("lookback_delta").filter(|s| !s.is_empty()) {
        let ms = parse_duration_ms(s)
            .map_err(|e| bad_data(format!("error parsing lookback delta duration: {e}")))?;
        if ms > 0 {
            opts.lookback_delta_ms = ms;
        }
    }
    Ok(Engine::new(opts))
}

/// `limit`: most series returned (0 or absent: no limit).
fn param_limit(p: &Params) -> Result<usize, Response> {
    match p.get("limit").filter(|s| !s.is_empty()) {
        None => Ok(0),
        Some(s) => s
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .map(|n| n as usize)
            .ok_or_else(|| {
                bad_data(format!(
                    "invalid parameter \"limit\": {:?} is not a non-negative integer",
                    crate::echo(s)
                ))
            }),
    }
}

/// Truncates vectors and matrices to `limit` series, with Prometheus's warning.
fn apply_limit(r: &mut QueryResult, limit: usize) {
    if limit == 0 {
        return;
    }
    let truncated = match &mut r.value {
        PValue::Vector(v) if v.len() > limit => {
            v.truncate(limit);
            true
        }
        PValue::Matrix(m) if m.len() > limit => {
            m.truncate(limit);
            true
        }
        _ => false,
    };
    if truncated {
        r.warnings.push("results truncated due to limit".into());
    }
}

struct Req<'a> {
    st: &'a AppState,
    method: &'a Method,
    headers: &'a HeaderMap,
    query: Option<&'a str>,
    body: &'a [u8],
}

impl Req<'_> {
    fn setup(&self) -> Result<(&Backend, String, Params), Response> {
        let backend = self.st.backend()?;
        let tenant = tenant(self.headers)?;
        let p = Params::parse(self.query, self.method, self.headers, self.body);
        Ok((backend, tenant, p))
    }
}

macro_rules! handler {
    ($name:ident, $inner:ident) => {
        pub(crate) async fn $name(
            State(st): State<AppState>,
            method: Method,
            headers: HeaderMap,
            RawQuery(q): RawQuery,
            body: Bytes,
        ) -> Response {
            let req = Req {
                st: &st,
                method: &method,
                headers: &headers,
                query: q.as_deref(),
                body: &body,
            };
            $inner(req).await.unwrap_or_else(|r| r)
        }
    };
}

handler!(instant_query, instant_query_inner);
handler!(range_query, range_query_inner);
handler!(query_exemplars, exemplars_inner);
handler!(metadata, metadata_inner);
handler!(format_query, format_query_inner);

// ---------------------------------------------------------------- handlers

async fn instant_query_inner(req: Req<'_>) -> Result<Response, Response> {
    let (backend, tenant, p) = req.setup()?;
    let t = param_time(&p, "time", Some(now_ms()))?;
    let engine = engine_for(&req.st.0.cfg.engine, &p)?;
    let limit = param_limit(&p)?;
    let query = p.get("query").unwrap_or("").to_string();
    let src = backend.source.clone();
    let timeout = engine.options().timeout;
    // Evaluated and rendered on the read thread: the result is freed on the
    // thread that allocated it, and rendering is CPU work too.
    let body = blocking_read(req.st, timeout, move |cancel| {
        let mut r = engine
            .with_cancel(cancel)
            .instant_query(src.as_ref(), &tenant, &query, t)?;
        apply_limit(&mut r, limit);
        Ok::<_, QueryError>(render_result(&r))
    })
    .await?
    .map_err(query_error)?;
    Ok(json_response(body))
}

/// Validated `start`, `end`, `step` of a range query (ms).
pub fn range_params(p: &Params) -> Result<(i64, i64, i64), Response> {
    let start = param_time(p, "start", None)?;
    let end = param_time(p, "end", None)?;
    if end < start {
        return Err(bad_data(
            "invalid parameter \"end\": end timestamp must not be before start time",
        ));
    }
    let step_s = p.get("step").unwrap_or("");
    let step = parse_duration_ms(step_s)
        .map_err(|e| bad_data(format!("invalid parameter \"step\": {e}")))?;
    if step <= 0 {
        return Err(bad_data(
            "invalid parameter \"step\": zero or negative query resolution step widths are not accepted. Try a positive integer",
        ));
    }
    // For safety, limit the number of returned points per time series
    // (in i128: `end - start` of two in-range times fits, but stay exact).
    if (i128::from(end) - i128::from(start)) / i128::from(step) > i128::from(MAX_POINTS_PER_SERIES)
    {
        return Err(bad_data(
            "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)",
        ));
    }
    Ok((start, end, step))
}

async fn range_query_inner(req: Req<'_>) -> Result<Response, Response> {
    let (backend, tenant, p) = req.setup()?;
    let (start, end, step) = range_params(&p)?;
    let engine = engine_for(&req.st.0.cfg.engine, &p)?;
    let limit = param_limit(&p)?;
    let query = p.get("query").unwrap_or("").to_string();
    let src = backend.source.clone();
    let timeout = engine.options().timeout;
    let body = blocking_read(req.st, timeout, move |cancel| {
        let mut r = engine.with_cancel(cancel).range_query(
            src.as_ref(),
            &tenant,
            &query,
            start,
            end,
            step,
        )?;
        apply_limit(&mut r, limit);
        Ok::<_, QueryError>(render_result(&r))
    })
    .await?
    .map_err(query_error)?;
    Ok(json_response(body))
}

/// Every vector selector in `expr` as its `or` groups of Cairn matchers
/// (the engine's own conversion, [`cairn_promql::extract_selectors`]).
pub fn extract_selectors(expr: &Expr) -> Result<Vec<Vec<Matcher>>, String> {
    cairn_promql::extract_selectors(expr).map_err(|e| e.to_string())
}

/// Prometheus's exemplar answer: `[{"seriesLabels":{…},"exemplars":[…]}]`.
pub fn exemplars_json(series: &[ExemplarSeries]) -> serde_json::Value {
    serde_json::Value::Array(
        series
            .iter()
            .map(|s| {
                json!({
                    "seriesLabels": labels_json(&s.labels),
                    "exemplars": s.exemplars.iter().map(|e| json!({
                        "labels": labels_json(&e.labels),
                        "value": format_float(e.value),
                        "timestamp": timestamp_number(e.t),
                    })).collect::<Vec<_>>(),
                })
            })
            .collect(),
    )
}

/// A timestamp as a JSON number with Prometheus's digits.
fn timestamp_number(t_ms: i64) -> serde_json::Value {
    let mut s = String::new();
    write_timestamp(&mut s, t_ms);
    serde_json::from_str(&s).unwrap_or(serde_json::Value::Null)
}

async fn exemplars_inner(req: Req<'_>) -> Result<Response, Response> {
    let (backend, tenant, p) = req.setup()?;
    let start = param_time(&p, "start", Some(MIN_TIME))?;
    let end = param_time(&p, "end", Some(MAX_TIME))?;
    if end < start {
        return Err(bad_data(
            "invalid parameter \"end\": end timestamp must not be before start time",
        ));
    }
    let query = p.get("query").unwrap_or("").to_string();
    let engine = Engine::new(req.st.0.cfg.engine.clone());
    let src = backend.source.clone();
    let out = blocking_read(
        req.st,
        req.st.0.cfg.engine.timeout,
        move |_| -> Result<Vec<ExemplarSeries>, Response> {
            // Parsed here, on a read thread: parsing and dropping the tree recurse.
            let expr = engine.parse(&query).map_err(query_error)?;
            let selectors = extract_selectors(&expr).map_err(bad_data)?;
            let mut all: Vec<ExemplarSeries> = Vec::new();
            for m in &selectors {
                for s in src
                    .exemplars(&tenant, m, start, end)
                    .map_err(storage_error)?
                {
                    if !all.iter().any(|x| x.labels == s.labels) {
                        all.push(s);
                    }
                }
            }
            all.sort_by(|a, b| a.labels.cmp(&b.labels));
            Ok(all)
        },
    )
    .await??;
    Ok(success(exemplars_json(&out)))
}

fn param_int(p: &Params, name: &str, default: i64) -> Result<i64, Response> {
    match p.get(name).filter(|s| !s.is_empty()) {
        None => Ok(default),
        Some(s) => s
            .parse::<i64>()
            .map_err(|_| bad_data(format!("{name} must be a number"))),
    }
}

async fn metadata_inner(req: Req<'_>) -> Result<Response, Response> {
    let (backend, tenant, p) = req.setup()?;
    // Prometheus: -1 (absent) means no limit; 0 means none at all.
    let limit = param_int(&p, "limit", -1)?;
    let per_metric = param_int(&p, "limit_per_metric", -1)?;
    let metric = p
        .get("metric")
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    let src = backend.source.clone();
    let mut md = blocking_read(req.st, req.st.0.cfg.engine.timeout, move |_| {
        src.metadata(&tenant, metric.as_deref())
    })
    .await?
    .map_err(storage_error)?;
    md.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = serde_json::Map::new();
    for (name, m) in md {
        let entry = json!({"type": m.metric_type.as_str(), "help": m.help, "unit": m.unit});
        if let Some(serde_json::Value::Array(list)) = out.get_mut(&name) {
            if (per_metric < 0 || (list.len() as i64) < per_metric) && !list.contains(&entry) {
                list.push(entry);
            }
            continue;
        }
        if limit >= 0 && out.len() as i64 >= limit {
            break;
        }
        if per_metric == 0 {
            continue;
        }
        out.insert(name, serde_json::Value::Array(vec![entry]));
    }
    Ok(success(serde_json::Value::Object(out)))
}

async fn format_query_inner(req: Req<'_>) -> Result<Response, Response> {
    let (_, _, p) = req.setup()?;
    let query = p.get("query").unwrap_or("").to_string();
    let engine = Engine::new(req.st.0.cfg.engine.clone());
    // Parsing, printing and dropping the tree recurse: on a read thread.
    let pretty = blocking_read(req.st, req.st.0.cfg.engine.timeout, move |_| {
        engine.parse(&query).map(|e| e.prettify())
    })
    .await?
    .map_err(query_error)?;
    Ok(success(serde_json::Value::String(pretty)))
}

pub(crate) async fn buildinfo() -> Response {
    success(json!({
        "version": PROMETHEUS_COMPAT_VERSION,
        "revision": option_env!("CAIRN_GIT_REVISION").unwrap_or("unknown"),
        "branch": option_env!("CAIRN_GIT_BRANCH").unwrap_or("unknown"),
        "buildUser": "cairn",
        "buildDate": option_env!("CAIRN_BUILD_DATE").unwrap_or("unknown"),
        "goVersion": "none (Cairn is written in Rust)",
        "cairnVersion": env!("CARGO_PKG_VERSION"),
    }))
}

pub(crate) async fn status_config(State(st): State<AppState>) -> Response {
    let e = &st.0.cfg.engine;
    let yaml = format!(
        "global:\n  scrape_interval: 1m\n  evaluation_interval: 1m\n  query_log_file: \"\"\n# Cairn does not scrape; query settings: lookback-delta {}ms, max-samples {}, timeout {}ms\n",
        e.lookback_delta_ms,
        e.max_samples,
        e.timeout.as_millis()
    );
    success(json!({ "yaml": yaml }))
}

pub(crate) async fn status_flags(State(st): State<AppState>) -> Response {
    let e = &st.0.cfg.engine;
    success(json!({
        "query.lookback-delta": format!("{}ms", e.lookback_delta_ms),
        "query.max-samples": e.max_samples.to_string(),
        "query.timeout": format!("{}ms", e.timeout.as_millis()),
    }))
}

// ------------------------------------------------------------ remote read

fn read_error(status: StatusCode, msg: String) -> Response {
    // A matcher's regex error quotes the whole pattern: cut, as in api_error.
    let msg = cairn_common::limits::truncate_str(&msg, crate::MAX_ERROR_MESSAGE);
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{msg}\n"),
    )
        .into_response()
}

/// One remote-read query: matchers and the time range (ms, inclusive).
pub(crate) type ReadQuery = (Vec<Matcher>, i64, i64);

/// Decodes a remote-read body (snappy-compressed `prometheus.ReadRequest`,
/// at most `max_decoded` bytes decompressed) into its queries, or the status
/// and message to answer with (413 when too large, else 400).
pub(crate) fn decode_read_request(
    body: &[u8],
    max_decoded: usize,
) -> Result<Vec<ReadQuery>, (StatusCode, String)> {
    use cairn_proto::prompb;
    use prost::Message;
    let bad = |m: String| (StatusCode::BAD_REQUEST, m);
    let raw = cairn_ingest::decompress(body, max_decoded).map_err(|e| {
        let status = match e {
            cairn_ingest::IngestError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            _ => StatusCode::BAD_REQUEST,
        };
        (status, format!("remote read: {e}"))
    })?;
    let req = prompb::ReadRequest::decode(raw.as_slice())
        .map_err(|e| bad(format!("remote read: cannot decode ReadRequest: {e}")))?;
    if !req.accepted_response_types.is_empty() && !req.accepted_response_types.contains(&0) {
        return Err(bad(
            "remote read: only the SAMPLES response type is supported; add SAMPLES to accepted_response_types (STREAMED_XOR_CHUNKS is not implemented)".into(),
        ));
    }
    let mut queries = Vec::with_capacity(req.queries.len());
    for (i, q) in req.queries.iter().enumerate() {
        let mut ms = Vec::with_capacity(q.matchers.len());
        for m in &q.matchers {
            let op = match m.r#type {
                0 => MatchOp::Equal,
                1 => MatchOp::NotEqual,
                2 => MatchOp::RegexMatch,
                3 => MatchOp::RegexNoMatch,
                t => {
                    return Err(bad(format!(
                        "remote read: query {i}: unknown matcher type {t}"
                    )))
                }
            };
            ms.push(
                Matcher::new(op, m.name.clone(), m.value.clone())
                    .map_err(|e| bad(format!("remote read: query {i}: {e}")))?,
            );
        }
        if ms.is_empty() || ms.iter().all(|m| m.matches_empty()) {
            return Err(bad(format!(
                "remote read: query {i}: needs at least one matcher that does not match the empty string"
            )));
        }
        queries.push((ms, q.start_timestamp_ms, q.end_timestamp_ms));
    }
    Ok(queries)
}

/// `POST /api/v1/read`: snappy-compressed `prometheus.ReadRequest` in,
/// snappy-compressed `prometheus.ReadResponse` (SAMPLES) out.
pub(crate) async fn remote_read(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let r = remote_read_inner(&st, &headers, body)
        .await
        .unwrap_or_else(|r| r);
    r
}

async fn remote_read_inner(
    st: &AppState,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response, Response> {
    use cairn_proto::prompb;
    use prost::Message;
    let backend = st.backend()?;
    let tenant = tenant(headers)?;
    let queries = decode_read_request(&body, st.0.cfg.ingest.max_decoded_size)
        .map_err(|(status, msg)| read_error(status, msg))?;
    let src = backend.source.clone();
    // At most `query.remote-read-concurrent-limit` remote reads at once
    // (Prometheus: 10): each may hold up to its sample limit in memory.
    let _slot = crate::pool::Slot::take(
        &st.0.remote_reads,
        st.0.cfg.remote_read_concurrent_limit,
    )
    .ok_or_else(|| {
        read_error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "remote read: {} remote reads already running (query.remote-read-concurrent-limit); retry later",
                st.0.cfg.remote_read_concurrent_limit
            ),
        )
    })?;
    let max_samples = st.0.cfg.remote_read_sample_limit;
    let out = blocking_read(st, st.0.cfg.engine.timeout, move |cancel| -> Result<Vec<u8>, Response> {
        let mut results = Vec::with_capacity(queries.len());
        let mut total = 0usize;
        // Prometheus answers 400 for this too.
        let over = || {
            read_error(
                StatusCode::BAD_REQUEST,
                format!("remote read: exceeded sample limit ({max_samples}, query.remote-read-sample-limit)"),
            )
        };
        for (ms, start, end) in &queries {
            let mut ts = Vec::new();
            let mut exceeded = false;
            // Read in batches so the limit stops the read before it is all held.
            src.select_batched(&tenant, ms, *start, *end, &mut |batch| {
                for s in batch {
                    total += s.samples.len();
                    if total > max_samples {
                        exceeded = true;
                        return false;
                    }
                    ts.push(prompb::TimeSeries {
                        labels: s
                            .labels
                            .iter()
                            .map(|l| prompb::Label::new(&l.name, &l.value))
                            .collect(),
                        samples: s
                            .samples
                            .iter()
                            .map(|x| prompb::Sample {
                                value: x.v,
                                timestamp: x.t,
                            })
                            .collect(),
                        ..Default::default()
                    });
                }
                !cancel.load(std::sync::atomic::Ordering::Relaxed)
            })
            .map_err(storage_error)?;
            if exceeded {
                return Err(over());
            }
            results.push(prompb::QueryResult { timeseries: ts });
        }
        let resp = prompb::ReadResponse { results };
        snap::raw::Encoder::new()
            .compress_vec(&resp.encode_to_vec())
            .map_err(|e| {
                read_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("remote read: snappy compression failed: {e}"),
                )
            })
    })
    .await??;
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/x-protobuf"),
            (header::CONTENT_ENCODING, "snappy"),
        ],
        out,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{router, Admin, ApiConfig};
    use axum::body::Body;
    use axum::http::Request;
    use cairn_common::{MemSource, SampleWriter, SeriesSource};

    /// The previous, `format!`-based float writer: Rust's shortest
    /// round-trip digits laid out as Go's `FormatFloat(v, 'f'/'e', -1)`.
    fn reference_float(v: f64) -> String {
        if v.is_nan() {
            return "NaN".into();
        } else if v == f64::INFINITY {
            return "+Inf".into();
        } else if v == f64::NEG_INFINITY {
            return "-Inf".into();
        }
        let a = v.abs();
        if a != 0.0 && !(1e-6..1e21).contains(&a) {
            let e = format!("{v:e}");
            let (mant, exp) = e.split_once('e').unwrap();
            let (sign, digits) = match exp.strip_prefix('-') {
                Some(d) => ('-', d),
                None => ('+', exp),
            };
            format!("{mant}e{sign}{digits:0>2}")
        } else {
            format!("{v}")
        }
    }

    #[test]
    fn floats_are_written_as_go_writes_them() {
        let fixed = [
            (0.0, "0"),
            (-0.0, "-0"),
            (1.0, "1"),
            (-2.5, "-2.5"),
            (0.1, "0.1"),
            (1e-6, "0.000001"),
            (1e-7, "1e-07"),
            (2.025e22, "2.025e+22"),
            (1e21, "1e+21"),
            (1e20, "100000000000000000000"),
            (123456.789, "123456.789"),
            (5e-324, "5e-324"),
            (f64::MAX, "1.7976931348623157e+308"),
            (1.5e300, "1.5e+300"),
            // Exactly halfway between two shortest forms: Go rounds to
            // even (84418043664819.125; checked against Prometheus 2.42).
            (f64::from_bits(0x42d3_31c6_e056_6cc8), "84418043664819.12"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
        ];
        for (v, want) in fixed {
            assert_eq!(format_float(v), want, "{v:?}");
        }
        // Random bit patterns and decimal-looking values: the same layout
        // and length as the reference writer, and the value read back;
        // the digits differ only where two shortest forms are equally
        // near (Rust's `Display` rounds those up, Go to even).
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for i in 0..300_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let v = match i % 3 {
                0 => f64::from_bits(x),
                1 => (x % 10_000_000) as f64 / 10f64.powi((x % 13) as i32),
                _ => (x >> 11) as f64 * 10f64.powi((x % 40) as i32 - 20),
            };
            if !v.is_finite() {
                continue;
            }
            let (got, want) = (format_float(v), reference_float(v));
            if got != want {
                assert_eq!(got.len(), want.len(), "{v:?}: {got} vs {want}");
                let back: f64 = got.parse().unwrap();
                assert_eq!(back.to_bits(), v.to_bits(), "{v:?}: {got}");
                assert!(got.contains('e') == want.contains('e'), "{got} vs {want}");
            }
        }
    }

    #[test]
    fn timestamps_are_written_as_prometheus_writes_them() {
        for (t, want) in [
            (1_700_000_000_000, "1700000000"),
            (1_700_000_000_500, "1700000000.500"),
            (1_700_000_000_007, "1700000000.007"),
            (-1, "-0.001"),
            (0, "0"),
        ] {
            let mut s = String::new();
            write_timestamp(&mut s, t);
            assert_eq!(s, want);
        }
    }
    use std::sync::Arc;
    use tower::ServiceExt;

    #[test]
    fn floats_format_like_go() {
        for (v, want) in [
            (1.0, "1"),
            (-0.0, "-0"),
            (0.1, "0.1"),
            (0.000001, "0.000001"),
            (1.5e-7, "1.5e-07"),
            (-2.5e-10, "-2.5e-10"),
            (1e21, "1e+21"),
            (2.025e22, "2.025e+22"),
            (999999999999999900000.0, "999999999999999900000"),
            (123456789.125, "123456789.125"),
            (1.0 / 3.0, "0.3333333333333333"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
            (f64::MAX, "1.7976931348623157e+308"),
            (5e-324, "5e-324"),
        ] {
            assert_eq!(format_float(v), want, "{v:e}");
            if v.is_finite() {
                assert_eq!(want.parse::<f64>().unwrap().to_bits(), v.to_bits());
            }
        }
    }

    #[test]
    fn timestamps_format_like_prometheus() {
        let ts = |t| {
            let mut s = String::new();
            write_timestamp(&mut s, t);
            s
        };
        assert_eq!(ts(1_700_000_000_000), "1700000000");
        assert_eq!(ts(1_700_000_000_500), "1700000000.500");
        assert_eq!(ts(1_700_000_000_005), "1700000000.005");
        assert_eq!(ts(0), "0");
        assert_eq!(ts(-1), "-0.001");
        assert_eq!(ts(-1_500), "-1.500");
        assert_eq!(ts(i64::MIN), "-9223372036854775.808");
        // Always a valid JSON number.
        for t in [1_700_000_000_500, -1, i64::MIN, i64::MAX] {
            let v: serde_json::Value = serde_json::from_str(&ts(t)).unwrap();
            assert!(v.is_number());
        }
    }

    #[test]
    fn result_shapes() {
        use cairn_common::Sample;
        use cairn_promql::{InstantSample, RangeSeries};
        let l = Labels::from_pairs(&[("__name__", "up"), ("job", "a\"b")]);
        let r = QueryResult {
            value: PValue::Vector(vec![InstantSample {
                labels: l.clone(),
                t: 1_700_000_000_500,
                v: f64::NAN,
            }]),
            warnings: vec![],
            infos: vec!["PromQL info: x".into()],
        };
        assert_eq!(
            render_result(&r),
            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"__name__":"up","job":"a\"b"},"value":[1700000000.500,"NaN"]}]},"infos":["PromQL info: x"]}"#
        );
        let r = QueryResult {
            value: PValue::Matrix(vec![RangeSeries {
                labels: l,
                samples: vec![Sample::new(1000, 1.0), Sample::new(2000, f64::NEG_INFINITY)],
            }]),
            warnings: vec!["w".into()],
            infos: vec![],
        };
        assert_eq!(
            render_result(&r),
            r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"__name__":"up","job":"a\"b"},"values":[[1,"1"],[2,"-Inf"]]}]},"warnings":["w"]}"#
        );
        let r = QueryResult {
            value: PValue::Scalar { t: 5, v: 2.0 },
            warnings: vec![],
            infos: vec![],
        };
        assert_eq!(
            render_result(&r),
            r#"{"status":"success","data":{"resultType":"scalar","result":[0.005,"2"]}}"#
        );
        let r = QueryResult {
            value: PValue::String {
                t: 1000,
                v: "hi".into(),
            },
            warnings: vec![],
            infos: vec![],
        };
        assert!(render_result(&r).contains(r#""result":[1,"hi"]"#));
    }

    #[test]
    fn selectors_are_extracted_from_queries() {
        let e = cairn_promql::parse(
            r#"sum(rate(a{x="1"}[5m])) / on() group_left b or max_over_time(c[1h:1m]) + {__name__="d"}"#,
        )
        .unwrap();
        let s = extract_selectors(&e).unwrap();
        let names: Vec<String> = s
            .iter()
            .map(|g| {
                g.iter()
                    .map(|m| m.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .collect();
        assert_eq!(
            names,
            vec![
                r#"__name__="a",x="1""#,
                r#"__name__="b""#,
                r#"__name__="c""#,
                r#"__name__="d""#
            ]
        );
    }

    struct NoAdmin;
    impl Admin for NoAdmin {
        fn flush(&self) -> Result<usize, String> {
            Ok(0)
        }
        fn render_metrics(&self, _: &mut String) {}
    }

    fn app(m: Arc<MemSource>) -> axum::Router {
        let st = AppState::new(ApiConfig::default()).unwrap();
        st.set_ready(Backend {
            source: m.clone() as Arc<dyn SeriesSource>,
            writer: m as Arc<dyn SampleWriter>,
            admin: Arc::new(NoAdmin),
        });
        router(st)
    }

    async fn call(app: &axum::Router, req: Request<Body>) -> (u16, String) {
        let r = app.clone().oneshot(req).await.unwrap();
        let status = r.status().as_u16();
        let b = axum::body::to_bytes(r.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, String::from_utf8(b.to_vec()).unwrap())
    }

    fn get(uri: &str) -> Request<Body> {
        Request::get(uri).body(Body::empty()).unwrap()
    }

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

    #[tokio::test]
    async fn query_endpoints_over_mem_source() {
        let m = Arc::new(MemSource::new());
        let up = Labels::from_pairs(&[("__name__", "up"), ("job", "a")]);
        for i in 0..10 {
            m.add(
                "default",
                &up,
                1_700_000_000_000 + i * 15_000,
                i as f64 + 0.5,
            );
        }
        m.add("t2", &up, 1_700_000_000_000, 42.0);
        let app = app(m);

        let (s, b) = call(&app, get("/api/v1/query?query=up&time=1700000030.5")).await;
        assert_eq!(s, 200, "{b}");
        assert_eq!(
            b,
            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"__name__":"up","job":"a"},"value":[1700000030.500,"2.5"]}]}}"#
        );
        // Tenant header selects the tenant.
        let req = Request::get("/api/v1/query?query=up&time=1700000000")
            .header("X-Scope-OrgID", "t2")
            .body(Body::empty())
            .unwrap();
        let (_, b) = call(&app, req).await;
        assert!(b.contains(r#""value":[1700000000,"42"]"#), "{b}");

        // Range query as a POST form.
        let req = Request::post("/api/v1/query_range")
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(Body::from(
                "query=up*2&start=1700000000&end=1700000030&step=15s",
            ))
            .unwrap();
        let (s, b) = call(&app, req).await;
        assert_eq!(s, 200, "{b}");
        assert!(
            b.contains(r#""values":[[1700000000,"1"],[1700000015,"3"],[1700000030,"5"]]"#),
            "{b}"
        );

        // Errors and their status codes.
        let (s, b) = call(&app, get("/api/v1/query?query=sum(")).await;
        assert_eq!(s, 400, "{b}");
        assert!(b.contains(r#""errorType":"bad_data""#), "{b}");
        let (s, b) = call(
            &app,
            get("/api/v1/query_range?query=up&start=0&end=100000&step=1"),
        )
        .await;
        assert_eq!(s, 400);
        assert!(
            b.contains("exceeded maximum resolution of 11,000 points"),
            "{b}"
        );
        let (s, _) = call(
            &app,
            get("/api/v1/query_range?query=up&start=10&end=0&step=1"),
        )
        .await;
        assert_eq!(s, 400);
        let (s, _) = call(
            &app,
            get("/api/v1/query_range?query=up&start=0&end=10&step=0"),
        )
        .await;
        assert_eq!(s, 400);
        let (s, b) = call(
            &app,
            get("/api/v1/query?query=up&time=1700000000&timeout=0s"),
        )
        .await;
        assert_eq!(s, 503, "{b}");
        assert!(b.contains(r#""errorType":"timeout""#), "{b}");

        let (s, b) = call(
            &app,
            get("/api/v1/format_query?query=sum(rate(up[5m]))by(job)"),
        )
        .await;
        assert_eq!(s, 200);
        assert!(b.contains("sum by (job) (rate(up[5m]))"), "{b}");
        let (_, b) = call(&app, get("/api/v1/status/buildinfo")).await;
        let j: serde_json::Value = serde_json::from_str(&b).unwrap();
        assert_eq!(j["data"]["version"], PROMETHEUS_COMPAT_VERSION);
    }

    #[tokio::test]
    async fn limit_truncates_with_a_warning() {
        let m = Arc::new(MemSource::new());
        for j in ["a", "b", "c"] {
            m.add(
                "default",
                &Labels::from_pairs(&[("__name__", "up"), ("job", j)]),
                0,
                1.0,
            );
        }
        let app = app(m);
        let (_, b) = call(&app, get("/api/v1/query?query=up&time=0&limit=2")).await;
        let j: serde_json::Value = serde_json::from_str(&b).unwrap();
        assert_eq!(j["data"]["result"].as_array().unwrap().len(), 2);
        assert_eq!(j["warnings"][0], "results truncated due to limit");
        let (s, _) = call(&app, get("/api/v1/query?query=up&time=0&limit=-1")).await;
        assert_eq!(s, 400);
    }
}
