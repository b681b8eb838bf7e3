//! The tenant admin API (`/admin/v1/tenants…`, `/admin/v1/tokens…`; admin
//! token only; JSON): tenants (create, list, get, replace, patch — status
//! `active`/`suspended` —, delete), their limits, drop rules, tokens and
//! usage, and the tenant-facing `GET /api/v1/user_limits` (Mimir's).
//! Every change goes through the node's directory (the metadata store:
//! applied on every node within a second). A tenant's `ETag` is its version;
//! `If-Match` makes a change conditional (412 when it moved on); without
//! it a change applies to the version it was computed from (409 when
//! another change came between).

use crate::error::{ApiError, Result};
use crate::extract::{AdminCaller, Tenant};
use crate::render::success;
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use cairn_tenancy::{
    Change, ChangeError, DropRule, MappingRule, RollupRule, Scope, Status, TenantRecord,
    TokenRecord,
};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;

fn change_error(e: ChangeError, conditional: bool) -> ApiError {
    match e {
        ChangeError::Invalid(m) => ApiError::bad_data(m),
        ChangeError::NotFound(m) => ApiError::json(StatusCode::NOT_FOUND, "not_found", m),
        ChangeError::Conflict(m) if conditional => {
            ApiError::json(StatusCode::PRECONDITION_FAILED, "conflict", m)
        }
        ChangeError::Conflict(m) => ApiError::json(
            StatusCode::CONFLICT,
            "conflict",
            format!("{m}; read it again and retry"),
        ),
        ChangeError::Unavailable(m) => ApiError::unavailable(m),
    }
}

/// The version `If-Match` names (`"3"`, `W/"3"` or `3`); 400 when it is not one.
fn if_match(headers: &HeaderMap) -> Result<Option<u64>> {
    let Some(v) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let s = v.to_str().unwrap_or("").trim();
    let s = s.strip_prefix("W/").unwrap_or(s).trim_matches('"');
    s.parse().map(Some).map_err(|_| {
        ApiError::bad_data(format!(
            "If-Match {:?} is not a tenant version (the ETag of GET /admin/v1/tenants/{{id}})",
            String::from_utf8_lossy(v.as_bytes())
        ))
    })
}

fn json_body<T: for<'de> Deserialize<'de>>(body: &Bytes) -> Result<T> {
    serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(body)).map_err(|e| {
        let path = e.path().to_string();
        ApiError::bad_data(format!(
            "request body: {}{}",
            if path == "." {
                String::new()
            } else {
                format!("at {path}: ")
            },
            e.into_inner()
        ))
    })
}

fn tenant_json(st: &AppState, t: &TenantRecord) -> Value {
    let defaults = st.0.tenants.directory.view().defaults;
    json!({
        "id": t.id,
        "status": t.status,
        "version": t.version,
        "limits": t.limits,
        "effective_limits": defaults.with(&t.limits),
        "drop_rules": t.drop_rules,
        "mapping_rules": t.mapping_rules,
        "rollup_rules": t.rollup_rules,
        "attribution_label": t.attribution_label,
    })
}

/// A tenant's JSON with its `ETag`.
fn tenant_response(st: &AppState, t: &TenantRecord, status: StatusCode) -> Response {
    let mut r = success(tenant_json(st, t));
    *r.status_mut() = status;
    if let Ok(v) = format!("\"{}\"", t.version).parse() {
        r.headers_mut().insert(header::ETAG, v);
    }
    r
}

fn current(st: &AppState, id: &str) -> Result<TenantRecord> {
    st.0.tenants
        .directory
        .view()
        .state
        .tenants
        .get(id)
        .cloned()
        .ok_or_else(|| {
            ApiError::json(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no tenant {id:?} (POST /admin/v1/tenants creates one)"),
            )
        })
}

async fn apply(st: &AppState, c: Change, conditional: bool) -> Result<()> {
    st.0.tenants
        .directory
        .change(c)
        .await
        .map_err(|e| change_error(e, conditional))
}

/// Replaces tenant `t` (at `expected` or at the version it was read at)
/// and answers with what was stored.
async fn store(
    st: &AppState,
    t: TenantRecord,
    expected: Option<u64>,
    read_at: u64,
    status: StatusCode,
) -> Result<Response> {
    let id = t.id.clone();
    apply(
        st,
        Change::PutTenant {
            expected_version: Some(expected.unwrap_or(read_at)),
            tenant: t,
        },
        expected.is_some(),
    )
    .await?;
    Ok(tenant_response(st, &current(st, &id)?, status))
}

/// `GET /admin/v1/tenants`.
pub(crate) async fn list(_: AdminCaller, State(st): State<AppState>) -> Result<Response> {
    let view = st.0.tenants.directory.view();
    let ts: Vec<Value> = view
        .state
        .tenants
        .values()
        .map(|t| tenant_json(&st, t))
        .collect();
    Ok(success(json!({ "tenants": ts })))
}

/// What a create or replace may set.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TenantBody {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    status: Status,
    #[serde(default)]
    limits: BTreeMap<String, u64>,
    #[serde(default)]
    drop_rules: Vec<DropRule>,
    #[serde(default)]
    mapping_rules: Vec<MappingRule>,
    #[serde(default)]
    rollup_rules: Vec<RollupRule>,
    #[serde(default)]
    attribution_label: Option<String>,
}

impl TenantBody {
    fn record(self, st: &AppState, id: String) -> Result<TenantRecord> {
        Ok(TenantRecord {
            id,
            status: self.status,
            limits: self.limits,
            drop_rules: self.drop_rules,
            mapping_rules: mapping_rules(st, self.mapping_rules)?,
            rollup_rules: rollup_rules(st, self.rollup_rules)?,
            attribution_label: self.attribution_label,
            version: 0,
        })
    }
}

/// `rules` as stored: refused (400) on a node without aggregated
/// namespaces, where nothing would compute them.
fn rollup_rules(st: &AppState, rules: Vec<RollupRule>) -> Result<Vec<RollupRule>> {
    if !rules.is_empty() && st.0.cfg.engine.namespaces.is_empty() {
        return Err(ApiError::bad_data(
            "rollup rules need an aggregated namespace (storage.namespaces, e.g. 5m:1y): this node keeps raw only",
        ));
    }
    Ok(rules)
}

/// `rules` as stored: each policy one this node keeps (400 naming the
/// rule and the policies there are otherwise), and a rule without a
/// cutover cut over now.
fn mapping_rules(st: &AppState, mut rules: Vec<MappingRule>) -> Result<Vec<MappingRule>> {
    let kept = &st.0.cfg.engine.namespaces;
    let now = chrono::Utc::now().timestamp_millis();
    for r in &mut rules {
        for p in &r.policies {
            let known = p
                .parse::<cairn_downsample::StoragePolicy>()
                .is_ok_and(|pol| kept.iter().any(|ns| ns.name == pol.namespace_name()));
            if !known && p.parse::<cairn_downsample::StoragePolicy>().is_ok() {
                // `agg_5m_1y` is policy `5m:1y`.
                let have: Vec<String> = kept
                    .iter()
                    .map(|ns| {
                        let n = ns.name.strip_prefix("agg_").unwrap_or(&ns.name);
                        n.replacen('_', ":", 1)
                    })
                    .collect();
                return Err(ApiError::bad_data(format!(
                    "mapping rule {:?}: policy {p:?} is not a namespace of storage.namespaces ({})",
                    r.name,
                    if have.is_empty() {
                        "none: this node keeps raw only".to_string()
                    } else {
                        have.join(", ")
                    }
                )));
            }
        }
        r.cutover_ms.get_or_insert(now);
    }
    Ok(rules)
}

/// `POST /admin/v1/tenants` `{"id": …, …}`: 201, 409 when it exists.
pub(crate) async fn create(
    _: AdminCaller,
    State(st): State<AppState>,
    body: Bytes,
) -> Result<Response> {
    let b: TenantBody = json_body(&body)?;
    let Some(id) = b.id.clone() else {
        return Err(ApiError::bad_data(
            "request body: the tenant's \"id\" is required",
        ));
    };
    apply(
        &st,
        Change::PutTenant {
            expected_version: Some(0),
            tenant: b.record(&st, id.clone())?,
        },
        false,
    )
    .await
    .map_err(|e| match e {
        ApiError::Json { msg, .. } if msg.contains("already exists") => {
            ApiError::json(StatusCode::CONFLICT, "conflict", msg)
        }
        e => e,
    })?;
    Ok(tenant_response(
        &st,
        &current(&st, &id)?,
        StatusCode::CREATED,
    ))
}

/// `GET /admin/v1/tenants/{id}`.
pub(crate) async fn get(
    _: AdminCaller,
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response> {
    Ok(tenant_response(&st, &current(&st, &id)?, StatusCode::OK))
}

/// `PUT /admin/v1/tenants/{id}`: replaces the record (creates it when absent).
pub(crate) async fn put(
    _: AdminCaller,
    State(st): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    let b: TenantBody = json_body(&body)?;
    if b.id.as_deref().is_some_and(|i| i != id) {
        return Err(ApiError::bad_data(format!(
            "request body: \"id\" {:?} is not the tenant of the path ({id:?})",
            b.id.unwrap_or_default()
        )));
    }
    let read_at = current(&st, &id).map_or(0, |t| t.version);
    let t = b.record(&st, id)?;
    store(&st, t, if_match(&headers)?, read_at, StatusCode::OK).await
}

/// What a patch may change; absent fields stay.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TenantPatch {
    #[serde(default)]
    status: Option<Status>,
    /// A limit set to null returns to the default.
    #[serde(default)]
    limits: Option<BTreeMap<String, Option<u64>>>,
    #[serde(default)]
    drop_rules: Option<Vec<DropRule>>,
    #[serde(default)]
    mapping_rules: Option<Vec<MappingRule>>,
    #[serde(default)]
    rollup_rules: Option<Vec<RollupRule>>,
    #[serde(default)]
    attribution_label: Option<Option<String>>,
}

fn merge_limits(into: &mut BTreeMap<String, u64>, patch: BTreeMap<String, Option<u64>>) {
    for (k, v) in patch {
        let k = k.replace('-', "_");
        match v {
            Some(v) => {
                into.insert(k, v);
            }
            None => {
                into.remove(&k);
            }
        }
    }
}

/// `PATCH /admin/v1/tenants/{id}` (e.g. `{"status":"suspended"}`).
pub(crate) async fn patch(
    _: AdminCaller,
    State(st): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    let p: TenantPatch = json_body(&body)?;
    let mut t = current(&st, &id)?;
    let read_at = t.version;
    if let Some(s) = p.status {
        t.status = s;
    }
    if let Some(l) = p.limits {
        merge_limits(&mut t.limits, l);
    }
    if let Some(r) = p.drop_rules {
        t.drop_rules = r;
    }
    if let Some(r) = p.mapping_rules {
        t.mapping_rules = mapping_rules(&st, r)?;
    }
    if let Some(r) = p.rollup_rules {
        t.rollup_rules = rollup_rules(&st, r)?;
    }
    if let Some(a) = p.attribution_label {
        t.attribution_label = a;
    }
    store(&st, t, if_match(&headers)?, read_at, StatusCode::OK).await
}

/// `DELETE /admin/v1/tenants/{id}`: the record goes and its tokens are
/// revoked; its stored series are kept until retention removes them.
pub(crate) async fn delete(
    _: AdminCaller,
    State(st): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response> {
    let t = current(&st, &id)?;
    let expected = if_match(&headers)?;
    let revoked =
        st.0.tenants
            .directory
            .view()
            .state
            .tokens
            .values()
            .filter(|k| k.tenant.as_deref() == Some(id.as_str()) && !k.revoked)
            .count();
    apply(
        &st,
        Change::DeleteTenant {
            id: id.clone(),
            expected_version: Some(expected.unwrap_or(t.version)),
        },
        expected.is_some(),
    )
    .await?;
    Ok(success(json!({
        "deleted": id,
        "tokens_revoked": revoked,
        "data": "kept: the tenant's series stay stored until the retention period removes them, and a tenant created again with this id sees them",
    })))
}

/// `GET /admin/v1/tenants/{id}/limits`: effective limits, the tenant's
/// overrides and the config's defaults.
pub(crate) async fn get_limits(
    _: AdminCaller,
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response> {
    let view = st.0.tenants.directory.view();
    let overrides = view
        .state
        .tenants
        .get(&id)
        .map(|t| t.limits.clone())
        .unwrap_or_default();
    Ok(success(json!({
        "tenant": id,
        "limits": view.tenant(&id).limits,
        "overrides": overrides,
        "defaults": view.defaults,
    })))
}

/// `PUT /admin/v1/tenants/{id}/limits` `{"ingestion_rate": 20000,
/// "max_active_series": null}`: merged into the overrides (null: back to
/// the default). A tenant without a record gets one.
pub(crate) async fn put_limits(
    _: AdminCaller,
    State(st): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    let patch: BTreeMap<String, Option<u64>> = json_body(&body)?;
    let (mut t, read_at) = match current(&st, &id) {
        Ok(t) => {
            let v = t.version;
            (t, v)
        }
        Err(_) => (
            TenantRecord {
                id: id.clone(),
                ..Default::default()
            },
            0,
        ),
    };
    merge_limits(&mut t.limits, patch);
    store(&st, t, if_match(&headers)?, read_at, StatusCode::OK).await?;
    get_limits(AdminCaller::internal(), State(st), Path(id)).await
}

/// One of a tenant's rule lists as its endpoints answer it.
fn rule_list(id: String, t: &TenantRecord, field: &str, list: Value) -> Response {
    let mut v = json!({"tenant": id, "version": t.version});
    v[field] = list;
    success(v)
}

/// Replaces one of tenant `id`'s rule lists with the JSON list in `body`
/// (`set` checks it and puts it in the record), at the version it was read
/// at or `If-Match`'s; the record as stored.
async fn replace_list<T: for<'de> Deserialize<'de>>(
    st: &AppState,
    id: &str,
    headers: &HeaderMap,
    body: &Bytes,
    set: impl FnOnce(&mut TenantRecord, Vec<T>) -> Result<()>,
) -> Result<TenantRecord> {
    let rules: Vec<T> = json_body(body)?;
    let mut t = current(st, id)?;
    let read_at = t.version;
    set(&mut t, rules)?;
    store(st, t, if_match(headers)?, read_at, StatusCode::OK).await?;
    current(st, id)
}

/// `GET /admin/v1/tenants/{id}/drop_rules`.
pub(crate) async fn get_rules(
    _: AdminCaller,
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response> {
    let t = current(&st, &id)?;
    Ok(rule_list(id, &t, "drop_rules", json!(t.drop_rules)))
}

/// `PUT /admin/v1/tenants/{id}/drop_rules` `[{"name", "selector", "action":
/// "shed"|"drop", "priority", "dry_run"}, …]`: replaces the list.
pub(crate) async fn put_rules(
    _: AdminCaller,
    State(st): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    let t = replace_list(&st, &id, &headers, &body, |t, r: Vec<DropRule>| {
        t.drop_rules = r;
        Ok(())
    })
    .await?;
    Ok(rule_list(id, &t, "drop_rules", json!(t.drop_rules)))
}

/// `GET /admin/v1/tenants/{id}/mapping_rules`.
pub(crate) async fn get_mapping(
    _: AdminCaller,
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response> {
    let t = current(&st, &id)?;
    Ok(rule_list(id, &t, "mapping_rules", json!(t.mapping_rules)))
}

/// `PUT /admin/v1/tenants/{id}/mapping_rules` `[{"name", "selector",
/// "policies": ["5m:1y"], "cutover_ms", "dry_run"}, …]`: replaces the list
/// (a rule without `cutover_ms` cuts over now); every node's next
/// downsampling pass follows it.
pub(crate) async fn put_mapping(
    _: AdminCaller,
    State(st): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    let t = replace_list(&st, &id, &headers, &body, |t, r: Vec<MappingRule>| {
        t.mapping_rules = mapping_rules(&st, r)?;
        Ok(())
    })
    .await?;
    Ok(rule_list(id, &t, "mapping_rules", json!(t.mapping_rules)))
}

/// `GET /admin/v1/tenants/{id}/rollup_rules`.
pub(crate) async fn get_rollups(
    _: AdminCaller,
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response> {
    let t = current(&st, &id)?;
    Ok(rule_list(id, &t, "rollup_rules", json!(t.rollup_rules)))
}

/// `PUT /admin/v1/tenants/{id}/rollup_rules` `[{"name", "selector", "by":
/// ["service"], "output", "drop_inputs"}, …]`: replaces the list; writes
/// from then on are copied to the outputs' shards.
pub(crate) async fn put_rollups(
    _: AdminCaller,
    State(st): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    let t = replace_list(&st, &id, &headers, &body, |t, r: Vec<RollupRule>| {
        t.rollup_rules = rollup_rules(&st, r)?;
        Ok(())
    })
    .await?;
    Ok(rule_list(id, &t, "rollup_rules", json!(t.rollup_rules)))
}

fn token_json(t: &TokenRecord) -> Value {
    json!({
        "id": t.id,
        "name": t.name,
        "tenant": t.tenant,
        "scopes": t.scopes,
        "created_ms": t.created_ms,
        "revoked": t.revoked,
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TokenBody {
    #[serde(default)]
    name: String,
    scopes: Vec<String>,
}

async fn new_token(st: &AppState, tenant: Option<String>, body: &Bytes) -> Result<Response> {
    let b: TokenBody = json_body(body)?;
    let mut scopes = Vec::new();
    for s in &b.scopes {
        let sc = Scope::parse(s).ok_or_else(|| {
            ApiError::bad_data(format!(
                "request body: scope {s:?} is not one of admin, write, read"
            ))
        })?;
        if !scopes.contains(&sc) {
            scopes.push(sc);
        }
    }
    if scopes.is_empty() {
        return Err(ApiError::bad_data(
            "request body: \"scopes\" must name at least one of admin, write, read",
        ));
    }
    let n = cairn_tenancy::tokens::generate().map_err(ApiError::internal)?;
    let rec = TokenRecord {
        id: n.id.clone(),
        name: b.name,
        tenant,
        scopes,
        sha256: n.sha256,
        created_ms: chrono::Utc::now().timestamp_millis(),
        revoked: false,
    };
    apply(st, Change::AddToken(rec.clone()), false).await?;
    let mut v = token_json(&rec);
    // Shown here once; only its hash is stored.
    v["token"] = Value::String(n.token);
    let mut r = success(v);
    *r.status_mut() = StatusCode::CREATED;
    Ok(r)
}

/// `GET /admin/v1/tenants/{id}/tokens` (never the tokens themselves).
pub(crate) async fn list_tokens(
    _: AdminCaller,
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response> {
    let view = st.0.tenants.directory.view();
    let ts: Vec<Value> = view
        .state
        .tokens
        .values()
        .filter(|t| t.tenant.as_deref() == Some(id.as_str()))
        .map(token_json)
        .collect();
    Ok(success(json!({ "tokens": ts })))
}

/// `POST /admin/v1/tenants/{id}/tokens` `{"name": …, "scopes": ["write"]}`:
/// 201 with the token, shown this once.
pub(crate) async fn create_token(
    _: AdminCaller,
    State(st): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response> {
    current(&st, &id)?;
    new_token(&st, Some(id), &body).await
}

async fn revoke(st: &AppState, tenant: Option<&str>, token: String) -> Result<Response> {
    let view = st.0.tenants.directory.view();
    match view.state.tokens.get(&token) {
        Some(t) if t.tenant.as_deref() == tenant => {}
        _ => {
            return Err(ApiError::json(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no token {token:?} here"),
            ))
        }
    }
    apply(st, Change::RevokeToken { id: token.clone() }, false).await?;
    Ok(success(json!({"revoked": token})))
}

/// `DELETE /admin/v1/tenants/{id}/tokens/{token}` (by the token's public id).
pub(crate) async fn revoke_token(
    _: AdminCaller,
    State(st): State<AppState>,
    Path((id, token)): Path<(String, String)>,
) -> Result<Response> {
    revoke(&st, Some(&id), token).await
}

/// `GET /admin/v1/tokens`: admin tokens not bound to a tenant.
pub(crate) async fn list_admin_tokens(
    _: AdminCaller,
    State(st): State<AppState>,
) -> Result<Response> {
    let view = st.0.tenants.directory.view();
    let ts: Vec<Value> = view
        .state
        .tokens
        .values()
        .filter(|t| t.tenant.is_none())
        .map(token_json)
        .collect();
    Ok(success(json!({ "tokens": ts })))
}

/// `POST /admin/v1/tokens` `{"name": …, "scopes": ["admin"]}`.
pub(crate) async fn create_admin_token(
    _: AdminCaller,
    State(st): State<AppState>,
    body: Bytes,
) -> Result<Response> {
    new_token(&st, None, &body).await
}

/// `DELETE /admin/v1/tokens/{token}`.
pub(crate) async fn revoke_admin_token(
    _: AdminCaller,
    State(st): State<AppState>,
    Path(token): Path<String>,
) -> Result<Response> {
    revoke(&st, None, token).await
}

/// `GET /admin/v1/tenants/{id}/usage`: this node's counters for the tenant.
pub(crate) async fn usage(
    _: AdminCaller,
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response> {
    let label =
        st.0.tenants
            .directory
            .view()
            .tenant(&id)
            .attribution_label
            .clone();
    let mut u = st.0.tenants.metrics.usage(&id, label.as_deref());
    // Tracked for tenants with a series limit only.
    u["active_series"] = json!(st.0.tenants.gate.active_series(&id));
    // The tenant's aggregation state: the rollup rules' inputs held (series
    // of the internal namespace, the whole cluster's).
    if st.0.cfg.rollup_input_horizon_ms.is_some() {
        if let Ok(b) = st.backend() {
            let (src, tenant) = (b.reader.clone(), id.clone());
            let now = chrono::Utc::now().timestamp_millis();
            let counted = crate::state::blocking_read(&st, st.0.cfg.engine.timeout, move |_| {
                let mut q =
                    cairn_storage_api::SeriesQuery::new(tenant, vec![], 0, now + 86_400_000);
                q.namespace = cairn_storage_api::ROLLUP_INPUTS_NAMESPACE.to_string();
                cairn_storage_api::block_on(src.cardinality(q))
            })
            .await;
            u["aggregation_state"] = match counted {
                Ok(Ok(c)) => json!({ "rollup_input_series": c.series }),
                Ok(Err(e)) => json!({ "error": e.to_string() }),
                Err(e) => json!({ "error": format!("{e:?}") }),
            };
        }
    }
    u["tenant"] = Value::String(id);
    u["scope"] = Value::String("this node".into());
    Ok(success(u))
}

/// `GET /api/v1/user_limits`: the caller's tenant's limits (Mimir's shape:
/// the limit names at the top level).
pub(crate) async fn user_limits(
    State(st): State<AppState>,
    Tenant(tenant, _turn): Tenant,
) -> Result<Response> {
    let l = st.0.tenants.directory.view().tenant(&tenant).limits;
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_string(&l).unwrap_or_default(),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use crate::test_util::call;
    use crate::{router, Admin, ApiConfig, AppState, Backend, TenancyConfig};
    use axum::body::Body;
    use axum::http::Request;
    use cairn_tenancy::{tokens, AuthPolicy, Limits, LocalDirectory};
    use std::sync::Arc;

    struct NoAdmin;
    impl Admin for NoAdmin {
        fn flush(&self) -> Result<usize, String> {
            Ok(0)
        }
        fn register_metrics(&self, _: &mut prometheus_client::registry::Registry) {}
    }

    const ROOT: &str = "root-token-0123456789";

    fn app() -> axum::Router {
        let st = AppState::with_tenancy(
            ApiConfig::default(),
            TenancyConfig {
                directory: LocalDirectory::new(Limits::shared_service()),
                policy: AuthPolicy {
                    anonymous: true,
                    admin_sha256: Some(tokens::hash(ROOT)),
                },
            },
        )
        .unwrap();
        let m = Arc::new(cairn_common::MemStore::new());
        st.set_ready(Backend {
            reader: m.clone(),
            writer: m,
            admin: Arc::new(NoAdmin),
        });
        router(st)
    }

    fn req(method: &str, uri: &str, body: &str, headers: &[(&str, &str)]) -> Request<Body> {
        let mut b = Request::builder()
            .method(method)
            .uri(uri)
            .header("authorization", format!("Bearer {ROOT}"));
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(Body::from(body.to_string())).unwrap()
    }

    #[tokio::test]
    async fn limits_merge_and_unknown_names_are_refused() {
        let app = app();
        let (s, b) = call(&app, req("POST", "/admin/v1/tenants", r#"{"id":"a"}"#, &[])).await;
        assert_eq!(s, 201, "{b}");
        let (s, b) = call(&app, req("POST", "/admin/v1/tenants", r#"{"id":"a"}"#, &[])).await;
        assert_eq!(s, 409, "{b}");
        let (s, b) = call(
            &app,
            req(
                "PUT",
                "/admin/v1/tenants/a/limits",
                r#"{"ingestion_rate":5,"max_active_series":7}"#,
                &[],
            ),
        )
        .await;
        assert_eq!(s, 200, "{b}");
        let v: serde_json::Value = serde_json::from_str(&b).unwrap();
        assert_eq!(v["data"]["limits"]["ingestion_rate"], 5);
        // The config's default for what is not overridden.
        assert_eq!(v["data"]["limits"]["ingestion_burst_size"], 200_000);
        let (_, b) = call(
            &app,
            req(
                "PUT",
                "/admin/v1/tenants/a/limits",
                r#"{"max_active_series":null}"#,
                &[],
            ),
        )
        .await;
        let v: serde_json::Value = serde_json::from_str(&b).unwrap();
        assert_eq!(
            v["data"]["overrides"],
            serde_json::json!({"ingestion_rate": 5})
        );
        let (s, b) = call(
            &app,
            req(
                "PUT",
                "/admin/v1/tenants/a/limits",
                r#"{"ingestion_rat":1}"#,
                &[],
            ),
        )
        .await;
        assert_eq!(s, 400, "{b}");
        assert!(
            b.contains("unknown limit") && b.contains("ingestion_rat"),
            "{b}"
        );
        let (s, b) = call(
            &app,
            req(
                "PUT",
                "/admin/v1/tenants/a/limits",
                r#"{"ingestion_rate":"x"}"#,
                &[],
            ),
        )
        .await;
        assert_eq!(s, 400, "{b}");
        assert!(b.contains("ingestion_rate"), "{b}");
        // A tenant's own view of its limits, Mimir's shape.
        let get = Request::get("/api/v1/user_limits")
            .header("x-scope-orgid", "a")
            .body(Body::empty())
            .unwrap();
        let (s, b) = call(&app, get).await;
        assert_eq!(s, 200, "{b}");
        assert!(b.contains(r#""ingestion_rate":5"#), "{b}");
    }

    #[tokio::test]
    async fn conditional_changes_bad_rules_and_missing_tenants() {
        let app = app();
        call(&app, req("POST", "/admin/v1/tenants", r#"{"id":"a"}"#, &[])).await;
        let (s, b) = call(
            &app,
            req(
                "PATCH",
                "/admin/v1/tenants/a",
                r#"{"status":"suspended"}"#,
                &[("if-match", "\"1\"")],
            ),
        )
        .await;
        assert_eq!(s, 200, "{b}");
        let (s, b) = call(
            &app,
            req(
                "PATCH",
                "/admin/v1/tenants/a",
                r#"{"status":"active"}"#,
                &[("if-match", "\"1\"")],
            ),
        )
        .await;
        assert_eq!(s, 412, "{b}");
        let (s, b) = call(
            &app,
            req("PATCH", "/admin/v1/tenants/a", r#"{"status":"gone"}"#, &[]),
        )
        .await;
        assert_eq!(s, 400, "{b}");
        let (s, b) = call(
            &app,
            req(
                "PUT",
                "/admin/v1/tenants/a/drop_rules",
                r#"[{"name":"x","selector":"{a=~\"(\"}"}]"#,
                &[],
            ),
        )
        .await;
        assert_eq!(s, 400, "{b}");
        assert!(b.contains("drop rule \\\"x\\\""), "{b}");
        let (s, _) = call(&app, req("GET", "/admin/v1/tenants/nope", "", &[])).await;
        assert_eq!(s, 404);
        let (s, _) = call(
            &app,
            req(
                "POST",
                "/admin/v1/tenants/nope/tokens",
                r#"{"scopes":["read"]}"#,
                &[],
            ),
        )
        .await;
        assert_eq!(s, 404);
        let (s, b) = call(
            &app,
            req(
                "POST",
                "/admin/v1/tenants/a/tokens",
                r#"{"scopes":["root"]}"#,
                &[],
            ),
        )
        .await;
        assert_eq!(s, 400, "{b}");
        let (s, b) = call(&app, req("DELETE", "/admin/v1/tenants/a", "", &[])).await;
        assert_eq!(s, 200, "{b}");
        assert!(b.contains("kept"), "{b}");
    }
}
