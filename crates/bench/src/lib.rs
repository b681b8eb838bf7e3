//! `cairn-bench`: the load generator behind `cairn-loadgen` and the
//! side-by-side benchmark driver (`benches/compare`).
//!
//! Owns: seeded workload generation ([`workload`]), hand-rolled remote-write
//! 1.0 encoding ([`encode`]), the HTTP senders ([`send`]) and the PromQL
//! query workload ([`query`]). It talks to servers over HTTP only.
//!
//! Must never depend on: any Cairn server crate (storage, ingest, api…):
//! the generator measures Cairn from the outside, as it measures
//! Prometheus and VictoriaMetrics. `cairn-proto` is used for metadata and
//! in tests to prove the wire format.

pub mod encode;
pub mod query;
pub mod rng;
pub mod send;
pub mod workload;
