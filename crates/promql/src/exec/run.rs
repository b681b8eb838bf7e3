//! Running a query: validate, plan, fetch, execute — each its own step.

use super::ctx::Evaluator;
use super::fold::fold;
use super::serieswise;
use super::step;
use crate::ast::selector_matchers;
use crate::fetch::{fetch, fetched, target_info};
use crate::plan::{plan, Plan, Reads, Strategy};
use crate::value::{
    check_cancel, exec_err, timeout_err, too_many_samples, Elem, InstantSample, QueryError,
    QueryResult, RangeSeries, Result, Val, Value,
};
use cairn_common::{Labels, Sample};
use cairn_storage_api::{block_on, SeriesReader};
use promql_parser::parser::value::ValueType;
use promql_parser::parser::Expr;
use rustc_hash::FxHashMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The engine's settings one query runs under.
pub(crate) struct Settings {
    pub lookback_ms: i64,
    pub max_samples: usize,
    /// Series the query may select (0: no bound).
    pub max_series: usize,
    pub timeout: Duration,
    /// Step of subqueries without an explicit step.
    pub default_sub_step_ms: i64,
    /// Whether a range query folds what it can while reading and computes
    /// what it can series-wise; off only in tests comparing those paths
    /// with the plain step-by-step evaluation.
    pub fold_and_serieswise: bool,
    /// Accumulator cells a folded aggregation may always use (`exec::fold`).
    pub fold_floor_cells: usize,
    pub cancel: Option<Arc<AtomicBool>>,
}

/// One query: its text, its parsed expression and its time range
/// (`step` 0 and `is_range` false for an instant query).
pub(crate) struct Query<'a> {
    pub text: &'a str,
    pub expr: &'a Expr,
    pub start: i64,
    pub end: i64,
    pub step: i64,
    pub is_range: bool,
}

/// Runs `q` over `src` for `tenant`.
pub(crate) fn run(
    set: &Settings,
    src: &dyn SeriesReader,
    tenant: &str,
    q: &Query<'_>,
) -> Result<QueryResult> {
    let began = Instant::now();
    validate(q)?;
    // The store's warnings (too few replicas answered) join the query's.
    let warned = crate::fetch::Warned::new(src, set.max_series);
    let src: &dyn SeriesReader = &warned;
    // A range query folds and goes series-wise; an instant one only folds.
    let fast = set.fold_and_serieswise && (q.is_range || q.start == q.end);
    let Plan {
        nodes,
        reads,
        strategy,
    } = plan(
        q.expr,
        q.start,
        q.end,
        q.step,
        set.lookback_ms,
        set.default_sub_step_ms,
        fast,
    );
    let mut ev = Evaluator::new(
        q.text,
        nodes,
        strategy,
        q.start,
        q.end,
        q.step,
        set.lookback_ms,
        set.default_sub_step_ms,
        began + set.timeout,
        set.cancel.clone(),
        set.max_samples,
        step::eval,
    );
    block_on(read(set, src, tenant, &reads, &mut ev, began))?;
    let value = exec(set, &mut ev, q)?;
    Ok(QueryResult {
        value,
        warnings: ev
            .warnings
            .into_inner()
            .into_iter()
            .chain(warned.sink.take())
            .collect(),
        infos: ev.infos.into_inner().into_iter().collect(),
        resolution: None,
    })
}

/// A range query must yield a scalar or an instant vector.
fn validate(q: &Query<'_>) -> Result<()> {
    if !q.is_range {
        return Ok(());
    }
    let name = match q.expr.value_type() {
        ValueType::Vector | ValueType::Scalar => return Ok(()),
        ValueType::Matrix => "range vector",
        ValueType::String => "string",
    };
    Err(QueryError::Parse(format!(
        "invalid expression type \"{name}\" for range query, must be Scalar or instant Vector"
    )))
}

/// Reads what the plan needs into `ev`: `target_info` for `info()`, every
/// selector over its range, then the selectors of folded aggregations,
/// folded as they are read (or read whole when folding gives up).
async fn read(
    set: &Settings,
    src: &dyn SeriesReader,
    tenant: &str,
    reads: &Reads<'_>,
    ev: &mut Evaluator,
    began: Instant,
) -> Result<()> {
    for &(id, mint, maxt) in &reads.target_info {
        ev.data[id] = Some(target_info(src, tenant, mint, maxt).await?);
    }
    // The plain selectors read at once (a remote store's calls for one
    // overlap another's), each held to the sample limit, their sum after.
    let (later, plain): (Vec<_>, Vec<_>) = reads.selectors.iter().partition(|s| s.folded.is_some());
    check_cancel(set.cancel.as_deref())?;
    let mut counts = vec![0usize; plain.len()];
    let reads_at_once = plain
        .iter()
        .zip(counts.iter_mut())
        .map(|(sel, n)| fetch(src, tenant, sel.vs, sel.mint, sel.maxt, n, set.max_samples));
    let fetched_all = join_all(reads_at_once.collect()).await;
    let mut loaded: usize = counts.iter().sum();
    for (sel, series) in plain.iter().zip(fetched_all) {
        ev.data[sel.id] = Some(fetched(series?, sel.range, sel.vs.name.as_deref()));
    }
    if loaded > set.max_samples {
        return Err(too_many_samples());
    }
    if began.elapsed() > set.timeout {
        return Err(timeout_err("query preparation"));
    }
    for sel in later {
        let groups = selector_matchers(sel.vs)?;
        let done = match (groups.as_slice(), sel.folded) {
            ([matchers], Some(a)) => {
                fold(
                    ev,
                    src,
                    tenant,
                    a,
                    matchers,
                    sel.mint,
                    sel.maxt,
                    &mut loaded,
                    set.fold_floor_cells,
                )
                .await?
            }
            _ => false,
        };
        if !done {
            let series = fetch(
                src,
                tenant,
                sel.vs,
                sel.mint,
                sel.maxt,
                &mut loaded,
                set.max_samples,
            )
            .await?;
            ev.data[sel.id] = Some(fetched(series, sel.range, sel.vs.name.as_deref()));
        }
        if began.elapsed() > set.timeout {
            return Err(timeout_err("query preparation"));
        }
    }
    Ok(())
}

/// Every future of `futs` run to its end, concurrently on the calling
/// task; their outputs in order.
async fn join_all<F: std::future::Future>(futs: Vec<F>) -> Vec<F::Output> {
    let mut futs: Vec<std::pin::Pin<Box<F>>> = futs.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, o) in futs.iter_mut().zip(out.iter_mut()) {
            if o.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *o = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().flatten().collect()
}

/// Evaluates the query over the read data as the plan says: a range
/// query whose root is series-wise at once, when its data allows; else
/// step by step, with its largest series-wise nodes computed first; an
/// instant query at its one time.
fn exec(set: &Settings, ev: &mut Evaluator, q: &Query<'_>) -> Result<Value> {
    if q.is_range && ev.strategy[0] != Strategy::Steps {
        // Errors are left to the step path, which raises them in its order.
        if let Some(out) = serieswise::range_query(ev, q.expr).unwrap_or(None) {
            return Ok(Value::Matrix(out));
        }
    }
    if q.is_range {
        serieswise::ahead(ev, q.expr)?;
    }
    if q.is_range {
        exec_steps(set, ev, q)
    } else {
        exec_instant(ev, q)
    }
}

/// An instant query's value at its time.
fn exec_instant(ev: &Evaluator, q: &Query<'_>) -> Result<Value> {
    let v = ev.eval(q.expr, 0, q.start)?;
    Ok(match v {
        Val::Scalar(v) => Value::Scalar { t: q.start, v },
        Val::Str(s) => Value::String { t: q.start, v: s },
        Val::Vector(elems) => {
            let elems = ev.cleanup_vector(elems)?;
            Value::Vector(
                elems
                    .into_iter()
                    .map(|e| InstantSample {
                        labels: Arc::unwrap_or_clone(e.labels),
                        t: q.start,
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
    })
}

/// A range query evaluated step by step, its steps merged by label set.
fn exec_steps(set: &Settings, ev: &Evaluator, q: &Query<'_>) -> Result<Value> {
    let mut index: FxHashMap<Arc<Labels>, usize> = FxHashMap::default();
    let mut by_ptr: FxHashMap<usize, (Arc<Labels>, usize)> = FxHashMap::default();
    let mut series: Vec<(Arc<Labels>, Vec<Sample>)> = Vec::new();
    let mut total = 0usize;
    let mut t = q.start;
    let empty = Arc::new(Labels::empty());
    while t <= q.end {
        ev.check_deadline()?;
        ev.samples_in_step.set(0);
        let elems = match ev.eval(q.expr, 0, t)? {
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
        if total > set.max_samples {
            return Err(too_many_samples());
        }
        t += q.step;
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
    Ok(Value::Matrix(out))
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
