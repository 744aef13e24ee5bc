//! # Actors
//!
//! The daemon runtime (docs/architecture.md, with the actor diagram): one actix actor per
//! live object, one each for the account, share handling and the GC sweeper (on the daemon's
//! own arbiters, [`arbiters`]), one supervised actix actor per remote, plus the encrypted
//! local state they share.
//!
//! - [`api`]: the types the daemon and the IPC layer share (app ids, tokens, object
//!   views, app events). No behaviour.
//! - [`error`]: [`error::DaemonError`], with stable wire codes.
//! - [`account`]: the identity, the password-derived root secret and the root dynamic object
//!   that carries the account state. Pure; calls `golix`.
//! - [`vault`]: the daemon's private local state, AES-256-GCM-sealed in sled.
//! - [`local`]: `Local`, the shared local state every actor stands on (runtime, arbiters,
//!   identity, archive, vault records, outbox, shutdown gate, log). Data only: a leaf that
//!   imports no actor module (the actors import it).
//! - [`upstream`]: `Upstream`, the configured remotes as one (fetch, ingest what is fetched,
//!   size limit, subscriptions); [`durable`]: the write-ahead-logged local commit.
//! - [`daemon`]: [`daemon::DaemonHandle`] (the API the IPC layer calls) and
//!   [`daemon::start`]; [`boot`]: storage, login, actor start-up and wiring (each actor gets
//!   exactly its peers).
//! - [`arbiters`]: the actix system thread and arbiters the actors run on; [`backoff`]: the
//!   retry pause and warning spacing of what keeps failing (the outbox drain, the account's
//!   flushes).
//! - [`object`] (a directory: the actor, its pushes, its sync with changes from elsewhere,
//!   its registry): `ObjectActor`, one actix actor per live object (push coalescing, pull,
//!   freeze, hold, delete), and the registry that finds it; [`push`]: its frame pipeline
//!   (build, sign both signatures at once on [`golix_worker`]'s pool, which also commits,
//!   in order); [`commit`]: the `Store` (local
//!   state, remotes, account) and making, loading, opening and committing objects with it;
//!   [`content`]: the app plaintext framing and the ratchet walk.
//! - [`remote_actor`]: `RemoteActor`, one supervised actix actor per remote (connection,
//!   restart with backoff and failover, subscriptions, outbox replay, catch-up); [`remote`]:
//!   the remotes' configuration, the `RemoteHandle` callers hold and the messages it sends,
//!   the `Connector`; [`link_state`]: each remote's connection state for `hgxd status` and
//!   when a failure is worth a warning; [`pull`]: applying what remotes push;
//!   [`publish_queue`]: the durable per-remote publish queue (the "outbox"), also every
//!   commit's write-ahead log; [`drain`]: sending it to one remote (publish order,
//!   refusals); [`limits`]: each remote's size limit and the check every commit runs.
//! - [`account_actor`] (a directory: the actor, its handle, the app-state handlers, the
//!   ledger): `AccountActor`, the owner of the account and its flush schedule;
//!   [`account_lag`]: the account's flushed frame counters, which size our frames' target
//!   vectors;
//!   [`gc`]: `GcActor`, forgetting secrets of removed objects; [`apps`]: app sessions, their
//!   trackers, tokens, share handlers and event `Recipient`s; [`inbox`]: `AppInbox`, an app
//!   session's bounded, coalescing event mailbox (an actor the session starts); [`dispatch`]: app
//!   tokens, startup and private objects, offering shares to apps; [`share`]: `ShareActor`,
//!   sharing with other users through GARQ handshakes.
//!
//! The object, account, share, GC and remote actors are `actix::Actor`s: every message is a
//! type with one `Handler` and a typed reply; their work runs on the daemon's tokio runtime,
//! off the actor threads. No actor reaches another through a shared context: each is given
//! its peers at start-up as weak addresses or `Recipient`s (`DaemonHandle` and the object
//! registry own the actors; docs/architecture.md, "Who talks to whom"), and
//! `tests/module_cycles.rs` keeps the import graph free of cycles of more than two files.
//!
//! Calls: `persist` and `golix`. Used by `ipc` and the binaries.

pub mod account;
pub mod account_actor;
pub mod account_lag;
pub mod api;
pub mod apps;
pub mod arbiters;
pub mod backoff;
pub mod boot;
pub mod commit;
pub mod content;
pub mod daemon;
pub mod dispatch;
pub mod drain;
pub mod durable;
pub mod error;
pub mod gc;
pub mod golix_worker;
pub mod inbox;
pub mod limits;
pub mod link_state;
pub mod local;
pub mod object;
pub mod publish_queue;
pub mod pull;
pub mod push;
pub mod remote;
pub mod remote_actor;
pub mod share;
pub mod upstream;
pub mod vault;
