//! The crate's one error enum. Nothing here is retryable: every error names
//! bad input (policy text, samples, row bytes) that the same call would
//! reject again.

use cairn_common::Timestamp;

/// What went wrong in policy parsing, window building, row decoding or range
/// arithmetic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A `resolution:retention` text that is not a storage policy.
    #[error("storage policy {text:?}: {reason}")]
    Policy { text: String, reason: String },
    /// A sample older than (or at the same time as) the previous sample fed
    /// to a window builder: the window must be recomputed from raw.
    #[error(
        "window starting {start}: sample at {t} is not after the previous sample at {previous}"
    )]
    OutOfOrder {
        start: Timestamp,
        t: Timestamp,
        previous: Timestamp,
    },
    /// A sample whose timestamp lies outside the window it was given to.
    #[error("window [{start}, {end}): sample at {t} lies outside it")]
    OutsideWindow {
        start: Timestamp,
        end: Timestamp,
        t: Timestamp,
    },
    /// A row's key or value bytes that are not a row; `what` names the field.
    #[error("decoding downsampled row: {what}")]
    Decode { what: String },
    /// Rows handed to a range computation that are not consecutive windows of
    /// one series at one resolution inside the range.
    #[error("downsampled rows for range [{from}, {to}): {reason}")]
    Rows {
        from: Timestamp,
        to: Timestamp,
        reason: String,
    },
}

impl Error {
    /// Every error of this crate describes input that will fail again.
    pub fn is_retryable(&self) -> bool {
        false
    }

    pub(crate) fn decode(what: impl Into<String>) -> Self {
        Error::Decode { what: what.into() }
    }
}

/// This crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
