//! Daemon start-up: the ghidcache directory (mode 0700), the local archive
//! (`<ghidcache>/objects`), login (create the account, or open it from the local cache or
//! else a remote), the vault (`<ghidcache>/state`, keyed by the account), and the actors.
//!
//! A wrong password is detected before anything is written: the root object is fetched and
//! verified in memory, the account opened, and only then are fetched objects ingested and
//! the vault opened. (Before that, outbox entries that open with the given password — the
//! write-ahead log of a commit a crash cut short — are ingested into the local archive.)
//! A crash never locks the account out: a local root frame whose container is lost makes the
//! login open a remote's root and continue after the local frame (see `find_root`).
//!
//! Owns: nothing after start. Calls: `Archive`, `Account`, `Vault`, `PublishQueue`, the persist
//! client (through the remote `Connector`). Builds the [`Local`] state and the [`Upstream`],
//! starts the account, GC, share and remote actors, and wires them: each gets exactly the
//! peers it talks to, as weak addresses or `Recipient`s, and the `Daemon` that
//! `DaemonHandle` holds gets the owning addresses and the rest.

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::account::{vault_key, Account};
use super::account_actor::AccountHandle;
use super::apps::AppRegistry;
use super::arbiters::{self, ActorThreads};
use super::commit::Store;
use super::daemon::{Daemon, DaemonOptions, Login};
use super::error::DaemonError;
use super::gc::{GcHandle, GcPeers, Liveness};
use super::limits;
use super::local::{Gate, Local};
use super::object::{ObjectPeers, ObjectRegistry};
use super::publish_queue::{self, PublishQueue};
use super::pull::Puller;
use super::remote::{Connector, RemoteEntry, RemoteHandle, RemoteTarget};
use super::remote_actor::{self, RemotePeers};
use super::share::{ShareHandle, SharePeers};
use super::upstream::Upstream;
use super::vault::Vault;
use crate::golix::{Geoc, Ghid, Gobd, Object, Policy, SecondParty};
use crate::persist::store::{sled_gate, LoggedTree};
use crate::persist::{Archive, PersistError, Status};

/// The vault's tree name.
const VAULT_TREE: &str = "daemon";
/// How long to keep retrying a database still locked by a daemon that is shutting down.
const LOCK_WAIT: Duration = Duration::from_secs(5);
/// Per-remote limit when fetching the account's root object at login.
const LOGIN_FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens the storage, logs in, starts the actors.
pub(super) async fn boot(opts: DaemonOptions, log: slog::Logger) -> Result<Daemon, DaemonError> {
    make_private_dir(&opts.ghidcache)?;
    let urls: Vec<String> = opts.remotes.iter().map(|r| r.url().to_owned()).collect();
    let objects = opts.ghidcache.join("objects");
    let cache = opts.cache_capacity;
    // Behind the write-ahead log, as the persister's: a sync is one `fdatasync` of the log
    // instead of a sled flush (sled writes each flush's buffer on its I/O pool, and every
    // job there wakes all of its idle threads).
    let archive = retry_locked(|| {
        Archive::open_logged(&objects, cache, opts.wal_move_every, log.clone())
            .map_err(DaemonError::from)
    })
    .await?;
    let threads = ActorThreads::start(arbiters::default_count())
        .map_err(|e| DaemonError::Storage(format!("cannot start the actor threads: {e}")))?;
    let connector = Connector::new(threads.next());
    let state = opts.ghidcache.join("state");
    let db = retry_locked(|| sled_gate::open_with_cache(&state, cache).map_err(DaemonError::from))
        .await?;
    let vault_tree = LoggedTree::open(
        &db,
        VAULT_TREE,
        &state.join("wal"),
        opts.wal_move_every,
        log.clone(),
    )?;
    let (account, created, root_secret) = match opts.login {
        Login::Create {
            identity,
            root_secret,
        } => {
            let secret = root_secret.clone();
            let (account, objects) =
                tokio::task::spawn_blocking(move || Account::create(identity, secret))
                    .await
                    .map_err(|e| DaemonError::Account(format!("account creation failed: {e}")))??;
            for o in &objects {
                ingest(&archive, o.clone()).await?;
            }
            archive.sync().await?;
            (account, objects, root_secret)
        }
        Login::Open {
            user_id,
            fingerprint,
            root_secret,
        } => {
            finish_interrupted_commits(&archive, &vault_tree, &state, &root_secret, &urls, &log)
                .await;
            let root =
                find_root(&archive, &connector, &opts.remotes, &user_id, &fingerprint).await?;
            let mut account = Account::open(root_secret.clone(), &root.frame, &root.container)?;
            if account.fingerprint() != fingerprint {
                return Err(DaemonError::Account(format!(
                    "the account's identity is {}, not {fingerprint}",
                    account.fingerprint()
                )));
            }
            if let Some(newest) = &root.newest {
                // Only now: a wrong password has failed above without touching anything.
                account.continue_after(newest)?;
                slog::warn!(log, "the newest local account root has lost its container: \
                    opened the remote's older root and continuing after the local frame";
                    "local_counter" => newest.counter, "remote_counter" => root.frame.counter);
            }
            for o in root.fetched {
                ingest(&archive, o).await?;
            }
            archive.sync().await?;
            (account, Vec::new(), root_secret)
        }
    };
    let vault = Vault::open_with_spill(&vault_tree, &account.vault_key(), &large(&state))?;
    if let Some(missing) = vault.spill_missing() {
        slog::warn!(log, "large outbox entries cannot be read or written until it is back: they are kept, and retried"; "missing" => missing);
    }
    let publish_queue = PublishQueue::open(vault.clone(), &urls)?;

    let mut remotes = Vec::with_capacity(opts.remotes.len());
    for (i, entry) in opts.remotes.into_iter().enumerate() {
        let max_object = limits::known(&vault, entry.url())?;
        remotes.push(RemoteHandle::new(entry, i, max_object));
    }
    let upstream = Upstream::new(remotes);
    let arbiters = threads.arbiters();
    let local = Arc::new(Local {
        runtime: tokio::runtime::Handle::current(),
        arbiters: arbiters.clone(),
        identity: account.identity().clone(),
        user_id: account.user_id(),
        archive,
        vault,
        publish_queue,
        gate: Gate::default(),
        log: log.clone(),
    });
    // Every link back to the registry is weak: it holds the object actors.
    let objects = Arc::new(ObjectRegistry::default());
    let (account_actor, account) = AccountHandle::start(
        &arbiters,
        account,
        root_secret,
        local.clone(),
        upstream.clone(),
        opts.share_limits,
        Arc::downgrade(&objects) as Weak<dyn Liveness>,
    );
    let store = Store {
        local: local.clone(),
        account,
        upstream: upstream.clone(),
    };
    let apps = Arc::new(AppRegistry::default());
    let gc = GcHandle::start(
        &arbiters,
        GcPeers {
            local: local.clone(),
            upstream: upstream.clone(),
            account: store.account.clone(),
            objects: Arc::downgrade(&objects) as Weak<dyn Liveness>,
        },
    );
    let share_peers = SharePeers {
        store: store.clone(),
        apps: apps.clone(),
        objects: Arc::downgrade(&objects),
        refusals: Arc::default(),
    };
    let share = ShareHandle::start(&arbiters, share_peers.clone());
    let puller = Puller {
        store: store.clone(),
        objects: Arc::downgrade(&objects),
        gc: gc.deleted(),
        share: share.inbox(),
    };
    let object_peers = ObjectPeers {
        store: store.clone(),
        apps: apps.clone(),
        gc: gc.deleted(),
    };
    let mut remote_actors = Vec::new();
    for handle in upstream.remotes() {
        let peers = RemotePeers {
            local: local.clone(),
            apps: apps.clone(),
            puller: puller.clone(),
        };
        let addr = remote_actor::start(&arbiters, peers, connector.clone(), handle.clone());
        remote_actors.push(addr);
    }
    for ghid in local.followed()? {
        upstream.subscribe(ghid);
    }
    if !created.is_empty() {
        local.publish_queue.enqueue(&created)?;
        local.vault.flush().await?;
    }
    slog::info!(log, "daemon started"; "fingerprint" => %local.fingerprint(),
        "user_id" => %local.user_id, "remotes" => upstream.remotes().len());
    Ok(Daemon {
        local,
        store,
        apps,
        objects,
        object_peers,
        puller,
        share_peers,
        share,
        gc,
        _account_actor: account_actor,
        remote_actors,
        threads,
    })
}

/// Ingests, in order, what the outbox holds (see [`commit::commit`](super::commit::commit)):
/// a commit that a crash cut short after its write-ahead log was durable is completed in the
/// local archive, the account root's included, before anything reads it. Objects already
/// there, or superseded since, are refused by the rules and skipped. A frame whose container
/// is neither stored nor queued (a log torn by a crash, which a commit's atomic staging now
/// prevents) is never stored: its entries are dropped, so no store gets a frame whose
/// container is lost. Entries that do not open (a wrong password) skip this; the login then
/// says why.
async fn finish_interrupted_commits(
    archive: &Archive,
    vault_tree: &LoggedTree,
    state: &Path,
    root_secret: &crate::golix::Secret,
    remotes: &[String],
    log: &slog::Logger,
) {
    let key = vault_key(root_secret);
    let vault = match Vault::open_with_spill(vault_tree, &key, &large(state)) {
        Ok(vault) => vault,
        Err(e) => {
            slog::warn!(log, "cannot open the outbox to finish interrupted commits"; "error" => %e);
            return;
        }
    };
    let entries = match publish_queue::pending_objects(&vault, remotes) {
        Ok(entries) => entries,
        Err(e) => {
            slog::warn!(log, "cannot read the outbox to finish interrupted commits"; "error" => %e);
            return;
        }
    };
    let queued: HashSet<Ghid> = entries
        .iter()
        .filter_map(|e| match decode(&e.object) {
            Ok(Object::Geoc(c)) => Some(c.ghid),
            _ => None,
        })
        .collect();
    let (mut completed, mut torn) = (0, Vec::new());
    for e in entries {
        if let Ok(Object::Gobd(f)) = decode(&e.object) {
            let target = f.target();
            let stored = matches!(archive.status(&target), Ok(Status::Present));
            if !stored && !queued.contains(&target) {
                torn.push(e.seq);
                continue;
            }
        }
        if ingest(archive, e.object).await.is_ok() {
            completed += 1;
        }
    }
    if completed > 0 {
        if let Err(e) = archive.sync().await {
            slog::warn!(log, "cannot sync the archive"; "error" => %e);
        }
        slog::info!(log, "outbox replayed into the local archive"; "objects" => completed);
    }
    if !torn.is_empty() {
        slog::warn!(log, "outbox frames without their container dropped"; "frames" => torn.len());
        let dropped = publish_queue::discard(&vault, remotes, &torn);
        if let Err(e) = async {
            dropped?;
            vault.flush().await
        }
        .await
        {
            slog::warn!(log, "cannot drop torn outbox entries"; "error" => %e);
        }
    }
}

/// Where the vault keeps its large records: beside sled's files in the state directory.
fn large(state: &Path) -> std::path::PathBuf {
    state.join("large")
}

/// Creates `dir` (and parents) and restricts it to its owner.
fn make_private_dir(dir: &Path) -> Result<(), DaemonError> {
    let err = |e: std::io::Error| DaemonError::Storage(format!("{}: {e}", dir.display()));
    std::fs::create_dir_all(dir).map_err(err)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(err)?;
    }
    Ok(())
}

/// Runs `open` until it succeeds, retrying for a while when the database is locked by a
/// daemon of this process still shutting down. (The brief hold of sled's own IO threads is
/// already waited out inside every open, blocking, by `sled_gate`; this wait is longer and
/// leaves the runtime free for the other daemon's shutdown.)
async fn retry_locked<T>(open: impl Fn() -> Result<T, DaemonError>) -> Result<T, DaemonError> {
    let deadline = tokio::time::Instant::now() + LOCK_WAIT;
    loop {
        match open() {
            Err(DaemonError::Storage(m)) | Err(DaemonError::Persist(PersistError::Storage(m)))
                if is_lock_error(&m) && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => return other,
        }
    }
}

fn is_lock_error(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("lock") || m.contains("resource temporarily unavailable") || m.contains("wouldblock")
}

async fn ingest(archive: &Archive, bytes: Vec<u8>) -> Result<(), DaemonError> {
    let archive = archive.clone();
    tokio::task::spawn_blocking(move || archive.publish(&bytes))
        .await
        .map_err(|e| DaemonError::Storage(format!("ingest task failed: {e}")))??;
    Ok(())
}

/// The account's current root frame and container, verified; `fetched` holds what came from
/// a remote (GIDC, frame, container), to ingest once the password is known to be right.
struct Root {
    frame: Gobd,
    container: Geoc,
    fetched: Vec<Vec<u8>>,
    /// A newer local frame than `frame` whose container is gone (a crash): the account opens
    /// from `frame` and its next frame follows this one (the archive refuses anything else).
    newest: Option<Gobd>,
}

fn decode(bytes: &[u8]) -> Result<Object, DaemonError> {
    Ok(Object::decode(bytes, Policy::STRICT).map_err(PersistError::from)?)
}

fn as_root(frame: &[u8], container: &[u8], user_id: &Ghid) -> Result<(Gobd, Geoc), DaemonError> {
    let (Object::Gobd(f), Object::Geoc(c)) = (decode(frame)?, decode(container)?) else {
        return Err(DaemonError::Account(
            "the user id does not name a dynamic object".into(),
        ));
    };
    if f.dynamic != *user_id || f.target() != c.ghid {
        return Err(DaemonError::Account(
            "root frame and container do not match the user id".into(),
        ));
    }
    Ok((f, c))
}

/// The local root if its frame and container are both stored, else a remote's. A local frame
/// without its container (a crash) never locks the account out: the remote's root is opened
/// instead, and if the stored frame is not older than it (the remote's frame could not be
/// stored over it), the account continues after the stored frame ([`Root::newest`]).
async fn find_root(
    archive: &Archive,
    connector: &Connector,
    remotes: &[RemoteEntry],
    user_id: &Ghid,
    fingerprint: &Ghid,
) -> Result<Root, DaemonError> {
    let mut bare = None;
    if let Some(frame) = archive.get(user_id)? {
        if let Ok(Object::Gobd(f)) = decode(&frame) {
            if let Some(container) = archive.get(&f.target())? {
                let (frame, container) = as_root(&frame, &container, user_id)?;
                return Ok(Root {
                    frame,
                    container,
                    fetched: Vec::new(),
                    newest: None,
                });
            }
            bare = Some(f);
        }
    }
    let mut root = fetch_any_root(connector, remotes, user_id, fingerprint).await?;
    if let Some(stored) = bare {
        if stored.frame != root.frame.frame && stored.counter >= root.frame.counter {
            // The remote's frame and container cannot be stored over the newer local frame;
            // its identity can.
            root.fetched.truncate(1);
            root.newest = Some(stored);
        }
    }
    Ok(root)
}

/// The verified root of the first remote (any of its front-ends) that has it.
async fn fetch_any_root(
    connector: &Connector,
    remotes: &[RemoteEntry],
    user_id: &Ghid,
    fingerprint: &Ghid,
) -> Result<Root, DaemonError> {
    let mut last = DaemonError::NotFound(format!("account {user_id} (no remote has it)"));
    for target in remotes.iter().flat_map(|r| &r.targets) {
        let url = &target.url;
        match tokio::time::timeout(
            LOGIN_FETCH_TIMEOUT,
            fetch_root(connector, target, user_id, fingerprint),
        )
        .await
        {
            Ok(Ok(root)) => return Ok(root),
            Ok(Err(e)) => last = e,
            Err(_) => {
                last = DaemonError::UnavailableUpstream(format!(
                    "{url}: timed out fetching the account"
                ))
            }
        }
    }
    Err(last)
}

/// Fetches and verifies the identity, root frame and container from one remote.
async fn fetch_root(
    connector: &Connector,
    target: &RemoteTarget,
    user_id: &Ghid,
    fingerprint: &Ghid,
) -> Result<Root, DaemonError> {
    let url = &target.url;
    let unavailable = |e: crate::persist::client::ClientError| {
        DaemonError::UnavailableUpstream(format!("{url}: {e}"))
    };
    let (client, _notes) = connector.connect(target).await.map_err(unavailable)?;
    let result = async {
        let gidc = client.get(fingerprint).await.map_err(unavailable)?;
        let frame = client.get(user_id).await.map_err(unavailable)?;
        let Object::Gidc(id) = decode(&gidc)? else {
            return Err(DaemonError::Account(format!(
                "{fingerprint} is not an identity"
            )));
        };
        let party = SecondParty::from_gidc(id)?;
        if party.ghid() != *fingerprint {
            return Err(DaemonError::Account(
                "fetched identity does not match the fingerprint".into(),
            ));
        }
        let target = match decode(&frame)? {
            Object::Gobd(f) => f.target(),
            _ => {
                return Err(DaemonError::Account(
                    "the user id does not name a dynamic object".into(),
                ))
            }
        };
        let container = client.get(&target).await.map_err(unavailable)?;
        let (f, c) = as_root(&frame, &container, user_id)?;
        if f.counter == 0 {
            // Frame 0 only fixes the address; the rest is still on its way to this remote.
            return Err(DaemonError::UnavailableUpstream(format!(
                "{url}: the account is not fully published yet"
            )));
        }
        Object::Gobd(f.clone()).verify(Some(&party))?;
        Object::Geoc(c.clone()).verify(Some(&party))?;
        Ok(Root {
            frame: f,
            container: c,
            fetched: vec![gidc.to_vec(), frame.to_vec(), container.to_vec()],
            newest: None,
        })
    }
    .await;
    client.close();
    result
}
