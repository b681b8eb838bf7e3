use super::*;
use cairn_common::{MatchOp, SeriesWrite};
use std::sync::atomic::AtomicI64;

const H: i64 = 3_600_000;
const DAY: i64 = 24 * H;

struct Fixture {
    dir: tempfile::TempDir,
    now: Arc<AtomicI64>,
}

impl Fixture {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            now: Arc::new(AtomicI64::new(100 * DAY)),
        }
    }

    fn open(&self) -> Arc<Storage> {
        let now = self.now.clone();
        let mut cfg = StorageConfig::new(self.dir.path());
        cfg.num_shards = 4;
        Storage::open(cfg, Arc::new(move || now.load(Ordering::SeqCst))).unwrap()
    }
}

fn labels(name: &str, job: &str) -> Labels {
    Labels::from_pairs(&[("__name__", name), ("job", job)])
}

fn batch(series: Vec<(Labels, Vec<(i64, f64)>)>) -> WriteBatch {
    WriteBatch {
        series: series
            .into_iter()
            .map(|(labels, s)| SeriesWrite {
                labels,
                samples: s.into_iter().map(|(t, v)| Sample::new(t, v)).collect(),
                exemplars: vec![],
            })
            .collect(),
        metadata: vec![],
    }
}

fn read(s: &Storage, tenant: &str, name: &str) -> Vec<(String, Vec<(i64, u64)>)> {
    let m = [Matcher::new(MatchOp::Equal, "__name__", name).unwrap()];
    s.select(tenant, &m, i64::MIN / 2, i64::MAX / 2)
        .unwrap()
        .into_iter()
        .map(|d| {
            (
                d.labels.to_string(),
                d.samples.iter().map(|x| (x.t, x.v.to_bits())).collect(),
            )
        })
        .collect()
}

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

#[test]
fn commit_log_is_truncated_after_flush() {
    let f = Fixture::new();
    let now = f.now.load(Ordering::SeqCst);
    let s = f.open();
    for i in 0..50 {
        s.write(
            "t",
            batch(vec![(
                labels("m", &format!("j{i}")),
                vec![(now - 3 * H + i, i as f64)],
            )]),
        )
        .unwrap();
    }
    // Closed windows are flushed without force; the open one stays in memory.
    s.write("t", batch(vec![(labels("m", "open"), vec![(now, 1.0)])]))
        .unwrap();
    s.flush(false).unwrap();
    let segs_before = s.disk_stats().0 .0;
    s.flush(true).unwrap();
    let ((segs, _), (filesets, _)) = s.disk_stats();
    assert!(segs <= segs_before);
    assert_eq!(
        segs, 1,
        "only the active segment remains after a full flush"
    );
    assert!(filesets >= 2);
    drop(s);
    let s = f.open();
    assert_eq!(read(&s, "t", "m").len(), 51);
}

#[test]
fn overwrite_survives_replay_of_older_segment() {
    let f = Fixture::new();
    let now = f.now.load(Ordering::SeqCst);
    let s = f.open();
    let x = labels("m", "x");
    let old_t = now - 5 * DAY;
    // Segment 1: the old sample plus one in the open window (keeps segment 1 alive).
    s.write(
        "t",
        batch(vec![(x.clone(), vec![(old_t, 1.0), (now, 7.0)])]),
    )
    .unwrap();
    s.flush(false).unwrap();
    // Last write wins: the overwrite lands in a new volume of the old block.
    s.write("t", batch(vec![(x.clone(), vec![(old_t, 2.0)])]))
        .unwrap();
    s.flush(false).unwrap();
    assert!(
        s.disk_stats().0 .0 >= 2,
        "segment 1 must still exist for the open window"
    );
    s.close().unwrap();
    drop(s);
    let s = f.open();
    let got = read(&s, "t", "m");
    assert_eq!(
        got[0].1,
        vec![(old_t, 2.0f64.to_bits()), (now, 7.0f64.to_bits())]
    );
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
