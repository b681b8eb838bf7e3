//! What the metadata store keeps of tenants: their records (status, limit
//! overrides, drop rules, the label usage is attributed by) and the tokens
//! (hashes only), and the changes the admin API proposes. Every member
//! applies the same changes in the same order and gets the same state and
//! the same errors; versions (the admin API's `ETag`s) are assigned here.

use crate::limits::check_overrides;
use crate::mapping::{check_mapping_rules, MappingRule};
use crate::rollup::{check_rollup_rules, RollupRule};
use crate::rules::{check_rules, DropRule};
use crate::tokens::TokenRecord;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Whether a tenant may write.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    #[default]
    Active,
    /// Writes answered 403; reads still served.
    Suspended,
}

/// One tenant as stored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantRecord {
    pub id: String,
    #[serde(default)]
    pub status: Status,
    /// Limits that differ from the config's defaults (names with `_`).
    #[serde(default)]
    pub limits: BTreeMap<String, u64>,
    #[serde(default)]
    pub drop_rules: Vec<DropRule>,
    /// The storage policies series are downsampled into (see `mapping`).
    #[serde(default)]
    pub mapping_rules: Vec<MappingRule>,
    /// Counters summed by some labels into new series (see `rollup`).
    #[serde(default)]
    pub rollup_rules: Vec<RollupRule>,
    /// The label usage is attributed by inside the tenant (e.g. `team`).
    #[serde(default)]
    pub attribution_label: Option<String>,
    /// Assigned on apply: 1 at creation, +1 on every change.
    #[serde(default)]
    pub version: u64,
}

/// Every tenant and token.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenancy {
    pub tenants: BTreeMap<String, TenantRecord>,
    /// By public id.
    pub tokens: BTreeMap<String, TokenRecord>,
}

/// A change, as proposed through the metadata store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// Creates (`expected_version: Some(0)`), replaces at a version
    /// (`Some(v)`), or replaces whatever is there (`None`).
    PutTenant {
        expected_version: Option<u64>,
        tenant: TenantRecord,
    },
    /// Deletes a tenant and revokes its tokens.
    DeleteTenant {
        id: String,
        expected_version: Option<u64>,
    },
    AddToken(TokenRecord),
    RevokeToken {
        id: String,
    },
}

/// Why a change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum ChangeError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    /// The version did not match (HTTP 412), or creating what exists (409).
    #[error("{0}")]
    Conflict(String),
    /// The metadata store could not take the change now (HTTP 503).
    #[error("{0}")]
    Unavailable(String),
}

impl Tenancy {
    /// Applies `c`, or says why it changed nothing.
    pub fn apply(&mut self, c: &Change) -> Result<(), ChangeError> {
        match c {
            Change::PutTenant {
                expected_version,
                tenant,
            } => {
                check_tenant(tenant)?;
                let current = self.tenants.get(&tenant.id).map_or(0, |t| t.version);
                if let Some(v) = expected_version {
                    if *v != current {
                        return Err(ChangeError::Conflict(if *v == 0 {
                            format!("tenant {:?} already exists (version {current})", tenant.id)
                        } else if current == 0 {
                            format!("tenant {:?} does not exist", tenant.id)
                        } else {
                            format!("tenant {:?} is at version {current}, not {v}", tenant.id)
                        }));
                    }
                }
                let mut t = tenant.clone();
                t.limits = check_overrides(&t.limits).map_err(ChangeError::Invalid)?;
                t.version = current + 1;
                self.tenants.insert(t.id.clone(), t);
                Ok(())
            }
            Change::DeleteTenant {
                id,
                expected_version,
            } => {
                let Some(t) = self.tenants.get(id) else {
                    return Err(ChangeError::NotFound(format!("no tenant {id:?}")));
                };
                if let Some(v) = expected_version {
                    if *v != t.version {
                        return Err(ChangeError::Conflict(format!(
                            "tenant {id:?} is at version {}, not {v}",
                            t.version
                        )));
                    }
                }
                self.tenants.remove(id);
                for tok in self.tokens.values_mut() {
                    if tok.tenant.as_deref() == Some(id.as_str()) {
                        tok.revoked = true;
                    }
                }
                Ok(())
            }
            Change::AddToken(t) => {
                if self.tokens.contains_key(&t.id) {
                    return Err(ChangeError::Conflict(format!("token id {:?} exists", t.id)));
                }
                if t.sha256.len() != 64 || !t.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(ChangeError::Invalid(
                        "a token is stored as its hex SHA-256".into(),
                    ));
                }
                if t.scopes.is_empty() {
                    return Err(ChangeError::Invalid(
                        "a token needs at least one scope".into(),
                    ));
                }
                match &t.tenant {
                    Some(id) if !self.tenants.contains_key(id) => {
                        return Err(ChangeError::NotFound(format!("no tenant {id:?}")))
                    }
                    None if !t.scopes.contains(&crate::Scope::Admin) => {
                        return Err(ChangeError::Invalid(
                            "a token without a tenant must have the admin scope".into(),
                        ))
                    }
                    _ => {}
                }
                self.tokens.insert(t.id.clone(), t.clone());
                Ok(())
            }
            Change::RevokeToken { id } => match self.tokens.get_mut(id) {
                Some(t) => {
                    t.revoked = true;
                    Ok(())
                }
                None => Err(ChangeError::NotFound(format!("no token {id:?}"))),
            },
        }
    }
}

fn check_tenant(t: &TenantRecord) -> Result<(), ChangeError> {
    if !cairn_common::is_valid_tenant_id(&t.id) {
        return Err(ChangeError::Invalid(format!(
            "invalid tenant id {:?}: must be 1-150 characters of [a-zA-Z0-9!_.*'()-], not . or ..",
            cairn_common::limits::truncate_str(&t.id, 160)
        )));
    }
    check_rules(&t.drop_rules).map_err(ChangeError::Invalid)?;
    check_mapping_rules(&t.mapping_rules).map_err(ChangeError::Invalid)?;
    check_rollup_rules(&t.rollup_rules).map_err(ChangeError::Invalid)?;
    if let Some(l) = &t.attribution_label {
        if l.is_empty() || !l.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(ChangeError::Invalid(format!(
                "attribution_label {l:?} is not a label name"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Scope;

    fn tenant(id: &str) -> TenantRecord {
        TenantRecord {
            id: id.into(),
            ..Default::default()
        }
    }

    #[test]
    fn versions_are_compare_and_set() {
        let mut s = Tenancy::default();
        let put = |v, t| Change::PutTenant {
            expected_version: v,
            tenant: t,
        };
        s.apply(&put(Some(0), tenant("a"))).unwrap();
        assert_eq!(s.tenants["a"].version, 1);
        assert!(matches!(
            s.apply(&put(Some(0), tenant("a"))),
            Err(ChangeError::Conflict(_))
        ));
        assert!(matches!(
            s.apply(&put(Some(7), tenant("a"))),
            Err(ChangeError::Conflict(_))
        ));
        s.apply(&put(Some(1), tenant("a"))).unwrap();
        s.apply(&put(None, tenant("a"))).unwrap();
        assert_eq!(s.tenants["a"].version, 3);
        assert!(matches!(
            s.apply(&put(None, tenant(".."))),
            Err(ChangeError::Invalid(_))
        ));
        let mut bad = tenant("b");
        bad.limits.insert("nope".into(), 1);
        assert!(matches!(
            s.apply(&put(None, bad)),
            Err(ChangeError::Invalid(_))
        ));
    }

    #[test]
    fn deleting_a_tenant_revokes_its_tokens() {
        let mut s = Tenancy::default();
        s.apply(&Change::PutTenant {
            expected_version: None,
            tenant: tenant("a"),
        })
        .unwrap();
        let tok = TokenRecord {
            id: "0123456789ab".into(),
            name: "w".into(),
            tenant: Some("a".into()),
            scopes: vec![Scope::Write],
            sha256: "0".repeat(64),
            created_ms: 0,
            revoked: false,
        };
        s.apply(&Change::AddToken(tok.clone())).unwrap();
        let mut orphan = tok.clone();
        orphan.id = "ba9876543210".into();
        orphan.tenant = Some("zz".into());
        assert!(matches!(
            s.apply(&Change::AddToken(orphan)),
            Err(ChangeError::NotFound(_))
        ));
        s.apply(&Change::DeleteTenant {
            id: "a".into(),
            expected_version: Some(1),
        })
        .unwrap();
        assert!(s.tokens["0123456789ab"].revoked);
    }
}
