//! The Golix side of app objects: making, loading and opening them, and committing our own
//! changes (new, push frames, freeze, hold, delete) locally and durably.
//!
//! Owns: [`Loaded`] (an object as its `ObjectActor` keeps it) and the steps each operation
//! takes (a push's are in [`super::push`]). Signing runs off the event loop, a container's
//! and its binding's signatures at once; a commit ingests in order (a binding before its
//! container), syncs the archive, queues the objects for every remote and records the new
//! secret in the vault, all before returning, so whatever an app is told succeeded survives a
//! restart and reaches the remotes. An object larger than a remote takes is refused first
//! (`too_large`, see [`super::limits`]).
//!
//! Every function takes the [`Store`] (local state, remotes, account) and nothing else.
//!
//! Calls: `golix` (FirstParty), [`Local`] (archive, vault), [`Upstream`] (fetches),
//! [`durable::commit`], the `AccountActor` (records, lookups), [`content`]. Used by
//! `ObjectActor`, `push`, `pull`, `dispatch`, `ShareActor` and `DaemonHandle`.

use std::sync::Arc;

use super::account::StoredSecret;
use super::account_actor::{AccountHandle, CopyPrivate};
use super::api::ObjectView;
use super::content;
use super::durable;
use super::error::DaemonError;
use super::local::{Local, ObjectMeta, SecretRecord};
use super::upstream::Upstream;
use crate::golix::{FirstParty, Geoc, Ghid, Gobd, Object, Policy, Secret, DEFAULT_LEGROOM};
use crate::persist::{PersistError, Published};

/// What loading, opening and committing objects needs: the local state, the remotes and
/// the account (secrets it records, and looks up when this machine has none). Cheap to
/// clone; no other actor is reachable through it.
#[derive(Clone)]
pub struct Store {
    pub local: Arc<Local>,
    pub upstream: Upstream,
    pub account: AccountHandle,
}

impl Store {
    pub fn fingerprint(&self) -> Ghid {
        self.local.fingerprint()
    }

    /// `too_large` unless an object of `len` bytes fits every remote ([`super::limits`]).
    pub fn check_fits(&self, len: usize, what: &str) -> Result<(), DaemonError> {
        self.upstream.check_fits(len, what)
    }

    /// See [`Upstream::fetch`].
    pub async fn fetch(&self, ghid: &Ghid) -> Option<Vec<u8>> {
        self.upstream.fetch(ghid).await
    }

    /// See [`Upstream::fetch_checked`].
    pub async fn fetch_checked(&self, ghid: &Ghid) -> Result<Option<Vec<u8>>, DaemonError> {
        self.upstream.fetch_checked(ghid).await
    }

    /// See [`Upstream::ingest_fetched`].
    pub async fn ingest_fetched(&self, bytes: Vec<u8>) -> Result<Published, DaemonError> {
        self.upstream.ingest_fetched(&self.local, bytes).await
    }

    /// See [`Upstream::local_or_fetch`].
    pub async fn local_or_fetch(&self, ghid: &Ghid) -> Result<Option<Vec<u8>>, DaemonError> {
        self.upstream.local_or_fetch(&self.local, ghid).await
    }

    /// See [`Upstream::local_or_fetch_checked`].
    pub async fn local_or_fetch_checked(
        &self,
        ghid: &Ghid,
    ) -> Result<Option<Vec<u8>>, DaemonError> {
        self.upstream
            .local_or_fetch_checked(&self.local, ghid)
            .await
    }

    /// Our own new objects, committed durably ([`durable::commit`]).
    pub async fn commit_local(&self, objects: Vec<Vec<u8>>) -> Result<(), DaemonError> {
        durable::commit(&self.local, &self.upstream, objects, None).await
    }

    /// See [`Upstream::follow`].
    pub fn follow(&self, ghid: Ghid) -> Result<(), DaemonError> {
        self.upstream.follow(&self.local, ghid)
    }
}

/// An object as its actor keeps it.
#[derive(Clone)]
pub struct Loaded {
    /// Dynamic ghid, or container ghid for static objects.
    pub ghid: Ghid,
    pub author: Ghid,
    pub api_id: Option<Ghid>,
    pub private: bool,
    pub state: Vec<u8>,
    /// The secret of `container`.
    pub secret: Secret,
    /// The current container.
    pub container: Ghid,
    /// The current frame; `None` for static objects.
    pub frame: Option<Gobd>,
}

/// What opening a frame's container gave: its secret, api id and state.
pub type Opened = (Secret, Option<Ghid>, Vec<u8>);

/// A frame of ours that is durable locally and queued upstream.
pub struct Committed {
    pub frame: Gobd,
    pub container: Ghid,
    pub secret: Secret,
}

impl Loaded {
    pub fn view(&self) -> ObjectView {
        ObjectView {
            ghid: self.ghid,
            author: self.author,
            api_id: self.api_id,
            dynamic: self.frame.is_some(),
            private: self.private,
            state: self.state.clone(),
        }
    }

    /// Everything but the state (what the operations on the current container need).
    pub fn without_state(&self) -> Loaded {
        Loaded {
            ghid: self.ghid,
            author: self.author,
            api_id: self.api_id,
            private: self.private,
            state: Vec::new(),
            secret: self.secret.clone(),
            container: self.container,
            frame: self.frame.clone(),
        }
    }

    pub fn counter(&self) -> u64 {
        self.frame.as_ref().map_or(0, |f| f.counter)
    }

    pub fn stored_secret(&self) -> StoredSecret {
        StoredSecret {
            secret: self.secret.clone(),
            container: self.container,
        }
    }

    pub fn apply(&mut self, c: Committed, state: Vec<u8>) {
        self.frame = Some(c.frame);
        self.container = c.container;
        self.secret = c.secret;
        self.state = state;
    }

    pub fn pulled(
        &mut self,
        frame: Gobd,
        container: Ghid,
        secret: Secret,
        api_id: Option<Ghid>,
        state: Vec<u8>,
    ) {
        self.frame = Some(frame);
        self.container = container;
        self.secret = secret;
        self.api_id = api_id;
        self.state = state;
    }
}

fn decode(bytes: &[u8]) -> Result<Object, DaemonError> {
    Ok(Object::decode(bytes, Policy::STRICT).map_err(PersistError::from)?)
}

/// Runs `f` with our identity on the blocking pool (RSA signing, encrypting large states).
pub(super) async fn sign<T: Send + 'static>(
    store: &Store,
    f: impl FnOnce(&FirstParty) -> Result<T, crate::golix::Error> + Send + 'static,
) -> Result<T, DaemonError> {
    let identity = store.local.identity.clone();
    // The daemon's runtime, whichever thread asks (an object actor's arbiter too).
    store
        .local
        .runtime
        .spawn_blocking(move || f(&identity))
        .await
        .map_err(|e| DaemonError::Storage(format!("signing task failed: {e}")))?
        .map_err(DaemonError::from)
}

/// A new object of ours: a container under a fresh secret and its binding (frame 0 for a
/// dynamic object, a GOBS for a static one), committed.
pub async fn create(
    store: &Store,
    state: Vec<u8>,
    api_id: Option<Ghid>,
    dynamic: bool,
    private: bool,
) -> Result<Loaded, DaemonError> {
    store.check_fits(content::container_len(state.len()), "the state's container")?;
    let secret = Secret::random();
    let plain = content::pack(api_id.as_ref(), &state);
    // The binding only needs the container's address, which its signature does not cover.
    let s = secret.clone();
    let mut geoc = sign(store, move |id| Ok(id.unsigned_container(&plain, &s))).await?;
    let target = geoc.ghid;
    let (geoc, (binding, frame)) = super::golix_worker::run_both(
        store.local.identity.clone(),
        move |id| id.sign_container(&mut geoc).map(|()| geoc),
        move |id| {
            if dynamic {
                let f = id.make_bind_dynamic(target)?;
                Ok((f.encode(), Some(f)))
            } else {
                Ok((id.make_bind_static(target)?.encode(), None))
            }
        },
    )
    .await?;
    let ghid = frame.as_ref().map_or(geoc.ghid, |f| f.dynamic);
    let stored = StoredSecret {
        secret: secret.clone(),
        container: geoc.ghid,
    };
    if private {
        store.local.put_meta(
            &ghid,
            &ObjectMeta {
                private,
                ..ObjectMeta::default()
            },
        )?;
    }
    let record = SecretRecord {
        stored: stored.clone(),
        counter: 0,
    };
    durable::commit(
        &store.local,
        &store.upstream,
        vec![binding, geoc.encode()],
        Some((ghid, record)),
    )
    .await?;
    store.account.record_secret(ghid, stored, 0, api_id);
    Ok(Loaded {
        ghid,
        author: store.fingerprint(),
        api_id,
        private,
        state,
        secret,
        container: geoc.ghid,
        frame,
    })
}

/// How many targets our frame after `previous` keeps. A reader with an older secret ratchets
/// forward only along a frame's target vector, and a remote keeps only the current frame. So
/// while a remote lags behind us (disconnected, or more than a vector's worth of publishes
/// waiting in its outbox queue) the vector keeps all of `previous`'s history and grows by one
/// per frame (up to `MAX_TARGETS`): a reader that saw the remote's last frame can open the
/// frame the remote gets next, however many we made meanwhile. Once the remote keeps up, the
/// vector shrinks by one per frame back to `DEFAULT_LEGROOM`, so a reader that resubscribes a
/// little after us still catches up. Either way it reaches back to the container whose secret
/// the account last flushed (another machine of ours opens the object with that secret), at
/// most [`MAX_LAG`](super::account_actor::MAX_LAG) frames plus a margin: the account flushes
/// at once before that.
pub(super) fn legroom(store: &Store, previous: &Gobd) -> usize {
    let lagging = store.upstream.lagging(&store.local);
    let kept = previous.targets.len();
    let own = if lagging {
        kept + 1
    } else {
        kept.saturating_sub(1).max(DEFAULT_LEGROOM)
    };
    // Frame `previous.counter + 1` keeps the containers of frames down to `flushed`. Not
    // known (after a restart or an account refresh, until the account's next flush): it keeps
    // reaching as far back as `previous` did, which reached the last flushed secret.
    let to_account = match store.account.flushed_counter(&previous.dynamic) {
        Some(f) => (previous.counter + 2).saturating_sub(f) as usize,
        None => kept + 1,
    }
    .min(2 * super::account_actor::MAX_LAG as usize);
    own.max(to_account)
}

/// A secret that opens `frame`'s current target, from this machine's records or the
/// account's, ratcheted forward along the target vector.
pub async fn find_secret(store: &Store, ghid: &Ghid, frame: &Gobd) -> Option<Secret> {
    if let Ok(Some(r)) = store.local.secret(ghid) {
        if let Some(s) = content::ratchet_to_current(frame, &r.stored.secret, &r.stored.container) {
            return Some(s);
        }
    }
    let from_account = |all: Vec<StoredSecret>| {
        all.iter()
            .find_map(|s| content::ratchet_to_current(frame, &s.secret, &s.container))
    };
    if let Some(s) = from_account(store.account.lookup(*ghid).await) {
        return Some(s);
    }
    // Another machine of ours may have flushed a newer account state.
    store.account.refresh().await;
    from_account(store.account.lookup(*ghid).await)
}

/// Decrypts and unframes a container.
fn open(container: &Geoc, secret: &Secret) -> Result<(Option<Ghid>, Vec<u8>), DaemonError> {
    content::unpack(&FirstParty::decrypt(container, secret)).ok_or_else(|| {
        DaemonError::UnknownSecret(format!("{} does not open as an app object", container.ghid))
    })
}

/// Loads an object from the local archive, else from the remotes (ingesting what is
/// fetched), and opens it with a known secret. A GOBS ghid loads its target.
pub async fn load(store: &Store, ghid: Ghid) -> Result<Loaded, DaemonError> {
    let not_found = || DaemonError::NotFound(ghid.to_string());
    let bytes = store
        .local_or_fetch_checked(&ghid)
        .await?
        .ok_or_else(not_found)?;
    match decode(&bytes)? {
        Object::Gobd(frame) => {
            if frame.dynamic != ghid {
                return Err(not_found());
            }
            let (frame, geoc) = with_container(store, frame).await?;
            let secret = find_secret(store, &ghid, &frame)
                .await
                .ok_or_else(|| DaemonError::UnknownSecret(ghid.to_string()))?;
            let (api_id, state) = open(&geoc, &secret)?;
            let loaded = Loaded {
                ghid,
                author: frame.binder,
                api_id,
                private: store.local.meta(&ghid)?.private,
                state,
                secret,
                container: geoc.ghid,
                frame: Some(frame),
            };
            remember_secret(store, &loaded);
            Ok(loaded)
        }
        Object::Geoc(geoc) => {
            let mut candidates: Vec<StoredSecret> = store
                .local
                .secret(&ghid)?
                .map(|r| r.stored)
                .into_iter()
                .collect();
            candidates.extend(store.account.lookup(ghid).await);
            if !candidates.iter().any(|s| s.container == ghid) {
                store.account.refresh().await;
                candidates.extend(store.account.lookup(ghid).await);
            }
            let stored = candidates
                .into_iter()
                .find(|s| s.container == ghid)
                .ok_or_else(|| DaemonError::UnknownSecret(ghid.to_string()))?;
            let (api_id, state) = open(&geoc, &stored.secret)?;
            Ok(Loaded {
                ghid,
                author: geoc.author,
                api_id,
                private: store.local.meta(&ghid)?.private,
                state,
                secret: stored.secret,
                container: ghid,
                frame: None,
            })
        }
        Object::Gobs(b) if b.target != ghid => Box::pin(load(store, b.target)).await,
        _ => Err(not_found()),
    }
}

/// `frame` and its container; when that container is gone (a stale local frame, replaced
/// upstream), the current frame from the remotes and its container.
async fn with_container(store: &Store, frame: Gobd) -> Result<(Gobd, Geoc), DaemonError> {
    let ghid = frame.dynamic;
    let not_found = || DaemonError::NotFound(format!("the current container of {ghid}"));
    let as_geoc = |bytes: Vec<u8>| match decode(&bytes)? {
        Object::Geoc(c) => Ok(c),
        _ => Err(not_found()),
    };
    if let Some(c) = store.local_or_fetch_checked(&frame.target()).await? {
        return Ok((frame, as_geoc(c)?));
    }
    let bytes = store.fetch_checked(&ghid).await?.ok_or_else(not_found)?;
    match store.ingest_fetched(bytes.clone()).await {
        Ok(_) | Err(DaemonError::Persist(PersistError::IllegalFrame(_))) => {}
        Err(e) => return Err(e),
    }
    let newer = match decode(&bytes)? {
        Object::Gobd(f) if f.dynamic == ghid && f.counter > frame.counter => f,
        _ => return Err(not_found()),
    };
    let c = store
        .local_or_fetch_checked(&newer.target())
        .await?
        .ok_or_else(not_found)?;
    Ok((newer, as_geoc(c)?))
}

/// Who binds `ghid` and whether it is dynamic, without opening it (local, else remotes).
/// `None` if it is not found or is not an object.
pub async fn owner(store: &Store, ghid: Ghid) -> Result<Option<(Ghid, bool)>, DaemonError> {
    let Some(bytes) = store.local_or_fetch_checked(&ghid).await? else {
        return Ok(None);
    };
    Ok(match decode(&bytes)? {
        Object::Gobd(f) => Some((f.binder, true)),
        Object::Geoc(c) => Some((c.author, false)),
        Object::Gobs(b) => Some((b.binder, false)),
        _ => None,
    })
}

/// Opens a pulled frame's container: the secret ratchets from the actor's, else from one of
/// the `known` (container, secret) pairs of recent frames (another machine's frame may
/// follow a frame older than ours), else from a record. `None` if no known secret reaches it.
pub async fn open_pulled(
    store: &Store,
    obj: &Loaded,
    known: &[(Ghid, Secret)],
    frame: &Gobd,
    container: &Geoc,
) -> Result<Option<Opened>, DaemonError> {
    if let Some(opened) = open_ratcheted(obj, known, frame, container) {
        return opened.map(Some);
    }
    let Some(secret) = find_secret(store, &obj.ghid, frame).await else {
        return Ok(None);
    };
    let (api_id, state) = open(container, &secret)?;
    Ok(Some((secret, api_id, state)))
}

/// The part of [`open_pulled`] that needs no I/O: `None` when no secret we know (the
/// object's own, then `known` from the newest) ratchets forward to the frame's.
pub fn open_ratcheted(
    obj: &Loaded,
    known: &[(Ghid, Secret)],
    frame: &Gobd,
    container: &Geoc,
) -> Option<Result<Opened, DaemonError>> {
    if frame.target() != container.ghid {
        return Some(Err(DaemonError::BadArgs(
            "container is not the frame's target".into(),
        )));
    }
    let secret = std::iter::once((&obj.container, &obj.secret))
        .chain(known.iter().rev().map(|(c, s)| (c, s)))
        .find_map(|(c, s)| content::ratchet_to_current(frame, s, c))?;
    Some(open(container, &secret).map(|(api_id, state)| (secret, api_id, state)))
}

/// Records the object's current secret in the vault (durable with the next vault flush).
pub fn remember_secret(store: &Store, obj: &Loaded) {
    let record = SecretRecord {
        stored: obj.stored_secret(),
        counter: obj.counter(),
    };
    if let Err(e) = store.local.put_secret(&obj.ghid, &record) {
        slog::warn!(store.local.log, "cannot record a secret"; "ghid" => %obj.ghid, "error" => %e);
    }
}

/// Freezes a dynamic object: our GOBS on its current container, whose secret is recorded
/// under the container ghid. Returns the container ghid (a static object).
pub async fn freeze(store: &Store, obj: &Loaded) -> Result<Ghid, DaemonError> {
    let container = obj.container;
    let gobs = sign(store, move |id| id.make_bind_static(container)).await?;
    let stored = obj.stored_secret();
    let record = SecretRecord {
        stored: stored.clone(),
        counter: 0,
    };
    if obj.private {
        store.local.put_meta(
            &container,
            &ObjectMeta {
                private: true,
                ..ObjectMeta::default()
            },
        )?;
        // The snapshot belongs to the same app token as the object, durably before the app
        // hears of it (see `dispatch::record_private`).
        store
            .account
            .ask(CopyPrivate {
                from: obj.ghid,
                to: container,
            })
            .await?;
        store.account.flush().await?;
    }
    durable::commit(
        &store.local,
        &store.upstream,
        vec![gobs.encode()],
        Some((container, record)),
    )
    .await?;
    store
        .account
        .record_secret(container, stored, 0, obj.api_id);
    Ok(container)
}

/// Our GOBS ghids binding `target`.
fn our_bindings(store: &Store, target: &Ghid) -> Result<Vec<Ghid>, DaemonError> {
    let bindings = match store.local.archive.list_bindings(target) {
        Ok(b) => b,
        Err(PersistError::NotFound(_)) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let me = store.fingerprint();
    let mut ours = Vec::new();
    for b in bindings {
        let Some(bytes) = store.local.get(&b)? else {
            continue;
        };
        if let Ok(Object::Gobs(gobs)) = Object::decode(&bytes, Policy::STRICT) {
            if gobs.binder == me && gobs.target == *target {
                ours.push(gobs.ghid);
            }
        }
    }
    Ok(ours)
}

/// Whether we hold `ghid` (our own GOBS binds it).
pub fn holds(store: &Store, ghid: &Ghid) -> Result<bool, DaemonError> {
    Ok(!our_bindings(store, ghid)?.is_empty())
}

/// Holds `ghid`: our own GOBS on it keeps it alive whatever its owner does.
pub async fn hold(store: &Store, ghid: &Ghid) -> Result<(), DaemonError> {
    let target = *ghid;
    let gobs = sign(store, move |id| id.make_bind_static(target)).await?;
    store.commit_local(vec![gobs.encode()]).await?;
    store.account.record_hold(target);
    Ok(())
}

/// Deletes an object of ours: a GDXX on the dynamic ghid, or on each of our GOBS of a
/// static container.
pub async fn delete(store: &Store, obj: &Loaded) -> Result<(), DaemonError> {
    let targets = if obj.frame.is_some() {
        vec![obj.ghid]
    } else {
        our_bindings(store, &obj.ghid)?
    };
    let debinds = sign(store, move |id| {
        targets
            .iter()
            .map(|t| id.make_debind(*t).map(|d| d.encode()))
            .collect::<Result<Vec<_>, _>>()
    })
    .await?;
    store.commit_local(debinds).await
}
