//! `cairn-api`: the HTTP surface of Cairn.
//!
//! Owns: its config sections (`config`: `http`, `ingest`, `query`, typed,
//! each with a `validate()` naming the bad key), routing ([`router`]; every path written once, `routes::path`),
//! the HTTP server with its connection limits (`server`), the read pool
//! every read runs on (`pool`), one error type rendered as Prometheus's
//! error JSON (`error::ApiError`), extractors for the tenant and
//! Prometheus's parameters (`extract`, `params`; selectors are parsed by
//! `cairn_common::parse_selector`), the JSON
//! Prometheus writes (`render`), and the handlers by area: remote write
//! (`write`), PromQL queries (`query`), series metadata (`metadata`),
//! export (`export`), remote read (`remote_read`), status and health
//! (`status`), admin (`admin`), self-metrics in one `prometheus-client`
//! registry with the one request-metrics layer keyed by matched route
//! (`metrics`). Maps errors to the status
//! codes clients expect (remote write: 400 is never retried, 429/5xx are).
//!
//! Must never depend on: `cairn-storage` or RocksDB — it talks to the store
//! only through the `cairn-common` traits plus the small [`Admin`] trait, so
//! the same router serves an in-process store or a cluster client — nor
//! hold a wire codec: remote-write negotiation and decoding and the
//! remote-read codec are `cairn-ingest`'s, PromQL parsing is
//! `cairn-promql`'s.

mod admin;
mod cardinality;
pub mod config;
mod error;
mod export;
mod extract;
#[doc(hidden)]
pub mod fuzzing;
mod metadata;
mod metrics;
mod metrics_routes;
mod params;
mod pool;
mod process;
mod query;
mod remote_read;
mod render;
mod routes;
mod server;
mod state;
mod status;
mod tenancy;
mod tenants;
#[cfg(test)]
mod test_util;
mod write;

pub use cairn_common::parse_selector;
pub use params::{parse_duration_ms, parse_time_ms};
pub use pool::set_idle_hook;
/// The registry `/metrics` serves ([`Admin::register_metrics`]).
pub use prometheus_client::registry::Registry as MetricsRegistry;
pub use render::{format_float, write_timestamp};
pub use routes::{build, path, read_routes, router, status_routes, write_routes, Routes};
pub use server::{serve, serve_with, ServerOptions};
pub use state::{Admin, ApiConfig, AppState, Backend};
pub use status::PROMETHEUS_COMPAT_VERSION;
pub use tenancy::TenancyConfig;
