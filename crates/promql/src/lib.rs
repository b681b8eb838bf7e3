//! cairn-promql (to be built).
