//! Zero-copy remote-write decoding: walks the protobuf wire format of a
//! `prometheus.WriteRequest` directly, validates labels in place and computes
//! series ids from the raw bytes, so a request of known series allocates per
//! series only its sample vector and label spans (no per-label strings).
//! Rare parts (exemplars, metadata) go through the prost structs.

use crate::error::IngestError;
use crate::validate::{
    decompress, describe, drop_out_of_window, metric_type, time_window, validate_exemplar, Invalid,
};
use cairn_common::{
    IngestLimits, Labels, LazyLabels, MetricMetadata, PreparedBatch, PreparedSeries, Sample,
    SeriesId, METRIC_NAME,
};
use cairn_proto::prompb;
use prost::Message;
use std::sync::Arc;

struct Wire<'a> {
    b: &'a [u8],
    pos: usize,
}

enum Field<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8], usize),
    Fixed32,
}

impl<'a> Wire<'a> {
    fn new(b: &'a [u8]) -> Self {
        Self { b, pos: 0 }
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self.b.get(self.pos).ok_or("truncated varint")?;
            self.pos += 1;
            v |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return Ok(v);
            }
        }
        Err("varint too long".into())
    }

    /// Next (field number, value), or None at the end.
    fn next(&mut self) -> Result<Option<(u32, Field<'a>)>, String> {
        if self.pos >= self.b.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let field = (key >> 3) as u32;
        let f = match key & 7 {
            0 => Field::Varint(self.varint()?),
            1 => {
                let s = self
                    .b
                    .get(self.pos..self.pos + 8)
                    .ok_or("truncated fixed64")?;
                self.pos += 8;
                Field::Fixed64(u64::from_le_bytes(s.try_into().map_err(|_| "fixed64")?))
            }
            2 => {
                let len = self.varint()? as usize;
                let start = self.pos;
                let end = start
                    .checked_add(len)
                    .filter(|&e| e <= self.b.len())
                    .ok_or("length beyond end of message")?;
                self.pos = end;
                Field::Bytes(&self.b[start..end], start)
            }
            5 => {
                self.b
                    .get(self.pos..self.pos + 4)
                    .ok_or("truncated fixed32")?;
                self.pos += 4;
                Field::Fixed32
            }
            w => return Err(format!("unsupported wire type {w}")),
        };
        if field == 0 {
            return Err("field number 0".into());
        }
        Ok(Some((field, f)))
    }
}

fn valid_label_name(n: &[u8]) -> bool {
    matches!(n.first(), Some(c) if c.is_ascii_alphabetic() || *c == b'_')
        && n.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

fn valid_metric_name(n: &[u8]) -> bool {
    matches!(n.first(), Some(c) if c.is_ascii_alphabetic() || *c == b'_' || *c == b':')
        && n.iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'_' || *c == b':')
}

/// Validates one series' raw labels (absolute offsets into the request
/// buffer) with the same rules and messages as `validate_labels`.
fn check_labels(
    buf: &[u8],
    raw: &[[usize; 4]],
    limits: &IngestLimits,
) -> Result<Vec<[u32; 4]>, String> {
    let s = |a: usize, b: usize| &buf[a..b];
    let mut spans = Vec::with_capacity(raw.len());
    let mut has_name = false;
    for (i, r) in raw.iter().enumerate() {
        let (name, value) = (s(r[0], r[1]), s(r[2], r[3]));
        // Names are ASCII when valid; the full UTF-8 checks are for the rare rest.
        if !name.is_ascii() && std::str::from_utf8(name).is_err() {
            return Err(format!(
                "label name {:?} is not valid UTF-8",
                String::from_utf8_lossy(name)
            ));
        }
        // Only error messages need the name as text.
        let name_str = || String::from_utf8_lossy(name);
        if !value.is_ascii() && std::str::from_utf8(value).is_err() {
            return Err(format!(
                "value of label {:?} is not valid UTF-8",
                name_str()
            ));
        }
        if i > 0 {
            let p = raw[i - 1];
            let prev = s(p[0], p[1]);
            match prev.cmp(name) {
                std::cmp::Ordering::Equal => {
                    return Err(format!("duplicate label name {:?}", name_str()))
                }
                std::cmp::Ordering::Greater => {
                    return Err(format!(
                        "labels are not sorted by name: {:?} comes after {:?}",
                        String::from_utf8_lossy(prev),
                        name_str()
                    ))
                }
                std::cmp::Ordering::Less => {}
            }
        }
        if name == METRIC_NAME.as_bytes() {
            if !valid_metric_name(value) {
                return Err(format!(
                    "invalid metric name {:?}",
                    String::from_utf8_lossy(value)
                ));
            }
            has_name = true;
        } else if !valid_label_name(name) {
            return Err(format!("invalid label name {:?}", name_str()));
        }
        if value.contains(&0) {
            return Err(format!(
                "value of label {:?} contains a NUL byte",
                name_str()
            ));
        }
        if !value.is_empty() {
            spans.push([r[0] as u32, r[1] as u32, r[2] as u32, r[3] as u32]);
        }
    }
    if !has_name {
        return Err("missing metric name (label __name__)".to_string());
    }
    if let Some(why) = limits.check_labels(
        spans.len(),
        spans.iter().map(|r| {
            (
                s(r[0] as usize, r[1] as usize),
                s(r[2] as usize, r[3] as usize),
            )
        }),
    ) {
        return Err(why);
    }
    Ok(spans)
}

fn describe_raw(buf: &[u8], raw: &[[usize; 4]]) -> String {
    let labels: Vec<prompb::Label> = raw
        .iter()
        .map(|r| prompb::Label {
            name: buf[r[0]..r[1]].to_vec(),
            value: buf[r[2]..r[3]].to_vec(),
        })
        .collect();
    describe(&labels)
}

/// Snappy-decompresses and decodes a remote-write 1.0 body into a
/// [`PreparedBatch`] for `tenant`, plus the series refused and why, under
/// `limits` for a write arriving at `now_ms`. A request over the series
/// limit is refused whole, before its series are materialised.
pub fn decode_prepared(
    tenant: &str,
    body: &[u8],
    limits: &IngestLimits,
    now_ms: i64,
) -> Result<(PreparedBatch, Vec<Invalid>), IngestError> {
    let raw = decompress(body, limits.max_decoded_size)?;
    let window = time_window(limits, now_ms);
    let buf = Arc::new(raw);
    let b: &[u8] = &buf;
    let mut batch = PreparedBatch::default();
    let mut invalid = Vec::new();
    let mut w = Wire::new(b);
    let mut label_spans: Vec<[usize; 4]> = Vec::new();
    let perr = |e: String| IngestError::Protobuf(e);
    let mut n_series = 0usize;
    while let Some((field, f)) = w.next().map_err(perr)? {
        match (field, f) {
            (1, Field::Bytes(ts, ts_off)) => {
                n_series += 1;
                if n_series > limits.max_series_per_request {
                    return Err(IngestError::TooManySeries {
                        limit: limits.max_series_per_request,
                    });
                }
                label_spans.clear();
                let mut samples = Vec::new();
                let mut exemplars_raw: Vec<&[u8]> = Vec::new();
                let mut histograms = 0usize;
                let mut tw = Wire::new(ts);
                while let Some((tf, tv)) = tw.next().map_err(perr)? {
                    match (tf, tv) {
                        (1, Field::Bytes(l, l_off)) => {
                            let (mut n, mut v) = ([0usize; 2], [0usize; 2]);
                            let base = ts_off + l_off;
                            let mut lw = Wire::new(l);
                            while let Some((lf, lv)) = lw.next().map_err(perr)? {
                                match (lf, lv) {
                                    (1, Field::Bytes(x, o)) => n = [base + o, base + o + x.len()],
                                    (2, Field::Bytes(x, o)) => v = [base + o, base + o + x.len()],
                                    (1 | 2, _) => {
                                        return Err(perr("label field with wrong wire type".into()))
                                    }
                                    _ => {}
                                }
                            }
                            label_spans.push([n[0], n[1], v[0], v[1]]);
                        }
                        (2, Field::Bytes(s, _)) => {
                            let mut sw = Wire::new(s);
                            let mut smp = Sample::new(0, 0.0);
                            while let Some((sf, sv)) = sw.next().map_err(perr)? {
                                match (sf, sv) {
                                    (1, Field::Fixed64(bits)) => smp.v = f64::from_bits(bits),
                                    (2, Field::Varint(t)) => smp.t = t as i64,
                                    (1 | 2, _) => {
                                        return Err(perr(
                                            "sample field with wrong wire type".into(),
                                        ))
                                    }
                                    _ => {}
                                }
                            }
                            samples.push(smp);
                        }
                        (3, Field::Bytes(e, _)) => exemplars_raw.push(e),
                        (4, Field::Bytes(..)) => histograms += 1,
                        (1..=4, _) => {
                            return Err(perr("time series field with wrong wire type".into()))
                        }
                        _ => {}
                    }
                }
                let spans = match check_labels(b, &label_spans, limits) {
                    Ok(s) => s,
                    Err(reason) => {
                        invalid.push(Invalid {
                            series: describe_raw(b, &label_spans),
                            reason,
                            samples: samples.len() + histograms,
                        });
                        continue;
                    }
                };
                let labels = LazyLabels::new(buf.clone(), spans);
                let id = SeriesId::of_bytes(tenant, labels.raw_pairs());
                let mut shown: Option<Labels> = None;
                if histograms > 0 {
                    let l = shown.get_or_insert_with(|| labels.materialize());
                    invalid.push(Invalid {
                        series: l.to_string(),
                        reason: format!("{histograms} native histogram sample(s): native histograms are not supported yet"),
                        samples: histograms,
                    });
                }
                let mut exemplars = Vec::with_capacity(exemplars_raw.len());
                for e in exemplars_raw {
                    let e = prompb::Exemplar::decode(e)
                        .map_err(|e| IngestError::Protobuf(e.to_string()))?;
                    match validate_exemplar(e, window, limits) {
                        Ok(ex) => exemplars.push(ex),
                        Err(reason) => {
                            let l = shown.get_or_insert_with(|| labels.materialize());
                            invalid.push(Invalid {
                                series: l.to_string(),
                                reason,
                                samples: 0,
                            });
                        }
                    }
                }
                if let Some((reason, n)) = drop_out_of_window(&mut samples, window, limits) {
                    let l = shown.get_or_insert_with(|| labels.materialize());
                    invalid.push(Invalid {
                        series: l.to_string(),
                        reason,
                        samples: n,
                    });
                }
                if samples.is_empty() && exemplars.is_empty() {
                    continue;
                }
                batch.series.push(PreparedSeries {
                    id,
                    labels,
                    samples,
                    exemplars,
                });
            }
            (3, Field::Bytes(m, _)) => {
                let md = prompb::MetricMetadata::decode(m)
                    .map_err(|e| IngestError::Protobuf(e.to_string()))?;
                if !md.metric_family_name.is_empty() {
                    batch.metadata.push((
                        md.metric_family_name,
                        MetricMetadata {
                            metric_type: metric_type(md.r#type),
                            help: md.help,
                            unit: md.unit,
                        },
                    ));
                }
            }
            (1 | 3, _) => return Err(perr("write request field with wrong wire type".into())),
            _ => {}
        }
    }
    Ok((batch, invalid))
}
