//! PromQL evaluated over a small fixed dataset, instant and range (the
//! series-wise evaluation checked against the step-by-step one): see
//! `cairn_promql::fuzzing::eval`. Run with: cargo +nightly fuzz run promql_eval
#![no_main]
libfuzzer_sys::fuzz_target!(
    init: cairn_promql::fuzzing::tolerate_caught_parser_panics(),
    |data: &[u8]| cairn_promql::fuzzing::eval(data)
);
