//! Node-exporter-like synthetic series shared by the bench and the examples
//! (included with `#[path]`; not part of the library).
//!
//! Every series is scraped every 15 s with a uniform jitter of ±JITTER_MS ms.

// Shared by the bench, the examples and the tests (each includes it as a
// module with `#[path]`), so its items are `pub` for all of them.
#![allow(unreachable_pub)]
#![allow(dead_code)]

pub const INTERVAL_MS: i64 = 15_000;
pub const JITTER_MS: i64 = 3;
/// Samples per chunk: Prometheus cuts a chunk at 120 samples.
pub const CHUNK: usize = 120;

/// Deterministic xorshift64*; no dependency needed.
#[derive(Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [0, 1).
    pub fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Uniform in [lo, hi].
    pub fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as i64
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `node_cpu_seconds_total`: float counter, 2 decimals, grows ~0..15 per scrape.
    CpuSecondsCounter,
    /// `node_network_receive_bytes_total`: integer counter, irregular growth, sometimes idle.
    ByteCounter,
    /// `node_load1`, `node_hwmon_temp_celsius`: noisy gauge rounded to 2 or 3 decimals.
    DecimalGauge,
    /// `node_memory_MemAvailable_bytes`: large integer gauge moving by pages.
    IntegerGauge,
    /// `up`, `node_network_up`, `*_info`: constant 0 or 1.
    Constant,
    /// Unrounded float gauge (ratios computed by the exporter); not in the mix.
    RawFloatGauge,
}

pub const MIX: [Kind; 5] = [
    Kind::CpuSecondsCounter,
    Kind::ByteCounter,
    Kind::DecimalGauge,
    Kind::IntegerGauge,
    Kind::Constant,
];

pub const ALL: [Kind; 6] = [
    Kind::CpuSecondsCounter,
    Kind::ByteCounter,
    Kind::DecimalGauge,
    Kind::IntegerGauge,
    Kind::Constant,
    Kind::RawFloatGauge,
];

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::CpuSecondsCounter => "cpu-seconds counter (2 dec)",
            Kind::ByteCounter => "integer byte counter",
            Kind::DecimalGauge => "gauge, 2-3 decimals",
            Kind::IntegerGauge => "integer gauge (bytes)",
            Kind::Constant => "constant 0/1",
            Kind::RawFloatGauge => "raw float gauge (not in mix)",
        }
    }
}

/// Timestamps of one series: 15 s apart with ±JITTER_MS ms of jitter.
pub fn timestamps(rng: &mut Rng, n: usize) -> Vec<i64> {
    let start = 1_700_000_000_000 + rng.range(0, INTERVAL_MS);
    (0..n)
        .map(|i| start + i as i64 * INTERVAL_MS + rng.range(-JITTER_MS, JITTER_MS))
        .collect()
}

fn round_to(v: f64, decimals: i32) -> f64 {
    let p = 10f64.powi(decimals);
    (v * p).round() / p
}

/// Values of one series of `kind`.
pub fn values(rng: &mut Rng, kind: Kind, n: usize) -> Vec<f64> {
    match kind {
        Kind::CpuSecondsCounter => {
            let busy = rng.f64(); // fraction of one core used by this mode
            let mut v = round_to(rng.f64() * 1e6, 2);
            (0..n)
                .map(|_| {
                    let inc = 15.0 * (busy + 0.05 * (rng.f64() - 0.5)).clamp(0.0, 1.0);
                    v = round_to(v + inc, 2);
                    v
                })
                .collect()
        }
        Kind::ByteCounter => {
            let scale = 10f64.powf(2.0 + rng.f64() * 5.0);
            let mut v = (rng.f64() * 1e12).floor();
            (0..n)
                .map(|_| {
                    if rng.f64() > 0.1 {
                        v += (scale * rng.f64() * 2.0).floor();
                    }
                    v
                })
                .collect()
        }
        Kind::DecimalGauge => {
            let decimals = if rng.f64() < 0.5 { 2 } else { 3 };
            let base = rng.f64() * 100.0;
            let mut v = base;
            (0..n)
                .map(|_| {
                    v += (rng.f64() - 0.5) * 0.2 + (base - v) * 0.1;
                    round_to(v.max(0.0), decimals)
                })
                .collect()
        }
        Kind::IntegerGauge => {
            let mut v = 4096.0 * (1e6 + rng.f64() * 3e6).floor();
            (0..n)
                .map(|_| {
                    if rng.f64() < 0.7 {
                        v += 4096.0 * (rng.range(-2000, 2000) as f64);
                    }
                    v
                })
                .collect()
        }
        Kind::Constant => {
            let c = if rng.f64() < 0.5 { 0.0 } else { 1.0 };
            vec![c; n]
        }
        Kind::RawFloatGauge => {
            let mut v = rng.f64();
            (0..n)
                .map(|_| {
                    v = (v + (rng.f64() - 0.5) * 0.01).clamp(0.0, 1.0);
                    v
                })
                .collect()
        }
    }
}

/// `series` chunks of `CHUNK` samples of `kind`.
pub fn chunks(kind: Kind, series: usize, seed: u64) -> Vec<Vec<(i64, f64)>> {
    let mut rng = Rng::new(seed);
    (0..series)
        .map(|_| {
            let ts = timestamps(&mut rng, CHUNK);
            let vs = values(&mut rng, kind, CHUNK);
            ts.into_iter().zip(vs).collect()
        })
        .collect()
}
