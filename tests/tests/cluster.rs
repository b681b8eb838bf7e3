//! Cluster end-to-end: real `cairn` processes on loopback forming one
//! cluster (gRPC between them), SIGKILLed and restarted.

use cairn_e2e::*;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SERIES: usize = 20;

/// Batch `k`: one sample at `base + k*100` ms, value `k`, for each series.
fn batch(base: i64, k: i64) -> WriteRequest {
    write_request(
        (0..SERIES)
            .map(|j| {
                series(
                    &[("__name__", "cl_up"), ("series", &format!("s{j:02}"))],
                    &[(base + k * 100, k as f64)],
                )
            })
            .collect(),
    )
}

/// Every series of `cl_up` on `node` holds exactly the acknowledged batches.
fn assert_holds(node: &TestServer, base: i64, acked: &BTreeSet<i64>, who: &str) {
    let got = export(
        &node.url(),
        None,
        "cl_up",
        (base - 1000) as f64 / 1000.0,
        (base + 10_000_000) as f64 / 1000.0,
    );
    assert_eq!(got.len(), SERIES, "{who}: series exported");
    let want: Vec<(i64, f64)> = acked.iter().map(|&k| (base + k * 100, k as f64)).collect();
    for (m, samples) in &got {
        assert_eq!(samples, &want, "{who}: samples of {m:?}");
    }
    // PromQL agrees: every acknowledged sample, counted once (replicas
    // deduplicated).
    let t = (base + 10_000_000) as f64 / 1000.0;
    let d = api_data(
        &node.url(),
        None,
        &format!(
            "/api/v1/query?query={}&time={t}",
            enc("sum(count_over_time(cl_up[3h]))")
        ),
    );
    let n: f64 = d["result"][0]["value"][1]
        .as_str()
        .unwrap_or_else(|| panic!("{who}: no count in {d}"))
        .parse()
        .unwrap();
    assert_eq!(n as usize, SERIES * acked.len(), "{who}: PromQL count");
}

/// A writer sending batch after batch to one node (every 20 ms) until
/// stopped; which batches were acknowledged and which failed (and why).
struct Writer {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<BTreeSet<i64>>>,
    failed: Arc<Mutex<Vec<String>>>,
    thread: std::thread::JoinHandle<()>,
}

impl Writer {
    fn start(url: String, base: i64, headers: &'static [(&'static str, &'static str)]) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(BTreeSet::new()));
        let failed = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (stop, acked, failed) = (stop.clone(), acked.clone(), failed.clone());
            std::thread::spawn(move || {
                let mut k = 0;
                while !stop.load(Ordering::Relaxed) {
                    match try_remote_write_with(&url, None, headers, &batch(base, k)) {
                        Ok((s, _)) if (200..300).contains(&s) => {
                            acked.lock().unwrap().insert(k);
                        }
                        Ok((s, body)) => failed.lock().unwrap().push(format!("{k}: {s} {body}")),
                        Err(e) => failed.lock().unwrap().push(format!("{k}: {e}")),
                    }
                    k += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        };
        Writer {
            stop,
            acked,
            failed,
            thread,
        }
    }

    /// Stops the writer: (acknowledged batches, failed writes).
    fn finish(self) -> (BTreeSet<i64>, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap();
        let acked = self.acked.lock().unwrap().clone();
        let failed = self.failed.lock().unwrap().clone();
        (acked, failed)
    }
}

/// A writer sends remote_write continuously to node 1 at `majority`; node 3
/// is SIGKILLed mid-stream and stays down: no write fails, and every
/// acknowledged sample is read back on nodes 1 and 2 (export and PromQL),
/// and on node 3 after it restarts — also from node 3's own copy once the
/// writes it missed are replayed to it.
#[test]
fn killing_one_of_three_fails_no_write_and_loses_no_sample() {
    let down: u64 = std::env::var("CAIRN_E2E_DOWN_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let mut nodes = spawn_cluster(3, 16, 3, "");
    let base = now_ms() - 120_000;
    let writer = Writer::start(
        nodes[0].url(),
        base,
        &[("X-Cairn-Write-Consistency", "majority")],
    );
    std::thread::sleep(Duration::from_secs(2));
    nodes[2].kill9();
    std::thread::sleep(Duration::from_secs(down));
    let (acked, failed) = writer.finish();
    assert!(failed.is_empty(), "failed writes: {failed:?}");
    assert!(acked.len() > 50, "only {} writes acknowledged", acked.len());
    assert_holds(&nodes[0], base, &acked, "node 1");
    assert_holds(&nodes[1], base, &acked, "node 2");
    nodes[2].restart();
    assert_holds(&nodes[2], base, &acked, "node 3 after restart");
    // And node 3's own copy is whole again: node 1 replays the writes it
    // missed (hinted handoff), so read alone it holds every sample.
    let t = (base + 10_000_000) as f64 / 1000.0;
    let url = format!(
        "{}/api/v1/query?query={}&time={t}",
        nodes[2].url(),
        enc("sum(count_over_time(cl_up[3h]))")
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let r = request("GET", &url, &[("X-Cairn-Read-Consistency", "one")], &[]).expect("query");
        assert_eq!(r.status, 200, "{}", r.text());
        let n: f64 = r.json()["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        if n as usize == SERIES * acked.len() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "node 3 alone holds {n} of {} samples",
            SERIES * acked.len()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Write levels with nodes down: `all` refuses (503 naming the level and
/// the shard) with one of three down while `majority` succeeds; `one`
/// succeeds with two down while `majority` refuses. Reads at the default
/// `unstrict_majority` succeed with two down, with a warning naming the
/// replicas that did not answer; at `majority` they fail with an error
/// naming the level.
#[test]
fn consistency_levels_decide_with_nodes_down() {
    let mut nodes = spawn_cluster(3, 8, 3, "");
    let url = nodes[0].url();
    let base = now_ms() - 60_000;
    let write = |k: i64, level: &str| {
        try_remote_write_with(
            &url,
            None,
            &[("X-Cairn-Write-Consistency", level)],
            &batch(base, k),
        )
        .unwrap()
    };
    assert_eq!(write(0, "all").0, 204);
    let (s, body) = write(1, "sometimes");
    assert_eq!(s, 400, "{body}");
    assert!(body.contains("X-Cairn-Write-Consistency"), "{body}");

    nodes[2].kill9();
    let (s, body) = write(1, "all");
    assert_eq!(s, 503, "{body}");
    assert!(body.contains("all") && body.contains("shard"), "{body}");
    assert!(
        body.contains("node-3"),
        "names the replica that failed: {body}"
    );
    assert_eq!(write(2, "majority").0, 204);

    nodes[1].kill9();
    let (s, body) = write(3, "majority");
    assert_eq!(s, 503, "{body}");
    assert!(body.contains("majority"), "{body}");
    assert_eq!(write(4, "one").0, 204);

    // Reads: unstrict_majority (the default) answers from node 1 alone.
    let q = format!(
        "/api/v1/query?query={}&time={}",
        enc("count(cl_up)"),
        (base + 1000) as f64 / 1000.0
    );
    let r = get(&format!("{url}{q}")).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let j = r.json();
    assert_eq!(j["data"]["result"][0]["value"][1], "20", "{j}");
    let w = j["warnings"][0]
        .as_str()
        .unwrap_or_else(|| panic!("no warning: {j}"));
    assert!(
        w.contains("unstrict_majority") && w.contains("node-2") && w.contains("node-3"),
        "{w}"
    );

    // Self-metrics per peer: the failed calls to node 3, latency of node 2's.
    let m = get(&format!("{url}/metrics")).unwrap().text();
    let errors = m
        .lines()
        .find(|l| {
            l.starts_with("cairn_cluster_peer_rpc_errors_total{")
                && l.contains("peer=\"node-3\"")
                && l.contains("method=\"write\"")
        })
        .unwrap_or_else(|| panic!("no write errors to node-3 in /metrics"));
    let n: f64 = errors.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(n >= 3.0, "{errors}");
    assert!(
        m.contains(
            "cairn_cluster_peer_rpc_duration_seconds_count{peer=\"node-2\",method=\"write\"}"
        ),
        "no write latency of node-2 in /metrics"
    );

    // A request's X-Cairn-Read-Consistency overrides the default: at
    // majority it fails naming the level, at one it answers without a
    // warning; an unknown level is a 400 naming the header.
    let at = |level: &str| {
        request(
            "GET",
            &format!("{url}{q}"),
            &[("X-Cairn-Read-Consistency", level)],
            &[],
        )
        .unwrap()
    };
    let r = at("majority");
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("majority"), "{}", r.text());
    let r = at("one");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["warnings"].is_null(), "{}", r.text());
    let r = at("most");
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.text().contains("X-Cairn-Read-Consistency"),
        "{}",
        r.text()
    );
    let r = request(
        "GET",
        &format!("{url}/api/v1/series?match[]=cl_up"),
        &[("X-Cairn-Read-Consistency", "majority")],
        &[],
    )
    .unwrap();
    assert_eq!(r.status, 503, "series at majority: {}", r.text());
    // Series, labels and label values carry the same warning as queries.
    for path in [
        "/api/v1/series?match[]=cl_up",
        "/api/v1/labels",
        "/api/v1/label/series/values",
    ] {
        let r = get(&format!("{url}{path}")).unwrap();
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        let w = r.json()["warnings"][0].as_str().unwrap_or("").to_string();
        assert!(
            w.contains("unstrict_majority") && w.contains("node-3"),
            "{path}: no warning: {}",
            r.text()
        );
    }

    // At majority by config, the same read fails, naming the level.
    nodes[0].set_env("CAIRN_CLUSTER_READ_CONSISTENCY", Some("majority"));
    nodes[0].restart();
    let r = get(&format!("{}{q}", nodes[0].url())).unwrap();
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("majority"), "{}", r.text());
}

/// SIGKILL all three, restart them in a random order with random delays:
/// every node is ready within 10 s of the second node's start with no
/// manual step, and no acknowledged sample is lost. Several seeds.
#[test]
fn whole_cluster_restart_comes_back_by_itself() {
    let seed0: u64 = std::env::var("CAIRN_E2E_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| now_ms() as u64);
    let mut nodes = spawn_cluster(3, 8, 3, "");
    let base = now_ms() - 60_000;
    let mut acked = BTreeSet::new();
    let mut k = 0;
    for seed in seed0..seed0 + 3 {
        eprintln!("whole-cluster restart, seed {seed}");
        let mut rng = Rng::new(seed);
        for _ in 0..20 {
            let (s, body) = remote_write(&nodes[0].url(), None, &batch(base, k));
            assert_eq!(s, 204, "{body}");
            acked.insert(k);
            k += 1;
        }
        for n in &mut nodes {
            n.kill9();
        }
        let mut order = [0, 1, 2];
        for i in (1..order.len()).rev() {
            order.swap(i, rng.range(0, i as u64 + 1) as usize);
        }
        let mut second_started = None;
        for (pos, &i) in order.iter().enumerate() {
            std::thread::sleep(Duration::from_millis(rng.range(0, 1500)));
            nodes[i].relaunch();
            if pos == 1 {
                second_started = Some(std::time::Instant::now());
            }
        }
        for n in &mut nodes {
            n.wait_ready();
        }
        let took = second_started.unwrap().elapsed();
        assert!(
            took < Duration::from_secs(10),
            "seed {seed}: ready {took:?} after the second node's start"
        );
        for (i, n) in nodes.iter().enumerate() {
            assert_holds(n, base, &acked, &format!("seed {seed}, node {}", i + 1));
        }
    }
}

/// The metadata leader's member id, as `node` sees it.
fn meta_leader(node: &TestServer) -> Option<String> {
    let r = request(
        "GET",
        &format!("{}/admin/v1/cluster", node.url()),
        ADMIN,
        &[],
    )
    .ok()?;
    if r.status != 200 {
        return None;
    }
    r.json()["data"]["meta"]["leader"]
        .as_str()
        .map(str::to_string)
}

/// Kill the meta leader: a new leader within 3 s, and a writer sending to
/// another node never sees a failed write (the data path does not wait on
/// raft).
#[test]
fn killing_the_meta_leader_elects_another_and_writes_never_stop() {
    let mut nodes = spawn_cluster(3, 8, 3, "");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let old = loop {
        if let Some(l) = meta_leader(&nodes[0]) {
            break l;
        }
        assert!(std::time::Instant::now() < deadline, "no meta leader");
        std::thread::sleep(Duration::from_millis(50));
    };
    let li: usize = old.trim_start_matches("node-").parse::<usize>().unwrap() - 1;
    let survivors: Vec<usize> = (0..3).filter(|i| *i != li).collect();
    let base = now_ms() - 60_000;
    let writer = Writer::start(nodes[survivors[0]].url(), base, &[]);
    std::thread::sleep(Duration::from_millis(500));
    nodes[li].kill9();
    let killed = std::time::Instant::now();
    let new = loop {
        if let Some(l) = meta_leader(&nodes[survivors[1]]) {
            if l != old {
                break l;
            }
        }
        assert!(
            killed.elapsed() < Duration::from_secs(3),
            "no new meta leader within 3s of killing {old}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    eprintln!(
        "meta leader {old} killed; {new} leads after {:?}",
        killed.elapsed()
    );
    std::thread::sleep(Duration::from_secs(2));
    let (acked, failed) = writer.finish();
    assert!(failed.is_empty(), "failed writes: {failed:?}");
    assert!(acked.len() > 20);
}

/// Writes `req` through `node` at level `all`, asserting 204.
fn write_all(node: &TestServer, req: &WriteRequest) {
    let (status, body) = try_remote_write_with(
        &node.url(),
        None,
        &[("X-Cairn-Write-Consistency", "all")],
        req,
    )
    .expect("write");
    assert_eq!(status, 204, "{body}");
}

/// Twelve `ds_temp` gauges (`sensor` s00…s11), scrape `k` of `ks` at
/// `t0 + 1s + k×15s`, values that wander.
fn sensors(t0: i64, ks: std::ops::Range<i64>) -> Vec<TimeSeries> {
    (0..12)
        .map(|j| {
            let samples: Vec<(i64, f64)> = ks
                .clone()
                .map(|k| {
                    (
                        t0 + 1000 + k * 15_000,
                        ((k * 31 + j * 17) % 97) as f64 / 4.0,
                    )
                })
                .collect();
            series(
                &[("__name__", "ds_temp"), ("sensor", &format!("s{j:02}"))],
                &samples,
            )
        })
        .collect()
}

/// Downsampling on a cluster: every replica computes a shard's windows
/// from its own raw copy, and the three copies of the rollups are the same
/// to the bit (each node read alone, at read level `one`: itself first).
#[test]
fn replicas_write_identical_rollups() {
    let ns = "storage:\n  namespaces: [\"1m:30d\"]\n";
    let nodes = spawn_cluster(3, 8, 3, ns);
    let now = now_ms();
    let t0 = now - now.rem_euclid(60_000) - 2 * 3_600_000;
    let body = write_request(sensors(t0, 0..400));
    write_all(&nodes[0], &body);
    let copies: Vec<String> = nodes
        .iter()
        .map(|n| {
            let r = post(&format!("{}/admin/v1/flush", n.url()), ADMIN, &[]).expect("flush");
            assert_eq!(r.status, 200, "{}", r.text());
            let q = r#"ds_temp{__namespace__="agg_1m_30d"}[3h]"#;
            let series = result_series(&n.url(), q, now, &[("X-Cairn-Read-Consistency", "one")]);
            assert_eq!(series.len(), 12 * 7, "seven rollups per sensor: {series:?}");
            series.join("\n")
        })
        .collect();
    assert_eq!(copies[0], copies[1], "node 1 and node 2");
    assert_eq!(copies[0], copies[2], "node 1 and node 3");
}

/// A replica down during writes catches up (hinted handoff): node 3 is
/// SIGKILLed after the first half of the data, the second half — gauges,
/// and a histogram whose buckets carry trace-id exemplars — is written at
/// `majority` through nodes 1 and 2, node 3 restarts and the writes it
/// missed are replayed to it; then each node read alone (level `one`)
/// holds the same raw samples, the same 1m rollups to the bit and the
/// same p99 exemplars, and the gateways' hint metrics show the replay.
#[test]
fn a_replica_down_during_writes_catches_up_and_computes_identical_rollups() {
    use cairn_proto::prompb;
    let ns = "storage:\n  namespaces: [\"1m:30d\"]\n";
    let mut nodes = spawn_cluster(3, 8, 3, ns);
    let now = now_ms();
    let t0 = now - now.rem_euclid(60_000) - 2 * 3_600_000;
    let half = |part: i64| -> WriteRequest {
        let ks: Vec<i64> = (part * 200..part * 200 + 200).collect();
        let mut ts = sensors(t0, part * 200..part * 200 + 200);
        for (le, per) in [("0.1", 90.0), ("1", 100.0), ("+Inf", 100.0)] {
            let samples: Vec<(i64, f64)> = ks
                .iter()
                .map(|&k| (t0 + 1000 + k * 15_000, per * (k + 1) as f64))
                .collect();
            let mut s = series(
                &[
                    ("__name__", "rpc_seconds_bucket"),
                    ("job", "api"),
                    ("le", le),
                ],
                &samples,
            );
            if le == "1" {
                for &k in &ks {
                    s.exemplars.push(prompb::Exemplar {
                        labels: vec![Label::new("trace_id", &format!("{k:032x}"))],
                        value: 0.2 + ((k * 37) % 80) as f64 / 100.0,
                        timestamp: t0 + 1000 + k * 15_000,
                    });
                }
            }
            ts.push(s);
        }
        write_request(ts)
    };
    write_all(&nodes[0], &half(0));
    nodes[2].kill9();
    // Half of the second half through each of the two live gateways.
    let second = half(1);
    let (a, b) = second.timeseries.split_at(second.timeseries.len() / 2);
    for (node, part) in [(&nodes[0], a), (&nodes[1], b)] {
        let (status, body) = try_remote_write_with(
            &node.url(),
            None,
            &[("X-Cairn-Write-Consistency", "majority")],
            &write_request(part.to_vec()),
        )
        .expect("write");
        assert_eq!(status, 204, "{body}");
    }
    nodes[2].restart();
    // Both gateways replay what node 3 missed (each second, once it answers).
    let hint = |n: &TestServer, name: &str| -> f64 {
        let m = get(&format!("{}/metrics", n.url()))
            .expect("metrics")
            .text();
        m.lines()
            .find(|l| l.starts_with(&format!("{name}{{peer=\"node-3\"}} ")))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} for node-3 in /metrics:\n{m}"))
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    for n in &nodes[..2] {
        while hint(n, "cairn_cluster_hint_pending_samples") > 0.0 {
            assert!(std::time::Instant::now() < deadline, "hints not replayed");
            std::thread::sleep(Duration::from_millis(200));
        }
        assert!(hint(n, "cairn_cluster_hint_delivered_samples_total") > 0.0);
        assert_eq!(hint(n, "cairn_cluster_hint_dropped_samples_total"), 0.0);
        // The digest reads' counters are exposed beside them.
        let m = get(&format!("{}/metrics", n.url()))
            .expect("metrics")
            .text();
        for name in [
            "cairn_cluster_digest_rereads_total ",
            "cairn_cluster_read_data_fallbacks_total ",
        ] {
            assert!(
                m.lines().any(|l| l.starts_with(name)),
                "no {name}in /metrics"
            );
        }
    }
    let one = [("X-Cairn-Read-Consistency", "one")];
    let copies: Vec<(Vec<String>, Vec<String>, String)> = nodes
        .iter()
        .map(|n| {
            let r = post(&format!("{}/admin/v1/flush", n.url()), ADMIN, &[]).expect("flush");
            assert_eq!(r.status, 200, "{}", r.text());
            let raw = result_series(
                &n.url(),
                r#"{__name__=~"ds_temp|rpc_seconds_bucket"}[3h]"#,
                now,
                &one,
            );
            assert_eq!(raw.len(), 15, "{raw:?}");
            let q = r#"{__name__=~"ds_temp|rpc_seconds_bucket", __namespace__="agg_1m_30d"}[3h]"#;
            let rollups = result_series(&n.url(), q, now, &one);
            assert_eq!(rollups.len(), 15 * 7, "seven rollups per series");
            let url = format!(
                "{}/api/v1/query_exemplars?query={}&start={}&end={}&max_source_resolution=1m",
                n.url(),
                enc("rpc_seconds_bucket"),
                (t0 - 60_000) as f64 / 1000.0,
                now as f64 / 1000.0
            );
            let r = request("GET", &url, &one, &[]).expect("query_exemplars");
            assert_eq!(r.status, 200, "{}", r.text());
            let ex = r.json()["data"].to_string();
            assert!(ex.contains("trace_id"), "{ex}");
            (raw, rollups, ex)
        })
        .collect();
    // Compared whole; a difference is reported by its first series.
    let same = |a: &[String], b: &[String], what: &str| {
        if let Some((x, y)) = a.iter().zip(b).find(|(x, y)| x != y) {
            panic!(
                "{what} differ; first: {:.300} vs {:.300}",
                x.as_str(),
                y.as_str()
            );
        }
        assert_eq!(a.len(), b.len(), "{what}: series");
    };
    for (i, name) in [(1, "node 2"), (2, "node 3")] {
        same(
            &copies[0].0,
            &copies[i].0,
            &format!("raw of node 1 and {name}"),
        );
        same(
            &copies[0].1,
            &copies[i].1,
            &format!("rollups of node 1 and {name}"),
        );
        same(
            &[copies[0].2.clone()],
            &[copies[i].2.clone()],
            &format!("p99 exemplars of node 1 and {name}"),
        );
    }
}

/// The newest and oldest sample time of every series of a range-vector
/// query on `base` at read level `one`, by the series' `sensor` label.
fn sample_spans(base: &str, query: &str, at: i64) -> Vec<(String, i64, i64)> {
    let url = format!(
        "{base}/api/v1/query?query={}&time={}",
        enc(query),
        at as f64 / 1000.0
    );
    let r = request("GET", &url, &[("X-Cairn-Read-Consistency", "one")], &[]).expect("query");
    assert_eq!(r.status, 200, "GET {url}: {}", r.text());
    let mut out: Vec<(String, i64, i64)> = r.json()["data"]["result"]
        .as_array()
        .expect("result")
        .iter()
        .map(|s| {
            let ts: Vec<i64> = s["values"]
                .as_array()
                .expect("values")
                .iter()
                .map(|p| (p[0].as_f64().unwrap() * 1000.0).round() as i64)
                .collect();
            (
                s["metric"]["sensor"].as_str().unwrap_or("").to_string(),
                *ts.iter().min().unwrap(),
                *ts.iter().max().unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

/// A mapping rule put through one node's admin API applies on every node
/// from its cutover time, without a restart: the series it keeps raw-only
/// have 1m rollups only for windows before the cutover, the others all
/// along, on each of the three replicas; a policy the cluster does not keep
/// is refused, naming it and the ones it keeps.
#[test]
fn a_mapping_rule_applies_on_every_node_from_its_cutover() {
    let ns = "storage:\n  namespaces: [\"1m:30d\"]\n";
    let nodes = spawn_cluster(3, 8, 3, ns);
    let now = now_ms();
    let t0 = now - now.rem_euclid(60_000) - 2 * 3_600_000;
    let cutover = t0 + 30 * 60_000;
    let admin_json: Vec<(&str, &str)> = ADMIN
        .iter()
        .copied()
        .chain([("Content-Type", "application/json")])
        .collect();
    let r = post(
        &format!("{}/admin/v1/tenants", nodes[0].url()),
        &admin_json,
        br#"{"id":"default"}"#,
    )
    .expect("create tenant");
    assert_eq!(r.status, 201, "{}", r.text());
    let rules_url = |i: usize| format!("{}/admin/v1/tenants/default/mapping_rules", nodes[i].url());
    let bad = r#"[{"name":"x","selector":"{sensor=\"a0\"}","policies":["5m:1y"]}]"#;
    let r = request("PUT", &rules_url(1), &admin_json, bad.as_bytes()).expect("put");
    assert_eq!(r.status, 400, "{}", r.text());
    let e = r.json()["error"].as_str().unwrap_or("").to_string();
    assert!(e.contains("\"5m:1y\"") && e.contains("(1m:30d)"), "{e}");
    let rule = format!(
        r#"[{{"name":"a-raw-only","selector":"{{sensor=~\"a.\"}}","policies":[],"cutover_ms":{cutover}}}]"#
    );
    let r = request("PUT", &rules_url(1), &admin_json, rule.as_bytes()).expect("put");
    assert_eq!(r.status, 200, "{}", r.text());
    // Every node follows the metadata store.
    for i in 0..3 {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let r = request("GET", &rules_url(i), ADMIN, &[]).expect("get");
            if r.status == 200 && r.json()["data"]["mapping_rules"][0]["cutover_ms"] == cutover {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "node {} never saw the rule: {} {}",
                i + 1,
                r.status,
                r.text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let ts: Vec<TimeSeries> = ["a0", "a1", "a2", "b0", "b1", "b2"]
        .iter()
        .enumerate()
        .map(|(j, sensor)| {
            let samples: Vec<(i64, f64)> = (0..400)
                .map(|k| (t0 + 1000 + k * 15_000, ((k + j as i64) % 13) as f64))
                .collect();
            series(&[("__name__", "ds_temp"), ("sensor", sensor)], &samples)
        })
        .collect();
    write_all(&nodes[2], &write_request(ts));
    let q = r#"ds_temp{__namespace__="agg_1m_30d",__rollup__="count"}[3h]"#;
    let mut per_node = Vec::new();
    for n in &nodes {
        let r = post(&format!("{}/admin/v1/flush", n.url()), ADMIN, &[]).expect("flush");
        assert_eq!(r.status, 200, "{}", r.text());
        let spans = sample_spans(&n.url(), q, now);
        assert_eq!(spans.len(), 6, "{spans:?}");
        for (sensor, first, last) in &spans {
            assert_eq!(*first, t0 + 59_999, "{sensor}: its first window's count");
            if sensor.starts_with('a') {
                assert_eq!(*last, cutover - 1, "{sensor}: raw only from the cutover");
            } else {
                assert!(
                    *last > cutover + 30 * 60_000,
                    "{sensor}: no rule, 1m throughout"
                );
            }
        }
        let m = get(&format!("{}/metrics", n.url()))
            .expect("metrics")
            .text();
        assert!(
            m.lines().any(
                |l| l.starts_with("cairn_storage_downsample_mapped_out_windows_total ")
                    && !l.ends_with(" 0")
            ),
            "{m}"
        );
        per_node.push(spans);
    }
    assert_eq!(per_node[0], per_node[1]);
    assert_eq!(per_node[0], per_node[2]);
}

/// Exemplars at the p99 on a cluster: a classic histogram whose bucket
/// samples carry trace-id exemplars, written once at `all`; each node's
/// 1m rollups (read alone) keep per window the exemplar that is the
/// smallest at or above the window's p99 estimate and the max, from a
/// sample in that window; `query_exemplars` with `max_source_resolution=1m`
/// answers them in Prometheus's shape with `X-Cairn-Resolution: 1m`, the
/// same on all three replicas.
#[test]
fn replicas_keep_the_same_p99_exemplar_per_window() {
    use cairn_proto::prompb;
    let ns = "storage:\n  namespaces: [\"1m:30d\"]\n";
    let nodes = spawn_cluster(3, 8, 3, ns);
    let now = now_ms();
    let t0 = now - now.rem_euclid(60_000) - 2 * 3_600_000;
    // Per 15 s scrape: 90 observations ≤ 0.1, 9 in (0.1, 0.5], 1 in (0.5, 1]
    // (p99 = 0.5 in every window). Exemplars: 0.05 on le=0.1, 0.45 on
    // le=0.5, and on le=1 a value in (0.5, 1] that varies by scrape.
    let bounds = [("0.1", 90.0), ("0.5", 99.0), ("1", 100.0), ("+Inf", 100.0)];
    let scrapes: Vec<i64> = (0..240).map(|k| t0 + 1000 + k * 15_000).collect();
    let ts: Vec<TimeSeries> = bounds
        .iter()
        .enumerate()
        .map(|(b, (le, per))| {
            let samples: Vec<(i64, f64)> = scrapes
                .iter()
                .enumerate()
                .map(|(k, &t)| (t, per * (k + 1) as f64))
                .collect();
            let mut s = series(
                &[
                    ("__name__", "rpc_seconds_bucket"),
                    ("job", "api"),
                    ("le", le),
                ],
                &samples,
            );
            for (k, &t) in scrapes.iter().enumerate() {
                let value = match b {
                    0 => 0.05,
                    1 => 0.45,
                    2 => 0.55 + ((k * 37) % 40) as f64 / 100.0,
                    _ => continue,
                };
                s.exemplars.push(prompb::Exemplar {
                    labels: vec![Label::new("trace_id", &format!("{k:032x}"))],
                    value,
                    timestamp: t,
                });
            }
            s
        })
        .collect();
    write_all(&nodes[0], &write_request(ts));
    let url = |n: &TestServer| {
        format!(
            "{}/api/v1/query_exemplars?query={}&start={}&end={}&max_source_resolution=1m",
            n.url(),
            enc("histogram_quantile(0.99, sum by (le) (rate(rpc_seconds_bucket[5m])))"),
            (t0 - 60_000) as f64 / 1000.0,
            now as f64 / 1000.0
        )
    };
    let mut answers = Vec::new();
    for n in &nodes {
        let r = post(&format!("{}/admin/v1/flush", n.url()), ADMIN, &[]).expect("flush");
        assert_eq!(r.status, 200, "{}", r.text());
        let r = request("GET", &url(n), &[("X-Cairn-Read-Consistency", "one")], &[])
            .expect("query_exemplars");
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-cairn-resolution"), Some("1m"));
        let j = r.json();
        let data = j["data"].as_array().expect("data array");
        assert_eq!(data.len(), 1, "one bucket carries the chosen ones: {j}");
        assert_eq!(
            data[0]["seriesLabels"],
            serde_json::json!({"__name__": "rpc_seconds_bucket", "job": "api", "le": "1"}),
            "{j}"
        );
        let mut per_window: std::collections::BTreeMap<i64, Vec<(f64, String)>> =
            Default::default();
        for e in data[0]["exemplars"].as_array().unwrap() {
            let keys: Vec<&str> = e.as_object().unwrap().keys().map(String::as_str).collect();
            assert_eq!(
                keys,
                ["labels", "timestamp", "value"],
                "Prometheus's shape: {e}"
            );
            let t = (e["timestamp"].as_f64().unwrap() * 1000.0).round() as i64;
            let v: f64 = e["value"].as_str().unwrap().parse().unwrap();
            let trace = e["labels"]["trace_id"].as_str().unwrap().to_string();
            // From a sample of the histogram, in the window it stands for.
            let k = scrapes
                .iter()
                .position(|&s| s == t)
                .expect("a scrape's time");
            assert_eq!(trace, format!("{k:032x}"));
            per_window
                .entry((t - t0) / 60_000)
                .or_default()
                .push((v, trace));
        }
        assert!(per_window.len() >= 55, "{} windows", per_window.len());
        for (w, got) in &per_window {
            let inside: Vec<f64> = scrapes
                .iter()
                .enumerate()
                .filter(|(_, &t)| (t - t0) / 60_000 == *w)
                .map(|(k, _)| 0.55 + ((k * 37) % 40) as f64 / 100.0)
                .collect();
            let max = inside.iter().cloned().fold(f64::MIN, f64::max);
            let at_p99 = inside
                .iter()
                .cloned()
                .filter(|v| *v >= 0.5)
                .fold(f64::MAX, f64::min);
            let mut want = vec![at_p99, max];
            want.dedup();
            let mut vals: Vec<f64> = got.iter().map(|x| x.0).collect();
            vals.sort_by(f64::total_cmp);
            assert_eq!(vals, want, "window {w}");
        }
        answers.push(j["data"].to_string());
    }
    assert_eq!(answers[0], answers[1], "node 1 and node 2");
    assert_eq!(answers[0], answers[2], "node 1 and node 3");
}

/// Downsampled reads on a cluster where no node holds every shard (five
/// nodes, RF 3): a series' rollups live on its own shard's replicas (the
/// rollup label is left out of the hash the shard comes from), so a query
/// answered from them finds every series, with raw's values.
#[test]
fn downsampled_reads_find_every_series_when_no_node_holds_every_shard() {
    let ns = "storage:\n  namespaces: [\"1m:30d\"]\n";
    let nodes = spawn_cluster(5, 8, 3, ns);
    let now = now_ms();
    let t0 = now - now.rem_euclid(60_000) - 2 * 3_600_000;
    let ts: Vec<TimeSeries> = (0..40)
        .map(|j| {
            let samples: Vec<(i64, f64)> = (0..400)
                .map(|k| (t0 + 1000 + k * 15_000, ((k * 7 + j * 3) % 50) as f64))
                .collect();
            series(
                &[("__name__", "ds_temp"), ("sensor", &format!("s{j:02}"))],
                &samples,
            )
        })
        .collect();
    write_all(&nodes[0], &write_request(ts));
    for n in &nodes {
        let r = post(&format!("{}/admin/v1/flush", n.url()), ADMIN, &[]).expect("flush");
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let range = |n: &TestServer, res: &str| -> (Option<String>, Vec<String>) {
        let url = format!(
            "{}/api/v1/query_range?query={}&start={}&end={}&step=1800&max_source_resolution={res}",
            n.url(),
            enc("sum_over_time(ds_temp[30m])"),
            (t0 + 3_600_000) as f64 / 1000.0,
            (t0 + 6_000_000) as f64 / 1000.0
        );
        let r = get(&url).expect("query_range");
        assert_eq!(r.status, 200, "{}", r.text());
        let mut out: Vec<String> = r.json()["data"]["result"]
            .as_array()
            .expect("result")
            .iter()
            .map(|s| s.to_string())
            .collect();
        out.sort();
        (r.header("x-cairn-resolution").map(str::to_string), out)
    };
    for n in &nodes {
        let (res, coarse) = range(n, "1m");
        assert_eq!(res.as_deref(), Some("1m"));
        let (_, raw) = range(n, "raw");
        assert_eq!(raw.len(), 40);
        assert_eq!(coarse, raw, "from the 1m rollups as from raw");
    }
}

/// The reset-aware increase a series adds in each 1m window: for each
/// pair of consecutive samples, the rise (the value after a reset) counted
/// in the window of the newer sample.
fn window_increases(samples: &[(i64, f64)]) -> std::collections::BTreeMap<i64, f64> {
    let mut out = std::collections::BTreeMap::new();
    for p in samples.windows(2) {
        let (a, b) = (p[0].1, p[1].1);
        let w = p[1].0 - p[1].0.rem_euclid(60_000);
        *out.entry(w).or_insert(0.0) += if b >= a { b - a } else { b };
    }
    if let Some(s) = samples.first() {
        out.entry(s.0 - s.0.rem_euclid(60_000)).or_insert(0.0);
    }
    out
}

/// Rollup rules, on one node and on five (RF 3, no node holding every
/// shard): `sum by (service)` of counters' increases per 1m window into a
/// new series, through an input's reset on a window edge, an input that
/// appears late and one that stops early — equal, window by window, to the
/// sum of the inputs' own increases; a `drop_inputs` rule's inputs are not
/// stored raw and are counted as dropped by `rollup:<rule>`, except samples
/// older than the inputs' horizon, which stay raw and are counted as too
/// old; the gateway's usage shows each rule's samples and series saved; a
/// mapping rule on an output's labels sets the policies it is kept at.
#[test]
fn rollup_rules_sum_counters_by_service_per_window() {
    let cfg = "storage:\n  namespaces: [\"1m:30d\", \"2m:30d\"]\n";
    let now = now_ms();
    let t0 = now - now.rem_euclid(60_000) - 2 * 3_600_000;
    // (service, instance, first scrape, last scrape, reset at)
    let inputs: [(&str, &str, i64, i64, Option<i64>); 5] = [
        ("api", "1", 0, 400, None),
        ("api", "2", 0, 400, Some(120)), // scrape 120 is a window's first (t0 + 30m + 1s)
        ("api", "3", 80, 400, None),     // appears at 20m
        ("db", "1", 0, 160, None),       // stops at 40m
        ("db", "2", 0, 400, None),
    ];
    let gen =
        |&(_, inst, from, to, reset): &(&str, &str, i64, i64, Option<i64>)| -> Vec<(i64, f64)> {
            let step = inst.parse::<f64>().unwrap() + 1.0;
            (from..to)
                .map(|k| {
                    let v = match reset {
                        Some(r) if k >= r => (k - r) as f64 * step + 1.0,
                        _ => 500.0 + k as f64 * step,
                    };
                    (t0 + 1000 + k * 15_000, v)
                })
                .collect()
        };
    let mut want: std::collections::BTreeMap<&str, std::collections::BTreeMap<i64, f64>> =
        Default::default();
    let mut ts = Vec::new();
    for i in &inputs {
        let samples = gen(i);
        for (w, inc) in window_increases(&samples) {
            *want.entry(i.0).or_default().entry(w).or_insert(0.0) += inc;
        }
        ts.push(series(
            &[
                ("__name__", "http_requests_total"),
                ("instance", i.1),
                ("service", i.0),
            ],
            &samples,
        ));
    }
    let debug: Vec<(i64, f64)> = (0..400)
        .map(|k| (t0 + 1000 + k * 15_000, k as f64))
        .collect();
    // Three instances into one output (two series saved); instance 1 also
    // carries four samples from before the inputs' horizon (3h by
    // default): kept raw, not rolled up, counted as too old.
    let old_t = t0 - 2 * 3_600_000;
    for inst in ["1", "2", "3"] {
        let mut samples = debug.clone();
        if inst == "1" {
            samples.splice(0..0, (0..4).map(|k| (old_t + k * 15_000, k as f64)));
        }
        ts.push(series(
            &[("__name__", "debug_total"), ("instance", inst)],
            &samples,
        ));
    }
    let body = write_request(ts);
    let rules = br#"[
        {"name": "svc", "selector": "{__name__=\"http_requests_total\"}", "by": ["service"], "output": "service:http_requests:increase"},
        {"name": "dbg", "selector": "{__name__=\"debug_total\"}", "output": "debug:increase", "drop_inputs": true}
    ]"#;
    let admin_json: Vec<(&str, &str)> = ADMIN
        .iter()
        .copied()
        .chain([("Content-Type", "application/json")])
        .collect();
    let check = |nodes: &[TestServer]| {
        let r = post(
            &format!("{}/admin/v1/tenants", nodes[0].url()),
            &admin_json,
            br#"{"id":"default"}"#,
        )
        .expect("create tenant");
        assert_eq!(r.status, 201, "{}", r.text());
        let url = format!("{}/admin/v1/tenants/default/rollup_rules", nodes[0].url());
        let r = request("PUT", &url, &admin_json, rules).expect("put");
        assert_eq!(r.status, 200, "{}", r.text());
        // An output's own policies: a mapping rule on its labels keeps
        // `debug:increase` at 1m only.
        let url = format!("{}/admin/v1/tenants/default/mapping_rules", nodes[0].url());
        let mapping = br#"[{"name":"dbg-1m","selector":"{__name__=\"debug:increase\"}","policies":["1m:30d"],"cutover_ms":0}]"#;
        let r = request("PUT", &url, &admin_json, mapping).expect("put mapping");
        assert_eq!(r.status, 200, "{}", r.text());
        // Every node follows the metadata store before the write.
        for n in nodes {
            for (what, at, name) in [("rollup_rules", 1, "dbg"), ("mapping_rules", 0, "dbg-1m")] {
                let url = format!("{}/admin/v1/tenants/default/{what}", n.url());
                let deadline = std::time::Instant::now() + Duration::from_secs(10);
                while !request("GET", &url, ADMIN, &[])
                    .is_ok_and(|r| r.json()["data"][what][at]["name"] == name)
                {
                    assert!(
                        std::time::Instant::now() < deadline,
                        "{url} never showed the rules"
                    );
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
        write_all(&nodes[0], &body);
        for n in nodes {
            let r = post(&format!("{}/admin/v1/flush", n.url()), ADMIN, &[]).expect("flush");
            assert_eq!(r.status, 200, "{}", r.text());
        }
        let n = &nodes[nodes.len() - 1];
        let q = r#"service:http_requests:increase{__namespace__="agg_1m_30d",__rollup__="increase"}[3h]"#;
        let url = format!(
            "{}/api/v1/query?query={}&time={}",
            n.url(),
            enc(q),
            now as f64 / 1000.0
        );
        let j = get(&url).expect("query").json();
        let result = j["data"]["result"]
            .as_array()
            .unwrap_or_else(|| panic!("{j}"));
        assert_eq!(result.len(), 2, "one output per service: {j}");
        for s in result {
            let service = s["metric"]["service"].as_str().unwrap();
            assert!(s["metric"].get("instance").is_none(), "{s}");
            let got: Vec<(i64, f64)> = s["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| {
                    let t = (p[0].as_f64().unwrap() * 1000.0).round() as i64;
                    (t + 1 - 60_000, p[1].as_str().unwrap().parse().unwrap())
                })
                .collect();
            // Closed: the windows ending before the newest sample − 2m.
            let newest = t0 + 1000 + 399 * 15_000 - 120_000;
            let closed = newest - newest.rem_euclid(60_000);
            let expected: Vec<(i64, f64)> = want[service]
                .iter()
                .filter(|(w, _)| **w < closed)
                .map(|(&w, &v)| (w, v))
                .collect();
            assert_eq!(got, expected, "{service}: per window");
        }
        // The dropped inputs: not stored raw, their rollup there, counted.
        let raw = result_series(&n.url(), "debug_total", t0 + 60_000, &[]);
        assert!(raw.is_empty(), "{raw:?}");
        let q = r#"sum_over_time(debug:increase{__namespace__="agg_1m_30d",__rollup__="increase"}[3h])"#;
        let out = result_series(&n.url(), q, now, &[]);
        let newest = t0 + 1000 + 399 * 15_000 - 120_000;
        let closed = newest - newest.rem_euclid(60_000);
        let total: f64 = 3.0
            * window_increases(&debug)
                .iter()
                .filter(|(w, _)| **w < closed)
                .map(|(_, v)| v)
                .sum::<f64>();
        assert!(
            out.len() == 1 && out[0].contains(&format!("\"{total}\"")),
            "{out:?} vs {total}"
        );
        let m = get(&format!("{}/metrics", nodes[0].url()))
            .expect("metrics")
            .text();
        assert!(
            m.lines()
                .any(|l| l.starts_with("cairn_drop_rule_samples_total{")
                    && l.contains("rule=\"rollup:dbg\"")
                    && l.ends_with(" 1200")),
            "{m}"
        );
        // At 2m: the service outputs (no mapping rule), not `debug:increase`.
        let at2 = |m: &str| {
            let q = format!("{m}{{__namespace__=\"agg_2m_30d\",__rollup__=\"increase\"}}[3h]");
            result_series(&n.url(), &q, now, &[]).len()
        };
        assert_eq!(at2("service:http_requests:increase"), 2);
        assert_eq!(
            at2("debug:increase"),
            0,
            "kept at 1m only by its mapping rule"
        );
        // Too old to roll up: still raw.
        let q = "count_over_time(debug_total[10m])";
        let old_raw = result_series(&n.url(), q, old_t + 120_000, &[]);
        assert!(
            old_raw.len() == 1 && old_raw[0].contains("\"4\""),
            "{old_raw:?}"
        );
        // The gateway's usage: per rule, samples by outcome and series saved.
        let r = request(
            "GET",
            &format!("{}/admin/v1/tenants/default/usage", nodes[0].url()),
            ADMIN,
            &[],
        )
        .expect("usage");
        assert_eq!(r.status, 200, "{}", r.text());
        // The aggregation state: the eight inputs' copies, cluster-wide.
        assert_eq!(
            r.json()["data"]["aggregation_state"],
            serde_json::json!({"rollup_input_series": 8}),
            "{}",
            r.text()
        );
        let u = r.json()["data"]["rollup_rules"].clone();
        assert_eq!(
            u,
            serde_json::json!([
                {"rule": "dbg", "samples_copied": 1200, "input_samples_dropped": 1200,
                 "samples_too_old": 4, "input_series_dropped": 3, "output_series": 1,
                 "series_saved": 2, "series_counts_capped": false},
                {"rule": "svc", "samples_copied": 1680, "input_samples_dropped": 0,
                 "samples_too_old": 0, "input_series_dropped": 0, "output_series": 2,
                 "series_saved": 0, "series_counts_capped": false},
            ]),
            "{u}"
        );
        assert!(
            m.lines()
                .any(|l| l.starts_with("cairn_rollup_rule_samples_total{")
                    && l.contains("rule=\"dbg\"")
                    && l.contains("outcome=\"too_old\"")
                    && l.ends_with(" 4")),
            "{m}"
        );
    };
    check(&[TestServer::spawn(ServerOpts::default().config(cfg))]);
    check(&spawn_cluster(5, 8, 3, cfg));
}
