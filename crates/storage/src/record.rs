//! Commit-log record payloads, encoded and decoded in one place (the
//! framing around them — length, checksum, segments — is [`crate::commitlog`]'s).
//! The first byte is the layout version; the decoder reads both.
//!
//! **Version 1** (written before issue 12, still read; written with
//! `CommitLogFormat::V1`), self-contained: tenant (uvarint length, bytes); then
//! - new series: count, then per series id(16, BE) and labels;
//! - samples: count of series with samples, then per series id(16), sample
//!   count, and per sample the time as a zig-zag varint delta from the
//!   previous one (the first from 0) and the value's bits (u64 LE);
//! - exemplars: count, then id(16), time (zig-zag varint), value bits (u64
//!   LE), labels;
//! - metadata: count, then metric name, type, help and unit (each length-prefixed).
//!
//! **Version 2**: series are small refs declared once per segment, values
//! are coded against the series' previous value in the segment, and the
//! body is compressed. Header: record index in its segment (uvarint, from
//! the log), ref epoch (uvarint), first ref declared here (uvarint), codec
//! (u8: 0 none, 1 zstd, 2 lz4), the body's length when compressed
//! (uvarint), then the body:
//! - tenant;
//! - new series: count, then per series a kind (0: its id is
//!   `SeriesId::of(tenant, labels)`; 1: id(16) follows) and labels;
//! - known series used for the first time in this segment (epoch): count,
//!   then id(16) each. New series, then these, take refs `first ref`,
//!   `first ref + 1`, … in order;
//! - samples: entry count; if any, the base time (zig-zag varint), then
//!   two streams: the entries (length-prefixed), per entry
//!   `zigzag(ref - previous entry's ref) << 1 | simple` (the first from 0),
//!   *simple* being one sample at the base time, otherwise a sample count
//!   and per sample the time as a zig-zag delta from the previous one (the
//!   first from the base); then every sample's value in the same order.
//!   Each value is one tag varint, low two bits:
//!   0 the previous value's bits again; 1 decimal with the previous
//!   exponent, `zigzag(m - previous m) << 2`; 2 decimal, `zigzag(e) << 2`
//!   then zig-zag m (the value is `m / 10^e`, or `m * 10^-e` when e < 0, in
//!   f64, bit-exact); 3 raw, then the bits (u64 LE). A series' previous value
//!   starts at 0.0 (m 0, e 0) when its ref is declared;
//! - exemplars and metadata as in version 1.
//!
//! The ref table and previous values belong to one segment: each segment
//! replays on its own, in order. The epoch goes up when the encoder starts
//! its table again (it grew to [`MAX_REFS`], or an encoding failed), which
//! clears the decoder's too. Tags 2 and 3 are absolute; every 32nd value of
//! a series is written with one, so a damaged record skipped on replay (a
//! gap in the record indexes) loses, besides its own samples, at most the
//! next 31 of each series (values coded against a value replay never saw
//! are dropped and counted, never guessed), and the samples of series it
//! declared for the rest of the segment (epoch).
//!
//! Labels are a uvarint count of (name, value) byte strings (see
//! [`crate::enc`]). Decoding refuses anything else, trailing bytes included,
//! with an error naming what was being read and the offset.

use crate::commitlog::RecordPos;
use crate::enc::{put_bytes, put_labels, put_uvarint, put_varint, Reader};
use crate::error::{Error, Result};
use cairn_common::{Exemplar, IdMap, Labels, MetricMetadata, MetricType, Sample, SeriesId};
use rustc_hash::FxHashMap;

/// Layout version 1: self-contained records.
pub(crate) const VERSION_1: u8 = 1;
/// Layout version 2: segment refs, coded values, compressed body.
pub(crate) const VERSION_2: u8 = 2;

/// The most refs an encoder's table holds (about 40 bytes each) before it
/// starts a new epoch.
pub(crate) const MAX_REFS: usize = 1 << 21;
/// Every this many values of a series one is written absolute.
const KEYFRAME: u32 = 32;
/// A compressed body is used only when at most this many times smaller than
/// the body (the decoder refuses larger declared lengths, so no input can
/// make it allocate far beyond its size).
const MAX_RATIO: usize = 255;
/// Bodies smaller than this are stored uncompressed.
const MIN_COMPRESS: usize = 64;

/// A decoded commit-log record.
pub(crate) struct Record {
    pub(crate) tenant: String,
    pub(crate) new_series: Vec<(SeriesId, Labels)>,
    pub(crate) samples: Vec<(SeriesId, Vec<Sample>)>,
    pub(crate) exemplars: Vec<(SeriesId, Exemplar)>,
    pub(crate) metadata: Vec<(String, MetricMetadata)>,
    /// Samples the record held that cannot be decoded because a record
    /// before it in the segment was lost (version 2 only): their series'
    /// ref or previous value is unknown.
    pub(crate) lost_samples: u64,
}

/// What one write puts in a record.
pub(crate) struct Parts<'a> {
    pub(crate) tenant: &'a str,
    pub(crate) new_series: &'a [(SeriesId, Labels)],
    pub(crate) samples: &'a [(SeriesId, &'a [Sample])],
    pub(crate) exemplars: &'a [(SeriesId, Exemplar)],
    pub(crate) metadata: &'a [(String, MetricMetadata)],
}

/// How a version 2 body is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    /// zstd at this level.
    Zstd(i32),
    Lz4,
}

/// Encodes a version 1 payload into `out`. `Invalid` when a label set is
/// beyond what [`decode`] accepts (the write path refuses those series
/// first, so a write never gets here with one).
pub(crate) fn encode_v1(parts: &Parts, out: &mut Vec<u8>) -> Result<()> {
    out.push(VERSION_1);
    put_bytes(out, parts.tenant.as_bytes());
    put_uvarint(out, parts.new_series.len() as u64);
    for (id, labels) in parts.new_series {
        out.extend_from_slice(&id.to_be_bytes());
        put_labels(out, labels)?;
    }
    let with_samples = parts.samples.iter().filter(|p| !p.1.is_empty()).count();
    put_uvarint(out, with_samples as u64);
    for (id, samples) in parts.samples.iter().filter(|p| !p.1.is_empty()) {
        out.extend_from_slice(&id.to_be_bytes());
        put_uvarint(out, samples.len() as u64);
        let mut prev = 0i64;
        for s in samples.iter() {
            put_varint(out, s.t.wrapping_sub(prev));
            prev = s.t;
            out.extend_from_slice(&s.v.to_bits().to_le_bytes());
        }
    }
    put_exemplars_and_metadata(out, parts)
}

fn put_exemplars_and_metadata(out: &mut Vec<u8>, parts: &Parts) -> Result<()> {
    put_uvarint(out, parts.exemplars.len() as u64);
    for (id, e) in parts.exemplars {
        out.extend_from_slice(&id.to_be_bytes());
        put_varint(out, e.t);
        out.extend_from_slice(&e.value.to_bits().to_le_bytes());
        put_labels(out, &e.labels)?;
    }
    put_uvarint(out, parts.metadata.len() as u64);
    for (name, md) in parts.metadata {
        put_bytes(out, name.as_bytes());
        put_bytes(out, md.metric_type.as_str().as_bytes());
        put_bytes(out, md.help.as_bytes());
        put_bytes(out, md.unit.as_bytes());
    }
    Ok(())
}

/// Powers of ten exact in f64.
const P10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];
/// Decimal exponents a value is written with: `m / 10^e` for `0 <= e`,
/// `m * 10^-e` below.
const MAX_EXP: i64 = 22;
/// Mantissas beyond this are not exact in f64.
const MAX_MANTISSA: f64 = (1u64 << 53) as f64;

/// The value of decimal `(m, e)`: one IEEE operation on exact operands, so
/// the same bits on every machine.
fn dec_value(m: i64, e: i8) -> f64 {
    if e >= 0 {
        m as f64 / P10[e as usize]
    } else {
        m as f64 * P10[e.unsigned_abs() as usize]
    }
}

/// The mantissa that gives `v` exactly with exponent `e`, if one does.
fn dec_with(v: f64, e: i8) -> Option<i64> {
    let x = if e >= 0 {
        v * P10[e as usize]
    } else {
        v / P10[e.unsigned_abs() as usize]
    };
    // Also refuses NaN and the infinities.
    if x.is_nan() || x.abs() >= MAX_MANTISSA {
        return None;
    }
    let m = x.round() as i64;
    (dec_value(m, e).to_bits() == v.to_bits()).then_some(m)
}

/// `v` as a decimal with as few digits as it takes: the smallest exponent
/// from 0 up; for whole numbers (those too large for a mantissa included)
/// trailing zeros taken off.
///
/// The exponent to try is read off `v`'s shortest round-trip digits (ryu):
/// a decimal with fewer fractional digits that gives `v` back would be a
/// shorter such form, so no smaller exponent can work. Trying every
/// exponent from 0 instead cost 18 failing tries (~180 ns) for each value
/// that is no short decimal — a random gauge — on the write path, under
/// the commit log's lock. Same answers as [`dec_any_by_search`] (test).
fn dec_any(v: f64) -> Option<(i64, i8)> {
    if !v.is_finite() {
        return None;
    }
    let mut buf = ryu::Buffer::new();
    let frac = fraction_digits(buf.format_finite(v));
    if frac <= 0 {
        // Whole: exponent 0 then trailing zeros off, as the search does.
        return dec_any_by_search(v);
    }
    if frac > 17 {
        return None;
    }
    // The product may round so that this exponent misses by one unit: the
    // search goes on from here then.
    let from = frac as i8;
    (from..=17i8).find_map(|e| dec_with(v, e).map(|m| (m, e)))
}

/// Digits after the point of a `ryu` rendering (`123.45`, `1.5e-7`,
/// `1e16`, `-0.001`), trailing zeros not counted; negative when the
/// rendering's exponent is larger than its fraction.
fn fraction_digits(s: &str) -> i32 {
    let (mantissa, exp) = match s.split_once('e') {
        Some((m, e)) => (m, e.parse::<i32>().unwrap_or(0)),
        None => (s, 0),
    };
    let frac = mantissa
        .split_once('.')
        .map_or(0, |(_, f)| f.trim_end_matches('0').len() as i32);
    frac - exp
}

/// [`dec_any`] by trying every exponent from 0 up.
fn dec_any_by_search(v: f64) -> Option<(i64, i8)> {
    if !v.is_finite() {
        return None;
    }
    let found = (0..=17i8)
        .find_map(|e| dec_with(v, e).map(|m| (m, e)))
        .or_else(|| {
            if v.abs() < MAX_MANTISSA {
                return None;
            }
            (1..=MAX_EXP as i8).find_map(|k| dec_with(v, -k).map(|m| (m, -k)))
        });
    let (mut m, mut e) = found?;
    if e <= 0 {
        while m != 0 && m % 10 == 0 && e > -(MAX_EXP as i8) {
            if dec_value(m / 10, e - 1).to_bits() != v.to_bits() {
                break;
            }
            m /= 10;
            e -= 1;
        }
    }
    Some((m, e))
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(u: u64) -> i64 {
    ((u >> 1) as i64) ^ -((u & 1) as i64)
}

/// A series' previous value, as both sides of the code know it.
#[derive(Clone, Copy)]
struct Prev {
    bits: u64,
    /// The value as a decimal, when it was written as one (or is the
    /// initial 0.0).
    dec: Option<(i64, i8)>,
}

impl Prev {
    const START: Prev = Prev {
        bits: 0,
        dec: Some((0, 0)),
    };
}

/// Writes `v` coded against `p` (absolute when `abs`), and makes it `p`.
fn put_value(out: &mut Vec<u8>, p: &mut Prev, v: f64, abs: bool) {
    let bits = v.to_bits();
    if !abs {
        if bits == p.bits {
            out.push(0);
            return;
        }
        if let Some((pm, pe)) = p.dec {
            if let Some(m) = dec_with(v, pe) {
                put_uvarint(out, zigzag(m - pm) << 2 | 1);
                *p = Prev {
                    bits,
                    dec: Some((m, pe)),
                };
                return;
            }
        }
    }
    match dec_any(v) {
        Some((m, e)) => {
            put_uvarint(out, zigzag(e as i64) << 2 | 2);
            put_uvarint(out, zigzag(m));
            *p = Prev {
                bits,
                dec: Some((m, e)),
            };
        }
        None => {
            out.push(3);
            out.extend_from_slice(&bits.to_le_bytes());
            *p = Prev { bits, dec: None };
        }
    }
}

/// Reads a value coded against `p`: the value, which becomes the
/// series' previous one, or None when it is relative to `p` and `p` is
/// unknown.
fn read_value(r: &mut Reader, p: Option<&Prev>) -> Result<Option<Prev>> {
    let tag = r.uvarint()?;
    let (kind, rest) = (tag & 3, tag >> 2);
    let range = || Error::Corrupt("commit log record: decimal out of range".into());
    Ok(Some(match kind {
        0 | 1 => {
            let Some(p) = p else {
                return Ok(None);
            };
            if kind == 0 {
                if rest != 0 {
                    return Err(Error::Corrupt("commit log record: bad value tag".into()));
                }
                return Ok(Some(*p));
            }
            let Some((pm, pe)) = p.dec else {
                return Err(Error::Corrupt(
                    "commit log record: decimal delta after a raw value".into(),
                ));
            };
            let m = pm
                .checked_add(unzigzag(rest))
                .filter(|m| m.unsigned_abs() < 1 << 53)
                .ok_or_else(range)?;
            Prev {
                bits: dec_value(m, pe).to_bits(),
                dec: Some((m, pe)),
            }
        }
        2 => {
            let e = unzigzag(rest);
            let m = unzigzag(r.uvarint()?);
            if !(-MAX_EXP..=MAX_EXP).contains(&e) || m.unsigned_abs() >= 1 << 53 {
                return Err(range());
            }
            let e = e as i8;
            Prev {
                bits: dec_value(m, e).to_bits(),
                dec: Some((m, e)),
            }
        }
        _ => {
            if rest != 0 {
                return Err(Error::Corrupt("commit log record: bad value tag".into()));
            }
            Prev {
                bits: r.u64()?,
                dec: None,
            }
        }
    }))
}

/// A series' state in an encoder's table: its ref and previous value in
/// 16 bytes, so that with its id one entry fills half a cache line (a
/// write touches one entry per series, a cache miss each at 50k series:
/// a ref map beside a state vector cost two misses and twice the memory,
/// which also pushed the head's series out of the cache).
#[derive(Clone, Copy)]
struct EncRef {
    /// The previous value's mantissa when `exp` is a decimal exponent,
    /// else its bits.
    word: u64,
    r: u32,
    /// [`RAW`], or the previous value's decimal exponent.
    exp: i8,
    /// Values written in this epoch, modulo 256 (a multiple of
    /// [`KEYFRAME`], so the keyframe test sees no difference).
    seen: u8,
}

/// `EncRef::exp` of a previous value that is no decimal.
const RAW: i8 = i8::MIN;

impl EncRef {
    fn prev(&self) -> Prev {
        if self.exp == RAW {
            Prev {
                bits: self.word,
                dec: None,
            }
        } else {
            let m = self.word as i64;
            Prev {
                bits: dec_value(m, self.exp).to_bits(),
                dec: Some((m, self.exp)),
            }
        }
    }

    fn set_prev(&mut self, p: Prev) {
        (self.word, self.exp) = match p.dec {
            Some((m, e)) => (m as u64, e),
            None => (p.bits, RAW),
        };
    }
}

/// The version 2 encoder of one commit log: its ref table and each series'
/// previous value, for the segment records are being appended to. Used
/// under the log's lock ([`crate::commitlog::CommitLog::append_with`]), so
/// its state follows the order records land in the segment.
pub(crate) struct Encoder {
    compression: Compression,
    /// [`MAX_REFS`], smaller in tests.
    max_refs: usize,
    /// The segment the table belongs to (None before the first record).
    segment: Option<u64>,
    epoch: u64,
    /// Each series' ref; its state is `states[ref]`.
    refs: IdMap<u32>,
    states: Vec<EncRef>,
    /// Refs handed out in this epoch (a series declared twice holds the
    /// later).
    next_ref: u32,
    /// Set while a record is being encoded: if the encoding fails half way,
    /// the next one starts a new epoch.
    dirty: bool,
    body: Vec<u8>,
    hdr: Vec<u8>,
    vals: Vec<u8>,
    packed: Vec<u8>,
    zstd: Option<zstd::bulk::Compressor<'static>>,
}

impl Encoder {
    pub(crate) fn new(compression: Compression) -> Self {
        Self {
            compression,
            max_refs: MAX_REFS,
            segment: None,
            epoch: 0,
            refs: IdMap::default(),
            states: Vec::new(),
            next_ref: 0,
            dirty: false,
            body: Vec::new(),
            hdr: Vec::new(),
            vals: Vec::new(),
            packed: Vec::new(),
            zstd: None,
        }
    }

    /// Sets the table's bound (tests: to see epochs).
    #[cfg(test)]
    pub(crate) fn with_max_refs(mut self, n: usize) -> Self {
        self.max_refs = n;
        self
    }

    /// Encodes the version 2 payload of `parts` landing at `pos` into
    /// `out`. On error `out` may hold part of it (the log then appends
    /// nothing) and the next record starts a new epoch.
    pub(crate) fn encode(
        &mut self,
        pos: RecordPos,
        parts: &Parts,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        let touched = parts.new_series.len() + parts.samples.len();
        if self.segment != Some(pos.segment) {
            self.segment = Some(pos.segment);
            self.epoch = 0;
            self.clear();
        } else if self.dirty || self.next_ref as usize + touched > self.max_refs {
            self.epoch += 1;
            self.clear();
        }
        self.dirty = true;
        let first_ref = u64::from(self.next_ref);
        let mut body = std::mem::take(&mut self.body);
        body.clear();
        let r = self.encode_body(parts, &mut body);
        let r = r.and_then(|()| {
            out.push(VERSION_2);
            put_uvarint(out, pos.index);
            put_uvarint(out, self.epoch);
            put_uvarint(out, first_ref);
            self.compress(&body, out)
        });
        self.body = body;
        r?;
        self.dirty = false;
        Ok(())
    }

    fn clear(&mut self) {
        self.refs.clear();
        self.states.clear();
        self.next_ref = 0;
        if self.refs.capacity() > MAX_REFS {
            self.refs.shrink_to(MAX_REFS);
            self.states.shrink_to(MAX_REFS);
        }
    }

    /// A new ref for `id` (the later one if it had one): returns it.
    fn declare(&mut self, id: SeriesId) -> u32 {
        let r = self.next_ref;
        let mut e = EncRef {
            word: 0,
            r,
            exp: 0,
            seen: 0,
        };
        e.set_prev(Prev::START);
        debug_assert_eq!(self.states.len(), r as usize);
        self.states.push(e);
        self.refs.insert(id, r);
        self.next_ref += 1;
        r
    }

    fn encode_body(&mut self, parts: &Parts, body: &mut Vec<u8>) -> Result<()> {
        put_bytes(body, parts.tenant.as_bytes());
        put_uvarint(body, parts.new_series.len() as u64);
        for (id, labels) in parts.new_series {
            if SeriesId::of(parts.tenant, labels) == *id {
                body.push(0);
            } else {
                body.push(1);
                body.extend_from_slice(&id.to_be_bytes());
            }
            put_labels(body, labels)?;
            // A series two writers both found new is declared again: the
            // later ref is the one used from here on.
            self.declare(*id);
        }
        // One lookup per series: its ref, declared here if new to the table.
        let mut known = Vec::new();
        let mut entry_refs = Vec::with_capacity(parts.samples.len());
        for (id, samples) in parts.samples {
            if samples.is_empty() {
                continue;
            }
            match self.refs.get(id) {
                Some(&r) => entry_refs.push(r),
                None => {
                    entry_refs.push(self.declare(*id));
                    known.push(*id);
                }
            }
        }
        put_uvarint(body, known.len() as u64);
        for id in known {
            body.extend_from_slice(&id.to_be_bytes());
        }
        let entries = parts.samples.iter().filter(|p| !p.1.is_empty());
        put_uvarint(body, entries.clone().count() as u64);
        let first = entries.clone().next().map(|p| p.1[0].t);
        if let Some(base) = first {
            put_varint(body, base);
        }
        let base = first.unwrap_or(0);
        // Two streams, so the compressor sees runs: entry headers and times
        // (length-prefixed), then the values.
        let mut hdr = std::mem::take(&mut self.hdr);
        let mut vals = std::mem::take(&mut self.vals);
        hdr.clear();
        vals.clear();
        let mut prev_ref = 0i64;
        for ((_, samples), &r) in entries.zip(&entry_refs) {
            let st = &mut self.states[r as usize];
            let r = st.r;
            let simple = samples.len() == 1 && samples[0].t == base;
            put_uvarint(&mut hdr, zigzag(r as i64 - prev_ref) << 1 | simple as u64);
            prev_ref = r as i64;
            if !simple {
                put_uvarint(&mut hdr, samples.len() as u64);
            }
            let mut prev = st.prev();
            let mut prev_t = base;
            for s in samples.iter() {
                if !simple {
                    put_varint(&mut hdr, s.t.wrapping_sub(prev_t));
                    prev_t = s.t;
                }
                let abs = u32::from(st.seen).wrapping_add(r).is_multiple_of(KEYFRAME);
                put_value(&mut vals, &mut prev, s.v, abs);
                st.seen = st.seen.wrapping_add(1);
            }
            st.set_prev(prev);
        }
        if first.is_some() {
            put_bytes(body, &hdr);
            body.extend_from_slice(&vals);
        }
        self.hdr = hdr;
        self.vals = vals;
        put_exemplars_and_metadata(body, parts)
    }

    /// Appends the codec byte and `body`, compressed when that pays.
    fn compress(&mut self, body: &[u8], out: &mut Vec<u8>) -> Result<()> {
        let packed = &mut self.packed;
        packed.clear();
        let codec = match self.compression {
            _ if body.len() < MIN_COMPRESS => 0,
            Compression::None => 0,
            Compression::Zstd(level) => {
                let zstd = match &mut self.zstd {
                    Some(z) => z,
                    None => self.zstd.insert(
                        zstd::bulk::Compressor::new(level)
                            .map_err(|e| Error::Invalid(format!("zstd: {e}")))?,
                    ),
                };
                packed.reserve(zstd::zstd_safe::compress_bound(body.len()));
                zstd.compress_to_buffer(body, packed)
                    .map_err(|e| Error::Invalid(format!("zstd: {e}")))?;
                1
            }
            Compression::Lz4 => {
                packed.resize(lz4_flex::block::get_maximum_output_size(body.len()), 0);
                let n = lz4_flex::block::compress_into(body, packed)
                    .map_err(|e| Error::Invalid(format!("lz4: {e}")))?;
                packed.truncate(n);
                2
            }
        };
        let pays = codec != 0
            && packed.len() + 4 < body.len()
            && body.len() <= packed.len().saturating_mul(MAX_RATIO);
        if pays {
            out.push(codec);
            put_uvarint(out, body.len() as u64);
            out.extend_from_slice(packed);
        } else {
            out.push(0);
            out.extend_from_slice(body);
        }
        Ok(())
    }
}

/// A series' state in a decoder's table.
struct DecRef {
    id: SeriesId,
    prev: Prev,
    /// The previous value is known while this equals the decoder's `gen`.
    gen: u32,
}

/// Decodes the records of a commit log in the order replay reads them,
/// keeping each segment's ref table and previous values. Every record of a
/// segment is handed to it, in order; damaged ones skipped by the walk show
/// as a gap in the record indexes.
#[derive(Default)]
pub(crate) struct Decoder {
    segment: Option<u64>,
    /// The index the next record of the segment should have.
    next_index: u64,
    epoch: u64,
    next_ref: u64,
    refs: FxHashMap<u32, DecRef>,
    /// Bumped at a gap: previous values known before it are not any more.
    gen: u32,
    /// A record of the segment was lost: unknown refs and values relative
    /// to unknown ones are losses (counted), not corruption.
    gap: bool,
}

/// Decodes one payload on its own (a version 2 record out of its segment
/// decodes only if it needs nothing from the records before it).
#[cfg(test)]
pub(crate) fn decode(p: &[u8]) -> Result<Record> {
    Decoder::default().decode(0, p)
}

impl Decoder {
    /// Decodes record `payload` of segment `segment`.
    pub(crate) fn decode(&mut self, segment: u64, payload: &[u8]) -> Result<Record> {
        if self.segment != Some(segment) {
            *self = Decoder {
                segment: Some(segment),
                ..Decoder::default()
            };
        }
        let mut r = Reader::new(payload, "commit log record");
        let v = r.u8()?;
        match v {
            VERSION_1 => {
                let rec = decode_v1(&mut r)?;
                self.next_index += 1;
                Ok(rec)
            }
            VERSION_2 => {
                let index = r.uvarint()?;
                let epoch = r.uvarint()?;
                let first_ref = r.uvarint()?;
                if index < self.next_index || epoch < self.epoch {
                    return Err(Error::Corrupt(format!(
                        "commit log record: index {index} epoch {epoch} after index {} epoch {}",
                        self.next_index.saturating_sub(1),
                        self.epoch
                    )));
                }
                if index > self.next_index {
                    self.lost();
                }
                if epoch > self.epoch {
                    self.epoch = epoch;
                    self.next_ref = 0;
                    self.refs.clear();
                }
                if first_ref < self.next_ref || (first_ref > self.next_ref && !self.gap) {
                    return Err(Error::Corrupt(format!(
                        "commit log record: first ref {first_ref}, expected {}",
                        self.next_ref
                    )));
                }
                let codec = r.u8()?;
                let unpacked;
                let body = match codec {
                    0 => r.rest(),
                    1 | 2 => {
                        let n = r.uvarint()?;
                        let packed = r.rest();
                        if n > (packed.len() * MAX_RATIO) as u64 {
                            return Err(Error::Corrupt(format!(
                                "commit log record: body of {n} bytes declared in {}",
                                packed.len()
                            )));
                        }
                        let n = n as usize;
                        unpacked = if codec == 1 {
                            zstd::bulk::decompress(packed, n).ok()
                        } else {
                            lz4_flex::block::decompress(packed, n).ok()
                        }
                        .filter(|b| b.len() == n)
                        .ok_or_else(|| {
                            Error::Corrupt("commit log record: body does not decompress".into())
                        })?;
                        &unpacked[..]
                    }
                    c => return Err(Error::Corrupt(format!("commit log record: codec {c}"))),
                };
                let mut declared = Vec::new();
                let rec = self.decode_v2(first_ref, body, &mut declared);
                match rec {
                    Ok(rec) => {
                        self.next_index = index + 1;
                        Ok(rec)
                    }
                    Err(e) => {
                        // As if the record was lost: its declarations
                        // go, the values it may have moved are unknown.
                        for r in declared {
                            self.refs.remove(&r);
                        }
                        self.lost();
                        Err(e)
                    }
                }
            }
            v => Err(Error::Corrupt(format!("commit log record version {v}"))),
        }
    }

    fn lost(&mut self) {
        self.gap = true;
        self.gen = self.gen.wrapping_add(1);
    }

    fn declare(&mut self, r: u64, id: SeriesId, declared: &mut Vec<u32>) -> Result<()> {
        let r = u32::try_from(r)
            .ok()
            .ok_or_else(|| Error::Corrupt(format!("commit log record: ref {r} out of range")))?;
        self.refs.insert(
            r,
            DecRef {
                id,
                prev: Prev::START,
                gen: self.gen,
            },
        );
        declared.push(r);
        self.next_ref = r as u64 + 1;
        Ok(())
    }

    fn decode_v2(
        &mut self,
        first_ref: u64,
        body: &[u8],
        declared: &mut Vec<u32>,
    ) -> Result<Record> {
        let mut r = Reader::new(body, "commit log record body");
        let tenant = r.string()?;
        let n = r.uvarint()? as usize;
        let mut new_series = Vec::with_capacity(n.min(1 << 16));
        let mut next = first_ref;
        for _ in 0..n {
            let explicit = match r.u8()? {
                0 => None,
                1 => Some(SeriesId::from_be_bytes(r.fixed::<16>()?)),
                k => {
                    return Err(Error::Corrupt(format!(
                        "commit log record: new series kind {k}"
                    )))
                }
            };
            let labels = r.labels()?;
            let id = explicit.unwrap_or_else(|| SeriesId::of(&tenant, &labels));
            self.declare(next, id, declared)?;
            next += 1;
            new_series.push((id, labels));
        }
        let n = r.uvarint()?;
        for _ in 0..n {
            let id = SeriesId::from_be_bytes(r.fixed::<16>()?);
            self.declare(next, id, declared)?;
            next += 1;
        }
        if n == 0 && new_series.is_empty() {
            // Nothing declared: the table's next ref stays where it was.
            self.next_ref = self.next_ref.max(first_ref);
        }
        let n = r.uvarint()? as usize;
        let mut samples = Vec::with_capacity(n.min(1 << 16));
        let mut lost = 0u64;
        let base = if n > 0 { r.varint()? } else { 0 };
        let mut hr = Reader::new(
            if n > 0 { r.bytes()? } else { &[] },
            "commit log record entries",
        );
        let mut prev_ref = 0i64;
        let gen = self.gen;
        for _ in 0..n {
            let h = hr.uvarint()?;
            let rf = prev_ref
                .checked_add(unzigzag(h >> 1))
                .filter(|&x| (0..=u32::MAX as i64).contains(&x))
                .ok_or_else(|| Error::Corrupt("commit log record: ref out of range".into()))?;
            prev_ref = rf;
            let k = if h & 1 == 1 {
                1
            } else {
                hr.uvarint()? as usize
            };
            let mut entry = self.refs.get_mut(&(rf as u32));
            if entry.is_none() && !self.gap {
                return Err(Error::Corrupt(format!(
                    "commit log record: ref {rf} never declared"
                )));
            }
            let mut v = Vec::with_capacity(k.min(1 << 16));
            let mut t = base;
            for _ in 0..k {
                if h & 1 == 0 {
                    t = t.wrapping_add(hr.varint()?);
                }
                let prev = entry.as_deref().filter(|e| e.gen == gen).map(|e| &e.prev);
                match (read_value(&mut r, prev)?, entry.as_deref_mut()) {
                    (Some(p), Some(e)) => {
                        // An absolute value makes a stale series known again.
                        e.prev = p;
                        e.gen = gen;
                        v.push(Sample {
                            t,
                            v: f64::from_bits(p.bits),
                        });
                    }
                    _ => lost += 1,
                }
            }
            if let Some(e) = entry {
                if !v.is_empty() {
                    samples.push((e.id, v));
                }
            }
        }
        if !hr.is_empty() {
            return Err(Error::Corrupt(
                "commit log record has trailing bytes after its entries".into(),
            ));
        }
        let (exemplars, metadata) = decode_exemplars_and_metadata(&mut r)?;
        if !r.is_empty() {
            return Err(Error::Corrupt(
                "commit log record has trailing bytes".into(),
            ));
        }
        Ok(Record {
            tenant,
            new_series,
            samples,
            exemplars,
            metadata,
            lost_samples: lost,
        })
    }
}

fn decode_v1(r: &mut Reader) -> Result<Record> {
    let tenant = r.string()?;
    let id = |r: &mut Reader| -> Result<SeriesId> { Ok(SeriesId::from_be_bytes(r.fixed::<16>()?)) };
    let n = r.uvarint()? as usize;
    let mut new_series = Vec::with_capacity(n.min(1 << 16));
    for _ in 0..n {
        new_series.push((id(r)?, r.labels()?));
    }
    let n = r.uvarint()? as usize;
    let mut samples = Vec::with_capacity(n.min(1 << 16));
    for _ in 0..n {
        let sid = id(r)?;
        let k = r.uvarint()? as usize;
        let mut v = Vec::with_capacity(k.min(1 << 16));
        let mut t = 0i64;
        for _ in 0..k {
            t = t.wrapping_add(r.varint()?);
            v.push(Sample {
                t,
                v: f64::from_bits(r.u64()?),
            });
        }
        samples.push((sid, v));
    }
    let (exemplars, metadata) = decode_exemplars_and_metadata(r)?;
    if !r.is_empty() {
        return Err(Error::Corrupt(
            "commit log record has trailing bytes".into(),
        ));
    }
    Ok(Record {
        tenant,
        new_series,
        samples,
        exemplars,
        metadata,
        lost_samples: 0,
    })
}

type ExemplarsAndMetadata = (Vec<(SeriesId, Exemplar)>, Vec<(String, MetricMetadata)>);

fn decode_exemplars_and_metadata(r: &mut Reader) -> Result<ExemplarsAndMetadata> {
    let n = r.uvarint()? as usize;
    let mut exemplars = Vec::with_capacity(n.min(1 << 16));
    for _ in 0..n {
        let sid = SeriesId::from_be_bytes(r.fixed::<16>()?);
        let t = r.varint()?;
        let value = f64::from_bits(r.u64()?);
        exemplars.push((
            sid,
            Exemplar {
                labels: r.labels()?,
                value,
                t,
            },
        ));
    }
    let n = r.uvarint()? as usize;
    let mut metadata = Vec::with_capacity(n.min(1 << 16));
    for _ in 0..n {
        let name = r.string()?;
        let metric_type = MetricType::parse(&r.string()?);
        let help = r.string()?;
        let unit = r.string()?;
        metadata.push((
            name,
            MetricMetadata {
                metric_type,
                help,
                unit,
            },
        ));
    }
    Ok((exemplars, metadata))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::labels_strategy;
    use cairn_common::limits::hard;
    use proptest::prelude::*;

    /// A record's content with values as bits, to compare.
    type Flat = (
        String,
        Vec<(SeriesId, Labels)>,
        Vec<(SeriesId, Vec<(i64, u64)>)>,
        Vec<(SeriesId, Labels, i64, u64)>,
        Vec<(String, MetricMetadata)>,
    );

    fn flat_parts(p: &Parts) -> Flat {
        (
            p.tenant.to_string(),
            p.new_series.to_vec(),
            p.samples
                .iter()
                .filter(|s| !s.1.is_empty())
                .map(|(i, s)| (*i, s.iter().map(|x| (x.t, x.v.to_bits())).collect()))
                .collect(),
            p.exemplars
                .iter()
                .map(|(i, e)| (*i, e.labels.clone(), e.t, e.value.to_bits()))
                .collect(),
            p.metadata.to_vec(),
        )
    }

    fn flat_record(r: &Record) -> Flat {
        (
            r.tenant.clone(),
            r.new_series.clone(),
            r.samples
                .iter()
                .map(|(i, s)| (*i, s.iter().map(|x| (x.t, x.v.to_bits())).collect()))
                .collect(),
            r.exemplars
                .iter()
                .map(|(i, e)| (*i, e.labels.clone(), e.t, e.value.to_bits()))
                .collect(),
            r.metadata.clone(),
        )
    }

    /// Owned parts of one write.
    struct Write {
        tenant: String,
        new_series: Vec<(SeriesId, Labels)>,
        samples: Vec<(SeriesId, Vec<Sample>)>,
        exemplars: Vec<(SeriesId, Exemplar)>,
        metadata: Vec<(String, MetricMetadata)>,
    }

    impl Write {
        fn with<R>(&self, f: impl FnOnce(&Parts) -> R) -> R {
            let samples: Vec<(SeriesId, &[Sample])> = self
                .samples
                .iter()
                .map(|(i, s)| (*i, s.as_slice()))
                .collect();
            f(&Parts {
                tenant: &self.tenant,
                new_series: &self.new_series,
                samples: &samples,
                exemplars: &self.exemplars,
                metadata: &self.metadata,
            })
        }
    }

    /// Values as a scrape produces them, and the awkward ones.
    fn value_strategy() -> impl Strategy<Value = f64> {
        prop_oneof![
            4 => (0i64..100_000, 0u32..6).prop_map(|(m, e)| m as f64 / 10f64.powi(e as i32)),
            2 => (1i64..1000, 0i32..15).prop_map(|(m, e)| m as f64 * 10f64.powi(e)),
            2 => any::<u64>().prop_map(f64::from_bits),
            1 => Just(-0.0),
            1 => Just(f64::from_bits(0x7ff0_0000_0000_0002)),
            1 => Just(f64::INFINITY),
            1 => Just(0.1 + 0.2),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// Every version 1 record the write path can encode decodes to what
        /// was encoded: label sets up to the hard bounds, any f64 bits, any
        /// time in the storable range.
        #[test]
        fn v1_records_round_trip_over_the_accepted_domain(
            tenant in "\\PC{0,12}",
            sets in proptest::collection::vec(labels_strategy(), 0..3),
            samples in proptest::collection::vec(
                proptest::collection::vec((hard::MIN_TIME_MS..=hard::MAX_TIME_MS, any::<u64>()), 0..6), 0..3),
            edge in any::<bool>(),
            ex_t in any::<i64>(),
            ex_bits in any::<u64>(),
        ) {
            let w = write_of(&tenant, &sets, &samples, edge, ex_t, ex_bits);
            let mut p = Vec::new();
            w.with(|parts| encode_v1(parts, &mut p)).unwrap();
            let rec = decode(&p).unwrap();
            prop_assert_eq!(flat_record(&rec), w.with(flat_parts));
        }

        /// Version 2: a run of writes, encoded in order into segments (a
        /// rotation now and then, a small ref table so epochs turn over,
        /// every codec) and decoded in order, gives back every write,
        /// bit for bit. The model is the writes themselves.
        #[test]
        fn v2_records_round_trip_across_segments_and_epochs(
            tenant in "\\PC{0,12}",
            sets in proptest::collection::vec(labels_strategy(), 0..3),
            series in 1usize..12,
            writes in proptest::collection::vec(
                (proptest::collection::vec((0usize..12, proptest::collection::vec(
                    (-5i64..5, value_strategy()), 0..4)), 0..8), any::<bool>()), 1..10),
            codec in 0u8..3,
            max_refs in prop_oneof![Just(MAX_REFS), 3usize..8],
            ex_t in any::<i64>(),
            ex_bits in any::<u64>(),
        ) {
            let compression = [Compression::None, Compression::Zstd(1), Compression::Lz4][codec as usize];
            let mut enc = Encoder::new(compression).with_max_refs(max_refs);
            let mut dec = Decoder::default();
            let (mut segment, mut index) = (1u64, 0u64);
            let base = 1_700_000_000_000i64;
            for (k, (entries, rotate)) in writes.iter().enumerate() {
                if *rotate {
                    segment += 1;
                    index = 0;
                }
                let mut w = write_of(&tenant, if k == 0 { &sets } else { &[] }, &[], false, ex_t, ex_bits);
                w.samples = entries
                    .iter()
                    .map(|(s, v)| {
                        let s = s % series;
                        let id = SeriesId(s as u128 * 7919 + 1);
                        let t0 = base + k as i64 * 15_000;
                        (id, v.iter().map(|(dt, x)| Sample::new(t0 + dt * (s as i64 % 3), *x)).collect())
                    })
                    .collect();
                let mut p = Vec::new();
                w.with(|parts| enc.encode(RecordPos { segment, index }, parts, &mut p)).unwrap();
                index += 1;
                let rec = dec.decode(segment, &p).unwrap();
                prop_assert_eq!(rec.lost_samples, 0);
                prop_assert_eq!(flat_record(&rec), w.with(flat_parts));
            }
        }

        #[test]
        fn garbage_never_panics(b in proptest::collection::vec(any::<u8>(), 0..96), v in 1u8..3) {
            let mut p = vec![v];
            p.extend_from_slice(&b);
            let mut dec = Decoder::default();
            let _ = dec.decode(1, &p);
            let _ = dec.decode(1, &p);
        }
    }

    fn write_of(
        tenant: &str,
        sets: &[Labels],
        samples: &[Vec<(i64, u64)>],
        edge: bool,
        ex_t: i64,
        ex_bits: u64,
    ) -> Write {
        let new_series: Vec<(SeriesId, Labels)> = sets
            .iter()
            .enumerate()
            .map(|(i, l)| {
                // One id that is not the hash of its labels (as a future
                // id scheme might give): written explicitly.
                let id = if i == 1 {
                    SeriesId(42)
                } else {
                    SeriesId::of(tenant, l)
                };
                (id, l.clone())
            })
            .collect();
        let mut per_series: Vec<(SeriesId, Vec<Sample>)> = samples
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let mut v: Vec<Sample> = v
                    .iter()
                    .map(|(t, b)| Sample::new(*t, f64::from_bits(*b)))
                    .collect();
                if edge {
                    v.push(Sample::new(hard::MIN_TIME_MS, f64::from_bits(u64::MAX)));
                    v.push(Sample::new(hard::MAX_TIME_MS, f64::from_bits(0)));
                }
                (SeriesId(i as u128 + 1), v)
            })
            .collect();
        per_series.retain(|(_, v)| !v.is_empty());
        let exemplars: Vec<(SeriesId, Exemplar)> = sets
            .iter()
            .take(1)
            .map(|l| {
                (
                    SeriesId(9),
                    Exemplar {
                        labels: l.clone(),
                        value: f64::from_bits(ex_bits),
                        t: ex_t,
                    },
                )
            })
            .collect();
        let metadata = vec![(
            "m".to_string(),
            MetricMetadata {
                metric_type: MetricType::Counter,
                help: tenant.to_string(),
                unit: String::new(),
            },
        )];
        Write {
            tenant: tenant.to_string(),
            new_series,
            samples: per_series,
            exemplars,
            metadata,
        }
    }

    fn small_write() -> Write {
        let labels = Labels::from_pairs(&[("__name__", "up"), ("job", "a")]);
        let id = SeriesId::of("t", &labels);
        Write {
            tenant: "t".into(),
            new_series: vec![(id, labels)],
            samples: vec![(id, vec![Sample::new(5, 1.5), Sample::new(-7, f64::NAN)])],
            exemplars: vec![(
                id,
                Exemplar {
                    labels: Labels::from_pairs(&[("trace_id", "x")]),
                    value: 2.0,
                    t: 5,
                },
            )],
            metadata: vec![(
                "up".into(),
                MetricMetadata {
                    metric_type: MetricType::Gauge,
                    help: "h".into(),
                    unit: "s".into(),
                },
            )],
        }
    }

    /// Every proper prefix of a valid record, and the record with a byte
    /// appended, is refused with an error naming the record, never a panic
    /// or a shorter record; in both versions, compressed or not.
    #[test]
    fn truncated_or_extended_records_are_errors() {
        let w = small_write();
        let mut payloads = Vec::new();
        let mut p = Vec::new();
        w.with(|parts| encode_v1(parts, &mut p)).unwrap();
        payloads.push(p);
        for c in [Compression::None, Compression::Zstd(1), Compression::Lz4] {
            let mut p = Vec::new();
            let pos = RecordPos {
                segment: 1,
                index: 0,
            };
            w.with(|parts| Encoder::new(c).encode(pos, parts, &mut p))
                .unwrap();
            payloads.push(p);
        }
        for mut p in payloads {
            let rec = decode(&p).unwrap();
            assert_eq!(flat_record(&rec), w.with(flat_parts));
            for n in 0..p.len() {
                let e = decode(&p[..n])
                    .err()
                    .unwrap_or_else(|| panic!("prefix of {n} bytes decoded"));
                assert!(e.to_string().contains("commit log record"), "{e}");
            }
            p.push(0);
            let e = decode(&p).err().expect("a trailing byte");
            assert!(e.to_string().contains("trailing"), "{e}");
            p[0] = VERSION_2 + 1;
            assert!(decode(&p).is_err());
        }
    }

    /// A large, repetitive body is compressed; the declared length is
    /// bounded by the compressed size, so a record claiming more is refused
    /// before anything is allocated.
    #[test]
    fn compressed_bodies_are_smaller_and_bounded() {
        let sets: Vec<Labels> = (0..200)
            .map(|i| {
                Labels::from_pairs(&[
                    ("__name__", "node_cpu_seconds_total".to_string()),
                    ("cpu", (i % 8).to_string()),
                    ("instance", format!("host-{:04}:9100", i / 8)),
                    ("job", "node".to_string()),
                ])
            })
            .collect();
        let w = Write {
            new_series: sets
                .iter()
                .map(|l| (SeriesId::of("t", l), l.clone()))
                .collect(),
            samples: sets
                .iter()
                .map(|l| (SeriesId::of("t", l), vec![Sample::new(1000, 12.5)]))
                .collect(),
            ..write_of("t", &[], &[], false, 0, 0)
        };
        let pos = RecordPos {
            segment: 1,
            index: 0,
        };
        let mut sizes = Vec::new();
        for c in [Compression::None, Compression::Zstd(1), Compression::Lz4] {
            let mut p = Vec::new();
            w.with(|parts| Encoder::new(c).encode(pos, parts, &mut p))
                .unwrap();
            assert_eq!(flat_record(&decode(&p).unwrap()), w.with(flat_parts));
            sizes.push(p.len());
        }
        assert!(
            sizes[1] * 3 < sizes[0] && sizes[2] * 2 < sizes[0],
            "{sizes:?}"
        );
        // Header: version, index, epoch, first ref, codec; then a length
        // of 2^40 over a few bytes.
        let mut p = vec![VERSION_2, 0, 0, 0, 1];
        put_uvarint(&mut p, 1 << 40);
        p.extend_from_slice(&[0x28, 0xb5, 0x2f, 0xfd, 0, 0, 0, 0]);
        let e = decode(&p).err().expect("a bomb").to_string();
        assert!(e.contains("declared"), "{e}");
    }

    /// Values as decimals: exact both ways, smallest form, the awkward
    /// ones raw.
    #[test]
    fn decimal_values_are_exact() {
        for (v, want) in [
            (0.0, Some((0, 0))),
            (12345.67, Some((1234567, 2))),
            (1.23e9, Some((123, -7))),
            (0.0123, Some((123, 4))),
            (-42.0, Some((-42, 0))),
            (1e22, Some((1, -22))),
            (0.1 + 0.2, None),
            (-0.0, None),
            (f64::NAN, None),
            (f64::INFINITY, None),
            (9007199254740992.0, None),
            (1.5e300, None),
        ] {
            assert_eq!(dec_any(v), want, "{v:e}");
            if let Some((m, e)) = want {
                assert_eq!(dec_value(m, e).to_bits(), v.to_bits(), "{v:e}");
            }
        }
        let mut out = Vec::new();
        let mut p = Prev::START;
        for v in [1.0, 1.0, 1.5, 2.5, 1e300, f64::NAN, 3.0] {
            put_value(&mut out, &mut p, v, false);
        }
        let mut r = Reader::new(&out, "t");
        let mut q = Prev::START;
        for v in [1.0, 1.0, 1.5, 2.5, 1e300, f64::NAN, 3.0] {
            q = read_value(&mut r, Some(&q)).unwrap().unwrap();
            assert_eq!(q.bits, v.to_bits());
        }
        assert!(r.is_empty());
    }

    /// The exponent read off the shortest digits gives what trying every
    /// exponent gives: for decimals of every length and scale, their
    /// neighbours one ulp away, whole numbers and random bits.
    #[test]
    fn decimal_exponent_from_shortest_digits_matches_the_search() {
        let mut vals = vec![
            0.0,
            -0.0,
            1e22,
            1e23,
            9007199254740992.0,
            1.5e300,
            5e-324,
            0.1 + 0.2,
        ];
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..200_000 {
            let r = next();
            let digits = (r % 17) as u32;
            let m = (next() % 10u64.pow(digits).max(1)) as f64;
            let scale = (next() % 40) as i32 - 20;
            let d = m * 10f64.powi(scale);
            vals.push(d);
            vals.push(-d);
            vals.push(f64::from_bits(d.to_bits().wrapping_add(1)));
            vals.push(f64::from_bits(d.to_bits().wrapping_sub(1)));
            vals.push(f64::from_bits(next()));
            vals.push((next() % 1_000_000) as f64 / 100.0);
        }
        for v in vals {
            assert_eq!(
                dec_any(v),
                dec_any_by_search(v),
                "{v:e} ({:#x})",
                v.to_bits()
            );
        }
    }

    /// A node-exporter scrape of `n` series at `k`: counters going up a
    /// little, gauges of two or three digits.
    fn scrape(ids: &[SeriesId], k: i64) -> Vec<(SeriesId, Vec<Sample>)> {
        ids.iter()
            .enumerate()
            .map(|(i, id)| {
                let i = i as i64;
                let v = if i % 2 == 0 {
                    (1000 * i + k * (i % 7)) as f64
                } else {
                    ((i * 31 + k * 17) % 900 + 100) as f64 / 100.0
                };
                (*id, vec![Sample::new(1_700_000_000_000 + k * 15_000, v)])
            })
            .collect()
    }

    /// A record skipped on replay (damaged) leaves a gap in the indexes:
    /// what comes after decodes where it does not depend on it, every
    /// sample decoded is the one written, the others are counted as lost,
    /// within a keyframe interval every series but those the lost record
    /// declared is back, and nothing is refused as corrupt.
    #[test]
    fn a_lost_record_loses_a_bounded_number_of_samples_and_no_wrong_ones() {
        let ids: Vec<SeriesId> = (0..64u128).map(|i| SeriesId(i * 101 + 5)).collect();
        let mut enc = Encoder::new(Compression::Zstd(1));
        let mut written = Vec::new();
        for k in 0..80i64 {
            // Series 48.. are first used in record 10, the one lost.
            let upto = if k < 10 { 48 } else { 64 };
            let w = Write {
                samples: scrape(&ids[..upto], k),
                ..write_of("t", &[], &[], false, 0, 0)
            };
            let mut p = Vec::new();
            let pos = RecordPos {
                segment: 3,
                index: k as u64,
            };
            w.with(|parts| enc.encode(pos, parts, &mut p)).unwrap();
            written.push((p, w));
        }
        let mut dec = Decoder::default();
        let mut lost = 0;
        for (k, (p, w)) in written.iter().enumerate() {
            if k == 10 {
                continue;
            }
            let rec = dec.decode(3, p).unwrap();
            lost += rec.lost_samples;
            let want: IdMap<Vec<(i64, u64)>> = w.with(flat_parts).2.into_iter().collect();
            let got = flat_record(&rec).2;
            for (id, s) in &got {
                assert_eq!(Some(s), want.get(id), "record {k}");
            }
            if k >= 10 + 2 * KEYFRAME as usize {
                assert_eq!(got.len(), 48, "record {k}");
            }
            if k < 10 {
                assert_eq!(rec.lost_samples, 0);
            }
        }
        // Series 48..64 for the rest of the segment, and at most a keyframe
        // interval of each of the others.
        assert!(lost >= 16 * 69, "{lost}");
        assert!(lost <= 16 * 69 + 48 * KEYFRAME as u64, "{lost}");
    }

    /// The same bytes in a new segment decode on their own: each segment's
    /// table starts empty, and a record referring to refs its segment
    /// never declared is refused as corrupt.
    #[test]
    fn each_segment_decodes_on_its_own() {
        let ids: Vec<SeriesId> = (0..8u128).map(|i| SeriesId(i + 1)).collect();
        let mut enc = Encoder::new(Compression::None);
        let mut recs = Vec::new();
        for k in 0..3u64 {
            let w = Write {
                samples: scrape(&ids, k as i64),
                ..write_of("t", &[], &[], false, 0, 0)
            };
            let mut p = Vec::new();
            let pos = RecordPos {
                segment: 7,
                index: k,
            };
            w.with(|parts| enc.encode(pos, parts, &mut p)).unwrap();
            recs.push(p);
        }
        let mut dec = Decoder::default();
        dec.decode(7, &recs[0]).unwrap();
        dec.decode(7, &recs[1]).unwrap();
        // Record 2 alone in another segment: index 2 without 0 and 1 is a
        // gap, so its samples are lost, not wrong.
        let rec = dec.decode(8, &recs[2]).unwrap();
        assert!(rec.samples.is_empty() && rec.lost_samples == 8);
        // The same record twice in its segment is refused.
        let mut dec = Decoder::default();
        for p in &recs {
            dec.decode(7, p).unwrap();
        }
        assert!(dec.decode(7, &recs[2]).is_err());
        // A ref never declared, with no gap before it, is corruption.
        let mut p = vec![VERSION_2, 0, 0, 0, 0];
        put_bytes(&mut p, b"t");
        p.extend_from_slice(&[0, 0, 1, 0, 1, 9, 0, 0, 0]);
        let e = Decoder::default().decode(1, &p).err().expect("undeclared");
        assert!(e.to_string().contains("never declared"), "{e}");
    }
}
