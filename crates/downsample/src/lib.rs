//! `cairn-downsample`: the arithmetic of downsampling (issue 14), with no I/O.
//!
//! Owns:
//! - [`StoragePolicy`]: `resolution:retention` text (`raw:30d`, `5m:1y`) and
//!   the namespace name each policy is stored under;
//! - [`Window`], [`WindowBuilder`] and [`SeriesWindows`]: one series' aggregate
//!   per event-time window `[w, w+R)` (count, sum, min, max, first, last and a
//!   reset-aware counter aggregate), built incrementally or recomputed from the
//!   window's final raw samples;
//! - [`MatchedMapping`] and [`keeps`]: which aggregated namespaces a series'
//!   window goes to under the mapping rules it matched;
//! - [`Watermark`]: newest sample time minus the allowed lateness, which
//!   decides the windows that are closed;
//! - [`Row`]: the deterministic bytes of a closed window, keyed by
//!   (series, resolution, window start), so replicas and replays agree;
//! - [`pick_exemplars`]: the exemplar at a window's p99 (and the max);
//! - [`RangeRows`]: PromQL's `*_over_time`, `increase`, `rate` and `resets`
//!   answered from the rows of consecutive windows.
//!
//! Not here yet: exemplars in the row bytes, histogram-bucket series as a
//! group (each bucket, `_count` and `_sum` is a counter series of its own),
//! and merging fine rows into coarser ones (5m → 1h).
//!
//! Must never depend on: RocksDB, tokio, the storage crate, or any I/O. The
//! storage node drives these types; raw samples it must read (to recompute a
//! window) come in through arguments and callbacks.

mod error;
mod exemplar;
#[doc(hidden)]
pub mod fuzzing;
mod mapping;
mod policy;
mod query;
mod row;
mod watermark;
mod window;

#[cfg(test)]
mod differential;

pub use error::{Error, Result};
pub use exemplar::{bucket_quantile, compare_exemplars, pick_exemplars, Bucket, WindowExemplars};
pub use mapping::{keeps, MatchedMapping};
pub use policy::{Resolution, StoragePolicy};
pub use query::RangeRows;
pub use row::{decode_key, Row, KEY_LEN, ROW_VERSION};
pub use watermark::Watermark;
pub use window::{window_start, Aggregate, Push, SeriesWindows, Window, WindowBuilder};
