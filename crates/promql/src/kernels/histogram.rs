//! Classic-histogram kernels: bucket quantiles and fractions.

use super::float::{almost_equal, format_go_float};

pub(crate) struct Bucket {
    pub upper: f64,
    pub count: f64,
}

/// Prometheus's `BucketQuantile`: (value, forced monotonicity, fixed precision).
pub(crate) fn bucket_quantile(q: f64, buckets: &mut Vec<Bucket>) -> (f64, bool, bool) {
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

pub(crate) fn parse_le(s: &str) -> Option<f64> {
    let s = s.trim();
    match s {
        "+Inf" | "Inf" | "+inf" | "inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => s.parse::<f64>().ok(),
    }
}

/// Quantile label values as Prometheus prints them (`0.0`, `0.25`, `1.0`).
pub(crate) fn format_quantile_label(q: f64) -> String {
    let s = format_go_float(q);
    if q.is_finite() && !s.contains('.') && !s.contains('e') {
        format!("{s}.0")
    } else {
        s
    }
}

/// Prometheus's `BucketFraction` for classic histograms.
pub(crate) fn bucket_fraction(lower: f64, upper: f64, buckets: &[Bucket]) -> f64 {
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
