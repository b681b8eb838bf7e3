//! Commit-log record payloads, encoded and decoded in one place (the
//! framing around them — length, checksum, segments — is [`crate::commitlog`]'s).
//!
//! Payload: version u8 (1); tenant (uvarint length, bytes); then
//! - new series: count, then per series id(16, BE) and labels;
//! - samples: count of series with samples, then per series id(16), sample
//!   count, and per sample the time as a zig-zag varint delta from the
//!   previous one (the first from 0) and the value's bits (u64 LE);
//! - exemplars: count, then id(16), time (zig-zag varint), value bits (u64
//!   LE), labels;
//! - metadata: count, then metric name, type, help and unit (each length-prefixed).
//!
//! Labels are a uvarint count of (name, value) byte strings (see
//! [`crate::enc`]). Decoding refuses anything else, trailing bytes included,
//! with an error naming what was being read and the offset.

use crate::enc::{put_bytes, put_labels, put_uvarint, put_varint, Reader};
use crate::error::{Error, Result};
use cairn_common::{Exemplar, Labels, MetricMetadata, MetricType, Sample, SeriesId};

/// The payload layout version, its first byte.
pub(crate) const VERSION: u8 = 1;

/// A decoded commit-log record.
pub(crate) struct Record {
    pub(crate) tenant: String,
    pub(crate) new_series: Vec<(SeriesId, Labels)>,
    pub(crate) samples: Vec<(SeriesId, Vec<Sample>)>,
    pub(crate) exemplars: Vec<(SeriesId, Exemplar)>,
    pub(crate) metadata: Vec<(String, MetricMetadata)>,
}

/// Starts a payload: the version and the tenant, with room for `capacity`
/// bytes in all.
pub(crate) fn begin(tenant: &str, capacity: usize) -> Vec<u8> {
    let mut payload = Vec::with_capacity(capacity);
    payload.push(VERSION);
    put_bytes(&mut payload, tenant.as_bytes());
    payload
}

/// Appends a record's body (after version and tenant) to `payload`; calls
/// `on_sample` with each sample's time. `Invalid` when a label set is beyond
/// what [`decode`] accepts (the write path refuses those series
/// first, so a write never gets here with one).
pub(crate) fn encode_body(
    payload: &mut Vec<u8>,
    new_series: &[(SeriesId, Labels)],
    samples: &[(SeriesId, &[Sample])],
    exemplars: &[(SeriesId, Exemplar)],
    metadata: &[(String, MetricMetadata)],
    mut on_sample: impl FnMut(i64),
) -> Result<()> {
    put_uvarint(payload, new_series.len() as u64);
    for (id, labels) in new_series {
        payload.extend_from_slice(&id.to_be_bytes());
        put_labels(payload, labels)?;
    }
    let with_samples = samples.iter().filter(|p| !p.1.is_empty()).count();
    put_uvarint(payload, with_samples as u64);
    for (id, samples) in samples.iter().filter(|p| !p.1.is_empty()) {
        payload.extend_from_slice(&id.to_be_bytes());
        put_uvarint(payload, samples.len() as u64);
        let mut prev = 0i64;
        for s in samples.iter() {
            put_varint(payload, s.t.wrapping_sub(prev));
            prev = s.t;
            payload.extend_from_slice(&s.v.to_bits().to_le_bytes());
            on_sample(s.t);
        }
    }
    put_uvarint(payload, exemplars.len() as u64);
    for (id, e) in exemplars {
        payload.extend_from_slice(&id.to_be_bytes());
        put_varint(payload, e.t);
        payload.extend_from_slice(&e.value.to_bits().to_le_bytes());
        put_labels(payload, &e.labels)?;
    }
    put_uvarint(payload, metadata.len() as u64);
    for (name, md) in metadata {
        put_bytes(payload, name.as_bytes());
        put_bytes(payload, md.metric_type.as_str().as_bytes());
        put_bytes(payload, md.help.as_bytes());
        put_bytes(payload, md.unit.as_bytes());
    }
    Ok(())
}

pub(crate) fn decode(p: &[u8]) -> Result<Record> {
    let mut r = Reader::new(p, "commit log record");
    let v = r.u8()?;
    if v != VERSION {
        return Err(Error::Corrupt(format!("commit log record version {v}")));
    }
    let tenant = r.string()?;
    let id = |r: &mut Reader| -> Result<SeriesId> { Ok(SeriesId::from_be_bytes(r.fixed::<16>()?)) };
    let n = r.uvarint()? as usize;
    let mut new_series = Vec::with_capacity(n.min(1 << 16));
    for _ in 0..n {
        new_series.push((id(&mut r)?, r.labels()?));
    }
    let n = r.uvarint()? as usize;
    let mut samples = Vec::with_capacity(n.min(1 << 16));
    for _ in 0..n {
        let sid = id(&mut r)?;
        let k = r.uvarint()? as usize;
        let mut v = Vec::with_capacity(k.min(1 << 16));
        let mut t = 0i64;
        for _ in 0..k {
            t = t.wrapping_add(r.varint()?);
            v.push(Sample {
                t,
                v: f64::from_bits(r.u64()?),
            });
        }
        samples.push((sid, v));
    }
    let n = r.uvarint()? as usize;
    let mut exemplars = Vec::with_capacity(n.min(1 << 16));
    for _ in 0..n {
        let sid = id(&mut r)?;
        let t = r.varint()?;
        let value = f64::from_bits(r.u64()?);
        exemplars.push((
            sid,
            Exemplar {
                labels: r.labels()?,
                value,
                t,
            },
        ));
    }
    let n = r.uvarint()? as usize;
    let mut metadata = Vec::with_capacity(n.min(1 << 16));
    for _ in 0..n {
        let name = r.string()?;
        let metric_type = MetricType::parse(&r.string()?);
        let help = r.string()?;
        let unit = r.string()?;
        metadata.push((
            name,
            MetricMetadata {
                metric_type,
                help,
                unit,
            },
        ));
    }
    if !r.is_empty() {
        return Err(Error::Corrupt(
            "commit log record has trailing bytes".into(),
        ));
    }
    Ok(Record {
        tenant,
        new_series,
        samples,
        exemplars,
        metadata,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::labels_strategy;
    use cairn_common::limits::hard;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// Every record the write path can encode decodes to what was
        /// encoded: label sets up to the hard bounds, any f64 bits, any
        /// time in the storable range.
        #[test]
        fn commit_log_records_round_trip_over_the_accepted_domain(
            tenant in "\\PC{0,12}",
            sets in proptest::collection::vec(labels_strategy(), 0..3),
            samples in proptest::collection::vec(
                proptest::collection::vec((hard::MIN_TIME_MS..=hard::MAX_TIME_MS, any::<u64>()), 0..6), 0..3),
            edge in any::<bool>(),
            ex_t in any::<i64>(),
            ex_bits in any::<u64>(),
        ) {
            let new_series: Vec<(SeriesId, Labels)> = sets
                .iter()
                .map(|l| (SeriesId::of(&tenant, l), l.clone()))
                .collect();
            let mut per_series: Vec<(SeriesId, Vec<Sample>)> = samples
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    let mut v: Vec<Sample> =
                        v.iter().map(|(t, b)| Sample::new(*t, f64::from_bits(*b))).collect();
                    if edge {
                        v.push(Sample::new(hard::MIN_TIME_MS, f64::from_bits(u64::MAX)));
                        v.push(Sample::new(hard::MAX_TIME_MS, f64::from_bits(0)));
                    }
                    (SeriesId(i as u128 + 1), v)
                })
                .collect();
            per_series.retain(|(_, v)| !v.is_empty());
            let prepared: Vec<(SeriesId, &[Sample])> =
                per_series.iter().map(|(i, v)| (*i, v.as_slice())).collect();
            let exemplars: Vec<(SeriesId, Exemplar)> = sets
                .iter()
                .take(1)
                .map(|l| (SeriesId(9), Exemplar { labels: l.clone(), value: f64::from_bits(ex_bits), t: ex_t }))
                .collect();
            let metadata = vec![("m".to_string(), MetricMetadata {
                metric_type: MetricType::Counter,
                help: tenant.clone(),
                unit: String::new(),
            })];
            let mut p = begin(&tenant, 0);
            let mut seen = Vec::new();
            encode_body(&mut p, &new_series, &prepared, &exemplars, &metadata, |t| seen.push(t)).unwrap();
            let rec = decode(&p).unwrap();
            prop_assert_eq!(&rec.tenant, &tenant);
            prop_assert_eq!(&rec.new_series, &new_series);
            let bits = |v: &[Sample]| v.iter().map(|s| (s.t, s.v.to_bits())).collect::<Vec<_>>();
            prop_assert_eq!(rec.samples.len(), per_series.len());
            for ((a, x), (b, y)) in rec.samples.iter().zip(&per_series) {
                prop_assert_eq!(a, b);
                prop_assert_eq!(bits(x), bits(y));
            }
            prop_assert_eq!(seen.len(), per_series.iter().map(|s| s.1.len()).sum::<usize>());
            prop_assert_eq!(rec.exemplars.len(), exemplars.len());
            for ((a, x), (b, y)) in rec.exemplars.iter().zip(&exemplars) {
                prop_assert_eq!(a, b);
                prop_assert_eq!((&x.labels, x.t, x.value.to_bits()), (&y.labels, y.t, y.value.to_bits()));
            }
            prop_assert_eq!(rec.metadata, metadata);
        }
    }

    /// Every proper prefix of a valid record, and the record with a byte
    /// appended, is refused with an error naming the record, never a panic
    /// or a shorter record.
    #[test]
    fn truncated_or_extended_records_are_errors() {
        let labels = Labels::from_pairs(&[("__name__", "up"), ("job", "a")]);
        let id = SeriesId::of("t", &labels);
        let samples = [Sample::new(5, 1.5), Sample::new(-7, f64::NAN)];
        let ex = Exemplar {
            labels: Labels::from_pairs(&[("trace_id", "x")]),
            value: 2.0,
            t: 5,
        };
        let md = MetricMetadata {
            metric_type: MetricType::Gauge,
            help: "h".into(),
            unit: "s".into(),
        };
        let mut p = begin("t", 0);
        encode_body(
            &mut p,
            &[(id, labels.clone())],
            &[(id, &samples[..])],
            &[(id, ex)],
            &[("up".into(), md)],
            |_| {},
        )
        .unwrap();
        let rec = decode(&p).unwrap();
        assert_eq!(rec.new_series, vec![(id, labels)]);
        for n in 0..p.len() {
            let e = decode(&p[..n])
                .err()
                .unwrap_or_else(|| panic!("prefix of {n} bytes decoded"));
            assert!(e.to_string().contains("commit log record"), "{e}");
        }
        p.push(0);
        let e = decode(&p).err().expect("a trailing byte");
        assert!(e.to_string().contains("trailing"), "{e}");
        p[0] = VERSION + 1;
        assert!(decode(&p).is_err());
    }
}
