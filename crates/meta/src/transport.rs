//! Raft traffic between members over gRPC: outbound, one task per peer with
//! a bounded queue (full or failing: dropped, and the peer reported
//! unreachable — raft retries); inbound, the `Raft` service, whose messages
//! are size-bounded before they are decoded.

use crate::input::{encode, Input};
use crate::model::{MetaError, MAX_RAFT_MESSAGE};
use crate::state::Command;
use cairn_rpc::raft::raft_client::RaftClient;
use cairn_rpc::raft::raft_server::Raft;
use cairn_rpc::raft::{ProposeReply, ProposeRequest, RaftAck, RaftBatch};
use prost011::Message as _;
use raft::prelude::Message;
use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc::Sender;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::mpsc;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};

/// Prefix of a forwarded proposal's refusal (JSON of the `ChangeError` follows).
pub(crate) const REFUSED: &str = "refused:";

/// Messages queued per peer before they are dropped.
const PEER_QUEUE: usize = 1024;
/// A call to a peer gives up after this.
const CALL_TIMEOUT: Duration = Duration::from_secs(1);

pub(crate) fn channel(addr: &str) -> Result<Channel, MetaError> {
    Ok(Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| MetaError::Store(format!("meta peer address {addr:?}: {e}")))?
        .connect_timeout(CALL_TIMEOUT)
        .tcp_nodelay(true)
        .connect_lazy())
}

pub(crate) fn client(ch: Channel) -> RaftClient<Channel> {
    RaftClient::new(ch)
        .max_decoding_message_size(MAX_RAFT_MESSAGE)
        .max_encoding_message_size(MAX_RAFT_MESSAGE)
}

/// The loop's way out: a queue per peer.
pub(crate) struct Outbound {
    queues: HashMap<u64, mpsc::Sender<Message>>,
}

impl Outbound {
    /// Starts a sender task per peer (not `me`) on `rt`.
    pub(crate) fn start(
        me: u64,
        peers: &BTreeMap<u64, String>,
        rt: &tokio::runtime::Handle,
        to_loop: Sender<Input>,
    ) -> Result<Outbound, MetaError> {
        let mut queues = HashMap::new();
        for (&id, addr) in peers.iter().filter(|(id, _)| **id != me) {
            let (tx, mut rx) = mpsc::channel::<Message>(PEER_QUEUE);
            let mut c = client(channel(addr)?);
            let to_loop = to_loop.clone();
            rt.spawn(async move {
                while let Some(first) = rx.recv().await {
                    let mut messages = vec![encode(&first)];
                    while let Ok(m) = rx.try_recv() {
                        messages.push(encode(&m));
                        if messages.len() >= 64 {
                            break;
                        }
                    }
                    let mut req = Request::new(RaftBatch { from: me, messages });
                    req.set_timeout(CALL_TIMEOUT);
                    if c.send(req).await.is_err() {
                        let _ = to_loop.send(Input::Unreachable(id));
                    }
                }
            });
            queues.insert(id, tx);
        }
        Ok(Outbound { queues })
    }

    pub(crate) fn send(&self, m: Message) {
        if let Some(q) = self.queues.get(&m.to) {
            // Full: dropped; raft resends what matters.
            let _ = q.try_send(m);
        }
    }
}

/// The `Raft` gRPC service of this member.
pub(crate) struct RaftService {
    pub(crate) to_loop: Mutex<Sender<Input>>,
}

impl std::fmt::Debug for RaftService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftService").finish_non_exhaustive()
    }
}

#[tonic::async_trait]
impl Raft for RaftService {
    async fn send(&self, req: Request<RaftBatch>) -> Result<Response<RaftAck>, Status> {
        let batch = req.into_inner();
        let mut msgs = Vec::with_capacity(batch.messages.len());
        for b in &batch.messages {
            if b.len() > MAX_RAFT_MESSAGE {
                return Err(Status::invalid_argument(format!(
                    "raft message of {} bytes is over the {MAX_RAFT_MESSAGE}-byte bound",
                    b.len()
                )));
            }
            let m = Message::decode(&b[..])
                .map_err(|e| Status::invalid_argument(format!("raft message: {e}")))?;
            msgs.push(m);
        }
        self.to_loop
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(Input::Raft(msgs))
            .map_err(|_| Status::unavailable("meta loop stopped"))?;
        Ok(Response::new(RaftAck {}))
    }

    async fn propose(
        &self,
        req: Request<ProposeRequest>,
    ) -> Result<Response<ProposeReply>, Status> {
        let cmd: Command = serde_json::from_slice(&req.into_inner().command)
            .map_err(|e| Status::invalid_argument(format!("meta command: {e}")))?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.to_loop
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(Input::Propose(cmd, tx))
            .map_err(|_| Status::unavailable("meta loop stopped"))?;
        let applied = rx.await.unwrap_or(Err(MetaError::Stopped));
        let error = match applied {
            Ok(()) => String::new(),
            Err(MetaError::Refused(c)) => {
                format!("{REFUSED}{}", serde_json::to_string(&c).unwrap_or_default())
            }
            Err(e) => e.to_string(),
        };
        Ok(Response::new(ProposeReply { error }))
    }
}
