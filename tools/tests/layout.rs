//! The shape of the workspace's sources, as issue 8 ("one room per job") left it: no module of
//! a crate imports a module that imports it back (parent and child aside), and no source file
//! holds more than 700 lines before its `#[cfg(test)]` module. A change that breaks either
//! fails here with the cycle or the file named.
//!
//! The graph is read from the text: every `crate::a::b` and `super::…` path outside comments
//! and test modules, resolved to the longest module path that has a file.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const CRATES: [&str; 6] = [
    "device",
    "wire",
    "fabric",
    "vhost",
    "guest-driver-tests",
    "tools",
];
const MAX_LINES: usize = 700;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The module path of a file below `src`: `a/b.rs` and `a/b/mod.rs` are `["a", "b"]`.
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|l| l == "mod") {
        parts.pop();
    }
    if parts == ["lib"] || parts == ["main"] {
        parts.clear();
    }
    parts
}

/// The file's code before its test module, without comment lines.
fn code(file: &Path) -> String {
    let text = std::fs::read_to_string(file).unwrap();
    let before_tests = text.split("#[cfg(test)]").next().unwrap_or("");
    before_tests
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `crate::x::y` and `super::z` paths in `code`, as segment lists.
fn paths(code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let bytes = code.as_bytes();
    for start in ["crate::", "super::"] {
        let mut from = 0;
        while let Some(i) = code[from..].find(start) {
            let at = from + i;
            from = at + start.len();
            if at > 0 && (bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_') {
                continue;
            }
            let rest = &code[at..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(rest.len());
            let segs: Vec<String> = rest[..end]
                .split("::")
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
            out.push(segs);
        }
    }
    out
}

fn graph(src: &Path) -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mods: BTreeMap<Vec<String>, PathBuf> = files
        .iter()
        .map(|f| (module_of(src, f), f.clone()))
        .collect();
    let resolve = |path: &[String]| {
        (0..=path.len())
            .rev()
            .map(|k| path[..k].to_vec())
            .find(|p| mods.contains_key(p))
    };
    let mut g: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for (m, file) in &mods {
        for p in paths(&code(file)) {
            let target: Vec<String> = if p[0] == "crate" {
                p[1..].to_vec()
            } else {
                let ups = p.iter().take_while(|s| *s == "super").count();
                let mut base = m[..m.len().saturating_sub(ups)].to_vec();
                base.extend_from_slice(&p[ups..]);
                base
            };
            let Some(t) = resolve(&target) else { continue };
            // A parent and its children use each other by design.
            if &t == m || m.starts_with(&t) || t.starts_with(m) {
                continue;
            }
            g.entry(m.clone()).or_default().insert(t);
        }
    }
    g
}

fn find_cycle(g: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>) -> Option<Vec<Vec<String>>> {
    fn dfs(
        u: &Vec<String>,
        g: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        on_stack: &mut Vec<Vec<String>>,
        done: &mut BTreeSet<Vec<String>>,
    ) -> Option<Vec<Vec<String>>> {
        on_stack.push(u.clone());
        for v in g.get(u).into_iter().flatten() {
            if let Some(i) = on_stack.iter().position(|x| x == v) {
                let mut c = on_stack[i..].to_vec();
                c.push(v.clone());
                return Some(c);
            }
            if !done.contains(v) {
                if let Some(c) = dfs(v, g, on_stack, done) {
                    return Some(c);
                }
            }
        }
        on_stack.pop();
        done.insert(u.clone());
        None
    }
    let mut done = BTreeSet::new();
    for u in g.keys() {
        if !done.contains(u) {
            if let Some(c) = dfs(u, g, &mut Vec::new(), &mut done) {
                return Some(c);
            }
        }
    }
    None
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    for c in CRATES {
        let g = graph(&workspace().join(c).join("src"));
        assert!(g.len() > 1, "{c}: no module graph read (wrong path?)");
        if let Some(cycle) = find_cycle(&g) {
            let names: Vec<String> = cycle.iter().map(|m| m.join("::")).collect();
            panic!("{c}: module cycle {}", names.join(" -> "));
        }
    }
}

#[test]
fn the_cycle_finder_finds_a_cycle() {
    let m = |s: &str| vec![s.to_owned()];
    let g = BTreeMap::from([
        (m("a"), BTreeSet::from([m("b")])),
        (m("b"), BTreeSet::from([m("c")])),
        (m("c"), BTreeSet::from([m("a")])),
    ]);
    assert_eq!(find_cycle(&g).map(|c| c.len()), Some(4));
    let mut g2 = g.clone();
    g2.remove(&m("c"));
    assert_eq!(find_cycle(&g2), None);
}

#[test]
fn no_source_file_over_700_lines_of_non_test_code() {
    let mut over = Vec::new();
    for c in CRATES {
        let mut files = Vec::new();
        rust_files(&workspace().join(c).join("src"), &mut files);
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            let n = text
                .split("#[cfg(test)]")
                .next()
                .unwrap_or("")
                .lines()
                .count();
            if n > MAX_LINES {
                over.push(format!("{} ({n} lines)", f.display()));
            }
        }
    }
    assert!(over.is_empty(), "split these along their jobs: {over:?}");
}
