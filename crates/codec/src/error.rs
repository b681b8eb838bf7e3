//! The format version this build reads and the errors the codec reports.

/// Version byte written at the start of every chunk.
pub const FORMAT_VERSION: u8 = 2;

/// Errors of this crate. None are retryable: a bad chunk stays bad.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// `Encoder::append` got a timestamp not after the last one.
    #[error("out-of-order sample: timestamp {t} is not after the last appended timestamp {last}")]
    OutOfOrder { last: i64, t: i64 },
    /// The chunk has no header at all.
    #[error("empty chunk: no header byte")]
    Empty,
    /// The chunk's version byte is not one this build reads.
    #[error("unsupported chunk version {0} (this build reads version {FORMAT_VERSION})")]
    UnsupportedVersion(u8),
    /// The chunk ended before its header or all its samples were read.
    #[error("truncated chunk: input ended before all samples were decoded")]
    Truncated,
    /// The chunk is structurally invalid.
    #[error("corrupt chunk: {0}")]
    Corrupt(&'static str),
}

impl CodecError {
    /// Whether retrying the same operation could succeed. Never, for a codec.
    pub fn is_retryable(&self) -> bool {
        false
    }
}

/// Result type of this crate.
pub type Result<T, E = CodecError> = std::result::Result<T, E>;
