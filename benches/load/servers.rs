//! Starting the two real servers of a load run with their config files: an
//! `hgx-persister` on 127.0.0.1 (port chosen by the OS, announced on stdout) and an `hgxd`
//! that creates its account from a fixture identity (`--identity-file`, fast scrypt
//! parameters: no RSA keygen, no slow password stretching) and syncs through it.

use std::time::Duration;

use hypergolix::ipc::CapabilityToken;

use super::procs::{binary, ServerProc};

/// How long a server may take to announce that it is ready.
const START: Duration = Duration::from_secs(120);
const PASSWORD: &str = "load bench password";

pub struct Persister {
    pub proc: ServerProc,
    pub addr: std::net::SocketAddr,
}

impl Persister {
    /// `ws://addr/ws`.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }
}

/// Starts `hgx-persister` with `workers` HTTP workers (0 = one per core).
pub fn persister(workers: usize, nofile: Option<u64>) -> Result<Persister, String> {
    let bin = binary("hgx-persister", env!("CARGO_BIN_EXE_hgx-persister"))?;
    let config = format!(
        "server:\n  host: 127.0.0.1\n  port: 0\n  ghidcache: ./cache\n  logdir: ./logs\n  \
         pid_file: ./persister.pid\n  workers: {workers}\n  verbosity: warning\n"
    );
    let mut proc = ServerProc::spawn("hgx-persister", &bin, &[], &config, &[], nofile)?;
    let rest = proc.wait_line("listening on http://", START)?;
    let addr = rest
        .trim()
        .parse()
        .map_err(|e| format!("persister address {rest:?}: {e}"))?;
    Ok(Persister { proc, addr })
}

pub struct Hgxd {
    pub proc: ServerProc,
    pub url: String,
    pub token: CapabilityToken,
}

/// Fixture identity `n` as the JSON `--identity-file` reads.
fn identity_json(n: usize) -> Result<String, String> {
    Ok(hypergolix::testdata::fixture_identity_json(n).to_string())
}

/// Starts `hgxd` (new account of fixture identity 1) syncing through `persister`.
pub fn hgxd(persister: &Persister, nofile: Option<u64>) -> Result<Hgxd, String> {
    let bin = binary("hgxd", env!("CARGO_BIN_EXE_hgxd"))?;
    let config = format!(
        "process:\n  ghidcache: ./ghidcache\n  logdir: ./logs\n  pid_file: ./hgxd.pid\n  \
         ipc_port: 0\ninstrumentation:\n  verbosity: warning\nremotes:\n  - host: 127.0.0.1\n    \
         port: {}\n    tls: false\nuser:\n  scrypt:\n    log_n: 10\n    r: 8\n    p: 1\n",
        persister.addr.port()
    );
    let id_file = tempfile::NamedTempFile::new().map_err(|e| e.to_string())?;
    std::fs::write(id_file.path(), identity_json(1)?).map_err(|e| e.to_string())?;
    let id_arg = id_file.path().to_string_lossy().into_owned();
    let mut proc = ServerProc::spawn(
        "hgxd",
        &bin,
        &["--identity-file", &id_arg],
        &config,
        &[("HGX_PASSWORD", PASSWORD)],
        nofile,
    )?;
    let rest = proc.wait_line("hgxd: ready on ", START)?;
    let url = rest
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned();
    if !url.starts_with("ws://127.0.0.1:") {
        return Err(format!("hgxd ready line: {rest:?}"));
    }
    let token = CapabilityToken::read_file(proc.home.path())
        .map_err(|e| format!("ipc.token in {}: {e}", proc.home.path().display()))?;
    Ok(Hgxd { proc, url, token })
}
