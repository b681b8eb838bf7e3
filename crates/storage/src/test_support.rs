//! Test helpers shared by the crate's test modules: a store on a temp dir
//! with a settable clock, batches, reads, and label-set generators.

use crate::{enc, Storage, StorageConfig};
use cairn_common::limits::hard;
use cairn_common::{
    Label, Labels, MatchOp, Matcher, PreparedBatch, Sample, SeriesSource, SeriesWrite,
};
use proptest::prelude::*;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

pub(crate) const H: i64 = 3_600_000;
pub(crate) const DAY: i64 = 24 * H;

pub(crate) struct Fixture {
    pub dir: tempfile::TempDir,
    pub now: Arc<AtomicI64>,
}

impl Fixture {
    pub(crate) fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            now: Arc::new(AtomicI64::new(100 * DAY)),
        }
    }

    pub(crate) fn open(&self) -> Arc<Storage> {
        self.open_with(|_| {})
    }

    /// Opens with 4 shards, the fixture's clock, head snapshots off (the
    /// tests of the commit log see it replay everything; the snapshot tests
    /// turn them on) and `tune` applied.
    pub(crate) fn open_with(&self, tune: impl FnOnce(&mut StorageConfig)) -> Arc<Storage> {
        let now = self.now.clone();
        let mut cfg = StorageConfig::new(self.dir.path());
        cfg.num_shards = 4;
        cfg.snapshot_interval = std::time::Duration::ZERO;
        tune(&mut cfg);
        Storage::open(cfg, Arc::new(move || now.load(Ordering::SeqCst))).unwrap()
    }
}

pub(crate) fn labels(name: &str, job: &str) -> Labels {
    Labels::from_pairs(&[("__name__", name), ("job", job)])
}

/// The tenant every storage test writes as.
pub(crate) const TENANT: &str = "t";

/// A batch of `series` for [`TENANT`].
pub(crate) fn batch(series: Vec<(Labels, Vec<(i64, f64)>)>) -> PreparedBatch {
    let series = series
        .into_iter()
        .map(|(labels, s)| SeriesWrite {
            labels,
            samples: s.into_iter().map(|(t, v)| Sample::new(t, v)).collect(),
            exemplars: vec![],
        })
        .collect();
    PreparedBatch::from_series(TENANT, series, vec![])
}

pub(crate) fn read(s: &Storage, tenant: &str, name: &str) -> Vec<(String, Vec<(i64, u64)>)> {
    let m = [Matcher::new(MatchOp::Equal, "__name__", name).unwrap()];
    s.select(tenant, &m, i64::MIN / 2, i64::MAX / 2)
        .unwrap()
        .into_iter()
        .map(|d| {
            (
                d.labels.to_string(),
                d.samples.iter().map(|x| (x.t, x.v.to_bits())).collect(),
            )
        })
        .collect()
}

/// A label set of `n` labels, names ascending by a 4-digit prefix and
/// padded to their chosen length, values of their chosen length.
pub(crate) fn label_set(n: usize, name_lens: &[usize], value_lens: &[usize], uni: &str) -> Labels {
    let v = (0..n)
        .map(|i| {
            let mut name = format!("{i:04}");
            let nl = name_lens[i % name_lens.len()].max(4);
            name.extend(std::iter::repeat_n('n', nl - 4));
            let vl = value_lens[i % value_lens.len()];
            let mut value: String = uni.chars().take_while(|_| true).collect();
            while value.len() > vl {
                value.pop();
            }
            value.extend(std::iter::repeat_n('v', vl - value.len()));
            Label::new(name, value)
        })
        .collect();
    Labels::from_sorted_unchecked(v)
}

pub(crate) fn len_up_to(max: usize) -> impl Strategy<Value = usize> {
    prop_oneof![8 => 0usize..24, 1 => Just(max), 1 => 0..=max]
}

pub(crate) fn labels_strategy() -> impl Strategy<Value = Labels> {
    (
        prop_oneof![6 => 0usize..8, 1 => Just(hard::MAX_LABELS), 1 => 0..=hard::MAX_LABELS],
        proptest::collection::vec(len_up_to(hard::MAX_LABEL_NAME_BYTES), 1..4),
        proptest::collection::vec(len_up_to(hard::MAX_LABEL_VALUE_BYTES), 1..4),
        "\\PC{0,6}",
    )
        .prop_map(|(n, nl, vl, uni)| {
            // Keep a case at most a few MiB: bound-sized values on a few labels.
            let vl: Vec<usize> = if n > 64 {
                vl.iter().map(|&l| if l > 256 { 256 } else { l }).collect()
            } else {
                vl
            };
            let mut l = label_set(n, &nl, &vl, &uni);
            if n > 64 {
                // One label at each bound even in the big sets.
                let mut v = l.into_vec();
                v[0].value = "v".repeat(hard::MAX_LABEL_VALUE_BYTES);
                v[1].name = format!("0001{}", "n".repeat(hard::MAX_LABEL_NAME_BYTES - 4));
                l = Labels::from_sorted_unchecked(v);
            }
            l
        })
}

/// A label set encoded as the release before the hard bounds did, with
/// no check.
pub(crate) fn put_labels_raw(p: &mut Vec<u8>, l: &Labels) {
    enc::put_uvarint(p, l.len() as u64);
    for x in l.iter() {
        enc::put_bytes(p, x.name.as_bytes());
        enc::put_bytes(p, x.value.as_bytes());
    }
}

pub(crate) fn seg_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir.join("commitlog"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}
