//! Fault points for the crash and disk-full tests: a process abort at a
//! named point (`CAIRN_FAILPOINT`), and `ENOSPC` from named I/O points
//! armed per directory. Each costs one load when nothing is armed.

use std::path::{Path, PathBuf};

/// Test hook: with `CAIRN_FAILPOINT=<name>` the process aborts at that point,
/// as a crash would (used by the crash tests to die mid-flush).
pub fn fail_point(name: &str) {
    // Read once: this sits on the write path.
    static ARMED: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let armed = ARMED.get_or_init(|| std::env::var("CAIRN_FAILPOINT").ok());
    if armed.as_deref() == Some(name) {
        tracing::warn!(failpoint = name, "failpoint hit: aborting");
        std::process::abort();
    }
}

/// I/O fault points armed: (point, dir, hits left; `None` for every hit).
type ArmedFaults = Vec<(String, PathBuf, Option<u32>)>;
static IO_FAULTS: std::sync::Mutex<ArmedFaults> = std::sync::Mutex::new(Vec::new());
/// Whether any I/O fault is armed (the only cost of a fault point otherwise).
static IO_FAULTS_ARMED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Test hook: `Err(ENOSPC)` when fault point `name` is armed for a directory
/// holding `path` (see [`arm_io_fault`]), else `Ok`. Points:
/// `commitlog-create-segment`, `commitlog-append`, `commitlog-sync` (before
/// each fdatasync of a segment: the sync then fails without touching the
/// file, so the next one succeeds, as Linux reports a writeback error to
/// one fsync only), `fileset-write`, `snapshot-write` (before each shard
/// file of a head snapshot).
pub fn io_fault(name: &str, path: &Path) -> std::io::Result<()> {
    if !IO_FAULTS_ARMED.load(std::sync::atomic::Ordering::Relaxed) {
        return Ok(());
    }
    let mut armed = IO_FAULTS.lock().unwrap_or_else(|p| p.into_inner());
    let Some(i) = armed
        .iter()
        .position(|(n, dir, _)| n == name && path.starts_with(dir))
    else {
        return Ok(());
    };
    if let Some(left) = &mut armed[i].2 {
        *left -= 1;
        if *left == 0 {
            armed.remove(i);
            IO_FAULTS_ARMED.store(!armed.is_empty(), std::sync::atomic::Ordering::Relaxed);
        }
    }
    Err(std::io::Error::from_raw_os_error(libc::ENOSPC))
}

/// Test hook: arms (or with `on == false` disarms) I/O fault point `name`
/// for paths under `dir`, so tests running side by side do not disturb each
/// other.
#[doc(hidden)]
pub fn arm_io_fault(name: &str, dir: &Path, on: bool) {
    arm(name, dir, on.then_some(None));
}

/// Test hook: arms I/O fault point `name` for paths under `dir` for its
/// next `hits` hits only (0 disarms it).
#[doc(hidden)]
pub fn arm_io_fault_times(name: &str, dir: &Path, hits: u32) {
    arm(name, dir, (hits > 0).then_some(Some(hits)));
}

fn arm(name: &str, dir: &Path, hits: Option<Option<u32>>) {
    let mut armed = IO_FAULTS.lock().unwrap_or_else(|p| p.into_inner());
    armed.retain(|(n, d, _)| !(n == name && d == dir));
    if let Some(hits) = hits {
        armed.push((name.to_string(), dir.to_path_buf(), hits));
    }
    IO_FAULTS_ARMED.store(!armed.is_empty(), std::sync::atomic::Ordering::Relaxed);
}
