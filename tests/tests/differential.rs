//! Differential PromQL test (issue 3's acceptance): the same generated data
//! (counters with resets, gauges with negative and decimal values, classic
//! histograms, gaps, staleness markers, series that start late or end early)
//! is remote-written into Cairn and into a real Prometheus 2.x
//! (`/usr/bin/prometheus`, Debian package), then several hundred distinct
//! PromQL queries run against both as instant queries at several times and as
//! range queries; every answer must agree (same result type, same series,
//! same timestamps, values equal within 1e-6 relative, NaN == NaN).
//!
//! Prometheus 2.x vs 3.x: Cairn implements 3.x semantics, the reference is
//! 2.x, so the data and queries are laid out where both agree:
//! - range selectors (2.x closed `[t-r, t]`, 3.x left-open `(t-r, t]`) and the
//!   lookback window: every sample timestamp has a non-zero millisecond part
//!   (1..=999 ms jitter) while every evaluation time, range, offset, `@` and
//!   subquery step is a whole number of seconds, so no sample ever sits on a
//!   boundary;
//! - subquery evaluation points (2.x includes `t-r`, 3.x does not): evaluation
//!   times are ≡ 13 s (mod 30 s) and subquery steps/ranges/offsets are
//!   multiples of 30 s, so `t-r` is never a multiple of the subquery step
//!   (a subquery nested in a subquery runs at step-aligned times: its range
//!   is not a multiple of its step);
//! - `rate`/`increase` of a counter starting inside the range (order of the
//!   zero-point clamp, changed in 2.52): see `COUNTER_BASE`;
//! - no `holt_winters`/`double_exponential_smoothing`, no experimental
//!   functions, no native histograms, no regexes over newlines, no NaN
//!   inputs to `sort`, no `topk`/`bottomk` over values that can tie.
//!
//! Run with:
//! `CARGO_TARGET_DIR=$HOME/.cache/cairn-target-e2e cargo test -p cairn-e2e --test differential -- --nocapture`
//! (`CAIRN_BIN` picks the binary, see `cairn_e2e::cairn_bin`).
//! (Not `CAIRN_`-prefixed: `cairn serve` reads every `CAIRN_*` variable as
//! config and refuses unknown ones.)
//! `PROMQL_DIFF_SELF_CHECK=1` compares Prometheus with a second Prometheus
//! instead of Cairn (validates the loader and the comparison itself);
//! `PROMQL_DIFF_SEED=<n>` changes the generated data (default fixed);
//! `PROMQL_DIFF_FILTER=<substring>` runs only the matching queries.

use cairn_e2e::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

const SEC: i64 = 1000;
const MIN: i64 = 60 * SEC;
/// Prometheus's staleness marker (`value.StaleNaN`).
const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;
const REL_TOL: f64 = 1e-6;
/// Counters start far above what they gain within any queried range (a
/// histogram gets 5000 observations of history). Prometheus 2.52 (PR #13725)
/// swapped the order of `rate`/`increase`'s zero-point clamp and its
/// extrapolation threshold when a series starts inside the range: 2.x may
/// extrapolate by the zero-point distance where 3.x extrapolates by half a
/// sample interval. The two agree whenever the zero point lies more than
/// 1.1 sample intervals before the first sample, which this guarantees.
const COUNTER_BASE: f64 = 10_000.0;

// ------------------------------------------------------------------ servers

// --------------------------------------------------------------------- data

type Labels = Vec<(String, String)>;

struct Gen {
    series: Vec<(Labels, Vec<(i64, f64)>)>,
}

impl Gen {
    fn add(&mut self, labels: &[(&str, &str)], samples: Vec<(i64, f64)>) {
        let mut l: Labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        l.sort();
        for w in samples.windows(2) {
            assert!(w[0].0 < w[1].0, "generated samples out of order: {l:?}");
        }
        for &(t, _) in &samples {
            assert_ne!(t % SEC, 0, "sample on a whole second: {l:?} {t}");
        }
        self.series.push((l, samples));
    }
}

/// Sample times of a series: every `interval` from `t0 + from` to `t0 + to`
/// (exclusive), each with 1..=999 ms jitter so none sits on a whole second.
fn times(rng: &mut Rng, t0: i64, interval: i64, from: i64, to: i64) -> Vec<i64> {
    let mut out = Vec::new();
    let mut t = from;
    while t < to {
        out.push(t0 + t + rng.range(1, 1000) as i64);
        t += interval;
    }
    out
}

fn stale() -> f64 {
    f64::from_bits(STALE_NAN_BITS)
}

/// Rounds to `d` decimals so values look like real exposition values.
fn dec(x: f64, d: i32) -> f64 {
    let p = 10f64.powi(d);
    (x * p).round() / p
}

/// The data set; `t0` is a multiple of 5 minutes, data covers
/// `[t0, t0 + 60m)`.
fn generate(seed: u64, t0: i64) -> Gen {
    let mut rng = Rng::new(seed);
    let mut g = Gen { series: Vec::new() };
    let end = 60 * MIN;

    // Counters: http_requests_total, 15 s interval.
    for job in ["api", "db"] {
        for inst in ["a:9090", "b:9090"] {
            for method in ["GET", "POST"] {
                for code in ["200", "500"] {
                    let labels = [
                        ("__name__", "http_requests_total"),
                        ("job", job),
                        ("instance", inst),
                        ("method", method),
                        ("code", code),
                    ];
                    let rate = if code == "200" { 20 } else { 3 };
                    let mut v = COUNTER_BASE + rng.range(0, 1000) as f64;
                    let mut samples = Vec::new();
                    let ends_early = job == "db" && inst == "b:9090" && code == "500";
                    for (i, t) in times(&mut rng, t0, 15 * SEC, 0, end)
                        .into_iter()
                        .enumerate()
                    {
                        if ends_early && t - t0 > 40 * MIN {
                            // Target went away: one staleness marker, then nothing.
                            samples.push((t, stale()));
                            break;
                        }
                        // Counter resets (process restarts).
                        let reset = (job == "api" && inst == "a:9090" && i == 100)
                            || (job == "db" && method == "GET" && i == 170);
                        if reset {
                            v = rng.range(0, 5) as f64;
                        } else {
                            v += rng.range(0, rate) as f64;
                        }
                        samples.push((t, v));
                    }
                    g.add(&labels, samples);
                }
            }
        }
    }
    // A counter that starts late (25 min in), with decimal increments.
    {
        let mut v = COUNTER_BASE;
        let samples = times(&mut rng, t0, 15 * SEC, 25 * MIN, end)
            .into_iter()
            .map(|t| {
                v = dec(v + rng.range(0, 400) as f64 / 100.0, 2);
                (t, v)
            })
            .collect();
        g.add(
            &[
                ("__name__", "http_requests_total"),
                ("job", "api"),
                ("instance", "c:9090"),
                ("method", "GET"),
                ("code", "200"),
            ],
            samples,
        );
    }

    // Gauges: node_temp_celsius, 10 s interval, decimals, one zone negative.
    for inst in ["a:9100", "b:9100"] {
        for (zone, base) in [("cpu0", 55.0), ("cpu1", 48.0), ("ambient", -4.0)] {
            let labels = [
                ("__name__", "node_temp_celsius"),
                ("job", "node"),
                ("instance", inst),
                ("zone", zone),
            ];
            let phase = rng.range(0, 100) as f64 / 10.0;
            let mut samples = Vec::new();
            for (i, t) in times(&mut rng, t0, 10 * SEC, 0, end)
                .into_iter()
                .enumerate()
            {
                let rel = t - t0;
                // A gap of 8 minutes (> lookback) with no staleness marker.
                if zone == "cpu0" && inst == "a:9100" && (20 * MIN..28 * MIN).contains(&rel) {
                    continue;
                }
                // A staleness marker at 30 min, series back at 36 min.
                if zone == "ambient" && inst == "b:9100" && (30 * MIN..36 * MIN).contains(&rel) {
                    if samples
                        .last()
                        .is_some_and(|&(_, v): &(i64, f64)| v.to_bits() != STALE_NAN_BITS)
                    {
                        samples.push((t, stale()));
                    }
                    continue;
                }
                let x = base
                    + 6.0 * ((i as f64) / 17.0 + phase).sin()
                    + rng.range(0, 1000) as f64 / 1000.0;
                samples.push((t, dec(x, 3)));
            }
            g.add(&labels, samples);
        }
    }

    // Integer gauge with repeated values (count_values, changes), 15 s.
    for job in ["api", "db"] {
        for inst in ["a:9090", "b:9090"] {
            let mut v = rng.range(0, 10) as i64;
            let samples = times(&mut rng, t0, 15 * SEC, 0, end)
                .into_iter()
                .map(|t| {
                    if rng.range(0, 4) == 0 {
                        v = (v + rng.range(0, 5) as i64 - 2).clamp(0, 12);
                    }
                    (t, v as f64)
                })
                .collect();
            g.add(
                &[
                    ("__name__", "queue_depth"),
                    ("job", job),
                    ("instance", inst),
                ],
                samples,
            );
        }
    }

    // 0/1 flapping gauge, 30 s; one instance ends early at 50 min.
    for job in ["api", "db"] {
        for inst in ["a:9090", "b:9090"] {
            let to = if job == "db" && inst == "a:9090" {
                50 * MIN
            } else {
                end
            };
            let samples = times(&mut rng, t0, 30 * SEC, 0, to)
                .into_iter()
                .map(|t| (t, if rng.range(0, 10) < 8 { 1.0 } else { 0.0 }))
                .collect();
            g.add(
                &[("__name__", "service_up"), ("job", job), ("instance", inst)],
                samples,
            );
        }
    }

    // Classic histograms, 15 s interval.
    let les = ["0.05", "0.1", "0.25", "0.5", "1", "2.5", "+Inf"];
    let bounds = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, f64::INFINITY];
    for job in ["api", "db"] {
        for inst in ["a:9090", "b:9090"] {
            let mut counts = [0f64; 7];
            let mut sum = 0.0;
            let mut count = 0.0;
            let mut rows: Vec<(i64, [f64; 7], f64, f64)> = Vec::new();
            let scale = if job == "api" { 0.2 } else { 0.6 };
            let starts_late = job == "api" && inst == "b:9090";
            let from = if starts_late { 12 * MIN } else { 0 };
            let ends_early = job == "db" && inst == "b:9090";
            // Roughly exponential observations.
            let observe =
                |n: u64, counts: &mut [f64; 7], sum: &mut f64, count: &mut f64, rng: &mut Rng| {
                    for _ in 0..n {
                        let u = (rng.range(1, 10_000) as f64) / 10_000.0;
                        let x = dec(-scale * u.ln(), 4);
                        for (k, b) in bounds.iter().enumerate() {
                            if x <= *b {
                                counts[k] += 1.0;
                            }
                        }
                        *sum += x;
                        *count += 1.0;
                    }
                };
            // History before the first sample (see COUNTER_BASE).
            observe(5000, &mut counts, &mut sum, &mut count, &mut rng);
            for (i, t) in times(&mut rng, t0, 15 * SEC, from, end)
                .into_iter()
                .enumerate()
            {
                if job == "db" && inst == "a:9090" && i == 150 {
                    // Process restart: every series of the histogram resets.
                    counts = [0.0; 7];
                    sum = 0.0;
                    count = 0.0;
                }
                let n = rng.range(0, 25);
                observe(n, &mut counts, &mut sum, &mut count, &mut rng);
                rows.push((t, counts, dec(sum, 4), count));
            }
            let mut end_marker = None;
            if ends_early {
                let cut = t0 + 50 * MIN;
                let first_after = rows.iter().position(|r| r.0 > cut).expect("rows");
                end_marker = Some(rows[first_after].0);
                rows.truncate(first_after);
            }
            let with_end = |mut v: Vec<(i64, f64)>| {
                if let Some(t) = end_marker {
                    v.push((t, stale()));
                }
                v
            };
            for (k, le) in les.iter().enumerate() {
                g.add(
                    &[
                        ("__name__", "request_duration_seconds_bucket"),
                        ("job", job),
                        ("instance", inst),
                        ("le", le),
                    ],
                    with_end(rows.iter().map(|r| (r.0, r.1[k])).collect()),
                );
            }
            g.add(
                &[
                    ("__name__", "request_duration_seconds_sum"),
                    ("job", job),
                    ("instance", inst),
                ],
                with_end(rows.iter().map(|r| (r.0, r.2)).collect()),
            );
            g.add(
                &[
                    ("__name__", "request_duration_seconds_count"),
                    ("job", job),
                    ("instance", inst),
                ],
                with_end(rows.iter().map(|r| (r.0, r.3)).collect()),
            );
        }
    }

    // Label values with characters that need care in regexes/label_replace.
    for (path, k) in [
        ("/api/v1/query", 1.0),
        ("/api/v1/write", 2.5),
        ("/-/ready", 0.25),
    ] {
        let samples = times(&mut rng, t0, 20 * SEC, 0, end)
            .into_iter()
            .enumerate()
            .map(|(i, t)| {
                (
                    t,
                    dec(COUNTER_BASE + k * (i as f64) + (i % 7) as f64 * 0.125, 3),
                )
            })
            .collect();
        g.add(
            &[
                ("__name__", "handler_bytes_total"),
                ("job", "api"),
                ("handler", path),
            ],
            samples,
        );
    }
    g
}

/// Write requests covering consecutive 5-minute windows, in time order (both
/// servers refuse out-of-order samples).
fn batches(g: &Gen, t0: i64) -> Vec<WriteRequest> {
    let mut out = Vec::new();
    let mut w = t0;
    let last = g
        .series
        .iter()
        .filter_map(|(_, s)| s.last().map(|p| p.0))
        .max()
        .unwrap_or(t0);
    while w <= last {
        let ts: Vec<TimeSeries> = g
            .series
            .iter()
            .filter_map(|(l, s)| {
                let samples: Vec<(i64, f64)> = s
                    .iter()
                    .copied()
                    .filter(|&(t, _)| t >= w && t < w + 5 * MIN)
                    .collect();
                if samples.is_empty() {
                    return None;
                }
                let labels: Vec<(&str, &str)> =
                    l.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                Some(series(&labels, &samples))
            })
            .collect();
        out.push(write_request(ts));
        w += 5 * MIN;
    }
    out
}

// ------------------------------------------------------------------ queries

/// A query and whether the order of its instant result matters.
struct Query {
    q: String,
    ordered: bool,
    /// Evaluates to a range vector: instant queries only.
    range_vector: bool,
}

fn queries(at: i64) -> Vec<Query> {
    let mut qs: Vec<String> = Vec::new();
    let mut rv: Vec<String> = Vec::new();
    let mut push = |s: String| qs.push(s);

    // Selectors with every matcher kind.
    let selectors = [
        "http_requests_total",
        r#"http_requests_total{job="api"}"#,
        r#"http_requests_total{job!="api"}"#,
        r#"http_requests_total{method=~"G.*"}"#,
        r#"http_requests_total{code!~"5.."}"#,
        r#"http_requests_total{job="api",code="500",method="POST"}"#,
        r#"http_requests_total{instance=~".+:9090",job!~"d.*"}"#,
        r#"{__name__="node_temp_celsius"}"#,
        r#"{__name__=~"node_temp_celsius|queue_depth",job=~"node|api"}"#,
        r#"{__name__=~"request_duration_seconds_(sum|count)"}"#,
        "node_temp_celsius",
        r#"node_temp_celsius{zone=~"cpu.*"}"#,
        r#"node_temp_celsius{zone=""}"#,
        r#"node_temp_celsius{zone!=""}"#,
        r#"node_temp_celsius{zone=~"ambient|cpu0",instance="b:9100"}"#,
        "queue_depth",
        "service_up",
        "request_duration_seconds_count",
        "request_duration_seconds_sum",
        r#"request_duration_seconds_bucket{le="+Inf"}"#,
        r#"request_duration_seconds_bucket{le=~"0.*"}"#,
        r#"handler_bytes_total{handler=~"/api/.*"}"#,
        r#"handler_bytes_total{handler!~"/api/v1/(query|write)"}"#,
        "nonexistent_metric",
        r#"nonexistent_metric{job="x"}"#,
    ];
    for s in selectors {
        push(s.to_string());
    }
    for s in [
        "node_temp_celsius offset 5m",
        "node_temp_celsius offset 10m30s",
        "http_requests_total offset -5m",
        "queue_depth offset 50m",
    ] {
        push(s.to_string());
    }
    push(format!("node_temp_celsius @ {at}"));
    push(format!("http_requests_total @ {at} offset 5m"));
    push("node_temp_celsius @ end()".into());
    push("queue_depth @ start()".into());

    // Raw range selectors (instant queries only).
    for s in [
        "node_temp_celsius[1m]",
        r#"http_requests_total{job="db"}[2m]"#,
        "service_up[3m] offset 5m",
        r#"node_temp_celsius{zone="ambient"}[5m]"#,
    ] {
        rv.push(s.to_string());
    }
    rv.push(format!("queue_depth[1m] @ {at}"));

    // Counter range functions.
    let counters = [
        "http_requests_total",
        r#"http_requests_total{job="db"}"#,
        "request_duration_seconds_count",
        "request_duration_seconds_sum",
        "handler_bytes_total",
    ];
    let ranges = ["1m", "2m", "5m", "10m"];
    for f in ["rate", "irate", "increase", "resets", "changes"] {
        for c in counters {
            for r in ranges {
                push(format!("{f}({c}[{r}])"));
            }
        }
    }
    // Gauge range functions.
    let gauges = [
        "node_temp_celsius",
        "queue_depth",
        r#"node_temp_celsius{zone="ambient"}"#,
        "service_up",
    ];
    for f in [
        "delta",
        "idelta",
        "deriv",
        "changes",
        "resets",
        "avg_over_time",
        "min_over_time",
        "max_over_time",
        "sum_over_time",
        "count_over_time",
        "last_over_time",
        "present_over_time",
        "stddev_over_time",
        "stdvar_over_time",
    ] {
        for gauge in gauges {
            for r in ["1m", "5m", "10m"] {
                push(format!("{f}({gauge}[{r}])"));
            }
        }
    }
    for phi in ["0", "0.25", "0.5", "0.9", "1"] {
        for gauge in ["node_temp_celsius", "queue_depth"] {
            push(format!("quantile_over_time({phi}, {gauge}[5m])"));
        }
    }
    push("quantile_over_time(1.5, node_temp_celsius[5m])".into());
    push("quantile_over_time(-1, node_temp_celsius[5m])".into());
    for gauge in ["node_temp_celsius", "queue_depth"] {
        for (r, h) in [
            ("5m", "300"),
            ("10m", "600"),
            ("15m", "-60"),
            ("2m", "3600"),
        ] {
            push(format!("predict_linear({gauge}[{r}], {h})"));
        }
    }
    push("absent_over_time(nonexistent_metric[5m])".into());
    push(r#"absent_over_time(nonexistent_metric{job="x",instance=~"y"}[5m])"#.into());
    for r in ["1m", "5m", "10m"] {
        push(format!(
            r#"absent_over_time(node_temp_celsius{{zone="cpu0",instance="a:9100"}}[{r}])"#
        ));
        push(format!(
            r#"absent_over_time(service_up{{job="db",instance="a:9090"}}[{r}])"#
        ));
    }
    push("absent_over_time(queue_depth[5m])".into());
    push("rate(http_requests_total[5m] offset 10m)".into());
    push(format!("rate(http_requests_total[5m] @ {at})"));
    push("max_over_time(node_temp_celsius[10m] offset -5m)".into());

    // Aggregations.
    let groupings = [
        "",
        " by (job)",
        " without (instance)",
        " by (job, instance)",
        " without (job, instance, zone, method, code)",
    ];
    let inners = [
        "node_temp_celsius",
        "rate(http_requests_total[5m])",
        "queue_depth",
    ];
    for agg in [
        "sum", "avg", "min", "max", "count", "group", "stddev", "stdvar",
    ] {
        for gr in groupings {
            for inner in inners {
                push(format!("{agg}{gr} ({inner})"));
            }
        }
    }
    for k in ["1", "2", "3"] {
        push(format!("topk({k}, node_temp_celsius)"));
        push(format!("bottomk({k}, node_temp_celsius)"));
        push(format!(
            "topk by (job) ({k}, rate(http_requests_total[5m]))"
        ));
        push(format!("bottomk without (zone) ({k}, node_temp_celsius)"));
    }
    push("topk(100, node_temp_celsius)".into());
    push("bottomk(0, node_temp_celsius)".into());
    for phi in ["0", "0.1", "0.5", "0.75", "0.99", "1"] {
        push(format!("quantile({phi}, node_temp_celsius)"));
        push(format!(
            "quantile by (job) ({phi}, rate(http_requests_total[5m]))"
        ));
    }
    push("quantile(2, node_temp_celsius)".into());
    push("count_values(\"value\", queue_depth)".into());
    push("count_values by (job) (\"depth\", queue_depth)".into());
    push("count_values(\"t\", round(node_temp_celsius))".into());
    push("count_values without (instance) (\"up\", service_up)".into());
    push("sum(count_values(\"v\", queue_depth))".into());

    // Binary operators.
    for op in ["+", "-", "*", "/", "%", "^"] {
        push(format!("node_temp_celsius {op} 3"));
        push(format!("2 {op} queue_depth"));
    }
    push("node_temp_celsius / 0".into());
    push("-node_temp_celsius".into());
    push("queue_depth - queue_depth".into());
    push("queue_depth / queue_depth".into());
    for op in ["==", "!=", ">", "<", ">=", "<="] {
        push(format!("queue_depth {op} 4"));
        push(format!("queue_depth {op} bool 4"));
        push(format!("node_temp_celsius {op} 50"));
    }
    push("node_temp_celsius > bool 50 == bool 1".into());
    push("2 > bool 1".into());
    push("1 + 2 * 3 ^ 2 % 5".into());
    push(
        r#"http_requests_total{code="500"} / ignoring(code) http_requests_total{code="200"}"#
            .into(),
    );
    push(r#"http_requests_total{code="500"} + on(job, instance, method) http_requests_total{code="200"}"#.into());
    push(
        "sum by (job) (rate(http_requests_total{code=\"500\"}[5m])) / sum by (job) (rate(http_requests_total[5m]))"
            .into(),
    );
    push(
        "rate(http_requests_total[5m]) / on(job, instance) group_left sum by (job, instance) (rate(http_requests_total[5m]))"
            .into(),
    );
    push(
        "sum by (job, instance) (rate(http_requests_total[5m])) / on(job, instance) group_right rate(http_requests_total[5m])"
            .into(),
    );
    push("http_requests_total * on(job, instance) group_left(nothing) queue_depth".into());
    push("queue_depth * on(job, instance) group_right http_requests_total".into());
    push("rate(http_requests_total[5m]) > on(job, instance) group_left queue_depth".into());
    push("queue_depth > bool on(job, instance) service_up".into());
    push("node_temp_celsius{instance=\"a:9100\"} - ignoring(instance) node_temp_celsius{instance=\"b:9100\"}".into());
    push("node_temp_celsius and node_temp_celsius > 50".into());
    push("queue_depth and on(job, instance) service_up == 1".into());
    push("queue_depth or service_up".into());
    push("queue_depth > 5 or on(job) queue_depth < 2".into());
    push("node_temp_celsius unless node_temp_celsius{zone=\"ambient\"}".into());
    push("queue_depth unless on(instance) service_up == 0".into());
    push("service_up unless ignoring(job) queue_depth > 3".into());
    push("http_requests_total and ignoring(method, code) queue_depth".into());
    push("vector(1) and on() (sum(queue_depth) > 10)".into());
    push("node_temp_celsius > scalar(avg(node_temp_celsius))".into());
    push("node_temp_celsius - on() group_left avg(node_temp_celsius)".into());
    push("sum(rate(http_requests_total[5m])) by (job) * 60".into());

    // Histograms.
    for phi in ["0", "0.25", "0.5", "0.9", "0.99", "1"] {
        push(format!(
            "histogram_quantile({phi}, sum by (le) (rate(request_duration_seconds_bucket[5m])))"
        ));
        push(format!(
            "histogram_quantile({phi}, sum by (job, le) (rate(request_duration_seconds_bucket[2m])))"
        ));
    }
    push("histogram_quantile(0.9, rate(request_duration_seconds_bucket[5m]))".into());
    push("histogram_quantile(0.5, request_duration_seconds_bucket)".into());
    push("histogram_quantile(-0.5, rate(request_duration_seconds_bucket[5m]))".into());
    push("histogram_quantile(1.5, rate(request_duration_seconds_bucket[5m]))".into());
    push("histogram_quantile(0.9, sum without (instance) (increase(request_duration_seconds_bucket[10m])))".into());
    push(
        "rate(request_duration_seconds_sum[5m]) / rate(request_duration_seconds_count[5m])".into(),
    );
    push("sum by (le) (request_duration_seconds_bucket)".into());

    // Label manipulation.
    push(r#"label_replace(http_requests_total, "port", "$1", "instance", ".*:(.*)")"#.into());
    push(r#"label_replace(node_temp_celsius, "zone", "", "zone", "ambient")"#.into());
    push(r#"label_replace(queue_depth, "host", "$1-$2", "instance", "(.*):(.*)")"#.into());
    push(r#"label_replace(queue_depth, "x", "y", "instance", "nomatch")"#.into());
    push(r#"label_replace(handler_bytes_total, "root", "$1", "handler", "/([^/]*).*")"#.into());
    push(r#"label_replace(rate(http_requests_total[5m]), "job", "all", "", "")"#.into());
    push(r#"label_join(queue_depth, "id", "-", "job", "instance")"#.into());
    push(r#"label_join(node_temp_celsius, "zone", "/", "instance", "zone")"#.into());
    push(r#"label_join(service_up, "empty", ",")"#.into());
    push(r#"sum by (port) (label_replace(rate(http_requests_total[5m]), "port", "$1", "instance", ".*:(.*)"))"#.into());

    // Math functions.
    for f in [
        "abs", "ceil", "floor", "round", "sqrt", "exp", "ln", "log2", "log10", "sgn", "sin", "cos",
        "tan", "asin", "acos", "atan", "sinh", "cosh", "tanh", "deg", "rad",
    ] {
        push(format!("{f}(node_temp_celsius)"));
    }
    push("exp(node_temp_celsius / 10)".into());
    push("sqrt(abs(node_temp_celsius))".into());
    push("ln(queue_depth)".into());
    push("round(node_temp_celsius, 0.5)".into());
    push("round(node_temp_celsius, 5)".into());
    push("round(-node_temp_celsius, 0.1)".into());
    push("clamp(node_temp_celsius, 0, 50)".into());
    push("clamp(node_temp_celsius, 50, 0)".into());
    push("clamp_min(node_temp_celsius, 10)".into());
    push("clamp_max(node_temp_celsius, 10)".into());
    push("clamp_min(rate(http_requests_total[5m]), 0.5)".into());
    push("asin(clamp(node_temp_celsius / 100, -1, 1))".into());
    push("pi() * 2".into());

    // Time functions.
    push("timestamp(node_temp_celsius)".into());
    push("timestamp(queue_depth offset 5m)".into());
    push("time() - timestamp(service_up)".into());
    push("time()".into());
    push("time() / 60".into());
    for f in [
        "minute",
        "hour",
        "day_of_week",
        "day_of_month",
        "days_in_month",
        "month",
        "year",
    ] {
        push(format!("{f}()"));
        push(format!("{f}(timestamp(queue_depth))"));
    }

    // absent, scalar, vector.
    push("absent(nonexistent_metric)".into());
    push(r#"absent(nonexistent_metric{job="x",instance="y"})"#.into());
    push(r#"absent(nonexistent_metric{job=~"x"})"#.into());
    push("absent(node_temp_celsius)".into());
    push(r#"absent(node_temp_celsius{zone="cpu0",instance="a:9100"})"#.into());
    push("absent(sum(nonexistent_metric))".into());
    push("scalar(sum(queue_depth))".into());
    push("scalar(queue_depth)".into());
    push("vector(1)".into());
    push("vector(time())".into());
    push("vector(scalar(sum(service_up)))".into());
    push("sum(queue_depth) + scalar(sum(service_up))".into());

    // Subqueries (steps/ranges/offsets multiples of 30 s, see the header).
    push("max_over_time(rate(http_requests_total[1m])[10m:1m])".into());
    push("min_over_time(rate(http_requests_total[2m])[15m:30s])".into());
    push("avg_over_time(node_temp_celsius[10m:1m])".into());
    push("sum_over_time(queue_depth[5m:30s])".into());
    push("count_over_time(node_temp_celsius[20m:2m])".into());
    push("max_over_time(sum by (job) (rate(http_requests_total[5m]))[30m:5m])".into());
    push("rate(sum(request_duration_seconds_count)[10m:1m])".into());
    push("deriv(avg(node_temp_celsius)[10m:1m])".into());
    push("last_over_time(queue_depth[10m:1m] offset 5m)".into());
    push(format!("max_over_time(node_temp_celsius[10m:1m] @ {at})"));
    push("quantile_over_time(0.9, rate(http_requests_total[2m])[20m:1m])".into());
    // The inner subquery runs at the outer one's step-aligned times, so its
    // range must not be a multiple of its step (2.x/3.x boundary, see header).
    push("max_over_time(max_over_time(node_temp_celsius[2m10s:30s])[10m:2m])".into());
    push("changes(service_up[20m:1m])".into());
    push("stddev_over_time(deriv(node_temp_celsius[5m])[10m:1m])".into());
    rv.push("rate(http_requests_total[1m])[5m:1m]".into());
    rv.push("node_temp_celsius[3m:30s]".into());

    // Ordered results.
    for inner in [
        "node_temp_celsius",
        "rate(http_requests_total[5m])",
        "sum by (job) (rate(http_requests_total[5m]))",
    ] {
        push(format!("sort({inner})"));
        push(format!("sort_desc({inner})"));
    }

    // Composites.
    push("sum by (job) (increase(http_requests_total[10m])) / on(job) group_left sum by (job) (increase(request_duration_seconds_count[10m]))".into());
    push("avg by (zone) (avg_over_time(node_temp_celsius[5m])) > 0".into());
    push("count by (job) (service_up == 0)".into());
    push("sum without (le) (rate(request_duration_seconds_bucket[5m]))".into());
    push("max by (job) (queue_depth) - min by (job) (queue_depth)".into());
    push("abs(delta(node_temp_celsius[10m])) > 1".into());
    push("group by (job) (http_requests_total)".into());
    push("count(count by (job, instance) (http_requests_total))".into());
    push("stddev by (zone) (node_temp_celsius)".into());
    push("1 - avg by (job) (service_up)".into());

    // Dedupe, keeping the first occurrence's position.
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for (q, range_vector) in qs
        .into_iter()
        .map(|q| (q, false))
        .chain(rv.into_iter().map(|q| (q, true)))
    {
        if seen.insert(q.clone()) {
            let ordered = q.starts_with("sort(") || q.starts_with("sort_desc(");
            out.push(Query {
                q,
                ordered,
                range_vector,
            });
        }
    }
    out
}

// --------------------------------------------------------------- comparison

#[derive(Clone, Debug)]
enum Answer {
    /// Transport error, non-JSON body, or `status: error`.
    Error(String),
    Scalar(i64, f64),
    Str(i64, String),
    Vector(Vec<(Metric, i64, f64)>),
    Matrix(Vec<(Metric, Vec<(i64, f64)>)>),
}

fn parse_value(v: &Value) -> Option<f64> {
    let s = v.as_str()?;
    Some(match s {
        "NaN" => f64::NAN,
        "+Inf" | "Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        _ => s.parse().ok()?,
    })
}

fn parse_ts(v: &Value) -> Option<i64> {
    Some((v.as_f64()? * 1000.0).round() as i64)
}

fn parse_point(p: &Value) -> Option<(i64, f64)> {
    Some((parse_ts(p.get(0)?)?, parse_value(p.get(1)?)?))
}

fn parse_metric(m: &Value) -> Option<Metric> {
    m.as_object()?
        .iter()
        .map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
        .collect()
}

fn parse_answer(r: std::io::Result<Response>) -> Answer {
    let r = match r {
        Ok(r) => r,
        Err(e) => return Answer::Error(format!("transport: {e}")),
    };
    let Ok(j) = serde_json::from_slice::<Value>(&r.body) else {
        return Answer::Error(format!(
            "status {} non-JSON: {}",
            r.status,
            trunc(&r.text(), 300)
        ));
    };
    if j["status"] != "success" {
        return Answer::Error(format!(
            "status {} {}: {}",
            r.status, j["errorType"], j["error"]
        ));
    }
    if r.status != 200 {
        return Answer::Error(format!("status {} with success body", r.status));
    }
    let d = &j["data"];
    let bad =
        |what: &str| Answer::Error(format!("malformed {what}: {}", trunc(&j.to_string(), 300)));
    match d["resultType"].as_str() {
        Some("scalar") => match parse_point(&d["result"]) {
            Some((t, v)) => Answer::Scalar(t, v),
            None => bad("scalar"),
        },
        Some("string") => match (parse_ts(&d["result"][0]), d["result"][1].as_str()) {
            (Some(t), Some(s)) => Answer::Str(t, s.to_string()),
            _ => bad("string"),
        },
        Some("vector") => {
            let Some(arr) = d["result"].as_array() else {
                return bad("vector");
            };
            let mut out = Vec::new();
            for s in arr {
                match (parse_metric(&s["metric"]), parse_point(&s["value"])) {
                    (Some(m), Some((t, v))) => out.push((m, t, v)),
                    _ => return bad("vector element"),
                }
            }
            Answer::Vector(out)
        }
        Some("matrix") => {
            let Some(arr) = d["result"].as_array() else {
                return bad("matrix");
            };
            let mut out = Vec::new();
            for s in arr {
                let m = parse_metric(&s["metric"]);
                let pts: Option<Vec<(i64, f64)>> = s["values"]
                    .as_array()
                    .map(|a| a.iter().map(parse_point).collect())
                    .unwrap_or(Some(Vec::new()));
                match (m, pts) {
                    (Some(m), Some(p)) => out.push((m, p)),
                    _ => return bad("matrix element"),
                }
            }
            Answer::Matrix(out)
        }
        _ => bad("resultType"),
    }
}

fn trunc(s: &str, n: usize) -> String {
    if s.len() <= n {
        return s.to_string();
    }
    let mut i = n;
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    format!("{}… ({} bytes)", &s[..i], s.len())
}

fn close(a: f64, b: f64) -> bool {
    if a.is_nan() || b.is_nan() {
        return a.is_nan() && b.is_nan();
    }
    if a.is_infinite() || b.is_infinite() {
        return a == b;
    }
    (a - b).abs() <= REL_TOL * a.abs().max(b.abs())
}

fn fmt_metric(m: &Metric) -> String {
    let inner: Vec<String> = m.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{{}}}", inner.join(","))
}

/// `None` if equal, else a one-line reason.
fn compare(want: &Answer, got: &Answer, ordered: bool) -> Option<String> {
    use Answer::*;
    match (want, got) {
        (Error(_), Error(_)) => None,
        (Error(e), _) => Some(format!("only the reference failed: {e}")),
        (_, Error(e)) => Some(format!("only the target failed: {e}")),
        (Scalar(t1, v1), Scalar(t2, v2)) => {
            (t1 != t2 || !close(*v1, *v2)).then(|| format!("scalar ({t1}, {v1}) vs ({t2}, {v2})"))
        }
        (Str(t1, s1), Str(t2, s2)) => (t1 != t2 || s1 != s2).then(|| "string differs".into()),
        (Vector(a), Vector(b)) => {
            let index = |v: &[(Metric, i64, f64)]| -> Result<BTreeMap<Metric, (i64, f64)>, String> {
                let mut m = BTreeMap::new();
                for (l, t, x) in v {
                    if m.insert(l.clone(), (*t, *x)).is_some() {
                        return Err(fmt_metric(l));
                    }
                }
                Ok(m)
            };
            let (ia, ib) = match (index(a), index(b)) {
                (Ok(x), Ok(y)) => (x, y),
                (Err(l), _) => return Some(format!("reference has duplicate series {l}")),
                (_, Err(l)) => return Some(format!("target has duplicate series {l}")),
            };
            let mut why = Vec::new();
            for (l, (t, x)) in &ia {
                match ib.get(l) {
                    None => why.push(format!("missing {}", fmt_metric(l))),
                    Some((t2, x2)) if t2 != t || !close(*x, *x2) => {
                        why.push(format!("{}: ({t}, {x}) vs ({t2}, {x2})", fmt_metric(l)))
                    }
                    _ => {}
                }
            }
            for l in ib.keys().filter(|l| !ia.contains_key(*l)) {
                why.push(format!("unexpected {}", fmt_metric(l)));
            }
            if why.is_empty() && ordered {
                // Values must come in the same order (labels of ties may swap).
                let va: Vec<f64> = a.iter().map(|e| e.2).collect();
                let vb: Vec<f64> = b.iter().map(|e| e.2).collect();
                if va.iter().zip(&vb).any(|(x, y)| !close(*x, *y)) {
                    why.push(format!("order differs: {va:?} vs {vb:?}"));
                }
            }
            (!why.is_empty()).then(|| trunc(&why.join("; "), 600))
        }
        (Matrix(a), Matrix(b)) => {
            let index = |v: &[(Metric, Vec<(i64, f64)>)]| -> Result<BTreeMap<Metric, Vec<(i64, f64)>>, String> {
                let mut m = BTreeMap::new();
                for (l, p) in v {
                    if m.insert(l.clone(), p.clone()).is_some() {
                        return Err(fmt_metric(l));
                    }
                }
                Ok(m)
            };
            let (ia, ib) = match (index(a), index(b)) {
                (Ok(x), Ok(y)) => (x, y),
                (Err(l), _) => return Some(format!("reference has duplicate series {l}")),
                (_, Err(l)) => return Some(format!("target has duplicate series {l}")),
            };
            let mut why = Vec::new();
            for (l, pa) in &ia {
                let Some(pb) = ib.get(l) else {
                    why.push(format!("missing {} ({} points)", fmt_metric(l), pa.len()));
                    continue;
                };
                let ta: Vec<i64> = pa.iter().map(|p| p.0).collect();
                let tb: Vec<i64> = pb.iter().map(|p| p.0).collect();
                if ta != tb {
                    let only_a: Vec<i64> = ta.iter().filter(|t| !tb.contains(t)).copied().collect();
                    let only_b: Vec<i64> = tb.iter().filter(|t| !ta.contains(t)).copied().collect();
                    why.push(format!(
                        "{}: timestamps differ ({} vs {} points; only in reference {:?}; only in target {:?})",
                        fmt_metric(l),
                        ta.len(),
                        tb.len(),
                        &only_a[..only_a.len().min(5)],
                        &only_b[..only_b.len().min(5)]
                    ));
                    continue;
                }
                if let Some(((t, x), (_, y))) =
                    pa.iter().zip(pb).find(|((_, x), (_, y))| !close(*x, *y))
                {
                    why.push(format!("{} @ {t}: {x} vs {y}", fmt_metric(l)));
                }
            }
            for l in ib.keys().filter(|l| !ia.contains_key(*l)) {
                why.push(format!("unexpected {}", fmt_metric(l)));
            }
            (!why.is_empty()).then(|| trunc(&why.join("; "), 600))
        }
        _ => Some(format!("result type {} vs {}", kind(want), kind(got))),
    }
}

fn kind(a: &Answer) -> &'static str {
    match a {
        Answer::Error(_) => "error",
        Answer::Scalar(..) => "scalar",
        Answer::Str(..) => "string",
        Answer::Vector(_) => "vector",
        Answer::Matrix(_) => "matrix",
    }
}

fn show(a: &Answer) -> String {
    let s = match a {
        Answer::Error(e) => format!("error {e}"),
        Answer::Scalar(t, v) => format!("scalar ({t}, {v})"),
        Answer::Str(t, s) => format!("string ({t}, {s:?})"),
        Answer::Vector(v) => {
            let parts: Vec<String> = v
                .iter()
                .map(|(m, t, x)| format!("{} ({t}, {x})", fmt_metric(m)))
                .collect();
            format!("vector[{}] {}", v.len(), parts.join(" "))
        }
        Answer::Matrix(v) => {
            let parts: Vec<String> = v
                .iter()
                .map(|(m, p)| {
                    format!(
                        "{} {}pts {:?}",
                        fmt_metric(m),
                        p.len(),
                        &p[..p.len().min(3)]
                    )
                })
                .collect();
            format!("matrix[{}] {}", v.len(), parts.join(" "))
        }
    };
    trunc(&s, 700)
}

// --------------------------------------------------------------------- test

/// Series labels (minus `__name__`) of an instant query on the reference.
fn reference_series(prom: &str, q: &str, t: i64) -> BTreeSet<String> {
    let path = Eval::Instant(t).path(q);
    match parse_answer(get(&format!("{prom}{path}"))) {
        Answer::Vector(v) => v
            .into_iter()
            .map(|(mut m, _, _)| {
                m.remove("__name__");
                fmt_metric(&m)
            })
            .collect(),
        other => panic!("reference {q} at {t}: {}", show(&other)),
    }
}

/// The data really has the features the comparison is meant to cover, as
/// seen by Prometheus: a gap, a staleness marker, late starts, early ends,
/// counter resets.
fn check_reference_data(prom: &str, at: impl Fn(i64) -> i64) {
    let gap = r#"{instance="a:9100",job="node",zone="cpu0"}"#;
    let stale = r#"{instance="b:9100",job="node",zone="ambient"}"#;
    let temps = |s| reference_series(prom, "node_temp_celsius", at(s));
    assert!(temps(613).contains(gap) && temps(613).contains(stale));
    assert!(!temps(1513).contains(gap), "gap not seen by Prometheus");
    assert!(temps(1813).contains(gap));
    assert!(
        !temps(1813).contains(stale),
        "staleness marker not honoured"
    );
    assert!(temps(2713).contains(stale));
    let late = r#"{code="200",instance="c:9090",job="api",method="GET"}"#;
    let ended = r#"{code="500",instance="b:9090",job="db",method="POST"}"#;
    let reqs = |s| reference_series(prom, "http_requests_total", at(s));
    assert!(!reqs(613).contains(late) && reqs(613).contains(ended));
    assert!(reqs(2713).contains(late) && !reqs(2713).contains(ended));
    let resets = reference_series(prom, "resets(http_requests_total[30m]) > 0", at(3583));
    assert!(resets.len() >= 2, "counter resets: {resets:?}");
    let hist_end = reference_series(prom, "request_duration_seconds_count", at(3583));
    assert_eq!(hist_end.len(), 3, "histogram ending early: {hist_end:?}");
}

/// One evaluation of a query: instant at `time`, or range.
#[derive(Clone, Copy, Debug)]
enum Eval {
    Instant(i64),
    Range {
        start: i64,
        end: i64,
        step: &'static str,
    },
}

impl Eval {
    fn path(&self, q: &str) -> String {
        match *self {
            Eval::Instant(t) => format!("/api/v1/query?query={}&time={}", enc(q), t / 1000),
            Eval::Range { start, end, step } => format!(
                "/api/v1/query_range?query={}&start={}&end={}&step={step}",
                enc(q),
                start / 1000,
                end / 1000
            ),
        }
    }
    fn label(&self, t0: i64) -> String {
        match *self {
            Eval::Instant(t) => format!("instant t0+{}s", (t - t0) / 1000),
            Eval::Range { start, end, step } => format!(
                "range t0+{}s..t0+{}s step {step}",
                (start - t0) / 1000,
                (end - t0) / 1000
            ),
        }
    }
}

#[test]
fn promql_matches_prometheus() {
    differential(false);
}

/// The same data and queries on a 3-node cluster (RF 3; written to node 1,
/// queried on node 2): the cluster answers as Prometheus does, so as the
/// single node does.
#[test]
fn promql_on_a_cluster_matches_prometheus() {
    differential(true);
}

fn differential(cluster: bool) {
    let prom_bin = std::env::var("PROMETHEUS_BIN").unwrap_or("/usr/bin/prometheus".into());
    if !Path::new(&prom_bin).exists() {
        eprintln!(
            "\n!!!!!! SKIPPING promql_matches_prometheus: {prom_bin} not found \
             (apt-get install prometheus; the Makefile does) !!!!!!\n"
        );
        return;
    }
    let self_check = std::env::var("PROMQL_DIFF_SELF_CHECK").is_ok_and(|v| v == "1");
    let seed: u64 = std::env::var("PROMQL_DIFF_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_240_607);
    let filter = std::env::var("PROMQL_DIFF_FILTER").ok();
    let started = Instant::now();

    let dir = tempfile::Builder::new()
        .prefix("cairn-diff-")
        .tempdir()
        .expect("tempdir");
    let (_prom_guard, prom) = spawn_prometheus(&prom_bin, &dir.path().join("prom"));
    // The target: Cairn, or a second Prometheus in self-check mode.
    let mut _cairn = Vec::new();
    let mut _prom2 = None;
    // Where writes go (the cluster: node 1) and every node to flush.
    let mut write_to = None;
    let mut flush = Vec::new();
    let (target_name, target) = if self_check {
        let (g, u) = spawn_prometheus(&prom_bin, &dir.path().join("prom2"));
        _prom2 = Some(g);
        ("prometheus#2", u)
    } else if cluster {
        let nodes = spawn_cluster(3, 16, 3, "");
        write_to = Some(nodes[0].url());
        flush = nodes.iter().map(|n| n.url()).collect();
        let u = nodes[1].url();
        _cairn = nodes;
        ("cairn cluster (node 2 of 3)", u)
    } else {
        let s = TestServer::spawn(ServerOpts::default());
        let u = s.url();
        _cairn.push(s);
        ("cairn", u)
    };
    if flush.is_empty() {
        flush.push(target.clone());
    }
    let write_to = write_to.unwrap_or_else(|| target.clone());

    // Fail fast (one line, not thousands of mismatches) without a query API.
    let probe = get(&format!("{target}/api/v1/query?query=1"));
    assert!(
        probe.as_ref().is_ok_and(|r| r.status == 200),
        "{target_name} does not answer /api/v1/query: {:?}",
        probe.map(|r| (r.status, trunc(&r.text(), 200)))
    );

    // Data: [t0, t0 + 60m), t0 a multiple of 5 minutes, ending before now.
    let now = now_ms();
    let t0 = now / (5 * MIN) * (5 * MIN) - 60 * MIN;
    let data = generate(seed, t0);
    let n_samples: usize = data.series.iter().map(|s| s.1.len()).sum();
    for (i, req) in batches(&data, t0).iter().enumerate() {
        for (name, url) in [("prometheus", &prom), (target_name, &write_to)] {
            let (st, body) = remote_write(url, None, req);
            assert!(
                st == 200 || st == 204,
                "remote write batch {i} to {name}: status {st}: {body}"
            );
        }
    }
    eprintln!(
        "differential: seed {seed}, t0 {t0} ({}), {} series, {n_samples} samples written to prometheus and {target_name}",
        rfc3339(t0),
        data.series.len()
    );

    // Evaluation times ≡ 13 s (mod 30 s), see the header.
    let at = |s: i64| t0 + s * SEC;
    check_reference_data(&prom, at);
    let evals = [
        Eval::Instant(at(613)),
        Eval::Instant(at(1513)), // inside the gap of node_temp_celsius{cpu0,a}
        Eval::Instant(at(1813)), // after the staleness marker of ambient,b
        Eval::Instant(at(2713)), // after the late starts, before the early ends
        Eval::Instant(at(3583)), // the end: early-ended series are gone
        Eval::Range {
            start: at(613),
            end: at(3583),
            step: "30s",
        },
        Eval::Range {
            start: at(1213),
            end: at(3013),
            step: "60",
        },
    ];
    let mut qs = queries(at(1813) / 1000);
    let n_distinct = qs.len();
    if let Some(f) = &filter {
        qs.retain(|q| q.q.contains(f.as_str()));
    }
    let jobs: Vec<(usize, Eval)> = qs
        .iter()
        .enumerate()
        .flat_map(|(i, q)| {
            evals
                .iter()
                .filter(move |e| !(q.range_vector && matches!(e, Eval::Range { .. })))
                .map(move |e| (i, *e))
        })
        .collect();
    eprintln!(
        "differential: {n_distinct} distinct queries, {} evaluations on each server",
        jobs.len()
    );

    // Cairn answers every evaluation twice: from the in-memory head, then
    // again after `POST /admin/v1/flush` has persisted the data to disk.
    let phases: &[&str] = if self_check {
        &["head"]
    } else {
        &["head", "after flush"]
    };
    struct Outcome {
        phase: usize,
        job: usize,
        mismatch: Option<String>,
        both_err: Option<(String, String)>,
        want: Answer,
        got: Answer,
    }
    let results: Mutex<Vec<Outcome>> = Mutex::new(Vec::new());
    for (phase, phase_name) in phases.iter().enumerate() {
        if phase > 0 {
            for url in &flush {
                let r = post(&format!("{url}/admin/v1/flush"), ADMIN, &[]).expect("POST flush");
                assert_eq!(r.status, 200, "flush: {}", r.text());
            }
        }
        let next = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| loop {
                    let j = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&(qi, ev)) = jobs.get(j) else { break };
                    let q = &qs[qi];
                    let path = ev.path(&q.q);
                    let want = parse_answer(get(&format!("{prom}{path}")));
                    let got = parse_answer(get(&format!("{target}{path}")));
                    let ordered = q.ordered && matches!(ev, Eval::Instant(_));
                    let mismatch = compare(&want, &got, ordered);
                    let both_err = match (&want, &got) {
                        (Answer::Error(a), Answer::Error(b)) => Some((a.clone(), b.clone())),
                        _ => None,
                    };
                    results.lock().expect("results").push(Outcome {
                        phase,
                        job: j,
                        mismatch,
                        both_err,
                        want,
                        got,
                    });
                });
            }
        });
        eprintln!(
            "differential: pass {phase_name} done at {:.1}s",
            started.elapsed().as_secs_f64()
        );
    }
    let mut results = results.into_inner().expect("results");
    results.sort_by_key(|o| (o.phase, o.job));

    // Queries whose reference answer is empty (or an error) at every
    // evaluation test nothing: keep them few.
    let mut has_data = vec![false; qs.len()];
    for o in &results {
        let non_empty = match &o.want {
            Answer::Error(_) => false,
            Answer::Scalar(..) | Answer::Str(..) => true,
            Answer::Vector(v) => !v.is_empty(),
            Answer::Matrix(m) => m.iter().any(|s| !s.1.is_empty()),
        };
        has_data[jobs[o.job].0] |= non_empty;
    }
    let empty: Vec<&str> = qs
        .iter()
        .zip(&has_data)
        .filter(|(_, d)| !**d)
        .map(|(q, _)| q.q.as_str())
        .collect();
    eprintln!(
        "differential: {} queries have an empty reference answer everywhere: {empty:?}",
        empty.len()
    );

    let mut mismatched_queries = BTreeSet::new();
    let mut both_err_queries = BTreeSet::new();
    let mut n_mismatch = 0;
    for o in &results {
        let (qi, ev) = jobs[o.job];
        let q = &qs[qi].q;
        if let Some(why) = &o.mismatch {
            n_mismatch += 1;
            mismatched_queries.insert(qi);
            eprintln!(
                "MISMATCH {q}\n  at {} ({}): {why}\n  prometheus: {}\n  {target_name}: {}",
                ev.label(t0),
                phases[o.phase],
                show(&o.want),
                show(&o.got)
            );
        }
        if let Some((a, b)) = &o.both_err {
            if both_err_queries.insert(qi) {
                eprintln!(
                    "both errored: {q} ({}):\n  prometheus: {}\n  {target_name}: {}",
                    ev.label(t0),
                    trunc(a, 200),
                    trunc(b, 200)
                );
            }
        }
    }
    let n_eval = results.len();
    eprintln!(
        "differential: {} queries ({n_eval} evaluations in {} passes) against prometheus and {target_name}: \
         {} evaluations equal, {n_mismatch} mismatched ({} queries); \
         {} queries errored on both sides; {:.1}s",
        qs.len(),
        phases.len(),
        n_eval - n_mismatch,
        mismatched_queries.len(),
        both_err_queries.len(),
        started.elapsed().as_secs_f64()
    );
    if filter.is_none() {
        assert!(n_distinct >= 300, "only {n_distinct} distinct queries");
        assert!(
            empty.len() <= 25,
            "{} queries have no data in the reference answer: {empty:?}",
            empty.len()
        );
    }
    assert_eq!(
        n_mismatch,
        0,
        "{n_mismatch} of {n_eval} evaluations differ between prometheus and {target_name} \
         ({} distinct queries); see MISMATCH lines above",
        mismatched_queries.len()
    );
    // Errors on both sides are allowed only for the few queries meant to fail.
    assert!(
        both_err_queries.len() <= 5,
        "{} queries errored on both sides; see above",
        both_err_queries.len()
    );
    // The cluster answered aggregations from partials the nodes computed.
    if cluster && !self_check {
        let m = get(&format!("{target}/metrics")).expect("metrics").text();
        let value = |name: &str| -> f64 {
            m.lines()
                .find(|l| l.starts_with(&format!("{name} ")))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no {name} in /metrics"))
        };
        assert!(value("cairn_cluster_aggregations_pushed_down_total") > 0.0);
        value("cairn_cluster_aggregation_fallback_shards_total");
    }
}

/// `/api/v1/series` honours start/end to the series' own samples, as
/// Prometheus does, and label values with `match[]` count the same series
/// (issue 12): a target stopped 27 s ago is not listed for the last 10 s, in
/// the head and after a flush. (Prometheus 2.42's label values with
/// `match[]` come from its head's index and list it still.)
#[test]
fn series_time_ranges_match_prometheus() {
    let prom_bin = prometheus_bin().expect("no prometheus binary (make deps installs it)");
    let dir = tempfile::tempdir().unwrap();
    let (_prom_guard, prom) = spawn_prometheus(&prom_bin, &dir.path().join("prom"));
    let cairn = TestServer::spawn(ServerOpts::default());
    let now = now_ms() / 1000 * 1000;
    // (instance, last sample's age in ms): samples every 5 s for 40 minutes up to it.
    let targets = [("live", 1_000), ("stopped", 27_000), ("gone", 30 * MIN)];
    let mut ts = Vec::new();
    for (inst, age) in targets {
        let last = now - age;
        let samples: Vec<(i64, f64)> = (0..480)
            .map(|k| (last - 5_000 * k, k as f64))
            .rev()
            .collect();
        ts.push(series(
            &[("__name__", "up"), ("instance", inst), ("job", "j")],
            &samples,
        ));
    }
    let req = write_request(ts);
    for url in [&prom, &cairn.url()] {
        let (st, body) = remote_write(url, None, &req);
        assert!(st == 200 || st == 204, "{url}: {st} {body}");
    }
    let ranges = [
        (now - 10_000, now),
        (now - 30_000, now),
        (now - 20 * MIN, now - 5 * MIN),
        (now - 35 * MIN, now - 31 * MIN),
        (now - 60 * MIN, now - 45 * MIN),
    ];
    let listed = |base: &str, start: i64, end: i64| -> (BTreeSet<String>, BTreeSet<String>) {
        let q = format!(
            "start={}&end={}&match[]={}",
            start as f64 / 1e3,
            end as f64 / 1e3,
            enc("up")
        );
        let series = api_data(base, None, &format!("/api/v1/series?{q}"))
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["instance"].as_str().unwrap_or("").to_string())
            .collect();
        let values = api_data(base, None, &format!("/api/v1/label/instance/values?{q}"))
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        (series, values)
    };
    for when in ["in the head", "after a flush"] {
        for (start, end) in ranges {
            let (want, prom_values) = listed(&prom, start, end);
            let (got, values) = listed(&cairn.url(), start, end);
            assert_eq!(
                got, want,
                "{when}: series in [{start}, {end}] (now {now}): Cairn lists {got:?}, Prometheus {want:?}"
            );
            // Label values with match[] count the same series as /series
            // (Prometheus 2.42 answers them from its head's index, whatever
            // the samples' times).
            assert_eq!(
                values, got,
                "{when}: label values in [{start}, {end}] (Prometheus 2.42 lists {prom_values:?})"
            );
        }
        let r = post(&format!("{}/admin/v1/flush", cairn.url()), ADMIN, &[]).unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
    }
    // The point of it: the stopped target is not listed for the last 10 s.
    assert_eq!(
        listed(&cairn.url(), now - 10_000, now).0,
        ["live".to_string()].into_iter().collect()
    );
}

// ------------------------------------------------------------ status/tsdb

/// Series for the `status/tsdb` comparison: metrics `cm_0`..`cm_11` with
/// 1, 3, …, 23 series, each series with a unique `inst`, and `job` j0/j1
/// alternating — so each ranked list has no tie at Prometheus's cut of 10
/// (checked against the counts of the data itself before comparing).
fn tsdb_status_data(t: i64) -> Vec<TimeSeries> {
    let mut out = Vec::new();
    for k in 0..12 {
        let name = format!("cm_{k}");
        for i in 0..(2 * k + 1) {
            let inst = format!("k{k}-{i}");
            let job = format!("j{}", i % 2);
            out.push(series(
                &[("__name__", &name), ("inst", &inst), ("job", &job)],
                &[(t + i as i64, (k * 100 + i) as f64)],
            ));
        }
    }
    out
}

/// A ranked `[{"name","value"}]` list as (value, name) pairs sorted by
/// value (largest first) then name: Prometheus leaves the order of ties
/// to its heap.
fn ranked(v: &Value, what: &str) -> Vec<(i64, String)> {
    let mut out: Vec<(i64, String)> = v
        .as_array()
        .unwrap_or_else(|| panic!("{what}: not an array: {v}"))
        .iter()
        .map(|e| {
            (
                e["value"].as_i64().unwrap_or_else(|| panic!("{what}: {e}")),
                e["name"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{what}: {e}"))
                    .to_string(),
            )
        })
        .collect();
    out.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    out
}

/// The full ranking of `counts` has no tie across the 10th place, so the
/// top 10 is the same set whichever way ties are broken.
fn assert_no_tie_at_cut(mut counts: Vec<u64>, what: &str) {
    counts.sort_unstable_by(|a, b| b.cmp(a));
    if counts.len() > 10 {
        assert_ne!(
            counts[9], counts[10],
            "{what}: the data ties at the cut of 10: {counts:?}"
        );
    }
}

fn status_tsdb_differential(cluster: bool) {
    let Some(prom_bin) = prometheus_bin() else {
        eprintln!("\n!!!!!! SKIPPING status_tsdb: no Prometheus binary (apt-get install prometheus) !!!!!!\n");
        return;
    };
    let dir = tempfile::Builder::new()
        .prefix("cairn-tsdb-")
        .tempdir()
        .expect("tempdir");
    let (_prom_guard, prom) = spawn_prometheus(&prom_bin, &dir.path().join("prom"));
    let nodes: Vec<TestServer> = if cluster {
        spawn_cluster(3, 16, 3, "")
    } else {
        vec![TestServer::spawn(ServerOpts::default())]
    };
    let write_to = nodes[0].url();
    let target = nodes[nodes.len() - 1].url();

    let t = now_ms() - 60_000;
    let data = tsdb_status_data(t);
    let req = write_request(data.clone());
    for (name, url) in [("prometheus", &prom), ("cairn", &write_to)] {
        let (st, body) = remote_write(url, None, &req);
        assert!(
            st == 200 || st == 204,
            "remote write to {name}: {st}: {body}"
        );
    }
    // Another tenant's series in Cairn only: never in the default tenant's figures.
    let other = write_request(vec![series(
        &[("__name__", "cm_0"), ("inst", "elsewhere"), ("job", "j0")],
        &[(t, 1.0)],
    )]);
    let (st, body) = remote_write(&write_to, Some("someone-else"), &other);
    assert!(
        st == 200 || st == 204,
        "remote write of another tenant: {st}: {body}"
    );

    // The data's own counts: no ties at the cut.
    let mut pairs: BTreeMap<String, u64> = BTreeMap::new();
    let mut values: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for s in &data {
        for l in &s.labels {
            let (n, v) = (
                String::from_utf8_lossy(&l.name).into_owned(),
                String::from_utf8_lossy(&l.value).into_owned(),
            );
            *pairs.entry(format!("{n}={v}")).or_default() += 1;
            values.entry(n).or_default().insert(v);
        }
    }
    assert_no_tie_at_cut(
        pairs.values().copied().collect(),
        "seriesCountByLabelValuePair",
    );
    assert_no_tie_at_cut(
        pairs
            .iter()
            .filter(|(k, _)| k.starts_with("__name__="))
            .map(|(_, v)| *v)
            .collect(),
        "seriesCountByMetricName",
    );
    assert_no_tie_at_cut(
        values.values().map(|v| v.len() as u64).collect(),
        "labelValueCountByLabelName",
    );

    let want = api_data(&prom, None, "/api/v1/status/tsdb");
    let got = api_data(&target, None, "/api/v1/status/tsdb");
    eprintln!("status/tsdb: prometheus {want}\ncairn {got}");
    assert_eq!(
        want["headStats"]["numSeries"],
        data.len(),
        "Prometheus holds the data"
    );
    for field in ["numSeries", "numLabelPairs"] {
        assert_eq!(
            got["headStats"][field], want["headStats"][field],
            "headStats.{field}: cairn {got} prometheus {want}"
        );
    }
    for field in [
        "seriesCountByMetricName",
        "labelValueCountByLabelName",
        "memoryInBytesByLabelName",
        "seriesCountByLabelValuePair",
    ] {
        let (w, g) = (ranked(&want[field], field), ranked(&got[field], field));
        assert!(!w.is_empty(), "{field}: Prometheus lists nothing");
        assert_eq!(g, w, "{field}: cairn (left) vs prometheus (right)");
        // Cairn's own order is already by value, then name.
        assert_eq!(ranked(&got[field], field), g);
        let own: Vec<(i64, String)> = got[field]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["value"].as_i64().unwrap(),
                    e["name"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(own, g, "{field}: cairn's order");
    }
    assert_eq!(got["totalSeries"], data.len());
    // The other tenant sees its one series only.
    let theirs = api_data(&target, Some("someone-else"), "/api/v1/status/tsdb");
    assert_eq!(theirs["totalSeries"], 1, "{theirs}");
}

/// `/api/v1/status/tsdb` agrees with Prometheus 2.42 field by field on the
/// same data (the fields both have: the four ranked lists and
/// headStats.numSeries/numLabelPairs).
#[test]
fn status_tsdb_matches_prometheus() {
    status_tsdb_differential(false);
}

/// The same on a 3-node cluster at RF 3 (written to node 1, read on node
/// 3): each series counts once, not once per replica.
#[test]
fn status_tsdb_on_a_cluster_matches_prometheus() {
    status_tsdb_differential(true);
}

// -------------------------------------------------------- downsampled vs raw

/// A range query's series, each with its points.
type Matrix = Vec<(Metric, Vec<(i64, f64)>)>;

/// Downsampled vs raw (issue 14), over the generated data above —
/// counters with resets, gauges with decimals and negative values, classic
/// histograms, gaps, staleness markers, jittered scrapes, series starting
/// late and ending early (the same data `promql_matches_prometheus` checks
/// raw answers of against a real Prometheus) — plus steady counters, one
/// of them reset on a window's first scrape. One sample in 40 is held back
/// and written after a first downsampling pass: late samples, whose
/// windows are computed again. On a node keeping 1m rollups, range queries
/// evaluated on window edges (step 5m) and answered from the rollups
/// (`max_source_resolution=1m`, `X-Cairn-Resolution: 1m`) give raw's
/// answers (`max_source_resolution=raw`): the same series and timestamps,
/// values within 1e-9 relative for the `*_over_time` functions, `resets`
/// and `sum()` of a bare selector (not inflated), within 1 % for `rate`
/// and `increase` over ≥ 4R of steady counters and for `histogram_quantile`
/// of bucket increases; a range under 2R is answered from raw.
#[test]
fn downsampled_answers_match_raw() {
    let cfg = "storage:\n  namespaces: [\"1m:30d\"]\n";
    let s = TestServer::spawn(ServerOpts::default().config(cfg));
    let base = s.url();
    let now = now_ms();
    let t0 = now / (5 * MIN) * (5 * MIN) - 60 * MIN;
    let mut data = generate(20_240_607, t0);
    // Steady counters (+7 and +3 a scrape), and one reset on the first
    // scrape of the window starting at 30m.
    let mut rng = Rng::new(7);
    for (k, step) in [("a", 7.0), ("b", 3.0)] {
        let samples = times(&mut rng, t0, 15 * SEC, 0, 60 * MIN)
            .into_iter()
            .enumerate()
            .map(|(i, t)| (t, COUNTER_BASE + step * i as f64))
            .collect();
        data.add(&[("__name__", "steady_total"), ("k", k)], samples);
    }
    let samples = times(&mut rng, t0, 15 * SEC, 0, 60 * MIN)
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            (
                t,
                if t < t0 + 30 * MIN {
                    COUNTER_BASE + 5.0 * i as f64
                } else {
                    5.0 * i as f64 - 590.0
                },
            )
        })
        .collect();
    data.add(&[("__name__", "steady_total"), ("k", "reset")], samples);
    // Hold one sample in 40 back (never a series' first).
    let mut late = Gen { series: Vec::new() };
    for (l, samples) in &mut data.series {
        let mut kept = Vec::new();
        let mut held = Vec::new();
        for (i, p) in samples.iter().enumerate() {
            if i > 0 && rng.range(0, 40) == 0 {
                held.push(*p);
            } else {
                kept.push(*p);
            }
        }
        *samples = kept;
        if !held.is_empty() {
            late.series.push((l.clone(), held));
        }
    }
    for (i, req) in batches(&data, t0).iter().enumerate() {
        let (st, body) = remote_write(&base, None, req);
        assert!(st == 204, "batch {i}: {st} {body}");
    }
    let flush = || {
        let r = request("POST", &format!("{base}/admin/v1/flush"), ADMIN, &[]).expect("flush");
        assert_eq!(r.status, 200, "{}", r.text());
    };
    flush();
    let n_late: usize = late.series.iter().map(|s| s.1.len()).sum();
    for req in batches(&late, t0) {
        let (st, body) = remote_write(&base, None, &req);
        assert!(st == 204, "late: {st} {body}");
    }
    flush();
    let (start, end) = ((t0 + 10 * MIN) / 1000, (t0 + 55 * MIN) / 1000);
    // Rates and increases are compared where their range lies inside the
    // data (a counter starting inside it is extrapolated by raw, not by
    // the rollups: not steady).
    let close_start = (t0 + 25 * MIN) / 1000;
    let range = |q: &str, res: &str| -> (Option<String>, Matrix) {
        let from = if q.starts_with("histogram") {
            close_start + 10 * 60
        } else if q.starts_with("rate") || q.starts_with("increase") {
            close_start
        } else {
            start
        };
        let url = format!(
            "{base}/api/v1/query_range?query={}&start={from}&end={end}&step=300&max_source_resolution={res}",
            enc(q)
        );
        let r = get(&url);
        let header = r
            .as_ref()
            .ok()
            .and_then(|r| r.header("x-cairn-resolution").map(str::to_string));
        match parse_answer(r) {
            Answer::Matrix(mut m) => {
                m.sort_by(|a, b| a.0.cmp(&b.0));
                (header, m)
            }
            other => panic!("{q} ({res}): {}", show(&other)),
        }
    };
    let exact = [
        "sum_over_time(node_temp_celsius[5m])",
        "count_over_time(node_temp_celsius[10m])",
        "min_over_time(node_temp_celsius[10m])",
        "max_over_time(queue_depth[5m])",
        "avg_over_time(node_temp_celsius[10m])",
        "last_over_time(queue_depth[5m])",
        "sum_over_time(service_up[15m])",
        "resets(http_requests_total[10m])",
        "resets(steady_total[15m])",
        "resets(request_duration_seconds_bucket[20m])",
        "sum(node_temp_celsius)",
        "sum by (job) (queue_depth)",
    ];
    let close = [
        // Not the one reset: a reset on the range's first sample adds the
        // value after it to the rollups' increase (the pair's increase is
        // the window's) where raw extrapolates from the samples inside.
        "rate(steady_total{k!=\"reset\"}[5m])",
        "increase(steady_total{k!=\"reset\"}[20m])",
        // Over 30m: the rollups' increase takes the pair across the range's
        // start edge as it is, raw extrapolates it from the average inside,
        // a difference of one scrape's observations in 120.
        "histogram_quantile(0.9, sum by (job, instance, le) (increase(request_duration_seconds_bucket[30m])))",
    ];
    let mut compared = 0;
    for (q, tol) in exact
        .iter()
        .map(|q| (q, 1e-9))
        .chain(close.iter().map(|q| (q, 0.01)))
    {
        let (res, coarse) = range(q, "1m");
        assert_eq!(res.as_deref(), Some("1m"), "{q}: answered from the rollups");
        let (_, raw) = range(q, "raw");
        assert!(!raw.is_empty(), "{q}: raw has series");
        assert_eq!(
            coarse.iter().map(|s| fmt_metric(&s.0)).collect::<Vec<_>>(),
            raw.iter().map(|s| fmt_metric(&s.0)).collect::<Vec<_>>(),
            "{q}: the same series"
        );
        for ((m, a), (_, b)) in coarse.iter().zip(&raw) {
            let ta: Vec<i64> = a.iter().map(|p| p.0).collect();
            let tb: Vec<i64> = b.iter().map(|p| p.0).collect();
            assert_eq!(ta, tb, "{q} {}: the same steps", fmt_metric(m));
            for (x, y) in a.iter().zip(b) {
                let ok =
                    (x.1 - y.1).abs() <= tol * y.1.abs().max(1.0) || (x.1.is_nan() && y.1.is_nan());
                assert!(
                    ok,
                    "{q} {} at {}: {} from rollups, {} raw",
                    fmt_metric(m),
                    x.0,
                    x.1,
                    y.1
                );
                compared += 1;
            }
        }
    }
    // Under 2R, raw answers.
    let (res, _) = range("sum_over_time(node_temp_celsius[1m])", "1m");
    assert_eq!(res.as_deref(), Some("raw"));
    eprintln!("downsampled vs raw: {compared} points compared, {n_late} samples written late");
    assert!(
        compared > 500 && n_late > 100,
        "{compared} points, {n_late} late"
    );
}
