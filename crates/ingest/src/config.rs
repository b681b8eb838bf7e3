//! The `ingest:` config section, as written: request size limits, the
//! per-series and per-request ingest limits, and the write turns the HTTP
//! layer hands out. Defaults: the embedded `config/cairn.yaml`, which a
//! test in the binary keeps equal to `IngestLimits::default()` and the HTTP
//! layer's defaults.

use cairn_common::config::{ByteSize, ConfigError, Duration};
use serde::Deserialize;

/// `ingest:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct IngestSection {
    pub max_body_size: ByteSize,
    pub max_decoded_size: ByteSize,
    pub max_labels_per_series: usize,
    pub max_label_name_length: usize,
    pub max_label_value_length: usize,
    pub max_series_per_request: usize,
    pub max_new_series_per_request: usize,
    pub max_future: Duration,
    pub max_concurrency: usize,
    pub max_queue_duration: Duration,
    pub label_set_cache: usize,
}

impl IngestSection {
    /// The ingest limits, checked against the bounds the on-disk encodings
    /// hold.
    pub fn limits(&self) -> Result<cairn_common::IngestLimits, ConfigError> {
        let l = cairn_common::IngestLimits {
            max_labels_per_series: self.max_labels_per_series,
            max_label_name_length: self.max_label_name_length,
            max_label_value_length: self.max_label_value_length,
            max_series_per_request: self.max_series_per_request,
            max_new_series_per_request: self.max_new_series_per_request,
            max_decoded_size: self.max_decoded_size.as_usize(),
            max_future_ms: self.max_future.as_millis_i64(),
        };
        // Its message starts with the key (`ingest.max-labels-per-series must …`).
        l.validate().map_err(|e| match e.split_once(' ') {
            Some((key, msg)) => ConfigError::new(key, msg),
            None => ConfigError::new("ingest", e),
        })?;
        Ok(l)
    }

    /// Checks every value; the error names the bad key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.limits().map(|_| ())
    }
}
