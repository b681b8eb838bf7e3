//! Hostile inputs: storage (what is written can be read back, restarts after
//! any accepted write, extreme times, a full disk). Shared helpers in
//! `hostile.rs`.

#[allow(unused_imports)]
use super::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// RSS bound for these tests: a 10,001-label request is a few hundred KiB;
/// the server with a small head stays far below this.
const RSS_BOUND_MIB: u64 = 512;

fn labels_n(n: usize) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = (0..n)
        .map(|i| (format!("l{i:05}"), "x".to_string()))
        .collect();
    v.push(("__name__".into(), "wide".into()));
    v
}

/// Pairs sorted by name, as remote write requires.
fn as_refs(v: &[(String, String)]) -> Vec<(&str, &str)> {
    let mut r: Vec<(&str, &str)> = v.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    r.sort();
    r
}

/// After SIGKILL the server starts again over the same data, the canary
/// intact.
fn kill_restart_check(s: &mut TestServer, canary: &Canary, ctx: &str) {
    s.kill9();
    s.restart();
    let base = s.url();
    assert_up(&base, ctx);
    canary.check(&base, ctx);
}

/// The write that bricked every start (10,001 labels) gets 400 naming the
/// limit; the server survives SIGKILL + restart with the canary intact.
#[test]
fn ten_thousand_labels_then_sigkill_and_restart() {
    let mut s = TestServer::spawn(ServerOpts::default());
    let base = s.url();
    let canary = Canary::write(&base);
    let now = now_ms();
    let wide = labels_n(10_001);
    let (code, body) = remote_write(
        &base,
        Some("attacker"),
        &write_request(vec![series(&as_refs(&wide), &[(now, 1.0)])]),
    );
    assert_eq!(code, 400, "10,001 labels: {body}");
    assert!(body.contains("max-labels-per-series"), "{body}");
    assert!(
        body.len() < 16 * 1024,
        "the 400 echoes the input: {} bytes",
        body.len()
    );
    // The same as an exemplar's labels.
    let mut ts = series(&[("__name__", "ex"), ("job", "a")], &[(now, 1.0)]);
    ts.exemplars.push(cairn_proto::prompb::Exemplar {
        labels: as_refs(&wide)
            .iter()
            .map(|(n, v)| Label::new(n, v))
            .collect(),
        value: 1.0,
        timestamp: now,
    });
    let (code, body) = remote_write(&base, Some("attacker"), &write_request(vec![ts]));
    assert!(
        code == 400 || code == 204,
        "exemplar with 10,001 labels: {code} {body}"
    );
    let pid = s.pid().expect("running");
    assert!(rss_mib(pid) < RSS_BOUND_MIB, "RSS {} MiB", rss_mib(pid));
    kill_restart_check(&mut s, &canary, "10,001 labels + SIGKILL");
    // And after a flush (the index entry was what failed queries before).
    let r = post(&format!("{}/admin/v1/flush", s.url()), ADMIN, &[]).unwrap();
    assert_eq!(r.status, 200, "flush: {}", r.text());
    kill_restart_check(&mut s, &canary, "flush + SIGKILL");
}

/// With the ingest limits raised to the hard bounds, a series at every
/// bound (1,024 labels, a 4,096-byte name, a 65,536-byte value) is stored,
/// survives SIGKILL + restart and a flush, and reads back.
#[test]
fn label_set_at_the_hard_bounds_survives_restart() {
    let mut s = TestServer::spawn(
        ServerOpts::default()
            .env("CAIRN_INGEST_MAX_LABELS_PER_SERIES", "1024")
            .env("CAIRN_INGEST_MAX_LABEL_NAME_LENGTH", "4096")
            .env("CAIRN_INGEST_MAX_LABEL_VALUE_LENGTH", "65536"),
    );
    let base = s.url();
    let canary = Canary::write(&base);
    let now = now_ms();
    let mut edge = labels_n(1021);
    edge.push(("big_value".into(), "v".repeat(65_536)));
    edge.push((format!("n{}", "a".repeat(4095)), "long name".into()));
    assert_eq!(edge.len(), 1024);
    let (code, body) = remote_write(
        &base,
        Some("edge"),
        &write_request(vec![series(&as_refs(&edge), &[(now, 7.0)])]),
    );
    assert_eq!(code, 204, "a series at the hard bounds: {body}");
    // One past a bound is refused by ingest (400), not stored.
    let mut over = edge.clone();
    over.iter_mut()
        .find(|(n, _)| n == "big_value")
        .expect("big_value")
        .1
        .push('v');
    let (code, body) = remote_write(
        &base,
        Some("edge"),
        &write_request(vec![series(&as_refs(&over), &[(now, 8.0)])]),
    );
    assert_eq!(code, 400, "one byte past the value bound: {body}");
    let check = |base: &str| {
        let got = export(
            base,
            Some("edge"),
            r#"{__name__="wide"}"#,
            (now - 1000) as f64 / 1000.0,
            (now + 1000) as f64 / 1000.0,
        );
        assert_eq!(got.len(), 1, "series at the bounds after restart");
        let (m, v) = got.iter().next().unwrap();
        assert_eq!(m.len(), 1024);
        assert_eq!(m["big_value"].len(), 65_536);
        assert_eq!(v, &vec![(now, 7.0)]);
    };
    kill_restart_check(&mut s, &canary, "a series at the hard bounds + SIGKILL");
    check(&s.url());
    let r = post(&format!("{}/admin/v1/flush", s.url()), ADMIN, &[]).unwrap();
    assert_eq!(r.status, 200, "flush: {}", r.text());
    kill_restart_check(&mut s, &canary, "flush + SIGKILL");
    check(&s.url());
}

/// A sample at i64::MAX (acknowledged, then invisible, then deleted by
/// retention before) gets 400; the server restarts fine.
#[test]
fn sample_at_i64_max_is_refused_and_restart_works() {
    let mut s = TestServer::spawn(ServerOpts::default());
    let base = s.url();
    let canary = Canary::write(&base);
    let (code, body) = remote_write(
        &base,
        Some("attacker"),
        &write_request(vec![series(
            &[("__name__", "far"), ("job", "x")],
            &[(i64::MAX, 1.0)],
        )]),
    );
    assert_eq!(code, 400, "sample at i64::MAX: {body}");
    let (code, body) = remote_write(
        &base,
        Some("attacker"),
        &write_request(vec![series(
            &[("__name__", "far"), ("job", "y")],
            &[(i64::MIN, 1.0)],
        )]),
    );
    assert_eq!(code, 400, "sample at i64::MIN: {body}");
    let r = post(&format!("{base}/admin/v1/flush"), ADMIN, &[]).unwrap();
    assert_eq!(r.status, 200, "flush: {}", r.text());
    kill_restart_check(&mut s, &canary, "i64::MAX sample + SIGKILL");
}

fn remote_read(base: &str, start: i64, end: i64) -> Response {
    use prost::Message;
    let req = cairn_proto::prompb::ReadRequest {
        queries: vec![cairn_proto::prompb::Query {
            start_timestamp_ms: start,
            end_timestamp_ms: end,
            matchers: vec![cairn_proto::prompb::LabelMatcher {
                r#type: 0,
                name: "job".into(),
                value: "canary".into(),
            }],
            hints: None,
        }],
        accepted_response_types: vec![],
    };
    let body = snap::raw::Encoder::new()
        .compress_vec(&req.encode_to_vec())
        .expect("snappy");
    let h = [
        ("Content-Type", "application/x-protobuf"),
        ("Content-Encoding", "snappy"),
        ("X-Prometheus-Remote-Read-Version", "0.1.0"),
        ("X-Scope-OrgID", "canary"),
    ];
    post(&format!("{base}/api/v1/read"), &h, &body).expect("POST /api/v1/read")
}

/// Reads over extreme and inverted time ranges reach storage and answer
/// (200 or 400), never "the query panicked".
#[test]
fn extreme_time_ranges_do_not_panic() {
    let s = TestServer::spawn(ServerOpts::default());
    let base = s.url();
    let canary = Canary::write(&base);
    for (a, b) in [
        (i64::MIN, i64::MAX),
        (i64::MIN, i64::MIN),
        (i64::MAX, i64::MIN),
        (-9_200_000_000_000_000, -9_200_000_000_000_000),
    ] {
        let r = remote_read(&base, a, b);
        assert!(
            r.status == 200 || r.status == 400,
            "remote read {a}..{b}: {} {}",
            r.status,
            r.text()
        );
    }
    let q = |path: &str| {
        let r = get_as(&format!("{base}{path}"), Some("canary"));
        assert!(
            r.status == 200 || r.status == 400,
            "GET {path}: {} {}",
            r.status,
            r.text()
        );
    };
    for t in [
        "-9.2e15",
        "-9223372036854.775",
        "9223372036854.775",
        "-1e300",
    ] {
        q(&format!(
            "/api/v1/export?match[]={}&start={t}&end={t}",
            enc(r#"{job="canary"}"#)
        ));
        q(&format!(
            "/api/v1/series?match[]={}&start={t}&end={t}",
            enc("canary_0")
        ));
        q(&format!(
            "/api/v1/labels?match[]={}&start={t}&end={t}",
            enc("canary_0")
        ));
    }
    for e in [
        "canary_0 @ -9223372036854775",
        "canary_0 @ 9223372036854775",
        "canary_0 @ -9223309901257.974",
        "sum_over_time(canary_0[1h] @ -9223372036854)",
    ] {
        q(&format!("/api/v1/query?query={}&time=0", enc(e)));
        q(&format!(
            "/api/v1/query_range?query={}&start=0&end=60&step=15",
            enc(e)
        ));
    }
    assert_up(&base, "extreme time ranges");
    canary.check(&base, "extreme time ranges");
}

// ------------------------------------------------------------- disk full

/// A tmpfs mounted over a directory, unmounted (lazily) when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// `None` (with the reason) where mounting is not possible.
    fn mount(dir: &Path, size: &str) -> Result<Tmpfs, String> {
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("running mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the filesystem holding `dir` with `dir/filler` until ENOSPC.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let p = dir.join("filler");
    let mut f = std::fs::File::create(&p).expect("creating the filler");
    let block = vec![0x5au8; 1 << 16];
    while f.write_all(&block).is_ok() {}
    // The last bytes (smaller than a block).
    while f.write_all(&[0x5a]).is_ok() {}
    p
}

/// A full disk: writes get 503 (retryable) while the commit log cannot be
/// written and flush fails; once space is freed, writes get 204 and flush
/// 200 again without a restart, every acknowledged sample and the canary
/// intact — also after SIGKILL and restart. Runs on a 64 MiB tmpfs as the
/// data dir; skipped (with the reason) where it cannot be mounted.
#[test]
fn disk_full_then_recovery_without_restart() {
    let mut s = TestServer::spawn(ServerOpts::default());
    s.kill9();
    let data = s.data_dir().to_path_buf();
    let tmpfs = match Tmpfs::mount(&data, "64m") {
        Ok(t) => t,
        Err(why) => {
            eprintln!("skipped: {why}");
            return;
        }
    };
    s.restart();
    let base = s.url();
    let canary = Canary::write(&base);
    let now = now_ms();
    let mut acked: Vec<(i64, f64)> = Vec::new();
    let mut k = 0i64;
    // Each write carries 1,000 samples (a commit-log record of ~10 KiB, so
    // it cannot slip into the last partly used page of a file).
    let mut write = |base: &str, new_series: bool| {
        k += 1;
        let job = if new_series {
            format!("n{k}")
        } else {
            "steady".to_string()
        };
        let pts: Vec<(i64, f64)> = (0..1000)
            .map(|j| (now - 3_000_000 + k * 1000 + j, (k * 1000 + j) as f64))
            .collect();
        let (code, body) = try_remote_write(
            base,
            Some("df"),
            &write_request(vec![series(&[("__name__", "df"), ("job", &job)], &pts)]),
        )
        .unwrap_or((0, "transport error".into()));
        (code, body, job, pts)
    };
    let (code, body, _, p) = write(&base, false);
    assert_eq!(code, 204, "before filling: {body}");
    acked.extend(p);

    let filler = fill(&data);
    let mut codes = Vec::new();
    for i in 0..20 {
        let (code, body, job, p) = write(&base, i % 2 == 0);
        assert!(
            code == 503 || code == 204,
            "write on a full disk: {code} {body}"
        );
        if code == 204 && job == "steady" {
            acked.extend(p);
        }
        codes.push(code);
    }
    assert!(codes.contains(&503), "no 503 on a full disk: {codes:?}");
    let r = post(&format!("{base}/admin/v1/flush"), ADMIN, &[]).unwrap();
    assert_ne!(r.status, 200, "flush on a full disk: {}", r.text());
    assert_up(&base, "a full disk");

    std::fs::remove_file(&filler).expect("freeing space");
    // Recovery by itself: the next writes go through (the index reopens at
    // most once a second, so allow a few attempts).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, body, _, _) = write(&base, true);
        if code == 204 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "writes still fail after space was freed: {code} {body}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    for _ in 0..5 {
        let (code, body, _, p) = write(&base, false);
        assert_eq!(code, 204, "after space was freed: {body}");
        acked.extend(p);
    }
    let r = post(&format!("{base}/admin/v1/flush"), ADMIN, &[]).unwrap();
    assert_eq!(r.status, 200, "flush after space was freed: {}", r.text());
    let check = |base: &str, ctx: &str| {
        canary.check(base, ctx);
        let got = export(
            base,
            Some("df"),
            r#"{job="steady"}"#,
            (now - 4_000_000) as f64 / 1000.0,
            (now + 1000) as f64 / 1000.0,
        );
        let got: std::collections::BTreeSet<(i64, u64)> = got
            .values()
            .next()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|(t, v)| (t, v.to_bits()))
            .collect();
        let lost = acked
            .iter()
            .filter(|(t, v)| !got.contains(&(*t, v.to_bits())))
            .count();
        assert_eq!(
            lost,
            0,
            "{lost} of {} acknowledged samples lost after {ctx}",
            acked.len()
        );
    };
    check(&base, "disk full and recovery");
    s.kill9();
    s.restart();
    check(&s.url(), "disk full, recovery and SIGKILL");
    s.kill9();
    drop(tmpfs);
}
