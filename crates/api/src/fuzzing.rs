//! Fuzzing entry points for what the HTTP layer decodes itself (used by
//! the targets in `fuzz/fuzz_targets/` and replayed over the committed
//! corpus by this module's tests). Not an API.

use axum::http::StatusCode;
use cairn_common::Matcher;

/// A remote-read body, as sent and snappy-framed, through the handler's
/// decoder: queries or a 4xx, never a panic; every decoded query has a
/// matcher that does not match the empty string.
pub fn remote_read(data: &[u8]) {
    let framed = snap::raw::Encoder::new()
        .compress_vec(data)
        .unwrap_or_default();
    for body in [data, framed.as_slice()] {
        match crate::query::decode_read_request(body, 1 << 24) {
            Ok(queries) => {
                for (ms, _, _) in &queries {
                    assert!(ms.iter().any(|m| !m.matches_empty()));
                }
            }
            Err((status, msg)) => {
                assert!(
                    status == StatusCode::BAD_REQUEST || status == StatusCode::PAYLOAD_TOO_LARGE,
                    "{status}: {msg}"
                );
            }
        }
    }
}

/// A `match[]` selector: matchers or an error, never a panic; what parses
/// prints back (in `{name op "value", ...}` form) to the same matchers.
pub fn selector(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(ms) = crate::parse_selector(s) else {
        return;
    };
    assert!(!ms.is_empty());
    assert!(ms.iter().any(|m| !m.matches_empty()));
    let printed = print_selector(&ms);
    let again = crate::parse_selector(&printed)
        .unwrap_or_else(|e| panic!("{s:?} printed as {printed:?} does not parse: {e}"));
    assert_eq!(again, ms, "{s:?} printed as {printed:?}");
}

fn print_selector(ms: &[Matcher]) -> String {
    let mut out = String::from("{");
    for (i, m) in ms.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(&m.name);
        out.push_str(m.op.as_str());
        out.push('"');
        for c in m.value.chars() {
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('"');
    }
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    fn replay(target: &str, f: impl Fn(&[u8])) {
        cairn_common::fuzz_replay::replay(env!("CARGO_MANIFEST_DIR"), target, f);
    }

    #[test]
    fn remote_read_decode_corpus() {
        replay("remote_read_decode", super::remote_read);
    }

    #[test]
    fn selector_parse_corpus() {
        replay("selector_parse", super::selector);
    }
}
