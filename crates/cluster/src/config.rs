//! The `cluster:` config section: who this node is, the initial members,
//! the shard count, the replication factor and the default consistency
//! levels. No members means a single node (no cluster).

use crate::consistency::{ReadLevel, WriteLevel};
use crate::node::{Node, NodeId};
use crate::placement::{Placement, MAX_SHARDS};
use cairn_common::config::{ByteSize, ConfigError, Duration};
use serde::Deserialize;

/// One initial member: its id and the addresses the others reach it at.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct MemberSection {
    pub id: String,
    /// `host:port` of its HTTP API.
    pub http: String,
    /// `host:port` of its gRPC (node and raft services).
    pub grpc: String,
    #[serde(default)]
    pub isolation_group: String,
}

/// `cluster:`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ClusterSection {
    /// This node's id: one of `members`' ids (empty for a single node).
    pub node_id: String,
    /// Where this node's gRPC listens (empty: its member's `grpc` address).
    pub grpc_listen: String,
    /// The members the cluster was created with, in a fixed order (raft
    /// ids are their positions, from 1): every member lists the same.
    pub members: Vec<MemberSection>,
    /// Shards of the cluster, fixed at creation.
    pub shards: u32,
    pub replication_factor: usize,
    /// Default level of a write (`one`, `majority`, `all`); a request's
    /// `X-Cairn-Write-Consistency` header overrides it.
    pub write_consistency: WriteLevel,
    /// Default level of a read (`one`, `unstrict_majority`, `majority`,
    /// `all`); `X-Cairn-Read-Consistency` overrides it.
    pub read_consistency: ReadLevel,
    /// How long a call to one replica may take.
    pub replica_timeout: Duration,
    /// Hinted handoff: the writes a replica missed (down, restarting, too
    /// slow) kept on the gateway, up to this much per replica, and replayed
    /// when it answers again (0: none kept).
    pub hints_max_size: ByteSize,
}

impl ClusterSection {
    /// True when members are configured.
    pub fn is_cluster(&self) -> bool {
        !self.members.is_empty()
    }

    /// Checks the section; the error names the bad key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.shards == 0 || self.shards > MAX_SHARDS {
            return Err(ConfigError::new(
                "cluster.shards",
                format!("must be between 1 and {MAX_SHARDS}"),
            ));
        }
        if self.replication_factor == 0 {
            return Err(ConfigError::new(
                "cluster.replication-factor",
                "must be at least 1",
            ));
        }
        self.replica_timeout.positive("cluster.replica-timeout")?;
        if !self.is_cluster() {
            return Ok(());
        }
        for (i, m) in self.members.iter().enumerate() {
            let key = format!("cluster.members[{i}]");
            if m.id.is_empty() {
                return Err(ConfigError::new(format!("{key}.id"), "must not be empty"));
            }
            if self.members[..i].iter().any(|o| o.id == m.id) {
                return Err(ConfigError::new(
                    format!("{key}.id"),
                    format!("{:?} is listed twice", m.id),
                ));
            }
            for (field, addr) in [("http", &m.http), ("grpc", &m.grpc)] {
                if addr.parse::<std::net::SocketAddr>().is_err() {
                    return Err(ConfigError::new(
                        format!("{key}.{field}"),
                        format!("{addr:?} is not an address (host:port, e.g. 127.0.0.1:9301)"),
                    ));
                }
            }
        }
        if self.member(&self.node_id).is_none() {
            return Err(ConfigError::new(
                "cluster.node-id",
                format!(
                    "{:?} is not one of cluster.members ({})",
                    self.node_id,
                    self.members
                        .iter()
                        .map(|m| m.id.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        if self.replication_factor > self.members.len() {
            return Err(ConfigError::new(
                "cluster.replication-factor",
                format!(
                    "{} is more than the {} members",
                    self.replication_factor,
                    self.members.len()
                ),
            ));
        }
        if !self.grpc_listen.is_empty() && self.grpc_listen.parse::<std::net::SocketAddr>().is_err()
        {
            return Err(ConfigError::new(
                "cluster.grpc-listen",
                format!("{:?} is not an address (host:port)", self.grpc_listen),
            ));
        }
        self.initial_placement()
            .map_err(|e| ConfigError::new("cluster.members", e.to_string()))?;
        Ok(())
    }

    fn member(&self, id: &str) -> Option<&MemberSection> {
        self.members.iter().find(|m| m.id == id)
    }

    /// This node's member entry (a validated cluster section has one).
    pub fn this_member(&self) -> Option<&MemberSection> {
        self.member(&self.node_id)
    }

    /// This node's raft id: its position among the members, from 1.
    pub fn raft_id(&self) -> Option<u64> {
        self.members
            .iter()
            .position(|m| m.id == self.node_id)
            .map(|i| i as u64 + 1)
    }

    /// The address this node's gRPC listens on.
    pub fn grpc_listen_addr(&self) -> Option<String> {
        if !self.grpc_listen.is_empty() {
            return Some(self.grpc_listen.clone());
        }
        self.this_member().map(|m| m.grpc.clone())
    }

    /// The members as placement nodes.
    pub fn nodes(&self) -> Vec<Node> {
        self.members
            .iter()
            .map(|m| {
                let n = Node::new(m.id.clone(), m.http.clone(), m.grpc.clone());
                if m.isolation_group.is_empty() {
                    n
                } else {
                    n.in_group(m.isolation_group.clone())
                }
            })
            .collect()
    }

    /// The placement the cluster is created with: computed the same on
    /// every member from the same members, shard count and factor.
    pub fn initial_placement(&self) -> crate::Result<Placement> {
        Placement::initial(self.nodes(), self.shards, self.replication_factor)
    }

    /// This node's id.
    pub fn node(&self) -> NodeId {
        NodeId::new(self.node_id.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three() -> ClusterSection {
        ClusterSection {
            node_id: "node-2".into(),
            grpc_listen: String::new(),
            members: (1..=3)
                .map(|i| MemberSection {
                    id: format!("node-{i}"),
                    http: format!("127.0.0.1:920{i}"),
                    grpc: format!("127.0.0.1:930{i}"),
                    isolation_group: String::new(),
                })
                .collect(),
            shards: 16,
            replication_factor: 3,
            write_consistency: WriteLevel::Majority,
            read_consistency: ReadLevel::UnstrictMajority,
            replica_timeout: Duration(std::time::Duration::from_secs(5)),
            hints_max_size: ByteSize(1 << 20),
        }
    }

    #[test]
    fn a_valid_section_gives_ids_and_the_same_placement_everywhere() {
        let c = three();
        c.validate().unwrap();
        assert_eq!(c.raft_id(), Some(2));
        assert_eq!(c.grpc_listen_addr().as_deref(), Some("127.0.0.1:9302"));
        let mut other = c.clone();
        other.node_id = "node-3".into();
        assert_eq!(
            c.initial_placement().unwrap(),
            other.initial_placement().unwrap()
        );
    }

    #[test]
    fn bad_keys_are_named() {
        type Edit = Box<dyn Fn(&mut ClusterSection)>;
        let cases: Vec<(Edit, &str)> = vec![
            (Box::new(|c| c.node_id = "node-9".into()), "cluster.node-id"),
            (
                Box::new(|c| c.replication_factor = 4),
                "cluster.replication-factor",
            ),
            (Box::new(|c| c.shards = 0), "cluster.shards"),
            (
                Box::new(|c| c.members[1].grpc = "nowhere".into()),
                "cluster.members[1].grpc",
            ),
            (
                Box::new(|c| c.members[2].id = "node-1".into()),
                "cluster.members[2].id",
            ),
            (
                Box::new(|c| c.replica_timeout = Duration(std::time::Duration::ZERO)),
                "cluster.replica-timeout",
            ),
        ];
        for (f, key) in cases {
            let mut c = three();
            f(&mut c);
            let e = c.validate().unwrap_err();
            assert_eq!(e.key, key, "{e}");
        }
    }
}
