//! Bearer tokens: `cairn_<id>_<secret>` — a public id (12 hex digits, how
//! a token is named, listed and revoked) and 32 random bytes (64 hex
//! digits). Only the SHA-256 of the whole token is kept (a fast hash is
//! enough at 256 bits of entropy); a presented token is looked up by its
//! hash and the hashes compared in constant time. The plaintext is shown
//! once, in the answer that created it.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// `/admin/v1/…`, and reads and writes of any tenant.
    Admin,
    /// Remote write and the other ingest endpoints.
    Write,
    /// Queries and every other read.
    Read,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Admin => "admin",
            Scope::Write => "write",
            Scope::Read => "read",
        }
    }

    /// `admin`, `write`, `read` (Mimir's `metrics:write` and `metrics:read` too).
    pub fn parse(s: &str) -> Option<Scope> {
        match s {
            "admin" => Some(Scope::Admin),
            "write" | "metrics:write" => Some(Scope::Write),
            "read" | "metrics:read" => Some(Scope::Read),
            _ => None,
        }
    }
}

/// A stored token: never its plaintext.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// The public id (the `<id>` of `cairn_<id>_<secret>`).
    pub id: String,
    /// A label for people (`grafana`, `prometheus-eu1`).
    #[serde(default)]
    pub name: String,
    /// The tenant it acts for; None for an admin token not bound to one.
    pub tenant: Option<String>,
    pub scopes: Vec<Scope>,
    /// Hex SHA-256 of the whole token.
    pub sha256: String,
    pub created_ms: i64,
    #[serde(default)]
    pub revoked: bool,
}

/// A token as it is first shown: the plaintext and its public id.
#[derive(Debug, Clone)]
pub struct NewToken {
    pub id: String,
    pub token: String,
    pub sha256: String,
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Hex SHA-256 of `token`.
pub fn hash(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

/// True when `token` hashes to `sha256`, compared in constant time.
pub fn verify(token: &str, sha256: &str) -> bool {
    same_hash(&hash(token), sha256)
}

/// True when two hex hashes are equal, compared in constant time.
pub fn same_hash(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

/// A fresh token from the OS's randomness.
pub fn generate() -> Result<NewToken, String> {
    let mut b = [0u8; 38];
    getrandom::getrandom(&mut b).map_err(|e| format!("no randomness for a token: {e}"))?;
    let id = hex(&b[..6]);
    let token = format!("cairn_{id}_{}", hex(&b[6..]));
    Ok(NewToken {
        sha256: hash(&token),
        id,
        token,
    })
}

/// The public id of a presented token, when it has the shape of one.
pub fn id_of(token: &str) -> Option<&str> {
    let rest = token.strip_prefix("cairn_")?;
    let (id, secret) = rest.split_once('_')?;
    (id.len() == 12 && secret.len() == 64).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_hashed_and_verified() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert_ne!(a.token, b.token);
        assert_eq!(id_of(&a.token), Some(a.id.as_str()));
        assert!(verify(&a.token, &a.sha256));
        assert!(!verify(&b.token, &a.sha256));
        assert!(!a.sha256.contains(&a.token[19..]));
        assert_eq!(a.sha256.len(), 64);
        assert_eq!(id_of("Bearer x"), None);
        assert_eq!(Scope::parse("metrics:write"), Some(Scope::Write));
    }
}
