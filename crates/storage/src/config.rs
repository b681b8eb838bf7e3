//! What a node is opened with: its configuration and its clock.

use crate::commitlog::FsyncPolicy;
use crate::index;
use crate::namespace::{self, Namespace};
use cairn_common::Timestamp;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The clock the store reads "now" from (ms). Tests pass a fixed one.
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

pub fn system_clock() -> Clock {
    Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    })
}

#[derive(Debug, Clone)]
pub struct StorageConfig {
    pub data_dir: PathBuf,
    pub fsync: FsyncPolicy,
    /// The namespaces (default: `raw` alone, 2h blocks, 30d retention; the
    /// config keys `storage.block-size` and `storage.retention` set it).
    /// This release supports `raw` only (see [`namespace::validate`]).
    pub namespaces: Vec<Namespace>,
    /// How long after a window's end writes into it are still expected
    /// before it is flushed (default 10m).
    pub buffer_past: Duration,
    pub num_shards: u32,
    pub max_segment_bytes: u64,
    /// Background flush check period (default 1m).
    pub flush_interval: Duration,
    /// Head memory above which open windows are flushed early (default 4 GiB).
    pub head_max_bytes: u64,
    /// Block cache of the RocksDB label index (default 64 MiB).
    pub index_cache_bytes: u64,
    /// Series a write may create that the store has never seen (config
    /// `ingest.max-new-series-per-request`, default 100,000): a request
    /// creating more is refused whole, before anything is stored.
    pub max_new_series_per_request: usize,
    /// `storage.strict-replay`: a commit-log record that fails its checksum
    /// or decoding on replay (other than a torn tail) stops the start
    /// instead of being skipped and counted (default false).
    pub strict_replay: bool,
}

impl StorageConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            fsync: FsyncPolicy::Always,
            namespaces: vec![Namespace::default()],
            buffer_past: Duration::from_secs(600),
            num_shards: 64,
            max_segment_bytes: 128 << 20,
            flush_interval: Duration::from_secs(60),
            head_max_bytes: 4 << 30,
            index_cache_bytes: index::DEFAULT_CACHE_BYTES as u64,
            max_new_series_per_request: 100_000,
            strict_replay: false,
        }
    }

    /// The `raw` namespace, created with the defaults when the list has
    /// none (so `raw_mut().retention = …` always works).
    pub fn raw_mut(&mut self) -> &mut Namespace {
        let at = match self
            .namespaces
            .iter()
            .position(|n| n.name == namespace::RAW)
        {
            Some(i) => i,
            None => {
                self.namespaces.push(Namespace::default());
                self.namespaces.len() - 1
            }
        };
        &mut self.namespaces[at]
    }
}
