//! What a node is opened with: its configuration and its clock, and the
//! `storage:` config section it is built from ([`StorageSection`]).

use crate::commitlog::FsyncPolicy;
use crate::index;
use crate::namespace::{self, Namespace};
use crate::record::Compression;
use cairn_common::config::{ByteSize, ConfigError, Duration as CfgDuration};
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
    /// config keys `storage.block-size` and `storage.retention` set it;
    /// `storage.namespaces` adds aggregated ones; see [`namespace::validate`]).
    pub namespaces: Vec<Namespace>,
    /// How long after a window's end writes into it are still expected
    /// before it is flushed (default 10m).
    pub buffer_past: Duration,
    pub num_shards: u32,
    pub max_segment_bytes: u64,
    /// Background flush check period (default 1m).
    pub flush_interval: Duration,
    /// How often the head is snapshotted (and at close), bounding the
    /// commit log a restart replays to about this span; zero turns
    /// snapshots off (default 10m).
    pub snapshot_interval: Duration,
    /// Head memory above which open windows are flushed early (default 4 GiB).
    pub head_max_bytes: u64,
    /// Caches of the RocksDB label index (default 128 MiB): RocksDB's block
    /// cache and the decoded label-set cache share it.
    pub index_cache_bytes: u64,
    /// Series a write may create that the store has never seen (config
    /// `ingest.max-new-series-per-request`, default 100,000): a request
    /// creating more is refused whole, before anything is stored.
    pub max_new_series_per_request: usize,
    /// `storage.strict-replay`: a commit-log record that fails its checksum
    /// or decoding on replay (other than a torn tail) stops the start
    /// instead of being skipped and counted (default false).
    pub strict_replay: bool,
    /// How commit-log records are written (every format is read). Not in
    /// the config file: version 1 is for measurements and for a log a
    /// release before version 2 must still read.
    pub commitlog_format: CommitLogFormat,
    /// How long rollup rules' input copies are kept (the internal
    /// `rollup_inputs` namespace; default 6h), at least three of the
    /// larger of raw's block and the coarsest resolution (see
    /// [`rollup_inputs`](Self::rollup_inputs)).
    pub rollup_inputs_retention: Duration,
}

/// The layout new commit-log records are written in (see `record.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitLogFormat {
    /// Version 1: self-contained, 16-byte ids, raw values.
    V1,
    /// Version 2: refs per segment, coded values, the body compressed so.
    V2(Compression),
}

impl Default for CommitLogFormat {
    fn default() -> Self {
        CommitLogFormat::V2(Compression::Zstd(1))
    }
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
            snapshot_interval: Duration::from_secs(600),
            head_max_bytes: 4 << 30,
            index_cache_bytes: index::DEFAULT_CACHE_BYTES as u64,
            max_new_series_per_request: 100_000,
            strict_replay: false,
            commitlog_format: CommitLogFormat::default(),
            rollup_inputs_retention: Duration::from_secs(6 * 3600),
        }
    }

    /// The internal namespace of rollup rules' input copies, when there
    /// are aggregated namespaces: raw samples in raw's blocks, kept for
    /// `rollup_inputs_retention` but at least three of the larger of raw's
    /// block and the coarsest resolution — so a window's inputs outlive
    /// its closing (R + lateness) and the late recomputes of
    /// [`rollup_input_horizon`](Self::rollup_input_horizon). The copies are
    /// aggregation state, not a second raw store: a rule that drops its
    /// inputs saves their storage after this span.
    pub fn rollup_inputs(&self) -> Option<Namespace> {
        let raw = self.namespaces.iter().find(|n| n.resolution.is_none())?;
        let coarsest = self.namespaces.iter().filter_map(|n| n.resolution).max()?;
        let floor = 3 * raw.block.max(coarsest);
        Some(Namespace {
            name: cairn_storage_api::ROLLUP_INPUTS_NAMESPACE.to_string(),
            resolution: None,
            retention: self.rollup_inputs_retention.max(floor),
            block: raw.block,
        })
    }

    /// How old a sample may be for the gateway to copy it as a rollup
    /// input: half the inputs' retention, so the windows it lands in can
    /// still be recomputed from complete inputs. An older sample matched by
    /// a rollup rule stays in raw (even when the rule drops its inputs)
    /// and is counted as too old. `None` without aggregated namespaces.
    pub fn rollup_input_horizon(&self) -> Option<Duration> {
        self.rollup_inputs().map(|n| n.retention / 2)
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

/// `storage.fsync`: `always`, or a period (`10ms`; `0s` means `always`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsyncSetting(pub FsyncPolicy);

impl<'de> serde::Deserialize<'de> for FsyncSetting {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s == "always" {
            return Ok(Self(FsyncPolicy::Always));
        }
        match cairn_common::config::Duration::parse(&s) {
            Some(p) if p.get().is_zero() => Ok(Self(FsyncPolicy::Always)),
            Some(p) => Ok(Self(FsyncPolicy::Periodic(p.get()))),
            None => Err(serde::de::Error::custom(format!(
                "{s:?} must be \"always\" or a period like 10ms"
            ))),
        }
    }
}

/// The `storage:` config section, as written (defaults: the embedded
/// `config/cairn.yaml`, which a test keeps equal to [`StorageConfig::new`]).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct StorageSection {
    pub data_dir: PathBuf,
    pub fsync: FsyncSetting,
    /// The raw namespace's block window.
    pub block_size: CfgDuration,
    pub buffer_past: CfgDuration,
    /// The raw namespace's retention.
    pub retention: CfgDuration,
    pub num_shards: u32,
    pub flush_interval: CfgDuration,
    /// Head snapshot period (`0s`: off).
    pub snapshot_interval: CfgDuration,
    pub head_max_bytes: ByteSize,
    pub commitlog_segment_size: ByteSize,
    pub index_cache_size: ByteSize,
    /// A damaged commit-log record refuses the start instead of being
    /// skipped and counted (default false).
    #[serde(default)]
    pub strict_replay: bool,
    /// Aggregated namespaces beside `raw` (default none).
    #[serde(default)]
    pub namespaces: Vec<NamespaceEntry>,
    /// How long rollup rules' input copies are kept (see
    /// [`StorageConfig::rollup_inputs`]).
    pub rollup_inputs_retention: CfgDuration,
}

/// One entry of `storage.namespaces`: a storage policy (`5m:1y`), or the
/// policy with its block window (`{policy: 5m:1y, block-size: 1d}`).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(untagged)]
pub enum NamespaceEntry {
    Policy(String),
    Full(NamespaceFull),
}

/// The long form of a [`NamespaceEntry`].
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct NamespaceFull {
    pub policy: String,
    pub block_size: Option<CfgDuration>,
}

impl NamespaceEntry {
    /// The namespace it describes; the error names `key` (its place in
    /// the list) and what is wrong.
    fn namespace(&self, key: &str) -> Result<Namespace, ConfigError> {
        let (text, block) = match self {
            NamespaceEntry::Policy(p) => (p.as_str(), None),
            NamespaceEntry::Full(f) => (f.policy.as_str(), f.block_size.map(|b| b.get())),
        };
        let policy: cairn_downsample::StoragePolicy = text
            .parse()
            .map_err(|e: cairn_downsample::Error| ConfigError::new(key, e.to_string()))?;
        if block.is_some_and(|b| b < Duration::from_secs(60)) {
            return Err(ConfigError::new(key, "block-size must be at least 1m"));
        }
        Namespace::aggregated(policy, block).ok_or_else(|| {
            ConfigError::new(
                key,
                format!(
                    "{text:?}: the raw namespace is set by storage.retention and storage.block-size, not listed"
                ),
            )
        })
    }
}

impl StorageSection {
    /// Checks every value; the error names the bad key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.block_size.get() < Duration::from_secs(60) {
            return Err(ConfigError::new(
                "storage.block-size",
                "must be at least 1m",
            ));
        }
        if self.retention < self.block_size {
            return Err(ConfigError::new(
                "storage.retention",
                "must be at least storage.block-size",
            ));
        }
        self.rollup_inputs_retention
            .positive("storage.rollup-inputs-retention")?;
        if self.num_shards == 0 || self.num_shards > 4096 {
            return Err(ConfigError::new("storage.num-shards", "must be 1..=4096"));
        }
        self.namespace_list().map(|_| ())
    }

    /// `raw` (from `block-size` and `retention`), then `namespaces`, checked
    /// as the store checks them at open.
    fn namespace_list(&self) -> Result<Vec<Namespace>, ConfigError> {
        let mut list = vec![Namespace::raw(self.block_size.get(), self.retention.get())];
        for (i, e) in self.namespaces.iter().enumerate() {
            list.push(e.namespace(&format!("storage.namespaces[{i}]"))?);
        }
        namespace::validate(&list)
            .map_err(|e| ConfigError::new("storage.namespaces", e.to_string()))?;
        Ok(list)
    }

    /// The node's configuration; `max_new_series_per_request` is the ingest
    /// section's (`ingest.max-new-series-per-request`), enforced by the store.
    pub fn to_config(
        &self,
        max_new_series_per_request: usize,
    ) -> Result<StorageConfig, ConfigError> {
        self.validate()?;
        let mut c = StorageConfig::new(&self.data_dir);
        c.fsync = self.fsync.0;
        c.namespaces = self.namespace_list()?;
        c.buffer_past = self.buffer_past.get();
        c.num_shards = self.num_shards;
        c.flush_interval = self.flush_interval.get();
        c.snapshot_interval = self.snapshot_interval.get();
        c.head_max_bytes = self.head_max_bytes.bytes();
        c.max_segment_bytes = self.commitlog_segment_size.bytes();
        c.index_cache_bytes = self.index_cache_size.bytes();
        c.max_new_series_per_request = max_new_series_per_request;
        c.strict_replay = self.strict_replay;
        c.rollup_inputs_retention = self.rollup_inputs_retention.get();
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(p: &str) -> Namespace {
        Namespace::aggregated(p.parse().unwrap(), None).unwrap()
    }

    /// Rollup inputs are kept for their own retention (not raw's), never
    /// less than three of the larger of raw's block and the coarsest
    /// resolution; the gateway copies samples within half of it.
    #[test]
    fn rollup_inputs_keep_their_own_short_retention() {
        let h = Duration::from_secs(3600);
        let mut c = StorageConfig::new("/tmp/x");
        assert!(c.rollup_inputs().is_none(), "raw only: no inputs");
        assert!(c.rollup_input_horizon().is_none());
        c.namespaces.push(policy("5m:1y"));
        let ns = c.rollup_inputs().unwrap();
        assert_eq!(ns.name, cairn_storage_api::ROLLUP_INPUTS_NAMESPACE);
        assert_eq!((ns.retention, ns.block), (6 * h, 2 * h));
        assert_eq!(c.rollup_input_horizon(), Some(3 * h));
        // A coarse policy raises the floor: three of its windows.
        c.namespaces.push(policy("1d:5y"));
        assert_eq!(c.rollup_inputs().unwrap().retention, 72 * h);
        c.rollup_inputs_retention = 100 * h;
        assert_eq!(c.rollup_inputs().unwrap().retention, 100 * h);
        assert_eq!(c.rollup_input_horizon(), Some(50 * h));
    }
}
