//! App IPC messages: any bytes through the daemon's two-step request decode
//! (`wire::decode_request`, then `ops::Request::decode` with the op table's defaults, then
//! what the session does with the typed args: token checks) and through the client's
//! `wire::decode_server_frame` / `wire::decode_event` and the typed results it reads out of
//! an `ok` (objects, `hello`, `register_token`, ...). Never panics; whatever decodes is
//! re-encoded with the crate's encoders and decodes to the same thing again (compared as
//! bytes where `Value` is involved: NaN floats, non-UTF-8 strings re-encoded as `bin`).
//! `wire::decode_value` (shape check, then rmpv) must accept exactly what rmpv alone
//! decodes as one whole value within the depth budget, and decode it the same.
#![no_main]

use hypergolix::actors::api::ObjectView;
use hypergolix::golix::Ghid;
use hypergolix::ipc::ops::{self, HelloInfo, Request, TokenReply, Whoami};
use hypergolix::ipc::token::CapabilityToken;
use hypergolix::ipc::wire::{self, ServerFrame, WireObject};
use libfuzzer_sys::fuzz_target;
use rmpv::Value;
use serde::Serialize;

fn bytes_of(v: &Value) -> Vec<u8> {
    let mut b = Vec::new();
    rmpv::encode::write_value(&mut b, v).expect("writing into a Vec cannot fail");
    b
}

/// Typed args as the client sends them: a named msgpack map, read back as a `Value`.
fn named<T: Serialize>(args: &T) -> Value {
    let b = rmp_serde::to_vec_named(args).expect("our arg types encode");
    wire::decode_value(&b).expect("our own encoding passes the shape check")
}

/// The args map a client would send for `req`.
fn args_of(req: &Request) -> Value {
    match req {
        Request::Hello(a) => named(a),
        Request::New(a) => named(a),
        Request::Get(a)
        | Request::Sync(a)
        | Request::Freeze(a)
        | Request::Hold(a)
        | Request::Discard(a)
        | Request::Delete(a)
        | Request::RegisterStartup(a) => named(a),
        Request::Push(a) => named(a),
        Request::RegisterToken(a) => named(a),
        Request::RegisterShareHandler(a) | Request::DeregisterShareHandler(a) => named(a),
        Request::Share(a) => named(a),
        Request::Whoami | Request::DeregisterStartup => Value::Nil,
    }
}

/// The shape check in front of rmpv refuses nothing rmpv accepts whole (a fuzz input is far
/// below `MAX_VALUES`) and lets through nothing rmpv refuses.
fn shape_agrees_with_rmpv(data: &[u8]) {
    let mut rd = data;
    let plain = rmpv::decode::read_value_with_max_depth(&mut rd, wire::MAX_DEPTH)
        .ok()
        .filter(|_| rd.is_empty());
    match (wire::decode_value(data), plain) {
        (Ok(a), Some(b)) => assert_eq!(bytes_of(&a), bytes_of(&b)),
        (Ok(_), None) => panic!("decode_value accepted what rmpv refuses"),
        // rmpv reads the reserved marker 0xc1 as nil; refusing it is deliberate.
        (Err(e), Some(_)) if e.contains("0xc1") && data.contains(&0xc1) => {}
        (Err(e), Some(_)) if data.len() < wire::MAX_VALUES => {
            panic!("decode_value refused a whole value rmpv decodes: {e}")
        }
        _ => {}
    }
}

fn daemon_side(data: &[u8]) {
    let Ok(raw) = wire::decode_request(data) else {
        return;
    };
    let again = Value::Map(vec![
        (Value::from("id"), raw.id.clone()),
        (Value::from("op"), Value::from(raw.op.as_str())),
        (Value::from("args"), raw.args.clone()),
    ]);
    let back = wire::decode_request(&bytes_of(&again)).expect("re-encoded envelope must decode");
    assert_eq!(bytes_of(&back.id), bytes_of(&raw.id));
    assert_eq!(back.op, raw.op);
    assert_eq!(bytes_of(&back.args), bytes_of(&raw.args));
    let Ok(req) = Request::decode(&raw.op, raw.args) else {
        return;
    };
    assert_eq!(req.op(), raw.op, "an op decodes as itself");
    let b = wire::encode_request(7, req.op(), &args_of(&req)).expect("requests encode");
    let back = wire::decode_request(&b).expect("encode_request output must decode");
    assert_eq!(Request::decode(&back.op, back.args).as_ref(), Ok(&req));
    match &req {
        Request::Hello(a) => {
            let token = CapabilityToken::from_bytes([0x5a; 32]);
            let _ = token.verify(&a.token);
        }
        Request::RegisterToken(a) => {
            let _ = a.token();
        }
        _ => {}
    }
}

/// `ok` read as `T` (what the client's typed calls do); on success `T` re-encodes to bytes
/// that read back as a `T` with the same encoding.
fn result_round_trip<T: serde::de::DeserializeOwned + Serialize>(ok: &Value) -> Option<T> {
    let t = rmpv::ext::from_value::<T>(ok.clone()).ok()?;
    let again = rmp_serde::to_vec_named(&t).expect("our result types encode");
    let back: T = rmp_serde::from_slice(&again).expect("re-encoded result must decode");
    assert_eq!(rmp_serde::to_vec_named(&back).expect("encodes"), again);
    Some(t)
}

/// Re-encodes a daemon message with the crate's encoders.
fn encode(frame: &ServerFrame) -> Vec<u8> {
    match frame {
        ServerFrame::Reply { id, result } => encode_result(&Value::from(*id), result),
        ServerFrame::Orphan { result } => encode_result(&Value::Nil, result),
        ServerFrame::Event { name, data } => bytes_of(&Value::Map(vec![
            (Value::from("event"), Value::from(name.as_str())),
            (Value::from("data"), data.clone()),
        ])),
    }
}

fn encode_result(id: &Value, result: &Result<Value, wire::WireError>) -> Vec<u8> {
    match result {
        Ok(v) => wire::encode_ok(id, v).expect("a decoded value encodes"),
        Err(e) => wire::encode_err(id, e),
    }
}

fn client_side(data: &[u8]) {
    let Ok(frame) = wire::decode_server_frame(data) else {
        return;
    };
    match &frame {
        ServerFrame::Event { name, data } => {
            if let Some(Ok(ev)) = wire::decode_event(name, data.clone()) {
                let b = wire::encode_event(&ev).expect("events encode");
                let ServerFrame::Event { name, data } =
                    wire::decode_server_frame(&b).expect("encode_event output must decode")
                else {
                    panic!("an event re-encoded as something else");
                };
                assert_eq!(wire::decode_event(&name, data), Some(Ok(ev)));
            }
        }
        ServerFrame::Reply { result: Ok(v), .. } | ServerFrame::Orphan { result: Ok(v) } => {
            if let Some(o) = result_round_trip::<WireObject>(v) {
                let view = ObjectView::from(o.clone());
                assert_eq!(WireObject::from(&view), o);
            }
            result_round_trip::<Whoami>(v);
            result_round_trip::<Ghid>(v);
            result_round_trip::<TokenReply>(v);
            if let Ok(h) = rmpv::ext::from_value::<HelloInfo>(v.clone()) {
                let _ = (h.ops.get("new"), ops::find("new"));
            }
        }
        _ => {}
    }
    let again = encode(&frame);
    let back = wire::decode_server_frame(&again).expect("re-encoded message must decode");
    assert_eq!(
        std::mem::discriminant(&back),
        std::mem::discriminant(&frame),
        "re-encoding changed the kind of message"
    );
    assert_eq!(encode(&back), again, "encode . decode must be stable");
}

fuzz_target!(|data: &[u8]| {
    shape_agrees_with_rmpv(data);
    daemon_side(data);
    client_side(data);
});
