//! A dashboard-like PromQL workload run as `/api/v1/query_range` requests.

use crate::send::client;
use crate::workload::Kind;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Uri};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// (name, which data it needs, PromQL)
pub const QUERIES: &[(&str, Kind, &str)] = &[
    (
        "cpu_busy_by_instance",
        Kind::Node,
        r#"sum by (instance) (rate(node_cpu_seconds_total{mode!="idle"}[5m]))"#,
    ),
    (
        "cpu_util_avg_by_region",
        Kind::Node,
        r#"100 * (1 - avg by (region) (rate(node_cpu_seconds_total{mode="idle"}[5m])))"#,
    ),
    (
        "topk_net_rx",
        Kind::Node,
        r#"topk(10, rate(node_network_receive_bytes_total{device=~"eth.*"}[5m]))"#,
    ),
    (
        "mem_available_ratio",
        Kind::Node,
        r#"node_memory_MemAvailable_bytes{instance=~"host-000[0-4].*"} / node_memory_MemTotal_bytes{instance=~"host-000[0-4].*"}"#,
    ),
    (
        "fs_used_max_by_mount",
        Kind::Node,
        r#"max by (mountpoint) (1 - node_filesystem_avail_bytes{fstype!="tmpfs"} / node_filesystem_size_bytes{fstype!="tmpfs"})"#,
    ),
    (
        "load1_regex_hosts",
        Kind::Node,
        r#"node_load1{instance=~"host-0001[0-9]:.*"}"#,
    ),
    (
        // High cardinality (issue 12): every node series, counted by a label.
        "count_all_node_by_region",
        Kind::Node,
        r#"count by (region) ({__name__=~"node_.+"})"#,
    ),
    (
        "p99_latency_by_service",
        Kind::Histogram,
        r#"histogram_quantile(0.99, sum by (le, service) (rate(http_request_duration_seconds_bucket[5m])))"#,
    ),
    (
        "req_rate_by_service_status",
        Kind::Histogram,
        r#"sum by (service, status_code) (rate(http_request_duration_seconds_count[5m]))"#,
    ),
    (
        "mean_latency_regex",
        Kind::Histogram,
        r#"sum(rate(http_request_duration_seconds_sum{route=~"/api/v1/(items|orders)"}[5m])) / sum(rate(http_request_duration_seconds_count{route=~"/api/v1/(items|orders)"}[5m]))"#,
    ),
];

pub fn queries_for(kind: Kind) -> Vec<(&'static str, &'static str)> {
    QUERIES
        .iter()
        .filter(|(_, k, _)| kind == Kind::Mixed || *k == kind)
        .map(|(n, _, q)| (*n, *q))
        .collect()
}

#[derive(Debug, Clone)]
pub struct QueryOptions {
    pub base: String,
    pub headers: Vec<(String, String)>,
    pub end_ms: i64,
    /// (label, range, step), e.g. ("1h", 1h, 15s).
    pub ranges: Vec<(String, Duration, Duration)>,
    pub iterations: usize,
    pub concurrency: usize,
    pub timeout: Duration,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct QueryResult {
    pub name: String,
    pub range: String,
    pub runs: usize,
    pub errors: usize,
    pub median_ms: f64,
    pub p99_ms: f64,
    /// Series in the last successful answer (0 means the query found no data).
    pub series: usize,
    pub first_error: Option<String>,
}

pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

struct Outcome {
    job: usize,
    latency: Duration,
    result: Result<usize, String>,
}

pub async fn run(kind: Kind, opts: QueryOptions) -> Vec<QueryResult> {
    let qs = queries_for(kind);
    let mut jobs = Vec::new(); // (query index, range index)
    for _ in 0..opts.iterations {
        for qi in 0..qs.len() {
            for ri in 0..opts.ranges.len() {
                jobs.push((qi, ri));
            }
        }
    }
    let combos = qs.len() * opts.ranges.len();
    let jobs = Arc::new(Mutex::new(jobs.into_iter().rev().collect::<Vec<_>>()));
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    let client = client(opts.concurrency);
    let opts = Arc::new(opts);
    let mut tasks = Vec::new();
    for _ in 0..opts.concurrency.max(1) {
        let (jobs, outcomes, client, opts, qs) = (
            jobs.clone(),
            outcomes.clone(),
            client.clone(),
            opts.clone(),
            qs.clone(),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let next = jobs.lock().expect("job lock poisoned").pop();
                let Some((qi, ri)) = next else { break };
                let (_, range, step) = &opts.ranges[ri];
                let end = opts.end_ms as f64 / 1000.0;
                let start = end - range.as_secs_f64();
                let uri = format!(
                    "{}/api/v1/query_range?query={}&start={start:.3}&end={end:.3}&step={}",
                    opts.base.trim_end_matches('/'),
                    percent_encode(qs[qi].1),
                    step.as_secs()
                );
                let t0 = Instant::now();
                let result = query_once(&client, &opts, &uri).await;
                outcomes
                    .lock()
                    .expect("outcome lock poisoned")
                    .push(Outcome {
                        job: qi * opts.ranges.len() + ri,
                        latency: t0.elapsed(),
                        result,
                    });
            }
        }));
    }
    for t in tasks {
        t.await.expect("query task panicked");
    }
    let outcomes = std::mem::take(&mut *outcomes.lock().expect("outcome lock poisoned"));
    (0..combos)
        .map(|job| {
            let (qi, ri) = (job / opts.ranges.len(), job % opts.ranges.len());
            let mine: Vec<&Outcome> = outcomes.iter().filter(|o| o.job == job).collect();
            let mut lat: Vec<f64> = mine
                .iter()
                .filter(|o| o.result.is_ok())
                .map(|o| o.latency.as_secs_f64() * 1000.0)
                .collect();
            lat.sort_by(f64::total_cmp);
            QueryResult {
                name: qs[qi].0.to_string(),
                range: opts.ranges[ri].0.clone(),
                runs: mine.len(),
                errors: mine.iter().filter(|o| o.result.is_err()).count(),
                median_ms: percentile(&lat, 50.0),
                p99_ms: percentile(&lat, 99.0),
                series: mine
                    .iter()
                    .rev()
                    .find_map(|o| o.result.as_ref().ok().copied())
                    .unwrap_or(0),
                first_error: mine.iter().find_map(|o| o.result.as_ref().err().cloned()),
            }
        })
        .collect()
}

async fn query_once(
    client: &crate::send::HttpClient,
    opts: &QueryOptions,
    uri: &str,
) -> Result<usize, String> {
    let uri: Uri = uri.parse().map_err(|e| format!("bad URL {uri}: {e}"))?;
    let mut b = Request::get(uri);
    for (k, v) in &opts.headers {
        b = b.header(k.as_str(), v.as_str());
    }
    let req = b
        .body(Full::new(Bytes::new()))
        .map_err(|e| format!("building request: {e}"))?;
    let fut = async {
        let resp = client.request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok::<_, String>((status, body))
    };
    let (status, body) = tokio::time::timeout(opts.timeout, fut)
        .await
        .map_err(|_| format!("timeout after {:?}", opts.timeout))??;
    if !status.is_success() {
        let text: String = String::from_utf8_lossy(&body).chars().take(300).collect();
        return Err(format!("HTTP {status}: {text}"));
    }
    let v: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| format!("answer is not JSON: {e}"))?;
    if v["status"] != "success" {
        return Err(format!("status {}: {}", v["status"], v["error"]));
    }
    Ok(v["data"]["result"].as_array().map_or(0, |a| a.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_encoding_keeps_unreserved_and_escapes_the_rest() {
        assert_eq!(
            percent_encode(r#"rate(x{a=~"b.*"}[5m])"#),
            "rate%28x%7Ba%3D~%22b.%2A%22%7D%5B5m%5D%29"
        );
        assert_eq!(percent_encode("sum by (le)"), "sum%20by%20%28le%29");
    }

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&v[..1], 99.0), 1.0);
        assert!(percentile(&[], 50.0).is_nan());
    }

    #[test]
    fn every_workload_has_queries_and_mixed_has_all() {
        assert!(!queries_for(Kind::Node).is_empty());
        assert!(!queries_for(Kind::Histogram).is_empty());
        assert_eq!(queries_for(Kind::Mixed).len(), QUERIES.len());
    }
}
