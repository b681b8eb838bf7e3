//! The PromQL endpoints: `query`, `query_range`, `query_exemplars` and
//! `format_query`. The engine is synchronous: every parse and evaluation
//! runs on the read pool (parsing, evaluating and dropping a tree recurse),
//! and the answer is rendered there too ([`crate::render`]).

use crate::error::{ApiError, Result};
use crate::extract::{PromParams, Ready, Tenant};
use crate::params::{end_before_start, parse_duration_ms, Params, MAX_TIME, MIN_TIME};
use crate::render::{exemplars_json, json_response, render_result, success};
use crate::state::{blocking_read, AppState};
use axum::extract::State;
use axum::response::Response;
use cairn_common::{ExemplarSeries, Matcher};
use cairn_promql::{Engine, QueryError, QueryResult, Value as PValue};
use cairn_storage_api::{block_on, SeriesQuery};
use promql_parser::parser::Expr;
use std::time::Duration;

/// Prometheus's cap on points per series of a range query.
const MAX_POINTS_PER_SERIES: i64 = 11_000;

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The engine for one request: the configured options, narrowed by the
/// request's `timeout` and overridden by its `lookback_delta`.
/// The engine for one query: the node's options, narrowed by the tenant's
/// limits (`max_samples_per_query`, `query_timeout_seconds`) and the
/// request's `timeout`.
fn engine_for(st: &AppState, tenant: &str, p: &Params) -> Result<Engine> {
    let mut opts = st.0.cfg.engine.clone();
    let l = st.0.tenants.directory.view().tenant(tenant).limits;
    if l.max_series_per_query > 0 {
        opts.max_series = l.max_series_per_query as usize;
    }
    if l.max_samples_per_query > 0 {
        opts.max_samples = opts.max_samples.min(l.max_samples_per_query as usize);
    }
    if l.query_timeout_seconds > 0 {
        opts.timeout = opts
            .timeout
            .min(Duration::from_secs(l.query_timeout_seconds));
    }
    if let Some(s) = p.get("timeout").filter(|s| !s.is_empty()) {
        let ms = parse_duration_ms(s)
            .map_err(|e| ApiError::bad_data(format!("invalid parameter \"timeout\": {e}")))?;
        let d = Duration::from_millis(ms as u64);
        if d < opts.timeout {
            opts.timeout = d;
        }
    }
    if let Some(s) = p.get("lookback_delta").filter(|s| !s.is_empty()) {
        let ms = parse_duration_ms(s).map_err(|e| {
            ApiError::bad_data(format!("error parsing lookback delta duration: {e}"))
        })?;
        if ms > 0 {
            opts.lookback_delta_ms = ms;
        }
    }
    let res = p.get("max_source_resolution").unwrap_or("");
    let res: cairn_promql::SourceResolution = res.parse().map_err(|e: String| {
        ApiError::bad_data(format!("invalid parameter \"max_source_resolution\": {e}"))
    })?;
    Ok(Engine::new(opts).with_source_resolution(res))
}

/// The `X-Cairn-Resolution` header: the downsampled resolutions that
/// answered, or `raw`.
fn with_resolution(mut resp: Response, resolution: Option<String>) -> Response {
    let v = resolution.unwrap_or_else(|| "raw".into());
    if let Ok(v) = axum::http::HeaderValue::from_str(&v) {
        resp.headers_mut().insert("x-cairn-resolution", v);
    }
    resp
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

/// `GET|POST /api/v1/query`.
pub(crate) async fn instant_query(
    State(st): State<AppState>,
    Ready(backend): Ready,
    Tenant(tenant, _turn): Tenant,
    PromParams(p): PromParams,
) -> Result<Response> {
    let t = p.time("time", Some(now_ms()))?;
    let engine = engine_for(&st, &tenant, &p)?;
    let limit = p.series_limit()?;
    let query = p.query();
    let src = backend.reader;
    let timeout = engine.options().timeout;
    // Evaluated and rendered on the read thread: the result is freed on the
    // thread that allocated it, and rendering is CPU work too.
    let body = blocking_read(&st, timeout, move |cancel| {
        let mut r = engine
            .with_cancel(cancel)
            .instant_query(src.as_ref(), &tenant, &query, t)?;
        apply_limit(&mut r, limit);
        Ok::<_, QueryError>((render_result(&r), r.resolution.take()))
    })
    .await?
    .map_err(ApiError::query_param)?;
    Ok(with_resolution(json_response(body.0), body.1))
}

/// Validated `start`, `end`, `step` of a range query (ms).
fn range_params(p: &Params) -> Result<(i64, i64, i64)> {
    let start = p.time("start", None)?;
    let end = p.time("end", None)?;
    if end < start {
        return Err(end_before_start());
    }
    let step_s = p.get("step").unwrap_or("");
    let step = parse_duration_ms(step_s)
        .map_err(|e| ApiError::bad_data(format!("invalid parameter \"step\": {e}")))?;
    if step <= 0 {
        return Err(ApiError::bad_data(
            "invalid parameter \"step\": zero or negative query resolution step widths are not accepted. Try a positive integer",
        ));
    }
    // For safety, limit the number of returned points per time series
    // (in i128: `end - start` of two in-range times fits, but stay exact).
    if (i128::from(end) - i128::from(start)) / i128::from(step) > i128::from(MAX_POINTS_PER_SERIES)
    {
        return Err(ApiError::bad_data(
            "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)",
        ));
    }
    Ok((start, end, step))
}

/// `GET|POST /api/v1/query_range`.
pub(crate) async fn range_query(
    State(st): State<AppState>,
    Ready(backend): Ready,
    Tenant(tenant, _turn): Tenant,
    PromParams(p): PromParams,
) -> Result<Response> {
    let (start, end, step) = range_params(&p)?;
    let engine = engine_for(&st, &tenant, &p)?;
    let limit = p.series_limit()?;
    let query = p.query();
    let src = backend.reader;
    let timeout = engine.options().timeout;
    let body = blocking_read(&st, timeout, move |cancel| {
        let mut r = engine.with_cancel(cancel).range_query(
            src.as_ref(),
            &tenant,
            &query,
            start,
            end,
            step,
        )?;
        apply_limit(&mut r, limit);
        Ok::<_, QueryError>((render_result(&r), r.resolution.take()))
    })
    // Prometheus names no parameter for query_range's query errors.
    .await??;
    Ok(with_resolution(json_response(body.0), body.1))
}

/// Every vector selector in `expr` as its `or` groups of Cairn matchers
/// (the engine's own conversion, [`cairn_promql::extract_selectors`]).
fn extract_selectors(expr: &Expr) -> Result<Vec<Vec<Matcher>>, String> {
    cairn_promql::extract_selectors(expr).map_err(|e| e.to_string())
}

/// `GET|POST /api/v1/query_exemplars`.
pub(crate) async fn query_exemplars(
    State(st): State<AppState>,
    Ready(backend): Ready,
    Tenant(tenant, _turn): Tenant,
    PromParams(p): PromParams,
) -> Result<Response> {
    let start = p.time("start", Some(MIN_TIME))?;
    let end = p.time("end", Some(MAX_TIME))?;
    if end < start {
        return Err(end_before_start());
    }
    let query = p.query();
    let choice: cairn_promql::SourceResolution = p
        .get("max_source_resolution")
        .unwrap_or("")
        .parse()
        .map_err(|e: String| {
            ApiError::bad_data(format!("invalid parameter \"max_source_resolution\": {e}"))
        })?;
    let opts = &st.0.cfg.engine;
    // Beyond raw retention (or as max_source_resolution says), the p99 and
    // max exemplars the downsampling pass kept per window answer.
    let source = cairn_promql::exemplar_source(
        &opts.namespaces,
        choice,
        opts.raw_retention_ms,
        now_ms(),
        start,
    )
    .map(|n| {
        (
            n.name.clone(),
            cairn_downsample::Resolution::from_ms(n.resolution_ms),
        )
    });
    let resolution = source
        .as_ref()
        .map(|(name, r)| r.map_or_else(|| name.clone(), |r| r.to_string()));
    let namespace = source.map(|(name, _)| name);
    let engine = Engine::new(st.0.cfg.engine.clone());
    let src = backend.reader;
    let out = blocking_read(
        &st,
        st.0.cfg.engine.timeout,
        move |_| -> Result<Vec<ExemplarSeries>> {
            // Parsed here, on a read thread: parsing and dropping the tree recurse.
            // Prometheus names no parameter here: the parser's message alone.
            let expr = engine.parse(&query)?;
            let selectors = extract_selectors(&expr).map_err(ApiError::bad_data)?;
            let mut all: Vec<ExemplarSeries> = Vec::new();
            for m in &selectors {
                let mut q = SeriesQuery::new(tenant.clone(), m.clone(), start, end);
                // A selector naming its namespace reads it; else the one chosen.
                let named = exemplar_route(&mut q);
                if !named {
                    if let Some(ns) = &namespace {
                        q.namespace = ns.clone();
                    }
                }
                let rollups = q.namespace != cairn_storage_api::RAW_NAMESPACE;
                for mut s in block_on(src.exemplars(q))? {
                    if rollups {
                        s.labels = s.labels.without(&[cairn_promql::ROLLUP_LABEL]);
                    }
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
    Ok(with_resolution(success(exemplars_json(&out)), resolution))
}

/// Turns an exemplar query's `__namespace__="…"` matcher into the
/// namespace it reads; true when there was one.
fn exemplar_route(q: &mut SeriesQuery) -> bool {
    let mut named = None;
    q.matchers.retain(|m| {
        if m.name == cairn_promql::NAMESPACE_LABEL && m.op == cairn_common::MatchOp::Equal {
            named = Some(m.value.clone());
            return false;
        }
        true
    });
    match named {
        Some(ns) => {
            q.namespace = ns;
            true
        }
        None => false,
    }
}

/// `GET|POST /api/v1/format_query`. Needs no store, but answers like the
/// other query endpoints (503 before recovery, 400 for a bad tenant).
pub(crate) async fn format_query(
    State(st): State<AppState>,
    _: Ready,
    _: Tenant,
    PromParams(p): PromParams,
) -> Result<Response> {
    let query = p.query();
    let engine = Engine::new(st.0.cfg.engine.clone());
    // Parsing, printing and dropping the tree recurse: on a read thread.
    let pretty = blocking_read(&st, st.0.cfg.engine.timeout, move |_| {
        engine.parse(&query).map(|e| e.prettify())
    })
    .await?
    .map_err(ApiError::query_param)?;
    Ok(success(serde_json::Value::String(pretty)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{app, call, get};
    use crate::PROMETHEUS_COMPAT_VERSION;
    use axum::body::Body;
    use axum::http::Request;
    use cairn_common::{Labels, MemStore};
    use std::sync::Arc;

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

    #[tokio::test]
    async fn query_endpoints_over_mem_source() {
        let m = Arc::new(MemStore::new());
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
        let m = Arc::new(MemStore::new());
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

    #[tokio::test]
    async fn parse_errors_say_what_is_wrong_and_where() {
        let app = app(Arc::new(MemStore::new()));
        for (q, want) in [
            ("1%2B", "1:3: parse error: unexpected end of input"),
            (
                "up%7Bjob%3D%7D",
                r#"1:8: parse error: unexpected \"}\" in label matching, expected string"#,
            ),
            (
                "sum%20by%20(job)%20up",
                r#"1:14: parse error: unexpected identifier \"up\" in aggregation"#,
            ),
        ] {
            for path in ["query", "query_exemplars", "format_query"] {
                let (s, b) = call(&app, get(&format!("/api/v1/{path}?query={q}"))).await;
                assert_eq!(s, 400, "{path} {q}: {b}");
                // As Prometheus 2.42: query_exemplars names no parameter.
                let param = if path == "query_exemplars" {
                    ""
                } else {
                    r#"invalid parameter \"query\": "#
                };
                let whole = format!(
                    r#"{{"error":"{param}{want}","errorType":"bad_data","status":"error"}}"#
                );
                assert_eq!(b, whole, "{path} {q}");
            }
        }
        let (s, b) = call(
            &app,
            get("/api/v1/query_range?query=1%2B&start=0&end=60&step=15"),
        )
        .await;
        assert_eq!(s, 400, "{b}");
        // Prometheus 2.42 names no parameter for query_range either.
        assert_eq!(
            b,
            r#"{"error":"1:3: parse error: unexpected end of input","errorType":"bad_data","status":"error"}"#
        );
        // The engine's own refusal names no parameter, as Prometheus's.
        let (s, b) = call(
            &app,
            get("/api/v1/query_range?query=up%5B5m%5D&start=0&end=60&step=15"),
        )
        .await;
        assert_eq!(s, 400, "{b}");
        assert!(
            b.contains(r#""error":"invalid expression type \"range vector\" for range query"#),
            "{b}"
        );
    }
}
