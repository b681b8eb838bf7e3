//! PromQL functions at one step.

use super::ctx::{note_later, note_not_counter, Evaluator};
use crate::ast::{info_time, offset_ms, selector_matchers};
use crate::fetch::not_counter_name;
use crate::kernels::aggr::quantile;
use crate::kernels::float::format_go_float;
use crate::kernels::histogram::{
    bucket_fraction, bucket_quantile, format_quantile_label, parse_le, Bucket,
};
use crate::kernels::range::{linear_regression, RangeFn};
use crate::kernels::time::date_part;
use crate::plan::NodeId;
use crate::value::{exec_err, Elem, MatrixVal, Result, Series, Val};
use cairn_common::{Labels, METRIC_NAME};
use promql_parser::parser::{Call, Expr};
use regex::Regex;

fn arg(c: &Call, i: usize) -> Result<&Expr> {
    c.args
        .args
        .get(i)
        .map(|b| b.as_ref())
        .ok_or_else(|| exec_err(format!("missing argument {} of {}", i + 1, c.func.name)))
}

fn map_vector(v: Vec<Elem>, t: i64, f: impl Fn(f64) -> f64) -> Val {
    Val::Vector(
        v.into_iter()
            .map(|mut e| {
                e.v = f(e.v);
                e.t = t;
                e.drop_name = true;
                e
            })
            .collect(),
    )
}

/// Labels `absent()` reports: the equality matchers of a plain selector.
fn absent_labels(e: &Expr) -> Labels {
    let vs = match e {
        Expr::VectorSelector(vs) => vs,
        Expr::MatrixSelector(ms) => &ms.vs,
        _ => return Labels::empty(),
    };
    let mut b = cairn_common::LabelsBuilder::new();
    let mut has = std::collections::HashSet::new();
    for m in &vs.matchers.matchers {
        if m.name == METRIC_NAME {
            continue;
        }
        if matches!(m.op, promql_parser::label::MatchOp::Equal) && !has.contains(&m.name) {
            b.set(&m.name, &m.value);
            has.insert(m.name.clone());
        } else {
            b.del(&m.name);
        }
    }
    b.build()
}

fn natural_less(a: &str, b: &str) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    let (ab, bb) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < ab.len() && j < bb.len() {
        if ab[i].is_ascii_digit() && bb[j].is_ascii_digit() {
            let si = i;
            while i < ab.len() && ab[i].is_ascii_digit() {
                i += 1;
            }
            let sj = j;
            while j < bb.len() && bb[j].is_ascii_digit() {
                j += 1;
            }
            let na = a[si..i].trim_start_matches('0');
            let nb = b[sj..j].trim_start_matches('0');
            let o = na.len().cmp(&nb.len()).then_with(|| na.cmp(nb));
            if o != Ordering::Equal {
                return o;
            }
        } else {
            if ab[i] != bb[j] {
                return ab[i].cmp(&bb[j]);
            }
            i += 1;
            j += 1;
        }
    }
    (ab.len() - i).cmp(&(bb.len() - j))
}

fn over_time(
    m: MatrixVal,
    t: i64,
    keep_name: bool,
    f: impl Fn(&MatrixVal, &Series) -> Option<f64>,
) -> Val {
    let mut out = Vec::with_capacity(m.series.len());
    for s in &m.series {
        if let Some(v) = f(&m, s) {
            out.push(Elem {
                labels: s.labels.clone(),
                t,
                v,
                drop_name: s.drop_name || !keep_name,
            });
        }
    }
    Val::Vector(out)
}

fn metric_name_of(s: &Series) -> String {
    s.labels.metric_name().unwrap_or("").to_string()
}

pub(crate) fn eval_call(ev: &Evaluator, c: &Call, id: NodeId, t: i64) -> Result<Val> {
    let call_expr = &Expr::Call(c.clone());
    let name = c.func.name;
    let nargs = c.args.args.len();
    match name {
        "time" => return Ok(Val::Scalar(t as f64 / 1000.0)),
        "pi" => return Ok(Val::Scalar(std::f64::consts::PI)),
        "step" => return Ok(Val::Scalar(ev.step as f64 / 1000.0)),
        "range" => return Ok(Val::Scalar((ev.end - ev.start) as f64 / 1000.0)),
        "start" => return Ok(Val::Scalar(ev.start as f64 / 1000.0)),
        "end" => return Ok(Val::Scalar(ev.end as f64 / 1000.0)),
        "min_of" | "max_of" => {
            let a = ev.eval_scalar(arg(c, 0)?, ev.child(id, 0), t)?;
            let b = ev.eval_scalar(arg(c, 1)?, ev.child(id, 1), t)?;
            let v = if a.is_nan() || b.is_nan() {
                f64::NAN
            } else if name == "min_of" {
                a.min(b)
            } else {
                a.max(b)
            };
            return Ok(Val::Scalar(v));
        }
        "vector" => {
            let v = ev.eval_scalar(arg(c, 0)?, ev.child(id, 0), t)?;
            return Ok(Val::Vector(vec![Elem {
                labels: Labels::empty().into(),
                t,
                v,
                drop_name: false,
            }]));
        }
        "scalar" => {
            let v = ev.eval_vector(arg(c, 0)?, ev.child(id, 0), t)?;
            return Ok(Val::Scalar(if v.len() == 1 { v[0].v } else { f64::NAN }));
        }
        _ => {}
    }

    // Simple math over an instant vector.
    let simple: Option<fn(f64) -> f64> = match name {
        "abs" => Some(f64::abs),
        "ceil" => Some(f64::ceil),
        "floor" => Some(f64::floor),
        "exp" => Some(f64::exp),
        "ln" => Some(f64::ln),
        "log2" => Some(f64::log2),
        "log10" => Some(f64::log10),
        "sqrt" => Some(f64::sqrt),
        "sin" => Some(f64::sin),
        "cos" => Some(f64::cos),
        "tan" => Some(f64::tan),
        "asin" => Some(f64::asin),
        "acos" => Some(f64::acos),
        "atan" => Some(f64::atan),
        "sinh" => Some(f64::sinh),
        "cosh" => Some(f64::cosh),
        "tanh" => Some(f64::tanh),
        "asinh" => Some(f64::asinh),
        "acosh" => Some(f64::acosh),
        "atanh" => Some(f64::atanh),
        "deg" => Some(|v: f64| v * 180.0 / std::f64::consts::PI),
        "rad" => Some(|v: f64| v * std::f64::consts::PI / 180.0),
        "sgn" => Some(|v: f64| {
            if v > 0.0 {
                1.0
            } else if v < 0.0 {
                -1.0
            } else {
                v
            }
        }),
        _ => None,
    };
    if let Some(f) = simple {
        let v = ev.eval_vector(arg(c, 0)?, ev.child(id, 0), t)?;
        return Ok(map_vector(v, t, f));
    }

    match name {
        "round" => {
            let v = ev.eval_vector(arg(c, 0)?, ev.child(id, 0), t)?;
            let to = if nargs > 1 {
                ev.eval_scalar(arg(c, 1)?, ev.child(id, 1), t)?
            } else {
                1.0
            };
            let inv = 1.0 / to;
            Ok(map_vector(v, t, move |x| (x * inv + 0.5).floor() / inv))
        }
        "clamp" => {
            let v = ev.eval_vector(arg(c, 0)?, ev.child(id, 0), t)?;
            let min = ev.eval_scalar(arg(c, 1)?, ev.child(id, 1), t)?;
            let max = ev.eval_scalar(arg(c, 2)?, ev.child(id, 2), t)?;
            if max < min {
                return Ok(Val::Vector(Vec::new()));
            }
            Ok(map_vector(v, t, move |x| x.max(min).min(max)))
        }
        "clamp_min" => {
            let v = ev.eval_vector(arg(c, 0)?, ev.child(id, 0), t)?;
            let min = ev.eval_scalar(arg(c, 1)?, ev.child(id, 1), t)?;
            Ok(map_vector(v, t, move |x| x.max(min)))
        }
        "clamp_max" => {
            let v = ev.eval_vector(arg(c, 0)?, ev.child(id, 0), t)?;
            let max = ev.eval_scalar(arg(c, 1)?, ev.child(id, 1), t)?;
            Ok(map_vector(v, t, move |x| x.min(max)))
        }
        "timestamp" => {
            let v = ev.eval_vector(arg(c, 0)?, ev.child(id, 0), t)?;
            Ok(Val::Vector(
                v.into_iter()
                    .map(|mut e| {
                        e.v = e.t as f64 / 1000.0;
                        e.t = t;
                        e.drop_name = true;
                        e
                    })
                    .collect(),
            ))
        }
        "year" | "month" | "day_of_month" | "day_of_week" | "day_of_year" | "days_in_month"
        | "hour" | "minute" => {
            let v = if nargs == 0 {
                vec![Elem {
                    labels: Labels::empty().into(),
                    t,
                    v: t as f64 / 1000.0,
                    drop_name: false,
                }]
            } else {
                ev.eval_vector(arg(c, 0)?, ev.child(id, 0), t)?
            };
            Ok(map_vector(v, t, |x| date_part(name, x)))
        }
        "label_replace" => {
            let v = ev.eval_vector(arg(c, 0)?, ev.child(id, 0), t)?;
            let dst = ev.eval_string(arg(c, 1)?, ev.child(id, 1), t)?;
            let repl = ev.eval_string(arg(c, 2)?, ev.child(id, 2), t)?;
            let src = ev.eval_string(arg(c, 3)?, ev.child(id, 3), t)?;
            let re_s = ev.eval_string(arg(c, 4)?, ev.child(id, 4), t)?;
            let re = Regex::new(&format!("^(?s:{re_s})$")).map_err(|e| {
                exec_err(format!(
                    "invalid regular expression in label_replace(): {re_s}: {e}"
                ))
            })?;
            if !ev.valid_label_name(&dst) {
                return Err(exec_err(format!(
                    "invalid destination label name in label_replace(): {dst}"
                )));
            }
            let mut out = Vec::with_capacity(v.len());
            for mut e in v {
                let sv = e.labels.get(&src).unwrap_or("").to_string();
                if let Some(caps) = re.captures(&sv) {
                    let mut res = String::new();
                    caps.expand(&repl, &mut res);
                    let mut b = e.labels.builder();
                    b.set(&dst, &res);
                    e.labels = b.build().into();
                    if dst == METRIC_NAME {
                        e.drop_name = false;
                    }
                }
                e.t = t;
                out.push(e);
            }
            check_unique(&out)?;
            Ok(Val::Vector(out))
        }
        "label_join" => {
            let v = ev.eval_vector(arg(c, 0)?, ev.child(id, 0), t)?;
            let dst = ev.eval_string(arg(c, 1)?, ev.child(id, 1), t)?;
            let sep = ev.eval_string(arg(c, 2)?, ev.child(id, 2), t)?;
            let mut srcs = Vec::new();
            for i in 3..nargs {
                srcs.push(ev.eval_string(arg(c, i)?, ev.child(id, i), t)?);
            }
            if !ev.valid_label_name(&dst) {
                return Err(exec_err(format!(
                    "invalid destination label name in label_join(): {dst}"
                )));
            }
            let mut out = Vec::with_capacity(v.len());
            for mut e in v {
                let joined: Vec<&str> =
                    srcs.iter().map(|s| e.labels.get(s).unwrap_or("")).collect();
                let joined = joined.join(&sep);
                let mut b = e.labels.builder();
                b.set(&dst, &joined);
                e.labels = b.build().into();
                if dst == METRIC_NAME {
                    e.drop_name = false;
                }
                e.t = t;
                out.push(e);
            }
            check_unique(&out)?;
            Ok(Val::Vector(out))
        }
        "sort" | "sort_desc" => {
            if ev.step > 0 {
                ev.warn(format!(
                    "PromQL warning: sort is ineffective for range queries since results are always ordered by labels{}",
                    ev.pos(call_expr)
                ));
            }
            let mut v = ev.eval_vector(arg(c, 0)?, ev.child(id, 0), t)?;
            let desc = name == "sort_desc";
            v.sort_by(|a, b| {
                use std::cmp::Ordering;
                match (a.v.is_nan(), b.v.is_nan()) {
                    (true, true) => Ordering::Equal,
                    (true, false) => Ordering::Greater,
                    (false, true) => Ordering::Less,
                    _ => {
                        let o = a.v.partial_cmp(&b.v).unwrap_or(Ordering::Equal);
                        if desc {
                            o.reverse()
                        } else {
                            o
                        }
                    }
                }
            });
            Ok(Val::Vector(v))
        }
        "sort_by_label" | "sort_by_label_desc" => {
            if ev.step > 0 {
                ev.warn(format!(
                    "PromQL warning: sort is ineffective for range queries since results are always ordered by labels{}",
                    ev.pos(call_expr)
                ));
            }
            let mut v = ev.eval_vector(arg(c, 0)?, ev.child(id, 0), t)?;
            let mut labels = Vec::new();
            for i in 1..nargs {
                labels.push(ev.eval_string(arg(c, i)?, ev.child(id, i), t)?);
            }
            let desc = name == "sort_by_label_desc";
            v.sort_by(|a, b| {
                for l in &labels {
                    let av = a.labels.get(l).unwrap_or("");
                    let bv = b.labels.get(l).unwrap_or("");
                    if av == bv {
                        continue;
                    }
                    let o = natural_less(av, bv);
                    return if desc { o.reverse() } else { o };
                }
                let o = a.labels.cmp(&b.labels);
                if desc {
                    o.reverse()
                } else {
                    o
                }
            });
            Ok(Val::Vector(v))
        }
        "absent" => {
            let e = arg(c, 0)?;
            let v = ev.eval_vector(e, ev.child(id, 0), t)?;
            if !v.is_empty() {
                return Ok(Val::Vector(Vec::new()));
            }
            Ok(Val::Vector(vec![Elem {
                labels: absent_labels(e).into(),
                t,
                v: 1.0,
                drop_name: false,
            }]))
        }
        "absent_over_time" => {
            let e = arg(c, 0)?;
            let m = ev.eval_matrix(e, ev.child(id, 0), t)?;
            if !m.series.is_empty() {
                return Ok(Val::Vector(Vec::new()));
            }
            let labels = match e {
                Expr::Subquery(_) => Labels::empty(),
                _ => absent_labels(e),
            };
            Ok(Val::Vector(vec![Elem {
                labels: labels.into(),
                t,
                v: 1.0,
                drop_name: false,
            }]))
        }
        "histogram_quantile" => {
            let q = ev.eval_scalar(arg(c, 0)?, ev.child(id, 0), t)?;
            let v = ev.eval_vector(arg(c, 1)?, ev.child(id, 1), t)?;
            let pos = (ev.pos(arg(c, 0)?), ev.pos(arg(c, 1)?));
            histogram_quantiles(ev, &[q], None, v, t, pos)
        }
        "histogram_quantiles" => {
            let v = ev.eval_vector(arg(c, 0)?, ev.child(id, 0), t)?;
            let label = ev.eval_string(arg(c, 1)?, ev.child(id, 1), t)?;
            let mut qs = Vec::new();
            for i in 2..nargs {
                qs.push(ev.eval_scalar(arg(c, i)?, ev.child(id, i), t)?);
            }
            let qpos = if nargs > 2 {
                ev.pos(arg(c, 2)?)
            } else {
                String::new()
            };
            let pos = (qpos, ev.pos(arg(c, 0)?));
            histogram_quantiles(ev, &qs, Some(&label), v, t, pos)
        }
        "histogram_fraction" => {
            let lower = ev.eval_scalar(arg(c, 0)?, ev.child(id, 0), t)?;
            let upper = ev.eval_scalar(arg(c, 1)?, ev.child(id, 1), t)?;
            let v = ev.eval_vector(arg(c, 2)?, ev.child(id, 2), t)?;
            let pos = ev.pos(arg(c, 2)?);
            histogram_fraction(ev, lower, upper, v, t, &pos)
        }
        "histogram_count" | "histogram_sum" | "histogram_avg" | "histogram_stddev"
        | "histogram_stdvar" => {
            // Native histograms only; float samples are ignored.
            let _ = ev.eval_vector(arg(c, 0)?, ev.child(id, 0), t)?;
            Ok(Val::Vector(Vec::new()))
        }
        "info" => eval_info(ev, c, id, t),
        _ => eval_range_fn(ev, c, id, t),
    }
}

/// `info(v, {selector})`: adds data labels of info series (default
/// `target_info`) joined on the identifying labels `instance` and `job`.
fn eval_info(ev: &Evaluator, c: &Call, id: NodeId, t: i64) -> Result<Val> {
    use promql_parser::label::MatchOp as P;
    const IDENT: [&str; 2] = ["instance", "job"];
    let base = ev.eval_vector(arg(c, 0)?, ev.child(id, 0), t)?;
    let it = info_time(arg(c, 0)?, t, ev.start, ev.end);
    let (infos, name_ms, data_ms) = match c.args.args.get(1).map(|b| b.as_ref()) {
        Some(Expr::VectorSelector(vs)) => {
            let mut infos = ev.select_instant(vs, ev.child(id, 1), it)?;
            let groups = selector_matchers(vs)?;
            let all: Vec<cairn_common::Matcher> = groups.into_iter().flatten().collect();
            let (name_ms, data_ms): (Vec<_>, Vec<_>) =
                all.into_iter().partition(|m| m.name == METRIC_NAME);
            let name_ms = if name_ms.is_empty() {
                vec![cairn_common::Matcher::equal(METRIC_NAME, "target_info")]
            } else {
                name_ms
            };
            infos.retain(|e| {
                name_ms
                    .iter()
                    .all(|m| m.matches(e.labels.metric_name().unwrap_or("")))
            });
            let _ = P::Equal;
            (infos, name_ms, data_ms)
        }
        Some(_) => {
            return Err(exec_err(
                "info(): second argument must be a vector selector",
            ))
        }
        None => (
            ev.instant_from(id, it)?,
            vec![cairn_common::Matcher::equal(METRIC_NAME, "target_info")],
            Vec::new(),
        ),
    };
    let has_positive_name = name_ms.iter().any(|m| {
        matches!(
            m.op,
            cairn_common::MatchOp::Equal | cairn_common::MatchOp::RegexMatch
        )
    });
    let data_names: Vec<&str> = data_ms.iter().map(|m| m.name.as_str()).collect();
    let accepts_empty = data_ms.iter().all(|m| m.matches_empty());
    let mut out = Vec::with_capacity(base.len());
    for mut e in base {
        let name = e.labels.metric_name().unwrap_or("");
        if has_positive_name && name_ms.iter().all(|m| m.matches(name)) {
            e.t = t;
            out.push(e);
            continue;
        }
        let matched: Vec<&Elem> = infos
            .iter()
            .filter(|i| {
                IDENT
                    .iter()
                    .all(|l| i.labels.get(l).unwrap_or("") == e.labels.get(l).unwrap_or(""))
            })
            .collect();
        if matched.is_empty() {
            if accepts_empty {
                e.t = t;
                out.push(e);
            }
            continue;
        }
        let mut b = e.labels.builder();
        for i in matched {
            for lb in i.labels.iter() {
                if lb.name == METRIC_NAME
                    || IDENT.contains(&lb.name.as_str())
                    || e.labels.get(&lb.name).is_some()
                    || (!data_names.is_empty() && !data_names.contains(&lb.name.as_str()))
                {
                    continue;
                }
                b.set(&lb.name, &lb.value);
            }
        }
        e.labels = b.build().into();
        e.t = t;
        out.push(e);
    }
    Ok(Val::Vector(out))
}

fn check_unique(v: &[Elem]) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    for e in v {
        let l = if e.drop_name {
            e.labels.without_metric_name()
        } else {
            (*e.labels).clone()
        };
        if !seen.insert(l) {
            return Err(exec_err(
                "vector cannot contain metrics with the same labelset",
            ));
        }
    }
    Ok(())
}

fn eval_range_fn(ev: &Evaluator, c: &Call, id: NodeId, t: i64) -> Result<Val> {
    let name = c.func.name;
    if let Some(rf) = RangeFn::from_name(name) {
        let a = arg(c, 0)?;
        let keep = rf.keeps_name();
        let note = |n: &str| note_not_counter(ev, n, a);
        if let Expr::MatrixSelector(ms) = a {
            // Fast path: windows slide over the fetched samples; nothing is
            // copied and labels are shared.
            let vs = &ms.vs;
            let te = ev.at_time(&vs.at).unwrap_or(t) - offset_ms(&vs.offset);
            let range = ms.range.as_millis() as i64;
            let mut out = Vec::new();
            let mut odd: Vec<String> = Vec::new();
            ev.for_each_window(ms, ev.child(id, 0), t, |sd, w| {
                note_later(&mut odd, rf, sd);
                if let Some(v) = rf.apply_known(w, te, range, sd.may_reset) {
                    out.push(Elem {
                        labels: sd.labels.clone(),
                        t,
                        v,
                        drop_name: !keep,
                    });
                }
            })?;
            for n in &odd {
                note(n);
            }
            return Ok(Val::Vector(out));
        }
        let m = ev.eval_matrix(a, ev.child(id, 0), t)?;
        if rf.is_counter_fn() {
            for s in &m.series {
                let n = metric_name_of(s);
                if !s.samples.is_empty() && not_counter_name(&n) {
                    note(&n);
                }
            }
        }
        return Ok(over_time(m, t, keep, |m, s| {
            rf.apply(&s.samples, m.range_end, m.range_ms)
        }));
    }
    match name {
        "predict_linear" => {
            let m = ev.eval_matrix(arg(c, 0)?, ev.child(id, 0), t)?;
            let d = ev.eval_scalar(arg(c, 1)?, ev.child(id, 1), t)?;
            Ok(over_time(m, t, false, |_, s| {
                if s.samples.len() < 2 {
                    return None;
                }
                let (slope, intercept) = linear_regression(&s.samples, t);
                Some(slope * d + intercept)
            }))
        }
        "quantile_over_time" => {
            let q = ev.eval_scalar(arg(c, 0)?, ev.child(id, 0), t)?;
            let m = ev.eval_matrix(arg(c, 1)?, ev.child(id, 1), t)?;
            if !(0.0..=1.0).contains(&q) {
                ev.warn(format!(
                    "PromQL warning: quantile value should be between 0 and 1, got {}{}",
                    format_go_float(q),
                    ev.pos(arg(c, 0)?)
                ));
            }
            Ok(over_time(m, t, false, |_, s| {
                let mut vals: Vec<f64> = s.samples.iter().map(|x| x.v).collect();
                Some(quantile(q, &mut vals))
            }))
        }
        "mad_over_time" => {
            let m = ev.eval_matrix(arg(c, 0)?, ev.child(id, 0), t)?;
            Ok(over_time(m, t, false, |_, s| {
                let mut vals: Vec<f64> = s.samples.iter().map(|x| x.v).collect();
                if vals.iter().any(|v| v.is_nan()) {
                    return Some(f64::NAN);
                }
                let med = quantile(0.5, &mut vals);
                let mut dev: Vec<f64> = vals.iter().map(|v| (v - med).abs()).collect();
                Some(quantile(0.5, &mut dev))
            }))
        }
        "double_exponential_smoothing" | "holt_winters" => {
            let m = ev.eval_matrix(arg(c, 0)?, ev.child(id, 0), t)?;
            let sf = ev.eval_scalar(arg(c, 1)?, ev.child(id, 1), t)?;
            let tf = ev.eval_scalar(arg(c, 2)?, ev.child(id, 2), t)?;
            if sf <= 0.0 || sf >= 1.0 {
                return Err(exec_err(format!(
                    "invalid smoothing factor. Expected: 0 < sf < 1, got: {}",
                    format_go_float(sf)
                )));
            }
            if tf <= 0.0 || tf >= 1.0 {
                return Err(exec_err(format!(
                    "invalid trend factor. Expected: 0 < tf < 1, got: {}",
                    format_go_float(tf)
                )));
            }
            Ok(over_time(m, t, false, |_, s| {
                let n = s.samples.len();
                if n < 2 {
                    return None;
                }
                let (mut s0, mut s1) = (0.0, s.samples[0].v);
                let mut b = s.samples[1].v - s.samples[0].v;
                for i in 1..n {
                    let x = sf * s.samples[i].v;
                    if i > 1 {
                        b = tf * (s1 - s0) + (1.0 - tf) * b;
                    }
                    let y = (1.0 - sf) * (s1 + b);
                    s0 = s1;
                    s1 = x + y;
                }
                Some(s1)
            }))
        }
        other => Err(exec_err(format!("function {other:?} is not supported"))),
    }
}

type BucketGroups = Vec<(Labels, Vec<Bucket>)>;

fn group_buckets(ev: &Evaluator, v: Vec<Elem>, pos: &str) -> BucketGroups {
    let mut groups: BucketGroups = Vec::new();
    let mut index: std::collections::HashMap<Labels, usize> = std::collections::HashMap::new();
    for e in v {
        let name = e.labels.metric_name().unwrap_or("").to_string();
        let Some(upper) = e.labels.get("le").and_then(parse_le) else {
            ev.warn(format!(
                "PromQL warning: bucket label \"le\" is missing or has a malformed value of {:?} for metric name {:?}{pos}",
                e.labels.get("le").unwrap_or(""),
                name
            ));
            continue;
        };
        let key = e.labels.without(&["le"]);
        let gi = match index.get(&key) {
            Some(&i) => i,
            None => {
                index.insert(key.clone(), groups.len());
                groups.push((key, Vec::new()));
                groups.len() - 1
            }
        };
        groups[gi].1.push(Bucket { upper, count: e.v });
    }
    groups
}

fn histogram_quantiles(
    ev: &Evaluator,
    qs: &[f64],
    label: Option<&str>,
    v: Vec<Elem>,
    t: i64,
    (qpos, vpos): (String, String),
) -> Result<Val> {
    for q in qs {
        if !(0.0..=1.0).contains(q) {
            ev.warn(format!(
                "PromQL warning: quantile value should be between 0 and 1, got {}{qpos}",
                format_go_float(*q)
            ));
        }
    }
    let names: Vec<String> = v
        .iter()
        .map(|e| e.labels.metric_name().unwrap_or("").to_string())
        .collect();
    let groups = group_buckets(ev, v, &vpos);
    let mut out = Vec::new();
    for (labels, buckets) in groups {
        for &q in qs {
            let mut bs: Vec<Bucket> = buckets
                .iter()
                .map(|b| Bucket {
                    upper: b.upper,
                    count: b.count,
                })
                .collect();
            let (val, forced, _fixed) = bucket_quantile(q, &mut bs);
            if forced {
                let n = names.first().cloned().unwrap_or_default();
                ev.info(format!(
                    "PromQL info: input to histogram_quantile needed to be fixed for monotonicity (see https://prometheus.io/docs/prometheus/latest/querying/functions/#histogram_quantile) for metric name {n:?}{vpos}"
                ));
            }
            let labels = match label {
                Some(l) => {
                    let mut b = labels.builder();
                    b.set(l, &format_quantile_label(q));
                    b.build()
                }
                None => labels.clone(),
            };
            out.push(Elem {
                labels: labels.into(),
                t,
                v: val,
                drop_name: true,
            });
        }
    }
    check_unique(&out)?;
    Ok(Val::Vector(out))
}

fn histogram_fraction(
    ev: &Evaluator,
    lower: f64,
    upper: f64,
    v: Vec<Elem>,
    t: i64,
    pos: &str,
) -> Result<Val> {
    let groups = group_buckets(ev, v, pos);
    let mut out = Vec::new();
    for (labels, mut buckets) in groups {
        buckets.sort_by(|a, b| {
            a.upper
                .partial_cmp(&b.upper)
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        let val = bucket_fraction(lower, upper, &buckets);
        out.push(Elem {
            labels: labels.into(),
            t,
            v: val,
            drop_name: true,
        });
    }
    Ok(Val::Vector(out))
}
