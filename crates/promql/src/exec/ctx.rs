//! The evaluator's context: fetched data, per-query settings and limits,
//! per-node state, annotations, and the selectors' per-step reads.

use super::state::{BinCache, Cols, Cursors, Folded, GroupCache, PtrCache, Windows};
use crate::ast::{offset_ms, system_time_ms};
use crate::fetch::Fetched;
use crate::kernels::range::RangeFn;
use crate::kernels::window::{advance_to, slide_window};
use crate::plan::{NodeId, Nodes, Strategy};
use crate::value::{
    check_cancel, check_unique_labels, exec_err, timeout_err, too_many_samples, Elem, MatrixVal,
    Result, Series, Val,
};
use cairn_common::{is_stale_nan, Labels, Sample};
use promql_parser::parser::{AtModifier, Expr, MatrixSelector, VectorSelector};
use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

/// Evaluates a child expression at a step. The evaluator is built with the
/// step dispatcher (`exec::step::eval`) and hands it to the node evaluators
/// through [`Evaluator::eval`], so they recurse without importing the
/// dispatcher that imports them.
pub(crate) type EvalFn = fn(&Evaluator, &Expr, NodeId, i64) -> Result<Val>;

/// The evaluator: fetched data, per-node state and per-query settings.
/// Per-node state is in `Vec`s indexed by [`NodeId`]; the larger kinds are
/// boxed, so a slot costs a pointer for the many nodes that have none.
pub(crate) struct Evaluator {
    /// The query text, to report annotation positions as `(line:col)`.
    pub query: String,
    /// The plan's nodes: children's ids, subtrees.
    pub nodes: Nodes,
    /// The plan's strategy per node.
    pub strategy: Vec<Strategy>,
    /// Per selector node (and `info()` call reading `target_info`): its
    /// fetched series.
    pub data: Vec<Option<Vec<Fetched>>>,
    /// Per range selector node: its window cursors.
    windows: RefCell<Vec<Option<Windows>>>,
    /// Per instant selector node: its cursors.
    instants: RefCell<Vec<Option<Cursors>>>,
    /// Per aggregation node: its grouping across steps.
    pub groups: RefCell<Vec<Option<Box<GroupCache>>>>,
    /// Per binary operator node: its matching across steps.
    pub bins: RefCell<Vec<Option<Box<BinCache>>>>,
    /// Per aggregation node: its result, when folded while its selector
    /// was read.
    pub folded: Vec<Option<Box<Folded>>>,
    /// Per node: its value at every step, when computed series-wise ahead
    /// of the steps.
    pub cols: Vec<Option<Box<Cols>>>,
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
    /// The step dispatcher children are evaluated through.
    eval_fn: EvalFn,
}

impl Evaluator {
    /// An evaluator with no data yet (the fetch step fills `data`).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        query: &str,
        nodes: Nodes,
        strategy: Vec<Strategy>,
        start: i64,
        end: i64,
        step: i64,
        lookback: i64,
        default_sub_step: i64,
        deadline: Instant,
        cancel: Option<Arc<std::sync::atomic::AtomicBool>>,
        max_samples: usize,
        eval_fn: EvalFn,
    ) -> Self {
        let n = nodes.len();
        Self {
            query: query.to_string(),
            data: none(n),
            windows: RefCell::new(none(n)),
            instants: RefCell::new(none(n)),
            groups: RefCell::new(none(n)),
            bins: RefCell::new(none(n)),
            folded: none(n),
            cols: none(n),
            nodes,
            strategy,
            no_name: RefCell::new(PtrCache::default()),
            start,
            end,
            step,
            lookback,
            default_sub_step,
            deadline,
            cancel,
            max_samples,
            samples_in_step: Cell::new(0),
            warnings: RefCell::new(BTreeSet::new()),
            infos: RefCell::new(BTreeSet::new()),
            eval_fn,
        }
    }

    /// `l` without `__name__`, shared across steps.
    pub(crate) fn without_name(&self, l: &Arc<Labels>) -> Arc<Labels> {
        if l.metric_name().is_none() {
            return l.clone();
        }
        self.no_name
            .borrow_mut()
            .get_or(l, |l| Arc::new(l.without_metric_name()))
    }

    /// Applies delayed name removal and checks label-set uniqueness.
    pub(crate) fn cleanup_vector(&self, mut elems: Vec<Elem>) -> Result<Vec<Elem>> {
        for e in &mut elems {
            if e.drop_name {
                e.labels = self.without_name(&e.labels);
                e.drop_name = false;
            }
        }
        check_unique_labels(&elems)?;
        Ok(elems)
    }

    pub(crate) fn warn(&self, msg: impl Into<String>) {
        self.warnings.borrow_mut().insert(msg.into());
    }

    pub(crate) fn info(&self, msg: impl Into<String>) {
        self.infos.borrow_mut().insert(msg.into());
    }

    /// Prometheus's position suffix for an annotation about `e`: where its
    /// text starts in the query, as `(line:col)`. The parser keeps no
    /// positions, so the expression's printed form is searched for.
    pub(crate) fn pos(&self, e: &Expr) -> String {
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
    pub(crate) fn valid_label_name(&self, name: &str) -> bool {
        if name.is_empty() {
            return false;
        }
        let q = self.query.to_ascii_lowercase();
        !name.chars().any(|c| {
            let u = c as u32;
            (0x80..=0xff).contains(&u) && q.contains(&format!("\\x{u:02x}"))
        })
    }

    pub(crate) fn check_deadline(&self) -> Result<()> {
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

    pub(crate) fn at_time(&self, at: &Option<AtModifier>) -> Option<i64> {
        at.as_ref().map(|a| match a {
            AtModifier::Start => self.start,
            AtModifier::End => self.end,
            AtModifier::At(st) => system_time_ms(st),
        })
    }

    /// Evaluates `e`, node `id`, at step `t` through the dispatcher this
    /// evaluator was built with (see [`EvalFn`]).
    pub(crate) fn eval(&self, e: &Expr, id: NodeId, t: i64) -> Result<Val> {
        (self.eval_fn)(self, e, id, t)
    }

    /// The id of child `k` of node `id`.
    pub(crate) fn child(&self, id: NodeId, k: usize) -> NodeId {
        self.nodes.child(id, k)
    }

    /// The series fetched for node `id`, if any.
    pub(crate) fn data(&self, id: NodeId) -> Option<&Vec<Fetched>> {
        self.data[id].as_ref()
    }

    pub(crate) fn select_instant(
        &self,
        vs: &VectorSelector,
        id: NodeId,
        t: i64,
    ) -> Result<Vec<Elem>> {
        let te = self.at_time(&vs.at).unwrap_or(t) - offset_ms(&vs.offset);
        self.instant_from(id, te)
    }

    /// The instant vector at `te` of the series fetched for node `id`.
    pub(crate) fn instant_from(&self, id: NodeId, te: i64) -> Result<Vec<Elem>> {
        let Some(data) = self.data(id) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        let mut all = self.instants.borrow_mut();
        let cur = all[id].get_or_insert_with(|| Cursors {
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
    pub(crate) fn for_each_window(
        &self,
        ms: &MatrixSelector,
        id: NodeId,
        t: i64,
        mut f: impl FnMut(&Fetched, &[Sample]),
    ) -> Result<(i64, i64)> {
        let vs = &ms.vs;
        let te = self.at_time(&vs.at).unwrap_or(t) - offset_ms(&vs.offset);
        let range = ms.range.as_millis() as i64;
        let Some(data) = self.data(id) else {
            return Ok((te, range));
        };
        let mut n = 0;
        {
            let mut all = self.windows.borrow_mut();
            let w = all[id].get_or_insert_with(|| Windows {
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

    pub(crate) fn select_range(
        &self,
        ms: &MatrixSelector,
        id: NodeId,
        t: i64,
    ) -> Result<MatrixVal> {
        let vs = &ms.vs;
        let te = self.at_time(&vs.at).unwrap_or(t) - offset_ms(&vs.offset);
        let range = ms.range.as_millis() as i64;
        let mut out = Vec::new();
        let mut n = 0;
        if let Some(data) = self.data(id) {
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

    /// Evaluates an expression that must yield a scalar.
    pub(crate) fn eval_scalar(&self, e: &Expr, id: NodeId, t: i64) -> Result<f64> {
        match self.eval(e, id, t)? {
            Val::Scalar(v) => Ok(v),
            other => Err(exec_err(format!(
                "expected scalar, got {}",
                other.type_name()
            ))),
        }
    }

    pub(crate) fn eval_vector(&self, e: &Expr, id: NodeId, t: i64) -> Result<Vec<Elem>> {
        match self.eval(e, id, t)? {
            Val::Vector(v) => Ok(v),
            other => Err(exec_err(format!(
                "expected instant vector, got {}",
                other.type_name()
            ))),
        }
    }

    pub(crate) fn eval_matrix(&self, e: &Expr, id: NodeId, t: i64) -> Result<MatrixVal> {
        match self.eval(e, id, t)? {
            Val::Matrix(v) => Ok(v),
            other => Err(exec_err(format!(
                "expected range vector, got {}",
                other.type_name()
            ))),
        }
    }

    pub(crate) fn eval_string(&self, e: &Expr, id: NodeId, t: i64) -> Result<String> {
        match self.eval(e, id, t)? {
            Val::Str(v) => Ok(v),
            other => Err(exec_err(format!(
                "expected string, got {}",
                other.type_name()
            ))),
        }
    }
}

/// Adds `sd`'s metric name to `odd` (once) when `rf` is `rate`/`increase`
/// and the name does not look like a counter's: for
/// [`note_not_counter`] once the windows are done.
pub(crate) fn note_later(odd: &mut Vec<String>, rf: RangeFn, sd: &Fetched) {
    if rf.is_counter_fn() && sd.odd_counter_name {
        let n = sd.labels.metric_name().unwrap_or("");
        if !odd.iter().any(|o| o == n) {
            odd.push(n.to_string());
        }
    }
}

/// The info `rate`/`increase` give over metric `name`, whose range
/// argument is `arg`.
pub(crate) fn note_not_counter(ev: &Evaluator, name: &str, arg: &Expr) {
    ev.info(format!(
        "PromQL info: metric might not be a counter, name does not end in _total/_sum/_count/_bucket: {name:?}{}",
        ev.pos(arg)
    ));
}

/// `n` empty slots.
fn none<T>(n: usize) -> Vec<Option<T>> {
    std::iter::repeat_with(|| None).take(n).collect()
}
