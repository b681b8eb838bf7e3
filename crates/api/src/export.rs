//! VictoriaMetrics-style `/api/v1/export`: one JSON line per series
//! (`{"metric":…,"values":[…],"timestamps":[…]}`), streamed in chunks as
//! series batches are read on the read pool, so an export is never held
//! whole in memory; a full channel holds the reader back, a client gone or
//! stalled for the query timeout stops it.

use crate::error::{ApiError, Result};
use crate::extract::{PromParams, Ready, Tenant};
use crate::params::ReadArgs;
use crate::render::labels_json;
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use cairn_storage_api::{select_batched, SelectRequest, SeriesReader};
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::sync::atomic::Ordering;

/// A float as VictoriaMetrics's export writes it: a JSON number, or a string
/// for the values JSON cannot hold.
fn export_value(v: f64) -> Value {
    if v.is_finite() {
        serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number)
    } else if v.is_nan() {
        Value::String("NaN".into())
    } else if v > 0.0 {
        Value::String("+Inf".into())
    } else {
        Value::String("-Inf".into())
    }
}

/// `GET|POST /api/v1/export`.
pub(crate) async fn export(
    State(st): State<AppState>,
    Ready(backend): Ready,
    Tenant(tenant, _turn): Tenant,
    PromParams(p): PromParams,
) -> Result<Response> {
    let args = p.read_args(true)?;
    let src = backend.reader;
    let max_samples = st.0.cfg.engine.max_samples;
    let stall = st.0.cfg.engine.timeout;
    // Lines go out in chunks as series batches are read; a full channel
    // holds the reader back, a closed one (client gone) stops it.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<ExportChunk>(4);
    let reads = st.clone();
    let failed = tx.clone();
    tokio::spawn(async move {
        let res = reads
            .0
            .reads
            .run(move |cancel| {
                export_lines(&*src, &tenant, &args, max_samples, stall, &cancel, &tx)
            })
            .await;
        // Refused by the pool or panicked: say so, before or in the stream.
        if let Err(r) = res {
            let status = r.status();
            let msg = match status {
                StatusCode::SERVICE_UNAVAILABLE => "too many concurrent reads (query.max-concurrency, query.max-queued); retry later",
                _ => "export failed: the read panicked",
            };
            let _ = failed.send(Err((status, msg.to_string()))).await;
        }
    });
    // The first chunk decides the status: an error before any line is
    // an ordinary error response; after that the stream is cut.
    let first = match rx.recv().await {
        None => Bytes::new(),
        Some(Ok(b)) => b,
        Some(Err((status, e))) => {
            let kind = if status == StatusCode::UNPROCESSABLE_ENTITY {
                "execution"
            } else if status.is_server_error() && status != StatusCode::INTERNAL_SERVER_ERROR {
                "unavailable"
            } else {
                "internal"
            };
            return Err(ApiError::json(status, kind, e));
        }
    };
    let body = ChunkBody {
        first: Some(first),
        rx,
    };
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/stream+json"),
        )],
        axum::body::Body::new(body),
    )
        .into_response())
}

/// One piece of an export: lines, or why it stopped (with the status to
/// answer when nothing was sent yet).
type ExportChunk = Result<Bytes, (StatusCode, String)>;

/// Export chunk size: lines are sent once this much is buffered.
const EXPORT_CHUNK_BYTES: usize = 256 << 10;

/// Hands `chunk` to the response, waiting while the client reads the ones
/// before it, at most `stall` without progress. False when the client is
/// gone or stalled: the export stops and its read thread is free again.
fn send_chunk(
    tx: &tokio::sync::mpsc::Sender<ExportChunk>,
    mut chunk: ExportChunk,
    stall: std::time::Duration,
    cancel: &std::sync::atomic::AtomicBool,
) -> bool {
    use tokio::sync::mpsc::error::TrySendError;
    let deadline = std::time::Instant::now() + stall;
    let mut nap = std::time::Duration::from_micros(200);
    loop {
        match tx.try_send(chunk) {
            Ok(()) => return true,
            Err(TrySendError::Closed(_)) => return false,
            Err(TrySendError::Full(c)) => {
                if cancel.load(Ordering::Relaxed) {
                    return false;
                }
                if std::time::Instant::now() > deadline {
                    tracing::warn!(
                        ?stall,
                        "export stopped: the client read nothing for the query timeout"
                    );
                    return false;
                }
                chunk = c;
                std::thread::sleep(nap);
                nap = (nap * 2).min(std::time::Duration::from_millis(50));
            }
        }
    }
}

/// Writes the export's JSON lines to `tx` in chunks, reading series in
/// batches; at most `max_samples` samples, else an error ends the stream.
fn export_lines(
    src: &dyn SeriesReader,
    tenant: &str,
    args: &ReadArgs,
    max_samples: usize,
    stall: std::time::Duration,
    cancel: &std::sync::atomic::AtomicBool,
    tx: &tokio::sync::mpsc::Sender<ExportChunk>,
) {
    let mut out = String::new();
    let mut seen = std::collections::HashSet::new();
    let mut total = 0usize;
    let mut failed: Option<(StatusCode, String)> = None;
    let mut gone = false;
    for m in &args.matchers {
        let req = SelectRequest::new(tenant, m.clone(), args.start, args.end);
        let res = select_batched(src, req, &mut |batch| {
            for s in batch {
                if !seen.insert(s.labels.clone()) {
                    continue;
                }
                total += s.samples.len();
                if total > max_samples {
                    failed = Some((StatusCode::UNPROCESSABLE_ENTITY, format!(
                        "export would return more than {max_samples} samples (query.max-samples): narrow match[] or the time range"
                    )));
                    return false;
                }
                let line = json!({
                    "metric": labels_json(&s.labels),
                    "values": s.samples.iter().map(|x| export_value(x.v)).collect::<Vec<_>>(),
                    "timestamps": s.samples.iter().map(|x| x.t).collect::<Vec<_>>(),
                });
                let _ = writeln!(out, "{line}");
                if out.len() >= EXPORT_CHUNK_BYTES {
                    let chunk = Bytes::from(std::mem::take(&mut out));
                    if !send_chunk(tx, Ok(chunk), stall, cancel) {
                        gone = true;
                        return false;
                    }
                }
            }
            !cancel.load(Ordering::Relaxed)
        });
        if let Err(e) = res {
            let status = if e.is_retryable() {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::INTERNAL_SERVER_ERROR
            };
            failed = Some((status, format!("export failed: {e}")));
        }
        if failed.is_none() && !gone && cancel.load(Ordering::Relaxed) {
            // Cut the stream with an error so a partial export never looks whole.
            failed = Some((
                StatusCode::SERVICE_UNAVAILABLE,
                "export cancelled: the server is shutting down".into(),
            ));
        }
        if failed.is_some() || gone {
            break;
        }
    }
    if let Some(e) = failed {
        tracing::warn!(%tenant, err = %e.1, "export stopped");
        let _ = send_chunk(tx, Err(e), stall, cancel);
        return;
    }
    if !out.is_empty() && !gone {
        let _ = send_chunk(tx, Ok(Bytes::from(out)), stall, cancel);
    }
}

/// A response body fed by a channel of chunks; an `Err` chunk aborts it.
struct ChunkBody {
    first: Option<Bytes>,
    rx: tokio::sync::mpsc::Receiver<ExportChunk>,
}

impl http_body::Body for ChunkBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
        if let Some(b) = self.first.take() {
            if !b.is_empty() {
                return std::task::Poll::Ready(Some(Ok(http_body::Frame::data(b))));
            }
        }
        self.rx.poll_recv(cx).map(|c| {
            c.map(|r| {
                r.map(http_body::Frame::data)
                    .map_err(|(_, e)| std::io::Error::other(e))
            })
        })
    }
}
