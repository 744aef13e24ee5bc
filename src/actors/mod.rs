//! # Actors
//!
//! The daemon runtime (DESIGN.md §4): one actix actor per live object, per remote connection,
//! for share handling and for the GC sweeper, plus the account and the encrypted local state
//! they share.
//!
//! - [`api`]: the types the daemon core and the IPC layer share (app ids, tokens, object
//!   views, app events). No behaviour.
//! - [`error`]: [`error::DaemonError`], with stable wire codes.
//! - [`account`]: the identity, the password-derived root secret and the root dynamic object
//!   that carries the account state. Pure; calls `golix`.
//! - [`vault`]: the daemon's private local state, AES-256-GCM-sealed in sled.
//!
//! Calls: `persist` and `golix`. Used by `ipc` and the binaries.

pub mod account;
pub mod api;
pub mod error;
pub mod vault;
pub mod apps;
pub mod boot;
pub mod commit;
pub mod content;
pub mod daemon;
pub mod daemon_core;
pub mod gc;
pub mod ledger;
pub mod object;
pub mod outbox;
pub mod pull;
pub mod remote;
