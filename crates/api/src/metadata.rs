//! The series-metadata endpoints: `series`, `labels`,
//! `label/<name>/values` (each over every `match[]`, as Prometheus unions
//! them) and metric `metadata`. Reads run on the read pool.

use crate::error::Result;
use crate::extract::{PromParams, Ready, Tenant, UrlParams};
use crate::render::{labels_json, success};
use crate::{blocking_read, AppState};
use axum::extract::{Path, State};
use axum::response::Response;
use cairn_common::{Matcher, StorageError};
use serde_json::{json, Value};

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

/// `GET|POST /api/v1/series`.
pub(crate) async fn series(
    State(st): State<AppState>,
    Ready(backend): Ready,
    Tenant(tenant): Tenant,
    PromParams(p): PromParams,
) -> Result<Response> {
    let args = p.read_args(true)?;
    let src = backend.source;
    let sets = blocking_read(&st, st.0.cfg.engine.timeout, move |_| {
        union_over_matches(&args.matchers, |m| {
            src.series(&tenant, m, args.start, args.end)
        })
    })
    .await??;
    Ok(success(Value::Array(
        sets.iter().map(labels_json).collect(),
    )))
}

/// `GET|POST /api/v1/labels`.
pub(crate) async fn labels(
    State(st): State<AppState>,
    Ready(backend): Ready,
    Tenant(tenant): Tenant,
    PromParams(p): PromParams,
) -> Result<Response> {
    let args = p.read_args(false)?;
    let src = backend.source;
    let names = blocking_read(&st, st.0.cfg.engine.timeout, move |_| {
        union_over_matches(&args.matchers, |m| {
            src.label_names(&tenant, m, args.start, args.end)
        })
    })
    .await??;
    Ok(success(json!(names)))
}

/// `GET /api/v1/label/{name}/values` (parameters from the query string).
pub(crate) async fn label_values(
    State(st): State<AppState>,
    Ready(backend): Ready,
    Tenant(tenant): Tenant,
    Path(name): Path<String>,
    UrlParams(p): UrlParams,
) -> Result<Response> {
    let args = p.read_args(false)?;
    let src = backend.source;
    let values = blocking_read(&st, st.0.cfg.engine.timeout, move |_| {
        union_over_matches(&args.matchers, |m| {
            src.label_values(&tenant, &name, m, args.start, args.end)
        })
    })
    .await??;
    Ok(success(json!(values)))
}

/// `GET /api/v1/metadata`: metric metadata (type, help, unit) by name.
pub(crate) async fn metadata(
    State(st): State<AppState>,
    Ready(backend): Ready,
    Tenant(tenant): Tenant,
    PromParams(p): PromParams,
) -> Result<Response> {
    // Prometheus: -1 (absent) means no limit; 0 means none at all.
    let limit = p.int("limit", -1)?;
    let per_metric = p.int("limit_per_metric", -1)?;
    let metric = p
        .get("metric")
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    let src = backend.source;
    let mut md = blocking_read(&st, st.0.cfg.engine.timeout, move |_| {
        src.metadata(&tenant, metric.as_deref())
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
