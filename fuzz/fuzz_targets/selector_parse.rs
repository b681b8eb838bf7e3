//! `match[]` selectors: see `cairn_api::fuzzing::selector`.
//! Run with: cargo +nightly fuzz run selector_parse
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| cairn_api::fuzzing::selector(data));
