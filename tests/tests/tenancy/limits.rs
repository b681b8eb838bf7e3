//! Tenants that cannot hurt each other (issue 13): real `cairn` processes,
//! tenants and limits set through the admin API, writers over real sockets.
//! `CAIRN_E2E_OVERLOAD_SECS` (default 15; the acceptance run used 60) sets
//! how long the overload lasts.

use super::*;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// An admin call with the test admin token; panics on transport errors.
fn admin(method: &str, url: &str, body: &str) -> Response {
    let h = [ADMIN[0], ("Content-Type", "application/json")];
    request(method, url, &h, body.as_bytes()).unwrap_or_else(|e| panic!("{method} {url}: {e}"))
}

/// Creates tenant `id` with `limits` (JSON object) on `base`.
fn create_tenant(base: &str, id: &str, limits: &str) {
    let r = admin(
        "POST",
        &format!("{base}/admin/v1/tenants"),
        &format!(r#"{{"id":"{id}","limits":{limits}}}"#),
    );
    assert_eq!(r.status, 201, "create {id}: {}", r.text());
}

/// A token for `tenant` with `scopes`; the plaintext.
fn token(base: &str, tenant: &str, scopes: &str) -> String {
    let r = admin(
        "POST",
        &format!("{base}/admin/v1/tenants/{tenant}/tokens"),
        &format!(r#"{{"name":"e2e","scopes":[{scopes}]}}"#),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()["data"]["token"].as_str().unwrap().to_string()
}

/// The value of one sample of `/metrics` whose line starts with `prefix`
/// (name and labels as printed), else 0.
fn metric_value(base: &str, prefix: &str) -> f64 {
    let text = get(&format!("{base}/metrics")).unwrap().text();
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>()
        + 0.0
}

/// `n` series of metric `name` with one sample each at `t`.
fn request_of(name: &str, n: usize, t: i64) -> WriteRequest {
    write_request(
        (0..n)
            .map(|i| {
                series(
                    &[("__name__", name), ("i", &i.to_string())],
                    &[(t, i as f64)],
                )
            })
            .collect(),
    )
}

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

fn overload_secs() -> u64 {
    std::env::var("CAIRN_E2E_OVERLOAD_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(15)
}

#[derive(Default)]
struct Tally {
    offered: AtomicU64,
    accepted: AtomicU64,
    limited: AtomicU64,
    other: AtomicU64,
    latencies_us: std::sync::Mutex<Vec<u64>>,
    /// When each accepted request was answered, and its samples.
    accepted_at: std::sync::Mutex<Vec<(Instant, u64)>>,
}

/// One writer: `per_request` samples of tenant `tenant` (metric `name`)
/// every `every`, to the nodes in turn.
struct Load {
    tenant: &'static str,
    name: String,
    per_request: usize,
    every: Duration,
}

/// Runs `loads` together for `secs` against `bases`; each writer's bodies
/// are encoded before the clock starts (so the client's own CPU does not
/// compete with the server's during the measurement). Returns each load's
/// tally and the time they ran.
fn run_loads(bases: &[String], loads: Vec<Load>, secs: f64) -> (Vec<Arc<Tally>>, f64) {
    run_loads_with(bases, loads, secs, None)
}

/// [`run_loads`], running `mid` on this thread `at` seconds in while the
/// loads go on.
fn run_loads_with(
    bases: &[String],
    loads: Vec<Load>,
    secs: f64,
    mid: Option<(f64, &mut dyn FnMut())>,
) -> (Vec<Arc<Tally>>, f64) {
    let barrier = Arc::new(std::sync::Barrier::new(loads.len() + 1));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tallies = Vec::new();
    let mut threads = Vec::new();
    for l in loads {
        let tally = Arc::new(Tally::default());
        tallies.push(tally.clone());
        let (barrier, stop, bases) = (barrier.clone(), stop.clone(), bases.to_vec());
        threads.push(std::thread::spawn(move || {
            let t0 = now_ms() - 60_000;
            let n = (secs / l.every.as_secs_f64()).ceil() as usize + 50;
            let bodies: Vec<Vec<u8>> = (0..n)
                .map(|k| encode_write(&request_of(&l.name, l.per_request, t0 + k as i64)))
                .collect();
            let h = [
                ("Content-Encoding", "snappy"),
                ("Content-Type", "application/x-protobuf"),
                ("X-Prometheus-Remote-Write-Version", "0.1.0"),
                ("X-Scope-OrgID", l.tenant),
            ];
            barrier.wait();
            let mut next = Instant::now();
            for (k, body) in bodies.iter().enumerate() {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let url = format!("{}/api/v1/write", bases[k % bases.len()]);
                let began = Instant::now();
                let r = post(&url, &h, body);
                let took = began.elapsed();
                let n = l.per_request as u64;
                tally.offered.fetch_add(n, Ordering::Relaxed);
                match r.map(|r| r.status) {
                    Ok(204) => {
                        tally.accepted.fetch_add(n, Ordering::Relaxed);
                        tally.accepted_at.lock().unwrap().push((Instant::now(), n));
                        tally
                            .latencies_us
                            .lock()
                            .unwrap()
                            .push(took.as_micros() as u64);
                    }
                    Ok(429) => {
                        tally.limited.fetch_add(n, Ordering::Relaxed);
                    }
                    _ => {
                        tally.other.fetch_add(1, Ordering::Relaxed);
                    }
                }
                next += l.every;
                if let Some(d) = next.checked_duration_since(Instant::now()) {
                    std::thread::sleep(d);
                }
            }
        }));
    }
    barrier.wait();
    let started = Instant::now();
    let mut left = secs;
    if let Some((at, f)) = mid {
        std::thread::sleep(Duration::from_secs_f64(at));
        f();
        left = (secs - started.elapsed().as_secs_f64()).max(0.0);
    }
    std::thread::sleep(Duration::from_secs_f64(left));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    (tallies, started.elapsed().as_secs_f64())
}

/// The `q`-th percentile of `v`.
fn pct(v: &[u64], q: usize) -> u64 {
    let mut v = v.to_vec();
    v.sort_unstable();
    v.get((v.len() * q / 100).min(v.len().saturating_sub(1)))
        .copied()
        .unwrap_or(0)
}

/// A 429 as a remote-write client sees it: status, Retry-After, body.
fn write_429(base: &str, tenant: &str, req: &WriteRequest) -> (u16, Option<String>, String) {
    let body = encode_write(req);
    let h = [
        ("Content-Encoding", "snappy"),
        ("Content-Type", "application/x-protobuf"),
        ("X-Prometheus-Remote-Write-Version", "0.1.0"),
        ("X-Scope-OrgID", tenant),
    ];
    let r = post(&format!("{base}/api/v1/write"), &h, &body).unwrap();
    (
        r.status,
        r.header("retry-after").map(str::to_string),
        r.text(),
    )
}

/// Tenant A offers 10× its rate while B writes at half of its own; then
/// A's limit is raised live. `bases`: the gateways writes go to in turn.
fn overload(bases: &[String]) {
    let n = bases.len() as f64;
    let (rate, burst) = (1000.0 * n, 1000u64);
    for base in bases.iter().take(1) {
        create_tenant(
            base,
            "a",
            &format!(r#"{{"ingestion_rate":{rate},"ingestion_burst_size":{burst}}}"#),
        );
        create_tenant(
            base,
            "b",
            &format!(r#"{{"ingestion_rate":{rate},"ingestion_burst_size":{burst}}}"#),
        );
    }
    // Every gateway has the tenants within a second.
    let began = Instant::now();
    for base in bases {
        while get_as(&format!("{base}/api/v1/user_limits"), Some("a")).json()["ingestion_rate"]
            != rate as u64
        {
            assert!(
                began.elapsed() < Duration::from_secs(1),
                "limits not on {base} within 1 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    eprintln!("tenants on every gateway after {:?}", began.elapsed());

    // B's baseline latency, alone.
    let every_a = Duration::from_micros((200.0 / (rate * 10.0) * 1e6) as u64);
    let every_b = Duration::from_micros((100.0 / (rate / 2.0) * 1e6) as u64);
    let b = |name: &str| Load {
        tenant: "b",
        name: name.to_string(),
        per_request: 100,
        every: every_b,
    };
    let a = |name: &str| Load {
        tenant: "a",
        name: name.to_string(),
        per_request: 200,
        every: every_a * 2,
    };
    let (t, _) = run_loads(bases, vec![b("b_alone")], 3.0);
    let base_b = t[0].clone();

    // A at 10× (two writers of 200-sample requests), B at half its rate
    // (requests of 100).
    let secs = overload_secs();
    let (t, elapsed) = run_loads(bases, vec![a("a_1"), a("a_2"), b("b_during")], secs as f64);
    let sum = |f: fn(&Tally) -> &AtomicU64| -> u64 {
        t[..2].iter().map(|x| f(x).load(Ordering::Relaxed)).sum()
    };
    let (offered, accepted, a_other) =
        (sum(|x| &x.offered), sum(|x| &x.accepted), sum(|x| &x.other));
    let tb = t[2].clone();
    // Each gateway enforces rate ÷ gateways with the whole burst.
    let expect = rate * elapsed + burst as f64 * n;
    eprintln!(
        "A: offered {offered} ({:.0}/s, {:.1}× its rate), accepted {accepted} ({:.0}/s), expected {expect:.0} ({:.0}/s: rate {rate} + {n}×burst {burst} over {elapsed:.1} s)",
        offered as f64 / elapsed,
        offered as f64 / elapsed / rate,
        accepted as f64 / elapsed,
        expect / elapsed
    );
    // Asked for 10×; a loaded machine may offer less, but A must be well over.
    assert!(
        offered as f64 > 2.0 * rate * elapsed,
        "the writer did not overload A ({offered} offered)"
    );
    assert!(
        (accepted as f64 - expect).abs() <= 0.05 * expect,
        "A accepted {accepted}, expected {expect:.0} ±5 %"
    );
    assert_eq!(a_other, 0, "A: answers other than 204 and 429");
    // A's discards equal offered minus accepted, over the gateways.
    let discarded: f64 = bases
        .iter()
        .map(|b| {
            metric_value(
                b,
                r#"cairn_discarded_samples_total{tenant="a",reason="rate_limited"}"#,
            )
        })
        .sum();
    assert_eq!(
        discarded as u64,
        offered - accepted,
        "A's rate_limited discards"
    );
    // B: nothing refused; its latency next to its baseline (reported).
    assert_eq!(tb.limited.load(Ordering::Relaxed), 0, "B was rate limited");
    assert_eq!(tb.other.load(Ordering::Relaxed), 0, "B had failed writes");
    let (alone, during) = (
        base_b.latencies_us.lock().unwrap().clone(),
        tb.latencies_us.lock().unwrap().clone(),
    );
    eprintln!(
        "B: {} samples accepted, 0 refused; latency p50 {} µs, p99 {} µs during A's overload vs p50 {} µs, p99 {} µs alone",
        tb.accepted.load(Ordering::Relaxed),
        pct(&during, 50),
        pct(&during, 99),
        pct(&alone, 50),
        pct(&alone, 99)
    );

    // Every 429 carries Retry-After; a request over the burst gets its own.
    // (The bucket refilled while the counters were read: empty it first.)
    let (mut st, mut ra, mut body) = (0, None, String::new());
    for _ in 0..100 {
        (st, ra, body) = write_429(&bases[0], "a", &request_of("a_metric", 200, now_ms()));
        if st == 429 {
            break;
        }
    }
    assert_eq!(st, 429, "{body}");
    assert!(
        ra.is_some_and(|v| v.parse::<u64>().is_ok_and(|s| (1..=96).contains(&s))),
        "Retry-After"
    );
    assert!(
        body.contains("err-cairn-tenant-max-ingestion-rate"),
        "{body}"
    );
    assert!(body.contains("PUT /admin/v1/tenants/a/limits"), "{body}");
    let (st, ra, body) = write_429(
        &bases[0],
        "a",
        &request_of("a_metric", burst as usize + 1, now_ms()),
    );
    assert_eq!(st, 429, "{body}");
    assert!(ra.is_some(), "Retry-After on the over-burst 429");
    assert!(
        body.contains("err-cairn-tenant-max-request-size-exceeds-burst"),
        "{body}"
    );
    assert!(
        metric_value(
            &bases[0],
            r#"cairn_discarded_samples_total{tenant="a",reason="burst_exceeded"}"#
        ) > 0.0
    );

    // Raised live (through the first gateway) while A is still 10× over:
    // on every gateway within 2 s, and the change lets no burst through.
    let new_rate = rate * 2.0;
    let mut changed = None;
    let mut raise = || {
        let r = admin(
            "PUT",
            &format!("{}/admin/v1/tenants/a/limits", bases[0]),
            &format!(r#"{{"ingestion_rate":{new_rate}}}"#),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        let at = Instant::now();
        for base in bases {
            while get_as(&format!("{base}/api/v1/user_limits"), Some("a")).json()["ingestion_rate"]
                != new_rate as u64
            {
                assert!(
                    at.elapsed() < Duration::from_secs(2),
                    "new limit not on {base} within 2 s"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        eprintln!("new limit on every gateway after {:?}", at.elapsed());
        changed = Some(Instant::now());
    };
    let (t, _) = run_loads_with(
        bases,
        vec![a("a_raised_1"), a("a_raised_2")],
        7.0,
        Some((2.0, &mut raise)),
    );
    let changed = changed.unwrap();
    let last = t
        .iter()
        .flat_map(|x| x.accepted_at.lock().unwrap().clone())
        .map(|(at, _)| at)
        .max()
        .unwrap();
    let el = last.duration_since(changed).as_secs_f64();
    let acc = t
        .iter()
        .flat_map(|x| x.accepted_at.lock().unwrap().clone())
        .filter(|(at, _)| *at > changed)
        .map(|(_, n)| n)
        .sum::<u64>() as f64;
    eprintln!(
        "after the raise: accepted {acc} in {el:.1} s ({:.0}/s, new rate {new_rate})",
        acc / el
    );
    // The bucket was empty when the limit changed: only the new rate
    // refills it (a refilled burst would add n × burst).
    assert!(
        acc <= new_rate * el + 400.0 * n,
        "the change let a burst through: {acc} accepted in {el:.1} s at {new_rate}/s"
    );
    assert!(
        acc >= 0.9 * new_rate * (el - 0.1),
        "the new rate is not in force: {acc} in {el:.1} s"
    );
}

#[test]
fn one_tenant_overloading_does_not_hurt_another() {
    let s = TestServer::spawn(ServerOpts::default());
    overload(&[s.url()]);
}

#[test]
fn one_tenant_overloading_a_cluster_does_not_hurt_another() {
    let nodes = spawn_cluster(3, 8, 3, "");
    let bases: Vec<String> = nodes.iter().map(|n| n.url()).collect();
    overload(&bases);
}

/// Stored samples of `name` for tenant `t` (from a PromQL count).
fn stored(base: &str, t: &str, name: &str) -> u64 {
    let q = enc(&format!("sum(count_over_time({name}[1h]))"));
    let d = api_data(base, Some(t), &format!("/api/v1/query?query={q}"));
    d["result"][0]["value"][1]
        .as_str()
        .map_or(0, |v| v.parse::<f64>().unwrap() as u64)
}

#[test]
fn over_its_rate_a_tenant_sheds_low_priority_series_first() {
    let s = TestServer::spawn(ServerOpts::default());
    let base = s.url();
    let mut admitted = Vec::new();
    for (tenant, dry) in [("c", false), ("d", true)] {
        create_tenant(
            &base,
            tenant,
            r#"{"ingestion_rate":1000,"ingestion_burst_size":1000}"#,
        );
        let r = admin(
            "PUT",
            &format!("{base}/admin/v1/tenants/{tenant}/drop_rules"),
            &format!(
                r#"[{{"name":"go","selector":"{{__name__=~\"go_.*\"}}","action":"shed","priority":0,"dry_run":{dry}}}]"#
            ),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        // 2× the rate: each request 70 go_ samples and 30 important ones,
        // 20 requests a second.
        let t0 = now_ms() - 60_000;
        let (mut offered_imp, mut ok, mut limited) = (0u64, 0, 0);
        let started = Instant::now();
        let mut next = Instant::now();
        let mut k = 0i64;
        while started.elapsed() < Duration::from_secs(10) {
            let mut ts = request_of("go_gc_duration", 70, t0 + k).timeseries;
            ts.extend(request_of("important", 30, t0 + k).timeseries);
            k += 1;
            let (st, body) = remote_write(&base, Some(tenant), &write_request(ts));
            offered_imp += 30;
            match st {
                204 => ok += 1,
                429 => limited += 1,
                _ => panic!("{st}: {body}"),
            }
            // 20 a second, never caught up in a burst after a stall (a
            // loaded machine's pause would otherwise send a burst above
            // what the bucket holds, important samples and all).
            next = next.max(Instant::now()) + Duration::from_millis(50);
            if let Some(d) = next.checked_duration_since(Instant::now()) {
                std::thread::sleep(d);
            }
        }
        let imp = stored(&base, tenant, "important");
        let go = stored(&base, tenant, "go_gc_duration");
        let counted = metric_value(
            &base,
            &format!(
                r#"cairn_drop_rule_samples_total{{tenant="{tenant}",rule="go",dry_run="{dry}"}}"#
            ),
        ) as u64;
        eprintln!(
            "tenant {tenant} (dry run {dry}): {ok} requests stored, {limited} refused; important {imp} of {offered_imp} stored, go_ {go} stored; the rule counted {counted}"
        );
        let offered_go = offered_imp / 30 * 70;
        // What the tenant was admitted (real rule) or would have been (dry
        // run): everything offered less what the rule shed or counted.
        admitted.push((offered_imp + offered_go - counted) as f64);
        // Only low-priority samples are shed; every important one is stored.
        assert_eq!(limited, 0, "requests were refused instead of shed");
        assert_eq!(imp, offered_imp, "important samples lost");
        let shed = metric_value(
            &base,
            &format!(
                r#"cairn_discarded_samples_total{{tenant="{tenant}",reason="priority_shed"}}"#
            ),
        ) as u64;
        if !dry {
            assert!(go < offered_go, "nothing was shed");
            assert_eq!(shed, offered_go - go, "shed samples counted");
            assert_eq!(counted, shed, "the rule's count");
        } else {
            // A dry run drops nothing and counts what it would have shed.
            assert_eq!(go, offered_go, "a dry run dropped samples");
            assert_eq!(shed, 0);
        }
    }
    // The dry run counts what the real rule shed: both leave the tenant
    // its rate over the same 10 s plus its burst (±10 %). Compared as what
    // is admitted, not as the counts themselves: a machine that sends
    // fewer requests in one leg's 10 s offers less, and the shed count
    // moves with the offer while the admitted amount does not.
    let (real, dry) = (admitted[0], admitted[1]);
    assert!(
        real > 0.0 && (dry - real).abs() <= 0.10 * real,
        "admitted under the rule {real}, under its dry run {dry}"
    );
}

#[test]
fn label_and_series_limits_refuse_the_series_and_store_the_rest() {
    let s = TestServer::spawn(ServerOpts::default());
    let base = s.url();
    create_tenant(
        &base,
        "e",
        r#"{"max_label_names_per_series":3,"max_active_series":5}"#,
    );
    let now = now_ms();
    let mut ts = request_of("lim", 6, now).timeseries;
    ts.push(series(
        &[("__name__", "lim"), ("a", "1"), ("b", "2"), ("i", "x")],
        &[(now, 1.0)],
    ));
    let (st, body) = remote_write(&base, Some("e"), &write_request(ts));
    assert_eq!(st, 400, "{body}");
    assert!(
        body.contains("err-cairn-max-label-names-per-series"),
        "{body}"
    );
    assert!(body.contains("err-cairn-max-series-per-tenant"), "{body}");
    assert!(
        body.contains("the valid rest of the request was stored"),
        "{body}"
    );
    let d = api_data(&base, Some("e"), "/api/v1/series?match[]=lim");
    assert_eq!(d.as_array().unwrap().len(), 5, "{d}");
    for reason in ["max_label_names_per_series", "per_tenant_series_limit"] {
        assert_eq!(
            metric_value(
                &base,
                &format!(r#"cairn_discarded_samples_total{{tenant="e",reason="{reason}"}}"#)
            ),
            1.0,
            "{reason}"
        );
    }
    assert_eq!(
        metric_value(&base, r#"cairn_active_series{tenant="e"}"#),
        5.0
    );
    // Usage says the same.
    let u = admin("GET", &format!("{base}/admin/v1/tenants/e/usage"), "").json();
    assert_eq!(u["data"]["active_series"], 5, "{u}");
    assert_eq!(
        u["data"]["samples_discarded"]["per_tenant_series_limit"], 1,
        "{u}"
    );
}

#[test]
fn tokens_scopes_suspension_and_admin_endpoints() {
    let s = TestServer::spawn(ServerOpts::default().config("auth:\n  anonymous: false\n"));
    let base = s.url();
    let flush = |h: &[(&str, &str)]| {
        post(&format!("{base}/admin/v1/flush"), h, &[])
            .unwrap()
            .status
    };
    assert_eq!(flush(&[]), 401);
    assert_eq!(
        flush(&[("Authorization", "Bearer nope-nope-nope-nope")]),
        401
    );
    assert_eq!(flush(ADMIN), 200);
    create_tenant(&base, "a", "{}");
    create_tenant(&base, "b", "{}");
    let aw = token(&base, "a", r#""write""#);
    let ar = token(&base, "a", r#""read""#);
    let br = token(&base, "b", r#""read""#);
    let aw_h = bearer(&aw);
    assert_eq!(
        flush(&[("Authorization", &aw_h)]),
        403,
        "a write token flushed"
    );
    for path in ["/admin/v1/tenants", "/admin/v1/cluster", "/admin/v1/tokens"] {
        let st = request("GET", &format!("{base}{path}"), &[], &[])
            .unwrap()
            .status;
        assert_eq!(st, 401, "{path} answered without a token");
    }
    let w = |auth: Option<&str>, org: Option<&str>| {
        let mut h = vec![];
        let a;
        if let Some(t) = auth {
            a = bearer(t);
            h.push(("Authorization", a.as_str()));
        }
        try_remote_write_with(&base, org, &h, &request_of("auth_metric", 3, now_ms()))
            .unwrap()
            .0
    };
    assert_eq!(w(None, None), 401, "anonymous write");
    assert_eq!(
        w(None, Some("a")),
        401,
        "anonymous write with a tenant header"
    );
    assert_eq!(w(Some("cairn_000000000000_00"), None), 401, "unknown token");
    assert_eq!(w(Some(&ar), None), 403, "read token wrote");
    // The token's tenant wins over the header.
    assert_eq!(w(Some(&aw), Some("b")), 204);
    let series_as = |t: &str| {
        let h = bearer(t);
        let r = request(
            "GET",
            &format!("{base}/api/v1/series?match[]=auth_metric"),
            &[("Authorization", &h)],
            &[],
        )
        .unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["data"].as_array().unwrap().len()
    };
    assert_eq!(series_as(&ar), 3, "tenant a reads its series");
    assert_eq!(series_as(&br), 0, "tenant b sees a's series");
    let lv = |t: &str| {
        let h = bearer(t);
        request(
            "GET",
            &format!("{base}/api/v1/label/i/values"),
            &[("Authorization", &h)],
            &[],
        )
        .unwrap()
        .json()["data"]
            .as_array()
            .unwrap()
            .len()
    };
    assert_eq!((lv(&ar), lv(&br)), (3, 0), "label values cross tenants");
    // Suspended: writes 403, reads still served.
    let r = admin(
        "PATCH",
        &format!("{base}/admin/v1/tenants/a"),
        r#"{"status":"suspended"}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(w(Some(&aw), None), 403, "a suspended tenant wrote");
    assert_eq!(series_as(&ar), 3);
    let r = admin(
        "PATCH",
        &format!("{base}/admin/v1/tenants/a"),
        r#"{"status":"active"}"#,
    );
    assert_eq!(r.status, 200);
    assert_eq!(w(Some(&aw), None), 204);
    // Revoked: 401 at once.
    let id = aw.split('_').nth(1).unwrap();
    let r = admin(
        "DELETE",
        &format!("{base}/admin/v1/tenants/a/tokens/{id}"),
        "",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(w(Some(&aw), None), 401, "a revoked token wrote");
    // An admin token created through the API works, and ETags are versions.
    let r = admin(
        "POST",
        &format!("{base}/admin/v1/tokens"),
        r#"{"scopes":["admin"]}"#,
    );
    let root2 = r.json()["data"]["token"].as_str().unwrap().to_string();
    let h = bearer(&root2);
    let r = request(
        "GET",
        &format!("{base}/admin/v1/tenants/b"),
        &[("Authorization", &h)],
        &[],
    )
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("etag"), Some("\"1\""));
    let r = request(
        "PUT",
        &format!("{base}/admin/v1/tenants/b"),
        &[("Authorization", &h), ("If-Match", "\"7\"")],
        b"{}",
    )
    .unwrap();
    assert_eq!(r.status, 412, "{}", r.text());
    // An invalid tenant id is a clear 400.
    let r = admin(
        "POST",
        &format!("{base}/admin/v1/tenants"),
        r#"{"id":"../x"}"#,
    );
    assert_eq!(r.status, 400);
    assert!(r.text().contains("invalid tenant id"), "{}", r.text());
    // No plaintext token on disk or in the log.
    let secrets = [
        aw.as_str(),
        ar.as_str(),
        br.as_str(),
        root2.as_str(),
        ADMIN_TOKEN,
    ];
    let mut files = vec![s.data_dir().to_path_buf()];
    while let Some(p) = files.pop() {
        if p.is_dir() {
            files.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else if let Ok(bytes) = std::fs::read(&p) {
            for t in secrets {
                assert!(
                    !bytes.windows(t.len()).any(|w| w == t.as_bytes()),
                    "a plaintext token in {}",
                    p.display()
                );
            }
        }
    }
    let log = s.log();
    for t in secrets {
        assert!(!log.contains(t), "a plaintext token in the log");
    }
}

/// Waits until `f` holds, up to `within`; false if it never did.
fn eventually(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

/// A real Prometheus and a real vmagent write into named tenants with
/// bearer tokens (Debian's Prometheus 2.42 drops remote_write `headers`,
/// prometheus/prometheus#13030, so the token is the way), and see the
/// documented statuses: 204, then 429 once their tenant is over its rate
/// (Prometheus drops those batches by default; vmagent retries them).
#[test]
fn prometheus_and_vmagent_write_into_tenants_with_tokens() {
    let Some(prom_bin) = prometheus_bin() else {
        panic!("no prometheus binary (make deps installs it)");
    };
    let vmagent_bin = std::env::var("VMAGENT_BIN").unwrap_or_else(|_| "/usr/bin/vmagent".into());
    assert!(
        std::path::Path::new(&vmagent_bin).exists(),
        "no vmagent at {vmagent_bin} (make deps installs victoria-metrics)"
    );
    let s = TestServer::spawn(ServerOpts::default().config("auth:\n  anonymous: false\n"));
    let base = s.url();
    create_tenant(&base, "prom", "{}");
    create_tenant(&base, "vm", "{}");
    let prom_w = token(&base, "prom", r#""write""#);
    let vm_w = token(&base, "vm", r#""write""#);
    let dir = tempfile::tempdir().unwrap();
    let cairn_hostport = base.trim_start_matches("http://").to_string();

    // Prometheus scrapes itself every second, writing with its token.
    let prom_port = free_port();
    let cfg = format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: prometheus\n    static_configs:\n      - targets: ['127.0.0.1:{prom_port}']\nremote_write:\n  - url: {base}/api/v1/write\n    authorization:\n      credentials: {prom_w}\n    queue_config:\n      batch_send_deadline: 1s\n      min_backoff: 100ms\n      max_backoff: 1s\n"
    );
    let (_prom, prom_url) =
        spawn_prometheus_on(&prom_bin, &dir.path().join("prom"), &cfg, prom_port);
    // vmagent scrapes Cairn every second, writing with its token.
    let vm_port = free_port();
    let scrape = dir.path().join("vmagent.yml");
    std::fs::write(
        &scrape,
        format!("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: cairn\n    static_configs:\n      - targets: ['{cairn_hostport}']\n"),
    )
    .unwrap();
    let vm_log = std::fs::File::create(dir.path().join("vmagent.log")).unwrap();
    let _vm = ChildGuard(
        std::process::Command::new(&vmagent_bin)
            .arg(format!("-httpListenAddr=127.0.0.1:{vm_port}"))
            .arg(format!("-promscrape.config={}", scrape.display()))
            .arg(format!("-remoteWrite.url={base}/api/v1/write"))
            .arg(format!("-remoteWrite.bearerToken={vm_w}"))
            .arg(format!(
                "-remoteWrite.tmpDataPath={}",
                dir.path().join("vmq").display()
            ))
            .arg("-remoteWrite.flushInterval=500ms")
            .stdout(vm_log.try_clone().unwrap())
            .stderr(vm_log)
            .spawn()
            .expect("spawning vmagent"),
    );
    // Each tenant gets its own writer's series, and only those.
    let read = |tenant: &str, sel: &str| -> usize {
        let rt = token(&base, tenant, r#""read""#);
        let h = bearer(&rt);
        let r = request(
            "GET",
            &format!("{base}/api/v1/series?match[]={}", enc(sel)),
            &[("Authorization", &h)],
            &[],
        )
        .unwrap();
        r.json()["data"].as_array().map_or(0, Vec::len)
    };
    assert!(
        eventually(Duration::from_secs(60), || read(
            "prom",
            r#"up{job="prometheus"}"#
        ) == 1),
        "Prometheus's samples did not reach tenant prom"
    );
    assert!(
        eventually(Duration::from_secs(60), || read("vm", r#"up{job="cairn"}"#)
            == 1),
        "vmagent's samples did not reach tenant vm"
    );
    assert_eq!(
        read("prom", r#"up{job="cairn"}"#),
        0,
        "vmagent's series in tenant prom"
    );
    assert_eq!(
        read("vm", r#"up{job="prometheus"}"#),
        0,
        "Prometheus's series in tenant vm"
    );

    // Over their rate: 429s, counted by Cairn and seen by both clients.
    for t in ["prom", "vm"] {
        let r = admin(
            "PUT",
            &format!("{base}/admin/v1/tenants/{t}/limits"),
            r#"{"ingestion_rate":1,"ingestion_burst_size":5}"#,
        );
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let value = |url: &str, prefix: &str| metric_value(url, prefix);
    assert!(
        eventually(Duration::from_secs(60), || value(
            &prom_url,
            "prometheus_remote_storage_samples_failed_total"
        ) > 0.0),
        "Prometheus saw no failed (429) batch"
    );
    let vm_url = format!("http://127.0.0.1:{vm_port}");
    assert!(
        eventually(Duration::from_secs(60), || {
            get(&format!("{vm_url}/metrics")).is_ok_and(|r| {
                r.text().lines().any(|l| {
                    l.starts_with("vmagent_remotewrite_requests_total{")
                        && l.contains(r#"status_code="429""#)
                        && !l.ends_with(" 0")
                })
            })
        }),
        "vmagent saw no 429"
    );
    // A batch larger than the burst gets its own 429 (burst_exceeded),
    // a smaller one over the rate rate_limited: both counted.
    for t in ["prom", "vm"] {
        let [rl, be] = ["rate_limited", "burst_exceeded"].map(|r| {
            value(
                &base,
                &format!(r#"cairn_discarded_samples_total{{tenant="{t}",reason="{r}"}}"#),
            )
        });
        eprintln!("tenant {t}: {rl} samples rate_limited, {be} burst_exceeded");
        assert!(rl + be > 0.0, "tenant {t}: no discards counted");
    }
    let answered_429 = value(
        &base,
        r#"cairn_api_http_requests_total{route="/api/v1/write",code="429"}"#,
    );
    eprintln!("Cairn answered {answered_429} remote writes with 429");
    assert!(answered_429 > 0.0);
}
