//! The planner: numbers the expression's nodes (ids, never addresses),
//! works out which series each selector needs over which time range, and
//! gives each node its [`Strategy`]: step by step, series-wise, or folded
//! while its selector is read.

use crate::ast::{
    const_scalar, fold_shape, info_time, offset_ms, range_call, simple_aggregation, system_time_ms,
    FoldInput,
};
use crate::kernels::binop::is_comparison;
use promql_parser::parser::token::{
    T_ADD, T_ATAN2, T_BOTTOMK, T_DIV, T_MOD, T_MUL, T_POW, T_SUB, T_TOPK,
};
use promql_parser::parser::{
    AggregateExpr, AtModifier, Expr, VectorMatchCardinality, VectorSelector,
};
use std::collections::BTreeMap;
use std::ops::Range;

/// A node's id: its position in the expression's pre-order walk (the root
/// is 0), so a node's subtree is the ids from it to the end of its
/// [`Nodes::subtree`].
pub(crate) type NodeId = usize;

/// The expression's nodes by id: each one's children, in the order
/// [`children`] gives them, and its subtree's extent.
pub(crate) struct Nodes {
    /// Per node: where its children start in `kids`.
    first: Vec<usize>,
    /// Per node: the number of nodes in its subtree (itself included).
    size: Vec<usize>,
    kids: Vec<NodeId>,
}

impl Nodes {
    /// Numbers `e`'s nodes in pre-order.
    pub(crate) fn of(e: &Expr) -> Nodes {
        let mut n = Nodes {
            first: Vec::new(),
            size: Vec::new(),
            kids: Vec::new(),
        };
        n.number(e);
        n
    }

    fn number(&mut self, e: &Expr) -> NodeId {
        let id = self.first.len();
        self.first.push(0);
        self.size.push(0);
        let ids: Vec<NodeId> = children(e).into_iter().map(|c| self.number(c)).collect();
        self.first[id] = self.kids.len();
        self.kids.extend(ids);
        self.size[id] = self.first.len() - id;
        id
    }

    pub(crate) fn len(&self) -> usize {
        self.first.len()
    }

    /// The id of child `k` of node `id` (see [`children`] for the order).
    pub(crate) fn child(&self, id: NodeId, k: usize) -> NodeId {
        self.kids[self.first[id] + k]
    }

    /// The ids of `id`'s subtree, itself first.
    pub(crate) fn subtree(&self, id: NodeId) -> Range<NodeId> {
        id..id + self.size[id]
    }
}

/// A node's children, in id order: the operand of parentheses, unary
/// minus and subqueries; a binary operator's left then right side; an
/// aggregation's input, then its parameter if it has one; a call's
/// arguments. Selectors and literals have none.
pub(crate) fn children(e: &Expr) -> Vec<&Expr> {
    match e {
        Expr::Paren(p) => vec![&p.expr],
        Expr::Unary(u) => vec![&u.expr],
        Expr::Subquery(sq) => vec![&sq.expr],
        Expr::Binary(b) => vec![&b.lhs, &b.rhs],
        Expr::Aggregate(a) => {
            let mut v: Vec<&Expr> = vec![&a.expr];
            if let Some(p) = &a.param {
                v.push(p);
            }
            v
        }
        Expr::Call(c) => c.args.args.iter().map(|a| a.as_ref()).collect(),
        Expr::VectorSelector(_)
        | Expr::MatrixSelector(_)
        | Expr::NumberLiteral(_)
        | Expr::StringLiteral(_)
        | Expr::Extension(_) => Vec::new(),
    }
}

/// An aggregation's input, and its parameter.
pub(crate) const AGG_INPUT: usize = 0;
pub(crate) const AGG_PARAM: usize = 1;

struct Planner<'a, 'n> {
    nodes: &'n Nodes,
    /// Selector node → (selector, mint, maxt, whether a range selector).
    needs: BTreeMap<NodeId, (&'a VectorSelector, i64, i64, bool)>,
    start: i64,
    end: i64,
    lookback: i64,
    default_sub_step: i64,
    /// `info()` calls without a selector: call node → (mint, maxt) of the
    /// `target_info` series they need.
    info_default: BTreeMap<NodeId, (i64, i64)>,
}

impl<'a> Planner<'a, '_> {
    fn at_time(&self, at: &Option<AtModifier>) -> Option<i64> {
        at.as_ref().map(|a| match a {
            AtModifier::Start => self.start,
            AtModifier::End => self.end,
            AtModifier::At(st) => system_time_ms(st),
        })
    }

    fn need(&mut self, id: NodeId, vs: &'a VectorSelector, mint: i64, maxt: i64, range: bool) {
        let e = self.needs.entry(id).or_insert((vs, mint, maxt, range));
        e.1 = e.1.min(mint);
        e.2 = e.2.max(maxt);
    }

    /// Walks `e` (node `id`), evaluated at times within `[tmin, tmax]`.
    fn walk(&mut self, e: &'a Expr, id: NodeId, tmin: i64, tmax: i64) {
        let kid = |k: usize| self.nodes.child(id, k);
        match e {
            Expr::VectorSelector(vs) => {
                let (lo, hi) = match self.at_time(&vs.at) {
                    Some(a) => (a, a),
                    None => (tmin, tmax),
                };
                let off = offset_ms(&vs.offset);
                self.need(id, vs, lo - off - self.lookback, hi - off, false);
            }
            Expr::MatrixSelector(ms) => {
                let vs = &ms.vs;
                let (lo, hi) = match self.at_time(&vs.at) {
                    Some(a) => (a, a),
                    None => (tmin, tmax),
                };
                let off = offset_ms(&vs.offset);
                let range = ms.range.as_millis() as i64;
                self.need(id, vs, lo - off - range, hi - off, true);
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
                self.walk(&sq.expr, kid(0), lo - off - range - step, hi - off);
            }
            Expr::Aggregate(a) => {
                if let Some(p) = &a.param {
                    self.walk(p, kid(AGG_PARAM), tmin, tmax);
                }
                self.walk(&a.expr, kid(AGG_INPUT), tmin, tmax);
            }
            Expr::Unary(u) => self.walk(&u.expr, kid(0), tmin, tmax),
            Expr::Binary(b) => {
                self.walk(&b.lhs, kid(0), tmin, tmax);
                self.walk(&b.rhs, kid(1), tmin, tmax);
            }
            Expr::Paren(p) => self.walk(&p.expr, kid(0), tmin, tmax),
            Expr::Call(c) => {
                if c.func.name == "info" {
                    // Info series are looked up at the base's own time.
                    let lo = info_time(&c.args.args[0], tmin, self.start, self.end);
                    let hi = info_time(&c.args.args[0], tmax, self.start, self.end);
                    let (lo, hi) = (lo.min(hi), lo.max(hi));
                    self.walk(&c.args.args[0], kid(0), tmin, tmax);
                    if let Some(sel) = c.args.args.get(1) {
                        self.walk(sel, kid(1), lo, hi);
                    } else {
                        let e = self
                            .info_default
                            .entry(id)
                            .or_insert((lo - self.lookback, hi));
                        e.0 = e.0.min(lo - self.lookback);
                        e.1 = e.1.max(hi);
                    }
                    return;
                }
                for (k, a) in c.args.args.iter().enumerate() {
                    self.walk(a, kid(k), tmin, tmax);
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
fn stream_candidates<'a>(
    nodes: &Nodes,
    e: &'a Expr,
    id: NodeId,
    out: &mut Vec<(NodeId, &'a AggregateExpr)>,
) {
    let kid = |k: usize| nodes.child(id, k);
    match e {
        Expr::Paren(p) => stream_candidates(nodes, &p.expr, kid(0), out),
        Expr::Unary(u) => stream_candidates(nodes, &u.expr, kid(0), out),
        Expr::Binary(b) => {
            stream_candidates(nodes, &b.lhs, kid(0), out);
            stream_candidates(nodes, &b.rhs, kid(1), out);
        }
        Expr::Aggregate(a) => {
            out.push((id, a));
            stream_candidates(nodes, &a.expr, kid(AGG_INPUT), out);
        }
        Expr::Call(c) => {
            for (k, arg) in c.args.args.iter().enumerate() {
                stream_candidates(nodes, arg, kid(k), out);
            }
        }
        _ => {}
    }
}

/// One selector to fetch: over `[mint, maxt]`, as a range selector
/// (`range`: its staleness markers dropped) or an instant one.
pub(crate) struct SelectorRead<'a> {
    /// The selector's node.
    pub id: NodeId,
    pub vs: &'a VectorSelector,
    pub mint: i64,
    pub maxt: i64,
    pub range: bool,
    /// The aggregation (and its node) folded while this selector is read,
    /// when the range query may fold it (`exec::fold`).
    pub folded: Option<(NodeId, &'a AggregateExpr)>,
}

/// How a node is evaluated. Decided from the expression's shape alone;
/// the executor keeps the fallbacks only the data can decide (a node that
/// would hold too many values, two results with one label set, a fold that
/// gives up), each of which leaves the node to the step path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Strategy {
    /// Evaluated once per step by the step loop.
    Steps,
    /// Computed at every step at once, one series at a time, ahead of the
    /// step loop (`exec::serieswise`). At the root: the whole range query.
    /// Below another series-wise node it is the fallback for when the node
    /// above is left to the step path.
    SeriesWise,
    /// An aggregation folded series by series while its selector is read
    /// (`exec::fold`); its result is handed out per step, or as columns to
    /// a series-wise node above. When the fold gives up it is evaluated
    /// series-wise instead.
    Folded,
}

/// A query's plan: its nodes, what it reads, and each node's strategy.
pub(crate) struct Plan<'a> {
    pub nodes: Nodes,
    pub reads: Reads<'a>,
    /// Per node: how it is evaluated.
    pub strategy: Vec<Strategy>,
}

/// Whether `e` (node `id`) is an instant-vector expression that can be
/// computed series-wise: instant selectors, range functions of range
/// selectors, arithmetic and comparisons with a literal or between two
/// vectors matched one-to-one, simple aggregations and `topk`/`bottomk`
/// with a literal `k`, over inputs that can be too.
fn supported(nodes: &Nodes, e: &Expr, id: NodeId) -> bool {
    let kid = |k: usize| nodes.child(id, k);
    match e {
        Expr::Paren(p) => supported(nodes, &p.expr, kid(0)),
        Expr::Unary(u) => supported(nodes, &u.expr, kid(0)),
        Expr::VectorSelector(_) => true,
        Expr::Call(c) => range_call(c).is_some(),
        Expr::Aggregate(a) => {
            // Every folded shape is a simple aggregation of a supported
            // input, so a fold that gives up is still supported.
            (simple_aggregation(a) && supported(nodes, &a.expr, kid(AGG_INPUT)))
                || (matches!(a.op.id(), T_TOPK | T_BOTTOMK)
                    && a.param.as_deref().and_then(const_scalar).is_some()
                    && supported(nodes, &a.expr, kid(AGG_INPUT)))
        }
        Expr::Binary(b) => {
            let op = b.op.id();
            if !is_comparison(op)
                && !matches!(op, T_ADD | T_SUB | T_MUL | T_DIV | T_MOD | T_POW | T_ATAN2)
            {
                return false;
            }
            match (const_scalar(&b.lhs), const_scalar(&b.rhs)) {
                (Some(_), Some(_)) => false,
                (Some(_), None) => supported(nodes, &b.rhs, kid(1)),
                (None, Some(_)) => supported(nodes, &b.lhs, kid(0)),
                (None, None) => {
                    let one_to_one = b.modifier.as_ref().is_none_or(|m| {
                        matches!(m.card, VectorMatchCardinality::OneToOne)
                            && m.fill_values.lhs.is_none()
                            && m.fill_values.rhs.is_none()
                    });
                    one_to_one
                        && supported(nodes, &b.lhs, kid(0))
                        && supported(nodes, &b.rhs, kid(1))
                }
            }
        }
        _ => false,
    }
}

/// Whether computing `e` series-wise saves the step path work: nodes that
/// build per-step vectors (selectors, range functions and folded
/// aggregations alone are already cheap there, and a selector's elements
/// carry their samples' own timestamps).
fn worth(nodes: &Nodes, strategy: &[Strategy], e: &Expr, id: NodeId) -> bool {
    match e {
        Expr::Paren(p) => worth(nodes, strategy, &p.expr, nodes.child(id, 0)),
        Expr::Unary(_) | Expr::Binary(_) => true,
        Expr::Aggregate(_) => strategy[id] != Strategy::Folded,
        _ => false,
    }
}

/// Marks series-wise the nodes under `e` (node `id`) evaluated at exactly
/// the query's steps — not under subqueries, range arguments, `info()`
/// or an aggregation's parameter — that can be and are worth it.
fn mark_serieswise(nodes: &Nodes, e: &Expr, id: NodeId, strategy: &mut [Strategy]) {
    if strategy[id] == Strategy::Steps && worth(nodes, strategy, e, id) && supported(nodes, e, id) {
        strategy[id] = Strategy::SeriesWise;
    }
    let kid = |k: usize| nodes.child(id, k);
    match e {
        Expr::Paren(p) => mark_serieswise(nodes, &p.expr, kid(0), strategy),
        Expr::Unary(u) => mark_serieswise(nodes, &u.expr, kid(0), strategy),
        Expr::Binary(b) => {
            mark_serieswise(nodes, &b.lhs, kid(0), strategy);
            mark_serieswise(nodes, &b.rhs, kid(1), strategy);
        }
        Expr::Aggregate(a) => mark_serieswise(nodes, &a.expr, kid(AGG_INPUT), strategy),
        Expr::Call(c) if c.func.name != "info" => {
            for (k, a) in c.args.args.iter().enumerate() {
                mark_serieswise(nodes, a, kid(k), strategy);
            }
        }
        _ => {}
    }
}

/// What a query reads: its selectors, and the `target_info` ranges of
/// `info()` calls without a selector of their own.
pub(crate) struct Reads<'a> {
    pub selectors: Vec<SelectorRead<'a>>,
    /// `(call node, mint, maxt)` per `info()` call without a selector.
    pub target_info: Vec<(NodeId, i64, i64)>,
}

/// Plans `expr` evaluated at times within `[start, end]` every `step`
/// (0 for an instant query); `fast`: whether a query may fold
/// aggregations while reading and a range query compute nodes series-wise (off only in
/// tests comparing those paths with plain step-by-step evaluation).
pub(crate) fn plan<'a>(
    expr: &'a Expr,
    start: i64,
    end: i64,
    step: i64,
    lookback: i64,
    default_sub_step: i64,
    fast: bool,
) -> Plan<'a> {
    // An instant query (one step) folds its aggregations too: over a
    // cluster that is what lets the nodes compute them in parts.
    let fold = fast && end >= start && (step > 0 || start == end);
    let fast = fast && step > 0 && end >= start;
    let nodes = Nodes::of(expr);
    let mut planner = Planner {
        nodes: &nodes,
        needs: BTreeMap::new(),
        start,
        end,
        lookback,
        default_sub_step,
        info_default: BTreeMap::new(),
    };
    planner.walk(expr, 0, start, end);
    let (needs, info_default) = (planner.needs, planner.info_default);
    // Aggregations the range query folds while reading their selector, by
    // selector node (the aggregation's input is a call whose argument is
    // the selector).
    let mut folded: BTreeMap<NodeId, (NodeId, &AggregateExpr)> = BTreeMap::new();
    let mut strategy = vec![Strategy::Steps; nodes.len()];
    if fold {
        let mut aggs = Vec::new();
        stream_candidates(&nodes, expr, 0, &mut aggs);
        for (id, a) in aggs {
            let input = nodes.child(id, AGG_INPUT);
            let sel = match fold_shape(a) {
                Some(FoldInput::Range(..)) => nodes.child(input, 0),
                Some(FoldInput::Instant(_)) => input,
                None => continue,
            };
            folded.insert(sel, (id, a));
            strategy[id] = Strategy::Folded;
        }
    }
    if fast {
        // The whole query series-wise when it can be, worth it or not.
        if strategy[0] == Strategy::Steps && supported(&nodes, expr, 0) {
            strategy[0] = Strategy::SeriesWise;
        }
        mark_serieswise(&nodes, expr, 0, &mut strategy);
    }
    let selectors = needs
        .into_iter()
        .map(|(id, (vs, mint, maxt, range))| SelectorRead {
            id,
            vs,
            mint,
            maxt,
            range,
            folded: folded.get(&id).copied(),
        })
        .collect();
    Plan {
        nodes,
        strategy,
        reads: Reads {
            selectors,
            target_info: info_default
                .into_iter()
                .map(|(id, (mint, maxt))| (id, mint, maxt))
                .collect(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::{plan, Strategy};
    use Strategy::{Folded, SeriesWise, Steps};

    /// The strategy of each node of `q` planned as a range query (or an
    /// instant one when `step` is 0), in id order.
    fn strategies(q: &str, step: i64, fast: bool) -> Vec<Strategy> {
        let e = promql_parser::parser::parse(q).unwrap();
        let end = if step == 0 { 0 } else { 3_600_000 };
        plan(&e, 0, end, step, 300_000, 60_000, fast).strategy
    }

    fn range(q: &str) -> Vec<Strategy> {
        strategies(q, 60_000, true)
    }

    #[test]
    fn an_aggregation_of_a_range_function_folds_and_is_the_whole_query() {
        // sum → rate → x[5m]
        assert_eq!(range("sum(rate(x[5m]))"), [Folded, Steps, Steps]);
        assert_eq!(range("sum by (job) (x)"), [Folded, Steps]);
        // An instant selector with @ is not folded: its value is one time's.
        assert_eq!(range("sum(x @ 100)"), [SeriesWise, Steps]);
    }

    #[test]
    fn supported_roots_are_whole_series_wise_worth_it_or_not() {
        assert_eq!(range("x"), [SeriesWise]);
        assert_eq!(range("rate(x[5m])"), [SeriesWise, Steps]);
        // * → (rate → x[5m]), 2
        assert_eq!(range("rate(x[5m]) * 2"), [SeriesWise, Steps, Steps, Steps]);
        assert_eq!(
            range("topk(3, rate(x[5m]))"),
            [SeriesWise, Steps, Steps, Steps]
        );
    }

    #[test]
    fn folded_aggregations_stay_folded_under_a_series_wise_root() {
        // / → (sum → rate → a[5m]), (sum → rate → b[5m])
        assert_eq!(
            range("sum(rate(a[5m])) / sum(rate(b[5m]))"),
            [SeriesWise, Folded, Steps, Steps, Folded, Steps, Steps]
        );
    }

    #[test]
    fn unsupported_roots_plan_their_largest_supported_parts() {
        // histogram_quantile → 0.9, sum by (le) → rate → x[5m]
        let s = range("histogram_quantile(0.9, sum by (le) (rate(x[5m])))");
        assert_eq!(s, [Steps, Steps, Folded, Steps, Steps]);
        // label_replace → (+ → a, b), "dst", "x", "src", ".*": the sum is
        // worth computing ahead; its operands are only selectors.
        let s = range(r#"label_replace(a + b, "dst", "$1", "src", "(.*)")"#);
        assert_eq!(s[..4], [Steps, SeriesWise, Steps, Steps]);
        assert!(s[4..].iter().all(|&x| x == Steps));
        // A series-wise node's supported parts below are its fallback.
        // abs → (- → (sum by (a) (x * 2)), y)
        let s = range("abs(sum by (a) (x * 2) - y)");
        assert_eq!(
            s,
            [Steps, SeriesWise, SeriesWise, SeriesWise, Steps, Steps, Steps]
        );
        // An aggregation's parameter is not planned ahead (evaluated per step).
        let s = range("quantile(scalar(a + b), c)");
        assert_eq!(s[0], Steps);
        assert!(s.iter().all(|&x| x == Steps), "{s:?}");
    }

    #[test]
    fn subqueries_and_instant_queries_are_step_by_step() {
        // max_over_time → subquery → ( ) → + → a, b
        assert_eq!(range("max_over_time((a + b)[10m:1m])"), [Steps; 6]);
        // An instant query folds its aggregations, the rest step by step.
        assert_eq!(
            strategies("sum(rate(x[5m])) * 2", 0, true),
            [Steps, Folded, Steps, Steps, Steps]
        );
        // With the fast paths off every node is evaluated step by step.
        assert_eq!(
            strategies("sum(rate(x[5m])) * 2", 60_000, false),
            [Steps; 5]
        );
    }
}
