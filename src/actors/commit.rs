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
//! Calls: `golix` (FirstParty), `DaemonCore` (archive, vault, outbox, account), [`content`].
//! Used by `ObjectActor` and `DaemonHandle`.

use super::account::StoredSecret;
use super::api::ObjectView;
use super::content;
use super::daemon_core::{DaemonCore, ObjectMeta, SecretRecord};
use super::error::DaemonError;
use crate::golix::{FirstParty, Geoc, Ghid, Gobd, Object, Policy, Secret, DEFAULT_LEGROOM};
use crate::persist::PersistError;

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
    core: &DaemonCore,
    f: impl FnOnce(&FirstParty) -> Result<T, crate::golix::Error> + Send + 'static,
) -> Result<T, DaemonError> {
    let identity = core.identity.clone();
    tokio::task::spawn_blocking(move || f(&identity))
        .await
        .map_err(|e| DaemonError::Storage(format!("signing task failed: {e}")))?
        .map_err(DaemonError::from)
}

/// Runs `a` and `b` with our identity on two blocking threads at once: two RSA-4096
/// signatures (about 2 ms each) in the time of one when both cores are free.
pub(super) async fn sign_both<A: Send + 'static, B: Send + 'static>(
    core: &DaemonCore,
    a: impl FnOnce(&FirstParty) -> Result<A, crate::golix::Error> + Send + 'static,
    b: impl FnOnce(&FirstParty) -> Result<B, crate::golix::Error> + Send + 'static,
) -> Result<(A, B), DaemonError> {
    let (a, b) = tokio::join!(sign(core, a), sign(core, b));
    Ok((a?, b?))
}

/// Makes `objects` (queued for every remote, not yet shown to them) and `secret` durable in
/// the vault, ingests the objects in order and syncs the archive, then releases them upstream.
/// On a local refusal the queue entries and the secret are rolled back.
pub async fn commit(
    core: &DaemonCore,
    objects: Vec<Vec<u8>>,
    secret: Option<(Ghid, SecretRecord)>,
) -> Result<(), DaemonError> {
    // The outbox is the commit's write-ahead log. The local archive takes one object at a
    // time and any concurrent sync may flush a binding without its container; so the objects
    // (and the new secret) are made durable in the vault first, replayed into the archive at
    // the next start if a crash cuts the commit short, and shown to the remotes only once the
    // archive has them.
    // Nothing is committed that a remote could not store (it would be acknowledged, then
    // refused upstream): see `limits`.
    for o in &objects {
        let kind = String::from_utf8_lossy(o.get(..4).unwrap_or_default()).to_lowercase();
        core.check_fits(o.len(), &format!("this {kind}"))?;
    }
    let restore = match &secret {
        Some((ghid, _)) => Some((*ghid, core.secret(ghid)?)),
        None => None,
    };
    let staged = core.outbox.stage(&objects)?;
    if let Some((ghid, record)) = &secret {
        core.put_secret(ghid, record)?;
    }
    core.vault.flush().await?;
    let local = async {
        // One trip to the blocking pool for all of them, and no second RSA verify of the
        // signatures we just made (`Archive::publish_own`).
        let archive = core.archive.clone();
        let own = core.fingerprint();
        tokio::task::spawn_blocking(move || {
            objects
                .iter()
                .try_for_each(|o| archive.publish_own(o, &own).map(drop))
        })
        .await
        .map_err(|e| PersistError::Storage(format!("ingest task failed: {e}")))??;
        core.archive.sync().await?;
        Ok::<(), DaemonError>(())
    };
    if let Err(e) = local.await {
        core.outbox.unstage(&staged)?;
        if let Some((ghid, Some(old))) = restore {
            core.put_secret(&ghid, &old)?;
        }
        core.vault.flush().await?;
        return Err(e);
    }
    core.outbox.release(&staged);
    Ok(())
}

/// A new object of ours: a container under a fresh secret and its binding (frame 0 for a
/// dynamic object, a GOBS for a static one), committed.
pub async fn create(
    core: &DaemonCore,
    state: Vec<u8>,
    api_id: Option<Ghid>,
    dynamic: bool,
    private: bool,
) -> Result<Loaded, DaemonError> {
    core.check_fits(content::container_len(state.len()), "the state's container")?;
    let secret = Secret::random();
    let plain = content::pack(api_id.as_ref(), &state);
    // The binding only needs the container's address, which its signature does not cover.
    let s = secret.clone();
    let mut geoc = sign(core, move |id| Ok(id.unsigned_container(&plain, &s))).await?;
    let target = geoc.ghid;
    let (geoc, (binding, frame)) = sign_both(
        core,
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
        core.put_meta(
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
    commit(core, vec![binding, geoc.encode()], Some((ghid, record))).await?;
    core.account.record_secret(ghid, stored, 0, api_id);
    Ok(Loaded {
        ghid,
        author: core.fingerprint(),
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
pub(super) fn legroom(core: &DaemonCore, previous: &Gobd) -> usize {
    let lagging = core.remotes.iter().any(|r| !r.is_connected())
        || (0..core.outbox.len()).any(|q| core.outbox.pending(q) > DEFAULT_LEGROOM);
    let kept = previous.targets.len();
    let own = if lagging {
        kept + 1
    } else {
        kept.saturating_sub(1).max(DEFAULT_LEGROOM)
    };
    // Frame `previous.counter + 1` keeps the containers of frames down to `flushed`.
    let to_account = core
        .account
        .flushed_counter(&previous.dynamic)
        .map_or(0, |f| (previous.counter + 2).saturating_sub(f))
        .min(2 * super::account_actor::MAX_LAG) as usize;
    own.max(to_account)
}

/// A secret that opens `frame`'s current target, from this machine's records or the
/// account's, ratcheted forward along the target vector.
pub async fn find_secret(core: &DaemonCore, ghid: &Ghid, frame: &Gobd) -> Option<Secret> {
    if let Ok(Some(r)) = core.secret(ghid) {
        if let Some(s) = content::ratchet_to_current(frame, &r.stored.secret, &r.stored.container) {
            return Some(s);
        }
    }
    let from_account = |all: Vec<StoredSecret>| {
        all.iter()
            .find_map(|s| content::ratchet_to_current(frame, &s.secret, &s.container))
    };
    if let Some(s) = from_account(core.account.lookup(*ghid).await) {
        return Some(s);
    }
    // Another machine of ours may have flushed a newer account state.
    core.account.refresh().await;
    from_account(core.account.lookup(*ghid).await)
}

/// Decrypts and unframes a container.
fn open(container: &Geoc, secret: &Secret) -> Result<(Option<Ghid>, Vec<u8>), DaemonError> {
    content::unpack(&FirstParty::decrypt(container, secret)).ok_or_else(|| {
        DaemonError::UnknownSecret(format!("{} does not open as an app object", container.ghid))
    })
}

/// Loads an object from the local archive, else from the remotes (ingesting what is
/// fetched), and opens it with a known secret. A GOBS ghid loads its target.
pub async fn load(core: &DaemonCore, ghid: Ghid) -> Result<Loaded, DaemonError> {
    let not_found = || DaemonError::NotFound(ghid.to_string());
    let bytes = core.local_or_fetch(&ghid).await?.ok_or_else(not_found)?;
    match decode(&bytes)? {
        Object::Gobd(frame) => {
            if frame.dynamic != ghid {
                return Err(not_found());
            }
            let (frame, geoc) = with_container(core, frame).await?;
            let secret = find_secret(core, &ghid, &frame)
                .await
                .ok_or_else(|| DaemonError::UnknownSecret(ghid.to_string()))?;
            let (api_id, state) = open(&geoc, &secret)?;
            let loaded = Loaded {
                ghid,
                author: frame.binder,
                api_id,
                private: core.meta(&ghid)?.private,
                state,
                secret,
                container: geoc.ghid,
                frame: Some(frame),
            };
            remember_secret(core, &loaded);
            Ok(loaded)
        }
        Object::Geoc(geoc) => {
            let mut candidates: Vec<StoredSecret> =
                core.secret(&ghid)?.map(|r| r.stored).into_iter().collect();
            candidates.extend(core.account.lookup(ghid).await);
            if !candidates.iter().any(|s| s.container == ghid) {
                core.account.refresh().await;
                candidates.extend(core.account.lookup(ghid).await);
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
                private: core.meta(&ghid)?.private,
                state,
                secret: stored.secret,
                container: ghid,
                frame: None,
            })
        }
        Object::Gobs(b) if b.target != ghid => Box::pin(load(core, b.target)).await,
        _ => Err(not_found()),
    }
}

/// `frame` and its container; when that container is gone (a stale local frame, replaced
/// upstream), the current frame from the remotes and its container.
async fn with_container(core: &DaemonCore, frame: Gobd) -> Result<(Gobd, Geoc), DaemonError> {
    let ghid = frame.dynamic;
    let not_found = || DaemonError::NotFound(format!("the current container of {ghid}"));
    let as_geoc = |bytes: Vec<u8>| match decode(&bytes)? {
        Object::Geoc(c) => Ok(c),
        _ => Err(not_found()),
    };
    if let Some(c) = core.local_or_fetch(&frame.target()).await? {
        return Ok((frame, as_geoc(c)?));
    }
    let bytes = core.fetch(&ghid).await.ok_or_else(not_found)?;
    match core.ingest_fetched(bytes.clone()).await {
        Ok(_) | Err(DaemonError::Persist(PersistError::IllegalFrame(_))) => {}
        Err(e) => return Err(e),
    }
    let newer = match decode(&bytes)? {
        Object::Gobd(f) if f.dynamic == ghid && f.counter > frame.counter => f,
        _ => return Err(not_found()),
    };
    let c = core
        .local_or_fetch(&newer.target())
        .await?
        .ok_or_else(not_found)?;
    Ok((newer, as_geoc(c)?))
}

/// Who binds `ghid` and whether it is dynamic, without opening it (local, else remotes).
/// `None` if it is not found or is not an object.
pub async fn owner(core: &DaemonCore, ghid: Ghid) -> Result<Option<(Ghid, bool)>, DaemonError> {
    let Some(bytes) = core.local_or_fetch(&ghid).await? else {
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
    core: &DaemonCore,
    obj: &Loaded,
    known: &[(Ghid, Secret)],
    frame: &Gobd,
    container: &Geoc,
) -> Result<Option<Opened>, DaemonError> {
    if frame.target() != container.ghid {
        return Err(DaemonError::BadArgs(
            "container is not the frame's target".into(),
        ));
    }
    let ratcheted = std::iter::once((&obj.container, &obj.secret))
        .chain(known.iter().rev().map(|(c, s)| (c, s)))
        .find_map(|(c, s)| content::ratchet_to_current(frame, s, c));
    let secret = match ratcheted {
        Some(s) => Some(s),
        None => find_secret(core, &obj.ghid, frame).await,
    };
    let Some(secret) = secret else {
        return Ok(None);
    };
    let (api_id, state) = open(container, &secret)?;
    Ok(Some((secret, api_id, state)))
}

/// Records the object's current secret in the vault (durable with the next vault flush).
pub fn remember_secret(core: &DaemonCore, obj: &Loaded) {
    let record = SecretRecord {
        stored: obj.stored_secret(),
        counter: obj.counter(),
    };
    if let Err(e) = core.put_secret(&obj.ghid, &record) {
        slog::warn!(core.log, "cannot record a secret"; "ghid" => %obj.ghid, "error" => %e);
    }
}

/// Freezes a dynamic object: our GOBS on its current container, whose secret is recorded
/// under the container ghid. Returns the container ghid (a static object).
pub async fn freeze(core: &DaemonCore, obj: &Loaded) -> Result<Ghid, DaemonError> {
    let container = obj.container;
    let gobs = sign(core, move |id| id.make_bind_static(container)).await?;
    let stored = obj.stored_secret();
    let record = SecretRecord {
        stored: stored.clone(),
        counter: 0,
    };
    if obj.private {
        core.put_meta(
            &container,
            &ObjectMeta {
                private: true,
                ..ObjectMeta::default()
            },
        )?;
        // The snapshot belongs to the same app token as the object.
        core.account.tell(super::account_actor::CopyPrivate {
            from: obj.ghid,
            to: container,
        });
    }
    commit(core, vec![gobs.encode()], Some((container, record))).await?;
    core.account.record_secret(container, stored, 0, obj.api_id);
    Ok(container)
}

/// Our GOBS ghids binding `target`.
fn our_bindings(core: &DaemonCore, target: &Ghid) -> Result<Vec<Ghid>, DaemonError> {
    let bindings = match core.archive.list_bindings(target) {
        Ok(b) => b,
        Err(PersistError::NotFound(_)) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let me = core.fingerprint();
    let mut ours = Vec::new();
    for b in bindings {
        let Some(bytes) = core.local(&b)? else {
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
pub fn holds(core: &DaemonCore, ghid: &Ghid) -> Result<bool, DaemonError> {
    Ok(!our_bindings(core, ghid)?.is_empty())
}

/// Holds `ghid`: our own GOBS on it keeps it alive whatever its owner does.
pub async fn hold(core: &DaemonCore, ghid: &Ghid) -> Result<(), DaemonError> {
    let target = *ghid;
    let gobs = sign(core, move |id| id.make_bind_static(target)).await?;
    commit(core, vec![gobs.encode()], None).await?;
    core.account.record_hold(target);
    Ok(())
}

/// Deletes an object of ours: a GDXX on the dynamic ghid, or on each of our GOBS of a
/// static container.
pub async fn delete(core: &DaemonCore, obj: &Loaded) -> Result<(), DaemonError> {
    let targets = if obj.frame.is_some() {
        vec![obj.ghid]
    } else {
        our_bindings(core, &obj.ghid)?
    };
    let debinds = sign(core, move |id| {
        targets
            .iter()
            .map(|t| id.make_debind(*t).map(|d| d.encode()))
            .collect::<Result<Vec<_>, _>>()
    })
    .await?;
    commit(core, debinds, None).await
}
