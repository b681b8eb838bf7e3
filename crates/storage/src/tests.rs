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

mod hardening {
    use super::*;
    use cairn_common::Label;
    use proptest::prelude::*;

    /// A label set of `n` labels, names ascending by a 4-digit prefix and
    /// padded to their chosen length, values of their chosen length.
    fn label_set(n: usize, name_lens: &[usize], value_lens: &[usize], uni: &str) -> Labels {
        let v = (0..n)
            .map(|i| {
                let mut name = format!("{i:04}");
                let nl = name_lens[i % name_lens.len()].max(4);
                name.extend(std::iter::repeat_n('n', nl - 4));
                let vl = value_lens[i % value_lens.len()];
                let mut value: String = uni.chars().take_while(|_| true).collect();
                while value.len() > vl {
                    value.pop();
                }
                value.extend(std::iter::repeat_n('v', vl - value.len()));
                Label::new(name, value)
            })
            .collect();
        Labels::from_sorted_unchecked(v)
    }

    fn len_up_to(max: usize) -> impl Strategy<Value = usize> {
        prop_oneof![8 => 0usize..24, 1 => Just(max), 1 => 0..=max]
    }

    fn labels_strategy() -> impl Strategy<Value = Labels> {
        (
            prop_oneof![6 => 0usize..8, 1 => Just(hard::MAX_LABELS), 1 => 0..=hard::MAX_LABELS],
            proptest::collection::vec(len_up_to(hard::MAX_LABEL_NAME_BYTES), 1..4),
            proptest::collection::vec(len_up_to(hard::MAX_LABEL_VALUE_BYTES), 1..4),
            "\\PC{0,6}",
        )
            .prop_map(|(n, nl, vl, uni)| {
                // Keep a case at most a few MiB: bound-sized values on a few labels.
                let vl: Vec<usize> = if n > 64 {
                    vl.iter().map(|&l| if l > 256 { 256 } else { l }).collect()
                } else {
                    vl
                };
                let mut l = label_set(n, &nl, &vl, &uni);
                if n > 64 {
                    // One label at each bound even in the big sets.
                    let mut v = l.into_vec();
                    v[0].value = "v".repeat(hard::MAX_LABEL_VALUE_BYTES);
                    v[1].name = format!("0001{}", "n".repeat(hard::MAX_LABEL_NAME_BYTES - 4));
                    l = Labels::from_sorted_unchecked(v);
                }
                l
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// Every record the write path can encode decodes to what was
        /// encoded: label sets up to the hard bounds, any f64 bits, any
        /// time in the storable range.
        #[test]
        fn commit_log_records_round_trip_over_the_accepted_domain(
            tenant in "\\PC{0,12}",
            sets in proptest::collection::vec(labels_strategy(), 0..3),
            samples in proptest::collection::vec(
                proptest::collection::vec((hard::MIN_TIME_MS..=hard::MAX_TIME_MS, any::<u64>()), 0..6), 0..3),
            edge in any::<bool>(),
            ex_t in any::<i64>(),
            ex_bits in any::<u64>(),
        ) {
            let new_series: Vec<(SeriesId, Labels)> = sets
                .iter()
                .map(|l| (SeriesId::of(&tenant, l), l.clone()))
                .collect();
            let mut per_series: Vec<(SeriesId, Vec<Sample>)> = samples
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    let mut v: Vec<Sample> =
                        v.iter().map(|(t, b)| Sample::new(*t, f64::from_bits(*b))).collect();
                    if edge {
                        v.push(Sample::new(hard::MIN_TIME_MS, f64::from_bits(u64::MAX)));
                        v.push(Sample::new(hard::MAX_TIME_MS, f64::from_bits(0)));
                    }
                    (SeriesId(i as u128 + 1), v)
                })
                .collect();
            per_series.retain(|(_, v)| !v.is_empty());
            let prepared: Vec<(SeriesId, &[Sample])> =
                per_series.iter().map(|(i, v)| (*i, v.as_slice())).collect();
            let exemplars: Vec<(SeriesId, Exemplar)> = sets
                .iter()
                .take(1)
                .map(|l| (SeriesId(9), Exemplar { labels: l.clone(), value: f64::from_bits(ex_bits), t: ex_t }))
                .collect();
            let metadata = vec![("m".to_string(), MetricMetadata {
                metric_type: MetricType::Counter,
                help: tenant.clone(),
                unit: String::new(),
            })];
            let mut p = vec![RECORD_VERSION];
            put_bytes(&mut p, tenant.as_bytes());
            let mut seen = Vec::new();
            encode_record(&mut p, &new_series, &prepared, &exemplars, &metadata, |t| seen.push(t)).unwrap();
            let rec = decode_record(&p).unwrap();
            prop_assert_eq!(&rec.tenant, &tenant);
            prop_assert_eq!(&rec.new_series, &new_series);
            let bits = |v: &[Sample]| v.iter().map(|s| (s.t, s.v.to_bits())).collect::<Vec<_>>();
            prop_assert_eq!(rec.samples.len(), per_series.len());
            for ((a, x), (b, y)) in rec.samples.iter().zip(&per_series) {
                prop_assert_eq!(a, b);
                prop_assert_eq!(bits(x), bits(y));
            }
            prop_assert_eq!(seen.len(), per_series.iter().map(|s| s.1.len()).sum::<usize>());
            prop_assert_eq!(rec.exemplars.len(), exemplars.len());
            for ((a, x), (b, y)) in rec.exemplars.iter().zip(&exemplars) {
                prop_assert_eq!(a, b);
                prop_assert_eq!((&x.labels, x.t, x.value.to_bits()), (&y.labels, y.t, y.value.to_bits()));
            }
            prop_assert_eq!(rec.metadata, metadata);
        }
    }

    /// Past the hard bounds the encoder refuses; the same bytes written
    /// unchecked (as the release before the bounds wrote them) still
    /// decode: the decoder's domain contains the encoder's. Unsorted or
    /// repeated names are refused by both.
    #[test]
    fn encoder_refuses_beyond_the_hard_bounds_and_the_decoder_reads_more() {
        let too_many = label_set(hard::MAX_LABELS + 1, &[6], &[1], "");
        let long_name = label_set(2, &[hard::MAX_LABEL_NAME_BYTES + 1], &[1], "");
        let long_value = label_set(2, &[6], &[hard::MAX_LABEL_VALUE_BYTES + 1], "");
        let pairs = |l: &Labels| {
            l.iter()
                .map(|x| (x.name.clone(), x.value.clone()))
                .collect::<Vec<_>>()
        };
        let mut cases = vec![pairs(&too_many), pairs(&long_name), pairs(&long_value)];
        // Unsorted and repeated names (Labels cannot even hold them).
        cases.push(vec![("b".into(), "1".into()), ("a".into(), "2".into())]);
        cases.push(vec![("a".into(), "1".into()), ("a".into(), "2".into())]);
        for (i, c) in cases.iter().enumerate() {
            let why = enc::labels_unstorable(c.iter().map(|(n, v)| (n.as_str(), v.as_str())));
            assert!(why.is_some(), "case {i}");
            if i < 3 {
                let l = Labels::from_sorted_unchecked(
                    c.iter()
                        .map(|(n, v)| Label::new(n.as_str(), v.as_str()))
                        .collect(),
                );
                let mut p = Vec::new();
                assert!(matches!(put_labels(&mut p, &l), Err(Error::Invalid(_))));
                assert!(p.is_empty());
            }
            // The same bytes written unchecked: read back when only too
            // large, refused when unsorted or repeated.
            let mut p = Vec::new();
            enc::put_uvarint(&mut p, c.len() as u64);
            for (n, v) in c {
                put_bytes(&mut p, n.as_bytes());
                put_bytes(&mut p, v.as_bytes());
            }
            let got = Reader::new(&p, "t").labels();
            if i < 3 {
                assert_eq!(pairs(&got.unwrap()), *c, "case {i}");
            } else {
                assert!(got.is_err(), "case {i}");
            }
        }
        let at_bound = label_set(hard::MAX_LABELS, &[hard::MAX_LABEL_NAME_BYTES], &[16], "");
        let mut p = Vec::new();
        put_labels(&mut p, &at_bound).unwrap();
        assert_eq!(Reader::new(&p, "t").labels().unwrap(), at_bound);
    }

    /// A label set encoded as the release before the hard bounds did, with
    /// no check.
    fn put_labels_raw(p: &mut Vec<u8>, l: &Labels) {
        enc::put_uvarint(p, l.len() as u64);
        for x in l.iter() {
            put_bytes(p, x.name.as_bytes());
            put_bytes(p, x.value.as_bytes());
        }
    }

    /// A commit-log record written by the release before the hard bounds,
    /// at its decoder's limits (10,000 labels; a 5 KiB name and a 100 KiB
    /// value), with an exemplar beyond the bounds too, replays after the
    /// upgrade: the series and its sample are there, the index holds it
    /// (also after a restart that finds it already registered), nothing is
    /// skipped, strict replay starts, and the series takes new samples.
    #[test]
    fn record_at_the_old_decoder_limits_replays() {
        let f = Fixture::new();
        let now = f.now.load(Ordering::SeqCst);
        let mut v: Vec<Label> = (0..9_997)
            .map(|i| Label::new(format!("l{i:05}"), "x"))
            .collect();
        v.push(Label::new(
            format!("m{}", "n".repeat(5 * 1024)),
            "long name",
        ));
        v.push(Label::new("n", "v".repeat(100 * 1024)));
        let mut with_name = vec![Label::new("__name__", "old")];
        with_name.extend(v);
        let big = Labels::from_sorted_unchecked(with_name);
        assert_eq!(big.len(), 10_000);
        assert!(
            enc::labels_unstorable(big.iter().map(|l| (l.name.as_str(), l.value.as_str())))
                .is_some()
        );
        let ex_labels = label_set(hard::MAX_LABELS + 1, &[6], &[1], "");
        let id = SeriesId::of("t", &big);
        let mut p = vec![RECORD_VERSION];
        put_bytes(&mut p, b"t");
        enc::put_uvarint(&mut p, 1);
        p.extend_from_slice(&id.to_be_bytes());
        put_labels_raw(&mut p, &big);
        enc::put_uvarint(&mut p, 1);
        p.extend_from_slice(&id.to_be_bytes());
        enc::put_uvarint(&mut p, 1);
        enc::put_varint(&mut p, now);
        p.extend_from_slice(&7.0f64.to_bits().to_le_bytes());
        enc::put_uvarint(&mut p, 1);
        p.extend_from_slice(&id.to_be_bytes());
        enc::put_varint(&mut p, now);
        p.extend_from_slice(&1.5f64.to_bits().to_le_bytes());
        put_labels_raw(&mut p, &ex_labels);
        enc::put_uvarint(&mut p, 0);
        let mut seg = b"CAIRNCL1".to_vec();
        seg.extend_from_slice(&(p.len() as u32).to_le_bytes());
        seg.extend_from_slice(&crc32c::crc32c(&p).to_le_bytes());
        seg.extend_from_slice(&p);
        let cl = f.dir.path().join("commitlog");
        std::fs::create_dir_all(&cl).unwrap();
        std::fs::write(cl.join(format!("{:016}.log", 1)), &seg).unwrap();
        for strict in [false, true] {
            let mut cfg = StorageConfig::new(f.dir.path());
            cfg.num_shards = 4;
            cfg.strict_replay = strict;
            let clock = f.now.clone();
            let s = Storage::open(cfg, Arc::new(move || clock.load(Ordering::SeqCst))).unwrap();
            assert_eq!(
                s.metrics.commitlog_records_skipped.load(Ordering::Relaxed),
                0
            );
            let got = read(&s, "t", "old");
            assert_eq!(got.len(), 1);
            assert_eq!(got[0].0, big.to_string());
            let mut want = vec![(now, 7.0f64.to_bits())];
            if strict {
                want.push((now + 1, 8.0f64.to_bits()));
            }
            assert_eq!(got[0].1, want);
            let ex = s.index.exemplars(id, now, now).unwrap();
            assert_eq!(ex.len(), 1);
            assert_eq!(ex[0].labels, ex_labels);
            assert_eq!(s.index.skipped_entries(), 0);
            // The series takes new samples (its labels are not encoded
            // again); they replay at the next start.
            if !strict {
                let out = s
                    .write("t", batch(vec![(big.clone(), vec![(now + 1, 8.0)])]))
                    .unwrap();
                assert_eq!(out.accepted_samples, 1);
            }
            s.close().unwrap();
        }
    }

    fn seg_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
        let mut v: Vec<_> = std::fs::read_dir(dir.join("commitlog"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        v.sort();
        v
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

    /// Damaged commit-log records (bad checksum mid-segment; checksum fine
    /// but undecodable) are skipped and counted, the store opens with the
    /// rest; strict replay refuses to open, naming segment and offset.
    #[test]
    fn corrupt_commit_log_records_are_skipped_and_counted() {
        let f = Fixture::new();
        let now = f.now.load(Ordering::SeqCst);
        let s = f.open();
        for i in 0..4 {
            s.write(
                "t",
                batch(vec![(labels("c", &format!("j{i}")), vec![(now, i as f64)])]),
            )
            .unwrap();
        }
        s.close().unwrap();
        drop(s);
        let seg = seg_files(f.dir.path())
            .into_iter()
            .find(|p| std::fs::metadata(p).unwrap().len() > 8)
            .unwrap();
        let mut bytes = std::fs::read(&seg).unwrap();
        // Record boundaries.
        let mut starts = Vec::new();
        let mut pos = 8;
        while pos < bytes.len() {
            starts.push(pos);
            let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
            pos += 8 + len;
        }
        assert_eq!(starts.len(), 4);
        // Record 1: a payload byte flipped (checksum mismatch).
        bytes[starts[1] + 12] ^= 0x55;
        // Record 2: a valid checksum over a payload that does not decode.
        let junk = [RECORD_VERSION, 0xff, 0xff, 0xff];
        let mut framed = (junk.len() as u32).to_le_bytes().to_vec();
        framed.extend_from_slice(&crc32c::crc32c(&junk).to_le_bytes());
        framed.extend_from_slice(&junk);
        let mut rebuilt = bytes[..starts[2]].to_vec();
        rebuilt.extend_from_slice(&framed);
        rebuilt.extend_from_slice(&bytes[starts[3]..]);
        std::fs::write(&seg, &rebuilt).unwrap();
        let s = f.open();
        let got: Vec<String> = read(&s, "t", "c").into_iter().map(|x| x.0).collect();
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got[0].contains("j0") && got[1].contains("j3"), "{got:?}");
        assert_eq!(
            s.metrics.commitlog_records_skipped.load(Ordering::Relaxed),
            2
        );
        let mut text = String::new();
        s.render_metrics(&mut text);
        assert!(
            text.contains("cairn_storage_commitlog_records_skipped_total 2"),
            "{text}"
        );
        drop(s);
        let mut cfg = StorageConfig::new(f.dir.path());
        cfg.num_shards = 4;
        cfg.strict_replay = true;
        let e = match Storage::open(cfg, system_clock()) {
            Ok(_) => panic!("strict replay opened a damaged log"),
            Err(e) => e.to_string(),
        };
        assert!(
            e.contains(&seg.display().to_string()) && e.contains("strict-replay"),
            "{e}"
        );
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
        let mut text = String::new();
        s.render_metrics(&mut text);
        assert!(
            text.contains("cairn_storage_index_entries_skipped_total 1"),
            "{text}"
        );
        // Writes still work, for the damaged series too.
        s.write("t", batch(vec![(labels("x", "c"), vec![(now, 3.0)])]))
            .unwrap();
        assert_eq!(read(&s, "t", "x").len(), 2);
    }

    /// ENOSPC while appending, at segment rotation and at flush: writes
    /// fail retryably, nothing is left in the way, and once space is back
    /// writes and flushes work again without a restart; every acknowledged
    /// sample is there after a reopen.
    #[test]
    fn disk_full_at_rotation_and_flush_then_recovery() {
        let f = Fixture::new();
        let now = f.now.load(Ordering::SeqCst);
        let s = f.open();
        let dir = f.dir.path().to_path_buf();
        let w = |i: i64| {
            s.write(
                "t",
                batch(vec![(labels("d", "a"), vec![(now - 1000 + i, i as f64)])]),
            )
        };
        let mut acked = vec![];
        w(0).unwrap();
        acked.push(0);
        // Rotation fails: the flush fails, no partial segment stays.
        fileset::arm_io_fault("commitlog-create-segment", &dir, true);
        let segs = seg_files(&dir);
        assert!(s.flush(true).is_err());
        assert_eq!(seg_files(&dir), segs);
        // The active segment still takes writes.
        w(1).unwrap();
        acked.push(1);
        // Appends fail too (disk full): retryable errors.
        fileset::arm_io_fault("commitlog-append", &dir, true);
        for i in 2..5 {
            let e = w(i).unwrap_err();
            assert!(e.is_retryable(), "{e}");
        }
        // Space back for appends, not yet for new segments: the broken
        // segment must be left, so writes still fail.
        fileset::arm_io_fault("commitlog-append", &dir, false);
        assert!(w(5).unwrap_err().is_retryable());
        fileset::arm_io_fault("commitlog-create-segment", &dir, false);
        w(6).unwrap();
        acked.push(6);
        // Fileset writes fail at flush; the data stays readable.
        fileset::arm_io_fault("fileset-write", &dir, true);
        assert!(s.flush(true).is_err());
        assert_eq!(read(&s, "t", "d")[0].1.len(), acked.len());
        fileset::arm_io_fault("fileset-write", &dir, false);
        assert!(s.flush(true).unwrap() >= 1);
        w(7).unwrap();
        acked.push(7);
        drop(s);
        let s = f.open();
        let want: Vec<(i64, u64)> = acked
            .iter()
            .map(|&i| (now - 1000 + i, (i as f64).to_bits()))
            .collect();
        assert_eq!(read(&s, "t", "d")[0].1, want);
    }
}
