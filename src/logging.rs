//! # Logging
//!
//! slog set-up shared by both binaries: the verbosity levels of the reference
//! (`error`, `warning`, `info`, `debug`, `shouty`, `extreme`), a terminal drain on stderr, and
//! log files in `logdir`: a new one per start (`<program>-<unix seconds>-<pid>-0000.log`)
//! and a new one whenever the current one has reached [`FileLimits::max_bytes`]
//! (`…-0001.log`, …, between two records, never inside one), keeping only the newest
//! [`FileLimits::keep`] files of the program. Both drains are asynchronous; keep the
//! returned [`LogGuard`] alive until exit so the last lines are flushed.
//!
//! Log directories it creates are 0700 and log files 0600 (they name the user's objects).
//!
//! Owns: level mapping, drains, file naming and pruning. Calls: nothing of ours.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use slog::{o, Drain, Level, Logger};

/// How much to log. `shouty` and `extreme` both map to slog's `Trace` (the most detailed
/// level slog has); `extreme` additionally asks callers for per-message dumps, see
/// [`Verbosity::is_extreme`].
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Verbosity {
    Error,
    #[serde(alias = "warn")]
    Warning,
    #[default]
    Info,
    Debug,
    Shouty,
    Extreme,
}

impl Verbosity {
    /// The slog level at and above which records are kept.
    pub fn level(self) -> Level {
        match self {
            Verbosity::Error => Level::Error,
            Verbosity::Warning => Level::Warning,
            Verbosity::Info => Level::Info,
            Verbosity::Debug => Level::Debug,
            Verbosity::Shouty | Verbosity::Extreme => Level::Trace,
        }
    }

    /// Whether callers should also log whole messages (wire dumps).
    pub fn is_extreme(self) -> bool {
        self == Verbosity::Extreme
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Verbosity::Error => "error",
            Verbosity::Warning => "warning",
            Verbosity::Info => "info",
            Verbosity::Debug => "debug",
            Verbosity::Shouty => "shouty",
            Verbosity::Extreme => "extreme",
        }
    }
}

impl fmt::Display for Verbosity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Verbosity {
    type Err = String;

    fn from_str(s: &str) -> Result<Verbosity, String> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "error" => Verbosity::Error,
            "warning" | "warn" => Verbosity::Warning,
            "info" => Verbosity::Info,
            "debug" => Verbosity::Debug,
            "shouty" => Verbosity::Shouty,
            "extreme" => Verbosity::Extreme,
            other => {
                return Err(format!(
                    "unknown verbosity {other:?} (error|warning|info|debug|shouty|extreme)"
                ))
            }
        })
    }
}

/// Keeps the asynchronous drains running; dropping it flushes them.
pub struct LogGuard {
    _guards: Vec<slog_async::AsyncGuard>,
    /// The file this run logs to, if any.
    pub file: Option<PathBuf>,
}

/// Creates `dir` and its missing parents with mode 0700 (on unix): the directories a
/// program makes for itself (home, logs) are its user's alone. Existing directories are
/// left as they are.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut b = fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir)
}

/// A logger that drops everything (tests, libraries used without logging).
pub fn discard() -> Logger {
    Logger::root(slog::Discard, o!())
}

/// How many log files a program keeps, and how large each may grow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileLimits {
    /// Files kept in `logdir` (at least 1).
    pub keep: usize,
    /// Size at which the current file is closed and the next one begun (at least 1).
    pub max_bytes: u64,
}

/// Terminal (stderr) plus, with `logdir`, log files rotated per start and by size; files
/// beyond the newest `limits.keep` are deleted.
pub fn init(
    program: &str,
    verbosity: Verbosity,
    logdir: Option<&Path>,
    limits: FileLimits,
) -> io::Result<(Logger, LogGuard)> {
    let level = verbosity.level();
    // Filtered here, in the logging thread, as well as in each drain: a record below the
    // level must not cross to the drains' threads (trace records are compiled in; sending
    // each one woke both drain threads per request, measured for issue 17).
    let term = slog_term::TermDecorator::new().stderr().build();
    let term = slog_term::FullFormat::new(term).build().fuse();
    let (term, g1) = slog_async::Async::new(term.filter_level(level).fuse())
        .chan_size(4096)
        .overflow_strategy(slog_async::OverflowStrategy::DropAndReport)
        .build_with_guard();
    let mut guards = vec![g1];
    let (logger, file) = match logdir {
        Some(dir) => {
            let files = RotatingFile::open(dir, program, limits)?;
            let path = files.current_path();
            // PlainSyncDecorator writes each record whole, then flushes: the rotation
            // (in `flush`) falls between records.
            let dec = slog_term::PlainSyncDecorator::new(files);
            let drain = slog_term::FullFormat::new(dec).build().fuse();
            let (drain, g2) = slog_async::Async::new(drain.filter_level(level).fuse())
                .chan_size(4096)
                .build_with_guard();
            guards.push(g2);
            let both = slog::Duplicate::new(term, drain).filter_level(level).fuse();
            (
                Logger::root(both, o!("program" => program.to_owned())),
                Some(path),
            )
        }
        None => (
            Logger::root(
                term.filter_level(level).fuse(),
                o!("program" => program.to_owned()),
            ),
            None,
        ),
    };
    Ok((
        logger,
        LogGuard {
            _guards: guards,
            file,
        },
    ))
}

/// The log files of one run: `<program>-<start secs>-<pid>-<n>.log`, the next `n` begun at
/// the first flush after the current file reached `max_bytes`.
struct RotatingFile {
    dir: PathBuf,
    program: String,
    /// `<program>-<start secs>-<pid>`.
    stem: String,
    limits: FileLimits,
    seq: u32,
    file: File,
    written: u64,
}

impl RotatingFile {
    fn open(dir: &Path, program: &str, limits: FileLimits) -> io::Result<RotatingFile> {
        create_private_dir(dir)?;
        let stem = log_file_stem(program);
        let path = dir.join(format!("{stem}-0000.log"));
        let file = open_log(&path)?;
        prune(dir, program, limits.keep.max(1))?;
        Ok(RotatingFile {
            dir: dir.to_path_buf(),
            program: program.to_owned(),
            stem,
            limits,
            seq: 0,
            file,
            written: 0,
        })
    }

    fn current_path(&self) -> PathBuf {
        self.dir.join(format!("{}-{:04}.log", self.stem, self.seq))
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.file.flush()?;
        self.seq += 1;
        self.file = open_log(&self.current_path())?;
        self.written = 0;
        prune(&self.dir, &self.program, self.limits.keep.max(1))
    }
}

impl Write for RotatingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()?;
        if self.written >= self.limits.max_bytes.max(1) {
            self.rotate()?;
        }
        Ok(())
    }
}

/// Opens a log file for appending; mode 0600 (logs name the user's objects and peers).
fn open_log(path: &Path) -> io::Result<File> {
    let mut opts = OpenOptions::new();
    opts.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)
}

fn log_file_stem(program: &str) -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // Zero-padded so that names sort by start time, then by sequence number.
    format!("{program}-{secs:012}-{:07}", std::process::id())
}

/// Deletes all but the newest `keep` log files of `program` in `dir`.
pub fn prune(dir: &Path, program: &str, keep: usize) -> io::Result<()> {
    let prefix = format!("{program}-");
    let mut files: Vec<PathBuf> = fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n.starts_with(&prefix)
                    && n.ends_with(".log")
                    && n[prefix.len()..].starts_with(|c: char| c.is_ascii_digit())
            })
        })
        .collect();
    files.sort();
    let excess = files.len().saturating_sub(keep);
    for old in &files[..excess] {
        let _ = fs::remove_file(old);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_and_names() {
        assert_eq!(Verbosity::Shouty.level(), Level::Trace);
        assert_eq!(Verbosity::Warning.level(), Level::Warning);
        assert_eq!("WARN".parse::<Verbosity>(), Ok(Verbosity::Warning));
        assert!("loud".parse::<Verbosity>().is_err());
        assert_eq!(
            serde_json::from_str::<Verbosity>("\"extreme\"").unwrap(),
            Verbosity::Extreme
        );
    }

    #[test]
    fn a_file_per_start_and_pruning() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..5 {
            fs::write(dir.path().join(format!("prog-{i:012}-0000001.log")), b"x").unwrap();
        }
        fs::write(dir.path().join("prog-notes.txt"), b"x").unwrap();
        fs::write(dir.path().join("other-000000000001-0000001.log"), b"x").unwrap();
        let limits = FileLimits {
            keep: 3,
            max_bytes: 1 << 20,
        };
        let (log, guard) = init("prog", Verbosity::Debug, Some(dir.path()), limits).unwrap();
        slog::info!(log, "hello"; "k" => 1);
        let file = guard.file.clone().unwrap();
        drop(log);
        drop(guard);
        let text = fs::read_to_string(&file).unwrap();
        assert!(text.contains("hello"), "{text}");
        let mut names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        let ours: Vec<&String> = names.iter().filter(|n| n.starts_with("prog-0")).collect();
        assert_eq!(ours.len(), 3, "{names:?}");
        assert!(names.contains(&"prog-notes.txt".to_owned()));
        assert!(names.contains(&"other-000000000001-0000001.log".to_owned()));
    }

    #[test]
    fn files_rotate_by_size_between_records_and_are_capped() {
        let dir = tempfile::tempdir().unwrap();
        let limits = FileLimits {
            keep: 3,
            max_bytes: 2000,
        };
        let (log, guard) = init("big", Verbosity::Info, Some(dir.path()), limits).unwrap();
        let first = guard.file.clone().unwrap();
        let line = "x".repeat(300);
        for i in 0..200 {
            slog::info!(log, "record {i:04} {line} end");
        }
        drop(log);
        drop(guard);
        let mut files: Vec<PathBuf> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        assert_eq!(files.len(), 3, "capped at keep: {files:?}");
        assert!(!files.contains(&first), "the first file was rotated away");
        let mut last_record = None;
        for f in &files {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(fs::metadata(f).unwrap().permissions().mode() & 0o777, 0o600);
            let text = fs::read_to_string(f).unwrap();
            // Each file stops shortly after max_bytes (the record that crossed it).
            assert!(
                text.len() < 2000 + 600,
                "{} is {} bytes",
                f.display(),
                text.len()
            );
            for l in text.lines() {
                assert!(
                    l.ends_with(" end, program: big"),
                    "a record split across files: {l:?}"
                );
                let n: u32 = l.split("record ").nth(1).unwrap()[..4].parse().unwrap();
                if let Some(prev) = last_record {
                    assert_eq!(n, prev + 1, "records in order across files");
                }
                last_record = Some(n);
            }
        }
        assert_eq!(
            last_record,
            Some(199),
            "the newest file holds the last record"
        );
    }
}
