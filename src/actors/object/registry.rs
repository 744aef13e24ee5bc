//! The live objects by ghid: [`ObjectRegistry`] (one actor per ghid, one load at a time),
//! [`ObjectHandle`] (how callers reach an actor), and [`ObjectPeers`] (what every new actor
//! is given). The registry is a read-mostly map behind a std mutex; it holds the actors'
//! addresses, and they hold it weakly.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use actix::prelude::*;
use actix::WeakRecipient;

use super::{ObjectActor, MAILBOX};
use crate::actors::api::{AppId, ObjectView};
use crate::actors::apps::AppRegistry;
use crate::actors::commit::{Loaded, Store};
use crate::actors::gc::{Deleted, Liveness};
use crate::golix::Ghid;

/// Sends to one `ObjectActor`. Cheap to clone.
#[derive(Clone)]
pub struct ObjectHandle {
    addr: Addr<ObjectActor>,
    /// Distinguishes successive actors of the same ghid in the registry.
    id: u64,
}

impl ObjectHandle {
    /// Asks and awaits the reply; `Err` if the actor is gone.
    pub async fn ask<M>(&self, msg: M) -> Result<M::Result, MailboxError>
    where
        M: Message + Send + 'static,
        M::Result: Send,
        ObjectActor: Handler<M>,
    {
        self.addr.send(msg).await
    }

    /// Queues a message without waiting; `false` if the actor is gone.
    pub fn tell<M>(&self, msg: M) -> bool
    where
        M: Message + Send + 'static,
        M::Result: Send,
        ObjectActor: Handler<M>,
    {
        if !self.addr.connected() {
            return false;
        }
        self.addr.do_send(msg);
        true
    }
}

/// Live objects by ghid, plus per-ghid load locks so one ghid is loaded once.
#[derive(Default)]
pub struct ObjectRegistry {
    live: Mutex<HashMap<Ghid, ObjectHandle>>,
    loading: Mutex<HashMap<Ghid, Arc<tokio::sync::Mutex<()>>>>,
    next_id: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ObjectRegistry {
    pub fn get(&self, ghid: &Ghid) -> Option<ObjectHandle> {
        lock(&self.live).get(ghid).cloned()
    }

    pub fn all(&self) -> Vec<(Ghid, ObjectHandle)> {
        lock(&self.live)
            .iter()
            .map(|(g, h)| (*g, h.clone()))
            .collect()
    }

    /// Dynamic ghids of live objects (what remotes subscribe to).
    pub fn ghids(&self) -> Vec<Ghid> {
        lock(&self.live).keys().copied().collect()
    }

    /// The load lock of `ghid`.
    pub fn load_lock(&self, ghid: &Ghid) -> Arc<tokio::sync::Mutex<()>> {
        let mut l = lock(&self.loading);
        l.retain(|_, m| Arc::strong_count(m) > 1);
        l.entry(*ghid).or_default().clone()
    }

    pub(super) fn remove_if(&self, ghid: &Ghid, id: u64) {
        let mut live = lock(&self.live);
        if live.get(ghid).is_some_and(|h| h.id == id) {
            live.remove(ghid);
        }
    }
}

/// What every `ObjectActor` reaches besides its registry: the [`Store`] (local state,
/// remotes, the `AccountActor`), the app registry (trackers, events) and the `GcActor`
/// (`Deleted`). Built once at start-up. Cheap to clone.
#[derive(Clone)]
pub struct ObjectPeers {
    pub store: Store,
    pub apps: Arc<AppRegistry>,
    /// Weak, like every link to an actor `DaemonHandle` owns.
    pub gc: WeakRecipient<Deleted>,
}

impl ObjectRegistry {
    /// Starts the actor of a loaded object, tracked by `app`, on the next arbiter and
    /// registers it. Returns the app's view. An app that disconnected meanwhile does not track
    /// it, and no actor starts. The actor holds the registry weakly (to leave it).
    pub fn spawn(self: &Arc<Self>, peers: &ObjectPeers, loaded: Loaded, app: AppId) -> ObjectView {
        let ghid = loaded.ghid;
        let view = loaded.view();
        if !peers.apps.track(app, ghid) {
            return view;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let actor = ObjectActor::new(peers.clone(), Arc::downgrade(self), loaded, id, app);
        let arbiter = peers.store.local.arbiters.next();
        let addr = ObjectActor::start_in_arbiter(&arbiter, move |ctx| {
            ctx.set_mailbox_capacity(MAILBOX);
            actor
        });
        lock(&self.live).insert(ghid, ObjectHandle { addr, id });
        view
    }
}

/// What the GC asks before it forgets an object's secrets, and the account before it forgets
/// a received share no app adopted.
impl Liveness for ObjectRegistry {
    fn is_live(&self, ghid: &Ghid) -> bool {
        self.get(ghid).is_some()
    }
}
