//! cairn-codec (to be built).
