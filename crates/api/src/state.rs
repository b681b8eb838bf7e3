//! The router's state: the backend it serves from once recovery is
//! complete (the storage contract's reader and shard writer, and the admin
//! operations), the HTTP layer's configuration, the read pool, the
//! self-metrics registry, and the two ways a handler leaves the async
//! threads (the read pool, tokio's blocking pool).

use crate::error::ApiError;
use crate::metrics;
use crate::pool;
use cairn_storage_api::{SeriesReader, ShardWriter};
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, OnceLock};

/// Store operations the HTTP layer needs beyond reads and writes.
pub trait Admin: Send + Sync {
    /// Seals and flushes everything in the head; returns filesets written.
    fn flush(&self) -> Result<usize, String>;
    /// Takes a head snapshot now; returns the commit-log segment it covers.
    fn snapshot(&self) -> Result<u64, String> {
        Err("this store takes no head snapshots".into())
    }
    /// Registers the store's self-metrics in the registry `/metrics` serves.
    fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry);
    /// `GET /admin/v1/cluster`: members and their health, the metadata
    /// leader, the placement (None: not a cluster, 404).
    fn cluster(&self) -> Option<cairn_storage_api::BoxFuture<'static, serde_json::Value>> {
        None
    }
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend").finish_non_exhaustive()
    }
}

/// What the router serves from, set once recovery is complete.
#[derive(Clone)]
pub struct Backend {
    /// Every read (the engine's included): the storage contract.
    pub reader: Arc<dyn SeriesReader>,
    /// Writes: the storage contract's shard writer.
    pub writer: Arc<dyn ShardWriter>,
    pub admin: Arc<dyn Admin>,
}

#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Largest accepted request body (compressed), bytes.
    pub max_body_size: usize,
    /// PromQL engine limits (lookback delta, max samples, query timeout).
    pub engine: cairn_promql::EngineOptions,
    /// Reads (queries, series, export, remote read) running at once
    /// (`query.max-concurrency`).
    pub max_concurrency: usize,
    /// Reads waiting for a thread before new ones get 503 (`query.max-queued`).
    pub max_queued: usize,
    /// Ingest limits (labels, series per request, future window, decoded size).
    pub ingest: cairn_common::IngestLimits,
    /// Most samples one remote read may return (`query.remote-read-sample-limit`).
    pub remote_read_sample_limit: usize,
    /// Remote reads running at once (`query.remote-read-concurrent-limit`).
    pub remote_read_concurrent_limit: usize,
    /// Remote writes decoded and stored at once (`ingest.max-concurrency`;
    /// 0: two per CPU core plus one — a tenant holds at most all turns but
    /// one, so a lone tenant gets twice the cores, as VictoriaMetrics's
    /// `-maxConcurrentInserts`; with one per core plus one, a lone tenant
    /// on 2 cores sending with 4 writers ingested 0.93× the rate it does
    /// with these, and with one per core 0.65–0.75×, as writes wait on
    /// locks and the commit log between their CPU work): each holds its
    /// decoded body until applied, so this bounds ingest memory.
    pub write_concurrency: usize,
    /// How long a write waits for its turn before 503
    /// (`ingest.max-queue-duration`).
    pub write_queue_wait: std::time::Duration,
    /// Label sets remembered as validated, with their ids
    /// (`ingest.label-set-cache`; [`cairn_ingest::KnownLabels`]).
    pub label_set_cache: usize,
    /// The level a write is acknowledged at when its request names none
    /// (`cluster.write-consistency`; header `X-Cairn-Write-Consistency`).
    pub write_consistency: cairn_storage_api::WriteLevel,
    /// How old a sample may be to be copied as a rollup rule's input (ms;
    /// the store's `rollup_input_horizon`); `None` without aggregated
    /// namespaces (rollup rules then apply to nothing).
    pub rollup_input_horizon_ms: Option<i64>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            max_body_size: 64 << 20,
            engine: cairn_promql::EngineOptions::default(),
            max_concurrency: 20,
            max_queued: 200,
            ingest: cairn_common::IngestLimits::default(),
            remote_read_sample_limit: 10_000_000,
            remote_read_concurrent_limit: 10,
            write_consistency: cairn_storage_api::WriteLevel::Majority,
            write_concurrency: 0,
            write_queue_wait: std::time::Duration::from_secs(60),
            label_set_cache: 1 << 21,
            rollup_input_horizon_ms: None,
        }
    }
}

pub(crate) struct Inner {
    pub(crate) cfg: ApiConfig,
    pub(crate) backend: OnceLock<Backend>,
    pub(crate) metrics: metrics::HttpMetrics,
    pub(crate) reads: pool::ReadPool,
    /// Remote reads in flight (a [`pool::Slot`] each).
    pub(crate) remote_reads: Arc<AtomicUsize>,
    /// Turns of remote writes ([`ApiConfig::write_concurrency`]).
    pub(crate) writes: Arc<tokio::sync::Semaphore>,
    /// `writes`' permits.
    pub(crate) write_slots: usize,
    /// Label sets validated before, for the remote-write decoder.
    pub(crate) known_labels: Arc<cairn_ingest::KnownLabels>,
    /// Tenants: the directory, auth, the write gate, per-tenant counters.
    pub(crate) tenants: Arc<crate::tenancy::Tenants>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").finish_non_exhaustive()
    }
}

/// Shared state of the router. Cheap to clone.
#[derive(Clone)]
pub struct AppState(pub(crate) Arc<Inner>);

impl AppState {
    /// Fails only when no read thread can be started. Tenants in this
    /// process only, anonymous access, no admin token
    /// ([`crate::TenancyConfig::default`]).
    pub fn new(cfg: ApiConfig) -> std::io::Result<Self> {
        Self::with_tenancy(cfg, crate::TenancyConfig::default())
    }

    /// With the node's tenant directory and auth policy.
    pub fn with_tenancy(cfg: ApiConfig, tenancy: crate::TenancyConfig) -> std::io::Result<Self> {
        let reads = pool::ReadPool::new(cfg.max_concurrency, cfg.max_queued)?;
        let write_slots = match cfg.write_concurrency {
            0 => 2 * std::thread::available_parallelism().map_or(1, |n| n.get()) + 1,
            n => n,
        };
        let tenants = Arc::new(crate::tenancy::Tenants::new(tenancy));
        let metrics = metrics::HttpMetrics::new(&reads.stats);
        metrics.register(|r| tenants.metrics.register(r));
        Ok(Self(Arc::new(Inner {
            writes: Arc::new(tokio::sync::Semaphore::new(write_slots)),
            write_slots,
            known_labels: Arc::new(cairn_ingest::KnownLabels::new(cfg.label_set_cache)),
            cfg,
            backend: OnceLock::new(),
            metrics,
            reads,
            remote_reads: Arc::new(AtomicUsize::new(0)),
            tenants,
        })))
    }

    /// Cancels every read (queries stop at their next step, exports at their
    /// next chunk) and waits up to `wait` for them; true when none is left.
    pub async fn stop_reads(&self, wait: std::time::Duration) -> bool {
        self.0.reads.stop(wait).await
    }

    /// Installs the backend; from then on `/-/ready` answers 200.
    pub fn set_ready(&self, backend: Backend) {
        let admin = backend.admin.clone();
        if self.0.backend.set(backend).is_ok() {
            self.0.metrics.register(|r| admin.register_metrics(r));
        }
    }

    /// Sets how many gateways share each tenant's ingestion rate.
    pub fn set_gateways(&self, n: usize) {
        self.0.tenants.gate.set_gateways(n);
    }

    pub(crate) fn backend(&self) -> Result<&Backend, ApiError> {
        self.0.backend.get().ok_or_else(ApiError::not_ready)
    }
}

/// Runs a read on the read pool (bounded concurrency, a known stack, a
/// queue; see `pool`) within `timeout`. `f` gets the read's cancel flag,
/// set when the caller stops waiting (client gone, timeout passed).
pub(crate) async fn blocking_read<T: Send + 'static>(
    st: &AppState,
    timeout: std::time::Duration,
    f: impl FnOnce(Arc<std::sync::atomic::AtomicBool>) -> T + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::time::timeout(timeout, st.0.reads.run(f)).await {
        Ok(r) => r,
        Err(_) => Err(ApiError::json(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            format!(
                "query timed out after {:?} waiting for or running on a query thread (query.timeout)",
                timeout
            ),
        )),
    }
}

/// Runs `f` on tokio's blocking pool (remote-write decoding, flushes).
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("task failed: {e}")))
}
