//! A downsampled namespace's progress marker: see
//! `cairn_storage::fuzzing::downsample_marker`.
//! Run with: cargo +nightly fuzz run downsample_marker_parse
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| cairn_storage::fuzzing::downsample_marker(data));
