//! Downsampled vs raw, over generated data (test-only).
//!
//! The generator writes gauges and counters with jittered 10–60 s scrapes,
//! gaps, staleness markers, counter resets (some exactly on a window edge),
//! duplicate timestamps (last write wins), samples arriving out of order
//! within the lateness, a few arriving after it (the late path), and a crash
//! and restart of the streaming state part-way.
//!
//! What is compared, for every window-aligned range `[a, b)` of 1 to 15
//! windows (Prometheus evaluating at `b − 1 ms` with range `b − a` selects
//! exactly the raw samples in `[a, b)`):
//! - the rows built while streaming equal, byte for byte, the rows built from
//!   the final raw samples in one pass;
//! - `count/sum/min/max/avg/last_over_time`, `resets`, the unextrapolated
//!   increase, and Prometheus's extrapolated `increase` and `rate` computed by
//!   [`RangeRows`] equal the same functions computed directly on the raw
//!   samples (staleness markers dropped, as Prometheus drops them from range
//!   vectors) within 1e-9 relative (gauges are kept far from 0 so float
//!   reordering cannot cancel);
//! - the bare-selector value at `b − 1 ms` with a lookback of the range
//!   equals Prometheus's instant lookup on raw (newest sample in
//!   `(t − lookback, t]`, none if it is a marker).

use std::collections::BTreeMap;

use cairn_common::{is_stale_nan, stale_nan, Sample, SeriesId};

use crate::{window_start, Push, RangeRows, Row, SeriesWindows, Watermark, Window};

/// A small deterministic generator (xorshift64*), so failures replay.
#[derive(Debug)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }

    fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
}

struct Generated {
    /// Samples in arrival order (duplicates and disorder included).
    arrivals: Vec<Sample>,
    /// What the store holds at the end: last write wins per timestamp.
    final_raw: BTreeMap<i64, f64>,
}

fn generate(rng: &mut Rng, counter: bool, r: i64, span: i64) -> Generated {
    let mut timed = Vec::new(); // (arrival time, sequence, sample)
    let mut t = rng.below(r as u64) as i64;
    let mut v = if counter {
        rng.below(100) as f64
    } else {
        1000.0
    };
    while t < span {
        let mut arrival = t;
        if rng.chance(0.1) {
            arrival += rng.below(90_000) as i64; // within the default lateness (R + 1m)
        } else if rng.chance(0.01) {
            arrival += r + 60_000 + rng.below(10 * r as u64) as i64; // beyond it
        }
        if rng.chance(0.03) {
            timed.push((arrival, Sample::new(t, stale_nan())));
            t += 60_000 + rng.below(15 * 60_000) as i64;
            continue;
        }
        if counter {
            if rng.chance(0.04) {
                v = rng.below(5) as f64;
            } else {
                v += rng.below(20) as f64 * 0.5;
            }
        } else {
            v = (v + (rng.below(1001) as f64 - 500.0) / 97.0).clamp(100.0, 5000.0);
        }
        let value = if !counter && rng.chance(0.01) {
            f64::NAN
        } else {
            v
        };
        timed.push((arrival, Sample::new(t, value)));
        if rng.chance(0.04) {
            // A resend with another value, arriving later: it wins.
            let other = if counter { v + 1.0 } else { v * 1.01 };
            if counter {
                v = other;
            }
            timed.push((
                arrival + 1 + rng.below(30_000) as i64,
                Sample::new(t, other),
            ));
        }
        let mut next = t + 10_000 + rng.below(50_000) as i64;
        if rng.chance(0.02) {
            next += 3 * 60_000 + rng.below(20 * 60_000) as i64;
        }
        let edge = window_start(next, r);
        if edge > t && rng.chance(0.3) {
            next = edge; // a scrape exactly on the window edge …
            if counter && rng.chance(0.5) {
                v = 0.0; // … that resets there (the next step adds to 0)
            }
        }
        t = next;
    }
    // Stable: equal arrival times keep their generation order.
    timed.sort_by_key(|(arrival, _)| *arrival);
    let arrivals: Vec<Sample> = timed.into_iter().map(|(_, s)| s).collect();
    let mut final_raw = BTreeMap::new();
    for s in &arrivals {
        final_raw.insert(s.t, s.v);
    }
    Generated {
        arrivals,
        final_raw,
    }
}

fn samples_in(raw: &BTreeMap<i64, f64>, from: i64, to: i64) -> Vec<Sample> {
    raw.range(from..to)
        .map(|(&t, &v)| Sample::new(t, v))
        .collect()
}

/// Rows in one pass over the final raw samples.
fn batch_rows(raw: &BTreeMap<i64, f64>, r: i64) -> BTreeMap<i64, Window> {
    let mut by_window: BTreeMap<i64, Vec<Sample>> = BTreeMap::new();
    for (&t, &v) in raw {
        by_window
            .entry(window_start(t, r))
            .or_default()
            .push(Sample::new(t, v));
    }
    let mut carry = None;
    let mut rows = BTreeMap::new();
    for (start, samples) in by_window {
        let w = Window::from_samples(start, r, &samples, carry)
            .unwrap()
            .unwrap();
        carry = w.last_raw().or(carry);
        rows.insert(start, w);
    }
    rows
}

/// Rows as a storage node would build them: streaming, the late path with
/// its re-carry into the next stored row, and a crash and resume at `crash_at`.
fn streamed_rows(g: &Generated, r: i64, crash_at: usize) -> BTreeMap<i64, Window> {
    let mut store: BTreeMap<i64, f64> = BTreeMap::new();
    let mut rows: BTreeMap<i64, Window> = BTreeMap::new();
    let mut wm = Watermark::new(r);
    let mut sw = SeriesWindows::new(r);
    let mut flushed_before = i64::MIN; // the checkpointed watermark
    for (i, s) in g.arrivals.iter().enumerate() {
        if i == crash_at {
            let carry = rows
                .values()
                .rev()
                .find_map(|w| Some((w.start, w.last_raw()?)));
            let oldest = store.range(flushed_before..).next().map(|(&t, _)| t);
            let newest = store.keys().next_back().copied();
            sw = SeriesWindows::resume(r, flushed_before, carry, oldest.zip(newest));
        }
        store.insert(s.t, s.v);
        wm.observe(s.t);
        if let Push::Late { window_start: w } = sw.push(*s) {
            let prev = rows.range(..w).rev().find_map(|(_, row)| row.last_raw());
            let new = sw
                .recompute(w, &samples_in(&store, w, w + r), prev)
                .unwrap()
                .unwrap();
            rows.insert(w, new);
            let carried = new.last_raw().or(prev);
            if let Some((_, next)) = rows.range_mut(w + 1..).find(|(_, row)| row.agg.is_some()) {
                *next = next.with_prev_raw(carried);
            }
        }
        if let Some(cb) = wm.closed_before() {
            for w in sw.close(cb, |st| samples_in(&store, st, st + r)).unwrap() {
                rows.insert(w.start, w);
            }
            flushed_before = flushed_before.max(cb);
        }
    }
    for w in sw
        .close(i64::MAX, |st| samples_in(&store, st, st + r))
        .unwrap()
    {
        rows.insert(w.start, w);
    }
    rows
}

fn close_enough(got: Option<f64>, want: Option<f64>) -> bool {
    match (got, want) {
        (None, None) => true,
        (Some(a), Some(b)) if a.is_nan() || b.is_nan() => a.is_nan() && b.is_nan(),
        (Some(a), Some(b)) => a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs()),
        _ => false,
    }
}

/// The raw side: the same functions on the samples of `[from, to)`.
mod raw {
    use super::*;
    use crate::window::{prom_max, prom_min};

    pub(super) fn values(raw: &BTreeMap<i64, f64>, from: i64, to: i64) -> Vec<Sample> {
        samples_in(raw, from, to)
            .into_iter()
            .filter(|s| !is_stale_nan(s.v))
            .collect()
    }

    pub(super) fn sum(s: &[Sample]) -> Option<f64> {
        s.iter().map(|x| x.v).reduce(|a, b| a + b)
    }

    pub(super) fn min(s: &[Sample]) -> Option<f64> {
        s.iter().map(|x| x.v).reduce(prom_min)
    }

    pub(super) fn max(s: &[Sample]) -> Option<f64> {
        s.iter().map(|x| x.v).reduce(prom_max)
    }

    pub(super) fn resets(s: &[Sample]) -> Option<f64> {
        (!s.is_empty()).then(|| s.windows(2).filter(|p| p[1].v < p[0].v).count() as f64)
    }

    /// promql/functions.go `extrapolatedRate` for a counter, evaluated at
    /// `to − 1` over `to − from` (or its unextrapolated result).
    pub(super) fn increase(
        s: &[Sample],
        from: i64,
        to: i64,
        extrapolate: bool,
        rate: bool,
    ) -> Option<f64> {
        if s.len() < 2 {
            return None;
        }
        let mut result = s[s.len() - 1].v - s[0].v;
        let mut prev = s[0].v;
        for p in &s[1..] {
            if p.v < prev {
                result += prev;
            }
            prev = p.v;
        }
        if !extrapolate {
            return Some(result);
        }
        let (range_start, range_end) = (from - 1, to - 1);
        let (first_t, last_t) = (s[0].t, s[s.len() - 1].t);
        let mut duration_to_start = (first_t - range_start) as f64 / 1000.0;
        let mut duration_to_end = (range_end - last_t) as f64 / 1000.0;
        let sampled_interval = (last_t - first_t) as f64 / 1000.0;
        let average = sampled_interval / (s.len() - 1) as f64;
        let threshold = average * 1.1;
        let mut extrapolate_to = sampled_interval;
        if duration_to_start >= threshold {
            duration_to_start = average / 2.0;
        }
        if result > 0.0 && s[0].v >= 0.0 {
            let duration_to_zero = sampled_interval * (s[0].v / result);
            if duration_to_zero < duration_to_start {
                duration_to_start = duration_to_zero;
            }
        }
        extrapolate_to += duration_to_start;
        if duration_to_end >= threshold {
            duration_to_end = average / 2.0;
        }
        extrapolate_to += duration_to_end;
        let mut factor = extrapolate_to / sampled_interval;
        if rate {
            factor /= (to - from) as f64 / 1000.0;
        }
        Some(result * factor)
    }

    /// Instant lookup at `t`: newest sample in `(t − lookback, t]`, none if
    /// it is a staleness marker.
    pub(super) fn value_at(raw: &BTreeMap<i64, f64>, t: i64, lookback: i64) -> Option<f64> {
        let (_, &v) = raw.range(t - lookback + 1..=t).next_back()?;
        (!is_stale_nan(v)).then_some(v)
    }
}

#[test]
fn downsampled_answers_equal_raw_answers_on_aligned_ranges() {
    let mut checked = 0u64;
    let mut edge_resets = 0u64;
    let mut late = 0usize;
    for &r in &[60_000i64, 300_000] {
        for seed in 0..12u64 {
            let counter = seed % 2 == 1;
            let mut rng = Rng::new(seed * 7919 + r as u64);
            let span = 240 * 60_000;
            let g = generate(&mut rng, counter, r, span);
            let crash_at = rng.below(g.arrivals.len() as u64) as usize;
            let batch = batch_rows(&g.final_raw, r);
            let streamed = streamed_rows(&g, r, crash_at);
            let id = SeriesId(u128::from(seed));
            let value = |w: &Window| {
                Row {
                    series: id,
                    window: *w,
                }
                .value()
            };
            for (start, w) in &batch {
                let got = streamed.get(start);
                assert!(
                    got.map(value) == Some(value(w)),
                    "r={r} seed={seed} crash_at={crash_at} window {start}: batch {w:?} streamed {got:?}"
                );
            }
            assert_eq!(
                streamed.len(),
                batch.len(),
                "r={r} seed={seed}: extra streamed rows"
            );
            late += g
                .arrivals
                .windows(2)
                .filter(|p| p[1].t + r + 60_000 < p[0].t)
                .count();
            edge_resets += batch
                .values()
                .filter(|w| {
                    w.agg
                        .is_some_and(|a| a.boundary_reset() && a.first.t == w.start)
                })
                .count() as u64;

            let rows: Vec<Window> = batch.values().copied().collect();
            let end = window_start(span, r) + 2 * r;
            let mut a = 0;
            while a < end {
                for n in 1..=15 {
                    let b = a + n * r;
                    let in_range: Vec<Window> = rows
                        .iter()
                        .filter(|w| w.start >= a && w.end() <= b)
                        .copied()
                        .collect();
                    let q = RangeRows::new(r, a, b, &in_range).unwrap();
                    let s = raw::values(&g.final_raw, a, b);
                    let ctx = format!("r={r} seed={seed} counter={counter} range=[{a}, {b})");
                    let pairs = [
                        (
                            "count_over_time",
                            q.count_over_time(),
                            (!s.is_empty()).then_some(s.len() as f64),
                        ),
                        ("sum_over_time", q.sum_over_time(), raw::sum(&s)),
                        (
                            "avg_over_time",
                            q.avg_over_time(),
                            raw::sum(&s).map(|x| x / s.len() as f64),
                        ),
                        ("min_over_time", q.min_over_time(), raw::min(&s)),
                        ("max_over_time", q.max_over_time(), raw::max(&s)),
                        ("last_over_time", q.last_over_time(), s.last().map(|x| x.v)),
                        ("resets", q.resets(), raw::resets(&s)),
                        (
                            "increase_unextrapolated",
                            q.increase_unextrapolated(),
                            raw::increase(&s, a, b, false, false),
                        ),
                        (
                            "increase",
                            q.increase(),
                            raw::increase(&s, a, b, true, false),
                        ),
                        ("rate", q.rate(), raw::increase(&s, a, b, true, true)),
                        (
                            "value_at_end",
                            q.value_at_end(b - a).unwrap(),
                            raw::value_at(&g.final_raw, b - 1, b - a),
                        ),
                    ];
                    for (name, got, want) in pairs {
                        assert!(
                            close_enough(got, want),
                            "{ctx} {name}: downsampled {got:?} raw {want:?}"
                        );
                        checked += 1;
                    }
                }
                a += r;
            }
        }
    }
    // The generator must have produced what the test claims to cover.
    assert!(
        edge_resets >= 10,
        "resets exactly on a window edge: {edge_resets}"
    );
    assert!(late >= 5, "samples beyond the lateness: {late}");
    assert!(checked > 100_000, "{checked}");
}
