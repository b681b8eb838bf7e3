//! A running metadata member ([`Meta`]): starts the raft loop and the peer
//! transport, follows the placement and tenancy records as applied here,
//! proposes (forwarding a follower's proposal to the leader) and reads
//! linearizably.

use crate::input::{Input, PROPOSE_TIMEOUT};
use crate::model::{MetaConfig, MetaError, MetaStatus, MAX_RAFT_MESSAGE};
use crate::node;
use crate::state::{Command, MetaState};
use crate::transport::{self, channel, client, RaftService, REFUSED};
use cairn_cluster::Placement;
use cairn_rpc::raft::raft_server::{Raft, RaftServer};
use cairn_rpc::raft::ProposeRequest;
use cairn_tenancy::{ChangeError, Tenancy};
use std::collections::BTreeMap;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use tokio::sync::{oneshot, watch};
use tonic::Request;

#[derive(Debug)]
struct Inner {
    to_loop: Mutex<Sender<Input>>,
    peers: BTreeMap<u64, String>,
    placement: watch::Receiver<Option<Arc<Placement>>>,
    tenancy: watch::Receiver<Arc<Tenancy>>,
    status: watch::Receiver<MetaStatus>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

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

impl Meta {
    /// The `Raft` service to mount on the node's gRPC server.
    pub fn raft_service(&self) -> RaftServer<impl Raft> {
        RaftServer::new(RaftService {
            to_loop: Mutex::new(
                self.inner
                    .to_loop
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone(),
            ),
        })
        .max_decoding_message_size(MAX_RAFT_MESSAGE * 4)
        .max_encoding_message_size(MAX_RAFT_MESSAGE * 4)
    }

    /// Forwards `cmd` to the leader `leader` (a follower's proposal).
    pub(crate) async fn forward(&self, leader: u64, cmd: &Command) -> Result<(), MetaError> {
        let addr = self
            .inner
            .peers
            .get(&leader)
            .ok_or(MetaError::NotLeader(None))?;
        let mut c = client(channel(addr)?);
        let mut req = Request::new(ProposeRequest {
            command: serde_json::to_vec(cmd)
                .map_err(|e| MetaError::Refused(ChangeError::Invalid(e.to_string())))?,
        });
        req.set_timeout(PROPOSE_TIMEOUT);
        let r = c
            .propose(req)
            .await
            .map_err(|s| {
                MetaError::Unavailable(format!(
                    "forwarding to meta leader {leader}: {}",
                    s.message()
                ))
            })?
            .into_inner();
        if r.error.is_empty() {
            return Ok(());
        }
        // A refusal keeps its kind across the hop; other failures are the
        // leader's to report.
        match r.error.strip_prefix(REFUSED) {
            Some(j) => Err(MetaError::Refused(
                serde_json::from_str(j).unwrap_or(ChangeError::Invalid(j.to_string())),
            )),
            None => Err(MetaError::Unavailable(format!(
                "meta leader {leader}: {}",
                r.error
            ))),
        }
    }
}
