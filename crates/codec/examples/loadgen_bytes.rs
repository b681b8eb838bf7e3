//! Bytes/sample of the codec on the exact per-series streams of
//! `cairn-loadgen --workload node` (what `benches/compare` feeds every
//! system), one chunk per series, in total and per metric family.
//!
//! Run with: cargo run --release -p cairn-codec --example loadgen_bytes
//! (add `-- SERIES SAMPLES` for a single other shape).

use std::collections::BTreeMap;
use std::time::Instant;

use cairn_codec::{decode_all, encode_all};

#[path = "../benches/loadgen.rs"]
mod loadgen;

fn run(series: usize, samples: usize) {
    let data = loadgen::node_workload(series, samples);
    let mut fam: BTreeMap<&str, (usize, usize, usize)> = BTreeMap::new();
    let (mut bytes, mut n) = (0usize, 0usize);
    let chunks: Vec<Vec<u8>> = data
        .iter()
        .map(|s| encode_all(&s.samples).expect("increasing timestamps"))
        .collect();
    // Best of 5 rounds: the machine may be shared.
    let (mut enc_ns, mut dec_ns) = (f64::MAX, f64::MAX);
    for _ in 0..5 {
        let t0 = Instant::now();
        for s in &data {
            std::hint::black_box(encode_all(&s.samples).expect("increasing timestamps"));
        }
        enc_ns = enc_ns.min(t0.elapsed().as_nanos() as f64);
        let t0 = Instant::now();
        for c in &chunks {
            std::hint::black_box(decode_all(c).expect("own output decodes"));
        }
        dec_ns = dec_ns.min(t0.elapsed().as_nanos() as f64);
    }
    for (s, c) in data.iter().zip(&chunks) {
        let back = decode_all(c).expect("own output decodes");
        assert!(
            back.len() == s.samples.len()
                && back
                    .iter()
                    .zip(&s.samples)
                    .all(|(a, b)| a.0 == b.0 && a.1.to_bits() == b.1.to_bits()),
            "round trip of {}",
            s.family
        );
        let e = fam.entry(s.family).or_default();
        e.0 += 1;
        e.1 += c.len();
        e.2 += s.samples.len();
        bytes += c.len();
        n += s.samples.len();
    }
    println!(
        "node workload: {series} series x {samples} samples: {:.3} bytes/sample \
         ({bytes} bytes), encode {:.1} ns/sample, decode {:.1} ns/sample",
        bytes as f64 / n as f64,
        enc_ns / n as f64,
        dec_ns / n as f64,
    );
    let mut rows: Vec<_> = fam.into_iter().collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.1 .1));
    println!(
        "  {:<38} {:>7} {:>8} {:>9}",
        "family", "series", "B/sample", "% bytes"
    );
    for (name, (ns, b, s)) in rows {
        println!(
            "  {:<38} {:>7} {:>8.3} {:>8.1}%",
            name,
            ns,
            b as f64 / s as f64,
            100.0 * b as f64 / bytes as f64
        );
    }
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("SERIES SAMPLES"))
        .collect();
    match args[..] {
        [series, samples] => run(series, samples),
        _ => {
            run(20_000, 100);
            run(2_000, 1_000);
        }
    }
}
