//! Hostile inputs: remote-write bodies (label, series and time bounds, snappy
//! bombs). Shared helpers in `hostile.rs`.

#[allow(unused_imports)]
use super::*;

/// RSS bound for the ingest attacks: the 100k-series request the limits
/// allow costs ~150 MiB; the refused bombs must not cost more than that.
const RSS_BOUND_MIB: u64 = 1024;

fn post_body(base: &str, tenant: Option<&str>, body: &[u8]) -> (u16, String) {
    let mut h = vec![
        ("Content-Encoding", "snappy"),
        ("Content-Type", "application/x-protobuf"),
    ];
    if let Some(t) = tenant {
        h.push(("X-Scope-OrgID", t));
    }
    let r = post(&format!("{base}/api/v1/write"), &h, body).expect("posting a write");
    (r.status, r.text())
}

/// A protobuf WriteRequest of `n` one-sample series `bomb_<i>` at `t`,
/// written by hand (fast: millions of series).
fn many_series(n: usize, t: i64) -> Vec<u8> {
    use prost::Message;
    let mut out = Vec::with_capacity(n * 40);
    for i in 0..n {
        let ts = TimeSeries {
            labels: vec![Label::new("__name__", &format!("bomb_{i}"))],
            samples: vec![Sample {
                value: 1.0,
                timestamp: t,
            }],
            ..Default::default()
        };
        let b = ts.encode_to_vec();
        out.push(0x0a); // field 1, length-delimited
        prost::encoding::encode_varint(b.len() as u64, &mut out);
        out.extend_from_slice(&b);
    }
    out
}

#[test]
fn oversized_label_sets_are_refused_and_restart_always_works() {
    let mut s = TestServer::spawn(ServerOpts::default());
    let base = s.url();
    let canary = Canary::write(&base);
    let now = now_ms();
    // 10,001 labels: once accepted, then unreadable on replay (bricked start).
    let names: Vec<String> = (0..10_001).map(|i| format!("l{i:05}")).collect();
    let mut labels: Vec<(&str, &str)> = vec![("__name__", "wide")];
    labels.extend(names.iter().map(|n| (n.as_str(), "v")));
    let (code, body) = remote_write(
        &base,
        None,
        &write_request(vec![series(&labels, &[(now, 1.0)])]),
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("ingest.max-labels-per-series"), "{body}");
    assert!(
        body.len() < 4096,
        "the refusal echoes the whole series: {} bytes",
        body.len()
    );
    // Values and names beyond their limits, and an exemplar beyond 128 runes.
    let long = "v".repeat(2049);
    let (code, body) = remote_write(
        &base,
        None,
        &write_request(vec![series(
            &[("__name__", "long"), ("a", &long)],
            &[(now, 1.0)],
        )]),
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("ingest.max-label-value-length"), "{body}");
    let mut ex = series(&[("__name__", "with_exemplar")], &[(now, 1.0)]);
    ex.exemplars.push(cairn_proto::prompb::Exemplar {
        labels: vec![Label::new("trace_id", &"f".repeat(200))],
        value: 1.0,
        timestamp: now,
    });
    let (code, body) = remote_write(&base, None, &write_request(vec![ex]));
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("128"), "{body}");
    // Every accepted write survives SIGKILL and SIGTERM: the server starts.
    s.kill9();
    s.restart();
    canary.check(&s.url(), "SIGKILL after the oversized writes");
    assert_eq!(s.sigterm().code(), Some(0));
    s.restart();
    canary.check(&s.url(), "SIGTERM after the oversized writes");
    assert!(rss_mib(s.pid().unwrap()) < RSS_BOUND_MIB);
}

#[test]
fn series_bombs_snappy_lies_and_far_future_samples_are_refused() {
    let s = TestServer::spawn(ServerOpts::default());
    let base = s.url();
    let canary = Canary::write(&base);
    let pid = s.pid().unwrap();
    let now = now_ms();

    // 52 bytes whose snappy header claims 512 MiB.
    let mut bomb = Vec::new();
    prost::encoding::encode_varint(512 << 20, &mut bomb);
    bomb.resize(52, 0);
    let (code, body) = post_body(&base, None, &bomb);
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("claims"), "{body}");

    // Over the series-per-request limit: refused whole, before materialising.
    let raw = many_series(2_000_000, now);
    let body_bytes = snap::raw::Encoder::new().compress_vec(&raw).unwrap();
    let (code, body) = post_body(&base, None, &body_bytes);
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("ingest.max-series-per-request"), "{body}");
    assert!(
        peak_rss_mib(pid) < RSS_BOUND_MIB,
        "peak RSS {} MiB",
        peak_rss_mib(pid)
    );

    // Under the per-request limit but over the new-series limit (lowered
    // here on a second server so the request stays small).
    let small = TestServer::spawn(
        ServerOpts::default().env("CAIRN_INGEST_MAX_NEW_SERIES_PER_REQUEST", "1000"),
    );
    let c2 = Canary::write(&small.url());
    let raw = many_series(5000, now);
    let (code, body) = post_body(
        &small.url(),
        None,
        &snap::raw::Encoder::new().compress_vec(&raw).unwrap(),
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("ingest.max-new-series-per-request"), "{body}");
    let got = api_data(
        &small.url(),
        None,
        "/api/v1/series?match[]=%7B__name__%3D~%22bomb_.*%22%7D",
    );
    assert_eq!(
        got.as_array().map(Vec::len),
        Some(0),
        "a refused request stored series"
    );
    c2.check(&small.url(), "the new-series bomb");

    // Far-future and out-of-range samples: 400 naming the key, the rest kept.
    let req = write_request(vec![
        series(
            &[("__name__", "future")],
            &[(now, 1.0), (now + 3_600_000, 2.0)],
        ),
        series(&[("__name__", "year3000")], &[(32_503_680_000_000, 1.0)]),
        series(&[("__name__", "max")], &[(i64::MAX, 1.0)]),
    ]);
    let (code, body) = remote_write(&base, None, &req);
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("ingest.max-future"), "{body}");
    let got = export(
        &base,
        None,
        r#"{__name__=~"future|year3000|max"}"#,
        0.0,
        40_000_000_000.0,
    );
    let kept: Vec<(i64, f64)> = got.values().flatten().copied().collect();
    assert_eq!(
        kept,
        vec![(now, 1.0)],
        "only the in-window sample is stored"
    );

    // An invalid 10 KB tenant id: 400, echoed cut short.
    let long_tenant = "x/".repeat(5000);
    let r = get_as(&format!("{base}/api/v1/labels"), Some(&long_tenant));
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.body.len() < 1024,
        "tenant echoed whole: {} bytes",
        r.body.len()
    );
    let (code, body) = remote_write(&base, Some(&long_tenant), &write_request(vec![]));
    assert_eq!(code, 400);
    assert!(
        body.len() < 1024,
        "tenant echoed whole: {} bytes",
        body.len()
    );

    assert_up(&base, "the ingest bombs");
    canary.check(&base, "the ingest bombs");
    assert!(
        peak_rss_mib(pid) < RSS_BOUND_MIB,
        "peak RSS {} MiB",
        peak_rss_mib(pid)
    );
}
