//! `cairn-promql`: Cairn's PromQL engine.
//!
//! Owns: parsing (through GreptimeDB's `promql-parser`), planning which series
//! each selector needs over which time range, fetching them through the
//! [`SeriesSource`] contract, and evaluating the expression with Prometheus
//! 3.x semantics (5m lookback, left-open range selectors, staleness markers,
//! `offset`, `@`, subqueries, delayed `__name__` removal). Also owns the
//! [`promqltest`] conformance runner for Prometheus's test-script format.
//!
//! Must never depend on: `cairn-storage`, RocksDB, tokio, any I/O crate. The
//! engine sees storage only through `cairn_common::SeriesSource`, so it runs
//! over the in-process store, remote shards, or `MemSource` alike.
//!
//! Evaluation model: all selectors are fetched up front (so the source trait
//! stays synchronous), then the expression is evaluated one step at a time;
//! a range query is its instant evaluations at each step, merged by labels.

mod aggr;
mod binop;
mod eval;
mod functions;
pub mod promqltest;

use cairn_common::{Labels, Sample, SeriesSource};
use std::time::Duration;

/// Engine limits and defaults.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// How far back an instant selector looks for a sample (Prometheus: 5m).
    pub lookback_delta_ms: i64,
    /// Most samples a query may load or produce.
    pub max_samples: usize,
    /// Wall-clock budget of one query.
    pub timeout: Duration,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            lookback_delta_ms: 5 * 60 * 1000,
            max_samples: 50_000_000,
            timeout: Duration::from_secs(120),
        }
    }
}

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
}

impl QueryError {
    /// Prometheus's `errorType` for the HTTP API.
    pub fn error_type(&self) -> &'static str {
        match self {
            QueryError::Parse(_) => "bad_data",
            QueryError::Execution(_) | QueryError::TooManySamples(_) => "execution",
            QueryError::Timeout(_) => "timeout",
            QueryError::Storage(_) => "internal",
        }
    }

    /// Whether the same query may succeed if retried later.
    pub fn is_retryable(&self) -> bool {
        matches!(self, QueryError::Timeout(_) | QueryError::Storage(_))
    }
}

/// The PromQL engine. Cheap to share; holds only options.
#[derive(Debug, Clone, Default)]
pub struct Engine {
    opts: EngineOptions,
    /// Step of subqueries without an explicit step (Prometheus's global
    /// evaluation interval, 1m by default).
    default_subquery_step_ms: i64,
}

impl Engine {
    pub fn new(opts: EngineOptions) -> Self {
        Self {
            opts,
            default_subquery_step_ms: 60_000,
        }
    }

    /// Sets the step used by subqueries that give none (default 1m).
    pub fn with_default_subquery_step_ms(mut self, step_ms: i64) -> Self {
        self.default_subquery_step_ms = step_ms.max(1);
        self
    }

    pub fn options(&self) -> &EngineOptions {
        &self.opts
    }

    /// Evaluates `query` at `t_ms`.
    pub fn instant_query(
        &self,
        src: &dyn SeriesSource,
        tenant: &str,
        query: &str,
        t_ms: i64,
    ) -> Result<QueryResult, QueryError> {
        let expr = parse(query)?;
        eval::run(self, src, tenant, query, &expr, t_ms, t_ms, 0, false)
    }

    /// Evaluates `query` at every step from `start_ms` to `end_ms` inclusive.
    pub fn range_query(
        &self,
        src: &dyn SeriesSource,
        tenant: &str,
        query: &str,
        start_ms: i64,
        end_ms: i64,
        step_ms: i64,
    ) -> Result<QueryResult, QueryError> {
        if step_ms <= 0 {
            return Err(QueryError::Parse(
                "zero or negative query resolution step widths are not accepted. Try a positive integer".into(),
            ));
        }
        if end_ms < start_ms {
            return Err(QueryError::Parse(
                "end timestamp must not be before start time".into(),
            ));
        }
        let expr = parse(query)?;
        eval::run(
            self, src, tenant, query, &expr, start_ms, end_ms, step_ms, true,
        )
    }
}

/// Parses a PromQL expression.
pub fn parse(query: &str) -> Result<promql_parser::parser::Expr, QueryError> {
    promql_parser::parser::parse(query).map_err(QueryError::Parse)
}
