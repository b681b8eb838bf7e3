//! Runner for Prometheus's PromQL test-script format (`load`, `clear`,
//! `eval instant|range …`, `expect …`), as specified in Prometheus's
//! `promql/promqltest/README.md`.
//!
//! Data goes in through [`SampleWriter`] (tenant `default`) and is read back
//! through [`SeriesSource`], so the same scripts check any store. Evals that
//! involve native histograms (which Cairn does not store yet) are counted as
//! skipped and printed, never hidden.
//!
//! Owns: parsing test scripts, loading their series, running their evals
//! through [`Engine`] and comparing the answers. Used by `cairn promqltest`
//! and this crate's tier test.
//!
//! Must never depend on: `cairn-storage`, the API, or the engine's
//! internals — it sees the engine only through `cairn-promql`'s public
//! surface, and storage only through the `cairn_common` traits, so the
//! engine never depends on its own test runner.

use cairn_common::{
    stale_nan, Labels, LabelsBuilder, PreparedBatch, Sample, SampleWriter, SeriesWrite,
    DEFAULT_TENANT,
};
use cairn_promql::{
    extract_selectors, float_almost_equal, parse, Engine, EngineOptions, QueryError, QueryResult,
    Value,
};
use cairn_storage_api::SeriesReader;
use regex::Regex;
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

/// Totals of one run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
}

impl Summary {
    fn add(&mut self, o: Summary) {
        self.passed += o.passed;
        self.failed += o.failed;
        self.skipped += o.skipped;
    }
}

type StoreFactory<'a> = &'a dyn Fn() -> (Arc<dyn SeriesReader>, Arc<dyn SampleWriter>);

/// Runs every `.test` file under each path (file or directory, sorted).
/// `new_store` returns a fresh empty store (called at the start of each file
/// and on `clear`). Prints each failing eval and ends with
/// `N passed, N failed, N skipped`.
pub fn run_files(
    paths: &[PathBuf],
    new_store: StoreFactory<'_>,
    engine_opts: EngineOptions,
    out: &mut dyn Write,
) -> std::io::Result<Summary> {
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut v: Vec<PathBuf> = std::fs::read_dir(p)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "test"))
                .collect();
            v.sort();
            files.extend(v);
        } else {
            files.push(p.clone());
        }
    }
    let engine = Engine::new(engine_opts);
    let mut total = Summary::default();
    for f in &files {
        let text = std::fs::read_to_string(f)?;
        let s = run_script(&f.display().to_string(), &text, new_store, &engine, out)?;
        writeln!(
            out,
            "{}: {} passed, {} failed, {} skipped",
            f.file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default(),
            s.passed,
            s.failed,
            s.skipped
        )?;
        total.add(s);
    }
    writeln!(
        out,
        "{} passed, {} failed, {} skipped",
        total.passed, total.failed, total.skipped
    )?;
    Ok(total)
}

/// Parses a Prometheus duration (`1h30m`, `10s53ms`, `0`); a bare number is
/// seconds.
pub fn parse_duration_ms(s: &str) -> Option<i64> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    if let Ok(v) = s.parse::<f64>() {
        return Some((v * 1000.0).round() as i64);
    }
    let (neg, s) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let total = cairn_common::duration::parse_units_ms(s)?;
    Some(if neg { -total } else { total })
}

/// One value of a series description: a float, a gap, or a histogram.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Point {
    Float(f64),
    Gap,
    Histogram,
}

fn parse_float(s: &str) -> Option<f64> {
    match s {
        "Inf" | "+Inf" | "inf" | "+inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        "NaN" | "nan" => Some(f64::NAN),
        "stale" => Some(stale_nan()),
        _ => s.parse::<f64>().ok(),
    }
}

/// Expands `a+bxN`, `a-bxN`, `axN`, `_`, `_xN`, `stale`, plain numbers and
/// `{{…}}` histograms (reported as [`Point::Histogram`]).
fn parse_points(s: &str) -> Result<Vec<Point>, String> {
    let mut out = Vec::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        if rest.starts_with("{{") {
            let end = rest.find("}}").ok_or("unterminated histogram")?;
            let mut after = &rest[end + 2..];
            // Histogram expansions like {{…}}+{{…}}x3 or {{…}}x3.
            let mut n = 1usize;
            if let Some(r) = after.strip_prefix('+').or_else(|| after.strip_prefix('-')) {
                if r.starts_with("{{") {
                    let e2 = r.find("}}").ok_or("unterminated histogram")?;
                    after = &r[e2 + 2..];
                }
            }
            if let Some(r) = after.strip_prefix('x') {
                let d: String = r.chars().take_while(|c| c.is_ascii_digit()).collect();
                n = d.parse::<usize>().unwrap_or(0) + 1;
                after = &r[d.len()..];
            }
            out.extend(std::iter::repeat_n(Point::Histogram, n));
            rest = after.trim_start();
            continue;
        }
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let tok = &rest[..end];
        rest = rest[end..].trim_start();
        out.extend(expand_token(tok)?);
    }
    Ok(out)
}

fn expand_token(tok: &str) -> Result<Vec<Point>, String> {
    if tok == "_" {
        return Ok(vec![Point::Gap]);
    }
    if let Some(v) = parse_float(tok) {
        return Ok(vec![Point::Float(v)]);
    }
    // Expansion: <head>x<N>
    let xi = tok.rfind('x').ok_or_else(|| format!("bad value {tok:?}"))?;
    let n: usize = tok[xi + 1..]
        .parse()
        .map_err(|_| format!("bad value {tok:?}"))?;
    let head = &tok[..xi];
    if head == "_" {
        return Ok(vec![Point::Gap; n]);
    }
    if head == "stale" {
        return Ok(vec![Point::Float(stale_nan()); n]);
    }
    // Find the operator separating a and b: a + or - not at the start and
    // not right after an exponent 'e'.
    let hb = head.as_bytes();
    let mut split = None;
    for i in 1..hb.len() {
        if (hb[i] == b'+' || hb[i] == b'-') && !matches!(hb[i - 1], b'e' | b'E') {
            split = Some(i);
            break;
        }
    }
    let (a, b) = match split {
        Some(i) => {
            let a = parse_float(&head[..i]).ok_or_else(|| format!("bad value {tok:?}"))?;
            let b = parse_float(&head[i + 1..]).ok_or_else(|| format!("bad value {tok:?}"))?;
            (a, if hb[i] == b'-' { -b } else { b })
        }
        None => (
            parse_float(head).ok_or_else(|| format!("bad value {tok:?}"))?,
            0.0,
        ),
    };
    let mut out = Vec::with_capacity(n + 1);
    let mut cur = a;
    for _ in 0..=n {
        out.push(Point::Float(cur));
        cur += b;
    }
    Ok(out)
}

/// Reads a quoted string (`"…"`, `'…'`, or a raw `` `…` ``) with Go escapes.
fn parse_quoted(s: &str) -> Result<(String, &str), String> {
    let q = s.chars().next().ok_or("expected string")?;
    if q == '`' {
        let end = s[1..].find('`').ok_or("unterminated string")?;
        return Ok((s[1..1 + end].to_string(), &s[end + 2..]));
    }
    let mut bytes: Vec<u8> = Vec::new();
    let mut it = s[1..].char_indices();
    while let Some((i, c)) = it.next() {
        if c == q {
            let rest = &s[1 + i + 1..];
            return Ok((String::from_utf8_lossy(&bytes).into_owned(), rest));
        }
        if c == '\\' {
            let (_, e) = it.next().ok_or("bad escape")?;
            match e {
                'n' => bytes.push(b'\n'),
                't' => bytes.push(b'\t'),
                'r' => bytes.push(b'\r'),
                '\\' => bytes.push(b'\\'),
                '"' => bytes.push(b'"'),
                '\'' => bytes.push(b'\''),
                'x' => {
                    let h: String = (0..2).filter_map(|_| it.next().map(|x| x.1)).collect();
                    bytes.push(u8::from_str_radix(&h, 16).map_err(|_| "bad \\x escape")?);
                }
                'u' | 'U' => {
                    let n = if e == 'u' { 4 } else { 8 };
                    let h: String = (0..n).filter_map(|_| it.next().map(|x| x.1)).collect();
                    let cp = u32::from_str_radix(&h, 16).map_err(|_| "bad \\u escape")?;
                    let ch = char::from_u32(cp).ok_or("bad \\u escape")?;
                    let mut buf = [0u8; 4];
                    bytes.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                }
                other => {
                    bytes.push(b'\\');
                    let mut buf = [0u8; 4];
                    bytes.extend_from_slice(other.encode_utf8(&mut buf).as_bytes());
                }
            }
            continue;
        }
        let mut buf = [0u8; 4];
        bytes.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
    }
    Err("unterminated string".into())
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// Parses `name{a="b", …}` (either part optional) and returns the rest.
fn parse_series_desc(s: &str) -> Result<(Labels, &str), String> {
    let s = s.trim_start();
    let mut b = LabelsBuilder::new();
    let mut rest = s;
    if rest.starts_with(is_ident_start) {
        let end = rest.find(|c| !is_ident(c)).unwrap_or(rest.len());
        b.set("__name__", &rest[..end]);
        rest = &rest[end..];
    }
    let r = rest.trim_start();
    if r.starts_with("{{") {
        return Ok((b.build(), r));
    }
    if let Some(mut r) = r.strip_prefix('{') {
        loop {
            r = r.trim_start();
            if let Some(x) = r.strip_prefix('}') {
                rest = x;
                break;
            }
            let name;
            if r.starts_with(['"', '\'', '`']) {
                let (n, x) = parse_quoted(r)?;
                let x = x.trim_start();
                if x.starts_with([',', '}']) {
                    b.set("__name__", &n);
                    r = x.strip_prefix(',').unwrap_or(x);
                    continue;
                }
                name = n;
                r = x;
            } else {
                let end = r.find(|c| !is_ident(c)).unwrap_or(r.len());
                if end == 0 {
                    return Err(format!("bad label set near {r:?}"));
                }
                name = r[..end].to_string();
                r = &r[end..];
            }
            r = r.trim_start();
            r = r.strip_prefix('=').ok_or("expected '='")?;
            r = r.trim_start();
            let (v, x) = parse_quoted(r)?;
            b.set(&name, &v);
            r = x.trim_start();
            r = r.strip_prefix(',').unwrap_or(r);
        }
    }
    Ok((b.build(), rest))
}

#[derive(Debug, Default)]
struct Expectations {
    fail: Option<Option<Matcher>>,
    warn: Vec<Option<Matcher>>,
    info: Vec<Option<Matcher>>,
    no_warn: bool,
    no_info: bool,
    ordered: bool,
    string: Option<String>,
    range_vector: Option<(i64, i64, i64)>,
}

#[derive(Debug)]
enum Matcher {
    Msg(String),
    Re(Regex),
}

impl Matcher {
    fn matches(&self, s: &str) -> bool {
        match self {
            Matcher::Msg(m) => m == s,
            Matcher::Re(r) => r.is_match(s),
        }
    }
}

fn parse_expect_matcher(rest: &str) -> Result<Option<Matcher>, String> {
    let rest = rest.trim();
    if rest.is_empty() {
        return Ok(None);
    }
    let (kind, val) = rest.split_once(':').ok_or("expected msg: or regex:")?;
    let mut val = val.trim().to_string();
    if val.len() >= 2 && val.starts_with('"') && val.ends_with('"') {
        val = val[1..val.len() - 1].to_string();
    }
    match kind.trim() {
        "msg" => Ok(Some(Matcher::Msg(val))),
        "regex" => Ok(Some(Matcher::Re(
            Regex::new(&val).map_err(|e| format!("bad regex: {e}"))?,
        ))),
        k => Err(format!("unknown match type {k:?}")),
    }
}

struct Eval {
    line: usize,
    expr: String,
    range: Option<(i64, i64, i64)>,
    at: i64,
    exp: Expectations,
    /// Expected series: (labels or None for a scalar, points), in order.
    series: Vec<(Option<Labels>, Vec<Point>)>,
    has_histogram: bool,
}

fn run_script(
    name: &str,
    text: &str,
    new_store: StoreFactory<'_>,
    engine: &Engine,
    out: &mut dyn Write,
) -> std::io::Result<Summary> {
    let lines: Vec<&str> = text.lines().collect();
    let mut sum = Summary::default();
    let (mut src, mut writer) = new_store();
    let mut hist_series: Vec<Labels> = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let raw = lines[i];
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            i += 1;
            continue;
        }
        let lineno = i + 1;
        let (cmd, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        if cmd == "clear" {
            (src, writer) = new_store();
            hist_series.clear();
            i += 1;
            continue;
        }
        // The block: following lines until a blank line or a new command.
        let mut block = Vec::new();
        let mut j = i + 1;
        while j < lines.len() {
            let l = lines[j].trim();
            if l.is_empty() {
                break;
            }
            if l.starts_with('#') {
                j += 1;
                continue;
            }
            let first = l.split_whitespace().next().unwrap_or("");
            if matches!(first, "load" | "load_with_nhcb" | "clear") || first.starts_with("eval") {
                break;
            }
            block.push((j + 1, l));
            j += 1;
        }
        i = j;
        match cmd {
            "load" | "load_with_nhcb" => {
                if let Err(e) = load(
                    rest,
                    &block,
                    cmd == "load_with_nhcb",
                    writer.as_ref(),
                    &mut hist_series,
                ) {
                    writeln!(out, "{name}:{lineno}: load failed: {e}")?;
                    sum.failed += 1;
                }
            }
            c if c.starts_with("eval") => {
                let ev = match parse_eval(c, rest, &block, lineno) {
                    Ok(e) => e,
                    Err(e) => {
                        writeln!(out, "{name}:{lineno}: {line}\n  cannot parse eval: {e}")?;
                        sum.failed += 1;
                        continue;
                    }
                };
                if ev.has_histogram || touches_histograms(&ev.expr, &hist_series) {
                    writeln!(
                        out,
                        "{name}:{}: {} (skipped: native histograms)",
                        ev.line, ev.expr
                    )?;
                    sum.skipped += 1;
                    continue;
                }
                match check_eval(&ev, engine, src.as_ref()) {
                    Ok(()) => sum.passed += 1,
                    Err(msg) => {
                        sum.failed += 1;
                        writeln!(out, "{name}:{}: {}", ev.line, ev.expr)?;
                        for l in msg.lines() {
                            writeln!(out, "    {l}")?;
                        }
                    }
                }
            }
            other => {
                writeln!(out, "{name}:{lineno}: unknown command {other:?}")?;
                sum.failed += 1;
            }
        }
    }
    Ok(sum)
}

/// Whether any selector of `expr` matches a series that holds native
/// histograms (which Cairn does not store yet).
fn mentions_any(expr: &str, names: &HashSet<String>) -> bool {
    expr.split(|c: char| !is_ident(c))
        .any(|w| !w.is_empty() && names.contains(w))
}

fn touches_histograms(expr: &str, hist_series: &[Labels]) -> bool {
    if hist_series.is_empty() {
        return false;
    }
    let Ok(e) = parse(expr) else {
        // Unparseable here (e.g. histogram-only operators): fall back to
        // the metric names the text mentions.
        let names: HashSet<String> = hist_series
            .iter()
            .filter_map(|l| l.metric_name().map(str::to_string))
            .collect();
        return mentions_any(expr, &names);
    };
    let Ok(groups) = extract_selectors(&e) else {
        return false;
    };
    groups.iter().any(|g| {
        hist_series
            .iter()
            .any(|l| g.iter().all(|m| m.matches(l.get(&m.name).unwrap_or(""))))
    })
}

fn load(
    rest: &str,
    block: &[(usize, &str)],
    with_nhcb: bool,
    writer: &dyn SampleWriter,
    hist_series: &mut Vec<Labels>,
) -> Result<(), String> {
    let interval = parse_duration_ms(rest).ok_or_else(|| format!("bad interval {rest:?}"))?;
    let mut series = Vec::new();
    for (ln, l) in block {
        let (labels, vals) = parse_series_desc(l).map_err(|e| format!("line {ln}: {e}"))?;
        let points = parse_points(vals).map_err(|e| format!("line {ln}: {e}"))?;
        let mut samples = Vec::new();
        let mut has_hist = false;
        for (k, p) in points.iter().enumerate() {
            match p {
                Point::Float(v) => samples.push(Sample::new(k as i64 * interval, *v)),
                Point::Gap => {}
                Point::Histogram => has_hist = true,
            }
        }
        let name = labels.metric_name().unwrap_or("").to_string();
        if has_hist {
            hist_series.push(labels.clone());
        }
        if with_nhcb {
            for suffix in ["_bucket", "_sum", "_count"] {
                if let Some(base) = name.strip_suffix(suffix) {
                    let mut b = labels.without(&["le"]).builder();
                    b.set("__name__", base);
                    hist_series.push(b.build());
                }
            }
        }
        if !samples.is_empty() {
            series.push(SeriesWrite {
                labels,
                samples,
                exemplars: Vec::new(),
            });
        }
    }
    writer
        .write(
            DEFAULT_TENANT,
            PreparedBatch::from_series(DEFAULT_TENANT, series, vec![]),
        )
        .map_err(|e| format!("write failed: {e}"))?;
    Ok(())
}

fn parse_eval(
    cmd: &str,
    rest: &str,
    block: &[(usize, &str)],
    lineno: usize,
) -> Result<Eval, String> {
    let mut exp = Expectations::default();
    match cmd {
        "eval" => {}
        "eval_fail" => exp.fail = Some(None),
        "eval_warn" => exp.warn.push(None),
        "eval_info" => exp.info.push(None),
        "eval_ordered" => exp.ordered = true,
        c => return Err(format!("unknown command {c:?}")),
    }
    let rest = rest.trim();
    let (range, at, expr) = if let Some(r) = rest.strip_prefix("instant") {
        let r = r
            .trim_start()
            .strip_prefix("at")
            .ok_or("expected 'at'")?
            .trim_start();
        let (t, e) = r
            .split_once(char::is_whitespace)
            .ok_or("missing expression")?;
        (None, parse_duration_ms(t).ok_or("bad time")?, e.trim())
    } else if let Some(r) = rest.strip_prefix("range") {
        let r = r
            .trim_start()
            .strip_prefix("from")
            .ok_or("expected 'from'")?
            .trim_start();
        let (s, r) = r.split_once(char::is_whitespace).ok_or("bad range")?;
        let r = r
            .trim_start()
            .strip_prefix("to")
            .ok_or("expected 'to'")?
            .trim_start();
        let (e, r) = r.split_once(char::is_whitespace).ok_or("bad range")?;
        let r = r
            .trim_start()
            .strip_prefix("step")
            .ok_or("expected 'step'")?
            .trim_start();
        let (st, ex) = r
            .split_once(char::is_whitespace)
            .ok_or("missing expression")?;
        (
            Some((
                parse_duration_ms(s).ok_or("bad start")?,
                parse_duration_ms(e).ok_or("bad end")?,
                parse_duration_ms(st).ok_or("bad step")?,
            )),
            0,
            ex.trim(),
        )
    } else {
        return Err("expected 'instant' or 'range'".into());
    };
    let mut series = Vec::new();
    let mut has_histogram = false;
    for (ln, l) in block {
        if let Some(r) = l.strip_prefix("expect ") {
            let r = r.trim();
            let (kind, more) = r.split_once(char::is_whitespace).unwrap_or((r, ""));
            match kind {
                "fail" => exp.fail = Some(parse_expect_matcher(more)?),
                "warn" => exp.warn.push(parse_expect_matcher(more)?),
                "info" => exp.info.push(parse_expect_matcher(more)?),
                "no_warn" => exp.no_warn = true,
                "no_info" => exp.no_info = true,
                "ordered" => exp.ordered = true,
                "string" => {
                    let (s, _) = parse_quoted(more.trim())?;
                    exp.string = Some(s);
                }
                "range" => {
                    // expect range vector from <t> to <t> step <d>
                    let w: Vec<&str> = more.split_whitespace().collect();
                    if w.len() != 7 || w[0] != "vector" {
                        return Err(format!("line {ln}: bad 'expect range vector'"));
                    }
                    exp.range_vector = Some((
                        parse_duration_ms(w[2]).ok_or("bad start")?,
                        parse_duration_ms(w[4]).ok_or("bad end")?,
                        parse_duration_ms(w[6]).ok_or("bad step")?,
                    ));
                }
                k => return Err(format!("line {ln}: unknown expectation {k:?}")),
            }
            continue;
        }
        if let Some(m) = l.strip_prefix("expected_fail_message") {
            exp.fail = Some(Some(Matcher::Msg(m.trim().to_string())));
            continue;
        }
        if let Some(m) = l.strip_prefix("expected_fail_regexp") {
            exp.fail = Some(Some(Matcher::Re(
                Regex::new(m.trim()).map_err(|e| e.to_string())?,
            )));
            continue;
        }
        // A bare value is a scalar result.
        if let Ok(pts) = parse_points(l) {
            if !l.starts_with('{') && pts.iter().all(|p| matches!(p, Point::Float(_))) {
                series.push((None, pts));
                continue;
            }
        }
        let (labels, vals) = parse_series_desc(l).map_err(|e| format!("line {ln}: {e}"))?;
        let pts = parse_points(vals).map_err(|e| format!("line {ln}: {e}"))?;
        if pts.contains(&Point::Histogram) {
            has_histogram = true;
        }
        series.push((Some(labels), pts));
    }
    Ok(Eval {
        line: lineno,
        expr: expr.to_string(),
        range,
        at,
        exp,
        series,
        has_histogram,
    })
}

fn fmt_f(v: f64) -> String {
    cairn_common::gofmt::format_f(v)
}

fn check_annotations(
    kind: &str,
    got: &[String],
    want: &[Option<Matcher>],
    none: bool,
) -> Result<(), String> {
    if none && !got.is_empty() {
        return Err(format!("unexpected {kind} annotations: {got:?}"));
    }
    if want.is_empty() {
        return Ok(());
    }
    if got.is_empty() {
        return Err(format!("expected {kind} annotations but got none"));
    }
    for w in want.iter().flatten() {
        if !got.iter().any(|g| w.matches(g)) {
            return Err(format!("no {kind} annotation matches {w:?}; got {got:?}"));
        }
    }
    if want.iter().all(|w| w.is_some()) {
        for g in got {
            if !want.iter().flatten().any(|w| w.matches(g)) {
                return Err(format!("unexpected {kind} annotation {g:?}"));
            }
        }
    }
    Ok(())
}

fn check_eval(ev: &Eval, engine: &Engine, src: &dyn SeriesReader) -> Result<(), String> {
    let res: Result<QueryResult, QueryError> = match ev.range {
        None => engine.instant_query(src, DEFAULT_TENANT, &ev.expr, ev.at),
        Some((s, e, st)) => engine.range_query(src, DEFAULT_TENANT, &ev.expr, s, e, st),
    };
    let res = match (res, &ev.exp.fail) {
        (Err(e), Some(m)) => {
            return match m {
                Some(m) if !m.matches(&e.to_string()) => {
                    Err(format!("expected error matching {m:?}, got {e:?}"))
                }
                _ => Ok(()),
            }
        }
        (Err(e), None) => return Err(format!("unexpected error: {e}")),
        (Ok(r), Some(_)) => {
            return Err(format!(
                "expected error but query succeeded with {}",
                render_value(&r.value)
            ))
        }
        (Ok(r), None) => r,
    };
    check_annotations("warn", &res.warnings, &ev.exp.warn, ev.exp.no_warn)?;
    check_annotations("info", &res.infos, &ev.exp.info, ev.exp.no_info)?;
    if let Some(s) = &ev.exp.string {
        return match &res.value {
            Value::String { v, .. } if v == s => Ok(()),
            other => Err(format!(
                "expected string {s:?}, got {}",
                render_value(other)
            )),
        };
    }
    compare(ev, &res.value).map_err(|e| {
        format!(
            "{e}\nexpected:\n{}\nactual:\n{}",
            render_expected(ev),
            render_value(&res.value)
        )
    })
}

fn render_expected(ev: &Eval) -> String {
    let mut s = String::new();
    for (l, pts) in &ev.series {
        let ps: Vec<String> = pts
            .iter()
            .map(|p| match p {
                Point::Float(v) => fmt_f(*v),
                Point::Gap => "_".into(),
                Point::Histogram => "{{…}}".into(),
            })
            .collect();
        let name = l.as_ref().map(|l| l.to_string()).unwrap_or_default();
        s.push_str(&format!("  {name} {}\n", ps.join(" ")));
    }
    s.trim_end().to_string()
}

fn render_value(v: &Value) -> String {
    match v {
        Value::Scalar { v, .. } => format!("  scalar {}", fmt_f(*v)),
        Value::String { v, .. } => format!("  string {v:?}"),
        Value::Vector(els) => {
            if els.is_empty() {
                return "  (empty vector)".into();
            }
            els.iter()
                .map(|e| format!("  {} {}", e.labels, fmt_f(e.v)))
                .collect::<Vec<_>>()
                .join("\n")
        }
        Value::Matrix(ss) => {
            if ss.is_empty() {
                return "  (empty matrix)".into();
            }
            ss.iter()
                .map(|s| {
                    let pts: Vec<String> = s
                        .samples
                        .iter()
                        .map(|p| format!("{}@{}", fmt_f(p.v), p.t))
                        .collect();
                    format!("  {} {}", s.labels, pts.join(" "))
                })
                .collect::<Vec<_>>()
                .join("\n")
        }
    }
}

fn eq(a: f64, b: f64) -> bool {
    if cairn_common::is_stale_nan(a) || cairn_common::is_stale_nan(b) {
        return cairn_common::is_stale_nan(a) && cairn_common::is_stale_nan(b);
    }
    float_almost_equal(a, b, 1e-6)
}

fn compare(ev: &Eval, v: &Value) -> Result<(), String> {
    match v {
        Value::Scalar { v, .. } => {
            if ev.range.is_some() {
                return Err("range query returned a scalar".into());
            }
            if ev.series.len() != 1 || ev.series[0].0.is_some() {
                return Err("expected vector or matrix result, but got scalar".into());
            }
            match ev.series[0].1.first() {
                Some(Point::Float(x)) if eq(*x, *v) => Ok(()),
                _ => Err(format!(
                    "expected scalar {:?}, got {}",
                    ev.series[0].1,
                    fmt_f(*v)
                )),
            }
        }
        Value::String { .. } => Err("unexpected string result".into()),
        Value::Vector(els) => {
            if ev.range.is_some() {
                return Err("range query returned a vector".into());
            }
            let mut expected: HashMap<&Labels, (usize, f64)> = HashMap::new();
            for (pos, (l, pts)) in ev.series.iter().enumerate() {
                let Some(l) = l else {
                    return Err("expected scalar result, got vector".into());
                };
                let v = match pts.as_slice() {
                    [Point::Float(v)] => *v,
                    _ => return Err(format!("expected one value for {l}")),
                };
                expected.insert(l, (pos, v));
            }
            let mut seen = HashSet::new();
            for (pos, e) in els.iter().enumerate() {
                let Some((epos, ev_)) = expected.get(&e.labels) else {
                    return Err(format!(
                        "unexpected metric {} in result, has value {}",
                        e.labels,
                        fmt_f(e.v)
                    ));
                };
                if ev.exp.ordered && *epos != pos {
                    return Err(format!(
                        "expected metric {} at position {} but was at {}",
                        e.labels,
                        epos + 1,
                        pos + 1
                    ));
                }
                if !eq(*ev_, e.v) {
                    return Err(format!(
                        "expected {} for {} but got {}",
                        fmt_f(*ev_),
                        e.labels,
                        fmt_f(e.v)
                    ));
                }
                seen.insert(&e.labels);
            }
            for l in expected.keys() {
                if !seen.contains(l) {
                    return Err(format!("expected metric {l} not found"));
                }
            }
            Ok(())
        }
        Value::Matrix(ss) => {
            let (start, step) = match (ev.range, ev.exp.range_vector) {
                (Some((s, _, st)), _) => (s, st),
                (None, Some((s, _, st))) => (s, st),
                (None, None) => {
                    return Err(
                        "instant query returned a range vector; use 'expect range vector'".into(),
                    )
                }
            };
            let mut expected: HashMap<Labels, Vec<Sample>> = HashMap::new();
            for (l, pts) in &ev.series {
                let l = l.clone().unwrap_or_default();
                let mut samples = Vec::new();
                for (k, p) in pts.iter().enumerate() {
                    if let Point::Float(v) = p {
                        samples.push(Sample::new(start + k as i64 * step, *v));
                    }
                }
                expected.insert(l, samples);
            }
            if expected.len() != ss.len() {
                return Err(format!(
                    "expected {} series, got {}",
                    expected.len(),
                    ss.len()
                ));
            }
            for s in ss {
                let Some(exp) = expected.get(&s.labels) else {
                    return Err(format!("unexpected series {}", s.labels));
                };
                let ok = exp.len() == s.samples.len()
                    && exp
                        .iter()
                        .zip(&s.samples)
                        .all(|(a, b)| a.t == b.t && eq(a.v, b.v));
                if !ok {
                    return Err(format!("points differ for {}", s.labels));
                }
            }
            Ok(())
        }
    }
}

/// Runs the given scripts against fresh `MemStore`s (convenience for tests).
pub fn run_files_mem(paths: &[PathBuf], out: &mut dyn Write) -> std::io::Result<Summary> {
    let factory = || {
        let m = Arc::new(cairn_common::MemStore::new());
        (
            m.clone() as Arc<dyn SeriesReader>,
            m as Arc<dyn SampleWriter>,
        )
    };
    run_files(paths, &factory, EngineOptions::default(), out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn floats(s: &str) -> Vec<Option<f64>> {
        parse_points(s)
            .unwrap()
            .into_iter()
            .map(|p| match p {
                Point::Float(v) => Some(v),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn expands_series_values() {
        assert_eq!(
            floats("0+10x2 _ 1x1 -2+4x1 1-2x1 _x2"),
            vec![
                Some(0.0),
                Some(10.0),
                Some(20.0),
                None,
                Some(1.0),
                Some(1.0),
                Some(-2.0),
                Some(2.0),
                Some(1.0),
                Some(-1.0),
                None,
                None
            ]
        );
        assert!(cairn_common::is_stale_nan(floats("stale")[0].unwrap()));
        assert_eq!(floats("0x3"), vec![Some(0.0); 4]);
        assert_eq!(
            parse_points("{{schema:0 sum:1}}x2").unwrap(),
            vec![Point::Histogram; 3]
        );
        assert!(parse_points("1+x").is_err());
    }

    #[test]
    fn parses_durations_and_series() {
        assert_eq!(parse_duration_ms("10s53ms"), Some(10_053));
        assert_eq!(parse_duration_ms("1h30m"), Some(5_400_000));
        assert_eq!(parse_duration_ms("0"), Some(0));
        assert_eq!(parse_duration_ms("bogus"), None);
        let (l, rest) = parse_series_desc(r#"m{a="x\"y", b='z',} 1 2"#).unwrap();
        assert_eq!(l.to_string(), r#"m{a="x\"y", b="z"}"#);
        assert_eq!(rest.trim(), "1 2");
        let (l, _) = parse_series_desc(r#"{"odd.name", c="d"} 1"#).unwrap();
        assert_eq!(l.metric_name(), Some("odd.name"));
    }

    #[test]
    fn script_runs_and_reports_failures() {
        let script = "load 1m\n  m{a=\"1\"} 1+1x5\n\neval instant at 2m m\n  m{a=\"1\"} 3\n\neval instant at 2m m\n  m{a=\"1\"} 4\n\neval range from 0 to 2m step 1m m * 2\n  {a=\"1\"} 2 4 6\n\neval instant at 0m nosuch(\n  expect fail\n";
        let factory = || {
            let m = Arc::new(cairn_common::MemStore::new());
            (
                m.clone() as Arc<dyn SeriesReader>,
                m as Arc<dyn SampleWriter>,
            )
        };
        let mut out = Vec::new();
        let s = run_script("t.test", script, &factory, &Engine::default(), &mut out).unwrap();
        assert_eq!(
            s,
            Summary {
                passed: 3,
                failed: 1,
                skipped: 0
            }
        );
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("t.test:7: m"), "{text}");
    }
}
