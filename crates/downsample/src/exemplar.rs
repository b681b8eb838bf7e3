//! The exemplar that explains a window: the one at the window's p99 (the
//! smallest exemplar value at or above the p99 estimate) and the max, so a
//! point on a graph links to the trace behind it. Choices are total orders
//! over (value, timestamp, trace id, labels), so replicas and replays that
//! see the same exemplars pick the same one whatever order they arrived in.

use std::cmp::Ordering;

use cairn_common::{Exemplar, Timestamp};

/// The label that carries an exemplar's trace id (Grafana's default).
const TRACE_ID: &str = "trace_id";

/// One classic-histogram bucket over a window: its upper bound and the
/// increase of its cumulative count during the window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    pub le: f64,
    pub count: f64,
}

/// `histogram_quantile(q, …)` over classic buckets, as Prometheus computes
/// it: buckets sorted and same-bound buckets summed, counts forced monotonic,
/// linear interpolation inside the bucket holding rank `q × total` (from 0
/// for the first bucket when its bound is positive), the second-highest bound
/// when the rank falls in `+Inf`. NaN without a `+Inf` bucket, with fewer than
/// two buckets, or with no observations. (Prometheus's tolerance for tiny
/// float deltas between buckets is not reproduced.)
pub fn bucket_quantile(q: f64, buckets: &[Bucket]) -> f64 {
    if q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    let mut b: Vec<Bucket> = buckets.to_vec();
    b.sort_by(|x, y| x.le.total_cmp(&y.le));
    if b.last().is_none_or(|l| l.le != f64::INFINITY) {
        return f64::NAN;
    }
    b.dedup_by(|next, kept| {
        let same = next.le == kept.le;
        if same {
            kept.count += next.count;
        }
        same
    });
    let mut max = f64::NEG_INFINITY;
    for x in &mut b {
        max = max.max(x.count);
        x.count = max;
    }
    if b.len() < 2 {
        return f64::NAN;
    }
    let total = b[b.len() - 1].count;
    if total == 0.0 || total.is_nan() {
        return f64::NAN;
    }
    let mut rank = q * total;
    let i = b[..b.len() - 1].partition_point(|x| x.count < rank);
    if i == b.len() - 1 {
        return b[b.len() - 2].le;
    }
    if i == 0 && b[0].le <= 0.0 {
        return b[0].le;
    }
    let (mut start, end, mut count) = (0.0, b[i].le, b[i].count);
    if i > 0 {
        start = b[i - 1].le;
        count -= b[i - 1].count;
        rank -= b[i - 1].count;
    }
    start + (end - start) * (rank / count)
}

/// The total order used for every exemplar choice: value, then timestamp,
/// then trace id (absent first), then the whole label set.
pub fn compare_exemplars(a: &Exemplar, b: &Exemplar) -> Ordering {
    a.value
        .total_cmp(&b.value)
        .then(a.t.cmp(&b.t))
        .then_with(|| a.labels.get(TRACE_ID).cmp(&b.labels.get(TRACE_ID)))
        .then_with(|| a.labels.cmp(&b.labels))
}

/// What [`pick_exemplars`] chose for one window.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowExemplars {
    /// The window's p99 estimate from its buckets (NaN when it has none).
    pub p99: f64,
    /// The smallest exemplar at or above `p99`; `None` when no exemplar
    /// reaches it (the estimate interpolates, exemplars are sparse) or the
    /// estimate is NaN.
    pub at_p99: Option<Exemplar>,
    /// The greatest exemplar under [`compare_exemplars`].
    pub max: Option<Exemplar>,
}

/// Picks the p99 and max exemplars of the window `[start, start + R)` from
/// its bucket increases and the exemplars seen (those outside the window and
/// NaN values are ignored).
pub fn pick_exemplars(
    start: Timestamp,
    resolution_ms: i64,
    buckets: &[Bucket],
    exemplars: &[Exemplar],
) -> WindowExemplars {
    let p99 = bucket_quantile(0.99, buckets);
    let end = start.saturating_add(resolution_ms);
    let eligible = || {
        exemplars
            .iter()
            .filter(move |e| e.t >= start && e.t < end && !e.value.is_nan())
    };
    let at_p99 = eligible()
        .filter(|e| e.value >= p99)
        .min_by(|a, b| compare_exemplars(a, b))
        .cloned();
    let max = eligible().max_by(|a, b| compare_exemplars(a, b)).cloned();
    WindowExemplars { p99, at_p99, max }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_common::Labels;

    fn b(le: f64, count: f64) -> Bucket {
        Bucket { le, count }
    }

    fn ex(value: f64, t: i64, trace: &str) -> Exemplar {
        Exemplar {
            labels: Labels::from_pairs(&[("trace_id", trace)]),
            value,
            t,
        }
    }

    const INF: f64 = f64::INFINITY;

    #[test]
    fn quantile_interpolates_in_the_bucket_holding_the_rank() {
        let buckets = [b(0.1, 50.0), b(0.5, 90.0), b(1.0, 99.5), b(INF, 100.0)];
        // rank 99 falls in (0.5, 1]: 0.5 + 0.5 × (99 − 90) / 9.5.
        assert!((bucket_quantile(0.99, &buckets) - (0.5 + 0.5 * 9.0 / 9.5)).abs() < 1e-12);
        // rank 25 in the first bucket interpolates from 0.
        assert!((bucket_quantile(0.25, &buckets) - 0.05).abs() < 1e-12);
        // Unsorted input and a split bucket give the same answer.
        let shuffled = [
            b(INF, 100.0),
            b(1.0, 99.5),
            b(0.1, 20.0),
            b(0.5, 90.0),
            b(0.1, 30.0),
        ];
        assert_eq!(
            bucket_quantile(0.99, &shuffled),
            bucket_quantile(0.99, &buckets)
        );
        // Rank in +Inf: the highest finite bound.
        assert_eq!(bucket_quantile(0.999, &[b(1.0, 90.0), b(INF, 100.0)]), 1.0);
        // Non-monotonic counts are forced monotonic.
        // (Unforced, the total would be 5 and the median 0.25.)
        assert_eq!(bucket_quantile(0.5, &[b(1.0, 10.0), b(INF, 5.0)]), 0.5);
        assert_eq!(bucket_quantile(0.5, &[b(-1.0, 10.0), b(INF, 10.0)]), -1.0);
        assert!(
            bucket_quantile(0.5, &[b(1.0, 10.0)]).is_nan(),
            "no +Inf bucket"
        );
        assert!(bucket_quantile(0.5, &[b(INF, 10.0)]).is_nan(), "one bucket");
        assert!(
            bucket_quantile(0.5, &[b(1.0, 0.0), b(INF, 0.0)]).is_nan(),
            "no observations"
        );
        assert_eq!(bucket_quantile(1.5, &buckets), INF);
        assert_eq!(bucket_quantile(-0.5, &buckets), f64::NEG_INFINITY);
    }

    #[test]
    fn picks_the_smallest_exemplar_at_or_above_p99_and_the_max() {
        let buckets = [b(0.1, 50.0), b(0.5, 90.0), b(1.0, 99.5), b(INF, 100.0)];
        let mut exemplars = vec![
            ex(0.3, 10, "a"),
            ex(0.95, 20, "b"), // below the estimate ≈ 0.9737
            ex(0.98, 40, "c"),
            ex(0.98, 30, "d"), // same value, earlier: wins
            ex(1.2, 50, "e"),
            ex(5.0, 60_000, "outside"),
            ex(f64::NAN, 70, "nan"),
        ];
        let picked = pick_exemplars(0, 60_000, &buckets, &exemplars);
        assert!((picked.p99 - 0.97368).abs() < 1e-4);
        assert_eq!(
            picked.at_p99.as_ref().map(|e| (e.value, e.t)),
            Some((0.98, 30))
        );
        assert_eq!(picked.max.as_ref().map(|e| e.value), Some(1.2));
        exemplars.reverse();
        assert_eq!(
            pick_exemplars(0, 60_000, &buckets, &exemplars),
            picked,
            "arrival order is irrelevant"
        );
        exemplars.retain(|e| e.value < 0.97);
        let picked = pick_exemplars(0, 60_000, &buckets, &exemplars);
        assert_eq!(picked.at_p99, None, "nothing reaches the p99");
        assert_eq!(picked.max.map(|e| e.value), Some(0.95));
    }

    #[test]
    fn exact_ties_break_on_trace_id() {
        let buckets = [b(1.0, 100.0), b(INF, 100.0)];
        let exemplars = [ex(1.0, 5, "zz"), ex(1.0, 5, "aa"), ex(1.0, 5, "mm")];
        let picked = pick_exemplars(0, 60_000, &buckets, &exemplars);
        assert_eq!(picked.at_p99.unwrap().labels.get("trace_id"), Some("aa"));
        assert_eq!(picked.max.unwrap().labels.get("trace_id"), Some("zz"));
        let none = pick_exemplars(0, 60_000, &[], &exemplars);
        assert!(none.p99.is_nan() && none.at_p99.is_none() && none.max.is_some());
    }
}
