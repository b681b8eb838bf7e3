//! Sends pre-encoded remote-write requests: one task per shard, each shard's
//! requests in order, shards kept within a few phases of each other.

use crate::encode::EncodedRequest;
use crate::workload::Shard;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, Uri};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub fn client(pool: usize) -> HttpClient {
    let mut conn = HttpConnector::new();
    conn.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(pool)
        .pool_idle_timeout(Duration::from_secs(30))
        .build(conn)
}

#[derive(Debug, Clone)]
pub struct SendOptions {
    pub url: Uri,
    pub headers: Vec<(String, String)>,
    /// Retries of a request answered 429 or 5xx (or failing to connect).
    pub retries: u32,
    /// How many phases a shard may run ahead of the slowest one.
    pub max_phase_lag: u64,
    pub timeout: Duration,
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct SendStats {
    pub requests: u64,
    pub ok_requests: u64,
    pub samples_ok: u64,
    pub exemplars_ok: u64,
    pub non_2xx: u64,
    pub transport_errors: u64,
    pub retries: u64,
    pub first_error: Option<String>,
    pub status_counts: std::collections::BTreeMap<u16, u64>,
}

struct Shared {
    progress: Vec<AtomicU64>,
    notify: Notify,
    stats: Mutex<SendStats>,
}

impl Shared {
    fn min_progress(&self) -> u64 {
        self.progress
            .iter()
            .map(|p| p.load(Ordering::Acquire))
            .min()
            .unwrap_or(u64::MAX)
    }
}

/// Sends every shard concurrently; returns the stats and the wall time.
pub async fn send_all(shards: Vec<Shard>, opts: SendOptions) -> (SendStats, Duration) {
    let client = client(shards.len());
    let shared = Arc::new(Shared {
        progress: shards.iter().map(|_| AtomicU64::new(0)).collect(),
        notify: Notify::new(),
        stats: Mutex::new(SendStats::default()),
    });
    let opts = Arc::new(opts);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (k, shard) in shards.into_iter().enumerate() {
        let client = client.clone();
        let shared = shared.clone();
        let opts = opts.clone();
        tasks.push(tokio::spawn(async move {
            for req in &shard.requests {
                shared.progress[k].store(req.phase, Ordering::Release);
                shared.notify.notify_waiters();
                loop {
                    let notified = shared.notify.notified();
                    tokio::pin!(notified);
                    notified.as_mut().enable();
                    if shared.min_progress() + opts.max_phase_lag >= req.phase {
                        break;
                    }
                    notified.await;
                }
                send_one(&client, &opts, req, &shared).await;
            }
            shared.progress[k].store(u64::MAX, Ordering::Release);
            shared.notify.notify_waiters();
        }));
    }
    for t in tasks {
        t.await.expect("sender task panicked");
    }
    let elapsed = started.elapsed();
    let stats = shared.stats.lock().expect("stats lock poisoned").clone();
    (stats, elapsed)
}

async fn send_one(client: &HttpClient, opts: &SendOptions, req: &EncodedRequest, shared: &Shared) {
    let mut attempt = 0u32;
    loop {
        let mut b = Request::builder()
            .method(Method::POST)
            .uri(opts.url.clone())
            .header("Content-Encoding", "snappy")
            .header("Content-Type", "application/x-protobuf")
            .header("User-Agent", "cairn-loadgen/0.1")
            .header("X-Prometheus-Remote-Write-Version", "0.1.0");
        for (k, v) in &opts.headers {
            b = b.header(k.as_str(), v.as_str());
        }
        let http_req = b
            .body(Full::new(req.body.clone()))
            .expect("request built from a parsed URI and validated headers");
        let res = tokio::time::timeout(opts.timeout, async {
            let resp = client.request(http_req).await?;
            let status = resp.status();
            let body = resp.into_body().collect().await?.to_bytes();
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>((status, body))
        })
        .await;
        let retryable;
        {
            let mut st = shared.stats.lock().expect("stats lock poisoned");
            match res {
                Ok(Ok((status, body))) => {
                    *st.status_counts.entry(status.as_u16()).or_default() += 1;
                    if status.is_success() {
                        st.requests += 1;
                        st.ok_requests += 1;
                        st.samples_ok += req.samples as u64;
                        st.exemplars_ok += req.exemplars as u64;
                        return;
                    }
                    retryable = status.as_u16() == 429 || status.is_server_error();
                    if !retryable || attempt >= opts.retries {
                        st.requests += 1;
                        st.non_2xx += 1;
                        if st.first_error.is_none() {
                            let text = String::from_utf8_lossy(&body);
                            let text: String = text.chars().take(500).collect();
                            st.first_error = Some(format!("HTTP {status}: {}", text.trim()));
                        }
                        return;
                    }
                }
                Ok(Err(e)) => {
                    retryable = true;
                    if attempt >= opts.retries {
                        st.requests += 1;
                        st.transport_errors += 1;
                        if st.first_error.is_none() {
                            st.first_error = Some(format!("transport: {e}"));
                        }
                        return;
                    }
                }
                Err(_) => {
                    retryable = true;
                    if attempt >= opts.retries {
                        st.requests += 1;
                        st.transport_errors += 1;
                        if st.first_error.is_none() {
                            st.first_error = Some(format!("timeout after {:?}", opts.timeout));
                        }
                        return;
                    }
                }
            }
            st.retries += 1;
        }
        debug_assert!(retryable);
        attempt += 1;
        tokio::time::sleep(Duration::from_millis(50u64 << attempt.min(6))).await;
    }
}

/// User + system CPU time of this process so far.
pub fn cpu_time() -> Duration {
    // SAFETY: getrusage only writes into the zeroed struct we pass.
    #[allow(unsafe_code)]
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Peak resident set of this process, from /proc/self/status (VmHWM).
pub fn peak_rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
