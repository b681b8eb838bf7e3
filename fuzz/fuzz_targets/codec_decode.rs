//! Feeds arbitrary bytes to the chunk decoder: it must return samples or an
//! error, never panic. Valid chunks must re-encode to the same bytes.
//!
//! Run with: cargo fuzz run codec_decode   (from /fuzz, nightly toolchain)
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(samples) = cairn_codec::decode_all(data) {
        // A chunk that decodes holds strictly increasing timestamps, so it
        // re-encodes; the encoder is deterministic, so the samples survive.
        let again = cairn_codec::encode_all(&samples).expect("decoded timestamps increase");
        let back = cairn_codec::decode_all(&again).expect("own output decodes");
        assert_eq!(back.len(), samples.len());
        for (a, b) in back.iter().zip(&samples) {
            assert_eq!(a.0, b.0);
            assert_eq!(a.1.to_bits(), b.1.to_bits());
        }
    }
});
