//! Bounds on what the write path accepts, in one place.
//!
//! [`hard`] holds the codec bounds: the commit-log and index encoders never
//! write more, and their decoders accept at least that (they also read the
//! wider label sets earlier releases wrote), so anything stored can be read
//! back. [`IngestLimits`] holds the configurable per-request limits the
//! ingest validator checks; `validate()` keeps every one of them inside the
//! hard bounds, so nothing the validator accepts can fail to encode.

/// The bounds the on-disk encodings (commit log, index) are built for.
pub mod hard {
    /// Labels in one label set (series or exemplar).
    pub const MAX_LABELS: usize = 1024;
    /// Bytes of one label name.
    pub const MAX_LABEL_NAME_BYTES: usize = 4096;
    /// Bytes of one label value.
    pub const MAX_LABEL_VALUE_BYTES: usize = 64 * 1024;
    /// Runes of an exemplar's label set, names and values together
    /// (Prometheus's `ExemplarMaxLabelSetLength`; not configurable there either).
    pub const MAX_EXEMPLAR_LABEL_RUNES: usize = 128;
    /// Cairn's earliest and latest times (ms), about ±292,000 years: the
    /// digits of Prometheus's `minTime`/`maxTime`, which are seconds there,
    /// taken as ms here (Prometheus's own range is nearly all of i64 ms).
    /// Samples and query times outside are refused; inside it, every
    /// `t - offset - range - step` the evaluator computes (durations are at
    /// most Go's 292 years) stays far from overflowing i64.
    pub const MIN_TIME_MS: i64 = -9_223_309_901_257_974;
    pub const MAX_TIME_MS: i64 = 9_223_309_901_257_974;
}

/// Per-request ingest limits (config section `ingest`), 0 never meaning "off"
/// here: each must lie in `1..=` its hard bound.
#[derive(Debug, Clone, PartialEq)]
pub struct IngestLimits {
    /// `ingest.max-labels-per-series` (Mimir: 30).
    pub max_labels_per_series: usize,
    /// `ingest.max-label-name-length` bytes (Mimir: 1024).
    pub max_label_name_length: usize,
    /// `ingest.max-label-value-length` bytes (Mimir: 2048).
    pub max_label_value_length: usize,
    /// `ingest.max-series-per-request`: a request with more is refused whole.
    pub max_series_per_request: usize,
    /// `ingest.max-new-series-per-request`: series the store has never seen
    /// that one request may create; a request creating more is refused whole
    /// before anything is stored.
    pub max_new_series_per_request: usize,
    /// `ingest.max-decoded-size`: largest decompressed body, bytes.
    pub max_decoded_size: usize,
    /// `ingest.max-future`: samples newer than now + this (ms) are refused.
    pub max_future_ms: i64,
}

impl Default for IngestLimits {
    fn default() -> Self {
        Self {
            max_labels_per_series: 30,
            max_label_name_length: 1024,
            max_label_value_length: 2048,
            max_series_per_request: 100_000,
            max_new_series_per_request: 100_000,
            max_decoded_size: 128 << 20,
            max_future_ms: 10 * 60 * 1000,
        }
    }
}

impl IngestLimits {
    /// Checks every limit against its hard bound; the error names the key.
    pub fn validate(&self) -> Result<(), String> {
        let check = |key: &str, v: usize, max: usize| {
            if v == 0 || v > max {
                Err(format!("ingest.{key} must be between 1 and {max}, got {v}"))
            } else {
                Ok(())
            }
        };
        check(
            "max-labels-per-series",
            self.max_labels_per_series,
            hard::MAX_LABELS,
        )?;
        check(
            "max-label-name-length",
            self.max_label_name_length,
            hard::MAX_LABEL_NAME_BYTES,
        )?;
        check(
            "max-label-value-length",
            self.max_label_value_length,
            hard::MAX_LABEL_VALUE_BYTES,
        )?;
        check(
            "max-series-per-request",
            self.max_series_per_request,
            usize::MAX,
        )?;
        check(
            "max-new-series-per-request",
            self.max_new_series_per_request,
            usize::MAX,
        )?;
        check("max-decoded-size", self.max_decoded_size, 1 << 30)?;
        if self.max_future_ms < 0 {
            return Err(format!(
                "ingest.max-future must not be negative, got {}ms",
                self.max_future_ms
            ));
        }
        Ok(())
    }

    /// Why a label set breaks the limits (`None` when it is within them).
    /// `pairs` are (name, value) byte strings, empty values already dropped.
    pub fn check_labels<'a>(
        &self,
        count: usize,
        mut pairs: impl Iterator<Item = (&'a [u8], &'a [u8])>,
    ) -> Option<String> {
        if count > self.max_labels_per_series {
            return Some(format!(
                "{count} labels, above the limit of {} (ingest.max-labels-per-series)",
                self.max_labels_per_series
            ));
        }
        pairs.find_map(|(n, v)| {
            if n.len() > self.max_label_name_length {
                Some(format!(
                    "label name {:?}… is {} bytes, above the limit of {} (ingest.max-label-name-length)",
                    truncate_lossy(n, 64),
                    n.len(),
                    self.max_label_name_length
                ))
            } else if v.len() > self.max_label_value_length {
                Some(format!(
                    "value of label {:?} is {} bytes, above the limit of {} (ingest.max-label-value-length)",
                    truncate_lossy(n, 64),
                    v.len(),
                    self.max_label_value_length
                ))
            } else {
                None
            }
        })
    }
}

/// Why an exemplar's labels break Prometheus's 128-rune bound, if they do.
pub fn check_exemplar_labels<'a>(
    pairs: impl Iterator<Item = (&'a str, &'a str)>,
) -> Option<String> {
    let runes: usize = pairs
        .map(|(n, v)| n.chars().count() + v.chars().count())
        .sum();
    (runes > hard::MAX_EXEMPLAR_LABEL_RUNES).then(|| {
        format!(
            "exemplar labels are {runes} runes, above the limit of {}",
            hard::MAX_EXEMPLAR_LABEL_RUNES
        )
    })
}

/// At most `max` bytes of `b` as text (lossy UTF-8), for echoing input back.
pub fn truncate_lossy(b: &[u8], max: usize) -> String {
    if b.len() <= max {
        return String::from_utf8_lossy(b).into_owned();
    }
    let mut s = String::from_utf8_lossy(&b[..max]).into_owned();
    s.push('…');
    s
}

/// `s` cut to at most `max` bytes on a char boundary, with `…` when cut.
pub fn truncate_str(s: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if s.len() <= max {
        return s.into();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end]).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fit_the_hard_bounds_and_bad_keys_are_named() {
        IngestLimits::default().validate().unwrap();
        let l = IngestLimits {
            max_labels_per_series: hard::MAX_LABELS + 1,
            ..Default::default()
        };
        assert!(l
            .validate()
            .unwrap_err()
            .contains("ingest.max-labels-per-series"));
    }

    #[test]
    fn label_limits_name_the_key() {
        let l = IngestLimits::default();
        let long = vec![b'a'; 3000];
        let pairs = [(&b"__name__"[..], &b"x"[..]), (&b"a"[..], &long[..])];
        let why = l.check_labels(2, pairs.iter().copied()).unwrap();
        assert!(why.contains("max-label-value-length"), "{why}");
        assert!(l
            .check_labels(31, std::iter::empty())
            .unwrap()
            .contains("31 labels"));
        assert!(l.check_labels(2, pairs[..1].iter().copied()).is_none());
        let long_ex = "x".repeat(121);
        assert!(check_exemplar_labels([("trace_id", long_ex.as_str())].into_iter()).is_some());
        assert!(check_exemplar_labels([("trace_id", "abc")].into_iter()).is_none());
    }

    #[test]
    fn truncation_keeps_char_boundaries() {
        assert_eq!(truncate_str("héllo", 2), "h…");
        assert_eq!(truncate_str("abc", 10), "abc");
        assert_eq!(truncate_lossy(b"abcdef", 3), "abc…");
    }
}
