//! `cairn-ingest`: turns what clients send into validated
//! [`PreparedBatch`](cairn_common::PreparedBatch)es.
//!
//! Owns: the Prometheus wire protocols the HTTP layer speaks — remote-write
//! 1.0 content negotiation (`content`) and decoding (snappy block format +
//! protobuf), remote-read request decoding and response encoding
//! (`remote_read`) — per-series validation with Prometheus's rules, and the
//! tenant convention (`X-Scope-OrgID`); its config section, `ingest:`
//! (`config`). Invalid series are reported by name and
//! reason while the valid rest of the request is kept (remote-write
//! semantics: the client gets a 400 it will not retry, nothing valid is lost).
//!
//! Must never depend on: `cairn-storage` or RocksDB — it hands batches to a
//! `SampleWriter` (in-process store or a remote shard client) — nor on an
//! HTTP framework: it sees header values and bodies, and its errors say
//! which status they call for (`is_too_large`, `is_unsupported_media`).

mod config;
mod content;
mod error;
mod fast;
#[doc(hidden)]
pub mod fuzzing;
pub mod remote_read;
mod validate;

pub use config::IngestSection;
pub use content::check_write_headers;
pub use error::IngestError;
pub use fast::{decode_known, decode_prepared, KnownLabels};
pub use validate::{
    decode_remote_write, decompress, tenant_from_header, time_window, validate, validate_labels,
    Decoded, Invalid,
};
