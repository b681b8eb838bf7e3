//! Range-function kernels: `rate`, `deriv`, `*_over_time`, … over one
//! window of samples.

use super::float::kahan_inc;
use cairn_common::Sample;

/// The internal function the downsampling rewrite reads `resets` with
/// (not a PromQL name: the parser never yields it).
pub(crate) const ROLLUP_RESETS: &str = "__cairn_rollup_resets";

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
    /// `resets` over the `resets` rollup of a downsampled namespace (see
    /// [`ROLLUP_RESETS`]).
    RollupResets,
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
            ROLLUP_RESETS => RollupResets,
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
            RollupResets => {
                // Counts inside windows as they are; a reset across a window
                // edge, stored as −(p + 1) with `p` its older sample's time,
                // only when `p` is inside the range (as raw resets() needs
                // both samples of the pair).
                let start = (range_end - range_ms) as f64;
                let mut n = 0.0;
                for x in s {
                    if x.v >= 0.0 {
                        n += x.v;
                    } else if -x.v - 1.0 > start {
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

pub(crate) fn linear_regression(samples: &[Sample], intercept_time: i64) -> (f64, f64) {
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

pub(crate) fn extrapolated_rate(
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

pub(crate) fn instant_value(s: &[Sample], is_rate: bool) -> Option<f64> {
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

pub(crate) fn avg_of(vals: impl Iterator<Item = f64>) -> f64 {
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

pub(crate) fn variance(vals: &[Sample]) -> f64 {
    let (mut count, mut mean, mut c_mean, mut aux, mut c_aux) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for s in vals {
        count += 1.0;
        let delta = s.v - (mean + c_mean);
        (mean, c_mean) = kahan_inc(delta / count, mean, c_mean);
        (aux, c_aux) = kahan_inc(delta * (s.v - (mean + c_mean)), aux, c_aux);
    }
    (aux + c_aux) / count
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A window-edge reset (stored as −(p + 1)) counts only when its older
    /// sample `p` is inside `(end − range, end]`; counts inside windows
    /// always do.
    #[test]
    fn rollup_resets_count_an_edge_reset_when_both_samples_are_in_range() {
        let s = [
            Sample::new(59_999, 2.0),
            Sample::new(61_000, -(45_000.0) - 1.0),
            Sample::new(119_999, 1.0),
        ];
        let f = RangeFn::from_name(ROLLUP_RESETS).unwrap();
        // (0, 119999]: the older sample at 45 s is inside.
        assert_eq!(f.apply(&s, 119_999, 119_999), Some(4.0));
        // (59999, 119999]: it is not — as raw resets() over [60 s, 120 s).
        assert_eq!(f.apply(&s[1..], 119_999, 60_000), Some(1.0));
        // A range starting exactly at it excludes it (left-open).
        assert_eq!(f.apply(&s[1..], 119_999, 119_999 - 45_000), Some(1.0));
        assert_eq!(f.apply(&s[1..], 119_999, 119_999 - 44_999), Some(2.0));
    }
}
