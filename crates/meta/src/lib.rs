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

mod fault;
mod input;
mod member;
mod model;
mod node;
mod state;
mod storage;
mod transport;

pub use member::Meta;
pub use model::{MetaConfig, MetaError, MetaStatus, MAX_RAFT_MESSAGE};
pub use state::{Command, MetaState};

#[cfg(test)]
mod tests;
