//! The public surface: [`Engine`] and its options, query parsing (bounded,
//! cached) and selector extraction. Everything below it is crate-private.

use crate::exec::run::{run, Query, Settings};
use crate::resolution::{rewrite, SourceNamespace, SourceResolution, Sources};
use crate::value::{QueryError, QueryResult};
use crate::{ast, bounds};
use cairn_storage_api::{
    AggregateRequest, Aggregator, BoxFuture, PartialAggregate, SeriesReader, StoreError,
};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Engine limits and defaults.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// How far back an instant selector looks for a sample (Prometheus: 5m).
    pub lookback_delta_ms: i64,
    /// Most samples a query may load or produce.
    pub max_samples: usize,
    /// Wall-clock budget of one query.
    pub timeout: Duration,
    /// Longest accepted query text, bytes (`query.max-length`).
    pub max_query_length: usize,
    /// Deepest accepted nesting of brackets and operators
    /// (`query.max-nesting-depth`), checked before parsing: the parser, the
    /// evaluator and dropping the tree all recurse once per level.
    pub max_nesting_depth: usize,
    /// Most series one query may select, over all its selectors (0: no
    /// bound; a tenant's `max_series_per_query`).
    pub max_series: usize,
    /// The downsampled namespaces queries may read (see `resolution`);
    /// none: raw only.
    pub namespaces: Vec<SourceNamespace>,
    /// How far back raw samples are kept (`storage.retention`).
    pub raw_retention_ms: i64,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            lookback_delta_ms: 5 * 60 * 1000,
            max_samples: 50_000_000,
            timeout: Duration::from_secs(120),
            max_query_length: 256 * 1024,
            max_nesting_depth: 1000,
            max_series: 0,
            namespaces: Vec::new(),
            raw_retention_ms: 30 * 86_400_000,
        }
    }
}

/// The PromQL engine. Cheap to share; holds only options.
#[derive(Debug, Clone, Default)]
pub struct Engine {
    opts: EngineOptions,
    /// Step of subqueries without an explicit step (Prometheus's global
    /// evaluation interval, 1m by default).
    default_subquery_step_ms: i64,
    /// Whether range queries fold the aggregations they can while reading
    /// (`exec::fold`) and evaluate what they can series-wise
    /// (`exec::serieswise`) rather than step by step; off only in tests
    /// that compare those against the plain step-by-step evaluation.
    pub(crate) fold_and_serieswise: bool,
    /// Accumulator cells a folded aggregation may always use before it is
    /// held against the samples it summarises (`exec::fold`); tests
    /// lower it to exercise the fallback.
    pub(crate) fold_floor_cells: usize,
    /// Set by the caller to stop the query at its next step or series.
    pub(crate) cancel: Option<Arc<std::sync::atomic::AtomicBool>>,
    /// The request's `max_source_resolution`.
    source_resolution: SourceResolution,
}

/// Parsed queries by text, process-wide (the API builds an engine per
/// request): dashboards repeat the same queries, and parsing compiles every
/// regex matcher afresh.
static PARSED: std::sync::OnceLock<
    std::sync::Mutex<HashMap<String, Arc<promql_parser::parser::Expr>>>,
> = std::sync::OnceLock::new();

/// Distinct query texts kept parsed (the map is emptied when full), and
/// the longest text cached (longer ones are parsed every time).
const PARSE_CACHE_ENTRIES: usize = 256;
const PARSE_CACHE_MAX_LEN: usize = 2048;

impl Engine {
    pub fn new(opts: EngineOptions) -> Self {
        Self {
            opts,
            default_subquery_step_ms: 60_000,
            fold_and_serieswise: true,
            fold_floor_cells: 1 << 20,
            cancel: None,
            source_resolution: SourceResolution::Auto,
        }
    }

    /// Which resolutions the query may read (`max_source_resolution`).
    pub fn with_source_resolution(mut self, r: SourceResolution) -> Self {
        self.source_resolution = r;
        self
    }

    /// Runs `q`, its selectors first rewritten onto the rollups of the
    /// downsampled namespaces that suit them (`resolution`); the result
    /// says which resolution answered.
    fn run_at_resolution(
        &self,
        src: &dyn SeriesReader,
        tenant: &str,
        q: Query<'_>,
    ) -> Result<QueryResult, QueryError> {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let sources = Sources {
            namespaces: &self.opts.namespaces,
            choice: self.source_resolution,
            raw_retention_ms: self.opts.raw_retention_ms,
            now_ms,
            step_ms: q.step,
            start_ms: q.start,
            lookback_ms: self.opts.lookback_delta_ms,
        };
        let Some((expr, used)) = rewrite(q.expr, &sources) else {
            return run(&self.settings(), src, tenant, &q);
        };
        // Steps after `cut` may lie past what is downsampled yet: raw.
        // A step t reads the windows before t: those written, as the store
        // tells, or as the clock suggests when it cannot.
        let cut = used
            .iter()
            .map(|n| {
                src.downsampled_until(&n.name)
                    .unwrap_or_else(|| now_ms.saturating_sub(n.lag_ms))
            })
            .min()
            .unwrap_or(i64::MIN);
        if q.start > cut {
            return run(&self.settings(), src, tenant, &q);
        }
        let mut r = if q.is_range && q.end > cut {
            let last = q.start + (cut - q.start).div_euclid(q.step) * q.step;
            let coarse = run(
                &self.settings(),
                src,
                tenant,
                &Query {
                    expr: &expr,
                    end: last,
                    ..q
                },
            )?;
            let fine = run(
                &self.settings(),
                src,
                tenant,
                &Query {
                    start: last + q.step,
                    ..q
                },
            )?;
            concat_steps(coarse, fine)
        } else {
            run(&self.settings(), src, tenant, &Query { expr: &expr, ..q })?
        };
        let names: Vec<&str> = used.iter().map(|n| n.name.as_str()).collect();
        let res: Vec<String> = used
            .iter()
            .map(
                |n| match cairn_downsample::Resolution::from_ms(n.resolution_ms) {
                    Some(r) => r.to_string(),
                    None => format!("{}ms", n.resolution_ms),
                },
            )
            .collect();
        r.infos.push(format!(
            "PromQL info: answered from downsampled data at resolution {} (namespace {})",
            res.join(", "),
            names.join(", ")
        ));
        r.resolution = Some(res.join(","));
        Ok(r)
    }

    /// Stops the query cooperatively (at its next step, series batch or
    /// selector) once `flag` is set; it then fails with
    /// [`QueryError::Cancelled`].
    pub fn with_cancel(mut self, flag: Arc<std::sync::atomic::AtomicBool>) -> Self {
        self.cancel = Some(flag);
        self
    }

    /// `query` parsed under this engine's length and nesting bounds.
    pub fn parse(&self, query: &str) -> Result<promql_parser::parser::Expr, QueryError> {
        parse_bounded(
            query,
            self.opts.max_query_length,
            self.opts.max_nesting_depth,
        )
    }

    /// `query` parsed, from the cache when it was parsed before.
    fn parse_cached(&self, query: &str) -> Result<Arc<promql_parser::parser::Expr>, QueryError> {
        if query.len() > PARSE_CACHE_MAX_LEN {
            return Ok(Arc::new(self.parse(query)?));
        }
        let cache = PARSED.get_or_init(Default::default);
        if let Some(e) = cache.lock().ok().and_then(|m| m.get(query).cloned()) {
            return Ok(e);
        }
        let e = Arc::new(self.parse(query)?);
        if let Ok(mut m) = cache.lock() {
            if m.len() >= PARSE_CACHE_ENTRIES {
                m.clear();
            }
            m.insert(query.to_string(), e.clone());
        }
        Ok(e)
    }

    /// Sets the step used by subqueries that give none (default 1m).
    pub fn with_default_subquery_step_ms(mut self, step_ms: i64) -> Self {
        self.default_subquery_step_ms = step_ms.max(1);
        self
    }

    /// What one query runs under.
    fn settings(&self) -> Settings {
        Settings {
            lookback_ms: self.opts.lookback_delta_ms,
            max_samples: self.opts.max_samples,
            max_series: self.opts.max_series,
            timeout: self.opts.timeout,
            default_sub_step_ms: self.default_subquery_step_ms,
            fold_and_serieswise: self.fold_and_serieswise,
            fold_floor_cells: self.fold_floor_cells,
            cancel: self.cancel.clone(),
        }
    }

    pub fn options(&self) -> &EngineOptions {
        &self.opts
    }

    /// Evaluates `query` at `t_ms`.
    pub fn instant_query(
        &self,
        src: &dyn SeriesReader,
        tenant: &str,
        query: &str,
        t_ms: i64,
    ) -> Result<QueryResult, QueryError> {
        let expr = self.parse_cached(query)?;
        let q = Query {
            text: query,
            expr: &expr,
            start: t_ms,
            end: t_ms,
            step: 0,
            is_range: false,
        };
        self.run_at_resolution(src, tenant, q)
    }

    /// Evaluates `query` at every step from `start_ms` to `end_ms` inclusive.
    pub fn range_query(
        &self,
        src: &dyn SeriesReader,
        tenant: &str,
        query: &str,
        start_ms: i64,
        end_ms: i64,
        step_ms: i64,
    ) -> Result<QueryResult, QueryError> {
        if step_ms <= 0 {
            return Err(QueryError::Parse(
                "zero or negative query resolution step widths are not accepted. Try a positive integer".into(),
            ));
        }
        if end_ms < start_ms {
            return Err(QueryError::Parse(
                "end timestamp must not be before start time".into(),
            ));
        }
        let expr = self.parse_cached(query)?;
        let q = Query {
            text: query,
            expr: &expr,
            start: start_ms,
            end: end_ms,
            step: step_ms,
            is_range: true,
        };
        self.run_at_resolution(src, tenant, q)
    }
}

/// One range query's answer from two runs over consecutive steps: each
/// series' samples of `a`, then of `b` (label sets sorted, as one run's).
fn concat_steps(a: QueryResult, b: QueryResult) -> QueryResult {
    use crate::value::{RangeSeries, Value};
    let (Value::Matrix(x), Value::Matrix(y)) = (a.value, b.value) else {
        // Range queries give matrices; nothing else reaches here.
        return QueryResult {
            value: Value::Matrix(Vec::new()),
            warnings: a.warnings,
            infos: a.infos,
            resolution: None,
        };
    };
    let mut by: std::collections::BTreeMap<cairn_common::Labels, Vec<cairn_common::Sample>> =
        Default::default();
    for s in x.into_iter().chain(y) {
        by.entry(s.labels).or_default().extend(s.samples);
    }
    let union = |mut v: Vec<String>, more: Vec<String>| {
        for m in more {
            if !v.contains(&m) {
                v.push(m);
            }
        }
        v
    };
    let warnings = union(a.warnings, b.warnings);
    let infos = union(a.infos, b.infos);
    QueryResult {
        value: Value::Matrix(
            by.into_iter()
                .map(|(labels, samples)| RangeSeries { labels, samples })
                .collect(),
        ),
        warnings,
        infos,
        resolution: None,
    }
}

/// Every vector selector in `expr` (incl. those of range selectors and
/// subqueries), each as its `or` groups of Cairn matchers — the conversion
/// the engine fetches with, so the API's exemplar reads select the same.
pub fn extract_selectors(
    expr: &promql_parser::parser::Expr,
) -> Result<Vec<Vec<cairn_common::Matcher>>, QueryError> {
    let mut sel = Vec::new();
    ast::collect_selectors(expr, &mut sel);
    let mut out = Vec::new();
    for vs in sel {
        out.extend(ast::selector_matchers(vs)?);
    }
    Ok(out)
}

/// Parses a PromQL expression under the default length and nesting bounds.
pub fn parse(query: &str) -> Result<promql_parser::parser::Expr, QueryError> {
    let d = EngineOptions::default();
    parse_bounded(query, d.max_query_length, d.max_nesting_depth)
}

/// Parses a PromQL expression no longer than `max_len` bytes and nesting no
/// deeper than `max_depth`; durations and `@` times must be in range.
pub fn parse_bounded(
    query: &str,
    max_len: usize,
    max_depth: usize,
) -> Result<promql_parser::parser::Expr, QueryError> {
    bounds::check_text(query, max_len, max_depth)?;
    // promql-parser panics on some durations it cannot hold (`offset 6e33`,
    // `[5m:Inf]`: `Duration::from_secs_f64`); that is a bad query, not a 500.
    let parsed =
        std::panic::catch_unwind(|| promql_parser::parser::parse(query)).map_err(|_| {
            QueryError::Parse(
                "invalid duration: out of range (durations are at most about 292 years)".into(),
            )
        })?;
    // The parser's message, with the position Prometheus gives (`parse_error`).
    let e = parsed.map_err(|m| QueryError::Parse(crate::parse_error::describe(query, m)))?;
    bounds::check_expr(&e)?;
    Ok(e)
}

/// The engine computes the partial aggregations a cluster pushes down to
/// the nodes holding the data (`exec::fold`'s `partial`), on the calling
/// thread.
impl Aggregator for Engine {
    fn partial<'a>(
        &'a self,
        store: &'a dyn SeriesReader,
        req: AggregateRequest,
    ) -> BoxFuture<'a, Result<Option<PartialAggregate>, StoreError>> {
        Box::pin(async move { crate::exec::fold::partial(store, &req, self.fold_floor_cells) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::Value;
    use cairn_common::{stale_nan, Labels, MemStore, Sample};

    fn l(pairs: &[(&str, &str)]) -> Labels {
        Labels::from_pairs(pairs)
    }

    /// `up{job=a}` every 15s from 0 to 10m with value t/15s; `up{job=b}` is
    /// 1 until a stale marker at 60s.
    fn store() -> MemStore {
        let m = MemStore::new();
        let a = l(&[("__name__", "up"), ("job", "a")]);
        let b = l(&[("__name__", "up"), ("job", "b")]);
        for i in 0..=40 {
            m.add("default", &a, i * 15_000, i as f64);
        }
        m.add("default", &b, 0, 1.0);
        m.add("default", &b, 30_000, 1.0);
        m.add("default", &b, 60_000, stale_nan());
        m
    }

    fn vector(r: QueryResult) -> Vec<(String, f64)> {
        match r.value {
            Value::Vector(v) => {
                let mut out: Vec<_> = v.into_iter().map(|s| (s.labels.to_string(), s.v)).collect();
                out.sort_by(|a, b| a.0.cmp(&b.0));
                out
            }
            other => panic!("expected vector, got {other:?}"),
        }
    }

    fn q(m: &MemStore, query: &str, t: i64) -> Vec<(String, f64)> {
        vector(
            Engine::new(EngineOptions::default())
                .instant_query(m, "default", query, t)
                .unwrap(),
        )
    }

    #[test]
    fn instant_selector_honours_lookback_and_staleness() {
        let m = store();
        assert_eq!(
            q(&m, "up", 45_000),
            vec![
                (r#"up{job="a"}"#.to_string(), 3.0),
                (r#"up{job="b"}"#.to_string(), 1.0)
            ]
        );
        // The stale marker at 60s ends job=b at once; the value is never returned.
        assert_eq!(q(&m, "up{job=\"b\"}", 60_000), vec![]);
        // Lookback is left-open: a sample exactly 5m old is out.
        assert_eq!(q(&m, "up{job=\"a\"}", 600_000 + 300_000), vec![]);
        assert_eq!(q(&m, "up{job=\"a\"}", 600_000 + 299_999).len(), 1);
    }

    #[test]
    fn range_selector_is_left_open_and_rate_extrapolates() {
        let m = store();
        // (60s, 120s] holds 75s, 90s, 105s, 120s: 4 samples.
        assert_eq!(
            q(&m, "count_over_time(up{job=\"a\"}[1m])", 120_000),
            vec![(r#"{job="a"}"#.to_string(), 4.0)]
        );
        // Counter rising 1 per 15s: rate 1/15 per second.
        let r = q(&m, "rate(up{job=\"a\"}[1m])", 300_000);
        assert!((r[0].1 - 1.0 / 15.0).abs() < 1e-9, "{r:?}");
    }

    #[test]
    fn offset_at_and_subquery() {
        let m = store();
        assert_eq!(q(&m, "up{job=\"a\"} offset 1m", 120_000)[0].1, 4.0);
        assert_eq!(q(&m, "up{job=\"a\"} @ 30", 600_000)[0].1, 2.0);
        // Subquery steps at 60s, 120s, 180s (aligned), inclusive end.
        assert_eq!(
            q(&m, "count_over_time(up{job=\"a\"}[3m:1m])", 180_000)[0].1,
            3.0
        );
        assert_eq!(
            q(&m, "max_over_time(up{job=\"a\"}[3m:1m])", 180_000)[0].1,
            12.0
        );
    }

    #[test]
    fn aggregation_and_vector_matching() {
        let m = MemStore::new();
        for (inst, v) in [("1", 10.0), ("2", 20.0)] {
            m.add(
                "default",
                &l(&[("__name__", "req"), ("job", "x"), ("instance", inst)]),
                0,
                v,
            );
        }
        m.add(
            "default",
            &l(&[("__name__", "limit"), ("job", "x"), ("team", "t1")]),
            0,
            100.0,
        );
        assert_eq!(
            q(&m, "sum by (job) (req)", 0),
            vec![(r#"{job="x"}"#.into(), 30.0)]
        );
        assert_eq!(q(&m, "avg(req)", 0), vec![("{}".into(), 15.0)]);
        assert_eq!(
            q(&m, "req / on(job) group_left(team) limit", 0),
            vec![
                (r#"{instance="1", job="x", team="t1"}"#.into(), 0.1),
                (r#"{instance="2", job="x", team="t1"}"#.into(), 0.2)
            ]
        );
        assert_eq!(
            q(&m, "req > 15", 0),
            vec![(r#"req{instance="2", job="x"}"#.into(), 20.0)]
        );
        assert_eq!(q(&m, "topk(1, req)", 0)[0].1, 20.0);
        assert_eq!(q(&m, "quantile(0.5, req)", 0)[0].1, 15.0);
        let err = Engine::default()
            .instant_query(&m, "default", "req + on(job) req", 0)
            .unwrap_err();
        assert_eq!(err.error_type(), "execution");
    }

    #[test]
    fn range_query_is_sorted_matrix_of_steps() {
        let m = store();
        let r = Engine::new(EngineOptions::default())
            .range_query(&m, "default", "up", 0, 60_000, 30_000)
            .unwrap();
        let Value::Matrix(ss) = r.value else {
            panic!("expected matrix")
        };
        assert_eq!(ss.len(), 2);
        assert_eq!(ss[0].labels.get("job"), Some("a"));
        assert_eq!(
            ss[0].samples,
            vec![
                Sample::new(0, 0.0),
                Sample::new(30_000, 2.0),
                Sample::new(60_000, 4.0)
            ]
        );
        // job=b is stale at 60s.
        assert_eq!(ss[1].samples.len(), 2);
    }

    #[test]
    fn errors_map_to_prometheus_types() {
        let m = store();
        let e = Engine::default();
        let err = e.instant_query(&m, "default", "sum(", 0).unwrap_err();
        assert_eq!(err.error_type(), "bad_data");
        let small = Engine::new(EngineOptions {
            max_samples: 5,
            ..EngineOptions::default()
        });
        let err = small
            .instant_query(&m, "default", "up[10m]", 600_000)
            .unwrap_err();
        assert!(matches!(err, QueryError::TooManySamples(_)), "{err:?}");
        let few = Engine::new(EngineOptions {
            max_series: 1,
            ..EngineOptions::default()
        });
        let err = few.instant_query(&m, "default", "up", 30_000).unwrap_err();
        assert!(
            matches!(&err, QueryError::Execution(m) if m.contains("more than 1 series")),
            "{err:?}"
        );
        let quick = Engine::new(EngineOptions {
            timeout: Duration::ZERO,
            ..EngineOptions::default()
        });
        let err = quick
            .range_query(&m, "default", "up", 0, 600_000, 1_000)
            .unwrap_err();
        assert_eq!(err.error_type(), "timeout");
        let err = e
            .range_query(&m, "default", "up[1m]", 0, 60_000, 15_000)
            .unwrap_err();
        assert_eq!(err.error_type(), "bad_data");
    }

    #[test]
    fn delayed_name_removal_and_label_replace() {
        let m = store();
        assert_eq!(
            q(
                &m,
                "label_replace(rate(up{job=\"a\"}[1m]), \"n\", \"$1\", \"__name__\", \"(.+)\")",
                300_000
            )[0]
            .0,
            r#"{job="a", n="up"}"#
        );
        assert_eq!(
            q(&m, "last_over_time(up{job=\"a\"}[1m])", 300_000)[0].0,
            r#"up{job="a"}"#
        );
    }

    #[test]
    fn scalar_and_string_results() {
        let m = store();
        let e = Engine::default();
        let r = e.instant_query(&m, "default", "1 + 2 * 3", 5_000).unwrap();
        assert_eq!(r.value, Value::Scalar { t: 5_000, v: 7.0 });
        let r = e.instant_query(&m, "default", "\"hi\"", 5_000).unwrap();
        assert_eq!(
            r.value,
            Value::String {
                t: 5_000,
                v: "hi".into()
            }
        );
        let r = e.instant_query(&m, "default", "time()", 5_000).unwrap();
        assert_eq!(r.value, Value::Scalar { t: 5_000, v: 5.0 });
    }

    /// A peer's request for a partial aggregation over more steps than a
    /// partial may answer, or that is no aggregation, is refused as invalid
    /// before anything is allocated or read.
    #[test]
    fn partials_of_too_many_steps_or_no_aggregation_are_refused() {
        use cairn_storage_api::{block_on, AggregateRequest, Aggregator, ErrorKind, SelectRequest};
        let m = MemStore::new();
        let e = Engine::new(EngineOptions::default());
        let req = |query: &str, end: i64, step: i64| AggregateRequest {
            select: SelectRequest::new("default", vec![], 0, end),
            query: query.into(),
            start: 0,
            end,
            step,
            lookback: 300_000,
            max_samples: 1000,
            digests: false,
        };
        for r in [
            req("sum(x)", i64::MAX / 2, 1),
            req("sum(x)", 86_400_000, 1),
            req("x", 60_000, 15_000),
            req("topk(2, x)", 60_000, 15_000),
            req("sum(x)", 60_000, 0),
        ] {
            let got = block_on(Aggregator::partial(&e, &m, r.clone()));
            assert_eq!(
                got.map(|_| ()).unwrap_err().kind(),
                ErrorKind::InvalidInput,
                "{}",
                r.query
            );
        }
        assert!(block_on(Aggregator::partial(&e, &m, req("sum(x)", 86_399_000, 1000))).is_ok());
    }

    /// Aggregations folded ahead (series by series as they are read, from
    /// one batch or three series at a time) and, parenthesised, evaluated
    /// series-wise give exactly what the step-by-step path gives.
    #[test]
    fn folded_aggregations_match_step_by_step() {
        let m = MemStore::new();
        // The same data handed out three series at a time.
        let m3 = MemStore::with_batch_size(3);
        let specials = [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1e308, -1e308];
        for s in 0..40u32 {
            let name = if s % 3 == 0 { "odd_gauge" } else { "x_total" };
            let lb = l(&[
                ("__name__", name),
                ("g", &format!("{}", s % 4)),
                ("s", &format!("{s:02}")),
            ]);
            for i in 0..200i64 {
                if (i + s as i64) % 17 == 5 {
                    continue;
                }
                // Short-lived series: some start late, some end early, so
                // whole blocks of steps see no sample of them.
                // (1830 s: the end of a 64-step block at a 15 s step).
                if (s % 7 == 1 && i < 150) || (s % 7 == 2 && i > 40) || (s % 7 == 3 && i < 183) {
                    continue;
                }
                let v = if (i * 7 + s as i64) % 53 == 0 {
                    specials[(i as usize + s as usize) % specials.len()]
                } else {
                    (i * (s as i64 + 1)) as f64 * 0.37 + f64::from(s) * 1e-9
                };
                m.add("default", &lb, i * 10_000 + i64::from(s) * 97, v);
                m3.add("default", &lb, i * 10_000 + i64::from(s) * 97, v);
            }
            if s % 5 == 0 {
                m.add("default", &lb, 1_005_000, stale_nan());
                m3.add("default", &lb, 1_005_000, stale_nan());
            }
        }
        let e = Engine::new(EngineOptions::default());
        let mut step_by_step = Engine::new(EngineOptions::default());
        step_by_step.fold_and_serieswise = false;
        // Folding that gives up as soon as its accumulators outnumber half
        // the samples read (then the selector is fetched for the step path).
        let mut thrifty = Engine::new(EngineOptions::default());
        thrifty.fold_floor_cells = 0;
        for op in [
            "sum", "avg", "min", "max", "count", "group", "stddev", "stdvar",
        ] {
            // Range functions of range selectors, and instant selectors
            // (their staleness markers and lookback included).
            let mut args: Vec<String> = Vec::new();
            for f in ["rate", "sum_over_time", "last_over_time", "irate"] {
                for sel in [
                    "{__name__=~\"x_total|odd_gauge\"}[1m]",
                    "x_total[2m] offset 30s",
                ] {
                    args.push(format!("{f}({sel})"));
                }
            }
            args.push("{__name__=~\"x_total|odd_gauge\"}".into());
            args.push("x_total offset 30s".into());
            for arg in &args {
                for grp in ["by (g)", "without (s)", "", "by (__name__)"] {
                    {
                        let agg = format!("{op} {grp} ({arg})");
                        let slow_agg = format!("{op} {grp} (({arg}))");
                        // The same aggregation as the argument of a function
                        // (computed ahead too) and as a plain expression.
                        let (fast, slow) = if grp == "without (s)" {
                            (
                                format!("clamp_min({agg}, -1e300)"),
                                format!("clamp_min({slow_agg}, -1e300)"),
                            )
                        } else {
                            (agg, slow_agg)
                        };
                        for (start, end, step) in [(0, 2_100_000, 15_000), (50_000, 900_000, 7_000)]
                        {
                            let plain =
                                step_by_step.range_query(&m, "default", &fast, start, end, step);
                            // Computed ahead, and (parenthesised) series-wise.
                            for q in [&fast, &slow] {
                                let a = e.range_query(&m, "default", q, start, end, step);
                                assert_same_result(q, &a, &plain, 0.0);
                            }
                            let a = e.range_query(&m3, "default", &fast, start, end, step);
                            assert_same_result(&fast, &a, &plain, 0.0);
                            let a = thrifty.range_query(&m3, "default", &fast, start, end, step);
                            assert_same_result(&fast, &a, &plain, 0.0);
                        }
                        // An instant query folds its aggregation too.
                        for t in [0, 455_000, 1_005_000, 1_830_000, 2_100_000] {
                            let plain = step_by_step.instant_query(&m, "default", &fast, t);
                            let a = e.instant_query(&m3, "default", &fast, t);
                            assert_same_result(&fast, &a, &plain, 0.0);
                        }
                    }
                }
            }
        }
    }

    /// Asserts two evaluations agree: the same series, timestamps, warnings
    /// and infos (positions aside), values equal within `rel` relative
    /// (NaN equal to NaN), or both errors.
    fn assert_same_result(
        q: &str,
        a: &Result<QueryResult, QueryError>,
        b: &Result<QueryResult, QueryError>,
        rel: f64,
    ) {
        let (a, b) = match (a, b) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(a), Err(b)) => {
                assert_eq!(a.to_string(), b.to_string(), "{q}");
                return;
            }
            (a, b) => panic!("{q}: {a:?} vs {b:?}"),
        };
        // An instant vector: element by element, in order.
        if let (Value::Vector(x), Value::Vector(y)) = (&a.value, &b.value) {
            assert_eq!(x.len(), y.len(), "{q}: {x:?} vs {y:?}");
            for (p, r) in x.iter().zip(y) {
                assert_eq!((&p.labels, p.t), (&r.labels, r.t), "{q}");
                let same = (p.v.is_nan() && r.v.is_nan())
                    || p.v == r.v
                    || (p.v - r.v).abs() <= rel * p.v.abs().max(r.v.abs());
                assert!(same, "{q} {:?}: {} vs {}", p.labels, p.v, r.v);
            }
            assert_eq!(a.warnings, b.warnings, "{q}");
            assert_eq!(a.infos.len(), b.infos.len(), "{q}");
            return;
        }
        let (Value::Matrix(x), Value::Matrix(y)) = (&a.value, &b.value) else {
            panic!("{q}: not matrices: {:?} vs {:?}", a.value, b.value);
        };
        assert_eq!(x.len(), y.len(), "{q}: {x:?} vs {y:?}");
        for (sx, sy) in x.iter().zip(y) {
            assert_eq!(sx.labels, sy.labels, "{q}");
            assert_eq!(sx.samples.len(), sy.samples.len(), "{q} {:?}", sx.labels);
            for (p, r) in sx.samples.iter().zip(&sy.samples) {
                assert_eq!(p.t, r.t, "{q} {:?}", sx.labels);
                let same = (p.v.is_nan() && r.v.is_nan())
                    || p.v == r.v
                    || (p.v - r.v).abs() <= rel * p.v.abs().max(r.v.abs());
                assert!(same, "{q} {:?} at {}: {} vs {}", sx.labels, p.t, p.v, r.v);
            }
        }
        assert_eq!(a.warnings, b.warnings, "{q}");
        let strip = |v: &[String]| -> Vec<String> {
            v.iter()
                .map(|s| s.split(" (").next().unwrap_or("").to_string())
                .collect()
        };
        assert_eq!(strip(&a.infos), strip(&b.infos), "{q}");
    }

    /// Range queries evaluated series-wise (whole queries and planned
    /// subexpressions) give what the step-by-step evaluation gives: over
    /// counters and gauges with gaps, specials, staleness markers, series
    /// that start late or end early, ties, two metrics whose label sets
    /// collide once names are dropped, and match groups with two series.
    #[test]
    fn series_wise_matches_step_by_step() {
        let m = MemStore::new();
        let specials = [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1e308, -1e308];
        for s in 0..24u32 {
            for name in ["x_total", "y_total", "gauge"] {
                if name == "y_total" && s % 5 == 4 {
                    continue;
                }
                let g = format!("{}", s % 3);
                let inst = format!("{s:02}");
                let lb = l(&[("__name__", name), ("g", &g), ("s", &inst)]);
                for i in 0..150i64 {
                    if (i + s as i64) % 13 == 4 || (s % 6 == 1 && i < 90) || (s % 6 == 2 && i > 50)
                    {
                        continue;
                    }
                    let v = if name == "gauge" {
                        // Few distinct values: ties for topk and comparisons.
                        ((i / 10 + s as i64) % 4) as f64
                    } else if (i * 7 + s as i64) % 41 == 0 {
                        specials[(i as usize + s as usize) % specials.len()]
                    } else {
                        (i * (s as i64 + 1)) as f64 * 0.37 + f64::from(s) * 1e-9
                    };
                    m.add("default", &lb, i * 10_000 + i64::from(s) * 89, v);
                }
                if s % 4 == 0 {
                    m.add("default", &lb, 1_000_000, stale_nan());
                }
            }
        }
        // Two series per `g` on `dup`: one-to-one matching on `g` fails
        // at the steps where both are present.
        for (s, from, to) in [("a", 0, 60), ("b", 40, 100), ("c", 70, 150)] {
            let lb = l(&[("__name__", "dup"), ("g", "0"), ("s", s)]);
            for i in from..to {
                m.add("default", &lb, i * 10_000, i as f64);
            }
        }
        // `dup2`'s two series are never both within the lookback.
        for (s, from, to) in [("a", 0, 30), ("b", 70, 100)] {
            let lb = l(&[("__name__", "dup2"), ("g", "0"), ("s", s)]);
            for i in from..to {
                m.add("default", &lb, i * 10_000, i as f64);
            }
        }
        // Samples exactly one lookback (and one range) before a step.
        let lb = l(&[("__name__", "edge"), ("g", "9")]);
        for t in [0, 60_000, 600_000, 660_000] {
            m.add("default", &lb, t, t as f64);
        }
        let e = Engine::new(EngineOptions::default());
        let mut step_by_step = Engine::new(EngineOptions::default());
        step_by_step.fold_and_serieswise = false;
        let queries = [
            "edge",
            "count_over_time(edge[1m])",
            "dup + on (g) sum by (g) (gauge)",
            "dup2 + on (g) sum by (g) (gauge)",
            "dup2 - ignoring (s) group by (g, __name__) (dup2)",
            "x_total",
            "gauge offset 1m",
            "gauge @ 500",
            "-x_total",
            "x_total * 2",
            "2 - (x_total)",
            "x_total > 50",
            "100 < x_total",
            "gauge >= bool 2",
            "gauge == bool gauge",
            "x_total / y_total",
            "x_total / on (s) y_total",
            "x_total + ignoring (g) y_total",
            "x_total > x_total",
            "gauge != bool on (s, g) x_total",
            "x_total / on (g) y_total",
            "dup + on (g) gauge",
            "gauge + on (g) dup",
            "dup",
            "dup * 1",
            "rate(x_total[1m]) / rate(y_total[1m])",
            "rate({__name__=~\"x_total|y_total\"}[1m])",
            "-{__name__=~\"x_total|gauge\"}",
            "{__name__=~\"x_total|y_total\"} / 3",
            "max by (g) (1 - x_total / y_total)",
            "sum(x_total)",
            "avg without (s) (x_total * 2)",
            "count(x_total > 10)",
            "stddev by (g) (gauge)",
            "group by (s) (gauge)",
            "sum by (__name__) ({__name__=~\"x_total|gauge\"})",
            "sum by (__name__) (-{__name__=~\"x_total|gauge\"})",
            "min by (g) ({__name__=~\"x_total|gauge\"} * 1)",
            "sum by (g) (rate(x_total[1m])) / sum by (g) (rate(y_total[1m]))",
            "100 * (1 - avg by (g) (rate(x_total[2m])))",
            "topk(3, gauge)",
            "bottomk(2, rate(x_total[1m]))",
            "topk by (g) (1, gauge)",
            "topk(2, gauge * 2)",
            "topk(2, sum by (s) (gauge))",
            "topk(0, gauge)",
            "topk(-1, gauge)",
            "topk(1e300, gauge)",
            "topk(2, -{__name__=~\"x_total|gauge\"})",
            "abs(x_total - y_total)",
            "clamp_max(sum by (g) (gauge) > 2, 5)",
            "sort(max by (g) (gauge))",
            "histogram_quantile(0.9, sum by (g) (gauge))",
            "sum(topk(2, gauge))",
            "max(min by (g) (gauge))",
            "stddev(sum by (s) (x_total))",
            "label_replace(sum(sum by (g) (gauge)), \"x\", \"y\", \"\", \"\")",
            "count(gauge * 1) by (g) + count(gauge) by (g)",
            "label_replace(gauge * 1, \"x\", \"$1\", \"s\", \"(.)\")",
        ];
        for q in queries {
            for (start, end, step) in [
                (0, 1_500_000, 15_000),
                (35_000, 700_000, 7_000),
                (-600_000, 3_000_000, 120_000),
            ] {
                let a = e.range_query(&m, "default", q, start, end, step);
                let b = step_by_step.range_query(&m, "default", q, start, end, step);
                assert_same_result(q, &a, &b, 0.0);
            }
        }
    }
}

#[cfg(test)]
mod parser_panics {
    #[test]
    fn durations_the_parser_cannot_hold_are_parse_errors() {
        let e = super::parse("up offset 6e33").unwrap_err().to_string();
        assert!(e.contains("out of range"), "{e}");
    }
}
