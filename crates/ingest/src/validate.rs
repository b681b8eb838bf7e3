//! Remote-write decoding with prost (the reference the fast path is
//! checked against) and Prometheus's validation rules: labels, metric
//! names, exemplars, the accepted time window, metadata types; the tenant
//! header; snappy decompression bounded before allocating.

use cairn_common::limits::{hard, truncate_str};
use cairn_common::{
    Exemplar, IngestLimits, Label, Labels, MetricMetadata, MetricType, Sample, SeriesWrite,
    DEFAULT_TENANT, METRIC_NAME,
};
use cairn_proto::prompb;
use prost::Message;

use crate::error::IngestError;

/// One refused series (or part of one): what it was and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Invalid {
    pub series: String,
    pub reason: String,
    pub samples: usize,
}

/// A decoded request: its valid series and metadata, and what was refused.
#[derive(Debug, Default)]
pub struct Decoded {
    pub series: Vec<SeriesWrite>,
    pub metadata: Vec<(String, MetricMetadata)>,
    pub invalid: Vec<Invalid>,
}

/// The tenant of a request: `X-Scope-OrgID` (Mimir/Cortex), else `default`.
pub fn tenant_from_header(header: Option<&str>) -> Result<String, IngestError> {
    match header.map(str::trim) {
        None | Some("") => Ok(DEFAULT_TENANT.to_string()),
        Some(t) => {
            if cairn_common::is_valid_tenant_id(t) {
                Ok(t.to_string())
            } else {
                Err(IngestError::Tenant(truncate_str(t, 160).into_owned()))
            }
        }
    }
}

/// Snappy's best expansion: a 3-byte copy tag yields at most 64 bytes.
const SNAPPY_MAX_RATIO: usize = 22;

/// Snappy-decompresses `body` after checking, before allocating, that its
/// declared length is within `max_decoded` and within what `body` can hold.
pub fn decompress(body: &[u8], max_decoded: usize) -> Result<Vec<u8>, IngestError> {
    let len = snap::raw::decompress_len(body).map_err(|e| IngestError::Snappy(e.to_string()))?;
    if len
        > body
            .len()
            .saturating_mul(SNAPPY_MAX_RATIO)
            .saturating_add(16)
    {
        return Err(IngestError::ImpossibleLength {
            claimed: len,
            body: body.len(),
        });
    }
    if len > max_decoded {
        return Err(IngestError::TooLarge {
            size: len,
            limit: max_decoded,
        });
    }
    snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| IngestError::Snappy(e.to_string()))
}

/// Snappy-decompresses and decodes a remote-write 1.0 body.
pub fn decode_remote_write(
    body: &[u8],
    max_decoded: usize,
) -> Result<prompb::WriteRequest, IngestError> {
    let raw = decompress(body, max_decoded)?;
    prompb::WriteRequest::decode(raw.as_slice()).map_err(|e| IngestError::Protobuf(e.to_string()))
}

/// The accepted sample time range for a write at `now_ms`: Prometheus's
/// API time range, and no later than `now + max-future`.
pub fn time_window(limits: &IngestLimits, now_ms: i64) -> (i64, i64) {
    let hi = now_ms
        .saturating_add(limits.max_future_ms)
        .min(hard::MAX_TIME_MS);
    (hard::MIN_TIME_MS, hi)
}

/// Removes the samples outside `[lo, hi]` from `samples`; the reason, when
/// any were removed, names the bound and the key.
pub(crate) fn drop_out_of_window(
    samples: &mut Vec<Sample>,
    (lo, hi): (i64, i64),
    limits: &IngestLimits,
) -> Option<(String, usize)> {
    let before = samples.len();
    let mut latest = i64::MIN;
    let mut earliest = i64::MAX;
    samples.retain(|s| {
        let ok = s.t >= lo && s.t <= hi;
        if !ok {
            latest = latest.max(s.t);
            earliest = earliest.min(s.t);
        }
        ok
    });
    let n = before - samples.len();
    (n > 0).then(|| {
        let reason = if latest > hi {
            format!(
                "{n} sample(s) too far in the future: timestamp {latest} is after now + {}s (ingest.max-future)",
                limits.max_future_ms / 1000
            )
        } else {
            format!(
                "{n} sample(s) with timestamp {earliest} before the earliest time Prometheus can represent ({lo})"
            )
        };
        (reason, n)
    })
}

/// Readable form of raw labels for error messages (lossy UTF-8).
pub(crate) fn describe(labels: &[prompb::Label]) -> String {
    let parts: Vec<String> = labels
        .iter()
        .map(|l| {
            format!(
                "{}={:?}",
                String::from_utf8_lossy(&l.name),
                String::from_utf8_lossy(&l.value)
            )
        })
        .collect();
    format!("{{{}}}", parts.join(", "))
}

/// Validates raw labels with Prometheus's rules; returns them as [`Labels`]
/// (empty values dropped) or the reason they are invalid.
pub fn validate_labels(raw: &[prompb::Label], limits: &IngestLimits) -> Result<Labels, String> {
    let mut out: Vec<Label> = Vec::with_capacity(raw.len());
    let mut prev: Option<&[u8]> = None;
    let mut has_name = false;
    for l in raw {
        let name = std::str::from_utf8(&l.name).map_err(|_| {
            format!(
                "label name {:?} is not valid UTF-8",
                String::from_utf8_lossy(&l.name)
            )
        })?;
        let value = std::str::from_utf8(&l.value)
            .map_err(|_| format!("value of label {name:?} is not valid UTF-8"))?;
        if let Some(p) = prev {
            match p.cmp(&l.name[..]) {
                std::cmp::Ordering::Equal => return Err(format!("duplicate label name {name:?}")),
                std::cmp::Ordering::Greater => {
                    return Err(format!(
                        "labels are not sorted by name: {:?} comes after {name:?}",
                        String::from_utf8_lossy(p)
                    ))
                }
                std::cmp::Ordering::Less => {}
            }
        }
        prev = Some(&l.name);
        if name == METRIC_NAME {
            if !cairn_common::is_valid_metric_name(value) {
                return Err(format!("invalid metric name {value:?}"));
            }
            has_name = true;
        } else if !cairn_common::is_valid_label_name(name) {
            return Err(format!("invalid label name {name:?}"));
        }
        if value.contains('\0') {
            return Err(format!("value of label {name:?} contains a NUL byte"));
        }
        if !value.is_empty() {
            out.push(Label::new(name, value));
        }
    }
    if !has_name {
        return Err("missing metric name (label __name__)".to_string());
    }
    if let Some(why) = limits.check_labels(
        out.len(),
        out.iter().map(|l| (l.name.as_bytes(), l.value.as_bytes())),
    ) {
        return Err(why);
    }
    Ok(Labels::from_sorted_unchecked(out))
}

/// Validates an exemplar's labels (Prometheus's rules and its 128-rune
/// bound) and time (inside `window`).
pub(crate) fn validate_exemplar(
    e: prompb::Exemplar,
    window: (i64, i64),
    limits: &IngestLimits,
) -> Result<Exemplar, String> {
    let mut el = Vec::with_capacity(e.labels.len());
    for l in &e.labels {
        match (std::str::from_utf8(&l.name), std::str::from_utf8(&l.value)) {
            (Ok(n), Ok(v)) if cairn_common::is_valid_label_name(n) && !v.contains('\0') => {
                el.push((n.to_string(), v.to_string()))
            }
            _ => {
                return Err(format!(
                    "exemplar with invalid label {}",
                    describe(std::slice::from_ref(l))
                ))
            }
        }
    }
    if let Some(why) = cairn_common::limits::check_exemplar_labels(
        el.iter().map(|(n, v)| (n.as_str(), v.as_str())),
    ) {
        return Err(why);
    }
    if e.timestamp < window.0 || e.timestamp > window.1 {
        return Err(format!(
            "exemplar timestamp {} is outside the accepted range (after now + {}s, ingest.max-future, or before Prometheus's earliest time)",
            e.timestamp,
            limits.max_future_ms / 1000
        ));
    }
    Ok(Exemplar {
        labels: Labels::from_pairs(&el),
        value: e.value,
        t: e.timestamp,
    })
}

pub(crate) fn metric_type(t: i32) -> MetricType {
    match t {
        1 => MetricType::Counter,
        2 => MetricType::Gauge,
        3 => MetricType::Histogram,
        4 => MetricType::GaugeHistogram,
        5 => MetricType::Summary,
        6 => MetricType::Info,
        7 => MetricType::StateSet,
        _ => MetricType::Unknown,
    }
}

/// Validates a decoded request, series by series (the reference the
/// zero-copy decoder is tested against: same limits, same reasons).
pub fn validate(
    req: prompb::WriteRequest,
    limits: &IngestLimits,
    now_ms: i64,
) -> Result<Decoded, IngestError> {
    let mut out = Decoded::default();
    let window = time_window(limits, now_ms);
    if req.timeseries.len() > limits.max_series_per_request {
        return Err(IngestError::TooManySeries {
            limit: limits.max_series_per_request,
        });
    }
    for ts in req.timeseries {
        let labels = match validate_labels(&ts.labels, limits) {
            Ok(l) => l,
            Err(reason) => {
                out.invalid.push(Invalid {
                    series: describe(&ts.labels),
                    reason,
                    samples: ts.samples.len() + ts.histograms.len(),
                });
                continue;
            }
        };
        if !ts.histograms.is_empty() {
            out.invalid.push(Invalid {
                series: labels.to_string(),
                reason: format!(
                    "{} native histogram sample(s): native histograms are not supported yet",
                    ts.histograms.len()
                ),
                samples: ts.histograms.len(),
            });
        }
        let mut exemplars = Vec::with_capacity(ts.exemplars.len());
        for e in ts.exemplars {
            match validate_exemplar(e, window, limits) {
                Ok(ex) => exemplars.push(ex),
                Err(reason) => out.invalid.push(Invalid {
                    series: labels.to_string(),
                    reason,
                    samples: 0,
                }),
            }
        }
        let mut samples: Vec<Sample> = ts
            .samples
            .iter()
            .map(|s| Sample::new(s.timestamp, s.value))
            .collect();
        if let Some((reason, n)) = drop_out_of_window(&mut samples, window, limits) {
            out.invalid.push(Invalid {
                series: labels.to_string(),
                reason,
                samples: n,
            });
        }
        if samples.is_empty() && exemplars.is_empty() {
            continue;
        }
        out.series.push(SeriesWrite {
            labels,
            samples,
            exemplars,
        });
    }
    for md in req.metadata {
        if md.metric_family_name.is_empty() {
            continue;
        }
        out.metadata.push((
            md.metric_family_name,
            MetricMetadata {
                metric_type: metric_type(md.r#type),
                help: md.help,
                unit: md.unit,
            },
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fast::decode_prepared;
    use prompb::{Label as L, TimeSeries, WriteRequest};

    fn ts(labels: Vec<L>) -> TimeSeries {
        TimeSeries {
            labels,
            samples: vec![prompb::Sample {
                value: 1.0,
                timestamp: 5,
            }],
            ..Default::default()
        }
    }

    #[test]
    fn invalid_series_are_named_and_valid_rest_kept() {
        let bad_utf8 = L {
            name: b"job".to_vec(),
            value: vec![0xff, 0xfe],
        };
        let req = WriteRequest {
            timeseries: vec![
                ts(vec![L::new("__name__", "ok"), L::new("job", "a")]),
                ts(vec![L::new("job", "a"), L::new("__name__", "x")]),
                ts(vec![
                    L::new("__name__", "x"),
                    L::new("a", "1"),
                    L::new("a", "2"),
                ]),
                ts(vec![L::new("job", "a")]),
                ts(vec![L::new("1bad", "v"), L::new("__name__", "x")]),
                ts(vec![L::new("__name__", "x"), bad_utf8]),
                ts(vec![L::new("__name__", "x y")]),
            ],
            metadata: vec![],
        };
        let body = snap::raw::Encoder::new()
            .compress_vec(&req.encode_to_vec())
            .unwrap();
        let d = validate(
            decode_remote_write(&body, 1 << 20).unwrap(),
            &IngestLimits::default(),
            0,
        )
        .unwrap();
        assert_eq!(d.series.len(), 1);
        assert_eq!(d.series[0].labels.to_string(), r#"ok{job="a"}"#);
        let reasons: Vec<&str> = d.invalid.iter().map(|i| i.reason.as_str()).collect();
        assert!(reasons[0].contains("not sorted"), "{reasons:?}");
        assert!(reasons[1].contains("duplicate label name \"a\""));
        assert!(reasons[2].contains("missing metric name"));
        assert!(reasons[3].contains("invalid label name \"1bad\""));
        assert!(reasons[4].contains("not valid UTF-8"));
        assert!(reasons[5].contains("invalid metric name"));
        assert!(d.invalid[3].series.contains("1bad"));
    }

    #[test]
    fn garbage_and_limits() {
        assert!(matches!(
            decode_remote_write(b"\xff\xff\xff\xff", 1 << 20),
            Err(IngestError::Snappy(_))
        ));
        let not_proto = snap::raw::Encoder::new()
            .compress_vec(b"\x0a\xff\xff\xff\xff")
            .unwrap();
        assert!(matches!(
            decode_remote_write(&not_proto, 1 << 20),
            Err(IngestError::Protobuf(_))
        ));
        let big = snap::raw::Encoder::new()
            .compress_vec(&vec![0u8; 4096])
            .unwrap();
        assert!(matches!(
            decode_remote_write(&big, 1024),
            Err(IngestError::TooLarge { .. })
        ));
        assert_eq!(tenant_from_header(None).unwrap(), "default");
        assert_eq!(tenant_from_header(Some("team-a")).unwrap(), "team-a");
        assert!(tenant_from_header(Some("a/b")).is_err());
    }

    fn arb_label() -> impl proptest::strategy::Strategy<Value = L> {
        use proptest::prelude::*;
        (
            prop_oneof![
                Just(b"__name__".to_vec()),
                Just(b"job".to_vec()),
                Just(b"a".to_vec()),
                Just(b"1x".to_vec()),
                Just(vec![0xffu8])
            ],
            prop_oneof![
                Just(b"up".to_vec()),
                Just(b"v".to_vec()),
                Just(Vec::new()),
                Just(b"x y".to_vec()),
                Just(vec![0xfeu8])
            ],
        )
            .prop_map(|(name, value)| L { name, value })
    }

    proptest::proptest! {
        /// The zero-copy decoder agrees with prost + `validate` on every request.
        #[test]
        fn fast_decoder_agrees_with_prost(
            series in proptest::collection::vec(
                (proptest::collection::vec(arb_label(), 0..4), proptest::collection::vec((proptest::prelude::any::<i64>(), proptest::prelude::any::<u64>()), 0..3)),
                0..6),
        ) {
            let req = WriteRequest {
                timeseries: series.into_iter().map(|(labels, s)| TimeSeries {
                    labels,
                    samples: s.into_iter().map(|(t, v)| prompb::Sample { timestamp: t, value: f64::from_bits(v) }).collect(),
                    ..Default::default()
                }).collect(),
                metadata: vec![],
            };
            let body = snap::raw::Encoder::new().compress_vec(&req.encode_to_vec()).unwrap();
            // Small limits and a clock in the middle of the i64 timestamps,
            // so both decoders refuse labels and samples for the same reasons.
            let limits = IngestLimits { max_labels_per_series: 2, max_label_value_length: 1, max_future_ms: 0, ..Default::default() };
            let slow = validate(decode_remote_write(&body, 1 << 20).unwrap(), &limits, 0).unwrap();
            let (fast, invalid) = decode_prepared("t", &body, &limits, 0).unwrap();
            proptest::prop_assert_eq!(&invalid, &slow.invalid);
            proptest::prop_assert_eq!(fast.series.len(), slow.series.len());
            for (f, s) in fast.series.iter().zip(&slow.series) {
                proptest::prop_assert_eq!(f.labels.materialize(), s.labels.clone());
                proptest::prop_assert_eq!(f.id, cairn_common::SeriesId::of("t", &s.labels));
                let fb: Vec<(i64, u64)> = f.samples.iter().map(|x| (x.t, x.v.to_bits())).collect();
                let sb: Vec<(i64, u64)> = s.samples.iter().map(|x| (x.t, x.v.to_bits())).collect();
                proptest::prop_assert_eq!(fb, sb);
            }
        }

        #[test]
        fn decoder_never_panics(b in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            let limits = IngestLimits::default();
            if let Ok(req) = decode_remote_write(&b, 1 << 20) {
                let _ = validate(req, &limits, 0);
            }
            let framed = snap::raw::Encoder::new().compress_vec(&b).unwrap();
            if let Ok(req) = decode_remote_write(&framed, 1 << 20) {
                let _ = validate(req, &limits, 0);
            }
            let _ = decode_prepared("t", &framed, &limits, 0);
            let _ = decode_prepared("t", &b, &limits, 0);
        }
    }
}
