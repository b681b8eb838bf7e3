//! `cairn-promql`: Cairn's PromQL engine.
//!
//! Owns: parsing (through GreptimeDB's `promql-parser`), planning which series
//! each selector needs over which time range, fetching them through the
//! [`SeriesSource`](cairn_common::SeriesSource) contract, and evaluating the
//! expression with Prometheus 3.x semantics (5m lookback, left-open range
//! selectors, staleness markers, `offset`, `@`, subqueries, delayed
//! `__name__` removal).
//!
//! Must never depend on: `cairn-storage`, RocksDB, tokio, any I/O crate. The
//! engine sees storage only through `cairn_common::SeriesSource`, so it runs
//! over the in-process store, remote shards, or `MemStore` alike.
//!
//! Layers, lowest first; a module imports only modules before it, and none
//! imports the crate root (checked by `tests/layers.rs`):
//! `value` (results, errors, the values nodes pass) → `bounds` (query
//! text and duration limits) → `kernels` (pure arithmetic: accumulators,
//! binary operators, range and histogram functions, float formatting) →
//! `ast` (helpers over the parsed expression) → `plan` (node ids, what each
//! selector reads, what is folded) → `fetch` (the only caller of
//! `SeriesSource`, async) → `exec` (validate, plan, fetch, execute; its
//! own order is in its header) → `engine` (the public [`Engine`]) →
//! `fuzzing`. The promqltest runner is a crate of its own
//! (`cairn-promqltest`) above this one.
//!
//! Evaluation model: all selectors are fetched up front, then the expression is evaluated one step at a time;
//! a range query is its instant evaluations at each step, merged by labels.
//! In a range query, simple aggregations of a range function of a range
//! selector (outside subqueries) are folded series by series while their
//! selector is read in batches (`SeriesSource::select_batched`,
//! `exec::fold`), so its samples are never all held; the common dashboard
//! shapes — selectors, range functions, arithmetic and comparisons, simple
//! aggregations, `topk` — are evaluated series-wise (`exec::serieswise`):
//! the whole query when every node allows it, else its largest such
//! subexpressions ahead of the step loop. Both give the step-by-step results.

mod ast;
mod bounds;
mod engine;
mod exec;
mod fetch;
#[doc(hidden)]
pub mod fuzzing;
mod kernels;
mod parse_error;
mod plan;
mod resolution;
mod value;

pub use engine::{extract_selectors, parse, parse_bounded, Engine, EngineOptions};
pub use kernels::float::float_almost_equal;
pub use resolution::{
    exemplar_source, SourceNamespace, SourceResolution, NAMESPACE_LABEL, ROLLUP_LABEL,
};
pub use value::{InstantSample, QueryError, QueryResult, RangeSeries, Value};
