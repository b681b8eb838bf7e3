//! Small binary encoding helpers shared by the commit log, the index and the
//! filesets: LEB128 varints, zig-zag, length-prefixed strings.
//!
//! Label sets are encoded and decoded within the same bounds
//! ([`cairn_common::limits::hard`]): [`put_labels`] refuses what
//! [`Reader::labels`] would refuse, so whatever was written reads back.

use crate::{Error, Result};
use cairn_common::limits::{hard, truncate_lossy};
use cairn_common::{Label, Labels};

pub fn put_uvarint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

pub fn put_varint(buf: &mut Vec<u8>, v: i64) {
    put_uvarint(buf, ((v << 1) ^ (v >> 63)) as u64);
}

pub fn put_bytes(buf: &mut Vec<u8>, b: &[u8]) {
    put_uvarint(buf, b.len() as u64);
    buf.extend_from_slice(b);
}

/// Why a label set cannot be stored (`None` when it can): more than
/// [`hard::MAX_LABELS`] labels, a name or value above its byte bound, or
/// names not strictly ascending (unsorted or repeated). Exactly what
/// [`Reader::labels`] refuses, phrased for the writer.
pub fn labels_unstorable<'a>(
    mut pairs: impl Iterator<Item = (&'a str, &'a str)>,
) -> Option<String> {
    let mut prev: Option<&str> = None;
    let mut count = 0usize;
    for (n, v) in pairs.by_ref() {
        count += 1;
        if count > hard::MAX_LABELS {
            break;
        }
        if n.len() > hard::MAX_LABEL_NAME_BYTES {
            return Some(format!(
                "label name {:?} is {} bytes, above the storage bound of {}",
                truncate_lossy(n.as_bytes(), 64),
                n.len(),
                hard::MAX_LABEL_NAME_BYTES
            ));
        }
        if v.len() > hard::MAX_LABEL_VALUE_BYTES {
            return Some(format!(
                "value of label {:?} is {} bytes, above the storage bound of {}",
                truncate_lossy(n.as_bytes(), 64),
                v.len(),
                hard::MAX_LABEL_VALUE_BYTES
            ));
        }
        if prev.is_some_and(|p| p >= n) {
            return Some(format!(
                "label names not sorted and distinct at {:?}",
                truncate_lossy(n.as_bytes(), 64)
            ));
        }
        prev = Some(n);
    }
    (count > hard::MAX_LABELS).then(|| {
        format!(
            "{} labels, above the storage bound of {}",
            count + pairs.count(),
            hard::MAX_LABELS
        )
    })
}

/// Encodes a label set; `Invalid` (nothing appended) when
/// [`labels_unstorable`] says it could not be decoded again.
pub fn put_labels(buf: &mut Vec<u8>, labels: &Labels) -> Result<()> {
    let pairs = labels.iter().map(|l| (l.name.as_str(), l.value.as_str()));
    if let Some(why) = labels_unstorable(pairs) {
        return Err(Error::Invalid(why));
    }
    put_uvarint(buf, labels.len() as u64);
    for l in labels {
        put_bytes(buf, l.name.as_bytes());
        put_bytes(buf, l.value.as_bytes());
    }
    Ok(())
}

/// A read cursor over a byte slice; every read is bounds-checked and a short
/// or malformed input is a `Corrupt` error naming `what`.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8], what: &'static str) -> Self {
        Self { buf, pos: 0, what }
    }

    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    fn corrupt(&self, msg: &str) -> Error {
        Error::Corrupt(format!("{}: {} at byte {}", self.what, msg, self.pos))
    }

    pub fn u8(&mut self) -> Result<u8> {
        let b = *self
            .buf
            .get(self.pos)
            .ok_or_else(|| self.corrupt("unexpected end"))?;
        self.pos += 1;
        Ok(b)
    }

    pub fn uvarint(&mut self) -> Result<u64> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(self.corrupt("varint too long"))
    }

    pub fn varint(&mut self) -> Result<i64> {
        let u = self.uvarint()?;
        Ok(((u >> 1) as i64) ^ -((u & 1) as i64))
    }

    pub fn fixed<const N: usize>(&mut self) -> Result<[u8; N]> {
        let end = self.pos.checked_add(N).filter(|&e| e <= self.buf.len());
        let end = end.ok_or_else(|| self.corrupt("unexpected end"))?;
        let mut out = [0u8; N];
        out.copy_from_slice(&self.buf[self.pos..end]);
        self.pos = end;
        Ok(out)
    }

    pub fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.fixed::<8>()?))
    }

    pub fn bytes(&mut self) -> Result<&'a [u8]> {
        let n = self.uvarint()? as usize;
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        let end = end.ok_or_else(|| self.corrupt("length beyond end"))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    pub fn string(&mut self) -> Result<String> {
        let b = self.bytes()?;
        String::from_utf8(b.to_vec()).map_err(|_| self.corrupt("invalid UTF-8"))
    }

    /// A string of at most `max` bytes.
    fn bounded_string(&mut self, max: usize, what: &str) -> Result<String> {
        let b = self.bytes()?;
        if b.len() > max {
            return Err(self.corrupt(&format!("{what} of {} bytes out of range", b.len())));
        }
        String::from_utf8(b.to_vec()).map_err(|_| self.corrupt("invalid UTF-8"))
    }

    /// A label set within the [`hard`] bounds, names strictly ascending.
    pub fn labels(&mut self) -> Result<Labels> {
        let n = self.uvarint()?;
        if n > hard::MAX_LABELS as u64 {
            return Err(self.corrupt("label count out of range"));
        }
        let n = n as usize;
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            let name = self.bounded_string(hard::MAX_LABEL_NAME_BYTES, "label name")?;
            let value = self.bounded_string(hard::MAX_LABEL_VALUE_BYTES, "label value")?;
            v.push(Label { name, value });
        }
        if !v.windows(2).all(|w| w[0].name < w[1].name) {
            return Err(self.corrupt("labels not sorted"));
        }
        Ok(Labels::from_sorted_unchecked(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn varints_round_trip(u in any::<u64>(), i in any::<i64>()) {
            let mut b = Vec::new();
            put_uvarint(&mut b, u);
            put_varint(&mut b, i);
            let mut r = Reader::new(&b, "test");
            prop_assert_eq!(r.uvarint().unwrap(), u);
            prop_assert_eq!(r.varint().unwrap(), i);
            prop_assert!(r.is_empty());
        }

        #[test]
        fn garbage_never_panics(b in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut r = Reader::new(&b, "test");
            let _ = r.labels();
        }
    }
}
