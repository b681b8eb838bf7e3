//! `cairn-storage-api`: the storage contract — what a query engine, an
//! HTTP handler or a gateway asks of a store, and what it gets back.
//!
//! Owns: the requests ([`SelectRequest`] with tenant, namespace, matchers,
//! time range, hints, shard set, limits and deadline; [`SeriesQuery`] for
//! label and exemplar reads; [`WriteRequest`] with a shard and a
//! consistency level ([`WriteLevel`])); the answers (series in batches whose samples are
//! decoded or encoded chunks, [`SeriesSamples`]); the one error type
//! [`StoreError`] with its [`ErrorKind`]s, HTTP statuses and gRPC codes; the
//! async, object-safe traits [`SeriesReader`] and [`ShardWriter`]; the
//! mergeable answer of a cardinality read ([`Cardinality`]); partial
//! aggregation pushed down to the stores ([`AggregateRequest`],
//! [`PartialAggregate`], [`Aggregator`]); their
//! implementation for the in-memory store; limits and deadline enforcement
//! shared by every store ([`guarded`]); and the [`conformance`] suite.
//!
//! Must never depend on: RocksDB, tokio, tonic, any I/O crate, or any store.
//! Stores (the on-disk node, a remote node's client) depend on this crate.

mod aggregate;
mod cardinality;
pub mod conformance;
mod error;
mod guard;
mod mem;
mod request;
mod series;
mod traits;

pub use aggregate::{
    AggregateRequest, Aggregator, PartialAggregate, PartialCell, PartialGroup, ShardSums,
};
pub use cairn_cluster::ReadLevel;
pub use cardinality::Cardinality;
pub use error::{ErrorKind, StoreError};
pub use guard::guarded;
pub use request::{
    cut_to_limit, EncodedOnce, ReadLimits, SelectHints, SelectRequest, SeriesQuery, ShardSet,
    Warnings, WriteLevel, WriteRequest, NOT_HELD_BY_ID, RAW_NAMESPACE, ROLLUP_INPUTS_NAMESPACE,
};
pub use series::{EncodedChunk, SampleDigest, SeriesSamples, StoredSeries};
pub use traits::{
    block_on, decode_batch, next_batch, select_all, select_batched, stream_from_iter,
    stream_from_vec, BoxFuture, SeriesReader, SeriesStream, ShardWriter,
};
