//! The types the daemon and the IPC layer share: how an app is named, what an object looks
//! like to an app, and the events pushed to apps. The IPC layer turns these into wire
//! messages; the actors produce and consume them. No behaviour lives here.

use crate::golix::Ghid;

/// One IPC connection (app session), unique for the daemon's lifetime.
pub type AppId = u64;

/// A 16-byte app token: identifies an app across restarts (docs/architecture.md).
pub type AppToken = [u8; 16];

/// All zeros: "no token" on the wire (docs/architecture.md), like an absent one.
pub const NO_TOKEN: AppToken = [0; 16];

/// An object as an app sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectView {
    /// Dynamic ghid for dynamic objects, container ghid for static ones.
    pub ghid: Ghid,
    /// The binder (owner) identity.
    pub author: Ghid,
    /// Application-defined type id (a 65-byte algo-0 ghid-like id), if any.
    pub api_id: Option<Ghid>,
    pub dynamic: bool,
    pub private: bool,
    /// The decrypted application state.
    pub state: Vec<u8>,
}

/// Pushed from the daemon to one app session (a message to its [`AppInbox`]).
///
/// [`AppInbox`]: super::inbox::AppInbox
#[derive(Debug, Clone, PartialEq, Eq, actix::Message)]
#[rtype(result = "()")]
pub enum AppEvent {
    /// A tracked object has new state from upstream (never sent to the app that pushed it).
    Update(ObjectView),
    /// A tracked object was deleted by its owner.
    Delete(Ghid),
    /// An object was shared with this app's api_id (`origin` = sharer's fingerprint, or our
    /// own fingerprint for an object created by another app of the same user).
    Share {
        ghid: Ghid,
        origin: Ghid,
        api_id: Option<Ghid>,
    },
    /// The outcome of a share this app asked for.
    ShareResult {
        ghid: Ghid,
        recipient: Ghid,
        ok: bool,
        status: u32,
    },
    /// A remote refused an object of ours for good (`code`: its wire code, e.g. `too_large`):
    /// that remote keeps the tracked object's previous state until a later push fits.
    RemoteRefused {
        ghid: Ghid,
        remote: String,
        code: String,
        message: String,
    },
}
