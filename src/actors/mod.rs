//! # Actors
//!
//! The daemon runtime (docs/architecture.md, with the actor diagram): one actix actor per
//! live object, one each for the account, share handling and the GC sweeper (on the daemon's
//! own arbiters, [`arbiters`]), one supervised actix actor per remote, plus the encrypted
//! local state they share.
//!
//! - [`api`]: the types the daemon core and the IPC layer share (app ids, tokens, object
//!   views, app events). No behaviour.
//! - [`error`]: [`error::DaemonError`], with stable wire codes.
//! - [`account`]: the identity, the password-derived root secret and the root dynamic object
//!   that carries the account state. Pure; calls `golix`.
//! - [`vault`]: the daemon's private local state, AES-256-GCM-sealed in sled.
//! - [`daemon`]: [`daemon::DaemonHandle`] (the API the IPC layer calls) and
//!   [`daemon::start`]; [`boot`]: storage, login and actor start-up.
//! - [`arbiters`]: the actix system thread and arbiters the actors run on.
//! - [`object`]: `ObjectActor`, one actix actor per live object (push coalescing, pull,
//!   freeze, hold, delete); [`push`]: its frame pipeline (build, sign both signatures at
//!   once on [`golix_worker`]'s `SyncArbiter`, commit in order); [`commit`]: making,
//!   loading, opening and committing objects;
//!   [`content`]: the app plaintext framing and the ratchet walk.
//! - [`remote_actor`]: `RemoteActor`, one supervised actix actor per remote (connection,
//!   restart with backoff and failover, subscriptions, outbox replay, catch-up); [`remote`]:
//!   the remotes' configuration, the `RemoteHandle` callers hold, the `Connector`;
//!   [`link_state`]: each remote's connection state for `hgxd status` and when a
//!   failure is worth a warning; [`pull`]: applying what remotes push; [`outbox`]: the durable
//!   per-remote publish queue; [`drain`]: sending it to one remote (publish order, refusals);
//!   [`limits`]: each remote's size limit and the check every commit runs.
//! - [`account_actor`]: `AccountActor`, the owner of the account and its flush schedule;
//!   [`account_lag`]: the account's flushed frame counters, which size our frames' target
//!   vectors;
//!   [`gc`]: `GcActor`, forgetting secrets of removed objects; [`apps`]: app sessions, their
//!   trackers, tokens, share handlers and coalescing event mailboxes; [`dispatch`]: app
//!   tokens, startup and private objects, offering shares to apps; [`share`]: `ShareActor`,
//!   sharing with other users through GARQ handshakes; [`daemon_core`]: what the actors
//!   share.
//!
//! The object, account, share, GC and remote actors are `actix::Actor`s: every message is a
//! type with one `Handler` and a typed reply; their work runs on the daemon's tokio runtime,
//! off the actor threads. Every actor still reaches its peers through `DaemonCore`.
//!
//! Calls: `persist` and `golix`. Used by `ipc` and the binaries.

pub mod account;
pub mod account_actor;
pub mod account_lag;
pub mod api;
pub mod apps;
pub mod arbiters;
pub mod boot;
pub mod commit;
pub mod content;
pub mod daemon;
pub mod daemon_core;
pub mod dispatch;
pub mod drain;
pub mod error;
pub mod gc;
pub mod golix_worker;
pub mod limits;
pub mod link_state;
pub mod object;
pub mod outbox;
pub mod pull;
pub mod push;
pub mod remote;
pub mod remote_actor;
pub mod share;
pub mod vault;
