//! cairn-storage (to be built).
