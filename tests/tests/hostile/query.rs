//! Hostile inputs: queries (nesting, length, time overflow, concurrency,
//! disconnects, export size). Shared helpers in `hostile.rs`.

#[allow(unused_imports)]
use super::*;
use std::io::Write;
use std::time::{Duration, Instant};

/// RSS bound for the query attacks (an idle server is ~60 MiB; the 12
/// concurrent overflowing ranges once passed 8 GiB).
const RSS_BOUND_MIB: u64 = 1024;

fn query(base: &str, path: &str, q: &str) -> Response {
    get(&format!("{base}{path}?query={}", enc(q))).expect("query request")
}

#[test]
fn deep_long_and_out_of_range_queries_get_400() {
    let s = TestServer::spawn(ServerOpts::default());
    let base = s.url();
    let canary = Canary::write(&base);
    let deep = [
        (vec!["1"; 2000].join("+"), "query.max-nesting-depth"),
        (
            format!("{}1{}", "abs(".repeat(1000), ")".repeat(1000)),
            "expected type vector",
        ),
        (vec!["up"; 3000].join(" and "), "query.max-nesting-depth"),
        (
            format!("{}up{}", "sum(".repeat(5000), ")".repeat(5000)),
            "query.max-nesting-depth",
        ),
        ("(".repeat(40_000), "query.max-nesting-depth"),
        (
            format!("up{{a=\"{}\"}}", "x".repeat(300_000)),
            "query.max-length",
        ),
        ("up @ -9223372036854775".to_string(), "@ modifier"),
        ("up offset 100000y".to_string(), ""),
        // Found by fuzzing: promql-parser panicked on these.
        ("up offset 6e33".to_string(), "out of range"),
    ];
    for (q, want) in &deep {
        for path in ["/api/v1/query", "/api/v1/format_query"] {
            // Long texts go in a POST form body, as Grafana sends them.
            let r = post(
                &format!("{base}{path}"),
                &[("Content-Type", "application/x-www-form-urlencoded")],
                format!("query={}", enc(q)).as_bytes(),
            )
            .expect("query request");
            assert_eq!(
                r.status,
                400,
                "{path} {}…: {}",
                &q[..40.min(q.len())],
                r.text()
            );
            assert!(r.text().contains(want), "{path}: {}", r.text());
        }
    }
    // Just inside the nesting bound: evaluated, no stack overflow.
    let ok = format!("{}vector(1){}", "abs(".repeat(998), ")".repeat(998));
    let r = post(
        &format!("{base}/api/v1/query"),
        &[("Content-Type", "application/x-www-form-urlencoded")],
        format!("query={}", enc(&ok)).as_bytes(),
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    // Time arithmetic: refused, never overflowed or panicked.
    for path in [
        "/api/v1/query_range?query=1&start=-9223372036854775&end=9223372036854775&step=1",
        "/api/v1/query_range?query=1&start=-9223309901257&end=9223309901257&step=1",
        "/api/v1/query_range?query=1&start=0&end=1&step=1e300",
        "/api/v1/query?query=1&time=-1e300",
        "/api/v1/export?match[]=up&start=-9.2e15&end=-9.2e15",
        "/api/v1/series?match[]=up&start=-1e300",
    ] {
        let r = get(&format!("{base}{path}")).unwrap();
        assert_eq!(r.status, 400, "{path}: {}", r.text());
    }
    // Inside the range but at its edges: answered.
    for path in [
        "/api/v1/query?query=up&time=-9223309901257",
        "/api/v1/export?match[]=up&start=-9223309901257&end=-9223309901257",
        "/api/v1/query?query=up%20offset%20-290y",
        "/api/v1/query_range?query=up%20offset%20290y&start=-9223309901257&end=-9223309900000&step=1000",
    ] {
        let r = get(&format!("{base}{path}")).unwrap();
        assert_eq!(r.status, 200, "{path}: {}", r.text());
    }
    assert_up(&base, "the deep queries");
    canary.check(&base, "the deep queries");
    assert!(peak_rss_mib(s.pid().unwrap()) < RSS_BOUND_MIB);
}

/// A query that takes seconds on a small dataset: a subquery at 1ms steps.
const SLOW: &str = "count_over_time(vector(1)[2h:1ms])";

fn metric_value(base: &str, name: &str) -> f64 {
    let m = get(&format!("{base}/metrics")).unwrap().text();
    m.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.trim().parse().ok()))
        .unwrap_or_else(|| panic!("{name} not on /metrics"))
}

#[test]
fn concurrency_is_capped_and_abandoned_queries_stop() {
    let s = TestServer::spawn(
        ServerOpts::default()
            .env("CAIRN_QUERY_MAX_CONCURRENCY", "2")
            .env("CAIRN_QUERY_MAX_QUEUED", "2"),
    );
    let base = s.url();
    let canary = Canary::write(&base);
    // A client that sends a slow query and goes away: the query stops.
    let addr = base.strip_prefix("http://").unwrap().to_string();
    let mut gone = Vec::new();
    for _ in 0..4 {
        let mut c = std::net::TcpStream::connect(&addr).unwrap();
        write!(
            c,
            "GET /api/v1/query?query={} HTTP/1.1\r\nHost: x\r\n\r\n",
            enc(SLOW)
        )
        .unwrap();
        gone.push(c);
    }
    // Two run, two wait: the fifth is refused at once with a clear 503.
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric_value(&base, "cairn_api_reads_queued") < 2.0 {
        assert!(
            Instant::now() < deadline,
            "queries never queued: {}\n{}",
            get(&format!("{base}/metrics")).unwrap().text(),
            s.log_tail()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let r = query(&base, "/api/v1/query", "1");
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("query.max-concurrency"), "{}", r.text());
    drop(gone);
    // The abandoned queries are cancelled and the threads free again.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let running = metric_value(&base, "cairn_api_reads_running");
        let queued = metric_value(&base, "cairn_api_reads_queued");
        if running == 0.0 && queued == 0.0 {
            break;
        }
        assert!(Instant::now() < deadline, "abandoned queries still running");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(metric_value(&base, "cairn_api_reads_cancelled_total") >= 4.0);
    assert_eq!(query(&base, "/api/v1/query", "1").status, 200);
    canary.check(&base, "abandoned queries");
    assert!(peak_rss_mib(s.pid().unwrap()) < RSS_BOUND_MIB);
}

#[test]
fn export_is_bounded_and_streamed() {
    let s = TestServer::spawn(ServerOpts::default().env("CAIRN_QUERY_MAX_SAMPLES", "5000"));
    let base = s.url();
    let canary = Canary::write(&base);
    let now = now_ms();
    let ts: Vec<TimeSeries> = (0..100)
        .map(|i| {
            let samples: Vec<(i64, f64)> = (0..100)
                .map(|k| (now - 100_000 + k * 1000, k as f64))
                .collect();
            series(&[("__name__", "big"), ("i", &i.to_string())], &samples)
        })
        .collect();
    assert_eq!(remote_write(&base, None, &write_request(ts)).0, 204);
    // 10,000 samples against a limit of 5,000: refused with the limit named.
    let r = get(&format!("{base}/api/v1/export?match[]=big")).unwrap();
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(r.text().contains("query.max-samples"), "{}", r.text());
    // Under the limit: every line arrives.
    let got = export(
        &base,
        None,
        r#"big{i=~"1.|2."}"#,
        0.0,
        (now / 1000 + 60) as f64,
    );
    assert_eq!(got.len(), 20);
    assert!(got.values().all(|v| v.len() == 100));
    canary.check(&base, "the export limit");
}

#[test]
fn export_never_answers_200_for_a_refused_or_stalled_read() {
    let mut s = TestServer::spawn(
        ServerOpts::default()
            .env("CAIRN_QUERY_MAX_CONCURRENCY", "1")
            .env("CAIRN_QUERY_MAX_QUEUED", "1")
            .env("CAIRN_QUERY_TIMEOUT", "3s"),
    );
    let base = s.url();
    let canary = Canary::write(&base);
    let now = now_ms();
    // ~4 MB of export lines: more than a socket's buffers hold.
    let ts: Vec<TimeSeries> = (0..400)
        .map(|i| {
            let samples: Vec<(i64, f64)> = (0..500)
                .map(|k| (now - 600_000 + k * 1000, k as f64 + 0.123456789))
                .collect();
            series(&[("__name__", "wide"), ("i", &i.to_string())], &samples)
        })
        .collect();
    assert_eq!(remote_write(&base, None, &write_request(ts)).0, 204);
    // One slow query runs, one waits: an export is refused with 503, not a
    // 200 with an empty body.
    let addr = base.strip_prefix("http://").unwrap().to_string();
    let mut busy = Vec::new();
    for _ in 0..2 {
        let mut c = std::net::TcpStream::connect(&addr).unwrap();
        write!(
            c,
            "GET /api/v1/query?query={} HTTP/1.1\r\nHost: x\r\n\r\n",
            enc(SLOW)
        )
        .unwrap();
        busy.push(c);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric_value(&base, "cairn_api_reads_queued") < 1.0 {
        assert!(Instant::now() < deadline, "queries never queued");
        std::thread::sleep(Duration::from_millis(50));
    }
    let r = get(&format!("{base}/api/v1/export?match[]=wide")).unwrap();
    assert_eq!(
        r.status,
        503,
        "{} bytes: {}\n{}",
        r.body.len(),
        &r.text()[..200.min(r.body.len())],
        get(&format!("{base}/metrics")).unwrap().text()
    );
    drop(busy);
    let idle = |base: &str| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while metric_value(base, "cairn_api_reads_running") > 0.0 {
            assert!(Instant::now() < deadline, "a read thread stayed busy");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    idle(&base);
    // A client that asks for the export and never reads: its read thread is
    // freed after the query timeout without progress (3s here).
    let mut stuck = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        stuck,
        "GET /api/v1/export?match[]=wide HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    idle(&base);
    assert_eq!(query(&base, "/api/v1/query", "1").status, 200);
    canary.check(&base, "the stalled export");
    // SIGTERM with a stuck export client still exits cleanly.
    let mut stuck2 = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        stuck2,
        "GET /api/v1/export?match[]=wide HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(s.sigterm().code(), Some(0), "{}", s.log_tail());
    drop((stuck, stuck2));
    s.restart();
    canary.check(&s.url(), "SIGTERM with a stuck export");
}
