//! The node as a whole: write, flush, reopen, read, retention; the write
//! path's refusals.

use crate::contract::READ_BATCH;
use crate::test_support::*;
use crate::{index, Storage, StorageConfig};
use cairn_common::limits::hard;
use cairn_common::{Exemplar, Labels, MatchOp, Matcher, SampleWriter, SeriesSource, StorageError};
use std::sync::atomic::Ordering;
use std::sync::Arc;

#[test]
fn write_flush_reopen_backfill_and_retention() {
    let f = Fixture::new();
    let now = f.now.load(Ordering::SeqCst);
    let s = f.open();
    let a = labels("m", "a");
    let out = s
        .write(
            "t",
            batch(vec![(
                a.clone(),
                vec![
                    (now - 10, 1.0),
                    (now - 30, 3.0),
                    (now - 20, 2.0),
                    (now - 5 * DAY, 0.5),
                ],
            )]),
        )
        .unwrap();
    assert_eq!(out.accepted_samples, 4);
    // Older than retention: refused with a reason; the rest of the batch stays.
    let out = s
        .write(
            "t",
            batch(vec![(
                a.clone(),
                vec![(now - 31 * DAY, 9.0), (now - 1, 4.0)],
            )]),
        )
        .unwrap();
    assert_eq!(out.accepted_samples, 1);
    assert_eq!(out.rejections.len(), 1);
    assert!(
        out.rejections[0].reason.contains("retention"),
        "{:?}",
        out.rejections
    );
    assert!(out.rejections[0].series.contains("job=\"a\""));
    // The staleness marker survives bit-exactly.
    s.write(
        "t",
        batch(vec![(a.clone(), vec![(now, cairn_common::stale_nan())])]),
    )
    .unwrap();
    let want = vec![(
        a.to_string(),
        vec![
            (now - 5 * DAY, 0.5f64.to_bits()),
            (now - 30, 3.0f64.to_bits()),
            (now - 20, 2.0f64.to_bits()),
            (now - 10, 1.0f64.to_bits()),
            (now - 1, 4.0f64.to_bits()),
            (now, cairn_common::STALE_NAN_BITS),
        ],
    )];
    assert_eq!(read(&s, "t", "m"), want);
    // Other tenants see nothing.
    assert!(read(&s, "u", "m").is_empty());

    assert!(s.flush(true).unwrap() >= 2);
    assert_eq!(read(&s, "t", "m"), want);
    // Write into an already-flushed block (new volume) and then reopen without flushing.
    s.write(
        "t",
        batch(vec![(a.clone(), vec![(now - 5 * DAY + 1, 0.75)])]),
    )
    .unwrap();
    s.close().unwrap();
    drop(s);
    let s = f.open();
    let got = read(&s, "t", "m");
    assert_eq!(got[0].1.len(), 7);
    assert_eq!(got[0].1[1], (now - 5 * DAY + 1, 0.75f64.to_bits()));
    s.flush(true).unwrap();
    drop(s);
    let s = f.open();
    assert_eq!(read(&s, "t", "m")[0].1.len(), 7);
    assert_eq!(s.label_values("t", "job", &[], 0, now).unwrap(), vec!["a"]);

    // Retention removes whole filesets once the clock moves on.
    f.now.store(now + 40 * DAY, Ordering::SeqCst);
    s.enforce_retention();
    assert!(read(&s, "t", "m").is_empty());
}

/// A large selection read shard by shard in batches answers like
/// one-by-one reads: every series, in label order, with its samples, some
/// from filesets and some from the head.
#[test]
fn large_selection_is_complete_and_ordered() {
    let f = Fixture::new();
    let s = f.open();
    let now = f.now.load(Ordering::SeqCst);
    let t0 = now - 3 * H;
    let series: Vec<(Labels, Vec<(i64, f64)>)> = (0..5000)
        .map(|i| {
            let l = labels("big", &format!("j{i:05}"));
            let pts = (0..4)
                .map(|k| (t0 + k * 60_000 + i, (i * 10 + k) as f64))
                .collect();
            (l, pts)
        })
        .collect();
    s.write("t", batch(series.clone())).unwrap();
    s.flush(true).unwrap();
    // Newer samples of every other series stay in the head.
    let newer: Vec<(Labels, Vec<(i64, f64)>)> = series
        .iter()
        .step_by(2)
        .map(|(l, _)| (l.clone(), vec![(now - 1000, -1.0)]))
        .collect();
    s.write("t", batch(newer)).unwrap();
    let got = read(&s, "t", "big");
    assert_eq!(got.len(), 5000);
    for (i, (l, pts)) in got.iter().enumerate() {
        assert_eq!(l, &labels("big", &format!("j{i:05}")).to_string());
        let mut want: Vec<(i64, u64)> = (0..4)
            .map(|k| {
                (
                    t0 + k * 60_000 + i as i64,
                    ((i as i64 * 10 + k) as f64).to_bits(),
                )
            })
            .collect();
        if i % 2 == 0 {
            want.push((now - 1000, (-1.0f64).to_bits()));
        }
        assert_eq!(pts, &want, "series {i}");
    }
    // Batched, the same series in the same order, in batches of at most
    // READ_BATCH; stopping early stops the batches.
    let m = [Matcher::new(MatchOp::Equal, "__name__", "big").unwrap()];
    let mut batched = Vec::new();
    let mut sizes = Vec::new();
    s.select_batched("t", &m, i64::MIN / 2, i64::MAX / 2, &mut |b| {
        sizes.push(b.len());
        batched.extend(b.into_iter().map(|d| {
            (
                d.labels.to_string(),
                d.samples
                    .iter()
                    .map(|x| (x.t, x.v.to_bits()))
                    .collect::<Vec<_>>(),
            )
        }));
        true
    })
    .unwrap();
    assert_eq!(batched, got);
    assert!(
        sizes.len() > 1 && sizes.iter().all(|&n| n <= READ_BATCH),
        "{sizes:?}"
    );
    let mut calls = 0;
    s.select_batched("t", &m, i64::MIN / 2, i64::MAX / 2, &mut |_| {
        calls += 1;
        false
    })
    .unwrap();
    assert_eq!(calls, 1);
}

/// `series` with a time range returns the series with data in block
/// windows overlapping it, from filesets and from the head.
#[test]
fn series_honours_the_time_range_at_block_granularity() {
    let f = Fixture::new();
    let s = f.open();
    let now = f.now.load(Ordering::SeqCst);
    let old = now - 5 * DAY;
    s.write("t", batch(vec![(labels("m", "old"), vec![(old, 1.0)])]))
        .unwrap();
    s.flush(true).unwrap();
    s.write(
        "t",
        batch(vec![(labels("m", "new"), vec![(now - 60_000, 2.0)])]),
    )
    .unwrap();
    let m = [Matcher::new(MatchOp::Equal, "__name__", "m").unwrap()];
    let jobs = |start: i64, end: i64| -> Vec<String> {
        s.series("t", &m, start, end)
            .unwrap()
            .iter()
            .map(|l| l.get("job").unwrap_or("").to_string())
            .collect()
    };
    assert_eq!(jobs(now - H, now), vec!["new"]);
    assert_eq!(jobs(old - 10 * 60_000, old + 10 * 60_000), vec!["old"]);
    assert!(jobs(now - 3 * DAY, now - 2 * DAY).is_empty());
    assert_eq!(jobs(i64::MIN / 4, i64::MAX / 4), vec!["new", "old"]);
    assert_eq!(jobs(old, now), vec!["new", "old"]);
    // Label values with matchers follow the same range.
    assert_eq!(
        s.label_values("t", "job", &m, now - H, now).unwrap(),
        vec!["new".to_string()]
    );
}

/// Within a block, a series is listed for a range only when it has a
/// sample inside it: a target stopped 27 s ago is not listed for the last
/// 10 s, in the head and after a flush (issue 12).
#[test]
fn series_honours_the_time_range_to_the_series_own_samples() {
    let f = Fixture::new();
    let s = f.open();
    let now = f.now.load(Ordering::SeqCst);
    s.write(
        "t",
        batch(vec![
            (
                labels("m", "stopped"),
                vec![(now - 60_000, 1.0), (now - 27_000, 1.0)],
            ),
            (
                labels("m", "live"),
                vec![(now - 60_000, 1.0), (now - 1_000, 1.0)],
            ),
        ]),
    )
    .unwrap();
    let m = [Matcher::new(MatchOp::Equal, "__name__", "m").unwrap()];
    let jobs = |start: i64, end: i64| -> Vec<String> {
        s.series("t", &m, start, end)
            .unwrap()
            .iter()
            .map(|l| l.get("job").unwrap_or("").to_string())
            .collect()
    };
    for when in ["in the head", "after a flush"] {
        assert_eq!(jobs(now - 10_000, now), vec!["live"], "{when}");
        assert_eq!(jobs(now - 30_000, now), vec!["live", "stopped"], "{when}");
        assert!(
            jobs(now - 20 * 60_000, now - 2 * 60_000).is_empty(),
            "{when}"
        );
        assert_eq!(
            s.label_values("t", "job", &m, now - 10_000, now).unwrap(),
            vec!["live".to_string()],
            "{when}"
        );
        s.flush(true).unwrap();
    }
}

/// A series beyond the hard bounds is refused with a reason (the rest of
/// the write goes on); one at the bounds is stored and survives a
/// restart and a flush.
#[test]
fn label_sets_beyond_the_bounds_are_refused_per_series() {
    let f = Fixture::new();
    let now = f.now.load(Ordering::SeqCst);
    let s = f.open();
    let mut big: Vec<(String, String)> = (0..10_001)
        .map(|i| (format!("l{i:05}"), "x".to_string()))
        .collect();
    big.push(("__name__".into(), "big".into()));
    let big = Labels::from_pairs(&big);
    let mut edge = vec![("__name__".to_string(), "edge".to_string())];
    edge.push(("v".into(), "é".repeat(hard::MAX_LABEL_VALUE_BYTES / 2)));
    let edge = Labels::from_pairs(&edge);
    let ex = Exemplar {
        labels: label_set(hard::MAX_LABELS + 1, &[6], &[1], ""),
        value: 1.0,
        t: now,
    };
    let mut b = batch(vec![
        (big, vec![(now, 1.0)]),
        (edge.clone(), vec![(now, 2.0)]),
        (labels("m", "ok"), vec![(now, 3.0)]),
    ]);
    b.series[2].exemplars.push(ex);
    let out = s.write("t", b).unwrap();
    assert_eq!(out.accepted_samples, 2);
    assert_eq!(out.rejections.len(), 2, "{:?}", out.rejections);
    assert!(
        out.rejections[0].reason.contains("10002 labels"),
        "{:?}",
        out.rejections
    );
    assert!(out.rejections[0].series.len() <= 1100);
    assert!(out.rejections[1].reason.contains("exemplar"));
    s.close().unwrap();
    drop(s);
    let s = f.open();
    assert!(read(&s, "t", "big").is_empty());
    assert_eq!(read(&s, "t", "edge")[0].1, vec![(now, 2.0f64.to_bits())]);
    s.flush(true).unwrap();
    drop(s);
    let s = f.open();
    assert_eq!(read(&s, "t", "edge")[0].0, edge.to_string());
}

/// Times beyond Prometheus's range are refused per series; the latest
/// storable time is readable and survives flush and retention; reads
/// over extreme or inverted ranges answer, never panic.
#[test]
fn time_edges() {
    let f = Fixture::new();
    let now = f.now.load(Ordering::SeqCst);
    let s = f.open();
    let out = s
        .write(
            "t",
            batch(vec![
                (labels("far", "max"), vec![(i64::MAX, 1.0)]),
                (
                    labels("far", "over"),
                    vec![(hard::MAX_TIME_MS + 1, 1.0), (now, 5.0)],
                ),
                (labels("far", "edge"), vec![(hard::MAX_TIME_MS, 2.0)]),
                (
                    labels("far", "min"),
                    vec![(i64::MIN, 1.0), (hard::MIN_TIME_MS, 1.0)],
                ),
            ]),
        )
        .unwrap();
    assert_eq!(out.accepted_samples, 2);
    let reasons: Vec<&str> = out.rejections.iter().map(|r| r.reason.as_str()).collect();
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert!(reasons[0].contains("latest storable time"), "{reasons:?}");
    assert!(reasons[2].contains("retention"), "{reasons:?}");
    let m = [Matcher::new(MatchOp::Equal, "__name__", "far").unwrap()];
    for (a, b) in [
        (i64::MIN, i64::MAX),
        (i64::MAX, i64::MIN),
        (-9_200_000_000_000_000, -9_200_000_000_000_000),
        (i64::MIN, i64::MIN),
        (i64::MAX, i64::MAX),
        (-9_223_372_036_854_775, 9_223_372_036_854_775),
        (now, now - 1),
    ] {
        let got = s.select("t", &m, a, b).unwrap();
        if a > b {
            assert!(got.is_empty());
        }
        s.series("t", &m, a, b).unwrap();
        s.label_values("t", "job", &m, a, b).unwrap();
        s.exemplars("t", &m, a, b).unwrap();
    }
    let edge = |s: &Storage| {
        s.select("t", &m, hard::MAX_TIME_MS, i64::MAX)
            .unwrap()
            .iter()
            .map(|d| d.samples.len())
            .sum::<usize>()
    };
    assert_eq!(edge(&s), 1);
    s.flush(true).unwrap();
    s.enforce_retention();
    assert_eq!(edge(&s), 1);
    // Inverted ranges over filesets too.
    assert!(s.select("t", &m, now, now - 1).unwrap().is_empty());
    drop(s);
    let s = f.open();
    assert_eq!(edge(&s), 1);
}

/// A request creating more new series than the limit is refused whole
/// before anything is stored; existing series do not count.
#[test]
fn new_series_per_request_limit() {
    let f = Fixture::new();
    let now = f.now.load(Ordering::SeqCst);
    let mut cfg = StorageConfig::new(f.dir.path());
    cfg.num_shards = 4;
    cfg.max_new_series_per_request = 3;
    let clock = f.now.clone();
    let s = Storage::open(cfg, Arc::new(move || clock.load(Ordering::SeqCst))).unwrap();
    let mk = |r: std::ops::Range<i32>| {
        batch(
            r.map(|i| (labels("n", &format!("j{i}")), vec![(now, i as f64)]))
                .collect(),
        )
    };
    let e = s.write("t", mk(0..4)).unwrap_err();
    assert!(matches!(e, StorageError::Invalid(_)), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("ingest.max-new-series-per-request") && msg.contains("limit of 3"),
        "{msg}"
    );
    assert!(read(&s, "t", "n").is_empty());
    assert!(s.series("t", &[], i64::MIN, i64::MAX).unwrap().is_empty());
    // The same series repeated in one request count once.
    let mut b = mk(0..3);
    b.series.extend(mk(0..3).series);
    s.write("t", b).unwrap();
    // Three known and three new: within the limit.
    s.write("t", mk(0..6)).unwrap();
    assert_eq!(read(&s, "t", "n").len(), 6);
}

/// A series given by id alone (no labels, as a peer sends a series its
/// replica holds) is taken when the store holds it, and refused whole —
/// retryable, naming why, nothing stored — when it does not.
#[test]
fn a_series_by_id_alone_is_taken_only_when_held() {
    let f = Fixture::new();
    let now = f.now.load(Ordering::SeqCst);
    let s = f.open();
    let unknown = |ids: &[cairn_common::SeriesId]| {
        cairn_storage_api::ShardWriter::unknown_series(&*s, "t", "raw", ids)
    };
    let b = batch(vec![(labels("n", "a"), vec![(now, 1.0)])]);
    let id = b.series[0].id;
    SampleWriter::write(&*s, "t", b).unwrap();
    assert!(unknown(&[id]).is_empty());
    let by_id = |id, t: i64| cairn_common::PreparedBatch {
        series: vec![cairn_common::PreparedSeries {
            id,
            labels: cairn_common::LazyLabels::new(Arc::new(Vec::new()), Vec::new()),
            samples: vec![cairn_common::Sample::new(t, 2.0)],
            exemplars: vec![],
        }],
        metadata: vec![],
    };
    SampleWriter::write(&*s, "t", by_id(id, now + 1000)).unwrap();
    assert_eq!(
        read(&s, "t", "n")[0].1.len(),
        2,
        "appended to the held series"
    );
    let stranger = cairn_common::SeriesId(id.0 ^ 1);
    assert_eq!(unknown(&[stranger, id]), vec![stranger]);
    let e = SampleWriter::write(&*s, "t", by_id(stranger, now + 2000)).unwrap_err();
    assert!(matches!(e, StorageError::Unavailable(_)), "{e}");
    assert!(
        e.to_string().contains(cairn_storage_api::NOT_HELD_BY_ID),
        "{e}"
    );
    assert_eq!(read(&s, "t", "n")[0].1.len(), 2);
}

/// An index entry that does not decode leaves its series out of reads
/// (logged and counted) instead of failing every query touching it.
#[test]
fn undecodable_index_entry_is_skipped() {
    let f = Fixture::new();
    let now = f.now.load(Ordering::SeqCst);
    let s = f.open();
    s.write(
        "t",
        batch(vec![
            (labels("x", "a"), vec![(now, 1.0)]),
            (labels("x", "b"), vec![(now, 2.0)]),
        ]),
    )
    .unwrap();
    s.flush(true).unwrap();
    s.close().unwrap();
    drop(s);
    {
        let idx = index::Index::open(&f.dir.path().join("index")).unwrap();
        idx.corrupt_entry_for_test(0);
    }
    let s = f.open();
    let got = read(&s, "t", "x");
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(s.index.skipped_entries() >= 1);
    let text = crate::metrics::render(&s);
    assert!(
        text.contains("cairn_storage_index_entries_skipped_total 1"),
        "{text}"
    );
    // Writes still work, for the damaged series too.
    s.write("t", batch(vec![(labels("x", "c"), vec![(now, 3.0)])]))
        .unwrap();
    assert_eq!(read(&s, "t", "x").len(), 2);
}

/// Rollups of one aggregated namespace: (series text, samples as (t, bits)).
fn rollups(s: &Storage, ns: &str, name: &str) -> Vec<(String, Vec<(i64, u64)>)> {
    let m = [Matcher::new(MatchOp::Equal, "__name__", name).unwrap()];
    let store = s.in_namespace(ns).unwrap();
    let mut out: Vec<(String, Vec<(i64, u64)>)> = store
        .select("t", &m, i64::MIN / 2, i64::MAX / 2)
        .unwrap()
        .into_iter()
        .map(|d| {
            (
                d.labels.to_string(),
                d.samples.iter().map(|x| (x.t, x.v.to_bits())).collect(),
            )
        })
        .collect();
    out.sort();
    out
}

fn values_of(r: &[(String, Vec<(i64, u64)>)], rollup: &str) -> Vec<(i64, f64)> {
    let key = format!("__rollup__=\"{rollup}\"");
    r.iter()
        .find(|(l, _)| l.contains(&key))
        .map(|(_, v)| v.iter().map(|&(t, b)| (t, f64::from_bits(b))).collect())
        .unwrap_or_default()
}

#[test]
fn downsampling_writes_each_closed_window_once_the_same_after_a_restart_and_again_when_late() {
    use crate::Namespace;
    const R: i64 = 60_000;
    let f = Fixture::new();
    let now = f.now.load(Ordering::SeqCst);
    let t0 = now - now.rem_euclid(R) - 20 * R;
    let agg = Namespace::aggregated("1m:30d".parse().unwrap(), None).unwrap();
    let ns = agg.name.clone();
    let tune = |c: &mut StorageConfig| c.namespaces.push(agg.clone());
    let s = f.open_with(tune);
    // A counter scraped every 15 s (offset 1 s), reset after 10 windows; a gauge.
    let scrapes: Vec<i64> = (0..64).map(|k| t0 + 1000 + k * 15_000).collect();
    let counter: Vec<(i64, f64)> = scrapes
        .iter()
        .enumerate()
        .map(|(k, &t)| {
            (
                t,
                if k < 40 {
                    k as f64 * 2.0
                } else {
                    (k - 40) as f64
                },
            )
        })
        .collect();
    let gauge: Vec<(i64, f64)> = scrapes
        .iter()
        .map(|&t| (t, (t / 1000 % 7) as f64))
        .collect();
    s.write(
        "t",
        batch(vec![
            (labels("c", "a"), counter.clone()),
            (labels("g", "a"), gauge.clone()),
        ]),
    )
    .unwrap();
    // Newest sample at t0 + 946 s: windows closed up to newest − 2 min.
    assert_eq!(s.downsample().unwrap(), 2 * 13);
    assert_eq!(s.metrics.downsample_windows.get(), 2 * 13);
    let g = rollups(&s, &ns, "g");
    let sums = values_of(&g, "sum");
    assert_eq!(sums.len(), 13);
    for &(t, v) in &sums {
        let w = t + 1 - R;
        assert_eq!(w.rem_euclid(R), 0);
        let want: f64 = gauge
            .iter()
            .filter(|x| x.0 >= w && x.0 < w + R)
            .map(|x| x.1)
            .sum();
        assert_eq!(v, want, "sum of window {w}");
    }
    assert!(values_of(&g, "count").iter().all(|x| x.1 == 4.0));
    // The counter's increases add up to the raw increase across the same
    // windows, the reset (at scrape 40, in window 10) counted once.
    let c = rollups(&s, &ns, "c");
    let inc: f64 = values_of(&c, "increase").iter().map(|x| x.1).sum();
    let last_in = counter.iter().rfind(|x| x.0 < t0 + 13 * R).unwrap().1;
    assert_eq!(inc, 39.0 * 2.0 + last_in);
    // It is the first scrape of window 10: a reset across its start edge,
    // at that scrape's time, naming the scrape before it (−(t + 1)).
    let resets = values_of(&c, "resets");
    assert_eq!(resets.iter().filter(|x| x.1 > 0.0).count(), 0);
    assert_eq!(
        resets.iter().filter(|x| x.1 < 0.0).collect::<Vec<_>>(),
        [&(counter[40].0, -(counter[39].0 as f64) - 1.0)]
    );
    assert_eq!(
        values_of(&c, "last").last().unwrap(),
        counter.iter().rfind(|x| x.0 < t0 + 13 * R).unwrap()
    );
    // A second pass with nothing new writes nothing.
    assert_eq!(s.downsample().unwrap(), 0);
    let before = (rollups(&s, &ns, "c"), rollups(&s, &ns, "g"));
    s.close().unwrap();
    drop(s);

    // Reopened (from the commit logs): the same rollups, and the pass goes
    // on from its marker.
    let s = f.open_with(tune);
    assert_eq!((rollups(&s, &ns, "c"), rollups(&s, &ns, "g")), before);
    assert_eq!(s.downsample().unwrap(), 0, "nothing new since the marker");

    // A late sample in window 2 (already written): that window and the one
    // after it are computed again; the gauge's window sum takes it in.
    s.write(
        "t",
        batch(vec![(labels("g", "a"), vec![(t0 + 2 * R + 500, 100.0)])]),
    )
    .unwrap();
    assert_eq!(s.metrics.downsample_late_windows.get(), 2);
    let gauge = |s: &Arc<Storage>, name: &str| -> String {
        let text = crate::metrics::render(s);
        let key = format!("{name}{{namespace=\"{ns}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(key.as_str()))
            .unwrap_or_else(|| panic!("no {key} in {text}"))
            .to_string()
    };
    assert_eq!(
        gauge(&s, "cairn_storage_downsample_late_windows_pending"),
        "2.0"
    );
    assert_eq!(gauge(&s, "cairn_storage_downsample_windows_pending"), "0.0");
    // Written up to t0 + 13m; the newest sample is at t0 + 946 s.
    assert_eq!(gauge(&s, "cairn_storage_downsample_lag_seconds"), "166.0");
    assert_eq!(s.downsample().unwrap(), 2 * 2);
    assert_eq!(
        gauge(&s, "cairn_storage_downsample_late_windows_pending"),
        "0.0"
    );
    assert_eq!(s.metrics.downsample_windows.get(), 2 * 2);
    let sums2 = values_of(&rollups(&s, &ns, "g"), "sum");
    assert_eq!(sums2[2].1, sums[2].1 + 100.0);
    assert_eq!(sums2[3], sums[3]);
    assert_eq!(sums2[..2], sums[..2]);
    assert_eq!(sums2[4..], sums[4..]);
    s.close().unwrap();
    drop(s);

    // The marker lost (as if the pass never ran): a pass recomputes every
    // window from the raw data, giving identical rollups.
    std::fs::remove_file(
        f.dir
            .path()
            .join("namespaces")
            .join(&ns)
            .join("downsampled"),
    )
    .unwrap();
    let s = f.open_with(tune);
    let kept = (rollups(&s, &ns, "c"), rollups(&s, &ns, "g"));
    s.write(
        "t",
        batch(vec![(labels("g", "a"), vec![(t0 + 16 * R, 1.0)])]),
    )
    .unwrap();
    assert!(s.downsample().unwrap() >= 2 * 13);
    // (The newer gauge sample closed one more window: compare the first 13.)
    let first13 = |r: Vec<(String, Vec<(i64, u64)>)>| -> Vec<(String, Vec<(i64, u64)>)> {
        r.into_iter()
            .map(|(l, v)| (l, v.into_iter().filter(|x| x.0 < t0 + 13 * R).collect()))
            .collect()
    };
    let again = (rollups(&s, &ns, "c"), rollups(&s, &ns, "g"));
    assert_eq!(first13(again.0), first13(kept.0), "the counter's rollups");
    assert_eq!(first13(again.1), first13(kept.1), "the gauge's rollups");
}

/// Mapping rules as a test sets them: per `job` value, the rules matched.
#[derive(Debug)]
struct JobMapping(Vec<(String, cairn_downsample::MatchedMapping)>);

impl crate::downsample::Mapping for JobMapping {
    fn rules(&self, tenant: &str, labels: &Labels) -> Vec<cairn_downsample::MatchedMapping> {
        assert_eq!(tenant, "t");
        self.0
            .iter()
            .filter(|(job, _)| labels.get("job") == Some(job.as_str()))
            .map(|(_, m)| m.clone())
            .collect()
    }
}

/// A mapping rule keeps its series out of an aggregated namespace for the
/// windows from its cutover on (the windows before it are written as
/// before); a dry-run rule changes nothing and counts what it would have.
#[test]
fn mapping_rules_choose_the_namespaces_from_their_cutover() {
    use crate::Namespace;
    use cairn_downsample::MatchedMapping;
    const R: i64 = 60_000;
    let f = Fixture::new();
    let now = f.now.load(Ordering::SeqCst);
    let t0 = now - now.rem_euclid(2 * R) - 20 * R;
    let one = Namespace::aggregated("1m:30d".parse().unwrap(), None).unwrap();
    let two = Namespace::aggregated("2m:30d".parse().unwrap(), None).unwrap();
    let (ns1, ns2) = (one.name.clone(), two.name.clone());
    let s = f.open_with(|c: &mut StorageConfig| {
        c.namespaces.push(one.clone());
        c.namespaces.push(two.clone());
    });
    let rule =
        |name: &str, namespaces: Vec<String>, cutover_ms: i64, dry_run: bool| MatchedMapping {
            rule: name.into(),
            namespaces,
            cutover_ms,
            dry_run,
        };
    s.set_mapping(Arc::new(JobMapping(vec![
        // `a`: raw only from window 5 on.
        ("a".into(), rule("a-raw-only", vec![], t0 + 5 * R, false)),
        // `b`: 2m only from window 4 on.
        (
            "b".into(),
            rule("b-2m", vec![ns2.clone()], t0 + 4 * R, false),
        ),
        // `c`: a dry run of raw only, from the start.
        ("c".into(), rule("c-try", vec![], t0, true)),
    ])));
    let scrapes: Vec<(i64, f64)> = (0..64)
        .map(|k| (t0 + 1000 + k * 15_000, k as f64))
        .collect();
    let series = ["a", "b", "c", "d"]
        .iter()
        .map(|j| (labels("g", j), scrapes.clone()))
        .collect();
    s.write("t", batch(series)).unwrap();
    // Newest at t0 + 946 s: 13 one-minute windows closed, 6 two-minute ones.
    s.downsample().unwrap();
    // Window starts (from t0) of a series' count rollup.
    let windows = |ns: &str, job: &str| -> Vec<i64> {
        let res = if ns == ns1 { R } else { 2 * R };
        let key = format!("job=\"{job}\"");
        rollups(&s, ns, "g")
            .iter()
            .find(|(l, _)| l.contains(&key) && l.contains("__rollup__=\"count\""))
            .map(|(_, v)| v.iter().map(|&(t, _)| t + 1 - res - t0).collect())
            .unwrap_or_default()
    };
    let w1 = |n: i64| (0..n).map(|k| k * R).collect::<Vec<_>>();
    let w2 = |n: i64| (0..n).map(|k| k * 2 * R).collect::<Vec<_>>();
    assert_eq!(windows(&ns1, "a"), w1(5), "a: 1m until its cutover");
    assert_eq!(
        windows(&ns2, "a")[..],
        w2(6)[..3],
        "a: 2m windows starting before its cutover"
    );
    assert_eq!(windows(&ns1, "b"), w1(4), "b: 1m until its cutover");
    assert_eq!(windows(&ns2, "b"), w2(6), "b: 2m throughout");
    assert_eq!(windows(&ns1, "c"), w1(13), "c: a dry run changes nothing");
    assert_eq!(windows(&ns2, "c"), w2(6));
    assert_eq!(windows(&ns1, "d"), w1(13), "d: no rule, every namespace");
    // Left out: a 8 + 3, b 9 (1m); the dry run would have left out c's 13 + 6.
    assert_eq!(s.metrics.downsample_mapped_out.get(), 8 + 3 + 9);
    assert_eq!(s.metrics.downsample_dry_run_changed.get(), 13 + 6);
    let text = crate::metrics::render(&s);
    assert!(
        text.contains("cairn_storage_downsample_mapped_out_windows_total 20"),
        "{text}"
    );
}

/// A classic histogram keeps, per window, the exemplar at the window's p99
/// (the smallest at or above the estimate from its bucket increases) and
/// the max, on the `increase` rollup of the bucket each came with; a late
/// exemplar that changes a window's choice replaces the earlier one when
/// the window is computed again.
#[test]
fn downsampling_keeps_each_windows_p99_and_max_exemplar() {
    use crate::Namespace;
    use cairn_common::{PreparedBatch, Sample};
    const R: i64 = 60_000;
    let f = Fixture::new();
    let now = f.now.load(Ordering::SeqCst);
    let t0 = now - now.rem_euclid(R) - 20 * R;
    let agg = Namespace::aggregated("1m:30d".parse().unwrap(), None).unwrap();
    let ns = agg.name.clone();
    let s = f.open_with(|c: &mut StorageConfig| c.namespaces.push(agg.clone()));
    let bucket =
        |le: &str| Labels::from_pairs(&[("__name__", "lat_bucket"), ("job", "a"), ("le", le)]);
    let ex = |t: i64, value: f64, trace: String| Exemplar {
        labels: Labels::from_pairs(&[("trace_id", &trace)]),
        value,
        t,
    };
    // Each 15 s scrape adds 90 observations ≤ 0.1, 9 in (0.1, 0.5], 1 in
    // (0.5, 1]: every window's p99 estimate is 0.5. Per window, exemplars
    // 0.05 (le 0.1), 0.45 (le 0.5), 0.7 and 0.9 (le 1).
    let bounds = ["0.1", "0.5", "1", "+Inf"];
    let per_scrape = [90.0, 99.0, 100.0, 100.0];
    let scrapes: Vec<i64> = (0..64).map(|k| t0 + 1000 + k * 15_000).collect();
    let mut series = Vec::new();
    for (b, le) in bounds.iter().enumerate() {
        let samples = scrapes
            .iter()
            .enumerate()
            .map(|(k, &t)| Sample::new(t, per_scrape[b] * (k + 1) as f64))
            .collect();
        let mut exemplars = Vec::new();
        for (k, &t) in scrapes.iter().enumerate() {
            let w = (t - t0) / R;
            let v = match (b, k % 4) {
                (0, 0) => 0.05,
                (1, 1) => 0.45,
                (2, 2) => 0.7,
                (2, 3) => 0.9,
                _ => continue,
            };
            exemplars.push(ex(t, v, format!("w{w}-{v}")));
        }
        series.push(cairn_common::SeriesWrite {
            labels: bucket(le),
            samples,
            exemplars,
        });
    }
    s.write("t", PreparedBatch::from_series("t", series, vec![]))
        .unwrap();
    assert_eq!(s.downsample().unwrap(), 4 * 13);
    let chosen = |s: &Storage| -> Vec<(String, i64, f64, String)> {
        let m = [Matcher::new(MatchOp::Equal, "__name__", "lat_bucket").unwrap()];
        let store = s.in_namespace(&ns).unwrap();
        let mut out = Vec::new();
        for es in store
            .exemplars("t", &m, i64::MIN / 2, i64::MAX / 2)
            .unwrap()
        {
            assert_eq!(
                es.labels.get("__rollup__"),
                Some("increase"),
                "{}",
                es.labels
            );
            for e in es.exemplars {
                out.push((
                    es.labels.get("le").unwrap().to_string(),
                    (e.t - t0) / R,
                    e.value,
                    e.labels.get("trace_id").unwrap().to_string(),
                ));
            }
        }
        out.sort_by_key(|a| (a.1, a.2.to_bits()));
        out
    };
    let want: Vec<(String, i64, f64, String)> = (0..13)
        .flat_map(|w| [0.7, 0.9].map(|v| ("1".to_string(), w, v, format!("w{w}-{v}"))))
        .collect();
    assert_eq!(chosen(&s), want);
    // A late exemplar 0.6 in window 2, on a sample equal to the one before
    // it (no increase): the window is computed again and 0.6, now the
    // smallest at or above the p99, replaces 0.7.
    let late_t = t0 + 2 * R + 500;
    let prev = per_scrape[2] * 8.0; // the le=1 count at the scrape before it
    s.write(
        "t",
        PreparedBatch::from_series(
            "t",
            vec![cairn_common::SeriesWrite {
                labels: bucket("1"),
                samples: vec![Sample::new(late_t, prev)],
                exemplars: vec![ex(late_t, 0.6, "late".into())],
            }],
            vec![],
        ),
    )
    .unwrap();
    assert_eq!(
        s.downsample().unwrap(),
        4 * 2,
        "windows 2 and 3, four buckets"
    );
    let mut want = want;
    want.retain(|e| !(e.1 == 2 && e.2 == 0.7));
    want.push(("1".into(), 2, 0.6, "late".into()));
    want.sort_by_key(|a| (a.1, a.2.to_bits()));
    assert_eq!(chosen(&s), want);
    // The same after a restart.
    s.close().unwrap();
    drop(s);
    let s = f.open_with(|c: &mut StorageConfig| c.namespaces.push(agg.clone()));
    assert_eq!(chosen(&s), want);
}

/// Shard sums (what a replicated read compares to skip a replica that
/// holds the same): two nodes that took the same samples — in other
/// orders and batches, one of them flushed since — have equal sums in
/// every shard; one sample more changes its shard's sum alone; after a
/// restart the windows the node recovered are unknown, and a window first
/// written after it is known.
#[test]
fn shard_sums_tell_nodes_that_took_the_same_samples() {
    use cairn_storage_api::{block_on, SelectRequest, SeriesReader};
    let (fa, fb) = (Fixture::new(), Fixture::new());
    let (a, b) = (fa.open(), fb.open());
    let now = fa.now.load(Ordering::SeqCst);
    let series: Vec<(Labels, Vec<(i64, f64)>)> = (0..20i64)
        .map(|i| {
            let v = (0..10i64)
                .map(|k| (now - 3 * H + k * 60_000 + i, (k * i) as f64 * 0.5))
                .collect();
            (labels("m", &format!("j{i}")), v)
        })
        .collect();
    a.write("t", batch(series.clone())).unwrap();
    for (l, v) in series.iter().rev() {
        b.write("t", batch(vec![(l.clone(), v[5..].to_vec())]))
            .unwrap();
        b.write("t", batch(vec![(l.clone(), v[..5].to_vec())]))
            .unwrap();
    }
    b.flush(true).unwrap();
    let sums = |s: &Storage, from: i64, to: i64| {
        block_on(SeriesReader::shard_sums(
            s,
            SelectRequest::new("t", vec![], from, to),
        ))
        .unwrap()
    };
    let (x, y) = (sums(&a, now - 4 * H, now), sums(&b, now - 4 * H, now));
    assert_eq!(x.len(), 4);
    assert!(x.iter().all(|s| s.1.is_some()), "{x:?}");
    assert_eq!(x, y);
    // A digest select given equal sums leaves those shards out.
    let digests = |s: &Storage, unless: cairn_storage_api::ShardSums| {
        let m = vec![Matcher::new(MatchOp::Equal, "__name__", "m").unwrap()];
        let r = SelectRequest::new("t", m, now - 4 * H, now)
            .with_digest(true)
            .with_digest_unless(unless);
        block_on(async {
            let mut st = SeriesReader::select(s, r).await.unwrap();
            let mut n = 0;
            while let Some(b) = cairn_storage_api::next_batch(&mut st).await {
                n += b.unwrap().len();
            }
            n
        })
    };
    assert_eq!(digests(&b, Vec::new()), 20);
    assert_eq!(digests(&b, x.clone()), 0);
    let mut one_off = x.clone();
    one_off[0].1 = one_off[0].1.map(|v| v ^ 1);
    let n = digests(&b, one_off);
    assert!(n > 0 && n < 20, "{n}");
    b.write(
        "t",
        batch(vec![(series[3].0.clone(), vec![(now - 1, 7.0)])]),
    )
    .unwrap();
    let y = sums(&b, now - 4 * H, now);
    assert_eq!(
        x.iter().zip(&y).filter(|(p, q)| p != q).count(),
        1,
        "{x:?} {y:?}"
    );
    b.close().unwrap();
    drop(b);
    let b = fb.open();
    let y = sums(&b, now - 4 * H, now);
    assert!(y.iter().all(|s| s.1.is_none()), "recovered: unknown {y:?}");
    // A window after every one recovered is counted from the start.
    let later = now + 4 * H;
    let fresh = vec![(labels("m", "new"), vec![(later, 1.0)])];
    fb.now.store(later, Ordering::SeqCst);
    fa.now.store(later, Ordering::SeqCst);
    b.write("t", batch(fresh.clone())).unwrap();
    a.write("t", batch(fresh)).unwrap();
    let (x, y) = (sums(&a, later - 1, later), sums(&b, later - 1, later));
    assert!(y.iter().all(|s| s.1.is_some()), "{y:?}");
    assert_eq!(x, y);
}

/// A select of some shards answers exactly the full select's series of
/// those shards — sorted or in any order — whether their refs' shards
/// were registered since open or read from the registry at open.
#[test]
fn a_select_of_some_shards_keeps_exactly_their_series() {
    use cairn_storage_api::{block_on, SelectRequest, ShardSet};
    let f = Fixture::new();
    let now = f.now.load(Ordering::SeqCst);
    let write = |s: &Storage, from: usize| {
        let series = (from..from + 100)
            .map(|i| (labels("m", &format!("j{i}")), vec![(now - 1000, i as f64)]))
            .collect();
        s.write("t", batch(series)).unwrap();
    };
    let check = |s: &Storage| {
        let m = vec![Matcher::new(MatchOp::Equal, "__name__", "m").unwrap()];
        let read = |shards: ShardSet, any: bool| -> Vec<String> {
            let r = SelectRequest::new("t", m.clone(), now - 2000, now)
                .with_shards(shards)
                .with_any_order(any);
            let mut v: Vec<String> = block_on(cairn_storage_api::select_all(s, r))
                .unwrap()
                .into_iter()
                .map(|d| d.labels.to_string())
                .collect();
            if any {
                v.sort();
            }
            v
        };
        let all = read(ShardSet::All, false);
        for shards in [vec![0], vec![1, 3], vec![0, 1, 2, 3]] {
            let want: Vec<String> = all
                .iter()
                .filter(|l| {
                    let ls = Labels::from_pairs(&[("__name__", "m"), ("job", &l[7..l.len() - 2])]);
                    shards.contains(&cairn_common::SeriesId::of("t", &ls).shard(4))
                })
                .cloned()
                .collect();
            assert!(!want.is_empty());
            assert_eq!(read(ShardSet::only(shards.clone()), false), want);
            assert_eq!(read(ShardSet::only(shards), true), want);
        }
        all.len()
    };
    let s = f.open();
    write(&s, 0);
    assert_eq!(check(&s), 100);
    s.close().unwrap();
    drop(s);
    let s = f.open();
    assert_eq!(check(&s), 100);
    write(&s, 100);
    assert_eq!(check(&s), 200);
}
