//! The planner: numbers the expression's nodes (ids, never addresses),
//! works out which series each selector needs over which time range, and
//! which aggregations a range query may fold.

use crate::ast::{fold_shape, info_time, offset_ms, system_time_ms, FoldInput};
use promql_parser::parser::{AggregateExpr, AtModifier, Expr, VectorSelector};
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

/// A query's plan: its nodes, and what it reads.
pub(crate) struct Plan<'a> {
    pub nodes: Nodes,
    pub reads: Reads<'a>,
}

/// What a query reads: its selectors, and the `target_info` ranges of
/// `info()` calls without a selector of their own.
pub(crate) struct Reads<'a> {
    pub selectors: Vec<SelectorRead<'a>>,
    /// `(call node, mint, maxt)` per `info()` call without a selector.
    pub target_info: Vec<(NodeId, i64, i64)>,
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
        }
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
        reads: Reads {
            selectors,
            target_info: info_default
                .into_iter()
                .map(|(id, (mint, maxt))| (id, mint, maxt))
                .collect(),
        },
    }
}
