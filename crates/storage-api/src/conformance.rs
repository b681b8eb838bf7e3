//! The conformance suite: what every implementation of the contract must
//! do, as one function any implementation's tests call — the in-memory
//! store here, the on-disk storage node in `cairn-storage`, and the gRPC
//! client of a remote node with the cluster. Panics (with what differed) on
//! the first violation. The suite writes to two tenants of its own
//! (`conformance-a-<run>`, `conformance-b-<run>`); the store must accept
//! samples from the last hour.

use crate::{
    block_on, next_batch, select_all, Cardinality, ErrorKind, ReadLimits, SelectRequest,
    SeriesQuery, SeriesReader, ShardWriter, StoreError, WriteRequest,
};
use cairn_common::{
    Exemplar, Labels, MatchOp, Matcher, MetricMetadata, MetricType, PreparedBatch, Sample,
    SeriesData, SeriesWrite, Timestamp,
};
use std::time::{Duration, Instant};

/// The run's two tenants, unique to the run so a store can take the suite
/// again (after a restart, say) without seeing an earlier run's series.
struct Tenants {
    a: String,
    b: String,
}
const STEP: i64 = 15_000;

/// Runs the whole suite against one store.
pub fn run<S: SeriesReader + ShardWriter>(store: &S) {
    block_on(run_with(store, store));
}

/// The suite against a reader and a writer that front the same data.
pub async fn run_with(reader: &dyn SeriesReader, writer: &dyn ShardWriter) {
    run_flushing(reader, writer, &|| {}).await;
}

/// The suite with `after_write` called after each of its writes and before
/// the reads of what it wrote: a store passes `flush`, so the reads come
/// from where flushed data lives rather than from the write buffer.
pub async fn run_flushing(
    reader: &dyn SeriesReader,
    writer: &dyn ShardWriter,
    after_write: &(dyn Fn() + Sync),
) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64;
    // Half an hour ago, on a minute boundary: inside any retention, never in the future.
    let base = (now - 30 * 60_000) / 60_000 * 60_000;
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos();
    let t = &Tenants {
        a: format!("conformance-a-{run}"),
        b: format!("conformance-b-{run}"),
    };
    write_fixture(writer, t, base).await;
    after_write();
    selects(reader, t, base).await;
    metadata_reads(reader, t, base).await;
    cardinality_reads(reader, t, base).await;
    limits_and_errors(reader, t, base).await;
    batches(reader, writer, t, base, after_write).await;
}

fn l(pairs: &[(&str, &str)]) -> Labels {
    Labels::from_pairs(pairs)
}

fn eq(name: &str, value: &str) -> Matcher {
    Matcher::new(MatchOp::Equal, name, value).expect("matcher")
}

fn m(op: MatchOp, name: &str, value: &str) -> Matcher {
    Matcher::new(op, name, value).expect("matcher")
}

fn series(labels: Labels, samples: &[(Timestamp, f64)]) -> SeriesWrite {
    SeriesWrite {
        labels,
        samples: samples.iter().map(|&(t, v)| Sample::new(t, v)).collect(),
        exemplars: vec![],
    }
}

/// Series and metadata of one write.
type Batch = (Vec<SeriesWrite>, Vec<(String, MetricMetadata)>);

async fn write(writer: &dyn ShardWriter, tenant: &str, (series, metadata): Batch) -> usize {
    let req = WriteRequest::new(tenant, PreparedBatch::from_series(tenant, series, metadata));
    let out = writer.write(req).await.expect("conformance write");
    assert!(out.rejections.is_empty(), "rejected: {:?}", out.rejections);
    out.accepted_samples
}

async fn write_fixture(writer: &dyn ShardWriter, t: &Tenants, base: i64) {
    let mut other = series(
        l(&[("__name__", "other_metric"), ("job", "api")]),
        &[(base, 9.0)],
    );
    other.exemplars.push(Exemplar {
        labels: l(&[("trace_id", "abc123")]),
        value: 9.0,
        t: base,
    });
    let a = (
        vec![
            series(
                l(&[("__name__", "up"), ("instance", "1"), ("job", "api")]),
                &[(base, 1.0), (base + STEP, 2.0), (base + 2 * STEP, 3.0)],
            ),
            series(
                l(&[("__name__", "up"), ("instance", "2"), ("job", "api")]),
                &[(base, 5.0)],
            ),
            series(
                l(&[("__name__", "up"), ("instance", "1"), ("job", "db")]),
                &[(base + STEP, 7.0)],
            ),
            other,
        ],
        vec![(
            "up".to_string(),
            MetricMetadata {
                metric_type: MetricType::Gauge,
                help: "Whether the target is up.".to_string(),
                unit: String::new(),
            },
        )],
    );
    assert_eq!(
        write(writer, &t.a, a).await,
        6,
        "accepted samples of tenant A"
    );
    let b = (
        vec![series(
            l(&[("__name__", "up"), ("instance", "1"), ("job", "api")]),
            &[(base, 100.0)],
        )],
        vec![],
    );
    assert_eq!(
        write(writer, &t.b, b).await,
        1,
        "accepted samples of tenant B"
    );
}

fn pairs(d: &SeriesData) -> Vec<(Timestamp, f64)> {
    d.samples.iter().map(|s| (s.t, s.v)).collect()
}

async fn sel(reader: &dyn SeriesReader, req: SelectRequest) -> Vec<SeriesData> {
    let what = format!("{:?} {:?}", req.tenant, req.matchers);
    select_all(reader, req)
        .await
        .unwrap_or_else(|e| panic!("select {what}: {e}"))
}

async fn selects(r: &dyn SeriesReader, t: &Tenants, base: i64) {
    let end = base + 2 * STEP;
    let api = sel(
        r,
        SelectRequest::new(
            &t.a,
            vec![eq("__name__", "up"), eq("job", "api")],
            base,
            end,
        ),
    )
    .await;
    assert_eq!(api.len(), 2, "up{{job=\"api\"}}: {api:?}");
    assert_eq!(
        *api[0].labels,
        l(&[("__name__", "up"), ("instance", "1"), ("job", "api")])
    );
    assert_eq!(
        pairs(&api[0]),
        [(base, 1.0), (base + STEP, 2.0), (base + 2 * STEP, 3.0)]
    );
    assert_eq!(
        *api[1].labels,
        l(&[("__name__", "up"), ("instance", "2"), ("job", "api")])
    );
    assert_eq!(pairs(&api[1]), [(base, 5.0)]);

    // Both ends inclusive.
    let mid = sel(
        r,
        SelectRequest::new(
            &t.a,
            vec![eq("instance", "1"), eq("job", "api")],
            base + STEP,
            base + STEP,
        ),
    )
    .await;
    assert_eq!(mid.len(), 1);
    assert_eq!(pairs(&mid[0]), [(base + STEP, 2.0)]);
    let late = sel(
        r,
        SelectRequest::new(&t.a, vec![eq("job", "db")], base + STEP + 1, end),
    )
    .await;
    assert!(
        late.iter().all(|s| s.samples.is_empty()),
        "outside the range: {late:?}"
    );

    // Tenants see only their own series.
    let b = sel(
        r,
        SelectRequest::new(&t.b, vec![eq("__name__", "up")], base, end),
    )
    .await;
    assert_eq!(b.len(), 1);
    assert_eq!(pairs(&b[0]), [(base, 100.0)]);
    let none = sel(
        r,
        SelectRequest::new("conformance-nobody", vec![eq("__name__", "up")], base, end),
    )
    .await;
    assert!(none.is_empty(), "{none:?}");

    // Every matcher kind; the answer sorted by labels.
    let names =
        |v: &[SeriesData]| -> Vec<String> { v.iter().map(|s| s.labels.to_string()).collect() };
    let re = sel(
        r,
        SelectRequest::new(
            &t.a,
            vec![m(MatchOp::RegexMatch, "__name__", "up|other_metric")],
            base,
            end,
        ),
    )
    .await;
    assert_eq!(re.len(), 4, "{:?}", names(&re));
    assert!(
        re.windows(2).all(|w| w[0].labels < w[1].labels),
        "not sorted: {:?}",
        names(&re)
    );
    let ne = sel(
        r,
        SelectRequest::new(
            &t.a,
            vec![eq("__name__", "up"), m(MatchOp::NotEqual, "job", "api")],
            base,
            end,
        ),
    )
    .await;
    assert_eq!(
        names(&ne),
        [l(&[("__name__", "up"), ("instance", "1"), ("job", "db")]).to_string()]
    );
    let nre = sel(
        r,
        SelectRequest::new(
            &t.a,
            vec![
                eq("__name__", "up"),
                m(MatchOp::RegexNoMatch, "instance", "1"),
            ],
            base,
            end,
        ),
    )
    .await;
    assert_eq!(
        names(&nre),
        [l(&[("__name__", "up"), ("instance", "2"), ("job", "api")]).to_string()]
    );
    // A matcher that matches the empty string also matches series without the label.
    let empty = sel(
        r,
        SelectRequest::new(
            &t.a,
            vec![m(MatchOp::RegexMatch, "instance", "1|"), eq("job", "api")],
            base,
            end,
        ),
    )
    .await;
    assert_eq!(empty.len(), 2, "{:?}", names(&empty));
}

async fn metadata_reads(r: &dyn SeriesReader, t: &Tenants, base: i64) {
    let end = base + 2 * STEP;
    let q = |matchers: Vec<Matcher>| SeriesQuery::new(&t.a, matchers, base, end);
    let s = r
        .series(q(vec![eq("__name__", "up")]))
        .await
        .expect("series");
    assert_eq!(s.len(), 3, "{s:?}");
    assert!(
        s.windows(2).all(|w| w[0] < w[1]),
        "series not sorted: {s:?}"
    );
    let names = r.label_names(q(vec![])).await.expect("label names");
    assert_eq!(names, ["__name__", "instance", "job"]);
    let jobs = r
        .label_values(q(vec![]), "job".into())
        .await
        .expect("label values");
    assert_eq!(jobs, ["api", "db"]);
    let other = r
        .label_values(q(vec![eq("__name__", "other_metric")]), "job".into())
        .await
        .expect("label values with a matcher");
    assert_eq!(other, ["api"]);
    let b_jobs = r
        .label_values(SeriesQuery::new(&t.b, vec![], base, end), "instance".into())
        .await
        .expect("label values of B");
    assert_eq!(b_jobs, ["1"]);
    let limited = r
        .label_values(q(vec![]).with_limit(1), "job".into())
        .await
        .expect("limited");
    assert_eq!(limited, ["api"]);

    let ex = r
        .exemplars(q(vec![eq("__name__", "other_metric")]))
        .await
        .expect("exemplars");
    assert_eq!(ex.len(), 1, "{ex:?}");
    assert_eq!(ex[0].exemplars.len(), 1);
    assert_eq!(ex[0].exemplars[0].labels.get("trace_id"), Some("abc123"));
    assert_eq!(ex[0].exemplars[0].t, base);
    let no_ex = r
        .exemplars(SeriesQuery::new(
            &t.b,
            vec![eq("__name__", "up")],
            base,
            end,
        ))
        .await
        .expect("exemplars of B");
    assert!(no_ex.is_empty(), "{no_ex:?}");

    let md = r
        .metadata(t.a.clone(), Some("up".into()), 0)
        .await
        .expect("metadata");
    assert_eq!(md.len(), 1, "{md:?}");
    assert_eq!(md[0].0, "up");
    assert_eq!(md[0].1.metric_type, MetricType::Gauge);
    assert_eq!(md[0].1.help, "Whether the target is up.");
    assert!(r
        .metadata(t.b.clone(), None, 0)
        .await
        .expect("metadata of B")
        .is_empty());
}

/// `(name, [(value, series)])` pairs as a cardinality's `pairs`.
fn pair_counts(
    want: &[(&str, &[(&str, u64)])],
) -> std::collections::BTreeMap<String, std::collections::BTreeMap<String, u64>> {
    want.iter()
        .map(|(n, vs)| {
            let vs = vs.iter().map(|(v, c)| (v.to_string(), *c)).collect();
            (n.to_string(), vs)
        })
        .collect()
}

async fn cardinality_reads(r: &dyn SeriesReader, t: &Tenants, base: i64) {
    let end = base + 2 * STEP;
    let card = |tenant: &str, matchers: Vec<Matcher>, start: i64, end: i64| {
        let q = SeriesQuery::new(tenant, matchers, start, end).with_limit(1);
        async move {
            let what = format!("{:?} {:?}", q.tenant, q.matchers);
            r.cardinality(q)
                .await
                .unwrap_or_else(|e| panic!("cardinality {what}: {e}"))
        }
    };
    // Every series of A, over all time and over the fixture's range (a
    // store may count from its index for the first); the limit is ignored.
    let want = Cardinality {
        series: 4,
        pairs: pair_counts(&[
            ("__name__", &[("other_metric", 1), ("up", 3)]),
            ("instance", &[("1", 2), ("2", 1)]),
            ("job", &[("api", 3), ("db", 1)]),
        ]),
    };
    let all = card(&t.a, vec![], i64::MIN, i64::MAX).await;
    assert_eq!(all, want, "cardinality of A over all time");
    assert_eq!(all.label_value_pairs(), 11);
    assert_eq!(all.series_with_label("instance"), 3);
    assert_eq!(
        card(&t.a, vec![], base, end).await,
        want,
        "over the fixture's range"
    );

    // Matchers restrict what is counted, those matching "" included.
    let api = card(&t.a, vec![eq("job", "api")], i64::MIN, i64::MAX).await;
    assert_eq!(
        api,
        Cardinality {
            series: 3,
            pairs: pair_counts(&[
                ("__name__", &[("other_metric", 1), ("up", 2)]),
                ("instance", &[("1", 1), ("2", 1)]),
                ("job", &[("api", 3)]),
            ]),
        },
        "job=\"api\""
    );
    let not2 = card(
        &t.a,
        vec![m(MatchOp::NotEqual, "instance", "2")],
        i64::MIN,
        i64::MAX,
    )
    .await;
    assert_eq!(
        not2,
        Cardinality {
            series: 3,
            pairs: pair_counts(&[
                ("__name__", &[("other_metric", 1), ("up", 2)]),
                ("instance", &[("1", 2)]),
                ("job", &[("api", 2), ("db", 1)]),
            ]),
        },
        "instance!=\"2\" (also the series without instance)"
    );
    let re = card(
        &t.a,
        vec![
            m(MatchOp::RegexMatch, "__name__", "u.*"),
            m(MatchOp::RegexMatch, "instance", "1|"),
        ],
        base,
        end,
    )
    .await;
    assert_eq!(re.series, 2, "{re:?}");
    assert_eq!(
        re.pairs["job"],
        pair_counts(&[("job", &[("api", 1), ("db", 1)])])["job"]
    );
    let none = card(&t.a, vec![eq("job", "nope")], i64::MIN, i64::MAX).await;
    assert_eq!(none, Cardinality::default());

    // Tenants see only their own series.
    let b = card(&t.b, vec![], i64::MIN, i64::MAX).await;
    assert_eq!(
        b,
        Cardinality {
            series: 1,
            pairs: pair_counts(&[
                ("__name__", &[("up", 1)]),
                ("instance", &[("1", 1)]),
                ("job", &[("api", 1)]),
            ]),
        },
        "cardinality of B"
    );
    assert_eq!(
        card("conformance-nobody", vec![], i64::MIN, i64::MAX).await,
        Cardinality::default()
    );

    let e = r
        .cardinality(SeriesQuery::new(&t.a, vec![], end, base))
        .await
        .expect_err("a reversed range is refused");
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    let mut q = SeriesQuery::new(&t.a, vec![], i64::MIN, i64::MAX);
    q.namespace = "conformance-no-such-namespace".into();
    let e = r.cardinality(q).await.expect_err("an unknown namespace");
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
}

async fn expect_err(r: &dyn SeriesReader, req: SelectRequest) -> StoreError {
    let what = format!("{req:?}");
    let (start, end) = (req.start, req.end);
    let mut stream = match r.select(req).await {
        Err(e) => return e,
        Ok(s) => s,
    };
    while let Some(b) = next_batch(&mut stream).await {
        match b {
            Err(e) => return e,
            Ok(batch) => {
                for s in batch {
                    if let Err(e) = s.decode(start, end) {
                        return e;
                    }
                }
            }
        }
    }
    panic!("expected an error from {what}");
}

async fn limits_and_errors(r: &dyn SeriesReader, t: &Tenants, base: i64) {
    let end = base + 2 * STEP;
    let up = || SelectRequest::new(&t.a, vec![eq("__name__", "up")], base, end);
    let e = expect_err(
        r,
        up().with_limits(ReadLimits {
            max_series: 2,
            max_samples: 0,
        }),
    )
    .await;
    assert_eq!(e.kind(), ErrorKind::LimitExceeded, "{e}");
    assert!(
        e.message().contains("2 series"),
        "the error names the limit: {e}"
    );
    let e = expect_err(
        r,
        up().with_limits(ReadLimits {
            max_series: 0,
            max_samples: 4,
        }),
    )
    .await;
    assert_eq!(e.kind(), ErrorKind::LimitExceeded, "{e}");
    assert!(e.message().contains("4 samples"), "{e}");
    // Exactly at the limits is fine (3 series, 5 samples).
    let ok = sel(
        r,
        up().with_limits(ReadLimits {
            max_series: 3,
            max_samples: 5,
        }),
    )
    .await;
    assert_eq!(ok.len(), 3);

    let past = Instant::now() - Duration::from_millis(1);
    let e = expect_err(r, up().with_deadline(past)).await;
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    assert!(e.is_retryable());

    let e = expect_err(
        r,
        SelectRequest::new(&t.a, vec![eq("__name__", "up")], end, base),
    )
    .await;
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    let e = r
        .series(SeriesQuery::new(&t.a, vec![], end, base))
        .await
        .expect_err("a reversed range is refused");
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");

    let e = expect_err(r, up().with_namespace("conformance-no-such-namespace")).await;
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert!(e.message().contains("conformance-no-such-namespace"), "{e}");
}

async fn batches(
    r: &dyn SeriesReader,
    w: &dyn ShardWriter,
    t: &Tenants,
    base: i64,
    after_write: &(dyn Fn() + Sync),
) {
    const N: usize = 3000;
    let series_n: Vec<SeriesWrite> = (0..N)
        .map(|i| {
            let v = format!("{i:05}");
            series(
                l(&[("__name__", "many"), ("i", &v)]),
                &[(base, i as f64), (base + STEP, -(i as f64))],
            )
        })
        .collect();
    let written = write(w, &t.a, (series_n, vec![])).await;
    assert_eq!(written, 2 * N);
    after_write();
    let req = SelectRequest::new(&t.a, vec![eq("__name__", "many")], base, base + STEP);
    let mut stream = r.select(req).await.expect("select many");
    let (mut seen, mut nbatches) = (0usize, 0usize);
    let mut last: Option<std::sync::Arc<Labels>> = None;
    while let Some(b) = next_batch(&mut stream).await {
        let b = b.expect("a batch");
        nbatches += 1;
        for s in b {
            if let Some(prev) = &last {
                assert!(
                    prev < &s.labels,
                    "batches out of order: {prev} then {}",
                    s.labels
                );
            }
            let i = seen as f64;
            let d = s.clone().decode(base, base + STEP).expect("decode");
            assert_eq!(
                pairs(&d),
                [(base, i), (base + STEP, -i)],
                "series {}",
                s.labels
            );
            last = Some(s.labels);
            seen += 1;
        }
    }
    assert_eq!(seen, N, "series across {nbatches} batches");
}
