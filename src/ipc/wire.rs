//! The IPC envelope: how one binary websocket message becomes a request, a reply or an
//! event, and back. Pure functions, no I/O; the op table and typed arguments live in
//! [`super::ops`], the per-connection state machine in `session`.
//!
//! Every message is one msgpack map with named fields (`rmp_serde::to_vec_named`; byte
//! fields and Ghids as msgpack `bin`):
//!
//! | message | shape |
//! |---|---|
//! | request (app -> daemon) | `{id, op, args}` |
//! | success reply | `{id, ok}` (`ok` is `nil` for ops without a result) |
//! | error reply | `{id, err: {code, message, logref}}` |
//! | event (daemon -> app) | `{event, data}` |
//!
//! Decoding is tolerant and two-step (src/ipc/PROTOCOL.md): first only the envelope
//! ([`RawRequest`]: `id` echoed back verbatim, `op` a string, `args` any value), then the
//! typed arguments per op ([`super::ops::Request::decode`]). Unknown fields are ignored
//! everywhere. Before anything is decoded, [`decode_value`] checks the message's shape
//! without allocating (exactly one value, at most [`MAX_VALUES`] values, within the
//! [`MAX_DEPTH`] budget), so a small hostile message cannot expand into a huge tree.

use rmpv::Value;
use serde::{Deserialize, Serialize};

use crate::actors::api::{AppEvent, ObjectView};
use crate::golix::Ghid;

/// Most values (scalars, strings, containers) one message may hold.
pub const MAX_VALUES: usize = 65_536;
/// Depth budget of the decoder (rmpv spends about two units per nesting level, so this
/// allows some 30 levels; a request uses three).
pub const MAX_DEPTH: usize = 64;

/// Stable error codes the IPC layer itself produces (the daemon's come from
/// `DaemonError::code()`). Never rename one, only add.
pub mod codes {
    /// The message is not a msgpack map of the envelope's shape.
    pub const MALFORMED: &str = "malformed";
    /// The op is not in the op table.
    pub const UNKNOWN_OP: &str = "unknown_op";
    /// The op's arguments are missing or of the wrong type.
    pub const BAD_ARGS: &str = "bad_args";
    /// No (or a wrong) capability token was presented.
    pub const ACCESS_DENIED: &str = "access_denied";
    /// The message exceeds the connection's size limit; the connection closes.
    pub const TOO_LARGE: &str = "too_large";
    /// The daemon failed in a way it did not classify.
    pub const INTERNAL: &str = "internal";
    /// A bound of the daemon is reached (a `hello` while `ipc_max_apps` apps are connected).
    pub const LIMIT: &str = "limit";
}

/// A request with only its envelope decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct RawRequest {
    /// Chosen by the client (normally an unsigned integer), echoed verbatim in the reply.
    pub id: Value,
    pub op: String,
    /// `nil` when absent.
    pub args: Value,
}

/// A message that is not a request; `id` is the request's id when it could be recovered.
#[derive(Debug, Clone, PartialEq)]
pub struct Malformed {
    pub id: Value,
    pub message: String,
}

/// The `err` member of an error reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireError {
    pub code: String,
    #[serde(default)]
    pub message: String,
    /// Short random id, also written to the daemon's log line for this failure.
    #[serde(default)]
    pub logref: String,
}

/// An object as it travels: `{ghid, author, api_id|nil, dynamic, private, state}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireObject {
    pub ghid: Ghid,
    pub author: Ghid,
    #[serde(default)]
    pub api_id: Option<Ghid>,
    #[serde(default)]
    pub dynamic: bool,
    #[serde(default)]
    pub private: bool,
    #[serde(with = "serde_bytes")]
    pub state: Vec<u8>,
}

/// Borrowing twin of [`WireObject`] for encoding without copying the state.
#[derive(Serialize)]
struct WireObjectRef<'a> {
    ghid: &'a Ghid,
    author: &'a Ghid,
    api_id: Option<&'a Ghid>,
    dynamic: bool,
    private: bool,
    #[serde(with = "serde_bytes")]
    state: &'a [u8],
}

impl<'a> From<&'a ObjectView> for WireObjectRef<'a> {
    fn from(o: &'a ObjectView) -> Self {
        WireObjectRef {
            ghid: &o.ghid,
            author: &o.author,
            api_id: o.api_id.as_ref(),
            dynamic: o.dynamic,
            private: o.private,
            state: &o.state,
        }
    }
}

impl From<WireObject> for ObjectView {
    fn from(o: WireObject) -> Self {
        ObjectView {
            ghid: o.ghid,
            author: o.author,
            api_id: o.api_id,
            dynamic: o.dynamic,
            private: o.private,
            state: o.state,
        }
    }
}

impl From<&ObjectView> for WireObject {
    fn from(o: &ObjectView) -> Self {
        WireObject {
            ghid: o.ghid,
            author: o.author,
            api_id: o.api_id,
            dynamic: o.dynamic,
            private: o.private,
            state: o.state.clone(),
        }
    }
}

/// Data of the `delete` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GhidData {
    pub ghid: Ghid,
}

/// Data of the `share` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareData {
    pub ghid: Ghid,
    pub origin: Ghid,
    #[serde(default)]
    pub api_id: Option<Ghid>,
}

/// Data of the `share_result` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareResultData {
    pub ghid: Ghid,
    pub recipient: Ghid,
    pub ok: bool,
    #[serde(default)]
    pub status: u32,
}

/// Data of the `remote_refused` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteRefusedData {
    pub ghid: Ghid,
    #[serde(default)]
    pub remote: String,
    pub code: String,
    #[serde(default)]
    pub message: String,
}

#[derive(Serialize)]
struct RequestFrame<'a, T> {
    id: u64,
    op: &'a str,
    args: T,
}

#[derive(Serialize)]
struct OkFrame<'a, T> {
    id: &'a Value,
    ok: T,
}

#[derive(Serialize)]
struct ErrFrame<'a> {
    id: &'a Value,
    err: &'a WireError,
}

#[derive(Serialize)]
struct EventFrame<'a, T> {
    event: &'a str,
    data: T,
}

/// Encodes a request (client side).
pub fn encode_request<T: Serialize>(id: u64, op: &str, args: &T) -> Result<Vec<u8>, String> {
    rmp_serde::to_vec_named(&RequestFrame { id, op, args }).map_err(|e| e.to_string())
}

/// Encodes a success reply.
pub fn encode_ok<T: Serialize>(id: &Value, ok: &T) -> Result<Vec<u8>, String> {
    rmp_serde::to_vec_named(&OkFrame { id, ok }).map_err(|e| e.to_string())
}

/// Encodes a success reply carrying an object.
pub fn encode_ok_object(id: &Value, obj: &ObjectView) -> Result<Vec<u8>, String> {
    encode_ok(id, &WireObjectRef::from(obj))
}

/// Encodes an error reply. Infallible: every field is a plain string or the echoed id.
pub fn encode_err(id: &Value, err: &WireError) -> Vec<u8> {
    match rmp_serde::to_vec_named(&ErrFrame { id, err }) {
        Ok(v) => v,
        // Only an exotic echoed id could fail to encode; answer without it.
        Err(_) => rmp_serde::to_vec_named(&ErrFrame {
            id: &Value::Nil,
            err,
        })
        .unwrap_or_default(),
    }
}

/// Encodes a daemon event as `{event, data}`.
pub fn encode_event(ev: &AppEvent) -> Result<Vec<u8>, String> {
    let r = match ev {
        AppEvent::Update(obj) => rmp_serde::to_vec_named(&EventFrame {
            event: "update",
            data: WireObjectRef::from(obj),
        }),
        AppEvent::Delete(ghid) => rmp_serde::to_vec_named(&EventFrame {
            event: "delete",
            data: GhidData { ghid: *ghid },
        }),
        AppEvent::Share {
            ghid,
            origin,
            api_id,
        } => rmp_serde::to_vec_named(&EventFrame {
            event: "share",
            data: ShareData {
                ghid: *ghid,
                origin: *origin,
                api_id: *api_id,
            },
        }),
        AppEvent::ShareResult {
            ghid,
            recipient,
            ok,
            status,
        } => rmp_serde::to_vec_named(&EventFrame {
            event: "share_result",
            data: ShareResultData {
                ghid: *ghid,
                recipient: *recipient,
                ok: *ok,
                status: *status,
            },
        }),
        AppEvent::RemoteRefused {
            ghid,
            remote,
            code,
            message,
        } => rmp_serde::to_vec_named(&EventFrame {
            event: "remote_refused",
            data: RemoteRefusedData {
                ghid: *ghid,
                remote: remote.clone(),
                code: code.clone(),
                message: message.clone(),
            },
        }),
    };
    r.map_err(|e| e.to_string())
}

/// Decodes an event's data. `None` for an event this version does not know (clients ignore
/// those); `Some(Err)` for a known event whose data does not fit.
pub fn decode_event(name: &str, data: Value) -> Option<Result<AppEvent, String>> {
    fn typed<T: serde::de::DeserializeOwned>(data: Value) -> Result<T, String> {
        rmpv::ext::from_value(data).map_err(|e| e.to_string())
    }
    Some(match name {
        "update" => typed::<WireObject>(data).map(|o| AppEvent::Update(o.into())),
        "delete" => typed::<GhidData>(data).map(|d| AppEvent::Delete(d.ghid)),
        "share" => typed::<ShareData>(data).map(|d| AppEvent::Share {
            ghid: d.ghid,
            origin: d.origin,
            api_id: d.api_id,
        }),
        "share_result" => typed::<ShareResultData>(data).map(|d| AppEvent::ShareResult {
            ghid: d.ghid,
            recipient: d.recipient,
            ok: d.ok,
            status: d.status,
        }),
        "remote_refused" => typed::<RemoteRefusedData>(data).map(|d| AppEvent::RemoteRefused {
            ghid: d.ghid,
            remote: d.remote,
            code: d.code,
            message: d.message,
        }),
        _ => return None,
    })
}

/// Decodes exactly one msgpack value, after checking its shape (see the module doc).
pub fn decode_value(buf: &[u8]) -> Result<Value, String> {
    check_shape(buf)?;
    let mut rd = buf;
    rmpv::decode::read_value_with_max_depth(&mut rd, MAX_DEPTH).map_err(|e| e.to_string())
}

/// Splits `n` bytes off the front of `rd`.
fn take<'a>(rd: &mut &'a [u8], n: u64) -> Result<&'a [u8], String> {
    let n = usize::try_from(n).map_err(|_| "length overflow".to_string())?;
    if n > rd.len() {
        return Err("truncated message".into());
    }
    let (head, rest) = rd.split_at(n);
    *rd = rest;
    Ok(head)
}

fn be_len(rd: &mut &[u8], width: u64) -> Result<u64, String> {
    Ok(take(rd, width)?
        .iter()
        .fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
}

/// Walks the msgpack structure without allocating: exactly one value, no trailing bytes,
/// at most [`MAX_VALUES`] values. (Depth is bounded by the decoder itself.)
fn check_shape(buf: &[u8]) -> Result<(), String> {
    let mut rd = buf;
    let mut pending: u64 = 1;
    let mut count = 0usize;
    while pending > 0 {
        pending -= 1;
        count += 1;
        if count > MAX_VALUES {
            return Err(format!("more than {MAX_VALUES} values"));
        }
        let marker = take(&mut rd, 1)?[0];
        // Bytes to skip after the marker (and its length field, already consumed).
        let skip = match marker {
            // positive fixint, negative fixint, nil, false, true
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => 0,
            0x80..=0x8f => {
                pending += 2 * u64::from(marker & 0x0f);
                0
            }
            0x90..=0x9f => {
                pending += u64::from(marker & 0x0f);
                0
            }
            0xa0..=0xbf => u64::from(marker & 0x1f),
            0xc1 => return Err("reserved msgpack marker 0xc1".into()),
            // bin 8/16/32, str 8/16/32
            0xc4 | 0xd9 => be_len(&mut rd, 1)?,
            0xc5 | 0xda => be_len(&mut rd, 2)?,
            0xc6 | 0xdb => be_len(&mut rd, 4)?,
            // ext 8/16/32: length, then a type byte
            0xc7 => be_len(&mut rd, 1)? + 1,
            0xc8 => be_len(&mut rd, 2)? + 1,
            0xc9 => be_len(&mut rd, 4)? + 1,
            // float 32/64, uint 8..64, int 8..64
            0xca => 4,
            0xcb => 8,
            0xcc | 0xd0 => 1,
            0xcd | 0xd1 => 2,
            0xce | 0xd2 => 4,
            0xcf | 0xd3 => 8,
            // fixext 1/2/4/8/16: type byte + data
            0xd4 => 2,
            0xd5 => 3,
            0xd6 => 5,
            0xd7 => 9,
            0xd8 => 17,
            // array 16/32, map 16/32
            0xdc => {
                pending += be_len(&mut rd, 2)?;
                0
            }
            0xdd => {
                pending += be_len(&mut rd, 4)?;
                0
            }
            0xde => {
                pending += 2 * be_len(&mut rd, 2)?;
                0
            }
            0xdf => {
                pending += 2 * be_len(&mut rd, 4)?;
                0
            }
        };
        take(&mut rd, skip)?;
    }
    if !rd.is_empty() {
        return Err(format!("{} trailing bytes after the message", rd.len()));
    }
    Ok(())
}

/// First decoding step on the server: the envelope only.
pub fn decode_request(buf: &[u8]) -> Result<RawRequest, Malformed> {
    let malformed = |id: Value, message: String| Malformed { id, message };
    let value =
        decode_value(buf).map_err(|e| malformed(Value::Nil, format!("not msgpack: {e}")))?;
    let Value::Map(entries) = value else {
        return Err(malformed(
            Value::Nil,
            "a request must be a map {id, op, args}".into(),
        ));
    };
    let (mut id, mut op, mut args) = (None, None, Value::Nil);
    for (k, v) in entries {
        match k.as_str() {
            Some("id") => id = Some(v),
            Some("op") => op = Some(v),
            Some("args") => args = v,
            _ => {}
        }
    }
    let Some(id) = id else {
        return Err(malformed(Value::Nil, "request without `id`".into()));
    };
    let op = match op {
        Some(Value::String(s)) if s.is_str() => s.into_str().unwrap_or_default(),
        Some(_) => return Err(malformed(id, "`op` must be a string".into())),
        None => return Err(malformed(id, "request without `op`".into())),
    };
    Ok(RawRequest { id, op, args })
}

/// What a client receives.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerFrame {
    /// A reply to request `id`: `Ok(value of ok)` or the error.
    Reply {
        id: u64,
        result: Result<Value, WireError>,
    },
    /// `{event, data}`; `data` is `nil` when absent.
    Event { name: String, data: Value },
    /// A reply whose id is not ours (e.g. `nil` on a malformed-message error).
    Orphan { result: Result<Value, WireError> },
}

/// Decodes a daemon -> app message (client side). Tolerant like the server.
pub fn decode_server_frame(buf: &[u8]) -> Result<ServerFrame, String> {
    let Value::Map(entries) = decode_value(buf)? else {
        return Err("a server message must be a map".into());
    };
    let (mut id, mut ok, mut err, mut event, mut data) = (None, None, None, None, Value::Nil);
    for (k, v) in entries {
        match k.as_str() {
            Some("id") => id = Some(v),
            Some("ok") => ok = Some(v),
            Some("err") => err = Some(v),
            Some("event") => event = Some(v),
            Some("data") => data = v,
            _ => {}
        }
    }
    if let Some(ev) = event {
        let name = ev.as_str().ok_or("`event` must be a string")?.to_owned();
        return Ok(ServerFrame::Event { name, data });
    }
    let result = match (ok, err) {
        (_, Some(e)) => Err(
            rmpv::ext::from_value::<WireError>(e).unwrap_or_else(|e| WireError {
                code: codes::MALFORMED.into(),
                message: format!("undecodable error reply: {e}"),
                logref: String::new(),
            }),
        ),
        (Some(v), None) => Ok(v),
        (None, None) => return Err("a reply needs `ok` or `err`".into()),
    };
    match id.as_ref().and_then(Value::as_u64) {
        Some(id) => Ok(ServerFrame::Reply { id, result }),
        None => Ok(ServerFrame::Orphan { result }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::golix::{Algo, Ghid};

    fn ghid(n: u8) -> Ghid {
        Ghid::new(Algo::SHA512, [n; 64])
    }

    fn obj() -> ObjectView {
        ObjectView {
            ghid: ghid(1),
            author: ghid(2),
            api_id: None,
            dynamic: true,
            private: false,
            state: b"state".to_vec(),
        }
    }

    #[test]
    fn request_envelope_tolerates_extra_fields_and_missing_args() {
        let buf = rmp_serde::to_vec_named(&serde_json::json!({
            "id": 7, "op": "whoami", "future_field": [1, 2, 3]
        }))
        .unwrap();
        let r = decode_request(&buf).unwrap();
        assert_eq!(r.id, Value::from(7));
        assert_eq!(r.op, "whoami");
        assert_eq!(r.args, Value::Nil);
    }

    #[test]
    fn malformed_envelopes() {
        assert_eq!(decode_request(b"\xc1").unwrap_err().id, Value::Nil);
        assert_eq!(decode_request(b"").unwrap_err().id, Value::Nil);
        // A list, not a map.
        assert_eq!(decode_request(b"\x91\x01").unwrap_err().id, Value::Nil);
        // Trailing bytes.
        let mut buf = rmp_serde::to_vec_named(&serde_json::json!({"id": 1, "op": "x"})).unwrap();
        buf.push(0);
        assert!(decode_request(&buf)
            .unwrap_err()
            .message
            .contains("trailing"));
        // op of the wrong type keeps the id.
        let buf = rmp_serde::to_vec_named(&serde_json::json!({"id": 3, "op": 5})).unwrap();
        assert_eq!(decode_request(&buf).unwrap_err().id, Value::from(3));
        // Missing id.
        let buf = rmp_serde::to_vec_named(&serde_json::json!({"op": "get"})).unwrap();
        assert_eq!(decode_request(&buf).unwrap_err().id, Value::Nil);
    }

    #[test]
    fn shape_check_refuses_expansion_and_lies() {
        // An array claiming 2^32-1 elements but holding none.
        assert!(decode_value(b"\xdd\xff\xff\xff\xff").is_err());
        // A bin claiming more bytes than present.
        assert!(decode_value(b"\xc6\x00\x01\x00\x00\x01").is_err());
        // Too many values.
        let mut big = vec![0xdc, 0xff, 0xff];
        big.extend(std::iter::repeat(0xc0).take(0xffff));
        assert!(decode_value(&big).is_ok());
        let mut bigger = vec![0xdd, 0x00, 0x01, 0x00, 0x00];
        bigger.extend(std::iter::repeat(0xc0).take(0x10000));
        assert!(decode_value(&bigger).unwrap_err().contains("values"));
        // Too deep.
        let deep = vec![0x91; 100];
        assert!(decode_value(&[deep, vec![0xc0]].concat()).is_err());
        // Every marker kind round-trips through the checker.
        let v = Value::Map(vec![
            (Value::from("i"), Value::from(-70000i64)),
            (Value::from("f"), Value::F64(1.5)),
            (Value::from("g"), Value::F32(1.5)),
            (Value::from("b"), Value::Binary(vec![0; 300])),
            (Value::from("s"), Value::from("x".repeat(70000))),
            (Value::from("e"), Value::Ext(1, vec![1, 2, 3])),
            (Value::from("e1"), Value::Ext(1, vec![1])),
            (Value::from("a"), Value::Array(vec![Value::Nil; 20])),
        ]);
        let mut buf = Vec::new();
        rmpv::encode::write_value(&mut buf, &v).unwrap();
        assert_eq!(decode_value(&buf).unwrap(), v);
        for cut in 0..buf.len() {
            assert!(decode_value(&buf[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn replies_and_events_round_trip() {
        let o = obj();
        let buf = encode_ok_object(&Value::from(9), &o).unwrap();
        let ServerFrame::Reply { id, result } = decode_server_frame(&buf).unwrap() else {
            panic!("not a reply")
        };
        assert_eq!(id, 9);
        let back: WireObject = rmpv::ext::from_value(result.unwrap()).unwrap();
        assert_eq!(ObjectView::from(back), o);

        let e = WireError {
            code: "not_found".into(),
            message: "gone".into(),
            logref: "0badcafe".into(),
        };
        let buf = encode_err(&Value::from(4), &e);
        assert_eq!(
            decode_server_frame(&buf).unwrap(),
            ServerFrame::Reply {
                id: 4,
                result: Err(e.clone())
            }
        );
        let buf = encode_err(&Value::Nil, &e);
        assert_eq!(
            decode_server_frame(&buf).unwrap(),
            ServerFrame::Orphan { result: Err(e) }
        );

        let events = [
            AppEvent::Update(o),
            AppEvent::Delete(ghid(3)),
            AppEvent::Share {
                ghid: ghid(4),
                origin: ghid(5),
                api_id: Some(Ghid::new(Algo::DUMMY, [6; 64])),
            },
            AppEvent::ShareResult {
                ghid: ghid(7),
                recipient: ghid(8),
                ok: false,
                status: 3,
            },
        ];
        for ev in events {
            let buf = encode_event(&ev).unwrap();
            let ServerFrame::Event { name, data } = decode_server_frame(&buf).unwrap() else {
                panic!("not an event")
            };
            assert_eq!(decode_event(&name, data).unwrap().unwrap(), ev);
        }
        assert!(decode_event("from_the_future", Value::Nil).is_none());
        assert!(decode_event("delete", Value::Nil).unwrap().is_err());
    }
}
