//! Status and health: `status/buildinfo`, `status/config`, `status/flags`
//! (what Grafana and promtool read), `/-/healthy` and `/-/ready` (200 once
//! recovery is complete, 503 before).

use crate::error::ApiError;
use crate::render::success;
use crate::state::AppState;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// The Prometheus version reported by `status/buildinfo`. Grafana reads
/// `version` to decide which query features to offer; Cairn implements the
/// 2.53 API surface, so it reports that and its own version separately.
pub const PROMETHEUS_COMPAT_VERSION: &str = "2.53.0";

pub(crate) async fn buildinfo() -> Response {
    success(json!({
        "version": PROMETHEUS_COMPAT_VERSION,
        "revision": option_env!("CAIRN_GIT_REVISION").unwrap_or("unknown"),
        "branch": option_env!("CAIRN_GIT_BRANCH").unwrap_or("unknown"),
        "buildUser": "cairn",
        "buildDate": option_env!("CAIRN_BUILD_DATE").unwrap_or("unknown"),
        "goVersion": "none (Cairn is written in Rust)",
        "cairnVersion": env!("CARGO_PKG_VERSION"),
    }))
}

pub(crate) async fn status_config(State(st): State<AppState>) -> Response {
    let e = &st.0.cfg.engine;
    let yaml = format!(
        "global:\n  scrape_interval: 1m\n  evaluation_interval: 1m\n  query_log_file: \"\"\n# Cairn does not scrape; query settings: lookback-delta {}ms, max-samples {}, timeout {}ms\n",
        e.lookback_delta_ms,
        e.max_samples,
        e.timeout.as_millis()
    );
    success(json!({ "yaml": yaml }))
}

pub(crate) async fn status_flags(State(st): State<AppState>) -> Response {
    let e = &st.0.cfg.engine;
    success(json!({
        "query.lookback-delta": format!("{}ms", e.lookback_delta_ms),
        "query.max-samples": e.max_samples.to_string(),
        "query.timeout": format!("{}ms", e.timeout.as_millis()),
    }))
}

pub(crate) async fn healthy() -> &'static str {
    "Cairn is Healthy.\n"
}

pub(crate) async fn ready(State(st): State<AppState>) -> Result<Response, ApiError> {
    st.backend()?;
    Ok("Cairn is Ready.\n".into_response())
}
