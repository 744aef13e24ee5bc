//! `hgxd inspect` end to end: the built binary over the shared vectors and over damaged
//! copies of them, checking exit codes, the JSON lines and that failures are named.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The author of every signed object in `hgx_save_a`.
const AUTHOR: &str =
    "AQSiaSltqQ4nCpDToCh6rxptBBQpWLWv3Q4b7SvrQsIjZ5JE5RK-CvybzP-HcumUy_LY1nrVydGHncGtsX4hJ9s=";
/// A GEOC of `hgx_save_a` signed by `AUTHOR`.
const GEOC: &str =
    "AQ4qDaylTmDvJJ9FSOndfiwoCjtcewzZN4WeGoKiVCAWgUTFdj7zy5awRviG1ZfrTGr5h_ZNkqeGavbEeg7Ml-I=";

fn save_a() -> PathBuf {
    common::vectors_dir().join("hgx_save_a")
}

fn vector(name: &str) -> Vec<u8> {
    hypergolix::testdata::vector_bytes(&format!("hgx_save_a/{name}.ghid"))
}

fn hgxd(args: &[&Path]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hgxd"))
        .args(args)
        .output()
        .expect("run hgxd")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn every_vector_verifies_and_json_lines_parse() {
    let dir = save_a();
    let out = hgxd(&[Path::new("inspect"), Path::new("--json"), &dir]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let mut kinds = BTreeMap::new();
    let mut signed_ok = 0;
    for line in stdout.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("one JSON object per line");
        assert_eq!(v["ok"], true, "{line}");
        assert_eq!(v["checks"]["name"]["status"], "ok", "{line}");
        assert_eq!(v["checks"]["address"]["status"], "ok", "{line}");
        assert_eq!(v["checks"]["eof"]["status"], "ok", "{line}");
        let kind = v["kind"].as_str().expect("kind").to_string();
        let version = v["version"].as_u64().expect("version");
        if matches!(kind.as_str(), "geoc" | "gobd" | "gdxx" | "gobs") {
            assert_eq!(v["checks"]["signature"]["status"], "ok", "{line}");
            signed_ok += 1;
        }
        if kind == "garq" {
            assert_eq!(
                v["checks"]["signature"]["detail"],
                "MAC not checkable without keys"
            );
        }
        *kinds.entry(format!("{kind} v{version}")).or_insert(0) += 1;
    }
    assert_eq!(stdout.lines().count(), 36);
    assert_eq!(signed_ok, 32);
    let expected: BTreeMap<String, i32> = [
        ("gidc v2", 2),
        ("geoc v14", 15),
        ("gobd v15", 15),
        ("gdxx v9", 2),
        ("garq v12", 2),
    ]
    .into_iter()
    .map(|(k, n)| (k.to_string(), n))
    .collect();
    assert_eq!(kinds, expected);

    // The text form says the same.
    let out = hgxd(&[Path::new("inspect"), &dir]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).contains("36 object(s): 36 ok, 0 failed"));
}

#[test]
fn a_flipped_signature_bit_fails_and_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let mut geoc = vector(GEOC);
    let last = geoc.len() - 1;
    geoc[last] ^= 0x01; // the signature is the last 512 bytes
    std::fs::write(tmp.path().join(format!("{GEOC}.ghid")), &geoc).unwrap();
    // Without the signer's GIDC the signature cannot be checked, which is not a failure.
    let out = hgxd(&[Path::new("inspect"), tmp.path()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("signer unknown"));

    std::fs::write(tmp.path().join(format!("{AUTHOR}.ghid")), vector(AUTHOR)).unwrap();
    let out = hgxd(&[Path::new("inspect"), tmp.path()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let stderr = text(&out.stderr);
    assert!(stderr.contains(GEOC), "{stderr}");
    assert!(stderr.contains("signature does not verify"), "{stderr}");
    assert!(stderr.contains("1 of 2 object(s) failed"), "{stderr}");
    assert!(text(&out.stdout).contains("1 failed"));
}

#[test]
fn trailing_junk_fails_the_eof_check() {
    let tmp = tempfile::tempdir().unwrap();
    let mut geoc = vector(GEOC);
    geoc.extend_from_slice(b"junk!!!");
    let path = tmp.path().join(format!("{GEOC}.ghid"));
    std::fs::write(&path, &geoc).unwrap();
    let out = hgxd(&[Path::new("inspect"), Path::new("--json"), &path]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["kind"], "geoc", "the object is still described");
    assert_eq!(v["checks"]["eof"]["status"], "fail");
    assert_eq!(v["checks"]["address"]["status"], "ok");
    assert!(text(&out.stderr).contains("7 trailing byte(s)"));
}

#[test]
fn usage_errors_exit_2() {
    // (Bare `hgxd` runs the daemon, so "no args" means `hgxd inspect` with no paths.)
    assert_eq!(hgxd(&[Path::new("inspect")]).status.code(), Some(2));
    assert_eq!(
        hgxd(&[Path::new("inspect"), Path::new("--json")])
            .status
            .code(),
        Some(2)
    );
    let missing = hgxd(&[Path::new("inspect"), Path::new("/nonexistent/hgx/x.ghid")]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(text(&missing.stderr).contains("/nonexistent/hgx/x.ghid"));
    let empty = tempfile::tempdir().unwrap();
    assert_eq!(
        hgxd(&[Path::new("inspect"), empty.path()]).status.code(),
        Some(2)
    );
}
