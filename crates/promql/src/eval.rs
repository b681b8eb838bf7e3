//! Planning (which selector needs which time range), fetching, and the
//! step-wise evaluator.

use crate::{Engine, InstantSample, QueryError, QueryResult, RangeSeries, Value};
use cairn_common::{
    is_stale_nan, Labels, MatchOp, Matcher, Sample, SeriesData, SeriesSource, METRIC_NAME,
};
use promql_parser::label::MatchOp as PMatchOp;
use promql_parser::parser::{
    AggregateExpr, AtModifier, Expr, MatrixSelector, Offset, SubqueryExpr, VectorSelector,
};
use rustc_hash::{FxHashMap, FxHashSet};
use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

pub(crate) type Result<T, E = QueryError> = std::result::Result<T, E>;

/// One element of an instant vector during evaluation.
#[derive(Debug, Clone)]
pub(crate) struct Elem {
    /// Shared: steps refer to a series' label set, never copy it.
    pub labels: Arc<Labels>,
    /// The sample's own timestamp (for `timestamp()`); the eval time otherwise.
    pub t: i64,
    pub v: f64,
    /// Delayed `__name__` removal: dropped when the result is returned.
    pub drop_name: bool,
}

/// One series of a range vector during evaluation.
#[derive(Debug, Clone)]
pub(crate) struct Series {
    pub labels: Arc<Labels>,
    pub samples: Vec<Sample>,
    pub drop_name: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct MatrixVal {
    pub series: Vec<Series>,
    /// The window `(range_end - range_ms, range_end]` the samples came from.
    pub range_end: i64,
    pub range_ms: i64,
}

#[derive(Debug, Clone)]
pub(crate) enum Val {
    Scalar(f64),
    Str(String),
    Vector(Vec<Elem>),
    Matrix(MatrixVal),
}

impl Val {
    pub fn type_name(&self) -> &'static str {
        match self {
            Val::Scalar(_) => "scalar",
            Val::Str(_) => "string",
            Val::Vector(_) => "instant vector",
            Val::Matrix(_) => "range vector",
        }
    }
}

pub(crate) fn exec_err(msg: impl Into<String>) -> QueryError {
    QueryError::Execution(msg.into())
}

pub(crate) fn system_time_ms(st: &SystemTime) -> i64 {
    match st.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_millis() as i64,
        Err(e) => -(e.duration().as_millis() as i64),
    }
}

pub(crate) fn offset_ms(o: &Option<Offset>) -> i64 {
    match o {
        None => 0,
        Some(Offset::Pos(d)) => d.as_millis() as i64,
        Some(Offset::Neg(d)) => -(d.as_millis() as i64),
    }
}

pub(crate) fn selector_key(vs: &VectorSelector) -> usize {
    vs as *const VectorSelector as usize
}

/// Labels in Go's `labels.Labels.String()` form: `{__name__="x", a="b"}`.
pub(crate) fn go_labels(l: &Labels) -> String {
    let mut s = String::from("{");
    for (i, lb) in l.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        s.push_str(&lb.name);
        s.push('=');
        s.push_str(&format!("{:?}", lb.value));
    }
    s.push('}');
    s
}

/// One fetched series. Series of range selectors have their staleness
/// markers removed at load time (range selectors never see them).
pub(crate) struct Fetched {
    pub labels: Arc<Labels>,
    pub samples: Vec<Sample>,
    /// Whether the metric name does not look like a counter's (for
    /// `rate`'s annotation), decided once.
    pub odd_counter_name: bool,
    /// Whether any sample is below its predecessor (a counter reset), so
    /// `rate` over windows of a series without one skips looking for them.
    pub may_reset: bool,
}

/// Whether `rate()` of metric `n` deserves "might not be a counter".
pub(crate) fn not_counter_name(n: &str) -> bool {
    !n.ends_with("_total")
        && !n.ends_with("_sum")
        && !n.ends_with("_count")
        && !n.ends_with("_bucket")
}

/// Moves an instant cursor forward: from `idx`, the number of samples at
/// or before `te` (`te` at or after the time `idx` was found for).
pub(crate) fn advance_to(s: &[Sample], mut idx: usize, te: i64) -> usize {
    // Far jumps (sparse steps over dense data) search.
    if idx + 16 < s.len() && s[idx + 16].t <= te {
        idx += s[idx..].partition_point(|x| x.t <= te);
    }
    while idx < s.len() && s[idx].t <= te {
        idx += 1;
    }
    idx
}

/// Sliding-window cursors of one range selector: per series, the sample
/// indices `[lo, hi)` of the window ending at `last_te`.
struct Windows {
    last_te: i64,
    cur: Vec<(usize, usize)>,
}

/// Moves window cursors `(lo, hi)` forward to the samples in `(from, te]`:
/// both only advance, so successive steps cost the samples they pass.
pub(crate) fn slide_window(
    s: &[Sample],
    (mut lo, mut hi): (usize, usize),
    from: i64,
    te: i64,
) -> (usize, usize) {
    while lo < s.len() && s[lo].t <= from {
        lo += 1;
    }
    hi = hi.max(lo);
    while hi < s.len() && s[hi].t <= te {
        hi += 1;
    }
    (lo, hi)
}

/// Cursors of one instant selector: per series, the number of samples at
/// or before `last_te`.
struct Cursors {
    last_te: i64,
    idx: Vec<usize>,
}

/// Label sets derived from a shared label set, keyed by the source `Arc`'s
/// address (the `Arc` is kept so the address stays unique).
#[derive(Default)]
pub(crate) struct PtrCache<V> {
    map: FxHashMap<usize, (Arc<Labels>, V)>,
}

impl<V: Clone> PtrCache<V> {
    /// Looks `l` up by address; on a miss computes the value and, when `l`
    /// is shared (held elsewhere too, so likely seen again), remembers it.
    pub fn get_or(&mut self, l: &Arc<Labels>, f: impl FnOnce(&Labels) -> V) -> V {
        self.get_or_tagged(l, false, f)
    }

    /// The same, with a one-bit tag in the key (the address is aligned).
    pub fn get_or_tagged(&mut self, l: &Arc<Labels>, tag: bool, f: impl FnOnce(&Labels) -> V) -> V {
        let k = Arc::as_ptr(l) as usize | usize::from(tag);
        if let Some((_, v)) = self.map.get(&k) {
            return v.clone();
        }
        let v = f(l);
        if Arc::strong_count(l) > 1 {
            if self.map.len() > 1 << 20 {
                self.map.clear();
            }
            self.map.insert(k, (l.clone(), v.clone()));
        }
        v
    }
}

/// Per-aggregation state kept across steps: each input label set's group.
#[derive(Default)]
pub(crate) struct GroupCache {
    pub by_ptr: PtrCache<u32>,
    pub index: FxHashMap<Labels, u32>,
    pub keys: Vec<Arc<Labels>>,
    /// Scratch: global group → slot in the current step's groups.
    pub slot: Vec<u32>,
}

impl GroupCache {
    pub fn group_of(&mut self, l: &Arc<Labels>, key: impl FnOnce(&Labels) -> Labels) -> usize {
        let (index, keys) = (&mut self.index, &mut self.keys);
        self.by_ptr.get_or(l, |l| {
            let k = key(l);
            if let Some(&g) = index.get(&k) {
                return g;
            }
            let g = keys.len() as u32;
            keys.push(Arc::new(k.clone()));
            index.insert(k, g);
            g
        }) as usize
    }
}

/// Per binary-operator state kept across steps: match signatures as small
/// ids, by (label set, drop_name); one-to-one result label sets.
#[derive(Default)]
pub(crate) struct BinCache {
    sig: PtrCache<u32>,
    ids: FxHashMap<Labels, u32>,
    pub result: PtrCache<Arc<Labels>>,
}

impl BinCache {
    /// The id of `sig(labels)`; `drop_name` is part of the key since the
    /// signature is taken over the effective labels.
    pub fn sig_id(
        &mut self,
        l: &Arc<Labels>,
        drop_name: bool,
        sig: impl FnOnce(&Labels) -> Labels,
    ) -> u32 {
        let ids = &mut self.ids;
        self.sig.get_or_tagged(l, drop_name, |l| {
            let k = sig(l);
            let n = ids.len() as u32;
            *ids.entry(k).or_insert(n)
        })
    }
}

/// The evaluator: fetched data plus per-query settings.
pub(crate) struct Evaluator {
    /// The query text, to report annotation positions as `(line:col)`.
    pub query: String,
    pub data: HashMap<usize, Vec<Fetched>>,
    windows: RefCell<FxHashMap<usize, Windows>>,
    instants: RefCell<FxHashMap<usize, Cursors>>,
    /// Per aggregation node (by address): its grouping across steps.
    pub groups: RefCell<FxHashMap<usize, GroupCache>>,
    /// Per binary operator node (by address): its matching across steps.
    pub bins: RefCell<FxHashMap<usize, BinCache>>,
    /// Aggregations computed ahead of a range query's steps, by node address.
    pub pre: RefCell<FxHashMap<usize, crate::aggr::Precomputed>>,
    /// Subexpressions computed series-wise ahead of the steps, by address.
    pub cols: RefCell<FxHashMap<usize, crate::columnar::Cols>>,
    /// Label sets with `__name__` removed, by source label set.
    no_name: RefCell<PtrCache<Arc<Labels>>>,
    pub start: i64,
    pub end: i64,
    pub step: i64,
    pub lookback: i64,
    pub default_sub_step: i64,
    pub deadline: Instant,
    /// Set by the caller to stop the query (see `Engine::with_cancel`).
    pub cancel: Option<Arc<std::sync::atomic::AtomicBool>>,
    pub max_samples: usize,
    pub samples_in_step: Cell<usize>,
    pub warnings: RefCell<BTreeSet<String>>,
    pub infos: RefCell<BTreeSet<String>>,
}

struct Planner<'a> {
    /// key → (matchers, mint, maxt)
    needs: HashMap<usize, (&'a VectorSelector, i64, i64)>,
    start: i64,
    end: i64,
    lookback: i64,
    default_sub_step: i64,
    /// `info()` calls without a selector: call address → (mint, maxt) of
    /// the `target_info` series they need.
    info_default: HashMap<usize, (i64, i64)>,
    /// Keys of selectors used as range selectors (never as instant ones).
    range_keys: FxHashSet<usize>,
}

impl<'a> Planner<'a> {
    fn at_time(&self, at: &Option<AtModifier>) -> Option<i64> {
        at.as_ref().map(|a| match a {
            AtModifier::Start => self.start,
            AtModifier::End => self.end,
            AtModifier::At(st) => system_time_ms(st),
        })
    }

    fn need(&mut self, vs: &'a VectorSelector, mint: i64, maxt: i64) {
        let e = self
            .needs
            .entry(selector_key(vs))
            .or_insert((vs, mint, maxt));
        e.1 = e.1.min(mint);
        e.2 = e.2.max(maxt);
    }

    /// Walks `e`, evaluated at times within `[tmin, tmax]`.
    fn walk(&mut self, e: &'a Expr, tmin: i64, tmax: i64) {
        match e {
            Expr::VectorSelector(vs) => {
                let (lo, hi) = match self.at_time(&vs.at) {
                    Some(a) => (a, a),
                    None => (tmin, tmax),
                };
                let off = offset_ms(&vs.offset);
                self.need(vs, lo - off - self.lookback, hi - off);
            }
            Expr::MatrixSelector(ms) => {
                let vs = &ms.vs;
                let (lo, hi) = match self.at_time(&vs.at) {
                    Some(a) => (a, a),
                    None => (tmin, tmax),
                };
                let off = offset_ms(&vs.offset);
                let range = ms.range.as_millis() as i64;
                self.range_keys.insert(selector_key(vs));
                self.need(vs, lo - off - range, hi - off);
            }
            Expr::Subquery(sq) => {
                let (lo, hi) = match self.at_time(&sq.at) {
                    Some(a) => (a, a),
                    None => (tmin, tmax),
                };
                let off = offset_ms(&sq.offset);
                let range = sq.range.as_millis() as i64;
                let step = sq
                    .step
                    .map(|d| d.as_millis() as i64)
                    .unwrap_or(self.default_sub_step)
                    .max(1);
                self.walk(&sq.expr, lo - off - range - step, hi - off);
            }
            Expr::Aggregate(a) => {
                if let Some(p) = &a.param {
                    self.walk(p, tmin, tmax);
                }
                self.walk(&a.expr, tmin, tmax);
            }
            Expr::Unary(u) => self.walk(&u.expr, tmin, tmax),
            Expr::Binary(b) => {
                self.walk(&b.lhs, tmin, tmax);
                self.walk(&b.rhs, tmin, tmax);
            }
            Expr::Paren(p) => self.walk(&p.expr, tmin, tmax),
            Expr::Call(c) => {
                if c.func.name == "info" {
                    // Info series are looked up at the base's own time.
                    let lo = info_time(&c.args.args[0], tmin, self.start, self.end);
                    let hi = info_time(&c.args.args[0], tmax, self.start, self.end);
                    let (lo, hi) = (lo.min(hi), lo.max(hi));
                    self.walk(&c.args.args[0], tmin, tmax);
                    if let Some(sel) = c.args.args.get(1) {
                        self.walk(sel, lo, hi);
                    } else {
                        let e = self
                            .info_default
                            .entry(c as *const _ as usize)
                            .or_insert((lo - self.lookback, hi));
                        e.0 = e.0.min(lo - self.lookback);
                        e.1 = e.1.max(hi);
                    }
                    return;
                }
                for a in &c.args.args {
                    self.walk(a, tmin, tmax);
                }
            }
            Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
        }
    }
}

/// Converts a selector's matchers (plus its metric name) to Cairn matchers;
/// one group per `or` alternative.
pub(crate) fn selector_matchers(vs: &VectorSelector) -> Result<Vec<Vec<Matcher>>> {
    let conv = |m: &promql_parser::label::Matcher| -> Result<Matcher> {
        let op = match m.op {
            PMatchOp::Equal => MatchOp::Equal,
            PMatchOp::NotEqual => MatchOp::NotEqual,
            PMatchOp::Re(_) => MatchOp::RegexMatch,
            PMatchOp::NotRe(_) => MatchOp::RegexNoMatch,
        };
        Matcher::new(op, m.name.clone(), m.value.clone()).map_err(QueryError::Parse)
    };
    let mut groups: Vec<Vec<&promql_parser::label::Matcher>> = Vec::new();
    if vs.matchers.or_matchers.is_empty() {
        groups.push(vs.matchers.matchers.iter().collect());
    } else {
        for g in &vs.matchers.or_matchers {
            let mut v: Vec<_> = g.iter().collect();
            v.extend(vs.matchers.matchers.iter());
            groups.push(v);
        }
    }
    let mut out = Vec::new();
    for g in groups {
        let mut ms = Vec::new();
        if let Some(n) = &vs.name {
            ms.push(Matcher::equal(METRIC_NAME, n.clone()));
        }
        for m in g {
            ms.push(conv(m)?);
        }
        out.push(ms);
    }
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn run(
    engine: &Engine,
    src: &dyn SeriesSource,
    tenant: &str,
    query: &str,
    expr: &Expr,
    start: i64,
    end: i64,
    step: i64,
    is_range: bool,
) -> Result<QueryResult> {
    let began = Instant::now();
    let opts = &engine.opts;
    if is_range {
        let vt = expr.value_type();
        let name = match vt {
            promql_parser::parser::value::ValueType::Vector => None,
            promql_parser::parser::value::ValueType::Scalar => None,
            promql_parser::parser::value::ValueType::Matrix => Some("range vector"),
            promql_parser::parser::value::ValueType::String => Some("string"),
        };
        if let Some(n) = name {
            return Err(QueryError::Parse(format!(
                "invalid expression type \"{n}\" for range query, must be Scalar or instant Vector"
            )));
        }
    }
    let mut planner = Planner {
        needs: HashMap::new(),
        start,
        end,
        lookback: opts.lookback_delta_ms,
        default_sub_step: engine.default_subquery_step_ms,
        info_default: HashMap::new(),
        range_keys: FxHashSet::default(),
    };
    planner.walk(expr, start, end);
    let mut data = HashMap::new();
    for (key, (mint, maxt)) in std::mem::take(&mut planner.info_default) {
        let got = src
            .select(
                tenant,
                &[Matcher::equal(METRIC_NAME, "target_info")],
                mint,
                maxt,
            )
            .map_err(|e| QueryError::Storage(format!("selecting target_info: {e}")))?;
        data.insert(key, fetched(got, false, Some("target_info")));
    }
    // Aggregations the range query folds while reading their selector
    // (`aggr::precompute`), by selector: fetched after the others.
    let mut folded: FxHashMap<usize, &AggregateExpr> = FxHashMap::default();
    if is_range && engine.ahead {
        let mut aggs = Vec::new();
        stream_candidates(expr, &mut aggs);
        for a in aggs {
            if let Some((_, ms)) = crate::aggr::precompute_shape(a) {
                folded.insert(selector_key(&ms.vs), a);
            }
        }
    }
    let mut loaded = 0usize;
    let mut later = Vec::new();
    for (key, (vs, mint, maxt)) in planner.needs {
        if folded.contains_key(&key) {
            later.push((key, vs, mint, maxt));
            continue;
        }
        check_cancel(engine.cancel.as_deref())?;
        let series = fetch(src, tenant, vs, mint, maxt, &mut loaded, opts.max_samples)?;
        if began.elapsed() > opts.timeout {
            return Err(timeout_err("query preparation"));
        }
        data.insert(
            key,
            fetched(
                series,
                planner.range_keys.contains(&key),
                vs.name.as_deref(),
            ),
        );
    }
    let mut ev = Evaluator {
        query: query.to_string(),
        data,
        windows: RefCell::new(FxHashMap::default()),
        instants: RefCell::new(FxHashMap::default()),
        groups: RefCell::new(FxHashMap::default()),
        bins: RefCell::new(FxHashMap::default()),
        pre: RefCell::new(FxHashMap::default()),
        cols: RefCell::new(FxHashMap::default()),
        no_name: RefCell::new(PtrCache::default()),
        start,
        end,
        step,
        lookback: opts.lookback_delta_ms,
        default_sub_step: engine.default_subquery_step_ms,
        deadline: began + opts.timeout,
        cancel: engine.cancel.clone(),
        max_samples: opts.max_samples,
        samples_in_step: Cell::new(0),
        warnings: RefCell::new(BTreeSet::new()),
        infos: RefCell::new(BTreeSet::new()),
    };
    for (key, vs, mint, maxt) in later {
        let groups = selector_matchers(vs)?;
        let done = match (groups.as_slice(), folded.get(&key)) {
            ([matchers], Some(a)) => crate::aggr::precompute(
                &mut ev,
                src,
                tenant,
                a,
                matchers,
                mint,
                maxt,
                &mut loaded,
                engine.fold_floor_cells,
            )?,
            _ => false,
        };
        if !done {
            let series = fetch(src, tenant, vs, mint, maxt, &mut loaded, opts.max_samples)?;
            ev.data
                .insert(key, fetched(series, true, vs.name.as_deref()));
        }
        if began.elapsed() > opts.timeout {
            return Err(timeout_err("query preparation"));
        }
    }
    let mut series_wise = None;
    if is_range && engine.ahead {
        // Errors are left to the step path, which raises them in its order.
        series_wise = crate::columnar::range_query(&ev, expr).unwrap_or(None);
        if series_wise.is_none() {
            crate::columnar::plan(&mut ev, expr)?;
        }
    }
    let value = if let Some(out) = series_wise {
        Value::Matrix(out)
    } else if !is_range {
        let v = ev.eval(expr, start)?;
        match v {
            Val::Scalar(v) => Value::Scalar { t: start, v },
            Val::Str(s) => Value::String { t: start, v: s },
            Val::Vector(elems) => {
                let elems = ev.cleanup_vector(elems)?;
                Value::Vector(
                    elems
                        .into_iter()
                        .map(|e| InstantSample {
                            labels: Arc::unwrap_or_clone(e.labels),
                            t: start,
                            v: e.v,
                        })
                        .collect(),
                )
            }
            Val::Matrix(m) => {
                let mut out: Vec<RangeSeries> = Vec::new();
                for s in m.series {
                    let labels = if s.drop_name {
                        s.labels.without_metric_name()
                    } else {
                        Arc::unwrap_or_clone(s.labels)
                    };
                    out.push(RangeSeries {
                        labels,
                        samples: s.samples,
                    });
                }
                check_dup_series(&out)?;
                Value::Matrix(out)
            }
        }
    } else {
        let mut index: FxHashMap<Arc<Labels>, usize> = FxHashMap::default();
        let mut by_ptr: FxHashMap<usize, (Arc<Labels>, usize)> = FxHashMap::default();
        let mut series: Vec<(Arc<Labels>, Vec<Sample>)> = Vec::new();
        let mut total = 0usize;
        let mut t = start;
        let empty = Arc::new(Labels::empty());
        while t <= end {
            ev.check_deadline()?;
            ev.samples_in_step.set(0);
            let elems = match ev.eval(expr, t)? {
                Val::Scalar(v) => vec![Elem {
                    labels: empty.clone(),
                    t,
                    v,
                    drop_name: false,
                }],
                Val::Vector(elems) => ev.cleanup_vector(elems)?,
                other => {
                    return Err(exec_err(format!(
                        "invalid expression type \"{}\" for range query, must be Scalar or instant Vector",
                        other.type_name()
                    )))
                }
            };
            for e in elems {
                // A series' label set is usually the same `Arc` every step:
                // find it by address, by value only the first time.
                let p = Arc::as_ptr(&e.labels) as usize;
                let i = match by_ptr.get(&p) {
                    Some(&(_, i)) => i,
                    None => {
                        // Shared label sets (held by fetched data or a
                        // cache) come back every step; temporaries do not.
                        let shared = Arc::strong_count(&e.labels) > 1;
                        let i = match index.get(&e.labels) {
                            Some(&i) => i,
                            None => {
                                series.push((e.labels.clone(), Vec::new()));
                                index.insert(e.labels.clone(), series.len() - 1);
                                series.len() - 1
                            }
                        };
                        if shared {
                            by_ptr.insert(p, (e.labels.clone(), i));
                        }
                        i
                    }
                };
                series[i].1.push(Sample::new(t, e.v));
                total += 1;
            }
            if total > opts.max_samples {
                return Err(too_many_samples());
            }
            t += step;
        }
        drop((index, by_ptr));
        let mut out: Vec<RangeSeries> = series
            .into_iter()
            .map(|(labels, samples)| RangeSeries {
                labels: Arc::unwrap_or_clone(labels),
                samples,
            })
            .collect();
        out.sort_by(|a, b| a.labels.cmp(&b.labels));
        Value::Matrix(out)
    };
    Ok(QueryResult {
        value,
        warnings: ev.warnings.into_inner().into_iter().collect(),
        infos: ev.infos.into_inner().into_iter().collect(),
    })
}

/// Aggregations evaluated at exactly the query's steps (not under a
/// subquery), so they can be computed ahead, series by series. Function
/// arguments are evaluated at the caller's step (range-vector arguments are
/// selectors or subqueries, which are not descended), so aggregations under
/// e.g. `histogram_quantile` or `label_replace` qualify.
fn stream_candidates<'a>(e: &'a Expr, out: &mut Vec<&'a AggregateExpr>) {
    match e {
        Expr::Paren(p) => stream_candidates(&p.expr, out),
        Expr::Unary(u) => stream_candidates(&u.expr, out),
        Expr::Binary(b) => {
            stream_candidates(&b.lhs, out);
            stream_candidates(&b.rhs, out);
        }
        Expr::Aggregate(a) => {
            out.push(a);
            stream_candidates(&a.expr, out);
        }
        Expr::Call(c) => {
            for arg in &c.args.args {
                stream_candidates(arg, out);
            }
        }
        _ => {}
    }
}

fn check_dup_series(out: &[RangeSeries]) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    for s in out {
        if !seen.insert(&s.labels) {
            return Err(exec_err(
                "vector cannot contain metrics with the same labelset",
            ));
        }
    }
    Ok(())
}

/// The series of selector `vs` over `[mint, maxt]` (the union over its
/// `or` alternatives), counted into `loaded` against `max_samples`.
fn fetch(
    src: &dyn SeriesSource,
    tenant: &str,
    vs: &VectorSelector,
    mint: i64,
    maxt: i64,
    loaded: &mut usize,
    max_samples: usize,
) -> Result<Vec<SeriesData>> {
    let groups = selector_matchers(vs)?;
    let mut series: Vec<SeriesData> = Vec::new();
    for g in &groups {
        let got = src
            .select(tenant, g, mint, maxt)
            .map_err(|e| QueryError::Storage(format!("selecting {vs}: {e}")))?;
        if groups.len() == 1 {
            series = got;
        } else {
            for s in got {
                if !series.iter().any(|x| x.labels == s.labels) {
                    series.push(s);
                }
            }
        }
    }
    *loaded += series.iter().map(|s| s.samples.len()).sum::<usize>();
    if *loaded > max_samples {
        return Err(too_many_samples());
    }
    Ok(series)
}

/// Wraps fetched series; range selectors' staleness markers are dropped.
/// `name`: the selector's metric name, when it has one (then every series
/// has it, and its labels need not be looked at).
pub(crate) fn fetched(series: Vec<SeriesData>, range: bool, name: Option<&str>) -> Vec<Fetched> {
    let odd_name = name.map(not_counter_name);
    series
        .into_iter()
        .map(|mut s| {
            if range && s.samples.iter().any(|x| is_stale_nan(x.v)) {
                s.samples.retain(|x| !is_stale_nan(x.v));
            }
            Fetched {
                odd_counter_name: odd_name
                    .unwrap_or_else(|| not_counter_name(s.labels.metric_name().unwrap_or(""))),
                may_reset: s.samples.windows(2).any(|w| w[1].v < w[0].v),
                labels: s.labels,
                samples: s.samples,
            }
        })
        .collect()
}

/// Errors if two elements have the same label set.
pub(crate) fn check_unique_labels(elems: &[Elem]) -> Result<()> {
    if elems.len() < 2 {
        return Ok(());
    }
    let mut seen: FxHashSet<&Labels> = FxHashSet::default();
    seen.reserve(elems.len());
    for e in elems {
        if !seen.insert(&e.labels) {
            return Err(exec_err(
                "vector cannot contain metrics with the same labelset",
            ));
        }
    }
    Ok(())
}

pub(crate) fn too_many_samples() -> QueryError {
    QueryError::TooManySamples(
        "query processing would load too many samples into memory in query execution".into(),
    )
}

/// `Cancelled` once `flag` is set.
pub(crate) fn check_cancel(flag: Option<&std::sync::atomic::AtomicBool>) -> Result<()> {
    match flag {
        Some(f) if f.load(std::sync::atomic::Ordering::Relaxed) => Err(QueryError::Cancelled(
            "the client went away or the query was abandoned".into(),
        )),
        _ => Ok(()),
    }
}

fn timeout_err(stage: &str) -> QueryError {
    QueryError::Timeout(format!("query timed out in {stage}"))
}

impl Evaluator {
    /// `l` without `__name__`, shared across steps.
    pub fn without_name(&self, l: &Arc<Labels>) -> Arc<Labels> {
        if l.metric_name().is_none() {
            return l.clone();
        }
        self.no_name
            .borrow_mut()
            .get_or(l, |l| Arc::new(l.without_metric_name()))
    }

    /// Applies delayed name removal and checks label-set uniqueness.
    pub fn cleanup_vector(&self, mut elems: Vec<Elem>) -> Result<Vec<Elem>> {
        for e in &mut elems {
            if e.drop_name {
                e.labels = self.without_name(&e.labels);
                e.drop_name = false;
            }
        }
        check_unique_labels(&elems)?;
        Ok(elems)
    }

    pub fn warn(&self, msg: impl Into<String>) {
        self.warnings.borrow_mut().insert(msg.into());
    }

    pub fn info(&self, msg: impl Into<String>) {
        self.infos.borrow_mut().insert(msg.into());
    }

    /// Prometheus's position suffix for an annotation about `e`: where its
    /// text starts in the query, as `(line:col)`. The parser keeps no
    /// positions, so the expression's printed form is searched for.
    pub fn pos(&self, e: &Expr) -> String {
        let text = e.to_string();
        let mut candidates = vec![text.clone()];
        if let Some(i) = text.find(['[', '(', '{']) {
            if i > 0 {
                candidates.push(text[..i].to_string());
            }
        }
        for c in candidates {
            if let Some(idx) = self.query.find(&c) {
                let before = &self.query[..idx];
                let line = before.matches('\n').count() + 1;
                let col = idx - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
                return format!(" ({line}:{col})");
            }
        }
        " (1:1)".to_string()
    }

    /// Whether `name` is a valid label name. Prometheus 3 accepts any UTF-8;
    /// the parser turns a `\xNN` escape into U+00NN where Go keeps the raw
    /// byte, so a high `\x` escape present in the query text marks the name
    /// as the invalid UTF-8 Prometheus would have seen.
    pub fn valid_label_name(&self, name: &str) -> bool {
        if name.is_empty() {
            return false;
        }
        let q = self.query.to_ascii_lowercase();
        !name.chars().any(|c| {
            let u = c as u32;
            (0x80..=0xff).contains(&u) && q.contains(&format!("\\x{u:02x}"))
        })
    }

    pub fn check_deadline(&self) -> Result<()> {
        if Instant::now() > self.deadline {
            return Err(timeout_err("query execution"));
        }
        check_cancel(self.cancel.as_deref())
    }

    pub(crate) fn add_samples(&self, n: usize) -> Result<()> {
        let c = self.samples_in_step.get() + n;
        self.samples_in_step.set(c);
        if c > self.max_samples {
            return Err(too_many_samples());
        }
        Ok(())
    }

    pub fn at_time(&self, at: &Option<AtModifier>) -> Option<i64> {
        at.as_ref().map(|a| match a {
            AtModifier::Start => self.start,
            AtModifier::End => self.end,
            AtModifier::At(st) => system_time_ms(st),
        })
    }

    pub fn eval(&self, e: &Expr, t: i64) -> Result<Val> {
        if !self.cols.borrow().is_empty() {
            if let Some(r) = crate::columnar::at_step(self, e, t) {
                return r.map(Val::Vector);
            }
        }
        match e {
            Expr::NumberLiteral(n) => Ok(Val::Scalar(n.val)),
            Expr::StringLiteral(s) => Ok(Val::Str(s.val.clone())),
            Expr::Paren(p) => self.eval(&p.expr, t),
            Expr::Unary(u) => match self.eval(&u.expr, t)? {
                Val::Scalar(v) => Ok(Val::Scalar(-v)),
                Val::Vector(mut els) => {
                    for e in &mut els {
                        e.v = -e.v;
                        e.drop_name = true;
                        e.t = t;
                    }
                    Ok(Val::Vector(els))
                }
                other => Err(exec_err(format!(
                    "unary expression only allowed on expressions of type scalar or instant vector, got {}",
                    other.type_name()
                ))),
            },
            Expr::VectorSelector(vs) => Ok(Val::Vector(self.select_instant(vs, t)?)),
            Expr::MatrixSelector(ms) => Ok(Val::Matrix(self.select_range(ms, t)?)),
            Expr::Subquery(sq) => Ok(Val::Matrix(self.subquery(sq, t)?)),
            Expr::Binary(b) => crate::binop::eval_binary(self, b, t),
            Expr::Aggregate(a) => crate::aggr::eval_aggregate(self, a, t),
            Expr::Call(c) => crate::functions::eval_call(self, c, t),
            Expr::Extension(_) => Err(exec_err("extension expressions are not supported")),
        }
    }

    pub fn select_instant(&self, vs: &VectorSelector, t: i64) -> Result<Vec<Elem>> {
        let te = self.at_time(&vs.at).unwrap_or(t) - offset_ms(&vs.offset);
        self.instant_from_key(selector_key(vs), te)
    }

    /// The instant vector at `te` of the series fetched under `key`.
    pub fn instant_from_key(&self, key: usize, te: i64) -> Result<Vec<Elem>> {
        let Some(data) = self.data.get(&key) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        let mut all = self.instants.borrow_mut();
        let cur = all.entry(key).or_insert_with(|| Cursors {
            last_te: i64::MIN,
            idx: vec![0; data.len()],
        });
        // Steps move forward: each series' cursor advances over the samples
        // since the previous step; a step back searches afresh.
        let forward = te >= cur.last_te;
        cur.last_te = te;
        for (sd, at) in data.iter().zip(cur.idx.iter_mut()) {
            let s = &sd.samples[..];
            let idx = if forward {
                advance_to(s, *at, te)
            } else {
                s.partition_point(|x| x.t <= te)
            };
            *at = idx;
            if idx == 0 {
                continue;
            }
            let s = sd.samples[idx - 1];
            if s.t <= te - self.lookback || is_stale_nan(s.v) {
                continue;
            }
            out.push(Elem {
                labels: sd.labels.clone(),
                t: s.t,
                v: s.v,
                drop_name: false,
            });
        }
        self.add_samples(out.len())?;
        Ok(out)
    }

    /// Calls `f(series, window)` for each series of range selector `ms`
    /// with samples in its window at `t`, in series order, without copying
    /// samples. Windows slide forward as `t` grows (each step advances two
    /// indices per series); a step back searches afresh. Returns the
    /// window's end and length.
    pub fn for_each_window(
        &self,
        ms: &MatrixSelector,
        t: i64,
        mut f: impl FnMut(&Fetched, &[Sample]),
    ) -> Result<(i64, i64)> {
        let vs = &ms.vs;
        let te = self.at_time(&vs.at).unwrap_or(t) - offset_ms(&vs.offset);
        let range = ms.range.as_millis() as i64;
        let key = selector_key(vs);
        let Some(data) = self.data.get(&key) else {
            return Ok((te, range));
        };
        let mut n = 0;
        {
            let mut all = self.windows.borrow_mut();
            let w = all.entry(key).or_insert_with(|| Windows {
                last_te: i64::MIN,
                cur: vec![(0, 0); data.len()],
            });
            let forward = te >= w.last_te;
            let from = te - range;
            for (sd, cur) in data.iter().zip(w.cur.iter_mut()) {
                let s = &sd.samples[..];
                let start = if forward {
                    *cur
                } else {
                    (s.partition_point(|x| x.t <= from), 0)
                };
                let (lo, hi) = slide_window(s, start, from, te);
                *cur = (lo, hi);
                if hi > lo {
                    n += hi - lo;
                    f(sd, &s[lo..hi]);
                }
            }
            w.last_te = te;
        }
        self.add_samples(n)?;
        Ok((te, range))
    }

    pub fn select_range(&self, ms: &MatrixSelector, t: i64) -> Result<MatrixVal> {
        let vs = &ms.vs;
        let te = self.at_time(&vs.at).unwrap_or(t) - offset_ms(&vs.offset);
        let range = ms.range.as_millis() as i64;
        let mut out = Vec::new();
        let mut n = 0;
        if let Some(data) = self.data.get(&selector_key(vs)) {
            for sd in data {
                let lo = sd.samples.partition_point(|s| s.t <= te - range);
                let hi = sd.samples.partition_point(|s| s.t <= te);
                let samples: Vec<Sample> = sd.samples[lo..hi]
                    .iter()
                    .filter(|s| !is_stale_nan(s.v))
                    .copied()
                    .collect();
                if samples.is_empty() {
                    continue;
                }
                n += samples.len();
                out.push(Series {
                    labels: sd.labels.clone(),
                    samples,
                    drop_name: false,
                });
            }
        }
        self.add_samples(n)?;
        Ok(MatrixVal {
            series: out,
            range_end: te,
            range_ms: range,
        })
    }

    pub fn subquery(&self, sq: &SubqueryExpr, t: i64) -> Result<MatrixVal> {
        let base = self.at_time(&sq.at).unwrap_or(t) - offset_ms(&sq.offset);
        let range = sq.range.as_millis() as i64;
        let step = sq
            .step
            .map(|d| d.as_millis() as i64)
            .unwrap_or(self.default_sub_step)
            .max(1);
        let lo = base - range;
        // Go's integer division truncates toward zero, as Rust's does.
        let mut ts = step * (lo / step);
        if ts <= lo {
            ts += step;
        }
        let mut index: FxHashMap<(Arc<Labels>, bool), usize> = FxHashMap::default();
        let mut series: Vec<Series> = Vec::new();
        let mut n = 0;
        while ts <= base {
            self.check_deadline()?;
            match self.eval(&sq.expr, ts)? {
                Val::Vector(els) => {
                    for e in self.cleanup_vector(els)? {
                        n += 1;
                        let key = (e.labels, e.drop_name);
                        let i = match index.get(&key) {
                            Some(i) => *i,
                            None => {
                                series.push(Series {
                                    labels: key.0.clone(),
                                    samples: Vec::new(),
                                    drop_name: key.1,
                                });
                                index.insert(key, series.len() - 1);
                                series.len() - 1
                            }
                        };
                        series[i].samples.push(Sample::new(ts, e.v));
                    }
                }
                Val::Scalar(v) => {
                    n += 1;
                    if series.is_empty() {
                        series.push(Series {
                            labels: Arc::new(Labels::empty()),
                            samples: Vec::new(),
                            drop_name: false,
                        });
                    }
                    series[0].samples.push(Sample::new(ts, v));
                }
                other => {
                    return Err(exec_err(format!(
                        "subquery is only allowed on instant vector, got {}",
                        other.type_name()
                    )))
                }
            }
            ts += step;
        }
        self.add_samples(n)?;
        Ok(MatrixVal {
            series,
            range_end: base,
            range_ms: range,
        })
    }

    /// Evaluates an expression that must yield a scalar.
    pub fn eval_scalar(&self, e: &Expr, t: i64) -> Result<f64> {
        match self.eval(e, t)? {
            Val::Scalar(v) => Ok(v),
            other => Err(exec_err(format!(
                "expected scalar, got {}",
                other.type_name()
            ))),
        }
    }

    pub fn eval_vector(&self, e: &Expr, t: i64) -> Result<Vec<Elem>> {
        match self.eval(e, t)? {
            Val::Vector(v) => Ok(v),
            other => Err(exec_err(format!(
                "expected instant vector, got {}",
                other.type_name()
            ))),
        }
    }

    pub fn eval_matrix(&self, e: &Expr, t: i64) -> Result<MatrixVal> {
        match self.eval(e, t)? {
            Val::Matrix(v) => Ok(v),
            other => Err(exec_err(format!(
                "expected range vector, got {}",
                other.type_name()
            ))),
        }
    }

    pub fn eval_string(&self, e: &Expr, t: i64) -> Result<String> {
        match self.eval(e, t)? {
            Val::Str(v) => Ok(v),
            other => Err(exec_err(format!(
                "expected string, got {}",
                other.type_name()
            ))),
        }
    }
}

/// Every vector selector in `e` (including those inside matrix selectors).
pub(crate) fn collect_selectors<'a>(e: &'a Expr, out: &mut Vec<&'a VectorSelector>) {
    match e {
        Expr::VectorSelector(vs) => out.push(vs),
        Expr::MatrixSelector(ms) => out.push(&ms.vs),
        Expr::Subquery(sq) => collect_selectors(&sq.expr, out),
        Expr::Aggregate(a) => {
            if let Some(p) = &a.param {
                collect_selectors(p, out);
            }
            collect_selectors(&a.expr, out);
        }
        Expr::Unary(u) => collect_selectors(&u.expr, out),
        Expr::Binary(b) => {
            collect_selectors(&b.lhs, out);
            collect_selectors(&b.rhs, out);
        }
        Expr::Paren(p) => collect_selectors(&p.expr, out),
        Expr::Call(c) => {
            for a in &c.args.args {
                collect_selectors(a, out);
            }
        }
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
    }
}

/// The time at which `info()` looks up info series for base expression `e`
/// evaluated at `t`: the base's own `@`/`offset` time where it has one.
pub(crate) fn info_time(e: &Expr, t: i64, start: i64, end: i64) -> i64 {
    let at = |a: &Option<AtModifier>| {
        a.as_ref().map(|a| match a {
            AtModifier::Start => start,
            AtModifier::End => end,
            AtModifier::At(st) => system_time_ms(st),
        })
    };
    match e {
        Expr::VectorSelector(vs) => at(&vs.at).unwrap_or(t) - offset_ms(&vs.offset),
        Expr::MatrixSelector(ms) => at(&ms.vs.at).unwrap_or(t) - offset_ms(&ms.vs.offset),
        Expr::Subquery(sq) => at(&sq.at).unwrap_or(t) - offset_ms(&sq.offset),
        Expr::Paren(p) => info_time(&p.expr, t, start, end),
        Expr::Unary(u) => info_time(&u.expr, t, start, end),
        Expr::Aggregate(a) => info_time(&a.expr, t, start, end),
        Expr::Call(c) => c
            .args
            .args
            .iter()
            .find(|a| {
                matches!(
                    a.value_type(),
                    promql_parser::parser::value::ValueType::Vector
                        | promql_parser::parser::value::ValueType::Matrix
                )
            })
            .map(|a| info_time(a, t, start, end))
            .unwrap_or(t),
        _ => t,
    }
}
