//! Per-series sample streams of `cairn-loadgen --workload node` (crate
//! `cairn-bench`, `src/workload.rs`), reproduced exactly without its network
//! stack: the same SplitMix64 streams, the same per-target draw order and the
//! same value generators. Labels are reduced to the metric family name (they
//! draw nothing from the target's stream unless `--high-cardinality`).
//! Shared by the bench and the examples via `#[path]`; not part of the library.
//!
//! Defaults of the loadgen as `benches/compare` runs it: seed 42, 15 s
//! interval, ±2 ms jitter, no churn; `start_ms` is fixed here (the loadgen
//! uses "now"), which only moves `node_time_seconds` and the first timestamps.

// Shared by the bench, the examples and the tests (each includes it as a
// module with `#[path]`), so its items are `pub` for all of them.
#![allow(unreachable_pub)]
#![allow(dead_code)]

pub const SEED: u64 = 42;
pub const INTERVAL_MS: i64 = 15_000;
pub const JITTER_MS: i64 = 2;
pub const START_MS: i64 = 1_700_000_000_000;

const NODE_SERIES: usize = 86;
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

#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn derive(seed: u64, ids: &[u64]) -> Self {
        let mut s = mix(seed);
        for &id in ids {
            s = mix(s ^ id.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        }
        Rng(s)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }
    pub fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.f64()
    }
    pub fn chance(&mut self, p: f64) -> bool {
        self.f64() < p
    }
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.f64();
        let u2 = self.f64();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[derive(Debug, Clone)]
enum Gen {
    Const(f64),
    Cents {
        cents: u64,
        per_round: f64,
    },
    Millis {
        millis: u64,
        per_round: f64,
    },
    Bursty {
        v: u64,
        mean: f64,
        quantum: u64,
    },
    Walk {
        v: f64,
        lo: f64,
        hi: f64,
        sigma: f64,
        quantum: f64,
        p_change: f64,
    },
    Load {
        v: f64,
        mean: f64,
        sigma: f64,
    },
    TimeSeconds,
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

struct Target {
    offset_ms: i64,
    series: Vec<(&'static str, Gen)>,
    rng: Rng,
}

impl Target {
    fn node(seed: u64, interval_ms: i64, index: u64, n_series: usize) -> Self {
        let mut rng = Rng::derive(seed, &[index, 0]);
        let offset_ms = rng.below(interval_ms.max(1) as u64) as i64;
        let rng_ref = &mut rng;
        let mut out = build_node(rng_ref, interval_ms);
        out.truncate(n_series);
        Target {
            offset_ms,
            series: out,
            rng,
        }
    }
}

fn build_node(rng: &mut Rng, interval_ms: i64) -> Vec<(&'static str, Gen)> {
    let iv = interval_ms as f64 / 1000.0;
    let mut out: Vec<(&'static str, Gen)> = Vec::with_capacity(NODE_SERIES);
    let busy = rng.range(0.3, 1.7);
    let uptime_cents = rng.range(1e5, 1e8) as u64;
    for _cpu in 0..CPUS {
        for (mode, share) in CPU_MODES {
            let s = if mode == "idle" { share } else { share * busy };
            out.push((
                "node_cpu_seconds_total",
                Gen::Cents {
                    cents: (uptime_cents as f64 * s) as u64,
                    per_round: s * iv * 100.0,
                },
            ));
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
    let memory: [(&'static str, Gen); 10] = [
        ("node_memory_MemTotal_bytes", Gen::Const(total)),
        ("node_memory_MemFree_bytes", mem(rng, 0.05, 0.6, 0.004)),
        ("node_memory_MemAvailable_bytes", mem(rng, 0.2, 0.8, 0.004)),
        ("node_memory_Buffers_bytes", mem(rng, 0.001, 0.03, 0.0002)),
        ("node_memory_Cached_bytes", mem(rng, 0.1, 0.5, 0.002)),
        ("node_memory_Active_bytes", mem(rng, 0.1, 0.5, 0.002)),
        ("node_memory_Inactive_bytes", mem(rng, 0.05, 0.3, 0.001)),
        ("node_memory_Dirty_bytes", mem(rng, 0.0, 0.002, 0.0002)),
        ("node_memory_SwapTotal_bytes", Gen::Const(2147483648.0)),
        (
            "node_memory_SwapFree_bytes",
            Gen::Const(2147483648.0 - page * rng.below(5000) as f64),
        ),
    ];
    out.extend(memory);
    for _fs in 0..3 {
        let size = (rng.range(20.0, 2000.0) * 1073741824.0 / page).round() * page;
        let free = (size * rng.range(0.1, 0.9) / page).round() * page;
        let files = (size / 16384.0).round();
        let walk = |v: f64, q: f64, sigma: f64| Gen::Walk {
            v,
            lo: 0.0,
            hi: size,
            sigma,
            quantum: q,
            p_change: 0.3,
        };
        out.push(("node_filesystem_size_bytes", Gen::Const(size)));
        out.push(("node_filesystem_free_bytes", walk(free, page, 1e7)));
        out.push((
            "node_filesystem_avail_bytes",
            walk((free * 0.95 / page).round() * page, page, 1e7),
        ));
        out.push(("node_filesystem_files", Gen::Const(files)));
        out.push((
            "node_filesystem_files_free",
            Gen::Walk {
                v: (files * 0.9).round(),
                lo: 0.0,
                hi: files,
                sigma: 20.0,
                quantum: 1.0,
                p_change: 0.3,
            },
        ));
    }
    for scale in [1.0, 0.05] {
        let bps = rng.range(1e4, 5e6) * scale;
        for (dir, f) in [("receive", 1.0), ("transmit", 0.6)] {
            let bytes = bps * f * iv;
            let (b, p) = if dir == "receive" {
                (
                    "node_network_receive_bytes_total",
                    "node_network_receive_packets_total",
                )
            } else {
                (
                    "node_network_transmit_bytes_total",
                    "node_network_transmit_packets_total",
                )
            };
            out.push((
                b,
                Gen::Bursty {
                    v: rng.range(1e9, 1e12) as u64,
                    mean: bytes,
                    quantum: 1,
                },
            ));
            out.push((
                p,
                Gen::Bursty {
                    v: rng.range(1e6, 1e9) as u64,
                    mean: bytes / 900.0,
                    quantum: 1,
                },
            ));
        }
    }
    for _device in 0..2 {
        out.push((
            "node_disk_read_bytes_total",
            Gen::Bursty {
                v: rng.range(1e9, 1e12) as u64 / 512 * 512,
                mean: rng.range(1e3, 1e6) * iv,
                quantum: 512,
            },
        ));
        out.push((
            "node_disk_written_bytes_total",
            Gen::Bursty {
                v: rng.range(1e9, 1e12) as u64 / 512 * 512,
                mean: rng.range(1e4, 3e6) * iv,
                quantum: 512,
            },
        ));
        out.push((
            "node_disk_io_time_seconds_total",
            Gen::Millis {
                millis: rng.range(1e6, 1e9) as u64,
                per_round: rng.range(0.01, 0.3) * iv * 1000.0,
            },
        ));
    }
    let load = rng.range(0.05, 3.0);
    for (n, sigma) in [
        ("node_load1", 0.3),
        ("node_load5", 0.1),
        ("node_load15", 0.04),
    ] {
        out.push((
            n,
            Gen::Load {
                v: load,
                mean: load,
                sigma,
            },
        ));
    }
    let boot = 1_690_000_000.0 + rng.below(10_000_000) as f64;
    let misc: [(&'static str, Gen); 9] = [
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
    out.extend(misc);
    out.push(("up", Gen::Const(1.0)));
    out.push((
        "scrape_duration_seconds",
        Gen::ScrapeDuration {
            mean: rng.range(0.01, 0.08),
        },
    ));
    out.push((
        "scrape_samples_scraped",
        Gen::Const(rng.range(400.0, 1200.0).round()),
    ));
    debug_assert_eq!(out.len(), NODE_SERIES);
    out
}

/// One series: its metric family and samples.
#[derive(Debug)]
pub struct Series {
    pub family: &'static str,
    pub samples: Vec<(i64, f64)>,
}

/// All series of `--workload node --series <series> --samples-per-series <samples>`.
pub fn node_workload(series: usize, samples: usize) -> Vec<Series> {
    let mut out = Vec::with_capacity(series);
    let mut left = series;
    let mut index = 0u64;
    while left > 0 {
        let n = NODE_SERIES.min(left);
        let mut t = Target::node(SEED, INTERVAL_MS, index, n);
        let base = out.len();
        out.extend(t.series.iter().map(|(family, _)| Series {
            family,
            samples: Vec::with_capacity(samples),
        }));
        for round in 0..samples {
            let jitter = t.rng.below(2 * JITTER_MS as u64 + 1) as i64 - JITTER_MS;
            let ts = START_MS + round as i64 * INTERVAL_MS + t.offset_ms + jitter;
            for (i, (_, gen)) in t.series.iter_mut().enumerate() {
                let v = gen.next(&mut t.rng, ts);
                out[base + i].samples.push((ts, v));
            }
        }
        left -= n;
        index += 1;
    }
    out
}
