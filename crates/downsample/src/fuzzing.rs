//! Fuzzing entry point for row bytes read back from an aggregated namespace
//! (used by `fuzz/fuzz_targets/downsample_row_decode.rs` and replayed over
//! the committed corpus by this module's test). Not an API.

use crate::row::{decode_key, Row, KEY_LEN};

/// The first [`KEY_LEN`] bytes as a row key, the rest as its value: an error
/// or a row, never a panic. A key that fails [`decode_key`] fails
/// [`Row::decode`]; a key that decodes re-encodes to the same bytes, and so
/// does a whole row (key and value), since encoding is canonical.
pub fn row_decode(data: &[u8]) {
    let (key, value) = data.split_at(KEY_LEN.min(data.len()));
    let decoded_key = decode_key(key);
    let row = Row::decode(key, value);
    let Ok((series, resolution_ms, start)) = decoded_key else {
        assert!(row.is_err(), "a row decoded under a key that does not");
        return;
    };
    let Ok(row) = row else {
        return;
    };
    assert_eq!(
        (row.series, row.window.resolution_ms, row.window.start),
        (series, resolution_ms, start),
        "the row and its key disagree"
    );
    assert_eq!(&row.key()[..], key, "a decoded key re-encodes identically");
    assert_eq!(row.value(), value, "a decoded value re-encodes identically");
}

#[cfg(test)]
mod tests {
    #[test]
    fn downsample_row_decode_corpus() {
        cairn_common::fuzz_replay::replay(
            env!("CARGO_MANIFEST_DIR"),
            "downsample_row_decode",
            super::row_decode,
        );
    }

    /// Seed inputs for `downsample_row_decode`: key and value of rows built
    /// by the real window code. Run by hand when the row format changes.
    #[test]
    #[ignore = "writes seeds: cargo test -p cairn-downsample --lib write_seeds -- --ignored"]
    fn write_seeds() {
        use crate::{Row, Window};
        use cairn_common::{stale_nan, Sample, SeriesId};
        let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fuzz/corpus/downsample_row_decode");
        std::fs::create_dir_all(&out).unwrap();
        let s = Sample::new;
        const R: i64 = 300_000;
        let windows: Vec<(i64, i64, Vec<Sample>, Option<f64>)> = vec![
            (0, R, vec![s(0, 1.0)], None),
            (
                R,
                R,
                vec![s(R + 1, 4.0), s(R + 200, 2.5), s(2 * R - 1, 9.0)],
                Some(3.0),
            ),
            (-R, R, vec![s(-R, f64::NAN), s(-5, stale_nan())], None),
            (7 * R, R, vec![s(7 * R + 9, stale_nan())], None),
            (
                1_699_999_200_000,
                3_600_000,
                vec![s(1_699_999_200_000, -0.0), s(1_699_999_200_001, f64::MAX)],
                Some(1e300),
            ),
        ];
        for (k, (start, res, samples, prev)) in windows.into_iter().enumerate() {
            let row = Row {
                series: SeriesId(0x0123_4567_89ab_cdef_0011_2233_4455_6677 + k as u128),
                window: Window::from_samples(start, res, &samples, prev)
                    .unwrap()
                    .unwrap(),
            };
            let mut input = row.key().to_vec();
            input.extend_from_slice(&row.value());
            std::fs::write(out.join(format!("seed-{k}")), &input).unwrap();
        }
    }
}
