//! Fuzzing entry points (used by `fuzz/fuzz_targets/remote_write_decode.rs`
//! and `remote_read_decode.rs`, and replayed over the committed corpus by
//! this module's tests). Not an API.

use cairn_common::{IngestLimits, SeriesId};

/// Largest decoded body the target allows (small, so bombs fail fast).
const MAX_DECODED: usize = 1 << 24;

/// One remote-write body, raw and snappy-framed, through the production
/// decoder [`crate::decode_prepared`] under the default limits (a smaller
/// decoded size): it must return a batch or an error,
/// never panic. Every series it accepts carries the id of its labels, and
/// when the prost decoder plus [`crate::validate`] (same limits) also
/// accepts the body, both accept and refuse the same series, with the same
/// labels, samples and exemplars. Decoding with a [`crate::KnownLabels`]
/// (once to fill it, once to use it) gives the same answer as without.
pub fn remote_write(data: &[u8]) {
    let framed = snap::raw::Encoder::new()
        .compress_vec(data)
        .unwrap_or_default();
    let limits = IngestLimits {
        max_decoded_size: MAX_DECODED,
        ..Default::default()
    };
    // A clock at Prometheus's latest time: no sample is refused as future,
    // those past that time still are.
    let now = cairn_common::limits::hard::MAX_TIME_MS;
    for body in [data, framed.as_slice()] {
        let plain = crate::decode_prepared("t", body, &limits, now);
        let known = crate::KnownLabels::new(1 << 10);
        for round in ["filling", "using"] {
            let k = crate::decode_known("t", body, &limits, now, Some(&known));
            match (&plain, &k) {
                (Ok(a), Ok(b)) => same_decoding(a, b, round),
                (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string(), "{round}"),
                _ => panic!("{round} known labels: {k:?} against {plain:?}"),
            }
        }
        let Ok((batch, invalid)) = plain else {
            continue;
        };
        for s in &batch.series {
            let labels = s.labels.materialize();
            assert_eq!(s.id, SeriesId::of("t", &labels), "id of {labels}");
        }
        let Ok(req) = crate::decode_remote_write(body, MAX_DECODED) else {
            continue;
        };
        let Ok(slow) = crate::validate(req, &limits, now) else {
            continue;
        };
        assert_eq!(invalid, slow.invalid, "refused series");
        assert_eq!(batch.series.len(), slow.series.len(), "accepted series");
        for (s, w) in batch.series.iter().zip(&slow.series) {
            let labels = s.labels.materialize();
            assert_eq!(w.labels, labels);
            assert_eq!(w.samples.len(), s.samples.len(), "samples of {labels}");
            for (a, b) in w.samples.iter().zip(&s.samples) {
                assert_eq!((a.t, a.v.to_bits()), (b.t, b.v.to_bits()), "{labels}");
            }
            assert_eq!(
                w.exemplars.len(),
                s.exemplars.len(),
                "exemplars of {labels}"
            );
            for (a, b) in w.exemplars.iter().zip(&s.exemplars) {
                assert_eq!(
                    (&a.labels, a.t, a.value.to_bits()),
                    (&b.labels, b.t, b.value.to_bits()),
                    "exemplar of {labels}"
                );
            }
        }
        assert_eq!(batch.metadata, slow.metadata);
    }
}

/// Two decodings of one body agree series by series: ids, labels, samples
/// and exemplars, and the refused series.
fn same_decoding(
    a: &(cairn_common::PreparedBatch, Vec<crate::Invalid>),
    b: &(cairn_common::PreparedBatch, Vec<crate::Invalid>),
    what: &str,
) {
    assert_eq!(a.1, b.1, "{what}: refused series");
    assert_eq!(
        a.0.series.len(),
        b.0.series.len(),
        "{what}: accepted series"
    );
    for (x, y) in a.0.series.iter().zip(&b.0.series) {
        let labels = x.labels.materialize();
        assert_eq!(x.id, y.id, "{what}: id of {labels}");
        assert_eq!(labels, y.labels.materialize(), "{what}");
        assert_eq!(x.labels.is_empty(), y.labels.is_empty(), "{what}");
        let bits = |s: &cairn_common::PreparedSeries| -> Vec<(i64, u64)> {
            s.samples.iter().map(|p| (p.t, p.v.to_bits())).collect()
        };
        assert_eq!(bits(x), bits(y), "{what}: samples of {labels}");
        assert_eq!(
            format!("{:?}", x.exemplars),
            format!("{:?}", y.exemplars),
            "{what}: exemplars of {labels}"
        );
    }
    assert_eq!(a.0.metadata, b.0.metadata, "{what}: metadata");
}

/// A remote-read body, as sent and snappy-framed, through the handler's
/// decoder [`crate::remote_read::decode_read_request`]: queries or a
/// request error (which the HTTP layer answers with 400, or 413 when too
/// large), never a panic; every decoded query has a matcher that does not
/// match the empty string.
pub fn remote_read(data: &[u8]) {
    let framed = snap::raw::Encoder::new()
        .compress_vec(data)
        .unwrap_or_default();
    for body in [data, framed.as_slice()] {
        match crate::remote_read::decode_read_request(body, MAX_DECODED) {
            Ok(queries) => {
                for (ms, _, _) in &queries {
                    assert!(ms.iter().any(|m| !m.matches_empty()));
                }
            }
            Err(e) => {
                assert!(
                    matches!(
                        e,
                        crate::IngestError::ReadBody(_) | crate::IngestError::ReadRequest(_)
                    ),
                    "{e}"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    fn replay(target: &str, f: impl Fn(&[u8])) {
        cairn_common::fuzz_replay::replay(env!("CARGO_MANIFEST_DIR"), target, f);
    }

    #[test]
    fn remote_write_decode_corpus() {
        replay("remote_write_decode", super::remote_write);
    }

    #[test]
    fn remote_read_decode_corpus() {
        replay("remote_read_decode", super::remote_read);
    }
}
