//! Aggregation accumulators (`sum`, `avg`, `stddev`, …), grouping keys,
//! `topk`/`bottomk` selection and `quantile`.

use super::float::kahan_inc;
use cairn_common::{Labels, METRIC_NAME};
use promql_parser::parser::token::{
    TokenId, T_AVG, T_COUNT, T_GROUP, T_MAX, T_MIN, T_QUANTILE, T_STDDEV, T_STDVAR, T_SUM,
};
use promql_parser::parser::LabelModifier;
/// One group's running state at one step (`count > 0` once seen).
#[derive(Clone, Copy, Default)]
pub(crate) struct Acc {
    pub value: f64,
    pub kahan_c: f64,
    pub mean: f64,
    pub count: f64,
    pub incremental_mean: bool,
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

/// Merges `b` (another part's state of the same group and step) into `a`
/// for `op` — `sum`, `avg`, `min`, `max`, `count`, `group`: the result is
/// the one folding both parts' values into one state gives, but for the
/// order of float additions.
pub(crate) fn acc_merge(op: TokenId, a: &mut Acc, b: &Acc) {
    if !b.seen() {
        return;
    }
    if !a.seen() {
        *a = *b;
        return;
    }
    match op {
        T_SUM => {
            let (s, c) = kahan_inc(b.value, a.value, a.kahan_c);
            a.value = s;
            a.kahan_c = c + b.kahan_c;
        }
        T_AVG if !a.incremental_mean && !b.incremental_mean => {
            let (s, c) = kahan_inc(b.value, a.value, a.kahan_c);
            if s.is_infinite() && !a.value.is_infinite() && !b.value.is_infinite() {
                // The sum overflowed: weigh the two means instead.
                let n = a.count + b.count;
                let m = acc_value(T_AVG, a) * (a.count / n) + acc_value(T_AVG, b) * (b.count / n);
                a.incremental_mean = true;
                a.mean = m;
                a.kahan_c = 0.0;
            } else {
                a.value = s;
                a.kahan_c = c + b.kahan_c;
            }
        }
        T_AVG => {
            let n = a.count + b.count;
            let (ma, mb) = (acc_value(T_AVG, a), acc_value(T_AVG, b));
            let m = if ma.is_infinite() || mb.is_infinite() {
                ma + mb
            } else {
                ma * (a.count / n) + mb * (b.count / n)
            };
            a.incremental_mean = true;
            a.mean = m;
            a.kahan_c = 0.0;
        }
        T_MIN if a.value > b.value || a.value.is_nan() => a.value = b.value,
        T_MAX if a.value < b.value || a.value.is_nan() => a.value = b.value,
        T_COUNT => a.value += b.value,
        _ => {}
    }
    a.count += b.count;
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

pub(crate) fn worst(sel: &[(usize, f64)], better: impl Fn(f64, f64) -> bool) -> usize {
    let mut wi = 0;
    for i in 1..sel.len() {
        if better(sel[wi].1, sel[i].1) {
            wi = i;
        }
    }
    wi
}

/// Prometheus's `quantile` over values (sorts in place).
pub(crate) fn quantile(q: f64, values: &mut [f64]) -> f64 {
    if values.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    values.sort_by(|a, b| {
        if a.is_nan() && !b.is_nan() {
            std::cmp::Ordering::Less
        } else if b.is_nan() && !a.is_nan() {
            std::cmp::Ordering::Greater
        } else {
            a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal)
        }
    });
    let n = values.len() as f64;
    let rank = q * (n - 1.0);
    let lower = rank.floor().max(0.0);
    let upper = (lower + 1.0).min(n - 1.0);
    let weight = rank - rank.floor();
    values[lower as usize] * (1.0 - weight) + values[upper as usize] * weight
}
