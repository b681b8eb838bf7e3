//! A downsampled row's key and value: see
//! `cairn_downsample::fuzzing::row_decode` (decodes or errs, never panics;
//! what decodes re-encodes to the same bytes).
//! Run with: cargo +nightly fuzz run downsample_row_decode
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| cairn_downsample::fuzzing::row_decode(data));
