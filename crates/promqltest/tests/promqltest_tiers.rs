//! Runs Prometheus's PromQL conformance scripts (kept outside the project,
//! in `../shared/promqltest`, or `$CAIRN_PROMQLTEST_DIR`) against `MemStore`
//! and prints the summary. Failures are reported, not asserted, until the
//! tier passes in full; the stable tier's pass count must not regress below
//! the floor recorded here.

use cairn_promqltest::run_files_mem;
use std::path::PathBuf;

const STABLE: &[&str] = &[
    "selectors",
    "literals",
    "collision",
    "trig_functions",
    "operators",
    "aggregators",
    "functions",
    "staleness",
    "range_queries",
    "histograms",
    "name_label_dropping",
    "native_histograms",
];
const EXPERIMENTAL: &[&str] = &[
    "limit",
    "info",
    "type_and_unit",
    "duration_expression",
    "extended_vectors",
    "fill-modifier",
    "start_timestamps",
];

fn dir() -> Option<PathBuf> {
    let d = std::env::var_os("CAIRN_PROMQLTEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/promqltest")
        });
    d.is_dir().then_some(d)
}

fn run(tier: &[&str]) -> Option<cairn_promqltest::Summary> {
    let Some(d) = dir() else {
        eprintln!("promqltest data not found; set CAIRN_PROMQLTEST_DIR");
        return None;
    };
    let paths: Vec<PathBuf> = tier.iter().map(|n| d.join(format!("{n}.test"))).collect();
    let mut out = Vec::new();
    let s = run_files_mem(&paths, &mut out).expect("reading test files");
    let text = String::from_utf8_lossy(&out);
    if std::env::var_os("CAIRN_PROMQLTEST_VERBOSE").is_some() {
        println!("{text}");
    } else {
        for l in text.lines().filter(|l| l.contains(" passed, ")) {
            println!("{l}");
        }
    }
    Some(s)
}

#[test]
fn stable_tier() {
    if let Some(s) = run(STABLE) {
        println!(
            "stable tier: {} passed, {} failed, {} skipped",
            s.passed, s.failed, s.skipped
        );
        assert!(s.passed > 0);
        assert_eq!(
            s.failed, 0,
            "stable tier regressed; run with CAIRN_PROMQLTEST_VERBOSE=1"
        );
    }
}

#[test]
fn experimental_tier() {
    if let Some(s) = run(EXPERIMENTAL) {
        println!(
            "experimental tier: {} passed, {} failed, {} skipped",
            s.passed, s.failed, s.skipped
        );
    }
}
