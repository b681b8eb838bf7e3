//! Who is calling, and for which tenant: a bearer token (a stored one, or
//! the node's bootstrap admin token given at start), else anonymous when
//! the config allows it. A token's tenant wins over `X-Scope-OrgID`; an
//! admin token not bound to a tenant acts for the header's tenant.

use crate::state::Status;
use crate::tokens::{self, Scope};
use crate::view::View;
use cairn_common::DEFAULT_TENANT;

/// How a node authenticates.
#[derive(Debug, Clone, Default)]
pub struct AuthPolicy {
    /// Requests without a token are served (tenant from `X-Scope-OrgID`,
    /// else `default`), for reads and writes — never for admin.
    pub anonymous: bool,
    /// Hex SHA-256 of the bootstrap admin token (`CAIRN_ADMIN_TOKEN` or
    /// `auth.admin-token-file`); only its hash is kept.
    pub admin_sha256: Option<String>,
}

/// What a request presented.
#[derive(Debug, Clone, Copy, Default)]
pub struct Credentials<'a> {
    /// The token of `Authorization: Bearer <token>`.
    pub bearer: Option<&'a str>,
    /// `X-Scope-OrgID`, as sent.
    pub org_id: Option<&'a str>,
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub tenant: String,
    /// The token's public id (`bootstrap` for the start-up admin token);
    /// None when anonymous.
    pub token: Option<String>,
    pub admin: bool,
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// 401.
    #[error("{0}")]
    Unauthorized(String),
    /// 403.
    #[error("{0}")]
    Forbidden(String),
    /// 400: the tenant id is not valid.
    #[error("{0}")]
    BadTenant(String),
}

impl AuthError {
    pub fn http_status(&self) -> u16 {
        match self {
            AuthError::Unauthorized(_) => 401,
            AuthError::Forbidden(_) => 403,
            AuthError::BadTenant(_) => 400,
        }
    }
}

/// The caller of a request needing `need`.
pub fn authenticate(
    view: &View,
    policy: &AuthPolicy,
    creds: Credentials<'_>,
    need: Scope,
) -> Result<Caller, AuthError> {
    let header_tenant = || -> Result<String, AuthError> {
        match creds.org_id.map(str::trim) {
            None | Some("") => Ok(DEFAULT_TENANT.to_string()),
            Some(t) if cairn_common::is_valid_tenant_id(t) => Ok(t.to_string()),
            Some(t) => Err(AuthError::BadTenant(format!(
                "invalid tenant {:?} in X-Scope-OrgID: must be 1-150 characters of [a-zA-Z0-9!_.*'()-], not . or ..",
                cairn_common::limits::truncate_str(t, 160)
            ))),
        }
    };
    let caller = match creds.bearer {
        Some(b) => {
            // Hashed once; every comparison is of hashes, in constant time.
            let h = tokens::hash(b);
            if policy
                .admin_sha256
                .as_deref()
                .is_some_and(|a| tokens::same_hash(&h, a))
            {
                Caller {
                    tenant: header_tenant()?,
                    token: Some("bootstrap".into()),
                    admin: true,
                }
            } else if let Some(t) = view.token(&h) {
                let admin = t.scopes.contains(&Scope::Admin);
                if !admin && !t.scopes.contains(&need) {
                    let has: Vec<&str> = t.scopes.iter().map(|s| s.as_str()).collect();
                    return Err(AuthError::Forbidden(format!(
                        "token {} has scope(s) {}; this endpoint needs {} (err-cairn-token-scope)",
                        t.id,
                        has.join(", "),
                        need.as_str()
                    )));
                }
                let tenant = match &t.tenant {
                    Some(id) => id.clone(),
                    None => header_tenant()?,
                };
                Caller {
                    tenant,
                    token: Some(t.id.clone()),
                    admin,
                }
            } else {
                let revoked = tokens::id_of(b)
                    .and_then(|id| view.state.tokens.get(id))
                    .is_some_and(|t| t.revoked && tokens::same_hash(&h, &t.sha256));
                return Err(AuthError::Unauthorized(if revoked {
                    format!(
                        "token {} was revoked (err-cairn-token-revoked)",
                        tokens::id_of(b).unwrap_or_default()
                    )
                } else {
                    "unknown bearer token (err-cairn-token-unknown)".to_string()
                }));
            }
        }
        None if need == Scope::Admin => {
            return Err(AuthError::Unauthorized(
                "admin endpoints need an admin token (Authorization: Bearer <token>); start a node with CAIRN_ADMIN_TOKEN or auth.admin-token-file to have one (err-cairn-admin-token-required)"
                    .into(),
            ))
        }
        None if policy.anonymous => Caller {
            tenant: header_tenant()?,
            token: None,
            admin: false,
        },
        None => {
            return Err(AuthError::Unauthorized(
                "a bearer token is required (Authorization: Bearer <token>; auth.anonymous is false) (err-cairn-token-required)"
                    .into(),
            ))
        }
    };
    if need == Scope::Admin && !caller.admin {
        return Err(AuthError::Forbidden(format!(
            "token {} is not an admin token (err-cairn-token-scope)",
            caller.token.as_deref().unwrap_or("-")
        )));
    }
    if need == Scope::Write
        && view.has_tenant(&caller.tenant)
        && view.tenant(&caller.tenant).status == Status::Suspended
    {
        return Err(AuthError::Forbidden(format!(
            "tenant {:?} is suspended: its writes are refused (err-cairn-tenant-suspended). An administrator resumes it with PATCH /admin/v1/tenants/{} {{\"status\":\"active\"}}",
            caller.tenant, caller.tenant
        )));
    }
    Ok(caller)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Change, Tenancy, TenantRecord};
    use crate::tokens::TokenRecord;
    use crate::Limits;
    use std::sync::Arc;

    fn setup() -> (View, String, String, String) {
        let mut s = Tenancy::default();
        for id in ["a", "b"] {
            s.apply(&Change::PutTenant {
                expected_version: None,
                tenant: TenantRecord {
                    id: id.into(),
                    ..Default::default()
                },
            })
            .unwrap();
        }
        let mut add = |tenant: &str, scopes: Vec<Scope>, revoked: bool| {
            let n = tokens::generate().unwrap();
            s.apply(&Change::AddToken(TokenRecord {
                id: n.id.clone(),
                name: String::new(),
                tenant: Some(tenant.into()),
                scopes,
                sha256: n.sha256,
                created_ms: 0,
                revoked: false,
            }))
            .unwrap();
            if revoked {
                s.apply(&Change::RevokeToken { id: n.id }).unwrap();
            }
            n.token
        };
        let w = add("a", vec![Scope::Write], false);
        let r = add("a", vec![Scope::Read], false);
        let gone = add("a", vec![Scope::Write, Scope::Read], true);
        (View::new(Arc::new(s), Limits::default()), w, r, gone)
    }

    #[test]
    fn tokens_scopes_and_tenants() {
        let (v, w, r, gone) = setup();
        let p = AuthPolicy {
            anonymous: false,
            admin_sha256: Some(tokens::hash("root-token")),
        };
        let c = |bearer, org, need| {
            authenticate(
                &v,
                &p,
                Credentials {
                    bearer,
                    org_id: org,
                },
                need,
            )
        };
        // The token's tenant wins over the header.
        let ok = c(Some(w.as_str()), Some("b"), Scope::Write).unwrap();
        assert_eq!(ok.tenant, "a");
        assert_eq!(
            c(Some(r.as_str()), None, Scope::Write)
                .unwrap_err()
                .http_status(),
            403
        );
        assert_eq!(c(Some(r.as_str()), None, Scope::Read).unwrap().tenant, "a");
        let e = c(Some(gone.as_str()), None, Scope::Read).unwrap_err();
        assert!(
            matches!(&e, AuthError::Unauthorized(m) if m.contains("revoked")),
            "{e}"
        );
        assert_eq!(
            c(Some("cairn_x"), None, Scope::Read)
                .unwrap_err()
                .http_status(),
            401
        );
        assert_eq!(c(None, None, Scope::Read).unwrap_err().http_status(), 401);
        assert_eq!(c(None, None, Scope::Admin).unwrap_err().http_status(), 401);
        assert_eq!(
            c(Some(w.as_str()), None, Scope::Admin)
                .unwrap_err()
                .http_status(),
            403
        );
        let root = c(Some("root-token"), Some("b"), Scope::Admin).unwrap();
        assert!(root.admin && root.tenant == "b");
        assert_eq!(
            c(Some("root-token"), Some(".."), Scope::Read)
                .unwrap_err()
                .http_status(),
            400
        );
        // Anonymous when allowed, never for admin.
        let p = AuthPolicy {
            anonymous: true,
            admin_sha256: None,
        };
        let anon = authenticate(&v, &p, Credentials::default(), Scope::Write).unwrap();
        assert_eq!(anon.tenant, "default");
        assert!(authenticate(&v, &p, Credentials::default(), Scope::Admin).is_err());
    }

    #[test]
    fn a_suspended_tenant_reads_but_does_not_write() {
        let mut s = Tenancy::default();
        s.apply(&Change::PutTenant {
            expected_version: None,
            tenant: TenantRecord {
                id: "a".into(),
                status: Status::Suspended,
                ..Default::default()
            },
        })
        .unwrap();
        let v = View::new(Arc::new(s), Limits::default());
        let p = AuthPolicy {
            anonymous: true,
            admin_sha256: None,
        };
        let creds = Credentials {
            bearer: None,
            org_id: Some("a"),
        };
        let e = authenticate(&v, &p, creds, Scope::Write).unwrap_err();
        assert_eq!(e.http_status(), 403);
        assert!(e.to_string().contains("suspended"), "{e}");
        assert!(authenticate(&v, &p, creds, Scope::Read).is_ok());
    }
}
