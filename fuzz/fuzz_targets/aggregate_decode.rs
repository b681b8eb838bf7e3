//! A peer's pushed-down aggregation answer or request
//! (`node.AggregateResponse` / `node.AggregateRequest`): see
//! `cairn_rpc::fuzzing::aggregate`. Run with:
//! cargo +nightly fuzz run aggregate_decode
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| cairn_rpc::fuzzing::aggregate(data));
