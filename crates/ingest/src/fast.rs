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
use std::collections::HashMap;
use std::hash::BuildHasherDefault;
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
        // As prost: a key beyond 32 bits is an error (its field number
        // would otherwise be read truncated, as another field).
        if key > u64::from(u32::MAX) {
            return Err(format!("invalid key value {key}"));
        }
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

/// The end of the leading run of length-delimited field-1 entries (a
/// `TimeSeries`'s labels, as senders write them: all first) in `ts`; 0 if
/// it does not start with one. Stops before anything malformed (the full
/// walk reports it).
fn leading_labels_end(ts: &[u8]) -> usize {
    let mut w = Wire::new(ts);
    let mut end = 0;
    // The tag of field 1, wire type 2, is the single byte 0x0a.
    while ts.get(w.pos) == Some(&0x0a) {
        w.pos += 1;
        let Ok(len) = w.varint() else { break };
        match w.pos.checked_add(len as usize).filter(|&e| e <= ts.len()) {
            Some(e) => {
                w.pos = e;
                end = e;
            }
            None => break,
        }
    }
    end
}

/// Ids of label sets the decoder validated before, by a 128-bit hash of
/// the tenant, the ingest limits labels are checked against and the
/// series' raw `Label` messages: a sender repeats the same bytes for a
/// series every scrape, so a known series costs a hash and a lookup
/// instead of a walk, a validation and an id per label set. (The ids are
/// themselves 128-bit hashes of tenant and labels: this trusts a hash no
/// less than they do.) Bounded: a shard that fills is emptied, so churn
/// costs re-validation, never memory. Shared by every write; sharded
/// locks.
pub struct KnownLabels {
    shards: Box<[parking_lot::Mutex<KeyMap>]>,
    per_shard: usize,
    /// Random per process, in every key: a sender cannot aim a label set
    /// at another's key (the hit path trusts the bytes it skips).
    salt: u64,
}

type KeyMap = HashMap<u128, SeriesId, BuildHasherDefault<KeyHasher>>;

impl std::fmt::Debug for KnownLabels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KnownLabels")
            .field("len", &self.len())
            .field("capacity", &(self.per_shard * KNOWN_SHARDS))
            .finish()
    }
}

const KNOWN_SHARDS: usize = 16;

/// The keys are uniform hashes: their low bits pick buckets as they are.
#[derive(Default)]
struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u128(&mut self, v: u128) {
        self.0 = v as u64;
    }
}

impl KnownLabels {
    /// Room for `capacity` label sets (0: none are kept).
    pub fn new(capacity: usize) -> Self {
        Self {
            shards: (0..KNOWN_SHARDS)
                .map(|_| parking_lot::Mutex::new(HashMap::default()))
                .collect(),
            per_shard: capacity.div_ceil(KNOWN_SHARDS),
            salt: std::hash::BuildHasher::hash_one(
                &std::collections::hash_map::RandomState::new(),
                0u64,
            ),
        }
    }

    /// The label sets held.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The hash seed of a request: its tenant and every limit
    /// `check_labels` applies, so a set validated under other limits (or
    /// for another tenant) is never found.
    fn seed(&self, tenant: &str, limits: &IngestLimits) -> u64 {
        let mut b = Vec::with_capacity(tenant.len() + 33);
        b.extend_from_slice(&self.salt.to_le_bytes());
        b.extend_from_slice(tenant.as_bytes());
        b.push(0xff);
        for n in [
            limits.max_labels_per_series,
            limits.max_label_name_length,
            limits.max_label_value_length,
        ] {
            b.extend_from_slice(&(n as u64).to_le_bytes());
        }
        xxhash_rust::xxh3::xxh3_64(&b)
    }

    fn key(seed: u64, labels: &[u8]) -> u128 {
        xxhash_rust::xxh3::xxh3_128_with_seed(labels, seed)
    }

    fn shard_of(key: u128) -> usize {
        (key >> 124) as usize % KNOWN_SHARDS
    }

    /// The ids of `keys` (None: not held), one lock per shard.
    fn get_many(&self, keys: &[Option<u128>]) -> Vec<Option<SeriesId>> {
        let mut out = vec![None; keys.len()];
        if self.per_shard == 0 {
            return out;
        }
        // Taken shard by shard: a lock per series would serialise the
        // lookups' cache misses (a locked instruction waits for them).
        let mut order: Vec<(u32, u32)> = keys
            .iter()
            .enumerate()
            .filter_map(|(i, k)| k.map(|k| (Self::shard_of(k) as u32, i as u32)))
            .collect();
        order.sort_unstable();
        for run in order.chunk_by(|a, b| a.0 == b.0) {
            let m = self.shards[run[0].0 as usize].lock();
            for &(_, i) in run {
                if let Some(k) = keys[i as usize] {
                    out[i as usize] = m.get(&k).copied();
                }
            }
        }
        out
    }

    /// Adds `(key, id)`s, one lock per shard; a shard that is full is
    /// emptied first.
    fn insert_many(&self, mut learnt: Vec<(u128, SeriesId)>) {
        if self.per_shard == 0 {
            return;
        }
        learnt.sort_unstable_by_key(|(k, _)| Self::shard_of(*k));
        for run in learnt.chunk_by(|a, b| Self::shard_of(a.0) == Self::shard_of(b.0)) {
            let mut m = self.shards[Self::shard_of(run[0].0)].lock();
            for &(k, id) in run {
                if m.len() >= self.per_shard {
                    *m = HashMap::default();
                }
                m.insert(k, id);
            }
        }
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
    decode_known(tenant, body, limits, now_ms, None)
}

/// [`decode_prepared`], taking the ids of label sets validated before from
/// `known` (and adding the ones it validates): a series `known` holds is
/// neither walked label by label nor validated nor hashed again. The
/// answer is the same with or without `known`.
pub fn decode_known(
    tenant: &str,
    body: &[u8],
    limits: &IngestLimits,
    now_ms: i64,
    known: Option<&KnownLabels>,
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
    // The leading run of `Label` fields of each series, as bytes: the key
    // under which `known` may hold its label set's id; looked up for the
    // whole request at once.
    let mut leads: Vec<(usize, Option<u128>)> = Vec::new();
    let mut found = Vec::new();
    let mut learnt = Vec::new();
    if let Some(k) = known.filter(|k| k.per_shard > 0) {
        let seed = k.seed(tenant, limits);
        let mut pre = Wire::new(b);
        while let Ok(Some((field, f))) = pre.next() {
            if let (1, Field::Bytes(ts, _)) = (field, f) {
                let end = leading_labels_end(ts);
                leads.push((end, (end > 0).then(|| KnownLabels::key(seed, &ts[..end]))));
            }
        }
        let keys: Vec<Option<u128>> = leads.iter().map(|l| l.1).collect();
        found = k.get_many(&keys);
    }
    while let Some((field, f)) = w.next().map_err(perr)? {
        match (field, f) {
            (1, Field::Bytes(ts, ts_off)) => {
                n_series += 1;
                if n_series > limits.max_series_per_request {
                    return Err(IngestError::TooManySeries {
                        limit: limits.max_series_per_request,
                    });
                }
                let lead = leads.get(n_series - 1).copied();
                let mut hit = match (lead, found.get(n_series - 1)) {
                    (Some((end, _)), Some(&Some(id))) => Some((end, id)),
                    _ => None,
                };
                // Label messages other than plain name/value fields: the
                // lazy spans of a known set could not be found from them.
                let mut plain = true;
                label_spans.clear();
                let mut samples = Vec::new();
                let mut exemplars_raw: Vec<&[u8]> = Vec::new();
                let mut histograms = 0usize;
                let mut tw = Wire::new(ts);
                if let Some((end, _)) = hit {
                    tw.pos = end;
                }
                while let Some((tf, tv)) = tw.next().map_err(perr)? {
                    match (tf, tv) {
                        (1, Field::Bytes(l, l_off)) => {
                            // A label outside the leading run (after other
                            // fields, or with a tag not written as the one
                            // byte 0x0a): the run does not name this set;
                            // walk it all.
                            if lead.is_none_or(|(end, _)| l_off + l.len() > end) {
                                plain = false;
                                if hit.take().is_some() {
                                    label_spans.clear();
                                    samples.clear();
                                    exemplars_raw.clear();
                                    histograms = 0;
                                    tw = Wire::new(ts);
                                    continue;
                                }
                            }
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
                                    _ => plain = false,
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
                let (labels, id) = if let Some((end, id)) = hit {
                    let (a, b) = (ts_off as u32, (ts_off + end) as u32);
                    (LazyLabels::from_label_messages(buf.clone(), a, b), id)
                } else {
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
                    // A plain set is the whole leading run (a label after
                    // other fields makes it not plain).
                    if let (Some((_, Some(key))), true) = (lead, plain) {
                        learnt.push((key, id));
                    }
                    (labels, id)
                };
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
    if let Some(k) = known {
        k.insert_many(learnt);
    }
    Ok((batch, invalid))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// One field of a hand-built `TimeSeries`, in any order.
    #[derive(Debug, Clone)]
    enum Part {
        Label(&'static str, &'static str),
        /// A label whose message carries an unknown varint field too.
        OddLabel(&'static str, &'static str),
        /// A label whose tag is written in two bytes (0x8a 0x00: still
        /// field 1, wire type 2).
        LongTagLabel(&'static str, &'static str),
        /// A label whose name's key is field 2^32 + 1 (six bytes; read
        /// truncated, it would be field 1).
        WideKeyLabel(&'static str, &'static str),
        Sample(i64, f64),
    }

    fn put_varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push(v as u8 | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    fn put_bytes(out: &mut Vec<u8>, field: u64, b: &[u8]) {
        put_varint(out, field << 3 | 2);
        put_varint(out, b.len() as u64);
        out.extend_from_slice(b);
    }

    fn series(parts: &[Part]) -> Vec<u8> {
        let mut ts = Vec::new();
        for p in parts {
            let mut m = Vec::new();
            match p {
                Part::Label(n, v) | Part::OddLabel(n, v) => {
                    if matches!(p, Part::OddLabel(..)) {
                        put_varint(&mut m, 3 << 3);
                        put_varint(&mut m, 7);
                    }
                    put_bytes(&mut m, 1, n.as_bytes());
                    put_bytes(&mut m, 2, v.as_bytes());
                    put_bytes(&mut ts, 1, &m);
                }
                Part::LongTagLabel(n, v) => {
                    put_bytes(&mut m, 1, n.as_bytes());
                    put_bytes(&mut m, 2, v.as_bytes());
                    ts.extend_from_slice(&[0x8a, 0x00]);
                    put_varint(&mut ts, m.len() as u64);
                    ts.extend_from_slice(&m);
                }
                Part::WideKeyLabel(n, v) => {
                    put_varint(&mut m, ((1u64 << 32) + 1) << 3 | 2);
                    put_varint(&mut m, n.len() as u64);
                    m.extend_from_slice(n.as_bytes());
                    put_bytes(&mut m, 2, v.as_bytes());
                    put_bytes(&mut ts, 1, &m);
                }
                Part::Sample(t, v) => {
                    m.push(1 << 3 | 1);
                    m.extend_from_slice(&v.to_bits().to_le_bytes());
                    put_varint(&mut m, 2 << 3);
                    put_varint(&mut m, *t as u64);
                    put_bytes(&mut ts, 2, &m);
                }
            }
        }
        ts
    }

    fn body(all: &[Vec<Part>]) -> Vec<u8> {
        let mut req = Vec::new();
        for parts in all {
            put_bytes(&mut req, 1, &series(parts));
        }
        snap::raw::Encoder::new().compress_vec(&req).unwrap()
    }

    fn arb_part() -> impl Strategy<Value = Part> {
        let name = prop_oneof![Just("__name__"), Just("job"), Just("a"), Just("1x")];
        let value = prop_oneof![Just("up"), Just("v"), Just(""), Just("x y")];
        prop_oneof![
            4 => (name.clone(), value.clone()).prop_map(|(n, v)| Part::Label(n, v)),
            1 => (name.clone(), value.clone()).prop_map(|(n, v)| Part::OddLabel(n, v)),
            1 => (name.clone(), value.clone()).prop_map(|(n, v)| Part::LongTagLabel(n, v)),
            1 => (name, value).prop_map(|(n, v)| Part::WideKeyLabel(n, v)),
            2 => (0i64..3, 0u8..3).prop_map(|(t, v)| Part::Sample(t, f64::from(v))),
        ]
    }

    fn same(
        a: &(PreparedBatch, Vec<Invalid>),
        b: &(PreparedBatch, Vec<Invalid>),
    ) -> Result<(), TestCaseError> {
        prop_assert_eq!(&a.1, &b.1);
        prop_assert_eq!(a.0.series.len(), b.0.series.len());
        for (x, y) in a.0.series.iter().zip(&b.0.series) {
            prop_assert_eq!(x.id, y.id);
            prop_assert_eq!(x.labels.materialize(), y.labels.materialize());
            let raw = |s: &PreparedSeries| -> Vec<(Vec<u8>, Vec<u8>)> {
                s.labels
                    .raw_pairs()
                    .map(|(n, v)| (n.to_vec(), v.to_vec()))
                    .collect()
            };
            prop_assert_eq!(raw(x), raw(y));
            let bits = |s: &PreparedSeries| -> Vec<(i64, u64)> {
                s.samples.iter().map(|p| (p.t, p.v.to_bits())).collect()
            };
            prop_assert_eq!(bits(x), bits(y));
        }
        Ok(())
    }

    proptest! {
        /// Requests decoded through one `KnownLabels` — label sets seen
        /// before, labels after samples, label messages with unknown
        /// fields, other limits and tenants — decode as without it.
        #[test]
        fn known_labels_change_nothing(
            requests in prop::collection::vec(
                prop::collection::vec(
                    (any::<bool>(), prop::collection::vec(arb_part(), 0..5)).prop_map(|(named, mut parts)| {
                        // Mostly valid series: a name first.
                        if named {
                            parts.insert(0, Part::Label("__name__", "up"));
                        }
                        parts
                    }),
                    0..5),
                1..5),
            tight in prop::collection::vec(any::<bool>(), 5),
            tenants in prop::collection::vec(prop_oneof![Just("t"), Just("u")], 5),
        ) {
            let known = KnownLabels::new(64);
            for (round, req) in requests.iter().chain(requests.iter()).enumerate() {
                let b = body(req);
                let limits = if tight[round % 5] {
                    IngestLimits { max_labels_per_series: 2, ..Default::default() }
                } else {
                    IngestLimits { max_future_ms: i64::MAX / 2, ..Default::default() }
                };
                let tenant = tenants[round % 5];
                let plain = decode_prepared(tenant, &b, &limits, 0);
                let cached = decode_known(tenant, &b, &limits, 0, Some(&known));
                match (plain, cached) {
                    (Ok(p), Ok(c)) => same(&p, &c)?,
                    (Err(p), Err(c)) => prop_assert_eq!(p.to_string(), c.to_string()),
                    (p, c) => prop_assert!(false, "{:?} against {:?}", p.map(|_| ()), c.map(|_| ())),
                }
            }
        }
    }

    #[test]
    fn a_known_label_set_is_found_and_a_full_cache_starts_over() {
        let known = KnownLabels::new(1 << 10);
        let limits = IngestLimits::default();
        let one =
            |name: &'static str| body(&[vec![Part::Label("__name__", name), Part::Sample(1, 1.0)]]);
        decode_known("t", &one("a"), &limits, 0, Some(&known)).unwrap();
        assert_eq!(known.len(), 1);
        // Found: not added again; its labels come from the messages.
        let (b, _) = decode_known("t", &one("a"), &limits, 0, Some(&known)).unwrap();
        assert_eq!(known.len(), 1);
        assert_eq!(b.series[0].labels.materialize().to_string(), "a");
        // Another tenant's set is another key.
        decode_known("u", &one("a"), &limits, 0, Some(&known)).unwrap();
        assert_eq!(known.len(), 2);
        // One set per shard at most: many sets never hold more.
        let small = KnownLabels::new(KNOWN_SHARDS);
        let names: Vec<&'static str> = (0..200).map(|i| &*format!("m{i}").leak()).collect();
        for n in &names {
            decode_known("t", &one(n), &limits, 0, Some(&small)).unwrap();
        }
        assert!(small.len() <= KNOWN_SHARDS, "{}", small.len());
        // A cache of none holds none.
        let none = KnownLabels::new(0);
        decode_known("t", &one("a"), &limits, 0, Some(&none)).unwrap();
        assert!(none.is_empty());
    }
}
