//! The contract's one error type: a kind that says what went wrong (and so
//! which HTTP status or gRPC code it becomes), a message for the user, and
//! whether the same request may be retried.

use cairn_common::StorageError;

/// What went wrong, independent of the transport that reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The request itself is wrong (bad matcher, range, batch).
    InvalidInput,
    /// A named thing (namespace, shard, tenant) does not exist.
    NotFound,
    /// A limit on size or cardinality was exceeded (series, samples, labels).
    LimitExceeded,
    /// A rate limit was hit: the same request later may succeed.
    RateLimited,
    /// The store cannot serve now (disk full, node down, not enough replicas).
    Unavailable,
    /// The request's deadline passed.
    Timeout,
    /// A bug or corrupt data: not the caller's fault, not fixed by retrying.
    Internal,
}

impl ErrorKind {
    /// The HTTP status Prometheus-compatible APIs answer with.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorKind::InvalidInput => 400,
            ErrorKind::NotFound => 404,
            ErrorKind::LimitExceeded => 422,
            ErrorKind::RateLimited => 429,
            ErrorKind::Unavailable | ErrorKind::Timeout => 503,
            ErrorKind::Internal => 500,
        }
    }

    /// The gRPC status code (numbering of `google.rpc.Code`).
    pub fn grpc_code(self) -> i32 {
        match self {
            ErrorKind::InvalidInput => 3,  // INVALID_ARGUMENT
            ErrorKind::Timeout => 4,       // DEADLINE_EXCEEDED
            ErrorKind::NotFound => 5,      // NOT_FOUND
            ErrorKind::RateLimited => 8,   // RESOURCE_EXHAUSTED
            ErrorKind::LimitExceeded => 9, // FAILED_PRECONDITION
            ErrorKind::Internal => 13,     // INTERNAL
            ErrorKind::Unavailable => 14,  // UNAVAILABLE
        }
    }

    /// The kind a gRPC status code stands for (the inverse of
    /// [`grpc_code`](Self::grpc_code); unknown codes are `Internal`).
    pub fn from_grpc_code(code: i32) -> ErrorKind {
        match code {
            3 | 11 => ErrorKind::InvalidInput, // INVALID_ARGUMENT, OUT_OF_RANGE
            4 => ErrorKind::Timeout,
            5 => ErrorKind::NotFound,
            8 => ErrorKind::RateLimited,
            9 => ErrorKind::LimitExceeded,
            14 => ErrorKind::Unavailable,
            _ => ErrorKind::Internal,
        }
    }

    /// Whether a request failing this way may succeed if sent again.
    pub fn retryable_by_default(self) -> bool {
        matches!(
            self,
            ErrorKind::RateLimited | ErrorKind::Unavailable | ErrorKind::Timeout
        )
    }
}

/// An error across the storage contract.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct StoreError {
    kind: ErrorKind,
    message: String,
    retryable: bool,
}

impl StoreError {
    /// An error of `kind`, retryable as the kind is by default.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        StoreError {
            kind,
            message: message.into(),
            retryable: kind.retryable_by_default(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidInput, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }

    pub fn limit_exceeded(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::LimitExceeded, message)
    }

    pub fn rate_limited(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::RateLimited, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable, message)
    }

    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Timeout, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    /// The same error, retryable or not as said (overrides the kind's default).
    pub fn with_retryable(mut self, retryable: bool) -> Self {
        self.retryable = retryable;
        self
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether the caller may send the same request again later.
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }

    pub fn http_status(&self) -> u16 {
        self.kind.http_status()
    }
}

impl From<StorageError> for StoreError {
    fn from(e: StorageError) -> Self {
        let retryable = e.is_retryable();
        let kind = match &e {
            StorageError::Invalid(_) => ErrorKind::InvalidInput,
            StorageError::Unavailable(_) | StorageError::Io { .. } => ErrorKind::Unavailable,
            StorageError::Corrupt(_) | StorageError::Other(_) => ErrorKind::Internal,
        };
        StoreError::new(kind, e.to_string()).with_retryable(retryable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KINDS: [ErrorKind; 7] = [
        ErrorKind::InvalidInput,
        ErrorKind::NotFound,
        ErrorKind::LimitExceeded,
        ErrorKind::RateLimited,
        ErrorKind::Unavailable,
        ErrorKind::Timeout,
        ErrorKind::Internal,
    ];

    #[test]
    fn every_kind_survives_a_grpc_round_trip() {
        for k in KINDS {
            assert_eq!(ErrorKind::from_grpc_code(k.grpc_code()), k, "{k:?}");
        }
        assert_eq!(ErrorKind::from_grpc_code(2), ErrorKind::Internal); // UNKNOWN
    }

    #[test]
    fn statuses_and_retryability_follow_the_kind() {
        assert_eq!(StoreError::invalid("x").http_status(), 400);
        assert_eq!(StoreError::limit_exceeded("x").http_status(), 422);
        assert_eq!(StoreError::rate_limited("x").http_status(), 429);
        assert_eq!(StoreError::timeout("x").http_status(), 503);
        assert_eq!(StoreError::internal("x").http_status(), 500);
        assert!(StoreError::unavailable("x").is_retryable());
        assert!(!StoreError::invalid("x").is_retryable());
        assert!(!StoreError::unavailable("x")
            .with_retryable(false)
            .is_retryable());
    }

    #[test]
    fn storage_errors_keep_their_message_and_retryability() {
        let io = StorageError::Io {
            context: "writing segment 7".into(),
            source: std::io::Error::other("no space left on device"),
        };
        let e = StoreError::from(io);
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        assert!(e.is_retryable());
        assert!(e.message().contains("writing segment 7"), "{e}");
        let c = StoreError::from(StorageError::Corrupt("in index key 0x01".into()));
        assert_eq!(c.kind(), ErrorKind::Internal);
        assert!(!c.is_retryable());
    }
}
