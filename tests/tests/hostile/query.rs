//! Hostile inputs: query. Shared helpers in `hostile.rs`.

#[allow(unused_imports)]
use super::*;
