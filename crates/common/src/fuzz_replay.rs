//! Replays the fuzz targets' inputs on stable (`cargo test`): every crate
//! with a `fuzzing` module feeds its committed corpus and regression inputs
//! through this, so `make test` keeps every crash ever found fixed. Not an API.

/// Feeds every file of `fuzz/corpus/<target>/` and
/// `fuzz/regressions/<target>/` (sorted, relative to the workspace root two
/// levels above `manifest_dir`, the calling crate's `CARGO_MANIFEST_DIR`) to
/// `f`. Panics when a file cannot be read or there is no input at all.
pub fn replay(manifest_dir: &str, target: &str, f: impl Fn(&[u8])) {
    let root = std::path::Path::new(manifest_dir).join("../../fuzz");
    let mut n = 0;
    for kind in ["corpus", "regressions"] {
        let Ok(dir) = std::fs::read_dir(root.join(kind).join(target)) else {
            continue;
        };
        let mut paths: Vec<_> = dir.filter_map(|e| e.ok()).map(|e| e.path()).collect();
        paths.sort();
        for p in paths.into_iter().filter(|p| p.is_file()) {
            let data = std::fs::read(&p)
                .unwrap_or_else(|e| panic!("reading fuzz input {}: {e}", p.display()));
            eprintln!("replaying {}", p.display());
            f(&data);
            n += 1;
        }
    }
    assert!(
        n > 0,
        "no fuzz inputs for {target} under {}",
        root.display()
    );
}
