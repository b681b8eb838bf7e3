//! Config value types every crate's config section shares: [`Duration`]
//! (`"10ms"`, `"2h"`, `"1m30s"`) and [`ByteSize`] (`"64MiB"`, `"1GB"`,
//! `1000`), deserialised from their readable text, and [`ConfigError`], a
//! bad value named by its `section.key`.

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use std::fmt;

/// A bad config value, named by its key (`storage.retention`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("config key {key}: {msg}")]
pub struct ConfigError {
    pub key: String,
    pub msg: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, msg: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            msg: msg.into(),
        }
    }
}

/// A duration written with units (`ms s m h d w y`, as
/// [`crate::duration::parse_units_ms`] reads them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Duration(pub std::time::Duration);

impl Duration {
    /// Parses `2h`, `30d`, `10ms`, `1m30s` (surrounding spaces ignored).
    pub fn parse(s: &str) -> Option<Self> {
        let ms = crate::duration::parse_units_ms(s.trim())?;
        Some(Self(std::time::Duration::from_millis(
            u64::try_from(ms).ok()?,
        )))
    }

    pub fn get(self) -> std::time::Duration {
        self.0
    }

    pub fn as_millis_i64(self) -> i64 {
        i64::try_from(self.0.as_millis()).unwrap_or(i64::MAX)
    }

    /// The duration, or an error naming `key` when it is zero.
    pub fn positive(self, key: &str) -> Result<std::time::Duration, ConfigError> {
        if self.0.is_zero() {
            return Err(ConfigError::new(key, "must be positive"));
        }
        Ok(self.0)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Duration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration (e.g. 10ms, 15s, 2h, 30d)")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Duration, E> {
                Duration::parse(s).ok_or_else(|| {
                    E::custom(format!("{s:?} is not a duration (e.g. 10ms, 15s, 2h, 30d)"))
                })
            }
        }
        d.deserialize_str(V)
    }
}

/// A size in bytes: a number, optionally followed by `B`, `KiB`, `MiB`,
/// `GiB`, `KB`, `MB` or `GB`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// Parses `64MiB`, `1GiB`, `512KiB`, `1MB`, `1000`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: u64 = num
            .parse()
            .map_err(|_| format!("{s:?} is not a size (e.g. 64MiB)"))?;
        let mult: u64 = match unit.trim() {
            "" | "B" => 1,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            "KB" => 1000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            u => {
                return Err(format!(
                    "unknown size unit {u:?} in {s:?} (use B, KiB, MiB, GiB)"
                ))
            }
        };
        n.checked_mul(mult)
            .map(Self)
            .ok_or_else(|| format!("{s:?} is too large"))
    }

    pub fn bytes(self) -> u64 {
        self.0
    }

    /// The size as a `usize` (saturating on 32-bit targets).
    pub fn as_usize(self) -> usize {
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size (e.g. 64MiB)")
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(n))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<ByteSize, E> {
                u64::try_from(n)
                    .map(ByteSize)
                    .map_err(|_| E::custom(format!("{n} is not a size (e.g. 64MiB)")))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<ByteSize, E> {
                ByteSize::parse(s).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes_parse_as_before() {
        assert_eq!(
            Duration::parse("1m30s").unwrap().get(),
            std::time::Duration::from_secs(90)
        );
        assert_eq!(
            Duration::parse(" 10ms ").unwrap().get(),
            std::time::Duration::from_millis(10)
        );
        assert!(Duration::parse("soon").is_none());
        assert!(Duration::parse("").is_none());
        assert_eq!(ByteSize::parse("64MiB").unwrap().bytes(), 64 << 20);
        assert_eq!(ByteSize::parse("1MB").unwrap().bytes(), 1_000_000);
        assert_eq!(ByteSize::parse("1000").unwrap().bytes(), 1000);
        assert!(ByteSize::parse("64 parsecs").unwrap_err().contains("unit"));
        assert!(ByteSize::parse("MiB").is_err());
        assert!(ByteSize::parse("99999999999GiB")
            .unwrap_err()
            .contains("too large"));
        assert_eq!(
            ConfigError::new("query.max-length", "must be positive").to_string(),
            "config key query.max-length: must be positive"
        );
    }
}
