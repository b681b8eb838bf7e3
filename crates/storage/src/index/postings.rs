//! Postings values: ascending refs as uvarint deltas, and the merge
//! operator that appends to them. Pure (no RocksDB access but the operator's
//! signature).

use super::keys::hex;
use crate::enc::put_uvarint;
use crate::error::{Error, Result};
use rocksdb::MergeOperands;

/// Appends refs (ascending, distinct) as uvarint deltas, the first from 0.
pub(super) fn encode_refs(out: &mut Vec<u8>, refs: &[u64]) {
    let mut prev = 0;
    for &r in refs {
        put_uvarint(out, r - prev);
        prev = r;
    }
}

/// Decodes a postings value; `None` when malformed.
fn decode_refs_into(buf: &[u8], out: &mut Vec<u64>) -> Option<()> {
    let mut prev = 0u64;
    let mut v = 0u64;
    let mut shift = 0u32;
    for &b in buf {
        if shift >= 64 {
            return None;
        }
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            prev = prev.checked_add(v)?;
            out.push(prev);
            v = 0;
            shift = 0;
        } else {
            shift += 7;
        }
    }
    (shift == 0).then_some(())
}

/// How many refs a postings value of `key` holds, without building the
/// list (the same checks as [`decode_refs`]: whole varints, no overflow).
pub(super) fn count_refs(key: &[u8], buf: &[u8]) -> Result<usize> {
    let (mut n, mut prev, mut v, mut shift) = (0usize, 0u64, 0u64, 0u32);
    let mut ok = true;
    for &b in buf {
        if shift >= 64 {
            ok = false;
            break;
        }
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            match prev.checked_add(v) {
                Some(p) => prev = p,
                None => {
                    ok = false;
                    break;
                }
            }
            n += 1;
            v = 0;
            shift = 0;
        } else {
            shift += 7;
        }
    }
    if !ok || shift != 0 {
        return Err(Error::Corrupt(format!(
            "index postings value of key {} ({} bytes): not ascending uvarint deltas",
            hex(key),
            buf.len()
        )));
    }
    Ok(n)
}

/// A postings value of `key`, decoded.
pub(super) fn decode_refs(key: &[u8], buf: &[u8]) -> Result<Vec<u64>> {
    let mut out = Vec::with_capacity(buf.len());
    decode_refs_into(buf, &mut out).ok_or_else(|| {
        Error::Corrupt(format!(
            "index postings value of key {} ({} bytes): not ascending uvarint deltas",
            hex(key),
            buf.len()
        ))
    })?;
    Ok(out)
}

/// First and last ref of an encoded list and the byte length of the first
/// varint; `None` when empty or malformed.
fn refs_bounds(buf: &[u8]) -> Option<(u64, u64, usize)> {
    let mut first = None;
    let mut prev = 0u64;
    let mut v = 0u64;
    let mut shift = 0u32;
    for (i, &b) in buf.iter().enumerate() {
        if shift >= 64 {
            return None;
        }
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            prev = prev.checked_add(v)?;
            if first.is_none() {
                first = Some((prev, i + 1));
            }
            v = 0;
            shift = 0;
        } else {
            shift += 7;
        }
    }
    if shift != 0 {
        return None;
    }
    first.map(|(f, len)| (f, prev, len))
}

/// The postings merge operator: the union of ascending ref lists. Refs are
/// assigned in increasing order, so an operand nearly always starts after the
/// end of what precedes it and is appended without decoding into a list.
pub(super) fn merge_postings(
    _key: &[u8],
    existing: Option<&[u8]>,
    operands: &MergeOperands,
) -> Option<Vec<u8>> {
    let mut parts: Vec<&[u8]> = Vec::with_capacity(operands.len() + 1);
    parts.extend(existing);
    parts.extend(operands.iter());
    merge_parts(&parts)
}

/// [`merge_postings`] over the existing value and the operands, in order.
fn merge_parts(parts: &[&[u8]]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(parts.iter().map(|p| p.len()).sum());
    let mut last: Option<u64> = None;
    for (i, part) in parts.iter().enumerate() {
        let Some((first, end, first_len)) = refs_bounds(part) else {
            if part.is_empty() {
                continue;
            }
            return None;
        };
        match last {
            None => out.extend_from_slice(part),
            Some(l) if first > l => {
                put_uvarint(&mut out, first - l);
                out.extend_from_slice(&part[first_len..]);
            }
            Some(_) => return merge_postings_slow(&parts[i..], out),
        }
        last = Some(end);
    }
    Some(out)
}

fn merge_postings_slow(rest: &[&[u8]], done: Vec<u8>) -> Option<Vec<u8>> {
    let mut refs = Vec::new();
    decode_refs_into(&done, &mut refs)?;
    for part in rest {
        decode_refs_into(part, &mut refs)?;
    }
    refs.sort_unstable();
    refs.dedup();
    let mut out = Vec::with_capacity(done.len() + rest.iter().map(|p| p.len()).sum::<usize>());
    encode_refs(&mut out, &refs);
    Some(out)
}

/// Union of ascending ref lists.
pub(super) fn union_sorted(mut lists: Vec<Vec<u64>>) -> Vec<u64> {
    match lists.len() {
        0 => Vec::new(),
        1 => lists.pop().unwrap_or_default(),
        _ => {
            let mut all: Vec<u64> = Vec::with_capacity(lists.iter().map(Vec::len).sum());
            for l in &lists {
                all.extend_from_slice(l);
            }
            all.sort_unstable();
            all.dedup();
            all
        }
    }
}

/// Intersection of two ascending ref lists (`small` the shorter).
pub(super) fn intersect_sorted(small: &[u64], large: &[u64]) -> Vec<u64> {
    let mut out = Vec::with_capacity(small.len());
    if small.len() * 16 < large.len() {
        let mut rest = large;
        for &r in small {
            match rest.binary_search(&r) {
                Ok(i) => {
                    out.push(r);
                    rest = &rest[i + 1..];
                }
                Err(i) => rest = &rest[i..],
            }
        }
    } else {
        let (mut i, mut j) = (0, 0);
        while i < small.len() && j < large.len() {
            match small[i].cmp(&large[j]) {
                std::cmp::Ordering::Less => i += 1,
                std::cmp::Ordering::Greater => j += 1,
                std::cmp::Ordering::Equal => {
                    out.push(small[i]);
                    i += 1;
                    j += 1;
                }
            }
        }
    }
    out
}
/// Fuzzing: `parts` as postings values (existing value and merge operands).
/// Decoding and bounds must agree; merging lists that are ascending and
/// distinct gives their sorted union.
pub(crate) fn fuzz_postings(parts: &[&[u8]]) {
    let mut lists = Vec::with_capacity(parts.len());
    for p in parts {
        let decoded = decode_refs(b"p", p).ok();
        assert_eq!(
            count_refs(b"p", p).ok(),
            decoded.as_ref().map(Vec::len),
            "counting and decoding agree"
        );
        let bounds = refs_bounds(p);
        match &decoded {
            Some(l) if !l.is_empty() => {
                let (first, last, _) = bounds.expect("bounds of a decodable list");
                assert_eq!((first, last), (l[0], l[l.len() - 1]));
            }
            _ => assert!(bounds.is_none(), "bounds of an empty or bad list"),
        }
        lists.push(decoded);
    }
    let merged = merge_parts(parts);
    let all_good = lists.iter().all(|l| {
        l.as_ref()
            .is_some_and(|l| l.windows(2).all(|w| w[0] < w[1]))
    });
    if !all_good {
        return;
    }
    let want = union_sorted(lists.into_iter().flatten().collect());
    let merged = merged.expect("merging valid postings");
    assert_eq!(
        decode_refs(b"p", &merged).ok(),
        Some(want),
        "merged postings"
    );
}
