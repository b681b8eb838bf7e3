//! Remote-write 1.0 request encoding, done by hand for speed.
//!
//! Each series' labels are encoded once (as the `TimeSeries.labels` fields)
//! and copied into every request, so building a request costs little more
//! than a `memcpy` and a snappy pass. The bytes are exactly what
//! `prost` would produce for `cairn_proto::prompb::WriteRequest` (a test
//! decodes them with `cairn_proto` to prove it). Like Prometheus's own
//! queue manager, every sample travels in its own `TimeSeries`.

use bytes::Bytes;
use cairn_proto::prompb::MetricMetadata;
use prost::encoding::{encode_key, encode_varint, encoded_len_varint, WireType};

/// Encodes a sorted label set as repeated `TimeSeries.labels` (field 1).
pub fn encode_labels(labels: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(labels.iter().map(|(n, v)| n.len() + v.len() + 6).sum());
    encode_label_fields(1, labels, &mut out);
    out
}

fn encode_label_fields(field: u32, labels: &[(&str, &str)], out: &mut Vec<u8>) {
    for (name, value) in labels {
        let body = bytes_field_len(name.len()) + bytes_field_len(value.len());
        encode_key(field, WireType::LengthDelimited, out);
        encode_varint(body as u64, out);
        encode_key(1, WireType::LengthDelimited, out);
        encode_varint(name.len() as u64, out);
        out.extend_from_slice(name.as_bytes());
        encode_key(2, WireType::LengthDelimited, out);
        encode_varint(value.len() as u64, out);
        out.extend_from_slice(value.as_bytes());
    }
}

fn bytes_field_len(n: usize) -> usize {
    1 + encoded_len_varint(n as u64) + n
}

/// An exemplar attached to one sample (a trace id, its value and time).
#[derive(Debug, Clone, PartialEq)]
pub struct ExemplarData {
    pub trace_id: String,
    pub value: f64,
    pub timestamp: i64,
}

/// One encoded, snappy-compressed request ready to send.
#[derive(Debug, Clone)]
pub struct EncodedRequest {
    pub body: Bytes,
    pub samples: u32,
    pub exemplars: u32,
    /// Uncompressed protobuf size.
    pub raw_len: u32,
    /// Send-order key: shards keep within a few phases of each other.
    pub phase: u64,
}

impl std::fmt::Debug for BatchBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchBuilder").finish_non_exhaustive()
    }
}

/// Accumulates samples into `WriteRequest`s of at most `batch_size` samples.
pub struct BatchBuilder {
    batch_size: usize,
    buf: Vec<u8>,
    ts: Vec<u8>,
    samples: u32,
    exemplars: u32,
    phase: u64,
    encoder: snap::raw::Encoder,
    pub out: Vec<EncodedRequest>,
}

impl BatchBuilder {
    pub fn new(batch_size: usize) -> Self {
        BatchBuilder {
            batch_size: batch_size.max(1),
            buf: Vec::with_capacity(batch_size * 256),
            ts: Vec::with_capacity(512),
            samples: 0,
            exemplars: 0,
            phase: 0,
            encoder: snap::raw::Encoder::new(),
            out: Vec::new(),
        }
    }

    /// Adds metadata entries (`WriteRequest.metadata`, field 3) to the open request.
    pub fn push_metadata(&mut self, meta: &[MetricMetadata]) {
        for m in meta {
            prost::encoding::message::encode(3, m, &mut self.buf);
        }
    }

    pub fn push(
        &mut self,
        labels: &[u8],
        t: i64,
        v: f64,
        exemplar: Option<&ExemplarData>,
        phase: u64,
    ) {
        if self.samples == 0 {
            self.phase = phase;
        }
        let ts = &mut self.ts;
        ts.clear();
        ts.extend_from_slice(labels);
        // Sample { value: double = 1, timestamp: int64 = 2 }
        encode_key(2, WireType::LengthDelimited, ts);
        let sample_len = 9 + 1 + encoded_len_varint(t as u64);
        encode_varint(sample_len as u64, ts);
        encode_key(1, WireType::SixtyFourBit, ts);
        ts.extend_from_slice(&v.to_le_bytes());
        encode_key(2, WireType::Varint, ts);
        encode_varint(t as u64, ts);
        if let Some(ex) = exemplar {
            let label_len = bytes_field_len(8) + bytes_field_len(ex.trace_id.len());
            let ex_len = 1
                + encoded_len_varint(label_len as u64)
                + label_len
                + 9
                + 1
                + encoded_len_varint(ex.timestamp as u64);
            encode_key(3, WireType::LengthDelimited, ts);
            encode_varint(ex_len as u64, ts);
            encode_label_fields(1, &[("trace_id", &ex.trace_id)], ts);
            encode_key(2, WireType::SixtyFourBit, ts);
            ts.extend_from_slice(&ex.value.to_le_bytes());
            encode_key(3, WireType::Varint, ts);
            encode_varint(ex.timestamp as u64, ts);
            self.exemplars += 1;
        }
        encode_key(1, WireType::LengthDelimited, &mut self.buf);
        encode_varint(self.ts.len() as u64, &mut self.buf);
        self.buf.extend_from_slice(&self.ts);
        self.samples += 1;
        if self.samples as usize >= self.batch_size {
            self.flush();
        }
    }

    /// Closes the open request, if it holds anything.
    pub fn flush(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let body = self
            .encoder
            .compress_vec(&self.buf)
            .expect("snappy block compression of an in-memory buffer cannot fail below 4 GiB");
        self.out.push(EncodedRequest {
            body: Bytes::from(body),
            samples: self.samples,
            exemplars: self.exemplars,
            raw_len: self.buf.len() as u32,
            phase: self.phase,
        });
        self.buf.clear();
        self.samples = 0;
        self.exemplars = 0;
    }
}
