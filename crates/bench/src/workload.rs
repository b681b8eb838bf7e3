//! Seeded, reproducible workloads: node-exporter-like hosts and services
//! exposing classic histograms, with optional churn, high cardinality,
//! backfill and out-of-order delivery.
//!
//! A workload is a list of *targets* (a host or a pod), each owning a fixed
//! number of series and its own random stream, so the same seed gives the
//! same bytes whatever the number of shards or threads. All series of a
//! target go to one shard, which keeps every series' samples in time order
//! on the wire (unless out-of-order delivery is asked for).

use crate::encode::{encode_labels, BatchBuilder, EncodedRequest, ExemplarData};
use crate::rng::Rng;
use cairn_proto::prompb::MetricMetadata;

/// The bit pattern Prometheus writes as a staleness marker.
pub const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// node-exporter-like hosts (86 series each).
    Node,
    /// services exposing classic histograms with exemplars (58 series per pod).
    Histogram,
    /// hosts and pods alternating.
    Mixed,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub kind: Kind,
    /// Active series at any moment.
    pub series: usize,
    pub samples_per_series: usize,
    pub interval_ms: i64,
    pub start_ms: i64,
    pub seed: u64,
    /// Probability per target per scrape round that the target is replaced
    /// (old series get a staleness marker, new ones start next round).
    pub churn: f64,
    /// Adds a `client_id` label with a unique value to every series.
    pub high_cardinality: bool,
    /// Probability that a histogram bucket which saw observations in a
    /// round carries an exemplar.
    pub exemplar_ratio: f64,
    /// Scrape timestamps jitter by ±this many milliseconds.
    pub jitter_ms: i64,
    /// Send the data in blocks of this many rounds, newest block first.
    pub backfill_block_rounds: Option<usize>,
    /// Probability that a request is sent late (after up to 8 later ones).
    pub out_of_order: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TargetKind {
    Node,
    Service,
}

const NODE_SERIES: usize = 86;
const SERVICE_SERIES: usize = 58;
const CPUS: usize = 4;
const CPU_MODES: [(&str, f64); 8] = [
    ("idle", 0.80),
    ("user", 0.11),
    ("system", 0.05),
    ("iowait", 0.015),
    ("irq", 0.002),
    ("softirq", 0.008),
    ("nice", 0.003),
    ("steal", 0.002),
];
const BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const SERVICES: [&str; 8] = [
    "checkout", "cart", "payments", "search", "frontend", "auth", "catalog", "shipping",
];
const REGIONS: [&str; 3] = ["eu-west-1", "us-east-1", "ap-south-1"];
/// (method, route, status, requests/s, median latency s)
const ROUTES: [(&str, &str, &str, f64, f64); 4] = [
    ("GET", "/api/v1/items", "200", 40.0, 0.02),
    ("POST", "/api/v1/orders", "200", 6.0, 0.12),
    ("GET", "/api/v1/search", "200", 12.0, 0.35),
    ("GET", "/api/v1/items", "500", 0.3, 0.9),
];

/// How one series' value evolves.
#[derive(Debug, Clone)]
enum Gen {
    Const(f64),
    /// A counter in hundredths (USER_HZ ticks): values with two decimals.
    Cents {
        cents: u64,
        per_round: f64,
    },
    /// A counter in thousandths (milliseconds): values with three decimals.
    Millis {
        millis: u64,
        per_round: f64,
    },
    /// An integer counter growing irregularly, with bursts.
    Bursty {
        v: u64,
        mean: f64,
        quantum: u64,
    },
    /// A quantised random walk (bytes in pages, integer gauges).
    Walk {
        v: f64,
        lo: f64,
        hi: f64,
        sigma: f64,
        quantum: f64,
        p_change: f64,
    },
    /// A mean-reverting gauge with two decimals (load averages).
    Load {
        v: f64,
        mean: f64,
        sigma: f64,
    },
    /// `node_time_seconds`: the scrape time in seconds with nanoseconds.
    TimeSeconds,
    /// `scrape_duration_seconds`: a noisy full-precision float.
    ScrapeDuration {
        mean: f64,
    },
}

impl Gen {
    fn next(&mut self, rng: &mut Rng, t: i64) -> f64 {
        match self {
            Gen::Const(v) => *v,
            Gen::Cents { cents, per_round } => {
                let inc = (*per_round * (1.0 + 0.3 * rng.normal())).max(0.0);
                *cents += inc.round() as u64;
                *cents as f64 / 100.0
            }
            Gen::Millis { millis, per_round } => {
                let inc = (*per_round * (1.0 + 0.5 * rng.normal())).max(0.0);
                *millis += inc.round() as u64;
                *millis as f64 / 1000.0
            }
            Gen::Bursty { v, mean, quantum } => {
                let mut inc = *mean * (0.8 * rng.normal()).exp();
                if rng.chance(0.02) {
                    inc *= 20.0;
                }
                *v += (inc / *quantum as f64).round() as u64 * *quantum;
                *v as f64
            }
            Gen::Walk {
                v,
                lo,
                hi,
                sigma,
                quantum,
                p_change,
            } => {
                if rng.chance(*p_change) {
                    let nv = (*v + *sigma * rng.normal()).clamp(*lo, *hi);
                    *v = (nv / *quantum).round() * *quantum;
                }
                *v
            }
            Gen::Load { v, mean, sigma } => {
                *v = (*v + 0.2 * (*mean - *v) + *sigma * rng.normal()).max(0.0);
                (*v * 100.0).round() / 100.0
            }
            Gen::TimeSeconds => t as f64 / 1000.0 + rng.below(1_000_000) as f64 * 1e-9,
            Gen::ScrapeDuration { mean } => *mean * (0.3 * rng.normal()).exp(),
        }
    }
}

/// One route's histogram state in a pod.
#[derive(Debug, Clone)]
struct Histo {
    rps: f64,
    mu: f64,
    counts: [u64; BUCKETS.len() + 1],
    sum: f64,
}

const SIGMA: f64 = 0.9;

impl Histo {
    /// Advances one scrape interval; returns the new observations per bucket.
    fn step(&mut self, rng: &mut Rng, interval_s: f64) -> [u64; BUCKETS.len() + 1] {
        let lambda = self.rps * interval_s;
        let n = (lambda + lambda.sqrt() * rng.normal()).round().max(0.0) as u64;
        let mut new = [0u64; BUCKETS.len() + 1];
        let mut left = n;
        let mut prev_cdf = 0.0;
        for (i, le) in BUCKETS.iter().enumerate() {
            let cdf = norm_cdf((le.ln() - self.mu) / SIGMA);
            let q = ((cdf - prev_cdf) / (1.0 - prev_cdf)).clamp(0.0, 1.0);
            prev_cdf = cdf;
            if left == 0 {
                break;
            }
            let l = left as f64;
            let k = (l * q + (l * q * (1.0 - q)).sqrt() * rng.normal())
                .round()
                .clamp(0.0, l) as u64;
            new[i] = k;
            left -= k;
        }
        new[BUCKETS.len()] = left;
        let mean = (self.mu + SIGMA * SIGMA / 2.0).exp();
        self.sum += n as f64 * mean * (1.0 + 0.1 * rng.normal()).max(0.1);
        for (c, k) in self.counts.iter_mut().zip(new) {
            *c += k;
        }
        new
    }
}

fn norm_cdf(x: f64) -> f64 {
    // Abramowitz & Stegun 7.1.26 via erf; plenty for a load generator.
    let z = x / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * z.abs());
    let y = 1.0
        - (((((1.061_405_429 * t - 1.453_152_027) * t) + 1.421_413_741) * t - 0.284_496_736) * t
            + 0.254_829_592)
            * t
            * (-z * z).exp();
    0.5 * (1.0 + if z >= 0.0 { y } else { -y })
}

#[derive(Debug, Clone)]
struct SeriesDef {
    labels: Vec<u8>,
    gen: Gen,
}

/// A host or a pod: its series, their state, its random stream.
#[derive(Debug, Clone)]
struct Target {
    kind: TargetKind,
    index: u64,
    generation: u64,
    n_series: usize,
    offset_ms: i64,
    series: Vec<SeriesDef>,
    histos: Vec<Histo>,
    rng: Rng,
}

struct LabelSet(Vec<(String, String)>);

impl LabelSet {
    fn new(name: &str, common: &[(String, String)]) -> Self {
        let mut v = Vec::with_capacity(common.len() + 4);
        v.push(("__name__".to_string(), name.to_string()));
        v.extend_from_slice(common);
        LabelSet(v)
    }
    fn with(mut self, n: &str, v: &str) -> Self {
        self.0.push((n.to_string(), v.to_string()));
        self
    }
    fn encode(mut self, unique: Option<&mut Rng>) -> Vec<u8> {
        if let Some(rng) = unique {
            self.0.push(("client_id".to_string(), rng.hex(16)));
        }
        self.0.sort();
        let refs: Vec<(&str, &str)> = self
            .0
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        encode_labels(&refs)
    }
}

impl Target {
    fn new(cfg: &Config, kind: TargetKind, index: u64, generation: u64, n_series: usize) -> Self {
        let mut rng = Rng::derive(cfg.seed, &[index, generation]);
        let offset_ms = rng.below(cfg.interval_ms.max(1) as u64) as i64;
        let mut t = Target {
            kind,
            index,
            generation,
            n_series,
            offset_ms,
            series: Vec::new(),
            histos: Vec::new(),
            rng,
        };
        match kind {
            TargetKind::Node => t.build_node(cfg),
            TargetKind::Service => t.build_service(cfg),
        }
        debug_assert!(t.series.len() >= n_series);
        t.series.truncate(n_series);
        t
    }

    fn build_node(&mut self, cfg: &Config) {
        let rng = &mut self.rng;
        let mut uniq = if cfg.high_cardinality {
            Some(Rng::derive(cfg.seed, &[self.index, self.generation, 0xC1]))
        } else {
            None
        };
        let instance = if self.generation == 0 {
            format!("host-{:05}:9100", self.index)
        } else {
            format!("host-{:05}-{}:9100", self.index, self.generation)
        };
        let region = REGIONS[(self.index % REGIONS.len() as u64) as usize];
        let common = vec![
            ("instance".to_string(), instance),
            ("job".to_string(), "node".to_string()),
            ("region".to_string(), region.to_string()),
        ];
        let iv = cfg.interval_ms as f64 / 1000.0;
        let mut out = Vec::with_capacity(NODE_SERIES);
        let mut add = |ls: LabelSet, gen: Gen, u: &mut Option<Rng>| {
            out.push(SeriesDef {
                labels: ls.encode(u.as_mut()),
                gen,
            });
        };
        let busy = rng.range(0.3, 1.7);
        let uptime_cents = rng.range(1e5, 1e8) as u64;
        for cpu in 0..CPUS {
            for (mode, share) in CPU_MODES {
                let s = if mode == "idle" { share } else { share * busy };
                add(
                    LabelSet::new("node_cpu_seconds_total", &common)
                        .with("cpu", &cpu.to_string())
                        .with("mode", mode),
                    Gen::Cents {
                        cents: (uptime_cents as f64 * s) as u64,
                        per_round: s * iv * 100.0,
                    },
                    &mut uniq,
                );
            }
        }
        let total = [8.0, 16.0, 32.0, 64.0][rng.below(4) as usize] * 1073741824.0;
        let page = 4096.0;
        let mem = |rng: &mut Rng, lo: f64, hi: f64, sigma: f64| {
            let v = (rng.range(lo, hi) * total / page).round() * page;
            Gen::Walk {
                v,
                lo: lo * total,
                hi: hi * total,
                sigma: sigma * total,
                quantum: page,
                p_change: 0.9,
            }
        };
        let memory: [(&str, Gen); 10] = [
            ("MemTotal", Gen::Const(total)),
            ("MemFree", mem(rng, 0.05, 0.6, 0.004)),
            ("MemAvailable", mem(rng, 0.2, 0.8, 0.004)),
            ("Buffers", mem(rng, 0.001, 0.03, 0.0002)),
            ("Cached", mem(rng, 0.1, 0.5, 0.002)),
            ("Active", mem(rng, 0.1, 0.5, 0.002)),
            ("Inactive", mem(rng, 0.05, 0.3, 0.001)),
            ("Dirty", mem(rng, 0.0, 0.002, 0.0002)),
            ("SwapTotal", Gen::Const(2147483648.0)),
            (
                "SwapFree",
                Gen::Const(2147483648.0 - page * rng.below(5000) as f64),
            ),
        ];
        for (m, g) in memory {
            add(
                LabelSet::new(&format!("node_memory_{m}_bytes"), &common),
                g,
                &mut uniq,
            );
        }
        for (device, fstype, mountpoint) in [
            ("/dev/sda1", "ext4", "/"),
            ("/dev/sdb1", "xfs", "/data"),
            ("tmpfs", "tmpfs", "/run"),
        ] {
            let size = (rng.range(20.0, 2000.0) * 1073741824.0 / page).round() * page;
            let free = (size * rng.range(0.1, 0.9) / page).round() * page;
            let files = (size / 16384.0).round();
            let fs = |n: &str| {
                LabelSet::new(n, &common)
                    .with("device", device)
                    .with("fstype", fstype)
                    .with("mountpoint", mountpoint)
            };
            let walk = |v: f64, q: f64, sigma: f64| Gen::Walk {
                v,
                lo: 0.0,
                hi: size,
                sigma,
                quantum: q,
                p_change: 0.3,
            };
            add(
                fs("node_filesystem_size_bytes"),
                Gen::Const(size),
                &mut uniq,
            );
            add(
                fs("node_filesystem_free_bytes"),
                walk(free, page, 1e7),
                &mut uniq,
            );
            add(
                fs("node_filesystem_avail_bytes"),
                walk((free * 0.95 / page).round() * page, page, 1e7),
                &mut uniq,
            );
            add(fs("node_filesystem_files"), Gen::Const(files), &mut uniq);
            add(
                fs("node_filesystem_files_free"),
                Gen::Walk {
                    v: (files * 0.9).round(),
                    lo: 0.0,
                    hi: files,
                    sigma: 20.0,
                    quantum: 1.0,
                    p_change: 0.3,
                },
                &mut uniq,
            );
        }
        for (device, scale) in [("eth0", 1.0), ("lo", 0.05)] {
            let bps = rng.range(1e4, 5e6) * scale;
            for (dir, f) in [("receive", 1.0), ("transmit", 0.6)] {
                let bytes = bps * f * iv;
                add(
                    LabelSet::new(&format!("node_network_{dir}_bytes_total"), &common)
                        .with("device", device),
                    Gen::Bursty {
                        v: rng.range(1e9, 1e12) as u64,
                        mean: bytes,
                        quantum: 1,
                    },
                    &mut uniq,
                );
                add(
                    LabelSet::new(&format!("node_network_{dir}_packets_total"), &common)
                        .with("device", device),
                    Gen::Bursty {
                        v: rng.range(1e6, 1e9) as u64,
                        mean: bytes / 900.0,
                        quantum: 1,
                    },
                    &mut uniq,
                );
            }
        }
        for device in ["sda", "sdb"] {
            let disk = |n: &str| LabelSet::new(n, &common).with("device", device);
            add(
                disk("node_disk_read_bytes_total"),
                Gen::Bursty {
                    v: rng.range(1e9, 1e12) as u64 / 512 * 512,
                    mean: rng.range(1e3, 1e6) * iv,
                    quantum: 512,
                },
                &mut uniq,
            );
            add(
                disk("node_disk_written_bytes_total"),
                Gen::Bursty {
                    v: rng.range(1e9, 1e12) as u64 / 512 * 512,
                    mean: rng.range(1e4, 3e6) * iv,
                    quantum: 512,
                },
                &mut uniq,
            );
            add(
                disk("node_disk_io_time_seconds_total"),
                Gen::Millis {
                    millis: rng.range(1e6, 1e9) as u64,
                    per_round: rng.range(0.01, 0.3) * iv * 1000.0,
                },
                &mut uniq,
            );
        }
        let load = rng.range(0.05, 3.0);
        for (n, sigma) in [
            ("node_load1", 0.3),
            ("node_load5", 0.1),
            ("node_load15", 0.04),
        ] {
            add(
                LabelSet::new(n, &common),
                Gen::Load {
                    v: load,
                    mean: load,
                    sigma,
                },
                &mut uniq,
            );
        }
        let boot = 1_690_000_000.0 + rng.below(10_000_000) as f64;
        let misc: [(&str, Gen); 9] = [
            (
                "node_context_switches_total",
                Gen::Bursty {
                    v: rng.range(1e8, 1e11) as u64,
                    mean: rng.range(1e3, 5e4) * iv,
                    quantum: 1,
                },
            ),
            (
                "node_intr_total",
                Gen::Bursty {
                    v: rng.range(1e8, 1e11) as u64,
                    mean: rng.range(5e2, 2e4) * iv,
                    quantum: 1,
                },
            ),
            (
                "node_procs_running",
                Gen::Walk {
                    v: 2.0,
                    lo: 1.0,
                    hi: 24.0,
                    sigma: 1.5,
                    quantum: 1.0,
                    p_change: 0.7,
                },
            ),
            (
                "node_procs_blocked",
                Gen::Walk {
                    v: 0.0,
                    lo: 0.0,
                    hi: 4.0,
                    sigma: 0.6,
                    quantum: 1.0,
                    p_change: 0.2,
                },
            ),
            (
                "node_entropy_available_bits",
                Gen::Walk {
                    v: 3000.0,
                    lo: 256.0,
                    hi: 4096.0,
                    sigma: 60.0,
                    quantum: 1.0,
                    p_change: 0.9,
                },
            ),
            (
                "node_filefd_allocated",
                Gen::Walk {
                    v: rng.range(1000.0, 20000.0).round(),
                    lo: 500.0,
                    hi: 60000.0,
                    sigma: 30.0,
                    quantum: 1.0,
                    p_change: 0.8,
                },
            ),
            ("node_time_seconds", Gen::TimeSeconds),
            ("node_boot_time_seconds", Gen::Const(boot)),
            ("node_exporter_build_info", Gen::Const(1.0)),
        ];
        for (n, g) in misc {
            let ls = LabelSet::new(n, &common);
            let ls = if n == "node_exporter_build_info" {
                ls.with("version", "1.5.0").with("goversion", "go1.19.8")
            } else {
                ls
            };
            add(ls, g, &mut uniq);
        }
        add(LabelSet::new("up", &common), Gen::Const(1.0), &mut uniq);
        add(
            LabelSet::new("scrape_duration_seconds", &common),
            Gen::ScrapeDuration {
                mean: rng.range(0.01, 0.08),
            },
            &mut uniq,
        );
        add(
            LabelSet::new("scrape_samples_scraped", &common),
            Gen::Const(rng.range(400.0, 1200.0).round()),
            &mut uniq,
        );
        debug_assert_eq!(out.len(), NODE_SERIES);
        self.series = out;
    }

    fn build_service(&mut self, cfg: &Config) {
        let rng = &mut self.rng;
        let mut uniq = if cfg.high_cardinality {
            Some(Rng::derive(cfg.seed, &[self.index, self.generation, 0xC1]))
        } else {
            None
        };
        let service = SERVICES[(self.index % SERVICES.len() as u64) as usize];
        let pod = format!("{service}-{}-{}", rng.hex(10), rng.hex(5));
        let ip = format!(
            "10.{}.{}.{}:8080",
            rng.below(256),
            rng.below(256),
            1 + rng.below(254)
        );
        let ns = if self.index % 5 == 4 {
            "staging"
        } else {
            "prod"
        };
        let common = vec![
            ("instance".to_string(), ip),
            ("job".to_string(), "kubernetes-pods".to_string()),
            ("namespace".to_string(), ns.to_string()),
            ("pod".to_string(), pod),
            ("service".to_string(), service.to_string()),
        ];
        let mut out = Vec::with_capacity(SERVICE_SERIES);
        let scale = rng.range(0.2, 3.0);
        for (method, route, status, rps, median) in ROUTES {
            let h = |n: &str| {
                LabelSet::new(n, &common)
                    .with("method", method)
                    .with("route", route)
                    .with("status_code", status)
            };
            for le in BUCKETS
                .iter()
                .map(|b| format!("{b}"))
                .chain(["+Inf".to_string()])
            {
                out.push(SeriesDef {
                    labels: h("http_request_duration_seconds_bucket")
                        .with("le", &le)
                        .encode(uniq.as_mut()),
                    gen: Gen::Const(0.0),
                });
            }
            for n in [
                "http_request_duration_seconds_sum",
                "http_request_duration_seconds_count",
            ] {
                out.push(SeriesDef {
                    labels: h(n).encode(uniq.as_mut()),
                    gen: Gen::Const(0.0),
                });
            }
            self.histos.push(Histo {
                rps: rps * scale,
                mu: (median * rng.range(0.7, 1.4)).ln(),
                counts: [0; BUCKETS.len() + 1],
                sum: 0.0,
            });
        }
        out.push(SeriesDef {
            labels: LabelSet::new("up", &common).encode(uniq.as_mut()),
            gen: Gen::Const(1.0),
        });
        out.push(SeriesDef {
            labels: LabelSet::new("scrape_duration_seconds", &common).encode(uniq.as_mut()),
            gen: Gen::ScrapeDuration {
                mean: rng.range(0.003, 0.02),
            },
        });
        debug_assert_eq!(out.len(), SERVICE_SERIES);
        self.series = out;
    }

    /// Emits this target's samples for one scrape round.
    fn emit(
        &mut self,
        cfg: &Config,
        round: usize,
        sink: &mut impl FnMut(&[u8], i64, f64, Option<&ExemplarData>),
    ) {
        let jitter = if cfg.jitter_ms > 0 {
            self.rng.below(2 * cfg.jitter_ms as u64 + 1) as i64 - cfg.jitter_ms
        } else {
            0
        };
        let t = cfg.start_ms + round as i64 * cfg.interval_ms + self.offset_ms + jitter;
        if round > 0 && cfg.churn > 0.0 && self.rng.chance(cfg.churn) {
            // The target goes away: Prometheus writes a staleness marker for
            // each of its series, and a replacement starts next round.
            for s in &self.series {
                sink(&s.labels, t, f64::from_bits(STALE_NAN), None);
            }
            *self = Target::new(
                cfg,
                self.kind,
                self.index,
                self.generation + 1,
                self.n_series,
            );
            return;
        }
        let rng = &mut self.rng;
        let per_histo = BUCKETS.len() + 3;
        let iv = cfg.interval_ms as f64 / 1000.0;
        let mut idx = 0;
        for h in self.histos.iter_mut() {
            let new = h.step(rng, iv);
            // Bucket series carry cumulative counts.
            let mut acc = 0u64;
            for (b, &k) in new.iter().enumerate() {
                acc += h.counts[b];
                if idx + b >= self.n_series {
                    return;
                }
                let ex = if k > 0 && cfg.exemplar_ratio > 0.0 && rng.chance(cfg.exemplar_ratio) {
                    let lo = if b == 0 { 0.0 } else { BUCKETS[b - 1] };
                    let hi = if b < BUCKETS.len() {
                        BUCKETS[b]
                    } else {
                        lo * 4.0
                    };
                    Some(ExemplarData {
                        trace_id: rng.hex(32),
                        value: rng.range(lo, hi),
                        timestamp: t - rng.below(cfg.interval_ms.max(1) as u64) as i64,
                    })
                } else {
                    None
                };
                sink(&self.series[idx + b].labels, t, acc as f64, ex.as_ref());
            }
            let count = acc;
            if idx + BUCKETS.len() + 1 < self.n_series {
                sink(&self.series[idx + BUCKETS.len() + 1].labels, t, h.sum, None);
            }
            if idx + BUCKETS.len() + 2 < self.n_series {
                sink(
                    &self.series[idx + BUCKETS.len() + 2].labels,
                    t,
                    count as f64,
                    None,
                );
            }
            idx += per_histo;
        }
        let from = idx.min(self.series.len());
        for s in self.series[from..].iter_mut() {
            let v = s.gen.next(rng, t);
            sink(&s.labels, t, v, None);
        }
    }
}

/// The whole workload: the layout of targets and how to generate requests.
#[derive(Debug, Clone)]
pub struct Workload {
    pub cfg: Config,
    layout: Vec<(TargetKind, usize)>,
}

/// Requests for one shard, in send order.
#[derive(Debug, Default)]
pub struct Shard {
    pub requests: Vec<EncodedRequest>,
}

impl Workload {
    pub fn new(cfg: Config) -> Self {
        let mut layout = Vec::new();
        let mut left = cfg.series;
        let mut i = 0usize;
        while left > 0 {
            let kind = match cfg.kind {
                Kind::Node => TargetKind::Node,
                Kind::Histogram => TargetKind::Service,
                Kind::Mixed if i.is_multiple_of(2) => TargetKind::Node,
                Kind::Mixed => TargetKind::Service,
            };
            let full = match kind {
                TargetKind::Node => NODE_SERIES,
                TargetKind::Service => SERVICE_SERIES,
            };
            let n = full.min(left);
            layout.push((kind, n));
            left -= n;
            i += 1;
        }
        Workload { cfg, layout }
    }

    pub fn targets(&self) -> usize {
        self.layout.len()
    }

    pub fn total_samples(&self) -> u64 {
        self.cfg.series as u64 * self.cfg.samples_per_series as u64
    }

    /// The end of the data: one interval after the last round's nominal time.
    pub fn end_ms(&self) -> i64 {
        self.cfg.start_ms + self.cfg.samples_per_series as i64 * self.cfg.interval_ms
    }

    fn phase_of(&self, round: usize) -> u64 {
        match self.cfg.backfill_block_rounds {
            Some(b) if b > 0 => {
                let blocks = self.cfg.samples_per_series.div_ceil(b);
                let block = round / b;
                ((blocks - 1 - block) * b + round % b) as u64
            }
            _ => round as u64,
        }
    }

    /// Generates shard `k` of `shards`: the targets `i` with `i % shards == k`.
    pub fn generate_shard(&self, k: usize, shards: usize, batch_size: usize) -> Shard {
        let cfg = &self.cfg;
        let mut targets: Vec<Target> = self
            .layout
            .iter()
            .enumerate()
            .filter(|(i, _)| i % shards == k)
            .map(|(i, &(kind, n))| Target::new(cfg, kind, i as u64, 0, n))
            .collect();
        let mut b = BatchBuilder::new(batch_size);
        if k == 0 {
            b.push_metadata(&metadata(cfg.kind));
        }
        for round in 0..cfg.samples_per_series {
            let phase = self.phase_of(round);
            if let Some(bl) = cfg.backfill_block_rounds {
                if bl > 0 && round > 0 && round % bl == 0 {
                    b.flush();
                }
            }
            for t in targets.iter_mut() {
                t.emit(cfg, round, &mut |labels, ts, v, ex| {
                    b.push(labels, ts, v, ex, phase)
                });
            }
        }
        b.flush();
        let mut requests = b.out;
        requests.sort_by_key(|r| r.phase); // stable: keeps time order inside a block
        if cfg.out_of_order > 0.0 {
            let mut rng = Rng::derive(cfg.seed, &[u64::MAX, k as u64]);
            let n = requests.len();
            for i in 0..n {
                if rng.chance(cfg.out_of_order) {
                    let j = (i + 1 + rng.below(8) as usize).min(n - 1);
                    requests.swap(i, j);
                }
            }
        }
        Shard { requests }
    }

    /// Generates all shards, using up to `threads` threads.
    pub fn generate(&self, shards: usize, batch_size: usize, threads: usize) -> Vec<Shard> {
        let shards = shards.max(1);
        let threads = threads.clamp(1, shards);
        let mut out: Vec<Option<Shard>> = (0..shards).map(|_| None).collect();
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|th| {
                    s.spawn(move || {
                        (th..shards)
                            .step_by(threads)
                            .map(|k| (k, self.generate_shard(k, shards, batch_size)))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            for h in handles {
                for (k, shard) in h.join().expect("generator thread panicked") {
                    out[k] = Some(shard);
                }
            }
        });
        out.into_iter().map(|s| s.unwrap_or_default()).collect()
    }
}

/// Metric metadata Prometheus would send for the workload's families.
pub fn metadata(kind: Kind) -> Vec<MetricMetadata> {
    let m = |name: &str, t: i32, help: &str, unit: &str| MetricMetadata {
        r#type: t,
        metric_family_name: name.to_string(),
        help: help.to_string(),
        unit: unit.to_string(),
    };
    let mut v = Vec::new();
    if kind != Kind::Histogram {
        v.push(m(
            "node_cpu_seconds_total",
            1,
            "Seconds the CPUs spent in each mode.",
            "seconds",
        ));
        v.push(m("node_load1", 2, "1m load average.", ""));
        v.push(m(
            "node_network_receive_bytes_total",
            1,
            "Network device statistic receive_bytes.",
            "bytes",
        ));
    }
    if kind != Kind::Node {
        v.push(m(
            "http_request_duration_seconds",
            3,
            "Latency of HTTP requests.",
            "seconds",
        ));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_proto::prompb::WriteRequest;
    use prost::Message;

    fn cfg(kind: Kind, series: usize) -> Config {
        Config {
            kind,
            series,
            samples_per_series: 12,
            interval_ms: 15_000,
            start_ms: 1_700_000_000_000,
            seed: 7,
            churn: 0.0,
            high_cardinality: false,
            exemplar_ratio: 0.2,
            jitter_ms: 2,
            backfill_block_rounds: None,
            out_of_order: 0.0,
        }
    }

    fn decode_all(shards: &[Shard]) -> Vec<WriteRequest> {
        shards
            .iter()
            .flat_map(|s| &s.requests)
            .map(|r| {
                let raw = snap::raw::Decoder::new().decompress_vec(&r.body).unwrap();
                assert_eq!(raw.len(), r.raw_len as usize);
                WriteRequest::decode(raw.as_slice()).unwrap()
            })
            .collect()
    }

    /// Series key → its samples in wire order.
    fn by_series(reqs: &[WriteRequest]) -> BySeries {
        let mut m = BTreeMap::new();
        for r in reqs {
            for ts in &r.timeseries {
                let key = ts
                    .labels
                    .iter()
                    .map(|l| {
                        (
                            String::from_utf8(l.name.clone()).unwrap(),
                            String::from_utf8(l.value.clone()).unwrap(),
                        )
                    })
                    .collect::<Vec<_>>();
                let e: &mut Vec<(i64, u64)> = m.entry(key).or_default();
                e.extend(ts.samples.iter().map(|s| (s.timestamp, s.value.to_bits())));
            }
        }
        m
    }
    use std::collections::BTreeMap;

    /// Series labels → (timestamp, value bits) in wire order.
    type BySeries = BTreeMap<Vec<(String, String)>, Vec<(i64, u64)>>;

    #[test]
    fn same_seed_same_bytes_whatever_the_sharding() {
        let wl = Workload::new(cfg(Kind::Mixed, 1000));
        let a = wl.generate(3, 500, 2);
        let b = wl.generate(3, 500, 1);
        let bodies = |s: &[Shard]| {
            s.iter()
                .flat_map(|s| s.requests.iter().map(|r| r.body.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(bodies(&a), bodies(&b));
        // Different shard counts give the same per-series data.
        let c = wl.generate(5, 333, 2);
        assert_eq!(by_series(&decode_all(&a)), by_series(&decode_all(&c)));
        // Another seed gives other data.
        let mut other = cfg(Kind::Mixed, 1000);
        other.seed = 8;
        let d = Workload::new(other).generate(3, 500, 2);
        assert_ne!(by_series(&decode_all(&a)), by_series(&decode_all(&d)));
    }

    #[test]
    fn requests_decode_with_cairn_proto_and_hold_the_workload() {
        let c = cfg(Kind::Mixed, 777);
        let wl = Workload::new(c.clone());
        let shards = wl.generate(4, 256, 2);
        let reqs = decode_all(&shards);
        let series = by_series(&reqs);
        assert_eq!(series.len(), 777, "exactly --series distinct series");
        let mut samples = 0;
        for (labels, s) in &series {
            assert_eq!(labels[0].0, "__name__");
            assert!(
                labels.windows(2).all(|w| w[0].0 < w[1].0),
                "sorted, unique: {labels:?}"
            );
            assert_eq!(s.len(), c.samples_per_series);
            assert!(
                s.windows(2).all(|w| w[0].0 < w[1].0),
                "time-ordered per series"
            );
            samples += s.len();
        }
        assert_eq!(samples as u64, wl.total_samples());
        // Every TimeSeries carries one sample, like Prometheus's queue manager.
        assert!(reqs
            .iter()
            .flat_map(|r| &r.timeseries)
            .all(|t| t.samples.len() == 1));
        // Metadata rides on the first request of shard 0.
        assert!(!reqs[0].metadata.is_empty());
        // Histograms: exemplars with 32-hex trace ids, cumulative buckets.
        let ex: Vec<_> = reqs
            .iter()
            .flat_map(|r| &r.timeseries)
            .flat_map(|t| &t.exemplars)
            .collect();
        assert!(!ex.is_empty());
        assert!(ex.iter().all(|e| e.labels.len() == 1
            && e.labels[0].name == b"trace_id"
            && e.labels[0].value.len() == 32));
        let cpu = series
            .iter()
            .find(|(l, _)| l[0].1 == "node_cpu_seconds_total")
            .unwrap()
            .1;
        for w in cpu.windows(2) {
            let (a, b) = (f64::from_bits(w[0].1), f64::from_bits(w[1].1));
            assert!(b >= a, "counter decreased");
            assert_eq!(
                format!("{b}").parse::<f64>().unwrap(),
                (b * 100.0).round() / 100.0
            );
        }
    }

    #[test]
    fn request_encoding_round_trips_against_prost() {
        use cairn_proto::prompb::{Exemplar, Label, Sample, TimeSeries};
        let labels = [("__name__", "up"), ("job", "node"), ("x", "ü")];
        let mut b = BatchBuilder::new(10);
        let enc = encode_labels(&labels);
        let ex = ExemplarData {
            trace_id: "0123456789abcdef0123456789abcdef".into(),
            value: 0.25,
            timestamp: -5,
        };
        b.push(&enc, 1_700_000_000_123, 1.5, Some(&ex), 0);
        b.push(&enc, -1, f64::from_bits(STALE_NAN), None, 0);
        b.push(&enc, 0, 0.0, None, 0);
        b.flush();
        let raw = snap::raw::Decoder::new()
            .decompress_vec(&b.out[0].body)
            .unwrap();
        let got = WriteRequest::decode(raw.as_slice()).unwrap();
        let l: Vec<Label> = labels.iter().map(|(n, v)| Label::new(n, v)).collect();
        let ts = |t, v: f64, ex: Vec<Exemplar>| TimeSeries {
            labels: l.clone(),
            samples: vec![Sample {
                value: v,
                timestamp: t,
            }],
            exemplars: ex,
            histograms: vec![],
        };
        let want = WriteRequest {
            timeseries: vec![
                ts(
                    1_700_000_000_123,
                    1.5,
                    vec![Exemplar {
                        labels: vec![Label::new("trace_id", &ex.trace_id)],
                        value: 0.25,
                        timestamp: -5,
                    }],
                ),
                ts(-1, f64::from_bits(STALE_NAN), vec![]),
                ts(0, 0.0, vec![]),
            ],
            metadata: vec![],
        };
        assert_eq!(got.timeseries.len(), 3);
        assert_eq!(got.timeseries[0], want.timeseries[0]);
        assert_eq!(got.timeseries[2], want.timeseries[2]);
        // NaN != NaN: compare the staleness marker bit for bit.
        assert_eq!(got.timeseries[1].samples[0].value.to_bits(), STALE_NAN);
        assert_eq!(got.timeseries[1].samples[0].timestamp, -1);
        // Byte-identical to prost for a sample without zero fields.
        let mut first = WriteRequest::default();
        first.timeseries.push(want.timeseries[0].clone());
        let mut b2 = BatchBuilder::new(1);
        b2.push(&enc, 1_700_000_000_123, 1.5, Some(&ex), 0);
        let raw2 = snap::raw::Decoder::new()
            .decompress_vec(&b2.out[0].body)
            .unwrap();
        assert_eq!(raw2, first.encode_to_vec());
    }

    #[test]
    fn churn_marks_stale_and_renames_targets() {
        let mut c = cfg(Kind::Histogram, 580);
        c.churn = 0.2;
        c.jitter_ms = 0;
        let wl = Workload::new(c.clone());
        let series = by_series(&decode_all(&wl.generate(2, 1000, 1)));
        assert!(series.len() > 580, "churn creates new series");
        let mut per_round = vec![0usize; c.samples_per_series];
        for s in series.values() {
            let stale_at = s.iter().position(|x| x.1 == STALE_NAN);
            if let Some(i) = stale_at {
                assert_eq!(i, s.len() - 1, "a staleness marker ends its series");
            }
            for (t, _) in s {
                per_round[((t - c.start_ms) / c.interval_ms) as usize] += 1;
            }
        }
        assert!(per_round.iter().all(|&n| n == 580), "{per_round:?}");
        let total: usize = series.values().map(|s| s.len()).sum();
        assert_eq!(total as u64, wl.total_samples());
    }

    #[test]
    fn backfill_sends_newest_block_first_and_high_cardinality_is_unique() {
        let mut c = cfg(Kind::Node, 86);
        c.samples_per_series = 40;
        c.backfill_block_rounds = Some(10);
        c.high_cardinality = true;
        let wl = Workload::new(c);
        let shards = wl.generate(1, 50, 1);
        let reqs = decode_all(&shards);
        let first_t = reqs[0].timeseries[0].samples[0].timestamp;
        let last_t = reqs.last().unwrap().timeseries[0].samples[0].timestamp;
        assert!(first_t > last_t, "newest block first");
        let ids: std::collections::HashSet<_> = by_series(&reqs)
            .keys()
            .map(|l| l.iter().find(|(n, _)| n == "client_id").unwrap().1.clone())
            .collect();
        assert_eq!(ids.len(), 86);
    }
}
