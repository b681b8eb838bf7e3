//! A fileset's files made from the input, opened and read: see
//! `cairn_storage::fuzzing::fileset` (files go to a temp dir, under
//! /dev/shm when it exists). Run with: cargo +nightly fuzz run fileset_read
#![no_main]
use std::sync::OnceLock;

static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let dir = DIR.get_or_init(|| {
        let shm = std::path::Path::new("/dev/shm");
        if shm.is_dir() {
            tempfile::tempdir_in(shm)
        } else {
            tempfile::tempdir()
        }
        .expect("creating a temp dir")
    });
    cairn_storage::fuzzing::fileset(dir.path(), data);
});
