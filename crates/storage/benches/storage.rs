//! Run with: cargo bench -p cairn-storage
//!
//! The storage hot paths on a real RocksDB in a temp dir: a write of 2000
//! known series × 1 sample (commit-log append + head apply, the shape of a
//! Prometheus remote-write request; fsync every 10ms so the CPU path is
//! measured, not the disk), and index selection of 2000 of 20000 series by
//! `=` and by regex matchers, plus reading their samples.

use cairn_common::{
    Labels, MatchOp, Matcher, PreparedBatch, Sample, SampleWriter, SeriesSource, SeriesWrite,
};
use cairn_storage::{FsyncPolicy, Storage, StorageConfig};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const SERIES: usize = 20_000;

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
    ])
}

fn batch(range: std::ops::Range<usize>, t: i64) -> PreparedBatch {
    let series = range
        .map(|i| SeriesWrite {
            labels: labels(i),
            samples: vec![Sample::new(t, i as f64 + t as f64 / 1000.0)],
            exemplars: vec![],
        })
        .collect();
    PreparedBatch::from_series("default", series, vec![])
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let now = Arc::new(AtomicI64::new(1_700_000_000_000));
    let clock = now.clone();
    let mut cfg = StorageConfig::new(dir.path());
    cfg.fsync = FsyncPolicy::Periodic(Duration::from_millis(10));
    let store = Storage::open(cfg, Arc::new(move || clock.load(Ordering::Relaxed))).expect("open");
    // Register every series once, with a few samples each.
    for k in 0..10 {
        store
            .write(
                "default",
                batch(0..SERIES, 1_700_000_000_000 - 150_000 + k * 15_000),
            )
            .expect("write");
    }
    let mut t = 1_700_000_000_000i64;
    let mut g = c.benchmark_group("storage");
    g.throughput(Throughput::Elements(2000));
    g.bench_function("write_2000_known_series", |b| {
        b.iter_batched(
            || {
                t += 15_000;
                now.store(t, Ordering::Relaxed);
                batch(0..2000, t)
            },
            |wb| store.write("default", wb).expect("write"),
            criterion::BatchSize::SmallInput,
        )
    });
    let eq = [
        Matcher::new(MatchOp::Equal, "__name__", "node_cpu_seconds_total").expect("m"),
        Matcher::new(MatchOp::Equal, "mode", "user").expect("m"),
        Matcher::new(MatchOp::Equal, "cpu", "3").expect("m"),
    ];
    let re = [
        Matcher::new(MatchOp::Equal, "__name__", "node_cpu_seconds_total").expect("m"),
        Matcher::new(MatchOp::RegexMatch, "instance", "host-00[0-3].*").expect("m"),
    ];
    g.finish();
    let mut g = c.benchmark_group("storage_read");
    g.bench_function("select_eq_with_samples", |b| {
        b.iter(|| {
            store
                .select("default", &eq, 0, i64::MAX / 2)
                .expect("select")
        })
    });
    g.bench_function("series_regex_labels_only", |b| {
        b.iter(|| {
            store
                .series("default", &re, 0, i64::MAX / 2)
                .expect("series")
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
