//! Index values (series registry entries, postings and their merge): see
//! `cairn_storage::fuzzing::index_decode`.
//! Run with: cargo +nightly fuzz run index_decode
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| cairn_storage::fuzzing::index_decode(data));
