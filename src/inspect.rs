//! `hgxd inspect`: decode and verify serialized Golix objects on disk, without any keys.
//!
//! Owns: collecting the inputs (files, or folders of `.ghid` files read non-recursively, in
//! name order), reading them, and reporting for every object what it is (kind, version,
//! suite, ghid, author / binder / debinder / recipient, targets, size) and a verdict made of
//! independent checks: the file name matches the ghid (GOBD files are named by their frame
//! ghid), the address recomputes, the input ends exactly at the end of the object (EOF), a
//! first frame's dynamic address recomputes, and the signature verifies against the signer's
//! GIDC when that GIDC is among the inputs ("signer unknown" is not a failure). GARQ MACs need
//! the recipient's keys, so they are reported as not checkable.
//!
//! Calls: [`crate::golix`] only. Unlike `golix` it does file I/O; it never writes anything but
//! its report. The `hgxd inspect` subcommand is [`main`]; [`run`] is the same without the
//! process concerns (exit codes, stderr), for tests and other tools.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde::Serialize;

use crate::golix::{DecodeError, Ghid, Object, Policy, SecondParty};

/// The file extension of a serialized object (`<base64url ghid>.ghid`).
pub const EXTENSION: &str = "ghid";

/// Why an inspection could not run at all (as opposed to an object failing its checks).
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// Nothing to inspect: no paths given, or no `.ghid` files in the folders given.
    #[error("{0}")]
    Usage(String),
    /// A path given (or a file in a folder given) could not be read.
    #[error("cannot read {path}: {source}")]
    Unreadable {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The report could not be written.
    #[error("cannot write the report: {0}")]
    Output(#[source] io::Error),
}

/// Outcome of one check.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Checked and correct.
    Ok,
    /// Checked and wrong: the object fails.
    Fail,
    /// Not checked (not applicable, or not checkable without more inputs or keys).
    Skipped,
}

/// One check: its status and, unless it passed plainly, why.
#[derive(Clone, PartialEq, Eq, Debug, Serialize)]
pub struct Check {
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Check {
    fn ok() -> Check {
        Check {
            status: Status::Ok,
            detail: None,
        }
    }

    fn ok_because(detail: impl Into<String>) -> Check {
        Check {
            status: Status::Ok,
            detail: Some(detail.into()),
        }
    }

    fn fail(detail: impl Into<String>) -> Check {
        Check {
            status: Status::Fail,
            detail: Some(detail.into()),
        }
    }

    fn skipped(detail: impl Into<String>) -> Check {
        Check {
            status: Status::Skipped,
            detail: Some(detail.into()),
        }
    }

    fn text(&self) -> String {
        let status = match self.status {
            Status::Ok => "ok",
            Status::Fail => "FAIL",
            Status::Skipped => "skipped",
        };
        match &self.detail {
            Some(d) => format!("{status} ({d})"),
            None => status.to_string(),
        }
    }
}

/// Every check run on one input, in the order they are reported.
#[derive(Clone, PartialEq, Eq, Debug, Serialize)]
pub struct Checks {
    /// The bytes parse as a Golix object (ignoring trailing bytes, which `eof` reports).
    pub decode: Check,
    /// The file is named `<ghid>.ghid` after the object's ghid (the frame ghid for a GOBD).
    pub name: Check,
    /// The stored address equals the hash of the content.
    pub address: Check,
    /// The object ends exactly at the end of the file.
    pub eof: Check,
    /// The dynamic address of a first GOBD frame recomputes.
    pub dynamic: Check,
    /// The identity's RSA moduli are usable (GIDC only).
    pub keys: Check,
    /// The signature verifies against the signer's GIDC (GARQ: the MAC, not checkable).
    pub signature: Check,
}

impl Checks {
    fn all(&self) -> [(&'static str, &Check); 7] {
        [
            ("decode", &self.decode),
            ("name", &self.name),
            ("address", &self.address),
            ("eof", &self.eof),
            ("dynamic", &self.dynamic),
            ("keys", &self.keys),
            ("signature", &self.signature),
        ]
    }
}

/// What inspecting one input found. Serialized as one JSON line by `--json`.
#[derive(Clone, PartialEq, Eq, Debug, Serialize)]
pub struct Record {
    pub path: String,
    /// File size in bytes.
    pub size: usize,
    /// True when no check failed.
    pub ok: bool,
    /// `check: reason` for every failed check.
    pub failures: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suite: Option<u8>,
    /// The stored address (for a GOBD, the frame ghid).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ghid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub binder: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub debinder: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recipient: Option<String>,
    /// GOBD v16 frame counter.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counter: Option<u64>,
    /// GOBD v16 target vector, newest first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub targets: Option<Vec<String>>,
    /// GOBD v15 history of previous frame ghids, newest first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<Vec<String>>,
    /// The single target of a GOBS, GDXX or GOBD v15.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// A GOBD's dynamic ghid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dynamic: Option<String>,
    /// GEOC ciphertext length.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload_len: Option<usize>,
    pub checks: Checks,
}

/// The totals of one inspection.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct Summary {
    pub total: usize,
    /// `(path, reasons)` for every input that failed.
    pub failed: Vec<(String, Vec<String>)>,
}

impl Summary {
    /// True when every input verified.
    pub fn ok(&self) -> bool {
        self.failed.is_empty()
    }
}

/// Inspects `paths` and writes the report to `out`: a text block per object, or with `json`
/// one JSON object per line. `Ok` whatever the objects' verdicts (see [`Summary::ok`]);
/// `Err` only when the inspection could not run.
pub fn run(paths: &[PathBuf], json: bool, out: &mut impl Write) -> Result<Summary, InspectError> {
    let files = collect(paths)?;
    let mut inputs = Vec::with_capacity(files.len());
    for path in files {
        let bytes = std::fs::read(&path).map_err(|source| InspectError::Unreadable {
            path: path.clone(),
            source,
        })?;
        inputs.push((path, bytes));
    }
    let records = inspect(&inputs);
    let mut summary = Summary {
        total: records.len(),
        failed: Vec::new(),
    };
    for r in &records {
        if json {
            let line = serde_json::to_string(r).map_err(|e| InspectError::Output(e.into()))?;
            writeln!(out, "{line}").map_err(InspectError::Output)?;
        } else {
            out.write_all(render(r).as_bytes())
                .map_err(InspectError::Output)?;
        }
        if !r.ok {
            summary.failed.push((r.path.clone(), r.failures.clone()));
        }
    }
    if !json {
        writeln!(
            out,
            "{} object(s): {} ok, {} failed",
            summary.total,
            summary.total - summary.failed.len(),
            summary.failed.len()
        )
        .map_err(InspectError::Output)?;
    }
    out.flush().map_err(InspectError::Output)?;
    Ok(summary)
}

/// `hgxd inspect`: the report on stdout, failures and errors on stderr. Exit code 0 when
/// every input verifies, 1 when any fails, 2 when the inspection could not run.
pub fn main(paths: &[PathBuf], json: bool) -> ExitCode {
    let stdout = io::stdout();
    let result = run(paths, json, &mut stdout.lock());
    match result {
        Ok(summary) if summary.ok() => ExitCode::SUCCESS,
        Ok(summary) => {
            eprintln!(
                "hgxd inspect: {} of {} object(s) failed:",
                summary.failed.len(),
                summary.total
            );
            for (path, reasons) in &summary.failed {
                eprintln!("  {path}: {}", reasons.join("; "));
            }
            ExitCode::from(1)
        }
        // The reader went away (`hgxd inspect DIR | head`): nothing left to say.
        Err(InspectError::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::from(2),
        Err(e) => {
            eprintln!("hgxd inspect: {e}");
            ExitCode::from(2)
        }
    }
}

/// The files to read: each path given, or for a folder its `.ghid` files (not recursive) in
/// name order. A file given twice is inspected once.
pub fn collect(paths: &[PathBuf]) -> Result<Vec<PathBuf>, InspectError> {
    if paths.is_empty() {
        return Err(InspectError::Usage("no paths given".into()));
    }
    let mut files = Vec::new();
    let mut seen = BTreeSet::new();
    for path in paths {
        let unreadable = |source| InspectError::Unreadable {
            path: path.clone(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(unreadable)?;
        if meta.is_dir() {
            let mut found = Vec::new();
            for entry in std::fs::read_dir(path).map_err(unreadable)? {
                let entry = entry.map_err(unreadable)?;
                let p = entry.path();
                let is_ghid = p.extension().is_some_and(|e| e == EXTENSION);
                if is_ghid && entry.file_type().map_err(unreadable)?.is_file() {
                    found.push(p);
                }
            }
            if found.is_empty() {
                return Err(InspectError::Usage(format!(
                    "no .{EXTENSION} files in {}",
                    path.display()
                )));
            }
            found.sort();
            for p in found {
                if seen.insert(p.clone()) {
                    files.push(p);
                }
            }
        } else if seen.insert(path.clone()) {
            files.push(path.clone());
        }
    }
    Ok(files)
}

/// Inspects already-read inputs. Signers are looked up among the GIDCs of the same inputs.
pub fn inspect(inputs: &[(PathBuf, Vec<u8>)]) -> Vec<Record> {
    let decoded: Vec<Decoded> = inputs.iter().map(|(_, b)| decode(b)).collect();
    let mut identities: HashMap<Ghid, Result<SecondParty, String>> = HashMap::new();
    for d in &decoded {
        if let Some(Object::Gidc(g)) = &d.object {
            let party = SecondParty::from_gidc(g.clone()).map_err(|e| e.to_string());
            // A second copy of one identity may fail where the first passed; keep a pass.
            let keep_old = matches!(identities.get(&g.ghid), Some(Ok(_)));
            if !keep_old {
                identities.insert(g.ghid, party);
            }
        }
    }
    inputs
        .iter()
        .zip(decoded)
        .map(|((path, bytes), d)| record(path, bytes.len(), d, &identities))
        .collect()
}

/// An input decoded as far as it goes.
struct Decoded {
    /// The object, also when trailing bytes follow it.
    object: Option<Object>,
    /// The decode error for the whole input, if any.
    error: Option<DecodeError>,
}

fn decode(bytes: &[u8]) -> Decoded {
    match Object::decode(bytes, Policy::STRICT) {
        Ok(o) => Decoded {
            object: Some(o),
            error: None,
        },
        Err(e @ DecodeError::TrailingBytes(n)) => {
            // The object itself may be sound: decode it without the junk to describe it.
            let object = bytes
                .len()
                .checked_sub(n)
                .and_then(|end| Object::decode(&bytes[..end], Policy::STRICT).ok());
            Decoded {
                object,
                error: Some(e),
            }
        }
        Err(e) => Decoded {
            object: None,
            error: Some(e),
        },
    }
}

fn name_check(path: &Path, ghid: Ghid) -> Check {
    if !matches!(path.extension(), Some(e) if e == EXTENSION) {
        return Check::skipped(format!("not a .{EXTENSION} file name"));
    }
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
    match stem.parse::<Ghid>() {
        Ok(named) if named == ghid => Check::ok(),
        Ok(named) => Check::fail(format!(
            "named {} but the object is {}",
            named.as_str(),
            ghid.as_str()
        )),
        Err(e) => Check::fail(format!("file name is not a ghid: {e}")),
    }
}

fn ghids(v: &[Ghid]) -> Vec<String> {
    v.iter().map(Ghid::as_str).collect()
}

fn record(
    path: &Path,
    size: usize,
    d: Decoded,
    identities: &HashMap<Ghid, Result<SecondParty, String>>,
) -> Record {
    let not_decoded = || Check::skipped("not decoded");
    let mut r = Record {
        path: path.display().to_string(),
        size,
        ok: true,
        failures: Vec::new(),
        kind: None,
        version: None,
        suite: None,
        ghid: None,
        author: None,
        binder: None,
        debinder: None,
        recipient: None,
        counter: None,
        targets: None,
        history: None,
        target: None,
        dynamic: None,
        payload_len: None,
        checks: Checks {
            decode: Check::ok(),
            name: not_decoded(),
            address: not_decoded(),
            eof: Check::ok(),
            dynamic: Check::skipped("not a dynamic binding"),
            keys: Check::skipped("not an identity"),
            signature: not_decoded(),
        },
    };
    match d.error {
        Some(DecodeError::TrailingBytes(n)) => {
            r.checks.eof = Check::fail(format!("{n} trailing byte(s) after the end of the object"));
            if d.object.is_none() {
                r.checks.decode = Check::fail("does not decode without its trailing bytes");
            }
        }
        Some(e) => {
            r.checks.decode = Check::fail(e.to_string());
            r.checks.eof = not_decoded();
            r.checks.dynamic = not_decoded();
            r.checks.keys = not_decoded();
        }
        None => {}
    }
    if let Some(o) = &d.object {
        describe(&mut r, o);
        check(&mut r, path, o, identities);
    }
    r.failures = r
        .checks
        .all()
        .iter()
        .filter(|(_, c)| c.status == Status::Fail)
        .map(|(name, c)| format!("{name}: {}", c.detail.as_deref().unwrap_or("failed")))
        .collect();
    r.ok = r.failures.is_empty();
    r
}

fn describe(r: &mut Record, o: &Object) {
    r.kind = Some(o.kind().as_str());
    r.version = Some(o.version());
    r.suite = Some(o.suite().0);
    r.ghid = Some(o.ghid().as_str());
    match o {
        Object::Gidc(_) => {}
        Object::Geoc(g) => {
            r.author = Some(g.author.as_str());
            r.payload_len = Some(g.payload.len());
        }
        Object::Gobs(b) => {
            r.binder = Some(b.binder.as_str());
            r.target = Some(b.target.as_str());
        }
        Object::Gobd(f) => {
            r.binder = Some(f.binder.as_str());
            r.counter = Some(f.counter);
            r.targets = Some(ghids(&f.targets));
            r.dynamic = Some(f.dynamic.as_str());
        }
        Object::GobdV15(f) => {
            r.binder = Some(f.binder.as_str());
            r.history = Some(ghids(&f.history));
            r.target = Some(f.target.as_str());
            r.dynamic = Some(f.dynamic.as_str());
        }
        Object::Gdxx(x) => {
            r.debinder = Some(x.debinder.as_str());
            r.target = Some(x.target.as_str());
        }
        Object::Garq(q) => r.recipient = Some(q.recipient.as_str()),
    }
}

fn check(
    r: &mut Record,
    path: &Path,
    o: &Object,
    identities: &HashMap<Ghid, Result<SecondParty, String>>,
) {
    r.checks.name = name_check(path, o.ghid());
    let computed = o.computed_address();
    r.checks.address = if computed == o.ghid() {
        Check::ok()
    } else {
        Check::fail(format!("content hashes to {}", computed.as_str()))
    };
    let first_frame = match o {
        Object::Gobd(f) if f.counter == 0 => Some((f.computed_dynamic(), f.dynamic)),
        Object::Gobd(f) => {
            r.checks.dynamic = Check::skipped(format!(
                "counter {}: only a first frame's dynamic address is checkable",
                f.counter
            ));
            None
        }
        Object::GobdV15(f) if f.history.is_empty() => Some((f.computed_dynamic(), f.dynamic)),
        Object::GobdV15(f) => {
            r.checks.dynamic = Check::skipped(format!(
                "{} earlier frame(s): only a first frame's dynamic address is checkable",
                f.history.len()
            ));
            None
        }
        _ => None,
    };
    if let Some((computed, stored)) = first_frame {
        r.checks.dynamic = if computed == stored {
            Check::ok_because("first frame")
        } else {
            Check::fail(format!(
                "first frame hashes to dynamic {}",
                computed.as_str()
            ))
        };
    }
    if let Object::Gidc(g) = o {
        r.checks.keys = match identities.get(&g.ghid) {
            Some(Ok(_)) => Check::ok(),
            Some(Err(e)) => Check::fail(e.clone()),
            None => Check::fail("identity not loaded"),
        };
    }
    r.checks.signature = match (o, o.signer()) {
        (Object::Gidc(_), _) => Check::skipped("GIDCs are unsigned"),
        (Object::Garq(_), _) => Check::skipped("MAC not checkable without keys"),
        (_, None) => Check::skipped("unsigned"),
        (_, Some(signer)) => match identities.get(&signer) {
            None => Check::skipped(format!(
                "signer unknown: {} is not among the inputs",
                signer.as_str()
            )),
            Some(Err(e)) => Check::fail(format!("signer's GIDC is unusable: {e}")),
            Some(Ok(party)) => match o.verify_signature(Some(party)) {
                Ok(()) => Check::ok_because(format!("signer {}", signer.as_str())),
                Err(e) => Check::fail(format!("{e} (signer {})", signer.as_str())),
            },
        },
    };
}

/// The text form of one record.
pub fn render(r: &Record) -> String {
    let mut s = String::new();
    // Writing to a String cannot fail.
    let mut line = |label: &str, value: &str| {
        let l = format!("  {label:<11} {value}");
        let _ = writeln!(s, "{}", l.trim_end());
    };
    let head = match (r.kind, r.version, r.suite) {
        (Some(k), Some(v), Some(c)) => format!("{k} v{v}, suite {c}, {} bytes", r.size),
        _ => format!("undecodable, {} bytes", r.size),
    };
    line("object", &head);
    let singles = [
        ("ghid", &r.ghid),
        ("author", &r.author),
        ("binder", &r.binder),
        ("debinder", &r.debinder),
        ("recipient", &r.recipient),
        ("target", &r.target),
        ("dynamic", &r.dynamic),
    ];
    for (label, value) in singles {
        if let Some(v) = value {
            line(label, v);
        }
    }
    if let Some(n) = r.payload_len {
        line("payload", &format!("{n} bytes (ciphertext)"));
    }
    if let Some(c) = r.counter {
        line("counter", &c.to_string());
    }
    for (label, list) in [("targets", &r.targets), ("history", &r.history)] {
        if let Some(list) = list {
            if list.is_empty() {
                line(label, "(none)");
            }
            for (i, g) in list.iter().enumerate() {
                line(if i == 0 { label } else { "" }, &format!("[{i}] {g}"));
            }
        }
    }
    line("checks", "");
    for (name, c) in r.checks.all() {
        line(&format!("  {name}"), &c.text());
    }
    let verdict = if r.ok {
        "OK".to_string()
    } else {
        format!("FAIL: {}", r.failures.join("; "))
    };
    line("verdict", &verdict);
    format!("{}\n{s}\n", r.path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vectors() -> PathBuf {
        crate::testdata::vectors_dir().join("hgx_save_a")
    }

    #[test]
    fn empty_and_missing_paths_are_usage_errors() {
        assert!(matches!(collect(&[]), Err(InspectError::Usage(_))));
        let missing = PathBuf::from("/nonexistent/hgx/inspect/x.ghid");
        assert!(matches!(
            collect(&[missing]),
            Err(InspectError::Unreadable { .. })
        ));
    }

    #[test]
    fn garbage_reports_a_decode_failure_not_a_panic() {
        let inputs = vec![
            (PathBuf::from("a.ghid"), b"GEOC".to_vec()),
            (PathBuf::from("b.bin"), Vec::new()),
            (PathBuf::from("c.ghid"), b"NOPE\0\0\0\x01\x01".to_vec()),
        ];
        for r in inspect(&inputs) {
            assert!(!r.ok);
            assert_eq!(r.checks.decode.status, Status::Fail, "{r:?}");
            assert!(r.kind.is_none());
        }
    }

    #[test]
    fn vectors_verify_and_signer_unknown_is_not_a_failure() {
        let dir = vectors();
        let mut out = Vec::new();
        let summary = run(std::slice::from_ref(&dir), false, &mut out).unwrap();
        assert_eq!(summary.total, 36);
        assert!(summary.ok(), "{:?}", summary.failed);

        // Without the GIDCs every signed object is "signer unknown" and still passes.
        let inputs: Vec<_> = collect(&[dir])
            .unwrap()
            .into_iter()
            .map(|p| {
                let b = std::fs::read(&p).unwrap();
                (p, b)
            })
            .filter(|(_, b)| !b.starts_with(b"GIDC"))
            .collect();
        let records = inspect(&inputs);
        assert_eq!(records.len(), 34);
        for r in records {
            assert!(r.ok, "{r:?}");
            if r.kind != Some("garq") {
                assert_eq!(r.checks.signature.status, Status::Skipped);
                assert!(r
                    .checks
                    .signature
                    .detail
                    .as_deref()
                    .unwrap()
                    .starts_with("signer unknown"));
            }
        }
    }
}
