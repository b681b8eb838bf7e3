//! `cairn-meta`: the cluster's metadata — one raft group (tikv `raft` 0.7)
//! among the initial members, with no etcd to run.
//!
//! Owns: the raft log, hard state, conf state and snapshots in RocksDB
//! (`<data-dir>/meta`, each Ready one synced write batch, persisted before
//! its committed entries are applied); the raft loop (a thread owning the
//! `RawNode`: 100 ms ticks, election after 10, heartbeat every 3,
//! check-quorum, pre-vote, read-index reads that are answered once applied
//! or time out after 2 s); the state machine ([`MetaState`]: the versioned
//! placement, namespaces — tenants, limits and rules are the next
//! [`Command`]s); proposals from any member (a follower forwards to the
//! leader over the `Raft` service's `Propose`; pending proposals fail on
//! leadership loss and after 5 s); and the raft transport (bounded queue
//! per peer, messages from peers size-bounded before decoding).
//!
//! Every initial member starts with the same voters (the members' ids from
//! config), so there is no bootstrap step: any majority elects a leader from
//! its own logs, whatever the start order. The first leader proposes the
//! initial placement (computed the same from config on every member). On
//! restart a member rebuilds its state from its snapshot and its committed
//! log before any election, so the data path — which only reads the cached
//! placement ([`Meta::placement`]) — never waits on raft.
//!
//! Dependencies: raft 0.7 still pulls `protobuf` 2.28 (RUSTSEC-2024-0437, a
//! recursion limit missing on untrusted input) even with `prost-codec`;
//! messages from peers are bounded to [`MAX_RAFT_MESSAGE`] bytes before
//! decoding, and only members talk raft.
//!
//! Must never depend on: the storage crate, the engine, the HTTP API.

mod input;
mod node;
mod state;
mod storage;
mod transport;

pub use state::{Command, MetaState};

use cairn_cluster::Placement;
use cairn_tenancy::{ChangeError, Tenancy};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use tokio::sync::{oneshot, watch};

/// The largest raft message accepted from a peer.
pub const MAX_RAFT_MESSAGE: usize = 4 << 20;

/// A metadata member's configuration.
#[derive(Debug, Clone)]
pub struct MetaConfig {
    /// This member's raft id (from 1).
    pub id: u64,
    /// The node's data dir; the raft store is `<data_dir>/meta`.
    pub data_dir: PathBuf,
    /// Every initial member's raft id and gRPC address, this one included.
    pub peers: BTreeMap<u64, String>,
    /// The placement the cluster is created with.
    pub initial_placement: Placement,
    /// A snapshot (and log compaction) every this many applied entries.
    pub snapshot_every: u64,
}

/// Why a metadata call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetaError {
    #[error("meta store: {0}")]
    Store(String),
    #[error("no meta leader{}", .0.map(|l| format!(" here (the leader is member {l})")).unwrap_or_default())]
    NotLeader(Option<u64>),
    #[error("the meta leader lost its leadership before the proposal applied")]
    LeadershipLost,
    #[error("meta: {0}")]
    Timeout(String),
    #[error("meta: {0}")]
    Unavailable(String),
    /// The state machine refused the command (every member would): why,
    /// with its kind (invalid, not found, conflict).
    #[error("meta command refused: {0}")]
    Refused(ChangeError),
    #[error("the meta loop has stopped")]
    Stopped,
}

/// What a member says of the group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetaStatus {
    pub id: u64,
    pub leader: Option<u64>,
    pub term: u64,
    /// `leader`, `follower`, `candidate`, `precandidate`.
    pub role: String,
    pub commit: u64,
    pub applied: u64,
    pub placement_version: Option<u64>,
}

#[derive(Debug)]
struct Inner {
    to_loop: Mutex<Sender<Input>>,
    peers: BTreeMap<u64, String>,
    placement: watch::Receiver<Option<Arc<Placement>>>,
    tenancy: watch::Receiver<Arc<Tenancy>>,
    status: watch::Receiver<MetaStatus>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

use input::Input;

/// A running metadata member; clones share it.
#[derive(Debug, Clone)]
pub struct Meta {
    inner: Arc<Inner>,
}

impl Meta {
    /// Opens the raft store (rebuilding the state from it), starts the loop
    /// thread and the peer senders (on the current tokio runtime).
    pub fn start(cfg: MetaConfig) -> Result<Meta, MetaError> {
        let (tx, rx) = std::sync::mpsc::channel();
        let rt = tokio::runtime::Handle::try_current()
            .map_err(|_| MetaError::Store("Meta::start needs a tokio runtime".into()))?;
        let out = transport::Outbound::start(cfg.id, &cfg.peers, &rt, tx.clone())?;
        let (ptx, prx) = watch::channel(None);
        let (ttx, trx) = watch::channel(Arc::new(Tenancy::default()));
        let (stx, srx) = watch::channel(MetaStatus::default());
        let l = node::Loop::open(
            &cfg,
            out,
            node::Publish {
                placement: ptx,
                tenancy: ttx,
                status: stx,
            },
        )?;
        let thread = std::thread::Builder::new()
            .name("cairn-meta".into())
            .spawn(move || l.run(rx))
            .map_err(|e| MetaError::Store(format!("starting the meta thread: {e}")))?;
        Ok(Meta {
            inner: Arc::new(Inner {
                to_loop: Mutex::new(tx),
                peers: cfg.peers,
                placement: prx,
                tenancy: trx,
                status: srx,
                thread: Mutex::new(Some(thread)),
            }),
        })
    }

    fn send(&self, i: Input) -> Result<(), MetaError> {
        self.inner
            .to_loop
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(i)
            .map_err(|_| MetaError::Stopped)
    }

    /// The placement as last applied here (None before the cluster's
    /// creation has committed): the data path's cache, following changes.
    pub fn placement(&self) -> watch::Receiver<Option<Arc<Placement>>> {
        self.inner.placement.clone()
    }

    /// The tenancy records as last applied here (rebuilt from the local
    /// snapshot and log at start, before any election), following changes.
    pub fn tenancy(&self) -> watch::Receiver<Arc<Tenancy>> {
        self.inner.tenancy.clone()
    }

    /// This member's view of the group.
    pub fn status(&self) -> MetaStatus {
        self.inner.status.borrow().clone()
    }

    /// Proposes `cmd` (forwarded to the leader from a follower); resolves
    /// once applied, or with why not.
    pub async fn propose(&self, cmd: Command) -> Result<(), MetaError> {
        match self.propose_local(cmd.clone()).await {
            Err(MetaError::NotLeader(Some(l))) => self.forward(l, &cmd).await,
            r => r,
        }
    }

    /// Proposes on this member; NotLeader if it does not lead.
    pub(crate) async fn propose_local(&self, cmd: Command) -> Result<(), MetaError> {
        let (tx, rx) = oneshot::channel();
        self.send(Input::Propose(cmd, tx))?;
        rx.await.map_err(|_| MetaError::Stopped)?
    }

    /// The state, linearizably (read index through the leader).
    pub async fn read_state(&self) -> Result<MetaState, MetaError> {
        let (tx, rx) = oneshot::channel();
        self.send(Input::Read(tx))?;
        rx.await.map_err(|_| MetaError::Stopped)?
    }

    /// Stops the loop and joins it (its writes are synced as they happen).
    pub async fn stop(&self) {
        let _ = self.send(Input::Stop);
        let t = self
            .inner
            .thread
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(t) = t {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }
}

/// Crash-test failpoints between the steps of handling a Ready:
/// `CAIRN_META_FAILPOINT=<name>` aborts the process there, after
/// `CAIRN_META_FAILPOINT_SKIP` (default 0) passes.
pub(crate) fn failpoint(name: &str) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static PASSES: AtomicU64 = AtomicU64::new(0);
    static ARMED: std::sync::OnceLock<Option<(String, u64)>> = std::sync::OnceLock::new();
    let armed = ARMED.get_or_init(|| {
        let n = std::env::var("CAIRN_META_FAILPOINT").ok()?;
        let skip = std::env::var("CAIRN_META_FAILPOINT_SKIP")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        Some((n, skip))
    });
    if let Some((n, skip)) = armed {
        if n == name && PASSES.fetch_add(1, Ordering::Relaxed) >= *skip {
            eprintln!("cairn-meta: failpoint {name}: aborting");
            std::process::abort();
        }
    }
}

#[cfg(test)]
mod tests;
