//! Hypergolix: "programmable Dropbox". A local daemon (`hgxd`) keeps end-to-end encrypted,
//! hash-addressed Golix objects in sync through persistence servers (`hgx-persister`) and
//! pushes every update to every holder.
//!
//! # Layout
//!
//! - [`golix`]: the Golix protocol, pure and sans-IO (addresses, containers, crypto,
//!   identities). Calls nothing of ours.
//! - `persist`: what every holder of Golix objects shares — the Store and its ingest and
//!   collection rules, the persister protocol, server and client. Calls `golix`.
//! - `actors`: the daemon runtime (objects, remotes, sharing, account). Calls `persist`, `golix`.
//! - `ipc`: the app <-> daemon websocket protocol and the Rust client. Calls `actors`,
//!   `persist`, `golix`, `config` (where apps look for the daemon's token).
//!
//! - `config`, `logging`, `process`, `net`: `hypergolix.yml` (search order, defaults,
//!   overrides, in-place edits), slog setup and log rotation, pid-file locks and signals,
//!   listening sockets. Shared by both
//!   binaries; call nothing above `golix`.
//! - `work_pool`: a fixed pool of named threads for CPU-bound jobs (the persister's verify
//!   pool, the daemon's signing pool, the persister's fanout helpers under a CPU quota).
//!   Calls nothing of ours.
//! - `beside`: a job run on another core's bound thread while the caller runs its own (the
//!   persister's container checks and the parts of its large fanout rounds). Calls
//!   `process`.
//! - `hint`: CPU hints (prefetch). Calls nothing of ours.
//! - `testdata`: where the test vectors live (`tests/vectors/golix/`), for tests and benches.
//! - `inspect`: `hgxd inspect`, decode-and-verify of `.ghid` files. Calls `golix`.
//! - `hgxd`: the daemon process (config, password, account, daemon + app endpoint, signals).
//!   Calls `actors`, `ipc`, `config`, `logging`, `process`.
//!
//! Dependencies point down only: `golix` <- `persist` <- `actors` <- `ipc` <- `hgxd` <- binaries.

pub mod actors;
pub mod beside;
pub mod config;
pub mod golix;
pub mod hgxd;
pub mod hint;
pub mod inspect;
pub mod ipc;
pub mod logging;
pub mod net;
pub mod persist;
pub mod process;
#[doc(hidden)]
pub mod testdata;
pub mod work_pool;
