//! Fuzzing entry points (used by `fuzz/fuzz_targets/replica_write_decode.rs`,
//! and replayed over the committed corpus by this module's tests). Not an API.

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

#[cfg(test)]
mod tests {
    #[test]
    fn replica_write_decode_corpus() {
        cairn_common::fuzz_replay::replay(
            env!("CARGO_MANIFEST_DIR"),
            "replica_write_decode",
            super::replica_write,
        );
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
