//! Bounds checked on a query before and right after parsing, so no query
//! text can overflow the stack (parser, evaluator and `Drop` of the tree all
//! recurse) or the time arithmetic of the evaluator.
//!
//! Before parsing, a linear scan of the text bounds its length and an upper
//! bound of the expression tree's depth: the deepest nesting of brackets plus
//! every operator (a chain `1+1+…` of n operators is a tree n deep). After
//! parsing, durations must fit Prometheus's (Go's `time.Duration`: ±292
//! years) and `@` times its API time range, which keeps every
//! `t - offset - range - step` the evaluator computes far inside `i64`.

use crate::value::QueryError;
use cairn_common::limits::hard::{MAX_TIME_MS, MIN_TIME_MS};
use promql_parser::parser::{AtModifier, Expr, Offset};
use std::time::Duration;

/// Go's largest `time.Duration`, in ms.
pub(crate) const MAX_DURATION_MS: u128 = (i64::MAX / 1_000_000) as u128;

/// Refuses a query text longer than `max_len` bytes or nesting deeper than
/// `max_depth` (the scan's upper bound on the tree's depth).
pub(crate) fn check_text(query: &str, max_len: usize, max_depth: usize) -> Result<(), QueryError> {
    if query.len() > max_len {
        return Err(QueryError::Parse(format!(
            "query is {} bytes, above the limit of {max_len} bytes (query.max-length)",
            query.len()
        )));
    }
    let depth = depth_bound(query.as_bytes());
    if depth > max_depth {
        return Err(QueryError::Parse(format!(
            "query nests too deeply: up to {depth} levels of parentheses and operators, above the limit of {max_depth} (query.max-nesting-depth)"
        )));
    }
    Ok(())
}

/// The deepest bracket nesting plus the number of operators outside label
/// matchers and durations: an upper bound on the parsed tree's depth.
fn depth_bound(b: &[u8]) -> usize {
    let (mut depth, mut max_depth, mut ops) = (0usize, 0usize, 0usize);
    // Inside `{…}` or `[…]`: matchers and durations, no expression operators.
    let mut in_braces = 0usize;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b'"' | b'\'' | b'`' => {
                // A string literal; `\` escapes in all but raw strings.
                i += 1;
                while i < b.len() && b[i] != c {
                    if b[i] == b'\\' && c != b'`' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'#' => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'(' | b'{' | b'[' => {
                depth += 1;
                max_depth = max_depth.max(depth);
                if c != b'(' {
                    in_braces += 1;
                }
            }
            b')' | b'}' | b']' => {
                depth = depth.saturating_sub(1);
                if c != b')' {
                    in_braces = in_braces.saturating_sub(1);
                }
            }
            b'+' | b'-' | b'*' | b'/' | b'%' | b'^' | b'<' | b'>' | b'=' | b'!'
                if in_braces == 0 =>
            {
                ops += 1;
                // Two-character operators (`==`, `!=`, `<=`, `>=`) count once.
                if matches!(b.get(i + 1), Some(b'=')) {
                    i += 1;
                }
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b':')
                {
                    i += 1;
                }
                if in_braces == 0 {
                    let w = &b[start..i];
                    if ["and", "or", "unless", "atan2"]
                        .iter()
                        .any(|k| w.eq_ignore_ascii_case(k.as_bytes()))
                    {
                        ops += 1;
                    }
                }
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    max_depth.saturating_add(ops)
}

/// Refuses durations beyond Go's `time.Duration` and `@` times outside
/// Prometheus's API time range. `e` is already depth-bounded.
pub(crate) fn check_expr(e: &Expr) -> Result<(), QueryError> {
    struct V;
    impl promql_parser::util::ExprVisitor for V {
        type Error = QueryError;
        fn pre_visit(&mut self, e: &Expr) -> Result<bool, QueryError> {
            match e {
                Expr::VectorSelector(vs) => {
                    check_offset(&vs.offset)?;
                    check_at(&vs.at)?;
                }
                Expr::MatrixSelector(ms) => {
                    check_offset(&ms.vs.offset)?;
                    check_at(&ms.vs.at)?;
                    check_duration("range", &ms.range)?;
                }
                Expr::Subquery(sq) => {
                    check_offset(&sq.offset)?;
                    check_at(&sq.at)?;
                    check_duration("subquery range", &sq.range)?;
                    if let Some(s) = &sq.step {
                        check_duration("subquery step", s)?;
                    }
                }
                _ => {}
            }
            Ok(true)
        }
    }
    promql_parser::util::walk_expr(&mut V, e).map(|_| ())
}

fn check_duration(what: &str, d: &Duration) -> Result<(), QueryError> {
    if d.as_millis() > MAX_DURATION_MS {
        return Err(QueryError::Parse(format!(
            "{what} of {}s is out of range: durations are at most {}ms (about 292 years)",
            d.as_secs(),
            MAX_DURATION_MS
        )));
    }
    Ok(())
}

fn check_offset(o: &Option<Offset>) -> Result<(), QueryError> {
    match o {
        Some(Offset::Pos(d)) | Some(Offset::Neg(d)) => check_duration("offset", d),
        None => Ok(()),
    }
}

fn check_at(at: &Option<AtModifier>) -> Result<(), QueryError> {
    if let Some(AtModifier::At(st)) = at {
        let ms = match st.duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => i128::try_from(d.as_millis()).unwrap_or(i128::MAX),
            Err(e) => -i128::try_from(e.duration().as_millis()).unwrap_or(i128::MAX),
        };
        if ms < i128::from(MIN_TIME_MS) || ms > i128::from(MAX_TIME_MS) {
            return Err(QueryError::Parse(format!(
                "timestamp of the @ modifier is out of range: it must lie between {} and {} (Unix seconds)",
                MIN_TIME_MS / 1000,
                MAX_TIME_MS / 1000
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_bound_counts_operators_and_brackets_not_matchers() {
        assert_eq!(depth_bound(b"1+1+1"), 2);
        assert_eq!(depth_bound(b"abs(abs(x))"), 2);
        assert_eq!(depth_bound(br#"up{job=~"a|b", x!="y"}[5m]"#), 1);
        assert_eq!(depth_bound(br#"a == b and c"#), 2);
        assert_eq!(depth_bound(br#"sum by (job) (rate(x[5m]))"#), 3);
        assert_eq!(depth_bound(br#"x{a="((((("}"#), 1);
        assert_eq!(depth_bound(b"# (((((\nx"), 0);
    }

    #[test]
    fn long_and_deep_queries_are_refused_by_name() {
        let deep = "(".repeat(40_000);
        let e = check_text(&deep, 1 << 20, 1000).unwrap_err().to_string();
        assert!(e.contains("query.max-nesting-depth"), "{e}");
        let chain = vec!["1"; 2000].join("+");
        assert!(check_text(&chain, 1 << 20, 1000).is_err());
        assert!(check_text("x", 0, 1000)
            .unwrap_err()
            .to_string()
            .contains("query.max-length"));
        assert!(check_text("sum(rate(x[5m])) / 2", 1 << 20, 1000).is_ok());
    }
}
