//! Remote write (`POST /api/v1/write`, `/api/v1/prom/remote/write`): the
//! request's headers are negotiated and its body decoded by `cairn-ingest`
//! (on the blocking pool, together with the write), the batch goes to the
//! store's `SampleWriter`. Answers in plain text as Prometheus's receiver
//! does: 204 when all is stored; 400 (never retried) naming each refused
//! series while the valid rest is stored; 413, 415; 503/500 from the store.

use crate::error::{ApiError, Result};
use crate::extract::{Ready, Tenant};
use crate::state::{blocking, AppState};
use axum::body::Bytes;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use std::fmt::Write as _;

/// Refused series listed in a 400 answer; the rest are counted.
const MAX_LISTED: usize = 20;

/// A request whose `Content-Type` and `Content-Encoding` are remote write
/// 1.0's ([`cairn_ingest::check_write_headers`]); else rejected with 415.
pub(crate) struct RemoteWrite1;

impl<S: Send + Sync> FromRequestParts<S> for RemoteWrite1 {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self> {
        let hv = |name| parts.headers.get(name).and_then(|v| v.to_str().ok());
        cairn_ingest::check_write_headers(hv(header::CONTENT_TYPE), hv(header::CONTENT_ENCODING))?;
        Ok(RemoteWrite1)
    }
}

pub(crate) async fn remote_write(
    State(st): State<AppState>,
    Ready(backend): Ready,
    _: RemoteWrite1,
    Tenant(tenant, _turn): Tenant,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Result<Response> {
    let level = write_level(&headers, st.0.cfg.write_consistency)?;
    // A turn first: each write in flight holds its decoded body until stored.
    // One tenant holds at most all turns but one (when there are several),
    // so a tenant flooding the node — even with requests its rate will
    // refuse, which are decoded first — leaves a turn for the others.
    let wait = st.0.cfg.write_queue_wait;
    let share = st.0.tenants.write_share(&tenant, st.0.write_slots);
    let turns = async {
        let mine = share.sem.clone().acquire_owned().await?;
        let any = st.0.writes.clone().acquire_owned().await?;
        Ok::<_, tokio::sync::AcquireError>((mine, any))
    };
    let turn = match tokio::time::timeout(wait, turns).await {
        Ok(Ok(permits)) => permits,
        _ => {
            return Err(ApiError::text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "too many concurrent writes: {} running (ingest.max-concurrency) and this one waited {wait:?} (ingest.max-queue-duration); retry later",
                    st.0.write_slots
                ),
            ))
        }
    };
    let limits = st.0.cfg.ingest.clone();
    let now = chrono::Utc::now().timestamp_millis();
    let tenants = st.0.tenants.clone();
    let t = tenants.directory.view().tenant(&tenant);
    let max_bytes = t.limits.max_request_bytes;
    if max_bytes > 0 && body.len() as u64 > max_bytes {
        return Err(ApiError::text(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the request body is {} bytes, above tenant {tenant:?}'s limit of {max_bytes} bytes (err-cairn-max-request-bytes). {}",
                body.len(),
                cairn_tenancy::adjust(&tenant, "max_request_bytes")
            ),
        ));
    }
    // Decoding a large body is CPU work: off the async workers, with the
    // tenant's gate and the write.
    let writer = backend.writer;
    let gate_tenants = tenants.clone();
    let tenant_id = tenant.clone();
    // Rollup inputs are copied while there are aggregated namespaces.
    let horizon = st.0.cfg.rollup_input_horizon_ms;
    let known = st.0.known_labels.clone();
    let ((n_samples, received, invalid, gated), outcome, (rollup_drops, rollup_tally)) =
        blocking(move || {
            let (mut batch, invalid) =
                cairn_ingest::decode_known(&tenant, &body, &limits, now, Some(&known))?;
            let n_samples = batch.sample_count() as u64;
            let received = n_samples
                + batch
                    .series
                    .iter()
                    .map(|s| s.exemplars.len() as u64)
                    .sum::<u64>();
            let attribution = t.attribution_label.as_deref();
            if let Some(l) = attribution {
                gate_tenants.metrics.attribute(&t.id, l, &batch, false);
            }
            let gated = gate_tenants
                .gate
                .admit(&t, &mut batch, std::time::Instant::now());
            if let (Some(l), Ok(_)) = (attribution, &gated) {
                gate_tenants.metrics.attribute(&t.id, l, &batch, true);
            }
            // Rollup rules: the matched inputs copied to their outputs' shards
            // (written first: a downsampling pass that misses them then sees the
            // raw write mark their windows), dropped from raw where the rule says.
            let mut rollup_drops = Vec::new();
            let mut rollup_tally = Vec::new();
            let copies = match (&gated, horizon) {
                (Ok(_), Some(h)) if !t.rollups.is_empty() => rollup_copies(
                    &t,
                    &tenant,
                    now - h,
                    &mut batch,
                    &mut rollup_drops,
                    &mut rollup_tally,
                ),
                _ => None,
            };
            if let Some(c) = copies {
                let req = cairn_storage_api::WriteRequest::new(tenant.clone(), c)
                    .with_namespace(cairn_storage_api::ROLLUP_INPUTS_NAMESPACE)
                    .with_consistency(level);
                if let Err(e) = cairn_storage_api::block_on(writer.write(req)) {
                    return Ok((
                        (n_samples, received, invalid, gated),
                        Some(Err(e)),
                        (rollup_drops, rollup_tally),
                    ));
                }
            }
            let outcome =
                if gated.is_err() || (batch.series.is_empty() && batch.metadata.is_empty()) {
                    None
                } else {
                    // The turn goes back once the batch is applied: waiting for the
                    // fsync takes no CPU and holds no decoded body. (Otherwise it
                    // goes when this closure ends.)
                    let req = cairn_storage_api::WriteRequest::new(tenant.clone(), batch)
                        .with_consistency(level)
                        .on_applied(move || drop(turn));
                    Some(cairn_storage_api::block_on(writer.write(req)))
                };
            Ok::<_, cairn_ingest::IngestError>((
                (n_samples, received, invalid, gated),
                outcome,
                (rollup_drops, rollup_tally),
            ))
        })
        .await??;
    let tenant = tenant_id;
    let m = &st.0.metrics;
    let tm = &tenants.metrics;
    let n_invalid: u64 = invalid.iter().map(|i| i.samples as u64).sum();
    m.samples_invalid.inc_by(n_invalid);
    tm.received
        .get_or_create(&crate::tenancy::TenantLabel {
            tenant: tenant.clone(),
        })
        .inc_by(received);
    tm.discard(&tenant, cairn_tenancy::Reason::InvalidSeries, n_invalid);
    let admitted = match gated {
        Ok(a) => a,
        Err(over) => {
            let (reason, retry_after, body, by_rule) = match over {
                cairn_tenancy::OverLimit::Rate {
                    retry_after,
                    message,
                    samples,
                    by_rule,
                } => {
                    let _ = samples;
                    (
                        cairn_tenancy::Reason::RateLimited,
                        cairn_tenancy::retry_after_secs(retry_after),
                        message,
                        by_rule,
                    )
                }
                // Waiting never helps; the longest Retry-After slows a
                // sender that retries 429s anyway.
                cairn_tenancy::OverLimit::Burst { message, .. } => (
                    cairn_tenancy::Reason::BurstExceeded,
                    96,
                    message,
                    Vec::new(),
                ),
            };
            tm.discard(&tenant, reason, received);
            tm.rules(&tenant, &by_rule);
            return Err(ApiError::Limited {
                body: format!("{body}\n"),
                retry_after,
            });
        }
    };
    for (reason, n) in &admitted.discarded {
        tm.discard(&tenant, *reason, *n);
    }
    if let Some(n) = tenants.gate.active_series(&tenant) {
        tm.active_series
            .get_or_create(&crate::tenancy::TenantLabel {
                tenant: tenant.clone(),
            })
            .set(n as i64);
    }
    tm.rules(&tenant, &admitted.by_rule);
    tm.rules(&tenant, &rollup_drops);
    tm.rollups(&tenant, &rollup_tally);
    // A refused series is echoed cut short: it may hold thousands of labels.
    let shown = |s: &str| cairn_common::limits::truncate_str(s, 512).into_owned();
    let mut problems: Vec<String> = invalid
        .iter()
        .map(|i| format!("series {}: {}", shown(&i.series), i.reason))
        .collect();
    problems.extend(
        admitted
            .refused
            .iter()
            .map(|r| format!("series {}: {}", r.series, r.reason)),
    );
    if let Some(outcome) = outcome {
        let outcome = outcome.map_err(|e| {
            let status =
                StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            if status != StatusCode::BAD_REQUEST {
                tracing::warn!(?e, "remote write failed in storage");
            }
            ApiError::text(status, format!("storage error: {e}"))
        })?;
        m.samples_received.inc_by(n_samples);
        m.exemplars_received
            .inc_by(outcome.accepted_exemplars as u64);
        let rejected: u64 = outcome.rejections.iter().map(|r| r.samples as u64).sum();
        m.samples_rejected.inc_by(rejected);
        tm.stored
            .get_or_create(&crate::tenancy::TenantLabel {
                tenant: tenant.clone(),
            })
            .inc_by(outcome.accepted_samples as u64);
        tm.discard(&tenant, cairn_tenancy::Reason::StoreRejected, rejected);
        problems.extend(
            outcome
                .rejections
                .iter()
                .map(|r| format!("series {}: {}", shown(&r.series), r.reason)),
        );
    }
    if problems.is_empty() {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let total = problems.len();
    let mut body = String::new();
    for p in problems.iter().take(MAX_LISTED) {
        let _ = writeln!(body, "{p}");
    }
    if total > MAX_LISTED {
        let _ = writeln!(body, "... and {} more invalid series", total - MAX_LISTED);
    }
    let _ = write!(body, "(the valid rest of the request was stored)");
    Err(ApiError::text(StatusCode::BAD_REQUEST, body))
}

/// The header that sets a write's consistency level.
pub(crate) const WRITE_CONSISTENCY_HEADER: &str = "x-cairn-write-consistency";

/// The request's write level: its `X-Cairn-Write-Consistency` header, else
/// the configured default; an unknown level is a 400 naming the header.
fn write_level(
    headers: &axum::http::HeaderMap,
    default: cairn_storage_api::WriteLevel,
) -> Result<cairn_storage_api::WriteLevel> {
    let Some(v) = headers.get(WRITE_CONSISTENCY_HEADER) else {
        return Ok(default);
    };
    v.to_str()
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| {
            ApiError::text(
                StatusCode::BAD_REQUEST,
                format!(
                    "header X-Cairn-Write-Consistency: {:?} is not a write level (one, majority, all)",
                    String::from_utf8_lossy(v.as_bytes())
                ),
            )
        })
}

/// What one write did with the matches of one rollup rule.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct RuleTally {
    pub rule: String,
    /// Samples copied as the rule's inputs.
    pub copied: u64,
    /// Of those, samples left out of raw (the rule drops its inputs).
    pub dropped: u64,
    /// Samples matched but older than the inputs' horizon: kept in raw,
    /// not rolled up.
    pub too_old: u64,
    /// Ids of the input series whose samples left raw.
    pub inputs_dropped: Vec<u128>,
    /// Ids of the output series written to (without `__input__`), once per
    /// input copied (the usage counts distinct ones).
    pub outputs: Vec<u128>,
}

/// The copies of `batch`'s series that tenant `t`'s rollup rules match,
/// under each output's labels and the input's id (see `cairn-tenancy`'s
/// `rollup`), of their samples at or after `horizon` (older ones stay in
/// raw, counted as too old); those inputs of a `drop_inputs` rule leave
/// `batch`, their samples counted in `drops` as `rollup:<rule>`; what each
/// rule did is added to `tally`.
fn rollup_copies(
    t: &cairn_tenancy::TenantView,
    tenant: &str,
    horizon: i64,
    batch: &mut cairn_common::PreparedBatch,
    drops: &mut Vec<(String, bool, u64)>,
    tally: &mut Vec<RuleTally>,
) -> Option<cairn_common::PreparedBatch> {
    let rules = &t.rollups;
    let mut copies = Vec::new();
    batch.series.retain_mut(|s| {
        let hit = rules.matching(s.labels.pairs());
        if hit.is_empty() || s.samples.is_empty() {
            return true;
        }
        let fresh = s.samples.iter().filter(|x| x.t >= horizon).count();
        let old = s.samples.len() - fresh;
        let input = format!("{:032x}", s.id.0);
        let mut drop_fresh = false;
        for i in hit {
            let r = rules.rule(i);
            let at = match tally.iter().position(|x| x.rule == r.name) {
                Some(at) => at,
                None => {
                    tally.push(RuleTally {
                        rule: r.name.clone(),
                        ..RuleTally::default()
                    });
                    tally.len() - 1
                }
            };
            let rt = &mut tally[at];
            rt.too_old += old as u64;
            if fresh == 0 {
                continue;
            }
            let pairs = rules.output_pairs(i, s.labels.pairs(), &input);
            let output = cairn_common::SeriesId::of_pairs(
                tenant,
                pairs
                    .iter()
                    .copied()
                    .filter(|(n, _)| *n != cairn_common::INPUT_LABEL),
            );
            rt.copied += fresh as u64;
            rt.outputs.push(output.0);
            copies.push(cairn_common::SeriesWrite {
                labels: cairn_common::Labels::from_pairs(&pairs),
                samples: s
                    .samples
                    .iter()
                    .filter(|x| x.t >= horizon)
                    .copied()
                    .collect(),
                exemplars: vec![],
            });
            if r.drop_inputs {
                drop_fresh = true;
                rt.dropped += fresh as u64;
                rt.inputs_dropped.push(s.id.0);
                let name = format!("rollup:{}", r.name);
                match drops.iter_mut().find(|(n, _, _)| *n == name) {
                    Some((_, _, c)) => *c += fresh as u64,
                    None => drops.push((name, false, fresh as u64)),
                }
            }
        }
        if drop_fresh {
            // What was rolled up leaves raw; samples too old to roll up stay.
            s.samples.retain(|x| x.t < horizon);
        }
        !s.samples.is_empty()
    });
    (!copies.is_empty()).then(|| cairn_common::PreparedBatch::from_series(tenant, copies, vec![]))
}

#[cfg(test)]
mod tests {
    use crate::state::ApiConfig;
    use crate::test_util::{app_with, call};
    use axum::body::Body;
    use axum::http::Request;
    use std::time::Duration;

    fn write_req() -> Request<Body> {
        Request::post(crate::path::WRITE)
            .header("content-type", "application/x-protobuf")
            .header("content-encoding", "snappy")
            .body(Body::from(vec![0xffu8; 8]))
            .unwrap()
    }

    #[tokio::test]
    async fn a_write_waits_for_its_turn_and_gets_503_naming_the_limit() {
        let cfg = ApiConfig {
            write_concurrency: 1,
            write_queue_wait: Duration::from_millis(50),
            ..ApiConfig::default()
        };
        let (app, st) = app_with(std::sync::Arc::new(cairn_common::MemStore::new()), cfg);
        let held = st.0.writes.acquire().await.unwrap();
        let (status, body) = call(&app, write_req()).await;
        assert_eq!(status, 503, "{body}");
        assert!(body.contains("ingest.max-concurrency"), "{body}");
        assert!(body.contains("ingest.max-queue-duration"), "{body}");
        drop(held);
        // Its turn now: the (broken) body is decoded and refused on its own merits.
        let (status, body) = call(&app, write_req()).await;
        assert_eq!(status, 400, "{body}");
        // A tenant's share of the turns is kept only while it writes.
        assert!(st.0.tenants.write_shares_is_empty());
    }
}
