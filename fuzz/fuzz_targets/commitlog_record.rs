//! Commit-log bytes as replay reads them (a record payload, and a segment):
//! see `cairn_storage::fuzzing::commitlog_record`.
//! Run with: cargo +nightly fuzz run commitlog_record
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| cairn_storage::fuzzing::commitlog_record(data));
