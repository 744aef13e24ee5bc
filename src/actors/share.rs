//! `ShareActor`: sharing objects between users with GARQ requests (docs/architecture.md,
//! docs/golix.md), one actix actor per daemon.
//!
//! **Outgoing** ([`share`], run by the asking app's request): the recipient's identity comes
//! from the local archive or any remote (`unknown_recipient` if neither has it); a handshake
//! GARQ carries the object's ghid (the dynamic ghid for a dynamic object) and the secret of
//! its *current* container, so the recipient can ratchet forward to every later frame. The
//! share is recorded in the account (`PendingShare`) and flushed before the GARQ is committed
//! locally and queued for every remote. Private objects are `unsharable`.
//!
//! **Incoming** (GARQs pushed on our fingerprint subscription, including the offline mail a
//! persister re-delivers at each subscribe), handled one at a time in arrival order:
//! 1. ingested locally: a GARQ we already debound is refused there (`already_debound`), so a
//!    request delivered twice (two remotes, a reconnect) is handled once;
//! 2. opened (OAEP, the author's identity — fetched from a remote if missing —, the MAC);
//!    a request that does not open is debound, and naked if its claimed author is known
//!    (a bad MAC): nothing reaches an app (one whose author's identity could not be asked
//!    for is retried, as in 3);
//! 3. a handshake: unless the object is ours already, the account is asked first whether
//!    one more share no app adopted yet fits the bounds (`account_actor::ShareLimits`: per
//!    sharer and in all; at the bound in all, the account may evict the newest share of the
//!    sharer holding the most for it, see `account_actor::AdmitShare`); one that does not
//!    fit is naked with [`STATUS_LIMIT`] and debound, nothing of it kept (a rate-limited
//!    warning). Then the object is fetched fresh, the
//!    secret is held in quarantine until it
//!    opens the object (it may belong to an older target of the frame's vector: a push raced
//!    the share), then recorded like our own, as received from its author until an app
//!    adopts the object; the author gets an ack (or a nak with a
//!    `STATUS_*` code), the request is debound, and a `share` event goes to the sessions
//!    handling the object's api id (kept as an orphan share if none does). A request that
//!    cannot be decided now (a remote that might hold the object or the author's identity
//!    could not be asked, a storage error) is neither answered nor debound: it is handled
//!    again after 2, 4, … 64 s ([`MAX_RETRYING`] at once), then at the next subscribe;
//! 4. an ack / nak of one of our shares: the matching `PendingShare` (same request, and the
//!    answer's author is the recipient we shared with) is removed, the asking session (or
//!    the live session of its token) gets `share_result`, and the answer is debound.
//!
//! Owns: the in-memory route from each pending request to the session that asked.
//! Messages: [`Incoming`] (from `pull`, through a [`ShareInbox`]: at most [`MAX_QUEUED`]
//! waiting), [`Requested`] (from
//! [`share`]), `Retry` (its own, later) and [`Stop`] (from `DaemonHandle::shutdown`).
//!
//! Sharing an object on (outgoing) adopts it, if it was a received share.
//!
//! Peers ([`SharePeers`]): the [`Store`] (local state, remotes, the `AccountActor`: pending,
//! orphan and received shares), the app registry (events) and the object registry, held weakly (a
//! live object's current secret, asked with `object::Current`). Calls: `golix` (requests,
//! off the event loop), [`dispatch`].

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::apps::AppRegistry;

use actix::prelude::*;
use actix::WeakRecipient;

use super::account::{AppTokenBytes, PendingShare, StoredSecret};
use super::account_actor::{self, Admission};
use super::api::{AppEvent, AppId};
use super::arbiters::Arbiters;
use super::commit::{self, Store};
use super::content;
use super::dispatch;
use super::error::DaemonError;
use super::local::SecretRecord;
use super::object::{self, ObjectRegistry};
use crate::golix::{
    cipher, Error as GolixError, Garq, Geoc, Ghid, Gobd, Object, Policy, Request, RequestBody,
    SecondParty, Secret,
};
use crate::persist::{Archive, PersistError};

/// Ack / nak status: accepted.
pub const STATUS_OK: u32 = 0;
/// Nak: the shared object could not be found.
pub const STATUS_NOT_FOUND: u32 = 1;
/// Nak: the handshake's secret does not open the shared object.
pub const STATUS_UNKNOWN_SECRET: u32 = 2;
/// Nak: the request's MAC does not verify.
pub const STATUS_BAD_MAC: u32 = 3;
/// Nak: anything else went wrong.
pub const STATUS_FAILED: u32 = 4;
/// Nak: we keep as many shares from this sharer (or from everyone) that no app of ours has
/// adopted yet as we take (`account_actor::ShareLimits`); nothing of the share was kept.
pub const STATUS_LIMIT: u32 = 5;

/// Shortest time between two warnings about shares refused at the bounds (the refusals in
/// between are counted in the next one).
const LIMIT_WARNING_INTERVAL: Duration = Duration::from_secs(60);

/// A GARQ pushed on our fingerprint subscription (raw bytes, from a remote), counted in
/// [`ShareInbox`] until handled.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Incoming(Vec<u8>, Queued);

/// Requests pushed to us and not handled yet, at most; further ones are not taken (they
/// stay on the remotes, see [`ShareInbox::offer`]). Anyone who knows our fingerprint can
/// send them as fast as a remote takes them, and each costs an RSA decryption here.
pub const MAX_QUEUED: usize = 256;

/// Where GARQs addressed to us go: the share actor, held weakly (its owner is
/// `DaemonHandle`), with a count of those not handled yet. Cheap to clone.
#[derive(Clone)]
pub struct ShareInbox {
    to: WeakRecipient<Incoming>,
    queued: Arc<AtomicUsize>,
    /// Whether a request was refused since the last one was taken (one warning per run of
    /// refusals, not one per request).
    refusing: Arc<AtomicBool>,
    /// Whether a redelivery of refused requests is scheduled (one at a time).
    redelivering: Arc<AtomicBool>,
}

/// What [`ShareInbox::offer`] did with a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Offered {
    Taken,
    /// Not taken: [`MAX_QUEUED`] wait, or the actor is gone. `first` for the first refusal
    /// since a request was last taken.
    Refused {
        first: bool,
    },
}

/// One request counted in [`ShareInbox`]; dropping it (once handled, or with its message)
/// uncounts it.
struct Queued(Arc<AtomicUsize>);

impl Drop for Queued {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl ShareInbox {
    /// Queues `garq` for the share actor, unless [`MAX_QUEUED`] wait already (or the actor
    /// is gone). A request not taken stays on the remote that sent it, undebound; the caller
    /// has it delivered again once the inbox has emptied (see `pull`).
    pub fn offer(&self, garq: Vec<u8>) -> Offered {
        match (self.enter(), self.to.upgrade()) {
            (Some(queued), Some(to)) => {
                to.do_send(Incoming(garq, queued));
                self.refusing.store(false, Ordering::Release);
                Offered::Taken
            }
            _ => Offered::Refused {
                first: !self.refusing.swap(true, Ordering::AcqRel),
            },
        }
    }

    /// Claims the one redelivery of refused requests: `false` if one is scheduled already.
    /// [`ShareInbox::redelivered`] releases it.
    pub fn claim_redelivery(&self) -> bool {
        !self.redelivering.swap(true, Ordering::AcqRel)
    }

    pub fn redelivered(&self) {
        self.redelivering.store(false, Ordering::Release);
    }

    /// Resolves once no request waits (checked every 100 ms), or after `at_most`.
    pub async fn emptied(&self, at_most: Duration) {
        let deadline = tokio::time::Instant::now() + at_most;
        while self.queued.load(Ordering::Acquire) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn enter(&self) -> Option<Queued> {
        self.queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_QUEUED).then_some(n + 1)
            })
            .ok()
            .map(|_| Queued(self.queued.clone()))
    }
}

/// `app` asked for the share whose handshake is `request`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Requested {
    pub request: Ghid,
    pub app: AppId,
}

/// A request whose handling failed for a temporary reason, handled again (`attempt` ≥ 1).
#[derive(Message)]
#[rtype(result = "()")]
struct Retry {
    request: Ghid,
    bytes: Vec<u8>,
    attempt: u32,
}

/// The first wait before a request that failed for a temporary reason (a remote that could
/// not be asked, a storage error) is handled again; it doubles at each attempt.
const RETRY_FIRST: Duration = Duration::from_secs(2);
/// Attempts after the first (2 + 4 + … + 64 s: about two minutes); after them the request
/// waits on the remotes for the next subscribe (a reconnect or a restart).
const MAX_RETRIES: u32 = 6;
/// Requests waiting for a retry at once (each holds its bytes); one more waits on the
/// remotes for the next subscribe instead.
pub const MAX_RETRYING: usize = 64;

/// Finish the request in hand and stop (requests not handled yet stay on the remotes and come
/// back at the next subscribe).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Stop;

/// Talks to the `ShareActor`. Cheap to clone.
#[derive(Clone)]
pub struct ShareHandle {
    addr: Addr<ShareActor>,
}

impl ShareHandle {
    /// Starts the `ShareActor` on one of `arbiters`.
    pub fn start(arbiters: &Arbiters, peers: SharePeers) -> ShareHandle {
        let addr = ShareActor::start_in_arbiter(&arbiters.next(), move |_| ShareActor {
            peers,
            requested: Some(HashMap::new()),
            waiting: HashSet::new(),
        });
        ShareHandle { addr }
    }

    /// Where GARQs addressed to us go (raw bytes, from a remote).
    pub fn inbox(&self) -> ShareInbox {
        ShareInbox {
            to: self.addr.clone().recipient().downgrade(),
            queued: Arc::new(AtomicUsize::new(0)),
            refusing: Arc::new(AtomicBool::new(false)),
            redelivering: Arc::new(AtomicBool::new(false)),
        }
    }

    fn requested(&self, request: Ghid, app: AppId) {
        self.addr.do_send(Requested { request, app });
    }

    /// Finishes the request in hand and stops.
    pub async fn stop(&self) {
        let _ = self.addr.send(Stop).await;
    }
}

/// What sharing reaches (see the module doc). Cheap to clone.
#[derive(Clone)]
pub struct SharePeers {
    pub store: Store,
    pub apps: Arc<AppRegistry>,
    pub objects: Weak<ObjectRegistry>,
    /// Warnings about shares refused at the bounds, rate-limited.
    pub refusals: Arc<Refusals>,
}

/// The actor: requests are handled one at a time, in arrival order (`ctx.wait` holds the
/// mailbox while one runs on the daemon's runtime).
pub struct ShareActor {
    peers: SharePeers,
    /// Handshake ghid -> the session that asked, for its `share_result`. `None` only while a
    /// request is being handled (it has the map).
    requested: Option<HashMap<Ghid, AppId>>,
    /// Requests waiting for a [`Retry`], by ghid (at most [`MAX_RETRYING`]): a request
    /// delivered again meanwhile (a reconnect, a second remote) does not start another.
    waiting: HashSet<Ghid>,
}

impl Actor for ShareActor {
    type Context = Context<Self>;
}

impl ShareActor {
    /// Handles one request (`attempt` 0: as it arrived, `queued` its place in the inbox,
    /// freed once it is handled); one that failed for a temporary reason was neither answered
    /// nor debound, and is retried later.
    fn request(
        &mut self,
        bytes: Vec<u8>,
        attempt: u32,
        queued: Option<Queued>,
        ctx: &mut Context<Self>,
    ) {
        let Some(requested) = self.requested.take() else {
            return;
        };
        let peers = self.peers.clone();
        let rt = peers.store.local.runtime.clone();
        let mut handling = Handling { peers, requested };
        let task = rt.spawn(async move {
            let peers = handling.peers.clone();
            let mut again = None;
            // Shutting down: the request stays on the remotes for the next start.
            if let Ok(_pass) = peers.store.local.gate.enter() {
                match handling.incoming(bytes.clone()).await {
                    Ok(()) | Err(DaemonError::ShuttingDown) => {}
                    Err(e) if e.is_temporary() => again = Some((bytes, e)),
                    Err(e) => {
                        slog::info!(peers.store.local.log, "request not handled"; "error" => %e)
                    }
                }
            }
            drop(queued);
            (handling.requested, again)
        });
        ctx.wait(task.into_actor(self).map(move |res, act, ctx| {
            // A request that panicked loses the routes of pending shares: their results then
            // go to the live sessions of the asking token.
            let (requested, again) = res.unwrap_or_default();
            act.requested = Some(requested);
            if let Some((bytes, e)) = again {
                act.retry_later(bytes, attempt + 1, &e, ctx);
            }
        }));
    }

    fn retry_later(
        &mut self,
        bytes: Vec<u8>,
        attempt: u32,
        e: &DaemonError,
        ctx: &mut Context<Self>,
    ) {
        let log = &self.peers.store.local.log;
        let Ok(request) = Object::decode(&bytes, Policy::STRICT).map(|o| o.ghid()) else {
            return;
        };
        if self.waiting.contains(&request) {
            return;
        }
        if attempt > MAX_RETRIES || self.waiting.len() >= MAX_RETRYING {
            slog::warn!(log, "share request not handled; it waits on the remotes for the next subscribe";
                "error" => %e, "attempts" => attempt);
            return;
        }
        let wait = RETRY_FIRST * 2u32.pow(attempt - 1);
        slog::warn!(log, "share request not handled yet; will retry";
            "error" => %e, "in_secs" => wait.as_secs(), "attempt" => attempt);
        self.waiting.insert(request);
        ctx.notify_later(
            Retry {
                request,
                bytes,
                attempt,
            },
            wait,
        );
    }
}

impl Handler<Incoming> for ShareActor {
    type Result = ();

    fn handle(&mut self, Incoming(bytes, queued): Incoming, ctx: &mut Context<Self>) {
        self.request(bytes, 0, Some(queued), ctx);
    }
}

impl Handler<Retry> for ShareActor {
    type Result = ();

    fn handle(&mut self, msg: Retry, ctx: &mut Context<Self>) {
        self.waiting.remove(&msg.request);
        self.request(msg.bytes, msg.attempt, None, ctx);
    }
}

impl Handler<Requested> for ShareActor {
    type Result = ();

    fn handle(&mut self, msg: Requested, _: &mut Context<Self>) {
        if let Some(r) = self.requested.as_mut() {
            r.insert(msg.request, msg.app);
        }
    }
}

impl Handler<Stop> for ShareActor {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

/// One incoming request being handled, with the routes of pending shares.
struct Handling {
    peers: SharePeers,
    requested: HashMap<Ghid, AppId>,
}

/// An ack or a nak with its status.
enum Answer {
    Ack(u32),
    Nak(u32),
}

/// What opening a request gave.
enum Opened {
    Request {
        author: SecondParty,
        request: Request,
    },
    /// The MAC does not verify for the author the request names.
    BadMac(SecondParty),
    /// Not for us, not decryptable, malformed, or from an identity nobody knows.
    Unreadable(String),
}

impl Handling {
    async fn incoming(&mut self, bytes: Vec<u8>) -> Result<(), DaemonError> {
        let peers = self.peers.clone();
        let garq = match Object::decode(&bytes, Policy::STRICT) {
            Ok(Object::Garq(g)) if g.recipient == peers.store.fingerprint() => g,
            _ => return Ok(()),
        };
        match peers.store.local.ingest(bytes).await {
            Ok(_) => {}
            Err(PersistError::AlreadyDebound(_)) => return Ok(()), // handled before
            Err(e) => return Err(e.into()),
        }
        match open(&peers, &garq).await? {
            Opened::Request { author, request } => match request.body {
                RequestBody::Handshake { target, secret } => {
                    handshake(&peers, &garq, author, target, secret).await
                }
                RequestBody::Ack { target, status } => {
                    self.answered(&garq, author, target, true, status).await
                }
                RequestBody::Nak { target, status } => {
                    self.answered(&garq, author, target, false, status).await
                }
            },
            Opened::BadMac(author) => {
                slog::warn!(peers.store.local.log, "request with a bad MAC; naked and debound";
                    "request" => %garq.ghid, "claimed_author" => %author.ghid());
                answer_and_debind(&peers, &garq, Some((author, Answer::Nak(STATUS_BAD_MAC)))).await
            }
            Opened::Unreadable(why) => {
                slog::info!(peers.store.local.log, "unreadable request; debound";
                    "request" => %garq.ghid, "why" => why);
                answer_and_debind(&peers, &garq, None).await
            }
        }
    }

    /// An ack or nak of the request `request` from `author`.
    async fn answered(
        &mut self,
        garq: &Garq,
        author: SecondParty,
        request: Ghid,
        ok: bool,
        status: u32,
    ) -> Result<(), DaemonError> {
        let peers = self.peers.clone();
        let from = author.ghid();
        let take = account_actor::TakePending {
            request,
            recipient: from,
        };
        let mut pending = peers.store.account.ask(take).await?;
        if pending.is_none() {
            // Another machine of ours may have made the share: its account state first.
            peers.store.account.refresh().await;
            let take = account_actor::TakePending {
                request,
                recipient: from,
            };
            pending = peers.store.account.ask(take).await?;
        }
        if let Err(e) = answer_and_debind(&peers, garq, None).await {
            // Handled again later (`Retry`): the answer must find its pending share then.
            if let Some(p) = pending {
                peers.store.account.tell(account_actor::AddPending(p));
            }
            return Err(e);
        }
        let Some(p) = pending else {
            slog::debug!(peers.store.local.log, "answer to no pending share"; "request" => %request, "from" => %from);
            return Ok(());
        };
        let asked = self
            .requested
            .remove(&request)
            .filter(|app| peers.apps.is_connected(*app));
        let apps = match (asked, p.token) {
            (Some(app), _) => vec![app],
            (None, Some(t)) => peers.apps.with_token(&t.0),
            (None, None) => Vec::new(),
        };
        slog::info!(peers.store.local.log, "share answered"; "ghid" => %p.target, "recipient" => %from,
            "ok" => ok, "status" => status, "apps" => apps.len());
        let event = AppEvent::ShareResult {
            ghid: p.target,
            recipient: p.recipient,
            ok,
            status,
        };
        // The outcome is logged above: a session whose inbox closed does not get it.
        for app in apps {
            let _ = peers.apps.send(app, event.clone());
        }
        Ok(())
    }
}

/// A handshake from `author`: accept the object (ack, share event) or refuse it (nak). A
/// new share past the bounds on shares no app adopted yet is refused before anything of it
/// is kept (`STATUS_LIMIT`).
async fn handshake(
    peers: &SharePeers,
    garq: &Garq,
    author: SecondParty,
    target: Ghid,
    secret: Secret,
) -> Result<(), DaemonError> {
    let origin = author.ghid();
    let admit = account_actor::AdmitShare {
        ghid: target,
        sharer: origin,
    };
    let received_from = match peers.store.account.ask(admit).await?? {
        Admission::Ours => None,
        Admission::Again | Admission::Allowed => Some(origin),
        refused @ (Admission::PastPerSharer | Admission::PastTotal) => {
            peers
                .refusals
                .refused(&peers.store.local.log, origin, refused);
            let answer = Some((author, Answer::Nak(STATUS_LIMIT)));
            return answer_and_debind(peers, garq, answer).await;
        }
    };
    let (answer, api_id) = match accept(peers, target, secret, received_from).await {
        Ok(api_id) => (Answer::Ack(STATUS_OK), Some(api_id)),
        // Nothing is answered yet: the request stays, to be handled again (see `Retry`).
        Err(e) if e.is_temporary() => return Err(e),
        Err(e) => {
            slog::info!(peers.store.local.log, "share refused"; "ghid" => %target, "from" => %origin, "error" => %e);
            let status = match e {
                DaemonError::NotFound(_) => STATUS_NOT_FOUND,
                DaemonError::UnknownSecret(_) => STATUS_UNKNOWN_SECRET,
                _ => STATUS_FAILED,
            };
            (Answer::Nak(status), None)
        }
    };
    answer_and_debind(peers, garq, Some((author, answer))).await?;
    if let Some(api_id) = api_id {
        slog::info!(peers.store.local.log, "share received"; "ghid" => %target, "from" => %origin);
        dispatch::offer_or_keep(&peers.store, &peers.apps, target, origin, api_id);
    }
    Ok(())
}

/// Fetches the shared object, finds which secret of it the handshake carries, and records
/// that secret. Returns the object's api id.
async fn accept(
    peers: &SharePeers,
    target: Ghid,
    secret: Secret,
    received_from: Option<Ghid>,
) -> Result<Option<Ghid>, DaemonError> {
    let not_found = || DaemonError::NotFound(target.to_string());
    let unknown_secret = || DaemonError::UnknownSecret(target.to_string());
    let bytes = fresh(peers, &target).await?.ok_or_else(not_found)?;
    match Object::decode(&bytes, Policy::STRICT).map_err(PersistError::from)? {
        Object::Gobd(frame) if frame.dynamic == target => {
            let container = container(peers, &frame.target()).await?;
            let (current, api_id) = frame
                .targets
                .iter()
                .find_map(|known| {
                    let s = content::ratchet_to_current(&frame, &secret, known)?;
                    Some((s.clone(), opens(&container, &s)?))
                })
                .ok_or_else(unknown_secret)?;
            record(peers, target, current, &frame, api_id, received_from).await?;
            // Follow it from now on, tracked or not: the recorded secret only keeps up by
            // ratcheting along every frame.
            peers.store.follow(target)?;
            Ok(api_id)
        }
        Object::Geoc(c) if c.ghid == target => {
            let api_id = opens(&c, &secret).ok_or_else(unknown_secret)?;
            let stored = StoredSecret {
                secret,
                container: target,
            };
            let keep = readable_secret(peers, &target)?.is_none();
            if keep {
                let record = SecretRecord {
                    stored: stored.clone(),
                    counter: 0,
                };
                peers.store.local.put_secret(&target, &record)?;
                peers.store.local.vault.flush().await?;
                record_in_account(peers, target, stored, 0, api_id, received_from);
            }
            Ok(api_id)
        }
        _ => Err(not_found()),
    }
}

/// Whether `secret` opens `container` as an app object: its api id if so. Decrypts only the
/// app header (CTR: the keystream prefix is the same).
fn opens(container: &Geoc, secret: &Secret) -> Option<Option<Ghid>> {
    let mut head = container.payload.get(..content::HEADER_LEN)?.to_vec();
    cipher::apply_keystream(secret, &mut head);
    content::unpack(&head).map(|(api_id, _)| api_id)
}

/// The secret recorded here for `ghid`; one whose record will never open counts as none
/// (with a warning), so the secret a share brings replaces it rather than the share being
/// refused for it.
fn readable_secret(peers: &SharePeers, ghid: &Ghid) -> Result<Option<SecretRecord>, DaemonError> {
    match peers.store.local.secret(ghid) {
        Err(e @ DaemonError::Corrupt(_)) => {
            slog::warn!(peers.store.local.log, "a recorded secret does not open; a share replaces it";
                "ghid" => %ghid, "error" => %e);
            Ok(None)
        }
        other => other,
    }
}

/// The newest secret of a dynamic object, unless this machine knows a newer frame already.
async fn record(
    peers: &SharePeers,
    ghid: Ghid,
    secret: Secret,
    frame: &Gobd,
    api_id: Option<Ghid>,
    received_from: Option<Ghid>,
) -> Result<(), DaemonError> {
    if readable_secret(peers, &ghid)?.is_some_and(|old| old.counter > frame.counter) {
        return Ok(());
    }
    let stored = StoredSecret {
        secret,
        container: frame.target(),
    };
    let record = SecretRecord {
        stored: stored.clone(),
        counter: frame.counter,
    };
    peers.store.local.put_secret(&ghid, &record)?;
    peers.store.local.vault.flush().await?;
    record_in_account(peers, ghid, stored, frame.counter, api_id, received_from);
    Ok(())
}

/// Records a share's secret in the account: as received from its sharer (not adopted yet)
/// unless the object is ours already.
fn record_in_account(
    peers: &SharePeers,
    ghid: Ghid,
    stored: StoredSecret,
    counter: u64,
    api_id: Option<Ghid>,
    received_from: Option<Ghid>,
) {
    let account = &peers.store.account;
    match received_from {
        Some(sharer) => account.record_received_secret(ghid, stored, counter, api_id, sharer),
        None => account.record_secret(ghid, stored, counter, api_id),
    }
}

/// Warnings about shares refused at the bounds: at most one a minute, counting the refusals
/// in between. Names the sharer and which bound, never the share's contents.
#[derive(Default)]
pub struct Refusals(std::sync::Mutex<(Option<std::time::Instant>, u64)>);

impl Refusals {
    fn refused(&self, log: &slog::Logger, sharer: Ghid, why: Admission) {
        let mut last = self.0.lock().unwrap_or_else(|e| e.into_inner());
        last.1 += 1;
        let due = last
            .0
            .map_or(true, |t| t.elapsed() >= LIMIT_WARNING_INTERVAL);
        if !due {
            slog::debug!(log, "share refused at a bound"; "from" => %sharer, "bound" => ?why);
            return;
        }
        let bound = match why {
            Admission::PastPerSharer => "shares from one sharer that no app adopted",
            _ => "shares that no app adopted",
        };
        slog::warn!(log, "share refused: too many shares no app adopted yet (naked)";
            "from" => %sharer, "bound" => bound, "refused_since_last_warning" => last.1);
        *last = (Some(std::time::Instant::now()), 0);
    }
}

/// `ghid` from a remote first (a stale local frame must not decide), else locally.
async fn fresh(peers: &SharePeers, ghid: &Ghid) -> Result<Option<Vec<u8>>, DaemonError> {
    let Some(bytes) = peers.store.fetch_checked(ghid).await? else {
        return peers.store.local.get(ghid);
    };
    match peers.store.ingest_fetched(bytes.clone()).await {
        Ok(_) => Ok(Some(bytes)),
        // Ours is newer than the remote's.
        Err(DaemonError::Persist(PersistError::IllegalFrame(_))) => peers.store.local.get(ghid),
        Err(DaemonError::Persist(PersistError::AlreadyDebound(_))) => Ok(None),
        // A static object: its container comes with its bindings.
        Err(DaemonError::Persist(PersistError::UnboundContainer(_))) => {
            peers.store.local_or_fetch_checked(ghid).await
        }
        Err(e) => Err(e),
    }
}

async fn container(peers: &SharePeers, ghid: &Ghid) -> Result<Geoc, DaemonError> {
    let bytes = peers
        .store
        .local_or_fetch_checked(ghid)
        .await?
        .ok_or_else(|| DaemonError::NotFound(format!("container {ghid}")))?;
    match Object::decode(&bytes, Policy::STRICT).map_err(PersistError::from)? {
        Object::Geoc(c) => Ok(c),
        _ => Err(DaemonError::NotFound(format!("container {ghid}"))),
    }
}

/// Commits the answer to `garq` (if any) and our debinding of it.
async fn answer_and_debind(
    peers: &SharePeers,
    garq: &Garq,
    answer: Option<(SecondParty, Answer)>,
) -> Result<(), DaemonError> {
    let identity = peers.store.local.identity.clone();
    let request = garq.ghid;
    let objects = tokio::task::spawn_blocking(move || -> Result<Vec<Vec<u8>>, GolixError> {
        let mut out = Vec::with_capacity(2);
        if let Some((to, answer)) = answer {
            let g = match answer {
                Answer::Ack(s) => identity.make_ack(&to, request, s)?,
                Answer::Nak(s) => identity.make_nak(&to, request, s)?,
            };
            out.push(g.encode());
        }
        out.push(identity.make_debind(request)?.encode());
        Ok(out)
    })
    .await
    .map_err(|e| DaemonError::Storage(format!("signing task failed: {e}")))??;
    peers.store.commit_local(objects).await
}

/// An identity from the local archive.
fn local_identity(archive: &Archive, ghid: &Ghid) -> Option<SecondParty> {
    let bytes = archive.get(ghid).ok()??;
    match Object::decode(&bytes, Policy::STRICT).ok()? {
        Object::Gidc(g) if g.ghid == *ghid => SecondParty::from_gidc(g).ok(),
        _ => None,
    }
}

/// Fetches an identity from the remotes into the local archive; false if every remote
/// answered and none has it (or what it has is not that identity).
async fn fetch_identity(peers: &SharePeers, ghid: &Ghid) -> Result<bool, DaemonError> {
    let Some(bytes) = peers.store.fetch_checked(ghid).await? else {
        return Ok(false);
    };
    let is_gidc = matches!(
        Object::decode(&bytes, Policy::STRICT),
        Ok(Object::Gidc(ref g)) if g.ghid == *ghid
    );
    if !is_gidc {
        return Ok(false);
    }
    match peers
        .store
        .local
        .ingest(bytes)
        .await
        .map_err(DaemonError::from)
    {
        Ok(_) => Ok(true),
        Err(e) if e.is_temporary() => Err(e),
        Err(_) => Ok(false),
    }
}

/// Opens a request to us (off the event loop), fetching its author's identity if needed;
/// an error only if that fetch could not be done now (temporary).
async fn open(peers: &SharePeers, garq: &Garq) -> Result<Opened, DaemonError> {
    let mut fetched = false;
    loop {
        let (identity, archive, g) = (
            peers.store.local.identity.clone(),
            peers.store.local.archive.clone(),
            garq.clone(),
        );
        let opened = tokio::task::spawn_blocking(move || {
            let (mut claimed, mut party) = (None, None);
            let result = identity.open_request(&g, |author| {
                claimed = Some(*author);
                party = local_identity(&archive, author);
                party.clone()
            });
            (result, claimed, party)
        })
        .await;
        let Ok((result, claimed, party)) = opened else {
            return Ok(Opened::Unreadable("the opening task failed".into()));
        };
        match (result, party, claimed) {
            (Ok(request), Some(author), _) => return Ok(Opened::Request { author, request }),
            (Err(GolixError::BadMac), Some(author), _) => return Ok(Opened::BadMac(author)),
            (Err(_), None, Some(claimed)) if !fetched => {
                if !fetch_identity(peers, &claimed).await? {
                    return Ok(Opened::Unreadable(format!("unknown author {claimed}")));
                }
                fetched = true;
            }
            (Err(e), _, _) => return Ok(Opened::Unreadable(e.to_string())),
            (Ok(_), None, _) => return Ok(Opened::Unreadable("no author identity".into())),
        }
    }
}

/// Shares `ghid` with the identity `recipient` on behalf of `app` (see the module doc).
pub async fn share(
    peers: &SharePeers,
    share: &ShareHandle,
    app: AppId,
    ghid: Ghid,
    recipient: Ghid,
) -> Result<(), DaemonError> {
    if dispatch::is_private(&peers.store, ghid).await? {
        return Err(DaemonError::Unsharable(ghid.to_string()));
    }
    let party = recipient_identity(peers, &recipient).await?;
    let (target, secret) = current(peers, ghid).await?;
    if target != ghid && dispatch::is_private(&peers.store, target).await? {
        return Err(DaemonError::Unsharable(target.to_string()));
    }
    // Sharing it on makes a received share ours.
    peers.store.account.tell(account_actor::Adopt(target));
    let identity = peers.store.local.identity.clone();
    let garq =
        tokio::task::spawn_blocking(move || identity.make_handshake(&party, target, &secret))
            .await
            .map_err(|e| DaemonError::Storage(format!("signing task failed: {e}")))??;
    let pending = PendingShare {
        request: garq.ghid,
        target,
        recipient,
        token: peers.apps.token(app).map(AppTokenBytes),
    };
    peers
        .store
        .account
        .ask(account_actor::AddPending(pending))
        .await?;
    share.requested(garq.ghid, app);
    // Durable before the request can leave: its answer must find it after a crash.
    let sent = match peers.store.account.flush().await {
        Ok(()) => peers.store.commit_local(vec![garq.encode()]).await,
        Err(e) => Err(e),
    };
    if let Err(e) = sent {
        let request = garq.ghid;
        peers
            .store
            .account
            .tell(account_actor::DropPending(request));
        return Err(e);
    }
    slog::info!(peers.store.local.log, "share sent"; "ghid" => %target, "recipient" => %recipient, "request" => %garq.ghid);
    Ok(())
}

/// The recipient's identity, from the local archive or a remote (then kept locally: a request
/// is only accepted for a known recipient).
async fn recipient_identity(
    peers: &SharePeers,
    recipient: &Ghid,
) -> Result<SecondParty, DaemonError> {
    let unknown = || DaemonError::UnknownRecipient(recipient.to_string());
    if let Some(party) = local_identity(&peers.store.local.archive, recipient) {
        return Ok(party);
    }
    if fetch_identity(peers, recipient).await? {
        if let Some(party) = local_identity(&peers.store.local.archive, recipient) {
            return Ok(party);
        }
    }
    Err(unknown())
}

/// The object's ghid (a binding's: its target's) and the secret of its current container.
async fn current(peers: &SharePeers, ghid: Ghid) -> Result<(Ghid, Secret), DaemonError> {
    if let Some(h) = peers.objects.upgrade().and_then(|o| o.get(&ghid)) {
        if let Ok(Some(c)) = h.ask(object::Current).await {
            return Ok(c);
        }
    }
    let loaded = commit::load(&peers.store, ghid).await?;
    Ok((loaded.ghid, loaded.secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Holds what it gets (each request keeps its place in the inbox) until `Release`.
    #[derive(Default)]
    struct Holder(Vec<Incoming>);

    impl Actor for Holder {
        type Context = Context<Self>;
    }

    impl Handler<Incoming> for Holder {
        type Result = ();
        fn handle(&mut self, msg: Incoming, _: &mut Context<Self>) {
            self.0.push(msg);
        }
    }

    #[derive(Message)]
    #[rtype(result = "()")]
    struct Release;

    impl Handler<Release> for Holder {
        type Result = ();
        fn handle(&mut self, _: Release, _: &mut Context<Self>) {
            self.0.pop();
        }
    }

    #[actix_rt::test]
    async fn the_inbox_takes_a_bounded_number_and_warns_once_per_run() {
        let holder = Holder::default().start();
        let inbox = ShareInbox {
            to: holder.clone().recipient().downgrade(),
            queued: Arc::new(AtomicUsize::new(0)),
            refusing: Arc::new(AtomicBool::new(false)),
            redelivering: Arc::new(AtomicBool::new(false)),
        };
        for _ in 0..MAX_QUEUED {
            assert_eq!(inbox.offer(b"GARQ".to_vec()), Offered::Taken);
        }
        assert_eq!(
            inbox.offer(b"GARQ".to_vec()),
            Offered::Refused { first: true }
        );
        assert_eq!(
            inbox.offer(b"GARQ".to_vec()),
            Offered::Refused { first: false }
        );
        // One handled: room for one more, and the next refusal warns again.
        holder.send(Release).await.unwrap();
        assert_eq!(inbox.offer(b"GARQ".to_vec()), Offered::Taken);
        assert_eq!(
            inbox.offer(b"GARQ".to_vec()),
            Offered::Refused { first: true }
        );
        // The actor gone: refused, nothing counted.
        drop(holder);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(matches!(
            inbox.offer(b"GARQ".to_vec()),
            Offered::Refused { .. }
        ));
        assert_eq!(inbox.queued.load(Ordering::Acquire), 0);
    }
}
