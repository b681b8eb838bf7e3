//! Hostile inputs: slow and idle connections (`http.*` limits). Shared
//! helpers in `hostile.rs`. Timings are only bounded from above, generously
//! ("closed within 10 s"), never asserted tight.

#[allow(unused_imports)]
use super::*;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// RSS bound for every test here: an idle server plus a thousand-odd sockets
/// is far below it; unbounded per-connection buffering would not be.
const RSS_BOUND_MIB: u64 = 256;

fn addr(base: &str) -> String {
    base.strip_prefix("http://")
        .expect("http:// base")
        .to_string()
}

fn connect(base: &str) -> TcpStream {
    let s = TcpStream::connect(addr(base)).expect("connect");
    s.set_nodelay(true).unwrap();
    s
}

/// Sends a keep-alive `GET path` on `s` and reads one response; returns its
/// status and body (`None` if the server closed or reset instead).
fn keepalive_get(s: &mut TcpStream, path: &str) -> Option<(u16, String)> {
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: cairn\r\n\r\n").as_bytes())
        .ok()?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).to_string();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            if raw.len() >= end + 4 + len {
                let status = head.split_whitespace().nth(1)?.parse().ok()?;
                let body = String::from_utf8_lossy(&raw[end + 4..end + 4 + len]).to_string();
                return Some((status, body));
            }
        }
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return None,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
        }
    }
}

/// Waits (at most `limit`) for the server to close `s`; returns what it sent
/// before closing, or `None` if it was still open at `limit`. Every `tick`,
/// `poke` may write to the socket (a trickled request).
fn closed_within(
    s: &mut TcpStream,
    limit: Duration,
    mut poke: impl FnMut(&mut TcpStream),
) -> Option<Vec<u8>> {
    let deadline = Instant::now() + limit;
    s.set_read_timeout(Some(Duration::from_millis(250)))
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => return Some(got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => poke(s),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return Some(got), // reset: closed
        }
    }
    None
}

fn check_after(srv: &TestServer, canary: &Canary, ctx: &str) {
    let base = srv.url();
    assert_up(&base, ctx);
    canary.check(&base, ctx);
    let rss = rss_mib(srv.pid().expect("running"));
    assert!(
        rss < RSS_BOUND_MIB,
        "RSS {rss} MiB after {ctx} (bound {RSS_BOUND_MIB} MiB)"
    );
}

/// A socket that connects and sends nothing, one that sends half a request
/// head and waits, and one that trickles a head a byte at a time are all
/// closed by `http.header-read-timeout` (1 s here; idle timeout 2 m).
#[test]
fn half_open_and_trickling_heads_are_closed_after_the_header_timeout() {
    let srv = TestServer::spawn(ServerOpts::default().config("http:\n  header-read-timeout: 1s\n"));
    let base = srv.url();
    let canary = Canary::write(&base);

    let mut silent = connect(&base);
    let mut partial = connect(&base);
    partial
        .write_all(b"GET /-/healthy HTTP/1.1\r\nHost: cairn\r\nX-Slow: ")
        .unwrap();
    // A keep-alive connection that was served, then trickles its next head.
    let mut trickle = connect(&base);
    assert_eq!(
        keepalive_get(&mut trickle, "/-/healthy").map(|r| r.0),
        Some(200)
    );
    let mut writer = trickle.try_clone().unwrap();
    let trickler = std::thread::spawn(move || {
        let head = b"POST /api/v1/write HTTP/1.1\r\nHost: cairn\r\nX-Padding: ".repeat(8);
        let mut sent = 0;
        for b in head.chunks(1) {
            if writer.write_all(b).is_err() {
                break;
            }
            sent += 1;
            std::thread::sleep(Duration::from_millis(100));
        }
        sent
    });
    let limit = Duration::from_secs(10);
    for (what, s) in [("silent", &mut silent), ("partial head", &mut partial)] {
        let got = closed_within(s, limit, |_| {});
        assert_eq!(
            got,
            Some(vec![]),
            "{what} socket not closed (silently) within {limit:?}"
        );
    }
    let got = closed_within(&mut trickle, limit, |_| {});
    let sent = trickler.join().unwrap();
    assert_eq!(
        got,
        Some(vec![]),
        "trickling socket not closed within {limit:?}"
    );
    assert!(sent < 200, "trickled {sent} bytes before the close");
    check_after(&srv, &canary, "half-open sockets");
}

/// A remote-write body sent at 4 bytes/s gets 408 naming
/// `http.body-read-timeout` (2 s here), and the connection is closed.
#[test]
fn slow_body_gets_408_within_the_body_timeout() {
    let srv = TestServer::spawn(ServerOpts::default().config("http:\n  body-read-timeout: 2s\n"));
    let base = srv.url();
    let canary = Canary::write(&base);
    let mut s = connect(&base);
    s.write_all(
        b"POST /api/v1/write HTTP/1.1\r\nHost: cairn\r\nContent-Type: application/x-protobuf\r\n\
          Content-Encoding: snappy\r\nX-Scope-OrgID: slow\r\nContent-Length: 100000\r\n\r\n",
    )
    .unwrap();
    let limit = Duration::from_secs(15);
    let got = closed_within(&mut s, limit, |s| {
        let _ = s.write_all(b"\0");
    })
    .unwrap_or_else(|| panic!("slow body not answered and closed within {limit:?}"));
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("http.body-read-timeout"), "{text}");
    check_after(&srv, &canary, "slow body");
}

/// With `http.max-connections: 50`, of 60 keep-alive sockets the last 10
/// get 503 naming the key, as does `/-/healthy` on a new connection; once the
/// idle timeout (3 s here) has closed the idle 50, `/-/healthy` answers again.
#[test]
fn connections_over_the_cap_get_503_and_idle_ones_are_closed() {
    let srv =
        TestServer::spawn(ServerOpts::default().config(
            "http:\n  max-connections: 50\n  idle-timeout: 3s\n  header-read-timeout: 30s\n",
        ));
    let base = srv.url();
    let canary = Canary::write(&base);
    let mut open = Vec::new();
    let mut refused = 0;
    for i in 0..60 {
        let mut s = connect(&base);
        match keepalive_get(&mut s, "/-/healthy") {
            Some((200, _)) => open.push(s),
            Some((503, body)) => {
                assert!(body.contains("http.max-connections"), "{body}");
                refused += 1;
            }
            other => panic!("socket {i}: {other:?}"),
        }
    }
    assert_eq!((open.len(), refused), (50, 10));
    let r = get(&format!("{base}/-/healthy")).expect("answered, not hung");
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("http.max-connections"), "{}", r.text());

    let limit = Duration::from_secs(15);
    for (i, s) in open.iter_mut().enumerate() {
        assert!(
            closed_within(s, limit, |_| {}).is_some(),
            "idle socket {i} still open after {limit:?}"
        );
    }
    check_after(&srv, &canary, "connection cap");
}

/// Sets this process's soft open-files limit; returns the (soft, hard) before.
fn set_soft_nofile(soft: Option<u64>) -> (u64, u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    #[allow(unsafe_code)]
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        let before = (lim.rlim_cur, lim.rlim_max);
        if let Some(s) = soft {
            let new = libc::rlimit {
                rlim_cur: s.min(lim.rlim_max),
                rlim_max: lim.rlim_max,
            };
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &new), 0);
        }
        before
    }
}

/// `Max open files` (soft, hard) of `pid` from /proc/PID/limits.
fn open_files_limit(pid: u32) -> (u64, u64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    let l = s
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("Max open files line");
    let n: Vec<u64> = l
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    (n[0], n[1])
}

/// Started with a soft open-files limit of 1,024 (as on many machines), the
/// server raises it to the hard limit, so with the default cap 1,100 idle
/// keep-alive sockets leave `/-/healthy` and a write answering.
#[test]
fn eleven_hundred_idle_sockets_leave_health_and_writes_answering() {
    let (_, hard) = set_soft_nofile(None);
    // The server keeps its cap below the limit with room for its files.
    if hard < 2048 {
        eprintln!("skipped: hard open-files limit {hard} is too low for 1,100 sockets plus room");
        return;
    }
    // The child inherits the lowered soft limit; restored right after (the
    // window only affects other tests opening over 1,024 files meanwhile).
    set_soft_nofile(Some(1024));
    let srv = TestServer::spawn(ServerOpts::default());
    set_soft_nofile(Some(hard));
    let pid = srv.pid().expect("running");
    let (soft, h) = open_files_limit(pid);
    assert_eq!(soft, h, "server did not raise its soft open-files limit");

    let base = srv.url();
    let canary = Canary::write(&base);
    let mut open = Vec::with_capacity(1100);
    for i in 0..1100 {
        let mut s = connect(&base);
        let r = keepalive_get(&mut s, "/-/healthy");
        assert_eq!(r.as_ref().map(|r| r.0), Some(200), "socket {i}: {r:?}");
        open.push(s);
    }
    let r = get(&format!("{base}/-/healthy")).expect("healthy answered");
    assert_eq!(r.status, 200, "{}", r.text());
    let (code, body) = remote_write(
        &base,
        Some("busy"),
        &write_request(vec![series(
            &[("__name__", "up"), ("job", "x")],
            &[(now_ms(), 1.0)],
        )]),
    );
    assert_eq!(code, 204, "{body}");
    // The idle sockets are still served.
    let r = keepalive_get(&mut open[0], "/-/healthy");
    assert_eq!(r.map(|r| r.0), Some(200));
    check_after(&srv, &canary, "1,100 idle sockets");
    let rss = rss_mib(pid);
    eprintln!("RSS with 1,100 idle sockets: {rss} MiB");
}

/// Request input echoed in an error (a header value, a `match[]` selector, a
/// regex, a query, a parameter) is cut: 100 KB in, a short message out.
#[test]
fn echoed_input_is_truncated_in_errors() {
    let srv = TestServer::spawn(ServerOpts::default());
    let base = srv.url();
    let canary = Canary::write(&base);
    let big = "x".repeat(100_000);
    let ct = format!("text/{}", "y".repeat(10_000));
    let r = post(
        &format!("{base}/api/v1/write"),
        &[("Content-Type", &ct), ("Content-Encoding", "snappy")],
        b"\0",
    )
    .unwrap();
    assert_eq!(r.status, 415, "{}", r.text());
    assert!(r.body.len() < 600, "{} bytes: {}", r.body.len(), r.text());
    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    for (path, body) in [
        (
            "/api/v1/series",
            format!("match[]={}", enc(&format!("up{{a=\"{big}"))),
        ),
        (
            "/api/v1/series",
            format!("match[]={}", enc(&format!("{{a=~\"({big}\"}}"))),
        ),
        (
            "/api/v1/query",
            format!("query={}", enc(&format!("up{{a=~\"({big}\"}}"))),
        ),
        (
            "/api/v1/query",
            format!("query={}", enc(&format!("{big}{{"))),
        ),
        ("/api/v1/query", format!("query=up&time={big}")),
        ("/api/v1/query", format!("query=up&limit={big}")),
        (
            "/api/v1/query_range",
            format!("query=up&start=1&end=2&step={big}"),
        ),
    ] {
        let r = post(&format!("{base}{path}"), &form, body.as_bytes()).unwrap();
        assert_eq!(r.status, 400, "{path} {}: {}", &body[..40], r.text());
        let err = r.json()["error"].as_str().unwrap_or_default().to_string();
        assert!(
            !err.is_empty() && err.len() <= 1100,
            "{path} {}: {} bytes of error: {}",
            &body[..40],
            err.len(),
            &err[..err.len().min(300)]
        );
    }
    // Remote read: a matcher whose regex does not compile.
    use cairn_proto::prompb;
    use prost::Message;
    let req = prompb::ReadRequest {
        queries: vec![prompb::Query {
            start_timestamp_ms: 0,
            end_timestamp_ms: now_ms(),
            matchers: vec![prompb::LabelMatcher {
                r#type: 2,
                name: "job".into(),
                value: format!("({big}"),
            }],
            hints: None,
        }],
        accepted_response_types: vec![],
    };
    let body = snap::raw::Encoder::new()
        .compress_vec(&req.encode_to_vec())
        .unwrap();
    let r = post(
        &format!("{base}/api/v1/read"),
        &[
            ("Content-Type", "application/x-protobuf"),
            ("Content-Encoding", "snappy"),
        ],
        &body,
    )
    .unwrap();
    assert_eq!(r.status, 400, "{}", &r.text()[..r.text().len().min(300)]);
    assert!(
        r.body.len() <= 1100,
        "remote read: {} bytes of error",
        r.body.len()
    );
    check_after(&srv, &canary, "long echoed input");
}
