//! The planner: which series each selector needs over which time range,
//! and which aggregations a range query may fold.

use crate::ast::{fold_shape, info_time, offset_ms, selector_key, system_time_ms};
use promql_parser::parser::{AggregateExpr, AtModifier, Expr, VectorSelector};
use rustc_hash::{FxHashMap, FxHashSet};
use std::collections::HashMap;

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

/// One selector to fetch: over `[mint, maxt]`, as a range selector
/// (`range`: its staleness markers dropped) or an instant one.
pub(crate) struct SelectorRead<'a> {
    pub key: usize,
    pub vs: &'a VectorSelector,
    pub mint: i64,
    pub maxt: i64,
    pub range: bool,
    /// The aggregation folded while this selector is read, when the range
    /// query may fold it (`exec::fold`).
    pub folded: Option<&'a AggregateExpr>,
}

/// What a query reads: its selectors, and the `target_info` ranges of
/// `info()` calls without a selector of their own.
pub(crate) struct Plan<'a> {
    pub selectors: Vec<SelectorRead<'a>>,
    /// `(key, mint, maxt)` per `info()` call without a selector.
    pub target_info: Vec<(usize, i64, i64)>,
}

/// Plans `expr` evaluated at times within `[start, end]`; `fold`: whether
/// aggregations of the folded shape are read by folding (range queries
/// with the fast paths on).
pub(crate) fn plan<'a>(
    expr: &'a Expr,
    start: i64,
    end: i64,
    lookback: i64,
    default_sub_step: i64,
    fold: bool,
) -> Plan<'a> {
    let mut planner = Planner {
        needs: HashMap::new(),
        start,
        end,
        lookback,
        default_sub_step,
        info_default: HashMap::new(),
        range_keys: FxHashSet::default(),
    };
    planner.walk(expr, start, end);
    // Aggregations the range query folds while reading their selector,
    // by selector.
    let mut folded: FxHashMap<usize, &AggregateExpr> = FxHashMap::default();
    if fold {
        let mut aggs = Vec::new();
        stream_candidates(expr, &mut aggs);
        for a in aggs {
            if let Some((_, ms)) = fold_shape(a) {
                folded.insert(selector_key(&ms.vs), a);
            }
        }
    }
    let range_keys = planner.range_keys;
    Plan {
        selectors: planner
            .needs
            .into_iter()
            .map(|(key, (vs, mint, maxt))| SelectorRead {
                key,
                vs,
                mint,
                maxt,
                range: range_keys.contains(&key),
                folded: folded.get(&key).copied(),
            })
            .collect(),
        target_info: planner
            .info_default
            .into_iter()
            .map(|(key, (mint, maxt))| (key, mint, maxt))
            .collect(),
    }
}
