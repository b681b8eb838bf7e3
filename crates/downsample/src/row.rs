//! The bytes of a closed window, as stored in an aggregated namespace.
//!
//! Key (32 bytes, sorts by series, then resolution, then time):
//! `series id (16, BE) | resolution ms (8, BE) | window start (8, BE, sign
//! bit flipped)`.
//!
//! Value (version 1): `version | flags` then, when flag `VALUES` is set,
//! `count (varint) | sum | min | max (f64 LE bits) | first offset (varint) |
//! first value | last offset | last value | reset_sum | resets (varint)` and,
//! with `PREV`, `prev_raw`; then, with `STALE`, the marker's offset. Offsets
//! are from the window start. Floats travel as their bits, so NaN payloads
//! survive and the same window always gives the same bytes: two replicas or a
//! replay write identical rows, and an upsert of a recomputed window is
//! idempotent. Decoding accepts only what encoding produces (canonical
//! varints, no unknown flags, no trailing bytes), so decode ∘ encode is the
//! identity on bytes too.

use cairn_common::{is_stale_nan, Sample, SeriesId, Timestamp};

use crate::error::{Error, Result};
use crate::window::{Aggregate, Window};

/// Length of a row key.
pub const KEY_LEN: usize = 32;
/// The value layout this build writes (and the only one it reads).
pub const ROW_VERSION: u8 = 1;

const VALUES: u8 = 0x01;
const PREV: u8 = 0x02;
const STALE: u8 = 0x04;

/// One series' window at one resolution, ready to upsert.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Row {
    pub series: SeriesId,
    pub window: Window,
}

impl Row {
    /// The key the row is upserted under.
    pub fn key(&self) -> [u8; KEY_LEN] {
        let mut k = [0u8; KEY_LEN];
        k[..16].copy_from_slice(&self.series.to_be_bytes());
        k[16..24].copy_from_slice(&(self.window.resolution_ms as u64).to_be_bytes());
        k[24..].copy_from_slice(&((self.window.start as u64) ^ (1 << 63)).to_be_bytes());
        k
    }

    /// The row's value bytes.
    pub fn value(&self) -> Vec<u8> {
        let w = &self.window;
        let mut out = Vec::with_capacity(96);
        let mut flags = 0;
        if let Some(a) = &w.agg {
            flags |= VALUES;
            if a.prev_raw.is_some() {
                flags |= PREV;
            }
        }
        if w.stale_at.is_some() {
            flags |= STALE;
        }
        out.push(ROW_VERSION);
        out.push(flags);
        if let Some(a) = &w.agg {
            put_varint(&mut out, a.count);
            for f in [a.sum, a.min, a.max] {
                out.extend_from_slice(&f.to_bits().to_le_bytes());
            }
            for s in [a.first, a.last] {
                put_varint(&mut out, s.t.wrapping_sub(w.start) as u64);
                out.extend_from_slice(&s.v.to_bits().to_le_bytes());
            }
            out.extend_from_slice(&a.reset_sum.to_bits().to_le_bytes());
            put_varint(&mut out, a.resets);
            if let Some(p) = a.prev_raw {
                out.extend_from_slice(&p.to_bits().to_le_bytes());
            }
        }
        if let Some(t) = w.stale_at {
            put_varint(&mut out, t.wrapping_sub(w.start) as u64);
        }
        out
    }

    /// Decodes a key and value written by [`Row::key`] and [`Row::value`];
    /// the error names the field that is wrong. Never panics.
    pub fn decode(key: &[u8], value: &[u8]) -> Result<Row> {
        let (series, resolution_ms, start) = decode_key(key)?;
        let mut r = Reader { buf: value, pos: 0 };
        let version = r.byte("version")?;
        if version != ROW_VERSION {
            return Err(Error::decode(format!("unknown row version {version}")));
        }
        let flags = r.byte("flags")?;
        if flags & !(VALUES | PREV | STALE) != 0 {
            return Err(Error::decode(format!("unknown flag bits {flags:#04x}")));
        }
        if flags & PREV != 0 && flags & VALUES == 0 {
            return Err(Error::decode(
                "previous value flagged on a row without values",
            ));
        }
        if flags & (VALUES | STALE) == 0 {
            return Err(Error::decode(
                "row holds neither values nor a staleness marker",
            ));
        }
        let offset = |r: &mut Reader<'_>, what: &str| -> Result<Timestamp> {
            let off = r.varint(what)?;
            if off >= resolution_ms as u64 {
                return Err(Error::decode(format!(
                    "{what} offset {off} is outside the {resolution_ms} ms window"
                )));
            }
            // off < resolution_ms, and start + resolution_ms fits (decode_key).
            Ok(start + off as i64)
        };
        let agg = if flags & VALUES != 0 {
            let count = r.varint("count")?;
            let sum = r.f64("sum")?;
            let min = r.f64("min")?;
            let max = r.f64("max")?;
            let first = Sample::new(offset(&mut r, "first timestamp")?, r.f64("first value")?);
            let last = Sample::new(offset(&mut r, "last timestamp")?, r.f64("last value")?);
            let reset_sum = r.f64("reset sum")?;
            let resets = r.varint("resets")?;
            let prev_raw = if flags & PREV != 0 {
                Some(r.f64("previous value")?)
            } else {
                None
            };
            check_aggregate(count, first, last, resets)?;
            Some(Aggregate {
                count,
                sum,
                min,
                max,
                first,
                last,
                reset_sum,
                resets,
                prev_raw,
            })
        } else {
            None
        };
        let stale_at = if flags & STALE != 0 {
            let t = offset(&mut r, "staleness marker")?;
            if let Some(a) = &agg {
                if t <= a.last.t {
                    return Err(Error::decode(format!(
                        "staleness marker at {t} is not after the last value at {}",
                        a.last.t
                    )));
                }
            }
            Some(t)
        } else {
            None
        };
        if r.pos != value.len() {
            return Err(Error::decode(format!(
                "{} trailing bytes after the row",
                value.len() - r.pos
            )));
        }
        Ok(Row {
            series,
            window: Window {
                start,
                resolution_ms,
                agg,
                stale_at,
            },
        })
    }
}

/// The (series, resolution ms, window start) of a row key.
pub fn decode_key(key: &[u8]) -> Result<(SeriesId, i64, Timestamp)> {
    let key: &[u8; KEY_LEN] = key
        .try_into()
        .map_err(|_| Error::decode(format!("key is {} bytes, not {KEY_LEN}", key.len())))?;
    let mut id = [0u8; 16];
    id.copy_from_slice(&key[..16]);
    let mut res = [0u8; 8];
    res.copy_from_slice(&key[16..24]);
    let mut st = [0u8; 8];
    st.copy_from_slice(&key[24..]);
    let resolution = u64::from_be_bytes(res);
    if resolution == 0 || resolution > i64::MAX as u64 || resolution % 1000 != 0 {
        return Err(Error::decode(format!(
            "key resolution {resolution} ms is not a positive whole number of seconds"
        )));
    }
    let resolution_ms = resolution as i64;
    let start = (u64::from_be_bytes(st) ^ (1 << 63)) as i64;
    if start.rem_euclid(resolution_ms) != 0 || start.checked_add(resolution_ms).is_none() {
        return Err(Error::decode(format!(
            "key window start {start} is not a {resolution_ms} ms window edge"
        )));
    }
    Ok((SeriesId::from_be_bytes(id), resolution_ms, start))
}

/// The invariants every built aggregate holds.
fn check_aggregate(count: u64, first: Sample, last: Sample, resets: u64) -> Result<()> {
    if count == 0 {
        return Err(Error::decode("count is 0 on a row with values"));
    }
    if is_stale_nan(first.v) || is_stale_nan(last.v) {
        return Err(Error::decode("first or last value is a staleness marker"));
    }
    let ordered = if count == 1 {
        first.t == last.t && first.v.to_bits() == last.v.to_bits()
    } else {
        first.t < last.t
    };
    if !ordered {
        return Err(Error::decode(format!(
            "first value at {} and last at {} do not fit a count of {count}",
            first.t, last.t
        )));
    }
    if resets >= count {
        return Err(Error::decode(format!(
            "{resets} resets inside a window of {count} values"
        )));
    }
    Ok(())
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn truncated(&self, what: &str) -> Error {
        Error::decode(format!(
            "value truncated reading {what} at byte {}",
            self.pos
        ))
    }

    fn byte(&mut self, what: &str) -> Result<u8> {
        let b = *self.buf.get(self.pos).ok_or_else(|| self.truncated(what))?;
        self.pos += 1;
        Ok(b)
    }

    fn f64(&mut self, what: &str) -> Result<f64> {
        let bytes = self
            .buf
            .get(self.pos..self.pos + 8)
            .ok_or_else(|| self.truncated(what))?;
        let mut b = [0u8; 8];
        b.copy_from_slice(bytes);
        self.pos += 8;
        Ok(f64::from_bits(u64::from_le_bytes(b)))
    }

    /// A LEB128 varint in its shortest form only.
    fn varint(&mut self, what: &str) -> Result<u64> {
        let at = self.pos;
        let mut v: u64 = 0;
        for i in 0..10 {
            let b = self.byte(what)?;
            let bits = u64::from(b & 0x7f);
            if i == 9 && b > 1 {
                return Err(Error::decode(format!(
                    "{what} varint at byte {at} overflows u64"
                )));
            }
            v |= bits << (7 * i);
            if b & 0x80 == 0 {
                if i > 0 && b == 0 {
                    return Err(Error::decode(format!(
                        "{what} varint at byte {at} is not minimal"
                    )));
                }
                return Ok(v);
            }
        }
        Err(Error::decode(format!(
            "{what} varint at byte {at} is longer than 10 bytes"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_common::stale_nan;

    const R: i64 = 300_000;

    fn row(start: i64, samples: &[Sample], prev: Option<f64>) -> Row {
        Row {
            series: SeriesId(0x0123_4567_89ab_cdef_0011_2233_4455_6677),
            window: Window::from_samples(start, R, samples, prev)
                .unwrap()
                .unwrap(),
        }
    }

    fn examples() -> Vec<Row> {
        let s = Sample::new;
        vec![
            row(0, &[s(0, 1.0)], None),
            row(
                R,
                &[s(R + 1, 4.0), s(R + 200, 2.5), s(2 * R - 1, 9.0)],
                Some(3.0),
            ),
            row(-R, &[s(-R, f64::NAN), s(-5, stale_nan())], None),
            row(7 * R, &[s(7 * R + 9, stale_nan())], None),
            row(
                1_700_000_100_000,
                &[s(1_700_000_100_000, -0.0), s(1_700_000_100_001, f64::MAX)],
                Some(1e300),
            ),
        ]
    }

    #[test]
    fn rows_round_trip_bit_exactly_and_keys_sort_by_time() {
        let rows = examples();
        for r in &rows {
            let (k, v) = (r.key(), r.value());
            let back = Row::decode(&k, &v).unwrap();
            assert_eq!((back.key(), back.value()), (k, v.clone()), "{r:?}");
            assert_eq!(back.series, r.series);
            assert_eq!(back.window.start, r.window.start);
            assert_eq!(back.window.stale_at, r.window.stale_at);
        }
        let mut keys: Vec<_> = rows.iter().map(|r| (r.key(), r.window.start)).collect();
        keys.sort();
        let starts: Vec<i64> = keys.iter().map(|k| k.1).collect();
        let mut sorted = starts.clone();
        sorted.sort();
        assert_eq!(
            starts, sorted,
            "key order is time order, negative times included"
        );
    }

    #[test]
    fn the_same_window_gives_the_same_bytes() {
        let s = Sample::new;
        let a = row(R, &[s(R, 1.0), s(R + 5, 2.0)], Some(0.5));
        let b = row(R, &[s(R, 1.0), s(R + 5, 2.0)], Some(0.5));
        assert_eq!((a.key(), a.value()), (b.key(), b.value()));
        let c = row(R, &[s(R, 1.0), s(R + 5, 2.0)], Some(0.25));
        assert_ne!(a.value(), c.value(), "the carried value is part of the row");
    }

    #[test]
    fn bad_rows_are_named() {
        let r = examples()[1];
        let (k, v) = (r.key(), r.value());
        let err = |key: &[u8], value: &[u8]| Row::decode(key, value).unwrap_err().to_string();
        assert!(err(&k[..31], &v).contains("key is 31 bytes"));
        let mut bad_key = k;
        bad_key[31] ^= 1;
        assert!(err(&bad_key, &v).contains("not a 300000 ms window edge"));
        let mut bad_key = k;
        bad_key[16..24].copy_from_slice(&0u64.to_be_bytes());
        assert!(err(&bad_key, &v).contains("key resolution 0 ms"));
        let mut b = v.clone();
        b[0] = 9;
        assert!(err(&k, &b).contains("unknown row version 9"));
        let mut b = v.clone();
        b[1] |= 0x40;
        assert!(err(&k, &b).contains("unknown flag bits"));
        assert!(err(&k, &v[..10]).contains("truncated reading"));
        let mut b = v.clone();
        b.push(0);
        assert!(err(&k, &b).contains("1 trailing bytes"));
        assert!(err(&k, &[ROW_VERSION, 0]).contains("neither values nor"));
        assert!(err(&k, &[ROW_VERSION, PREV | STALE, 1]).contains("without values"));
        assert!(err(&k, &[ROW_VERSION, STALE, 0x80, 0x00]).contains("not minimal"));
        assert!(err(&k, &[ROW_VERSION, STALE, 0xff, 0xff, 0xff, 0x7f])
            .contains("outside the 300000 ms window"));
        let mut b = vec![ROW_VERSION, VALUES];
        put_varint(&mut b, 0);
        b.extend_from_slice(&v[3..]);
        assert!(err(&k, &b).contains("count is 0"));
    }

    /// Fuzz-style: garbage and mutated rows never panic, and whatever decodes
    /// re-encodes to the same bytes.
    #[test]
    fn garbled_bytes_never_panic_and_accepted_bytes_are_canonical() {
        let mut rng = crate::differential::Rng::new(0x5eed);
        let valid: Vec<(Vec<u8>, Vec<u8>)> = examples()
            .iter()
            .map(|r| (r.key().to_vec(), r.value()))
            .collect();
        let mut accepted = 0;
        for i in 0..50_000 {
            let (mut k, mut v) = valid[i % valid.len()].clone();
            match rng.below(4) {
                0 => {
                    v = (0..rng.below(64)).map(|_| rng.next() as u8).collect();
                    if rng.below(2) == 0 && !v.is_empty() {
                        v[0] = ROW_VERSION;
                    }
                }
                1 => v.truncate(rng.below(v.len() as u64 + 1) as usize),
                2 => {
                    for _ in 0..=rng.below(3) {
                        let at = rng.below(v.len() as u64) as usize;
                        v[at] ^= 1 << rng.below(8);
                    }
                }
                _ => {
                    let at = rng.below(KEY_LEN as u64) as usize;
                    k[at] ^= 1 << rng.below(8);
                }
            }
            if let Ok(r) = Row::decode(&k, &v) {
                accepted += 1;
                assert_eq!(
                    (r.key().to_vec(), r.value()),
                    (k, v),
                    "decoded bytes re-encode identically"
                );
            }
        }
        assert!(
            accepted > 100,
            "mutations inside floats still decode ({accepted})"
        );
    }
}
