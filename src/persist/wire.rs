//! # Persister wire protocol
//!
//! The envelope of the persister websocket (`/ws`), shared by the server
//! ([`super::server`]) and the client ([`super::client`]). Every websocket message is one
//! binary frame holding one msgpack **map** (named fields, `rmp_serde::to_vec_named`, byte
//! fields as msgpack `bin`, Ghids as 65-byte `bin`):
//!
//! - request `{id, op, args}`;
//! - reply `{id, ok}` or `{id, err: {code, message}}`;
//! - server push `{event: "notify", subscription, object}`.
//!
//! Decoding is tolerant and two-step (docs/persister-protocol.md): first [`RawRequest`] (`id` kept as an opaque value and
//! echoed back, `op` a string, `args` any value), then the typed args of the op ([`args`]).
//! `args` must be a map of named arguments, or absent / `nil` for none: an array (positional
//! arguments) is `bad_args`, as in the app protocol; a client that offers positional calls
//! binds them by the names of the op table ([`OPS`], what `hello` returns) before sending.
//! Unknown fields are ignored; an unknown op or a malformed envelope is an error *reply*,
//! never the end of a session.
//!
//! Limits of an envelope: [`MAX_DEPTH`] levels of nesting and [`MAX_VALUES`] values, checked
//! by [`check_shape`] (one limit, one message: "msgpack nested deeper than 16"). Ghid
//! arguments with address algo 0 (test-only) are `bad_args`: nothing stored can have one.
//!
//! A connection may authenticate as an identity whose GIDC the server holds:
//! `auth_challenge` returns fresh random bytes, `auth {identity, signature}` answers them
//! ([`crate::golix::auth`]). Nothing requires it; the server counts the GARQs an
//! authenticated connection stores against that identity's signing key instead of against
//! the one shared anonymous sender (see `rules::checks::mailbox_room`).
//!
//! Owns: envelope types, encoders, the op table and protocol constants. Calls: `golix::Ghid`
//! (serde as bin), rmp, rmp-serde, rmpv. Sans-IO.

use std::collections::BTreeMap;

use bytes::Bytes;
use rmpv::Value;
use serde::{Deserialize, Serialize};

use crate::golix::Ghid;

/// Protocol version returned by `hello`. Within version 1 changes are additive only.
pub const PROTOCOL_VERSION: u32 = 1;

/// The name of the protocol in the HTTP root document.
pub const PROTOCOL_NAME: &str = "hgx-persist/1";

/// Nesting limit when decoding a request envelope: requests are shallow maps.
pub const MAX_DEPTH: usize = 16;

/// rmpv's own depth budget after [`check_shape`] passed: rmpv spends about two units per
/// level (and one on leaves), so it gets room for anything the shape check accepts and is
/// never the limit that trips (one limit, one message).
const fn rmpv_depth(max_depth: usize) -> usize {
    2 * max_depth + 2
}

/// Most msgpack values (of any kind, nested ones included) one request envelope may hold.
/// Requests are a handful of fields; the bound exists because a decoded value is ~30 times
/// the size of its one-byte encoding (a 16 MiB frame of `nil`s decoded into 1.2 GiB before
/// this guard). Checked by [`check_shape`] before anything is allocated.
pub const MAX_VALUES: usize = 65_536;

/// Most values one server message may hold, for the client side ([`Incoming::decode`]):
/// replies such as `list_bindings` can be long lists, but not unboundedly so.
pub const MAX_INCOMING_VALUES: usize = 1 << 20;

/// Most bytes a `publish` request adds around its object (`{id, op: "publish", args:
/// {object}}` with the largest id and a 32-bit bin header; 42 in fact, rounded up). A
/// client that knows a server's `max_frame` ([`Limits::max_frame`]) knows the largest object
/// it can publish there: [`max_publish_object`].
pub const PUBLISH_OVERHEAD: u64 = 64;

/// The largest Golix object a `publish` can carry to a server whose `max_frame` is
/// `max_frame`.
pub fn max_publish_object(max_frame: u64) -> u64 {
    max_frame.saturating_sub(PUBLISH_OVERHEAD)
}

/// The only server push event.
pub const EVENT_NOTIFY: &str = "notify";

/// Every server push event, as listed by `hello`.
pub const EVENTS: &[&str] = &[EVENT_NOTIFY];

/// Stable error codes produced by the session itself (the rest come from
/// [`super::PersistError::code`]).
pub mod codes {
    pub const MALFORMED: &str = "malformed";
    pub const UNKNOWN_OP: &str = "unknown_op";
    pub const BAD_ARGS: &str = "bad_args";
    pub const TOO_LARGE: &str = "too_large";
    pub const NOT_FOUND: &str = "not_found";
    pub const LIMIT: &str = "limit";
    pub const STORAGE: &str = "storage";
    pub const UNAVAILABLE: &str = "unavailable";
}

/// One entry of the op table.
#[derive(Clone, Copy, Debug)]
pub struct OpSpec {
    /// Snake-case op name.
    pub name: &'static str,
    /// Argument names, in the order a positional caller would pass them.
    pub args: &'static [&'static str],
    /// What `ok` carries, for humans and generated docs.
    pub result: &'static str,
}

/// The op table returned by `hello`. No op has defaulted arguments yet; an argument added
/// later must come with a default so that old clients keep working.
pub const OPS: &[OpSpec] = &[
    OpSpec {
        name: "hello",
        args: &[],
        result: "map",
    },
    OpSpec {
        name: "ping",
        args: &[],
        result: "bool",
    },
    OpSpec {
        name: "publish",
        args: &["object"],
        result: "map {ghid, kind, new}",
    },
    OpSpec {
        name: "get",
        args: &["ghid"],
        result: "bin",
    },
    OpSpec {
        name: "subscribe",
        args: &["ghid"],
        result: "bool",
    },
    OpSpec {
        name: "unsubscribe",
        args: &["ghid"],
        result: "bool",
    },
    OpSpec {
        name: "list_subscriptions",
        args: &[],
        result: "[ghid]",
    },
    OpSpec {
        name: "list_bindings",
        args: &["ghid"],
        result: "[ghid]",
    },
    OpSpec {
        name: "query_debinding",
        args: &["ghid"],
        result: "ghid | nil",
    },
    OpSpec {
        name: "exists",
        args: &["ghid"],
        result: "bool",
    },
    OpSpec {
        name: "disconnect",
        args: &[],
        result: "bool",
    },
    OpSpec {
        name: "auth_challenge",
        args: &[],
        result: "bin",
    },
    OpSpec {
        name: "auth",
        args: &["identity", "signature"],
        result: "bool",
    },
];

/// Why a request's `args` that are not a map are refused (`bad_args`), here and in the app
/// protocol: arguments are named; a client that offers positional calls binds them to the
/// names in the op table before sending.
pub const ARGS_NOT_A_MAP: &str = "`args` must be a map of named arguments";

/// Step one of decoding: the envelope, with the args left untyped.
#[derive(Clone, Debug, PartialEq)]
pub struct RawRequest {
    /// Opaque request id, echoed in the reply (`nil` if absent).
    pub id: Value,
    pub op: String,
    /// `nil` when absent.
    pub args: Value,
}

/// Why an envelope could not be decoded, with the id if it could be recovered.
#[derive(Clone, Debug, PartialEq)]
pub struct Malformed {
    pub id: Value,
    pub reason: String,
}

/// Walks the first msgpack value in `bytes` without allocating anything but a stack of
/// `max_depth` counters, and refuses it if it nests deeper than `max_depth`, holds more than
/// `max_values` values, or is truncated. Returns the encoded length of the value. Run before
/// `rmpv` decodes, so that a small frame cannot make the decoder allocate without bound.
pub fn check_shape(bytes: &[u8], max_depth: usize, max_values: usize) -> Result<usize, String> {
    // Values still expected at each open level; the bottom one is the top-level value.
    let mut pending: Vec<u64> = Vec::with_capacity(max_depth.min(64) + 1);
    pending.push(1);
    let mut pos = 0usize;
    let mut values = 0usize;
    let be = |at: usize, n: usize| -> Result<u64, String> {
        let b = bytes
            .get(at..at + n)
            .ok_or_else(|| "truncated msgpack".to_owned())?;
        Ok(b.iter().fold(0u64, |acc, &x| (acc << 8) | u64::from(x)))
    };
    while let Some(top) = pending.last_mut() {
        if *top == 0 {
            pending.pop();
            continue;
        }
        *top -= 1;
        values += 1;
        if values > max_values {
            return Err(format!("more than {max_values} msgpack values"));
        }
        let marker = *bytes.get(pos).ok_or("truncated msgpack")?;
        pos += 1;
        // (bytes to skip after the marker, child values)
        let (skip, children): (u64, u64) = match marker {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (0, 0),
            0x80..=0x8f => (0, 2 * u64::from(marker & 0x0f)),
            0x90..=0x9f => (0, u64::from(marker & 0x0f)),
            0xa0..=0xbf => (u64::from(marker & 0x1f), 0),
            0xc1 => return Err("reserved msgpack marker 0xc1".into()),
            0xc4 | 0xd9 => (1 + be(pos, 1)?, 0),
            0xc5 | 0xda => (2 + be(pos, 2)?, 0),
            0xc6 | 0xdb => (4 + be(pos, 4)?, 0),
            0xc7 => (1 + 1 + be(pos, 1)?, 0),
            0xc8 => (2 + 1 + be(pos, 2)?, 0),
            0xc9 => (4 + 1 + be(pos, 4)?, 0),
            0xca => (4, 0),
            0xcb => (8, 0),
            0xcc | 0xd0 => (1, 0),
            0xcd | 0xd1 => (2, 0),
            0xce | 0xd2 => (4, 0),
            0xcf | 0xd3 => (8, 0),
            0xd4 => (2, 0),
            0xd5 => (3, 0),
            0xd6 => (5, 0),
            0xd7 => (9, 0),
            0xd8 => (17, 0),
            0xdc => (2, be(pos, 2)?),
            0xdd => (4, be(pos, 4)?),
            0xde => (2, 2 * be(pos, 2)?),
            0xdf => (4, 2 * be(pos, 4)?),
        };
        pos = usize::try_from(skip)
            .ok()
            .and_then(|s| pos.checked_add(s))
            .filter(|&p| p <= bytes.len())
            .ok_or("truncated msgpack")?;
        if children > 0 {
            if pending.len() > max_depth {
                return Err(format!("msgpack nested deeper than {max_depth}"));
            }
            // Every child takes at least one byte: a count the rest cannot hold is a lie.
            if children > (bytes.len() - pos) as u64 {
                return Err("truncated msgpack".into());
            }
            pending.push(children);
        }
    }
    Ok(pos)
}

impl RawRequest {
    /// Decodes one envelope. Never panics on peer input; never allocates more than a small
    /// multiple of the frame ([`check_shape`] with [`MAX_DEPTH`] and [`MAX_VALUES`] first).
    pub fn decode(frame: &[u8]) -> Result<RawRequest, Malformed> {
        let malformed = |id: Value, reason: String| Malformed { id, reason };
        check_shape(frame, MAX_DEPTH, MAX_VALUES)
            .map_err(|e| malformed(Value::Nil, format!("not msgpack: {e}")))?;
        let mut rd = frame;
        let value = rmpv::decode::read_value_with_max_depth(&mut rd, rmpv_depth(MAX_DEPTH))
            .map_err(|e| malformed(Value::Nil, format!("not msgpack: {e}")))?;
        let Value::Map(entries) = value else {
            return Err(malformed(Value::Nil, "the envelope is not a map".into()));
        };
        let id = field(&entries, "id").cloned().unwrap_or(Value::Nil);
        if !rd.is_empty() {
            return Err(malformed(id, format!("{} trailing bytes", rd.len())));
        }
        let op = match field(&entries, "op") {
            Some(Value::String(s)) => match s.as_str() {
                Some(s) => s.to_owned(),
                None => return Err(malformed(id, "op is not UTF-8".into())),
            },
            Some(_) => return Err(malformed(id, "op is not a string".into())),
            None => return Err(malformed(id, "no op".into())),
        };
        let args = field(&entries, "args").cloned().unwrap_or(Value::Nil);
        Ok(RawRequest { id, op, args })
    }

    /// `bad_args` unless `args` is a map or absent (the one rule of both protocols, checked
    /// for every op, also those that take no arguments).
    pub fn check_args(&self) -> Result<(), &'static str> {
        match self.args {
            Value::Nil | Value::Map(_) => Ok(()),
            _ => Err(ARGS_NOT_A_MAP),
        }
    }

    /// Step two: the typed args of the op. `args` must be a map (named arguments, the
    /// same rule as the app protocol's); `nil` reads as an empty map; unknown fields are
    /// ignored.
    pub fn args<T: serde::de::DeserializeOwned>(&self) -> Result<T, String> {
        let v = match &self.args {
            Value::Nil => Value::Map(Vec::new()),
            v @ Value::Map(_) => v.clone(),
            _ => return Err(ARGS_NOT_A_MAP.into()),
        };
        rmpv::ext::from_value(v).map_err(|e| e.to_string())
    }
}

/// A `publish` request read in place: its id and where its object lies in `frame`. What
/// nearly every request of a publishing connection is, so it skips the value tree (and the
/// copies of the object that [`RawRequest::decode`] and [`RawRequest::args`] make).
///
/// Only the plain form: a map of exactly `id` (nil, a bool, a number, a string or bin),
/// `op` = `"publish"` and `args` = a map of exactly `object` (bin), in any order, nothing
/// after it. `None` for anything else, which the general path then reads (or refuses) in
/// full: for every input both give the same request.
pub fn publish_in_place(frame: &[u8]) -> Option<(Value, std::ops::Range<usize>)> {
    use rmp::decode::{read_map_len, read_str_len};
    let mut rd = frame;
    if read_map_len(&mut rd).ok()? != 3 {
        return None;
    }
    let (mut id, mut publish, mut object) = (None, false, None);
    for _ in 0..3 {
        let key_len = read_str_len(&mut rd).ok()?;
        match take(&mut rd, key_len)? {
            b"id" if id.is_none() => {
                // A scalar only (no nesting, nothing to bound): rmpv reads it as the
                // general path would.
                let marker = *rd.first()?;
                let nested =
                    matches!(marker, 0x80..=0x9f | 0xdc..=0xdf | 0xc7..=0xc9 | 0xd4..=0xd8);
                if nested || marker == 0xc1 {
                    return None;
                }
                id = Some(rmpv::decode::read_value(&mut rd).ok()?);
            }
            b"op" if !publish => {
                let len = read_str_len(&mut rd).ok()?;
                if take(&mut rd, len)? != b"publish" {
                    return None;
                }
                publish = true;
            }
            b"args" if object.is_none() => {
                if read_map_len(&mut rd).ok()? != 1 {
                    return None;
                }
                let key_len = read_str_len(&mut rd).ok()?;
                if take(&mut rd, key_len)? != b"object" {
                    return None;
                }
                object = Some(bin_in_place(frame, &mut rd)?);
            }
            _ => return None,
        }
    }
    if !publish || !rd.is_empty() {
        return None;
    }
    Some((id?, object?))
}

/// The value of a string-keyed field in a msgpack map.
pub fn field<'a>(entries: &'a [(Value, Value)], name: &str) -> Option<&'a Value> {
    entries
        .iter()
        .find(|(k, _)| k.as_str() == Some(name))
        .map(|(_, v)| v)
}

/// The typed args of every op that takes some.
pub mod args {
    use super::*;

    /// `publish {object}`.
    #[derive(Debug, Deserialize, Serialize)]
    pub struct Publish {
        #[serde(with = "serde_bytes")]
        pub object: Vec<u8>,
    }

    /// `auth {identity, signature}`: the answer to this connection's last `auth_challenge`.
    #[derive(Debug, Deserialize, Serialize)]
    pub struct Auth {
        pub identity: Ghid,
        #[serde(with = "serde_bytes")]
        pub signature: Vec<u8>,
    }

    /// Every op that takes one Ghid: get, subscribe, unsubscribe, list_bindings,
    /// query_debinding, exists.
    #[derive(Debug, Deserialize, Serialize)]
    pub struct ByGhid {
        pub ghid: Ghid,
    }

    impl ByGhid {
        /// The ghid, if it can name a stored object: the server decodes objects under
        /// `Policy::STRICT`, so an address algo 0 (test-only dummy) ghid is refused here too.
        pub fn stored(self) -> Result<Ghid, String> {
            if self.ghid.algo() == crate::golix::Algo::DUMMY {
                return Err(format!(
                    "{} has address algo 0 (test-only), which this server never stores",
                    self.ghid
                ));
            }
            Ok(self.ghid)
        }
    }
}

/// `{id, ok}`.
#[derive(Serialize)]
struct OkReply<'a, T: Serialize> {
    id: &'a Value,
    ok: T,
}

/// `{code, message}` inside an error reply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrBody {
    pub code: String,
    pub message: String,
}

/// `{id, err}`.
#[derive(Serialize)]
struct ErrReply<'a> {
    id: &'a Value,
    err: ErrBody,
}

/// `{event: "notify", subscription, object}`.
#[derive(Serialize)]
struct Notify<'a> {
    event: &'static str,
    subscription: &'a Ghid,
    #[serde(with = "serde_bytes")]
    object: &'a [u8],
}

/// `{id, op, args}` as the client sends it.
#[derive(Serialize)]
struct Request<'a, A: Serialize> {
    id: u64,
    op: &'a str,
    args: A,
}

/// What `publish` answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishAck {
    /// The stored address (for a GOBD, the frame ghid).
    pub ghid: Ghid,
    /// The container kind, lowercase (`gobd`, `geoc`, ...).
    pub kind: String,
    /// False when the object was already present (publishing is idempotent).
    pub new: bool,
}

/// Server limits announced by `hello`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Largest websocket message the server accepts, in bytes.
    pub max_frame: u64,
    /// Most subscriptions one connection may hold.
    pub max_subscriptions: u64,
    /// Messages one connection may have queued outbound before it is dropped as too slow
    /// (dynamic-object notifications coalesce and do not grow the queue).
    pub outbound_queue: u64,
    /// Bytes one connection may have queued outbound: requests are not read while half of it
    /// is used; a connection that stays there too long is dropped. 0 from older servers.
    #[serde(default)]
    pub outbound_bytes: u64,
    /// Publishes one connection may have in flight (awaiting durability).
    pub max_in_flight: u64,
    /// Seconds of silence (no message, no pong) after which a connection is closed.
    #[serde(default)]
    pub idle_timeout_s: u64,
}

/// One op as `hello` describes it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OpInfo {
    pub args: Vec<String>,
    #[serde(default)]
    pub defaults: BTreeMap<String, Value>,
    #[serde(default)]
    pub result: String,
}

/// What `hello` answers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    pub protocol: u32,
    #[serde(default)]
    pub server: String,
    #[serde(default)]
    pub version: String,
    pub limits: Limits,
    pub ops: BTreeMap<String, OpInfo>,
    pub events: Vec<String>,
    #[serde(default)]
    pub features: Vec<String>,
}

impl Hello {
    /// The server's `hello` answer for the given limits.
    pub fn new(limits: Limits) -> Hello {
        let ops = OPS
            .iter()
            .map(|op| {
                let info = OpInfo {
                    args: op.args.iter().map(|a| (*a).to_owned()).collect(),
                    defaults: BTreeMap::new(),
                    result: op.result.to_owned(),
                };
                (op.name.to_owned(), info)
            })
            .collect();
        Hello {
            protocol: PROTOCOL_VERSION,
            server: "hgx-persister".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            limits,
            ops,
            events: EVENTS.iter().map(|e| (*e).to_owned()).collect(),
            features: Vec::new(),
        }
    }
}

fn to_bytes<T: Serialize>(v: &T) -> Bytes {
    // Serializing our own plain structs into a Vec cannot fail: no maps with non-string
    // keys, no custom serializers that error. Fall back to an empty frame rather than panic.
    Bytes::from(rmp_serde::to_vec_named(v).unwrap_or_default())
}

/// Encodes `{id, ok}`.
pub fn encode_ok<T: Serialize>(id: &Value, ok: T) -> Bytes {
    to_bytes(&OkReply { id, ok })
}

/// Appends `{id, ok}` to `out` (see [`super::wsframe::binary_with`]).
pub fn write_ok<T: Serialize>(out: &mut Vec<u8>, id: &Value, ok: T) {
    let start = out.len();
    if rmp_serde::encode::write_named(out, &OkReply { id, ok }).is_err() {
        // As in `to_bytes`: cannot happen for our own structs; never leave half a message.
        out.truncate(start);
    }
}

/// Encodes `{id, err: {code, message}}`.
pub fn encode_err(id: &Value, code: &str, message: impl Into<String>) -> Bytes {
    to_bytes(&ErrReply {
        id,
        err: ErrBody {
            code: code.to_owned(),
            message: message.into(),
        },
    })
}

/// Encodes `{event: "notify", subscription, object}`: done once per notification, the same
/// bytes then go to every subscriber.
pub fn encode_notify(subscription: &Ghid, object: &[u8]) -> Bytes {
    to_bytes(&Notify {
        event: EVENT_NOTIFY,
        subscription,
        object,
    })
}

/// Encodes a client request `{id, op, args}`.
pub fn encode_request<A: Serialize>(id: u64, op: &str, args: A) -> Bytes {
    to_bytes(&Request { id, op, args })
}

/// A decoded server-to-client message.
#[derive(Clone, Debug, PartialEq)]
pub enum Incoming {
    /// `{id, ok}`; `ok` may be `nil`.
    Ok { id: Value, ok: Value },
    /// `{id, err}`; `id` is `nil` when the server could not recover it.
    Err { id: Value, err: ErrBody },
    /// `{event: "notify", ...}`.
    Notify { subscription: Ghid, object: Bytes },
    /// Any other event: ignored by clients, kept for logs.
    OtherEvent(String),
}

impl Incoming {
    /// [`Incoming::decode`] of a message held in `frame`. A notification (the message a
    /// subscribed connection mostly gets) is read in place: no value tree, and its object is
    /// a slice of `frame`, not a copy (so it keeps `frame`'s buffer alive: a caller that keeps
    /// it long copies it). Anything else goes to [`Incoming::decode`].
    pub fn decode_shared(frame: &Bytes) -> Result<Incoming, String> {
        match notify_in_place(frame) {
            Some((subscription, object)) => Ok(Incoming::Notify {
                subscription,
                object: frame.slice(object),
            }),
            None => Incoming::decode(frame),
        }
    }

    /// Decodes one server message, tolerantly (unknown fields ignored).
    pub fn decode(frame: &[u8]) -> Result<Incoming, String> {
        check_shape(frame, 64, MAX_INCOMING_VALUES).map_err(|e| format!("not msgpack: {e}"))?;
        let mut rd = frame;
        let value = rmpv::decode::read_value_with_max_depth(&mut rd, rmpv_depth(64))
            .map_err(|e| format!("not msgpack: {e}"))?;
        let Value::Map(entries) = value else {
            return Err("server message is not a map".into());
        };
        if let Some(event) = field(&entries, "event") {
            let name = event.as_str().unwrap_or_default();
            if name != EVENT_NOTIFY {
                return Ok(Incoming::OtherEvent(name.to_owned()));
            }
            let sub = field(&entries, "subscription")
                .and_then(|v| v.as_slice())
                .ok_or("notify without subscription")?;
            let subscription = Ghid::from_bytes(sub).map_err(|e| e.to_string())?;
            let object = field(&entries, "object")
                .and_then(|v| v.as_slice())
                .ok_or("notify without object")?;
            return Ok(Incoming::Notify {
                subscription,
                object: Bytes::copy_from_slice(object),
            });
        }
        let id = field(&entries, "id").cloned().unwrap_or(Value::Nil);
        if let Some(err) = field(&entries, "err") {
            let err = rmpv::ext::from_value::<ErrBody>(err.clone())
                .map_err(|e| format!("bad err body: {e}"))?;
            return Ok(Incoming::Err { id, err });
        }
        match field(&entries, "ok") {
            Some(ok) => Ok(Incoming::Ok { id, ok: ok.clone() }),
            None => Err("message with neither ok, err nor event".into()),
        }
    }
}

/// The next `len` bytes of `rd` (an in-place reader's step).
fn take<'a>(rd: &mut &'a [u8], len: u32) -> Option<&'a [u8]> {
    let len = usize::try_from(len).ok()?;
    let (head, rest) = (rd.get(..len)?, rd.get(len..)?);
    *rd = rest;
    Some(head)
}

/// Where the bin that `rd` (a tail of `frame`) starts with lies in `frame`; `rd` moves past it.
fn bin_in_place(frame: &[u8], rd: &mut &[u8]) -> Option<std::ops::Range<usize>> {
    let len = rmp::decode::read_bin_len(rd).ok()?;
    let start = frame.len() - rd.len();
    take(rd, len)?;
    Some(start..frame.len() - rd.len())
}

/// A notification exactly as servers send it, `{event: "notify", subscription: bin, object:
/// bin}` (keys in any order, nothing else, nothing after): its subscription and where its
/// object lies in `frame`. `None` for anything else, which [`Incoming::decode`] then reads
/// (or refuses) in full, so both give the same result for every input.
fn notify_in_place(frame: &[u8]) -> Option<(Ghid, std::ops::Range<usize>)> {
    use rmp::decode::{read_bin_len, read_map_len, read_str_len};
    let mut rd = frame;
    if read_map_len(&mut rd).ok()? != 3 {
        return None;
    }
    let (mut notify, mut subscription, mut object) = (false, None, None);
    for _ in 0..3 {
        let key_len = read_str_len(&mut rd).ok()?;
        match take(&mut rd, key_len)? {
            b"event" => {
                let len = read_str_len(&mut rd).ok()?;
                notify = take(&mut rd, len)? == EVENT_NOTIFY.as_bytes();
            }
            b"subscription" => {
                let len = read_bin_len(&mut rd).ok()?;
                subscription = Some(take(&mut rd, len)?);
            }
            b"object" => {
                object = Some(bin_in_place(frame, &mut rd)?);
            }
            _ => return None,
        }
    }
    if !notify || !rd.is_empty() {
        return None;
    }
    Some((Ghid::from_bytes(subscription?).ok()?, object?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::golix::Algo;

    #[test]
    fn request_round_trip_and_tolerance() {
        let g = Ghid::pseudorandom(Algo::SHA512);
        let b = encode_request(7, "get", args::ByGhid { ghid: g });
        let raw = RawRequest::decode(&b).unwrap();
        assert_eq!(raw.id, Value::from(7));
        assert_eq!(raw.op, "get");
        let a: args::ByGhid = raw.args().unwrap();
        assert_eq!(a.ghid, g);

        // Unknown fields at both levels are ignored.
        let v = Value::Map(vec![
            (Value::from("id"), Value::from(1)),
            (Value::from("op"), Value::from("get")),
            (Value::from("future"), Value::from(true)),
            (
                Value::from("args"),
                Value::Map(vec![
                    (Value::from("ghid"), Value::Binary(g.as_bytes().to_vec())),
                    (Value::from("later"), Value::from("x")),
                ]),
            ),
        ]);
        let b = rmp_serde::to_vec_named(&v).unwrap();
        let raw = RawRequest::decode(&b).unwrap();
        assert_eq!(raw.args::<args::ByGhid>().unwrap().ghid, g);
    }

    #[test]
    fn malformed_envelopes_keep_the_id_when_possible() {
        assert_eq!(RawRequest::decode(b"\xc1").unwrap_err().id, Value::Nil);
        assert_eq!(RawRequest::decode(b"").unwrap_err().id, Value::Nil);
        let arr = rmp_serde::to_vec(&(1, "ping")).unwrap();
        assert!(
            RawRequest::decode(&arr).is_err(),
            "positional arrays are not envelopes"
        );
        let no_op = rmp_serde::to_vec_named(&Value::Map(vec![(Value::from("id"), Value::from(5))]))
            .unwrap();
        assert_eq!(RawRequest::decode(&no_op).unwrap_err().id, Value::from(5));
        let mut trailing = encode_request(9, "ping", ()).to_vec();
        trailing.push(0);
        assert_eq!(
            RawRequest::decode(&trailing).unwrap_err().id,
            Value::from(9)
        );
        // Deep nesting is refused, not recursed into.
        let mut deep = vec![0x91u8; 10_000];
        deep.push(0xc0);
        assert!(RawRequest::decode(&deep).is_err());
        // A huge declared array length must not allocate.
        assert!(RawRequest::decode(b"\xdd\xff\xff\xff\xff").is_err());
    }

    #[test]
    fn shape_check_bounds_values_depth_and_lengths() {
        // Agrees with rmpv on what a complete value is, for every marker family.
        let v = Value::Map(vec![
            (Value::from("i"), Value::from(-3)),
            (Value::from("u"), Value::from(u64::MAX)),
            (Value::from("f"), Value::F64(1.5)),
            (Value::from("g"), Value::F32(0.5)),
            (Value::from("s"), Value::from("x".repeat(300))),
            (Value::from("b"), Value::Binary(vec![1; 70_000])),
            (Value::from("e"), Value::Ext(3, vec![1; 16])),
            (Value::from("a"), Value::Array(vec![Value::Nil; 20])),
            (Value::from("t"), Value::Boolean(true)),
        ]);
        let mut bytes = Vec::new();
        rmpv::encode::write_value(&mut bytes, &v).unwrap();
        assert_eq!(check_shape(&bytes, 4, 100), Ok(bytes.len()));
        bytes.push(0xc0);
        assert_eq!(
            check_shape(&bytes, 4, 100),
            Ok(bytes.len() - 1),
            "first value only"
        );
        // Too many values, too deep, truncated anywhere.
        assert!(check_shape(&bytes, 4, 20).is_err());
        assert!(check_shape(&bytes, 0, 100).is_err());
        for cut in 0..bytes.len() - 1 {
            assert!(check_shape(&bytes[..cut], 4, 100).is_err(), "cut at {cut}");
        }
        // Declared lengths beyond the data, and the reserved marker.
        for lie in [
            &b"\xc6\xff\xff\xff\xff"[..],
            b"\xdf\xff\xff\xff\xff",
            b"\xc1",
        ] {
            assert!(check_shape(lie, 16, 1000).is_err());
        }
        // A wide envelope is refused before rmpv decodes it.
        let mut wide = vec![0xdd];
        wide.extend_from_slice(&(MAX_VALUES as u32).to_be_bytes());
        wide.extend(std::iter::repeat(0xc0).take(MAX_VALUES));
        assert!(RawRequest::decode(&wide).is_err());
    }

    /// `{id, op: "ping", args: {x: [[...[nil]...]]}}` with the whole envelope nested `n` deep.
    fn nested_ping(n: usize) -> Vec<u8> {
        let mut v = Value::Nil;
        for _ in 0..n.saturating_sub(2) {
            v = Value::Array(vec![v]);
        }
        let env = Value::Map(vec![
            (Value::from("id"), Value::from(1)),
            (Value::from("op"), Value::from("ping")),
            (Value::from("args"), Value::Map(vec![(Value::from("x"), v)])),
        ]);
        let mut b = Vec::new();
        rmpv::encode::write_value(&mut b, &env).unwrap();
        b
    }

    #[test]
    fn one_nesting_limit_with_one_message() {
        for n in 2..=MAX_DEPTH {
            let r = RawRequest::decode(&nested_ping(n));
            assert!(r.is_ok(), "nesting {n}: {r:?}");
        }
        for n in MAX_DEPTH + 1..MAX_DEPTH + 4 {
            let e = RawRequest::decode(&nested_ping(n)).unwrap_err();
            assert!(
                e.reason.contains("nested deeper than 16"),
                "nesting {n}: {}",
                e.reason
            );
        }
    }

    #[test]
    fn args_must_be_a_map_and_ghids_storable() {
        let mut raw = RawRequest::decode(&encode_request(1, "ping", ())).unwrap();
        let g = Ghid::pseudorandom(Algo::SHA512);
        raw.args = Value::Array(vec![Value::Binary(g.as_bytes().to_vec())]);
        assert_eq!(
            raw.args::<args::ByGhid>().unwrap_err(),
            ARGS_NOT_A_MAP,
            "positional args are refused"
        );
        raw.args = Value::Map(vec![(
            Value::from("ghid"),
            Value::Binary(g.as_bytes().to_vec()),
        )]);
        assert_eq!(raw.args::<args::ByGhid>().unwrap().stored(), Ok(g));
        let dummy = Ghid::new(Algo::DUMMY, [0; 64]);
        raw.args = Value::Map(vec![(
            Value::from("ghid"),
            Value::Binary(dummy.as_bytes().to_vec()),
        )]);
        let e = raw.args::<args::ByGhid>().unwrap().stored().unwrap_err();
        assert!(e.contains("algo 0"), "{e}");
    }

    #[test]
    fn the_publish_overhead_bounds_the_envelope() {
        for n in [0usize, 1, 255, 256, 65_535, 65_536, 1 << 20] {
            let object = vec![7u8; n];
            let b = encode_request(
                u64::MAX,
                "publish",
                args::Publish {
                    object: object.clone(),
                },
            );
            assert!(
                b.len() as u64 <= n as u64 + PUBLISH_OVERHEAD,
                "{n}: {}",
                b.len()
            );
        }
        assert_eq!(max_publish_object(1000), 1000 - PUBLISH_OVERHEAD);
        assert_eq!(max_publish_object(10), 0);
    }

    #[test]
    fn bad_args_are_reported() {
        let b = encode_request(
            1,
            "get",
            args::ByGhid {
                ghid: Ghid::pseudorandom(Algo::SHA512),
            },
        );
        let mut raw = RawRequest::decode(&b).unwrap();
        raw.args = Value::Map(vec![(Value::from("ghid"), Value::Binary(vec![1; 3]))]);
        assert!(raw.args::<args::ByGhid>().is_err());
        raw.args = Value::Nil;
        assert!(raw.args::<args::ByGhid>().is_err());
    }

    #[test]
    fn server_messages_decode() {
        let g = Ghid::pseudorandom(Algo::SHA512);
        let ok = encode_ok(&Value::from(3), Value::Nil);
        assert_eq!(
            Incoming::decode(&ok).unwrap(),
            Incoming::Ok {
                id: Value::from(3),
                ok: Value::Nil
            }
        );
        let err = encode_err(&Value::Nil, codes::TOO_LARGE, "big");
        match Incoming::decode(&err).unwrap() {
            Incoming::Err { id, err } => {
                assert_eq!(id, Value::Nil);
                assert_eq!(err.code, "too_large");
            }
            other => panic!("{other:?}"),
        }
        let n = encode_notify(&g, b"obj");
        assert_eq!(
            Incoming::decode(&n).unwrap(),
            Incoming::Notify {
                subscription: g,
                object: Bytes::from_static(b"obj")
            }
        );
        let hello = encode_ok(
            &Value::from(1),
            Hello::new(Limits {
                max_frame: 1,
                max_subscriptions: 2,
                outbound_queue: 3,
                outbound_bytes: 6,
                max_in_flight: 4,
                idle_timeout_s: 5,
            }),
        );
        let Incoming::Ok { ok, .. } = Incoming::decode(&hello).unwrap() else {
            panic!()
        };
        let h: Hello = rmpv::ext::from_value(ok).unwrap();
        assert_eq!(h.protocol, 1);
        assert_eq!(h.ops["get"].args, vec!["ghid".to_owned()]);
        assert_eq!(h.events, vec!["notify".to_owned()]);
    }

    /// A msgpack map of string keys, in the order given.
    fn map(entries: Vec<(&str, Value)>) -> Vec<u8> {
        let v = Value::Map(
            entries
                .into_iter()
                .map(|(k, v)| (Value::from(k), v))
                .collect(),
        );
        let mut b = Vec::new();
        rmpv::encode::write_value(&mut b, &v).unwrap();
        b
    }

    fn bin(b: &[u8]) -> Value {
        Value::Binary(b.to_vec())
    }

    /// What the general path makes of a request, if it is a publish it accepts.
    fn general_publish(frame: &[u8]) -> Option<(Value, Vec<u8>)> {
        let raw = RawRequest::decode(frame).ok()?;
        raw.check_args().ok()?;
        let a: args::Publish = raw.args().ok().filter(|_| raw.op == "publish")?;
        Some((raw.id, a.object))
    }

    /// `publish_in_place` reads the plain publish of every client, in any key order and with
    /// any scalar id, and agrees with the general path on every input it reads: never a
    /// different id or object, whatever the frame (other forms, truncations, trailing bytes).
    #[test]
    fn publish_in_place_agrees_with_the_general_path() {
        let object = vec![9u8; 700];
        let sent = encode_request(
            7,
            "publish",
            args::Publish {
                object: object.clone(),
            },
        );
        let args_of = |o: &[u8]| Value::Map(vec![(Value::from("object"), bin(o))]);
        let plain = vec![
            sent.to_vec(),
            map(vec![
                ("args", args_of(&object)),
                ("op", Value::from("publish")),
                ("id", Value::from("req-1")),
            ]),
            map(vec![
                ("op", Value::from("publish")),
                ("id", Value::from(-3)),
                ("args", args_of(b"")),
            ]),
            map(vec![
                ("id", Value::Nil),
                ("args", args_of(&object)),
                ("op", Value::from("publish")),
            ]),
        ];
        for case in &plain {
            let (id, range) = publish_in_place(case).expect("the plain form is read in place");
            assert_eq!(
                general_publish(case),
                Some((id, case[range].to_vec())),
                "{case:?}"
            );
        }
        let mut others = vec![
            // Read by the general path instead (same result, since the rest is the same).
            map(vec![
                ("id", Value::from(1)),
                ("op", Value::from("publish")),
                ("args", args_of(&object)),
                ("extra", Value::from(1)),
            ]),
            map(vec![
                ("id", Value::Array(vec![Value::from(1)])),
                ("op", Value::from("publish")),
                ("args", args_of(&object)),
            ]),
            map(vec![
                ("id", Value::from(1)),
                ("op", Value::from("publish")),
                (
                    "args",
                    Value::Map(vec![
                        (Value::from("object"), bin(&object)),
                        (Value::from("more"), Value::Nil),
                    ]),
                ),
            ]),
            map(vec![
                ("op", Value::from("publish")),
                ("args", args_of(&object)),
            ]),
            // Refused or not a publish.
            map(vec![
                ("id", Value::from(1)),
                ("id", Value::from(2)),
                ("op", Value::from("publish")),
            ]),
            map(vec![
                ("id", Value::from(1)),
                ("op", Value::from("get")),
                ("args", args_of(&object)),
            ]),
            map(vec![
                ("id", Value::from(1)),
                ("op", Value::from("publish")),
                (
                    "args",
                    Value::Map(vec![(Value::from("object"), Value::from("str"))]),
                ),
            ]),
            map(vec![
                ("id", Value::from(1)),
                ("op", Value::from("publish")),
                ("args", Value::from(5)),
            ]),
        ];
        let mut trailing = sent.to_vec();
        trailing.push(0xc0);
        others.push(trailing);
        others.extend((0..sent.len()).map(|n| sent[..n].to_vec()));
        for case in plain.iter().chain(&others) {
            if let Some((id, range)) = publish_in_place(case) {
                assert_eq!(
                    general_publish(case),
                    Some((id, case[range].to_vec())),
                    "{case:?}"
                );
            }
        }
        assert!(others.iter().all(|c| publish_in_place(c).is_none()));
    }

    /// `decode_shared` reads notifications in place and agrees with `decode` on every input:
    /// the server's encoding, other key orders, other messages, every truncation, trailing
    /// bytes, an extra key, a bad subscription.
    #[test]
    fn decode_shared_agrees_with_decode() {
        let g = Ghid::pseudorandom(Algo::SHA512);
        let object = vec![7u8; 900];
        let sent = encode_notify(&g, &object);
        let got = Incoming::decode_shared(&sent).unwrap();
        assert_eq!(got, Incoming::decode(&sent).unwrap());
        let Incoming::Notify { object: o, .. } = &got else {
            panic!("{got:?}")
        };
        let inside = sent.as_ptr() as usize..sent.as_ptr() as usize + sent.len();
        assert!(
            inside.contains(&(o.as_ptr() as usize)),
            "a slice, not a copy"
        );

        let mut cases = vec![
            sent.to_vec(),
            map(vec![
                ("object", bin(&object)),
                ("subscription", bin(g.as_bytes())),
                ("event", Value::from("notify")),
            ]),
            map(vec![
                ("event", Value::from("notify")),
                ("subscription", bin(g.as_bytes())),
                ("object", bin(&object)),
                ("extra", Value::from(1)),
            ]),
            map(vec![
                ("event", Value::from("other")),
                ("subscription", bin(g.as_bytes())),
                ("object", bin(&object)),
            ]),
            map(vec![
                ("event", Value::from("notify")),
                ("subscription", bin(b"not a ghid")),
                ("object", bin(&object)),
            ]),
            map(vec![
                ("event", Value::from("notify")),
                ("subscription", bin(g.as_bytes())),
                ("object", Value::from("a string")),
            ]),
            encode_ok(&Value::from(3), true).to_vec(),
            encode_err(&Value::Nil, "too_large", "big").to_vec(),
        ];
        let mut trailing = sent.to_vec();
        trailing.push(0xc0);
        cases.push(trailing);
        cases.extend((0..sent.len()).map(|n| sent[..n].to_vec()));
        for case in cases {
            let shared = Incoming::decode_shared(&Bytes::from(case.clone()));
            assert_eq!(shared, Incoming::decode(&case), "{case:?}");
        }
    }
}
