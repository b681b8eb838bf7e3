//! The crate's one error type.

use crate::consistency::{LevelNotMet, UnknownLevel};
use crate::node::NodeId;
use crate::state::ReplicaState;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a placement could not be built or changed, a level name could not be
/// parsed, or a consistency level was not met.
///
/// Only [`Error::LevelNotMet`] is retryable: every other error describes a
/// request that fails the same way however often it is repeated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("the shard count must be at least 1")]
    NoShards,
    #[error("{num_shards} shards is more than the {max} a placement holds")]
    TooManyShards { num_shards: u32, max: u32 },
    #[error("the replication factor must be at least 1")]
    ZeroReplicationFactor,
    #[error("a placement needs at least one node")]
    NoNodes,
    #[error("a node id must not be empty")]
    EmptyNodeId,
    #[error("node {node}: the isolation group, when given, must not be empty")]
    EmptyIsolationGroup { node: NodeId },
    #[error("node {node} is listed more than once")]
    DuplicateNode { node: NodeId },
    #[error("replication factor {rf} needs at least {rf} nodes, there are {nodes}")]
    NotEnoughNodes { rf: usize, nodes: usize },
    #[error(
        "replication factor {rf} needs at least {rf} distinct isolation groups, there are {groups}"
    )]
    NotEnoughGroups { rf: usize, groups: usize },
    #[error(
        "isolation groups must be declared by every node or by none: \
         node {declared} declares one, node {undeclared} does not"
    )]
    MixedIsolationGroups {
        declared: NodeId,
        undeclared: NodeId,
    },
    #[error("node {node} is already a member")]
    NodeExists { node: NodeId },
    #[error("node {node} is not a member")]
    UnknownNode { node: NodeId },
    #[error("node {node} is being removed")]
    NodeLeaving { node: NodeId },
    #[error("shard {shard} does not exist (the placement has {num_shards} shards)")]
    ShardOutOfRange { shard: u32, num_shards: u32 },
    #[error("shard {shard} has no replica on node {node}")]
    NoReplica { shard: u32, node: NodeId },
    #[error("shard {shard}: the replica on node {node} is {state}, not initializing")]
    NotInitializing {
        shard: u32,
        node: NodeId,
        state: ReplicaState,
    },
    #[error(
        "shard {shard}: no node can take over the replica on {node} without two replicas \
         on one node or in one isolation group (complete the shard's pending moves first)"
    )]
    NoTarget { shard: u32, node: NodeId },
    #[error("invalid placement: {0}")]
    Invalid(String),
    #[error(transparent)]
    UnknownLevel(#[from] UnknownLevel),
    #[error(transparent)]
    LevelNotMet(#[from] LevelNotMet),
}

impl Error {
    /// Whether repeating the same request may succeed: true only when a
    /// consistency level was not met (replicas may answer next time).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::LevelNotMet(_))
    }
}
