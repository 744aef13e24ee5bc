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
//! Decoding is tolerant and two-step (HYPERGLYPH.md §B8): first [`RawRequest`] (`id` kept as
//! an opaque value and echoed back, `op` a string, `args` any value), then the typed args of
//! the op ([`args`]). Unknown fields are ignored; an unknown op or a malformed envelope is an
//! error *reply*, never the end of a session. The op table ([`OPS`]) is what `hello` returns so
//! that clients bind arguments by name.
//!
//! Owns: envelope types, encoders, the op table and protocol constants. Calls: `golix::Ghid`
//! (serde as bin), rmp-serde, rmpv. Sans-IO.

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
];

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

impl RawRequest {
    /// Decodes one envelope. Never panics on peer input.
    pub fn decode(frame: &[u8]) -> Result<RawRequest, Malformed> {
        let malformed = |id: Value, reason: String| Malformed { id, reason };
        let mut rd = frame;
        let value = rmpv::decode::read_value_with_max_depth(&mut rd, MAX_DEPTH)
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

    /// Step two: the typed args of the op. `nil` args read as an empty map; unknown fields
    /// are ignored.
    pub fn args<T: serde::de::DeserializeOwned>(&self) -> Result<T, String> {
        let v = match &self.args {
            Value::Nil => Value::Map(Vec::new()),
            v => v.clone(),
        };
        rmpv::ext::from_value(v).map_err(|e| e.to_string())
    }
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

    /// Every op that takes one Ghid: get, subscribe, unsubscribe, list_bindings,
    /// query_debinding, exists.
    #[derive(Debug, Deserialize, Serialize)]
    pub struct ByGhid {
        pub ghid: Ghid,
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
    /// Decodes one server message, tolerantly (unknown fields ignored).
    pub fn decode(frame: &[u8]) -> Result<Incoming, String> {
        let mut rd = frame;
        let value = rmpv::decode::read_value_with_max_depth(&mut rd, 64)
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
}
