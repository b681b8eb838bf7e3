//! cairn-bench (to be built).
