//! The per-tenant cardinality endpoints, over the contract's one
//! cardinality read ([`SeriesReader::cardinality`], answered in full and
//! ranked and cut here):
//! - `GET /api/v1/status/tsdb` in Prometheus's shape, with
//!   VictoriaMetrics's parameters (`topN`, `match[]`, `focusLabel`, `date`)
//!   and extra fields (`totalSeries`, `totalLabelValuePairs`,
//!   `seriesCountByLabelName`, `seriesCountByFocusLabelValue`);
//! - Mimir's `GET|POST /api/v1/cardinality/label_names` and
//!   `/api/v1/cardinality/label_values`.
//!
//! Every figure is the calling tenant's own (the `Tenant` extractor's
//! tenant is the only one asked). Lists are sorted by count, largest
//! first, then by name.
//!
//! [`SeriesReader::cardinality`]: cairn_storage_api::SeriesReader::cardinality

use crate::error::{echo, ApiError, Result};
use crate::extract::{PromParams, Ready, Tenant};
use crate::params::{Params, MAX_TIME, MIN_TIME};
use crate::render::success;
use crate::state::{blocking_read, AppState};
use axum::extract::State;
use axum::response::Response;
use cairn_common::{parse_selector, Matcher};
use cairn_storage_api::{block_on, Cardinality, SeriesQuery, SeriesReader, StoreError};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::sync::Arc;

/// `status/tsdb`'s default and largest `limit` (Prometheus 3's).
const TSDB_DEFAULT_LIMIT: usize = 10;
const TSDB_MAX_LIMIT: usize = 10_000;
/// Mimir's default and largest `limit` of the cardinality endpoints.
const MIMIR_DEFAULT_LIMIT: usize = 20;
const MIMIR_MAX_LIMIT: usize = 500;
const DAY_MS: i64 = 86_400_000;

/// A positive integer parameter `name`, at most `max`; None when absent
/// or empty. Anything else is a 400 naming the parameter.
fn bounded(p: &Params, name: &str, max: usize) -> Result<Option<usize>> {
    let Some(s) = p.get(name).filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    match s.parse::<u64>() {
        Ok(n) if n >= 1 && n <= max as u64 => Ok(Some(n as usize)),
        _ => Err(ApiError::bad_data(format!(
            "invalid parameter {name:?}: {:?} is not an integer from 1 to {max}",
            echo(s)
        ))),
    }
}

/// The time range of `date` (`YYYY-MM-DD`, UTC: that day; absent, empty or
/// `0`: all time).
fn date_range(p: &Params) -> Result<(i64, i64)> {
    match p.get("date").filter(|s| !s.is_empty() && *s != "0") {
        None => Ok((MIN_TIME, MAX_TIME)),
        Some(s) => {
            let d = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| {
                ApiError::bad_data(format!(
                    "invalid parameter \"date\": {:?} is not a date as YYYY-MM-DD",
                    echo(s)
                ))
            })?;
            let start = d
                .and_hms_opt(0, 0, 0)
                .map(|t| t.and_utc().timestamp_millis())
                .filter(|t| (MIN_TIME..=MAX_TIME - DAY_MS).contains(t))
                .ok_or_else(|| {
                    ApiError::bad_data(format!(
                        "invalid parameter \"date\": {:?} is out of range",
                        echo(s)
                    ))
                })?;
            Ok((start, start + DAY_MS - 1))
        }
    }
}

/// Every `name` selector of `p`, parsed (a 400 names the parameter).
fn selectors(p: &Params, name: &str) -> Result<Vec<Vec<Matcher>>> {
    p.all(name)
        .map(|s| {
            parse_selector(s)
                .map_err(|e| ApiError::bad_data(format!("invalid parameter {name:?}: {e}")))
        })
        .collect()
}

/// The counts of the tenant's series in `[start, end]` matching any of
/// `selectors` (all of them when there is none). One selector is one
/// cardinality read; several are a union of series, which counts cannot
/// be merged into, so their label sets are read and counted here.
fn count(
    src: &dyn SeriesReader,
    tenant: &str,
    selectors: &[Vec<Matcher>],
    start: i64,
    end: i64,
) -> Result<Cardinality, StoreError> {
    let q = |m: &[Matcher]| SeriesQuery::new(tenant, m.to_vec(), start, end);
    match selectors {
        [] => block_on(src.cardinality(q(&[]))),
        [one] => block_on(src.cardinality(q(one))),
        many => {
            let mut all = BTreeSet::new();
            for m in many {
                all.extend(block_on(src.series(q(m)))?);
            }
            Ok(Cardinality::of_series(&all))
        }
    }
}

/// Runs [`count`] on the read pool.
async fn read(
    st: &AppState,
    src: Arc<dyn SeriesReader>,
    tenant: String,
    selectors: Vec<Vec<Matcher>>,
    (start, end): (i64, i64),
) -> Result<Cardinality> {
    Ok(blocking_read(st, st.0.cfg.engine.timeout, move |_| {
        count(&*src, &tenant, &selectors, start, end)
    })
    .await??)
}

/// `(name, count)` pairs, largest count first, then by name; the first
/// `limit` (selected first, so only they are sorted).
fn top(items: impl IntoIterator<Item = (String, u64)>, limit: usize) -> Vec<(String, u64)> {
    let order = |a: &(String, u64), b: &(String, u64)| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0));
    let mut v: Vec<(String, u64)> = items.into_iter().collect();
    if limit == 0 {
        return Vec::new();
    }
    if v.len() > limit {
        v.select_nth_unstable_by(limit - 1, order);
        v.truncate(limit);
    }
    v.sort_by(order);
    v
}

/// The `limit` label pairs held by most series, as `name=value` (then by
/// that text): selected before any text is built.
fn top_pairs(c: &Cardinality, limit: usize) -> Vec<(String, u64)> {
    let mut all: Vec<(&str, &str, u64)> = c
        .pairs
        .iter()
        .flat_map(|(n, vs)| vs.iter().map(move |(v, k)| (n.as_str(), v.as_str(), *k)))
        .collect();
    // By count; ties by `name=value` as text ('=' sorts before every
    // label-name character, so comparing (name, value) would differ).
    let text = |p: &(&str, &str, u64)| format!("{}={}", p.0, p.1);
    let order = |a: &(&str, &str, u64), b: &(&str, &str, u64)| {
        b.2.cmp(&a.2).then_with(|| text(a).cmp(&text(b)))
    };
    if limit == 0 {
        return Vec::new();
    }
    if all.len() > limit {
        // Counts first, cheaply: only ties at the cut compare text.
        let by_count = |a: &(&str, &str, u64), b: &(&str, &str, u64)| b.2.cmp(&a.2);
        all.select_nth_unstable_by(limit - 1, by_count);
        let cut = all[limit - 1].2;
        let (head, tail) = all.split_at_mut(limit);
        let mut keep: Vec<(&str, &str, u64)> = head.iter().copied().filter(|p| p.2 > cut).collect();
        let mut ties: Vec<(&str, &str, u64)> = head
            .iter()
            .chain(tail.iter())
            .copied()
            .filter(|p| p.2 == cut)
            .collect();
        ties.sort_by(order);
        ties.truncate(limit - keep.len());
        keep.extend(ties);
        all = keep;
    }
    all.sort_by(order);
    all.into_iter().map(|p| (text(&p), p.2)).collect()
}

/// Prometheus's `[{"name":…,"value":…}]`.
fn stats(v: Vec<(String, u64)>) -> Value {
    Value::Array(
        v.into_iter()
            .map(|(name, value)| json!({"name": name, "value": value}))
            .collect(),
    )
}

/// The body of `status/tsdb` for counts `c`.
///
/// `headStats` describes what was counted, not a head block: `numSeries`
/// is the series counted and `numLabelPairs` their distinct label pairs
/// (as Prometheus's); `chunkCount` counts one chunk per series (Cairn
/// keeps one open buffer per series and block window, so this is a lower
/// bound of its buffers and of Prometheus's chunks); `minTime`/`maxTime`
/// are the bounds of the range counted (the `date`'s day, else
/// Prometheus's empty-head values `i64::MAX`/`i64::MIN` when nothing was
/// counted, and the earliest/latest API times otherwise), since the
/// counts do not say when the series' samples are.
fn tsdb_status(c: &Cardinality, limit: usize, focus: Option<&str>, range: (i64, i64)) -> Value {
    let by_name = |f: &dyn Fn(&std::collections::BTreeMap<String, u64>) -> u64| {
        top(c.pairs.iter().map(|(n, vs)| (n.clone(), f(vs))), limit)
    };
    let metric_names = c
        .by_metric_name()
        .map(|m| top(m.iter().map(|(v, n)| (v.clone(), *n)), limit))
        .unwrap_or_default();
    let value_pairs = top_pairs(c, limit);
    let distinct_pairs: u64 = c.pairs.values().map(|v| v.len() as u64).sum();
    let (min_time, max_time) = if c.series == 0 {
        (i64::MAX, i64::MIN)
    } else {
        range
    };
    let mut out = json!({
        "totalSeries": c.series,
        "totalLabelValuePairs": c.label_value_pairs(),
        "headStats": {
            "numSeries": c.series,
            "numLabelPairs": distinct_pairs,
            "chunkCount": c.series,
            "minTime": min_time,
            "maxTime": max_time,
        },
        "seriesCountByMetricName": stats(metric_names),
        "labelValueCountByLabelName": stats(by_name(&|vs| vs.len() as u64)),
        "memoryInBytesByLabelName": stats(by_name(&|vs| vs.keys().map(|v| v.len() as u64).sum())),
        "seriesCountByLabelName": stats(by_name(&|vs| vs.values().sum())),
        "seriesCountByLabelValuePair": stats(value_pairs),
    });
    if let Some(f) = focus {
        let values = c
            .pairs
            .get(f)
            .map(|vs| top(vs.iter().map(|(v, n)| (v.clone(), *n)), limit))
            .unwrap_or_default();
        out["seriesCountByFocusLabelValue"] = stats(values);
    }
    out
}

/// `GET /api/v1/status/tsdb`: `limit` or its alias `topN` (1 to 10000,
/// default 10; both given must agree), `match[]` (series matching any;
/// default all), `focusLabel`, `date` (`YYYY-MM-DD`: series with samples in
/// a block window of that UTC day; absent or `0`: all the tenant's series).
pub(crate) async fn tsdb_status_handler(
    State(st): State<AppState>,
    Ready(backend): Ready,
    Tenant(tenant, _turn): Tenant,
    PromParams(p): PromParams,
) -> Result<Response> {
    let limit = bounded(&p, "limit", TSDB_MAX_LIMIT)?;
    let top_n = bounded(&p, "topN", TSDB_MAX_LIMIT)?;
    let limit = match (limit, top_n) {
        (Some(a), Some(b)) if a != b => {
            return Err(ApiError::bad_data(format!(
                "invalid parameters \"limit\" ({a}) and \"topN\" ({b}): topN is an alias of limit; give one, or both equal"
            )))
        }
        (a, b) => a.or(b).unwrap_or(TSDB_DEFAULT_LIMIT),
    };
    let sel = selectors(&p, "match[]")?;
    let range = date_range(&p)?;
    let focus = p
        .get("focusLabel")
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    let c = read(&st, backend.reader, tenant, sel, range).await?;
    Ok(success(tsdb_status(&c, limit, focus.as_deref(), range)))
}

/// Mimir's `selector` (at most one) and `limit` (1 to 500, default 20);
/// `count_method` may be `inmemory` (every series the tenant has, Mimir's
/// default and what is counted here), not `active` (Cairn does not track
/// which series were written recently).
fn mimir_args(p: &Params) -> Result<(Vec<Vec<Matcher>>, usize)> {
    match p.get("count_method").filter(|s| !s.is_empty()) {
        None | Some("inmemory") => {}
        Some(other) => {
            return Err(ApiError::bad_data(format!(
                "invalid parameter \"count_method\": {:?} is not supported (only \"inmemory\")",
                echo(other)
            )))
        }
    }
    let sel = selectors(p, "selector")?;
    if sel.len() > 1 {
        return Err(ApiError::bad_data(
            "invalid parameter \"selector\": give at most one selector",
        ));
    }
    let limit = bounded(p, "limit", MIMIR_MAX_LIMIT)?.unwrap_or(MIMIR_DEFAULT_LIMIT);
    Ok((sel, limit))
}

/// `GET|POST /api/v1/cardinality/label_names` (Mimir's): label names of
/// the tenant's series matching `selector`, by distinct value count.
pub(crate) async fn label_names(
    State(st): State<AppState>,
    Ready(backend): Ready,
    Tenant(tenant, _turn): Tenant,
    PromParams(p): PromParams,
) -> Result<Response> {
    let (sel, limit) = mimir_args(&p)?;
    let c = read(&st, backend.reader, tenant, sel, (MIN_TIME, MAX_TIME)).await?;
    Ok(json_response(label_names_body(&c, limit)))
}

fn label_names_body(c: &Cardinality, limit: usize) -> Value {
    let total: u64 = c.pairs.values().map(|v| v.len() as u64).sum();
    let list = top(
        c.pairs.iter().map(|(n, vs)| (n.clone(), vs.len() as u64)),
        limit,
    );
    json!({
        "label_values_count_total": total,
        "label_names_count": c.pairs.len(),
        "cardinality": list
            .into_iter()
            .map(|(n, k)| json!({"label_name": n, "label_values_count": k}))
            .collect::<Vec<_>>(),
    })
}

/// `GET|POST /api/v1/cardinality/label_values` (Mimir's): for each of
/// `label_names[]` (required), its values among the tenant's series
/// matching `selector`, by series count, at most `limit` per name.
pub(crate) async fn label_values(
    State(st): State<AppState>,
    Ready(backend): Ready,
    Tenant(tenant, _turn): Tenant,
    PromParams(p): PromParams,
) -> Result<Response> {
    let (sel, limit) = mimir_args(&p)?;
    let mut names: Vec<String> = Vec::new();
    for n in p.all("label_names[]") {
        if !is_label_name(n) {
            return Err(ApiError::bad_data(format!(
                "invalid parameter \"label_names[]\": {:?} is not a valid label name",
                echo(n)
            )));
        }
        if !names.iter().any(|x| x == n) {
            names.push(n.to_string());
        }
    }
    if names.is_empty() {
        return Err(ApiError::bad_data(
            "missing parameter \"label_names[]\": name at least one label",
        ));
    }
    let c = read(&st, backend.reader, tenant, sel, (MIN_TIME, MAX_TIME)).await?;
    Ok(json_response(label_values_body(&c, &names, limit)))
}

/// One label of Mimir's `label_values` answer.
struct LabelCounts {
    name: String,
    distinct: u64,
    series: u64,
    values: Vec<(String, u64)>,
}

fn label_values_body(c: &Cardinality, names: &[String], limit: usize) -> Value {
    let mut labels: Vec<LabelCounts> = names
        .iter()
        .map(|n| {
            let vs = c.pairs.get(n);
            LabelCounts {
                name: n.clone(),
                distinct: vs.map_or(0, |v| v.len() as u64),
                series: c.series_with_label(n),
                values: vs
                    .map(|v| top(v.iter().map(|(x, k)| (x.clone(), *k)), limit))
                    .unwrap_or_default(),
            }
        })
        .collect();
    labels.sort_by(|a, b| b.series.cmp(&a.series).then_with(|| a.name.cmp(&b.name)));
    json!({
        "series_count_total": c.series,
        "labels": labels
            .into_iter()
            .map(|l| json!({
                "label_name": l.name,
                "label_values_count": l.distinct,
                "series_count": l.series,
                "cardinality": l.values
                    .into_iter()
                    .map(|(v, k)| json!({"label_value": v, "series_count": k}))
                    .collect::<Vec<_>>(),
            }))
            .collect::<Vec<_>>(),
    })
}

/// Prometheus's label name syntax (`[a-zA-Z_][a-zA-Z0-9_]*`).
fn is_label_name(s: &str) -> bool {
    let mut b = s.bytes();
    b.next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

/// Mimir answers the cardinality endpoints with the bare object, without
/// Prometheus's `{"status","data"}` envelope.
fn json_response(v: Value) -> Response {
    use axum::response::IntoResponse;
    (
        axum::http::StatusCode::OK,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use crate::test_util::{app, call, get};
    use axum::body::Body;
    use axum::http::Request;
    use cairn_common::{Labels, MemStore};
    use serde_json::{json, Value};
    use std::sync::Arc;

    const T: i64 = 1_700_000_000_000; // 2023-11-14T22:13:20Z

    /// Tenant `default`: 6 series of `up` (job a ×3, b ×2, c ×1; instances
    /// i0..), 2 of `down` (job a); tenant `t2`: one series of its own.
    fn store() -> Arc<MemStore> {
        let m = Arc::new(MemStore::new());
        for (i, job) in ["a", "a", "a", "b", "b", "c"].iter().enumerate() {
            let l = Labels::from_pairs(&[
                ("__name__", "up"),
                ("instance", &format!("i{i}")),
                ("job", job),
            ]);
            m.add("default", &l, T, 1.0);
        }
        for i in 0..2 {
            let l = Labels::from_pairs(&[
                ("__name__", "down"),
                ("job", "a"),
                ("zone", &format!("z{i}")),
            ]);
            m.add("default", &l, T + 86_400_000, 1.0);
        }
        let own = Labels::from_pairs(&[("__name__", "secret"), ("team", "t2only")]);
        m.add("t2", &own, T, 1.0);
        m
    }

    async fn json_of(app: &axum::Router, req: Request<Body>) -> (u16, Value) {
        let (s, b) = call(app, req).await;
        (
            s,
            serde_json::from_str(&b).unwrap_or_else(|e| panic!("{e}: {b}")),
        )
    }

    fn as_tenant(uri: &str, tenant: &str) -> Request<Body> {
        Request::get(uri)
            .header("X-Scope-OrgID", tenant)
            .body(Body::empty())
            .unwrap()
    }

    #[tokio::test]
    async fn tsdb_status_in_prometheus_shape_with_victoriametrics_extras() {
        let app = app(store());
        let (s, v) = json_of(&app, get("/api/v1/status/tsdb")).await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["status"], "success");
        let d = &v["data"];
        assert_eq!(d["headStats"]["numSeries"], 8);
        assert_eq!(d["headStats"]["numLabelPairs"], 2 + 6 + 3 + 2);
        assert_eq!(d["totalSeries"], 8);
        assert_eq!(d["totalLabelValuePairs"], 6 * 3 + 2 * 3);
        assert_eq!(
            d["seriesCountByMetricName"],
            json!([{"name": "up", "value": 6}, {"name": "down", "value": 2}])
        );
        // Ties sorted by name.
        assert_eq!(
            d["labelValueCountByLabelName"],
            json!([
                {"name": "instance", "value": 6},
                {"name": "job", "value": 3},
                {"name": "__name__", "value": 2},
                {"name": "zone", "value": 2},
            ])
        );
        // Bytes of the distinct values: "i0".."i5", "a"+"b"+"c", "up"+"down", "z0"+"z1".
        assert_eq!(
            d["memoryInBytesByLabelName"],
            json!([
                {"name": "instance", "value": 12},
                {"name": "__name__", "value": 6},
                {"name": "zone", "value": 4},
                {"name": "job", "value": 3},
            ])
        );
        assert_eq!(
            d["seriesCountByLabelName"],
            json!([
                {"name": "__name__", "value": 8},
                {"name": "job", "value": 8},
                {"name": "instance", "value": 6},
                {"name": "zone", "value": 2},
            ])
        );
        let pairs = d["seriesCountByLabelValuePair"].as_array().unwrap();
        assert_eq!(pairs.len(), 10, "the default limit");
        assert_eq!(pairs[0], json!({"name": "__name__=up", "value": 6}));
        assert_eq!(pairs[1], json!({"name": "job=a", "value": 5}));
        assert_eq!(pairs[2], json!({"name": "__name__=down", "value": 2}));
        assert_eq!(pairs[3], json!({"name": "job=b", "value": 2}));
        assert!(d.get("seriesCountByFocusLabelValue").is_none());

        // limit, topN, match[], focusLabel.
        let (_, v) = json_of(&app, get("/api/v1/status/tsdb?limit=1")).await;
        assert_eq!(
            v["data"]["seriesCountByLabelValuePair"],
            json!([{"name": "__name__=up", "value": 6}])
        );
        let (_, w) = json_of(&app, get("/api/v1/status/tsdb?topN=1")).await;
        assert_eq!(v, w);
        let (s, v) = json_of(
            &app,
            get("/api/v1/status/tsdb?match[]=%7Bjob%3D%22a%22%7D&focusLabel=__name__&topN=5"),
        )
        .await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["data"]["totalSeries"], 5);
        assert_eq!(
            v["data"]["seriesCountByFocusLabelValue"],
            json!([{"name": "up", "value": 3}, {"name": "down", "value": 2}])
        );
        // Several match[]: the union of their series, each counted once.
        let (_, v) = json_of(
            &app,
            get("/api/v1/status/tsdb?match[]=%7Bjob%3D%22a%22%7D&match[]=up&match[]=%7Bjob%3D~%22b%7Cc%22%7D"),
        )
        .await;
        assert_eq!(v["data"]["totalSeries"], 8);

        // date: series with samples that UTC day.
        let (_, v) = json_of(&app, get("/api/v1/status/tsdb?date=2023-11-14")).await;
        assert_eq!(v["data"]["totalSeries"], 6);
        assert_eq!(v["data"]["headStats"]["minTime"], 1_699_920_000_000i64);
        assert_eq!(
            v["data"]["headStats"]["maxTime"],
            1_699_920_000_000i64 + 86_400_000 - 1
        );
        let (_, v) = json_of(&app, get("/api/v1/status/tsdb?date=2023-11-15")).await;
        assert_eq!(
            v["data"]["seriesCountByMetricName"],
            json!([{"name": "down", "value": 2}])
        );
        let (_, v) = json_of(&app, get("/api/v1/status/tsdb?date=2023-11-20")).await;
        assert_eq!(v["data"]["totalSeries"], 0);
        assert_eq!(v["data"]["headStats"]["minTime"], i64::MAX);
        assert_eq!(v["data"]["seriesCountByMetricName"], json!([]));
        let (_, v) = json_of(&app, get("/api/v1/status/tsdb?date=0")).await;
        assert_eq!(v["data"]["totalSeries"], 8);
    }

    #[test]
    fn top_pairs_equals_sorting_every_pair() {
        let mut c = cairn_storage_api::Cardinality::default();
        for (n, v, k) in [
            ("a", "x", 3),
            ("a", "y", 2),
            ("a_b", "x", 2),
            ("b", "z", 2),
            ("c", "w", 1),
        ] {
            c.pairs.entry(n.into()).or_default().insert(v.into(), k);
        }
        let naive = |limit| {
            super::top(
                c.pairs
                    .iter()
                    .flat_map(|(n, vs)| vs.iter().map(move |(v, k)| (format!("{n}={v}"), *k))),
                limit,
            )
        };
        for limit in 0..7 {
            assert_eq!(super::top_pairs(&c, limit), naive(limit), "limit {limit}");
        }
    }

    #[test]
    fn top_selects_then_sorts() {
        let items = |v: &[(&str, u64)]| -> Vec<(String, u64)> {
            v.iter().map(|(n, k)| (n.to_string(), *k)).collect()
        };
        let all = items(&[("d", 1), ("a", 5), ("c", 5), ("b", 7), ("e", 0)]);
        assert_eq!(
            super::top(all.clone(), 3),
            items(&[("b", 7), ("a", 5), ("c", 5)])
        );
        assert_eq!(super::top(all.clone(), 10).len(), 5);
        assert_eq!(super::top(all.clone(), 1), items(&[("b", 7)]));
        assert!(super::top(all, 0).is_empty());
    }

    #[tokio::test]
    async fn bad_parameters_are_400_naming_the_parameter() {
        let app = app(store());
        for (q, name) in [
            ("limit=0", "\"limit\""),
            ("limit=10001", "\"limit\""),
            ("limit=x", "\"limit\""),
            ("topN=-1", "\"topN\""),
            ("limit=2&topN=3", "\"topN\""),
            ("date=2023-13-01", "\"date\""),
            ("date=yesterday", "\"date\""),
            ("match[]=%7Bjob%3D", "\"match[]\""),
        ] {
            let (s, v) = json_of(&app, get(&format!("/api/v1/status/tsdb?{q}"))).await;
            assert_eq!(s, 400, "{q}: {v}");
            assert_eq!(v["errorType"], "bad_data", "{q}: {v}");
            assert!(v["error"].as_str().unwrap().contains(name), "{q}: {v}");
        }
        let (s, _) = call(&app, get("/api/v1/status/tsdb?limit=10000&topN=10000")).await;
        assert_eq!(s, 200);
        for (uri, name) in [
            ("/api/v1/cardinality/label_names?limit=501", "\"limit\""),
            (
                "/api/v1/cardinality/label_names?count_method=active",
                "\"count_method\"",
            ),
            (
                "/api/v1/cardinality/label_names?selector=up&selector=down",
                "\"selector\"",
            ),
            (
                "/api/v1/cardinality/label_names?selector=%7B",
                "\"selector\"",
            ),
            ("/api/v1/cardinality/label_values", "\"label_names[]\""),
            (
                "/api/v1/cardinality/label_values?label_names[]=a-b",
                "\"label_names[]\"",
            ),
            (
                "/api/v1/cardinality/label_values?label_names[]=job&limit=0",
                "\"limit\"",
            ),
        ] {
            let (s, v) = json_of(&app, get(uri)).await;
            assert_eq!(s, 400, "{uri}: {v}");
            assert!(v["error"].as_str().unwrap().contains(name), "{uri}: {v}");
        }
    }

    #[tokio::test]
    async fn mimir_label_names_and_values() {
        let app = app(store());
        let (s, v) = json_of(&app, get("/api/v1/cardinality/label_names")).await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(
            v,
            json!({
                "label_values_count_total": 13,
                "label_names_count": 4,
                "cardinality": [
                    {"label_name": "instance", "label_values_count": 6},
                    {"label_name": "job", "label_values_count": 3},
                    {"label_name": "__name__", "label_values_count": 2},
                    {"label_name": "zone", "label_values_count": 2},
                ],
            })
        );
        let (_, v) = json_of(
            &app,
            get("/api/v1/cardinality/label_names?selector=down&limit=1&count_method=inmemory"),
        )
        .await;
        assert_eq!(v["label_names_count"], 3);
        assert_eq!(v["label_values_count_total"], 1 + 1 + 2);
        assert_eq!(
            v["cardinality"],
            json!([{"label_name": "zone", "label_values_count": 2}])
        );

        let req = Request::post("/api/v1/cardinality/label_values")
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(Body::from(
                "label_names[]=job&label_names[]=zone&label_names[]=nope&limit=2",
            ))
            .unwrap();
        let (s, v) = json_of(&app, req).await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(
            v,
            json!({
                "series_count_total": 8,
                "labels": [
                    {"label_name": "job", "label_values_count": 3, "series_count": 8,
                     "cardinality": [{"label_value": "a", "series_count": 5}, {"label_value": "b", "series_count": 2}]},
                    {"label_name": "zone", "label_values_count": 2, "series_count": 2,
                     "cardinality": [{"label_value": "z0", "series_count": 1}, {"label_value": "z1", "series_count": 1}]},
                    {"label_name": "nope", "label_values_count": 0, "series_count": 0, "cardinality": []},
                ],
            })
        );
        let (_, v) = json_of(
            &app,
            get("/api/v1/cardinality/label_values?label_names[]=job&selector=%7Bjob%3D~%22b%7Cc%22%7D"),
        )
        .await;
        assert_eq!(v["series_count_total"], 3);
        assert_eq!(
            v["labels"][0]["cardinality"],
            json!([{"label_value": "b", "series_count": 2}, {"label_value": "c", "series_count": 1}])
        );
    }

    /// A tenant's figures are its own: t2 sees only its one series, and the
    /// default tenant never sees t2's labels.
    #[tokio::test]
    async fn tenants_see_only_their_own_figures() {
        let app = app(store());
        let (_, v) = json_of(&app, as_tenant("/api/v1/status/tsdb", "t2")).await;
        assert_eq!(v["data"]["totalSeries"], 1);
        assert_eq!(
            v["data"]["seriesCountByMetricName"],
            json!([{"name": "secret", "value": 1}])
        );
        let (_, v) = json_of(&app, as_tenant("/api/v1/cardinality/label_names", "t2")).await;
        assert_eq!(v["label_names_count"], 2);
        let (_, v) = json_of(
            &app,
            as_tenant("/api/v1/cardinality/label_values?label_names[]=team", "t2"),
        )
        .await;
        assert_eq!(v["labels"][0]["series_count"], 1);
        for uri in [
            "/api/v1/status/tsdb?limit=10000",
            "/api/v1/cardinality/label_names?limit=500",
            "/api/v1/cardinality/label_values?label_names[]=team&label_names[]=__name__&limit=500",
        ] {
            let (s, b) = call(&app, get(uri)).await;
            assert_eq!(s, 200, "{b}");
            assert!(!b.contains("secret") && !b.contains("t2only"), "{uri}: {b}");
        }
        let (_, v) = json_of(&app, as_tenant("/api/v1/status/tsdb", "nobody")).await;
        assert_eq!(v["data"]["totalSeries"], 0);
    }
}
