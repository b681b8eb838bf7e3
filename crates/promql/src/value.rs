//! The value model, at the bottom of the engine: the public result types
//! ([`Value`], [`QueryResult`], [`QueryError`]) and the values nodes pass
//! each other during evaluation ([`Val`]: scalars, strings, instant vectors
//! of [`Elem`], range vectors of [`Series`]). Imports nothing of the crate.

use cairn_common::{Labels, Sample};
use rustc_hash::FxHashSet;
use std::sync::Arc;
/// One sample of an instant vector.
#[derive(Debug, Clone, PartialEq)]
pub struct InstantSample {
    pub labels: Labels,
    pub t: i64,
    pub v: f64,
}

/// One series of a range vector (matrix).
#[derive(Debug, Clone, PartialEq)]
pub struct RangeSeries {
    pub labels: Labels,
    pub samples: Vec<Sample>,
}

/// A query's result value, in Prometheus's four result types.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Scalar { t: i64, v: f64 },
    String { t: i64, v: String },
    Vector(Vec<InstantSample>),
    Matrix(Vec<RangeSeries>),
}

impl Value {
    /// Prometheus's `resultType` name.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Scalar { .. } => "scalar",
            Value::String { .. } => "string",
            Value::Vector(_) => "vector",
            Value::Matrix(_) => "matrix",
        }
    }
}

/// A result with its annotations (Prometheus's `warnings` and `infos`).
#[derive(Debug, Clone, PartialEq)]
pub struct QueryResult {
    pub value: Value,
    pub warnings: Vec<String>,
    pub infos: Vec<String>,
    /// The resolutions of the downsampled data that answered (`5m`, or
    /// `1h,5m` when selectors read different ones); None: raw samples.
    pub resolution: Option<String>,
}

/// Why a query failed. None of these is retryable as-is except `Storage`
/// errors the source marked retryable (see [`QueryError::is_retryable`]).
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The query text does not parse or is not a valid expression (400).
    #[error("{0}")]
    Parse(String),
    /// The query parsed but cannot be evaluated (422).
    #[error("{0}")]
    Execution(String),
    /// The query ran past its time budget (503).
    #[error("{0}")]
    Timeout(String),
    /// The query would load too many samples (422).
    #[error("{0}")]
    TooManySamples(String),
    /// The series source failed (500).
    #[error("{0}")]
    Storage(String),
    /// The series source cannot answer now (e.g. too few replicas of a
    /// shard for the read level): 503, retryable.
    #[error("{0}")]
    Unavailable(String),
    /// The caller gave up on the query (its client disconnected).
    #[error("query cancelled: {0}")]
    Cancelled(String),
}

impl QueryError {
    /// Prometheus's `errorType` for the HTTP API.
    pub fn error_type(&self) -> &'static str {
        match self {
            QueryError::Parse(_) => "bad_data",
            QueryError::Execution(_) | QueryError::TooManySamples(_) => "execution",
            QueryError::Timeout(_) => "timeout",
            QueryError::Storage(_) => "internal",
            QueryError::Unavailable(_) => "unavailable",
            QueryError::Cancelled(_) => "canceled",
        }
    }

    /// Whether the same query may succeed if retried later.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            QueryError::Timeout(_) | QueryError::Storage(_) | QueryError::Unavailable(_)
        )
    }
}

pub(crate) type Result<T, E = QueryError> = std::result::Result<T, E>;

/// One element of an instant vector during evaluation.
#[derive(Debug, Clone)]
pub(crate) struct Elem {
    /// Shared: steps refer to a series' label set, never copy it.
    pub labels: Arc<Labels>,
    /// The sample's own timestamp (for `timestamp()`); the eval time otherwise.
    pub t: i64,
    pub v: f64,
    /// Delayed `__name__` removal: dropped when the result is returned.
    pub drop_name: bool,
}

/// One series of a range vector during evaluation.
#[derive(Debug, Clone)]
pub(crate) struct Series {
    pub labels: Arc<Labels>,
    pub samples: Vec<Sample>,
    pub drop_name: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct MatrixVal {
    pub series: Vec<Series>,
    /// The window `(range_end - range_ms, range_end]` the samples came from.
    pub range_end: i64,
    pub range_ms: i64,
}

#[derive(Debug, Clone)]
pub(crate) enum Val {
    Scalar(f64),
    Str(String),
    Vector(Vec<Elem>),
    Matrix(MatrixVal),
}

impl Val {
    pub(crate) fn type_name(&self) -> &'static str {
        match self {
            Val::Scalar(_) => "scalar",
            Val::Str(_) => "string",
            Val::Vector(_) => "instant vector",
            Val::Matrix(_) => "range vector",
        }
    }
}

pub(crate) fn exec_err(msg: impl Into<String>) -> QueryError {
    QueryError::Execution(msg.into())
}

/// Labels in Go's `labels.Labels.String()` form: `{__name__="x", a="b"}`.
pub(crate) fn go_labels(l: &Labels) -> String {
    let mut s = String::from("{");
    for (i, lb) in l.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        s.push_str(&lb.name);
        s.push('=');
        s.push_str(&format!("{:?}", lb.value));
    }
    s.push('}');
    s
}

/// Errors if two elements have the same label set.
pub(crate) fn check_unique_labels(elems: &[Elem]) -> Result<()> {
    if elems.len() < 2 {
        return Ok(());
    }
    let mut seen: FxHashSet<&Labels> = FxHashSet::default();
    seen.reserve(elems.len());
    for e in elems {
        if !seen.insert(&e.labels) {
            return Err(exec_err(
                "vector cannot contain metrics with the same labelset",
            ));
        }
    }
    Ok(())
}

pub(crate) fn too_many_samples() -> QueryError {
    QueryError::TooManySamples(
        "query processing would load too many samples into memory in query execution".into(),
    )
}

/// `Cancelled` once `flag` is set.
pub(crate) fn check_cancel(flag: Option<&std::sync::atomic::AtomicBool>) -> Result<()> {
    match flag {
        Some(f) if f.load(std::sync::atomic::Ordering::Relaxed) => Err(QueryError::Cancelled(
            "the client went away or the query was abandoned".into(),
        )),
        _ => Ok(()),
    }
}

pub(crate) fn timeout_err(stage: &str) -> QueryError {
    QueryError::Timeout(format!("query timed out in {stage}"))
}
