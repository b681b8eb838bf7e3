//! cairn-api (to be built).
