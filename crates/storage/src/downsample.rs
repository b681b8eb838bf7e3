//! Downsampling into the aggregated namespaces, on the node that holds the
//! raw samples.
//!
//! Each aggregated namespace (`5m:1y` → `agg_5m_1y`) gets, per raw series
//! and per event-time window `[w, w+R)` aligned to the epoch, the
//! aggregates of `cairn-downsample`'s [`Window`], stored as ordinary
//! series of its own store: the raw series' labels plus
//! [`ROLLUP_LABEL`]`="<kind>"`, one per [`Rollup`]. So the namespace's
//! commit log, head, filesets, compression and retention are the raw
//! namespace's machinery, and a query reads a rollup like any series (the
//! engine picks the rollup per function; see `cairn-promql`'s
//! `resolution`).
//!
//! A window closes when the watermark — the newest raw sample seen by this
//! node minus the allowed lateness (`R + 1m`) — passes its end. A pass
//! (every background tick, and on `POST /admin/v1/flush`) reads the raw
//! samples of the closed windows not written yet, computes the windows
//! (deterministically: the same raw data gives the same values, so replicas
//! and replays agree) and upserts the rollup samples (last write wins on a
//! timestamp, so writing a window again replaces it). Only once they are
//! durable in the namespace's commit log is the progress marker
//! (`<namespace dir>/downsampled`) moved on: a crash repeats at most the
//! pass it interrupted, from the raw data, which is durable. A raw sample
//! older than the marker (a late or backfilled sample) marks its window,
//! and the one after it (whose increase starts from the late window's last
//! value), to be computed again by the next pass; the marks are persisted
//! before the write is acknowledged.
//!
//! A tenant's mapping rules ([`Mapping`]) choose, per series and window
//! (from each rule's cutover on), the aggregated namespaces it goes to; a
//! window a rule keeps out of a namespace is not written there.

use crate::error::{Error, Result};
use cairn_common::{stale_nan, Exemplar, Labels, Sample, SeriesId, SeriesWrite, Timestamp};
use cairn_downsample::{pick_exemplars, window_start, Bucket, Window};
use parking_lot::Mutex;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};

/// The tenants' mapping rules, as the node's downsampling pass asks for
/// them (the binary adapts the metadata store's tenancy records): which
/// aggregated namespaces a series' windows go to.
pub trait Mapping: Send + Sync + std::fmt::Debug {
    /// The rules `tenant`'s series `labels` matches (empty: none, so every
    /// aggregated namespace keeps it).
    fn rules(&self, tenant: &str, labels: &Labels) -> Vec<cairn_downsample::MatchedMapping>;
}

/// The label naming which aggregate of a window a rollup series holds
/// (left out of the hash a series' shard is taken from, so a series'
/// rollups live on its shard).
pub use cairn_common::ROLLUP_LABEL;

/// The aggregates kept per window, each a series of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rollup {
    /// Σ of the window's values, at the window's last millisecond.
    Sum,
    /// The number of values, at the window's last millisecond.
    Count,
    /// Prometheus's `min_over_time` of the window, at its last millisecond.
    Min,
    Max,
    /// The window's newest value at its own timestamp, then a staleness
    /// marker if one followed it in the window.
    Last,
    /// The counter increase the window adds, reset-aware: from the previous
    /// window's last value to this window's last (a value below the one
    /// before it is a reset), at the window's last millisecond. Σ over
    /// consecutive windows is the increase across them.
    Increase,
    /// Resets between the window's samples, at its last millisecond; a
    /// reset between the previous window's last sample (at `p`) and this
    /// one's first, at the first sample's time with the value `−(p + 1)`
    /// (negative, so told apart from the counts): the engine counts it only
    /// when `p` is inside the range too, as raw `resets()` does, so a range
    /// starting between the two samples does not. (Written before this
    /// encoding, or with `p` unknown: 1.)
    Resets,
}

impl Rollup {
    pub const ALL: [Rollup; 7] = [
        Rollup::Sum,
        Rollup::Count,
        Rollup::Min,
        Rollup::Max,
        Rollup::Last,
        Rollup::Increase,
        Rollup::Resets,
    ];

    /// The value of [`ROLLUP_LABEL`].
    pub fn name(self) -> &'static str {
        match self {
            Rollup::Sum => "sum",
            Rollup::Count => "count",
            Rollup::Min => "min",
            Rollup::Max => "max",
            Rollup::Last => "last",
            Rollup::Increase => "increase",
            Rollup::Resets => "resets",
        }
    }

    /// The rollup's samples of window `w` (sorted by time); `prev_t`: the
    /// time of the series' last value before the window.
    pub fn samples(self, w: &Window, prev_t: Option<Timestamp>) -> Vec<Sample> {
        let at_end = |v: f64| Sample::new(w.start + w.resolution_ms - 1, v);
        let mut out = Vec::new();
        if let Some(a) = &w.agg {
            match self {
                Rollup::Sum => out.push(at_end(a.sum)),
                Rollup::Count => out.push(at_end(a.count as f64)),
                Rollup::Min => out.push(at_end(a.min)),
                Rollup::Max => out.push(at_end(a.max)),
                Rollup::Last => out.push(a.last),
                Rollup::Increase => {
                    let edge = match a.prev_raw {
                        Some(p) if a.first.v >= p => a.first.v - p,
                        Some(_) => a.first.v,
                        None => 0.0,
                    };
                    out.push(at_end(edge + (a.last.v - a.first.v) + a.reset_sum));
                }
                Rollup::Resets => {
                    // A reset across the window's start edge, at the time
                    // of its newer sample, naming the older one's.
                    if a.boundary_reset() {
                        let v = prev_t.map_or(1.0, |p| -(p as f64) - 1.0);
                        out.push(Sample::new(a.first.t, v));
                    }
                    out.push(at_end(a.resets as f64));
                }
            }
        }
        if let (Rollup::Last, Some(t)) = (self, w.stale_at) {
            out.push(Sample::new(t, stale_nan()));
        }
        out
    }
}

/// `labels` with [`ROLLUP_LABEL`] set to `r`.
pub fn rollup_labels(labels: &Labels, r: Rollup) -> Labels {
    let mut b = labels.builder();
    b.set(ROLLUP_LABEL, r.name());
    b.build()
}

/// A classic histogram bucket's upper bound: the `le` of a series whose
/// name ends in `_bucket` (`+Inf` included); None for any other series.
pub(crate) fn bucket_bound(labels: &Labels) -> Option<f64> {
    if !labels.get("__name__")?.ends_with("_bucket") {
        return None;
    }
    labels
        .get("le")?
        .trim()
        .parse()
        .ok()
        .filter(|v: &f64| !v.is_nan())
}

/// The classic histograms of a pass: per histogram (tenant and labels
/// without `le`), its buckets' increase per window and the exemplars its
/// bucket series carry, from which each window's p99 and max exemplars are
/// chosen ([`pick_exemplars`]: deterministic, so every replica and replay
/// picks the same ones). A chosen exemplar is kept on the `increase`
/// rollup of the bucket it came with, at its own time and value, with its
/// labels (`trace_id`) as written.
#[derive(Debug, Default)]
pub(crate) struct Histograms {
    groups: BTreeMap<(String, Labels), HistogramWindows>,
}

#[derive(Debug, Default)]
struct HistogramWindows {
    /// Each bucket's `increase` rollup series.
    buckets: Vec<Labels>,
    /// Per window start, the buckets' increases.
    windows: BTreeMap<i64, Vec<Bucket>>,
    /// Raw exemplars, with the bucket (index into `buckets`) they came with.
    exemplars: Vec<(usize, Exemplar)>,
}

impl Histograms {
    /// Adds bucket series `labels` (bound `le`) of `tenant`: its windows
    /// and the raw exemplars it carries over them.
    pub(crate) fn add(
        &mut self,
        tenant: &str,
        labels: &Labels,
        le: f64,
        wins: &[SeriesWindow],
        exemplars: Vec<Exemplar>,
    ) {
        let g = self
            .groups
            .entry((tenant.to_string(), labels.without(&["le"])))
            .or_default();
        let b = g.buckets.len();
        g.buckets.push(rollup_labels(labels, Rollup::Increase));
        for w in wins {
            if let Some(inc) = Rollup::Increase.samples(&w.win, w.prev_t).first() {
                g.windows
                    .entry(w.win.start)
                    .or_default()
                    .push(Bucket { le, count: inc.v });
            }
        }
        g.exemplars.extend(exemplars.into_iter().map(|e| (b, e)));
    }

    /// The exemplars chosen per window of `r` ms, by rollup series id;
    /// and for windows starting before `recompute_before` (computed again)
    /// the ranges whose earlier choice is cleared first.
    #[allow(clippy::type_complexity)]
    pub(crate) fn exemplars(
        self,
        r: i64,
        recompute_before: i64,
    ) -> (Vec<(SeriesId, i64, i64)>, Vec<(SeriesId, Exemplar)>) {
        let (mut clear, mut items) = (Vec::new(), Vec::new());
        for ((tenant, _), g) in self.groups {
            let ids: Vec<SeriesId> = g.buckets.iter().map(|l| SeriesId::of(&tenant, l)).collect();
            for (&w, buckets) in &g.windows {
                if w < recompute_before {
                    clear.extend(ids.iter().map(|&id| (id, w, w + r - 1)));
                }
                let inside: Vec<&(usize, Exemplar)> = g
                    .exemplars
                    .iter()
                    .filter(|(_, e)| e.t >= w && e.t < w + r)
                    .collect();
                if inside.is_empty() {
                    continue;
                }
                let seen: Vec<Exemplar> = inside.iter().map(|(_, e)| e.clone()).collect();
                let picked = pick_exemplars(w, r, buckets, &seen);
                for e in [picked.at_p99, picked.max].into_iter().flatten() {
                    if let Some((b, _)) = inside.iter().find(|(_, x)| *x == e) {
                        items.push((ids[*b], e));
                    }
                }
            }
        }
        (clear, items)
    }
}

/// No pass has run yet (the marker's `done`).
const NEVER: i64 = i64::MIN;

/// One aggregated namespace's downsampling state on the raw node.
#[derive(Debug)]
pub(crate) struct Downsampler {
    pub(crate) resolution_ms: i64,
    /// How far behind the newest sample a window stays open.
    pub(crate) lateness_ms: i64,
    /// `<namespace dir>/downsampled`.
    marker: PathBuf,
    /// Windows starting before this are written ([`NEVER`]: none yet).
    done: AtomicI64,
    /// The `done` the pass in progress will reach ([`NEVER`]: no pass):
    /// a write landing in its windows while it reads marks them too.
    pending: AtomicI64,
    /// Window starts to compute again (late samples), each with the number
    /// of the mark that last set it: a pass clears only the marks it saw.
    dirty: Mutex<(BTreeMap<i64, u64>, u64)>,
    /// One pass at a time.
    pub(crate) running: Mutex<()>,
}

const MARKER_HEADER: &str = "cairn downsample progress v1";

impl Downsampler {
    /// The state of the namespace kept in `dir`, at resolution
    /// `resolution_ms`, from its marker file if there is one.
    pub(crate) fn open(dir: &Path, resolution_ms: i64) -> Result<Downsampler> {
        let marker = dir.join("downsampled");
        let (done, dirty) = match std::fs::read_to_string(&marker) {
            Ok(text) => parse_marker(&marker, &text)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (NEVER, BTreeSet::new()),
            Err(source) => {
                return Err(Error::Io {
                    context: format!("reading {}", marker.display()),
                    source,
                })
            }
        };
        Ok(Downsampler {
            resolution_ms,
            lateness_ms: resolution_ms + 60_000,
            marker,
            done: AtomicI64::new(done),
            pending: AtomicI64::new(NEVER),
            dirty: Mutex::new((dirty.into_iter().map(|w| (w, 0)).collect(), 0)),
            running: Mutex::new(()),
        })
    }

    /// Windows starting before this are written (None: no pass yet).
    pub(crate) fn done(&self) -> Option<i64> {
        let d = self.done.load(Ordering::Acquire);
        (d != NEVER).then_some(d)
    }

    /// The first window still open when the newest sample is `newest`.
    pub(crate) fn closed_before(&self, newest: Timestamp) -> Timestamp {
        window_start(newest.saturating_sub(self.lateness_ms), self.resolution_ms)
    }

    /// Says a pass is computing the windows before `until` now: from here
    /// on a write into them is marked late too (it may land after the
    /// pass read its series).
    pub(crate) fn begin(&self, until: i64) {
        self.pending.store(until, Ordering::SeqCst);
    }

    /// Windows starting before this are written or being written.
    fn bound(&self) -> i64 {
        self.done
            .load(Ordering::SeqCst)
            .max(self.pending.load(Ordering::SeqCst))
    }

    /// Marks the windows of `times` that were already written, or are
    /// being written by the pass in progress (and each one's next window),
    /// to be computed again, persisting the marks; returns how many were
    /// newly marked.
    pub(crate) fn mark_late(&self, times: impl Iterator<Item = Timestamp>) -> Result<usize> {
        let bound = self.bound();
        if bound == NEVER {
            return Ok(0);
        }
        let r = self.resolution_ms;
        let mut g = self.dirty.lock();
        let (dirty, seq) = &mut *g;
        let before = dirty.len();
        for t in times.filter(|&t| t < bound) {
            let w = window_start(t, r);
            *seq += 1;
            dirty.insert(w, *seq);
            if w + r < bound {
                dirty.insert(w + r, *seq);
            }
        }
        if dirty.len() != before {
            self.persist(self.done.load(Ordering::Acquire), dirty)?;
        }
        Ok(dirty.len() - before)
    }

    /// Whether a write whose oldest sample is at `lo` may be late.
    pub(crate) fn may_be_late(&self, lo: Timestamp) -> bool {
        lo < self.bound()
    }

    /// The late windows to compute again, with their mark numbers.
    pub(crate) fn dirty(&self) -> Vec<(i64, u64)> {
        self.dirty.lock().0.iter().map(|(&w, &s)| (w, s)).collect()
    }

    /// Records that the windows before `done` are written and that those
    /// of `recomputed` were written again (a window marked again since is
    /// kept); the pass is over.
    pub(crate) fn advance(&self, done: i64, recomputed: &[(i64, u64)]) -> Result<()> {
        let mut g = self.dirty.lock();
        for (w, seq) in recomputed {
            if g.0.get(w) == Some(seq) {
                g.0.remove(w);
            }
        }
        let done = done.max(self.done.load(Ordering::Acquire));
        self.persist(done, &g.0)?;
        self.done.store(done, Ordering::SeqCst);
        self.pending.store(NEVER, Ordering::SeqCst);
        Ok(())
    }

    /// Writes the marker crash-safely (temp file, fsync, rename, dir fsync).
    fn persist(&self, done: i64, dirty: &BTreeMap<i64, u64>) -> Result<()> {
        let windows: BTreeSet<i64> = dirty.keys().copied().collect();
        let text = format_marker(done, &windows);
        let io = |what: &str| {
            let context = format!("{what} {}", self.marker.display());
            move |source| Error::Io { context, source }
        };
        let tmp = self.marker.with_extension("tmp");
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp).map_err(io("creating"))?;
            f.write_all(text.as_bytes()).map_err(io("writing"))?;
            f.sync_all().map_err(io("syncing"))?;
        }
        std::fs::rename(&tmp, &self.marker).map_err(io("renaming into"))?;
        if let Some(dir) = self.marker.parent() {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io("syncing the directory of"))?;
        }
        Ok(())
    }
}

/// The marker file's text.
fn format_marker(done: i64, dirty: &BTreeSet<i64>) -> String {
    let mut text = format!("{MARKER_HEADER}\ndone {done}\n");
    for w in dirty {
        text.push_str(&format!("dirty {w}\n"));
    }
    text
}

/// Fuzz entry (`downsample_marker_parse`): any text parses or is refused
/// as corrupt, never panics; what parses prints back to what parses the
/// same.
pub(crate) fn fuzz_marker(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("downsampled");
    match parse_marker(path, text) {
        Ok((done, dirty)) => {
            let again = parse_marker(path, &format_marker(done, &dirty));
            assert_eq!(again.ok(), Some((done, dirty)), "marker round trip");
        }
        Err(e) => assert!(matches!(e, Error::Corrupt(_)), "{e}"),
    }
}

fn parse_marker(path: &Path, text: &str) -> Result<(i64, BTreeSet<i64>)> {
    let bad = |line: usize, why: &str| {
        Error::Corrupt(format!(
            "downsample progress {} line {}: {why}",
            path.display(),
            line + 1
        ))
    };
    let mut lines = text.lines().enumerate();
    match lines.next() {
        Some((_, MARKER_HEADER)) => {}
        _ => return Err(bad(0, &format!("expected {MARKER_HEADER:?}"))),
    }
    let mut done = None;
    let mut dirty = BTreeSet::new();
    for (i, line) in lines {
        let (key, value) = line
            .split_once(' ')
            .ok_or_else(|| bad(i, "expected `done <ms>` or `dirty <ms>`"))?;
        let v: i64 = value
            .parse()
            .map_err(|_| bad(i, &format!("{value:?} is not a timestamp")))?;
        match key {
            "done" if done.is_none() => done = Some(v),
            "dirty" => {
                dirty.insert(v);
            }
            _ => return Err(bad(i, &format!("unexpected {key:?}"))),
        }
    }
    let done = done.ok_or_else(|| bad(0, "no `done` line"))?;
    Ok((done, dirty))
}

/// One window of a raw series, with the time of the series' last value
/// before it (the older sample of a pair across the window's start edge).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct SeriesWindow {
    pub(crate) win: Window,
    pub(crate) prev_t: Option<Timestamp>,
}

/// The windows of one series over `[from, to)` (window edges), from its raw
/// samples `samples` (sorted; those before `from` only give the value the
/// first window carries in, as does `prev` when none of them is before
/// `from`).
pub(crate) fn windows(
    resolution_ms: i64,
    from: Timestamp,
    to: Timestamp,
    samples: &[Sample],
    prev: Option<Sample>,
) -> Result<Vec<SeriesWindow>> {
    let split = samples.partition_point(|s| s.t < from);
    let mut prev = samples[..split]
        .iter()
        .rev()
        .find(|s| !cairn_common::is_stale_nan(s.v))
        .copied()
        .or(prev);
    let mut out = Vec::new();
    let mut rest = &samples[split..];
    while let Some(first) = rest.first() {
        if first.t >= to {
            break;
        }
        let w = window_start(first.t, resolution_ms);
        let n = rest.partition_point(|s| s.t < w + resolution_ms);
        let win = Window::from_samples(w, resolution_ms, &rest[..n], prev.map(|p| p.v))
            .map_err(|e| Error::Corrupt(format!("downsampling window {w}: {e}")))?;
        if let Some(win) = win {
            out.push(SeriesWindow {
                win,
                prev_t: prev.map(|p| p.t),
            });
            prev = win.agg.map(|a| a.last).or(prev);
        }
        rest = &rest[n..];
    }
    Ok(out)
}

/// The rollup series of one raw series' windows.
pub(crate) fn rollup_writes(labels: &Labels, wins: &[SeriesWindow]) -> Vec<SeriesWrite> {
    Rollup::ALL
        .iter()
        .map(|&r| SeriesWrite {
            labels: rollup_labels(labels, r),
            samples: wins
                .iter()
                .flat_map(|w| r.samples(&w.win, w.prev_t))
                .collect(),
            exemplars: vec![],
        })
        .filter(|s| !s.samples.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const R: i64 = 60_000;

    fn s(t: i64, v: f64) -> Sample {
        Sample::new(t, v)
    }

    fn rs(r: Rollup, w: &SeriesWindow) -> Vec<Sample> {
        r.samples(&w.win, w.prev_t)
    }

    #[test]
    fn rollups_of_a_counter_with_a_reset_at_a_window_edge() {
        // Window 0: 1, 3; window 1 starts below 3 (a reset at its edge): 1, 2.
        let raw = [
            s(10_000, 1.0),
            s(40_000, 3.0),
            s(60_000, 1.0),
            s(90_000, 2.0),
        ];
        let w = windows(R, 0, 2 * R, &raw, None).unwrap();
        assert_eq!(w.len(), 2);
        let inc: Vec<f64> = w.iter().map(|w| rs(Rollup::Increase, w)[0].v).collect();
        // 3 − 1 inside the first; 1 (after the reset) + 1 in the second.
        assert_eq!(inc, [2.0, 2.0]);
        // None inside either window; the one across window 1's start edge
        // at its newer sample (60 s), naming the older one's time (40 s).
        assert_eq!(rs(Rollup::Resets, &w[0]), [s(R - 1, 0.0)]);
        assert_eq!(
            rs(Rollup::Resets, &w[1]),
            [s(60_000, -40_001.0), s(2 * R - 1, 0.0)]
        );
        assert_eq!(rs(Rollup::Sum, &w[0]), [s(R - 1, 4.0)]);
        assert_eq!(rs(Rollup::Count, &w[1]), [s(2 * R - 1, 2.0)]);
        assert_eq!(rs(Rollup::Last, &w[0]), [s(40_000, 3.0)]);
        // Computing the second window alone, from the samples before it,
        // gives the same window (what a pass after a restart does).
        let again = windows(R, R, 2 * R, &raw, None).unwrap();
        assert_eq!(again, w[1..]);
        // ...and with only the carried value.
        let carried = windows(R, R, 2 * R, &raw[2..], Some(s(40_000, 3.0))).unwrap();
        assert_eq!(carried, w[1..]);
    }

    #[test]
    fn a_staleness_marker_ends_the_last_rollup() {
        let raw = [s(10_000, 5.0), s(20_000, stale_nan())];
        let w = windows(R, 0, R, &raw, None).unwrap();
        let last = rs(Rollup::Last, &w[0]);
        assert_eq!(last[0], s(10_000, 5.0));
        assert!(cairn_common::is_stale_nan(last[1].v) && last[1].t == 20_000);
        assert_eq!(rs(Rollup::Count, &w[0])[0].v, 1.0);
    }

    /// A pass in progress: a sample landing in the windows it is writing
    /// is marked (it may have been read before it landed), and a window
    /// marked again while it was being recomputed stays marked.
    #[test]
    fn writes_during_a_pass_are_marked_and_stay_marked() {
        let dir = tempfile::tempdir().unwrap();
        let d = Downsampler::open(dir.path(), R).unwrap();
        d.advance(10 * R, &[]).unwrap();
        d.mark_late([2 * R + 5].into_iter()).unwrap();
        // A pass begins: it recomputes windows 2 and 3, writes 10..15.
        let marks = d.dirty();
        d.begin(15 * R);
        // Meanwhile: a sample in window 12 (being written) and window 2
        // (being recomputed) arrive.
        assert!(d.may_be_late(12 * R + 1) && !d.may_be_late(15 * R));
        d.mark_late([12 * R + 1, 2 * R + 9].into_iter()).unwrap();
        d.advance(15 * R, &marks).unwrap();
        assert_eq!(windows_of(&d), [2 * R, 3 * R, 12 * R, 13 * R]);
        assert!(!d.may_be_late(15 * R), "no pass in progress");
    }

    fn windows_of(d: &Downsampler) -> Vec<i64> {
        d.dirty().into_iter().map(|m| m.0).collect()
    }

    #[test]
    fn the_marker_survives_a_reopen_and_a_corrupt_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let d = Downsampler::open(dir.path(), R).unwrap();
        assert_eq!(d.done(), None);
        // Nothing is late before the first pass.
        d.mark_late([5].into_iter()).unwrap();
        assert!(d.dirty().is_empty());
        d.advance(10 * R, &[]).unwrap();
        d.mark_late([3 * R + 5, 20 * R].into_iter()).unwrap();
        assert_eq!(windows_of(&d), [3 * R, 4 * R]);
        let d = Downsampler::open(dir.path(), R).unwrap();
        assert_eq!(d.done(), Some(10 * R));
        let marks = d.dirty();
        assert_eq!(windows_of(&d), [3 * R, 4 * R]);
        d.advance(11 * R, &marks[..1]).unwrap();
        let d = Downsampler::open(dir.path(), R).unwrap();
        assert_eq!((d.done(), windows_of(&d)), (Some(11 * R), vec![4 * R]));
        std::fs::write(
            dir.path().join("downsampled"),
            format!("{MARKER_HEADER}\ndone x\n"),
        )
        .unwrap();
        let e = Downsampler::open(dir.path(), R).unwrap_err().to_string();
        assert!(
            e.contains("downsampled line 2") && e.contains("\"x\""),
            "{e}"
        );
    }
}
