//! The replicated state machine: the versioned placement, namespaces, and
//! the tenancy records (tenants with their limits and rules, tokens as
//! hashes; `cairn_tenancy::Tenancy`).

use cairn_cluster::Placement;
use cairn_tenancy::{Change, ChangeError, Tenancy};
use serde::{Deserialize, Serialize};

/// A change to the metadata, proposed through raft.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    /// The placement the cluster is created with: applied only while there
    /// is none (every member proposes the same one, computed from config).
    InitPlacement(Placement),
    /// A new placement, applied only if the current one has
    /// `expected_version` (compare-and-set).
    SetPlacement {
        expected_version: u64,
        placement: Placement,
    },
    /// A storage namespace (e.g. `5m:1y`) the cluster keeps.
    AddNamespace(String),
    /// A change to tenants or tokens (the admin API's).
    Tenancy(Change),
}

/// What the metadata holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MetaState {
    pub placement: Option<Placement>,
    pub namespaces: Vec<String>,
    #[serde(default)]
    pub tenancy: Tenancy,
    /// Tenancy changes applied so far (the watch on it follows this).
    #[serde(default)]
    pub tenancy_changes: u64,
    /// Index of the last entry applied.
    pub applied: u64,
}

impl MetaState {
    /// Applies `cmd`; an error says why it changed nothing (the proposer
    /// gets it; every member applies the same and gets the same).
    pub fn apply(&mut self, cmd: &Command) -> Result<(), ChangeError> {
        match cmd {
            Command::InitPlacement(p) => {
                if self.placement.is_none() {
                    p.validate()
                        .map_err(|e| ChangeError::Invalid(e.to_string()))?;
                    self.placement = Some(p.clone());
                }
                Ok(())
            }
            Command::SetPlacement {
                expected_version,
                placement,
            } => {
                let current = self.placement.as_ref().map_or(0, Placement::version);
                if current != *expected_version {
                    return Err(ChangeError::Conflict(format!(
                        "placement is at version {current}, not {expected_version}"
                    )));
                }
                if placement.version() <= current {
                    return Err(ChangeError::Conflict(format!(
                        "new placement version {} is not above {current}",
                        placement.version()
                    )));
                }
                placement
                    .validate()
                    .map_err(|e| ChangeError::Invalid(e.to_string()))?;
                self.placement = Some(placement.clone());
                Ok(())
            }
            Command::AddNamespace(n) => {
                if !self.namespaces.contains(n) {
                    self.namespaces.push(n.clone());
                }
                Ok(())
            }
            Command::Tenancy(c) => {
                self.tenancy.apply(c)?;
                self.tenancy_changes += 1;
                Ok(())
            }
        }
    }
}

/// An entry's payload: the command with who proposed it and its id, so
/// the proposer's waiting call is answered when it applies.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Envelope {
    pub node: u64,
    pub id: u64,
    pub cmd: Command,
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_cluster::Node;

    fn placement() -> Placement {
        let nodes = (1..=3)
            .map(|i| Node::new(format!("n{i}"), format!("h{i}:1"), format!("g{i}:2")))
            .collect();
        Placement::initial(nodes, 8, 3).unwrap()
    }

    #[test]
    fn init_applies_once_and_set_is_compare_and_set() {
        let mut s = MetaState::default();
        let p = placement();
        s.apply(&Command::InitPlacement(p.clone())).unwrap();
        let v = p.version();
        let moved = p
            .mark_available(0, &"n1".into())
            .unwrap_or_else(|_| p.clone());
        // A second init changes nothing.
        s.apply(&Command::InitPlacement(moved.clone())).unwrap();
        assert_eq!(s.placement.as_ref().unwrap(), &p);
        let e = s
            .apply(&Command::SetPlacement {
                expected_version: v + 7,
                placement: p.clone(),
            })
            .unwrap_err();
        assert!(e.to_string().contains(&format!("version {v}")), "{e}");
        s.apply(&Command::AddNamespace("5m:1y".into())).unwrap();
        s.apply(&Command::AddNamespace("5m:1y".into())).unwrap();
        assert_eq!(s.namespaces, ["5m:1y"]);
    }
}
