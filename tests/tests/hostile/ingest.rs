//! Hostile inputs: ingest. Shared helpers in `hostile.rs`.

#[allow(unused_imports)]
use super::*;
