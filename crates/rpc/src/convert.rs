//! Contract types ↔ wire messages, and errors ↔ gRPC statuses. Whatever
//! comes off the wire is checked here: matchers recompiled, label sets
//! rebuilt sorted (empty values dropped), sample columns of equal length.

use crate::node as pb;
use cairn_common::{
    Exemplar, ExemplarSeries, Label, Labels, LazyLabels, MatchOp, Matcher, MetricMetadata,
    MetricType, PreparedBatch, PreparedSeries, Sample, SeriesId, SeriesWrite, WriteOutcome,
    WriteRejection,
};
use cairn_storage_api::{
    AggregateRequest, EncodedChunk, ErrorKind, PartialAggregate, PartialCell, PartialGroup,
    ReadLimits, SampleDigest, SelectHints, SelectRequest, SeriesQuery, SeriesSamples, ShardSet,
    StoreError, StoredSeries, WriteLevel, WriteRequest,
};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// gRPC metadata key saying whether the failed request may be retried.
pub(crate) const RETRYABLE_KEY: &str = "cairn-retryable";

pub(crate) fn status_from(e: &StoreError) -> tonic::Status {
    let mut s = tonic::Status::new(tonic::Code::from(e.kind().grpc_code()), e.message());
    let v = if e.is_retryable() { "1" } else { "0" };
    s.metadata_mut().insert(
        RETRYABLE_KEY,
        tonic::metadata::MetadataValue::from_static(v),
    );
    s
}

pub(crate) fn error_from(s: &tonic::Status) -> StoreError {
    let kind = ErrorKind::from_grpc_code(s.code() as i32);
    let e = StoreError::new(kind, s.message().to_string());
    match s
        .metadata()
        .get(RETRYABLE_KEY)
        .and_then(|v| v.to_str().ok())
    {
        Some("1") => e.with_retryable(true),
        Some("0") => e.with_retryable(false),
        _ => e,
    }
}

fn labels_to(l: &Labels) -> Vec<pb::Label> {
    l.iter()
        .map(|l| pb::Label {
            name: l.name.clone(),
            value: l.value.clone(),
        })
        .collect()
}

fn labels_from(v: Vec<pb::Label>) -> Labels {
    let sorted =
        v.windows(2).all(|w| w[0].name < w[1].name) && v.iter().all(|l| !l.value.is_empty());
    if sorted {
        Labels::from_sorted_unchecked(v.into_iter().map(|l| Label::new(l.name, l.value)).collect())
    } else {
        let pairs: Vec<(String, String)> = v.into_iter().map(|l| (l.name, l.value)).collect();
        Labels::from_pairs(&pairs)
    }
}

fn matchers_to(m: &[Matcher]) -> Vec<pb::Matcher> {
    m.iter()
        .map(|m| pb::Matcher {
            op: match m.op {
                MatchOp::Equal => pb::matcher::Op::Equal,
                MatchOp::NotEqual => pb::matcher::Op::NotEqual,
                MatchOp::RegexMatch => pb::matcher::Op::RegexMatch,
                MatchOp::RegexNoMatch => pb::matcher::Op::RegexNoMatch,
            } as i32,
            name: m.name.clone(),
            value: m.value.clone(),
        })
        .collect()
}

fn matchers_from(v: Vec<pb::Matcher>) -> Result<Vec<Matcher>, StoreError> {
    v.into_iter()
        .map(|m| {
            let op = match pb::matcher::Op::try_from(m.op) {
                Ok(pb::matcher::Op::Equal) => MatchOp::Equal,
                Ok(pb::matcher::Op::NotEqual) => MatchOp::NotEqual,
                Ok(pb::matcher::Op::RegexMatch) => MatchOp::RegexMatch,
                Ok(pb::matcher::Op::RegexNoMatch) => MatchOp::RegexNoMatch,
                Err(_) => return Err(StoreError::invalid(format!("unknown matcher op {}", m.op))),
            };
            Matcher::new(op, m.name, m.value).map_err(StoreError::invalid)
        })
        .collect()
}

fn shards_to(s: &ShardSet) -> pb::ShardSet {
    match s {
        ShardSet::All => pb::ShardSet {
            all: true,
            shards: vec![],
        },
        ShardSet::Only(v) => pb::ShardSet {
            all: false,
            shards: v.clone(),
        },
    }
}

fn shards_from(s: Option<pb::ShardSet>) -> ShardSet {
    match s {
        None => ShardSet::All,
        Some(s) if s.all => ShardSet::All,
        Some(s) => ShardSet::only(s.shards),
    }
}

fn timeout_to(deadline: Option<Instant>) -> u64 {
    // At least 1 ms: 0 means "no deadline" on the wire.
    deadline.map_or(0, |d| {
        (d.saturating_duration_since(Instant::now()).as_millis() as u64).max(1)
    })
}

fn deadline_from(ms: u64) -> Option<Instant> {
    (ms > 0).then(|| Instant::now() + Duration::from_millis(ms))
}

pub(crate) fn select_to(r: &SelectRequest) -> pb::SelectRequest {
    pb::SelectRequest {
        tenant: r.tenant.clone(),
        namespace: r.namespace.clone(),
        matchers: matchers_to(&r.matchers),
        start: r.start,
        end: r.end,
        hints: Some(pb::SelectHints {
            step_ms: r.hints.step_ms,
            range_ms: r.hints.range_ms,
            func: r.hints.func.clone(),
            grouping: r.hints.grouping.clone(),
            by: r.hints.by,
        }),
        shards: Some(shards_to(&r.shards)),
        max_series: r.limits.max_series as u64,
        max_samples: r.limits.max_samples as u64,
        timeout_ms: timeout_to(r.deadline),
        prefer_chunks: r.prefer_chunks,
        digest: r.digest,
        any_order: r.any_order,
        digest_unless: (!r.digest_unless.is_empty()).then(|| sums_to(&r.digest_unless)),
    }
}

pub(crate) fn select_from(r: pb::SelectRequest) -> Result<SelectRequest, StoreError> {
    let hints = r.hints.unwrap_or_default();
    Ok(SelectRequest {
        tenant: r.tenant,
        namespace: r.namespace,
        matchers: matchers_from(r.matchers)?,
        start: r.start,
        end: r.end,
        hints: SelectHints {
            step_ms: hints.step_ms,
            range_ms: hints.range_ms,
            func: hints.func,
            grouping: hints.grouping,
            by: hints.by,
        },
        shards: shards_from(r.shards),
        limits: ReadLimits {
            max_series: r.max_series as usize,
            max_samples: r.max_samples as usize,
        },
        deadline: deadline_from(r.timeout_ms),
        prefer_chunks: r.prefer_chunks,
        digest: r.digest,
        any_order: r.any_order,
        digest_unless: sums_from(r.digest_unless)?,
        warnings: Default::default(),
        // A node reads its own replica; the level is the caller's business.
        read_level: None,
    })
}

pub(crate) fn query_to(q: &SeriesQuery) -> pb::SeriesQuery {
    pb::SeriesQuery {
        tenant: q.tenant.clone(),
        namespace: q.namespace.clone(),
        matchers: matchers_to(&q.matchers),
        start: q.start,
        end: q.end,
        shards: Some(shards_to(&q.shards)),
        limit: q.limit as u64,
        timeout_ms: timeout_to(q.deadline),
    }
}

pub(crate) fn query_from(q: pb::SeriesQuery) -> Result<SeriesQuery, StoreError> {
    Ok(SeriesQuery {
        tenant: q.tenant,
        namespace: q.namespace,
        matchers: matchers_from(q.matchers)?,
        start: q.start,
        end: q.end,
        shards: shards_from(q.shards),
        limit: q.limit as usize,
        deadline: deadline_from(q.timeout_ms),
        read_level: None,
        warnings: Default::default(),
    })
}

fn samples_to(s: &[Sample]) -> pb::Samples {
    pb::Samples {
        t: s.iter().map(|s| s.t).collect(),
        v: s.iter().map(|s| s.v).collect(),
    }
}

fn samples_from(s: Option<pb::Samples>) -> Result<Vec<Sample>, StoreError> {
    let s = s.unwrap_or_default();
    if s.t.len() != s.v.len() {
        return Err(StoreError::invalid(format!(
            "a series carries {} timestamps but {} values",
            s.t.len(),
            s.v.len()
        )));
    }
    Ok(s.t
        .into_iter()
        .zip(s.v)
        .map(|(t, v)| Sample { t, v })
        .collect())
}

pub(crate) fn batch_to(batch: Vec<StoredSeries>) -> pb::SeriesBatch {
    pb::SeriesBatch {
        series: batch
            .into_iter()
            .map(|s| pb::Series {
                labels: labels_to(&s.labels),
                samples: Some(match s.samples {
                    SeriesSamples::Decoded(v) => pb::series::Samples::Decoded(samples_to(&v)),
                    SeriesSamples::Digest(d) => pb::series::Samples::Digest(digest_to(&d)),
                    SeriesSamples::Chunks(c) => pb::series::Samples::Chunks(pb::ChunkList {
                        chunks: c
                            .into_iter()
                            .map(|c| pb::Chunk {
                                min_t: c.min_t,
                                max_t: c.max_t,
                                count: c.count,
                                data: c.bytes,
                            })
                            .collect(),
                    }),
                }),
            })
            .collect(),
    }
}

pub(crate) fn batch_from(b: pb::SeriesBatch) -> Result<Vec<StoredSeries>, StoreError> {
    b.series
        .into_iter()
        .map(|s| {
            let samples = match s.samples {
                None => SeriesSamples::Decoded(vec![]),
                Some(pb::series::Samples::Decoded(d)) => {
                    SeriesSamples::Decoded(samples_from(Some(d))?)
                }
                Some(pb::series::Samples::Digest(d)) => SeriesSamples::Digest(digest_from(d)?),
                Some(pb::series::Samples::Chunks(c)) => SeriesSamples::Chunks(
                    c.chunks
                        .into_iter()
                        .map(|c| EncodedChunk {
                            min_t: c.min_t,
                            max_t: c.max_t,
                            count: c.count,
                            bytes: c.data,
                        })
                        .collect(),
                ),
            };
            Ok(StoredSeries {
                labels: Arc::new(labels_from(s.labels)),
                samples,
            })
        })
        .collect()
}

fn digest_to(d: &SampleDigest) -> pb::Digest {
    pb::Digest {
        count: d.count,
        hash: d.hash,
        id: d
            .series
            .map(|i| i.0.to_le_bytes().to_vec())
            .unwrap_or_default(),
    }
}

fn digest_from(d: pb::Digest) -> Result<SampleDigest, StoreError> {
    Ok(SampleDigest {
        count: d.count,
        hash: d.hash,
        series: match d.id.len() {
            0 => None,
            16 => Some(SeriesId(u128::from_le_bytes(
                d.id.as_slice().try_into().unwrap_or([0; 16]),
            ))),
            n => {
                return Err(StoreError::invalid(format!(
                    "a series digest's id is {n} bytes, not 16"
                )))
            }
        },
    })
}

pub(crate) fn aggregate_to(r: &AggregateRequest) -> pb::AggregateRequest {
    pb::AggregateRequest {
        select: Some(select_to(&r.select)),
        query: r.query.clone(),
        start: r.start,
        end: r.end,
        step: r.step,
        lookback: r.lookback,
        max_samples: r.max_samples as u64,
        digests: r.digests,
    }
}

pub(crate) fn aggregate_from(r: pb::AggregateRequest) -> Result<AggregateRequest, StoreError> {
    let select = r
        .select
        .ok_or_else(|| StoreError::invalid("an aggregate request without its select"))?;
    Ok(AggregateRequest {
        select: select_from(select)?,
        query: r.query,
        start: r.start,
        end: r.end,
        step: r.step,
        lookback: r.lookback,
        max_samples: usize::try_from(r.max_samples).unwrap_or(usize::MAX),
        digests: r.digests,
    })
}

pub(crate) fn partial_to(p: Option<PartialAggregate>) -> pb::AggregateResponse {
    let Some(p) = p else {
        return pb::AggregateResponse::default();
    };
    pb::AggregateResponse {
        folded: true,
        groups: p
            .groups
            .into_iter()
            .map(|g| pb::PartialGroup {
                labels: labels_to(&g.labels),
                first: g.first,
                value: g.cells.iter().map(|c| c.value).collect(),
                kahan_c: g.cells.iter().map(|c| c.kahan_c).collect(),
                mean: g.cells.iter().map(|c| c.mean).collect(),
                count: g.cells.iter().map(|c| c.count).collect(),
                incremental_mean: g.cells.iter().map(|c| c.incremental_mean).collect(),
            })
            .collect(),
        series: p.series,
        samples: p.samples,
        step_samples: p.step_samples,
        not_counters: p.not_counters,
        digests: p.digests.iter().map(digest_to).collect(),
        shard_sums: Some(sums_to(&p.shard_sums)),
    }
}

pub(crate) fn sums_to(v: &[(u32, Option<u64>)]) -> pb::ShardSumList {
    pb::ShardSumList {
        shard: v.iter().map(|x| x.0).collect(),
        known: v.iter().map(|x| x.1.is_some()).collect(),
        sum: v.iter().map(|x| x.1.unwrap_or(0)).collect(),
    }
}

pub(crate) fn sums_from(
    v: Option<pb::ShardSumList>,
) -> Result<cairn_storage_api::ShardSums, StoreError> {
    let v = v.unwrap_or_default();
    if v.known.len() != v.shard.len() || v.sum.len() != v.shard.len() {
        return Err(StoreError::invalid(
            "shard sums with columns of unequal lengths",
        ));
    }
    Ok(v.shard
        .iter()
        .zip(&v.known)
        .zip(&v.sum)
        .map(|((&s, &k), &sum)| (s, k.then_some(sum)))
        .collect())
}

/// The steps a partial may answer: a day at one-second steps.
const MAX_PARTIAL_STEPS: usize = 86_400;

pub(crate) fn partial_from(
    r: pb::AggregateResponse,
) -> Result<Option<PartialAggregate>, StoreError> {
    if !r.folded {
        return Ok(None);
    }
    let mut groups = Vec::with_capacity(r.groups.len());
    for g in r.groups {
        let n = g.value.len();
        if [
            g.kahan_c.len(),
            g.mean.len(),
            g.count.len(),
            g.incremental_mean.len(),
        ]
        .iter()
        .any(|&m| m != n)
            || g.first as usize + n > MAX_PARTIAL_STEPS
        {
            return Err(StoreError::invalid(format!(
                "a partial aggregation's group has columns of unequal lengths or more than {MAX_PARTIAL_STEPS} steps"
            )));
        }
        let cells = (0..n)
            .map(|i| PartialCell {
                value: g.value[i],
                kahan_c: g.kahan_c[i],
                mean: g.mean[i],
                count: g.count[i],
                incremental_mean: g.incremental_mean[i],
            })
            .collect();
        groups.push(PartialGroup {
            labels: labels_from(g.labels),
            first: g.first,
            cells,
        });
    }
    Ok(Some(PartialAggregate {
        groups,
        series: r.series,
        samples: r.samples,
        step_samples: r.step_samples,
        not_counters: r.not_counters,
        digests: r
            .digests
            .into_iter()
            .map(digest_from)
            .collect::<Result<_, _>>()?,
        shard_sums: sums_from(r.shard_sums)?,
    }))
}

pub(crate) fn label_sets_to(v: Vec<Labels>) -> pb::LabelSets {
    pb::LabelSets {
        series: v
            .iter()
            .map(|l| pb::LabelSet {
                labels: labels_to(l),
            })
            .collect(),
    }
}

pub(crate) fn label_sets_from(v: pb::LabelSets) -> Vec<Labels> {
    v.series
        .into_iter()
        .map(|s| labels_from(s.labels))
        .collect()
}

fn exemplar_to(e: &Exemplar) -> pb::Exemplar {
    pb::Exemplar {
        labels: labels_to(&e.labels),
        value: e.value,
        t: e.t,
    }
}

fn exemplar_from(e: pb::Exemplar) -> Exemplar {
    Exemplar {
        labels: labels_from(e.labels),
        value: e.value,
        t: e.t,
    }
}

pub(crate) fn exemplars_to(v: Vec<ExemplarSeries>) -> pb::ExemplarsResponse {
    pb::ExemplarsResponse {
        series: v
            .iter()
            .map(|s| pb::ExemplarSeries {
                labels: labels_to(&s.labels),
                exemplars: s.exemplars.iter().map(exemplar_to).collect(),
            })
            .collect(),
    }
}

pub(crate) fn exemplars_from(v: pb::ExemplarsResponse) -> Vec<ExemplarSeries> {
    v.series
        .into_iter()
        .map(|s| ExemplarSeries {
            labels: labels_from(s.labels),
            exemplars: s.exemplars.into_iter().map(exemplar_from).collect(),
        })
        .collect()
}

fn metadata_to(family: &str, m: &MetricMetadata) -> pb::MetricMetadata {
    pb::MetricMetadata {
        family: family.to_string(),
        r#type: m.metric_type.as_str().to_string(),
        help: m.help.clone(),
        unit: m.unit.clone(),
    }
}

fn metadata_from(m: pb::MetricMetadata) -> (String, MetricMetadata) {
    (
        m.family,
        MetricMetadata {
            metric_type: MetricType::parse(&m.r#type),
            help: m.help,
            unit: m.unit,
        },
    )
}

pub(crate) fn metadata_list_to(v: Vec<(String, MetricMetadata)>) -> pb::MetadataResponse {
    pb::MetadataResponse {
        metadata: v.iter().map(|(f, m)| metadata_to(f, m)).collect(),
    }
}

pub(crate) fn metadata_list_from(v: pb::MetadataResponse) -> Vec<(String, MetricMetadata)> {
    v.metadata.into_iter().map(metadata_from).collect()
}

/// `r` for the wire, every series with its labels.
pub(crate) fn write_to(r: &WriteRequest) -> pb::WriteRequest {
    write_eliding(r, &|_| false)
}

/// `r` for the wire, the series without exemplars for which `by_id` says
/// so given by id alone (no labels; see `PackedSeries`).
pub(crate) fn write_eliding(
    r: &WriteRequest,
    by_id: &dyn Fn(SeriesId) -> bool,
) -> pb::WriteRequest {
    pb::WriteRequest {
        tenant: r.tenant.clone(),
        namespace: r.namespace.clone(),
        shard: r.shard,
        consistency: match r.consistency {
            WriteLevel::Majority => pb::Consistency::Majority,
            WriteLevel::One => pb::Consistency::One,
            WriteLevel::All => pb::Consistency::All,
        } as i32,
        packed: Some(pack(&r.batch, by_id)),
        series: r
            .batch
            .series
            .iter()
            .filter(|s| !s.exemplars.is_empty())
            .map(|s| pb::WriteSeries {
                labels: s
                    .labels
                    .pairs()
                    .map(|(n, v)| pb::Label {
                        name: n.to_string(),
                        value: v.to_string(),
                    })
                    .collect(),
                samples: Some(samples_to(&s.samples)),
                exemplars: s.exemplars.iter().map(exemplar_to).collect(),
            })
            .collect(),
        metadata: r
            .batch
            .metadata
            .iter()
            .map(|(f, m)| metadata_to(f, m))
            .collect(),
    }
}

/// The batch's series without exemplars, packed (see `PackedSeries`);
/// those `by_id` picks given by id alone.
fn pack(b: &PreparedBatch, by_id: &dyn Fn(SeriesId) -> bool) -> pb::PackedSeries {
    let plain = || b.series.iter().filter(|s| s.exemplars.is_empty());
    let n_samples: usize = plain().map(|s| s.samples.len()).sum();
    let mut p = pb::PackedSeries {
        label_lens: Vec::with_capacity(b.series.len() * 16),
        label_bytes: Vec::with_capacity(b.series.len() * 96),
        sample_counts: Vec::with_capacity(b.series.len()),
        t: Vec::with_capacity(n_samples),
        v: Vec::with_capacity(n_samples),
        ids: Vec::new(),
    };
    let mut any_by_id = false;
    for s in plain() {
        let at = p.label_lens.len();
        p.label_lens.push(0);
        p.ids.extend_from_slice(&s.id.0.to_le_bytes());
        // (A series that came by id alone can only go on so.)
        if by_id(s.id) || s.labels.is_empty() {
            any_by_id = true;
            p.sample_counts.push(s.samples.len() as u32);
            p.t.extend(s.samples.iter().map(|x| x.t));
            p.v.extend(s.samples.iter().map(|x| x.v));
            continue;
        }
        let mut n = 0;
        for (name, value) in s.labels.raw_pairs() {
            p.label_lens.push(name.len() as u32);
            p.label_lens.push(value.len() as u32);
            p.label_bytes.extend_from_slice(name);
            p.label_bytes.extend_from_slice(value);
            n += 1;
        }
        p.label_lens[at] = n;
        p.sample_counts.push(s.samples.len() as u32);
        p.t.extend(s.samples.iter().map(|x| x.t));
        p.v.extend(s.samples.iter().map(|x| x.v));
    }
    if !any_by_id {
        p.ids.clear();
    }
    p
}

/// Ids as the wire carries them (16 little-endian bytes each).
pub(crate) fn ids_to_bytes(ids: &[SeriesId]) -> Vec<u8> {
    ids.iter().flat_map(|id| id.0.to_le_bytes()).collect()
}

/// The ids of [`ids_to_bytes`]' form (a trailing partial id is dropped).
pub(crate) fn ids_from_bytes(b: &[u8]) -> Vec<SeriesId> {
    b.chunks_exact(16)
        .map(|c| SeriesId(u128::from_le_bytes(c.try_into().unwrap_or([0; 16]))))
        .collect()
}

/// The packed series as prepared series over one shared buffer, their ids
/// computed here from their labels; refused (naming what) when the
/// lengths do not add up or the labels are not sorted, unique, UTF-8 and
/// non-empty.
fn unpack(tenant: &str, p: pb::PackedSeries) -> Result<Vec<PreparedSeries>, StoreError> {
    let bad = |what: &str| StoreError::invalid(format!("packed write series: {what}"));
    let buf = Arc::new(p.label_bytes);
    if !p.ids.is_empty() && p.ids.len() != 16 * p.sample_counts.len() {
        return Err(bad("ids are not 16 bytes for each series"));
    }
    let mut out = Vec::with_capacity(p.sample_counts.len());
    let (mut li, mut off, mut si) = (0usize, 0usize, 0usize);
    for (k, &count) in p.sample_counts.iter().enumerate() {
        let n = *p
            .label_lens
            .get(li)
            .ok_or_else(|| bad("label lengths end early"))? as usize;
        li += 1;
        let given = p
            .ids
            .get(16 * k..16 * k + 16)
            .map(|b| SeriesId(u128::from_le_bytes(b.try_into().unwrap_or([0; 16]))));
        if n == 0 && given.is_none() {
            return Err(bad("a series without labels or id"));
        }
        let lens = p
            .label_lens
            .get(li..li + 2 * n)
            .ok_or_else(|| bad("label lengths end early"))?;
        li += 2 * n;
        let mut spans = Vec::with_capacity(n);
        let mut prev: Option<&[u8]> = None;
        for pair in lens.chunks_exact(2) {
            let (a, b) = (off, off + pair[0] as usize);
            let c = b + pair[1] as usize;
            let (name, value) = (
                buf.get(a..b).ok_or_else(|| bad("label bytes end early"))?,
                buf.get(b..c).ok_or_else(|| bad("label bytes end early"))?,
            );
            if std::str::from_utf8(name).is_err() || std::str::from_utf8(value).is_err() {
                return Err(bad("a label is not UTF-8"));
            }
            if value.is_empty() || prev.is_some_and(|p| p >= name) {
                return Err(bad("labels not sorted by name, unique and non-empty"));
            }
            prev = Some(name);
            spans.push([a as u32, b as u32, b as u32, c as u32]);
            off = c;
        }
        let k = count as usize;
        let (t, v) = (
            p.t.get(si..si + k)
                .ok_or_else(|| bad("timestamps end early"))?,
            p.v.get(si..si + k).ok_or_else(|| bad("values end early"))?,
        );
        si += k;
        let labels = LazyLabels::new(buf.clone(), spans);
        let id = match given {
            // By id alone: one the receiver holds (it checks).
            Some(id) if n == 0 => id,
            _ => SeriesId::of_bytes(tenant, labels.raw_pairs()),
        };
        out.push(PreparedSeries {
            id,
            labels,
            samples: t.iter().zip(v).map(|(&t, &v)| Sample { t, v }).collect(),
            exemplars: Vec::new(),
        });
    }
    if li != p.label_lens.len() || off != buf.len() || si != p.t.len() || si != p.v.len() {
        return Err(bad("lengths do not add up"));
    }
    Ok(out)
}

pub(crate) fn write_from(r: pb::WriteRequest) -> Result<WriteRequest, StoreError> {
    let consistency = match pb::Consistency::try_from(r.consistency) {
        Ok(pb::Consistency::Majority) => WriteLevel::Majority,
        Ok(pb::Consistency::One) => WriteLevel::One,
        Ok(pb::Consistency::All) => WriteLevel::All,
        Err(_) => {
            return Err(StoreError::invalid(format!(
                "unknown consistency level {}",
                r.consistency
            )))
        }
    };
    let series = r
        .series
        .into_iter()
        .map(|s| {
            Ok(SeriesWrite {
                labels: labels_from(s.labels),
                samples: samples_from(s.samples)?,
                exemplars: s.exemplars.into_iter().map(exemplar_from).collect(),
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    let metadata = r.metadata.into_iter().map(metadata_from).collect();
    let mut batch = PreparedBatch::from_series(&r.tenant, series, metadata);
    if let Some(p) = r.packed {
        batch.series.extend(unpack(&r.tenant, p)?);
    }
    Ok(WriteRequest {
        batch,
        tenant: r.tenant,
        namespace: r.namespace,
        shard: r.shard,
        consistency,
        applied: None,
        encoded: Default::default(),
    })
}

pub(crate) fn outcome_to(o: WriteOutcome) -> pb::WriteResponse {
    pb::WriteResponse {
        unknown_ids: Vec::new(),
        accepted_samples: o.accepted_samples as u64,
        accepted_exemplars: o.accepted_exemplars as u64,
        rejections: o
            .rejections
            .into_iter()
            .map(|r| pb::Rejection {
                series: r.series,
                reason: r.reason,
                samples: r.samples as u64,
            })
            .collect(),
    }
}

pub(crate) fn outcome_from(o: pb::WriteResponse) -> WriteOutcome {
    WriteOutcome {
        accepted_samples: o.accepted_samples as usize,
        accepted_exemplars: o.accepted_exemplars as usize,
        rejections: o
            .rejections
            .into_iter()
            .map(|r| WriteRejection {
                series: r.series,
                reason: r.reason,
                samples: r.samples as usize,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_keep_kind_message_and_retryability_across_the_wire() {
        for e in [
            StoreError::invalid("bad matcher"),
            StoreError::limit_exceeded("too many series"),
            StoreError::rate_limited("slow down"),
            StoreError::unavailable("disk full").with_retryable(false),
            StoreError::timeout("late"),
            StoreError::not_found("no namespace"),
            StoreError::internal("bug"),
        ] {
            assert_eq!(error_from(&status_from(&e)), e);
        }
    }

    #[test]
    fn labels_off_the_wire_are_sorted_and_empty_values_dropped() {
        let wire = vec![
            pb::Label {
                name: "job".into(),
                value: "a".into(),
            },
            pb::Label {
                name: "__name__".into(),
                value: "up".into(),
            },
            pb::Label {
                name: "x".into(),
                value: "".into(),
            },
        ];
        assert_eq!(
            labels_from(wire),
            Labels::from_pairs(&[("__name__", "up"), ("job", "a")])
        );
        let bad = pb::Samples {
            t: vec![1, 2],
            v: vec![1.0],
        };
        assert_eq!(
            samples_from(Some(bad)).unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
        let m = vec![pb::Matcher {
            op: 2,
            name: "a".into(),
            value: "(".into(),
        }];
        assert_eq!(
            matchers_from(m).unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
    }

    #[test]
    fn a_select_request_round_trips() {
        let r = SelectRequest::new(
            "t",
            vec![Matcher::new(MatchOp::RegexMatch, "job", "a|b").unwrap()],
            5,
            10,
        )
        .with_shards(ShardSet::only(vec![3, 1]))
        .with_limits(ReadLimits {
            max_series: 7,
            max_samples: 9,
        })
        .with_deadline(Instant::now() + Duration::from_secs(60))
        .with_chunks(true);
        let back = select_from(select_to(&r)).unwrap();
        assert_eq!(back.tenant, "t");
        assert_eq!(back.matchers, r.matchers);
        assert_eq!((back.start, back.end), (5, 10));
        assert_eq!(back.shards, ShardSet::Only(vec![1, 3]));
        assert_eq!(back.limits, r.limits);
        assert!(back.deadline.is_some() && back.prefer_chunks);
    }
}

#[cfg(test)]
mod packed_tests {
    use super::*;

    fn batch() -> PreparedBatch {
        let s = |pairs: &[(&str, &str)], n: i64, ex: bool| SeriesWrite {
            labels: Labels::from_pairs(pairs),
            samples: (0..n).map(|i| Sample::new(i, i as f64 * 0.5)).collect(),
            exemplars: if ex {
                vec![Exemplar {
                    labels: Labels::from_pairs(&[("trace_id", "abc")]),
                    value: 1.0,
                    t: 0,
                }]
            } else {
                vec![]
            },
        };
        PreparedBatch::from_series(
            "t",
            vec![
                s(&[("__name__", "up"), ("job", "a")], 3, false),
                s(&[("__name__", "lat"), ("le", "0.5")], 1, true),
                s(&[("__name__", "up"), ("job", "b"), ("zone", "é")], 0, false),
            ],
            vec![],
        )
    }

    #[test]
    fn a_write_round_trips_packed_with_the_same_ids() {
        let b = batch();
        let r = WriteRequest::new("t", b.clone());
        let wire = write_to(&r);
        assert_eq!(
            wire.series.len(),
            1,
            "only the series with exemplars unpacked"
        );
        let back = write_from(wire).unwrap();
        let key = |b: &PreparedBatch| {
            let mut v: Vec<_> = b
                .series
                .iter()
                .map(|s| {
                    (
                        s.id,
                        s.labels.materialize(),
                        s.samples.clone(),
                        s.exemplars.len(),
                    )
                })
                .collect();
            v.sort_by_key(|x| x.0);
            v
        };
        assert_eq!(key(&back.batch), key(&b));
    }

    #[test]
    fn malformed_packed_series_are_refused() {
        let good = write_to(&WriteRequest::new("t", batch())).packed.unwrap();
        let mut cases = Vec::new();
        let mut p = good.clone();
        p.label_lens.pop();
        cases.push(("lengths", p));
        let mut p = good.clone();
        p.label_bytes.truncate(3);
        cases.push(("bytes", p));
        let mut p = good.clone();
        p.t.pop();
        cases.push(("timestamps", p));
        let mut p = good.clone();
        p.label_bytes[0] = 0xff;
        cases.push(("utf-8", p));
        let mut p = good.clone();
        p.label_bytes.push(b'x');
        cases.push(("trailing", p));
        for (what, p) in cases {
            let e = unpack("t", p).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidInput, "{what}: {e}");
        }
        assert_eq!(unpack("t", good).unwrap().len(), 2);
    }
}
