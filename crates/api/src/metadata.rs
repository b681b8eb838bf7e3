//! The series-metadata endpoints: `series`, `labels`,
//! `label/<name>/values` (each over every `match[]`, as Prometheus unions
//! them) and metric `metadata`. Reads run on the read pool.

use crate::error::Result;
use crate::extract::{PromParams, Ready, Tenant, UrlParams};
use crate::params::ReadArgs;
use crate::render::{labels_json, success};
use crate::state::{blocking_read, AppState};
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use cairn_common::Matcher;
use cairn_storage_api::{block_on, SeriesQuery, StoreError, Warnings};
use serde_json::{json, Value};

/// Runs `f` once per `match[]` selector (once with no matchers when there are
/// none) and returns the sorted union, as Prometheus does for several `match[]`.
fn union_over_matches<T: Ord>(
    matchers: &[Vec<Matcher>],
    mut f: impl FnMut(&[Matcher]) -> Result<Vec<T>, StoreError>,
) -> Result<Vec<T>, StoreError> {
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

/// The contract's query for one `match[]` group of `args`, noting the
/// store's warnings (a cluster read answered by fewer than a majority) in `w`.
fn query(tenant: &str, m: &[Matcher], args: &ReadArgs, w: &Warnings) -> SeriesQuery {
    let mut q = SeriesQuery::new(tenant, m.to_vec(), args.start, args.end);
    q.warnings = w.clone();
    q
}

/// Prometheus's success JSON, with the store's `warnings` when it has any.
fn answer(data: Value, w: &Warnings) -> Response {
    let warnings = w.take();
    if warnings.is_empty() {
        return success(data);
    }
    (
        axum::http::StatusCode::OK,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        json!({"status": "success", "data": data, "warnings": warnings}).to_string(),
    )
        .into_response()
}

/// `GET|POST /api/v1/series`.
pub(crate) async fn series(
    State(st): State<AppState>,
    Ready(backend): Ready,
    Tenant(tenant, _turn): Tenant,
    PromParams(p): PromParams,
) -> Result<Response> {
    let args = p.read_args(true)?;
    let src = backend.reader;
    let w = Warnings::default();
    let wq = w.clone();
    let sets = blocking_read(&st, st.0.cfg.engine.timeout, move |_| {
        union_over_matches(&args.matchers, |m| {
            block_on(src.series(query(&tenant, m, &args, &wq)))
        })
    })
    .await??;
    Ok(answer(
        Value::Array(sets.iter().map(labels_json).collect()),
        &w,
    ))
}

/// `GET|POST /api/v1/labels`.
pub(crate) async fn labels(
    State(st): State<AppState>,
    Ready(backend): Ready,
    Tenant(tenant, _turn): Tenant,
    PromParams(p): PromParams,
) -> Result<Response> {
    let args = p.read_args(false)?;
    let src = backend.reader;
    let w = Warnings::default();
    let wq = w.clone();
    let names = blocking_read(&st, st.0.cfg.engine.timeout, move |_| {
        union_over_matches(&args.matchers, |m| {
            block_on(src.label_names(query(&tenant, m, &args, &wq)))
        })
    })
    .await??;
    Ok(answer(json!(names), &w))
}

/// `GET /api/v1/label/{name}/values` (parameters from the query string).
pub(crate) async fn label_values(
    State(st): State<AppState>,
    Ready(backend): Ready,
    Tenant(tenant, _turn): Tenant,
    Path(name): Path<String>,
    UrlParams(p): UrlParams,
) -> Result<Response> {
    let args = p.read_args(false)?;
    let src = backend.reader;
    let w = Warnings::default();
    let wq = w.clone();
    let values = blocking_read(&st, st.0.cfg.engine.timeout, move |_| {
        union_over_matches(&args.matchers, |m| {
            block_on(src.label_values(query(&tenant, m, &args, &wq), name.clone()))
        })
    })
    .await??;
    Ok(answer(json!(values), &w))
}

/// `GET /api/v1/metadata`: metric metadata (type, help, unit) by name.
pub(crate) async fn metadata(
    State(st): State<AppState>,
    Ready(backend): Ready,
    Tenant(tenant, _turn): Tenant,
    PromParams(p): PromParams,
) -> Result<Response> {
    // Prometheus: -1 (absent) means no limit; 0 means none at all.
    let limit = p.int("limit", -1)?;
    let per_metric = p.int("limit_per_metric", -1)?;
    let metric = p
        .get("metric")
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    let src = backend.reader;
    let mut md = blocking_read(&st, st.0.cfg.engine.timeout, move |_| {
        block_on(src.metadata(tenant, metric, 0))
    })
    .await??;
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
