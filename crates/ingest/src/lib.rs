//! cairn-ingest (to be built).
