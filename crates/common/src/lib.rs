//! `cairn-common`: the vocabulary every other crate shares.
//!
//! Owns: labels and label sets, samples and exemplars, the 128-bit series id,
//! label matchers and the series-selector parser (`{job="a"}`, used by
//! `match[]` and by tenants' drop rules), the config value types every section shares (`config`:
//! durations and sizes from readable text, errors naming the key), and the two storage contracts — [`SeriesSource`] (read) and
//! [`SampleWriter`] (write). The query engine and the ingest gateway depend on
//! these traits only, never on `cairn-storage`.
//!
//! Must never depend on: RocksDB, tokio, any I/O crate. It stays small so
//! everything above it builds fast.

pub mod config;
pub mod duration;
#[doc(hidden)]
pub mod fuzz_replay;
pub mod gofmt;
mod labels;
pub mod limits;
mod matcher;
mod prepared;
mod sample;
mod selector;
mod series;
mod series_id;
mod source;

pub use labels::{
    distinct_names, distinct_values, is_valid_label_name, is_valid_metric_name, Label, Labels,
    LabelsBuilder, METRIC_NAME,
};
pub use limits::IngestLimits;
pub use matcher::{MatchOp, Matcher};
pub use prepared::{LazyLabels, PreparedBatch, PreparedSeries};
pub use sample::{is_stale_nan, stale_nan, Sample, Timestamp, STALE_NAN_BITS};
pub use selector::parse_selector;
pub use series::{
    Exemplar, ExemplarSeries, MetricMetadata, MetricType, SeriesData, SeriesWrite, StorageError,
    WriteOutcome, WriteRejection,
};
pub use series_id::{IdHasher, IdMap, SeriesId, INPUT_LABEL, ROLLUP_LABEL};
pub use source::{MemStore, SampleWriter, SeriesSource};

/// The tenant used when a request carries no `X-Scope-OrgID`.
pub const DEFAULT_TENANT: &str = "default";

/// True for a valid tenant id (Mimir's rule): 1 to 150 bytes of
/// `[A-Za-z0-9!-_.*'()]`, and neither `.` nor `..`.
pub fn is_valid_tenant_id(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 150
        && t != "."
        && t != ".."
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || "!-_.*'()".contains(c))
}
