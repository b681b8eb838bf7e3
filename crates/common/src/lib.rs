//! `cairn-common`: the vocabulary every other crate shares.
//!
//! Owns: labels and label sets, samples and exemplars, the 128-bit series id,
//! label matchers, and the two storage contracts — [`SeriesSource`] (read) and
//! [`SampleWriter`] (write). The query engine and the ingest gateway depend on
//! these traits only, never on `cairn-storage`.
//!
//! Must never depend on: RocksDB, tokio, any I/O crate. It stays small so
//! everything above it builds fast.

mod labels;
mod matcher;
mod source;

pub use labels::{Label, Labels, LabelsBuilder, METRIC_NAME};
pub use matcher::{MatchOp, Matcher};
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
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        h.update(tenant.as_bytes());
        h.update(&[0xff]);
        for l in labels.iter() {
            h.update(l.name.as_bytes());
            h.update(&[0xfe]);
            h.update(l.value.as_bytes());
            h.update(&[0xff]);
        }
        SeriesId(h.digest128())
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
