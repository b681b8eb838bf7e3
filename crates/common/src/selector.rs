//! Parsing of series selectors as used by `match[]` (`up`, `{job="a"}`,
//! `http_requests_total{code=~"5..", method!="GET"}`).

use crate::{MatchOp, Matcher, METRIC_NAME};

/// Most bytes of a selector echoed in an error.
pub(crate) const ECHO_MAX: usize = 256;

/// Parses one series selector into matchers, or an error naming what is wrong.
pub fn parse_selector(s: &str) -> Result<Vec<Matcher>, String> {
    let mut p = P {
        s: s.as_bytes(),
        i: 0,
        src: s,
    };
    let mut out = Vec::new();
    p.ws();
    let name = p.ident(true);
    if !name.is_empty() {
        out.push(Matcher::equal(METRIC_NAME, name));
    }
    p.ws();
    if p.peek() == Some(b'{') {
        p.i += 1;
        loop {
            p.ws();
            if p.peek() == Some(b'}') {
                p.i += 1;
                break;
            }
            let lname = p.ident(false);
            if lname.is_empty() {
                return Err(p.err("expected a label name"));
            }
            p.ws();
            let op = if p.eat("=~") {
                MatchOp::RegexMatch
            } else if p.eat("!~") {
                MatchOp::RegexNoMatch
            } else if p.eat("!=") {
                MatchOp::NotEqual
            } else if p.eat("=") {
                MatchOp::Equal
            } else {
                return Err(p.err("expected one of =, !=, =~, !~"));
            };
            p.ws();
            let value = p.string()?;
            // The regex error quotes the whole pattern: cut it too.
            out.push(Matcher::new(op, lname, value).map_err(|e| shown(&e).into_owned())?);
            p.ws();
            if p.eat(",") {
                continue;
            }
            if p.peek() == Some(b'}') {
                continue;
            }
            return Err(p.err("expected , or }"));
        }
    }
    p.ws();
    if p.i != p.s.len() {
        return Err(p.err("unexpected characters after the selector"));
    }
    if out.is_empty() {
        return Err(format!(
            "parse error in selector {:?}: empty selector",
            shown(s)
        ));
    }
    if out.iter().all(|m| m.matches_empty()) {
        return Err(format!(
            "selector {:?} must contain at least one matcher that does not match the empty string",
            shown(s)
        ));
    }
    Ok(out)
}

/// At most [`ECHO_MAX`] bytes of a selector, for echoing it in an error.
fn shown(s: &str) -> std::borrow::Cow<'_, str> {
    crate::limits::truncate_str(s, ECHO_MAX)
}

struct P<'a> {
    s: &'a [u8],
    i: usize,
    src: &'a str,
}

impl P<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }
    fn ws(&mut self) {
        while self.peek().is_some_and(|c| c.is_ascii_whitespace()) {
            self.i += 1;
        }
    }
    fn eat(&mut self, t: &str) -> bool {
        if self.s[self.i..].starts_with(t.as_bytes()) {
            self.i += t.len();
            true
        } else {
            false
        }
    }
    fn err(&self, what: &str) -> String {
        format!(
            "parse error in selector {:?} at position {}: {what}",
            shown(self.src),
            self.i
        )
    }
    fn ident(&mut self, colon: bool) -> String {
        let start = self.i;
        while let Some(c) = self.peek() {
            let ok = c.is_ascii_alphabetic()
                || c == b'_'
                || (colon && c == b':')
                || (self.i > start && c.is_ascii_digit());
            if !ok {
                break;
            }
            self.i += 1;
        }
        String::from_utf8_lossy(&self.s[start..self.i]).to_string()
    }
    fn string(&mut self) -> Result<String, String> {
        let q = self
            .peek()
            .ok_or_else(|| self.err("expected a quoted string"))?;
        if q != b'"' && q != b'\'' && q != b'`' {
            return Err(self.err("expected a quoted string"));
        }
        self.i += 1;
        let mut out = Vec::new();
        loop {
            let c = self.peek().ok_or_else(|| self.err("unterminated string"))?;
            self.i += 1;
            if c == q {
                break;
            }
            if c == b'\\' && q != b'`' {
                let e = self.peek().ok_or_else(|| self.err("unterminated escape"))?;
                self.i += 1;
                match e {
                    b'n' => out.push(b'\n'),
                    b't' => out.push(b'\t'),
                    b'r' => out.push(b'\r'),
                    b'\\' | b'"' | b'\'' => out.push(e),
                    _ => {
                        out.push(b'\\');
                        out.push(e);
                    }
                }
            } else {
                out.push(c);
            }
        }
        String::from_utf8(out).map_err(|_| self.err("string is not valid UTF-8"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors() {
        let m = parse_selector(r#"http_requests_total{code=~"5..", method!='GET',}"#).unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].to_string(), r#"__name__="http_requests_total""#);
        assert_eq!(m[1].op, MatchOp::RegexMatch);
        assert!(parse_selector("{job=\"\"}").is_err());
        assert!(parse_selector("up{job=}").is_err());
        assert!(parse_selector("up{job=\"a\"} junk").is_err());
        assert_eq!(
            parse_selector(r#"{__name__="a:b", x="q\"z"}"#).unwrap()[1].value,
            "q\"z"
        );
    }

    #[test]
    fn errors_echo_at_most_a_prefix_of_the_input() {
        let long = format!("up{{job=\"{}", "x".repeat(100_000));
        let e = parse_selector(&long).unwrap_err();
        assert!(e.len() < ECHO_MAX + 200, "{} bytes", e.len());
        assert!(e.contains("unterminated string"), "{e}");
        let e = parse_selector(&format!("{{a=~\"({}\"}}", "y".repeat(100_000))).unwrap_err();
        assert!(e.len() <= ECHO_MAX + 4, "{} bytes", e.len());
    }
}
