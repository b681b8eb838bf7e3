//! A head snapshot's shard file, parsed and its chunks decoded as recovery
//! does: see `cairn_storage::fuzzing::head_snapshot`.
//! Run with: cargo +nightly fuzz run head_snapshot_parse
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| cairn_storage::fuzzing::head_snapshot(data));
