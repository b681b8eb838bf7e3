//! A series' identity: the 128-bit hash of (tenant, sorted labels), its
//! shard, and the hasher for maps keyed by it.

use crate::labels::Labels;

/// The label of a downsampled namespace's rollup series (`sum`, `count`,
/// …): a series' rollups are distinct series that live on the series' own
/// shard (its replicas compute them from its raw samples), so the label is
/// left out of the hash the shard is taken from (see [`SeriesId::of`]).
pub const ROLLUP_LABEL: &str = "__rollup__";

/// The label of a rollup rule's copy of one of its inputs (the input's id):
/// left out of the shard hash like [`ROLLUP_LABEL`], so the inputs of one
/// output series land on the output's shard.
pub const INPUT_LABEL: &str = "__input__";

/// A series' identity: a 128-bit hash of (tenant, sorted labels).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeriesId(pub u128);

impl SeriesId {
    /// Hash of the tenant and the (sorted) label set. Separators that cannot
    /// occur in valid UTF-8 (0xff, 0xfe) keep `a="bc"` and `ab="c"` apart.
    /// A [`ROLLUP_LABEL`] is hashed apart and folded into both halves, so
    /// the rollups of a series have ids of their own on its shard.
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
        let mut rollup: Option<&[u8]> = None;
        let mut input: Option<&[u8]> = None;
        for (name, value) in pairs {
            if name.len() >= 9 && name.starts_with(b"__") {
                if name == ROLLUP_LABEL.as_bytes() {
                    rollup = Some(value);
                    continue;
                }
                if name == INPUT_LABEL.as_bytes() {
                    input = Some(value);
                    continue;
                }
            }
            buf.extend_from_slice(name);
            buf.push(0xfe);
            buf.extend_from_slice(value);
            buf.push(0xff);
        }
        let mut id = xxhash_rust::xxh3::xxh3_128(&buf);
        // The same 64 bits into both halves: a distinct id per rollup (and
        // per input) whose fold, and so whose shard, is the series'.
        for (seed, v) in [(1u64, rollup), (2, input)] {
            if let Some(v) = v {
                let k = u128::from(xxhash_rust::xxh3::xxh3_64_with_seed(v, seed) | 1);
                id ^= k << 64 | k;
            }
        }
        SeriesId(id)
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
        // The fold alone is what `shard` takes its remainder of, so in one
        // shard's map every key would share its low bits — the bits the
        // table picks buckets by (all ids of shard k of 64 ≡ k mod 64 piled
        // into 1/64th of the buckets, long probes on every lookup). A
        // multiply and a shift bring every bit into the low ones.
        let x = ((v as u64) ^ ((v >> 64) as u64)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        self.0 ^= x ^ (x >> 32);
    }
}

/// A `HashMap` keyed by series id, with [`IdHasher`].
pub type IdMap<V> = std::collections::HashMap<SeriesId, V, std::hash::BuildHasherDefault<IdHasher>>;

#[cfg(test)]
mod tests {
    use super::*;

    /// The ids of one shard spread over a map's buckets: their hashes' low
    /// bits (what a table picks buckets by) take nearly every value.
    #[test]
    fn ids_of_one_shard_spread_over_the_buckets() {
        use std::hash::{BuildHasher, BuildHasherDefault};
        let build = BuildHasherDefault::<IdHasher>::default();
        let mut low = std::collections::HashSet::new();
        let mut n = 0;
        for i in 0..200_000u32 {
            let id = SeriesId::of_pairs("t", [("s", i.to_string().as_str())].into_iter());
            if id.shard(64) == 5 {
                low.insert(build.hash_one(id) & 1023);
                n += 1;
            }
        }
        assert!(n > 2500, "{n}");
        // 2500+ draws over 1024 values leave few unhit; a hash sharing the
        // shard's low 6 bits hits at most 16.
        assert!(low.len() > 900, "{} of 1024 low-bit values", low.len());
    }

    /// A series' rollups: distinct ids, each on the series' own shard
    /// whatever the shard count.
    #[test]
    fn rollups_of_a_series_live_on_its_shard() {
        for i in 0..500u32 {
            let v = i.to_string();
            let raw = Labels::from_pairs(&[("__name__", "x"), ("i", &v)]);
            let id = SeriesId::of("t", &raw);
            let mut ids = vec![id];
            for r in ["sum", "count", "min", "max", "last", "increase", "resets"] {
                let rollup = Labels::from_pairs(&[("__name__", "x"), (ROLLUP_LABEL, r), ("i", &v)]);
                let rid = SeriesId::of("t", &rollup);
                for n in [1, 3, 8, 64, 1000] {
                    assert_eq!(rid.shard(n), id.shard(n), "{rollup} on {n} shards");
                }
                ids.push(rid);
            }
            ids.sort();
            ids.dedup();
            assert_eq!(ids.len(), 8, "distinct ids for {raw}");
        }
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
