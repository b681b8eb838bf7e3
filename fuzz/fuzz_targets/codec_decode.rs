//! Chunk bytes (as read from a fileset's data.db): see
//! `cairn_codec::fuzzing::decode`. Run with: cargo +nightly fuzz run codec_decode
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| cairn_codec::fuzzing::decode(data));
