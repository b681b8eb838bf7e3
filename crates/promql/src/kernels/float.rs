//! Float kernels: Kahan summation, Go-compatible formatting, tolerant
//! comparison.

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

pub(crate) fn almost_equal(a: f64, b: f64, eps: f64) -> bool {
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

/// Prometheus's `almost.Equal`: whether `a` and `b` differ by less than
/// `eps` relative to their size (NaN equals NaN), as the engine compares
/// histogram buckets; the conformance runner compares answers with it.
pub fn float_almost_equal(a: f64, b: f64, eps: f64) -> bool {
    almost_equal(a, b, eps)
}
