//! The repository is the whole product: every relative Markdown link resolves inside it, and
//! no file points at a workbench beside the checkout. Walks the source tree (not `target/`,
//! virtualenvs, fuzz corpora or build output).

use std::path::{Path, PathBuf};

const SKIP: &[&str] = &[
    "target",
    ".git",
    ".venv",
    "corpus",
    "artifacts",
    "build",
    "node_modules",
];
const TEXT: &[&str] = &[
    "md", "rs", "py", "toml", "yml", "yaml", "sh", "txt", "cfg", "json",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            if !SKIP.contains(&name.as_str()) && !name.ends_with(".egg-info") {
                walk(&path, out);
            }
        } else {
            out.push(path);
        }
    }
}

fn files_with(ext: &[&str]) -> Vec<PathBuf> {
    let mut all = Vec::new();
    walk(&root(), &mut all);
    // `.ci/run` and `scripts/*` have no extension.
    let is_script = |p: &Path| {
        p.parent()
            .and_then(|d| d.file_name())
            .is_some_and(|d| d == ".ci" || d == "scripts")
    };
    all.retain(|p| {
        p.extension()
            .is_some_and(|x| ext.contains(&x.to_str().unwrap_or("")))
            || is_script(p)
    });
    all
}

/// The targets of `[text](target)` links in `md`, without `#fragment`.
fn links(md: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = md;
    while let Some(i) = rest.find("](") {
        rest = &rest[i + 2..];
        let Some(end) = rest.find(')') else { break };
        let target = rest[..end].split('#').next().unwrap().trim();
        if !target.is_empty() && !target.contains("://") && !target.starts_with("mailto:") {
            out.push(target.to_owned());
        }
        rest = &rest[end..];
    }
    out
}

#[test]
fn every_relative_markdown_link_resolves_inside_the_repository() {
    let root = root().canonicalize().unwrap();
    let mut broken = Vec::new();
    let mds = files_with(&["md"]);
    assert!(mds.len() > 5, "found only {} Markdown files", mds.len());
    for md in mds {
        let text = std::fs::read_to_string(&md).unwrap();
        for target in links(&text) {
            let path = md.parent().unwrap().join(&target);
            match path.canonicalize() {
                Ok(p) if p.starts_with(&root) => {}
                _ => broken.push(format!("{}: {target}", md.display())),
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn nothing_points_beside_the_checkout() {
    // Spelt in two halves so this file does not match itself.
    let needles = [format!("../{}", "shared"), format!("HGX_{}_DIR", "SHARED")];
    let mut hits = Vec::new();
    for file in files_with(TEXT) {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        for needle in &needles {
            if text.contains(needle.as_str()) {
                hits.push(format!("{}: {needle}", file.display()));
            }
        }
    }
    assert!(hits.is_empty(), "{}", hits.join("\n"));
}

#[test]
fn the_vectors_are_in_the_repository() {
    let dir = hypergolix::testdata::vectors_dir();
    for rel in [
        "README.md",
        "fixture_identities.json",
        "keys_hgx_save_a.json",
        "generated_ref_v16/manifest.json",
        "hgx_save_a",
        "generated_ref_v16/cs0",
        "generated_ref_v16/cs1",
    ] {
        assert!(
            dir.join(rel).exists(),
            "missing {}",
            dir.join(rel).display()
        );
    }
}
