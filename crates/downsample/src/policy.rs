//! Storage policies: `resolution:retention` text, as M3 writes them
//! (`raw:30d`, `10s:2d`, `5m:1y`, `1h:5y`), and the namespace each one is
//! stored in.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

const SECOND_MS: i64 = 1000;

/// Display units, largest first: a duration prints in the largest unit that
/// divides it (as Prometheus prints `model.Duration`), so `60m` and `1h` are
/// one policy with one spelling and one namespace name.
const UNITS: [(&str, i64); 6] = [
    ("y", 31_536_000_000),
    ("w", 604_800_000),
    ("d", 86_400_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", SECOND_MS),
];

/// The width of a namespace's windows: `raw` (what was written) or a whole
/// number of seconds. Orders `raw` first, then finer before coarser, which is
/// the order the query role falls back through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Resolution {
    /// 0 for raw; otherwise the window width in ms, a positive multiple of 1000.
    ms: i64,
}

impl Resolution {
    /// Raw samples, not downsampled.
    pub const RAW: Resolution = Resolution { ms: 0 };

    /// A downsampled resolution of `ms` milliseconds; `None` unless it is a
    /// positive whole number of seconds.
    pub fn from_ms(ms: i64) -> Option<Resolution> {
        (ms > 0 && ms % SECOND_MS == 0).then_some(Resolution { ms })
    }

    pub fn is_raw(&self) -> bool {
        self.ms == 0
    }

    /// The window width in ms; `None` for raw.
    pub fn window_ms(&self) -> Option<i64> {
        (!self.is_raw()).then_some(self.ms)
    }
}

impl fmt::Display for Resolution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_raw() {
            f.write_str("raw")
        } else {
            f.write_str(&format_ms(self.ms))
        }
    }
}

/// A namespace's storage policy: keep data at `resolution` for `retention`.
/// Orders by resolution (raw first), then by retention.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StoragePolicy {
    resolution: Resolution,
    retention_ms: i64,
}

impl StoragePolicy {
    pub fn resolution(&self) -> Resolution {
        self.resolution
    }

    /// How long the namespace keeps data, in ms.
    pub fn retention_ms(&self) -> i64 {
        self.retention_ms
    }

    /// The namespace this policy's data lives in, safe as a file or column
    /// family name (`[a-z0-9_]` only): `raw_30d`, `agg_5m_1y`.
    pub fn namespace_name(&self) -> String {
        let retention = format_ms(self.retention_ms);
        if self.resolution.is_raw() {
            format!("raw_{retention}")
        } else {
            format!("agg_{}_{retention}", self.resolution)
        }
    }
}

impl FromStr for StoragePolicy {
    type Err = Error;

    /// Parses `resolution:retention`; each side is a duration in whole
    /// seconds (units `s m h d w y`, e.g. `5m`, `1h30m`) and the resolution
    /// may be `raw`. The error names the whole text and the bad part.
    fn from_str(text: &str) -> Result<StoragePolicy> {
        let bad = |reason: String| Error::Policy {
            text: text.to_string(),
            reason,
        };
        let (res, ret) = text
            .split_once(':')
            .ok_or_else(|| bad("expected resolution:retention, e.g. 5m:1y".into()))?;
        let resolution = if res == "raw" {
            Resolution::RAW
        } else {
            let ms = parse_seconds(res).map_err(|r| bad(format!("resolution {res:?} {r}")))?;
            // parse_seconds only returns positive whole seconds.
            Resolution { ms }
        };
        let retention_ms = parse_seconds(ret).map_err(|r| bad(format!("retention {ret:?} {r}")))?;
        if retention_ms < resolution.ms {
            return Err(bad(format!(
                "retention {ret} is shorter than the resolution {res}"
            )));
        }
        Ok(StoragePolicy {
            resolution,
            retention_ms,
        })
    }
}

impl fmt::Display for StoragePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.resolution, format_ms(self.retention_ms))
    }
}

/// A positive whole number of seconds, in ms; the error says why not.
fn parse_seconds(s: &str) -> Result<i64, String> {
    let ms = cairn_common::duration::parse_units_ms(s)
        .ok_or("is not a duration (digits then a unit: s m h d w y)")?;
    if ms <= 0 {
        return Err("must be positive".into());
    }
    if ms % SECOND_MS != 0 {
        return Err("is not a whole number of seconds (the finest resolution is 1s)".into());
    }
    Ok(ms)
}

/// `ms` (a positive multiple of 1000) in the largest unit that divides it.
fn format_ms(ms: i64) -> String {
    for (unit, size) in UNITS {
        if ms % size == 0 {
            return format!("{}{unit}", ms / size);
        }
    }
    // Unreachable for whole seconds; kept total for any i64.
    format!("{ms}ms")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> StoragePolicy {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn policies_parse_display_and_name_their_namespace() {
        for (text, shown, ns) in [
            ("raw:30d", "raw:30d", "raw_30d"),
            ("5m:1y", "5m:1y", "agg_5m_1y"),
            ("1h:5y", "1h:5y", "agg_1h_5y"),
            ("10s:2d", "10s:2d", "agg_10s_2d"),
            ("1s:1h", "1s:1h", "agg_1s_1h"),
            ("60m:365d", "1h:1y", "agg_1h_1y"),
            ("90s:14d", "90s:2w", "agg_90s_2w"),
            ("1h30m:1w", "90m:1w", "agg_90m_1w"),
        ] {
            let policy = p(text);
            assert_eq!(policy.to_string(), shown, "{text}");
            assert_eq!(policy.namespace_name(), ns, "{text}");
            assert_eq!(p(shown), policy, "display of {text} parses back");
            assert!(ns
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'));
        }
        assert!(p("raw:30d").resolution().is_raw());
        assert_eq!(p("5m:1y").resolution().window_ms(), Some(300_000));
        assert_eq!(p("10s:2d").retention_ms(), 2 * 86_400_000);
    }

    #[test]
    fn bad_policies_name_the_bad_text() {
        for (text, needle) in [
            ("5m", "expected resolution:retention"),
            ("", "expected resolution:retention"),
            ("5x:1y", "resolution \"5x\" is not a duration"),
            ("5m:forever", "retention \"forever\" is not a duration"),
            ("5m:", "retention \"\" is not a duration"),
            (":1y", "resolution \"\" is not a duration"),
            ("0s:1d", "resolution \"0s\" must be positive"),
            (
                "500ms:1d",
                "resolution \"500ms\" is not a whole number of seconds",
            ),
            ("5m:raw", "retention \"raw\""),
            ("1h:5m", "retention 5m is shorter than the resolution 1h"),
            ("5m:1y:2y", "retention \"1y:2y\""),
            ("-5m:1y", "resolution \"-5m\""),
            ("99999999999999999999y:1y", "is not a duration"),
        ] {
            let err = text.parse::<StoragePolicy>().expect_err(text).to_string();
            assert!(err.contains(needle), "{text}: {err}");
            assert!(
                err.contains(&format!("{text:?}")),
                "{text}: error names the text: {err}"
            );
        }
    }

    #[test]
    fn policies_order_by_resolution_raw_first() {
        let mut v = [
            p("1h:5y"),
            p("raw:30d"),
            p("5m:1y"),
            p("10s:2d"),
            p("5m:30d"),
        ];
        v.sort();
        let shown: Vec<String> = v.iter().map(|x| x.to_string()).collect();
        assert_eq!(shown, ["raw:30d", "10s:2d", "5m:30d", "5m:1y", "1h:5y"]);
        assert!(Resolution::RAW < Resolution::from_ms(1000).unwrap());
        assert_eq!(Resolution::from_ms(1500), None);
        assert_eq!(Resolution::from_ms(0), None);
    }
}
