//! The placement: shards, their replicas, and how they change.

use std::collections::{BTreeMap, BTreeSet};

use cairn_common::SeriesId;
use serde::{Deserialize, Serialize};

use crate::assign;
use crate::error::{Error, Result};
use crate::node::{Node, NodeId};
use crate::state::ReplicaState;

/// The most shards a placement holds (64 per node for 1024 nodes).
pub const MAX_SHARDS: u32 = 1 << 16;

/// The shard count for a new cluster of `nodes` nodes: 64 per node, rounded
/// up to a power of two (64 for one node, 256 for three), at most
/// [`MAX_SHARDS`]. The shard count never changes after creation.
pub fn default_num_shards(nodes: usize) -> u32 {
    let n = (nodes.max(1) as u64).saturating_mul(64);
    n.checked_next_power_of_two()
        .unwrap_or(u64::MAX)
        .min(u64::from(MAX_SHARDS)) as u32
}

/// One replica of a shard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Replica {
    pub node: NodeId,
    pub state: ReplicaState,
    /// For a leaving replica: the node whose initializing replica takes
    /// over from it; this one is dropped when that one is marked available.
    /// `None` for available and initializing replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaced_by: Option<NodeId>,
}

impl Replica {
    fn available(node: NodeId) -> Self {
        Replica {
            node,
            state: ReplicaState::Available,
            replaced_by: None,
        }
    }

    fn initializing(node: NodeId) -> Self {
        Replica {
            node,
            state: ReplicaState::Initializing,
            replaced_by: None,
        }
    }

    /// This replica, leaving, handing over to `to`.
    fn leave_to(&mut self, to: &NodeId) {
        self.state = ReplicaState::Leaving;
        self.replaced_by = Some(to.clone());
    }

    /// Counts toward the replication factor (available or initializing).
    fn is_owner(&self) -> bool {
        self.state.is_writable()
    }
}

/// Which nodes hold each shard, in which state; versioned.
///
/// A value: every change returns a new placement with `version + 1` and
/// leaves `self` untouched, so a failed change changes nothing.
///
/// Invariants, checked by [`Placement::validate`] (and on deserialisation),
/// hold after [`Placement::initial`] and after every successful change:
/// - every shard has exactly `rf` *owners* (available or initializing
///   replicas), plus zero or more leaving replicas;
/// - no node holds two replicas of a shard (in any states);
/// - when nodes declare isolation groups, a shard's owners are in distinct
///   groups (a leaving replica may share its group with the initializing
///   replica that replaces it);
/// - every leaving replica is `replaced_by` an initializing replica of the
///   same shard (several may hand over to one);
/// - a node being removed holds only leaving replicas, and at least one
///   (it leaves the placement with its last one).
///
/// And the rule that makes changes safe for acknowledged writes: a replica
/// stops being an owner only by becoming leaving, and a leaving replica is
/// dropped only when a replica that took over from it is marked available
/// (has streamed the shard's data). No change drops a replica that may hold
/// the only copies of acknowledged writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", try_from = "RawPlacement")]
pub struct Placement {
    version: u64,
    num_shards: u32,
    replication_factor: usize,
    /// Members, sorted by id.
    nodes: Vec<Node>,
    /// Members being removed, sorted.
    leaving_nodes: Vec<NodeId>,
    /// `shards[s]`: the replicas of shard `s`.
    shards: Vec<Vec<Replica>>,
}

/// The serialised form, validated into a [`Placement`].
#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct RawPlacement {
    version: u64,
    num_shards: u32,
    replication_factor: usize,
    nodes: Vec<Node>,
    #[serde(default)]
    leaving_nodes: Vec<NodeId>,
    shards: Vec<Vec<Replica>>,
}

impl TryFrom<RawPlacement> for Placement {
    type Error = Error;

    fn try_from(raw: RawPlacement) -> Result<Self> {
        let p = Placement {
            version: raw.version,
            num_shards: raw.num_shards,
            replication_factor: raw.replication_factor,
            nodes: raw.nodes,
            leaving_nodes: raw.leaving_nodes,
            shards: raw.shards,
        };
        p.validate()?;
        Ok(p)
    }
}

impl Placement {
    /// The placement of a new cluster: `num_shards` shards, each with `rf`
    /// available replicas (a new cluster has no data to stream), on distinct
    /// nodes and, when the nodes declare isolation groups, in distinct
    /// groups. Version 1.
    ///
    /// Deterministic: the same nodes (in any order), shard count and `rf`
    /// give the same placement. Balanced: without isolation groups every
    /// node holds `num_shards × rf / nodes` replicas rounded down or up;
    /// with groups, each group holds a share proportional to its node
    /// count (no more than one replica per shard), split evenly (within
    /// one) among its nodes.
    pub fn initial(nodes: Vec<Node>, num_shards: u32, rf: usize) -> Result<Placement> {
        if num_shards == 0 {
            return Err(Error::NoShards);
        }
        if num_shards > MAX_SHARDS {
            return Err(Error::TooManyShards {
                num_shards,
                max: MAX_SHARDS,
            });
        }
        if rf == 0 {
            return Err(Error::ZeroReplicationFactor);
        }
        if nodes.is_empty() {
            return Err(Error::NoNodes);
        }
        let mut nodes = nodes;
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        check_nodes(&nodes)?;
        if rf > nodes.len() {
            return Err(Error::NotEnoughNodes {
                rf,
                nodes: nodes.len(),
            });
        }
        let domains = domains(&nodes);
        if nodes[0].isolation_group.is_some() && rf > domains.len() {
            return Err(Error::NotEnoughGroups {
                rf,
                groups: domains.len(),
            });
        }
        let shards = assign::assign(&domains, num_shards as usize, rf)
            .into_iter()
            .map(|owners| owners.into_iter().map(Replica::available).collect())
            .collect();
        let p = Placement {
            version: 1,
            num_shards,
            replication_factor: rf,
            nodes,
            leaving_nodes: Vec::new(),
            shards,
        };
        debug_assert_eq!(p.validate(), Ok(()));
        Ok(p)
    }

    /// The placement of `cairn serve`: one node holding every shard, RF 1.
    pub fn single_node(node: Node, num_shards: u32) -> Result<Placement> {
        Placement::initial(vec![node], num_shards, 1)
    }

    /// Increases on every change; a node applies a placement only if it is
    /// newer than the one it has.
    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn num_shards(&self) -> u32 {
        self.num_shards
    }

    pub fn replication_factor(&self) -> usize {
        self.replication_factor
    }

    /// Members (including those being removed), sorted by id.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    pub fn node(&self, id: &NodeId) -> Option<&Node> {
        self.node_index(id).map(|i| &self.nodes[i])
    }

    /// Whether `id` is being removed (holds only leaving replicas).
    pub fn is_leaving(&self, id: &NodeId) -> bool {
        self.leaving_nodes.binary_search(id).is_ok()
    }

    /// Whether isolation groups are declared (by every node, then).
    pub fn has_isolation_groups(&self) -> bool {
        self.nodes
            .first()
            .is_some_and(|n| n.isolation_group.is_some())
    }

    /// The shard a series lands on: exactly what the storage node computes.
    pub fn shard_of(&self, id: SeriesId) -> u32 {
        id.shard(self.num_shards)
    }

    /// Every replica of `shard` in any state; empty for a shard out of range.
    pub fn replicas(&self, shard: u32) -> &[Replica] {
        self.shards
            .get(shard as usize)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// The replicas a write to `shard` goes to and that count toward write
    /// consistency: available and initializing (`rf` of them).
    pub fn writable(&self, shard: u32) -> impl Iterator<Item = &Replica> + '_ {
        self.replicas(shard)
            .iter()
            .filter(|r| r.state.is_writable())
    }

    /// The replicas a read of `shard` asks: available ones only (at most
    /// `rf`; fewer while the shard moves).
    pub fn readable(&self, shard: u32) -> impl Iterator<Item = &Replica> + '_ {
        self.replicas(shard)
            .iter()
            .filter(|r| r.state.is_readable())
    }

    /// The shards `node` holds a replica of, in shard order, with that
    /// replica's state.
    pub fn shards_of(&self, node: &NodeId) -> Vec<(u32, ReplicaState)> {
        self.shards
            .iter()
            .enumerate()
            .filter_map(|(s, rs)| {
                rs.iter()
                    .find(|r| &r.node == node)
                    .map(|r| (s as u32, r.state))
            })
            .collect()
    }

    /// How many shards `node` owns (available or initializing replicas).
    pub fn load(&self, node: &NodeId) -> usize {
        self.shards
            .iter()
            .filter(|rs| rs.iter().any(|r| &r.node == node && r.is_owner()))
            .count()
    }

    /// Moves in progress: `(shard, initializing replica)` pairs.
    pub fn pending(&self) -> impl Iterator<Item = (u32, &Replica)> + '_ {
        self.shards.iter().enumerate().flat_map(|(s, rs)| {
            rs.iter()
                .filter(|r| r.state == ReplicaState::Initializing)
                .map(move |r| (s as u32, r))
        })
    }

    /// Whether no move is in progress (every replica available).
    pub fn is_settled(&self) -> bool {
        self.shards
            .iter()
            .flatten()
            .all(|r| r.state == ReplicaState::Available)
    }

    /// A placement with `node` added, and a fair share of replicas moving
    /// to it: repeatedly the most loaded node (ties: the smaller id) hands
    /// over its lowest eligible shard, while it owns at least two more
    /// shards than the new node; with isolation groups, only a node whose
    /// load is the highest in its group hands over. The new replica is
    /// initializing, the old one leaving, replaced by the new one. A shard
    /// is eligible if no move is in progress in it (so a shard is never
    /// missing more than one available replica because of additions) and
    /// the swap keeps its owners in distinct isolation groups. Version + 1.
    ///
    /// From a settled placement without isolation groups whose loads are
    /// within one of each other, the loads afterwards (the new node's
    /// counting its initializing replicas) are within one of each other.
    /// With groups, a group whose nodes' loads were within one of each
    /// other stays so (the new node's group: measured, not proven).
    pub fn add_node(&self, node: Node) -> Result<Placement> {
        if self.node_index(&node.id).is_some() {
            return Err(if self.is_leaving(&node.id) {
                Error::NodeLeaving { node: node.id }
            } else {
                Error::NodeExists { node: node.id }
            });
        }
        let mut next = self.clone();
        let at = next
            .nodes
            .binary_search_by(|n| n.id.cmp(&node.id))
            .unwrap_err();
        next.nodes.insert(at, node.clone());
        check_nodes(&next.nodes)?;

        let new = node.id;
        let mut loads = next.loads();
        let groups = next.groups();
        // Each node's eligible shards, in shard order. A shard stops being
        // eligible (for every node) once it takes a move, which `moved` marks.
        let mut eligible: BTreeMap<NodeId, std::collections::VecDeque<u32>> = BTreeMap::new();
        for (s, rs) in next.shards.iter().enumerate() {
            if rs.iter().any(|r| r.state != ReplicaState::Available) {
                continue;
            }
            for r in rs {
                let clash = groups.get(&new).is_some_and(|g| {
                    rs.iter()
                        .any(|o| o.node != r.node && groups.get(&o.node) == Some(g))
                });
                if !clash {
                    eligible
                        .entry(r.node.clone())
                        .or_default()
                        .push_back(s as u32);
                }
            }
        }
        let mut moved = vec![false; next.shards.len()];
        loop {
            for shards in eligible.values_mut() {
                while shards.front().is_some_and(|&s| moved[s as usize]) {
                    shards.pop_front();
                }
            }
            // The most loaded node of its isolation group (so a group's
            // loads stay within one of each other), among those with a shard
            // to give.
            let mut group_max: BTreeMap<Option<&String>, usize> = BTreeMap::new();
            for (n, &l) in loads.iter().filter(|(n, _)| **n != new) {
                let m = group_max.entry(groups.get(n)).or_default();
                *m = (*m).max(l);
            }
            // Then the most loaded such source; on equal loads, the smaller id.
            let Some((src, shard)) = eligible
                .iter()
                .filter(|(n, _)| groups.is_empty() || loads[*n] == group_max[&groups.get(*n)])
                .filter_map(|(n, shards)| Some((n, *shards.front()?)))
                .max_by(|a, b| loads[a.0].cmp(&loads[b.0]).then(b.0.cmp(a.0)))
                .map(|(n, s)| (n.clone(), s))
            else {
                break;
            };
            if loads[&src] < loads[&new] + 2 {
                break;
            }
            moved[shard as usize] = true;
            let rs = &mut next.shards[shard as usize];
            for r in rs.iter_mut() {
                if r.node == src {
                    r.leave_to(&new);
                }
            }
            rs.push(Replica::initializing(new.clone()));
            *loads.get_mut(&src).expect("a replica's node is a member") -= 1;
            *loads.get_mut(&new).expect("inserted above") += 1;
        }
        next.version += 1;
        debug_assert_eq!(next.validate(), Ok(()));
        Ok(next)
    }

    /// A placement with `node` being removed: each replica it owns becomes
    /// leaving, and the shard gets a new initializing owner.
    ///
    /// For a replica that was available, the new owner is the least loaded
    /// node (ties: the smaller id) that keeps the shard's nodes, and its
    /// owners' isolation groups, distinct. For a replica that was still
    /// initializing (a move *to* `node` in progress) the move is turned
    /// back: the replica it was replacing becomes the new owner again, as
    /// initializing (it missed the writes made since the move began), if its
    /// node stays and its group is free; else a node chosen as above takes
    /// over from both. Either way `node`'s replica is leaving, not dropped:
    /// it may hold writes it acknowledged.
    ///
    /// `node` leaves the placement with its last replica: at once if it
    /// holds none, else when the last replica taking over from it is marked
    /// available ([`Self::mark_available`]). Version + 1.
    pub fn remove_node(&self, node: &NodeId) -> Result<Placement> {
        if self.node_index(node).is_none() {
            return Err(Error::UnknownNode { node: node.clone() });
        }
        if self.is_leaving(node) {
            return Err(Error::NodeLeaving { node: node.clone() });
        }
        let rf = self.replication_factor;
        let staying: Vec<&Node> = self
            .nodes
            .iter()
            .filter(|n| &n.id != node && !self.is_leaving(&n.id))
            .collect();
        if staying.len() < rf {
            return Err(Error::NotEnoughNodes {
                rf,
                nodes: staying.len(),
            });
        }
        if self.has_isolation_groups() {
            let groups: BTreeSet<_> = staying.iter().map(|n| &n.isolation_group).collect();
            if groups.len() < rf {
                return Err(Error::NotEnoughGroups {
                    rf,
                    groups: groups.len(),
                });
            }
        }

        let mut next = self.clone();
        let at = next.leaving_nodes.binary_search(node).unwrap_err();
        next.leaving_nodes.insert(at, node.clone());
        let groups = next.groups();
        let mut loads = next.loads();
        for s in 0..next.shards.len() {
            let rs = &mut next.shards[s];
            let Some(i) = rs.iter().position(|r| &r.node == node) else {
                continue;
            };
            let was = rs[i].state;
            if was == ReplicaState::Leaving {
                continue;
            }
            // Not an owner any more; from here on `rs` has rf - 1 owners.
            rs[i].state = ReplicaState::Leaving;
            // A move to `node` in progress: give the shard back to a replica
            // it was taking over from, if that one's node stays and its
            // isolation group is free.
            let back = (was == ReplicaState::Initializing)
                .then(|| {
                    rs.iter().position(|r| {
                        r.replaced_by.as_ref() == Some(node)
                            && !next.leaving_nodes.contains(&r.node)
                            && !group_taken(rs, &groups, &r.node)
                    })
                })
                .flatten();
            let owner = match back {
                Some(j) => {
                    rs[j].state = ReplicaState::Initializing;
                    rs[j].replaced_by = None;
                    rs[j].node.clone()
                }
                None => {
                    let target = next
                        .nodes
                        .iter()
                        .map(|n| &n.id)
                        .filter(|id| {
                            !next.leaving_nodes.contains(id)
                                && !rs.iter().any(|r| &r.node == *id)
                                && !group_taken(rs, &groups, id)
                        })
                        .min_by(|a, b| loads[*a].cmp(&loads[*b]).then(a.cmp(b)))
                        .cloned()
                        .ok_or_else(|| Error::NoTarget {
                            shard: s as u32,
                            node: node.clone(),
                        })?;
                    rs.push(Replica::initializing(target.clone()));
                    target
                }
            };
            *loads.get_mut(&owner).expect("a replica's node is a member") += 1;
            // `node`, and whoever was handing over to it, hand over to the
            // new owner.
            for r in rs.iter_mut() {
                if &r.node == node || r.replaced_by.as_ref() == Some(node) {
                    r.leave_to(&owner);
                }
            }
        }
        next.drop_if_gone(node);
        next.version += 1;
        debug_assert_eq!(next.validate(), Ok(()));
        Ok(next)
    }

    /// A placement in which `node`'s initializing replica of `shard` is
    /// available (it has streamed the shard's data) and the leaving replicas
    /// it took over from are dropped; a node being removed leaves the
    /// placement with its last replica. Version + 1.
    pub fn mark_available(&self, shard: u32, node: &NodeId) -> Result<Placement> {
        let rs = self
            .shards
            .get(shard as usize)
            .ok_or(Error::ShardOutOfRange {
                shard,
                num_shards: self.num_shards,
            })?;
        let i = rs
            .iter()
            .position(|r| &r.node == node)
            .ok_or_else(|| Error::NoReplica {
                shard,
                node: node.clone(),
            })?;
        if rs[i].state != ReplicaState::Initializing {
            return Err(Error::NotInitializing {
                shard,
                node: node.clone(),
                state: rs[i].state,
            });
        }
        let mut next = self.clone();
        let rs = &mut next.shards[shard as usize];
        rs[i].state = ReplicaState::Available;
        let gone: Vec<NodeId> = rs
            .iter()
            .filter(|r| r.replaced_by.as_ref() == Some(node))
            .map(|r| r.node.clone())
            .collect();
        rs.retain(|r| r.replaced_by.as_ref() != Some(node));
        for g in &gone {
            next.drop_if_gone(g);
        }
        next.version += 1;
        debug_assert_eq!(next.validate(), Ok(()));
        Ok(next)
    }

    /// Checks every invariant listed on [`Placement`]; names the first
    /// one broken.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::Invalid(msg));
        if self.num_shards == 0 {
            return Err(Error::NoShards);
        }
        if self.num_shards > MAX_SHARDS {
            return Err(Error::TooManyShards {
                num_shards: self.num_shards,
                max: MAX_SHARDS,
            });
        }
        if self.replication_factor == 0 {
            return Err(Error::ZeroReplicationFactor);
        }
        if self.nodes.is_empty() {
            return Err(Error::NoNodes);
        }
        if self.version == 0 {
            return bad("version 0 (placements start at 1)".into());
        }
        check_nodes(&self.nodes)?;
        if !self.nodes.windows(2).all(|w| w[0].id < w[1].id) {
            return bad("nodes are not sorted by id".into());
        }
        if !self.leaving_nodes.windows(2).all(|w| w[0] < w[1]) {
            return bad("leaving nodes are not sorted and distinct".into());
        }
        if let Some(n) = self
            .leaving_nodes
            .iter()
            .find(|n| self.node_index(n).is_none())
        {
            return bad(format!("leaving node {n} is not a member"));
        }
        if self.shards.len() != self.num_shards as usize {
            return bad(format!(
                "{} shard entries for {} shards",
                self.shards.len(),
                self.num_shards
            ));
        }
        let rf = self.replication_factor;
        let groups = self.groups();
        let mut holds: BTreeSet<&NodeId> = BTreeSet::new();
        for (s, rs) in self.shards.iter().enumerate() {
            let mut seen = BTreeSet::new();
            let mut owner_groups = BTreeSet::new();
            let mut owners = 0;
            for r in rs {
                if self.node_index(&r.node).is_none() {
                    return bad(format!("shard {s}: replica on unknown node {}", r.node));
                }
                if !seen.insert(&r.node) {
                    return bad(format!("shard {s}: two replicas on node {}", r.node));
                }
                holds.insert(&r.node);
                if r.is_owner() {
                    owners += 1;
                    if self.is_leaving(&r.node) {
                        return bad(format!(
                            "shard {s}: node {} is being removed but its replica is {}",
                            r.node, r.state
                        ));
                    }
                    if let Some(g) = groups.get(&r.node) {
                        if !owner_groups.insert(g) {
                            return bad(format!("shard {s}: two replicas in isolation group {g}"));
                        }
                    }
                }
                match (r.state, &r.replaced_by) {
                    (ReplicaState::Leaving, Some(to)) => {
                        if !rs
                            .iter()
                            .any(|o| &o.node == to && o.state == ReplicaState::Initializing)
                        {
                            return bad(format!(
                                "shard {s}: leaving replica on {} is replaced by {to}, \
                                 which has no initializing replica",
                                r.node
                            ));
                        }
                    }
                    (ReplicaState::Leaving, None) => {
                        return bad(format!(
                            "shard {s}: leaving replica on {} is replaced by nobody",
                            r.node
                        ));
                    }
                    (_, None) => {}
                    (state, Some(to)) => {
                        return bad(format!(
                            "shard {s}: {state} replica on {} names a replacement ({to})",
                            r.node
                        ));
                    }
                }
            }
            if owners != rf {
                return bad(format!(
                    "shard {s}: {owners} available or initializing replicas, not {rf}"
                ));
            }
        }
        if let Some(n) = self.leaving_nodes.iter().find(|n| !holds.contains(n)) {
            return bad(format!("node {n} is being removed but holds no replica"));
        }
        Ok(())
    }

    fn node_index(&self, id: &NodeId) -> Option<usize> {
        self.nodes.binary_search_by(|n| n.id.cmp(id)).ok()
    }

    /// Owned shards per member (every member present, zero included).
    fn loads(&self) -> BTreeMap<NodeId, usize> {
        let mut loads: BTreeMap<NodeId, usize> =
            self.nodes.iter().map(|n| (n.id.clone(), 0)).collect();
        for r in self.shards.iter().flatten().filter(|r| r.is_owner()) {
            if let Some(l) = loads.get_mut(&r.node) {
                *l += 1;
            }
        }
        loads
    }

    /// Each member's isolation group (empty when none are declared).
    fn groups(&self) -> BTreeMap<NodeId, String> {
        self.nodes
            .iter()
            .filter_map(|n| Some((n.id.clone(), n.isolation_group.clone()?)))
            .collect()
    }

    /// Drops a node being removed once it holds no replica.
    fn drop_if_gone(&mut self, node: &NodeId) {
        if !self.is_leaving(node) || self.shards.iter().flatten().any(|r| &r.node == node) {
            return;
        }
        self.leaving_nodes.retain(|n| n != node);
        self.nodes.retain(|n| &n.id != node);
    }
}

/// Whether another owner of the shard (`rs`) is in `node`'s isolation group.
fn group_taken(rs: &[Replica], groups: &BTreeMap<NodeId, String>, node: &NodeId) -> bool {
    let Some(g) = groups.get(node) else {
        return false;
    };
    rs.iter()
        .any(|r| r.is_owner() && &r.node != node && groups.get(&r.node) == Some(g))
}

/// Ids non-empty and distinct (`nodes` sorted by id), isolation groups
/// declared by all or by none, and non-empty.
fn check_nodes(nodes: &[Node]) -> Result<()> {
    for n in nodes {
        if n.id.as_str().is_empty() {
            return Err(Error::EmptyNodeId);
        }
        if n.isolation_group.as_deref() == Some("") {
            return Err(Error::EmptyIsolationGroup { node: n.id.clone() });
        }
    }
    if let Some(w) = nodes.windows(2).find(|w| w[0].id == w[1].id) {
        return Err(Error::DuplicateNode {
            node: w[0].id.clone(),
        });
    }
    let declared = nodes.iter().find(|n| n.isolation_group.is_some());
    let undeclared = nodes.iter().find(|n| n.isolation_group.is_none());
    if let (Some(d), Some(u)) = (declared, undeclared) {
        return Err(Error::MixedIsolationGroups {
            declared: d.id.clone(),
            undeclared: u.id.clone(),
        });
    }
    Ok(())
}

/// The placement domains of `nodes` (sorted by id): one per isolation group
/// (in group-name order, members by id), or one per node.
fn domains(nodes: &[Node]) -> Vec<Vec<NodeId>> {
    let mut by_group: BTreeMap<&str, Vec<NodeId>> = BTreeMap::new();
    for n in nodes {
        match &n.isolation_group {
            Some(g) => by_group.entry(g).or_default().push(n.id.clone()),
            None => return nodes.iter().map(|n| vec![n.id.clone()]).collect(),
        }
    }
    by_group.into_values().collect()
}

#[cfg(test)]
mod tests;
