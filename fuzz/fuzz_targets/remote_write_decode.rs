//! Remote-write bodies from the network, through the production decoder:
//! see `cairn_ingest::fuzzing::remote_write`.
//! Run with: cargo +nightly fuzz run remote_write_decode
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| cairn_ingest::fuzzing::remote_write(data));
