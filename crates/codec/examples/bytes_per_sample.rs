//! Prints bytes/sample of the codec for each kind of node-exporter-like series.
//!
//! Run with: cargo run --release -p cairn-codec --example bytes_per_sample

use cairn_codec::{decode_all, encode_all};

#[path = "../benches/data.rs"]
mod data;

fn main() {
    println!(
        "{} samples/chunk, {} ms interval, ±{} ms jitter, 1000 series per kind",
        data::CHUNK,
        data::INTERVAL_MS,
        data::JITTER_MS
    );
    println!("{:<32} {:>12}", "series kind", "bytes/sample");
    let (mut mix_bytes, mut mix_samples) = (0usize, 0usize);
    for kind in data::ALL {
        let chunks = data::chunks(kind, 1000, 7);
        let mut bytes = 0;
        let mut samples = 0;
        for chunk in &chunks {
            let enc = encode_all(chunk).expect("timestamps are increasing");
            let back = decode_all(&enc).expect("own output decodes");
            assert_eq!(back.len(), chunk.len());
            bytes += enc.len();
            samples += chunk.len();
        }
        if data::MIX.contains(&kind) {
            mix_bytes += bytes;
            mix_samples += samples;
        }
        println!(
            "{:<32} {:>12.3}",
            kind.name(),
            bytes as f64 / samples as f64
        );
    }
    println!(
        "{:<32} {:>12.3}",
        "mix (equal parts, no raw float)",
        mix_bytes as f64 / mix_samples as f64
    );
}
