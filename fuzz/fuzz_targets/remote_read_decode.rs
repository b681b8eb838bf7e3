//! Remote-read bodies from the network (`POST /api/v1/read`): see
//! `cairn_ingest::fuzzing::remote_read`.
//! Run with: cargo +nightly fuzz run remote_read_decode
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| cairn_ingest::fuzzing::remote_read(data));
