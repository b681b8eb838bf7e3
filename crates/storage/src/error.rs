//! The crate's one error enum, and its mapping onto the contract's
//! [`StorageError`] at the crate boundary.

use cairn_common::StorageError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("I/O error {context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("corrupt data: {0}")]
    Corrupt(String),
    #[error("index error: {0}")]
    Index(String),
    #[error("{0}")]
    Invalid(String),
    #[error("unavailable: {0}")]
    Unavailable(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<Error> for StorageError {
    fn from(e: Error) -> Self {
        match e {
            Error::Io { context, source } => StorageError::Io { context, source },
            Error::Corrupt(m) => StorageError::Corrupt(m),
            Error::Index(m) => StorageError::Unavailable(m),
            Error::Invalid(m) => StorageError::Invalid(m),
            Error::Unavailable(m) => StorageError::Unavailable(m),
        }
    }
}
