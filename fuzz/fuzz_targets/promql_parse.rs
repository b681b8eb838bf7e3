//! PromQL text from users: parsing and evaluating over an empty store must
//! never panic. Run with: cargo fuzz run promql_parse
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(q) = std::str::from_utf8(data) else { return };
    let store = cairn_common::MemSource::new();
    let engine = cairn_promql::Engine::new(cairn_promql::EngineOptions::default());
    let _ = engine.instant_query(&store, "t", q, 1_000_000);
    let _ = engine.range_query(&store, "t", q, 0, 600_000, 60_000);
});
