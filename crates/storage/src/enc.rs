//! Small binary encoding helpers shared by the commit-log records, the
//! index and the filesets: LEB128 varints, zig-zag, length-prefixed strings.
//!
//! Label sets: [`put_labels`] writes new data only within
//! [`cairn_common::limits::hard`]; [`Reader::labels`] reads more than that,
//! everything any release wrote (the one before those bounds wrote label
//! sets of any size), bounded only by the bytes it is given. So whatever
//! is written reads back, and data written before an upgrade still does.
//! Label sets read back and stored again (commit-log replay into the index)
//! are written with [`Bounds::Stored`].

use crate::error::{Error, Result};
use cairn_common::limits::{hard, truncate_lossy};
use cairn_common::{Label, Labels};

pub(crate) fn put_uvarint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

pub(crate) fn put_varint(buf: &mut Vec<u8>, v: i64) {
    put_uvarint(buf, ((v << 1) ^ (v >> 63)) as u64);
}

pub(crate) fn put_bytes(buf: &mut Vec<u8>, b: &[u8]) {
    put_uvarint(buf, b.len() as u64);
    buf.extend_from_slice(b);
}

/// Which label sets an encoder takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Bounds {
    /// New data (the write path): within [`hard`].
    Hard,
    /// Label sets already stored and read back (commit-log replay):
    /// anything [`Reader::labels`] accepts.
    Stored,
}

/// Why a new label set cannot be stored (`None` when it can): more than
/// [`hard::MAX_LABELS`] labels, a name or value above its byte bound, or
/// names not strictly ascending (unsorted or repeated). A subset of what
/// [`Reader::labels`] accepts.
pub(crate) fn labels_unstorable<'a>(
    pairs: impl Iterator<Item = (&'a str, &'a str)>,
) -> Option<String> {
    labels_beyond(pairs, Bounds::Hard)
}

fn labels_beyond<'a>(
    mut pairs: impl Iterator<Item = (&'a str, &'a str)>,
    bounds: Bounds,
) -> Option<String> {
    let hard = bounds == Bounds::Hard;
    let mut prev: Option<&str> = None;
    let mut count = 0usize;
    for (n, v) in pairs.by_ref() {
        count += 1;
        if hard && count > hard::MAX_LABELS {
            break;
        }
        if hard && n.len() > hard::MAX_LABEL_NAME_BYTES {
            return Some(format!(
                "label name {:?} is {} bytes, above the storage bound of {}",
                truncate_lossy(n.as_bytes(), 64),
                n.len(),
                hard::MAX_LABEL_NAME_BYTES
            ));
        }
        if hard && v.len() > hard::MAX_LABEL_VALUE_BYTES {
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
    (hard && count > hard::MAX_LABELS).then(|| {
        format!(
            "{} labels, above the storage bound of {}",
            count + pairs.count(),
            hard::MAX_LABELS
        )
    })
}

/// Encodes a new label set; `Invalid` (nothing appended) when
/// [`labels_unstorable`] refuses it.
pub(crate) fn put_labels(buf: &mut Vec<u8>, labels: &Labels) -> Result<()> {
    put_labels_within(buf, labels, Bounds::Hard)
}

/// Encodes a label set within `bounds`; `Invalid` (nothing appended)
/// beyond them.
pub(crate) fn put_labels_within(buf: &mut Vec<u8>, labels: &Labels, bounds: Bounds) -> Result<()> {
    let pairs = labels.iter().map(|l| (l.name.as_str(), l.value.as_str()));
    if let Some(why) = labels_beyond(pairs, bounds) {
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
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8], what: &'static str) -> Self {
        Self { buf, pos: 0, what }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    fn corrupt(&self, msg: &str) -> Error {
        Error::Corrupt(format!("{}: {} at byte {}", self.what, msg, self.pos))
    }

    /// Everything not read yet.
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        let rest = &self.buf[self.pos.min(self.buf.len())..];
        self.pos = self.buf.len();
        rest
    }

    pub(crate) fn u8(&mut self) -> Result<u8> {
        let b = *self
            .buf
            .get(self.pos)
            .ok_or_else(|| self.corrupt("unexpected end"))?;
        self.pos += 1;
        Ok(b)
    }

    pub(crate) fn uvarint(&mut self) -> Result<u64> {
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

    pub(crate) fn varint(&mut self) -> Result<i64> {
        let u = self.uvarint()?;
        Ok(((u >> 1) as i64) ^ -((u & 1) as i64))
    }

    pub(crate) fn fixed<const N: usize>(&mut self) -> Result<[u8; N]> {
        let end = self.pos.checked_add(N).filter(|&e| e <= self.buf.len());
        let end = end.ok_or_else(|| self.corrupt("unexpected end"))?;
        let mut out = [0u8; N];
        out.copy_from_slice(&self.buf[self.pos..end]);
        self.pos = end;
        Ok(out)
    }

    pub(crate) fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.fixed::<8>()?))
    }

    pub(crate) fn bytes(&mut self) -> Result<&'a [u8]> {
        let n = self.uvarint()? as usize;
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        let end = end.ok_or_else(|| self.corrupt("length beyond end"))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    pub(crate) fn string(&mut self) -> Result<String> {
        let b = self.bytes()?;
        String::from_utf8(b.to_vec()).map_err(|_| self.corrupt("invalid UTF-8"))
    }

    /// A label set, names strictly ascending. Its size is bounded only by
    /// the input (each label takes at least its two length bytes), not by
    /// [`hard`]: the release before those bounds wrote label sets of any
    /// size, and its decoder took up to 10,000 labels of any length.
    pub(crate) fn labels(&mut self) -> Result<Labels> {
        let n = self.uvarint()?;
        let left = (self.buf.len() - self.pos.min(self.buf.len())) as u64;
        if n > left / 2 {
            return Err(self.corrupt("label count beyond the end"));
        }
        let n = n as usize;
        // The count is checked against the input, not allocated on trust.
        let mut v = Vec::with_capacity(n.min(hard::MAX_LABELS));
        for _ in 0..n {
            let name = self.string()?;
            let value = self.string()?;
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
    use crate::enc;
    use crate::test_support::label_set;
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

        /// Label sets written unchecked, at and past the decoder limits of
        /// the release before the hard bounds (10,000 labels, any length),
        /// read back.
        #[test]
        fn labels_read_back_beyond_the_hard_bounds(
            n in prop_oneof![1 => Just(10_000usize), 1 => Just(hard::MAX_LABELS + 1), 2 => 0usize..8],
            long_name in any::<bool>(),
            long_value in any::<bool>(),
        ) {
            let v: Vec<Label> = (0..n)
                .map(|i| {
                    let big = i == 0;
                    let mut name = format!("{i:05}");
                    if big && long_name {
                        name.push_str(&"n".repeat(hard::MAX_LABEL_NAME_BYTES));
                    }
                    let value = if big && long_value {
                        "v".repeat(hard::MAX_LABEL_VALUE_BYTES + 1)
                    } else {
                        String::new()
                    };
                    Label { name, value }
                })
                .collect();
            let labels = Labels::from_sorted_unchecked(v);
            let mut b = Vec::new();
            put_labels_within(&mut b, &labels, Bounds::Stored).unwrap();
            let mut r = Reader::new(&b, "test");
            prop_assert_eq!(r.labels().unwrap(), labels);
            prop_assert!(r.is_empty());
        }

        #[test]
        fn garbage_never_panics(b in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut r = Reader::new(&b, "test");
            let _ = r.labels();
        }
    }

    /// Past the hard bounds the encoder refuses; the same bytes written
    /// unchecked (as the release before the bounds wrote them) still
    /// decode: the decoder's domain contains the encoder's. Unsorted or
    /// repeated names are refused by both.
    #[test]
    fn encoder_refuses_beyond_the_hard_bounds_and_the_decoder_reads_more() {
        let too_many = label_set(hard::MAX_LABELS + 1, &[6], &[1], "");
        let long_name = label_set(2, &[hard::MAX_LABEL_NAME_BYTES + 1], &[1], "");
        let long_value = label_set(2, &[6], &[hard::MAX_LABEL_VALUE_BYTES + 1], "");
        let pairs = |l: &Labels| {
            l.iter()
                .map(|x| (x.name.clone(), x.value.clone()))
                .collect::<Vec<_>>()
        };
        let mut cases = vec![pairs(&too_many), pairs(&long_name), pairs(&long_value)];
        // Unsorted and repeated names (Labels cannot even hold them).
        cases.push(vec![("b".into(), "1".into()), ("a".into(), "2".into())]);
        cases.push(vec![("a".into(), "1".into()), ("a".into(), "2".into())]);
        for (i, c) in cases.iter().enumerate() {
            let why = enc::labels_unstorable(c.iter().map(|(n, v)| (n.as_str(), v.as_str())));
            assert!(why.is_some(), "case {i}");
            if i < 3 {
                let l = Labels::from_sorted_unchecked(
                    c.iter()
                        .map(|(n, v)| Label::new(n.as_str(), v.as_str()))
                        .collect(),
                );
                let mut p = Vec::new();
                assert!(matches!(put_labels(&mut p, &l), Err(Error::Invalid(_))));
                assert!(p.is_empty());
            }
            // The same bytes written unchecked: read back when only too
            // large, refused when unsorted or repeated.
            let mut p = Vec::new();
            enc::put_uvarint(&mut p, c.len() as u64);
            for (n, v) in c {
                put_bytes(&mut p, n.as_bytes());
                put_bytes(&mut p, v.as_bytes());
            }
            let got = Reader::new(&p, "t").labels();
            if i < 3 {
                assert_eq!(pairs(&got.unwrap()), *c, "case {i}");
            } else {
                assert!(got.is_err(), "case {i}");
            }
        }
        let at_bound = label_set(hard::MAX_LABELS, &[hard::MAX_LABEL_NAME_BYTES], &[16], "");
        let mut p = Vec::new();
        put_labels(&mut p, &at_bound).unwrap();
        assert_eq!(Reader::new(&p, "t").labels().unwrap(), at_bound);
    }
}
