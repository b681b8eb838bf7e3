//! Fuzzing entry points (used by `fuzz/fuzz_targets/replica_write_decode.rs`
//! and `aggregate_decode.rs`, and replayed over the committed corpus by this
//! module's tests). Not an API.

use crate::convert::{write_from, write_to};
use crate::node as pb;
use cairn_common::SeriesId;
use prost::Message;

/// One replica write as a peer sends it (`node.WriteRequest`, packed
/// series included) through the receiver's decoder: a batch or an error,
/// never a panic. Every series it accepts with labels carries the id of
/// its labels (computed here, whatever the sender claimed; a series given
/// by id alone keeps the id given), and the batch sent on again decodes to
/// the same series.
pub fn replica_write(data: &[u8]) {
    let Ok(wire) = pb::WriteRequest::decode(data) else {
        return;
    };
    let Ok(req) = write_from(wire) else {
        return;
    };
    let key = |r: &cairn_storage_api::WriteRequest| {
        let mut v: Vec<_> = r
            .batch
            .series
            .iter()
            .map(|s| {
                let labels = s.labels.materialize();
                if !s.labels.is_empty() {
                    assert_eq!(s.id, SeriesId::of(&r.tenant, &labels), "id of {labels}");
                }
                (
                    s.id,
                    labels,
                    s.samples
                        .iter()
                        .map(|x| (x.t, x.v.to_bits()))
                        .collect::<Vec<_>>(),
                )
            })
            .collect();
        // A batch may repeat a series: the whole entry orders them.
        v.sort();
        v
    };
    let first = key(&req);
    let again = write_from(write_to(&req)).expect("a decoded write sent on decodes again");
    assert_eq!(key(&again), first);
}

/// A peer's answer to a pushed-down aggregation (`node.AggregateResponse`)
/// and a peer's request for one (`node.AggregateRequest`), the same bytes
/// read as either, through the receiver's decoders: a value or an error,
/// never a panic; what decodes is sent on and decodes to the same.
pub fn aggregate(data: &[u8]) {
    use crate::convert::{aggregate_from, aggregate_to, partial_from, partial_to};
    if let Ok(wire) = pb::AggregateResponse::decode(data) {
        if let Ok(p) = partial_from(wire) {
            let again =
                partial_from(partial_to(p.clone())).expect("a decoded partial decodes again");
            // NaN cells compare unequal: compare their bits.
            let bits = |p: &Option<cairn_storage_api::PartialAggregate>| {
                p.as_ref().map(|p| {
                    let cells: Vec<_> = p
                        .groups
                        .iter()
                        .flat_map(|g| g.cells.iter())
                        .map(|c| {
                            (
                                c.value.to_bits(),
                                c.kahan_c.to_bits(),
                                c.mean.to_bits(),
                                c.count.to_bits(),
                                c.incremental_mean,
                            )
                        })
                        .collect();
                    let labels: Vec<_> = p
                        .groups
                        .iter()
                        .map(|g| (g.labels.clone(), g.first))
                        .collect();
                    (
                        cells,
                        labels,
                        p.series,
                        p.samples,
                        p.step_samples.clone(),
                        p.digests.clone(),
                        p.shard_sums.clone(),
                    )
                })
            };
            assert_eq!(bits(&again), bits(&p));
        }
    }
    if let Ok(wire) = pb::AggregateRequest::decode(data) {
        if let Ok(r) = aggregate_from(wire) {
            let again = aggregate_from(aggregate_to(&r)).expect("a decoded request decodes again");
            assert_eq!(
                (
                    &again.query,
                    again.start,
                    again.end,
                    again.step,
                    again.lookback,
                    again.digests
                ),
                (&r.query, r.start, r.end, r.step, r.lookback, r.digests)
            );
            assert_eq!(again.select.matchers.len(), r.select.matchers.len());
            assert_eq!(again.select.digest_unless, r.select.digest_unless);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn aggregate_decode_corpus() {
        cairn_common::fuzz_replay::replay(
            env!("CARGO_MANIFEST_DIR"),
            "aggregate_decode",
            super::aggregate,
        );
    }

    #[test]
    fn replica_write_decode_corpus() {
        cairn_common::fuzz_replay::replay(
            env!("CARGO_MANIFEST_DIR"),
            "replica_write_decode",
            super::replica_write,
        );
    }

    /// Seeds for the corpus: a partial answer and a request as peers send
    /// them (`CAIRN_AGGREGATE_SEEDS=dir`).
    #[test]
    fn aggregate_seeds_when_asked() {
        let Ok(dir) = std::env::var("CAIRN_AGGREGATE_SEEDS") else {
            return;
        };
        use cairn_common::{Labels, MatchOp, Matcher, SeriesId};
        use cairn_storage_api::{
            AggregateRequest, PartialAggregate, PartialCell, PartialGroup, SampleDigest,
            SelectRequest,
        };
        use prost::Message;
        let cell = |v: f64, n: f64| PartialCell {
            value: v,
            kahan_c: 1e-17,
            mean: v / n,
            count: n,
            incremental_mean: n > 2.0,
        };
        let p = PartialAggregate {
            groups: vec![PartialGroup {
                labels: Labels::from_pairs(&[("job", "node")]),
                first: 3,
                cells: vec![cell(1.5, 2.0), PartialCell::default(), cell(f64::NAN, 3.0)],
            }],
            series: 2,
            samples: 40,
            step_samples: vec![0, 0, 0, 4, 0, 6],
            not_counters: vec!["node_load1".into()],
            digests: vec![SampleDigest {
                count: 20,
                hash: 0xfeed,
                series: Some(SeriesId(7)),
            }],
            shard_sums: vec![(0, Some(99)), (5, None)],
        };
        let req = AggregateRequest {
            select: SelectRequest::new(
                "t",
                vec![Matcher::new(MatchOp::RegexMatch, "job", "node|api").unwrap()],
                1000,
                61_000,
            )
            .with_digest_unless(vec![(1, Some(3))]),
            query: "sum by (job) (rate(x[5m]))".into(),
            start: 31_000,
            end: 61_000,
            step: 15_000,
            lookback: 300_000,
            max_samples: 1000,
            digests: true,
        };
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            format!("{dir}/partial"),
            crate::convert::partial_to(Some(p)).encode_to_vec(),
        )
        .unwrap();
        std::fs::write(
            format!("{dir}/request"),
            crate::convert::aggregate_to(&req).encode_to_vec(),
        )
        .unwrap();
    }

    /// Seeds for the corpus: real replica writes (`CAIRN_WRITE_SEEDS=dir`).
    #[test]
    fn write_seeds_when_asked() {
        let Ok(dir) = std::env::var("CAIRN_WRITE_SEEDS") else {
            return;
        };
        use cairn_common::{Exemplar, Labels, PreparedBatch, Sample, SeriesWrite};
        use prost::Message;
        let s = |pairs: &[(&str, &str)], n: i64, ex: bool| SeriesWrite {
            labels: Labels::from_pairs(pairs),
            samples: (0..n)
                .map(|i| Sample::new(1000 * i, i as f64 * 1.5))
                .collect(),
            exemplars: if ex {
                vec![Exemplar {
                    labels: Labels::from_pairs(&[("trace_id", "abc")]),
                    value: 0.3,
                    t: 1000,
                }]
            } else {
                vec![]
            },
        };
        let batch = PreparedBatch::from_series(
            "t",
            vec![
                s(
                    &[("__name__", "up"), ("job", "node"), ("instance", "a:9100")],
                    3,
                    false,
                ),
                s(
                    &[("__name__", "http_seconds_bucket"), ("le", "0.5")],
                    2,
                    true,
                ),
                s(
                    &[("__name__", "up"), ("job", "node"), ("instance", "b:9100")],
                    1,
                    false,
                ),
            ],
            vec![],
        );
        let wire = crate::convert::write_to(&cairn_storage_api::WriteRequest::new("t", batch));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(format!("{dir}/packed_and_exemplar"), wire.encode_to_vec()).unwrap();
    }
}
