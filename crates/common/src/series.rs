//! The data model reads and writes carry: a series with its samples,
//! exemplars, metric metadata, the parts of a write and what it did, and
//! the store error of the synchronous contracts.

use crate::labels::Labels;
use crate::sample::{Sample, Timestamp};

/// Errors a storage implementation reports across the trait boundary.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    #[error("I/O error {context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("corrupt data {0}")]
    Corrupt(String),
    #[error("{0}")]
    Other(String),
}

impl StorageError {
    /// Whether the caller may retry the same request later.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StorageError::Unavailable(_) | StorageError::Io { .. })
    }
}

/// One series with its samples in the requested range, sorted by time.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesData {
    /// Shared: a store may hand out the same label set to every query.
    pub labels: std::sync::Arc<Labels>,
    pub samples: Vec<Sample>,
}

/// An exemplar: labels (e.g. `trace_id`), value and timestamp.
#[derive(Debug, Clone, PartialEq)]
pub struct Exemplar {
    pub labels: Labels,
    pub value: f64,
    pub t: Timestamp,
}

/// A series with the exemplars found for it in a range.
#[derive(Debug, Clone, PartialEq)]
pub struct ExemplarSeries {
    pub labels: Labels,
    pub exemplars: Vec<Exemplar>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetricType {
    Unknown,
    Counter,
    Gauge,
    Histogram,
    GaugeHistogram,
    Summary,
    Info,
    StateSet,
}

impl MetricType {
    /// Prometheus's lower-case spelling, as `/api/v1/metadata` shows it.
    pub fn as_str(&self) -> &'static str {
        match self {
            MetricType::Unknown => "unknown",
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
            MetricType::Histogram => "histogram",
            MetricType::GaugeHistogram => "gaugehistogram",
            MetricType::Summary => "summary",
            MetricType::Info => "info",
            MetricType::StateSet => "stateset",
        }
    }

    pub fn parse(s: &str) -> MetricType {
        match s {
            "counter" => MetricType::Counter,
            "gauge" => MetricType::Gauge,
            "histogram" => MetricType::Histogram,
            "gaugehistogram" => MetricType::GaugeHistogram,
            "summary" => MetricType::Summary,
            "info" => MetricType::Info,
            "stateset" => MetricType::StateSet,
            _ => MetricType::Unknown,
        }
    }
}

/// Metric family metadata (TYPE, HELP, UNIT).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MetricMetadata {
    pub metric_type: MetricType,
    pub help: String,
    pub unit: String,
}

/// One series' part of a write.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SeriesWrite {
    pub labels: Labels,
    pub samples: Vec<Sample>,
    pub exemplars: Vec<Exemplar>,
}

/// Part of a batch the store refused (e.g. older than retention).
#[derive(Debug, Clone, PartialEq)]
pub struct WriteRejection {
    /// The series in Prometheus text form.
    pub series: String,
    pub reason: String,
    pub samples: usize,
}

/// What a write did. Returned only once the accepted part is durable.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WriteOutcome {
    pub accepted_samples: usize,
    pub accepted_exemplars: usize,
    pub rejections: Vec<WriteRejection>,
}
