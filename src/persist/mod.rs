//! # Persistence
//!
//! What every holder of Golix objects shares: the [`store::Store`] trait and its sled and
//! NATS JetStream implementations, the ingest rules and collection cascade over it ([`rules`]), the
//! [`archive::Archive`] facade (publish / get / queries, durable group commit), the persister
//! wire protocol ([`wire`]), the fanout hub ([`hub`]), the actix-web server ([`server`]) and
//! the client side of the protocol ([`client`]) that `hgxd` uses, the rustls set-up of both
//! ends ([`tls`]), and server websocket framing ([`wsframe`]).
//!
//! Calls: `golix` only (plus sled, async-nats, actix). Used by `actors`, `ipc` and the
//! binaries.

pub mod archive;
mod budget;
pub mod client;
pub mod error;
pub mod hub;
pub mod rules;
pub mod server;
pub mod store;
pub mod tls;
pub mod wire;
pub mod wsframe;

pub use archive::{Archive, Checked, FlushStart, Notification, Published, Status, SyncWait};
pub use error::PersistError;
