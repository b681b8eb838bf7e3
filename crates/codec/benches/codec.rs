//! Encode/decode throughput of the chunk codec on node-exporter-like data.
//!
//! Run with: cargo bench -p cairn-codec
//!
//! Criterion reports time per chunk of `data::CHUNK` samples with a
//! per-element throughput, i.e. ns/sample = time / CHUNK. Before the timings
//! it prints bytes/sample for each kind of series (the same table as
//! `cargo run --release -p cairn-codec --example bytes_per_sample`).

use std::hint::black_box;

use cairn_codec::{decode_all, decode_into, encode_all, Decoder, Encoder};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

#[path = "data.rs"]
mod data;
#[path = "loadgen.rs"]
mod loadgen;

fn print_bytes_per_sample() {
    eprintln!("{:<32} {:>12}", "series kind", "bytes/sample");
    let mut total_bytes = 0usize;
    let mut total_samples = 0usize;
    for kind in data::ALL {
        let chunks = data::chunks(kind, 200, 7);
        let samples: usize = chunks.iter().map(Vec::len).sum();
        let bytes: usize = chunks
            .iter()
            .map(|c| encode_all(c).expect("sorted").len())
            .sum();
        if data::MIX.contains(&kind) {
            total_bytes += bytes;
            total_samples += samples;
        }
        eprintln!(
            "{:<32} {:>12.3}",
            kind.name(),
            bytes as f64 / samples as f64
        );
    }
    eprintln!(
        "{:<32} {:>12.3}",
        "mix (equal parts, no raw float)",
        total_bytes as f64 / total_samples as f64
    );
}

fn bench_codec(c: &mut Criterion) {
    print_bytes_per_sample();
    let mut group = c.benchmark_group("codec");
    type Chunk = Vec<(i64, f64)>;
    let sets: Vec<(&str, Vec<Chunk>)> = vec![
        (
            "mix",
            data::MIX
                .iter()
                .flat_map(|&k| data::chunks(k, 20, 11))
                .collect(),
        ),
        ("raw-float", data::chunks(data::Kind::RawFloatGauge, 20, 11)),
        // The cairn-loadgen node workload (what benches/compare ingests):
        // 10 hosts x 86 series, one 120-sample chunk each.
        (
            "loadgen-node",
            loadgen::node_workload(860, data::CHUNK)
                .into_iter()
                .map(|s| s.samples)
                .collect(),
        ),
    ];
    for (name, chunks) in &sets {
        let samples: usize = chunks.iter().map(Vec::len).sum();
        let encoded: Vec<Vec<u8>> = chunks
            .iter()
            .map(|c| encode_all(c).expect("sorted"))
            .collect();
        group.throughput(Throughput::Elements(samples as u64));
        group.bench_function(format!("encode/{name}"), |b| {
            b.iter(|| {
                for chunk in chunks {
                    let mut enc = Encoder::new();
                    for &(t, v) in chunk {
                        enc.append(t, v).expect("sorted");
                    }
                    black_box(enc.finish());
                }
            })
        });
        group.bench_function(format!("decode/{name}"), |b| {
            b.iter(|| {
                for bytes in &encoded {
                    for s in Decoder::new(bytes).expect("valid") {
                        black_box(s.expect("valid"));
                    }
                }
            })
        });
        group.bench_function(format!("decode_all/{name}"), |b| {
            b.iter(|| {
                for bytes in &encoded {
                    black_box(decode_all(bytes).expect("valid"));
                }
            })
        });
        // Into one reused buffer, as a query decoding many chunks would.
        let mut buf = Vec::new();
        group.bench_function(format!("decode_into/{name}"), |b| {
            b.iter(|| {
                for bytes in &encoded {
                    buf.clear();
                    decode_into(bytes, &mut buf).expect("valid");
                    black_box(&buf);
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_codec);
criterion_main!(benches);
