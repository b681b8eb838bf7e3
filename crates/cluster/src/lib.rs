//! `cairn-cluster`: shard placement and consistency arithmetic — the pure
//! logic of a replicated Cairn cluster.
//!
//! Owns: the [`Placement`] (a fixed shard count chosen at cluster creation, a
//! replication factor, the member [`Node`]s with their endpoints and
//! isolation groups, and per shard its [`Replica`]s with their
//! [`ReplicaState`]: initializing, available, leaving); how a placement is
//! built ([`Placement::initial`]) and changed ([`Placement::add_node`],
//! [`Placement::remove_node`], [`Placement::mark_available`]), each change a
//! new value with a higher [`Placement::version`]; the data path's questions
//! (which replicas of a shard are writable and readable, which shards a node
//! holds, which shard a series lands on — [`SeriesId::shard`], the very
//! function the storage node uses); and the consistency levels of writes
//! ([`WriteLevel`]) and reads ([`ReadLevel`]) with the evaluation of
//! per-replica results into an [`Outcome`].
//!
//! A placement is a plain serialisable value: the metadata state machine
//! (raft) stores and replicates it, every node caches it, the gateway and the
//! query role read it. Its invariants are checked by [`Placement::validate`],
//! which deserialisation runs too.
//!
//! Must never depend on: any I/O, tokio, RocksDB, raft, gRPC, or another Cairn
//! crate than `cairn-common`. Everything here is deterministic and runs in
//! unit tests without a clock or a network.
//!
//! ```
//! use cairn_cluster::{Node, Outcome, Placement, Tally, WriteLevel};
//! use cairn_common::{Labels, SeriesId};
//!
//! let nodes = (1..=3)
//!     .map(|i| {
//!         let host = format!("10.0.0.{i}");
//!         Node::new(format!("node-{i}"), format!("{host}:9201"), format!("{host}:9301"))
//!             .in_group(format!("zone-{i}"))
//!     })
//!     .collect();
//! let placement = Placement::initial(nodes, 256, 3)?;
//!
//! // The gateway: which shard, which replicas, when to acknowledge.
//! let series = SeriesId::of("acme", &Labels::from_pairs(&[("__name__", "up")]));
//! let shard = placement.shard_of(series);
//! let targets: Vec<_> = placement.writable(shard).collect();
//! let rf = placement.replication_factor();
//! let mut tally = Tally::new(shard, WriteLevel::Majority, rf, targets.len());
//! tally.success();
//! tally.failure(targets[1].node.clone());
//! assert_eq!(tally.decided(), None);
//! tally.success();
//! assert_eq!(tally.decided(), Some(Outcome::Success));
//! # Ok::<(), cairn_cluster::Error>(())
//! ```
//!
//! [`SeriesId::shard`]: cairn_common::SeriesId::shard

mod assign;
mod config;
mod consistency;
mod error;
mod node;
mod placement;
mod state;

pub use config::{ClusterSection, MemberSection};
pub use consistency::{
    evaluate, Level, LevelNotMet, Outcome, ReadLevel, Tally, UnknownLevel, WriteLevel,
};
pub use error::{Error, Result};
pub use node::{Node, NodeId};
pub use placement::{default_num_shards, Placement, Replica, MAX_SHARDS};
pub use state::ReplicaState;
