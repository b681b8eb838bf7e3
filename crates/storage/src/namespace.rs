//! Namespaces: where a series' samples are kept and for how long.
//!
//! A namespace is a value — a name, a resolution and a retention (a storage
//! policy, written `10s:2d`) — plus the block window its filesets cover.
//! `raw` holds samples as written (no resolution of its own); aggregated
//! namespaces (storage policies such as `5m:1y` or `1h:5y`, named
//! `agg_5m_1y`, `agg_1h_5y`) hold what downsampling writes at their
//! resolution. The node's configuration is a list of them whose default is
//! `raw` alone (`storage.namespaces` adds aggregated ones; see
//! [`validate`]). Each namespace keeps its own head, commit log, filesets,
//! index and retention: a write or read names the namespace it is for.

use crate::error::{Error, Result};
use cairn_downsample::StoragePolicy;
use std::time::Duration;

/// The namespace every write goes to.
pub const RAW: &str = "raw";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    /// `raw`, or the policy's namespace name (`agg_5m_1y`): what requests
    /// name, and its directory.
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

    /// An aggregated namespace keeping `policy`'s resolution for its
    /// retention, in blocks of `block` (default [`default_block`]).
    /// `None` for a `raw:…` policy (raw's retention is `storage.retention`).
    pub fn aggregated(policy: StoragePolicy, block: Option<Duration>) -> Option<Self> {
        let res = Duration::from_millis(u64::try_from(policy.resolution().window_ms()?).ok()?);
        Some(Self {
            name: policy.namespace_name(),
            resolution: Some(res),
            retention: Duration::from_millis(u64::try_from(policy.retention_ms()).ok()?),
            block: block.unwrap_or_else(|| default_block(res)),
        })
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

/// The block window of an aggregated namespace of resolution `res` when
/// none is given: the smallest of 2h, 1d and 7d holding at least 100
/// windows (`1m` → 2h, `5m` → 1d, `1h` → 7d), 7d beyond — few, large
/// filesets for coarse data, as M3 sizes its aggregated namespaces' blocks.
pub fn default_block(res: Duration) -> Duration {
    const HOUR: u64 = 3600;
    [2 * HOUR, 24 * HOUR, 7 * 24 * HOUR]
        .into_iter()
        .map(Duration::from_secs)
        .find(|b| b.as_millis() >= res.as_millis().saturating_mul(100))
        .unwrap_or(Duration::from_secs(7 * 24 * HOUR))
}

/// Checks a node's namespace list and returns its `raw` namespace and the
/// aggregated ones, in the list's order: exactly one `raw`, with no
/// resolution; aggregated namespaces with a resolution of at least 1s,
/// named distinctly and not `raw`; every one with a block window and a
/// retention of at least one block.
pub fn validate(list: &[Namespace]) -> Result<(&Namespace, Vec<&Namespace>)> {
    let mut raw = None;
    let mut aggregated: Vec<&Namespace> = Vec::new();
    for ns in list {
        if ns.block.is_zero() || ns.retention < ns.block {
            return Err(Error::Invalid(format!(
                "namespace {:?}: retention ({:?}) must be at least its block window ({:?})",
                ns.name, ns.retention, ns.block
            )));
        }
        if ns.name == RAW {
            if raw.is_some() {
                return Err(Error::Invalid(format!("namespace {RAW:?} listed twice")));
            }
            if ns.resolution.is_some() {
                return Err(Error::Invalid(format!(
                    "namespace {RAW:?} holds samples as written; it has no resolution"
                )));
            }
            raw = Some(ns);
            continue;
        }
        match ns.resolution {
            Some(r) if r >= Duration::from_secs(1) => {}
            _ => {
                return Err(Error::Invalid(format!(
                    "namespace {:?}: an aggregated namespace needs a resolution of at least 1s",
                    ns.name
                )))
            }
        }
        let safe = !ns.name.is_empty()
            && ns
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !safe {
            return Err(Error::Invalid(format!(
                "namespace {:?}: names are [a-z0-9_] (they name a directory)",
                ns.name
            )));
        }
        if aggregated.iter().any(|a| a.name == ns.name) {
            return Err(Error::Invalid(format!(
                "namespace {:?} listed twice",
                ns.name
            )));
        }
        aggregated.push(ns);
    }
    let raw =
        raw.ok_or_else(|| Error::Invalid(format!("the namespace list has no {RAW:?} namespace")))?;
    Ok((raw, aggregated))
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

    fn agg(policy: &str) -> Namespace {
        Namespace::aggregated(policy.parse().unwrap(), None).unwrap()
    }

    #[test]
    fn the_default_list_is_raw_and_aggregated_namespaces_are_checked() {
        let raw = Namespace::default();
        let (r, a) = validate(std::slice::from_ref(&raw)).unwrap();
        assert_eq!((r, a.len()), (&raw, 0));
        assert!(validate(&[]).is_err());
        assert!(validate(&[raw.clone(), raw.clone()]).is_err());
        let five = agg("5m:1y");
        assert_eq!(five.name, "agg_5m_1y");
        assert_eq!(five.resolution, Some(Duration::from_secs(300)));
        assert_eq!(five.retention, Duration::from_secs(365 * 86_400));
        let list = [five.clone(), raw.clone(), agg("1h:5y")];
        let (_, a) = validate(&list).unwrap();
        let names: Vec<&str> = a.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["agg_5m_1y", "agg_1h_5y"]);
        // Only aggregated namespaces, raw missing.
        assert!(validate(std::slice::from_ref(&five)).is_err());
        let e = validate(&[raw.clone(), five.clone(), five.clone()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("agg_5m_1y") && e.contains("twice"), "{e}");
        let mut unresolved = five.clone();
        unresolved.resolution = None;
        let e = validate(&[raw.clone(), unresolved])
            .unwrap_err()
            .to_string();
        assert!(e.contains("resolution"), "{e}");
        let mut bad_name = five.clone();
        bad_name.name = "../x".into();
        assert!(validate(&[raw.clone(), bad_name]).is_err());
        let short = Namespace::raw(Duration::from_secs(7200), Duration::from_secs(60));
        assert!(validate(&[short]).is_err());
        let e = validate(&[
            raw.clone(),
            Namespace::aggregated("1m:1h".parse().unwrap(), None).unwrap(),
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("agg_1m_1h") && e.contains("block"), "{e}");
        assert!(Namespace::aggregated("raw:30d".parse().unwrap(), None).is_none());
    }

    #[test]
    fn aggregated_blocks_hold_at_least_a_hundred_windows() {
        let h = |n: u64| Duration::from_secs(n * 3600);
        for (res, block) in [
            (1, h(2)),
            (60, h(2)),
            (72, h(2)),
            (73, h(24)),
            (300, h(24)),
            (3600, h(24 * 7)),
            (86_400, h(24 * 7)),
        ] {
            assert_eq!(default_block(Duration::from_secs(res)), block, "{res}s");
        }
        let explicit = Namespace::aggregated("5m:1y".parse().unwrap(), Some(h(6))).unwrap();
        assert_eq!(explicit.block, h(6));
    }

    #[test]
    fn block_windows() {
        assert_eq!(block_start(7_199, 3_600), 3_600);
        assert_eq!(block_start(-1, 3_600), -3_600);
        assert_eq!(block_start(i64::MIN, 3_600), i64::MIN);
        assert_eq!(block_end(i64::MAX - 1, 3_600), i64::MAX);
    }
}
