//! Series-wise evaluation of range queries.
//!
//! The step path evaluates the whole expression once per step: every step
//! looks each series up again, matches label sets and finds groups. For
//! the shapes dashboards use most — instant selectors, range functions of
//! range selectors, arithmetic and comparisons with a literal or between
//! two vectors matched one-to-one, simple aggregations and `topk`/`bottomk`
//! — this module computes a node's value at every step of the range query
//! at once, one series at a time: a *column* of per-step values per series.
//! Cursors walk each series' samples once, and label matching and grouping
//! happen once per series rather than once per step.
//!
//! Results equal the step path's: each value comes from the same functions
//! ([`apply`](crate::kernels::binop::apply), [`acc_add`], [`best_k`], the range
//! functions), and where order decides a result (`topk` among equal values,
//! the order an aggregation folds its inputs) the columns are in the order
//! the step path would see them. Whatever needs the step path's per-step
//! checks — a match group with two series on one side, two results with the
//! same label set, a group mixing dropped and kept metric names — or would
//! hold more than [`MAX_CELLS`] values is left to the step path, which then
//! gives its answer or its error.

use super::ctx::{note_later, note_not_counter, Evaluator};
use super::state::{Col, Cols};
use crate::ast::{const_scalar, offset_ms, range_call};
use crate::fetch::Fetched;
use crate::kernels::aggr::{acc_add, acc_value, best_k, convertible_to_i64, grouping_key, Acc};
use crate::kernels::binop::{apply, is_comparison, result_metric, signature};
use crate::kernels::range::RangeFn;
use crate::kernels::window::{advance_to, slide_window};
use crate::plan::{NodeId, Strategy, AGG_INPUT};
use crate::value::{exec_err, too_many_samples, Elem, RangeSeries, Result};
use cairn_common::{is_stale_nan, Labels, Sample};
use promql_parser::parser::token::{T_BOTTOMK, T_COUNT, T_GROUP, T_TOPK};
use promql_parser::parser::{
    AggregateExpr, BinaryExpr, Expr, MatrixSelector, VectorMatchCardinality,
};
use rustc_hash::{FxHashMap, FxHashSet};
use std::sync::Arc;

/// Most values (series × steps) one node may hold, and all the nodes a
/// query plans ahead together; more is left to the step path (16 bytes
/// each: 64 MiB; an aggregation's accumulators take 40).
const MAX_CELLS: usize = 1 << 22;

pub(crate) fn steps(ev: &Evaluator) -> usize {
    if ev.step <= 0 {
        // An instant query: its one step.
        return 1;
    }
    ((ev.end - ev.start) / ev.step) as usize + 1
}

fn step_t(ev: &Evaluator, i: usize) -> i64 {
    ev.start + i as i64 * ev.step
}

/// The steps whose selector time (`@` time or step time, less `off`) lies
/// in `[lo, hi)`.
fn steps_within(
    ev: &Evaluator,
    at: Option<i64>,
    off: i64,
    lo: i64,
    hi: i64,
) -> std::ops::Range<usize> {
    let n = steps(ev);
    if let Some(a) = at {
        return if lo <= a - off && a - off < hi {
            0..n
        } else {
            0..0
        };
    }
    // The first step whose time is at or after `t`.
    let first_at = |t: i64| -> usize {
        let d = t + off - ev.start;
        if ev.step <= 0 {
            return if d <= 0 { 0 } else { n };
        }
        let i = -((-d).div_euclid(ev.step));
        i.clamp(0, n as i64) as usize
    };
    first_at(lo)..first_at(hi).max(first_at(lo))
}

/// `rf` of range selector `ms` over one series at every step where its
/// window can hold a sample: fills `vals` for the steps `first..first +
/// vals.len()` (`None` where the window is empty or `rf` gives nothing) and
/// adds each window's sample count to `samples`. Returns `first` and
/// whether any window held a sample.
pub(crate) fn range_fn_values(
    ev: &Evaluator,
    rf: RangeFn,
    ms: &MatrixSelector,
    sd: &Fetched,
    samples: &mut [usize],
    vals: &mut Vec<Option<f64>>,
) -> (usize, bool) {
    vals.clear();
    let s = &sd.samples[..];
    let (Some(a), Some(b)) = (s.first(), s.last()) else {
        return (0, false);
    };
    let at = ev.at_time(&ms.vs.at);
    let off = offset_ms(&ms.vs.offset);
    let range = ms.range.as_millis() as i64;
    let span = steps_within(ev, at, off, a.t, b.t.saturating_add(range));
    vals.resize(span.len(), None);
    let (mut lo, mut hi) = (0, 0);
    let mut seen = false;
    for (i, slot) in span.clone().zip(vals.iter_mut()) {
        let te = at.unwrap_or(step_t(ev, i)) - off;
        (lo, hi) = slide_window(s, (lo, hi), te - range, te);
        if hi > lo {
            seen = true;
            samples[i] += hi - lo;
            *slot = rf.apply_known(&s[lo..hi], te, range, sd.may_reset);
        }
    }
    (span.start, seen)
}

/// Instant selector `vs` over one series at every step where it has a
/// value — the latest sample at or before the step's selector time (`@`
/// time or step time, less the offset) within the lookback, unless that is
/// a staleness marker, as [`Evaluator::instant_from`] finds it: fills
/// `vals` for the steps `first..first + vals.len()` and adds one to
/// `samples` per value. Returns `first`. `sd` must keep its staleness
/// markers.
pub(crate) fn instant_values(
    ev: &Evaluator,
    vs: &promql_parser::parser::VectorSelector,
    sd: &Fetched,
    samples: &mut [usize],
    vals: &mut Vec<Option<f64>>,
) -> usize {
    vals.clear();
    let s = &sd.samples[..];
    let (Some(a), Some(b)) = (s.first(), s.last()) else {
        return 0;
    };
    let at = ev.at_time(&vs.at);
    let off = offset_ms(&vs.offset);
    // A sample at `t` is the answer for selector times in [t, t + lookback).
    let span = steps_within(ev, at, off, a.t, b.t.saturating_add(ev.lookback));
    vals.resize(span.len(), None);
    let mut idx = 0;
    for (i, slot) in span.clone().zip(vals.iter_mut()) {
        let te = at.unwrap_or(step_t(ev, i)) - off;
        idx = advance_to(s, idx, te);
        if idx == 0 {
            continue;
        }
        let x = s[idx - 1];
        if x.t <= te - ev.lookback || is_stale_nan(x.v) {
            continue;
        }
        samples[i] += 1;
        *slot = Some(x.v);
    }
    span.start
}

/// The value of `e` at every step, or `None` when it is left to the step
/// path. `e` must be one the planner marks series-wise (or its subtree).
fn eval(ev: &Evaluator, e: &Expr, id: NodeId) -> Result<Option<Cols>> {
    match e {
        Expr::Paren(p) => eval(ev, &p.expr, ev.child(id, 0)),
        Expr::Unary(u) => {
            let Some(mut c) = eval(ev, &u.expr, ev.child(id, 0))? else {
                return Ok(None);
            };
            for col in &mut c.series {
                for v in col.vals.iter_mut().flatten() {
                    *v = -*v;
                }
                col.drop_name = true;
            }
            Ok(Some(c))
        }
        Expr::VectorSelector(vs) => {
            let n = steps(ev);
            let empty = Vec::new();
            let data = ev.data(id).unwrap_or(&empty);
            if data.len().saturating_mul(n) > MAX_CELLS {
                return Ok(None);
            }
            let mut out = Cols {
                series: Vec::new(),
                samples: vec![0; n],
                exact_order: true,
            };
            for (k, sd) in data.iter().enumerate() {
                if k % 256 == 255 {
                    ev.check_deadline()?;
                }
                let mut vals = Vec::new();
                let first = instant_values(ev, vs, sd, &mut out.samples, &mut vals);
                out.series
                    .extend(Col::new(sd.labels.clone(), false, first, vals));
            }
            Ok(Some(out))
        }
        Expr::Call(c) => {
            let Some((rf, ms)) = range_call(c) else {
                return Ok(None);
            };
            let n = steps(ev);
            let empty = Vec::new();
            let data = ev.data(ev.child(id, 0)).unwrap_or(&empty);
            if data.len().saturating_mul(n) > MAX_CELLS {
                return Ok(None);
            }
            let mut out = Cols {
                series: Vec::new(),
                samples: vec![0; n],
                exact_order: true,
            };
            let mut odd: Vec<String> = Vec::new();
            for (k, sd) in data.iter().enumerate() {
                if k % 256 == 255 {
                    ev.check_deadline()?;
                }
                let mut vals = Vec::new();
                let (first, seen) = range_fn_values(ev, rf, ms, sd, &mut out.samples, &mut vals);
                if seen {
                    note_later(&mut odd, rf, sd);
                }
                out.series
                    .extend(Col::new(sd.labels.clone(), !rf.keeps_name(), first, vals));
            }
            for name in &odd {
                note_not_counter(ev, name, &c.args.args[0]);
            }
            Ok(Some(out))
        }
        Expr::Aggregate(a) => eval_aggregate(ev, a, id),
        Expr::Binary(b) => eval_binary(ev, b, id),
        _ => Ok(None),
    }
}

fn eval_aggregate(ev: &Evaluator, a: &AggregateExpr, id: NodeId) -> Result<Option<Cols>> {
    let n = steps(ev);
    if let Some(p) = &ev.folded[id] {
        if p.steps != n || p.keys.len().saturating_mul(n) > MAX_CELLS {
            return Ok(None);
        }
        let mut vals = vec![vec![None; n]; p.keys.len()];
        for (i, (order, values)) in p.order.iter().zip(&p.values).enumerate() {
            for (&g, &v) in order.iter().zip(values) {
                vals[g as usize][i] = Some(v);
            }
        }
        let series = p
            .keys
            .iter()
            .zip(vals)
            .filter_map(|(k, vals)| Col::new(k.clone(), p.drop_name, 0, vals))
            .collect();
        return Ok(Some(Cols {
            series,
            samples: p.samples.clone(),
            exact_order: false,
        }));
    }
    let Some(input) = eval(ev, &a.expr, ev.child(id, AGG_INPUT))? else {
        return Ok(None);
    };
    // Each input series' group, found once; a group's members must agree
    // on dropping the metric name (the step path decides it per step).
    let op = a.op.id();
    let topk = matches!(op, T_TOPK | T_BOTTOMK);
    let mut index: FxHashMap<Labels, usize> = FxHashMap::default();
    let mut keys: Vec<(Arc<Labels>, bool)> = Vec::new();
    let mut gids = Vec::with_capacity(input.series.len());
    for col in &input.series {
        let k = grouping_key(&col.labels, &a.modifier);
        let g = match index.get(&k) {
            Some(&g) => {
                if keys[g].1 != col.drop_name && !topk {
                    return Ok(None);
                }
                g
            }
            None => {
                keys.push((Arc::new(k.clone()), col.drop_name));
                index.insert(k, keys.len() - 1);
                keys.len() - 1
            }
        };
        gids.push(g);
    }
    if topk {
        return select_k(ev, a, input, &gids, keys.len());
    }
    // sum/avg/stddev/stdvar (rounding) and min/max (+0 vs -0) depend on
    // the order values are folded in: only in the step path's order.
    if !input.exact_order && !matches!(op, T_COUNT | T_GROUP) {
        return Ok(None);
    }
    // Each group spans its members' steps.
    let mut spans = vec![(usize::MAX, 0); keys.len()];
    for (col, &g) in input.series.iter().zip(&gids) {
        spans[g] = (spans[g].0.min(col.first), spans[g].1.max(col.end()));
    }
    if spans.iter().map(|&(a, b)| b - a).sum::<usize>() > MAX_CELLS {
        return Ok(None);
    }
    let mut accs: Vec<Vec<Acc>> = spans
        .iter()
        .map(|&(a, b)| vec![Acc::default(); b - a])
        .collect();
    // Folded in input order, as the step path folds each step's vector.
    for (col, &g) in input.series.iter().zip(&gids) {
        let row = &mut accs[g][col.first - spans[g].0..];
        for (acc, v) in row.iter_mut().zip(&col.vals) {
            if let Some(v) = *v {
                if !acc_add(op, acc, v) {
                    return Err(exec_err(format!("unsupported aggregation {}", a.op)));
                }
            }
        }
    }
    let series = keys
        .into_iter()
        .zip(accs)
        .zip(spans)
        .filter_map(|(((labels, drop_name), accs), (first, _))| {
            let vals = accs
                .iter()
                .map(|acc| acc.seen().then(|| acc_value(op, acc)))
                .collect();
            Col::new(labels, drop_name, first, vals)
        })
        .collect();
    Ok(Some(Cols {
        series,
        samples: input.samples,
        exact_order: false,
    }))
}

/// `topk`/`bottomk` with a literal `k`: per step and group, the best `k`
/// of the present values in input order (which must be the step path's).
fn select_k(
    ev: &Evaluator,
    a: &AggregateExpr,
    input: Cols,
    gids: &[usize],
    groups: usize,
) -> Result<Option<Cols>> {
    if !input.exact_order {
        return Ok(None);
    }
    let k = a
        .param
        .as_deref()
        .and_then(const_scalar)
        .unwrap_or(f64::NAN);
    if k.is_nan() {
        return Err(exec_err("Parameter value is NaN"));
    }
    if !convertible_to_i64(k) {
        return Err(exec_err(format!("Scalar value {k} overflows int64")));
    }
    let k = k as i64;
    let n = steps(ev);
    let mut series: Vec<Col> = input
        .series
        .iter()
        .map(|c| Col {
            labels: c.labels.clone(),
            drop_name: c.drop_name,
            first: c.first,
            vals: vec![None; c.vals.len()],
        })
        .collect();
    if k >= 1 {
        let mut members: Vec<Vec<usize>> = vec![Vec::new(); groups];
        for (c, &g) in gids.iter().enumerate() {
            members[g].push(c);
        }
        let top = a.op.id() == T_TOPK;
        let (mut present, mut sel) = (Vec::new(), Vec::new());
        for i in 0..n {
            for m in &members {
                present.clear();
                present.extend(
                    m.iter()
                        .copied()
                        .filter(|&c| input.series[c].get(i).is_some()),
                );
                best_k(
                    top,
                    present
                        .iter()
                        .map(|&c| input.series[c].get(i).unwrap_or(f64::NAN)),
                    k as usize,
                    &mut sel,
                );
                for &(pos, v) in &sel {
                    let c = &mut series[present[pos]];
                    c.vals[i - c.first] = Some(v);
                }
            }
        }
    }
    Ok(Some(Cols {
        series: series.into_iter().filter_map(Col::trimmed).collect(),
        samples: input.samples,
        exact_order: false,
    }))
}

fn eval_binary(ev: &Evaluator, b: &BinaryExpr, id: NodeId) -> Result<Option<Cols>> {
    let op = b.op.id();
    let cmp = is_comparison(op);
    let return_bool = b.modifier.as_ref().is_some_and(|m| m.return_bool);
    let scalar_side = match (const_scalar(&b.lhs), const_scalar(&b.rhs)) {
        (Some(s), None) => Some((s, (&b.rhs, ev.child(id, 1)), true)),
        (None, Some(s)) => Some((s, (&b.lhs, ev.child(id, 0)), false)),
        _ => None,
    };
    if let Some((s, (vector, vid), swap)) = scalar_side {
        let Some(mut c) = eval(ev, vector, vid)? else {
            return Ok(None);
        };
        for col in &mut c.series {
            for slot in col.vals.iter_mut() {
                let Some(x) = *slot else { continue };
                let (l, r) = if swap { (s, x) } else { (x, s) };
                let (mut val, keep) = apply(op, l, r);
                if cmp && swap {
                    val = r;
                }
                *slot = if return_bool {
                    Some(if keep { 1.0 } else { 0.0 })
                } else if keep {
                    Some(val)
                } else {
                    None
                };
            }
            if !cmp || return_bool {
                col.drop_name = true;
            }
        }
        c.series = c.series.into_iter().filter_map(Col::trimmed).collect();
        return Ok(Some(c));
    }
    let Some(lhs) = eval(ev, &b.lhs, ev.child(id, 0))? else {
        return Ok(None);
    };
    let Some(rhs) = eval(ev, &b.rhs, ev.child(id, 1))? else {
        return Ok(None);
    };
    let matching = b.modifier.as_ref().and_then(|m| m.matching.clone());
    let sig = |c: &Col| {
        if c.drop_name {
            signature(&c.labels.without_metric_name(), &matching)
        } else {
            signature(&c.labels, &matching)
        }
    };
    // One series per match group on each side, or the step path decides
    // (it errors only at steps where both are present).
    let mut right: FxHashMap<Labels, usize> = FxHashMap::default();
    for (i, c) in rhs.series.iter().enumerate() {
        if right.insert(sig(c), i).is_some() {
            return Ok(None);
        }
    }
    let mut matched: Vec<(usize, usize)> = Vec::new();
    let mut seen: FxHashSet<usize> = FxHashSet::default();
    for (j, c) in lhs.series.iter().enumerate() {
        if let Some(&ri) = right.get(&sig(c)) {
            if !seen.insert(ri) {
                return Ok(None);
            }
            matched.push((j, ri));
        }
    }
    let card = VectorMatchCardinality::OneToOne;
    let mut series = Vec::with_capacity(matched.len());
    for (j, ri) in matched {
        let (l, r) = (&lhs.series[j], &rhs.series[ri]);
        let first = l.first.max(r.first);
        let vals: Vec<Option<f64>> = (first..l.end().min(r.end()))
            .map(|i| {
                let (lv, rv) = (l.get(i)?, r.get(i)?);
                let (val, keep) = apply(op, lv, rv);
                if return_bool {
                    Some(if keep { 1.0 } else { 0.0 })
                } else {
                    keep.then_some(val)
                }
            })
            .collect();
        if vals.iter().all(Option::is_none) {
            continue;
        }
        series.extend(Col::new(
            Arc::new(result_metric(&l.labels, &r.labels, &matching, &card, &[])),
            return_bool || !cmp || l.drop_name,
            first,
            vals,
        ));
    }
    let samples = lhs
        .samples
        .iter()
        .zip(&rhs.samples)
        .map(|(a, b)| a + b)
        .collect();
    Ok(Some(Cols {
        series,
        samples,
        exact_order: lhs.exact_order,
    }))
}

/// Evaluates range query `e` whole series-wise (its root planned so):
/// the result series (sorted by labels), or `None` for the step path.
pub(crate) fn range_query(ev: &Evaluator, e: &Expr) -> Result<Option<Vec<RangeSeries>>> {
    let Some(cols) = eval(ev, e, 0)? else {
        return Ok(None);
    };
    let mut index: FxHashMap<Labels, usize> = FxHashMap::default();
    let mut out: Vec<RangeSeries> = Vec::with_capacity(cols.series.len());
    let mut total = 0usize;
    for col in cols.series {
        let labels = if col.drop_name {
            col.labels.without_metric_name()
        } else {
            Arc::unwrap_or_clone(col.labels)
        };
        let samples: Vec<Sample> = col
            .vals
            .iter()
            .enumerate()
            .filter_map(|(j, v)| v.map(|v| Sample::new(step_t(ev, col.first + j), v)))
            .collect();
        total += samples.len();
        match index.get(&labels) {
            None => {
                index.insert(labels.clone(), out.len());
                out.push(RangeSeries { labels, samples });
            }
            Some(&k) => {
                // Two series with one label set: fine while they never
                // share a step; otherwise the step path reports it.
                let mut merged = Vec::with_capacity(out[k].samples.len() + samples.len());
                let (mut x, mut y) = (out[k].samples.iter().peekable(), samples.iter().peekable());
                loop {
                    match (x.peek(), y.peek()) {
                        (Some(a), Some(b)) if a.t == b.t => return Ok(None),
                        (Some(a), Some(b)) => {
                            if a.t < b.t {
                                merged.push(**a);
                                x.next();
                            } else {
                                merged.push(**b);
                                y.next();
                            }
                        }
                        (Some(a), None) => {
                            merged.push(**a);
                            x.next();
                        }
                        (None, Some(b)) => {
                            merged.push(**b);
                            y.next();
                        }
                        (None, None) => break,
                    }
                }
                out[k].samples = merged;
            }
        }
    }
    // Limits after the label-set check, which the step path meets first.
    if total > ev.max_samples || cols.samples.iter().any(|&n| n > ev.max_samples) {
        return Err(too_many_samples());
    }
    out.sort_by(|a, b| a.labels.cmp(&b.labels));
    Ok(Some(out))
}

/// For a range query evaluated step by step: computes the largest nodes
/// the plan marks series-wise ahead of the step loop, for [`at_step`] to
/// hand out; their selectors' data is dropped. The root, already tried
/// whole by [`range_query`] unless it is step by step, is not tried again.
pub(crate) fn ahead(ev: &mut Evaluator, e: &Expr) -> Result<()> {
    let tried = ev.strategy[0] != Strategy::Steps;
    ahead_under(ev, e, 0, false, &mut 0, tried)
}

/// [`ahead`] for `e`; `exact`: whether something above picks elements by
/// their order at a step (`topk` among equal values), so only nodes whose
/// per-step order is the step path's may be handed out.
fn ahead_under(
    ev: &mut Evaluator,
    e: &Expr,
    id: NodeId,
    exact: bool,
    planned: &mut usize,
    tried: bool,
) -> Result<()> {
    let here = !tried
        && match ev.strategy[id] {
            Strategy::SeriesWise => true,
            // A fold that gave up: series-wise instead.
            Strategy::Folded => ev.folded[id].is_none(),
            Strategy::Steps => false,
        };
    if here {
        // An error here is left for the step path to raise in its own
        // order (an earlier node may fail first there).
        if let Ok(Some(c)) = eval(ev, e, id) {
            let cells: usize = c.series.iter().map(|c| c.vals.len()).sum();
            if (c.exact_order || !exact) && *planned + cells <= MAX_CELLS {
                *planned += cells;
                // The selectors beneath are read no more.
                for n in ev.nodes.subtree(id) {
                    ev.data[n] = None;
                }
                ev.cols[id] = Some(Box::new(c));
                return Ok(());
            }
        }
    }
    let kid = |ev: &Evaluator, k: usize| ev.child(id, k);
    match e {
        Expr::Paren(p) => ahead_under(ev, &p.expr, kid(ev, 0), exact, planned, false),
        Expr::Unary(u) => ahead_under(ev, &u.expr, kid(ev, 0), exact, planned, false),
        Expr::Binary(b) => {
            let (l, r) = (kid(ev, 0), kid(ev, 1));
            ahead_under(ev, &b.lhs, l, exact, planned, false)?;
            ahead_under(ev, &b.rhs, r, exact, planned, false)
        }
        Expr::Aggregate(a) => {
            // Every aggregation but count/group folds or picks by order.
            let by_order = !matches!(a.op.id(), T_COUNT | T_GROUP);
            let input = kid(ev, AGG_INPUT);
            ahead_under(ev, &a.expr, input, exact || by_order, planned, false)
        }
        Expr::Call(c) if c.func.name != "info" => {
            for (k, a) in c.args.args.iter().enumerate() {
                let ka = kid(ev, k);
                ahead_under(ev, a, ka, exact, planned, false)?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// The planned value of node `id` at step `t`, if it was computed ahead.
pub(crate) fn at_step(ev: &Evaluator, id: NodeId, t: i64) -> Option<Result<Vec<Elem>>> {
    let c = ev.cols[id].as_ref()?;
    let off = t - ev.start;
    let i = (off / ev.step) as usize;
    if off < 0 || off % ev.step != 0 || i >= c.samples.len() {
        return Some(Err(exec_err(
            "internal error: series-wise result evaluated off its steps",
        )));
    }
    if let Err(err) = ev.add_samples(c.samples[i]) {
        return Some(Err(err));
    }
    Some(Ok(c
        .series
        .iter()
        .filter_map(|col| {
            col.get(i).map(|v| Elem {
                labels: col.labels.clone(),
                t,
                v,
                drop_name: col.drop_name,
            })
        })
        .collect()))
}
