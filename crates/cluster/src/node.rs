//! Cluster members as the placement knows them.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A node's id, unique in the cluster (e.g. `node-1`, a pod name).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(String);

impl NodeId {
    pub fn new(id: impl Into<String>) -> Self {
        NodeId(id.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for NodeId {
    fn from(s: &str) -> Self {
        NodeId(s.to_string())
    }
}

impl From<String> for NodeId {
    fn from(s: String) -> Self {
        NodeId(s)
    }
}

impl PartialEq<str> for NodeId {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

/// A storage node: its id, where to reach it, and its isolation group (zone,
/// rack) if the cluster declares them. Replicas of a shard never share a
/// node, nor an isolation group when groups are declared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Node {
    pub id: NodeId,
    /// HTTP address (`host:port`): the PromQL and write APIs.
    pub http_addr: String,
    /// gRPC address (`host:port`): shard writes and selects between nodes.
    pub grpc_addr: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isolation_group: Option<String>,
}

impl Node {
    pub fn new(
        id: impl Into<NodeId>,
        http_addr: impl Into<String>,
        grpc_addr: impl Into<String>,
    ) -> Self {
        Node {
            id: id.into(),
            http_addr: http_addr.into(),
            grpc_addr: grpc_addr.into(),
            isolation_group: None,
        }
    }

    /// The same node in isolation group `group`.
    pub fn in_group(mut self, group: impl Into<String>) -> Self {
        self.isolation_group = Some(group.into());
        self
    }
}
