//! Fuzzing entry point for what the HTTP layer parses itself, `match[]`
//! selectors (used by `fuzz/fuzz_targets/selector_parse.rs` and replayed
//! over the committed corpus by this module's test; the remote-read
//! decoder's target is `cairn_ingest::fuzzing::remote_read`). Not an API.

use cairn_common::Matcher;

/// A `match[]` selector: matchers or an error, never a panic; what parses
/// prints back (in `{name op "value", ...}` form) to the same matchers.
pub fn selector(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(ms) = cairn_common::parse_selector(s) else {
        return;
    };
    assert!(!ms.is_empty());
    assert!(ms.iter().any(|m| !m.matches_empty()));
    let printed = print_selector(&ms);
    let again = cairn_common::parse_selector(&printed)
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
    fn selector_parse_corpus() {
        replay("selector_parse", super::selector);
    }
}
