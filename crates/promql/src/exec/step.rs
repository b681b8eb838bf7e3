//! The step-by-step evaluator: one node at one step. Dispatches each node
//! to its evaluator (`aggr`, `binop`, `call`, selectors and subqueries
//! here), or hands out a value computed ahead by `serieswise`. Node
//! evaluators reach their children through [`Evaluator::eval`], which
//! calls back into [`eval`] without importing this module.

use super::ctx::Evaluator;
use super::{aggr, binop, call, serieswise};
use crate::ast::offset_ms;
use crate::plan::NodeId;
use crate::value::{exec_err, MatrixVal, Result, Series, Val};
use cairn_common::{Labels, Sample};
use promql_parser::parser::{Expr, SubqueryExpr};
use rustc_hash::FxHashMap;
use std::sync::Arc;

/// Evaluates `e`, node `id`, at step `t`.
pub(crate) fn eval(ev: &Evaluator, e: &Expr, id: NodeId, t: i64) -> Result<Val> {
    if let Some(r) = serieswise::at_step(ev, id, t) {
        return r.map(Val::Vector);
    }
    match e {
        Expr::NumberLiteral(n) => Ok(Val::Scalar(n.val)),
        Expr::StringLiteral(s) => Ok(Val::Str(s.val.clone())),
        Expr::Paren(p) => eval(ev, &p.expr, ev.child(id, 0), t),
        Expr::Unary(u) => match eval(ev, &u.expr, ev.child(id, 0), t)? {
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
        Expr::VectorSelector(vs) => Ok(Val::Vector(ev.select_instant(vs, id, t)?)),
        Expr::MatrixSelector(ms) => Ok(Val::Matrix(ev.select_range(ms, id, t)?)),
        Expr::Subquery(sq) => Ok(Val::Matrix(subquery(ev, sq, id, t)?)),
        Expr::Binary(b) => binop::eval_binary(ev, b, id, t),
        Expr::Aggregate(a) => aggr::eval_aggregate(ev, a, id, t),
        Expr::Call(c) => call::eval_call(ev, c, id, t),
        Expr::Extension(_) => Err(exec_err("extension expressions are not supported")),
    }
}

fn subquery(ev: &Evaluator, sq: &SubqueryExpr, id: NodeId, t: i64) -> Result<MatrixVal> {
    let base = ev.at_time(&sq.at).unwrap_or(t) - offset_ms(&sq.offset);
    let range = sq.range.as_millis() as i64;
    let step = sq
        .step
        .map(|d| d.as_millis() as i64)
        .unwrap_or(ev.default_sub_step)
        .max(1);
    let lo = base - range;
    let inner = ev.child(id, 0);
    // Go's integer division truncates toward zero, as Rust's does.
    let mut ts = step * (lo / step);
    if ts <= lo {
        ts += step;
    }
    let mut index: FxHashMap<(Arc<Labels>, bool), usize> = FxHashMap::default();
    let mut series: Vec<Series> = Vec::new();
    let mut n = 0;
    while ts <= base {
        ev.check_deadline()?;
        match eval(ev, &sq.expr, inner, ts)? {
            Val::Vector(els) => {
                for e in ev.cleanup_vector(els)? {
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
    ev.add_samples(n)?;
    Ok(MatrixVal {
        series,
        range_end: base,
        range_ms: range,
    })
}
