//! What a select answers: series in batches, each series' samples either
//! decoded or as chunks in `cairn-codec`'s format, decoded by the reader
//! only when it needs them.

use crate::StoreError;
use cairn_common::{Labels, Sample, SeriesData, Timestamp};
use std::sync::Arc;

/// One chunk of one series in `cairn-codec`'s format, samples sorted by time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedChunk {
    /// Timestamp of the chunk's first sample (ms).
    pub min_t: Timestamp,
    /// Timestamp of the chunk's last sample (ms).
    pub max_t: Timestamp,
    /// Samples in the chunk.
    pub count: u32,
    pub bytes: Vec<u8>,
}

impl EncodedChunk {
    /// Encodes `samples` (sorted by time, at least one) into one chunk.
    pub fn encode(samples: &[Sample]) -> Result<EncodedChunk, StoreError> {
        let (Some(first), Some(last)) = (samples.first(), samples.last()) else {
            return Err(StoreError::invalid(
                "an encoded chunk needs at least one sample",
            ));
        };
        let pairs: Vec<(i64, f64)> = samples.iter().map(|s| (s.t, s.v)).collect();
        let bytes = cairn_codec::encode_all(&pairs)
            .map_err(|e| StoreError::invalid(format!("encoding a chunk: {e}")))?;
        Ok(EncodedChunk {
            min_t: first.t,
            max_t: last.t,
            count: samples.len() as u32,
            bytes,
        })
    }
}

/// What a series' samples in a range amount to, to tell whether two
/// replicas hold the same ones without sending them (a digest select):
/// their count and a hash of every (timestamp, value bits) in time order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SampleDigest {
    pub count: u64,
    pub hash: u64,
    /// The series' id, when the store names the series by it (its label
    /// set then left empty, so a digest answer does not carry label sets).
    pub series: Option<cairn_common::SeriesId>,
}

impl SampleDigest {
    /// Whether two digests say the same samples (whatever names them).
    pub fn same_samples(&self, other: &SampleDigest) -> bool {
        self.count == other.count && self.hash == other.hash
    }
}

impl SampleDigest {
    /// The digest of `samples` (sorted by time, one per timestamp).
    pub fn of(samples: &[Sample]) -> SampleDigest {
        // splitmix64's finaliser over a running state: every sample moves
        // the whole state, so an equal hash with an equal count means equal
        // samples but for a 2^-64 accident (replicas are not adversaries).
        fn mix(mut z: u64) -> u64 {
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
        let mut h: u64 = 0x9e37_79b9_7f4a_7c15;
        for s in samples {
            h = mix(h ^ s.t as u64);
            h = mix(h ^ s.v.to_bits());
        }
        SampleDigest {
            count: samples.len() as u64,
            hash: h,
            series: None,
        }
    }
}

/// A series' samples as the store chose to send them.
#[derive(Debug, Clone, PartialEq)]
pub enum SeriesSamples {
    /// Sorted by time, inside the requested range.
    Decoded(Vec<Sample>),
    /// Chunks in time order; they may overlap (e.g. a flushed block and the
    /// head) and reach outside the requested range: [`decode`](Self::decode)
    /// merges and trims them.
    Chunks(Vec<EncodedChunk>),
    /// Only the digest of the samples in the range (a select that asked
    /// for digests); it carries none.
    Digest(SampleDigest),
}

impl SeriesSamples {
    /// Samples carried (for chunks, before trimming to the range).
    pub fn len(&self) -> usize {
        match self {
            SeriesSamples::Decoded(v) => v.len(),
            SeriesSamples::Chunks(c) => c.iter().map(|c| c.count as usize).sum(),
            SeriesSamples::Digest(_) => 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The samples in `[start, end]`, sorted by time, one per timestamp (of
    /// overlapping chunks, the later chunk's sample wins).
    pub fn decode(self, start: Timestamp, end: Timestamp) -> Result<Vec<Sample>, StoreError> {
        let chunks = match self {
            SeriesSamples::Decoded(mut v) => {
                v.retain(|s| s.t >= start && s.t <= end);
                return Ok(v);
            }
            SeriesSamples::Chunks(c) => c,
            SeriesSamples::Digest(_) => {
                return Err(StoreError::internal(
                    "a series' digest carries no samples to decode",
                ))
            }
        };
        let mut out: Vec<Sample> = Vec::new();
        let mut pairs = Vec::new();
        let mut sorted = true;
        for (i, c) in chunks.iter().enumerate() {
            if c.max_t < start || c.min_t > end {
                continue;
            }
            pairs.clear();
            cairn_codec::decode_into(&c.bytes, &mut pairs).map_err(|e| {
                StoreError::internal(format!(
                    "decoding chunk {i} [{}, {}] of a series: {e}",
                    c.min_t, c.max_t
                ))
            })?;
            let lo = pairs.partition_point(|&(t, _)| t < start);
            let hi = pairs.partition_point(|&(t, _)| t <= end);
            if let (Some(last), Some(&(t, _))) = (out.last(), pairs.get(lo)) {
                sorted &= t > last.t;
            }
            out.extend(pairs[lo..hi].iter().map(|&(t, v)| Sample { t, v }));
        }
        if !sorted {
            // Stable sort, then keep the last sample of each timestamp: the
            // later chunk wins.
            out.sort_by_key(|s| s.t);
            let mut merged: Vec<Sample> = Vec::with_capacity(out.len());
            for s in out {
                match merged.last_mut() {
                    Some(l) if l.t == s.t => *l = s,
                    _ => merged.push(s),
                }
            }
            out = merged;
        }
        Ok(out)
    }
}

/// One series of a select's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredSeries {
    /// Shared: a store may hand out the same label set to every query.
    pub labels: Arc<Labels>,
    pub samples: SeriesSamples,
}

impl StoredSeries {
    pub fn decoded(labels: Arc<Labels>, samples: Vec<Sample>) -> Self {
        StoredSeries {
            labels,
            samples: SeriesSamples::Decoded(samples),
        }
    }

    /// Decoded and trimmed to `[start, end]`.
    pub fn decode(self, start: Timestamp, end: Timestamp) -> Result<SeriesData, StoreError> {
        Ok(SeriesData {
            labels: self.labels,
            samples: self.samples.decode(start, end)?,
        })
    }
}

impl From<SeriesData> for StoredSeries {
    fn from(s: SeriesData) -> Self {
        StoredSeries::decoded(s.labels, s.samples)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(t: i64, v: f64) -> Sample {
        Sample::new(t, v)
    }

    #[test]
    fn chunks_decode_merged_and_trimmed() {
        let a = EncodedChunk::encode(&[s(10, 1.0), s(20, 2.0), s(30, 3.0)]).unwrap();
        let b = EncodedChunk::encode(&[s(30, 30.0), s(40, 4.0)]).unwrap();
        let c = EncodedChunk::encode(&[s(100, 9.0)]).unwrap();
        assert_eq!((a.min_t, a.max_t), (10, 30));
        let got = SeriesSamples::Chunks(vec![a.clone(), b, c])
            .decode(15, 40)
            .unwrap();
        // 30 appears in both chunks: the later one wins; 10 and 100 are outside.
        assert_eq!(got, vec![s(20, 2.0), s(30, 30.0), s(40, 4.0)]);
        let one = SeriesSamples::Chunks(vec![a]).decode(0, 100).unwrap();
        assert_eq!(one.len(), 3);
        let dec = SeriesSamples::Decoded(vec![s(1, 1.0), s(5, 5.0)])
            .decode(2, 9)
            .unwrap();
        assert_eq!(dec, vec![s(5, 5.0)]);
    }

    #[test]
    fn a_corrupt_chunk_is_an_error_naming_it() {
        let bad = EncodedChunk {
            min_t: 0,
            max_t: 10,
            count: 2,
            bytes: vec![0xff; 3],
        };
        let e = SeriesSamples::Chunks(vec![bad]).decode(0, 10).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Internal);
        assert!(e.message().contains("chunk 0"), "{e}");
        assert!(EncodedChunk::encode(&[]).is_err());
    }
}
