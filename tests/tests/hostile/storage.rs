//! Hostile inputs: storage. Shared helpers in `hostile.rs`.

#[allow(unused_imports)]
use super::*;
