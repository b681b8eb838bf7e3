//! What a metadata member is configured with ([`MetaConfig`]), reports
//! ([`MetaStatus`]) and fails with ([`MetaError`]), and the bound on raft
//! messages from peers.

use cairn_cluster::Placement;
use cairn_tenancy::ChangeError;
use std::collections::BTreeMap;
use std::path::PathBuf;

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
