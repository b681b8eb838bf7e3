//! What the raft loop is asked to do ([`Input`]: peers' raft messages,
//! proposals, reads, unreachable peers, stop), how long a proposal may
//! wait, and the wire encoding of raft messages — shared by the loop
//! (`node`) and the transport, which feeds it and sends what it emits.

use crate::model::MetaError;
use crate::state::{Command, MetaState};
use prost011::Message as _;
use raft::prelude::Message;
use std::time::Duration;
use tokio::sync::oneshot;

/// A proposal not applied by then failed.
pub(crate) const PROPOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// What the loop is asked to do.
pub(crate) enum Input {
    /// Raft messages from a peer (already size-checked and decoded).
    Raft(Vec<Message>),
    Propose(Command, oneshot::Sender<Result<(), MetaError>>),
    Read(oneshot::Sender<Result<MetaState, MetaError>>),
    Unreachable(u64),
    Stop,
}

impl std::fmt::Debug for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Input::Raft(_) => "Raft",
            Input::Propose(..) => "Propose",
            Input::Read(_) => "Read",
            Input::Unreachable(_) => "Unreachable",
            Input::Stop => "Stop",
        })
    }
}

/// Encodes a raft message for the wire.
pub(crate) fn encode(m: &Message) -> Vec<u8> {
    m.encode_to_vec()
}
