//! Test harness for end-to-end tests (see tests/tests/*.rs).
