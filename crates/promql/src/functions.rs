//! PromQL functions.

use crate::eval::{exec_err, Elem, Evaluator, MatrixVal, Result, Series, Val};
use cairn_common::{Labels, Sample, METRIC_NAME};
use promql_parser::parser::{Call, Expr};
use regex::Regex;

/// Neumaier-improved Kahan summation step, as Prometheus's `kahanSumInc`.
pub(crate) fn kahan_inc(inc: f64, sum: f64, c: f64) -> (f64, f64) {
    let t = sum + inc;
    let c = if t.is_infinite() {
        0.0
    } else if sum.abs() >= inc.abs() {
        c + ((sum - t) + inc)
    } else {
        c + ((inc - t) + sum)
    };
    (t, c)
}

/// Go's `strconv.FormatFloat(v, 'f', -1, 64)` for the values PromQL prints.
pub(crate) fn format_go_float(v: f64) -> String {
    cairn_common::gofmt::format_f(v)
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

/// Civil date from days since the Unix epoch (proleptic Gregorian).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ => {
            if is_leap(y) {
                29
            } else {
                28
            }
        }
    }
}

fn date_part(name: &str, secs: f64) -> f64 {
    if secs.is_nan() || secs.is_infinite() {
        return f64::NAN;
    }
    let s = secs as i64;
    let days = s.div_euclid(86_400);
    let sod = s.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    match name {
        "year" => y as f64,
        "month" => m as f64,
        "day_of_month" => d as f64,
        "day_of_week" => ((days + 4).rem_euclid(7)) as f64,
        "day_of_year" => {
            let mut doy = d;
            for mm in 1..m {
                doy += days_in_month(y, mm);
            }
            doy as f64
        }
        "days_in_month" => days_in_month(y, m) as f64,
        "hour" => (sod / 3600) as f64,
        "minute" => ((sod % 3600) / 60) as f64,
        _ => f64::NAN,
    }
}

fn linear_regression(samples: &[Sample], intercept_time: i64) -> (f64, f64) {
    let mut n = 0.0;
    let (mut sum_x, mut c_x) = (0.0, 0.0);
    let (mut sum_y, mut c_y) = (0.0, 0.0);
    let (mut sum_xy, mut c_xy) = (0.0, 0.0);
    let (mut sum_x2, mut c_x2) = (0.0, 0.0);
    let init_y = samples[0].v;
    let mut const_y = true;
    for (i, s) in samples.iter().enumerate() {
        if const_y && i > 0 && s.v != init_y {
            const_y = false;
        }
        n += 1.0;
        let x = (s.t - intercept_time) as f64 / 1e3;
        (sum_x, c_x) = kahan_inc(x, sum_x, c_x);
        (sum_y, c_y) = kahan_inc(s.v, sum_y, c_y);
        (sum_xy, c_xy) = kahan_inc(x * s.v, sum_xy, c_xy);
        (sum_x2, c_x2) = kahan_inc(x * x, sum_x2, c_x2);
    }
    if const_y {
        if init_y.is_infinite() {
            return (f64::NAN, f64::NAN);
        }
        return (0.0, init_y);
    }
    sum_x += c_x;
    sum_y += c_y;
    sum_xy += c_xy;
    sum_x2 += c_x2;
    let cov_xy = sum_xy - sum_x * sum_y / n;
    let var_x = sum_x2 - sum_x * sum_x / n;
    let slope = cov_xy / var_x;
    let intercept = sum_y / n - slope * sum_x / n;
    (slope, intercept)
}

fn extrapolated_rate(
    samples: &[Sample],
    range_end: i64,
    range_ms: i64,
    may_reset: bool,
    is_counter: bool,
    is_rate: bool,
) -> Option<f64> {
    if samples.len() < 2 {
        return None;
    }
    let range_start = range_end - range_ms;
    let n1 = samples.len() - 1;
    let first_t = samples[0].t;
    let last_t = samples[n1].t;
    let mut result = samples[n1].v - samples[0].v;
    if is_counter && may_reset {
        let mut prev = samples[0].v;
        for c in &samples[1..] {
            if c.v < prev {
                result += prev;
            }
            prev = c.v;
        }
    }
    let mut duration_to_start = (first_t - range_start) as f64 / 1000.0;
    let mut duration_to_end = (range_end - last_t) as f64 / 1000.0;
    let sampled_interval = (last_t - first_t) as f64 / 1000.0;
    let avg_between = sampled_interval / n1 as f64;
    let threshold = avg_between * 1.1;
    let mut extrapolate_to = sampled_interval;
    if duration_to_start >= threshold {
        duration_to_start = avg_between / 2.0;
    }
    if is_counter && result > 0.0 && samples[0].v >= 0.0 {
        let duration_to_zero = sampled_interval * (samples[0].v / result);
        if duration_to_zero < duration_to_start {
            duration_to_start = duration_to_zero;
        }
    }
    extrapolate_to += duration_to_start;
    if duration_to_end >= threshold {
        duration_to_end = avg_between / 2.0;
    }
    extrapolate_to += duration_to_end;
    let mut factor = extrapolate_to / sampled_interval;
    if is_rate {
        factor /= range_ms as f64 / 1000.0;
    }
    Some(result * factor)
}

fn instant_value(s: &[Sample], is_rate: bool) -> Option<f64> {
    let n = s.len();
    if n < 2 {
        return None;
    }
    let last = s[n - 1];
    let prev = s[n - 2];
    let interval = last.t - prev.t;
    if interval == 0 {
        return None;
    }
    let mut r = last.v;
    if !is_rate || (last.v >= prev.v) || last.v.is_nan() || prev.v.is_nan() {
        r = last.v - prev.v;
    }
    if is_rate {
        r /= interval as f64 / 1000.0;
    }
    Some(r)
}

fn avg_of(vals: impl Iterator<Item = f64>) -> f64 {
    let (mut sum, mut c, mut mean, mut count) = (0.0, 0.0, 0.0, 0.0);
    let mut incremental = false;
    for v in vals {
        count += 1.0;
        if count == 1.0 {
            sum = v;
            continue;
        }
        if !incremental {
            let (s, cc) = kahan_inc(v, sum, c);
            if !s.is_infinite() {
                sum = s;
                c = cc;
                continue;
            }
            incremental = true;
            mean = sum / (count - 1.0);
            c /= count - 1.0;
        }
        if mean.is_infinite() {
            if v.is_infinite() && (mean > 0.0) == (v > 0.0) {
                continue;
            }
            if !v.is_infinite() && !v.is_nan() {
                continue;
            }
        }
        let q = (count - 1.0) / count;
        let (m, cc) = kahan_inc(v / count, q * mean, q * c);
        mean = m;
        c = cc;
    }
    if incremental {
        mean + c
    } else {
        (sum + c) / count
    }
}

fn variance(vals: &[Sample]) -> f64 {
    let (mut count, mut mean, mut c_mean, mut aux, mut c_aux) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for s in vals {
        count += 1.0;
        let delta = s.v - (mean + c_mean);
        (mean, c_mean) = kahan_inc(delta / count, mean, c_mean);
        (aux, c_aux) = kahan_inc(delta * (s.v - (mean + c_mean)), aux, c_aux);
    }
    (aux + c_aux) / count
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

pub(crate) fn eval_call(ev: &Evaluator, c: &Call, t: i64) -> Result<Val> {
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
            let a = ev.eval_scalar(arg(c, 0)?, t)?;
            let b = ev.eval_scalar(arg(c, 1)?, t)?;
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
            let v = ev.eval_scalar(arg(c, 0)?, t)?;
            return Ok(Val::Vector(vec![Elem {
                labels: Labels::empty().into(),
                t,
                v,
                drop_name: false,
            }]));
        }
        "scalar" => {
            let v = ev.eval_vector(arg(c, 0)?, t)?;
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
        let v = ev.eval_vector(arg(c, 0)?, t)?;
        return Ok(map_vector(v, t, f));
    }

    match name {
        "round" => {
            let v = ev.eval_vector(arg(c, 0)?, t)?;
            let to = if nargs > 1 {
                ev.eval_scalar(arg(c, 1)?, t)?
            } else {
                1.0
            };
            let inv = 1.0 / to;
            Ok(map_vector(v, t, move |x| (x * inv + 0.5).floor() / inv))
        }
        "clamp" => {
            let v = ev.eval_vector(arg(c, 0)?, t)?;
            let min = ev.eval_scalar(arg(c, 1)?, t)?;
            let max = ev.eval_scalar(arg(c, 2)?, t)?;
            if max < min {
                return Ok(Val::Vector(Vec::new()));
            }
            Ok(map_vector(v, t, move |x| x.max(min).min(max)))
        }
        "clamp_min" => {
            let v = ev.eval_vector(arg(c, 0)?, t)?;
            let min = ev.eval_scalar(arg(c, 1)?, t)?;
            Ok(map_vector(v, t, move |x| x.max(min)))
        }
        "clamp_max" => {
            let v = ev.eval_vector(arg(c, 0)?, t)?;
            let max = ev.eval_scalar(arg(c, 1)?, t)?;
            Ok(map_vector(v, t, move |x| x.min(max)))
        }
        "timestamp" => {
            let v = ev.eval_vector(arg(c, 0)?, t)?;
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
                ev.eval_vector(arg(c, 0)?, t)?
            };
            Ok(map_vector(v, t, |x| date_part(name, x)))
        }
        "label_replace" => {
            let v = ev.eval_vector(arg(c, 0)?, t)?;
            let dst = ev.eval_string(arg(c, 1)?, t)?;
            let repl = ev.eval_string(arg(c, 2)?, t)?;
            let src = ev.eval_string(arg(c, 3)?, t)?;
            let re_s = ev.eval_string(arg(c, 4)?, t)?;
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
            let v = ev.eval_vector(arg(c, 0)?, t)?;
            let dst = ev.eval_string(arg(c, 1)?, t)?;
            let sep = ev.eval_string(arg(c, 2)?, t)?;
            let mut srcs = Vec::new();
            for i in 3..nargs {
                srcs.push(ev.eval_string(arg(c, i)?, t)?);
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
            let mut v = ev.eval_vector(arg(c, 0)?, t)?;
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
            let mut v = ev.eval_vector(arg(c, 0)?, t)?;
            let mut labels = Vec::new();
            for i in 1..nargs {
                labels.push(ev.eval_string(arg(c, i)?, t)?);
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
            let v = ev.eval_vector(e, t)?;
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
            let m = ev.eval_matrix(e, t)?;
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
            let q = ev.eval_scalar(arg(c, 0)?, t)?;
            let v = ev.eval_vector(arg(c, 1)?, t)?;
            let pos = (ev.pos(arg(c, 0)?), ev.pos(arg(c, 1)?));
            crate::functions::histogram_quantiles(ev, &[q], None, v, t, pos)
        }
        "histogram_quantiles" => {
            let v = ev.eval_vector(arg(c, 0)?, t)?;
            let label = ev.eval_string(arg(c, 1)?, t)?;
            let mut qs = Vec::new();
            for i in 2..nargs {
                qs.push(ev.eval_scalar(arg(c, i)?, t)?);
            }
            let qpos = if nargs > 2 {
                ev.pos(arg(c, 2)?)
            } else {
                String::new()
            };
            let pos = (qpos, ev.pos(arg(c, 0)?));
            crate::functions::histogram_quantiles(ev, &qs, Some(&label), v, t, pos)
        }
        "histogram_fraction" => {
            let lower = ev.eval_scalar(arg(c, 0)?, t)?;
            let upper = ev.eval_scalar(arg(c, 1)?, t)?;
            let v = ev.eval_vector(arg(c, 2)?, t)?;
            let pos = ev.pos(arg(c, 2)?);
            histogram_fraction(ev, lower, upper, v, t, &pos)
        }
        "histogram_count" | "histogram_sum" | "histogram_avg" | "histogram_stddev"
        | "histogram_stdvar" => {
            // Native histograms only; float samples are ignored.
            let _ = ev.eval_vector(arg(c, 0)?, t)?;
            Ok(Val::Vector(Vec::new()))
        }
        "info" => eval_info(ev, c, t),
        _ => eval_range_fn(ev, c, t),
    }
}

/// `info(v, {selector})`: adds data labels of info series (default
/// `target_info`) joined on the identifying labels `instance` and `job`.
fn eval_info(ev: &Evaluator, c: &Call, t: i64) -> Result<Val> {
    use promql_parser::label::MatchOp as P;
    const IDENT: [&str; 2] = ["instance", "job"];
    let base = ev.eval_vector(arg(c, 0)?, t)?;
    let it = crate::eval::info_time(arg(c, 0)?, t, ev.start, ev.end);
    let (infos, name_ms, data_ms) = match c.args.args.get(1).map(|b| b.as_ref()) {
        Some(Expr::VectorSelector(vs)) => {
            let mut infos = ev.select_instant(vs, it)?;
            let groups = crate::eval::selector_matchers(vs)?;
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
            ev.instant_from_key(c as *const Call as usize, it)?,
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

/// Range functions of one range-vector argument: computed per series from
/// the window's samples alone, so they can run over borrowed windows.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum RangeFn {
    Rate,
    Increase,
    Delta,
    Irate,
    Idelta,
    Deriv,
    Resets,
    Changes,
    Avg,
    Sum,
    Count,
    Min,
    Max,
    Last,
    First,
    TsLast,
    TsFirst,
    TsMax,
    TsMin,
    Present,
    Stddev,
    Stdvar,
}

impl RangeFn {
    pub(crate) fn from_name(name: &str) -> Option<RangeFn> {
        use RangeFn::*;
        Some(match name {
            "rate" => Rate,
            "increase" => Increase,
            "delta" => Delta,
            "irate" => Irate,
            "idelta" => Idelta,
            "deriv" => Deriv,
            "resets" => Resets,
            "changes" => Changes,
            "avg_over_time" => Avg,
            "sum_over_time" => Sum,
            "count_over_time" => Count,
            "min_over_time" => Min,
            "max_over_time" => Max,
            "last_over_time" => Last,
            "first_over_time" => First,
            "ts_of_last_over_time" => TsLast,
            "ts_of_first_over_time" => TsFirst,
            "ts_of_max_over_time" => TsMax,
            "ts_of_min_over_time" => TsMin,
            "present_over_time" => Present,
            "stddev_over_time" => Stddev,
            "stdvar_over_time" => Stdvar,
            _ => return None,
        })
    }

    /// Whether the result keeps the metric name.
    pub(crate) fn keeps_name(self) -> bool {
        matches!(self, RangeFn::Last | RangeFn::First)
    }

    pub(crate) fn is_counter_fn(self) -> bool {
        matches!(self, RangeFn::Rate | RangeFn::Increase)
    }

    /// The value over a non-empty window `(range_end - range_ms, range_end]`.
    pub(crate) fn apply(self, s: &[Sample], range_end: i64, range_ms: i64) -> Option<f64> {
        self.apply_known(s, range_end, range_ms, true)
    }

    /// [`apply`](Self::apply), told whether the window may hold a counter
    /// reset (a value below its predecessor): when it cannot, `rate` and
    /// `increase` skip the scan for resets (same result).
    pub(crate) fn apply_known(
        self,
        s: &[Sample],
        range_end: i64,
        range_ms: i64,
        may_reset: bool,
    ) -> Option<f64> {
        use RangeFn::*;
        match self {
            Rate => extrapolated_rate(s, range_end, range_ms, may_reset, true, true),
            Increase => extrapolated_rate(s, range_end, range_ms, may_reset, true, false),
            Delta => extrapolated_rate(s, range_end, range_ms, false, false, false),
            Irate => instant_value(s, true),
            Idelta => instant_value(s, false),
            Deriv => {
                if s.len() < 2 {
                    return None;
                }
                Some(linear_regression(s, s[0].t).0)
            }
            Resets => {
                let mut n = 0.0;
                for w in s.windows(2) {
                    if w[1].v < w[0].v {
                        n += 1.0;
                    }
                }
                Some(n)
            }
            Changes => {
                let mut n = 0.0;
                for w in s.windows(2) {
                    if w[1].v != w[0].v && !(w[1].v.is_nan() && w[0].v.is_nan()) {
                        n += 1.0;
                    }
                }
                Some(n)
            }
            Avg => Some(avg_of(s.iter().map(|x| x.v))),
            Sum => {
                let (mut sum, mut c) = (0.0, 0.0);
                for x in s {
                    (sum, c) = kahan_inc(x.v, sum, c);
                }
                Some(if sum.is_infinite() { sum } else { sum + c })
            }
            Count => Some(s.len() as f64),
            Min | Max => {
                let is_max = self == Max;
                let mut r = s[0].v;
                for x in &s[1..] {
                    if (is_max && x.v > r) || (!is_max && x.v < r) || r.is_nan() {
                        r = x.v;
                    }
                }
                Some(r)
            }
            Last => s.last().map(|x| x.v),
            First => s.first().map(|x| x.v),
            TsLast => s.last().map(|x| x.t as f64 / 1000.0),
            TsFirst => s.first().map(|x| x.t as f64 / 1000.0),
            TsMax | TsMin => {
                let is_max = self == TsMax;
                let mut r = s[0].v;
                let mut ts = s[0].t;
                for x in &s[1..] {
                    if (is_max && x.v >= r) || (!is_max && x.v <= r) || r.is_nan() {
                        r = x.v;
                        ts = x.t;
                    }
                }
                Some(ts as f64 / 1000.0)
            }
            Present => Some(1.0),
            Stddev => Some(variance(s).sqrt()),
            Stdvar => Some(variance(s)),
        }
    }
}

use crate::eval::not_counter_name;

/// Adds `sd`'s metric name to `odd` (once) when `rf` is `rate`/`increase`
/// and the name does not look like a counter's: for
/// [`note_not_counter`] once the windows are done.
pub(crate) fn note_later(odd: &mut Vec<String>, rf: RangeFn, sd: &crate::eval::Fetched) {
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

fn eval_range_fn(ev: &Evaluator, c: &Call, t: i64) -> Result<Val> {
    let name = c.func.name;
    if let Some(rf) = RangeFn::from_name(name) {
        let a = arg(c, 0)?;
        let keep = rf.keeps_name();
        let note = |n: &str| note_not_counter(ev, n, a);
        if let Expr::MatrixSelector(ms) = a {
            // Fast path: windows slide over the fetched samples; nothing is
            // copied and labels are shared.
            let vs = &ms.vs;
            let te = ev.at_time(&vs.at).unwrap_or(t) - crate::eval::offset_ms(&vs.offset);
            let range = ms.range.as_millis() as i64;
            let mut out = Vec::new();
            let mut odd: Vec<String> = Vec::new();
            ev.for_each_window(ms, t, |sd, w| {
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
        let m = ev.eval_matrix(a, t)?;
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
            let m = ev.eval_matrix(arg(c, 0)?, t)?;
            let d = ev.eval_scalar(arg(c, 1)?, t)?;
            Ok(over_time(m, t, false, |_, s| {
                if s.samples.len() < 2 {
                    return None;
                }
                let (slope, intercept) = linear_regression(&s.samples, t);
                Some(slope * d + intercept)
            }))
        }
        "quantile_over_time" => {
            let q = ev.eval_scalar(arg(c, 0)?, t)?;
            let m = ev.eval_matrix(arg(c, 1)?, t)?;
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
            let m = ev.eval_matrix(arg(c, 0)?, t)?;
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
            let m = ev.eval_matrix(arg(c, 0)?, t)?;
            let sf = ev.eval_scalar(arg(c, 1)?, t)?;
            let tf = ev.eval_scalar(arg(c, 2)?, t)?;
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

struct Bucket {
    upper: f64,
    count: f64,
}

fn almost_equal(a: f64, b: f64, eps: f64) -> bool {
    const MIN_NORMAL: f64 = f64::MIN_POSITIVE;
    if a.is_nan() && b.is_nan() {
        return true;
    }
    if a == b {
        return true;
    }
    let abs_sum = a.abs() + b.abs();
    let diff = (a - b).abs();
    if a == 0.0 || b == 0.0 || abs_sum < MIN_NORMAL {
        return diff < eps * MIN_NORMAL;
    }
    diff / abs_sum.min(f64::MAX) < eps
}

pub(crate) fn float_almost_equal(a: f64, b: f64, eps: f64) -> bool {
    almost_equal(a, b, eps)
}

/// Prometheus's `BucketQuantile`: (value, forced monotonicity, fixed precision).
fn bucket_quantile(q: f64, buckets: &mut Vec<Bucket>) -> (f64, bool, bool) {
    if q.is_nan() {
        return (f64::NAN, false, false);
    }
    if q < 0.0 {
        return (f64::NEG_INFINITY, false, false);
    }
    if q > 1.0 {
        return (f64::INFINITY, false, false);
    }
    buckets.sort_by(|a, b| {
        a.upper
            .partial_cmp(&b.upper)
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    if buckets.is_empty() || buckets[buckets.len() - 1].upper != f64::INFINITY {
        return (f64::NAN, false, false);
    }
    // Coalesce buckets with the same upper bound.
    let mut merged: Vec<Bucket> = Vec::with_capacity(buckets.len());
    for b in buckets.drain(..) {
        match merged.last_mut() {
            Some(l) if l.upper == b.upper => l.count += b.count,
            _ => merged.push(b),
        }
    }
    *buckets = merged;
    let mut forced = false;
    let mut fixed = false;
    let mut prev = buckets[0].count;
    for b in buckets.iter_mut().skip(1) {
        let curr = b.count;
        if curr == prev {
            continue;
        }
        if almost_equal(prev, curr, 1e-12) {
            b.count = prev;
            fixed = true;
            continue;
        }
        if curr < prev {
            b.count = prev;
            forced = true;
            continue;
        }
        prev = curr;
    }
    if buckets.len() < 2 {
        return (f64::NAN, forced, fixed);
    }
    let observations = buckets[buckets.len() - 1].count;
    if observations == 0.0 {
        return (f64::NAN, forced, fixed);
    }
    let mut rank = q * observations;
    let n = buckets.len() - 1;
    let b = buckets[..n].partition_point(|x| x.count < rank);
    if b == n {
        return (buckets[n - 1].upper, forced, fixed);
    }
    if b == 0 && buckets[0].upper <= 0.0 {
        return (buckets[0].upper, forced, fixed);
    }
    let bucket_end = buckets[b].upper;
    let mut count = buckets[b].count;
    let mut bucket_start = 0.0;
    if b > 0 {
        bucket_start = buckets[b - 1].upper;
        count -= buckets[b - 1].count;
        rank -= buckets[b - 1].count;
    }
    (
        bucket_start + (bucket_end - bucket_start) * (rank / count),
        forced,
        fixed,
    )
}

fn parse_le(s: &str) -> Option<f64> {
    let s = s.trim();
    match s {
        "+Inf" | "Inf" | "+inf" | "inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => s.parse::<f64>().ok(),
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

/// Quantile label values as Prometheus prints them (`0.0`, `0.25`, `1.0`).
fn format_quantile_label(q: f64) -> String {
    let s = format_go_float(q);
    if q.is_finite() && !s.contains('.') && !s.contains('e') {
        format!("{s}.0")
    } else {
        s
    }
}

/// Prometheus's `BucketFraction` for classic histograms.
fn bucket_fraction(lower: f64, upper: f64, buckets: &[Bucket]) -> f64 {
    if buckets.is_empty() || buckets[buckets.len() - 1].upper != f64::INFINITY {
        return f64::NAN;
    }
    let mut merged: Vec<Bucket> = Vec::with_capacity(buckets.len());
    for b in buckets {
        match merged.last_mut() {
            Some(l) if l.upper == b.upper => l.count += b.count,
            _ => merged.push(Bucket {
                upper: b.upper,
                count: b.count,
            }),
        }
    }
    let count = merged[merged.len() - 1].count;
    if count == 0.0 || lower.is_nan() || upper.is_nan() {
        return f64::NAN;
    }
    if lower >= upper {
        return 0.0;
    }
    let (mut rank, mut lower_rank, mut upper_rank) = (0.0, 0.0, 0.0);
    let (mut lower_set, mut upper_set) = (false, false);
    for (i, b) in merged.iter().enumerate() {
        let lower_bound = if i > 0 {
            merged[i - 1].upper
        } else if b.upper > 0.0 {
            0.0
        } else {
            f64::NEG_INFINITY
        };
        let upper_bound = b.upper;
        let interp = |v: f64| -> f64 {
            // No interpolation within a bucket of infinite width: a value
            // inside it maps to the bucket's finite end.
            if upper_bound.is_infinite() {
                return rank;
            }
            if lower_bound.is_infinite() {
                return b.count;
            }
            rank + (b.count - rank) * (v - lower_bound) / (upper_bound - lower_bound)
        };
        if !lower_set && lower_bound >= lower {
            lower_rank = rank;
            lower_set = true;
        }
        if !upper_set && lower_bound >= upper {
            upper_rank = rank;
            upper_set = true;
        }
        if lower_set && upper_set {
            break;
        }
        if !lower_set && lower_bound < lower && upper_bound > lower {
            lower_rank = interp(lower);
            lower_set = true;
        }
        if !upper_set && lower_bound < upper && upper_bound > upper {
            upper_rank = interp(upper);
            upper_set = true;
        }
        if lower_set && upper_set {
            break;
        }
        rank = b.count;
    }
    if !lower_set || lower_rank > count {
        lower_rank = count;
    }
    if !upper_set || upper_rank > count {
        upper_rank = count;
    }
    (upper_rank - lower_rank) / count
}
