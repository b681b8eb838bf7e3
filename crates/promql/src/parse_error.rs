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

    /// How Prometheus names a token in a message.
    fn desc(&self, tok: Option<Tok>) -> String {
        let Some(t) = tok else {
            return "end of input".into();
        };
        let text = self.src.get(t.start..t.end).unwrap_or("");
        let text = cairn_common::limits::truncate_str(text, ECHO_MAX);
        match t.id {
            T_EOF => "end of input".into(),
            T_IDENTIFIER => format!("identifier {text:?}"),
            T_METRIC_IDENTIFIER => format!("metric identifier {text:?}"),
            T_NUMBER => format!("number {text:?}"),
            T_DURATION => format!("duration {text:?}"),
            T_STRING => format!("string {text}"),
            _ => format!("{text:?}"),
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
                self.labels("binary expression")?;
                if matches!(self.peek_id(), T_GROUP_LEFT | T_GROUP_RIGHT) {
                    self.bump();
                    if self.peek_id() == T_LEFT_PAREN {
                        self.labels("binary expression")?;
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
                        return self.fail(Some("range or subquery selector"), Some("duration"));
                    }
                    if self.eat(T_COLON) && !self.eat(T_DURATION) {
                        self.eat(T_NUMBER);
                    }
                    self.expect(T_RIGHT_BRACKET, "range or subquery selector", "\"]\"")?;
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
                        self.expect(T_LEFT_PAREN, "@ modifier", "\"(\"")?;
                        self.expect(T_RIGHT_PAREN, "@ modifier", "\")\"")?;
                    } else if !self.eat(T_NUMBER) {
                        return self.fail(Some("@ modifier"), Some("timestamp"));
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
                self.expect(T_RIGHT_PAREN, "parenthesized expression", "\")\"")
            }
            T_LEFT_BRACE => self.braces(),
            T_IDENTIFIER | T_METRIC_IDENTIFIER => {
                self.bump();
                match self.peek_id() {
                    T_LEFT_PAREN => self.args("function call"),
                    T_LEFT_BRACE => self.braces(),
                    _ => Ok(()),
                }
            }
            id if is_aggregator(id) => self.aggregation(),
            _ => self.fail(None, None),
        }
    }

    /// `(expr, …)` of a call or an aggregation.
    fn args(&mut self, context: &'static str) -> R {
        self.expect(T_LEFT_PAREN, context, "\"(\"")?;
        if self.eat(T_RIGHT_PAREN) {
            return Ok(());
        }
        loop {
            self.expr()?;
            if self.eat(T_COMMA) {
                continue;
            }
            return self.expect(T_RIGHT_PAREN, context, "\",\" or \")\"");
        }
    }

    /// `agg [by|without (…)] (args) [by|without (…)]`.
    fn aggregation(&mut self) -> R {
        self.bump();
        let mut grouped = false;
        if matches!(self.peek_id(), T_BY | T_WITHOUT) {
            self.bump();
            self.labels("grouping opts")?;
            grouped = true;
        }
        if self.peek_id() != T_LEFT_PAREN {
            return self.fail(Some("aggregation"), Some("\"(\""));
        }
        self.args("aggregation")?;
        if !grouped && matches!(self.peek_id(), T_BY | T_WITHOUT) {
            self.bump();
            self.labels("grouping opts")?;
        }
        Ok(())
    }

    /// `(label, …)` of a grouping or a vector matching.
    fn labels(&mut self, context: &'static str) -> R {
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
                return self.fail(Some(CTX), Some("label name"));
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
        // Prometheus 2.53 gives these same messages.
        assert_eq!(msg("1+"), "1:3: parse error: unexpected end of input");
        assert_eq!(
            msg("up{job=}"),
            "1:8: parse error: unexpected \"}\" in label matching, expected string"
        );
        assert_eq!(
            msg("sum by (job) up"),
            "1:14: parse error: unexpected identifier \"up\" in aggregation, expected \"(\""
        );
        assert_eq!(
            msg("up up"),
            "1:4: parse error: unexpected identifier \"up\""
        );
        assert_eq!(msg("*1"), "1:1: parse error: unexpected \"*\"");
        assert_eq!(
            msg("sum(up) by job"),
            "1:12: parse error: unexpected identifier \"job\" in grouping opts, expected \"(\""
        );
        assert_eq!(
            msg("up{job \"a\"}"),
            "1:8: parse error: unexpected string \"a\" in label matching, expected label matching operator"
        );
        // Lines and columns count as Prometheus counts them.
        assert_eq!(msg("up\n  +"), "2:4: parse error: unexpected end of input");
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
