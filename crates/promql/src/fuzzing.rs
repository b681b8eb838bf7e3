//! Fuzzing entry points for PromQL text from users (used by the targets in
//! `fuzz/fuzz_targets/` and replayed over the committed corpus by this
//! module's tests). Not an API.

use crate::engine::{Engine, EngineOptions};
use crate::value::{QueryError, QueryResult, Value};
use cairn_common::{Labels, MemStore};
use std::sync::OnceLock;
use std::time::Duration;

/// Longest query text the targets evaluate: longer inputs only slow the
/// fuzzer down (the length and nesting bounds have their own tests).
pub const MAX_EVAL_LEN: usize = 4096;

/// Bounds for a fuzzed query: it must fail cleanly rather than run long.
fn options() -> EngineOptions {
    EngineOptions {
        max_samples: 200_000,
        timeout: Duration::from_secs(2),
        ..EngineOptions::default()
    }
}

/// For the fuzz targets, called once at start: under libFuzzer every panic
/// aborts, even one the code catches. promql-parser's panic on a duration it
/// cannot hold (`offset 6e33`) is caught by [`crate::engine::parse_bounded`] and
/// answered as a parse error, so that one is let through; any other panic
/// still aborts, and a let-through panic nothing catches still ends the run
/// (libFuzzer's wrapper aborts on an unwinding input).
pub fn tolerate_caught_parser_panics() {
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !info
            .to_string()
            .contains("cannot convert float seconds to Duration")
        {
            prev(info);
        }
    }));
}

/// Parsing, and evaluating over an empty store, must never panic.
pub fn parse(data: &[u8]) {
    let Ok(q) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(e) = crate::engine::parse(q) {
        let _ = e.to_string();
    }
    if q.len() > MAX_EVAL_LEN {
        return;
    }
    let store = MemStore::new();
    let engine = Engine::new(options());
    let _ = engine.instant_query(&store, "t", q, 1_000_000);
    let _ = engine.range_query(&store, "t", q, 0, 600_000, 60_000);
}

/// A small fixed dataset: counters, gauges with specials and a staleness
/// marker, a series that starts late and one that ends early, over 0..10m.
fn dataset() -> &'static MemStore {
    static DATA: OnceLock<MemStore> = OnceLock::new();
    DATA.get_or_init(|| {
        let m = MemStore::new();
        let l = |p: &[(&str, &str)]| Labels::from_pairs(p);
        let specials = [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -0.0, 1e308];
        for (i, &(job, inst)) in [("a", "1"), ("a", "2"), ("b", "1")].iter().enumerate() {
            let up = l(&[("__name__", "up"), ("job", job), ("instance", inst)]);
            let req = l(&[
                ("__name__", "http_requests_total"),
                ("job", job),
                ("instance", inst),
                ("code", if i == 1 { "500" } else { "200" }),
            ]);
            let le = format!("{}", i + 1);
            let g = l(&[("__name__", "temp"), ("job", job), ("le", le.as_str())]);
            for k in 0..=40i64 {
                let t = k * 15_000 + i as i64 * 1_000;
                m.add("t", &up, t, if k % 13 == 7 { 0.0 } else { 1.0 });
                if !(i == 2 && k < 10) {
                    // A counter reset at k = 25.
                    let c = if k < 25 { k * (i as i64 + 1) } else { k - 25 };
                    m.add("t", &req, t, c as f64);
                }
                if !(i == 0 && k > 30) {
                    let v = if k % 11 == 3 {
                        specials[(k as usize + i) % specials.len()]
                    } else {
                        (k as f64 - 20.0) * 0.5 + i as f64
                    };
                    m.add("t", &g, t, v);
                }
            }
        }
        // A stale marker (Prometheus's special NaN) ends one series.
        let up = l(&[("__name__", "up"), ("job", "a"), ("instance", "2")]);
        m.add("t", &up, 601_000, f64::from_bits(0x7ff0_0000_0000_0002));
        m
    })
}

/// A query over [`dataset`]: instant at a few times, range with small
/// bounded steps; the series-wise evaluation must agree with the
/// step-by-step one. Inputs over [`MAX_EVAL_LEN`] bytes are skipped.
pub fn eval(data: &[u8]) {
    let Ok(q) = std::str::from_utf8(data) else {
        return;
    };
    if q.len() > MAX_EVAL_LEN {
        return;
    }
    let src = dataset();
    let engine = Engine::new(options());
    for t in [0, 300_000, 610_000] {
        let _ = engine.instant_query(src, "t", q, t);
    }
    let mut step_by_step = Engine::new(options());
    step_by_step.fold_and_serieswise = false;
    for (start, end, step) in [(0, 600_000, 60_000), (7_000, 400_000, 17_000)] {
        let a = engine.range_query(src, "t", q, start, end, step);
        let b = step_by_step.range_query(src, "t", q, start, end, step);
        same_result(q, &a, &b);
    }
}

/// Two evaluations of `q` agree: both errors, or the same series and
/// timestamps with values equal (NaN equal to NaN, tiny rounding allowed).
fn same_result(q: &str, a: &Result<QueryResult, QueryError>, b: &Result<QueryResult, QueryError>) {
    let (a, b) = match (a, b) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(_), Err(_)) => return,
        // Either ran out of time or samples first: nothing to compare.
        (Err(QueryError::Timeout(_) | QueryError::TooManySamples(_)), _)
        | (_, Err(QueryError::Timeout(_) | QueryError::TooManySamples(_))) => return,
        (a, b) => panic!("{q}: series-wise {a:?} vs step-by-step {b:?}"),
    };
    let (Value::Matrix(x), Value::Matrix(y)) = (&a.value, &b.value) else {
        assert_eq!(a.value.type_name(), b.value.type_name(), "{q}");
        return;
    };
    assert_eq!(x.len(), y.len(), "{q}: {x:?} vs {y:?}");
    for (sx, sy) in x.iter().zip(y) {
        assert_eq!(sx.labels, sy.labels, "{q}");
        assert_eq!(sx.samples.len(), sy.samples.len(), "{q} {}", sx.labels);
        for (p, r) in sx.samples.iter().zip(&sy.samples) {
            assert_eq!(p.t, r.t, "{q} {}", sx.labels);
            let same = (p.v.is_nan() && r.v.is_nan())
                || p.v == r.v
                || (p.v - r.v).abs() <= 1e-9 * p.v.abs().max(r.v.abs());
            assert!(same, "{q} {} at {}: {} vs {}", sx.labels, p.t, p.v, r.v);
        }
    }
}

#[cfg(test)]
mod tests {
    fn replay(target: &str, f: impl Fn(&[u8])) {
        cairn_common::fuzz_replay::replay(env!("CARGO_MANIFEST_DIR"), target, f);
    }

    #[test]
    fn promql_parse_corpus() {
        replay("promql_parse", super::parse);
    }

    #[test]
    fn promql_eval_corpus() {
        replay("promql_eval", super::eval);
    }
}
