//! Index keys: their layout (one RocksDB column family, each kind under its
//! own first byte) and their decoding. A key that does not have its kind's
//! shape is an error naming the key, never a default value.

use crate::error::{Error, Result};
use cairn_common::SeriesId;

/// The id lookup key holds only the id's first 8 bytes (the id is a uniform
/// hash); its value lists the refs of every series sharing them.
pub(super) fn id_key(id: SeriesId) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = b'i';
    k[1..].copy_from_slice(&id.to_be_bytes()[..8]);
    k
}

/// The layout version key; absent in the first ref layout, which keyed
/// `i` by the whole id.
pub(super) const VERSION_KEY: &[u8] = b"v";
pub(super) const VERSION: &[u8] = b"2";

pub(super) fn ref_key(r: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = b'r';
    k[1..].copy_from_slice(&r.to_be_bytes());
    k
}

pub(super) fn postings_prefix(tenant: &str, name: &str, value: Option<&str>) -> Vec<u8> {
    let mut k = Vec::with_capacity(3 + tenant.len() + name.len() + value.map_or(0, str::len) + 1);
    k.push(b'p');
    k.extend_from_slice(tenant.as_bytes());
    k.push(0);
    k.extend_from_slice(name.as_bytes());
    k.push(0);
    if let Some(v) = value {
        k.extend_from_slice(v.as_bytes());
        k.push(0);
    }
    k
}

/// The smallest key after every key starting with `prefix`.
pub(super) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0xff; 32]
}

pub(super) fn ts_key(t: i64) -> [u8; 8] {
    ((t as u64) ^ (1 << 63)).to_be_bytes()
}

pub(super) fn metadata_key(tenant: &str, metric: &str) -> Vec<u8> {
    let mut k = vec![b'm'];
    k.extend_from_slice(tenant.as_bytes());
    k.push(0);
    k.extend_from_slice(metric.as_bytes());
    k
}

/// `key` in hex (at most its first 64 bytes), for errors and logs.
pub(super) fn hex(key: &[u8]) -> String {
    let mut s: String = key.iter().take(64).map(|b| format!("{b:02x}")).collect();
    if key.len() > 64 {
        s.push('…');
    }
    s
}

fn corrupt(what: &str, key: &[u8], why: impl std::fmt::Display) -> Error {
    Error::Corrupt(format!("index {what} key {}: {why}", hex(key)))
}

/// The ref of a registry key (`r` ref(8)).
pub(super) fn ref_of_key(key: &[u8]) -> Result<u64> {
    match key {
        [b'r', rest @ ..] => {
            let r: [u8; 8] = rest.try_into().map_err(|_| {
                corrupt(
                    "series registry",
                    key,
                    format_args!("{} bytes, a ref key has 9", key.len()),
                )
            })?;
            Ok(u64::from_be_bytes(r))
        }
        _ => Err(corrupt("series registry", key, "does not start with `r`")),
    }
}

/// The time of an exemplar key (`e` id(16) t(8)).
pub(super) fn exemplar_time(key: &[u8]) -> Result<i64> {
    let t: [u8; 8] = key
        .get(17..)
        .filter(|_| key.first() == Some(&b'e'))
        .and_then(|t| t.try_into().ok())
        .ok_or_else(|| {
            corrupt(
                "exemplar",
                key,
                format_args!("{} bytes, an exemplar key has 25", key.len()),
            )
        })?;
    Ok((u64::from_be_bytes(t) ^ (1 << 63)) as i64)
}

/// The UTF-8 text of `part`, a piece of `key` (a label name or value, a
/// metric name) that starts at byte `at`.
pub(super) fn key_text<'a>(what: &str, key: &[u8], at: usize, part: &'a [u8]) -> Result<&'a str> {
    std::str::from_utf8(part).map_err(|e| {
        corrupt(
            what,
            key,
            format_args!("not UTF-8 at byte {}", at + e.valid_up_to()),
        )
    })
}

/// The value of a postings key `p tenant 0 name 0 value 0`, whose prefix up
/// to the value is `prefix_len` bytes.
pub(super) fn postings_value(key: &[u8], prefix_len: usize) -> Result<&str> {
    let part = key
        .get(prefix_len..)
        .and_then(|rest| rest.strip_suffix(&[0]))
        .ok_or_else(|| corrupt("postings", key, "no terminator after the label value"))?;
    key_text("postings", key, prefix_len, part)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key of the wrong shape is an error that names the key, never a
    /// default ref, time or text.
    #[test]
    fn corrupt_keys_are_errors_naming_the_key() {
        assert_eq!(ref_of_key(&ref_key(7)).unwrap(), 7);
        let e = ref_of_key(b"r\x01\x02").unwrap_err().to_string();
        assert!(
            e.contains("series registry key 720102") && e.contains("3 bytes"),
            "{e}"
        );
        assert!(ref_of_key(b"x12345678").is_err());

        let mut k = vec![b'e'];
        k.extend_from_slice(&SeriesId(5).to_be_bytes());
        k.extend_from_slice(&ts_key(-42));
        assert_eq!(exemplar_time(&k).unwrap(), -42);
        let e = exemplar_time(&k[..20]).unwrap_err().to_string();
        assert!(
            e.contains("exemplar key 65") && e.contains("20 bytes"),
            "{e}"
        );

        let p = postings_prefix("t", "job", None);
        let mut k = postings_prefix("t", "job", Some("api"));
        assert_eq!(postings_value(&k, p.len()).unwrap(), "api");
        k.pop();
        let e = postings_value(&k, p.len()).unwrap_err().to_string();
        assert!(
            e.contains("postings key") && e.contains("terminator"),
            "{e}"
        );
        let mut k = p.clone();
        k.extend_from_slice(&[b'a', 0xff, 0]);
        let e = postings_value(&k, p.len()).unwrap_err().to_string();
        assert!(
            e.contains(&format!("not UTF-8 at byte {}", p.len() + 1)),
            "{e}"
        );
    }
}
