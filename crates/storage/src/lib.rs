//! `cairn-storage`: the storage node.
//!
//! Owns the write path below the gateway — commit log → head → immutable
//! filesets — and the label index in RocksDB. Implements the `cairn-common`
//! contracts [`SampleWriter`](cairn_common::SampleWriter) and
//! [`SeriesSource`](cairn_common::SeriesSource) (in `contract.rs`), which is
//! all the rest of Cairn sees.
//!
//! Modules, each using only those listed before it:
//! - `error` — the crate's error enum and its mapping onto `StorageError`;
//! - `fault` — fault points for the crash and disk-full tests;
//! - `enc` — varints, length-prefixed bytes, label sets;
//! - [`namespace`] — a namespace as a value (name, resolution, retention,
//!   block window); the node's list (default: `raw` alone); block windows;
//! - [`commitlog`] — segments, framing, checksums, group commit;
//! - `record` — the commit-log record payload, encoded and decoded
//!   (versions 1 and 2; the v2 encoder and decoder keep per-segment refs
//!   and previous values);
//! - [`fileset`] — immutable per-(namespace, shard, block, volume) files;
//! - [`index`] — the RocksDB label index, a folder: keys, postings,
//!   registry, cache, select, exemplars, metadata;
//! - [`head`] — in-memory block buffers, buffers only;
//! - [`shard`] — the unit placement moves: head + filesets + in-flight
//!   flushes, the flush of one block, reads merged across them;
//! - [`metrics`] — self-metric counters and the scrape-time gauges, put into
//!   a `prometheus-client` registry the caller owns;
//! - `config` — [`StorageConfig`], the [`Clock`], and the `storage:` config section ([`StorageSection`]);
//! - `snapshot` — head snapshots on disk (written crash-safely, listed,
//!   read and checked), which bound the commit log a restart replays;
//! - `recovery` — index → filesets → head snapshot → commit-log replay
//!   after it, at open;
//! - `flush` — a flush run over all shards, and the background
//!   [`FlushTask`] that shutdown stops and joins;
//! - [`downsample`] — the aggregated namespaces' rollup series, computed
//!   from the raw samples of closed windows (its progress marker, late
//!   windows);
//! - `node` — [`Storage`]: open, the write path, reads by shard, close;
//! - `contract` — `impl SampleWriter` and `impl SeriesSource` for `Storage`.
//!
//! A write: validate age against retention → register new series in the index
//! → append one commit-log record (series definitions, samples, exemplars,
//! metadata) → apply it to the head → wait until the record is durable → ack.
//! A flush (periodic, or `POST /admin/v1/flush`): seal the commit-log segment,
//! detach closed block windows from the head, write each as a fileset (merging
//! a previous volume of the same block), then delete commit-log segments whose
//! blocks are all on disk. A head snapshot (every `snapshot-interval`, and
//! at shutdown): seal the segment, write every shard's in-memory buffers as
//! chunks, then delete the segments the snapshot before it covered.
//!
//! Must never depend on: the HTTP layer, PromQL, ingest decoders. This crate
//! and `meta` are the only RocksDB users.

pub mod commitlog;
mod config;
mod contract;
pub mod downsample;
mod enc;
mod error;
#[doc(hidden)]
pub mod fault;
pub mod fileset;
mod flush;
#[doc(hidden)]
pub mod fuzzing;
pub mod head;
pub mod index;
pub mod metrics;
pub mod namespace;
mod node;
mod record;
mod recovery;
pub mod shard;
mod snapshot;

pub use commitlog::FsyncPolicy;
pub use config::{
    system_clock, Clock, CommitLogFormat, FsyncSetting, NamespaceEntry, NamespaceFull,
    StorageConfig, StorageSection,
};
pub use error::{Error, Result};
pub use flush::FlushTask;
pub use metrics::Metrics;
pub use namespace::Namespace;
pub use node::Storage;
pub use record::Compression as CommitLogCompression;

#[cfg(test)]
mod test_support;
