//! The HTTP layer's one error type, [`ApiError`]: every handler, extractor
//! and the read pool fail with it, and its [`IntoResponse`] writes what
//! Prometheus writes — `{"status":"error","errorType":…,"error":…}` with
//! the status code clients expect — or, for the remote-write and
//! remote-read endpoints (whose clients read plain text), a text body.
//!
//! Status codes: `bad_data` 400; `execution` 422; `timeout`, `unavailable`
//! and `canceled` 503; `internal` 500; remote write: 400/413/415 are never
//! retried by Prometheus, 5xx are.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use cairn_common::StorageError;
use cairn_ingest::IngestError;
use cairn_promql::QueryError;
use cairn_storage_api::{ErrorKind, StoreError};

/// Longest error message sent: a safety net for errors from the parser,
/// engine or store that quote request input (a query, a regex) whole.
pub(crate) const MAX_ERROR_MESSAGE: usize = 1024;

/// Bytes of request input echoed back in an error message.
pub(crate) const ECHO_MAX: usize = 256;

/// At most [`ECHO_MAX`] bytes of request input, for an error message.
pub(crate) fn echo(s: &str) -> std::borrow::Cow<'_, str> {
    cairn_common::limits::truncate_str(s, ECHO_MAX)
}

/// A failed request, as the client will see it.
#[derive(Debug)]
pub(crate) enum ApiError {
    /// Prometheus's error JSON; `kind` is its `errorType`.
    Json {
        status: StatusCode,
        kind: &'static str,
        msg: String,
    },
    /// A `text/plain` body, sent as is.
    Text { status: StatusCode, body: String },
    /// A tenant over its rate: 429 in plain text with `Retry-After` (seconds).
    Limited { body: String, retry_after: u64 },
}

pub(crate) type Result<T, E = ApiError> = std::result::Result<T, E>;

impl ApiError {
    pub(crate) fn json(status: StatusCode, kind: &'static str, msg: impl Into<String>) -> Self {
        ApiError::Json {
            status,
            kind,
            msg: msg.into(),
        }
    }

    /// 400 `bad_data`: the request is malformed.
    pub(crate) fn bad_data(msg: impl Into<String>) -> Self {
        Self::json(StatusCode::BAD_REQUEST, "bad_data", msg)
    }

    /// 500 `internal`.
    pub(crate) fn internal(msg: impl Into<String>) -> Self {
        Self::json(StatusCode::INTERNAL_SERVER_ERROR, "internal", msg)
    }

    /// 503 `unavailable`: retry later.
    pub(crate) fn unavailable(msg: impl Into<String>) -> Self {
        Self::json(StatusCode::SERVICE_UNAVAILABLE, "unavailable", msg)
    }

    /// A plain-text answer; a newline is added.
    pub(crate) fn text(status: StatusCode, msg: impl std::fmt::Display) -> Self {
        ApiError::Text {
            status,
            body: format!("{msg}\n"),
        }
    }

    /// A plain-text answer cut to [`MAX_ERROR_MESSAGE`] (a matcher's regex
    /// error quotes the whole pattern).
    pub(crate) fn text_cut(status: StatusCode, msg: &str) -> Self {
        let msg = cairn_common::limits::truncate_str(msg, MAX_ERROR_MESSAGE);
        Self::text(status, msg)
    }

    /// 503 before recovery is complete (plain text, as `/-/ready` says it).
    pub(crate) fn not_ready() -> Self {
        ApiError::Text {
            status: StatusCode::SERVICE_UNAVAILABLE,
            body: "not ready: recovery in progress\n".into(),
        }
    }

    pub(crate) fn status(&self) -> StatusCode {
        match self {
            ApiError::Json { status, .. } | ApiError::Text { status, .. } => *status,
            ApiError::Limited { .. } => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    /// A store error: 400 when the request was invalid, 503 when it may
    /// succeed later, else 500.
    pub(crate) fn storage_status(e: &StorageError) -> StatusCode {
        match e {
            StorageError::Invalid(_) => StatusCode::BAD_REQUEST,
            e if e.is_retryable() => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A query error of `query` or `format_query`: a syntax
    /// error (its text is `[line:col: ]parse error: …`, from
    /// `cairn_promql::parse`) gets Prometheus's `invalid parameter
    /// "query": ` in front; the engine's other refusals (a range vector in
    /// a range query, a query too long) keep their text, as Prometheus
    /// keeps its own; the rest as [`From<QueryError>`].
    pub(crate) fn query_param(e: QueryError) -> Self {
        match e {
            QueryError::Parse(msg) if msg.contains("parse error: ") => {
                Self::bad_data(format!("invalid parameter \"query\": {msg}"))
            }
            e => e.into(),
        }
    }
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        let status = Self::storage_status(&e);
        let kind = if status == StatusCode::BAD_REQUEST {
            "bad_data"
        } else {
            "internal"
        };
        Self::json(status, kind, e.to_string())
    }
}

impl From<StoreError> for ApiError {
    /// The kind's status, with Prometheus's `errorType` for it.
    fn from(e: StoreError) -> Self {
        let status =
            StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let kind = match e.kind() {
            ErrorKind::InvalidInput => "bad_data",
            ErrorKind::NotFound => "not_found",
            ErrorKind::LimitExceeded => "execution",
            ErrorKind::Timeout => "timeout",
            ErrorKind::RateLimited | ErrorKind::Unavailable => "unavailable",
            ErrorKind::Internal => "internal",
        };
        if status.is_server_error() {
            tracing::warn!(err = %e, kind, "read failed in storage");
        }
        Self::json(status, kind, e.to_string())
    }
}

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> Self {
        let status = match &e {
            QueryError::Parse(_) => StatusCode::BAD_REQUEST,
            QueryError::Execution(_) | QueryError::TooManySamples(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            QueryError::Timeout(_) | QueryError::Cancelled(_) | QueryError::Unavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            QueryError::Storage(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status.is_server_error() {
            tracing::warn!(err = %e, kind = e.error_type(), "query failed");
        }
        Self::json(status, e.error_type(), e.to_string())
    }
}

impl From<IngestError> for ApiError {
    /// Remote write and read answer decoding errors in plain text: 413
    /// when the body is too large, 415 for a format not spoken, else 400.
    fn from(e: IngestError) -> Self {
        let status = if e.is_too_large() {
            StatusCode::PAYLOAD_TOO_LARGE
        } else if e.is_unsupported_media() {
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        } else {
            StatusCode::BAD_REQUEST
        };
        Self::text_cut(status, &e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::Json { status, kind, msg } => {
                let msg = cairn_common::limits::truncate_str(&msg, MAX_ERROR_MESSAGE);
                (
                    status,
                    [(header::CONTENT_TYPE, "application/json")],
                    serde_json::json!({"status": "error", "errorType": kind, "error": msg})
                        .to_string(),
                )
                    .into_response()
            }
            ApiError::Text { status, body } => (
                status,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                body,
            )
                .into_response(),
            ApiError::Limited { body, retry_after } => (
                StatusCode::TOO_MANY_REQUESTS,
                [
                    (
                        header::CONTENT_TYPE,
                        "text/plain; charset=utf-8".to_string(),
                    ),
                    (header::RETRY_AFTER, retry_after.to_string()),
                ],
                body,
            )
                .into_response(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body(e: ApiError) -> (u16, String, String) {
        let r = e.into_response();
        let status = r.status().as_u16();
        let ct = r.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .to_string();
        let b = axum::body::to_bytes(r.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, ct, String::from_utf8(b.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn errors_render_as_prometheus_does() {
        let (s, ct, b) = body(ApiError::bad_data("no")).await;
        assert_eq!((s, ct.as_str()), (400, "application/json"));
        assert_eq!(
            b,
            r#"{"error":"no","errorType":"bad_data","status":"error"}"#
        );
        let (s, _, b) = body(QueryError::Execution("many-to-many".into()).into()).await;
        assert_eq!(s, 422);
        assert!(b.contains(r#""errorType":"execution""#), "{b}");
        let (s, _, b) = body(QueryError::Cancelled("gone".into()).into()).await;
        assert_eq!(s, 503);
        assert!(b.contains(r#""errorType":"canceled""#), "{b}");
        let (s, _, b) = body(ApiError::query_param(QueryError::Parse(
            "1:3: parse error: x".into(),
        )))
        .await;
        assert_eq!(s, 400);
        assert!(
            b.contains(r#""error":"invalid parameter \"query\": 1:3: parse error: x""#),
            "{b}"
        );
        let (_, _, b) = body(ApiError::query_param(QueryError::Parse(
            "query is 9 bytes, above the limit of 8 bytes (query.max-length)".into(),
        )))
        .await;
        assert!(b.contains(r#""error":"query is 9 bytes"#), "{b}");
        let (s, _, _) = body(StorageError::Invalid("bad".into()).into()).await;
        assert_eq!(s, 400);
        // Messages quoting request input are cut.
        let (_, _, b) = body(ApiError::bad_data("x".repeat(100_000))).await;
        assert!(b.len() < MAX_ERROR_MESSAGE + 100, "{} bytes", b.len());
        // Remote write/read: plain text, 413/415/400.
        let (s, ct, b) = body(IngestError::TooLarge { size: 9, limit: 1 }.into()).await;
        assert_eq!((s, ct.as_str()), (413, "text/plain; charset=utf-8"));
        assert!(b.ends_with('\n'));
        let (s, _, _) = body(IngestError::ContentEncoding("gzip".into()).into()).await;
        assert_eq!(s, 415);
        let (s, _, _) = body(IngestError::Snappy("x".into()).into()).await;
        assert_eq!(s, 400);
        let (s, _, b) = body(ApiError::not_ready()).await;
        assert_eq!((s, b.as_str()), (503, "not ready: recovery in progress\n"));
    }
}
