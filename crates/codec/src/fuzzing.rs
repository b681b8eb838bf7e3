//! Fuzzing entry point for chunk bytes read from disk (used by
//! `fuzz/fuzz_targets/codec_decode.rs` and replayed over the committed
//! corpus by this module's test). Not an API.

/// Arbitrary bytes as a chunk: samples or an error, never a panic. The
/// whole-chunk decoder and the iterator agree; a chunk that decodes holds
/// strictly increasing timestamps, so it re-encodes, and the encoder's
/// output decodes to the same samples (bit for bit).
pub fn decode(data: &[u8]) {
    let whole = crate::decode_all(data);
    let iterated: Option<Vec<(i64, f64)>> = crate::Decoder::new(data)
        .ok()
        .and_then(|d| d.collect::<Result<Vec<_>, _>>().ok());
    let bits = |v: &[(i64, f64)]| v.iter().map(|s| (s.0, s.1.to_bits())).collect::<Vec<_>>();
    assert_eq!(
        whole.as_deref().ok().map(bits),
        iterated.as_deref().map(bits),
        "decode_all and Decoder disagree"
    );
    let Ok(samples) = whole else {
        return;
    };
    let again = crate::encode_all(&samples).expect("decoded timestamps increase");
    let back = crate::decode_all(&again).expect("own output decodes");
    assert_eq!(bits(&back), bits(&samples));
}

#[cfg(test)]
mod tests {
    fn replay(target: &str, f: impl Fn(&[u8])) {
        cairn_common::fuzz_replay::replay(env!("CARGO_MANIFEST_DIR"), target, f);
    }

    #[test]
    fn codec_decode_corpus() {
        replay("codec_decode", super::decode);
    }
}
