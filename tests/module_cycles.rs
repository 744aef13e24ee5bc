//! The daemon's module structure stays a layered graph (docs/architecture.md, "Who talks to
//! whom"): no import cycle of more than two files in `src/actors` or `src/ipc`, and `pull`
//! does not import `remote` (it reaches remotes only through `upstream`). The same check as
//! `scripts/module_cycles.py`, here so CI needs nothing beyond cargo.
//!
//! A file names a sibling module with `super::x` or `crate::<dir>::x`, also inside braces
//! (`super::{x, y::Z}`); comment lines are skipped. A directory module (`x/mod.rs` and its
//! submodules) is one node.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Files in one cycle at most (a pair that names each other is allowed).
const MAX_CYCLE: usize = 2;

type Graph = BTreeMap<String, BTreeSet<String>>;

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The first path segment of each item of a `use` tree: `a::B` -> `a`, `{a, b::{C, D}}` ->
/// `a`, `b`.
fn tree_heads(tree: &str, out: &mut BTreeSet<String>) {
    let tree = tree.trim_start();
    if let Some(inner) = tree.strip_prefix('{') {
        // Split the group at its top-level commas.
        let (mut depth, mut start) = (0usize, 0usize);
        for (i, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => {
                    tree_heads_item(&inner[start..i], out);
                    return;
                }
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    tree_heads_item(&inner[start..i], out);
                    start = i + 1;
                }
                _ => {}
            }
        }
        tree_heads_item(&inner[start..], out);
    } else {
        tree_heads_item(tree, out);
    }
}

fn tree_heads_item(item: &str, out: &mut BTreeSet<String>) {
    let head: String = item
        .trim_start()
        .chars()
        .take_while(|c| is_ident(*c))
        .collect();
    if !head.is_empty() {
        out.insert(head);
    }
}

/// The sibling modules `text` names as `super::x` or `crate::<dir>::x` (comment lines and
/// trailing comments skipped).
fn references(text: &str, dir: &str) -> BTreeSet<String> {
    references_with(text, &["super::".to_owned(), format!("crate::{dir}::")])
}

/// The modules `text` names after any of `prefixes`.
fn references_with(text: &str, prefixes: &[String]) -> BTreeSet<String> {
    let code: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect();
    let code = code.join("\n");
    let mut found = BTreeSet::new();
    for prefix in prefixes {
        let mut rest = code.as_str();
        while let Some(at) = rest.find(prefix.as_str()) {
            let after = &rest[at + prefix.len()..];
            // `super::` must start a path, not end one (`a_super::x` is another name).
            let starts_path = !rest[..at].ends_with(is_ident);
            if starts_path {
                if after.starts_with('{') {
                    // The whole brace group, however deep.
                    let mut depth = 0usize;
                    let end = after
                        .char_indices()
                        .find_map(|(i, c)| {
                            match c {
                                '{' => depth += 1,
                                '}' => {
                                    depth -= 1;
                                    if depth == 0 {
                                        return Some(i + 1);
                                    }
                                }
                                _ => {}
                            }
                            None
                        })
                        .unwrap_or(after.len());
                    tree_heads(&after[..end], &mut found);
                } else {
                    tree_heads(after, &mut found);
                }
            }
            rest = after;
        }
    }
    found
}

/// Every `.rs` file under `dir`.
fn sub_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            sub_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// The import graph between the modules of `src/<dir>`: each file `x.rs`, and each directory
/// `x/` with a `mod.rs` as one node (its `mod.rs` names siblings as `super::y`; its
/// submodules as `super::super::y` or `crate::<dir>::y`). `mod.rs` of `src/<dir>` is left out.
fn graph(dir: &str) -> Graph {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("src")
        .join(dir);
    let read = |p: &Path| std::fs::read_to_string(p).unwrap();
    let mut named: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for entry in std::fs::read_dir(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())) {
        let p = entry.unwrap().path();
        let stem = p.file_stem().unwrap().to_string_lossy().into_owned();
        if p.extension().is_some_and(|e| e == "rs") && stem != "mod" {
            named.insert(stem, references(&read(&p), dir));
        } else if p.join("mod.rs").is_file() {
            let mut refs = references(&read(&p.join("mod.rs")), dir);
            let deep = ["super::super::".to_owned(), format!("crate::{dir}::")];
            let mut subs = Vec::new();
            sub_files(&p, &mut subs);
            for sub in subs.iter().filter(|s| **s != p.join("mod.rs")) {
                refs.extend(references_with(&read(sub), &deep));
            }
            named.insert(stem, refs);
        }
    }
    let modules: BTreeSet<String> = named.keys().cloned().collect();
    named
        .into_iter()
        .map(|(node, refs)| {
            let refs = refs
                .into_iter()
                .filter(|m| modules.contains(m) && *m != node)
                .collect();
            (node, refs)
        })
        .collect()
}

/// Strongly connected components (Tarjan), each sorted.
fn components(g: &Graph) -> Vec<Vec<String>> {
    struct State<'a> {
        g: &'a Graph,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        s.on.insert(v);
        let g = s.g;
        for w in g.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if s.on.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut comp = Vec::new();
            loop {
                let w = s.stack.pop().unwrap();
                s.on.remove(w);
                comp.push(w.to_owned());
                if w == v {
                    break;
                }
            }
            comp.sort();
            s.out.push(comp);
        }
    }
    let mut s = State {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in g.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v.as_str());
        }
    }
    s.out
}

fn too_large(dir: &str) -> Vec<Vec<String>> {
    components(&graph(dir))
        .into_iter()
        .filter(|c| c.len() > MAX_CYCLE)
        .collect()
}

#[test]
fn no_import_cycle_of_more_than_two_files_in_actors() {
    let cycles = too_large("actors");
    assert!(cycles.is_empty(), "src/actors import cycles: {cycles:?}");
}

#[test]
fn no_import_cycle_of_more_than_two_files_in_ipc() {
    let cycles = too_large("ipc");
    assert!(cycles.is_empty(), "src/ipc import cycles: {cycles:?}");
}

#[test]
fn a_directory_module_is_one_node_with_its_submodules_imports() {
    let g = graph("actors");
    let object = g.get("object").expect("src/actors/object/");
    // Only `object/pushes.rs` names `crate::actors::{content, account_actor}`.
    assert!(
        object.contains("content") && object.contains("account_actor"),
        "{object:?}"
    );
}

#[test]
fn pull_does_not_import_remote() {
    let g = graph("actors");
    let pull = g.get("pull").expect("src/actors/pull.rs");
    assert!(!pull.contains("remote"), "pull imports: {pull:?}");
}

/// The checker itself: it sees every form of import, and finds a three-file cycle.
#[test]
fn the_checker_finds_imports_and_cycles() {
    let text = "use super::a::X;\n// use super::commented;\nuse super::{b, c::{D, E}, d};\n\
                fn f() { crate::actors::e::g(); my_super::x(); } // super::trailing\n";
    let found: Vec<String> = references(text, "actors").into_iter().collect();
    assert_eq!(found, ["a", "b", "c", "d", "e"]);
    let edge = |a: &str, b: &str| (a.to_owned(), BTreeSet::from([b.to_owned()]));
    let g: Graph = [
        edge("x", "y"),
        edge("y", "z"),
        edge("z", "x"),
        edge("p", "q"),
    ]
    .into_iter()
    .chain([("q".to_owned(), BTreeSet::from(["p".to_owned()]))])
    .collect();
    let mut sizes: Vec<usize> = components(&g).iter().map(|c| c.len()).collect();
    sizes.sort();
    assert_eq!(sizes, [2, 3]);
}
