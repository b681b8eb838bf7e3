//! `cairn-common`: the vocabulary every other crate shares.
//!
//! Owns: labels and label sets, samples and exemplars, the 128-bit series id,
//! label matchers, the config value types every section shares (`config`:
//! durations and sizes from readable text, errors naming the key), and the two storage contracts — [`SeriesSource`] (read) and
//! [`SampleWriter`] (write). The query engine and the ingest gateway depend on
//! these traits only, never on `cairn-storage`.
//!
//! Must never depend on: RocksDB, tokio, any I/O crate. It stays small so
//! everything above it builds fast.

pub mod config;
pub mod duration;
#[doc(hidden)]
pub mod fuzz_replay;
pub mod gofmt;
mod labels;
pub mod limits;
mod matcher;
mod prepared;
mod source;

pub use labels::{distinct_names, distinct_values, Label, Labels, LabelsBuilder, METRIC_NAME};
pub use limits::IngestLimits;
pub use matcher::{MatchOp, Matcher};
pub use prepared::{LazyLabels, PreparedBatch, PreparedSeries};
pub use source::{
    Exemplar, ExemplarSeries, MemSource, MetricMetadata, MetricType, SampleWriter, SeriesData,
    SeriesSource, SeriesWrite, StorageError, WriteBatch, WriteOutcome, WriteRejection,
};

/// Milliseconds since the Unix epoch, as Prometheus counts time.
pub type Timestamp = i64;

/// The bit pattern Prometheus writes as a staleness marker.
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// The staleness marker as an `f64` (compare with [`is_stale_nan`], never `==`).
pub fn stale_nan() -> f64 {
    f64::from_bits(STALE_NAN_BITS)
}

/// True when `v` is bit-exactly Prometheus's staleness marker.
pub fn is_stale_nan(v: f64) -> bool {
    v.to_bits() == STALE_NAN_BITS
}

/// The tenant used when a request carries no `X-Scope-OrgID`.
pub const DEFAULT_TENANT: &str = "default";

/// One (timestamp, value) pair.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub t: Timestamp,
    pub v: f64,
}

impl Sample {
    pub fn new(t: Timestamp, v: f64) -> Self {
        Self { t, v }
    }

    /// Bit-exact equality (NaN payloads included), which `PartialEq` cannot give.
    pub fn bit_eq(&self, other: &Sample) -> bool {
        self.t == other.t && self.v.to_bits() == other.v.to_bits()
    }
}

/// A series' identity: a 128-bit hash of (tenant, sorted labels).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeriesId(pub u128);

impl SeriesId {
    /// Hash of the tenant and the (sorted) label set. Separators that cannot
    /// occur in valid UTF-8 (0xff, 0xfe) keep `a="bc"` and `ab="c"` apart.
    pub fn of(tenant: &str, labels: &Labels) -> SeriesId {
        Self::of_pairs(
            tenant,
            labels.iter().map(|l| (l.name.as_str(), l.value.as_str())),
        )
    }

    /// The same hash over sorted (name, value) pairs with non-empty values,
    /// without building [`Labels`] (the ingest fast path).
    pub fn of_pairs<'a>(tenant: &str, pairs: impl Iterator<Item = (&'a str, &'a str)>) -> SeriesId {
        Self::of_bytes(tenant, pairs.map(|(n, v)| (n.as_bytes(), v.as_bytes())))
    }

    /// The same hash over raw (already validated) label bytes.
    pub fn of_bytes<'a>(
        tenant: &str,
        pairs: impl Iterator<Item = (&'a [u8], &'a [u8])>,
    ) -> SeriesId {
        // One contiguous buffer hashes much faster than many small updates.
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(tenant.as_bytes());
        buf.push(0xff);
        for (name, value) in pairs {
            buf.extend_from_slice(name);
            buf.push(0xfe);
            buf.extend_from_slice(value);
            buf.push(0xff);
        }
        SeriesId(xxhash_rust::xxh3::xxh3_128(&buf))
    }

    /// The shard this series lands on, `hash % num_shards`.
    pub fn shard(&self, num_shards: u32) -> u32 {
        // Fold both halves so the shard is not taken from the low bits alone.
        let folded = (self.0 as u64) ^ ((self.0 >> 64) as u64);
        (folded % u64::from(num_shards.max(1))) as u32
    }

    pub fn to_be_bytes(self) -> [u8; 16] {
        self.0.to_be_bytes()
    }

    pub fn from_be_bytes(b: [u8; 16]) -> Self {
        SeriesId(u128::from_be_bytes(b))
    }
}

impl std::fmt::Display for SeriesId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// A hasher for maps keyed by [`SeriesId`]: the id is already a uniform
/// hash, so hashing it again (SipHash) is wasted work on the ingest path.
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u128(&mut self, v: u128) {
        self.0 ^= (v as u64) ^ ((v >> 64) as u64);
    }
}

/// A `HashMap` keyed by series id, with [`IdHasher`].
pub type IdMap<V> = std::collections::HashMap<SeriesId, V, std::hash::BuildHasherDefault<IdHasher>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_marker_is_recognised_only_bit_exactly() {
        assert!(is_stale_nan(stale_nan()));
        assert!(!is_stale_nan(f64::NAN));
        assert!(!is_stale_nan(1.0));
    }

    #[test]
    fn series_id_separates_tenants_and_label_boundaries() {
        let a = Labels::from_pairs(&[("a", "bc")]);
        let b = Labels::from_pairs(&[("ab", "c")]);
        assert_ne!(SeriesId::of("t", &a), SeriesId::of("t", &b));
        assert_ne!(SeriesId::of("t1", &a), SeriesId::of("t2", &a));
        assert_eq!(SeriesId::of("t", &a), SeriesId::of("t", &a.clone()));
        let id = SeriesId::of("t", &a);
        assert_eq!(SeriesId::from_be_bytes(id.to_be_bytes()), id);
        assert!(id.shard(64) < 64);
    }
}
