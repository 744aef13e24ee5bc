//! # IPC: the app <-> daemon protocol
//!
//! Apps talk to `hgxd` over a websocket on `127.0.0.1:<ipc_port>` (docs/architecture.md). Every
//! frame is one binary websocket message holding one msgpack map with named fields
//! (src/ipc/PROTOCOL.md). This module owns that protocol end to end:
//!
//! - [`wire`]: the envelope (`{id, op, args}` / `{id, ok}` / `{id, err}` / `{event, data}`),
//!   the tolerant two-step decoder and the encoders. Pure, no I/O.
//! - [`ops`]: the op table (names, argument names, defaults, results) and the event list,
//!   kept in one place so `hello`, dispatch and `PROTOCOL.md` cannot drift; typed arguments.
//! - [`token`]: the capability token an app must present in `hello`, and the `ipc.token`
//!   file (mode 0600) through which local apps learn it.
//! - [`server`]: the actix-web endpoint (`/` and `/ws`), origin check, [`serve`].
//! - `session`: one task per connection (actorless) that translates
//!   frames into [`DaemonApi`] calls and forwards the daemon's [`AppEvent`]s.
//! - [`client`]: the async Rust client, [`HgxLink`]; `obj`: its [`Obj`] handle.
//!
//! The protocol for client authors (any language) is `src/ipc/PROTOCOL.md`.
//!
//! Calls: the daemon core only through the [`DaemonApi`] trait (implemented by the actors'
//! `DaemonHandle`), plus the shared types of `actors::api` / `actors::error` and `golix::Ghid`;
//! `token` asks `config` for its search order. Nothing below `ipc` calls into it.

pub mod client;
mod daemon;
mod obj;
pub mod ops;
pub mod server;
mod session;
pub mod token;
pub mod wire;

use std::future::Future;

use actix::Recipient;
use thiserror::Error;

use crate::actors::api::{AppEvent, AppId, AppToken, ObjectView};
use crate::actors::error::DaemonError;
use crate::actors::link_state::RemoteStatus;
use crate::golix::Ghid;

pub use client::{ClientError, ErrorKind, HgxLink, Obj, RemoteError, Whoami};
pub use server::{serve, IpcConfig, IpcServer, DEFAULT_IPC_PORT, DEFAULT_MAX_MESSAGE};
pub use token::{CapabilityToken, TOKEN_FILE_NAME};

/// What the IPC server needs from the daemon core: exactly the methods of the actors'
/// `DaemonHandle`, so that handle implements this trait by delegation and tests substitute
/// an in-memory double.
///
/// The handle is shared by every connection's session task (on actix worker threads),
/// hence `Clone + Send + Sync + 'static`. The returned futures are polled on the session's
/// own thread and need not be `Send`; implementations may write `async fn`. Every call runs
/// with the runtime that called [`serve`] entered, so a `tokio::spawn` inside it (an object
/// actor, a forwarding task) lands on that runtime, not on the IPC worker thread.
///
/// Per connection: `connect_app` once at `hello`, then any number of op calls, possibly
/// concurrent, then `disconnect_app` once after the last of them has finished.
pub trait DaemonApi: Clone + Send + Sync + 'static {
    /// The user's identity (the first party's Ghid).
    fn fingerprint(&self) -> Ghid;
    /// The account's root object Ghid.
    fn user_id(&self) -> Ghid;
    /// Each remote's connection state and outbox depth (`status`).
    fn remotes(&self) -> Vec<RemoteStatus>;
    /// Registers an app session; the daemon sends that session's events to `events` (its
    /// [`AppInbox`](crate::actors::inbox::AppInbox)), never waiting.
    fn connect_app(&self, events: Recipient<AppEvent>) -> AppId;
    /// Ends an app session and releases its trackers. Called once per connected session,
    /// after its last in-flight request finished.
    fn disconnect_app(&self, app: AppId);
    /// Creates an object owned by the user and tracked by `app`.
    fn new_object(
        &self,
        app: AppId,
        state: Vec<u8>,
        api_id: Option<Ghid>,
        dynamic: bool,
        private: bool,
    ) -> impl Future<Output = Result<ObjectView, DaemonError>>;
    /// Loads an object and tracks it for `app`.
    fn get_object(
        &self,
        app: AppId,
        ghid: Ghid,
    ) -> impl Future<Output = Result<ObjectView, DaemonError>>;
    /// Pushes new state (and optionally a privacy change) to a dynamic object.
    fn push(
        &self,
        app: AppId,
        ghid: Ghid,
        state: Vec<u8>,
        private: Option<bool>,
    ) -> impl Future<Output = Result<(), DaemonError>>;
    /// Pulls the newest state from upstream.
    fn sync(&self, app: AppId, ghid: Ghid)
        -> impl Future<Output = Result<ObjectView, DaemonError>>;
    /// Binds the current state statically; returns the static Ghid.
    fn freeze(&self, app: AppId, ghid: Ghid) -> impl Future<Output = Result<Ghid, DaemonError>>;
    /// Adds the user's own binding so the object survives its author's delete.
    fn hold(&self, app: AppId, ghid: Ghid) -> impl Future<Output = Result<(), DaemonError>>;
    /// Stops tracking the object for `app` (local only).
    fn discard(&self, app: AppId, ghid: Ghid) -> impl Future<Output = Result<(), DaemonError>>;
    /// Debinds the user's bindings of the object.
    fn delete(&self, app: AppId, ghid: Ghid) -> impl Future<Output = Result<(), DaemonError>>;
    /// Binds an app token to `app`: `None` issues a new one, else a known one. Returns the
    /// token and its startup object.
    fn register_token(
        &self,
        app: AppId,
        token: Option<AppToken>,
    ) -> impl Future<Output = Result<(AppToken, Option<Ghid>), DaemonError>>;
    /// Sets the startup object of `app`'s token.
    fn register_startup(
        &self,
        app: AppId,
        ghid: Ghid,
    ) -> impl Future<Output = Result<(), DaemonError>>;
    /// Clears the startup object of `app`'s token.
    fn deregister_startup(&self, app: AppId) -> impl Future<Output = Result<(), DaemonError>>;
    /// `app` receives `Share` events for objects of `api_id`.
    fn register_share_handler(
        &self,
        app: AppId,
        api_id: Ghid,
    ) -> impl Future<Output = Result<(), DaemonError>>;
    /// `app` stops receiving `Share` events for `api_id` (only its own registration).
    fn deregister_share_handler(
        &self,
        app: AppId,
        api_id: Ghid,
    ) -> impl Future<Output = Result<(), DaemonError>>;
    /// Shares an object with another user; the outcome arrives as a `ShareResult` event.
    fn share(
        &self,
        app: AppId,
        ghid: Ghid,
        recipient: Ghid,
    ) -> impl Future<Output = Result<(), DaemonError>>;
}

/// Failures of the IPC server outside any one request.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum IpcError {
    #[error("cannot bind the IPC endpoint {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
}
