//! The `auth:` and `limits:` config sections. `limits:` holds every
//! tenant's default limits (keys with dashes, 0: off); per-tenant
//! overrides live in the metadata store (`/admin/v1/tenants/{id}/limits`).

use crate::limits::Limits;
use crate::tokens;
use cairn_common::config::ConfigError;
use serde::Deserialize;
use std::collections::BTreeMap;

/// `auth:`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AuthSection {
    /// Serve reads and writes without a token (tenant from `X-Scope-OrgID`,
    /// else `default`). Admin endpoints always need an admin token.
    pub anonymous: bool,
    /// A file holding the bootstrap admin token (`CAIRN_ADMIN_TOKEN` wins);
    /// empty: none.
    pub admin_token_file: String,
}

/// Shortest bootstrap admin token accepted.
pub const MIN_ADMIN_TOKEN: usize = 16;

impl AuthSection {
    /// The bootstrap admin token's hash: `CAIRN_ADMIN_TOKEN` (as given in
    /// `env`), else the first line of `admin-token-file`; None without
    /// either. Only the hash is kept.
    pub fn admin_sha256(&self, env_token: Option<&str>) -> Result<Option<String>, ConfigError> {
        let token = match env_token.map(str::trim).filter(|t| !t.is_empty()) {
            Some(t) => t.to_string(),
            None if self.admin_token_file.is_empty() => return Ok(None),
            None => std::fs::read_to_string(&self.admin_token_file)
                .map_err(|e| {
                    ConfigError::new(
                        "auth.admin-token-file",
                        format!("reading {}: {e}", self.admin_token_file),
                    )
                })?
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string(),
        };
        if token.len() < MIN_ADMIN_TOKEN {
            return Err(ConfigError::new(
                if env_token.is_some() {
                    "CAIRN_ADMIN_TOKEN"
                } else {
                    "auth.admin-token-file"
                },
                format!(
                    "the admin token must be at least {MIN_ADMIN_TOKEN} characters (`cairn token generate` prints a fresh one)"
                ),
            ));
        }
        Ok(Some(tokens::hash(&token)))
    }
}

/// `limits:` — a tenant's defaults, every key of [`Limits`] with dashes.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct LimitsSection(pub BTreeMap<String, u64>);

impl LimitsSection {
    /// Checks the keys; the error names an unknown one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.to_limits().map(|_| ())
    }

    pub fn to_limits(&self) -> Result<Limits, ConfigError> {
        let mut l = Limits::default();
        for (k, v) in &self.0 {
            if k.contains('_') || !l.set(k, *v) {
                return Err(ConfigError::new(
                    format!("limits.{k}"),
                    format!(
                        "unknown limit (known: {})",
                        Limits::NAMES
                            .iter()
                            .map(|n| n.replace('_', "-"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
        }
        Ok(l)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_token_from_env_or_file() {
        let a = AuthSection {
            anonymous: true,
            admin_token_file: String::new(),
        };
        assert_eq!(a.admin_sha256(None).unwrap(), None);
        let e = a.admin_sha256(Some("short")).unwrap_err();
        assert_eq!(e.key, "CAIRN_ADMIN_TOKEN");
        let h = a.admin_sha256(Some("0123456789abcdef")).unwrap().unwrap();
        assert_eq!(h, tokens::hash("0123456789abcdef"));
        let dir = std::env::temp_dir().join(format!("cairn-admin-token-{}", std::process::id()));
        std::fs::write(&dir, "fedcba9876543210\n").unwrap();
        let f = AuthSection {
            anonymous: false,
            admin_token_file: dir.to_string_lossy().into_owned(),
        };
        assert_eq!(
            f.admin_sha256(None).unwrap().unwrap(),
            tokens::hash("fedcba9876543210")
        );
        std::fs::remove_file(&dir).unwrap();
        assert_eq!(
            f.admin_sha256(None).unwrap_err().key,
            "auth.admin-token-file"
        );
    }

    #[test]
    fn limit_keys_are_checked() {
        let mut m = BTreeMap::new();
        m.insert("ingestion-rate".to_string(), 5);
        assert_eq!(
            LimitsSection(m.clone()).to_limits().unwrap().ingestion_rate,
            5
        );
        m.insert("ingestion-rat".to_string(), 5);
        let e = LimitsSection(m).validate().unwrap_err();
        assert_eq!(e.key, "limits.ingestion-rat");
    }
}
