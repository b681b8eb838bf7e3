//! Run with: cargo bench -p cairn-ingest
//!
//! Remote-write 1.0 decoding of a Prometheus-like request (2000 series, one
//! sample each, node-exporter-like labels): the zero-copy path the server
//! uses (`decode_prepared`; `decode_known` with the label sets known, as
//! from the second scrape on) against prost + `validate`.

use cairn_ingest::{decode_known, decode_prepared, decode_remote_write, validate};
use cairn_proto::prompb::{Label, Sample, TimeSeries, WriteRequest};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use prost::Message;

fn request() -> Vec<u8> {
    let modes = [
        "idle", "user", "system", "iowait", "irq", "softirq", "steal", "nice",
    ];
    let mut timeseries = Vec::new();
    for i in 0..2000 {
        timeseries.push(TimeSeries {
            labels: vec![
                Label::new("__name__", "node_cpu_seconds_total"),
                Label::new("cpu", &(i % 8).to_string()),
                Label::new(
                    "instance",
                    &format!("host-{:04}.example.internal:9100", i / 64),
                ),
                Label::new("job", "node"),
                Label::new("mode", modes[(i / 8) % 8]),
                Label::new("region", "eu-west-1"),
            ],
            samples: vec![Sample {
                value: 12345.67 + i as f64,
                timestamp: 1_700_000_000_000,
            }],
            ..Default::default()
        });
    }
    let req = WriteRequest {
        timeseries,
        metadata: vec![],
    };
    snap::raw::Encoder::new()
        .compress_vec(&req.encode_to_vec())
        .expect("snappy")
}

fn bench(c: &mut Criterion) {
    let body = request();
    let limits = cairn_common::IngestLimits::default();
    // The request's samples are at this time: none is refused as future.
    let now = 1_700_000_000_000;
    let mut g = c.benchmark_group("remote_write_decode");
    g.throughput(Throughput::Elements(2000));
    g.bench_function("zero_copy_prepared", |b| {
        b.iter(|| decode_prepared("default", &body, &limits, now).expect("decode"))
    });
    let known = cairn_ingest::KnownLabels::new(1 << 16);
    decode_known("default", &body, &limits, now, Some(&known)).expect("decode");
    g.bench_function("zero_copy_known_labels", |b| {
        b.iter(|| decode_known("default", &body, &limits, now, Some(&known)).expect("decode"))
    });
    g.bench_function("prost_then_validate", |b| {
        b.iter(|| {
            validate(
                decode_remote_write(&body, 64 << 20).expect("decode"),
                &limits,
                now,
            )
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
