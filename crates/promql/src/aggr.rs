//! Aggregation operators (`sum`, `avg`, `topk`, `quantile`, `count_values`, …).

use crate::eval::{exec_err, Elem, Evaluator, GroupCache, Result, Val};
use crate::functions::{format_go_float, kahan_inc, quantile};
use cairn_common::{Labels, METRIC_NAME};
use promql_parser::parser::token::{
    TokenId, T_AVG, T_BOTTOMK, T_COUNT, T_COUNT_VALUES, T_GROUP, T_LIMITK, T_LIMIT_RATIO, T_MAX,
    T_MIN, T_QUANTILE, T_STDDEV, T_STDVAR, T_SUM, T_TOPK,
};
use promql_parser::parser::{AggregateExpr, LabelModifier};
use rustc_hash::FxHashMap as HashMap;
use std::sync::Arc;

struct Group {
    labels: Arc<Labels>,
    /// The group's id in the node's [`GroupCache`].
    gid: usize,
    acc: Acc,
    drop_name: bool,
    values: Vec<f64>,
}

/// One group's running state at one step (`count > 0` once seen).
#[derive(Clone, Copy, Default)]
pub(crate) struct Acc {
    value: f64,
    kahan_c: f64,
    mean: f64,
    count: f64,
    incremental_mean: bool,
}

/// Folds `v` into `g` for `op` (not `quantile`, whose values are kept
/// apart). Returns false for an operator this does not handle.
#[inline]
pub(crate) fn acc_add(op: TokenId, g: &mut Acc, v: f64) -> bool {
    if g.count == 0.0 {
        g.count = 1.0;
        match op {
            T_SUM | T_AVG => g.value = v,
            T_MIN | T_MAX => g.value = v,
            T_COUNT | T_GROUP => g.value = 1.0,
            T_STDDEV | T_STDVAR => {
                g.mean = v;
                g.value = if v.is_nan() || v.is_infinite() {
                    f64::NAN
                } else {
                    0.0
                };
            }
            _ => {}
        }
        return true;
    }
    g.count += 1.0;
    match op {
        T_SUM => {
            let (s, c) = kahan_inc(v, g.value, g.kahan_c);
            g.value = s;
            g.kahan_c = c;
        }
        T_AVG => {
            if !g.incremental_mean {
                let (s, c) = kahan_inc(v, g.value, g.kahan_c);
                if !s.is_infinite() {
                    g.value = s;
                    g.kahan_c = c;
                    return true;
                }
                g.incremental_mean = true;
                g.mean = g.value / (g.count - 1.0);
                g.kahan_c /= g.count - 1.0;
            }
            if g.mean.is_infinite() {
                if v.is_infinite() && (g.mean > 0.0) == (v > 0.0) {
                    return true;
                }
                if !v.is_infinite() && !v.is_nan() {
                    return true;
                }
            }
            let q = (g.count - 1.0) / g.count;
            let (m, c) = kahan_inc(v / g.count, q * g.mean, q * g.kahan_c);
            g.mean = m;
            g.kahan_c = c;
        }
        T_MIN => {
            if g.value > v || g.value.is_nan() {
                g.value = v;
            }
        }
        T_MAX => {
            if g.value < v || g.value.is_nan() {
                g.value = v;
            }
        }
        T_COUNT => g.value += 1.0,
        T_GROUP => {}
        T_STDDEV | T_STDVAR => {
            let delta = v - g.mean;
            g.mean += delta / g.count;
            g.value += delta * (v - g.mean);
        }
        T_QUANTILE => {}
        _ => return false,
    }
    true
}

impl Acc {
    /// Whether any value was folded in.
    pub(crate) fn seen(&self) -> bool {
        self.count > 0.0
    }
}

/// A group's result from its state (not `quantile`).
#[inline]
pub(crate) fn acc_value(op: TokenId, g: &Acc) -> f64 {
    match op {
        T_SUM => g.value + g.kahan_c,
        T_AVG => {
            if g.incremental_mean {
                g.mean + g.kahan_c
            } else {
                (g.value + g.kahan_c) / g.count
            }
        }
        T_STDVAR => g.value / g.count,
        T_STDDEV => (g.value / g.count).sqrt(),
        _ => g.value,
    }
}

pub(crate) fn grouping_key(l: &Labels, modifier: &Option<LabelModifier>) -> Labels {
    match modifier {
        None => Labels::empty(),
        Some(LabelModifier::Include(ls)) => {
            let n: Vec<&str> = ls.labels.iter().map(|s| s.as_str()).collect();
            l.keep_only(&n)
        }
        Some(LabelModifier::Exclude(ls)) => {
            let mut n: Vec<&str> = ls.labels.iter().map(|s| s.as_str()).collect();
            n.push(METRIC_NAME);
            l.without(&n)
        }
    }
}

pub(crate) fn convertible_to_i64(v: f64) -> bool {
    v <= i64::MAX as f64 && v >= i64::MIN as f64
}

pub(crate) fn eval_aggregate(ev: &Evaluator, a: &AggregateExpr, t: i64) -> Result<Val> {
    if let Some(r) = precomputed(ev, a, t) {
        return r;
    }
    let op = a.op.id();
    let mut param_f = 0.0;
    let mut param_s = String::new();
    if let Some(p) = &a.param {
        if op == T_COUNT_VALUES {
            param_s = ev.eval_string(p, t)?;
        } else {
            param_f = ev.eval_scalar(p, t)?;
        }
    }
    let input = ev.eval_vector(&a.expr, t)?;
    // Delayed name removal: groups are formed on the labels as they are
    // (names not yet dropped); a group drops its name if any member does.

    match op {
        T_TOPK | T_BOTTOMK | T_LIMITK => {
            if param_f.is_nan() {
                return Err(exec_err("Parameter value is NaN"));
            }
            if !convertible_to_i64(param_f) {
                return Err(exec_err(format!("Scalar value {param_f} overflows int64")));
            }
            let k = param_f as i64;
            if k < 1 {
                return Ok(Val::Vector(Vec::new()));
            }
            return Ok(Val::Vector(select_k(op, input, &a.modifier, k as usize, t)));
        }
        T_LIMIT_RATIO => {
            if param_f.is_nan() {
                return Err(exec_err("Ratio value is NaN"));
            }
            let mut r = param_f;
            if !(-1.0..=1.0).contains(&r) {
                ev.warn(format!(
                    "PromQL warning: ratio value should be between -1 and 1, got {}, capping to {}",
                    format_go_float(r),
                    if r < 0.0 { -1 } else { 1 }
                ));
                r = r.clamp(-1.0, 1.0);
            }
            let out = input
                .into_iter()
                .filter(|e| {
                    let s = ratiosampler_offset(&e.labels);
                    if r >= 0.0 {
                        s < r
                    } else {
                        s >= 1.0 + r
                    }
                })
                .collect();
            return Ok(Val::Vector(out));
        }
        T_COUNT_VALUES => {
            if !ev.valid_label_name(&param_s) {
                return Err(exec_err(format!("invalid label name {param_s:?}")));
            }
            let mut groups: Vec<(Labels, f64, bool)> = Vec::new();
            let mut index: HashMap<Labels, usize> = HashMap::default();
            for e in &input {
                let mut b = grouping_key(&e.labels, &a.modifier).builder();
                b.set(&param_s, &format_go_float(e.v));
                let l = b.build();
                match index.get(&l) {
                    Some(&i) => {
                        groups[i].1 += 1.0;
                        groups[i].2 |= e.drop_name;
                    }
                    None => {
                        index.insert(l.clone(), groups.len());
                        groups.push((l, 1.0, e.drop_name));
                    }
                }
            }
            return Ok(Val::Vector(
                groups
                    .into_iter()
                    .map(|(labels, v, drop_name)| Elem {
                        labels: labels.into(),
                        t,
                        v,
                        drop_name,
                    })
                    .collect(),
            ));
        }
        _ => {}
    }
    if op == T_QUANTILE && !(0.0..=1.0).contains(&param_f) {
        let pos = a.param.as_ref().map(|p| ev.pos(p)).unwrap_or_default();
        ev.warn(format!(
            "PromQL warning: quantile value should be between 0 and 1, got {}{pos}",
            format_go_float(param_f)
        ));
    }

    // Each input label set's group is found once per query (by the label
    // set's address); a step only maps groups to its own slots.
    let mut caches = ev.groups.borrow_mut();
    let gc: &mut GroupCache = caches
        .entry(a as *const AggregateExpr as usize)
        .or_default();
    let mut groups: Vec<Group> = Vec::new();
    let res = fold_groups(op, a, &input, gc, &mut groups);
    for g in &groups {
        gc.slot[g.gid] = u32::MAX;
    }
    drop(caches);
    res?;
    let mut out = Vec::with_capacity(groups.len());
    for g in groups {
        let v = match op {
            T_QUANTILE => {
                let mut vals = g.values;
                quantile(param_f, &mut vals)
            }
            _ => acc_value(op, &g.acc),
        };
        out.push(Elem {
            labels: g.labels,
            t,
            v,
            drop_name: g.drop_name,
        });
    }
    Ok(Val::Vector(out))
}

fn fold_groups(
    op: TokenId,
    a: &AggregateExpr,
    input: &[Elem],
    gc: &mut GroupCache,
    groups: &mut Vec<Group>,
) -> Result<()> {
    for e in input {
        let gid = gc.group_of(&e.labels, |l| grouping_key(l, &a.modifier));
        if gc.slot.len() < gc.keys.len() {
            gc.slot.resize(gc.keys.len(), u32::MAX);
        }
        let gi = match gc.slot[gid] {
            u32::MAX => {
                gc.slot[gid] = groups.len() as u32;
                groups.push(Group {
                    labels: gc.keys[gid].clone(),
                    gid,
                    acc: Acc::default(),
                    drop_name: false,
                    values: Vec::new(),
                });
                groups.len() - 1
            }
            i => i as usize,
        };
        let g = &mut groups[gi];
        g.drop_name |= e.drop_name;
        if op == T_QUANTILE {
            g.values.push(e.v);
        }
        if !acc_add(op, &mut g.acc, e.v) {
            return Err(exec_err(format!("unsupported aggregation {}", a.op)));
        }
    }
    Ok(())
}

/// Prometheus's deterministic per-series sampling offset for `limit_ratio`.
fn ratiosampler_offset(l: &Labels) -> f64 {
    // Prometheus hashes the label set with xxhash64 over its own byte layout;
    // we use a stable hash of the label pairs, which keeps the property that
    // matters (deterministic, uniform in [0,1)).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for lb in l.iter() {
        for b in lb
            .name
            .bytes()
            .chain([0xff])
            .chain(lb.value.bytes())
            .chain([0xff])
        {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x100_0000_01b3);
        }
    }
    (h as f64) / (u64::MAX as f64 + 1.0)
}

fn select_k(
    op: promql_parser::parser::token::TokenId,
    input: Vec<Elem>,
    modifier: &Option<LabelModifier>,
    k: usize,
    t: i64,
) -> Vec<Elem> {
    let mut groups: Vec<Vec<Elem>> = Vec::new();
    let mut index: HashMap<Labels, usize> = HashMap::default();
    for e in input {
        let key = grouping_key(&e.labels, modifier);
        let gi = match index.get(&key) {
            Some(&i) => i,
            None => {
                index.insert(key, groups.len());
                groups.push(Vec::new());
                groups.len() - 1
            }
        };
        groups[gi].push(e);
    }
    let mut out = Vec::new();
    for g in groups {
        if op == T_LIMITK {
            out.extend(g.into_iter().take(k).map(|mut e| {
                e.t = t;
                e
            }));
            continue;
        }
        let mut sel = Vec::new();
        best_k(op == T_TOPK, g.iter().map(|e| e.v), k, &mut sel);
        let mut g: Vec<Option<Elem>> = g.into_iter().map(Some).collect();
        out.extend(sel.iter().filter_map(|&(i, _)| {
            let mut e = g[i].take()?;
            e.t = t;
            Some(e)
        }));
    }
    out
}

/// `topk` (`top`) or `bottomk` over one group's values in input order:
/// fills `sel` with the (position, value) of the `k` best, best first. NaN
/// counts as worst; among equals the earlier input wins a place and keeps
/// its place in the order (Prometheus's heap gives the same sets).
pub(crate) fn best_k(
    top: bool,
    vals: impl Iterator<Item = f64>,
    k: usize,
    sel: &mut Vec<(usize, f64)>,
) {
    let better = |a: f64, b: f64| -> bool {
        if top {
            a > b || (b.is_nan() && !a.is_nan())
        } else {
            a < b || (b.is_nan() && !a.is_nan())
        }
    };
    sel.clear();
    // The worst kept entry (the first of equals), found again only when
    // it is replaced.
    let mut wi = 0;
    for (i, v) in vals.enumerate() {
        if sel.len() < k {
            sel.push((i, v));
            if sel.len() == k {
                wi = worst(sel, better);
            }
            continue;
        }
        if better(v, sel[wi].1) {
            sel[wi] = (i, v);
            wi = worst(sel, better);
        }
    }
    sel.sort_by(|a, b| {
        if better(a.1, b.1) {
            std::cmp::Ordering::Less
        } else if better(b.1, a.1) {
            std::cmp::Ordering::Greater
        } else {
            std::cmp::Ordering::Equal
        }
    });
}

fn worst(sel: &[(usize, f64)], better: impl Fn(f64, f64) -> bool) -> usize {
    let mut wi = 0;
    for i in 1..sel.len() {
        if better(sel[wi].1, sel[i].1) {
            wi = i;
        }
    }
    wi
}

/// An aggregation's results at every step of a range query, computed
/// series by series ahead of the step loop.
pub(crate) struct Precomputed {
    pub steps: usize,
    /// Per group: its output label set.
    pub keys: Vec<Arc<Labels>>,
    /// Per step: the results, aligned with `order`.
    pub values: Vec<Vec<f64>>,
    /// Per step: its groups in order of their first input series.
    pub order: Vec<Vec<u32>>,
    /// Per step: the samples its windows held (for the sample limit).
    pub samples: Vec<usize>,
    pub drop_name: bool,
}

/// The aggregations [`precompute`] folds: `aggr by (…) (f(selector[r]))`
/// with `aggr` one of sum/avg/min/max/count/group/stddev/stdvar and `f` a
/// window-only range function.
pub(crate) fn precompute_shape(
    a: &AggregateExpr,
) -> Option<(
    crate::functions::RangeFn,
    &promql_parser::parser::MatrixSelector,
)> {
    if !crate::columnar::simple_aggregation(a) {
        return None;
    }
    match a.expr.as_ref() {
        promql_parser::parser::Expr::Call(c) => crate::columnar::range_call(c),
        _ => None,
    }
}

/// One group's accumulators over the steps `first..first + accs.len()`.
struct GroupAccs {
    first: usize,
    accs: Vec<Acc>,
}

/// For an aggregation of [`precompute_shape`] in a range query: reads the
/// selector's series (`matchers` over `[mint, maxt]`) in batches and folds
/// each series, as it arrives, into one accumulator per group and step:
/// `f` is computed over the series' steps with a sliding window, its group
/// found once. Only a batch of samples is held, never the selector's whole
/// data, and no per-step input vectors are built. Series are folded in the
/// order the step path folds them (the source's order), so results are
/// identical. Adds the samples read to `loaded` (the query's sample limit).
///
/// Returns false, leaving `ev` and `loaded` as they were, when the
/// accumulators, past `floor_cells`, would outgrow the samples they
/// summarise (about as many groups as series, with a step near the scrape
/// interval): the caller then fetches the selector for the step path.
#[allow(clippy::too_many_arguments)]
pub(crate) fn precompute(
    ev: &mut Evaluator,
    src: &dyn cairn_common::SeriesSource,
    tenant: &str,
    a: &AggregateExpr,
    matchers: &[cairn_common::Matcher],
    mint: i64,
    maxt: i64,
    loaded: &mut usize,
    floor_cells: usize,
) -> Result<bool> {
    let Some((rf, ms)) = precompute_shape(a) else {
        return Ok(false);
    };
    if ev.step <= 0 || ev.end < ev.start {
        return Ok(false);
    }
    let op = a.op.id();
    let steps = crate::columnar::steps(ev);
    let name = ms.vs.name.as_deref();
    let mut index: HashMap<Labels, u32> = HashMap::default();
    let mut keys: Vec<Arc<Labels>> = Vec::new();
    let mut groups: Vec<GroupAccs> = Vec::new();
    let mut order: Vec<Vec<u32>> = vec![Vec::new(); steps];
    let mut samples = vec![0usize; steps];
    let mut odd: Vec<String> = Vec::new();
    let mut vals: Vec<Option<f64>> = Vec::new();
    let (mut cells, mut mine) = (0usize, 0usize);
    let mut failed: Option<crate::QueryError> = None;
    let mut abandoned = false;
    let before = *loaded;
    let ev_ref: &Evaluator = ev;
    let mut fold = |batch: Vec<cairn_common::SeriesData>| -> bool {
        mine += batch.iter().map(|s| s.samples.len()).sum::<usize>();
        if before + mine > ev_ref.max_samples {
            failed = Some(crate::eval::too_many_samples());
            return false;
        }
        if let Err(e) = ev_ref.check_deadline() {
            failed = Some(e);
            return false;
        }
        for sd in crate::eval::fetched(batch, true, name) {
            let (first, seen) =
                crate::columnar::range_fn_values(ev_ref, rf, ms, &sd, &mut samples, &mut vals);
            if seen {
                crate::functions::note_later(&mut odd, rf, &sd);
            }
            let Some(lo) = vals.iter().position(Option::is_some) else {
                continue;
            };
            let hi = vals.iter().rposition(Option::is_some).map_or(lo, |h| h + 1);
            let k = grouping_key(&sd.labels, &a.modifier);
            let g = match index.get(&k) {
                Some(&g) => g as usize,
                None => {
                    keys.push(Arc::new(k.clone()));
                    index.insert(k, keys.len() as u32 - 1);
                    groups.push(GroupAccs {
                        first: first + lo,
                        accs: Vec::new(),
                    });
                    keys.len() - 1
                }
            };
            // Widen the group's steps to this series' (rarely forward:
            // series come in label order, mostly with similar spans).
            let ga = &mut groups[g];
            let (from, to) = (first + lo, first + hi);
            if ga.accs.is_empty() {
                ga.first = from;
            }
            if from < ga.first {
                let grow = ga.first - from;
                ga.accs
                    .splice(0..0, std::iter::repeat_n(Acc::default(), grow));
                ga.first = from;
                cells += grow;
            }
            if to > ga.first + ga.accs.len() {
                let grow = to - ga.first - ga.accs.len();
                ga.accs.resize(ga.accs.len() + grow, Acc::default());
                cells += grow;
            }
            for (i, v) in (from..to).zip(&vals[lo..hi]) {
                if let Some(v) = *v {
                    let acc = &mut ga.accs[i - ga.first];
                    if !acc.seen() {
                        order[i].push(g as u32);
                    }
                    acc_add(op, acc, v);
                }
            }
        }
        // Accumulators (40 bytes) beyond half the samples read (16 bytes):
        // folding saves nothing here.
        if cells > floor_cells.max(mine / 2) {
            abandoned = true;
            return false;
        }
        true
    };
    src.select_batched(tenant, matchers, mint, maxt, &mut fold)
        .map_err(|e| crate::QueryError::Storage(format!("selecting {}: {e}", ms.vs)))?;
    if let Some(e) = failed {
        return Err(e);
    }
    if abandoned {
        return Ok(false);
    }
    *loaded += mine;
    let values = order
        .iter()
        .enumerate()
        .map(|(i, gs)| {
            gs.iter()
                .map(|&g| {
                    let ga = &groups[g as usize];
                    acc_value(op, &ga.accs[i - ga.first])
                })
                .collect()
        })
        .collect();
    let arg = a.expr.as_ref();
    for n in &odd {
        let promql_parser::parser::Expr::Call(c) = arg else {
            break;
        };
        crate::functions::note_not_counter(ev, n, &c.args.args[0]);
    }
    ev.pre.get_mut().insert(
        a as *const AggregateExpr as usize,
        Precomputed {
            steps,
            keys,
            values,
            order,
            samples,
            drop_name: !rf.keeps_name(),
        },
    );
    Ok(true)
}

/// The precomputed result of aggregation `a` at `t`, if there is one.
fn precomputed(ev: &Evaluator, a: &AggregateExpr, t: i64) -> Option<Result<Val>> {
    let pre = ev.pre.borrow();
    let p = pre.get(&(a as *const AggregateExpr as usize))?;
    let off = t - ev.start;
    let i = (off / ev.step) as usize;
    if off < 0 || off % ev.step != 0 || i >= p.steps {
        return Some(Err(exec_err(
            "internal error: precomputed aggregation evaluated off its steps",
        )));
    }
    if let Err(e) = ev.add_samples(p.samples[i]) {
        return Some(Err(e));
    }
    Some(Ok(Val::Vector(
        p.order[i]
            .iter()
            .zip(&p.values[i])
            .map(|(&g, &v)| Elem {
                labels: p.keys[g as usize].clone(),
                t,
                v,
                drop_name: p.drop_name,
            })
            .collect(),
    )))
}
