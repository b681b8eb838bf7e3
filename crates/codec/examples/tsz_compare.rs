//! Timestamp column only: tsz-compress (integer-only, V2 scheme) vs. this
//! codec, on 15 s scrapes with a few ms of jitter. Ours is measured with a
//! constant value column (1 bit/sample for the repeated value) so the figure
//! is essentially the timestamp cost; tsz gets the bare i64 column.
//!
//! Run with: cargo run --release -p cairn-codec --example tsz_compare

extern crate alloc;

use std::hint::black_box;
use std::time::Instant;

use cairn_codec::{decode_all, encode_all};

#[path = "../benches/data.rs"]
mod data;

// The derive macros generate `pub` items this example cannot reach.
#[allow(unreachable_pub)]
mod ts {
    use tsz_compress::prelude::*;

    #[derive(Copy, Clone, Debug, CompressV2, DecompressV2)]
    pub struct TsRow {
        pub ts: i64,
    }
}

use ts::compress::TsRowCompressorImpl;
use ts::decompress::TsRowDecompressorImpl;
use ts::TsRow;
use tsz_compress::prelude::*;

const SERIES: usize = 2000;
const ROUNDS: usize = 5;

fn main() {
    let mut rng = data::Rng::new(3);
    let columns: Vec<Vec<i64>> = (0..SERIES)
        .map(|_| data::timestamps(&mut rng, data::CHUNK))
        .collect();
    let samples = (SERIES * data::CHUNK) as f64;

    // tsz-compress.
    let tsz: Vec<Vec<u8>> = columns
        .iter()
        .map(|col| {
            let mut c = TsRowCompressorImpl::new(col.len());
            for &ts in col {
                c.compress(TsRow { ts });
            }
            c.finish()
        })
        .collect();
    for (col, bytes) in columns.iter().zip(&tsz) {
        let mut d = TsRowDecompressorImpl::new();
        d.decompress(bytes).expect("tsz decodes its own output");
        assert_eq!(&d.col_ts(), col, "tsz round trip");
    }
    let tsz_bytes: usize = tsz.iter().map(Vec::len).sum();
    let t = Instant::now();
    for _ in 0..ROUNDS {
        for col in &columns {
            let mut c = TsRowCompressorImpl::new(col.len());
            for &ts in col {
                c.compress(TsRow { ts });
            }
            black_box(c.finish());
        }
    }
    let tsz_enc = t.elapsed().as_nanos() as f64 / (samples * ROUNDS as f64);
    let t = Instant::now();
    for _ in 0..ROUNDS {
        for bytes in &tsz {
            let mut d = TsRowDecompressorImpl::new();
            d.decompress(bytes).expect("valid");
            black_box(d.col_ts());
        }
    }
    let tsz_dec = t.elapsed().as_nanos() as f64 / (samples * ROUNDS as f64);

    // Ours, constant value column.
    let ours_in: Vec<Vec<(i64, f64)>> = columns
        .iter()
        .map(|col| col.iter().map(|&t| (t, 0.0)).collect())
        .collect();
    let ours: Vec<Vec<u8>> = ours_in
        .iter()
        .map(|c| encode_all(c).expect("sorted"))
        .collect();
    let ours_bytes: usize = ours.iter().map(Vec::len).sum();
    let t = Instant::now();
    for _ in 0..ROUNDS {
        for c in &ours_in {
            black_box(encode_all(c).expect("sorted"));
        }
    }
    let ours_enc = t.elapsed().as_nanos() as f64 / (samples * ROUNDS as f64);
    let t = Instant::now();
    for _ in 0..ROUNDS {
        for bytes in &ours {
            black_box(decode_all(bytes).expect("valid"));
        }
    }
    let ours_dec = t.elapsed().as_nanos() as f64 / (samples * ROUNDS as f64);

    println!(
        "timestamps: {SERIES} chunks x {} samples, {} ms ± {} ms",
        data::CHUNK,
        data::INTERVAL_MS,
        data::JITTER_MS
    );
    println!(
        "{:<34} {:>12} {:>12} {:>12}",
        "codec", "bytes/sample", "enc ns/smp", "dec ns/smp"
    );
    println!(
        "{:<34} {:>12.3} {:>12.1} {:>12.1}",
        "tsz-compress 1.1 (ts column)",
        tsz_bytes as f64 / samples,
        tsz_enc,
        tsz_dec
    );
    println!(
        "{:<34} {:>12.3} {:>12.1} {:>12.1}",
        "cairn-codec (ts + constant value)",
        ours_bytes as f64 / samples,
        ours_enc,
        ours_dec
    );
}
