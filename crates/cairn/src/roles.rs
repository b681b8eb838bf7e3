//! The node's roles as services: each mounts its routes on the one HTTP
//! router and has a start and a stop. `cairn serve` runs them all in one
//! process ([`Node`]): started in order — storage, query, gateway, status —
//! then the HTTP server over the routes they mount; on shutdown the server
//! stops first (no new connections, requests in flight answered), then the
//! roles in reverse order, each joining its tasks. Meta arrives with the
//! cluster.

use anyhow::{Context, Result};
use cairn_api::{Admin, AppState, Backend, Routes};
use cairn_storage::{Storage, StorageConfig};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// A boxed future, for the services' object-safe start and stop.
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How long the HTTP server may take to answer the requests in flight.
const HTTP_DRAIN: Duration = Duration::from_secs(20);
/// How long reads still running at shutdown get to stop after their cancel.
const READS_STOP: Duration = Duration::from_secs(10);

/// One role of a node.
pub(crate) trait Service: Send {
    fn name(&self) -> &'static str;
    /// The routes this role mounts (none by default).
    fn routes(&self) -> Routes {
        Routes::new()
    }
    /// Starts the role's work; returns once it is started, not done (the
    /// storage role's recovery goes on in the background).
    fn start(&mut self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async { Ok(()) })
    }
    /// Resolves when the role is up (storage: recovery done).
    fn up(&mut self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async { Ok(()) })
    }
    /// Stops the role and joins its tasks.
    fn stop(&mut self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async { Ok(()) })
    }
}

/// What is done with the store once recovery has opened it.
pub(crate) type Publish = Arc<dyn Fn(Arc<Storage>) + Send + Sync>;

/// The storage node, in process: opened (recovery) in the background at
/// start; once recovered, the backend every route serves from (and
/// `/-/ready` turns 200); closed at stop, which joins its flush task and
/// syncs the commit log.
pub(crate) struct StorageRole {
    cfg: StorageConfig,
    publish: Publish,
    recovery: Option<tokio::task::JoinHandle<Result<Arc<Storage>>>>,
    storage: Option<Arc<Storage>>,
    /// The tenants' mapping rules the downsampling pass follows.
    mapping: Option<Arc<dyn cairn_storage::downsample::Mapping>>,
}

impl StorageRole {
    /// A single node's storage: once open, the backend every route serves from.
    pub(crate) fn new(cfg: StorageConfig, state: AppState) -> Self {
        Self::with_publish(
            cfg,
            Arc::new(move |storage: Arc<Storage>| {
                state.set_ready(Backend {
                    reader: storage.clone(),
                    writer: storage.clone(),
                    admin: Arc::new(StorageAdmin(storage)),
                })
            }),
        )
    }

    /// Storage whose open store is handed to `publish` (a cluster member's).
    pub(crate) fn with_publish(cfg: StorageConfig, publish: Publish) -> Self {
        Self {
            cfg,
            publish,
            recovery: None,
            storage: None,
            mapping: None,
        }
    }

    /// Downsampling follows `mapping` (the tenants' mapping rules).
    pub(crate) fn with_mapping(
        mut self,
        mapping: Arc<dyn cairn_storage::downsample::Mapping>,
    ) -> Self {
        self.mapping = Some(mapping);
        self
    }

    /// Waits for recovery if it is still running; the store once open.
    async fn join_recovery(&mut self) -> Result<Option<Arc<Storage>>> {
        if let Some(task) = self.recovery.take() {
            let storage = task.await.context("storage recovery task")??;
            self.storage = Some(storage);
        }
        Ok(self.storage.clone())
    }
}

impl Service for StorageRole {
    fn name(&self) -> &'static str {
        "storage"
    }

    fn start(&mut self) -> BoxFuture<'_, Result<()>> {
        let cfg = self.cfg.clone();
        let publish = self.publish.clone();
        let mapping = self.mapping.clone();
        self.recovery = Some(tokio::spawn(async move {
            let storage = tokio::task::spawn_blocking(move || {
                Storage::open(cfg, cairn_storage::system_clock())
            })
            .await
            .context("storage recovery task")?
            .context("opening storage")?;
            if let Some(m) = mapping {
                storage.set_mapping(m);
            }
            storage.start_background();
            publish(storage.clone());
            Ok(storage)
        }));
        Box::pin(async { Ok(()) })
    }

    fn up(&mut self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async { self.join_recovery().await.map(|_| ()) })
    }

    fn stop(&mut self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async {
            // A store that never opened has nothing to close.
            let Ok(Some(storage)) = self.join_recovery().await else {
                return Ok(());
            };
            self.storage = None;
            tokio::task::spawn_blocking(move || storage.close())
                .await
                .context("shutdown task")?
                .context("closing storage")?;
            Ok(())
        })
    }
}

/// What `/admin/v1/flush` and `/metrics` ask of the in-process store.
struct StorageAdmin(Arc<Storage>);

impl Admin for StorageAdmin {
    fn flush(&self) -> Result<usize, String> {
        self.0.flush(true).map_err(|e| e.to_string())
    }
    fn snapshot(&self) -> Result<u64, String> {
        self.0.snapshot().map_err(|e| e.to_string())
    }
    fn register_metrics(&self, registry: &mut cairn_api::MetricsRegistry) {
        self.0.register_metrics(registry);
    }
}

/// The query role: every read route, run on the read pool; stop cancels
/// the reads still running (an export to a client that stopped reading)
/// and waits for them, bounded.
pub(crate) struct QueryRole {
    state: AppState,
}

impl QueryRole {
    pub(crate) fn new(state: AppState) -> Self {
        Self { state }
    }
}

impl Service for QueryRole {
    fn name(&self) -> &'static str {
        "query"
    }
    fn routes(&self) -> Routes {
        cairn_api::read_routes()
    }
    fn stop(&mut self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async {
            if !self.state.stop_reads(READS_STOP).await {
                tracing::warn!("reads still running after 10s; closing storage anyway");
            }
            Ok(())
        })
    }
}

/// The ingest gateway: the remote-write routes (decoded and stored on the
/// blocking pool within the request, so the HTTP server's drain covers it).
#[derive(Debug)]
pub(crate) struct GatewayRole;

impl Service for GatewayRole {
    fn name(&self) -> &'static str {
        "gateway"
    }
    fn routes(&self) -> Routes {
        cairn_api::write_routes()
    }
}

/// The routes every node serves: status, health, readiness, self-metrics
/// and admin.
#[derive(Debug)]
pub(crate) struct StatusRoutes;

impl Service for StatusRoutes {
    fn name(&self) -> &'static str {
        "status"
    }
    fn routes(&self) -> Routes {
        cairn_api::status_routes()
    }
}

/// The HTTP server over the roles' routes.
struct HttpServer {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// Services started in order, and the HTTP server over their routes.
pub(crate) struct Node {
    services: Vec<Box<dyn Service>>,
    started: usize,
    http: Option<HttpServer>,
}

impl Node {
    pub(crate) fn new(services: Vec<Box<dyn Service>>) -> Self {
        Self {
            services,
            started: 0,
            http: None,
        }
    }

    /// Starts every service in order, then serves the routes they mount on
    /// `listener`.
    pub(crate) async fn start(
        &mut self,
        listener: tokio::net::TcpListener,
        state: AppState,
        opts: cairn_api::ServerOptions,
    ) -> Result<()> {
        let mut routes = Routes::new();
        for s in &mut self.services {
            s.start()
                .await
                .with_context(|| format!("starting the {} role", s.name()))?;
            self.started += 1;
            routes = routes.merge(s.routes());
        }
        let (stop, rx) = tokio::sync::oneshot::channel::<()>();
        let router = cairn_api::build(routes, state);
        let task = tokio::spawn(cairn_api::serve_with(listener, router, opts, async move {
            let _ = rx.await;
        }));
        self.http = Some(HttpServer { stop, task });
        Ok(())
    }

    /// Resolves when every service is up; the first failure otherwise.
    pub(crate) async fn up(&mut self) -> Result<()> {
        for s in &mut self.services[..self.started] {
            s.up().await?;
        }
        Ok(())
    }

    /// Stops the HTTP server (no new requests; those in flight answered,
    /// within 20s), then the started services in reverse order. Every
    /// service is stopped; the first error is returned.
    pub(crate) async fn stop(&mut self) -> Result<()> {
        if let Some(http) = self.http.take() {
            let _ = http.stop.send(());
            match tokio::time::timeout(HTTP_DRAIN, http.task).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => tracing::warn!(?e, "http server error during shutdown"),
                Ok(Err(e)) => tracing::warn!(?e, "http server task failed"),
                Err(_) => tracing::warn!("http server did not stop within 20s"),
            }
        }
        let mut first = Ok(());
        while self.started > 0 {
            self.started -= 1;
            let s = &mut self.services[self.started];
            let name = s.name();
            if let Err(e) = s.stop().await {
                tracing::warn!(role = name, ?e, "stopping role failed");
                if first.is_ok() {
                    first = Err(e);
                }
            }
        }
        first
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    struct Probe {
        name: &'static str,
        log: Arc<Mutex<Vec<String>>>,
        fail_start: bool,
    }

    impl Service for Probe {
        fn name(&self) -> &'static str {
            self.name
        }
        fn start(&mut self) -> BoxFuture<'_, Result<()>> {
            self.log
                .lock()
                .unwrap()
                .push(format!("start {}", self.name));
            let fail = self.fail_start;
            Box::pin(async move {
                if fail {
                    anyhow::bail!("refused");
                }
                Ok(())
            })
        }
        fn stop(&mut self) -> BoxFuture<'_, Result<()>> {
            self.log.lock().unwrap().push(format!("stop {}", self.name));
            Box::pin(async { Ok(()) })
        }
    }

    fn probes(log: &Arc<Mutex<Vec<String>>>, fail: Option<&str>) -> Vec<Box<dyn Service>> {
        ["storage", "query", "gateway"]
            .into_iter()
            .map(|name| {
                Box::new(Probe {
                    name,
                    log: log.clone(),
                    fail_start: fail == Some(name),
                }) as Box<dyn Service>
            })
            .collect()
    }

    /// Services start in order and stop in the reverse one; a service that
    /// failed to start, and those after it, are not stopped.
    #[tokio::test]
    async fn services_stop_in_reverse_order() {
        let state = AppState::new(cairn_api::ApiConfig::default()).unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut node = Node::new(probes(&log, None));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        node.start(listener, state.clone(), Default::default())
            .await
            .unwrap();
        node.up().await.unwrap();
        node.stop().await.unwrap();
        assert_eq!(
            *log.lock().unwrap(),
            [
                "start storage",
                "start query",
                "start gateway",
                "stop gateway",
                "stop query",
                "stop storage"
            ]
        );

        let log = Arc::new(Mutex::new(Vec::new()));
        let mut node = Node::new(probes(&log, Some("query")));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let e = node
            .start(listener, state, Default::default())
            .await
            .unwrap_err();
        assert!(
            format!("{e:#}").contains("starting the query role"),
            "{e:#}"
        );
        node.stop().await.unwrap();
        assert_eq!(
            *log.lock().unwrap(),
            ["start storage", "start query", "stop storage"]
        );
    }
}
