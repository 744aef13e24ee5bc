//! `DaemonHandle`: the running daemon as the IPC layer (and tests) see it, and [`start`].
//!
//! Owns: the public API of the running daemon — app connections and every object operation
//! — and its lifecycle (start, shutdown), through the `Daemon` that [`super::boot`] wires:
//! the only holder of every actor's address (no actor holds it). Each operation passes the
//! shutdown gate, finds or loads the object's `ObjectActor` (one load per ghid at a time;
//! loading adopts a share received from another user, see `account_actor::Adopt` and
//! `AdoptLoaded`) and talks to it by message.
//!
//! Calls: [`super::boot`] (storage and login), `ObjectActor`s, the remotes (fetch and
//! [`super::pull`] for `sync`; `Stop`), the account, GC and share actors (`Sweep`, `Stop`),
//! `commit` (new objects),
//! [`super::dispatch`] (tokens, startup and private objects, share handlers) and
//! [`super::share`] (sharing with other users).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix::Addr;

use super::account::{OrphanShare, StoredSecret};
use super::account_actor::{self, AccountActor, ShareLimits};
use super::api::{AppEvent, AppId, AppToken, ObjectView};
use super::apps::AppRegistry;
use super::arbiters::ActorThreads;
use super::commit::{self, Store};
use super::dispatch;
use super::error::DaemonError;
use super::gc::GcHandle;
use super::inbox::InboxSender;
use super::link_state::RemoteStatus;
use super::local::Local;
use super::object::{self, ObjectActor, ObjectHandle, ObjectPeers, ObjectRegistry};
use super::pull::{self, Puller};
use super::remote::{RemoteEntry, Stop as RemoteStop};
use super::remote_actor::RemoteActor;
use super::share::{self, ShareHandle, SharePeers};
use crate::golix::{FirstParty, Ghid, Secret};

/// How long `sync` waits for the object to be done with what was queued before it (its
/// frames in flight, pulled frames): as long as one request to a remote may take.
const SETTLE_WAIT: Duration = super::remote::REQUEST_TIMEOUT;
/// How often an operation retries finding a live actor that is retiring under it.
const TRACK_ATTEMPTS: usize = 8;
/// At shutdown, how long connected remotes get to take what is still in their outbox (the
/// rest stays queued, durably, for the next start).
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(2);

/// What [`start`] needs.
pub struct DaemonOptions {
    /// The daemon's directory: `objects` (the local archive) and `state` (the vault).
    pub ghidcache: PathBuf,
    /// The persisters (`ws://` or `wss://` URLs of their `/ws`, with TLS trust; a persister
    /// cluster as several front-ends).
    pub remotes: Vec<RemoteEntry>,
    /// Bytes of sled page cache for each of the two databases (`config::DEFAULT_DAEMON_CACHE`
    /// for the daemon; sled's own default is 1 GiB each).
    pub cache_capacity: u64,
    /// Bounds on the shares received from other users that no app adopted yet (the
    /// `process.max_unadopted_shares*` config keys).
    pub share_limits: ShareLimits,
    /// How long the write-ahead logs of `objects` and `state` collect writes before they
    /// move into sled (`process.wal_move_ms`; `persist::store::WAL_MOVE_EVERY` by default).
    pub wal_move_every: Duration,
    pub login: Login,
}

/// How to log in.
pub enum Login {
    /// A new account for `identity` (its objects are created, stored and published).
    Create {
        identity: FirstParty,
        root_secret: Secret,
    },
    /// An existing account: its root object comes from the local cache, else a remote.
    Open {
        user_id: Ghid,
        fingerprint: Ghid,
        root_secret: Secret,
    },
}

/// What `DaemonHandle` talks to, built by [`super::boot`]: the shared local state, every
/// actor's address and the peer sets new object actors and pulls get. Only `DaemonHandle`
/// holds it; no actor reaches another through it. Dropping it stops the actor threads.
pub(super) struct Daemon {
    pub local: Arc<Local>,
    /// The local state, the remotes and the `AccountActor`.
    pub store: Store,
    pub apps: Arc<AppRegistry>,
    pub objects: Arc<ObjectRegistry>,
    pub object_peers: ObjectPeers,
    pub puller: Puller,
    pub share_peers: SharePeers,
    pub share: ShareHandle,
    pub gc: GcHandle,
    /// The owning addresses of the account and remote actors (every other holder has a weak
    /// one, as of the GC and share actors, whose handles above own them), so no cycle of
    /// strong addresses keeps an actor alive. The account's is only held; the remotes' also
    /// carry their [`RemoteStop`] at shutdown.
    pub _account_actor: Addr<AccountActor>,
    pub remote_actors: Vec<Addr<RemoteActor>>,
    pub threads: ActorThreads,
}

/// The running daemon. Cheap to clone. After [`DaemonHandle::shutdown`], drop every clone to
/// release the ghidcache (its databases are locked while open).
#[derive(Clone)]
pub struct DaemonHandle {
    daemon: Arc<Daemon>,
}

/// Starts a daemon with logging discarded.
pub async fn start(opts: DaemonOptions) -> Result<DaemonHandle, DaemonError> {
    start_with_log(opts, crate::logging::discard()).await
}

/// Starts a daemon that logs to `log`.
pub async fn start_with_log(
    opts: DaemonOptions,
    log: slog::Logger,
) -> Result<DaemonHandle, DaemonError> {
    let daemon = Arc::new(super::boot::boot(opts, log).await?);
    Ok(DaemonHandle { daemon })
}

impl DaemonHandle {
    pub fn fingerprint(&self) -> Ghid {
        self.daemon.local.fingerprint()
    }

    pub fn user_id(&self) -> Ghid {
        self.daemon.local.user_id
    }

    /// Each remote's connection state and outbox depth, in configuration order.
    pub fn remotes(&self) -> Vec<RemoteStatus> {
        self.daemon
            .store
            .upstream
            .remotes()
            .iter()
            .map(|r| r.status(self.daemon.local.publish_queue.pending(r.queue())))
            .collect()
    }

    /// A new app session whose events go to `events` (its [`AppInbox`](super::inbox::AppInbox)).
    /// The shares its inbox gives up when it closes are kept in the account as orphans, for
    /// the app's next session.
    pub fn connect_app(&self, events: InboxSender) -> AppId {
        let account = self.daemon.store.account.clone();
        events.on_lost_share(move |e| {
            if let AppEvent::Share {
                ghid,
                origin,
                api_id,
            } = e
            {
                account.tell(account_actor::KeepOrphan(OrphanShare {
                    ghid,
                    origin,
                    api_id,
                }));
            }
        });
        self.daemon.apps.connect(events)
    }

    /// Ends an app session: its trackers are released; other apps are unaffected.
    pub fn disconnect_app(&self, app: AppId) {
        for ghid in self.daemon.apps.disconnect(app) {
            if let Some(h) = self.daemon.objects.get(&ghid) {
                h.tell(object::Untrack { app });
            }
        }
    }

    /// An object's actor that is gone: the object retired (`dead_object`), or the daemon is
    /// shutting down (`shutting_down`).
    fn mailbox_error(&self, e: actix::MailboxError, ghid: Ghid) -> DaemonError {
        if self.daemon.local.gate.is_closed() {
            return DaemonError::ShuttingDown;
        }
        match e {
            actix::MailboxError::Closed => DaemonError::DeadObject(ghid.to_string()),
            actix::MailboxError::Timeout => DaemonError::from(e),
        }
    }

    fn check_app(&self, app: AppId) -> Result<(), DaemonError> {
        if self.daemon.apps.is_connected(app) {
            Ok(())
        } else {
            Err(DaemonError::BadArgs(format!("app {app} is not connected")))
        }
    }

    pub async fn new_object(
        &self,
        app: AppId,
        state: Vec<u8>,
        api_id: Option<Ghid>,
        dynamic: bool,
        private: bool,
    ) -> Result<ObjectView, DaemonError> {
        let _pass = self.daemon.local.gate.enter()?;
        self.check_app(app)?;
        let owner = if private {
            Some(dispatch::private_owner(&self.daemon.apps, app)?)
        } else {
            None
        };
        let loaded = commit::create(&self.daemon.store, state, api_id, dynamic, private).await?;
        let ghid = loaded.ghid;
        match owner {
            Some(token) => dispatch::record_private(&self.daemon.store, ghid, token).await?,
            // The user's other apps handling this api id are offered it (no request needed).
            None => {
                dispatch::offer(
                    &self.daemon.apps,
                    ghid,
                    self.fingerprint(),
                    api_id,
                    Some(app),
                );
            }
        }
        let view = self
            .daemon
            .objects
            .spawn(&self.daemon.object_peers, loaded, app);
        if dynamic {
            self.daemon.store.upstream.subscribe(ghid);
        }
        Ok(view)
    }

    pub async fn get_object(&self, app: AppId, ghid: Ghid) -> Result<ObjectView, DaemonError> {
        let _pass = self.daemon.local.gate.enter()?;
        self.check_app(app)?;
        Ok(self.track(app, ghid).await?.1)
    }

    /// The object's actor, loading it if needed, with `app` tracking it.
    async fn track(
        &self,
        app: AppId,
        ghid: Ghid,
    ) -> Result<(ObjectHandle, ObjectView), DaemonError> {
        let daemon = &self.daemon;
        dispatch::check_access(&daemon.store, &daemon.apps, app, ghid).await?;
        for _ in 0..TRACK_ATTEMPTS {
            if let Some(h) = daemon.objects.get(&ghid) {
                if let Ok(Some(view)) = h.ask(object::Track { app }).await {
                    return Ok((h, view));
                }
                tokio::task::yield_now().await;
                continue;
            }
            let lock = daemon.objects.load_lock(&ghid);
            let _loading = lock.lock().await;
            if daemon.objects.get(&ghid).is_some() {
                continue;
            }
            // An app loads it: a share received from another user is ours from now on.
            // Told, not asked: a load must not wait behind an account flush. Told again
            // once the object is live (below): a share recorded while it loaded, or
            // forgotten while the load read its secret (recorded and followed again), is
            // this app's too.
            daemon.store.account.tell(account_actor::Adopt(ghid));
            let loaded = commit::load(&daemon.store, ghid).await?;
            if loaded.ghid != ghid {
                // A binding's ghid: track its target instead.
                return Box::pin(self.track(app, loaded.ghid)).await;
            }
            let dynamic = loaded.frame.is_some();
            let adopted = account_actor::AdoptLoaded {
                ghid,
                stored: StoredSecret {
                    secret: loaded.secret.clone(),
                    container: loaded.container,
                },
                counter: loaded.frame.as_ref().map_or(0, |f| f.counter),
                api_id: loaded.api_id,
            };
            let view = daemon.objects.spawn(&daemon.object_peers, loaded, app);
            daemon.store.account.tell(adopted);
            // Gone already only if the app disconnected meanwhile.
            let h = daemon
                .objects
                .get(&ghid)
                .ok_or_else(|| DaemonError::DeadObject(ghid.to_string()))?;
            if !dynamic {
                return Ok((h, view));
            }
            daemon.store.upstream.subscribe(ghid);
            // The local cache may be stale (nothing was subscribed): a quiet pull from a
            // connected remote first, so the app starts from the current state.
            let Some(r) = daemon.store.upstream.first_connected() else {
                return Ok((h, view));
            };
            if let Some(bytes) = r.fetch(&ghid).await {
                if let Err(e) = pull::frame(&daemon.puller, &r, bytes, None).await {
                    slog::debug!(daemon.local.log, "quiet pull failed"; "ghid" => %ghid, "error" => %e);
                }
            }
            let view = h.ask(object::View).await.unwrap_or(view);
            return Ok((h, view));
        }
        Err(DaemonError::DeadObject(ghid.to_string()))
    }

    /// Sends a request to the object's actor (loading it and tracking it for `app` first if
    /// needed). When the app already tracks the object the message is sent without any other
    /// await, so concurrent requests of one app reach the actor in call order.
    async fn ask<M>(&self, app: AppId, ghid: Ghid, msg: M) -> Result<M::Result, DaemonError>
    where
        M: actix::Message + Send + 'static,
        M::Result: Send,
        ObjectActor: actix::Handler<M>,
    {
        self.check_app(app)?;
        let live = self
            .daemon
            .objects
            .get(&ghid)
            .filter(|_| self.daemon.apps.tracks(app, &ghid));
        let h = match live {
            Some(h) => h,
            None => self.track(app, ghid).await?.0,
        };
        h.ask(msg).await.map_err(|e| self.mailbox_error(e, ghid))
    }

    /// Refuses changes to an object that is not loaded and is not ours (or, with
    /// `need_dynamic`, is static) before trying to load it: we may not even be able to read it.
    async fn check_mutable(&self, ghid: Ghid, need_dynamic: bool) -> Result<(), DaemonError> {
        if self.daemon.objects.get(&ghid).is_some() {
            return Ok(());
        }
        if let Some((author, dynamic)) = commit::owner(&self.daemon.store, ghid).await? {
            if author != self.fingerprint() {
                return Err(DaemonError::LocallyImmutable(format!(
                    "{ghid} belongs to {author}"
                )));
            }
            if need_dynamic && !dynamic {
                return Err(DaemonError::LocallyImmutable(format!("{ghid} is static")));
            }
        }
        Ok(())
    }

    /// New state for a dynamic object of ours. Resolves once a frame with this state (or a
    /// newer one) is durable locally and queued for every remote.
    pub async fn push(
        &self,
        app: AppId,
        ghid: Ghid,
        state: Vec<u8>,
        private: Option<bool>,
    ) -> Result<(), DaemonError> {
        let _pass = self.daemon.local.gate.enter()?;
        self.check_mutable(ghid, true).await?;
        self.ask(
            app,
            ghid,
            object::Push {
                app,
                state,
                private,
            },
        )
        .await?
    }

    /// Fetches the current frame from the remotes and pulls it. With no remotes configured,
    /// the local state; with remotes but none reachable, `UnavailableUpstream`. The answer is
    /// about what this sync pulled (never an earlier pull's failure); `unavailable` if the
    /// object is not done with what was queued before it within `SETTLE_WAIT` (10 s).
    pub async fn sync(&self, app: AppId, ghid: Ghid) -> Result<ObjectView, DaemonError> {
        let _pass = self.daemon.local.gate.enter()?;
        self.check_app(app)?;
        let (h, view) = self.track(app, ghid).await?;
        let upstream = &self.daemon.store.upstream;
        if !view.dynamic || upstream.is_empty() {
            return Ok(view);
        }
        // Every remote that answers is pulled from; one that cannot be asked is skipped
        // while another answers. A frame a remote has and that could not be applied fails
        // the sync (a temporary failure first: the app may retry it), never an `ok` with
        // the state from before.
        let sync = object::new_sync();
        let mut reached = false;
        let mut failed: Option<DaemonError> = None;
        for i in 0..upstream.remotes().len() {
            let r = upstream.one(i);
            let bytes = match r.fetch_checked(&ghid).await {
                Ok(Some(bytes)) => bytes,
                Ok(None) => {
                    reached = true;
                    continue;
                }
                Err(_) => continue,
            };
            reached = true;
            if let Err(e) = pull::frame(&self.daemon.puller, &r, bytes, Some(sync)).await {
                slog::warn!(self.daemon.local.log, "sync: a remote's frame not applied";
                    "ghid" => %ghid, "remote" => r.name(), "error" => %e);
                if !failed.as_ref().is_some_and(|f| f.is_temporary()) {
                    failed = Some(e);
                }
            }
        }
        if !reached {
            return Err(DaemonError::UnavailableUpstream(ghid.to_string()));
        }
        if let Some(e) = failed {
            return Err(e);
        }
        // Once what was pulled is applied (it waits for the object's frames in flight),
        // bounded so that the app always gets an answer.
        match tokio::time::timeout(SETTLE_WAIT, h.ask(object::Settled(sync))).await {
            Ok(settled) => settled.map_err(|e| self.mailbox_error(e, ghid))?,
            Err(_) => Err(DaemonError::Unavailable(format!(
                "{ghid}: not settled within {} s",
                SETTLE_WAIT.as_secs()
            ))),
        }
    }

    /// Binds the current container statically; returns its ghid (a static object).
    pub async fn freeze(&self, app: AppId, ghid: Ghid) -> Result<Ghid, DaemonError> {
        let _pass = self.daemon.local.gate.enter()?;
        self.ask(app, ghid, object::Freeze).await?
    }

    /// Our own binding on the object: it survives its owner's delete. Holding needs no
    /// secret: an object we cannot read (not shared with us) is held without being tracked.
    pub async fn hold(&self, app: AppId, ghid: Ghid) -> Result<(), DaemonError> {
        let _pass = self.daemon.local.gate.enter()?;
        match self.ask(app, ghid, object::Hold).await {
            Err(DaemonError::UnknownSecret(_)) => {
                if !commit::holds(&self.daemon.store, &ghid)? {
                    commit::hold(&self.daemon.store, &ghid).await?;
                }
                Ok(())
            }
            other => other?,
        }
    }

    /// Stops tracking for this app only (nothing changes anywhere else).
    pub async fn discard(&self, app: AppId, ghid: Ghid) -> Result<(), DaemonError> {
        let _pass = self.daemon.local.gate.enter()?;
        self.daemon.apps.untrack(app, &ghid);
        if let Some(h) = self.daemon.objects.get(&ghid) {
            h.tell(object::Untrack { app });
        }
        Ok(())
    }

    /// Deletes an object of ours everywhere; every other tracker gets `Delete`.
    pub async fn delete(&self, app: AppId, ghid: Ghid) -> Result<(), DaemonError> {
        let _pass = self.daemon.local.gate.enter()?;
        self.check_mutable(ghid, false).await?;
        self.ask(app, ghid, object::Delete { app }).await?
    }

    /// Binds an app token to this session: a new one for `None`, else a known one. Returns
    /// the token and its startup object.
    pub async fn register_token(
        &self,
        app: AppId,
        token: Option<AppToken>,
    ) -> Result<(AppToken, Option<Ghid>), DaemonError> {
        let _pass = self.daemon.local.gate.enter()?;
        self.check_app(app)?;
        dispatch::register_token(&self.daemon.store, &self.daemon.apps, app, token).await
    }

    /// Sets the startup object of the session's token.
    pub async fn register_startup(&self, app: AppId, ghid: Ghid) -> Result<(), DaemonError> {
        let _pass = self.daemon.local.gate.enter()?;
        self.check_app(app)?;
        dispatch::register_startup(&self.daemon.store, &self.daemon.apps, app, ghid).await
    }

    /// Clears the startup object of the session's token.
    pub async fn deregister_startup(&self, app: AppId) -> Result<(), DaemonError> {
        let _pass = self.daemon.local.gate.enter()?;
        self.check_app(app)?;
        dispatch::deregister_startup(&self.daemon.store, &self.daemon.apps, app).await
    }

    /// This session handles incoming shares of `api_id` (kept ones are offered at once).
    pub async fn register_share_handler(
        &self,
        app: AppId,
        api_id: Ghid,
    ) -> Result<(), DaemonError> {
        let _pass = self.daemon.local.gate.enter()?;
        self.check_app(app)?;
        dispatch::register_share_handler(&self.daemon.store, &self.daemon.apps, app, api_id).await
    }

    /// This session no longer handles shares of `api_id`.
    pub async fn deregister_share_handler(
        &self,
        app: AppId,
        api_id: Ghid,
    ) -> Result<(), DaemonError> {
        let _pass = self.daemon.local.gate.enter()?;
        self.check_app(app)?;
        dispatch::deregister_share_handler(&self.daemon.apps, app, api_id)
    }

    /// Shares an object with another user (their fingerprint). Resolves once the request is
    /// durable locally and queued for every remote; the outcome arrives later as a
    /// `ShareResult` event.
    pub async fn share(&self, app: AppId, ghid: Ghid, recipient: Ghid) -> Result<(), DaemonError> {
        let _pass = self.daemon.local.gate.enter()?;
        self.check_app(app)?;
        dispatch::check_access(&self.daemon.store, &self.daemon.apps, app, ghid).await?;
        let daemon = &self.daemon;
        share::share(&daemon.share_peers, &daemon.share, app, ghid, recipient).await
    }

    /// Stops accepting work, waits for operations in flight, stops every actor, flushes the
    /// account, the vault and the archive, and disconnects the remotes.
    pub async fn shutdown(&self) -> Result<(), DaemonError> {
        let daemon = &self.daemon;
        if daemon.local.gate.is_closed() {
            return Ok(());
        }
        daemon.local.gate.close().await;
        for (_, h) in daemon.objects.all() {
            let _ = h.ask(object::Stop).await;
        }
        daemon.share.stop().await;
        let flushed = daemon.store.account.stop().await;
        let (local, remotes) = (&daemon.local, daemon.store.upstream.remotes());
        let deadline = tokio::time::Instant::now() + SHUTDOWN_DRAIN;
        while tokio::time::Instant::now() < deadline
            && remotes
                .iter()
                .enumerate()
                .any(|(q, r)| r.is_connected() && local.publish_queue.pending(q) > 0)
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for a in &daemon.remote_actors {
            let _ = a.send(RemoteStop).await;
        }
        // Every actor is dropped with its arbiter.
        daemon.threads.stop().await;
        local.vault.flush().await?;
        local.archive.sync().await?;
        flushed
    }

    /// Sweeps secrets of removed objects now (normally periodic). Returns how many.
    pub async fn collect_garbage(&self) -> Result<usize, DaemonError> {
        self.daemon.gc.sweep().await
    }

    /// Per remote URL: notifications and catch-up frames waiting to be pulled, as last seen,
    /// and the most that ever waited (at most `remote_actor::PULL_QUEUE`; for tests).
    pub fn pull_backlog(&self) -> Vec<(String, usize, usize)> {
        let remotes = self.daemon.store.upstream.remotes();
        remotes
            .iter()
            .map(|r| {
                let (now, peak) = r.pull_backlog();
                (r.primary_url().to_owned(), now, peak)
            })
            .collect()
    }

    /// Publish-queue ("outbox") entries not yet acknowledged, per remote URL (for status displays and tests).
    pub fn outbox_pending(&self) -> Vec<(String, usize)> {
        let o = &self.daemon.local.publish_queue;
        (0..o.len())
            .map(|q| (o.url(q).to_owned(), o.pending(q)))
            .collect()
    }
}
