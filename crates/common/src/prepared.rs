//! The fast write path: series whose id the gateway already computed from the
//! raw request bytes, with labels kept as spans into the shared request
//! buffer and turned into [`Labels`] only when the store meets a series it has
//! never seen (node-exporter-like traffic repeats the same series every
//! scrape, so building owned labels per sample would dominate ingest CPU).

use crate::labels::{Label, Labels};
use crate::sample::Sample;
use crate::series::{Exemplar, MetricMetadata, SeriesWrite};
use crate::series_id::SeriesId;
use std::sync::{Arc, OnceLock};

/// Validated labels as (name, value) byte ranges into a shared buffer.
/// Invariant (upheld by the constructor's caller): every range is valid UTF-8,
/// names are sorted and unique, empty values are already left out.
///
/// Either the ranges are given, or (for a label set the decoder has
/// validated before: [`LazyLabels::from_label_messages`]) they are found
/// the first time they are asked for, from the request's protobuf `Label`
/// messages — a write of known series never walks its labels.
#[derive(Clone, Debug)]
pub struct LazyLabels {
    buf: Arc<Vec<u8>>,
    spans: OnceLock<Vec<[u32; 4]>>,
    /// The `Label` messages' byte range in `buf`, for spans not yet found.
    messages: (u32, u32),
}

impl LazyLabels {
    /// `spans`: `[name_start, name_end, value_start, value_end]` per label.
    pub fn new(buf: Arc<Vec<u8>>, spans: Vec<[u32; 4]>) -> Self {
        Self {
            buf,
            spans: OnceLock::from(spans),
            messages: (0, 0),
        }
    }

    /// Labels given as the run of protobuf-encoded `prometheus.Label`
    /// fields (field 1 of a `TimeSeries`: tag, length, message) in
    /// `buf[start..end]`. The caller vouches for them: the same bytes
    /// passed validation before (sorted, unique, valid UTF-8, names valid).
    /// Labels with empty values are left out, as everywhere.
    pub fn from_label_messages(buf: Arc<Vec<u8>>, start: u32, end: u32) -> Self {
        Self {
            buf,
            spans: OnceLock::new(),
            messages: (start, end),
        }
    }

    fn spans(&self) -> &[[u32; 4]] {
        self.spans
            .get_or_init(|| label_message_spans(&self.buf, self.messages.0, self.messages.1))
    }

    /// True for a series given by id alone (no labels: a valid series has
    /// at least its name).
    pub fn is_empty(&self) -> bool {
        match self.spans.get() {
            Some(s) => s.is_empty(),
            None => self.messages.0 == self.messages.1,
        }
    }

    /// The (name, value) pairs.
    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> + Clone + '_ {
        self.spans().iter().map(|s| {
            let get = |a: u32, b: u32| {
                std::str::from_utf8(&self.buf[a as usize..b as usize]).unwrap_or("\u{fffd}")
            };
            (get(s[0], s[1]), get(s[2], s[3]))
        })
    }

    /// The (name, value) pairs as bytes (no UTF-8 re-check).
    pub fn raw_pairs(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.spans().iter().map(|s| {
            (
                &self.buf[s[0] as usize..s[1] as usize],
                &self.buf[s[2] as usize..s[3] as usize],
            )
        })
    }

    pub fn materialize(&self) -> Labels {
        Labels::from_sorted_unchecked(self.pairs().map(|(n, v)| Label::new(n, v)).collect())
    }
}

/// A protobuf varint at `b[*pos..]`, or None past the end.
fn varint(b: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*pos)?;
        *pos += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Some(v);
        }
    }
    None
}

/// The length-delimited field at `b[*pos..]` whose tag is read: its
/// (field number, absolute range), or None if it is not length-delimited
/// or runs past `end`.
fn delimited(b: &[u8], pos: &mut usize, end: usize) -> Option<(u64, usize, usize)> {
    let key = varint(b, pos)?;
    if key & 7 != 2 || key > u64::from(u32::MAX) {
        return None;
    }
    let len = varint(b, pos)? as usize;
    let start = *pos;
    let stop = start.checked_add(len).filter(|&e| e <= end)?;
    *pos = stop;
    Some((key >> 3, start, stop))
}

/// The label spans of the `Label` fields in `buf[start..end]` (see
/// [`LazyLabels::from_label_messages`]); empty values left out. Stops at
/// anything malformed (the caller vouched for the bytes).
fn label_message_spans(buf: &[u8], start: u32, end: u32) -> Vec<[u32; 4]> {
    let end = (end as usize).min(buf.len());
    let mut pos = start as usize;
    let mut spans = Vec::new();
    while pos < end {
        let Some((1, l0, l1)) = delimited(buf, &mut pos, end) else {
            break;
        };
        let (mut n, mut v) = ([l0; 2], [l0; 2]);
        let mut p = l0;
        while p < l1 {
            match delimited(buf, &mut p, l1) {
                Some((1, a, b)) => n = [a, b],
                Some((2, a, b)) => v = [a, b],
                Some(_) => {}
                None => break,
            }
        }
        if v[1] > v[0] {
            spans.push([n[0] as u32, n[1] as u32, v[0] as u32, v[1] as u32]);
        }
    }
    spans
}

/// One series of a prepared write.
#[derive(Clone, Debug)]
pub struct PreparedSeries {
    /// `SeriesId::of(tenant, labels)`, computed from the raw pairs.
    pub id: SeriesId,
    pub labels: LazyLabels,
    pub samples: Vec<Sample>,
    pub exemplars: Vec<Exemplar>,
}

/// A validated batch for one tenant, ids precomputed.
#[derive(Clone, Debug, Default)]
pub struct PreparedBatch {
    pub series: Vec<PreparedSeries>,
    pub metadata: Vec<(String, MetricMetadata)>,
}

impl PreparedBatch {
    pub fn sample_count(&self) -> usize {
        self.series.iter().map(|s| s.samples.len()).sum()
    }
}

impl PreparedBatch {
    /// The batch of series with owned labels (ids computed for `tenant`;
    /// every label serialised into one shared buffer) and `metadata`: the
    /// one batch type of the write contract, whatever decoded it.
    pub fn from_series(
        tenant: &str,
        series: Vec<SeriesWrite>,
        metadata: Vec<(String, MetricMetadata)>,
    ) -> PreparedBatch {
        let mut buf = Vec::new();
        let mut all_spans = Vec::with_capacity(series.len());
        for s in &series {
            let mut spans = Vec::with_capacity(s.labels.len());
            for l in s.labels.iter().filter(|l| !l.value.is_empty()) {
                let n0 = buf.len() as u32;
                buf.extend_from_slice(l.name.as_bytes());
                let v0 = buf.len() as u32;
                buf.extend_from_slice(l.value.as_bytes());
                spans.push([n0, v0, v0, buf.len() as u32]);
            }
            all_spans.push(spans);
        }
        let buf = Arc::new(buf);
        let series = series
            .into_iter()
            .zip(all_spans)
            .map(|(s, spans)| PreparedSeries {
                id: SeriesId::of(tenant, &s.labels),
                labels: LazyLabels::new(buf.clone(), spans),
                samples: s.samples,
                exemplars: s.exemplars,
            })
            .collect();
        PreparedBatch { series, metadata }
    }

    /// The batch's series with their labels materialised (for stores that
    /// keep owned label sets).
    pub fn into_series(self) -> Vec<SeriesWrite> {
        self.series
            .into_iter()
            .map(|s| SeriesWrite {
                labels: s.labels.materialize(),
                samples: s.samples,
                exemplars: s.exemplars,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_with_owned_labels_prepares_to_the_same_ids_and_labels() {
        let labels = Labels::from_pairs(&[("__name__", "up"), ("job", "a")]);
        let series = vec![crate::series::SeriesWrite {
            labels: labels.clone(),
            samples: vec![Sample::new(1, 2.0)],
            exemplars: vec![],
        }];
        let p = PreparedBatch::from_series("t", series, vec![]);
        assert_eq!(p.series[0].id, SeriesId::of("t", &labels));
        assert_eq!(p.series[0].labels.materialize(), labels);
        assert_eq!(
            SeriesId::of_bytes("t", p.series[0].labels.raw_pairs()),
            p.series[0].id
        );
        assert_eq!(p.sample_count(), 1);
    }
}
