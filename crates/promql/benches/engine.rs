//! Run with: cargo bench -p cairn-promql
//!
//! Engine-only speed of dashboard-like range queries (1h at 15s steps) over
//! a `MemStore` holding generated node-exporter-like series, so the
//! evaluator is measured without storage or HTTP.

use cairn_common::{Labels, MemStore, PreparedBatch, Sample, SampleWriter, SeriesWrite};
use cairn_promql::{Engine, EngineOptions};
use criterion::{criterion_group, criterion_main, Criterion};

const STEP_MS: i64 = 15_000;
const SAMPLES: i64 = 240;
const HOSTS: usize = 100;
const CPUS: usize = 4;
const MODES: [&str; 8] = [
    "idle", "user", "system", "iowait", "irq", "softirq", "steal", "nice",
];
const MOUNTS: [(&str, &str); 4] = [
    ("/", "ext4"),
    ("/boot", "ext4"),
    ("/run", "tmpfs"),
    ("/data", "xfs"),
];

fn series(name: &str, host: usize, extra: &[(&str, &str)], f: impl Fn(i64) -> f64) -> SeriesWrite {
    let instance = format!("host-{host:05}:9100");
    let region = ["us-east", "eu-west", "ap-south"][host % 3];
    let mut pairs: Vec<(&str, &str)> = vec![
        ("__name__", name),
        ("instance", &instance),
        ("job", "node"),
        ("region", region),
    ];
    pairs.extend_from_slice(extra);
    SeriesWrite {
        labels: Labels::from_pairs(&pairs),
        samples: (0..SAMPLES)
            .map(|i| Sample::new(i * STEP_MS, f(i)))
            .collect(),
        exemplars: Vec::new(),
    }
}

fn store() -> MemStore {
    let m = MemStore::new();
    let mut batch = Vec::new();
    for h in 0..HOSTS {
        for cpu in 0..CPUS {
            let c = cpu.to_string();
            for (mi, mode) in MODES.iter().enumerate() {
                let rate = 0.1 + (h * 7 + cpu * 3 + mi) as f64 % 10.0 / 10.0;
                batch.push(series(
                    "node_cpu_seconds_total",
                    h,
                    &[("cpu", &c), ("mode", mode)],
                    move |i| i as f64 * 15.0 * rate,
                ));
            }
        }
        for (mp, fs) in MOUNTS {
            let size = 1e11 + h as f64 * 1e9;
            batch.push(series(
                "node_filesystem_size_bytes",
                h,
                &[("mountpoint", mp), ("fstype", fs)],
                move |_| size,
            ));
            batch.push(series(
                "node_filesystem_avail_bytes",
                h,
                &[("mountpoint", mp), ("fstype", fs)],
                move |i| size * (0.5 + (i % 17) as f64 / 100.0),
            ));
        }
        batch.push(series("node_load1", h, &[], move |i| (i % 9) as f64 / 3.0));
    }
    m.write(
        "default",
        PreparedBatch::from_series("default", batch, vec![]),
    )
    .expect("write");
    m
}

fn bench(c: &mut Criterion) {
    let m = store();
    let engine = Engine::new(EngineOptions::default());
    let end = (SAMPLES - 1) * STEP_MS;
    let start = end - 3_600_000;
    let queries = [
        (
            "cpu_busy_by_instance",
            r#"sum by (instance) (rate(node_cpu_seconds_total{mode!="idle"}[5m]))"#,
        ),
        (
            "cpu_util_avg_by_region",
            r#"100 * (1 - avg by (region) (rate(node_cpu_seconds_total{mode="idle"}[5m])))"#,
        ),
        (
            "topk_cpu_rate",
            r#"topk(10, rate(node_cpu_seconds_total{mode="user"}[5m]))"#,
        ),
        (
            "fs_used_max_by_mount",
            r#"max by (mountpoint) (1 - node_filesystem_avail_bytes{fstype!="tmpfs"} / node_filesystem_size_bytes{fstype!="tmpfs"})"#,
        ),
        ("load1_all", r#"node_load1"#),
        ("max_over_time_load", r#"max_over_time(node_load1[10m])"#),
    ];
    let mut g = c.benchmark_group("range_1h_15s");
    g.sample_size(10);
    for (name, q) in queries {
        g.bench_function(name, |b| {
            b.iter(|| {
                engine
                    .range_query(&m, "default", q, start, end, STEP_MS)
                    .expect("query")
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
