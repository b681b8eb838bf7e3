//! The event-time watermark that closes windows: the newest sample time seen
//! minus the allowed lateness (M3 accepts samples up to R + 1m late; so do
//! we by default).
//!
//! Scope is the caller's choice; the storage node keeps one per (shard,
//! resolution) so a series that stops writing still has its windows closed.
//! A far-future timestamp would close every window early, so the node must
//! bound future timestamps before they reach [`Watermark::observe`].

use cairn_common::Timestamp;

use crate::window::window_start;

const MINUTE_MS: i64 = 60_000;

/// Newest sample time minus the allowed lateness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watermark {
    resolution_ms: i64,
    lateness_ms: i64,
    newest: Option<Timestamp>,
}

impl Watermark {
    /// A watermark for windows of `resolution_ms` with the default lateness,
    /// R + 1m.
    pub fn new(resolution_ms: i64) -> Watermark {
        Watermark::with_lateness(resolution_ms, resolution_ms + MINUTE_MS)
    }

    /// A watermark with an explicit lateness (negative counts as 0).
    ///
    /// # Panics
    /// If `resolution_ms` is not positive.
    pub fn with_lateness(resolution_ms: i64, lateness_ms: i64) -> Watermark {
        assert!(resolution_ms > 0, "window resolution {resolution_ms} ms");
        Watermark {
            resolution_ms,
            lateness_ms: lateness_ms.max(0),
            newest: None,
        }
    }

    /// Notes a sample's time; the watermark never moves back.
    pub fn observe(&mut self, t: Timestamp) {
        self.newest = Some(self.newest.map_or(t, |n| n.max(t)));
    }

    /// `newest − lateness`; `None` before any sample.
    pub fn value(&self) -> Option<Timestamp> {
        self.newest.map(|n| n.saturating_sub(self.lateness_ms))
    }

    /// True once the watermark has reached the end of the window starting at
    /// `start`: no sample within the lateness can still land in it.
    pub fn is_closed(&self, start: Timestamp) -> bool {
        self.value()
            .is_some_and(|wm| start.saturating_add(self.resolution_ms) <= wm)
    }

    /// Every window starting before the returned time is closed (the
    /// watermark rounded down to a window edge); `None` before any sample.
    pub fn closed_before(&self) -> Option<Timestamp> {
        self.value().map(|wm| window_start(wm, self.resolution_ms))
    }

    /// True when a sample at `t` falls in a closed window: it must be
    /// recomputed from raw (or, beyond raw retention, counted as too late).
    pub fn is_late(&self, t: Timestamp) -> bool {
        self.is_closed(window_start(t, self.resolution_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const R: i64 = 300_000;

    #[test]
    fn default_lateness_is_resolution_plus_a_minute() {
        let mut wm = Watermark::new(R);
        assert_eq!(wm.value(), None);
        assert!(!wm.is_closed(0));
        wm.observe(10 * R);
        assert_eq!(wm.value(), Some(10 * R - R - 60_000));
        wm.observe(R); // older samples never move it back
        assert_eq!(wm.value(), Some(9 * R - 60_000));
    }

    #[test]
    fn a_window_closes_when_the_watermark_reaches_its_end() {
        let mut wm = Watermark::with_lateness(R, 60_000);
        wm.observe(R + 60_000 - 1);
        assert!(!wm.is_closed(0), "watermark R-1 has not passed the end R");
        assert_eq!(wm.closed_before(), Some(0));
        wm.observe(R + 60_000);
        assert!(wm.is_closed(0));
        assert!(!wm.is_closed(R));
        assert_eq!(wm.closed_before(), Some(R));
        assert!(wm.is_late(R - 1));
        assert!(!wm.is_late(R));
    }
}
