//! A replica's goal state in the placement.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A replica's goal state (not its liveness: an available replica may be
/// down; the consistency level decides what that costs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplicaState {
    /// Taking over the shard: receives writes (and counts toward write
    /// consistency) while it streams the shard's data from its peers; not
    /// read from until it is marked available.
    Initializing,
    /// Holds the shard's data: written and read.
    Available,
    /// Handing the shard over to an initializing replica: kept, and a source
    /// for streaming, until that replica is available, then dropped. Neither
    /// written nor read, and counts toward no consistency level.
    Leaving,
}

impl ReplicaState {
    /// Read from (and counted toward read consistency).
    pub fn is_readable(self) -> bool {
        self == ReplicaState::Available
    }

    /// Written to (and counted toward write consistency), as in M3: an
    /// initializing replica gets every write from the moment it is placed,
    /// so once it has streamed what came before it holds everything.
    pub fn is_writable(self) -> bool {
        matches!(self, ReplicaState::Available | ReplicaState::Initializing)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ReplicaState::Initializing => "initializing",
            ReplicaState::Available => "available",
            ReplicaState::Leaving => "leaving",
        }
    }
}

impl fmt::Display for ReplicaState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
