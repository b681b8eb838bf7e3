//! Crash-test failpoints of the raft loop.

/// Crash-test failpoints between the steps of handling a Ready:
/// `CAIRN_META_FAILPOINT=<name>` aborts the process there, after
/// `CAIRN_META_FAILPOINT_SKIP` (default 0) passes.
pub(crate) fn failpoint(name: &str) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static PASSES: AtomicU64 = AtomicU64::new(0);
    static ARMED: std::sync::OnceLock<Option<(String, u64)>> = std::sync::OnceLock::new();
    let armed = ARMED.get_or_init(|| {
        let n = std::env::var("CAIRN_META_FAILPOINT").ok()?;
        let skip = std::env::var("CAIRN_META_FAILPOINT_SKIP")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        Some((n, skip))
    });
    if let Some((n, skip)) = armed {
        if n == name && PASSES.fetch_add(1, Ordering::Relaxed) >= *skip {
            eprintln!("cairn-meta: failpoint {name}: aborting");
            std::process::abort();
        }
    }
}
