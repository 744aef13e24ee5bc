//! # The cluster store: [`Store`] over NATS JetStream
//!
//! Any number of persister front-ends share one JetStream cluster and behave as one persister:
//! every row of the store is a KV entry (`rows`), partitioned over `partitions` buckets by
//! ghid (so the buckets' Raft leaders spread over the nodes), replicated `replicas` times;
//! large objects live in an object store. A front-end keeps no data of its own: every plain
//! read goes to the stream leader; a rule pass may start from rows the front-end saw last (a
//! cache, see `partition`), which its commit validates like any read.
//!
//! Isolation: [`Store::transact`] runs the rule pass against the rows it reads and commits its
//! writes with the protocol in `txn` (optimistic, compare-and-set per row on the KV revision,
//! guarded by the partition stream's last sequence; a transaction record as the single commit
//! point; roll-forward by anyone). A pass whose reads changed before its commit is re-run, so
//! two front-ends racing two frames with one counter for one dynamic ghid end with exactly one
//! stored and the other refused by the rules (`illegal_frame`), as in one process.
//! `docs/persister-cluster.md` has the argument.
//!
//! Durability: an operation returns only after JetStream acknowledged every write it needs
//! (an acknowledgement means the write is in the stream leader's log and a quorum of its
//! replicas'); [`Store::flush`] therefore has nothing left to do.
//!
//! Owns: the connections (one for the store, one without echo for notifications, see
//! [`NatsStore::notify_client`]), a private tokio runtime that drives them, the buckets, the
//! periodic sweep of abandoned transactions, the count of JetStream operations by kind
//! ([`NatsStore::ops`]). Calls: async-nats, `rows`, `txn`, `partition`, the sled
//! store's record encodings. Used by the persister server (`server.store: nats://…`).

mod partition;
mod rows;
mod txn;

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, kv, object_store, stream};
use bytes::Bytes;
use slog::{info, warn, Logger};

use super::sled_store::{decode_binding, decode_debinding, decode_record, decode_sender};
use super::{Binding, Debinding, Record, Sender, Store, WriteSet};
use crate::golix::Ghid;
use crate::persist::PersistError;

pub use rows::RowKey;
use rows::{pair, Row};

/// How long [`NatsStore::connect`] keeps retrying a cluster that is not ready.
const OPEN_DEADLINE: Duration = Duration::from_secs(60);
/// How often each front-end sweeps abandoned transactions.
const SWEEP_EVERY: Duration = Duration::from_secs(30);
/// Attempts of one transaction before giving up with `unavailable` (each retry follows a
/// conflict with a concurrent writer of the same rows).
const MAX_ATTEMPTS: u32 = 24;

/// How to reach and lay out the cluster (`server.store: nats://…` and `server.nats.*`).
#[derive(Clone, PartialEq, Eq)]
pub struct NatsOptions {
    /// `nats://host:port` (or `tls://`) of one or more servers of the cluster.
    pub servers: Vec<String>,
    /// Prefix of every bucket and subject ("hgx"): several persisters can share a cluster.
    pub namespace: String,
    /// KV buckets the rows are spread over. Fixed when the namespace is first used.
    pub partitions: usize,
    /// Replicas per bucket; `None` = 3 when the cluster has at least 3 nodes, else 1.
    pub replicas: Option<usize>,
    /// Objects larger than this go to the object store instead of their KV row.
    pub inline_max: usize,
    /// A NATS credentials file (JWT + nkey seed).
    pub creds_file: Option<PathBuf>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
    /// PEM CA bundle to verify the servers with (TLS).
    pub tls_ca: Option<PathBuf>,
    /// PEM client certificate and key (mutual TLS).
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Refuse to talk to a server without TLS.
    pub tls_required: bool,
    /// Connect and per-request timeout.
    pub timeout: Duration,
}

impl std::fmt::Debug for NatsOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsOptions")
            .field("servers", &self.servers)
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
            .field("tls_required", &self.tls_required)
            .finish_non_exhaustive()
    }
}

impl NatsOptions {
    /// Default options for the servers of a `nats://HOST:PORT[,HOST:PORT…]` value.
    pub fn from_url(spec: &str) -> Result<NatsOptions, PersistError> {
        Ok(NatsOptions {
            servers: parse_servers(spec)?,
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
            timeout: Duration::from_secs(5),
        })
    }
}

/// `nats://a:1,b:2` or `nats://a:1,nats://b:2` (also `tls://`) -> one URL per server.
pub fn parse_servers(spec: &str) -> Result<Vec<String>, PersistError> {
    let bad = |why: &str| PersistError::BadArgs(format!("store {spec:?}: {why}"));
    let (scheme, rest) = spec
        .split_once("://")
        .ok_or_else(|| bad("expected nats://HOST:PORT[,HOST:PORT…]"))?;
    if scheme != "nats" && scheme != "tls" {
        return Err(bad("the scheme must be nats:// or tls://"));
    }
    if rest.contains('@') {
        // Keeps the store value free of secrets (it is logged), and this message too.
        return Err(PersistError::BadArgs(
            "store URL: put credentials in server.nats (creds_file, user/password, token), \
             not in the URL"
                .into(),
        ));
    }
    let mut out = Vec::new();
    for part in rest.split(',').map(str::trim) {
        let hostport = part
            .strip_prefix("nats://")
            .or_else(|| part.strip_prefix("tls://"))
            .unwrap_or(part);
        let (host, port) = hostport
            .rsplit_once(':')
            .ok_or_else(|| bad("every server needs HOST:PORT"))?;
        if host.is_empty() || port.parse::<u16>().is_err() {
            return Err(bad("every server needs HOST:PORT"));
        }
        out.push(format!("{scheme}://{hostport}"));
    }
    Ok(out)
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> PersistError {
    PersistError::Unavailable(format!("nats {what}: {e}"))
}

/// JetStream operations since start, by kind: where a publish's round trips go.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct OpCounts {
    /// Row reads: rule passes, plain reads, validation, roll-forward checks.
    pub row_reads: u64,
    /// Transaction record reads (resolving another transaction's lock, clean-up).
    pub record_reads: u64,
    /// Reads checking a key's revision just before a conditional write.
    pub check_reads: u64,
    /// Acknowledged appends (conditional writes).
    pub appends: u64,
    /// Appends refused because another writer had appended to the partition since.
    pub retries: u64,
    /// Message deletes (emptied rows, finished records).
    pub deletes: u64,
}

#[derive(Default)]
struct Ops {
    row_reads: AtomicU64,
    record_reads: AtomicU64,
    check_reads: AtomicU64,
    appends: AtomicU64,
    retries: AtomicU64,
    deletes: AtomicU64,
}

impl Ops {
    fn count(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> OpCounts {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        OpCounts {
            row_reads: get(&self.row_reads),
            record_reads: get(&self.record_reads),
            check_reads: get(&self.check_reads),
            appends: get(&self.appends),
            retries: get(&self.retries),
            deletes: get(&self.deletes),
        }
    }
}

/// What the async side shares.
pub(crate) struct Core {
    js: jetstream::Context,
    parts: Vec<kv::Store>,
    /// What this process knows of each partition's stream, and its writer lock (see
    /// `partition`).
    state: Vec<partition::Partition>,
    blobs: object_store::ObjectStore,
    inline_max: usize,
    /// Largest row we write (the server's max_payload, less headroom for headers).
    max_row: usize,
    ops: Ops,
    log: Logger,
}

/// The cluster store. Cheap to share (`Arc`); dropping the last handle stops the runtime.
pub struct NatsStore {
    core: Arc<Core>,
    client: async_nats::Client,
    notify: async_nats::Client,
    replicas: usize,
    namespace: String,
    handle: tokio::runtime::Handle,
    /// Held only to be shut down without blocking in `Drop`.
    runtime: Mutex<Option<tokio::runtime::Runtime>>,
}

impl std::fmt::Debug for NatsStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsStore")
            .field("namespace", &self.namespace)
            .field("replicas", &self.replicas)
            .finish_non_exhaustive()
    }
}

impl Drop for NatsStore {
    fn drop(&mut self) {
        if let Some(rt) = self
            .runtime
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            rt.shutdown_background();
        }
    }
}

/// Runs `fut` on `handle` and waits for it from any thread (including an event loop's: this
/// blocks it, but never panics the way `block_on` inside a runtime would).
fn block_on<F>(handle: &tokio::runtime::Handle, fut: F) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    handle.spawn(async move {
        let _ = tx.send(fut.await);
    });
    rx.recv()
        .expect("the nats runtime runs until the store is dropped")
}

async fn connect_one(
    opts: &NatsOptions,
    name: &str,
    no_echo: bool,
    log: &Logger,
) -> Result<async_nats::Client, PersistError> {
    let mut c = async_nats::ConnectOptions::new()
        .name(name)
        .connection_timeout(opts.timeout)
        .request_timeout(Some(opts.timeout))
        .require_tls(opts.tls_required);
    if no_echo {
        c = c.no_echo();
    }
    if let Some(path) = &opts.creds_file {
        c = c
            .credentials_file(path)
            .await
            .map_err(|e| PersistError::BadArgs(format!("{}: {e}", path.display())))?;
    }
    if let (Some(u), Some(p)) = (&opts.user, &opts.password) {
        c = c.user_and_password(u.clone(), p.clone());
    }
    if let Some(t) = &opts.token {
        c = c.token(t.clone());
    }
    if let Some(ca) = &opts.tls_ca {
        c = c.add_root_certificates(ca.clone());
    }
    if let (Some(cert), Some(key)) = (&opts.tls_cert, &opts.tls_key) {
        c = c.add_client_certificate(cert.clone(), key.clone());
    }
    let events = log.clone();
    c = c.event_callback(move |event| {
        let log = events.clone();
        async move {
            match event {
                async_nats::Event::Connected => info!(log, "nats connected"),
                other => warn!(log, "nats connection"; "event" => %other),
            }
        }
    });
    let addrs: Vec<async_nats::ServerAddr> = opts
        .servers
        .iter()
        .map(|s| s.parse())
        .collect::<Result<_, _>>()
        .map_err(|e| PersistError::BadArgs(format!("nats server address: {e}")))?;
    c.connect(addrs)
        .await
        .map_err(|e| unavailable("connect", e))
}

/// Bucket (and subject token) names: letters, digits, `_` and `-`.
fn check_namespace(ns: &str) -> Result<(), PersistError> {
    let ok = !ns.is_empty()
        && ns.len() <= 32
        && ns
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(PersistError::BadArgs(format!(
            "nats namespace {ns:?}: use 1-32 letters, digits, _ or -"
        )))
    }
}

/// A KV bucket whose stream allows deleting single messages (the commit protocol deletes
/// finished transaction records and emptied rows instead of leaving tombstones) and serves
/// reads from its leader only (no stale direct gets).
async fn row_bucket(
    js: &jetstream::Context,
    bucket: &str,
    replicas: usize,
    max_row: usize,
) -> Result<kv::Store, PersistError> {
    let config = stream::Config {
        name: format!("KV_{bucket}"),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: 1,
        max_messages: -1,
        max_bytes: -1,
        max_message_size: i32::try_from(max_row + 4096).unwrap_or(i32::MAX),
        num_replicas: replicas,
        storage: stream::StorageType::File,
        discard: stream::DiscardPolicy::Old,
        allow_rollup: true,
        deny_delete: false,
        allow_direct: false,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    };
    let s = js
        .get_or_create_stream(config)
        .await
        .map_err(|e| unavailable(&format!("bucket {bucket}"), e))?;
    if s.cached_info().config.num_replicas != replicas {
        return Err(PersistError::Storage(format!(
            "bucket {bucket} has {} replicas, configured {replicas}",
            s.cached_info().config.num_replicas
        )));
    }
    js.get_key_value(bucket)
        .await
        .map_err(|e| unavailable(&format!("bucket {bucket}"), e))
}

impl NatsStore {
    /// Connects, creates the buckets if needed (checking the partition count recorded at
    /// first use), and starts the sweeper.
    pub fn connect(opts: &NatsOptions, log: Logger) -> Result<NatsStore, PersistError> {
        check_namespace(&opts.namespace)?;
        if opts.servers.is_empty() {
            return Err(PersistError::BadArgs("no nats server given".into()));
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("hgx-nats")
            .enable_all()
            .build()
            .map_err(|e| PersistError::Storage(format!("nats runtime: {e}")))?;
        let handle = runtime.handle().clone();
        let o = opts.clone();
        let l = log.clone();
        let opened = block_on(&handle, async move {
            // A cluster that is starting (or electing stream leaders) answers "unavailable"
            // for a while: retry for a bounded time.
            let deadline = std::time::Instant::now() + OPEN_DEADLINE;
            loop {
                match open(&o, l.clone()).await {
                    Err(PersistError::Unavailable(e)) if std::time::Instant::now() < deadline => {
                        warn!(l, "cluster store not ready, retrying"; "error" => &e);
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    other => return other,
                }
            }
        });
        let (core, client, notify, replicas) = match opened {
            Ok(v) => v,
            Err(e) => {
                runtime.shutdown_background();
                return Err(e);
            }
        };
        let store = NatsStore {
            core: Arc::new(core),
            client,
            notify,
            replicas,
            namespace: opts.namespace.clone(),
            handle,
            runtime: Mutex::new(Some(runtime)),
        };
        let core = store.core.clone();
        store.handle.spawn(async move {
            let mut seen = Default::default();
            loop {
                if let Err(e) = core.sweep(&mut seen).await {
                    warn!(core.log, "sweep of abandoned transactions failed"; "error" => %e);
                }
                tokio::time::sleep(SWEEP_EVERY).await;
            }
        });
        info!(log, "cluster store ready"; "servers" => ?opts.servers,
            "namespace" => &opts.namespace, "partitions" => opts.partitions,
            "replicas" => replicas);
        Ok(store)
    }

    /// The replicas every bucket was opened with.
    pub fn replicas(&self) -> usize {
        self.replicas
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The runtime that drives the connections (for tasks that use [`NatsStore::notify_client`]).
    pub fn handle(&self) -> &tokio::runtime::Handle {
        &self.handle
    }

    /// A second connection, opened with `no_echo` (a front-end never receives its own
    /// notifications back), for core NATS publish/subscribe.
    pub fn notify_client(&self) -> async_nats::Client {
        self.notify.clone()
    }

    /// The store's connection.
    pub fn client(&self) -> async_nats::Client {
        self.client.clone()
    }

    /// JetStream operations since start, by kind.
    pub fn ops(&self) -> OpCounts {
        self.core.ops.snapshot()
    }

    /// Finishes or aborts abandoned transactions now (the sweeper does this periodically).
    pub fn sweep_now(&self) -> Result<(), PersistError> {
        let core = self.core.clone();
        block_on(&self.handle, async move {
            let mut seen = Default::default();
            core.sweep(&mut seen).await
        })
    }

    fn run<F>(&self, f: impl FnOnce(Arc<Core>) -> F) -> F::Output
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        block_on(&self.handle, f(self.core.clone()))
    }

    /// The committed content of a row.
    fn row(&self, key: RowKey) -> Result<Row, PersistError> {
        self.run(|core| async move { core.resolve(&key).await })
    }
}

async fn open(
    opts: &NatsOptions,
    log: Logger,
) -> Result<(Core, async_nats::Client, async_nats::Client, usize), PersistError> {
    let client = connect_one(opts, "hgx-persister store", false, &log).await?;
    let notify = connect_one(opts, "hgx-persister notify", true, &log).await?;
    let info = client.server_info();
    if !info.jetstream {
        return Err(PersistError::Unavailable(format!(
            "nats server {} has JetStream disabled",
            info.server_name
        )));
    }
    let nodes = info.connect_urls.len().max(opts.servers.len());
    let replicas = match opts.replicas {
        Some(r) => r.clamp(1, 5),
        None if info.cluster.is_some() && nodes >= 3 => 3,
        None => 1,
    };
    let max_row = info.max_payload.saturating_sub(8 * 1024).max(64 * 1024);
    let mut js = jetstream::new(client.clone());
    js.set_timeout(opts.timeout);
    let mut parts = Vec::with_capacity(opts.partitions);
    for i in 0..opts.partitions.max(1) {
        parts.push(
            row_bucket(
                &js,
                &format!("{}_rows_{i}", opts.namespace),
                replicas,
                max_row,
            )
            .await?,
        );
    }
    let blobs_name = format!("{}_blobs", opts.namespace);
    let blobs = match js.get_object_store(&blobs_name).await {
        Ok(b) => b,
        Err(_) => js
            .create_object_store(object_store::Config {
                bucket: blobs_name.clone(),
                num_replicas: replicas,
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await
            .map_err(|e| unavailable("object store", e))?,
    };
    let core = Core {
        state: parts.iter().map(|_| Default::default()).collect(),
        js,
        parts,
        blobs,
        inline_max: opts.inline_max.min(max_row / 2),
        max_row,
        ops: Ops::default(),
        log,
    };
    for i in 0..core.parts.len() {
        core.refresh_last_seq(i).await?;
    }
    core.check_layout(opts.partitions.max(1)).await?;
    Ok((core, client, notify, replicas))
}

/// Answers of the [`Store`] read API from committed rows.
fn record_of(row: &Row) -> Result<Option<Record>, PersistError> {
    row.record.as_ref().map(|r| decode_record(r)).transpose()
}

fn bindings_of(target: &Ghid, row: &Row) -> Result<Vec<Binding>, PersistError> {
    row.members()?
        .into_iter()
        .map(|(m, v)| decode_binding(&pair(target, &m), v))
        .collect()
}

fn debindings_of(target: &Ghid, row: &Row) -> Result<Vec<Debinding>, PersistError> {
    row.members()?
        .into_iter()
        .map(|(m, v)| decode_debinding(&pair(target, &m), v))
        .collect()
}

fn requests_of(row: &Row) -> Result<Vec<(Ghid, Sender)>, PersistError> {
    row.members()?
        .into_iter()
        .map(|(g, v)| Ok((g, decode_sender(v)?)))
        .collect()
}

impl Store for NatsStore {
    fn object(&self, ghid: &Ghid) -> Result<Option<Bytes>, PersistError> {
        let row = self.row(RowKey::Object(*ghid))?;
        self.run(|core| async move { core.body(&row).await })
    }

    fn record(&self, ghid: &Ghid) -> Result<Option<Record>, PersistError> {
        record_of(&self.row(RowKey::Object(*ghid))?)
    }

    fn bindings(&self, target: &Ghid) -> Result<Vec<Binding>, PersistError> {
        bindings_of(target, &self.row(RowKey::Bindings(*target))?)
    }

    fn debindings(&self, target: &Ghid) -> Result<Vec<Debinding>, PersistError> {
        debindings_of(target, &self.row(RowKey::Debindings(*target))?)
    }

    fn requests(&self, recipient: &Ghid) -> Result<Vec<(Ghid, Sender)>, PersistError> {
        requests_of(&self.row(RowKey::Requests(*recipient))?)
    }

    fn is_collected(&self, ghid: &Ghid) -> Result<bool, PersistError> {
        Ok(self.row(RowKey::Object(*ghid))?.collected)
    }

    /// A blind write (no rule pass): committed like any transaction.
    fn apply(&self, writes: &WriteSet) -> Result<(), PersistError> {
        let w = writes.clone();
        self.transact(&mut |_| Ok(w.clone()))
    }

    /// Every write was acknowledged by JetStream (quorum of replicas) before it returned.
    fn flush(&self) -> Result<(), PersistError> {
        Ok(())
    }

    fn isolates(&self) -> bool {
        true
    }

    /// The first pass may read rows from this front-end's cache (see `partition`); a pass
    /// that used it and ends in a refusal or in nothing to write is run again without it
    /// (those outcomes are not validated by a commit), and so is every pass after a conflict.
    fn transact(&self, decide: &mut super::Decide<'_>) -> Result<(), PersistError> {
        let mut use_cache = true;
        for attempt in 0..MAX_ATTEMPTS {
            let pass = Pass {
                store: self,
                reads: Mutex::new(Default::default()),
                use_cache,
                from_cache: Mutex::new(Vec::new()),
            };
            let decided = decide(&pass);
            let from_cache = pass
                .from_cache
                .into_inner()
                .unwrap_or_else(|e| e.into_inner());
            let unconfirmed =
                !from_cache.is_empty() && decided.as_ref().map_or(true, WriteSet::is_empty);
            if unconfirmed {
                use_cache = false;
                continue;
            }
            let writes = match decided {
                Err(e) => return Err(e),
                Ok(w) if w.is_empty() => return Ok(()),
                Ok(w) => w,
            };
            let reads = pass.reads.into_inner().unwrap_or_else(|e| e.into_inner());
            let deltas = rows::deltas(&writes);
            match self.run(|core| async move { core.commit(reads, deltas).await }) {
                Ok(()) => return Ok(()),
                Err(txn::TxError::Failed(e)) => return Err(e),
                Err(txn::TxError::Conflict) => {
                    // Outdated cached rows are likely why: read them fresh from now on.
                    for key in &from_cache {
                        self.core.forget_cached(key);
                    }
                    use_cache = false;
                    // Randomised backoff so that two racing front-ends do not collide again.
                    let ms =
                        rand::Rng::gen_range(&mut rand::thread_rng(), 0..(1u64 << attempt.min(6)));
                    std::thread::sleep(Duration::from_millis(ms));
                }
            }
        }
        Err(PersistError::Unavailable(
            "too many concurrent writers of the same objects; retry".into(),
        ))
    }
}

/// One rule pass's view: every row read once, from committed state, with the revision the
/// commit checks.
struct Pass<'s> {
    store: &'s NatsStore,
    reads: Mutex<std::collections::HashMap<RowKey, (u64, Row)>>,
    /// Whether rows may come from the cache.
    use_cache: bool,
    /// Rows that did.
    from_cache: Mutex<Vec<RowKey>>,
}

impl Pass<'_> {
    fn row(&self, key: RowKey) -> Result<Row, PersistError> {
        if let Some((_, row)) = self
            .reads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Ok(row.clone());
        }
        let cached = self
            .use_cache
            .then(|| self.store.core.cached(&key))
            .flatten();
        let (rev, row) = match cached {
            Some(hit) => {
                self.from_cache
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(key);
                hit
            }
            None => self
                .store
                .run(|core| async move { core.settle(&key).await })?,
        };
        self.reads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, (rev, row.clone()));
        Ok(row)
    }
}

impl Store for Pass<'_> {
    fn object(&self, ghid: &Ghid) -> Result<Option<Bytes>, PersistError> {
        let row = self.row(RowKey::Object(*ghid))?;
        self.store.run(|core| async move { core.body(&row).await })
    }

    fn record(&self, ghid: &Ghid) -> Result<Option<Record>, PersistError> {
        record_of(&self.row(RowKey::Object(*ghid))?)
    }

    fn bindings(&self, target: &Ghid) -> Result<Vec<Binding>, PersistError> {
        bindings_of(target, &self.row(RowKey::Bindings(*target))?)
    }

    fn debindings(&self, target: &Ghid) -> Result<Vec<Debinding>, PersistError> {
        debindings_of(target, &self.row(RowKey::Debindings(*target))?)
    }

    fn requests(&self, recipient: &Ghid) -> Result<Vec<(Ghid, Sender)>, PersistError> {
        requests_of(&self.row(RowKey::Requests(*recipient))?)
    }

    fn is_collected(&self, ghid: &Ghid) -> Result<bool, PersistError> {
        Ok(self.row(RowKey::Object(*ghid))?.collected)
    }

    fn apply(&self, _: &WriteSet) -> Result<(), PersistError> {
        Err(PersistError::Storage(
            "a rule pass does not apply; its transaction does".into(),
        ))
    }

    fn flush(&self) -> Result<(), PersistError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_lists_parse_and_refuse_secrets_and_junk() {
        assert_eq!(
            parse_servers("nats://a:1,b:2").unwrap(),
            vec!["nats://a:1".to_owned(), "nats://b:2".to_owned()]
        );
        assert_eq!(
            parse_servers("tls://a:1,tls://b:2").unwrap(),
            vec!["tls://a:1".to_owned(), "tls://b:2".to_owned()]
        );
        for bad in [
            "a:1",
            "http://a:1",
            "nats://a",
            "nats://:1",
            "nats://a:x",
            "nats://user:secret@a:1",
        ] {
            let e = parse_servers(bad).unwrap_err().to_string();
            assert!(
                !e.contains("secret"),
                "the message repeats no credential: {e}"
            );
        }
        assert!(check_namespace("hgx_1-b").is_ok());
        assert!(check_namespace("a.b").is_err());
        assert!(check_namespace("").is_err());
    }

    #[test]
    fn debug_output_redacts_credentials() {
        let mut o = NatsOptions::from_url("nats://a:1").unwrap();
        o.password = Some("hunter2".into());
        o.token = Some("tok-123".into());
        let d = format!("{o:?}");
        assert!(!d.contains("hunter2") && !d.contains("tok-123"), "{d}");
    }
}
