//! Which resolution answers each selector: raw samples, or the rollup
//! series of a downsampled namespace (`cairn-storage`'s `downsample`).
//!
//! Before planning, a query's range functions whose answer the window
//! aggregates give are rewritten onto the rollups of the coarsest
//! namespace that suits them — resolution `R ≤ step` (range queries; an
//! instant query reads rollups only where raw retention no longer reaches),
//! `R ≤ range/2`, and retention reaching back to what the selector reads:
//!
//! | function | read as |
//! |---|---|
//! | `sum_over_time`, `min_over_time`, `max_over_time` | the same over the `sum` / `min` / `max` rollup |
//! | `count_over_time` | `sum_over_time` of the `count` rollup |
//! | `avg_over_time` | Σsum ÷ Σcount (never a mean of means) |
//! | `last_over_time` | `last_over_time` of the `last` rollup |
//! | `increase`, `rate` | `sum_over_time` of the `increase` rollup (÷ the range in seconds for `rate`) |
//! | `resets` | the `resets` rollup summed, a reset across a window edge counted only when its older sample is inside the range |
//! | a bare selector, `R ≤ lookback` | the `last` rollup |
//!
//! Rollup samples sit at their window's last millisecond, so at a step on a
//! window edge a range `(t − r, t]` holds exactly the windows of `[t − r,
//! t)`. Functions that need raw samples (`quantile_over_time`, `changes`,
//! `deriv`, `irate`, …), selectors under subqueries and selectors whose
//! range is under `2R` read raw. A rewritten selector names its namespace
//! and rollup with the matchers `__namespace__` and `__rollup__`, which the
//! fetch step turns into the read's namespace and drops from the series it
//! returns.

use promql_parser::label::{MatchOp, Matcher};
use promql_parser::parser::token::{TokenType, T_DIV};
use promql_parser::parser::value::ValueType;
use promql_parser::parser::{
    BinaryExpr, Call, Expr, Function, FunctionArgs, MatrixSelector, NumberLiteral, ParenExpr,
    VectorSelector,
};

/// The matcher naming the namespace a selector reads.
pub const NAMESPACE_LABEL: &str = "__namespace__";
/// The matcher naming the rollup a selector reads (as the storage names it).
pub const ROLLUP_LABEL: &str = cairn_common::ROLLUP_LABEL;

/// A downsampled namespace the engine may read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceNamespace {
    /// As the storage names it (`agg_5m_1y`).
    pub name: String,
    pub resolution_ms: i64,
    pub retention_ms: i64,
    /// How far behind now its rollups may end: a window is written once
    /// the newest sample is its resolution and the lateness past its end,
    /// at the next pass. Steps later than that read raw.
    pub lag_ms: i64,
}

/// Thanos's `max_source_resolution`, which Grafana sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SourceResolution {
    /// The coarsest resolution that suits each selector.
    #[default]
    Auto,
    /// Raw samples only.
    Raw,
    /// The coarsest resolution at most this (ms) that suits each selector's
    /// range, whatever the step.
    AtMost(i64),
}

impl std::str::FromStr for SourceResolution {
    type Err = String;

    /// `auto` (or empty), `raw` (or `0s`), or a duration such as `5m`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "" | "auto" => Ok(SourceResolution::Auto),
            "raw" | "0" | "0s" => Ok(SourceResolution::Raw),
            d => match cairn_common::config::Duration::parse(d) {
                Some(d) if d.as_millis_i64() > 0 => Ok(SourceResolution::AtMost(d.as_millis_i64())),
                Some(_) => Ok(SourceResolution::Raw),
                None => Err(format!(
                    "{d:?} is not a resolution: use raw, auto or a duration such as 5m or 1h"
                )),
            },
        }
    }
}

/// The namespace `/api/v1/query_exemplars` reads for a range starting at
/// `start_ms` (None: raw). `raw`: raw. `auto`: raw while its retention
/// reaches `start_ms`, else the finest namespace whose retention does
/// (raw when none does). `AtMost(d)`: the coarsest namespace with
/// `R ≤ d` whose retention reaches `start_ms` (raw when none does).
pub fn exemplar_source(
    namespaces: &[SourceNamespace],
    choice: SourceResolution,
    raw_retention_ms: i64,
    now_ms: i64,
    start_ms: i64,
) -> Option<&SourceNamespace> {
    let reaches = |n: &&SourceNamespace| start_ms >= now_ms.saturating_sub(n.retention_ms);
    match choice {
        SourceResolution::Raw => None,
        SourceResolution::Auto if start_ms >= now_ms.saturating_sub(raw_retention_ms) => None,
        SourceResolution::Auto => namespaces
            .iter()
            .filter(reaches)
            .min_by_key(|n| n.resolution_ms),
        SourceResolution::AtMost(max) => namespaces
            .iter()
            .filter(|n| n.resolution_ms <= max)
            .filter(reaches)
            .max_by_key(|n| n.resolution_ms),
    }
}

/// What the rewrite knows of the query and the store.
#[derive(Debug, Clone)]
pub(crate) struct Sources<'a> {
    pub namespaces: &'a [SourceNamespace],
    pub choice: SourceResolution,
    /// How far back raw samples are kept.
    pub raw_retention_ms: i64,
    pub now_ms: i64,
    /// The query's step (0: an instant query) and earliest evaluation time.
    pub step_ms: i64,
    pub start_ms: i64,
    pub lookback_ms: i64,
}

impl Sources<'_> {
    /// The namespace for a selector reading `range_ms` back from the
    /// query's start (0 for a bare selector, which reads its lookback).
    fn pick(&self, range_ms: i64, bare: bool) -> Option<&SourceNamespace> {
        let reach = self.start_ms - range_ms.max(self.lookback_ms);
        let raw_reaches = reach >= self.now_ms - self.raw_retention_ms;
        let ok = |n: &&SourceNamespace| {
            let r = n.resolution_ms;
            let fits = if bare {
                r <= self.lookback_ms
            } else {
                2 * r <= range_ms
            };
            let by_step = match self.choice {
                SourceResolution::Raw => false,
                SourceResolution::AtMost(max) => r <= max,
                SourceResolution::Auto if self.step_ms == 0 => !raw_reaches,
                SourceResolution::Auto => r <= self.step_ms,
            };
            fits && by_step && reach >= self.now_ms - n.retention_ms
        };
        self.namespaces
            .iter()
            .filter(ok)
            .max_by_key(|n| n.resolution_ms)
    }
}

/// `expr` with the selectors rollups can answer rewritten onto them, and
/// the namespaces read (coarsest first); `None` when nothing is rewritten.
pub(crate) fn rewrite(expr: &Expr, s: &Sources<'_>) -> Option<(Expr, Vec<SourceNamespace>)> {
    if s.namespaces.is_empty() || s.choice == SourceResolution::Raw {
        return None;
    }
    let mut e = expr.clone();
    let mut used = Vec::new();
    walk(&mut e, s, &mut used);
    if used.is_empty() {
        return None;
    }
    used.sort_by_key(|n: &SourceNamespace| std::cmp::Reverse(n.resolution_ms));
    used.dedup();
    Some((e, used))
}

fn walk(e: &mut Expr, s: &Sources<'_>, used: &mut Vec<SourceNamespace>) {
    match e {
        Expr::Paren(p) => walk(&mut p.expr, s, used),
        Expr::Unary(u) => walk(&mut u.expr, s, used),
        Expr::Binary(b) => {
            walk(&mut b.lhs, s, used);
            walk(&mut b.rhs, s, used);
        }
        Expr::Aggregate(a) => {
            walk(&mut a.expr, s, used);
            if let Some(p) = &mut a.param {
                walk(p, s, used);
            }
        }
        Expr::VectorSelector(vs) => {
            if vs.at.is_none() {
                if let Some(n) = s.pick(0, true) {
                    route(vs, n, "last");
                    used.push(n.clone());
                }
            }
        }
        Expr::Call(c) => {
            if let Some(new) = call(c, s, used) {
                *e = new;
                return;
            }
            for a in c.args.args.iter_mut() {
                walk(a, s, used);
            }
        }
        // Subqueries are evaluated at their own steps: read raw.
        Expr::Subquery(_)
        | Expr::MatrixSelector(_)
        | Expr::NumberLiteral(_)
        | Expr::StringLiteral(_)
        | Expr::Extension(_) => {}
    }
}

/// Adds the namespace and rollup matchers to `vs`.
fn route(vs: &mut VectorSelector, n: &SourceNamespace, rollup: &str) {
    let add = |m: &mut Vec<Matcher>| {
        m.push(Matcher::new(MatchOp::Equal, NAMESPACE_LABEL, &n.name));
        m.push(Matcher::new(MatchOp::Equal, ROLLUP_LABEL, rollup));
    };
    add(&mut vs.matchers.matchers);
    for g in vs.matchers.or_matchers.iter_mut() {
        add(g);
    }
}

/// A range function over one matrix selector, rewritten onto rollups.
fn call(c: &Call, s: &Sources<'_>, used: &mut Vec<SourceNamespace>) -> Option<Expr> {
    let [arg] = c.args.args.as_slice() else {
        return None;
    };
    let Expr::MatrixSelector(ms) = arg.as_ref() else {
        return None;
    };
    let (rollup, func) = match c.func.name {
        "sum_over_time" => ("sum", "sum_over_time"),
        "count_over_time" => ("count", "sum_over_time"),
        "min_over_time" => ("min", "min_over_time"),
        "max_over_time" => ("max", "max_over_time"),
        "last_over_time" => ("last", "last_over_time"),
        "increase" | "rate" => ("increase", "sum_over_time"),
        "resets" => ("resets", crate::kernels::range::ROLLUP_RESETS),
        // Σsum ÷ Σcount is matched on the labels without the metric name:
        // only a selector of one metric keeps its series apart.
        "avg_over_time" if one_metric(&ms.vs) => ("", ""),
        _ => return None,
    };
    if ms.vs.at.is_some() {
        return None;
    }
    let range_ms = ms.range.as_millis() as i64;
    let n = s.pick(range_ms, false)?.clone();
    let over = |rollup: &str, func: &'static str| {
        let mut ms: MatrixSelector = ms.clone();
        route(&mut ms.vs, &n, rollup);
        range_fn(func, ms)
    };
    let out = match c.func.name {
        "avg_over_time" => div(over("sum", "sum_over_time"), over("count", "sum_over_time")),
        "rate" => div(
            over(rollup, func),
            Expr::NumberLiteral(NumberLiteral::new(range_ms as f64 / 1000.0)),
        ),
        _ => over(rollup, func),
    };
    used.push(n);
    Some(out)
}

/// Whether `vs` selects a single metric name.
fn one_metric(vs: &VectorSelector) -> bool {
    vs.name.is_some()
        || vs
            .matchers
            .matchers
            .iter()
            .any(|m| m.name == "__name__" && m.op == MatchOp::Equal)
}

fn range_fn(name: &'static str, ms: MatrixSelector) -> Expr {
    Expr::Call(Call {
        func: Function {
            name,
            arg_types: vec![ValueType::Matrix],
            variadic: 0,
            return_type: ValueType::Vector,
            experimental: false,
        },
        args: FunctionArgs {
            args: vec![Box::new(Expr::MatrixSelector(ms))],
        },
    })
}

fn div(lhs: Expr, rhs: Expr) -> Expr {
    Expr::Paren(ParenExpr {
        expr: Box::new(Expr::Binary(BinaryExpr {
            op: TokenType::new(T_DIV),
            lhs: Box::new(lhs),
            rhs: Box::new(rhs),
            modifier: None,
        })),
    })
}

#[cfg(test)]
mod tests {

    #[test]
    fn exemplars_read_raw_while_it_reaches_else_the_finest_that_does() {
        let day = 86_400_000;
        let ns = |name: &str, r: i64, ret: i64| SourceNamespace {
            name: name.into(),
            resolution_ms: r,
            retention_ms: ret,
            lag_ms: 0,
        };
        let all = [
            ns("agg_5m_1y", 300_000, 365 * day),
            ns("agg_1h_5y", 3_600_000, 5 * 365 * day),
        ];
        let now = 1000 * day;
        let pick = |c: SourceResolution, start: i64| {
            exemplar_source(&all, c, 30 * day, now, start).map(|n| n.name.as_str())
        };
        assert_eq!(pick(SourceResolution::Auto, now - 7 * day), None);
        assert_eq!(
            pick(SourceResolution::Auto, now - 90 * day),
            Some("agg_5m_1y")
        );
        assert_eq!(
            pick(SourceResolution::Auto, now - 400 * day),
            Some("agg_1h_5y")
        );
        assert_eq!(
            pick(SourceResolution::Auto, now - 9000 * day),
            None,
            "none reaches: raw"
        );
        assert_eq!(pick(SourceResolution::Raw, now - 400 * day), None);
        assert_eq!(
            pick(SourceResolution::AtMost(3_600_000), now - day),
            Some("agg_1h_5y")
        );
        assert_eq!(
            pick(SourceResolution::AtMost(600_000), now - day),
            Some("agg_5m_1y")
        );
        assert_eq!(
            pick(SourceResolution::AtMost(600_000), now - 400 * day),
            None
        );
    }
    use super::*;

    const M: i64 = 60_000;
    const H: i64 = 60 * M;
    const DAY: i64 = 24 * H;

    fn namespaces() -> Vec<SourceNamespace> {
        vec![
            SourceNamespace {
                name: "agg_5m_1y".into(),
                resolution_ms: 5 * M,
                retention_ms: 365 * DAY,
                lag_ms: 12 * M,
            },
            SourceNamespace {
                name: "agg_1h_5y".into(),
                resolution_ms: H,
                retention_ms: 5 * 365 * DAY,
                lag_ms: 2 * H + 2 * M,
            },
        ]
    }

    /// The rewritten query as text, or None.
    fn rw(q: &str, step: i64, choice: SourceResolution) -> Option<String> {
        let ns = namespaces();
        let now = 1000 * DAY;
        let s = Sources {
            namespaces: &ns,
            choice,
            raw_retention_ms: 30 * DAY,
            now_ms: now,
            step_ms: step,
            start_ms: now - 7 * DAY,
            lookback_ms: 5 * M,
        };
        let e = promql_parser::parser::parse(q).unwrap();
        rewrite(&e, &s).map(|(e, _)| e.to_string())
    }

    const AUTO: SourceResolution = SourceResolution::Auto;

    #[test]
    fn functions_map_onto_the_coarsest_rollup_that_suits_the_step_and_range() {
        assert_eq!(
            rw("sum_over_time(x[1d])", H, AUTO).unwrap(),
            r#"sum_over_time(x{__namespace__="agg_1h_5y",__rollup__="sum"}[1d])"#
        );
        // A 1h range is under 2 × 1h: the 5m rollup.
        assert_eq!(
            rw("count_over_time(x[1h])", H, AUTO).unwrap(),
            r#"sum_over_time(x{__namespace__="agg_5m_1y",__rollup__="count"}[1h])"#
        );
        assert_eq!(
            rw("avg_over_time(x[1d])", H, AUTO).unwrap(),
            r#"(sum_over_time(x{__namespace__="agg_1h_5y",__rollup__="sum"}[1d]) / sum_over_time(x{__namespace__="agg_1h_5y",__rollup__="count"}[1d]))"#
        );
        assert_eq!(
            rw("sum by (job) (rate(x[1h]))", 5 * M, AUTO).unwrap(),
            r#"sum by (job) ((sum_over_time(x{__namespace__="agg_5m_1y",__rollup__="increase"}[1h]) / 3600))"#
        );
        // Several metrics' averages would collide in Σsum ÷ Σcount: raw.
        assert_eq!(rw(r#"avg_over_time({job="a"}[1d])"#, H, AUTO), None);
        assert!(rw(r#"avg_over_time({__name__="x"}[1d])"#, H, AUTO).is_some());
        // A step under 5m, a raw-only function, a subquery: raw.
        assert_eq!(rw("rate(x[1h])", M, AUTO), None);
        assert_eq!(rw("quantile_over_time(0.9, x[1d])", H, AUTO), None);
        assert_eq!(rw("max_over_time(rate(x[1h])[1d:1h])", H, AUTO), None);
        // A bare selector reads the last rollup when R ≤ lookback.
        assert_eq!(
            rw("x", H, AUTO).unwrap(),
            r#"x{__namespace__="agg_5m_1y",__rollup__="last"}"#
        );
    }

    #[test]
    fn max_source_resolution_forces_or_forbids() {
        assert_eq!(rw("sum_over_time(x[1d])", H, SourceResolution::Raw), None);
        assert_eq!(
            rw("sum_over_time(x[1d])", M, SourceResolution::AtMost(5 * M)).unwrap(),
            r#"sum_over_time(x{__namespace__="agg_5m_1y",__rollup__="sum"}[1d])"#
        );
        // Instant queries read rollups only where raw no longer reaches.
        assert_eq!(rw("sum_over_time(x[1d])", 0, AUTO), None);
        assert!(rw("sum_over_time(x[40d])", 0, AUTO)
            .unwrap()
            .contains("agg_1h_5y"));
        for (text, want) in [
            ("auto", AUTO),
            ("raw", SourceResolution::Raw),
            ("0s", SourceResolution::Raw),
            ("5m", SourceResolution::AtMost(5 * M)),
            ("1h", SourceResolution::AtMost(H)),
        ] {
            assert_eq!(text.parse::<SourceResolution>().unwrap(), want);
        }
        let e = "fast".parse::<SourceResolution>().unwrap_err();
        assert!(e.contains("\"fast\""), "{e}");
    }
}
