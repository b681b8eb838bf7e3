//! Run with: cargo bench -p cairn-storage --bench cardinality
//!
//! The cost of a cardinality read (`SeriesReader::cardinality`, what
//! `/api/v1/status/tsdb` and the Mimir cardinality endpoints ask) on a
//! real RocksDB index of 100,000 series (one unique `pod` per series, 1,563
//! instances, 8 cpus × 8 modes: ~101,600 distinct label pairs): counted
//! from the postings over all time (no matchers; and `mode="user"`, an
//! eighth of the series), over the last hour (each series' id read from
//! its registry entry to check it has data then), against counting the
//! label sets `series` returns (the contract's default).

use cairn_common::{Labels, MatchOp, Matcher, PreparedBatch, Sample, SampleWriter, SeriesWrite};
use cairn_storage::{FsyncPolicy, Storage, StorageConfig};
use cairn_storage_api::{block_on, Cardinality, SeriesQuery, SeriesReader};
use criterion::{criterion_group, criterion_main, Criterion};
use std::sync::Arc;
use std::time::Duration;

const SERIES: usize = 100_000;
const NOW: i64 = 1_700_000_000_000;

fn labels(i: usize) -> Labels {
    let modes = [
        "idle", "user", "system", "iowait", "irq", "softirq", "steal", "nice",
    ];
    Labels::from_pairs(&[
        ("__name__", "node_cpu_seconds_total".to_string()),
        ("cpu", (i % 8).to_string()),
        ("instance", format!("host-{:04}:9100", i / 64)),
        ("job", "node".to_string()),
        ("mode", modes[(i / 8) % 8].to_string()),
        ("pod", format!("pod-{i:06}")),
    ])
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = StorageConfig::new(dir.path());
    cfg.fsync = FsyncPolicy::Periodic(Duration::from_millis(10));
    let store = Storage::open(cfg, Arc::new(|| NOW)).expect("open");
    for chunk in (0..SERIES).collect::<Vec<_>>().chunks(10_000) {
        let series = chunk
            .iter()
            .map(|&i| SeriesWrite {
                labels: labels(i),
                samples: vec![Sample::new(NOW - 60_000, i as f64)],
                exemplars: vec![],
            })
            .collect();
        store
            .write(
                "default",
                PreparedBatch::from_series("default", series, vec![]),
            )
            .expect("write");
    }
    store.flush(true).expect("flush");
    let all = || SeriesQuery::new("default", vec![], i64::MIN, i64::MAX);
    let user = || {
        SeriesQuery::new(
            "default",
            vec![Matcher::new(MatchOp::Equal, "mode", "user").expect("m")],
            i64::MIN,
            i64::MAX,
        )
    };
    let c0 = block_on(store.cardinality(all())).expect("cardinality");
    assert_eq!(c0.series, SERIES as u64);
    let mut g = c.benchmark_group("cardinality_100k_series");
    g.sample_size(10);
    g.bench_function("from_postings_all", |b| {
        b.iter(|| block_on(store.cardinality(all())).expect("cardinality"))
    });
    g.bench_function("from_postings_mode_user", |b| {
        b.iter(|| block_on(store.cardinality(user())).expect("cardinality"))
    });
    let last_hour = || SeriesQuery::new("default", vec![], NOW - 3_600_000, NOW);
    assert_eq!(
        block_on(store.cardinality(last_hour()))
            .expect("cardinality")
            .series,
        SERIES as u64
    );
    g.bench_function("from_index_last_hour", |b| {
        b.iter(|| block_on(store.cardinality(last_hour())).expect("cardinality"))
    });
    g.bench_function("from_label_sets_all", |b| {
        b.iter(|| {
            let sets = block_on(store.series(all())).expect("series");
            Cardinality::of_series(&sets)
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
