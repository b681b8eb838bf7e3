//! `cairn-rpc`: how Cairn nodes talk to each other.
//!
//! Owns: the generated code of `proto/cairn/node.proto` (the node service:
//! write a batch to a shard, select streamed as series batches with encoded
//! chunks, label names/values/series, exemplars, metadata, health) and
//! `proto/cairn/raft.proto` (raft messages as opaque bytes); the conversions
//! between those messages and the storage contract (`cairn-storage-api`);
//! [`NodeService`], which serves any store over gRPC, and [`RemoteNode`], a
//! client that is itself a store, so the engine, the API and the gateway
//! read and write a remote node exactly as a local one. Message sizes are
//! bounded ([`MAX_MESSAGE_BYTES`]) and every call carries a deadline.
//!
//! Must never depend on: RocksDB or the storage crate (it serves a store
//! through the contract), the engine, the HTTP API.

mod client;
mod convert;
#[doc(hidden)]
pub mod fuzzing;
mod server;

pub use client::RemoteNode;
pub use server::{Incoming, NodeService, SelectBatches};

/// The largest message a node sends or accepts (either way, either service).
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// Generated code of `proto/cairn/node.proto`.
pub mod node {
    tonic::include_proto!("cairn.node.v1");
}

/// Generated code of `proto/cairn/raft.proto`.
pub mod raft {
    tonic::include_proto!("cairn.raft.v1");
}

#[cfg(test)]
mod tests;
