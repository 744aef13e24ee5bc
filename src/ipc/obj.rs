//! [`Obj`]: a convenience handle for one object over an [`HgxLink`]: its current state
//! (kept up to date from `update` events), its operations, and update / delete callbacks.
//!
//! Calls: the link's ops. The link's connection task calls back into the handle when an
//! event for its ghid arrives.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::client::{lock, ClientError, HgxLink};
use crate::actors::api::ObjectView;
use crate::golix::Ghid;

type UpdateCallback = Arc<dyn Fn(&ObjectView) + Send + Sync>;
type DeleteCallback = Arc<dyn Fn(Ghid) + Send + Sync>;

/// What the handle's clones and the link's event router share.
pub(crate) struct ObjShared {
    ghid: Ghid,
    /// The newest state this app knows.
    view: Mutex<ObjectView>,
    /// Deleted upstream, or discarded / deleted by this app.
    dead: AtomicBool,
    on_update: Mutex<Vec<UpdateCallback>>,
    on_delete: Mutex<Vec<DeleteCallback>>,
}

impl ObjShared {
    pub(crate) fn ghid(&self) -> Ghid {
        self.ghid
    }

    /// An `update` event: new state, then the callbacks (outside every lock).
    pub(crate) fn apply_update(&self, view: &ObjectView) {
        *lock(&self.view) = view.clone();
        let callbacks = lock(&self.on_update).clone();
        for cb in callbacks {
            cb(view);
        }
    }

    /// A `delete` event: dead, then the callbacks.
    pub(crate) fn apply_delete(&self) {
        self.dead.store(true, Ordering::Release);
        let callbacks = lock(&self.on_delete).clone();
        for cb in callbacks {
            cb(self.ghid);
        }
    }
}

/// One object, as an app holds it. Clones share state and callbacks.
#[derive(Clone)]
pub struct Obj {
    link: HgxLink,
    shared: Arc<ObjShared>,
}

impl std::fmt::Debug for Obj {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Obj")
            .field("ghid", &self.shared.ghid)
            .field("dead", &self.is_dead())
            .finish_non_exhaustive()
    }
}

impl Obj {
    pub(crate) fn new(link: HgxLink, view: ObjectView) -> Obj {
        let shared = Arc::new(ObjShared {
            ghid: view.ghid,
            view: Mutex::new(view),
            dead: AtomicBool::new(false),
            on_update: Mutex::new(Vec::new()),
            on_delete: Mutex::new(Vec::new()),
        });
        link.router().register(&shared);
        Obj { link, shared }
    }

    pub fn ghid(&self) -> Ghid {
        self.shared.ghid
    }

    /// The current state.
    pub fn state(&self) -> Vec<u8> {
        lock(&self.shared.view).state.clone()
    }

    /// Everything the app knows about the object.
    pub fn view(&self) -> ObjectView {
        lock(&self.shared.view).clone()
    }

    /// Deleted (upstream or here) or discarded.
    pub fn is_dead(&self) -> bool {
        self.shared.dead.load(Ordering::Acquire)
    }

    /// Runs `f` on every upstream update (not on this app's own pushes), on the link's
    /// connection task: keep it short, spawn for real work.
    pub fn on_update(&self, f: impl Fn(&ObjectView) + Send + Sync + 'static) {
        lock(&self.shared.on_update).push(Arc::new(f));
    }

    /// Runs `f` when the object is deleted upstream.
    pub fn on_delete(&self, f: impl Fn(Ghid) + Send + Sync + 'static) {
        lock(&self.shared.on_delete).push(Arc::new(f));
    }

    /// Pushes new state; on success it is the handle's state.
    pub async fn push(&self, state: Vec<u8>) -> Result<(), ClientError> {
        self.link.push(self.ghid(), state.clone(), None).await?;
        lock(&self.shared.view).state = state;
        Ok(())
    }

    /// Pulls from upstream and takes the result as the handle's state.
    pub async fn sync(&self) -> Result<ObjectView, ClientError> {
        let view = self.link.sync(self.ghid()).await?;
        *lock(&self.shared.view) = view.clone();
        Ok(view)
    }

    /// Binds the current state statically; returns the static ghid.
    pub async fn freeze(&self) -> Result<Ghid, ClientError> {
        self.link.freeze(self.ghid()).await
    }

    pub async fn hold(&self) -> Result<(), ClientError> {
        self.link.hold(self.ghid()).await
    }

    /// Shares the object with the user whose fingerprint is `recipient`.
    pub async fn share(&self, recipient: Ghid) -> Result<(), ClientError> {
        self.link.share(self.ghid(), recipient).await
    }

    /// Stops tracking; the handle is dead afterwards.
    pub async fn discard(&self) -> Result<(), ClientError> {
        self.link.discard(self.ghid()).await?;
        self.shared.dead.store(true, Ordering::Release);
        Ok(())
    }

    /// Deletes the object; the handle is dead afterwards.
    pub async fn delete(&self) -> Result<(), ClientError> {
        self.link.delete(self.ghid()).await?;
        self.shared.dead.store(true, Ordering::Release);
        Ok(())
    }
}
