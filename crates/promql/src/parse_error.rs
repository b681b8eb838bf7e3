//! Parse errors with a position, as Prometheus writes them
//! (`1:3: parse error: unexpected end of input`).
//!
//! `promql-parser` reports every grammar error as the bare "invalid promql
//! query" (it drops its parser's own diagnostics). When it does, the query
//! is walked again over the parser's own tokens (its public lexer) by a
//! small checker of PromQL's shape, which names the first token that cannot
//! continue the expression, where it is, in what, and what was expected —
//! the same words Prometheus uses for the common mistakes (`1+`,
//! `up{job=}`, `sum by (job) up`). It runs only on a query the parser has
//! already refused, so it never decides what is accepted; where it finds
//! nothing wrong the parser's message is kept. Lexer and semantic errors
//! already say what is wrong and keep their text. Echoed tokens are cut to
//! [`ECHO_MAX`] bytes.

use cairn_common::limits::truncate_str;
use lrpar::{Lexeme, Lexer};
use promql_parser::parser::token::*;

/// The message `promql-parser` gives for every grammar error.
const GENERIC: &str = "invalid promql query";

/// Bytes of a token echoed in a message.
const ECHO_MAX: usize = 64;

/// The message for `query`, which the parser refused with `msg`.
pub(crate) fn describe(query: &str, msg: String) -> String {
    if msg != GENERIC {
        return format!("parse error: {msg}");
    }
    match diagnose(query) {
        Some((pos, what)) => {
            let (line, col) = line_col(query, pos);
            format!("{line}:{col}: parse error: {what}")
        }
        None => format!("parse error: {msg}"),
    }
}

/// 1-based line and byte column of byte offset `pos`, as Prometheus counts.
fn line_col(s: &str, pos: usize) -> (usize, usize) {
    let before = s.as_bytes().get(..pos).unwrap_or(s.as_bytes());
    let line = 1 + before.iter().filter(|&&b| b == b'\n').count();
    let col = match before.iter().rposition(|&b| b == b'\n') {
        Some(nl) => pos - nl,
        None => pos + 1,
    };
    (line, col)
}

#[derive(Clone, Copy)]
struct Tok {
    id: TokenId,
    start: usize,
    end: usize,
}

/// Where the first token that cannot continue the query is, and why.
fn diagnose(query: &str) -> Option<(usize, String)> {
    let lexer = promql_parser::parser::lexer(query).ok()?;
    let mut toks = Vec::new();
    for t in lexer.iter() {
        let t = t.ok()?;
        let span = t.span();
        toks.push(Tok {
            id: t.tok_id(),
            start: span.start(),
            end: span.end(),
        });
    }
    let mut c = Check {
        toks: &toks,
        i: 0,
        src: query,
    };
    let err = match c.expr() {
        Ok(()) if c.peek_id() == T_EOF || c.peek_id() == NONE => return None,
        Ok(()) => Unexpected {
            at: c.i,
            context: None,
            expected: None,
        },
        Err(e) => e,
    };
    let tok = toks.get(err.at).copied();
    let pos = tok.map_or(query.len(), |t| t.start.min(query.len()));
    let mut what = format!("unexpected {}", c.desc(tok));
    if let Some(ctx) = err.context {
        what.push_str(" in ");
        what.push_str(ctx);
    }
    if let Some(exp) = err.expected {
        what.push_str(", expected ");
        what.push_str(exp);
    }
    Some((pos, what))
}

/// No token (past the end): never a real token id.
const NONE: TokenId = TokenId::MAX;

struct Unexpected {
    /// Index of the offending token (`toks.len()` when past the end).
    at: usize,
    context: Option<&'static str>,
    expected: Option<&'static str>,
}

type R = Result<(), Unexpected>;

struct Check<'a> {
    toks: &'a [Tok],
    i: usize,
    src: &'a str,
}

fn is_binop(id: TokenId) -> bool {
    matches!(
        id,
        T_ADD
            | T_SUB
            | T_MUL
            | T_DIV
            | T_MOD
            | T_POW
            | T_EQLC
            | T_NEQ
            | T_GTR
            | T_LSS
            | T_GTE
            | T_LTE
            | T_LAND
            | T_LOR
            | T_LUNLESS
            | T_ATAN2
    )
}

fn is_match_op(id: TokenId) -> bool {
    matches!(id, T_EQL | T_NEQ | T_EQL_REGEX | T_NEQ_REGEX)
}

fn is_aggregator(id: TokenId) -> bool {
    id > T_AGGREGATORS_START && id < T_AGGREGATORS_END
}

/// A token that may name a label in `by (…)`, `on (…)`: identifiers and
/// the words PromQL reserves elsewhere.
fn is_label_like(id: TokenId) -> bool {
    matches!(id, T_IDENTIFIER | T_METRIC_IDENTIFIER)
        || is_aggregator(id)
        || (id > T_KEYWORDS_START && id < T_KEYWORDS_END)
        || matches!(id, T_LAND | T_LOR | T_LUNLESS | T_ATAN2 | T_START | T_END)
}

impl Check<'_> {
    fn peek_id(&self) -> TokenId {
        self.toks.get(self.i).map_or(NONE, |t| t.id)
    }

    fn bump(&mut self) {
        self.i += 1;
    }

    fn eat(&mut self, id: TokenId) -> bool {
        if self.peek_id() == id {
            self.bump();
            true
        } else {
            false
        }
    }

    fn fail(&self, context: Option<&'static str>, expected: Option<&'static str>) -> R {
        Err(Unexpected {
            at: self.i,
            context,
            expected,
        })
    }

    fn expect(&mut self, id: TokenId, context: &'static str, expected: &'static str) -> R {
        if self.eat(id) {
            Ok(())
        } else {
            self.fail(Some(context), Some(expected))
        }
    }

    /// How Prometheus names a token in a message (its `Item.desc`):
    /// `identifier "up"`, `string "\"a\""`, `<op:*>`, `<by>`, `<aggr:sum>`,
    /// `"}"`; literals longer than 10 characters are cut as Go's `%.10q...`.
    fn desc(&self, tok: Option<Tok>) -> String {
        let Some(t) = tok else {
            return "end of input".into();
        };
        let text = self.src.get(t.start..t.end).unwrap_or("");
        let short = || {
            if text.chars().count() > 10 {
                let head: String = text.chars().take(10).collect();
                format!("{head:?}...")
            } else {
                format!("{text:?}")
            }
        };
        let id = t.id;
        match id {
            T_EOF => "end of input".into(),
            T_IDENTIFIER => format!("identifier {:?}", truncate_str(text, ECHO_MAX)),
            T_METRIC_IDENTIFIER => {
                format!("metric identifier {:?}", truncate_str(text, ECHO_MAX))
            }
            T_NUMBER => format!("number {}", short()),
            T_DURATION => format!("duration {}", short()),
            T_STRING => format!("string {}", short()),
            _ if id > T_KEYWORDS_START && id < T_KEYWORDS_END => format!("<{text}>"),
            _ if id > T_OPERATORS_START && id < T_OPERATORS_END => format!("<op:{text}>"),
            _ if is_aggregator(id) => format!("<aggr:{text}>"),
            _ => short(),
        }
    }

    /// `unary (binop modifiers unary)*`.
    fn expr(&mut self) -> R {
        self.unary()?;
        while is_binop(self.peek_id()) {
            self.bump();
            self.eat(T_BOOL);
            if matches!(self.peek_id(), T_ON | T_IGNORING) {
                self.bump();
                self.labels()?;
                if matches!(self.peek_id(), T_GROUP_LEFT | T_GROUP_RIGHT) {
                    self.bump();
                    if self.peek_id() == T_LEFT_PAREN {
                        self.labels()?;
                    }
                }
            }
            while matches!(self.peek_id(), T_FILL | T_FILL_LEFT | T_FILL_RIGHT) {
                self.bump();
                self.expect(T_LEFT_PAREN, "fill modifier", "\"(\"")?;
                self.unary()?;
                self.expect(T_RIGHT_PAREN, "fill modifier", "\")\"")?;
            }
            self.unary()?;
        }
        Ok(())
    }

    fn unary(&mut self) -> R {
        while matches!(self.peek_id(), T_ADD | T_SUB) {
            self.bump();
        }
        self.primary()?;
        self.postfix()
    }

    /// Range and subquery brackets, `offset`, `@` after an operand.
    fn postfix(&mut self) -> R {
        loop {
            match self.peek_id() {
                T_LEFT_BRACKET => {
                    self.bump();
                    if !self.eat(T_DURATION) && !self.eat(T_NUMBER) {
                        return self.fail(Some("subquery selector"), Some("duration"));
                    }
                    if self.eat(T_COLON) {
                        if !self.eat(T_DURATION) {
                            self.eat(T_NUMBER);
                        }
                        self.expect(T_RIGHT_BRACKET, "subquery selector", "\"]\"")?;
                    } else {
                        self.expect(T_RIGHT_BRACKET, "subquery or range", "\":\" or \"]\"")?;
                    }
                    while matches!(self.peek_id(), T_SMOOTHED | T_ANCHORED) {
                        self.bump();
                    }
                }
                T_OFFSET => {
                    self.bump();
                    while matches!(self.peek_id(), T_ADD | T_SUB) {
                        self.bump();
                    }
                    if !self.eat(T_DURATION) && !self.eat(T_NUMBER) {
                        return self.fail(Some("offset"), Some("duration"));
                    }
                }
                T_AT => {
                    self.bump();
                    while matches!(self.peek_id(), T_ADD | T_SUB) {
                        self.bump();
                    }
                    if matches!(self.peek_id(), T_START | T_END) {
                        self.bump();
                        self.expect(T_LEFT_PAREN, "@", "\"(\"")?;
                        self.expect(T_RIGHT_PAREN, "@", "\")\"")?;
                    } else if !self.eat(T_NUMBER) {
                        return self.fail(Some("@"), Some("timestamp"));
                    }
                }
                _ => return Ok(()),
            }
        }
    }

    fn primary(&mut self) -> R {
        match self.peek_id() {
            T_NUMBER | T_STRING | T_DURATION => {
                self.bump();
                Ok(())
            }
            T_LEFT_PAREN => {
                self.bump();
                self.expr()?;
                self.close(T_RIGHT_PAREN)
            }
            T_LEFT_BRACE => self.braces(),
            T_IDENTIFIER | T_METRIC_IDENTIFIER => {
                self.bump();
                match self.peek_id() {
                    T_LEFT_PAREN => self.args(),
                    T_LEFT_BRACE => self.braces(),
                    _ => Ok(()),
                }
            }
            id if is_aggregator(id) => self.aggregation(),
            _ => self.fail(None, None),
        }
    }

    /// A closing bracket where Prometheus names no context.
    fn close(&mut self, id: TokenId) -> R {
        if self.eat(id) {
            Ok(())
        } else {
            self.fail(None, None)
        }
    }

    /// `(expr, …)` of a call or an aggregation (at its `(`).
    fn args(&mut self) -> R {
        self.bump();
        if self.eat(T_RIGHT_PAREN) {
            return Ok(());
        }
        loop {
            self.expr()?;
            if self.eat(T_COMMA) {
                continue;
            }
            return self.close(T_RIGHT_PAREN);
        }
    }

    /// `agg [by|without (…)] (args) [by|without (…)]`; an aggregator's
    /// name alone is a metric name, as in Prometheus.
    fn aggregation(&mut self) -> R {
        self.bump();
        let mut grouped = false;
        if matches!(self.peek_id(), T_BY | T_WITHOUT) {
            self.bump();
            self.labels()?;
            grouped = true;
        }
        if self.peek_id() != T_LEFT_PAREN {
            if grouped {
                return self.fail(Some("aggregation"), None);
            }
            return Ok(());
        }
        self.args()?;
        if !grouped && matches!(self.peek_id(), T_BY | T_WITHOUT) {
            self.bump();
            self.labels()?;
        }
        Ok(())
    }

    /// `(label, …)` of a grouping or a vector matching.
    fn labels(&mut self) -> R {
        let context = "grouping opts";
        self.expect(T_LEFT_PAREN, context, "\"(\"")?;
        loop {
            if self.eat(T_RIGHT_PAREN) {
                return Ok(());
            }
            let id = self.peek_id();
            if !is_label_like(id) && id != T_STRING {
                return self.fail(Some(context), Some("label"));
            }
            self.bump();
            if !self.eat(T_COMMA) && self.peek_id() != T_RIGHT_PAREN {
                return self.fail(Some(context), Some("\",\" or \")\""));
            }
        }
    }

    /// `{name op "value", …}`; a quoted name alone is a metric name.
    fn braces(&mut self) -> R {
        const CTX: &str = "label matching";
        self.bump();
        loop {
            if self.eat(T_RIGHT_BRACE) {
                return Ok(());
            }
            let id = self.peek_id();
            if id == T_STRING {
                self.bump();
                if !is_match_op(self.peek_id()) {
                    // A quoted metric name.
                    if !self.eat(T_COMMA) && !self.eat(T_LOR) && self.peek_id() != T_RIGHT_BRACE {
                        return self.fail(Some(CTX), Some("\",\" or \"}\""));
                    }
                    continue;
                }
            } else if is_label_like(id) {
                self.bump();
            } else {
                return self.fail(Some(CTX), Some("identifier or \"}\""));
            }
            if !is_match_op(self.peek_id()) {
                return self.fail(Some(CTX), Some("label matching operator"));
            }
            self.bump();
            self.expect(T_STRING, CTX, "string")?;
            if !self.eat(T_COMMA) && !self.eat(T_LOR) && self.peek_id() != T_RIGHT_BRACE {
                return self.fail(Some(CTX), Some("\",\" or \"}\""));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(q: &str) -> String {
        match crate::parse(q) {
            Err(crate::QueryError::Parse(m)) => m,
            Err(e) => panic!("{q:?}: not a parse error: {e}"),
            Ok(_) => panic!("{q:?} parsed"),
        }
    }

    #[test]
    fn grammar_errors_name_the_token_and_where_it_is() {
        // Each as Prometheus 2.42 (the e2e tests' reference) words it.
        for (q, want) in [
            ("1+", "1:3: parse error: unexpected end of input"),
            (
                "up{job=}",
                r#"1:8: parse error: unexpected "}" in label matching, expected string"#,
            ),
            (
                "sum by (job) up",
                r#"1:14: parse error: unexpected identifier "up" in aggregation"#,
            ),
            ("up up", r#"1:4: parse error: unexpected identifier "up""#),
            ("*1", "1:1: parse error: unexpected <op:*>"),
            ("up == == up", "1:7: parse error: unexpected <op:==>"),
            (
                "a - on(b) ignoring(c) d",
                "1:11: parse error: unexpected <ignoring>",
            ),
            ("(1 2)", r#"1:4: parse error: unexpected number "2""#),
            (
                "rate(up up)",
                r#"1:9: parse error: unexpected identifier "up""#,
            ),
            ("up[5m] 1", r#"1:8: parse error: unexpected number "1""#),
            (
                "count_values up",
                r#"1:14: parse error: unexpected identifier "up""#,
            ),
            ("a and", "1:6: parse error: unexpected end of input"),
            (
                "sum(up) by job",
                r#"1:12: parse error: unexpected identifier "job" in grouping opts, expected "(""#,
            ),
            (
                "a + on b",
                r#"1:8: parse error: unexpected identifier "b" in grouping opts, expected "(""#,
            ),
            (
                "sum by (a b) (up)",
                r#"1:11: parse error: unexpected identifier "b" in grouping opts, expected "," or ")""#,
            ),
            (
                "sum without(a,,)(x)",
                r#"1:15: parse error: unexpected "," in grouping opts, expected label"#,
            ),
            (
                "up{=}",
                r#"1:4: parse error: unexpected "=" in label matching, expected identifier or "}""#,
            ),
            (
                r#"up{a="b" c="d"}"#,
                r#"1:10: parse error: unexpected identifier "c" in label matching, expected "," or "}""#,
            ),
            (
                r#"up{job "a"}"#,
                r#"1:8: parse error: unexpected string "\"a\"" in label matching, expected label matching operator"#,
            ),
            (
                "up{job=~}",
                r#"1:9: parse error: unexpected "}" in label matching, expected string"#,
            ),
            (
                r#"up{a="b",}x"#,
                r#"1:11: parse error: unexpected identifier "x""#,
            ),
            (
                "up @ foo",
                r#"1:6: parse error: unexpected identifier "foo" in @, expected timestamp"#,
            ),
            // Lines and columns count as Prometheus counts them.
            ("up\n  +", "2:4: parse error: unexpected end of input"),
        ] {
            assert_eq!(msg(q), want, "{q:?}");
        }
        // Long literals are cut as Go's `%.10q...`.
        assert_eq!(
            msg(r#"up "abcdefghijklmnop""#),
            r#"1:4: parse error: unexpected string "\"abcdefghi"..."#
        );
    }

    #[test]
    fn other_parser_errors_keep_their_text() {
        let m = msg("sum(");
        assert!(m.starts_with("parse error: "), "{m}");
        assert!(m.contains("parenthesis"), "{m}");
        // promql-parser words some grammar errors itself (without a position).
        assert_eq!(
            msg("rate(up[5m]) offset"),
            "parse error: unexpected end of input in offset, expected duration"
        );
        let m = msg("nosuchfunction(up)");
        assert!(m.starts_with("parse error: "), "{m}");
        assert!(m.contains("nosuchfunction"), "{m}");
    }

    #[test]
    fn echoed_tokens_are_cut() {
        let long = format!("up {}", "x".repeat(100_000));
        let m = msg(&long);
        assert!(
            m.starts_with("1:4: parse error: unexpected identifier"),
            "{m}"
        );
        assert!(m.len() < ECHO_MAX + 100, "{} bytes", m.len());
    }

    #[test]
    fn the_checker_accepts_what_the_parser_accepts() {
        // Valid shapes walk to the end, so a refused query is never blamed
        // on a construct the checker does not know.
        for q in [
            "1 + 2 * -3 ^ 2",
            r#"sum by (job, "a.b") (rate(http_requests_total{code=~"5..", method!="GET"}[5m]))"#,
            "topk(3, up) without (instance)",
            "a / on(job) group_left(x) b or c unless d > bool 1",
            "max_over_time(up[1h:5m] offset -1m @ start())",
            "up @ 1700000000 offset 5m",
            r#"{"up", job="a" or job="b"}"#,
            r#"label_replace(up, "a", "$1", "b", "(.*)")"#,
            "time() > bool 0",
            "(((up)))",
        ] {
            assert!(crate::parse(q).is_ok(), "{q:?} does not parse");
            assert!(
                diagnose(q).is_none(),
                "{q:?}: {:?}",
                diagnose(q).map(|d| d.1)
            );
        }
    }
}
