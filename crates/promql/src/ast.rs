//! Helpers over the parsed expression: times (`@`, `offset`), selector
//! matchers in Cairn's form, and the node shapes the planner and the fast
//! paths recognise. Pure: imports the value model and the kernels only.

use crate::kernels::range::RangeFn;
use crate::value::{QueryError, Result};
use cairn_common::{MatchOp, Matcher, METRIC_NAME};
use promql_parser::label::MatchOp as PMatchOp;
use promql_parser::parser::token::{
    T_AVG, T_COUNT, T_GROUP, T_MAX, T_MIN, T_STDDEV, T_STDVAR, T_SUM,
};
use promql_parser::parser::{
    AggregateExpr, AtModifier, Call, Expr, MatrixSelector, Offset, VectorSelector,
};
use std::time::{SystemTime, UNIX_EPOCH};

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

/// A literal scalar (possibly parenthesised or negated).
pub(crate) fn const_scalar(e: &Expr) -> Option<f64> {
    match e {
        Expr::NumberLiteral(n) => Some(n.val),
        Expr::Paren(p) => const_scalar(&p.expr),
        Expr::Unary(u) => const_scalar(&u.expr).map(|v| -v),
        _ => None,
    }
}

pub(crate) fn range_call(c: &Call) -> Option<(RangeFn, &MatrixSelector)> {
    let rf = RangeFn::from_name(c.func.name)?;
    match c.args.args.as_slice() {
        [a] => match a.as_ref() {
            Expr::MatrixSelector(ms) => Some((rf, ms)),
            _ => None,
        },
        _ => None,
    }
}

pub(crate) fn simple_aggregation(a: &AggregateExpr) -> bool {
    a.param.is_none()
        && matches!(
            a.op.id(),
            T_SUM | T_AVG | T_MIN | T_MAX | T_COUNT | T_GROUP | T_STDDEV | T_STDVAR
        )
}

/// What an aggregation `exec::fold` folds reads: a window-only range
/// function of a range selector, or an instant selector.
#[derive(Clone, Copy)]
pub(crate) enum FoldInput<'a> {
    Range(RangeFn, &'a MatrixSelector),
    /// Without `@` (its value would be the same at every step).
    Instant(&'a promql_parser::parser::VectorSelector),
}

impl<'a> FoldInput<'a> {
    pub(crate) fn selector(self) -> &'a promql_parser::parser::VectorSelector {
        match self {
            FoldInput::Range(_, ms) => &ms.vs,
            FoldInput::Instant(vs) => vs,
        }
    }
}

/// The aggregations `exec::fold` folds: `aggr by (…) (f(selector[r]))`
/// with `aggr` one of sum/avg/min/max/count/group/stddev/stdvar and `f` a
/// window-only range function, or `aggr by (…) (selector)`.
pub(crate) fn fold_shape(a: &AggregateExpr) -> Option<FoldInput<'_>> {
    if !simple_aggregation(a) {
        return None;
    }
    match a.expr.as_ref() {
        promql_parser::parser::Expr::Call(c) => {
            range_call(c).map(|(rf, ms)| FoldInput::Range(rf, ms))
        }
        promql_parser::parser::Expr::VectorSelector(vs) if vs.at.is_none() => {
            Some(FoldInput::Instant(vs))
        }
        _ => None,
    }
}
