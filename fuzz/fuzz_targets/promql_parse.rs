//! PromQL text from users, parsed (and evaluated over an empty store): see
//! `cairn_promql::fuzzing::parse`. Run with: cargo +nightly fuzz run promql_parse
#![no_main]
libfuzzer_sys::fuzz_target!(
    init: cairn_promql::fuzzing::tolerate_caught_parser_panics(),
    |data: &[u8]| cairn_promql::fuzzing::parse(data)
);
