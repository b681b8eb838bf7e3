//! One series' aggregate per event-time window `[w, w+R)`, aligned to the
//! epoch, and the per-series state that builds them as samples arrive.
//!
//! **Staleness markers** (NaN `0x7ff0000000000002`) are not values: they are
//! not counted, summed or compared, and they do not break counter continuity
//! (Prometheus drops them from range vectors, so `increase` across a marker
//! pairs the values either side of it, and so do we). A marker newer than
//! every value of its window is kept as [`Window::stale_at`]: the series ended
//! there, so a bare selector evaluated after it answers nothing, as on raw
//! data. A window holding only markers is still a row for that reason.
//!
//! **Duplicates**: the store upserts (last write wins), so a window's
//! aggregate is a function of the window's final raw samples. Samples that
//! arrive in order are folded in incrementally; anything else (an older or
//! equal timestamp) marks the window for recomputation from raw at close.

use std::collections::BTreeMap;

use cairn_common::{is_stale_nan, Sample, Timestamp};

use crate::error::{Error, Result};

/// The start of the epoch-aligned window of width `resolution_ms` holding `t`
/// (floor division, so negative timestamps align too).
pub fn window_start(t: Timestamp, resolution_ms: i64) -> Timestamp {
    t.div_euclid(resolution_ms) * resolution_ms
}

/// The aggregates of a window's values (staleness markers excluded).
///
/// The counter part follows Thanos's counter aggregate, split so ranges can
/// be answered exactly: `reset_sum` and `resets` cover pairs of samples
/// inside the window; `prev_raw` is the last value of the newest earlier
/// window that had values, so the pair spanning the window edge (and a reset
/// there, even one exactly at `w`) stays visible.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Aggregate {
    /// Values in the window (ordinary NaNs included, markers not).
    pub count: u64,
    pub sum: f64,
    /// Prometheus's `min_over_time` rule: NaN only if every value is NaN.
    pub min: f64,
    pub max: f64,
    pub first: Sample,
    pub last: Sample,
    /// Σ of the value just before each reset inside the window, so the
    /// window's increase is `last − first + reset_sum` (Prometheus's formula).
    pub reset_sum: f64,
    /// Pairs inside the window where the value went down.
    pub resets: u64,
    /// Last value of the newest earlier window with values; `None` for the
    /// series' first window.
    pub prev_raw: Option<f64>,
}

impl Aggregate {
    /// True when the value fell between the previous window's last value and
    /// this window's first.
    pub fn boundary_reset(&self) -> bool {
        self.prev_raw.is_some_and(|p| self.first.v < p)
    }
}

/// One closed (or recomputed) window of one series at one resolution.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    pub start: Timestamp,
    pub resolution_ms: i64,
    /// `None` when the window held only staleness markers.
    pub agg: Option<Aggregate>,
    /// The newest marker, when it is newer than every value in the window.
    pub stale_at: Option<Timestamp>,
}

impl Window {
    /// The exclusive end, `start + R`.
    pub fn end(&self) -> Timestamp {
        self.start + self.resolution_ms
    }

    /// The window's last value, which the next window carries as `prev_raw`.
    pub fn last_raw(&self) -> Option<f64> {
        self.agg.map(|a| a.last.v)
    }

    /// Builds the window from its final raw samples, sorted by timestamp with
    /// duplicates already resolved (last write wins), and the last value of
    /// the newest earlier window with values. This is the recompute path for
    /// late samples; the streaming path gives byte-identical rows.
    /// `Ok(None)` for no samples.
    pub fn from_samples(
        start: Timestamp,
        resolution_ms: i64,
        samples: &[Sample],
        prev_raw: Option<f64>,
    ) -> Result<Option<Window>> {
        let mut b = WindowBuilder::new(start, resolution_ms);
        for s in samples {
            b.push(*s)?;
        }
        Ok(b.finish(prev_raw))
    }

    /// This window with a different carried-in previous value: after an
    /// earlier window is recomputed and its last value changes, the next
    /// window with values needs only this, not its raw samples.
    pub fn with_prev_raw(mut self, prev_raw: Option<f64>) -> Window {
        if let Some(a) = &mut self.agg {
            a.prev_raw = prev_raw;
        }
        self
    }
}

/// Folds one window's samples in timestamp order.
#[derive(Debug, Clone)]
pub struct WindowBuilder {
    start: Timestamp,
    resolution_ms: i64,
    agg: Option<Aggregate>,
    stale_at: Option<Timestamp>,
    newest: Option<Timestamp>,
}

impl WindowBuilder {
    /// # Panics
    /// If `resolution_ms` is not positive (a caller bug: resolutions come
    /// from a parsed [`crate::StoragePolicy`]).
    pub fn new(start: Timestamp, resolution_ms: i64) -> WindowBuilder {
        assert!(resolution_ms > 0, "window resolution {resolution_ms} ms");
        WindowBuilder {
            start,
            resolution_ms,
            agg: None,
            stale_at: None,
            newest: None,
        }
    }

    /// Adds a sample newer than every sample so far. An older or equal
    /// timestamp is [`Error::OutOfOrder`] and leaves the builder unchanged:
    /// the caller recomputes the window from raw.
    pub fn push(&mut self, s: Sample) -> Result<()> {
        let end = self.start + self.resolution_ms;
        if s.t < self.start || s.t >= end {
            return Err(Error::OutsideWindow {
                start: self.start,
                end,
                t: s.t,
            });
        }
        if let Some(previous) = self.newest.filter(|&p| s.t <= p) {
            return Err(Error::OutOfOrder {
                start: self.start,
                t: s.t,
                previous,
            });
        }
        self.newest = Some(s.t);
        if is_stale_nan(s.v) {
            self.stale_at = Some(s.t);
            return Ok(());
        }
        self.stale_at = None;
        match &mut self.agg {
            None => {
                self.agg = Some(Aggregate {
                    count: 1,
                    sum: s.v,
                    min: s.v,
                    max: s.v,
                    first: s,
                    last: s,
                    reset_sum: 0.0,
                    resets: 0,
                    prev_raw: None,
                })
            }
            Some(a) => {
                a.count += 1;
                a.sum += s.v;
                a.min = prom_min(a.min, s.v);
                a.max = prom_max(a.max, s.v);
                if s.v < a.last.v {
                    a.reset_sum += a.last.v;
                    a.resets += 1;
                }
                a.last = s;
            }
        }
        Ok(())
    }

    /// The window, given the last value of the newest earlier window with
    /// values; `None` if no sample was pushed.
    pub fn finish(&self, prev_raw: Option<f64>) -> Option<Window> {
        self.newest?;
        Some(Window {
            start: self.start,
            resolution_ms: self.resolution_ms,
            agg: self.agg.map(|a| Aggregate { prev_raw, ..a }),
            stale_at: self.stale_at,
        })
    }
}

/// `min_over_time`'s rule: a NaN is replaced by any number, never chosen
/// over one.
pub(crate) fn prom_min(acc: f64, v: f64) -> f64 {
    if v < acc || acc.is_nan() {
        v
    } else {
        acc
    }
}

/// `max_over_time`'s rule, as [`prom_min`].
pub(crate) fn prom_max(acc: f64, v: f64) -> f64 {
    if v > acc || acc.is_nan() {
        v
    } else {
        acc
    }
}

/// What [`SeriesWindows::push`] did with a sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push {
    /// Folded into an open window (or marked it for recomputation).
    Accepted,
    /// Its window is already closed: the caller recomputes that window from
    /// raw with [`Window::from_samples`], upserts it, and re-carries its last
    /// value into the next row with values ([`Window::with_prev_raw`]).
    Late { window_start: Timestamp },
}

#[derive(Debug, Clone)]
struct Open {
    builder: WindowBuilder,
    /// An out-of-order or duplicate sample arrived: recompute from raw.
    dirty: bool,
}

/// One series' open windows at one resolution, fed in arrival order, closed
/// in window order as the watermark passes them.
///
/// What is lost in a crash (the open windows) is rebuilt from the durable
/// raw data: [`SeriesWindows::resume`] marks every window that may already
/// hold samples for recomputation from raw at close.
#[derive(Debug, Clone)]
pub struct SeriesWindows {
    resolution_ms: i64,
    open: BTreeMap<Timestamp, Open>,
    /// Every window starting before this is closed.
    closed_before: Timestamp,
    /// (window start, last value) of the newest closed window with values.
    carry: Option<(Timestamp, f64)>,
}

impl SeriesWindows {
    /// State for a series with nothing closed yet.
    ///
    /// # Panics
    /// If `resolution_ms` is not positive.
    pub fn new(resolution_ms: i64) -> SeriesWindows {
        assert!(resolution_ms > 0, "window resolution {resolution_ms} ms");
        SeriesWindows {
            resolution_ms,
            open: BTreeMap::new(),
            closed_before: Timestamp::MIN,
            carry: None,
        }
    }

    /// State after a restart: windows before `closed_before` were flushed
    /// (the checkpointed [`crate::Watermark::closed_before`]); `carry` is the
    /// (start, last value) of the newest stored row with values; `raw_span`
    /// is the (oldest, newest) time of the series' durable raw samples at or
    /// after `closed_before`. Every window in that span is opened marked for
    /// recomputation from raw, so windows that were open at the crash close
    /// even if no further sample arrives for them.
    pub fn resume(
        resolution_ms: i64,
        closed_before: Timestamp,
        carry: Option<(Timestamp, f64)>,
        raw_span: Option<(Timestamp, Timestamp)>,
    ) -> SeriesWindows {
        assert!(resolution_ms > 0, "window resolution {resolution_ms} ms");
        let mut open = BTreeMap::new();
        if let Some((oldest, newest)) = raw_span {
            let mut w = window_start(oldest.max(closed_before), resolution_ms);
            while w <= newest {
                let builder = WindowBuilder::new(w, resolution_ms);
                open.insert(
                    w,
                    Open {
                        builder,
                        dirty: true,
                    },
                );
                w += resolution_ms;
            }
        }
        SeriesWindows {
            resolution_ms,
            open,
            closed_before,
            carry,
        }
    }

    /// Open windows held (the aggregation state size, for `/metrics`).
    pub fn open_windows(&self) -> usize {
        self.open.len()
    }

    pub fn push(&mut self, s: Sample) -> Push {
        let w = window_start(s.t, self.resolution_ms);
        if w < self.closed_before {
            return Push::Late { window_start: w };
        }
        let open = self.open.entry(w).or_insert_with(|| Open {
            builder: WindowBuilder::new(w, self.resolution_ms),
            dirty: false,
        });
        if !open.dirty && open.builder.push(s).is_err() {
            open.dirty = true;
        }
        Push::Accepted
    }

    /// Closes, in order, every open window that ends at or before
    /// `closed_before` (see [`crate::Watermark::closed_before`]). A window
    /// marked dirty is rebuilt from `raw(window_start)`, which must return the
    /// window's final raw samples, sorted and deduplicated.
    pub fn close(
        &mut self,
        closed_before: Timestamp,
        mut raw: impl FnMut(Timestamp) -> Vec<Sample>,
    ) -> Result<Vec<Window>> {
        let mut out = Vec::new();
        while let Some(entry) = self.open.first_entry() {
            if entry.key().saturating_add(self.resolution_ms) > closed_before {
                break;
            }
            let (start, open) = entry.remove_entry();
            let prev = self.carry.map(|c| c.1);
            let window = if open.dirty {
                Window::from_samples(start, self.resolution_ms, &raw(start), prev)?
            } else {
                open.builder.finish(prev)
            };
            if let Some(w) = window {
                self.note_closed(&w);
                out.push(w);
            }
        }
        self.closed_before = self.closed_before.max(closed_before);
        Ok(out)
    }

    /// The late path: rebuilds the closed window at `start` from its final
    /// raw samples and the last value of the newest stored row before it.
    /// The caller upserts the result and, if its last value changed, re-carries
    /// it into the next stored row with values ([`Window::with_prev_raw`]);
    /// this state re-carries it into the windows still open.
    pub fn recompute(
        &mut self,
        start: Timestamp,
        samples: &[Sample],
        prev_raw: Option<f64>,
    ) -> Result<Option<Window>> {
        let w = Window::from_samples(start, self.resolution_ms, samples, prev_raw)?;
        if let Some(w) = &w {
            self.note_closed(w);
        }
        Ok(w)
    }

    fn note_closed(&mut self, w: &Window) {
        if let Some(v) = w.last_raw() {
            if self.carry.is_none_or(|(from, _)| w.start >= from) {
                self.carry = Some((w.start, v));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_common::stale_nan;

    const R: i64 = 60_000;

    fn s(t: i64, v: f64) -> Sample {
        Sample::new(t, v)
    }

    #[test]
    fn window_aggregates_values_and_skips_markers() {
        let samples = [
            s(0, 5.0),
            s(10_000, 2.0),
            s(20_000, stale_nan()),
            s(30_000, 9.0),
            s(59_999, 4.0),
        ];
        let w = Window::from_samples(0, R, &samples, Some(7.0))
            .unwrap()
            .unwrap();
        let a = w.agg.unwrap();
        assert_eq!((a.count, a.sum, a.min, a.max), (4, 20.0, 2.0, 9.0));
        assert_eq!((a.first, a.last), (s(0, 5.0), s(59_999, 4.0)));
        // 5→2 and 9→4 went down; the marker between 2 and 9 is not a value.
        assert_eq!((a.resets, a.reset_sum), (2, 14.0));
        assert!(
            a.boundary_reset(),
            "5 after the carried 7 is a reset at the edge"
        );
        assert_eq!(
            w.stale_at, None,
            "a value after the marker revives the series"
        );
        assert_eq!(w.end(), R);
    }

    #[test]
    fn trailing_marker_ends_the_series_and_marker_only_windows_are_rows() {
        let w = Window::from_samples(0, R, &[s(1, 1.0), s(2, stale_nan())], None)
            .unwrap()
            .unwrap();
        assert_eq!(w.stale_at, Some(2));
        let only = Window::from_samples(R, R, &[s(R + 5, stale_nan())], Some(1.0))
            .unwrap()
            .unwrap();
        assert!(only.agg.is_none());
        assert_eq!(only.stale_at, Some(R + 5));
        assert_eq!(Window::from_samples(0, R, &[], None).unwrap(), None);
    }

    #[test]
    fn nan_gauges_follow_prometheus_min_max() {
        let w = Window::from_samples(
            0,
            R,
            &[s(1, f64::NAN), s(2, 3.0), s(3, f64::NAN), s(4, 1.0)],
            None,
        )
        .unwrap()
        .unwrap();
        let a = w.agg.unwrap();
        assert_eq!((a.min, a.max, a.count), (1.0, 3.0, 4));
        assert!(a.sum.is_nan());
    }

    #[test]
    fn builder_rejects_unsorted_duplicate_and_foreign_samples() {
        let mut b = WindowBuilder::new(0, R);
        b.push(s(10, 1.0)).unwrap();
        assert!(matches!(
            b.push(s(10, 2.0)),
            Err(Error::OutOfOrder {
                t: 10,
                previous: 10,
                ..
            })
        ));
        assert!(matches!(b.push(s(5, 2.0)), Err(Error::OutOfOrder { .. })));
        assert!(matches!(
            b.push(s(R, 2.0)),
            Err(Error::OutsideWindow { t: R, .. })
        ));
        assert!(matches!(
            b.push(s(-1, 2.0)),
            Err(Error::OutsideWindow { .. })
        ));
        assert_eq!(
            b.finish(None).unwrap().agg.unwrap().count,
            1,
            "rejections change nothing"
        );
        assert!(Window::from_samples(0, R, &[s(2, 1.0), s(1, 1.0)], None).is_err());
    }

    #[test]
    fn windows_align_to_the_epoch_for_negative_times_too() {
        assert_eq!(window_start(0, R), 0);
        assert_eq!(window_start(R - 1, R), 0);
        assert_eq!(window_start(R, R), R);
        assert_eq!(window_start(-1, R), -R);
    }

    #[test]
    fn series_windows_close_in_order_carry_last_raw_and_report_late() {
        let mut sw = SeriesWindows::new(R);
        for smp in [
            s(1_000, 10.0),
            s(30_000, 12.0),
            s(R, 3.0),
            s(3 * R + 1, 5.0),
        ] {
            assert_eq!(sw.push(smp), Push::Accepted);
        }
        // A duplicate timestamp in window 1: that window is rebuilt from raw.
        assert_eq!(sw.push(s(R, 4.0)), Push::Accepted);
        let mut asked = Vec::new();
        let closed = sw
            .close(2 * R, |w| {
                asked.push(w);
                vec![s(R, 4.0)]
            })
            .unwrap();
        assert_eq!(asked, [R]);
        assert_eq!(closed.len(), 2);
        assert_eq!(closed[0].agg.unwrap().prev_raw, None);
        let second = closed[1].agg.unwrap();
        assert_eq!(
            (second.prev_raw, second.last.v),
            (Some(12.0), 4.0),
            "raw's last write wins"
        );
        assert!(second.boundary_reset());
        assert_eq!(sw.open_windows(), 1);
        assert_eq!(sw.push(s(R + 5, 1.0)), Push::Late { window_start: R });
        // Window 2 is empty: window 3 carries window 1's last value.
        let closed = sw.close(4 * R, |_| unreachable!("nothing dirty")).unwrap();
        assert_eq!(closed[0].start, 3 * R);
        assert_eq!(closed[0].agg.unwrap().prev_raw, Some(4.0));
    }

    #[test]
    fn resumed_state_rebuilds_windows_that_may_hold_lost_samples() {
        // Raw holds R+5 (window 1) and 2R+7 (window 2) from before the crash;
        // window 2 gets no further sample but must still close.
        let mut sw = SeriesWindows::resume(R, R, Some((0, 10.0)), Some((R + 5, 2 * R + 7)));
        assert_eq!(sw.open_windows(), 2);
        sw.push(s(R + 10, 11.0));
        let mut asked = Vec::new();
        let closed = sw
            .close(3 * R, |w| {
                asked.push(w);
                if w == R {
                    vec![s(R + 5, 10.5), s(R + 10, 11.0)]
                } else {
                    vec![s(2 * R + 7, 12.0)]
                }
            })
            .unwrap();
        assert_eq!(
            asked,
            [R, 2 * R],
            "both windows open at the crash come from raw"
        );
        assert_eq!(closed[0].agg.unwrap().count, 2);
        assert_eq!(closed[1].agg.unwrap().prev_raw, Some(11.0));
        // A late recomputation of the newest closed window re-carries its
        // last value into windows still open.
        sw.push(s(3 * R, 20.0));
        let w = sw
            .recompute(2 * R, &[s(2 * R, 12.0), s(2 * R + 1, 30.0)], Some(11.0))
            .unwrap();
        assert_eq!(w.unwrap().last_raw(), Some(30.0));
        let closed = sw.close(4 * R, |_| unreachable!()).unwrap();
        assert!(
            closed[0].agg.unwrap().boundary_reset(),
            "20 after the recomputed 30"
        );
    }

    #[test]
    fn with_prev_raw_recarries_without_raw_samples() {
        let w = Window::from_samples(R, R, &[s(R, 5.0)], Some(3.0))
            .unwrap()
            .unwrap();
        assert!(!w.agg.unwrap().boundary_reset());
        let w = w.with_prev_raw(Some(8.0));
        assert!(w.agg.unwrap().boundary_reset());
        let rebuilt = Window::from_samples(R, R, &[s(R, 5.0)], Some(8.0))
            .unwrap()
            .unwrap();
        assert_eq!(w, rebuilt);
    }
}
