//! Request parameters (query string and form bodies, repeated keys kept;
//! collected by the [`crate::extract::PromParams`] extractor), their typed
//! accessors with Prometheus's error messages (`time`, `limit`, `match[]`,
//! …), and Prometheus's time and duration formats.

use crate::error::{echo, ApiError, Result};
use axum::http::{header, HeaderMap, Method};
use cairn_common::parse_selector;
use cairn_common::Matcher;

/// The earliest and latest API times (ms; see `cairn_common::limits::hard`),
/// used when start/end are absent.
pub(crate) const MIN_TIME: i64 = cairn_common::limits::hard::MIN_TIME_MS;
pub(crate) const MAX_TIME: i64 = cairn_common::limits::hard::MAX_TIME_MS;

pub(crate) struct Params(Vec<(String, String)>);

impl Params {
    /// Query-string parameters, plus form-body parameters of a POST.
    pub(crate) fn parse(
        query: Option<&str>,
        method: &Method,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Self {
        let mut v: Vec<(String, String)> = query
            .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        let is_form = headers
            .get(header::CONTENT_TYPE)
            .and_then(|h| h.to_str().ok())
            .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
        if method == Method::POST && is_form {
            v.extend(form_urlencoded::parse(body).into_owned());
        }
        Params(v)
    }

    pub(crate) fn get(&self, k: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
    }

    pub(crate) fn all<'a>(&'a self, k: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }

    /// The `query` parameter ("" when absent).
    pub(crate) fn query(&self) -> String {
        self.get("query").unwrap_or("").to_string()
    }

    /// A time parameter; absent or empty: `default`, or 400 without one.
    pub(crate) fn time(&self, name: &str, default: Option<i64>) -> Result<i64> {
        match self.get(name) {
            Some(s) if !s.is_empty() => parse_time_ms(s)
                .map_err(|e| ApiError::bad_data(format!("invalid parameter {name:?}: {e}"))),
            _ => default.ok_or_else(|| {
                ApiError::bad_data(format!(
                    "invalid parameter {name:?}: cannot parse \"\" to a valid timestamp"
                ))
            }),
        }
    }

    /// `limit` of the query endpoints: most series returned (0 or absent:
    /// no limit).
    pub(crate) fn series_limit(&self) -> Result<usize> {
        match self.get("limit").filter(|s| !s.is_empty()) {
            None => Ok(0),
            Some(s) => s
                .parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .map(|n| n as usize)
                .ok_or_else(|| {
                    ApiError::bad_data(format!(
                        "invalid parameter \"limit\": {:?} is not a non-negative integer",
                        echo(s)
                    ))
                }),
        }
    }

    /// An integer parameter (`metadata`'s `limit`, `limit_per_metric`).
    pub(crate) fn int(&self, name: &str, default: i64) -> Result<i64> {
        match self.get(name).filter(|s| !s.is_empty()) {
            None => Ok(default),
            Some(s) => s
                .parse::<i64>()
                .map_err(|_| ApiError::bad_data(format!("{name} must be a number"))),
        }
    }

    /// `match[]`, `start`, `end` of the series, labels and export endpoints.
    pub(crate) fn read_args(&self, require_match: bool) -> Result<ReadArgs> {
        let mut matchers = Vec::new();
        for s in self.all("match[]") {
            matchers.push(parse_selector(s).map_err(ApiError::bad_data)?);
        }
        if require_match && matchers.is_empty() {
            return Err(ApiError::bad_data("no match[] parameter provided"));
        }
        let bad =
            |name: &str, e: String| ApiError::bad_data(format!("invalid parameter {name:?}: {e}"));
        let start = match self.get("start") {
            Some(s) => parse_time_ms(s).map_err(|e| bad("start", e))?,
            None => MIN_TIME,
        };
        let end = match self.get("end") {
            Some(s) => parse_time_ms(s).map_err(|e| bad("end", e))?,
            None => MAX_TIME,
        };
        if end < start {
            return Err(end_before_start());
        }
        Ok(ReadArgs {
            matchers,
            start,
            end,
        })
    }
}

/// Prometheus's answer to `end` before `start`.
pub(crate) fn end_before_start() -> ApiError {
    ApiError::bad_data("invalid parameter \"end\": end timestamp must not be before start time")
}

/// Parsed `match[]`, `start`, `end` of the read endpoints.
pub(crate) struct ReadArgs {
    pub matchers: Vec<Vec<Matcher>>,
    pub start: i64,
    pub end: i64,
}

/// Go's largest `time.Duration` in ms (about 292 years): Prometheus cannot
/// parse a longer duration.
pub(crate) const MAX_DURATION_MS: i64 = i64::MAX / 1_000_000;

/// A time as Unix seconds (possibly fractional) or RFC 3339, in ms, within
/// [`MIN_TIME`, `MAX_TIME`] (narrower than Prometheus, which takes nearly
/// any int64 ms: times past ±292,000 years are refused with 400).
pub fn parse_time_ms(s: &str) -> Result<i64, String> {
    let shown = cairn_common::limits::truncate_str(s, 64);
    let ms = if let Ok(f) = s.parse::<f64>() {
        if !f.is_finite() {
            return Err(format!("cannot parse {shown:?} to a valid timestamp"));
        }
        let ms = (f * 1000.0).round();
        if ms < MIN_TIME as f64 || ms > MAX_TIME as f64 {
            None
        } else {
            Some(ms as i64)
        }
    } else {
        let d = chrono::DateTime::parse_from_rfc3339(s)
            .map_err(|_| format!("cannot parse {shown:?} to a valid timestamp"))?;
        Some(d.timestamp_millis()).filter(|t| (MIN_TIME..=MAX_TIME).contains(t))
    };
    ms.ok_or_else(|| {
        format!(
            "timestamp {shown:?} is out of range: it must lie between {} and {} (Unix seconds)",
            MIN_TIME / 1000,
            MAX_TIME / 1000
        )
    })
}

/// A Prometheus duration (`1h30m`, `15s`, `100ms`, `2d`, `1w`, `1y`) or a
/// float number of seconds, in ms.
pub fn parse_duration_ms(s: &str) -> Result<i64, String> {
    let shown = cairn_common::limits::truncate_str(s, 64);
    let bad = || format!("cannot parse {shown:?} to a valid duration");
    if let Ok(f) = s.parse::<f64>() {
        if !f.is_finite() || f < 0.0 || f * 1000.0 > MAX_DURATION_MS as f64 {
            return Err(bad());
        }
        return Ok((f * 1000.0).round() as i64);
    }
    cairn_common::duration::parse_units_ms(s)
        .filter(|&t| t <= MAX_DURATION_MS)
        .ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_durations() {
        assert_eq!(parse_time_ms("1700000000.5").unwrap(), 1_700_000_000_500);
        assert_eq!(
            parse_time_ms("2023-11-14T22:13:20Z").unwrap(),
            1_700_000_000_000
        );
        assert!(parse_time_ms("yesterday").is_err());
        assert_eq!(parse_duration_ms("1h30m").unwrap(), 5_400_000);
        assert_eq!(parse_duration_ms("15").unwrap(), 15_000);
        assert_eq!(parse_duration_ms("100ms").unwrap(), 100);
        assert!(parse_duration_ms("5x").is_err());
        // Out of Prometheus's range: refused, never saturated or wrapped.
        assert!(parse_time_ms("-1e300")
            .unwrap_err()
            .contains("out of range"));
        assert!(parse_time_ms("-9223372036854775").is_err());
        assert_eq!(parse_time_ms("-9223309901257.974").unwrap(), MIN_TIME);
        assert!(parse_duration_ms("300y").is_err());
        assert!(parse_duration_ms("1e300").is_err());
        assert!(parse_duration_ms("292y").is_ok());
    }
}
