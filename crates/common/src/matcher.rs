//! Label matchers (`=`, `!=`, `=~`, `!~`) with Prometheus's semantics:
//! regexes are fully anchored, and a missing label matches as the empty string.

use regex::Regex;
use std::fmt;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MatchOp {
    Equal,
    NotEqual,
    RegexMatch,
    RegexNoMatch,
}

impl MatchOp {
    pub fn as_str(&self) -> &'static str {
        match self {
            MatchOp::Equal => "=",
            MatchOp::NotEqual => "!=",
            MatchOp::RegexMatch => "=~",
            MatchOp::RegexNoMatch => "!~",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Matcher {
    pub name: String,
    pub op: MatchOp,
    pub value: String,
    re: Option<Arc<Regex>>,
    /// Bytes of `value` every match starts with (regex ops; 0 otherwise).
    prefix_len: usize,
}

impl PartialEq for Matcher {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.op == other.op && self.value == other.value
    }
}

impl Matcher {
    /// Builds a matcher; a regex that does not compile is an error naming it.
    pub fn new(
        op: MatchOp,
        name: impl Into<String>,
        value: impl Into<String>,
    ) -> Result<Self, String> {
        let name = name.into();
        let value = value.into();
        let mut prefix_len = 0;
        let re = match op {
            MatchOp::RegexMatch | MatchOp::RegexNoMatch => Some(compiled(&value).map_err(|e| {
                format!("invalid regular expression {value:?} for label {name:?}: {e}")
            })?),
            _ => None,
        };
        if re.is_some() {
            // The pattern must parse on its own (as Prometheus checks):
            // `a)|(b` only compiles once wrapped, and means something else.
            let hir = regex_syntax::ParserBuilder::new()
                .dot_matches_new_line(true)
                .build()
                .parse(&value)
                .map_err(|e| {
                    format!("invalid regular expression {value:?} for label {name:?}: {e}")
                })?;
            prefix_len = literal_prefix_len(&hir, &value);
        }
        Ok(Self {
            name,
            op,
            value,
            re,
            prefix_len,
        })
    }

    pub fn equal(name: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            op: MatchOp::Equal,
            value: value.into(),
            re: None,
            prefix_len: 0,
        }
    }

    /// Does a label value (empty string when absent) satisfy this matcher?
    pub fn matches(&self, v: &str) -> bool {
        match self.op {
            MatchOp::Equal => v == self.value,
            MatchOp::NotEqual => v != self.value,
            // Invariant: `re` is Some for the regex ops (set in `new`).
            MatchOp::RegexMatch => self.re.as_ref().is_some_and(|r| r.is_match(v)),
            MatchOp::RegexNoMatch => !self.re.as_ref().is_some_and(|r| r.is_match(v)),
        }
    }

    /// True when the matcher also matches a series that lacks the label.
    pub fn matches_empty(&self) -> bool {
        self.matches("")
    }

    /// For `=~` regexes that are a plain alternation of literals (`a|b|c`),
    /// the literals, so an index can look them up directly.
    pub fn set_matches(&self) -> Option<Vec<String>> {
        if self.op != MatchOp::RegexMatch {
            return None;
        }
        let special = |c: char| "\\.+*?()[]{}^$".contains(c);
        if self.value.chars().any(special) {
            return None;
        }
        Some(self.value.split('|').map(str::to_string).collect())
    }
}

/// Compiled anchored regexes by pattern. Dashboards send the same
/// selectors again and again: sharing one `Regex` (not a clone, which
/// would get a cold cache pool) skips compilation and keeps its lazy DFA's
/// states warm across queries.
fn compiled(pattern: &str) -> Result<Arc<Regex>, regex::Error> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    // Bounded by count and pattern length; longer patterns are compiled
    // per query as before.
    const MAX_ENTRIES: usize = 256;
    const MAX_PATTERN: usize = 256;
    if pattern.len() > MAX_PATTERN {
        return Ok(Arc::new(Regex::new(&format!("^(?s:{pattern})$"))?));
    }
    static CACHE: OnceLock<Mutex<HashMap<String, Arc<Regex>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(r) = cache.lock().ok().and_then(|c| c.get(pattern).cloned()) {
        return Ok(r);
    }
    let r = Arc::new(Regex::new(&format!("^(?s:{pattern})$"))?);
    if let Ok(mut c) = cache.lock() {
        if c.len() >= MAX_ENTRIES {
            c.clear();
        }
        c.insert(pattern.to_string(), r.clone());
    }
    Ok(r)
}

/// Length of a literal every match of `hir` starts with, taken from the
/// parsed pattern (leading literal pieces of a concatenation) and cut to
/// where the pattern's text still spells it (an escape such as `\.` ends
/// it), so the prefix is a slice of `value`.
fn literal_prefix_len(hir: &regex_syntax::hir::Hir, value: &str) -> usize {
    use regex_syntax::hir::HirKind;
    let mut lit: Vec<u8> = Vec::new();
    match hir.kind() {
        HirKind::Literal(l) => lit.extend_from_slice(&l.0),
        HirKind::Concat(parts) => {
            for p in parts {
                match p.kind() {
                    HirKind::Literal(l) => lit.extend_from_slice(&l.0),
                    _ => break,
                }
            }
        }
        _ => {}
    }
    let mut n = value
        .bytes()
        .zip(lit.iter())
        .take_while(|(a, b)| a == *b)
        .count();
    while !value.is_char_boundary(n) {
        n -= 1;
    }
    n
}

impl Matcher {
    /// For `=~`, a literal that every matching value starts with (possibly
    /// empty), so an index can scan only the values with that prefix; None
    /// when the pattern has a top-level alternation or is not `=~`.
    pub fn literal_prefix(&self) -> Option<&str> {
        if self.op != MatchOp::RegexMatch {
            return None;
        }
        Some(&self.value[..self.prefix_len])
    }
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}{:?}", self.name, self.op.as_str(), self.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_prefixes_bound_every_match() {
        let p = |v: &str| {
            Matcher::new(MatchOp::RegexMatch, "l", v)
                .unwrap()
                .literal_prefix()
                .map(str::to_string)
        };
        assert_eq!(p("host-0001[0-9]:.*").as_deref(), Some("host-0001"));
        assert_eq!(p("/api/v1/(items|orders)").as_deref(), Some("/api/v1/"));
        assert_eq!(p("abc*").as_deref(), Some("ab"));
        assert_eq!(p("abc+").as_deref(), Some("ab"));
        assert_eq!(p("abc").as_deref(), Some("abc"));
        assert_eq!(p("a.c").as_deref(), Some("a"));
        assert_eq!(p("a\\.c").as_deref(), Some("a"));
        // Only compiles once wrapped in ^(?s:…)$, meaning something else:
        // refused, as Prometheus does.
        assert!(Matcher::new(MatchOp::RegexMatch, "l", "a)|(b").is_err());
        assert_eq!(p("(?i)abc").as_deref(), Some(""));
        assert_eq!(p("abc.*|xyz").as_deref(), Some(""));
        assert_eq!(p("ab(c|d)|e").as_deref(), Some(""));
        // Classes and groups that hide a top-level alternation from a scan.
        assert_eq!(p("ab[[:digit:](]|cd").as_deref(), Some(""));
        assert_eq!(p("ab[](]|cd").as_deref(), Some(""));
        assert_eq!(p("ab\\|c").as_deref(), Some("ab"));
        assert_eq!(p("ab[|]c").as_deref(), Some("ab"));
        assert_eq!(p("é+x").as_deref(), Some(""));
        assert_eq!(
            Matcher::new(MatchOp::NotEqual, "l", "x")
                .unwrap()
                .literal_prefix(),
            None
        );
        // Every value the regex matches starts with the prefix.
        for pat in [
            "host-0001[0-9]:.*",
            "abc*",
            "ab?c",
            "a{2}b",
            "x(y|z)w",
            "ab[|]c",
            "ab[[:digit:](]|cd",
            "ab[](]|cd",
            "(?i)Ab",
        ] {
            let m = Matcher::new(MatchOp::RegexMatch, "l", pat).unwrap();
            let pre = m.literal_prefix().unwrap();
            for v in [
                "host-00012:9100",
                "ab",
                "abc",
                "ac",
                "aab",
                "xyw",
                "xzw",
                "ab|c",
                "a",
                "cd",
                "ab(",
                "ab1",
                "aB",
            ] {
                if m.matches(v) {
                    assert!(v.starts_with(pre), "{pat}: {v} lacks {pre}");
                }
            }
        }
    }

    #[test]
    fn regex_is_anchored_and_empty_matches_absent() {
        let m = Matcher::new(MatchOp::RegexMatch, "job", "api|web").unwrap();
        assert!(m.matches("api"));
        assert!(!m.matches("xapi"));
        assert!(!m.matches_empty());
        assert_eq!(
            m.set_matches(),
            Some(vec!["api".to_string(), "web".to_string()])
        );
        let n = Matcher::new(MatchOp::RegexNoMatch, "job", "a.*").unwrap();
        assert!(n.matches_empty());
        assert!(!n.matches("abc"));
        assert!(Matcher::new(MatchOp::RegexMatch, "x", "(").is_err());
    }
}
