//! End-to-end tests of `cairn serve` (issue 2's acceptance): each test starts
//! the real binary on `127.0.0.1:0` in a temp dir and talks to it over HTTP.
//!
//! Run with: `CARGO_TARGET_DIR=$HOME/.cache/cairn-target-e2e cargo test -p cairn-e2e`
//! (the `cairn` binary is found via `CAIRN_BIN`, see `cairn_e2e::cairn_bin`).
//! `CAIRN_E2E_SEED=<n>` replays the crash test's kill schedule.

use cairn_e2e::*;

/// Sorts each series' samples by timestamp (keeping duplicates) and compares
/// with `want` bit for bit; panics with a readable diff.
fn assert_exported_eq(got: &Exported, want: &Exported, ctx: &str) {
    let mut got_sorted = got.clone();
    for v in got_sorted.values_mut() {
        v.sort_by_key(|&(t, _)| t);
    }
    let mut want_sorted = want.clone();
    for v in want_sorted.values_mut() {
        v.sort_by_key(|&(t, _)| t);
    }
    let bits = |e: &Exported| -> Vec<(Metric, Vec<(i64, u64)>)> {
        e.iter()
            .map(|(m, v)| {
                (
                    m.clone(),
                    v.iter().map(|&(t, x)| (t, x.to_bits())).collect(),
                )
            })
            .collect()
    };
    if bits(&got_sorted) == bits(&want_sorted) {
        return;
    }
    let mut msg = format!("{ctx}: exported data differs from what was written\n");
    for (m, w) in &want_sorted {
        match got_sorted.get(m) {
            None => msg.push_str(&format!("  missing series {m:?} ({} samples)\n", w.len())),
            Some(g) if g != w => msg.push_str(&format!(
                "  series {m:?}:\n    want {} samples {:?}\n    got  {} samples {:?}\n",
                w.len(),
                &w[..w.len().min(12)],
                g.len(),
                &g[..g.len().min(12)]
            )),
            Some(_) => {}
        }
    }
    for m in got_sorted.keys().filter(|m| !want_sorted.contains_key(*m)) {
        msg.push_str(&format!("  unexpected series {m:?}\n"));
    }
    panic!("{msg}");
}

fn contains_ci(hay: &str, needle: &str) -> bool {
    hay.to_lowercase().contains(&needle.to_lowercase())
}

const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;
const DAY: i64 = 24 * HOUR;

fn secs(ms: i64) -> f64 {
    ms as f64 / 1000.0
}

mod prometheus {
    use super::*;
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    /// Prometheus scrapes `/metrics` (it asks for OpenMetrics first) with
    /// no error, and stores the self-metrics under the names `/metrics`
    /// has always had.
    #[test]
    fn prometheus_scrapes_self_metrics_without_errors() {
        let Some(bin) = prometheus_bin() else {
            eprintln!("\n!!!!!! SKIPPING prometheus_scrapes_self_metrics_without_errors: no prometheus binary (apt-get install prometheus) !!!!!!\n");
            return;
        };
        let s = TestServer::spawn(ServerOpts::default());
        let target = s.url().trim_start_matches("http://").to_string();
        let dir = tempfile::tempdir().expect("tempdir");
        let (_guard, prom) = spawn_prometheus_scraping(&bin, dir.path(), &target);
        let deadline = Instant::now() + Duration::from_secs(60);
        let target = loop {
            let j = get(&format!("{prom}/api/v1/targets"))
                .expect("targets")
                .json();
            let t = j["data"]["activeTargets"][0].clone();
            if t["health"] == "up" || t["lastError"].as_str().is_some_and(|e| !e.is_empty()) {
                break t;
            }
            assert!(Instant::now() < deadline, "no scrape of cairn: {j}");
            std::thread::sleep(Duration::from_millis(200));
        };
        assert_eq!(target["health"], "up", "{target}");
        assert_eq!(target["lastError"], "", "{target}");
        for name in [
            "cairn_api_http_requests_total",
            "cairn_api_reads_running",
            "cairn_api_reads_cancelled_total",
            "cairn_ingest_samples_received_total",
            "cairn_storage_samples_appended_total",
            "cairn_storage_flush_seconds_total",
            "cairn_storage_head_bytes",
            "cairn_storage_commitlog_segments",
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_start_time_seconds",
        ] {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let url = format!("{prom}/api/v1/query?query={}", enc(name));
                let j = get(&url).expect("query").json();
                if j["data"]["result"]
                    .as_array()
                    .is_some_and(|r| !r.is_empty())
                {
                    break;
                }
                // The request family appears once a request was counted.
                assert!(Instant::now() < deadline, "Prometheus has no {name}: {j}");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }

    fn prom_matrix(prom: &str, query: &str, time_s: i64) -> Exported {
        let url = format!("{prom}/api/v1/query?query={}&time={time_s}", enc(query));
        let r = get(&url).unwrap_or_else(|e| panic!("GET {url}: {e}"));
        assert_eq!(r.status, 200, "Prometheus {url}: {}", r.text());
        let j = r.json();
        assert_eq!(j["data"]["resultType"], "matrix", "{j}");
        let mut out = Exported::new();
        for s in j["data"]["result"].as_array().expect("result") {
            let m: Metric = s["metric"]
                .as_object()
                .expect("metric")
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().expect("label").to_string()))
                .collect();
            let vals = s["values"]
                .as_array()
                .expect("values")
                .iter()
                .map(|p| {
                    let t = (p[0].as_f64().expect("ts") * 1000.0).round() as i64;
                    let v: f64 = p[1].as_str().expect("value").parse().expect("float value");
                    (t, v)
                })
                .collect();
            out.insert(m, vals);
        }
        out
    }

    #[test]
    fn prometheus_remote_write_matches_prometheus_range_query() {
        let prom_bin = std::env::var("PROMETHEUS_BIN").unwrap_or("/usr/bin/prometheus".into());
        if !std::path::Path::new(&prom_bin).exists() {
            eprintln!(
                "\n!!!!!! SKIPPING prometheus_remote_write_matches_prometheus_range_query: \
                 {prom_bin} not found (apt-get install prometheus; the Makefile does) !!!!!!\n"
            );
            return;
        }
        let cairn = TestServer::spawn(ServerOpts::default());
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let prom = format!("http://127.0.0.1:{port}");
        let cfg = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: prometheus\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n\
             remote_write:\n  - url: {}/api/v1/write\n    queue_config:\n      batch_send_deadline: 1s\n",
            cairn.url()
        );
        let cfg_path = dir.path().join("prometheus.yml");
        std::fs::write(&cfg_path, cfg).expect("write prometheus.yml");
        let log_path = dir.path().join("prometheus.log");
        let log = std::fs::File::create(&log_path).expect("prometheus log");
        let child = Command::new(&prom_bin)
            .arg(format!("--config.file={}", cfg_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup"))
            .stderr(log)
            .spawn()
            .expect("spawn prometheus");
        let mut guard = ChildGuard(child);
        let prom_log = || std::fs::read_to_string(&log_path).unwrap_or_default();

        let deadline = Instant::now() + Duration::from_secs(60);
        while !get(&format!("{prom}/-/ready")).is_ok_and(|r| r.status == 200) {
            if let Ok(Some(st)) = guard.0.try_wait() {
                panic!("prometheus exited ({st}):\n{}", prom_log());
            }
            assert!(
                Instant::now() < deadline,
                "prometheus not ready:\n{}",
                prom_log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        // Let it scrape itself ~25 times and remote-write the samples.
        std::thread::sleep(Duration::from_secs(25));
        assert!(
            guard.0.try_wait().expect("try_wait").is_none(),
            "prometheus died:\n{}",
            prom_log()
        );

        // T: a few seconds ago, so the scrape at T is complete in Prometheus.
        let t = now_ms() / 1000 - 3;
        for sel in ["prometheus_tsdb_head_samples_appended_total", "up"] {
            let want = prom_matrix(&prom, &format!("{sel}[10m]"), t);
            assert!(!want.is_empty(), "Prometheus has no {sel}");
            for (m, v) in &want {
                assert!(
                    v.len() >= 15,
                    "only {} samples of {m:?} in Prometheus",
                    v.len()
                );
            }
            // Wait for remote write to catch up, then compare exactly over
            // (T-600s, T] (range selectors are left-open).
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let mut got = export(&cairn.url(), None, sel, (t - 600) as f64, t as f64);
                for v in got.values_mut() {
                    v.retain(|&(ts, _)| ts > (t - 600) * 1000 && ts <= t * 1000);
                }
                got.retain(|_, v| !v.is_empty());
                let caught_up = want.iter().all(|(m, w)| {
                    got.get(m)
                        .and_then(|g| g.iter().map(|p| p.0).max())
                        .is_some_and(|last| last >= w.last().expect("non-empty").0)
                });
                if caught_up || Instant::now() > deadline {
                    eprintln!(
                        "{sel}[10m] @ {t}: comparing {} series, {} samples",
                        want.len(),
                        want.values().map(Vec::len).sum::<usize>()
                    );
                    assert_exported_eq(
                        &got,
                        &want,
                        &format!("Cairn export vs Prometheus {sel}[10m]"),
                    );
                    break;
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        }
        drop(guard);
    }
}

mod crash {
    use super::*;
    use std::collections::{BTreeMap, HashSet};
    use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};
    use std::thread;
    use std::time::Duration;

    const SERIES: u64 = 8;
    const KILLS: usize = 30;
    const NAME: &str = "crash_test";

    fn kind(s: u64) -> &'static str {
        ["int", "dec", "float"][(s % 3) as usize]
    }

    fn crash_metric(s: u64) -> Metric {
        metric(&[
            ("__name__", NAME),
            ("kind", kind(s)),
            ("series", &format!("s{s}")),
        ])
    }

    /// The value of series `s` at `ts`: integers, decimals, or arbitrary
    /// floats so every codec mode is exercised.
    fn crash_value(s: u64, ts: i64) -> f64 {
        match s % 3 {
            0 => ((ts / 7) % 100_000) as f64,
            1 => (ts % 10_000) as f64 / 100.0,
            _ => ((ts as f64) * 0.001 + s as f64).sin() * 1e3,
        }
    }

    /// Batch `b`: 1–4 distinct series with 1–10 samples each at
    /// `base + b*10 + j` — every (series, timestamp) is written by one batch only.
    fn make_batch(b: i64, base: i64, rng: &mut Rng) -> Vec<(u64, Vec<i64>)> {
        let n = rng.range(1, 5);
        let mut chosen: Vec<u64> = Vec::new();
        while (chosen.len() as u64) < n {
            let s = rng.range(0, SERIES);
            if !chosen.contains(&s) {
                chosen.push(s);
            }
        }
        chosen
            .into_iter()
            .map(|s| {
                let k = rng.range(1, 11) as i64;
                (s, (0..k).map(|j| base + b * 10 + j).collect())
            })
            .collect()
    }

    fn to_request(batch: &[(u64, Vec<i64>)]) -> WriteRequest {
        write_request(
            batch
                .iter()
                .map(|(s, tss)| {
                    let m = crash_metric(*s);
                    let labels: Vec<(&str, &str)> =
                        m.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                    let samples: Vec<(i64, f64)> =
                        tss.iter().map(|&t| (t, crash_value(*s, t))).collect();
                    series(&labels, &samples)
                })
                .collect(),
        )
    }

    /// Every acknowledged sample present exactly once with its exact value;
    /// nothing present twice; nothing present that was never sent.
    fn verify(
        server: &TestServer,
        acked: &BTreeMap<u64, Vec<i64>>,
        base: i64,
        max_issued: &AtomicI64,
        ctx: &str,
    ) -> usize {
        let got = export(
            &server.url(),
            None,
            &format!("{{__name__=\"{NAME}\"}}"),
            secs(base) - 1.0,
            secs(now_ms()) + 3600.0,
        );
        // Loaded after the export: the writer bumps it before sending, so
        // every timestamp the export can show is at most this.
        let max_issued = max_issued.load(Ordering::SeqCst);
        let mut errs = Vec::new();
        let mut present: BTreeMap<u64, HashSet<i64>> = BTreeMap::new();
        for (m, samples) in &got {
            let s: u64 = m
                .get("series")
                .and_then(|v| v.strip_prefix('s'))
                .and_then(|v| v.parse().ok())
                .unwrap_or(u64::MAX);
            if s >= SERIES || *m != crash_metric(s) {
                errs.push(format!("unexpected series {m:?}"));
                continue;
            }
            let set = present.entry(s).or_default();
            for &(ts, v) in samples {
                if !set.insert(ts) {
                    errs.push(format!("series s{s} ts {ts} present twice"));
                }
                if ts < base || ts > max_issued {
                    errs.push(format!("series s{s} ts {ts} was never written"));
                }
                if v.to_bits() != crash_value(s, ts).to_bits() {
                    errs.push(format!(
                        "series s{s} ts {ts}: value {v:?}, want {:?}",
                        crash_value(s, ts)
                    ));
                }
            }
        }
        let mut n = 0;
        for (s, tss) in acked {
            for ts in tss {
                n += 1;
                if !present.get(s).is_some_and(|p| p.contains(ts)) {
                    errs.push(format!("acknowledged sample series s{s} ts {ts} missing"));
                }
            }
        }
        if !errs.is_empty() {
            let total = errs.len();
            errs.truncate(25);
            panic!(
                "{ctx}: {total} problems, first ones:\n  {}\n--- server log tail ---\n{}",
                errs.join("\n  "),
                server.log_tail()
            );
        }
        n
    }

    #[test]
    fn crash_loses_no_acknowledged_sample() {
        let seed: u64 = std::env::var("CAIRN_E2E_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| now_ms() as u64);
        eprintln!("crash_loses_no_acknowledged_sample: CAIRN_E2E_SEED={seed}");
        let mut server = TestServer::spawn(ServerOpts::default());
        let base = now_ms() - 30 * MIN;

        let url = Arc::new(Mutex::new(server.url()));
        let stop = Arc::new(AtomicBool::new(false));
        let acked: Arc<Mutex<BTreeMap<u64, Vec<i64>>>> = Arc::default();
        let acked_batches = Arc::new(AtomicU64::new(0));
        let max_issued = Arc::new(AtomicI64::new(base));
        let writer_err: Arc<Mutex<Option<String>>> = Arc::default();

        let writer = {
            let (url, stop, acked, acked_batches, max_issued, writer_err) = (
                url.clone(),
                stop.clone(),
                acked.clone(),
                acked_batches.clone(),
                max_issued.clone(),
                writer_err.clone(),
            );
            thread::spawn(move || {
                let mut rng = Rng::new(seed ^ 0x05ee_d0fb_47c4);
                let mut b: i64 = 0;
                while !stop.load(Ordering::SeqCst) {
                    let batch = make_batch(b, base, &mut rng);
                    let req = to_request(&batch);
                    let top = batch
                        .iter()
                        .flat_map(|(_, t)| t)
                        .max()
                        .copied()
                        .unwrap_or(base);
                    max_issued.fetch_max(top, Ordering::SeqCst);
                    // Like Prometheus: resend the same batch until it is
                    // acknowledged (so the server also sees duplicates of
                    // samples it may already have made durable).
                    while !stop.load(Ordering::SeqCst) {
                        let u = url.lock().expect("url").clone();
                        match try_remote_write(&u, None, &req) {
                            Ok((204, _)) => {
                                let mut a = acked.lock().expect("acked");
                                for (s, tss) in &batch {
                                    a.entry(*s).or_default().extend_from_slice(tss);
                                }
                                acked_batches.fetch_add(1, Ordering::SeqCst);
                                break;
                            }
                            Ok((st, body)) if (400..500).contains(&st) && st != 429 => {
                                *writer_err.lock().expect("err") =
                                    Some(format!("valid batch {b} refused with {st}: {body}"));
                                return;
                            }
                            _ => thread::sleep(Duration::from_millis(15)),
                        }
                    }
                    b += 1;
                    thread::sleep(Duration::from_millis(3));
                }
            })
        };

        let mut rng = Rng::new(seed);
        let mut epochs_with_acks = 0;
        let mut last_acked = 0;
        for i in 0..KILLS {
            thread::sleep(Duration::from_millis(rng.range(150, 1300)));
            let flusher = if i % 2 == 1 {
                // Kill while a flush is (probably) in progress.
                let u = server.url();
                let f = thread::spawn(move || {
                    let _ = post(&format!("{u}/admin/v1/flush"), ADMIN, &[]);
                });
                thread::sleep(Duration::from_millis(rng.range(0, 25)));
                Some(f)
            } else {
                None
            };
            server.kill9();
            if let Some(f) = flusher {
                let _ = f.join();
            }
            if rng.range(0, 4) == 0 {
                thread::sleep(Duration::from_millis(rng.range(0, 300)));
            }
            server.restart();
            *url.lock().expect("url") = server.url();
            if let Some(e) = writer_err.lock().expect("err").clone() {
                panic!(
                    "writer: {e}\n--- server log tail ---\n{}",
                    server.log_tail()
                );
            }
            // Snapshot first: everything in it was acknowledged before the
            // reads below start.
            let snapshot = acked.lock().expect("acked").clone();
            let n_batches = acked_batches.load(Ordering::SeqCst);
            if n_batches > last_acked {
                epochs_with_acks += 1;
            }
            last_acked = n_batches;
            let n = verify(
                &server,
                &snapshot,
                base,
                &max_issued,
                &format!("after kill {} (seed {seed})", i + 1),
            );
            eprintln!(
                "kill {:2}: {n} acknowledged samples verified ({n_batches} batches)",
                i + 1
            );
        }
        stop.store(true, Ordering::SeqCst);
        writer.join().expect("writer thread");
        if let Some(e) = writer_err.lock().expect("err").clone() {
            panic!("writer: {e}");
        }
        let snapshot = acked.lock().expect("acked").clone();
        verify(&server, &snapshot, base, &max_issued, "final");
        let log = server.log();
        eprintln!(
            "crash test: {} restarts, server logged {} interrupted-flush cleanups",
            log.matches("==== cairn-e2e: start").count(),
            log.lines()
                .filter(|l| contains_ci(l, "interrupted"))
                .count()
        );
        // The test only means something if writes were acknowledged between
        // most of the kills.
        assert!(
            epochs_with_acks >= KILLS / 2,
            "only {epochs_with_acks} of {KILLS} runs acknowledged any write"
        );
    }
}

mod bad_input {
    use super::*;
    use prost::Message;

    const SNAPPY_PB: [(&str, &str); 2] = [
        ("Content-Encoding", "snappy"),
        ("Content-Type", "application/x-protobuf"),
    ];

    fn raw_series(labels: Vec<(&[u8], &[u8])>, ts: i64) -> TimeSeries {
        TimeSeries {
            labels: labels
                .into_iter()
                .map(|(n, v)| Label {
                    name: n.to_vec(),
                    value: v.to_vec(),
                })
                .collect(),
            samples: vec![Sample {
                value: 1.0,
                timestamp: ts,
            }],
            ..Default::default()
        }
    }

    /// (description, series, strings the 400 body must contain, one of
    /// these reason words).
    type Case = (
        &'static str,
        TimeSeries,
        Vec<&'static str>,
        Vec<&'static str>,
    );

    fn invalid_cases(ts: i64) -> Vec<Case> {
        vec![
            (
                "unsorted labels",
                raw_series(
                    vec![
                        (b"__name__", b"bad_unsorted"),
                        (b"zeta", b"1"),
                        (b"alpha", b"2"),
                    ],
                    ts,
                ),
                vec!["bad_unsorted"],
                vec!["sort", "order"],
            ),
            (
                "duplicate label",
                raw_series(
                    vec![
                        (b"__name__", b"bad_duplicate"),
                        (b"dup", b"1"),
                        (b"dup", b"2"),
                    ],
                    ts,
                ),
                vec!["bad_duplicate", "dup"],
                vec!["duplicate"],
            ),
            (
                "missing __name__",
                raw_series(vec![(b"job", b"bad_no_name_job")], ts),
                vec!["bad_no_name_job"],
                vec!["__name__", "metric name"],
            ),
            (
                // "1bad" < "__name__" bytewise, so this set is sorted.
                "invalid label name (leading digit)",
                raw_series(vec![(b"1bad", b"x"), (b"__name__", b"bad_label_name")], ts),
                vec!["bad_label_name", "1bad"],
                vec!["invalid", "not valid"],
            ),
            (
                "invalid label name (hyphen)",
                raw_series(
                    vec![(b"__name__", b"bad_label_hyphen"), (b"bad-label", b"x")],
                    ts,
                ),
                vec!["bad_label_hyphen", "bad-label"],
                vec!["invalid", "not valid"],
            ),
            (
                "non-UTF-8 label value",
                raw_series(vec![(b"__name__", b"bad_utf8"), (b"v", b"\xff\xfe")], ts),
                vec!["bad_utf8"],
                vec!["utf"],
            ),
        ]
    }

    #[test]
    fn bad_input_gets_clear_errors_and_valid_rest_is_stored() {
        let s = TestServer::spawn(ServerOpts::default().env("CAIRN_INGEST_MAX_BODY_SIZE", "1MiB"));
        let base = s.url();
        let w = format!("{base}/api/v1/write");
        let now = now_ms();
        let good = write_request(vec![series(
            &[("__name__", "bad_input_ok"), ("job", "e2e")],
            &[(now, 1.5)],
        )]);
        let send = |headers: &[(&str, &str)], body: &[u8]| {
            post(&w, headers, body).unwrap_or_else(|e| panic!("POST {w}: {e}"))
        };

        // Garbage that is not snappy.
        let r = send(
            &SNAPPY_PB,
            b"\xff\xff\xff\xff\xff this is certainly not snappy \x00\x01",
        );
        assert_eq!(r.status, 400, "garbage body: {}", r.text());
        // Valid snappy, garbage protobuf.
        let junk_pb = snap::raw::Encoder::new()
            .compress_vec(&[0xffu8; 64])
            .expect("snappy");
        let r = send(&SNAPPY_PB, &junk_pb);
        assert_eq!(r.status, 400, "snappy of garbage: {}", r.text());
        // Valid protobuf, not snappy-compressed.
        let r = send(&SNAPPY_PB, &good.encode_to_vec());
        assert_eq!(r.status, 400, "uncompressed protobuf: {}", r.text());
        // Wrong Content-Type.
        let r = send(
            &[
                ("Content-Encoding", "snappy"),
                ("Content-Type", "application/json"),
            ],
            &encode_write(&good),
        );
        assert_eq!(r.status, 415, "Content-Type application/json: {}", r.text());
        // Wrong Content-Encoding.
        let r = send(
            &[
                ("Content-Encoding", "gzip"),
                ("Content-Type", "application/x-protobuf"),
            ],
            &encode_write(&good),
        );
        assert_eq!(r.status, 415, "Content-Encoding gzip: {}", r.text());
        // Above the configured 1MiB (far below the 64MiB default).
        let mut rng = Rng::new(7);
        let big: Vec<u8> = (0..(3 << 19)).map(|_| rng.next_u64() as u8).collect();
        let r = send(&SNAPPY_PB, &big);
        assert_eq!(r.status, 413, "1.5MiB body with max 1MiB: {}", r.text());
        assert_eq!(
            get(&format!("{base}/-/healthy")).expect("healthy").status,
            200
        );

        // Each invalid label set alone: 400 naming the series and the reason.
        for (what, ts, must, reasons) in invalid_cases(now) {
            let (st, body) = remote_write(&base, None, &write_request(vec![ts]));
            assert_eq!(st, 400, "{what}: status {st}, body {body:?}");
            for m in &must {
                assert!(
                    body.contains(m),
                    "{what}: 400 body does not name {m:?}: {body:?}"
                );
            }
            assert!(
                reasons.iter().any(|r| contains_ci(&body, r)),
                "{what}: 400 body gives no reason (one of {reasons:?}): {body:?}"
            );
        }

        // Mixed batch: valid series interleaved with every invalid kind.
        let ok1 = [("__name__", "mixed_ok_1"), ("job", "e2e")];
        let ok2 = [("__name__", "mixed_ok_2"), ("job", "e2e")];
        let ok1_samples = [(now - 2000, 1.25), (now - 1000, 2.5)];
        let ok2_samples = [(now - 1500, -7.0)];
        let mut ts = vec![series(&ok1, &ok1_samples)];
        for (i, (_, bad, _, _)) in invalid_cases(now).into_iter().enumerate() {
            ts.push(bad);
            if i == 2 {
                ts.push(series(&ok2, &ok2_samples));
            }
        }
        let (st, body) = remote_write(&base, None, &write_request(ts));
        assert_eq!(st, 400, "mixed batch: {body}");
        assert!(
            body.contains("bad_"),
            "mixed batch 400 names no invalid series: {body:?}"
        );

        let (start, end) = (secs(now) - 3600.0, secs(now) + 3600.0);
        let got = export(&base, None, r#"{__name__=~"mixed_ok_.*"}"#, start, end);
        let want: Exported = [
            (metric(&ok1), ok1_samples.to_vec()),
            (metric(&ok2), ok2_samples.to_vec()),
        ]
        .into_iter()
        .collect();
        assert_exported_eq(&got, &want, "valid series of the mixed batch");
        // The invalid series were stored neither alone nor from the mix.
        let bad = export(&base, None, r#"{__name__=~"bad_.+"}"#, start, end);
        assert!(bad.is_empty(), "invalid series were stored: {bad:?}");
        let nameless = api_data(
            &base,
            None,
            &format!(
                "/api/v1/series?match[]={}&start={start}&end={end}",
                enc(r#"{job="bad_no_name_job"}"#)
            ),
        );
        assert_eq!(
            nameless,
            serde_json::json!([]),
            "series without __name__ was stored"
        );
        let labels = strings(&api_data(&base, None, "/api/v1/labels"));
        assert!(
            !labels.iter().any(|l| l == "1bad" || l == "bad-label"),
            "invalid label name stored: {labels:?}"
        );
        // Nothing from the refused bodies got in either.
        let none = export(&base, None, r#"{__name__="bad_input_ok"}"#, start, end);
        assert!(
            none.is_empty(),
            "a refused body was (partly) stored: {none:?}"
        );

        // Still up and still ingesting.
        assert_eq!(
            get(&format!("{base}/-/healthy")).expect("healthy").status,
            200
        );
        let (st, body) = remote_write(&base, None, &good);
        assert_eq!(st, 204, "valid write after bad input: {body}");
        let got = export(&base, None, r#"{__name__="bad_input_ok"}"#, start, end);
        let want: Exported = [(
            metric(&[("__name__", "bad_input_ok"), ("job", "e2e")]),
            vec![(now, 1.5)],
        )]
        .into_iter()
        .collect();
        assert_exported_eq(&got, &want, "valid write after bad input");

        // The alias path takes the same protocol.
        let alias = write_request(vec![series(&[("__name__", "alias_ok")], &[(now, 4.0)])]);
        let r = post(
            &format!("{base}/api/v1/prom/remote/write"),
            &SNAPPY_PB,
            &encode_write(&alias),
        )
        .expect("POST alias");
        assert_eq!(r.status, 204, "/api/v1/prom/remote/write: {}", r.text());
        let got = export(&base, None, r#"{__name__="alias_ok"}"#, start, end);
        let want: Exported = [(metric(&[("__name__", "alias_ok")]), vec![(now, 4.0)])]
            .into_iter()
            .collect();
        assert_exported_eq(&got, &want, "write via the alias path");

        // Self-metrics in Prometheus text format.
        let m = get(&format!("{base}/metrics")).expect("GET /metrics");
        assert_eq!(m.status, 200);
        assert!(
            m.text().lines().any(|l| l.starts_with("cairn_")),
            "/metrics has no cairn_ metric: {}",
            m.text()
        );
    }
}

#[path = "tenancy/limits.rs"]
mod limits;

mod tenants {
    use super::*;

    #[test]
    fn tenants_are_isolated() {
        let s = TestServer::spawn(ServerOpts::default());
        let base = s.url();
        let now = now_ms();
        // (header, tenant name, value)
        let tenants: [(Option<&str>, &str, f64); 3] = [
            (Some("a"), "a", 1.0),
            (Some("b"), "b", 2.0),
            (None, "default", 3.0),
        ];
        for (hdr, name, v) in tenants {
            let own_label = format!("only_{name}_label");
            let own_metric = format!("only_{name}_metric");
            let req = write_request(vec![
                series(
                    &[
                        ("__name__", "shared_metric"),
                        (&own_label, "1"),
                        ("owner", name),
                    ],
                    &[(now, v)],
                ),
                series(
                    &[("__name__", &own_metric), ("owner", name)],
                    &[(now, v * 10.0)],
                ),
            ]);
            let (st, body) = remote_write(&base, hdr, &req);
            assert_eq!(st, 204, "write as tenant {name}: {body}");
        }
        let (start, end) = (secs(now) - 3600.0, secs(now) + 3600.0);
        let range = format!("start={start}&end={end}");
        let sel = enc(r#"{__name__=~"shared_metric|only_.+"}"#);
        for (hdr, name, v) in tenants {
            let own_label = format!("only_{name}_label");
            let own_metric = format!("only_{name}_metric");
            let shared = metric(&[
                ("__name__", "shared_metric"),
                (&own_label, "1"),
                ("owner", name),
            ]);
            let only = metric(&[("__name__", &own_metric), ("owner", name)]);

            let data = api_data(&base, hdr, &format!("/api/v1/series?match[]={sel}&{range}"));
            let mut got: Vec<Metric> = data
                .as_array()
                .expect("series array")
                .iter()
                .map(|m| serde_json::from_value(m.clone()).expect("label map"))
                .collect();
            got.sort();
            let mut want = vec![shared.clone(), only.clone()];
            want.sort();
            assert_eq!(got, want, "tenant {name}: /api/v1/series");

            let labels = strings(&api_data(&base, hdr, &format!("/api/v1/labels?{range}")));
            let mut want = vec![
                "__name__".to_string(),
                own_label.clone(),
                "owner".to_string(),
            ];
            want.sort();
            assert_eq!(labels, want, "tenant {name}: /api/v1/labels");

            let names = strings(&api_data(
                &base,
                hdr,
                &format!("/api/v1/label/__name__/values?{range}"),
            ));
            let mut want = vec![own_metric.clone(), "shared_metric".to_string()];
            want.sort();
            assert_eq!(names, want, "tenant {name}: __name__ values");
            let owners = strings(&api_data(
                &base,
                hdr,
                &format!("/api/v1/label/owner/values?{range}"),
            ));
            assert_eq!(
                owners,
                vec![name.to_string()],
                "tenant {name}: owner values"
            );

            let got = export(
                &base,
                hdr,
                r#"{__name__=~"shared_metric|only_.+"}"#,
                start,
                end,
            );
            let want: Exported = [(shared, vec![(now, v)]), (only, vec![(now, v * 10.0)])]
                .into_iter()
                .collect();
            assert_exported_eq(&got, &want, &format!("tenant {name}: export"));
        }
        // POST form-encoded /api/v1/series honours the tenant too.
        for (hdr, name, _) in tenants {
            let mut h = vec![("Content-Type", "application/x-www-form-urlencoded")];
            if let Some(t) = hdr {
                h.push(("X-Scope-OrgID", t));
            }
            let body = format!("match[]={}&{range}", enc(r#"{__name__="shared_metric"}"#));
            let r =
                post(&format!("{base}/api/v1/series"), &h, body.as_bytes()).expect("POST series");
            assert_eq!(r.status, 200, "POST /api/v1/series as {name}: {}", r.text());
            let owners: Vec<String> = r.json()["data"]
                .as_array()
                .expect("data")
                .iter()
                .map(|m| m["owner"].as_str().expect("owner").to_string())
                .collect();
            assert_eq!(
                owners,
                vec![name.to_string()],
                "POST /api/v1/series as {name}"
            );
        }

        // A tenant that never wrote sees nothing.
        let hdr = Some("c");
        let data = api_data(&base, hdr, &format!("/api/v1/series?match[]={sel}&{range}"));
        assert_eq!(data, serde_json::json!([]), "tenant c: series");
        assert!(
            strings(&api_data(&base, hdr, &format!("/api/v1/labels?{range}"))).is_empty(),
            "tenant c: labels"
        );
        assert!(
            strings(&api_data(
                &base,
                hdr,
                &format!("/api/v1/label/owner/values?{range}")
            ))
            .is_empty(),
            "tenant c: owner values"
        );
        assert!(
            export(&base, hdr, r#"{__name__="shared_metric"}"#, start, end).is_empty(),
            "tenant c: export"
        );
    }

    /// `cairn tenant mapping-rules` sets and shows a tenant's mapping rules
    /// through the admin API (a rule without a cutover gets one, now); a
    /// policy the node does not keep is refused, the error naming it; and
    /// `cairn tenant drop-rules` does the same for drop rules.
    #[test]
    fn the_cli_sets_and_shows_mapping_and_drop_rules() {
        let cfg = "storage:\n  namespaces: [\"1m:30d\"]\n";
        let s = TestServer::spawn(ServerOpts::default().config(cfg));
        let dir = tempfile::tempdir().unwrap();
        let cli = |args: &[&str]| {
            let out = std::process::Command::new(cairn_bin())
                .args(["tenant", "--url", &s.url(), "--token", ADMIN_TOKEN])
                .args(args)
                .output()
                .expect("running cairn tenant");
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        };
        let (ok, _, err) = cli(&["create", "team-a"]);
        assert!(ok, "{err}");
        let before = now_ms();
        let file = dir.path().join("mapping.json");
        std::fs::write(
            &file,
            r#"[{"name":"dev-raw-only","selector":"{env=\"dev\"}","policies":[]},
                {"name":"node-1m","selector":"{__name__=~\"node_.*\"}","policies":["1m:30d"],"cutover_ms":1767225600000,"dry_run":true}]"#,
        )
        .unwrap();
        let (ok, out, err) = cli(&["mapping-rules", "team-a", "--set", file.to_str().unwrap()]);
        assert!(ok, "{err}");
        let (ok, shown, err) = cli(&["mapping-rules", "team-a"]);
        assert!(ok, "{err}");
        assert_eq!(out, shown);
        let j: serde_json::Value = serde_json::from_str(&shown).unwrap();
        let rules = j["mapping_rules"].as_array().unwrap();
        assert_eq!(rules.len(), 2, "{j}");
        assert_eq!(rules[0]["name"], "dev-raw-only");
        let cut = rules[0]["cutover_ms"].as_i64().unwrap();
        assert!(cut >= before && cut <= now_ms(), "cut over when set: {j}");
        assert_eq!(rules[1]["cutover_ms"], 1767225600000i64);
        assert_eq!(rules[1]["dry_run"], true);
        std::fs::write(
            &file,
            r#"[{"name":"x","selector":"{a=\"b\"}","policies":["1h:5y"]}]"#,
        )
        .unwrap();
        let (ok, _, err) = cli(&["mapping-rules", "team-a", "--set", file.to_str().unwrap()]);
        assert!(!ok);
        assert!(
            err.contains("HTTP 400") && err.contains("1h:5y") && err.contains("1m:30d"),
            "{err}"
        );
        std::fs::write(
            &file,
            r#"[{"name":"go","selector":"{__name__=~\"go_.*\"}","action":"drop"}]"#,
        )
        .unwrap();
        let (ok, _, err) = cli(&["drop-rules", "team-a", "--set", file.to_str().unwrap()]);
        assert!(ok, "{err}");
        let (ok, shown, err) = cli(&["drop-rules", "team-a"]);
        assert!(ok, "{err}");
        let j: serde_json::Value = serde_json::from_str(&shown).unwrap();
        assert_eq!(j["drop_rules"][0]["name"], "go", "{j}");
        // The tenant's record carries both.
        let (ok, shown, err) = cli(&["get", "team-a"]);
        assert!(ok, "{err}");
        let j: serde_json::Value = serde_json::from_str(&shown).unwrap();
        assert_eq!(j["mapping_rules"].as_array().map(Vec::len), Some(2), "{j}");
    }
}

mod restart {
    use super::*;

    /// Writes `n` samples for each of `names`, starting at `t0`, 1s apart;
    /// adds them to `want`.
    fn write_block(base: &str, names: &[&str], t0: i64, n: i64, want: &mut Exported) {
        let mut ts = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let labels = [("__name__", "durable_metric"), ("instance", *name)];
            let samples: Vec<(i64, f64)> = (0..n)
                .map(|k| (t0 + k * 1000, (t0 + k * 1000) as f64 / 3.0 + i as f64))
                .collect();
            want.entry(metric(&labels))
                .or_default()
                .extend_from_slice(&samples);
            ts.push(series(&labels, &samples));
        }
        let (st, body) = remote_write(base, None, &write_request(ts));
        assert_eq!(st, 204, "write: {body}");
    }

    fn flush(base: &str) {
        let r = post(&format!("{base}/admin/v1/flush"), ADMIN, &[]).expect("POST flush");
        assert_eq!(r.status, 200, "flush: {}", r.text());
    }

    #[test]
    fn graceful_sigterm_and_recovery_after_flush() {
        let mut s = TestServer::spawn(ServerOpts::default());
        let now = now_ms();
        let mut want = Exported::new();
        let read = |s: &TestServer| {
            export(
                &s.url(),
                None,
                r#"{__name__="durable_metric"}"#,
                secs(now) - 7200.0,
                secs(now) + 3600.0,
            )
        };

        write_block(&s.url(), &["a", "b", "c"], now - 50 * MIN, 120, &mut want);
        flush(&s.url());
        write_block(&s.url(), &["a", "b", "d"], now - 20 * MIN, 120, &mut want);
        assert_exported_eq(&read(&s), &want, "before restart");

        let st = s.sigterm();
        assert_eq!(
            st.code(),
            Some(0),
            "exit status after SIGTERM: {st}\n{}",
            s.log_tail()
        );
        s.restart();
        assert_exported_eq(&read(&s), &want, "after flush + SIGTERM + restart");

        // Again: flush what was replayed, add more, stop, start. Samples that
        // were in both a fileset and the commit log must not come back twice.
        flush(&s.url());
        write_block(&s.url(), &["c", "e"], now - 5 * MIN, 60, &mut want);
        let st = s.sigterm();
        assert_eq!(
            st.code(),
            Some(0),
            "exit status after second SIGTERM: {st}\n{}",
            s.log_tail()
        );
        s.restart();
        assert_exported_eq(&read(&s), &want, "after second restart");
    }
}

mod backfill {
    use super::*;

    #[test]
    fn backfill_and_out_of_order_accepted() {
        let mut s = TestServer::spawn(ServerOpts::default());
        let now = now_ms();
        let ooo = [("__name__", "backfill_metric"), ("case", "ooo")];
        let old = [("__name__", "backfill_metric"), ("case", "old")];
        let mut want = Exported::new();
        let mut write_one = |labels: &[(&str, &str)], samples: &[(i64, f64)]| {
            let (st, body) = remote_write(
                &s.url(),
                None,
                &write_request(vec![series(labels, samples)]),
            );
            assert_eq!(st, 204, "write {labels:?} {samples:?}: {body}");
            want.entry(metric(labels))
                .or_default()
                .extend_from_slice(samples);
        };
        // Out of order inside the last 2h, one request each.
        for (i, age) in [10 * MIN, 100 * MIN, 30 * MIN, 5 * MIN, 90 * MIN, 31 * MIN]
            .into_iter()
            .enumerate()
        {
            write_one(&ooo, &[(now - age, i as f64 + 0.5)]);
        }
        // Days old, inside the 30d retention, also out of order.
        write_one(&old, &[(now - 3 * DAY, 3.0)]);
        write_one(&old, &[(now - 10 * DAY, 10.0)]);
        write_one(
            &old,
            &[(now - 29 * DAY, 29.0), (now - 29 * DAY + 15_000, 29.25)],
        );
        write_one(&old, &[(now - 2 * DAY - 7, 2.0)]);

        let (start, end) = (secs(now - 31 * DAY), secs(now) + 3600.0);
        let read = |s: &TestServer| {
            export(
                &s.url(),
                None,
                r#"{__name__="backfill_metric"}"#,
                start,
                end,
            )
        };
        assert_exported_eq(&read(&s), &want, "out-of-order and backfilled samples");

        // RFC 3339 bounds select the same samples as Unix seconds.
        let got = export_range(
            &s.url(),
            None,
            r#"{__name__="backfill_metric"}"#,
            &rfc3339(now - 31 * DAY),
            &rfc3339(now + HOUR),
        );
        assert_exported_eq(&got, &want, "export with RFC 3339 start/end");
        // And a narrower RFC 3339 window holds exactly the samples in it.
        let got = export_range(
            &s.url(),
            None,
            r#"{__name__="backfill_metric"}"#,
            &rfc3339(now - 11 * DAY),
            &rfc3339(now - 2 * DAY),
        );
        let want_window: Exported = want
            .iter()
            .map(|(m, v)| {
                let v: Vec<(i64, f64)> = v
                    .iter()
                    .copied()
                    .filter(|&(t, _)| t >= now - 11 * DAY && t <= now - 2 * DAY)
                    .collect();
                (m.clone(), v)
            })
            .filter(|(_, v)| !v.is_empty())
            .collect();
        assert_exported_eq(&got, &want_window, "export of an RFC 3339 window");

        // Older than retention: refused, naming the series and retention.
        let too_old = [("__name__", "backfill_metric"), ("case", "too_old")];
        let (st, body) = remote_write(
            &s.url(),
            None,
            &write_request(vec![series(&too_old, &[(now - 31 * DAY, 31.0)])]),
        );
        assert_eq!(st, 400, "sample 31d old: {body}");
        assert!(
            contains_ci(&body, "retention"),
            "400 body does not mention retention: {body:?}"
        );
        assert!(
            body.contains("too_old") || body.contains("backfill_metric"),
            "400 body names no series: {body:?}"
        );
        let got = export(
            &s.url(),
            None,
            r#"{case="too_old"}"#,
            secs(now - 40 * DAY),
            end,
        );
        assert!(
            got.is_empty(),
            "sample older than retention was stored: {got:?}"
        );

        // Still there once flushed to filesets and restarted.
        let r = post(&format!("{}/admin/v1/flush", s.url()), ADMIN, &[]).expect("flush");
        assert_eq!(r.status, 200, "flush: {}", r.text());
        let st = s.sigterm();
        assert_eq!(st.code(), Some(0), "SIGTERM exit: {st}");
        s.restart();
        assert_exported_eq(&read(&s), &want, "backfilled samples after flush + restart");
    }
}

/// Crashes at exact points (the `CAIRN_FAILPOINT` hooks abort the process
/// there) and checks that recovery keeps every acknowledged sample once.
mod failpoints {
    use super::*;
    use std::time::Duration;

    fn write(base: &str, name: &str, t0: i64, n: i64, want: &mut Exported) -> u16 {
        let labels = [("__name__", "fp_metric"), ("instance", name)];
        let samples: Vec<(i64, f64)> = (0..n).map(|k| (t0 + k * 1000, k as f64 * 0.25)).collect();
        let st = try_remote_write(base, None, &write_request(vec![series(&labels, &samples)]))
            .map(|(st, _)| st)
            .unwrap_or(0);
        if st == 204 {
            want.entry(metric(&labels))
                .or_default()
                .extend_from_slice(&samples);
        }
        st
    }

    fn read(s: &TestServer, now: i64) -> Exported {
        export(
            &s.url(),
            None,
            r#"{__name__="fp_metric"}"#,
            secs(now) - 7200.0,
            secs(now) + 60.0,
        )
    }

    /// Restarts `s` with failpoint `point` armed, writes 100 samples from
    /// `t0` (acknowledged, so added to `want`), asks `POST /admin/v1/<admin>`
    /// (a flush or a snapshot), which dies at the point — no answer,
    /// process gone — then restarts without it and checks every
    /// acknowledged sample is there, once.
    fn crash_at(
        s: &mut TestServer,
        point: &str,
        admin: &str,
        t0: i64,
        now: i64,
        want: &mut Exported,
    ) {
        s.set_env("CAIRN_FAILPOINT", Some(point));
        s.restart();
        assert_eq!(write(&s.url(), point, t0, 100, want), 204);
        let r = post(&format!("{}/admin/v1/{admin}", s.url()), ADMIN, &[]);
        assert!(
            r.map(|r| r.status != 200).unwrap_or(true),
            "{admin} must not succeed at {point}"
        );
        assert!(
            s.wait_exit(Duration::from_secs(10)).is_some(),
            "server did not abort at {point}"
        );
        s.set_env("CAIRN_FAILPOINT", None);
        s.restart();
        assert_exported_eq(&read(s, now), want, &format!("after crash at {point}"));
    }

    #[test]
    fn crash_mid_flush_and_after_append_loses_nothing_acknowledged() {
        let mut s = TestServer::spawn(ServerOpts::default());
        let now = now_ms();
        let mut want = Exported::new();
        assert_eq!(write(&s.url(), "a", now - 30 * MIN, 300, &mut want), 204);

        for point in ["fileset-before-data", "fileset-before-checkpoint"] {
            crash_at(&mut s, point, "flush", now - 20 * MIN, now, &mut want);
        }
        assert!(
            s.log().contains("interrupted flush"),
            "incomplete fileset was not cleaned up:\n{}",
            s.log_tail()
        );

        // Crash after the commit-log append, before the answer: the sample may
        // or may not be there (never acknowledged), but never twice.
        s.set_env("CAIRN_FAILPOINT", Some("after-commitlog-append"));
        s.restart();
        let mut maybe = Exported::new();
        assert_ne!(write(&s.url(), "late", now - 10 * MIN, 10, &mut maybe), 204);
        s.wait_exit(Duration::from_secs(10));
        s.set_env("CAIRN_FAILPOINT", None);
        s.restart();
        let got = read(&s, now);
        let late = metric(&[("__name__", "fp_metric"), ("instance", "late")]);
        if let Some(v) = got.get(&late) {
            assert_eq!(
                v.len(),
                10,
                "a crashed write must be all there or absent, once"
            );
        }
        let mut without_late = got.clone();
        without_late.remove(&late);
        assert_exported_eq(&without_late, &want, "after crash after append");
        // A clean flush afterwards keeps everything.
        let r = post(&format!("{}/admin/v1/flush", s.url()), ADMIN, &[]).expect("flush");
        assert_eq!(r.status, 200);
        s.restart();
        let mut again = read(&s, now);
        again.remove(&late);
        assert_exported_eq(&again, &want, "after final flush and restart");
    }

    fn snapshot(s: &TestServer) -> std::io::Result<Response> {
        post(&format!("{}/admin/v1/snapshot", s.url()), ADMIN, &[])
    }

    /// Head snapshots: a crash while one is written (before it is made
    /// current, and after, before the old log goes) and a SIGKILL after one
    /// lose nothing acknowledged and duplicate nothing; the restart after
    /// the kill loads the snapshot and replays only what came after it.
    #[test]
    fn crash_mid_snapshot_and_kill_after_one_lose_nothing() {
        let mut s = TestServer::spawn(ServerOpts::default());
        let now = now_ms();
        let mut want = Exported::new();
        assert_eq!(write(&s.url(), "a", now - 40 * MIN, 300, &mut want), 204);
        let r = snapshot(&s).expect("snapshot");
        assert_eq!(r.status, 200, "snapshot: {}", r.text());
        assert!(r.json()["data"]["covers_segment"].as_u64().unwrap() > 0);
        for (i, point) in ["snapshot-before-rename", "snapshot-after-rename"]
            .into_iter()
            .enumerate()
        {
            let t0 = now - (30 - 5 * i as i64) * MIN;
            crash_at(&mut s, point, "snapshot", t0, now, &mut want);
        }
        // A snapshot, more writes, then SIGKILL.
        let r = snapshot(&s).expect("snapshot");
        assert_eq!(r.status, 200, "snapshot: {}", r.text());
        assert_eq!(write(&s.url(), "after", now - 10 * MIN, 50, &mut want), 204);
        s.kill9();
        s.restart();
        assert_exported_eq(&read(&s, now), &want, "after SIGKILL after a snapshot");
        let log = s.log();
        let line = log
            .lines()
            .rev()
            .find(|l| l.contains("recovery complete"))
            .unwrap_or_default()
            .to_string();
        assert!(
            !line.contains("snapshot_covers_segment=0") && line.contains("records=1 "),
            "the restart did not load the snapshot and replay only the write after it: {line}"
        );
    }

    /// Every rollup series of `temp` in the downsampled namespace, as the
    /// API returns them (values as text: equal text, equal float).
    fn rollups(s: &TestServer, now: i64) -> String {
        let q = r#"temp{__namespace__="agg_1m_30d"}[4h]"#;
        let series = result_series(&s.url(), q, now, &[]);
        assert_eq!(series.len(), 7, "the seven rollups of temp: {series:?}");
        series.join("\n")
    }

    /// Downsampling: a crash during a pass — before its rollups are synced,
    /// and after, before its marker moves — and during the recomputation
    /// of a late window, then a restart and a pass: the rollups are the
    /// same, to the bit, as those of a node that never crashed.
    #[test]
    fn crash_mid_downsampling_pass_gives_the_rollups_of_an_uninterrupted_run() {
        let cfg = "storage:\n  namespaces: [\"1m:30d\"]\n";
        let mut crashy = TestServer::spawn(ServerOpts::default().config(cfg));
        let clean = TestServer::spawn(ServerOpts::default().config(cfg));
        let now = now_ms();
        let t0 = now - now.rem_euclid(MIN) - 3 * HOUR;
        let samples: Vec<(i64, f64)> = (0..600)
            .map(|k| (t0 + 1000 + k * 15_000, ((k * 7919) % 1000) as f64 / 8.0))
            .collect();
        let late = vec![(t0 + 30 * MIN + 500, 1234.5)];
        let send = |s: &TestServer, samples: &[(i64, f64)]| {
            let req = write_request(vec![series(&[("__name__", "temp"), ("job", "a")], samples)]);
            assert_eq!(remote_write(&s.url(), None, &req).0, 204);
        };
        let flush_ok = |s: &TestServer| {
            let r = post(&format!("{}/admin/v1/flush", s.url()), ADMIN, &[]).expect("flush");
            assert_eq!(r.status, 200, "{}", r.text());
        };
        send(&clean, &samples);
        flush_ok(&clean);
        send(&clean, &late);
        flush_ok(&clean);
        let want = rollups(&clean, now);

        send(&crashy, &samples);
        let crash = |s: &mut TestServer, point: &str| {
            s.set_env("CAIRN_FAILPOINT", Some(point));
            s.restart();
            let r = post(&format!("{}/admin/v1/flush", s.url()), ADMIN, &[]);
            assert!(
                r.map(|r| r.status != 200).unwrap_or(true),
                "flush at {point}"
            );
            assert!(
                s.wait_exit(Duration::from_secs(10)).is_some(),
                "no abort at {point}"
            );
            s.set_env("CAIRN_FAILPOINT", None);
            s.restart();
        };
        crash(&mut crashy, "downsample-before-sync");
        crash(&mut crashy, "downsample-before-marker");
        flush_ok(&crashy);
        // The late sample, then a crash while its window is recomputed.
        send(&crashy, &late);
        crash(&mut crashy, "downsample-before-marker");
        flush_ok(&crashy);
        assert_eq!(rollups(&crashy, now), want, "rollups after the crashes");
        crashy.restart();
        assert_eq!(rollups(&crashy, now), want, "rollups after a restart");
    }
}
