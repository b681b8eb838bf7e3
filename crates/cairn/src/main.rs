//! `cairn`: the one binary. `cairn serve` runs every role in one process —
//! the storage node (in-process), the query role, the ingest gateway and the
//! always-on status routes (`roles`), over one HTTP server — from the
//! embedded default config composed with the file, the environment and the
//! flags (`config`). It wires implementations (`cairn-storage`) to the
//! traits the API speaks (`cairn-storage-api`).
//!
//! Owns what only a process has: the allocator (mimalloc, THP off, the read
//! threads' heap collect), signals and exit codes. Nothing depends on it:
//! what another crate needs must live in that crate, never here.

mod cluster;
mod config;
mod roles;
mod tenants;

// glibc malloc showed up as a third of ingest CPU (arena contention and
// consolidation across tokio and blocking threads); mimalloc removes that.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Returns what the calling thread's allocator heap holds free (a read
/// thread going idle: what its query freed is not kept while it sleeps).
fn collect_thread_heap() {
    // SAFETY: mi_collect takes no pointers and may be called from any
    // thread at any time; it only walks the calling thread's own heap.
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_collect(false)
    }
}

use anyhow::{Context, Result};
use cairn_api::AppState;
use cairn_storage::Storage;
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Parser)]
#[command(
    name = "cairn",
    version,
    about = "Cairn: a Prometheus-compatible metrics database"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run every role in one process (single node).
    Serve {
        /// YAML config file (overrides the embedded defaults).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Data directory (storage.data-dir).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// HTTP listen address (http.listen), e.g. :9201 or 127.0.0.1:0.
        #[arg(long)]
        http_listen: Option<String>,
    },
    /// Print the embedded default configuration.
    DefaultConfig,
    /// Manage tenants through a node's admin API (admin token needed).
    Tenant {
        #[command(flatten)]
        target: tenants::AdminTarget,
        #[command(subcommand)]
        cmd: tenants::TenantCmd,
    },
    /// Generate, create, list and revoke bearer tokens.
    Token {
        #[command(flatten)]
        target: tenants::AdminTarget,
        #[command(subcommand)]
        cmd: tenants::TokenCmd,
    },
    /// Run Prometheus promqltest scripts (load/eval format) against the engine.
    /// PATH may be a file or a directory of *.test files. Prints every failing
    /// eval and ends with `N passed, N failed, N skipped`; exits 1 on failures.
    Promqltest {
        /// Store the test data in memory or in a real on-disk store (commit
        /// log, head, RocksDB index) in a temporary directory.
        #[arg(long, value_enum, default_value = "memory")]
        storage: TestStorage,
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum TestStorage {
    Memory,
    Disk,
}

/// `cairn promqltest`: every `load`/`clear` gets a fresh store.
fn promqltest(storage: TestStorage, paths: &[PathBuf]) -> Result<bool> {
    use cairn_common::{MemStore, SampleWriter};
    use cairn_storage_api::SeriesReader;
    type Store = (Arc<dyn SeriesReader>, Arc<dyn SampleWriter>);
    // Disk stores opened so far, closed (and their temp dirs removed) when the next one opens.
    let open: std::cell::RefCell<Vec<(Arc<Storage>, tempfile::TempDir)>> = Default::default();
    let factory = || -> Store {
        match storage {
            TestStorage::Memory => {
                let m = Arc::new(MemStore::new());
                (m.clone(), m)
            }
            TestStorage::Disk => {
                for (s, _dir) in open.borrow_mut().drain(..) {
                    let _ = s.close();
                }
                // Invariant for the test runner: a temp dir and a fresh store can be created;
                // failing here means the machine cannot run the suite at all.
                let dir = tempfile::tempdir().expect("creating a temp dir for promqltest");
                let mut cfg = cairn_storage::StorageConfig::new(dir.path());
                cfg.num_shards = 4;
                // Test data sits near the Unix epoch: a clock at 0 keeps it inside retention.
                let s = Storage::open(cfg, Arc::new(|| 0)).expect("opening a promqltest store");
                open.borrow_mut().push((s.clone(), dir));
                (s.clone(), s)
            }
        }
    };
    let mut out = std::io::stdout().lock();
    let summary = cairn_promqltest::run_files(
        paths,
        &factory,
        cairn_promql::EngineOptions::default(),
        &mut out,
    )?;
    for (s, _dir) in open.borrow_mut().drain(..) {
        let _ = s.close();
    }
    Ok(summary.failed == 0)
}

/// Turns transparent huge pages off for this process. mimalloc asks for
/// them on its arenas, and with them every first touch of a 2 MiB region
/// commits all of it: query buffers freed and reused at 4 KiB granularity
/// left the 100k-series benchmark's peak RSS 13–52 MiB higher (355 vs 367,
/// 336 vs 388 MiB) for no measurable query or ingest speed.
fn disable_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: prctl(PR_SET_THP_DISABLE) takes plain integers and only
        // sets a flag on this process's memory map; no Rust memory is
        // touched. A failure (old kernel) leaves THP as it was.
        #[allow(unsafe_code)]
        let _ = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    }
}

fn main() -> std::process::ExitCode {
    disable_transparent_huge_pages();
    cairn_api::set_idle_hook(collect_thread_heap);
    let cli = Cli::parse();
    // The test runner's output is the report; keep store logs to warnings there.
    let default_level = match cli.cmd {
        Cmd::Promqltest { .. } | Cmd::Tenant { .. } | Cmd::Token { .. } => "warn",
        _ => "info",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CAIRN_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let res = match cli.cmd {
        Cmd::Serve {
            config,
            data_dir,
            http_listen,
        } => {
            let flags = config::Overrides {
                config_file: config,
                data_dir,
                http_listen,
            };
            serve(flags)
        }
        Cmd::DefaultConfig => {
            print!("{}", config::DEFAULT_YAML);
            Ok(())
        }
        Cmd::Tenant { target, cmd } => tenants::tenant_cmd(&target, cmd),
        Cmd::Token { target, cmd } => tenants::token_cmd(&target, cmd),
        Cmd::Promqltest { storage, paths } => match promqltest(storage, &paths) {
            Ok(true) => Ok(()),
            Ok(false) => return std::process::ExitCode::FAILURE,
            Err(e) => Err(e),
        },
    };
    match res {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cairn: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Writes the bound address to `<data-dir>/http.addr` (temp file + rename), so
/// tests and scripts that asked for port 0 can find the server.
fn write_addr_file(data_dir: &Path, addr: std::net::SocketAddr) -> Result<()> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating data dir {}", data_dir.display()))?;
    let tmp = data_dir.join("http.addr.tmp");
    std::fs::write(&tmp, addr.to_string()).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, data_dir.join("http.addr")).context("renaming http.addr")?;
    Ok(())
}

fn serve(flags: config::Overrides) -> Result<()> {
    let env: Vec<(String, String)> = std::env::vars().collect();
    let cfg = config::Config::load(&flags, &env)?;
    let storage_cfg = cfg.storage_config()?;
    let mut api_cfg = cfg.api_config()?;
    api_cfg.write_consistency = cfg.cluster.write_consistency;
    let mut server_opts = cfg.server_options()?;
    server_opts.max_connections =
        connection_cap(server_opts.max_connections, raise_open_files_limit());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting tokio runtime")?;
    rt.block_on(async move {
        let addr = cfg.listen_addr()?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding http.listen {addr}"))?;
        let local = listener.local_addr()?;
        write_addr_file(&storage_cfg.data_dir, local)?;
        tracing::info!(addr = %local, data_dir = %storage_cfg.data_dir.display(), "listening; recovering storage");

        // Started in this order, stopped in the reverse one: the HTTP server
        // (over the routes they mount) first, storage last.
        let mut services: Vec<Box<dyn roles::Service>> = Vec::new();
        let state;
        if cfg.cluster.is_cluster() {
            // The cluster role's gRPC stops before the store closes.
            let member =
                cluster::ClusterRole::new(cfg.cluster.clone(), storage_cfg.data_dir.clone())?;
            let tc = tenancy(&cfg, member.meta_cell())?;
            let mapping = Arc::new(tenants::DirectoryMapping(tc.directory.clone()));
            state = AppState::with_tenancy(api_cfg, tc).context("starting the query threads")?;
            let publish = member.publisher(state.clone())?;
            services.push(Box::new(
                roles::StorageRole::with_publish(storage_cfg, publish).with_mapping(mapping),
            ));
            services.push(Box::new(member));
        } else {
            // A single node keeps its tenants in a metadata store of one.
            let meta = tenants::SingleMeta::new(storage_cfg.data_dir.clone(), storage_cfg.num_shards as u32)?;
            let tc = tenancy(&cfg, meta.cell())?;
            let mapping = Arc::new(tenants::DirectoryMapping(tc.directory.clone()));
            state = AppState::with_tenancy(api_cfg, tc).context("starting the query threads")?;
            services.push(Box::new(meta));
            services.push(Box::new(
                roles::StorageRole::new(storage_cfg, state.clone()).with_mapping(mapping),
            ));
        }
        services.push(Box::new(roles::QueryRole::new(state.clone())));
        services.push(Box::new(roles::GatewayRole));
        services.push(Box::new(roles::StatusRoutes));
        let mut node = roles::Node::new(services);
        // `/-/ready` answers 503 until storage has recovered; a role that
        // fails to start or come up stops those already started.
        let started = async { node.start(listener, state, server_opts).await?; node.up().await };
        if let Err(e) = started.await {
            let _ = node.stop().await;
            return Err(e);
        }
        tracing::info!("ready");

        shutdown_signal().await;
        tracing::info!("shutting down: no new requests; syncing commit log");
        node.stop().await?;
        tracing::info!("stopped");
        Ok(())
    })
}

/// The node's tenancy: the metadata store's records with the config's
/// default limits; the auth policy with the bootstrap admin token's hash
/// (`CAIRN_ADMIN_TOKEN`, else `auth.admin-token-file`).
fn tenancy(
    cfg: &config::Config,
    meta: Arc<std::sync::OnceLock<cairn_meta::Meta>>,
) -> Result<cairn_api::TenancyConfig> {
    let defaults = cfg.limits.to_limits()?;
    let env_token = std::env::var("CAIRN_ADMIN_TOKEN").ok();
    let admin_sha256 = cfg.auth.admin_sha256(env_token.as_deref())?;
    if admin_sha256.is_none() {
        tracing::info!("no bootstrap admin token (CAIRN_ADMIN_TOKEN, auth.admin-token-file): /admin/v1 answers only admin tokens created earlier");
    }
    Ok(cairn_api::TenancyConfig {
        directory: tenants::MetaDirectory::new(meta, defaults),
        policy: cairn_tenancy::AuthPolicy {
            anonymous: cfg.auth.anonymous,
            admin_sha256,
        },
    })
}

/// Raises this process's soft open-files limit to its hard limit (as Go
/// does at start, which Prometheus relies on); returns the soft limit now in
/// force (None if it cannot be read).
fn raise_open_files_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the plain struct passed.
    #[allow(unsafe_code)]
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return None;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            } else {
                tracing::warn!(
                    soft = lim.rlim_cur,
                    hard = lim.rlim_max,
                    "cannot raise the open-files limit"
                );
            }
        }
    }
    Some(lim.rlim_cur)
}

/// `http.max-connections`, kept below the open-files limit with room for the
/// store's files (a quarter of the limit, at least 256).
fn connection_cap(configured: usize, open_files: Option<u64>) -> usize {
    let Some(limit) = open_files else {
        return configured;
    };
    let room = limit.saturating_sub((limit / 4).max(256)).max(1);
    if (configured as u64) <= room {
        return configured;
    }
    tracing::warn!(
        configured,
        open_files_limit = limit,
        using = room,
        "http.max-connections lowered to stay below the open-files limit"
    );
    room as usize
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(?e, "cannot install SIGTERM handler");
            return std::future::pending().await;
        }
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = tokio::signal::ctrl_c() => {},
    }
}
