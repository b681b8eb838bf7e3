//! PromQL's range functions answered from downsampled rows.
//!
//! A range is window-aligned: `[from, to)` with both ends on window edges,
//! which is what Prometheus selects when evaluating at `to − 1 ms` with range
//! `to − from` (its ranges are left-open: `(t − r, t]`). The rows are the
//! series' rows inside the range, oldest first; missing windows are gaps.
//! Over such ranges every answer here equals the raw answer up to float
//! summation order:
//! - `count/sum/min/max_over_time` from the per-window aggregates and
//!   `avg_over_time` as Σsum ÷ Σcount (never a mean of means);
//! - `last_over_time` from the newest window's last value;
//! - `resets`, and `increase`/`rate` including Prometheus's extrapolation:
//!   the raw result is `last − first + Σ(value before each reset)` over the
//!   in-range samples, extrapolated using the first and last sample times
//!   and the sample count — all of which the rows keep, the pairs across a
//!   window edge coming from each row's carried `prev_raw`.

use cairn_common::{Sample, Timestamp};

use crate::error::{Error, Result};
use crate::window::{prom_max, prom_min, Aggregate, Window};

/// The rows of one series at one resolution covering a window-aligned range.
#[derive(Debug, Clone, Copy)]
pub struct RangeRows<'a> {
    from: Timestamp,
    to: Timestamp,
    rows: &'a [Window],
}

impl<'a> RangeRows<'a> {
    /// Checks that `from` and `to` are window edges with `from < to`, and
    /// that `rows` are windows of `resolution_ms` inside `[from, to)`, oldest
    /// first, each carrying the previous row's last value (a row that does
    /// not was left stale by a recomputation and would give wrong resets).
    pub fn new(
        resolution_ms: i64,
        from: Timestamp,
        to: Timestamp,
        rows: &'a [Window],
    ) -> Result<RangeRows<'a>> {
        let bad = |reason: String| Error::Rows { from, to, reason };
        if resolution_ms <= 0
            || from.rem_euclid(resolution_ms) != 0
            || to.rem_euclid(resolution_ms) != 0
            || from >= to
        {
            return Err(bad(format!(
                "not a non-empty range of whole {resolution_ms} ms windows"
            )));
        }
        let mut prev_start = None;
        let mut prev_last: Option<f64> = None;
        for w in rows {
            if w.resolution_ms != resolution_ms {
                return Err(bad(format!(
                    "window {} has resolution {} ms, not {resolution_ms}",
                    w.start, w.resolution_ms
                )));
            }
            if w.start < from || w.end() > to {
                return Err(bad(format!("window {} lies outside the range", w.start)));
            }
            if prev_start.is_some_and(|p| w.start <= p) {
                return Err(bad(format!(
                    "window {} is not after the row before it",
                    w.start
                )));
            }
            prev_start = Some(w.start);
            if let (Some(a), Some(last)) = (&w.agg, prev_last) {
                if a.prev_raw.map(f64::to_bits) != Some(last.to_bits()) {
                    return Err(bad(format!(
                        "window {} carries previous value {:?} but the row before ended at {last}",
                        w.start, a.prev_raw
                    )));
                }
            }
            prev_last = w.last_raw().or(prev_last);
        }
        Ok(RangeRows { from, to, rows })
    }

    fn aggs(&self) -> impl Iterator<Item = &'a Aggregate> + 'a {
        self.rows.iter().filter_map(|w| w.agg.as_ref())
    }

    /// Values in the range; `None` (no result) when there are none.
    pub fn count_over_time(&self) -> Option<f64> {
        let n: u64 = self.aggs().map(|a| a.count).sum();
        (n > 0).then_some(n as f64)
    }

    pub fn sum_over_time(&self) -> Option<f64> {
        self.aggs().map(|a| a.sum).reduce(|x, y| x + y)
    }

    /// Σsum ÷ Σcount over the range's values.
    pub fn avg_over_time(&self) -> Option<f64> {
        Some(self.sum_over_time()? / self.count_over_time()?)
    }

    pub fn min_over_time(&self) -> Option<f64> {
        self.aggs().map(|a| a.min).reduce(prom_min)
    }

    pub fn max_over_time(&self) -> Option<f64> {
        self.aggs().map(|a| a.max).reduce(prom_max)
    }

    pub fn last_over_time(&self) -> Option<f64> {
        self.aggs().last().map(|a| a.last.v)
    }

    /// Times the value went down between consecutive values in the range.
    pub fn resets(&self) -> Option<f64> {
        let mut aggs = self.aggs();
        let first = aggs.next()?;
        let mut n = first.resets;
        for a in aggs {
            n += a.resets + u64::from(a.boundary_reset());
        }
        Some(n as f64)
    }

    /// `(first, last, count, last − first + Σ value before each reset)` of
    /// the range's values; `None` with fewer than two (Prometheus gives no
    /// `increase` then).
    fn counter_delta(&self) -> Option<(Sample, Sample, u64, f64)> {
        let mut aggs = self.aggs();
        let first = aggs.next()?;
        let (mut last, mut count, mut reset_sum) = (first.last, first.count, first.reset_sum);
        for a in aggs {
            if a.boundary_reset() {
                // boundary_reset implies prev_raw is Some.
                reset_sum += a.prev_raw.unwrap_or(0.0);
            }
            reset_sum += a.reset_sum;
            count += a.count;
            last = a.last;
        }
        (count >= 2).then_some((first.first, last, count, last.v - first.first.v + reset_sum))
    }

    /// The counter's increase between the range's first and last values,
    /// reset-aware, without extrapolation.
    pub fn increase_unextrapolated(&self) -> Option<f64> {
        self.counter_delta().map(|d| d.3)
    }

    /// `increase(x[to − from])` evaluated at `to − 1 ms`, extrapolated as
    /// Prometheus does.
    pub fn increase(&self) -> Option<f64> {
        self.extrapolated(false)
    }

    /// `rate(x[to − from])` evaluated at `to − 1 ms`.
    pub fn rate(&self) -> Option<f64> {
        self.extrapolated(true)
    }

    /// Prometheus's `extrapolatedRate` for counters (promql/functions.go).
    fn extrapolated(&self, is_rate: bool) -> Option<f64> {
        let (first, last, count, mut result) = self.counter_delta()?;
        let range_start = self.from - 1;
        let range_end = self.to - 1;
        let mut to_start = (first.t - range_start) as f64 / 1000.0;
        let mut to_end = (range_end - last.t) as f64 / 1000.0;
        let sampled = (last.t - first.t) as f64 / 1000.0;
        let avg_step = sampled / (count - 1) as f64;
        let threshold = avg_step * 1.1;
        if to_start >= threshold {
            to_start = avg_step / 2.0;
        }
        if result > 0.0 && first.v >= 0.0 {
            let to_zero = sampled * (first.v / result);
            if to_zero < to_start {
                to_start = to_zero;
            }
        }
        if to_end >= threshold {
            to_end = avg_step / 2.0;
        }
        let mut factor = (sampled + to_start + to_end) / sampled;
        if is_rate {
            factor /= (self.to - self.from) as f64 / 1000.0;
        }
        result *= factor;
        Some(result)
    }

    /// A bare selector evaluated at `to − 1 ms` with `lookback_ms` (at most
    /// the range): the newest value, unless a staleness marker followed it or
    /// it is older than the lookback (Prometheus 3's left-open lookback).
    pub fn value_at_end(&self, lookback_ms: i64) -> Result<Option<f64>> {
        if lookback_ms > self.to - self.from {
            return Err(Error::Rows {
                from: self.from,
                to: self.to,
                reason: format!("lookback {lookback_ms} ms reaches before the range"),
            });
        }
        let t = self.to - 1;
        let Some(w) = self.rows.last() else {
            return Ok(None);
        };
        let newest_value = w.agg.map(|a| a.last);
        let value = match (newest_value, w.stale_at) {
            (_, Some(_)) => None,
            (Some(s), None) if s.t > t - lookback_ms => Some(s.v),
            _ => None,
        };
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_common::stale_nan;

    const R: i64 = 60_000;

    fn rows(series: &[&[(i64, f64)]]) -> Vec<Window> {
        let mut carry = None;
        let mut out = Vec::new();
        for samples in series {
            let samples: Vec<Sample> = samples.iter().map(|&(t, v)| Sample::new(t, v)).collect();
            let start = crate::window_start(samples[0].t, R);
            let w = Window::from_samples(start, R, &samples, carry)
                .unwrap()
                .unwrap();
            carry = w.last_raw().or(carry);
            out.push(w);
        }
        out
    }

    #[test]
    fn a_reset_exactly_at_a_window_edge_is_counted() {
        // 10, 20 | reset to 1 at exactly R | 5
        let rs = rows(&[&[(0, 10.0), (30_000, 20.0)], &[(R, 1.0), (R + 30_000, 5.0)]]);
        let range = RangeRows::new(R, 0, 2 * R, &rs).unwrap();
        assert_eq!(range.resets(), Some(1.0));
        assert_eq!(range.increase_unextrapolated(), Some(10.0 + 5.0));
        // The second window alone does not see the pair across the edge.
        let second = RangeRows::new(R, R, 2 * R, &rs[1..]).unwrap();
        assert_eq!(
            (second.resets(), second.increase_unextrapolated()),
            (Some(0.0), Some(4.0))
        );
    }

    #[test]
    fn averages_weigh_by_count_not_by_window() {
        let rs = rows(&[&[(0, 1.0), (10_000, 1.0), (20_000, 1.0)], &[(R, 10.0)]]);
        let range = RangeRows::new(R, 0, 2 * R, &rs).unwrap();
        assert_eq!(range.avg_over_time(), Some(13.0 / 4.0));
        assert_eq!(
            (range.min_over_time(), range.max_over_time()),
            (Some(1.0), Some(10.0))
        );
        assert_eq!(
            (range.count_over_time(), range.last_over_time()),
            (Some(4.0), Some(10.0))
        );
        let empty = RangeRows::new(R, 0, 2 * R, &[]).unwrap();
        assert_eq!(
            (empty.sum_over_time(), empty.resets(), empty.increase()),
            (None, None, None)
        );
    }

    #[test]
    fn inconsistent_or_misplaced_rows_are_refused() {
        let rs = rows(&[&[(0, 10.0)], &[(R, 1.0)]]);
        let stale_carry = [rs[0], rs[1].with_prev_raw(Some(0.5))];
        let err = RangeRows::new(R, 0, 2 * R, &stale_carry)
            .unwrap_err()
            .to_string();
        assert!(err.contains("carries previous value"), "{err}");
        assert!(RangeRows::new(R, 0, R, &rs).is_err(), "second row outside");
        assert!(
            RangeRows::new(R, 0, 2 * R, &[rs[1], rs[0]]).is_err(),
            "order"
        );
        assert!(RangeRows::new(R, 1, 2 * R, &rs).is_err(), "unaligned");
        assert!(RangeRows::new(2 * R, 0, 2 * R, &rs).is_err(), "resolution");
    }

    #[test]
    fn a_trailing_marker_hides_the_last_value() {
        let rs = rows(&[&[(0, 1.0), (10_000, stale_nan())]]);
        let range = RangeRows::new(R, 0, R, &rs).unwrap();
        assert_eq!(range.value_at_end(R).unwrap(), None);
        assert_eq!(
            range.last_over_time(),
            Some(1.0),
            "range functions skip markers"
        );
        let rs = rows(&[&[(0, 1.0)]]);
        let range = RangeRows::new(R, 0, R, &rs).unwrap();
        assert_eq!(range.value_at_end(R).unwrap(), Some(1.0));
        assert_eq!(
            range.value_at_end(R - 1).unwrap(),
            None,
            "(t − lookback, t] excludes 0"
        );
        assert!(range.value_at_end(R + 1).is_err());
    }
}
