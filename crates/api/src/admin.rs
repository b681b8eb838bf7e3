//! Store administration (`/admin/v1/…`, admin token only): `POST
//! /admin/v1/flush` seals and flushes everything in the head; `POST
//! /admin/v1/snapshot` takes a head snapshot; `GET
//! /admin/v1/cluster` the cluster's members and placement.

use crate::error::{ApiError, Result};
use crate::extract::{AdminCaller, Ready};
use crate::render::success;
use crate::state::blocking;
use axum::response::Response;
use serde_json::json;

pub(crate) async fn flush(_: AdminCaller, Ready(backend): Ready) -> Result<Response> {
    let admin = backend.admin;
    let n = blocking(move || admin.flush())
        .await?
        .map_err(|e| ApiError::internal(format!("flush failed: {e}")))?;
    Ok(success(json!({"filesets_written": n})))
}

/// `POST /admin/v1/snapshot`: a head snapshot now (they are also taken
/// every `storage.snapshot-interval` and at shutdown).
pub(crate) async fn snapshot(_: AdminCaller, Ready(backend): Ready) -> Result<Response> {
    let admin = backend.admin;
    let covers = blocking(move || admin.snapshot())
        .await?
        .map_err(|e| ApiError::internal(format!("head snapshot failed: {e}")))?;
    Ok(success(json!({"covers_segment": covers})))
}

/// `GET /admin/v1/cluster`.
pub(crate) async fn cluster(_: AdminCaller, Ready(backend): Ready) -> Result<Response> {
    match backend.admin.cluster() {
        Some(status) => Ok(success(status.await)),
        None => Err(ApiError::json(
            axum::http::StatusCode::NOT_FOUND,
            "not_found",
            "this node is not in a cluster (no cluster.members configured)",
        )),
    }
}
