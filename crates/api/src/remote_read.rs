//! Remote read (`POST /api/v1/read`): a snappy-compressed
//! `prometheus.ReadRequest` in, a snappy-compressed `prometheus.ReadResponse`
//! (SAMPLES) out; the codec is `cairn_ingest::remote_read`. At most
//! `query.remote-read-concurrent-limit` run at once and each returns at most
//! `query.remote-read-sample-limit` samples (Prometheus: 10 and 5e7), read in
//! batches so the limit stops a read before it is all held. Errors are plain
//! text, as Prometheus's.

use crate::error::{ApiError, Result};
use crate::extract::{Ready, Tenant};
use crate::state::{blocking_read, AppState};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use cairn_ingest::remote_read::{decode_read_request, ReadResponseBuilder};
use cairn_storage_api::{select_batched, SelectRequest};

pub(crate) async fn remote_read(
    State(st): State<AppState>,
    Ready(backend): Ready,
    Tenant(tenant, _turn): Tenant,
    body: Bytes,
) -> Result<Response> {
    let queries = decode_read_request(&body, st.0.cfg.ingest.max_decoded_size)?;
    let src = backend.reader;
    // At most `query.remote-read-concurrent-limit` remote reads at once
    // (Prometheus: 10): each may hold up to its sample limit in memory.
    let _slot = crate::pool::Slot::take(
        &st.0.remote_reads,
        st.0.cfg.remote_read_concurrent_limit,
    )
    .ok_or_else(|| {
        ApiError::text_cut(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!(
                "remote read: {} remote reads already running (query.remote-read-concurrent-limit); retry later",
                st.0.cfg.remote_read_concurrent_limit
            ),
        )
    })?;
    let max_samples = st.0.cfg.remote_read_sample_limit;
    let out = blocking_read(&st, st.0.cfg.engine.timeout, move |cancel| -> Result<Vec<u8>> {
        let mut resp = ReadResponseBuilder::new();
        let mut total = 0usize;
        // Prometheus answers 400 for this too.
        let over = || {
            ApiError::text_cut(
                StatusCode::BAD_REQUEST,
                &format!("remote read: exceeded sample limit ({max_samples}, query.remote-read-sample-limit)"),
            )
        };
        for (ms, start, end) in &queries {
            let mut exceeded = false;
            // Read in batches so the limit stops the read before it is all held.
            let req = SelectRequest::new(tenant.clone(), ms.clone(), *start, *end);
            select_batched(&*src, req, &mut |batch| {
                for s in batch {
                    total += s.samples.len();
                    if total > max_samples {
                        exceeded = true;
                        return false;
                    }
                    resp.push_series(&s.labels, &s.samples);
                }
                !cancel.load(std::sync::atomic::Ordering::Relaxed)
            })?;
            if exceeded {
                return Err(over());
            }
            resp.finish_query();
        }
        resp.encode()
            .map_err(|e| ApiError::text_cut(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()))
    })
    .await??;
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/x-protobuf"),
            (header::CONTENT_ENCODING, "snappy"),
        ],
        out,
    )
        .into_response())
}
