//! Partial aggregation pushed down to where the data lives: a simple
//! aggregation (`sum`, `count`, `min`, `max`, `avg`, `group` by labels) of
//! a selector, or of a range function of a selector, computed over some
//! shards by the node holding them, so a query over many series moves one
//! accumulator per group and step instead of every series.
//!
//! The contract carries the request and the partial answer; computing one
//! is the query engine's (an [`Aggregator`], which the binary hands to the
//! stores that compute partials: the node service for its peers, the
//! replicated store for its own node). A store that does not push
//! aggregations down answers `None` from
//! [`SeriesReader::aggregate`](crate::SeriesReader::aggregate), and the
//! engine reads the selector and aggregates itself.

use crate::{BoxFuture, SampleDigest, SelectRequest, SeriesReader, StoreError};
use cairn_common::Labels;

/// One aggregation to compute partially over the series `select` reads.
#[derive(Debug, Clone)]
pub struct AggregateRequest {
    /// The selector's read (matchers, the time range the evaluation needs,
    /// shards, deadline, read level).
    pub select: SelectRequest,
    /// The aggregation as PromQL text, e.g. `sum by (job) (rate(x[5m]))`.
    pub query: String,
    /// The evaluation's steps: `start`, `end` inclusive, `step` apart
    /// (`step` 0: one step at `start`, an instant query).
    pub start: i64,
    pub end: i64,
    pub step: i64,
    /// The lookback of instant selectors, ms.
    pub lookback: i64,
    /// The query's sample limit (each part is held to it; the caller
    /// checks the total).
    pub max_samples: usize,
    /// Whether the answer should carry the digest of every series read
    /// (a replicated read comparing it with another replica's).
    pub digests: bool,
}

/// Per shard (by number), its sum, or None where the store cannot tell
/// (see [`SeriesReader::shard_sums`](crate::SeriesReader::shard_sums)).
pub type ShardSums = Vec<(u32, Option<u64>)>;

/// One group's accumulator at one step (`count` 0: no value folded in).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PartialCell {
    pub value: f64,
    pub kahan_c: f64,
    pub mean: f64,
    pub count: f64,
    pub incremental_mean: bool,
}

/// One group's accumulators over the steps `first..first + cells.len()`.
#[derive(Debug, Clone, PartialEq)]
pub struct PartialGroup {
    /// The group's output labels (the grouping key).
    pub labels: Labels,
    pub first: u32,
    pub cells: Vec<PartialCell>,
}

/// The partial answer over the series one store read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PartialAggregate {
    pub groups: Vec<PartialGroup>,
    /// Series read.
    pub series: u64,
    /// Samples read (the query's sample limit).
    pub samples: u64,
    /// Per step, the samples its windows held.
    pub step_samples: Vec<u64>,
    /// Metric names `rate`-like functions found not to look like counters.
    pub not_counters: Vec<String>,
    /// With [`AggregateRequest::digests`]: each series' digest over the
    /// select's range, named by its id.
    pub digests: Vec<SampleDigest>,
    /// With [`AggregateRequest::digests`]: the store's
    /// [`shard_sums`](crate::SeriesReader::shard_sums) for the select,
    /// taken before the series were read (so a sample it read may be
    /// missing from them, never the other way round).
    pub shard_sums: ShardSums,
}

/// What computes a partial aggregation over a store (the query engine).
pub trait Aggregator: Send + Sync {
    /// The partial aggregation of `req` over the series `store` selects;
    /// `None` when partial accumulators would not be smaller than the
    /// series (about as many groups as series): the caller then reads them.
    fn partial<'a>(
        &'a self,
        store: &'a dyn SeriesReader,
        req: AggregateRequest,
    ) -> BoxFuture<'a, Result<Option<PartialAggregate>, StoreError>>;
}
