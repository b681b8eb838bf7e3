//! Extractors shared by the handlers: [`Ready`] (the backend, 503 before
//! recovery is done), [`Tenant`] (`X-Scope-OrgID`, 400 when invalid),
//! [`PromParams`] (Prometheus's parameters from the query string and a
//! POSTed form) and [`UrlParams`] (the query string only). An extractor's
//! rejection is the response: handlers list what they need, in the order
//! it is checked.

use crate::error::ApiError;
use crate::params::Params;
use crate::state::{AppState, Backend};
use crate::tenancy::Need;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use cairn_common::{ExemplarSeries, Labels, MetricMetadata};
use cairn_storage_api::{
    BoxFuture, Cardinality, ReadLevel, SelectRequest, SeriesQuery, SeriesReader, SeriesStream,
    StoreError,
};
use cairn_tenancy::Scope;
use std::sync::Arc;

/// The backend the router serves from; rejected with 503 (plain text)
/// until recovery is complete.
pub(crate) struct Ready(pub Backend);

impl FromRequestParts<AppState> for Ready {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, ApiError> {
        let mut b = st.backend().cloned()?;
        if let Some(level) = read_level(&parts.headers)? {
            b.reader = Arc::new(ReadAt {
                inner: b.reader,
                level,
            });
        }
        Ok(Ready(b))
    }
}

/// The header that sets a read's consistency level (in a cluster).
pub(crate) const READ_CONSISTENCY_HEADER: &str = "x-cairn-read-consistency";

/// The request's read level, if its `X-Cairn-Read-Consistency` names one;
/// an unknown level is a 400 naming the header.
fn read_level(headers: &axum::http::HeaderMap) -> Result<Option<ReadLevel>, ApiError> {
    let Some(v) = headers.get(READ_CONSISTENCY_HEADER) else {
        return Ok(None);
    };
    v.to_str()
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .map(Some)
        .ok_or_else(|| {
            ApiError::bad_data(format!(
                "header X-Cairn-Read-Consistency: {:?} is not a read level (one, unstrict_majority, majority, all)",
                String::from_utf8_lossy(v.as_bytes())
            ))
        })
}

/// A reader whose every read asks for `level` (a replicated store reads at
/// it; a single node's store ignores it).
struct ReadAt {
    inner: Arc<dyn SeriesReader>,
    level: ReadLevel,
}

impl SeriesReader for ReadAt {
    fn downsampled_until(&self, namespace: &str) -> Option<i64> {
        self.inner.downsampled_until(namespace)
    }

    fn select(
        &self,
        mut req: SelectRequest,
    ) -> BoxFuture<'_, Result<SeriesStream<'_>, StoreError>> {
        req.read_level = Some(self.level);
        self.inner.select(req)
    }
    fn series(&self, mut q: SeriesQuery) -> BoxFuture<'_, Result<Vec<Labels>, StoreError>> {
        q.read_level = Some(self.level);
        self.inner.series(q)
    }
    fn label_names(&self, mut q: SeriesQuery) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
        q.read_level = Some(self.level);
        self.inner.label_names(q)
    }
    fn label_values(
        &self,
        mut q: SeriesQuery,
        name: String,
    ) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
        q.read_level = Some(self.level);
        self.inner.label_values(q, name)
    }
    fn exemplars(
        &self,
        mut q: SeriesQuery,
    ) -> BoxFuture<'_, Result<Vec<ExemplarSeries>, StoreError>> {
        q.read_level = Some(self.level);
        self.inner.exemplars(q)
    }
    fn metadata(
        &self,
        tenant: String,
        metric: Option<String>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<(String, MetricMetadata)>, StoreError>> {
        self.inner.metadata(tenant, metric, limit)
    }
    fn cardinality(&self, mut q: SeriesQuery) -> BoxFuture<'_, Result<Cardinality, StoreError>> {
        q.read_level = Some(self.level);
        self.inner.cardinality(q)
    }
    fn aggregate(
        &self,
        mut req: cairn_storage_api::AggregateRequest,
    ) -> BoxFuture<'_, Result<Option<cairn_storage_api::PartialAggregate>, StoreError>> {
        req.select.read_level = Some(self.level);
        self.inner.aggregate(req)
    }
}

/// The request's tenant, authenticated for the scope its route group
/// needs ([`Need`]; read when none is set): a bearer token's tenant, else
/// `X-Scope-OrgID`, else `default` (anonymous access, where allowed).
/// Rejected with 401 (no, unknown or revoked token), 403 (a token without
/// the scope; a suspended tenant's write) or 400 (an invalid tenant id).
/// A read also takes one of the tenant's turns (`max_concurrent_queries`,
/// 429 when none is free), held while the handler runs.
pub(crate) struct Tenant(pub String, pub Option<crate::tenancy::ReadTurn>);

impl FromRequestParts<AppState> for Tenant {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, ApiError> {
        let need = parts.extensions.get::<Need>().map_or(Scope::Read, |n| n.0);
        let caller = st.0.tenants.authenticate(&parts.headers, need)?;
        let turn = match need {
            Scope::Read => Some(st.0.tenants.read_turn(&caller.tenant)?),
            _ => None,
        };
        Ok(Tenant(caller.tenant, turn))
    }
}

/// An admin caller (`/admin/v1/…`): 401 without a token, 403 with a
/// token that is not an admin token.
pub(crate) struct AdminCaller(#[allow(dead_code)] pub cairn_tenancy::Caller);

impl AdminCaller {
    /// For a handler that answers with another admin handler's answer.
    pub(crate) fn internal() -> Self {
        AdminCaller(cairn_tenancy::Caller {
            tenant: cairn_common::DEFAULT_TENANT.into(),
            token: None,
            admin: true,
        })
    }
}

impl FromRequestParts<AppState> for AdminCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, ApiError> {
        st.0.tenants
            .authenticate(&parts.headers, Scope::Admin)
            .map(AdminCaller)
    }
}

/// Prometheus's request parameters: the query string, plus the form body
/// of a POST (`application/x-www-form-urlencoded`). Reads the body (under
/// the router's body limit, 413 past it) whatever its type, as the
/// handlers always have.
pub(crate) struct PromParams(pub Params);

impl<S: Send + Sync> FromRequest<S> for PromParams {
    type Rejection = Response;

    async fn from_request(req: Request, st: &S) -> Result<Self, Response> {
        let query = req.uri().query().map(str::to_owned);
        let method = req.method().clone();
        let headers = req.headers().clone();
        let body = Bytes::from_request(req, st)
            .await
            .map_err(IntoResponse::into_response)?;
        Ok(PromParams(Params::parse(
            query.as_deref(),
            &method,
            &headers,
            &body,
        )))
    }
}

/// The query-string parameters only (GET-only endpoints); the body is
/// left unread.
pub(crate) struct UrlParams(pub Params);

impl<S: Send + Sync> FromRequestParts<S> for UrlParams {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        Ok(UrlParams(Params::parse(
            parts.uri.query(),
            &Method::GET,
            &parts.headers,
            &[],
        )))
    }
}
