//! Runs promqltest scripts against `MemSource`: `cargo run --example pt -- FILES…`.
fn main() {
    let paths: Vec<std::path::PathBuf> = std::env::args().skip(1).map(Into::into).collect();
    let mut out = std::io::stdout();
    cairn_promql::promqltest::run_files_mem(&paths, &mut out).expect("run");
}
