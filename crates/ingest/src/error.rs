//! The ingest error: what was wrong with a request, and which status it
//! calls for.

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum IngestError {
    /// The body is not snappy (block format).
    #[error("body is not valid snappy-compressed data: {0}")]
    Snappy(String),
    /// The decompressed body is not a `prometheus.WriteRequest`.
    #[error("body is not a valid remote-write protobuf (prometheus.WriteRequest): {0}")]
    Protobuf(String),
    #[error("decompressed body is {size} bytes, above the limit of {limit} bytes (ingest.max-decoded-size)")]
    TooLarge { size: usize, limit: usize },
    /// The snappy header claims more bytes than the body can expand to.
    #[error("body is not valid snappy-compressed data: its header claims {claimed} bytes, more than {body} compressed bytes can hold")]
    ImpossibleLength { claimed: usize, body: usize },
    #[error(
        "request has more than {limit} series (ingest.max-series-per-request); nothing was stored"
    )]
    TooManySeries { limit: usize },
    /// The tenant id as sent, cut to a readable length.
    #[error("invalid tenant {0:?}: must be 1-150 characters of [a-zA-Z0-9!_.*'()-]")]
    Tenant(String),
    /// A remote-write `Content-Type` other than protobuf (cut short).
    #[error("unsupported Content-Type {0:?}: remote write expects application/x-protobuf")]
    ContentType(String),
    /// A remote-write `proto=` other than `prometheus.WriteRequest`.
    #[error("unsupported remote-write message {0:?}: this endpoint accepts prometheus.WriteRequest (remote write 1.0)")]
    MessageType(String),
    /// A remote-write `Content-Encoding` other than snappy.
    #[error("unsupported Content-Encoding {0:?}: remote write expects snappy")]
    ContentEncoding(String),
    /// A remote-read body that does not decompress (or is too large).
    #[error("remote read: {0}")]
    ReadBody(Box<IngestError>),
    /// A remote-read request that decodes but cannot be answered.
    #[error("remote read: {0}")]
    ReadRequest(String),
    /// The remote-read response could not be encoded.
    #[error("remote read: snappy compression failed: {0}")]
    ReadResponse(String),
}

impl IngestError {
    /// Decoding errors are the client's fault and never retryable.
    pub fn is_retryable(&self) -> bool {
        false
    }

    /// Whether the body decompresses past the limit (HTTP 413).
    pub fn is_too_large(&self) -> bool {
        match self {
            IngestError::TooLarge { .. } => true,
            IngestError::ReadBody(e) => e.is_too_large(),
            _ => false,
        }
    }

    /// Whether the request's headers name a format this endpoint does not
    /// speak (HTTP 415).
    pub fn is_unsupported_media(&self) -> bool {
        matches!(
            self,
            IngestError::ContentType(_)
                | IngestError::MessageType(_)
                | IngestError::ContentEncoding(_)
        )
    }
}
