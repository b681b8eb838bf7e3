//! A replica write as a peer sends it (`node.WriteRequest`, packed series
//! included): see `cairn_rpc::fuzzing::replica_write`. Run with:
//! cargo +nightly fuzz run replica_write_decode
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| cairn_rpc::fuzzing::replica_write(data));
