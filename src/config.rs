//! # Configuration
//!
//! `hypergolix.yml`, read with the `config` crate. With `$HYPERGOLIX_HOME` set the file is looked
//! for there only; otherwise in the current directory, `~/.hypergolix`, then `/etc/hypergolix`, and
//! the first one found wins. `HGX_*` environment variables override it (`HGX_SERVER__PORT=7771`:
//! sections are separated by a double underscore), and command-line flags ([`ServerOverrides`])
//! override both.
//!
//! Relative paths in the file are resolved against the directory of the file in use (or, with
//! no file, against [`home_dir`]); relative paths given as flags against the current directory.
//!
//! The file is written only through [`write_private`] (mode 0600, temporary file, fsync,
//! rename, fsync of the directory: it can hold `user.root_secret`), and changed only through
//! [`edit::ConfigText`], which keeps the rest of the text as it is.
//!
//! Owns: the serde structs of every section with their defaults, the default file's text,
//! the search order, path resolution, overrides, and writing and editing the file. Calls:
//! nothing of ours but [`crate::logging::Verbosity`].

pub mod edit;
mod file;

pub use file::write_private;

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::logging::Verbosity;

/// The file name looked for in each search directory.
pub const FILE_NAME: &str = "hypergolix.yml";

/// Default persister port.
pub const DEFAULT_SERVER_PORT: u16 = 7770;

/// Default daemon IPC port.
pub const DEFAULT_IPC_PORT: u16 = 7772;

/// Default largest websocket message the persister accepts (16 MiB).
pub const DEFAULT_MAX_FRAME: usize = 16 * 1024 * 1024;
/// Default of `server.inbound_bytes_total`: the publishes all connections together may
/// have in their pipelines, in bytes.
pub const DEFAULT_INBOUND_BYTES_TOTAL: usize = 256 * 1024 * 1024;
/// Default of `server.min_free_bytes`: the free space the persister's disk keeps (as much
/// as the publishes in flight may hold, `DEFAULT_INBOUND_BYTES_TOTAL`).
pub const DEFAULT_MIN_FREE_BYTES: u64 = 256 << 20;

/// Default sled page cache of each of the daemon's two databases (16 MiB; sled's own default
/// is 1 GiB each). sled evicts lazily (only once a shard has seen 64 accesses), so a small
/// workload never reaches either cap; `scripts/measure_rss.py` measures the difference.
pub const DEFAULT_DAEMON_CACHE: u64 = 16 * 1024 * 1024;

/// Default sled page cache of the persister's database (sled's own default, 1 GiB).
pub const DEFAULT_SERVER_CACHE: u64 = 1024 * 1024 * 1024;

/// Default size at which a log file is closed and the next one begun (10 MiB).
pub const DEFAULT_LOG_MAX_BYTES: u64 = 10 * 1024 * 1024;

/// Default number of log files kept per program.
pub const DEFAULT_KEEP_LOGS: usize = 5;

/// Errors while finding, reading or writing the configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("config file {0} does not exist")]
    Missing(PathBuf),
    #[error("config file {path}: {source}")]
    Parse {
        path: String,
        source: config::ConfigError,
    },
    #[error("writing config file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// The whole file. Unknown keys are ignored (and listed in [`Config::unknown_keys`], for
/// the binaries to warn about), missing ones take their defaults.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Config {
    pub process: ProcessSection,
    pub instrumentation: Instrumentation,
    pub user: UserSection,
    /// Persisters the daemon syncs through; empty = local only.
    pub remotes: Vec<Remote>,
    pub server: ServerSection,
    /// The file this was read from (`None` = defaults only).
    #[serde(skip)]
    pub source: Option<PathBuf>,
    /// The directory relative paths were resolved against.
    #[serde(skip)]
    pub base_dir: PathBuf,
    /// Keys of the file that no setting reads (typos such as `cafile`), as dotted paths
    /// (`remotes.0.cafile`).
    #[serde(skip)]
    pub unknown_keys: Vec<String>,
}

/// `process`: the daemon (`hgxd`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct ProcessSection {
    pub ghidcache: PathBuf,
    pub logdir: PathBuf,
    pub pid_file: PathBuf,
    pub ipc_port: u16,
    /// Bytes of sled page cache for each of the two databases under `ghidcache`.
    pub cache_capacity: u64,
    /// Seconds an app connection has to authenticate (`hello` with the token). Default 10.
    pub ipc_hello_timeout_s: u64,
    /// App connections waiting for their `hello` at once; one more closes the oldest of
    /// them, so idle sockets of any local process cannot lock out an app. Default 1024
    /// (at most a quarter of the open-file limit).
    pub ipc_max_unauthenticated: usize,
    /// App connections authenticated at once; a `hello` past it gets `limit`. Default 1024.
    pub ipc_max_apps: usize,
    /// Shares from one other user that the account keeps while no app has adopted them;
    /// one more is naked (`STATUS_LIMIT`). Default 64.
    pub max_unadopted_shares_per_sharer: usize,
    /// The same from all other users together. Default 1024.
    pub max_unadopted_shares: usize,
    /// Milliseconds the write-ahead logs of the object cache and the state collect writes
    /// (unless 4 MiB come first) before they move into sled in one transaction; at least 10.
    pub wal_move_ms: u64,
}

impl Default for ProcessSection {
    fn default() -> Self {
        ProcessSection {
            ghidcache: "./ghidcache".into(),
            logdir: "./logs".into(),
            pid_file: "./hypergolix.pid".into(),
            ipc_port: DEFAULT_IPC_PORT,
            cache_capacity: DEFAULT_DAEMON_CACHE,
            ipc_hello_timeout_s: 10,
            ipc_max_unauthenticated: crate::ipc::server::DEFAULT_MAX_UNAUTHENTICATED,
            ipc_max_apps: crate::ipc::server::DEFAULT_MAX_APPS,
            max_unadopted_shares_per_sharer: crate::actors::account_actor::MAX_UNADOPTED_PER_SHARER,
            max_unadopted_shares: crate::actors::account_actor::MAX_UNADOPTED_SHARES,
            // = persist::store::WAL_MOVE_EVERY.
            wal_move_ms: 5000,
        }
    }
}

/// `instrumentation`: the daemon's logging.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Instrumentation {
    pub verbosity: Verbosity,
    pub debug: bool,
    /// Log files kept in `process.logdir` (a new one per start and per `log_max_bytes`).
    pub keep_logs: usize,
    /// Size at which a log file is closed and the next one begun.
    pub log_max_bytes: u64,
}

impl Default for Instrumentation {
    fn default() -> Self {
        Instrumentation {
            verbosity: Verbosity::default(),
            debug: false,
            keep_logs: DEFAULT_KEEP_LOGS,
            log_max_bytes: DEFAULT_LOG_MAX_BYTES,
        }
    }
}

/// `user`: the account (base64 strings, as the reference wrote them).
#[derive(Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct UserSection {
    pub fingerprint: Option<String>,
    pub user_id: Option<String>,
    /// Password-less start; discouraged.
    pub root_secret: Option<String>,
    /// The scrypt parameters the account's password was stretched with (written at account
    /// creation so they can be raised later).
    pub scrypt: Option<ScryptConfig>,
}

/// `user.scrypt`: log2 of N, r, p.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ScryptConfig {
    pub log_n: u8,
    pub r: u32,
    pub p: u32,
}

impl fmt::Debug for UserSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserSection")
            .field("fingerprint", &self.fingerprint)
            .field("user_id", &self.user_id)
            .field(
                "root_secret",
                &self.root_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("scrypt", &self.scrypt)
            .finish()
    }
}

/// One entry of `remotes`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Remote {
    pub host: String,
    #[serde(default = "default_server_port")]
    pub port: u16,
    #[serde(default)]
    pub tls: bool,
    /// PEM certificates trusted for this remote besides the public roots (a private CA);
    /// needs `tls: true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Other front-ends of the same persister cluster (`HOST:PORT`, same `tls` and
    /// `ca_file`): the daemon uses one at a time and fails over to the next when it loses its
    /// connection.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failover: Vec<String>,
}

impl Remote {
    /// The `ws://` or `wss://` URL of its websocket (an IPv6 literal in brackets).
    pub fn url(&self) -> String {
        let scheme = if self.tls { "wss" } else { "ws" };
        match self.host.parse::<std::net::Ipv6Addr>() {
            Ok(v6) => format!("{scheme}://[{v6}]:{}/ws", self.port),
            Err(_) => format!("{scheme}://{}:{}/ws", self.host, self.port),
        }
    }
}

fn default_server_port() -> u16 {
    DEFAULT_SERVER_PORT
}

/// Where the persister listens (`server.host`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostSpec {
    /// `null`: 127.0.0.1.
    Loopback,
    /// `AUTO`: this machine's first non-loopback IPv4 address.
    Auto,
    /// `ANY`: every interface (0.0.0.0).
    Any,
    /// An address or host name.
    Addr(String),
}

impl HostSpec {
    /// Reads the `server.host` value.
    pub fn parse(v: Option<&str>) -> HostSpec {
        match v.map(str::trim) {
            None | Some("") | Some("null") | Some("~") => HostSpec::Loopback,
            Some(s) if s.eq_ignore_ascii_case("auto") => HostSpec::Auto,
            Some(s) if s.eq_ignore_ascii_case("any") => HostSpec::Any,
            Some(s) => HostSpec::Addr(s.to_owned()),
        }
    }
}

/// `server`: the persister (`hgx-persister`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct ServerSection {
    pub ghidcache: PathBuf,
    pub logdir: PathBuf,
    pub pid_file: PathBuf,
    /// `null` = 127.0.0.1, `AUTO`, `ANY` or an address; see [`HostSpec`].
    pub host: Option<String>,
    pub port: u16,
    pub verbosity: Verbosity,
    pub debug: bool,
    /// PEM certificate chain; TLS is on when both this and `tls_key` are set.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key.
    pub tls_key: Option<PathBuf>,
    /// Largest websocket message accepted, in bytes.
    pub max_frame: usize,
    /// Most subscriptions per connection.
    pub max_subscriptions: usize,
    /// Outbound messages queued per connection before it is dropped as too slow.
    pub outbound_queue: usize,
    /// Outbound bytes queued per connection (replies to `get` included). Requests are not
    /// read while half of it is used; a notification that does not fit, or a queue that
    /// stays over half for `send_timeout_s`, drops the connection. Default 64 MiB (at least
    /// 1 MiB).
    pub outbound_bytes: usize,
    /// Outbound bytes queued to all connections together; past it the connection that has
    /// been over half its `outbound_bytes` the longest is dropped. 0 = no such bound.
    /// Default 1 GiB.
    pub outbound_bytes_total: usize,
    /// Bytes of the publishes in all connections' pipelines together (read, not yet
    /// answered); past it no connection's next message is read until some are answered.
    /// 0 = no such bound. Default 256 MiB.
    pub inbound_bytes_total: usize,
    /// Free bytes the ghidcache's filesystem keeps: below it a publish that would store
    /// something new is refused with `storage` (what is stored already, and debindings of
    /// stored objects, are taken). 0 = no reserve. Sled store
    /// only. Default 256 MiB.
    pub min_free_bytes: u64,
    /// Seconds a connection may keep over half of `outbound_bytes` queued, and (as the
    /// socket's `TCP_USER_TIMEOUT`) seconds sent data may stay unread by the peer, before
    /// the connection is dropped. Default 30.
    pub send_timeout_s: u64,
    /// Publishes per connection awaiting durability at once.
    pub max_in_flight: usize,
    /// Stored requests (GARQs) kept per recipient. When full, a sender holding fewer than
    /// the recipient's heaviest sender still gets in (one of the heaviest sender's requests
    /// is dropped); otherwise `mailbox_full` until the recipient debinds some. Keep it well
    /// below `outbound_queue`: all of it is delivered at a new subscription. Default 1024.
    pub max_requests_per_recipient: usize,
    /// Stored requests kept per (sender, recipient); further ones from that sender are
    /// refused with `mailbox_full`. A sender is the identity a connection authenticated as
    /// (`auth`), counted by its signing key; every unauthenticated connection together is
    /// one sender. Default 64.
    pub max_requests_per_sender: usize,
    /// Seconds a websocket peer may stay silent (no message, no pong) before it is closed.
    pub idle_timeout_s: u64,
    /// Seconds a new connection has to send its whole HTTP request head (slow-loris guard).
    pub request_head_timeout_s: u64,
    /// HTTP worker threads; `null` = one per core.
    pub workers: Option<usize>,
    /// Bind the signature-verification threads (one per core) one to each core, so that a
    /// publisher's binding and container are verified side by side: for a host that runs
    /// the persister alone (a bound thread waits for its core when something else is busy
    /// on it, so off by default).
    pub pin_verify_threads: bool,
    /// Check a lone frame's container on another core while the frame is checked (one
    /// thread bound to each core, [`crate::beside`]; a busy core's thread is passed over).
    pub check_beside: bool,
    /// Log files kept in `logdir` (a new one per start and per `log_max_bytes`).
    pub keep_logs: usize,
    /// Size at which a log file is closed and the next one begun.
    pub log_max_bytes: u64,
    /// Bytes of sled page cache for the object store.
    pub cache_capacity: u64,
    /// Milliseconds the sled store's write-ahead log collects writes (unless 4 MiB come
    /// first) before they move into sled in one transaction; at least 10.
    pub wal_move_ms: u64,
    /// Where objects live: `sled` (the `ghidcache` directory, one process) or
    /// `nats://HOST:PORT[,HOST:PORT…]` (a NATS JetStream cluster shared by any number of
    /// persister front-ends; `tls://` requires TLS). See `nats` for the rest.
    pub store: String,
    /// The cluster store's connection and layout (used when `store` is `nats://…`).
    pub nats: NatsSection,
}

/// `server.nats`: how a cluster-backed persister reaches and lays out JetStream.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct NatsSection {
    /// Prefix of every bucket and subject; persisters with the same namespace on one cluster
    /// are one persister.
    pub namespace: String,
    /// KV buckets the rows are spread over (fixed at first use of the namespace).
    pub partitions: usize,
    /// Replicas per bucket; `null` = 3 when the cluster has 3 or more nodes, else 1.
    pub replicas: Option<usize>,
    /// Objects larger than this (bytes) are kept in the object store instead of a KV row.
    pub inline_max: usize,
    /// NATS credentials file (JWT and nkey seed), for operator/JWT deployments.
    pub creds_file: Option<PathBuf>,
    pub user: Option<String>,
    /// Prefer `HGX_SERVER__NATS__PASSWORD` in the environment to writing it here.
    pub password: Option<String>,
    pub token: Option<String>,
    /// PEM CA bundle the NATS servers' certificates are verified with.
    pub tls_ca: Option<PathBuf>,
    /// PEM client certificate and key, for servers that verify clients (mutual TLS).
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Refuse servers that do not offer TLS.
    pub tls_required: bool,
    /// Seconds for connecting and for each JetStream request.
    pub timeout_s: u64,
}

impl Default for NatsSection {
    fn default() -> Self {
        NatsSection {
            namespace: "hgx".into(),
            partitions: 4,
            replicas: None,
            inline_max: 128 * 1024,
            creds_file: None,
            user: None,
            password: None,
            token: None,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            tls_required: false,
            timeout_s: 5,
        }
    }
}

impl fmt::Debug for NatsSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsSection")
            .field("namespace", &self.namespace)
            .field("partitions", &self.partitions)
            .field("replicas", &self.replicas)
            .field("inline_max", &self.inline_max)
            .field("creds_file", &self.creds_file)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("tls_ca", &self.tls_ca)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("tls_required", &self.tls_required)
            .field("timeout_s", &self.timeout_s)
            .finish()
    }
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            ghidcache: "./ghidcache-server".into(),
            logdir: "./logs".into(),
            pid_file: "./hgx-server.pid".into(),
            host: None,
            port: DEFAULT_SERVER_PORT,
            verbosity: Verbosity::Info,
            debug: false,
            tls_cert: None,
            tls_key: None,
            max_frame: DEFAULT_MAX_FRAME,
            max_subscriptions: 4096,
            outbound_queue: 4096,
            outbound_bytes: 64 * 1024 * 1024,
            outbound_bytes_total: 1024 * 1024 * 1024,
            inbound_bytes_total: DEFAULT_INBOUND_BYTES_TOTAL,
            min_free_bytes: DEFAULT_MIN_FREE_BYTES,
            send_timeout_s: 30,
            max_in_flight: 256,
            // = persist::rules::DEFAULT_MAX_REQUESTS_PER_RECIPIENT (config calls nothing of ours).
            max_requests_per_recipient: 1024,
            max_requests_per_sender: 64,
            idle_timeout_s: 60,
            request_head_timeout_s: 5,
            workers: None,
            pin_verify_threads: false,
            check_beside: true,
            keep_logs: DEFAULT_KEEP_LOGS,
            log_max_bytes: DEFAULT_LOG_MAX_BYTES,
            cache_capacity: DEFAULT_SERVER_CACHE,
            // = persist::store::WAL_MOVE_EVERY (config calls nothing of ours).
            wal_move_ms: 5000,
            store: "sled".into(),
            nats: NatsSection::default(),
        }
    }
}

impl ServerSection {
    pub fn host_spec(&self) -> HostSpec {
        HostSpec::parse(self.host.as_deref())
    }
}

/// Command-line overrides of the `server` section (`None` = keep the file's value).
#[derive(Clone, Debug, Default)]
pub struct ServerOverrides {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub ghidcache: Option<PathBuf>,
    pub logdir: Option<PathBuf>,
    pub pid_file: Option<PathBuf>,
    pub verbosity: Option<Verbosity>,
    pub debug: Option<bool>,
    /// `sled` or `nats://…` (`--store`).
    pub store: Option<String>,
}

/// `$HYPERGOLIX_HOME`, else `~/.hypergolix`: where a first run writes its file.
pub fn home_dir() -> PathBuf {
    if let Some(h) = std::env::var_os("HYPERGOLIX_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(h);
    }
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(h) => PathBuf::from(h).join(".hypergolix"),
        None => PathBuf::from(".hypergolix"),
    }
}

/// The directories searched, in order. `$HYPERGOLIX_HOME`, when set, is the only one: a
/// home set for isolation (a test, a second account) never picks up another's file.
pub fn search_dirs() -> Vec<PathBuf> {
    if let Some(h) = std::env::var_os("HYPERGOLIX_HOME").filter(|h| !h.is_empty()) {
        return vec![PathBuf::from(h)];
    }
    let mut dirs = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        dirs.push(cwd);
    }
    if let Some(h) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        dirs.push(PathBuf::from(h).join(".hypergolix"));
    }
    dirs.push(PathBuf::from("/etc/hypergolix"));
    dirs
}

/// The first `hypergolix.yml` in the search order.
pub fn find() -> Option<PathBuf> {
    search_dirs()
        .into_iter()
        .map(|d| d.join(FILE_NAME))
        .find(|p| p.is_file())
}

/// The keys of one source (the file alone, without `HGX_*` variables) that deserializing a
/// [`Config`] ignores. A source that does not parse has none here: loading it reports that.
fn unknown_keys(
    source: config::builder::ConfigBuilder<config::builder::DefaultState>,
) -> Vec<String> {
    let mut unknown = Vec::new();
    if let Ok(built) = source.build() {
        let _: Result<Config, _> =
            serde_ignored::deserialize(built, |path| unknown.push(path.to_string()));
    }
    unknown.sort();
    unknown
}

fn resolve(base: &Path, p: &mut PathBuf) {
    if p.is_relative() {
        *p = base.join(&*p);
    }
}

impl Config {
    /// Loads `explicit` (which must exist) or the first file in the search order, or the
    /// defaults if there is none; applies `HGX_*` variables; resolves relative paths.
    pub fn load(explicit: Option<&Path>) -> Result<Config, ConfigError> {
        let path = match explicit {
            Some(p) if p.is_file() => Some(p.to_path_buf()),
            Some(p) => return Err(ConfigError::Missing(p.to_path_buf())),
            None => find(),
        };
        Config::load_from(path.as_deref(), true)
    }

    /// Loads exactly `path` (or only defaults with `None`), optionally with `HGX_*` variables.
    pub fn load_from(path: Option<&Path>, env: bool) -> Result<Config, ConfigError> {
        let mut b = config::Config::builder();
        if let Some(p) = path {
            b = b.add_source(config::File::from(p).format(config::FileFormat::Yaml));
        }
        if env {
            b = b.add_source(
                config::Environment::with_prefix("HGX")
                    .prefix_separator("_")
                    .separator("__")
                    .try_parsing(true),
            );
        }
        let name = path.map_or_else(|| "<defaults>".to_owned(), |p| p.display().to_string());
        let parse = |source| ConfigError::Parse {
            path: name.clone(),
            source,
        };
        let mut cfg: Config = b.build().map_err(parse)?.try_deserialize().map_err(parse)?;
        if let Some(p) = path {
            cfg.unknown_keys = unknown_keys(
                config::Config::builder()
                    .add_source(config::File::from(p).format(config::FileFormat::Yaml)),
            );
        }
        let base = match path {
            Some(p) => {
                let abs = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
                abs.parent().map(Path::to_path_buf).unwrap_or_default()
            }
            None => home_dir(),
        };
        cfg.source = path.map(Path::to_path_buf);
        cfg.base_dir = base.clone();
        cfg.resolve_paths(&base);
        Ok(cfg)
    }

    /// Parses YAML text (tests, tools); relative paths resolve against `base`.
    pub fn from_yaml(text: &str, base: &Path) -> Result<Config, ConfigError> {
        let b = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Yaml));
        let parse = |source| ConfigError::Parse {
            path: "<yaml>".into(),
            source,
        };
        let mut cfg: Config = b
            .clone()
            .build()
            .map_err(parse)?
            .try_deserialize()
            .map_err(parse)?;
        cfg.unknown_keys = unknown_keys(b);
        cfg.base_dir = base.to_path_buf();
        cfg.resolve_paths(base);
        Ok(cfg)
    }

    fn resolve_paths(&mut self, base: &Path) {
        for p in [
            &mut self.process.ghidcache,
            &mut self.process.logdir,
            &mut self.process.pid_file,
            &mut self.server.ghidcache,
            &mut self.server.logdir,
            &mut self.server.pid_file,
        ] {
            resolve(base, p);
        }
        let n = &mut self.server.nats;
        let ca_files = self.remotes.iter_mut().filter_map(|r| r.ca_file.as_mut());
        for p in [
            &mut self.server.tls_cert,
            &mut self.server.tls_key,
            &mut n.creds_file,
            &mut n.tls_ca,
            &mut n.tls_cert,
            &mut n.tls_key,
        ]
        .into_iter()
        .flatten()
        .chain(ca_files)
        {
            resolve(base, p);
        }
    }

    /// Applies command-line flags to the `server` section (relative paths against the
    /// current directory).
    pub fn apply_server_overrides(&mut self, o: &ServerOverrides) {
        let cwd = std::env::current_dir().unwrap_or_default();
        let s = &mut self.server;
        if let Some(h) = &o.host {
            s.host = Some(h.clone());
        }
        if let Some(p) = o.port {
            s.port = p;
        }
        for (flag, field) in [
            (&o.ghidcache, &mut s.ghidcache),
            (&o.logdir, &mut s.logdir),
            (&o.pid_file, &mut s.pid_file),
        ] {
            if let Some(v) = flag {
                *field = v.clone();
                resolve(&cwd, field);
            }
        }
        if let Some(v) = o.verbosity {
            s.verbosity = v;
        }
        if let Some(d) = o.debug {
            s.debug = d;
        }
        if let Some(st) = &o.store {
            s.store = st.clone();
        }
    }

    /// Writes the default file ([`DEFAULT_FILE`]) to `path` if no file is there (first run).
    /// Returns whether it wrote.
    pub fn write_default(path: &Path) -> Result<bool, ConfigError> {
        if path.exists() {
            return Ok(false);
        }
        let err = |source| ConfigError::Write {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            // The home holds the account's files: the user's alone (0700) when we create it.
            crate::logging::create_private_dir(dir).map_err(err)?;
        }
        write_private(path, DEFAULT_FILE.as_bytes()).map_err(err)?;
        Ok(true)
    }

    /// Applies `edit` to the text of the file at `path` and writes the result (see
    /// [`edit`]): `expected` is what the file must read as afterwards, or the edit is refused
    /// and nothing is written.
    pub fn edit_file(
        path: &Path,
        expected: &Config,
        edit: impl FnOnce(&mut edit::ConfigText) -> Result<(), ConfigError>,
    ) -> Result<(), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Write {
            path: path.to_path_buf(),
            source,
        })?;
        let mut doc = edit::ConfigText::new(&text);
        edit(&mut doc)?;
        let base = Config::load_from(Some(path), false)?.base_dir;
        let out = doc
            .verified(expected, &base)
            .map_err(|e| ConfigError::Invalid(format!("{}: {e}", path.display())))?;
        write_private(path, out.as_bytes()).map_err(|source| ConfigError::Write {
            path: path.to_path_buf(),
            source,
        })
    }
}

/// What a first run writes: every key with its default, commented. Parses to
/// [`Config::default`] (checked by a test).
pub const DEFAULT_FILE: &str = "\
# Hypergolix configuration. Relative paths are relative to this file's directory.
# hgxd reads process, instrumentation, user and remotes; hgx-persister reads server.
# `hgxd config` changes it from the command line; a running hgxd must be restarted to see
# a change. HGX_SECTION__KEY environment variables override it (HGX_PROCESS__IPC_PORT=7773).

process:
  ghidcache: ./ghidcache          # the daemon's encrypted object cache
  logdir: ./logs
  pid_file: ./hypergolix.pid
  ipc_port: 7772                  # apps connect to ws://127.0.0.1:<ipc_port>/
  cache_capacity: 16777216        # bytes of page cache for each of its two databases

instrumentation:
  verbosity: info                 # error | warning | info | debug | shouty | extreme
  debug: false
  keep_logs: 5                    # log files kept (a new one per start and per log_max_bytes)
  log_max_bytes: 10485760

# Persisters to sync through; [] = this machine only. `hgxd config --add-remote HOST:PORT`
# adds one, for example:
#   - host: hgx.example.org
#     port: 443
#     tls: true
#     ca_file: ./private-ca.pem   # only for a persister whose certificate a private CA signed
remotes: []

# hgxd writes user.fingerprint, user.user_id and user.scrypt here when it creates the account.

server:
  host: null                      # null = 127.0.0.1, AUTO = this machine's address, ANY = all
  port: 7770
  ghidcache: ./ghidcache-server
  logdir: ./logs
  pid_file: ./hgx-server.pid
  verbosity: info
  debug: false
  tls_cert: null                  # PEM certificate chain; TLS is on when tls_key is set too
  tls_key: null
  max_frame: 16777216
  max_subscriptions: 4096
  outbound_queue: 4096
  max_in_flight: 256
  max_requests_per_recipient: 1024
  idle_timeout_s: 60
  request_head_timeout_s: 5
  workers: null                   # null = one per core
  pin_verify_threads: false       # true: one verify thread bound to each core (a host of its own)
  check_beside: true              # a lone frame's container is checked on another core meanwhile
  keep_logs: 5
  log_max_bytes: 10485760
  cache_capacity: 1073741824      # bytes of page cache for the object store
  wal_move_ms: 5000               # how long the write-ahead log collects writes for sled
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_design() {
        let c = Config::default();
        assert_eq!(c.server.port, 7770);
        assert_eq!(c.process.ipc_port, 7772);
        assert_eq!(c.server.host_spec(), HostSpec::Loopback);
        assert_eq!(c.server.max_frame, 16 * 1024 * 1024);
        assert!(c.remotes.is_empty());
    }

    #[test]
    fn yaml_sections_paths_and_overrides() {
        let base = Path::new("/srv/hgx");
        let cfg = Config::from_yaml(
            "server:\n  host: ANY\n  port: 9000\n  ghidcache: cache\n  verbosity: shouty\n  \
             tls_cert: /abs/cert.pem\n  unknown_key: 1\nremotes:\n  - host: example.org\n    \
             tls: true\nuser:\n  root_secret: abc\n",
            base,
        )
        .unwrap();
        assert_eq!(cfg.server.host_spec(), HostSpec::Any);
        assert_eq!(cfg.server.port, 9000);
        assert_eq!(cfg.server.ghidcache, base.join("cache"));
        assert_eq!(cfg.server.pid_file, base.join("hgx-server.pid"));
        assert_eq!(
            cfg.server.tls_cert.as_deref(),
            Some(Path::new("/abs/cert.pem"))
        );
        assert_eq!(cfg.server.verbosity, Verbosity::Shouty);
        assert_eq!(
            cfg.remotes,
            vec![Remote {
                host: "example.org".into(),
                port: 7770,
                tls: true,
                failover: vec![],
                ca_file: None,
            }]
        );
        assert_eq!(cfg.unknown_keys, ["server.unknown_key"]);
        assert!(
            !format!("{:?}", cfg.user).contains("abc"),
            "secrets are not logged"
        );

        let mut cfg = cfg;
        cfg.apply_server_overrides(&ServerOverrides {
            port: Some(1),
            ghidcache: Some("/tmp/x".into()),
            verbosity: Some(Verbosity::Error),
            ..Default::default()
        });
        assert_eq!(cfg.server.port, 1);
        assert_eq!(cfg.server.ghidcache, Path::new("/tmp/x"));
        assert_eq!(cfg.server.verbosity, Verbosity::Error);
        assert_eq!(cfg.server.host_spec(), HostSpec::Any);
    }

    #[test]
    fn remotes_ca_file_url_and_unknown_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        std::fs::write(
            &path,
            "remotes:\n  - host: hgx.example.org\n    port: 443\n    tls: true\n    \
             ca_file: ca.pem\n  - host: \"::1\"\n    cafile: /x.pem\nremote: []\n\
             server:\n  port: 1\n",
        )
        .unwrap();
        let cfg = Config::load_from(Some(&path), false).unwrap();
        assert_eq!(cfg.remotes[0].ca_file, Some(dir.path().join("ca.pem")));
        assert_eq!(cfg.remotes[0].url(), "wss://hgx.example.org:443/ws");
        assert_eq!(cfg.remotes[1].ca_file, None);
        assert_eq!(cfg.remotes[1].url(), "ws://[::1]:7770/ws");
        assert_eq!(cfg.unknown_keys, ["remote", "remotes.1.cafile"]);
        let clean = Config::from_yaml("server:\n  port: 2\n", dir.path()).unwrap();
        assert!(clean.unknown_keys.is_empty());
    }

    #[test]
    fn host_spec_forms() {
        assert_eq!(HostSpec::parse(None), HostSpec::Loopback);
        assert_eq!(HostSpec::parse(Some("auto")), HostSpec::Auto);
        assert_eq!(
            HostSpec::parse(Some("10.0.0.1")),
            HostSpec::Addr("10.0.0.1".into())
        );
    }

    #[test]
    fn write_default_then_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        assert!(Config::write_default(&path).unwrap());
        assert!(!Config::write_default(&path).unwrap());
        let cfg = Config::load_from(Some(&path), false).unwrap();
        let mut want = Config::default();
        want.resolve_paths(dir.path());
        want.source = Some(path.clone());
        want.base_dir = dir.path().to_path_buf();
        assert_eq!(
            cfg, want,
            "the default file says what Config::default() says"
        );
        assert_eq!(cfg.server.ghidcache, dir.path().join("ghidcache-server"));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "it can hold user.root_secret");
        assert!(matches!(
            Config::load(Some(&dir.path().join("nope.yml"))),
            Err(ConfigError::Missing(_))
        ));
    }
}
