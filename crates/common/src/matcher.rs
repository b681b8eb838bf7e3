//! Label matchers (`=`, `!=`, `=~`, `!~`) with Prometheus's semantics:
//! regexes are fully anchored, and a missing label matches as the empty string.

use regex::Regex;
use std::fmt;

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
    re: Option<Regex>,
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
        let re = match op {
            MatchOp::RegexMatch | MatchOp::RegexNoMatch => {
                Some(Regex::new(&format!("^(?s:{value})$")).map_err(|e| {
                    format!("invalid regular expression {value:?} for label {name:?}: {e}")
                })?)
            }
            _ => None,
        };
        Ok(Self {
            name,
            op,
            value,
            re,
        })
    }

    pub fn equal(name: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            op: MatchOp::Equal,
            value: value.into(),
            re: None,
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

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}{:?}", self.name, self.op.as_str(), self.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
