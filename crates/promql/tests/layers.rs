//! The engine's modules are layered one way: each module refers (through
//! `crate::…` or `super::…` paths, in `use` lines or inline) only to
//! modules listed before it in [`LAYERS`], so no module imports a module
//! that imports it back. Test modules (`#[cfg(test)] mod …` at the end of
//! a file) are not counted. A new module must be added to [`LAYERS`].

use regex::Regex;
use std::path::{Path, PathBuf};

/// Lowest first. A parent (`kernels`, `exec`) only declares its children.
const LAYERS: &[&str] = &[
    "value",
    "bounds",
    "parse_error",
    "kernels::float",
    "kernels::aggr",
    "kernels::binop",
    "kernels::histogram",
    "kernels::range",
    "kernels::time",
    "kernels::window",
    "kernels",
    "ast",
    "resolution",
    "plan",
    "fetch",
    "exec::state",
    "exec::ctx",
    "exec::aggr",
    "exec::binop",
    "exec::call",
    "exec::serieswise",
    "exec::step",
    "exec::fold",
    "exec::run",
    "exec",
    "engine",
    "fuzzing",
];

/// Module path of a source file under `src/` (`exec/mod.rs` → `exec`).
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).expect("file under src");
    let mut parts: Vec<String> = rel
        .with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts.join("::")
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("reading src") {
        let p = e.expect("dir entry").path();
        if p.is_dir() {
            files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The known module a path (`crate::a::b::item`, relative to `module` for
/// `super::`) names: its longest prefix that is a module.
fn resolve(module: &str, path: &str) -> Option<String> {
    let mut parts: Vec<&str> = path.split("::").collect();
    let mut base: Vec<&str> = match parts[0] {
        "crate" => Vec::new(),
        "super" => {
            let mut b: Vec<&str> = module.split("::").collect();
            b.pop();
            b
        }
        _ => return None,
    };
    parts.remove(0);
    while parts.first() == Some(&"super") {
        base.pop();
        parts.remove(0);
    }
    let mut best = None;
    for i in 0..=parts.len() {
        let m = base
            .iter()
            .chain(&parts[..i])
            .copied()
            .collect::<Vec<_>>()
            .join("::");
        if m.is_empty() || LAYERS.contains(&m.as_str()) {
            best = Some(m);
        }
    }
    best
}

#[test]
fn modules_import_only_lower_layers() {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut all = Vec::new();
    files(&src, &mut all);
    let path = Regex::new(r"\b(?:crate|super)(?:::\w+)+").expect("valid regex");
    let group = Regex::new(r"\b((?:crate|super)(?:::\w+)*)::\{([^}]*)\}").expect("valid regex");
    let mut bad = Vec::new();
    for f in all {
        let m = module_of(&src, &f);
        if m == "lib" {
            continue; // the root declares and re-exports; nothing imports it
        }
        let Some(pos) = LAYERS.iter().position(|l| *l == m) else {
            bad.push(format!("{m}: not in LAYERS"));
            continue;
        };
        let text = std::fs::read_to_string(&f).expect("reading a source file");
        let code = text.split("\n#[cfg(test)]\nmod ").next().unwrap_or("");
        let mut refs: Vec<String> = path
            .find_iter(code)
            .map(|x| x.as_str().to_string())
            .collect();
        for g in group.captures_iter(code) {
            for item in g[2].split(',') {
                let item = item.trim().split("::").next().unwrap_or("");
                if !item.is_empty() {
                    refs.push(format!("{}::{item}", &g[1]));
                }
            }
        }
        for r in refs {
            match resolve(&m, &r) {
                Some(t) if t.is_empty() => bad.push(format!("{m} imports the crate root ({r})")),
                Some(t) if t == m => {}
                Some(t) => {
                    let tp = LAYERS.iter().position(|l| *l == t).unwrap_or(usize::MAX);
                    if tp >= pos {
                        bad.push(format!("{m} imports {t}, which is not below it ({r})"));
                    }
                }
                None => {}
            }
        }
    }
    bad.sort();
    bad.dedup();
    assert!(bad.is_empty(), "layering broken:\n{}", bad.join("\n"));
}
