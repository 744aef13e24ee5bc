//! `hgxd config`: show and change the daemon's `hypergolix.yml` from the command line (the
//! counterpart of the original `hypergolix config`). Changes go through
//! [`crate::config::edit`], so the rest of the file (comments, layout) stays as it is, and are
//! written with [`crate::config::write_private`]. A running daemon reads its file only at
//! start: every change says so, naming the running daemon's pid when there is one.
//!
//! Owns: the command's options, `HOST[:PORT]` parsing, its output. Calls: `config`,
//! `process` (is a daemon running?).

use std::io::Write;
use std::path::{Path, PathBuf};

use super::{load_or_create, RunError};
use crate::config::edit::Value;
use crate::config::{self, Config, Remote, DEFAULT_SERVER_PORT};
use crate::logging::Verbosity;

/// What `hgxd config` was asked to do. Changes are applied in the order of the fields;
/// `list_remotes` and `whoami` print the result.
#[derive(Clone, Debug, Default)]
pub struct ConfigArgs {
    /// `HOST[:PORT]` (`[v6]:PORT` for an IPv6 address with a port).
    pub add_remote: Option<String>,
    pub tls: bool,
    pub ca_file: Option<PathBuf>,
    pub remove_remote: Option<String>,
    pub ipc_port: Option<u16>,
    pub verbosity: Option<Verbosity>,
    pub list_remotes: bool,
    pub whoami: bool,
}

impl ConfigArgs {
    fn changes(&self) -> bool {
        self.add_remote.is_some()
            || self.remove_remote.is_some()
            || self.ipc_port.is_some()
            || self.verbosity.is_some()
    }
}

/// Parses `HOST[:PORT]`: `example.org`, `example.org:443`, `10.0.0.1:7770`, `::1`,
/// `[::1]:7770`. The port defaults to 7770.
pub fn parse_host_port(s: &str) -> Result<(String, u16), RunError> {
    let bad = |why: &str| RunError::Usage(format!("remote {s:?}: {why} (HOST[:PORT])"));
    let port_of = |p: &str| p.parse::<u16>().map_err(|_| bad("not a port number"));
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(|| bad("no closing ]"))?;
        match after {
            "" => (host, DEFAULT_SERVER_PORT),
            _ => (
                host,
                port_of(after.strip_prefix(':').ok_or_else(|| bad("junk after ]"))?)?,
            ),
        }
    } else {
        match s.split_once(':') {
            // More than one colon: an IPv6 address without a port.
            Some((h, p)) if !p.contains(':') => (h, port_of(p)?),
            _ => (s, DEFAULT_SERVER_PORT),
        }
    };
    if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c == '/') {
        return Err(bad("not a host name or address"));
    }
    if port == 0 {
        return Err(bad("port 0"));
    }
    Ok((host.to_owned(), port))
}

fn describe(r: &Remote) -> String {
    let scheme = if r.tls { "wss" } else { "ws" };
    let host = if r.host.contains(':') {
        format!("[{}]", r.host)
    } else {
        r.host.clone()
    };
    match &r.ca_file {
        Some(ca) => format!("{scheme}://{host}:{} (ca_file {})", r.port, ca.display()),
        None => format!("{scheme}://{host}:{}", r.port),
    }
}

/// Runs `hgxd config`: applies the changes to the config file in use (creating the default
/// file first if there is none and something is to change), then prints what was asked.
pub fn run(config: Option<&Path>, args: &ConfigArgs, out: &mut dyn Write) -> Result<(), RunError> {
    let path = match config {
        Some(p) if !p.is_file() => return Err(config::ConfigError::Missing(p.to_path_buf()).into()),
        Some(p) => Some(p.to_path_buf()),
        None if args.changes() => Some(load_or_create(None)?.1),
        None => config::find(),
    };
    let mut said = Vec::new();
    if let (Some(path), true) = (&path, args.changes()) {
        said = apply(path, args)?;
    }
    let print = |out: &mut dyn Write, line: String| {
        // A closed pipe (`hgxd config --list-remotes | head -1`) is not worth a panic.
        let _ = writeln!(out, "{line}");
    };
    for line in &said {
        print(out, line.clone());
    }
    let cfg = Config::load_from(path.as_deref(), false)?;
    if args.list_remotes {
        if cfg.remotes.is_empty() {
            print(out, "no remotes: objects stay on this machine".into());
        }
        for r in &cfg.remotes {
            print(out, describe(r));
        }
    }
    if args.whoami {
        match (&cfg.user.fingerprint, &cfg.user.user_id) {
            (Some(f), Some(u)) => print(out, format!("fingerprint: {f}\nuser_id:     {u}")),
            _ => {
                return Err(RunError::Config(Box::new(config::ConfigError::Invalid(
                    "no account yet: run hgxd once to create one".into(),
                ))))
            }
        }
    }
    if !args.changes() && !args.list_remotes && !args.whoami {
        match &path {
            Some(p) => print(out, format!("config file: {}", p.display())),
            None => print(
                out,
                format!(
                    "no config file yet; hgxd creates {} on first run",
                    config::home_dir().join(config::FILE_NAME).display()
                ),
            ),
        }
    }
    Ok(())
}

/// Applies the changes of `args` to the file at `path`; returns what to tell the user.
fn apply(path: &Path, args: &ConfigArgs) -> Result<Vec<String>, RunError> {
    let mut said = Vec::new();
    // Whether anything was written (adding a remote that is already there writes nothing).
    let mut wrote = false;
    let current = || Config::load_from(Some(path), false);
    if let Some(spec) = &args.remove_remote {
        let (host, port) = parse_host_port(spec)?;
        let mut want = current()?;
        let index = want
            .remotes
            .iter()
            .position(|r| r.host.eq_ignore_ascii_case(&host) && r.port == port)
            .ok_or_else(|| {
                RunError::Usage(format!(
                    "no remote {host}:{port} in {} (see --list-remotes)",
                    path.display()
                ))
            })?;
        let gone = want.remotes.remove(index);
        Config::edit_file(path, &want, |t| t.remove_remote(index))?;
        wrote = true;
        said.push(format!("removed remote {}", describe(&gone)));
    }
    if let Some(spec) = &args.add_remote {
        let (host, port) = parse_host_port(spec)?;
        let ca_file = match &args.ca_file {
            Some(ca) => Some(readable_file(ca)?),
            None => None,
        };
        let mut remote = Remote {
            host,
            port,
            // A private CA is only of use over TLS.
            tls: args.tls || ca_file.is_some(),
            ca_file,
            failover: Vec::new(),
        };
        let mut want = current()?;
        let existing = want
            .remotes
            .iter()
            .position(|r| r.host.eq_ignore_ascii_case(&remote.host) && r.port == remote.port);
        if let Some(i) = existing {
            // Its other front-ends (a persister cluster) stay.
            remote.failover = want.remotes[i].failover.clone();
        }
        match existing {
            Some(i) if want.remotes[i] == remote => {
                said.push(format!("remote {} is already there", describe(&remote)));
            }
            Some(i) => {
                want.remotes[i] = remote.clone();
                Config::edit_file(path, &want, |t| t.put_remote(&remote, Some(i)))?;
                wrote = true;
                said.push(format!("updated remote {}", describe(&remote)));
            }
            None => {
                want.remotes.push(remote.clone());
                Config::edit_file(path, &want, |t| t.put_remote(&remote, None))?;
                wrote = true;
                said.push(format!("added remote {}", describe(&remote)));
            }
        }
    }
    if let Some(port) = args.ipc_port {
        let mut want = current()?;
        want.process.ipc_port = port;
        Config::edit_file(path, &want, |t| {
            t.set("process", "ipc_port", &Value::Scalar(port.to_string()))
        })?;
        wrote = true;
        said.push(format!("process.ipc_port: {port}"));
    }
    if let Some(v) = args.verbosity {
        let mut want = current()?;
        want.instrumentation.verbosity = v;
        Config::edit_file(path, &want, |t| {
            t.set(
                "instrumentation",
                "verbosity",
                &Value::Scalar(v.to_string()),
            )
        })?;
        wrote = true;
        said.push(format!("instrumentation.verbosity: {v}"));
    }
    if !wrote {
        return Ok(said);
    }
    said.push(format!("wrote {}", path.display()));
    let pid_file = current()?.process.pid_file;
    said.push(match crate::process::running_pid(&pid_file) {
        Ok(Some(pid)) => format!(
            "hgxd is running (pid {pid}) and reads its configuration only at start: restart it \
             (hgxd stop, then hgxd) for this to take effect"
        ),
        _ => "a running hgxd reads its configuration only at start: restart it for this to \
              take effect"
            .into(),
    });
    Ok(said)
}

/// `path` made absolute (it is written into a file read from another directory), if it is a
/// readable file.
fn readable_file(path: &Path) -> Result<PathBuf, RunError> {
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    match std::fs::File::open(&abs).and_then(|f| f.metadata()) {
        Ok(m) if m.is_file() => Ok(abs),
        Ok(_) => Err(RunError::Usage(format!(
            "--ca-file {}: not a file",
            path.display()
        ))),
        Err(e) => Err(RunError::Usage(format!(
            "--ca-file {}: {e}",
            path.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_forms() {
        let ok = |s: &str| parse_host_port(s).unwrap();
        assert_eq!(ok("example.org"), ("example.org".into(), 7770));
        assert_eq!(ok("example.org:443"), ("example.org".into(), 443));
        assert_eq!(ok("10.0.0.1:7771"), ("10.0.0.1".into(), 7771));
        assert_eq!(ok("::1"), ("::1".into(), 7770));
        assert_eq!(ok("[::1]:8443"), ("::1".into(), 8443));
        assert_eq!(ok("[fe80::1]"), ("fe80::1".into(), 7770));
        for bad in [
            "",
            ":80",
            "host:",
            "host:x",
            "host:70000",
            "[::1",
            "[::1]x",
            "a b:1",
            "h:0",
        ] {
            let e = parse_host_port(bad).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad:?}: {e}");
        }
    }
}
