//! Namespaces: where a series' samples are kept and for how long.
//!
//! A namespace is a value — a name, a resolution and a retention (a storage
//! policy, written `10s:2d`) — plus the block window its filesets cover.
//! `raw` holds samples as written (no resolution of its own); aggregated
//! namespaces (`1m:40d`, `1h:1y`) will hold what downsampling produces.
//! The node's configuration is a list of them whose default is `raw` alone;
//! this release writes, reads and retains `raw` only, and refuses a list
//! naming any other (see [`validate`]).

use crate::error::{Error, Result};
use std::time::Duration;

/// The namespace every write goes to.
pub const RAW: &str = "raw";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    /// Directory name under `<data-dir>/data/` (`raw`, later e.g. `1m_40d`).
    pub name: String,
    /// Spacing of the samples it holds; `None` for `raw` (as written).
    pub resolution: Option<Duration>,
    /// Filesets whose whole window is older than this are deleted; samples
    /// older than this are refused (default 30d for `raw`).
    pub retention: Duration,
    /// Block window of its head buffers and filesets (default 2h).
    pub block: Duration,
}

impl Namespace {
    /// The `raw` namespace: samples as written.
    pub fn raw(block: Duration, retention: Duration) -> Self {
        Self {
            name: RAW.to_string(),
            resolution: None,
            retention,
            block,
        }
    }

    /// The block window in ms, at least 1.
    pub fn block_ms(&self) -> i64 {
        (self.block.as_millis() as i64).max(1)
    }

    pub fn retention_ms(&self) -> i64 {
        self.retention.as_millis() as i64
    }
}

impl Default for Namespace {
    /// `raw` with 2h blocks and 30 days' retention.
    fn default() -> Self {
        Self::raw(
            Duration::from_secs(2 * 3600),
            Duration::from_secs(30 * 24 * 3600),
        )
    }
}

/// Checks a node's namespace list and returns its `raw` namespace: exactly
/// one `raw`, with no resolution, a block window and a retention of at
/// least one block; any other namespace is refused (aggregated namespaces
/// are not written yet, so one would silently stay empty).
pub fn validate(list: &[Namespace]) -> Result<&Namespace> {
    let mut raw = None;
    for ns in list {
        if ns.name != RAW {
            return Err(Error::Invalid(format!(
                "namespace {:?}: only the {RAW:?} namespace is supported by this release",
                ns.name
            )));
        }
        if raw.is_some() {
            return Err(Error::Invalid(format!("namespace {RAW:?} listed twice")));
        }
        if ns.resolution.is_some() {
            return Err(Error::Invalid(format!(
                "namespace {RAW:?} holds samples as written; it has no resolution"
            )));
        }
        if ns.block.is_zero() || ns.retention < ns.block {
            return Err(Error::Invalid(format!(
                "namespace {RAW:?}: retention ({:?}) must be at least its block window ({:?})",
                ns.retention, ns.block
            )));
        }
        raw = Some(ns);
    }
    raw.ok_or_else(|| Error::Invalid(format!("the namespace list has no {RAW:?} namespace")))
}

/// Start of the block window holding `t`, without overflow: stored samples
/// lie within `hard::MIN_TIME_MS..=hard::MAX_TIME_MS`, far from the i64
/// ends; for read bounds near `i64::MIN` the answer saturates (any value at
/// or below `t` is a valid lower bound there).
pub fn block_start(t: i64, block_ms: i64) -> i64 {
    t.checked_sub(t.rem_euclid(block_ms)).unwrap_or(i64::MIN)
}

/// End (exclusive) of the block window starting at `b`, saturating.
pub fn block_end(b: i64, block_ms: i64) -> i64 {
    b.saturating_add(block_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_list_is_raw_and_others_are_refused() {
        let raw = Namespace::default();
        assert_eq!(validate(std::slice::from_ref(&raw)).unwrap(), &raw);
        assert!(validate(&[]).is_err());
        assert!(validate(&[raw.clone(), raw.clone()]).is_err());
        let agg = Namespace {
            name: "1m_40d".into(),
            resolution: Some(Duration::from_secs(60)),
            retention: Duration::from_secs(40 * 86_400),
            block: Duration::from_secs(86_400),
        };
        let e = validate(&[raw.clone(), agg]).unwrap_err().to_string();
        assert!(e.contains("1m_40d"), "{e}");
        let short = Namespace::raw(Duration::from_secs(7200), Duration::from_secs(60));
        assert!(validate(&[short]).is_err());
    }

    #[test]
    fn block_windows() {
        assert_eq!(block_start(7_199, 3_600), 3_600);
        assert_eq!(block_start(-1, 3_600), -3_600);
        assert_eq!(block_start(i64::MIN, 3_600), i64::MIN);
        assert_eq!(block_end(i64::MAX - 1, 3_600), i64::MAX);
    }
}
