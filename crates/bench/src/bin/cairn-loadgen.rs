//! `cairn-loadgen`: seeded remote-write load and PromQL query workloads
//! against any Prometheus-compatible URL.
//!
//! Run with: `cargo run --release -p cairn-bench --bin cairn-loadgen -- --help`

use cairn_bench::query::{self, QueryOptions};
use cairn_bench::send::{cpu_time, peak_rss_bytes, send_all, SendOptions};
use cairn_bench::workload::{Config, Kind, Workload};
use clap::{Args, Parser, Subcommand};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(Parser, Debug)]
#[command(
    name = "cairn-loadgen",
    about = "Seeded remote_write 1.0 load and PromQL query workloads",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    write: WriteArgs,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Send a remote_write workload (the default).
    Write(WriteArgs),
    /// Run the dashboard-like PromQL set as range queries.
    Query(QueryArgs),
}

#[derive(Args, Debug, Clone)]
struct WriteArgs {
    /// Remote-write endpoint.
    #[arg(long, default_value = "http://127.0.0.1:9201/api/v1/write")]
    url: String,
    /// Total active series.
    #[arg(long, default_value_t = 10_000)]
    series: usize,
    /// Samples per series (scrape rounds).
    #[arg(long, default_value_t = 30)]
    samples_per_series: usize,
    /// Scrape interval.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    scrape_interval: Duration,
    /// First round's time: unix seconds or milliseconds, or `now-2h`.
    /// Default: now minus samples × interval, so the data ends near now.
    #[arg(long)]
    start: Option<String>,
    /// Samples per request.
    #[arg(long, default_value_t = 2000)]
    batch_size: usize,
    /// Concurrent senders (shards; a target's series always use one shard).
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Extra header `Name:value` (repeatable), e.g. `X-Scope-OrgID:team-a`.
    #[arg(long = "header", value_parser = parse_header)]
    headers: Vec<(String, String)>,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    #[arg(long, value_enum, default_value_t = Kind::Node)]
    workload: Kind,
    /// Probability per target per round that it is replaced (pod churn).
    #[arg(long, default_value_t = 0.0)]
    churn: f64,
    /// Add a label with a unique value to every series.
    #[arg(long)]
    high_cardinality: bool,
    /// Probability that a histogram bucket with new observations carries an exemplar.
    #[arg(long, default_value_t = 0.05)]
    exemplar_ratio: f64,
    /// Scrape timestamp jitter (± milliseconds).
    #[arg(long, default_value_t = 2)]
    jitter_ms: i64,
    /// Backfill: send the data in blocks of this span, newest block first.
    #[arg(long, value_parser = parse_duration, num_args = 0..=1, default_missing_value = "2h")]
    backfill: Option<Duration>,
    /// Probability that a request is sent late, after up to 8 later ones.
    #[arg(long, default_value_t = 0.0)]
    out_of_order: f64,
    /// Retries of a request answered 429/5xx or failing in transport.
    #[arg(long, default_value_t = 3)]
    retries: u32,
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    timeout: Duration,
    /// Threads used to pre-encode requests before sending.
    #[arg(long)]
    gen_threads: Option<usize>,
    /// Only generate and encode; send nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print the report as one JSON line.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct QueryArgs {
    /// Base URL of the Prometheus HTTP API (without /api/v1).
    #[arg(long, default_value = "http://127.0.0.1:9201")]
    url: String,
    /// Which workload's queries to run.
    #[arg(long, value_enum, default_value_t = Kind::Mixed)]
    workload: Kind,
    /// End of the query ranges: unix seconds/ms or `now-…`. Default: now.
    #[arg(long)]
    end: Option<String>,
    /// Ranges as RANGE:STEP.
    #[arg(long, value_delimiter = ',', default_value = "1h:15s,24h:2m")]
    ranges: Vec<String>,
    /// Runs of each (query, range).
    #[arg(long, default_value_t = 10)]
    iterations: usize,
    #[arg(long, default_value_t = 2)]
    concurrency: usize,
    #[arg(long = "header", value_parser = parse_header)]
    headers: Vec<(String, String)>,
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    timeout: Duration,
    #[arg(long)]
    json: bool,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("duration {s:?} needs a unit (ms, s, m, h, d)"))?;
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("bad duration {s:?}"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86400.0,
        _ => return Err(format!("bad duration unit in {s:?}")),
    };
    Ok(Duration::from_secs_f64(secs))
}

fn parse_header(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once(':')
        .ok_or_else(|| format!("header {s:?} must be Name:value"))?;
    let (k, v) = (k.trim(), v.trim());
    hyper::header::HeaderName::from_bytes(k.as_bytes()).map_err(|e| format!("{k:?}: {e}"))?;
    hyper::header::HeaderValue::from_str(v).map_err(|e| format!("{v:?}: {e}"))?;
    Ok((k.to_string(), v.to_string()))
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Unix seconds, unix milliseconds (≥ 1e11), `now` or `now-<duration>`.
fn parse_time(s: &str) -> Result<i64, String> {
    if let Some(rest) = s.strip_prefix("now") {
        let back = match rest.strip_prefix('-') {
            Some(d) => parse_duration(d)?.as_millis() as i64,
            None if rest.is_empty() => 0,
            None => return Err(format!("bad time {s:?}")),
        };
        return Ok(now_ms() - back);
    }
    let n: f64 = s.parse().map_err(|_| format!("bad time {s:?}"))?;
    Ok(if n >= 1e11 {
        n as i64
    } else {
        (n * 1000.0) as i64
    })
}

#[derive(serde::Serialize)]
struct Report {
    url: String,
    workload: Kind,
    series: usize,
    samples_per_series: usize,
    targets: usize,
    start_ms: i64,
    end_ms: i64,
    requests: u64,
    samples: u64,
    samples_ok: u64,
    exemplars: u64,
    exemplars_ok: u64,
    non_2xx: u64,
    transport_errors: u64,
    retries: u64,
    first_error: Option<String>,
    status_counts: std::collections::BTreeMap<u16, u64>,
    body_bytes: u64,
    raw_bytes: u64,
    encode_s: f64,
    encode_cpu_s: f64,
    duration_s: f64,
    samples_per_s: f64,
    /// Generator CPU (user+sys) while sending.
    send_cpu_s: f64,
    /// Percent of one core the generator used while sending.
    send_cpu_pct: f64,
    gen_peak_rss_bytes: Option<u64>,
}

fn run_write(a: WriteArgs) -> Result<bool, String> {
    let url: hyper::Uri = a.url.parse().map_err(|e| format!("--url {}: {e}", a.url))?;
    if url.scheme_str() != Some("http") {
        return Err(format!("--url {}: only http:// is supported", a.url));
    }
    let interval_ms = a.scrape_interval.as_millis() as i64;
    if interval_ms <= 0 || a.series == 0 || a.samples_per_series == 0 {
        return Err("--series, --samples-per-series and --scrape-interval must be > 0".into());
    }
    let start_ms = match &a.start {
        Some(s) => parse_time(s)?,
        None => now_ms() - a.samples_per_series as i64 * interval_ms,
    };
    let cfg = Config {
        kind: a.workload,
        series: a.series,
        samples_per_series: a.samples_per_series,
        interval_ms,
        start_ms,
        seed: a.seed,
        churn: a.churn,
        high_cardinality: a.high_cardinality,
        exemplar_ratio: a.exemplar_ratio,
        jitter_ms: a.jitter_ms.min(interval_ms / 4),
        backfill_block_rounds: a
            .backfill
            .map(|d| ((d.as_millis() as i64 / interval_ms).max(1)) as usize),
        out_of_order: a.out_of_order,
    };
    let wl = Workload::new(cfg);
    let threads = a.gen_threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let (cpu0, t0) = (cpu_time(), Instant::now());
    let shards = wl.generate(a.concurrency.max(1), a.batch_size, threads);
    let (encode_s, encode_cpu_s) = (
        t0.elapsed().as_secs_f64(),
        (cpu_time() - cpu0).as_secs_f64(),
    );
    let reqs = shards.iter().flat_map(|s| &s.requests);
    let samples: u64 = reqs.clone().map(|r| r.samples as u64).sum();
    let exemplars: u64 = reqs.clone().map(|r| r.exemplars as u64).sum();
    let body_bytes: u64 = reqs.clone().map(|r| r.body.len() as u64).sum();
    let raw_bytes: u64 = reqs.clone().map(|r| r.raw_len as u64).sum();
    let n_requests = reqs.count() as u64;
    if !a.json {
        eprintln!(
            "encoded {samples} samples ({exemplars} exemplars) in {n_requests} requests: \
             {:.1} MB snappy ({:.1} MB raw) in {encode_s:.2}s",
            body_bytes as f64 / 1e6,
            raw_bytes as f64 / 1e6
        );
    }
    let (stats, elapsed, send_cpu) = if a.dry_run {
        (Default::default(), Duration::ZERO, Duration::ZERO)
    } else {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("starting the runtime: {e}"))?;
        let opts = SendOptions {
            url,
            headers: a.headers.clone(),
            retries: a.retries,
            max_phase_lag: 2,
            timeout: a.timeout,
        };
        let cpu1 = cpu_time();
        let (stats, elapsed) = rt.block_on(send_all(shards, opts));
        (stats, elapsed, cpu_time() - cpu1)
    };
    let dur = elapsed.as_secs_f64();
    let r = Report {
        url: a.url.clone(),
        workload: a.workload,
        series: a.series,
        samples_per_series: a.samples_per_series,
        targets: wl.targets(),
        start_ms,
        end_ms: wl.end_ms(),
        requests: stats.requests,
        samples,
        samples_ok: stats.samples_ok,
        exemplars,
        exemplars_ok: stats.exemplars_ok,
        non_2xx: stats.non_2xx,
        transport_errors: stats.transport_errors,
        retries: stats.retries,
        first_error: stats.first_error.clone(),
        status_counts: stats.status_counts.clone(),
        body_bytes,
        raw_bytes,
        encode_s,
        encode_cpu_s,
        duration_s: dur,
        samples_per_s: if dur > 0.0 {
            stats.samples_ok as f64 / dur
        } else {
            0.0
        },
        send_cpu_s: send_cpu.as_secs_f64(),
        send_cpu_pct: if dur > 0.0 {
            100.0 * send_cpu.as_secs_f64() / dur
        } else {
            0.0
        },
        gen_peak_rss_bytes: peak_rss_bytes(),
    };
    if a.json {
        println!("{}", serde_json::to_string(&r).map_err(|e| e.to_string())?);
    } else {
        println!("url                {}", r.url);
        println!(
            "workload           {:?}: {} series × {} samples, {} targets",
            r.workload, r.series, r.samples_per_series, r.targets
        );
        println!(
            "sent               {} samples ok of {} ({} exemplars ok) in {} requests",
            r.samples_ok, r.samples, r.exemplars_ok, r.requests
        );
        println!("duration           {:.2}s", r.duration_s);
        println!("rate               {:.0} samples/s", r.samples_per_s);
        println!(
            "non-2xx            {} (transport errors {}, retries {})",
            r.non_2xx, r.transport_errors, r.retries
        );
        if let Some(e) = &r.first_error {
            println!("first error        {e}");
        }
        println!(
            "generator CPU      {:.2}s while sending ({:.0}% of one core); encode {:.2}s CPU",
            r.send_cpu_s, r.send_cpu_pct, r.encode_cpu_s
        );
        if r.send_cpu_pct > 60.0 {
            println!("WARNING            the generator used >60% of a core: it may limit this run");
        }
    }
    Ok(r.non_2xx == 0 && r.transport_errors == 0)
}

fn run_query(a: QueryArgs) -> Result<bool, String> {
    let end_ms = match &a.end {
        Some(s) => parse_time(s)?,
        None => now_ms(),
    };
    let ranges = a
        .ranges
        .iter()
        .map(|r| {
            let (range, step) = r
                .split_once(':')
                .ok_or_else(|| format!("--ranges {r:?}: want RANGE:STEP"))?;
            Ok((
                range.to_string(),
                parse_duration(range)?,
                parse_duration(step)?,
            ))
        })
        .collect::<Result<Vec<_>, String>>()?;
    let opts = QueryOptions {
        base: a.url.clone(),
        headers: a.headers,
        end_ms,
        ranges,
        iterations: a.iterations.max(1),
        concurrency: a.concurrency.max(1),
        timeout: a.timeout,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the runtime: {e}"))?;
    let results = rt.block_on(query::run(a.workload, opts));
    let errors: usize = results.iter().map(|r| r.errors).sum();
    if a.json {
        let v = serde_json::json!({ "url": a.url, "end_ms": end_ms, "queries": results });
        println!("{v}");
    } else {
        println!(
            "{:<28} {:>5} {:>10} {:>10} {:>7} {:>6}",
            "query", "range", "median_ms", "p99_ms", "series", "errors"
        );
        for r in &results {
            println!(
                "{:<28} {:>5} {:>10.1} {:>10.1} {:>7} {:>6}",
                r.name, r.range, r.median_ms, r.p99_ms, r.series, r.errors
            );
            if let Some(e) = &r.first_error {
                println!("    first error: {e}");
            }
        }
    }
    Ok(errors == 0)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let res = match cli.cmd {
        Some(Cmd::Query(q)) => run_query(q),
        Some(Cmd::Write(w)) => run_write(w),
        None => run_write(cli.write),
    };
    match res {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("cairn-loadgen: {e}");
            ExitCode::from(2)
        }
    }
}
