//! Remote-write bodies from the network: both decoders (zero-copy and prost)
//! must never panic, on raw bytes and on snappy-framed bytes, and must agree.
//! Run with: cargo fuzz run remote_write_decode
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let framed = snap::raw::Encoder::new().compress_vec(data).unwrap_or_default();
    for body in [data, framed.as_slice()] {
        let fast = cairn_ingest::decode_prepared("t", body, 1 << 24);
        if let Ok(req) = cairn_ingest::decode_remote_write(body, 1 << 24) {
            let slow = cairn_ingest::validate(req);
            if let Ok((batch, invalid)) = fast {
                assert_eq!(invalid, slow.invalid);
                assert_eq!(batch.series.len(), slow.batch.series.len());
            }
        }
    }
});
