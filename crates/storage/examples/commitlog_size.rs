//! Commit-log bytes per sample (issue 12) on a node-exporter-like
//! remote-write workload, through `Storage::write`, before any flush.
//!
//! Run with:
//! `cargo run --release -p cairn-storage --example commitlog_size -- <format> [series] [scrapes]`
//! where format is `v1`, `v2-none`, `v2-lz4`, `v2-zstd1` or `v2-zstd3`
//! (defaults: 100000 series, 20 scrapes). Requests are 2000 series of one
//! sample each at the scrape's shared timestamp (Prometheus'
//! `max_samples_per_send`), scrapes 15 s apart; series are counters going
//! up by small amounts (integers and 2-decimal seconds), gauges of 2-3
//! significant digits and constants. Prints the commit log's bytes per
//! sample, the data dir's (index included), and the writes' CPU time
//! (user + system of the process, RocksDB's threads included).

use cairn_common::{Labels, PreparedBatch, Sample, SampleWriter, SeriesWrite};
use cairn_storage::{CommitLogCompression, CommitLogFormat, FsyncPolicy, Storage, StorageConfig};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const BATCH: usize = 2000;
const T0: i64 = 1_700_000_000_000;

/// xorshift64*: a fixed, dependency-free stream of numbers.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const METRICS: [&str; 16] = [
    "node_cpu_seconds_total",
    "node_network_receive_bytes_total",
    "node_network_transmit_bytes_total",
    "node_network_receive_packets_total",
    "node_disk_read_bytes_total",
    "node_disk_written_bytes_total",
    "node_disk_io_time_seconds_total",
    "node_filesystem_avail_bytes",
    "node_filesystem_size_bytes",
    "node_memory_MemAvailable_bytes",
    "node_load1",
    "node_load5",
    "node_context_switches_total",
    "node_intr_total",
    "node_softnet_processed_total",
    "node_filesystem_files_free",
];

/// How a series' value moves.
#[derive(Clone, Copy)]
enum Kind {
    /// Whole-number counter going up by up to this much.
    Counter(u64),
    /// Seconds counter with two decimals, up by up to 15.00.
    Seconds,
    /// A gauge of 2-3 significant digits at this power of ten.
    Gauge(i32),
    /// Never changes.
    Constant,
}

struct Series {
    labels: Labels,
    kind: Kind,
    /// Current value, in hundredths for `Seconds`.
    v: u64,
}

fn series(n: usize, rng: &mut Rng) -> Vec<Series> {
    (0..n)
        .map(|i| {
            let metric = METRICS[i % METRICS.len()];
            let labels = Labels::from_pairs(&[
                ("__name__", metric.to_string()),
                ("device", format!("dev{}", (i / METRICS.len()) % 8)),
                ("instance", format!("host-{:05}:9100", i / 128)),
                ("job", "node".to_string()),
                (
                    "mode",
                    ["idle", "user", "system", "iowait"][(i / 7) % 4].to_string(),
                ),
            ]);
            let kind = match rng.below(20) {
                0..=7 => Kind::Counter([10, 1000, 100_000][rng.below(3) as usize]),
                8..=11 => Kind::Seconds,
                12..=16 => Kind::Gauge(rng.below(12) as i32 - 3),
                _ => Kind::Constant,
            };
            Series {
                labels,
                kind,
                v: rng.below(1 << 40),
            }
        })
        .collect()
}

fn step(s: &mut Series, rng: &mut Rng) -> f64 {
    match s.kind {
        Kind::Counter(up) => {
            s.v += rng.below(up);
            s.v as f64
        }
        Kind::Seconds => {
            s.v += rng.below(1500);
            s.v as f64 / 100.0
        }
        Kind::Gauge(p) => {
            let m = (rng.below(990) + 10) as f64;
            if p >= 0 {
                m * 10f64.powi(p)
            } else {
                m / 10f64.powi(-p)
            }
        }
        Kind::Constant => (s.v % 1_000_000) as f64 * 4096.0,
    }
}

fn dir_bytes(p: &Path) -> u64 {
    std::fs::read_dir(p)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_bytes(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

#[allow(unsafe_code)]
fn cpu_seconds() -> f64 {
    // SAFETY: a zeroed rusage is a valid value, and getrusage only writes
    // the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(u.ru_utime) + tv(u.ru_stime)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let format = match args.get(1).map(String::as_str).unwrap_or("v2-zstd1") {
        "v1" => CommitLogFormat::V1,
        "v2-none" => CommitLogFormat::V2(CommitLogCompression::None),
        "v2-lz4" => CommitLogFormat::V2(CommitLogCompression::Lz4),
        "v2-zstd1" => CommitLogFormat::V2(CommitLogCompression::Zstd(1)),
        "v2-zstd3" => CommitLogFormat::V2(CommitLogCompression::Zstd(3)),
        f => panic!("unknown format {f}"),
    };
    let n: usize = args.get(2).map_or(100_000, |a| a.parse().expect("series"));
    let scrapes: i64 = args.get(3).map_or(20, |a| a.parse().expect("scrapes"));
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = StorageConfig::new(dir.path());
    cfg.fsync = FsyncPolicy::Periodic(Duration::from_secs(1));
    cfg.commitlog_format = format;
    let end = T0 + scrapes * 15_000;
    let store = Storage::open(cfg, Arc::new(move || end)).expect("open");
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut all = series(n, &mut rng);
    let cpu0 = cpu_seconds();
    let wall = std::time::Instant::now();
    for k in 0..scrapes {
        let t = T0 + k * 15_000;
        for chunk in all.chunks_mut(BATCH) {
            let series = chunk
                .iter_mut()
                .map(|s| SeriesWrite {
                    labels: s.labels.clone(),
                    samples: vec![Sample::new(t, step(s, &mut rng))],
                    exemplars: vec![],
                })
                .collect();
            let batch = PreparedBatch::from_series("default", series, vec![]);
            store.write("default", batch).expect("write");
        }
    }
    let cpu = cpu_seconds() - cpu0;
    let wall = wall.elapsed().as_secs_f64();
    store.close().expect("close");
    let samples = (n as i64 * scrapes) as f64;
    let log = dir_bytes(&dir.path().join("commitlog"));
    let data = dir_bytes(dir.path());
    println!(
        "format={} series={n} scrapes={scrapes} samples={samples} commitlog_bytes={log} commitlog_bytes_per_sample={:.2} data_dir_bytes_per_sample={:.2} write_cpu_s={cpu:.2} write_wall_s={wall:.2} cpu_us_per_sample={:.3}",
        args.get(1).map(String::as_str).unwrap_or("v2-zstd1"),
        log as f64 / samples,
        data as f64 / samples,
        cpu * 1e6 / samples,
    );
}
