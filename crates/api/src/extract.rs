//! Extractors shared by the handlers: [`Ready`] (the backend, 503 before
//! recovery is done), [`Tenant`] (`X-Scope-OrgID`, 400 when invalid),
//! [`PromParams`] (Prometheus's parameters from the query string and a
//! POSTed form) and [`UrlParams`] (the query string only). An extractor's
//! rejection is the response: handlers list what they need, in the order
//! it is checked.

use crate::error::ApiError;
use crate::params::Params;
use crate::state::{AppState, Backend};
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method};
use axum::response::{IntoResponse, Response};

/// The backend the router serves from; rejected with 503 (plain text)
/// until recovery is complete.
pub(crate) struct Ready(pub Backend);

impl FromRequestParts<AppState> for Ready {
    type Rejection = ApiError;

    async fn from_request_parts(_: &mut Parts, st: &AppState) -> Result<Self, ApiError> {
        st.backend().cloned().map(Ready)
    }
}

/// The request's tenant: `X-Scope-OrgID`, else `default`; rejected with
/// 400 `bad_data` naming the rule.
pub(crate) struct Tenant(pub String);

impl Tenant {
    pub(crate) fn from_headers(headers: &HeaderMap) -> Result<Self, ApiError> {
        let h = headers
            .get("x-scope-orgid")
            .map(|v| v.to_str().unwrap_or("\u{fffd}"));
        cairn_ingest::tenant_from_header(h)
            .map(Tenant)
            .map_err(|e| ApiError::bad_data(e.to_string()))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Tenant {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        Self::from_headers(&parts.headers)
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
