//! Golden IPC messages: `tests/vectors/ipc/<name>.msgpack` with a JSON twin `<name>.json`
//! (see the README there). The Rust encoders must produce exactly these bytes, the Rust
//! decoders must read them back, and each JSON twin must describe its msgpack file. The
//! Python client's tests check the same files. `HGX_REGEN=1` rewrites them (only do that
//! for an additive protocol change, and say so in review).

use std::path::PathBuf;

use hypergolix::actors::api::{AppEvent, ObjectView};
use hypergolix::golix::{Algo, Ghid};
use hypergolix::ipc::ops::{HelloArgs, NewArgs, Request};
use hypergolix::ipc::wire::{self, ServerFrame, WireError, WireObject};
use rmpv::Value;
use serde_bytes::ByteBuf;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/ipc")
}

fn token() -> [u8; 32] {
    std::array::from_fn(|i| i as u8)
}

/// The default api_id of the Python client's `Obj`: algo 0, 63 zero bytes, then 1.
fn api_id() -> Ghid {
    let mut d = [0u8; 64];
    d[63] = 1;
    Ghid::new(Algo::DUMMY, d)
}

fn object(state: &[u8]) -> ObjectView {
    ObjectView {
        ghid: Ghid::new(Algo::SHA512, [0x11; 64]),
        author: Ghid::new(Algo::SHA512, [0x22; 64]),
        api_id: Some(api_id()),
        dynamic: true,
        private: false,
        state: state.to_vec(),
    }
}

fn err() -> WireError {
    WireError {
        code: "not_found".into(),
        message: "object does not exist".into(),
        logref: "0badc0de".into(),
    }
}

/// Every vector, as the Rust encoders write it.
fn vectors() -> Vec<(&'static str, Vec<u8>)> {
    let hello = HelloArgs {
        token: ByteBuf::from(token().to_vec()),
        client: "golden".into(),
    };
    let new = NewArgs {
        state: ByteBuf::from(b"hello world".to_vec()),
        api_id: Some(api_id()),
        dynamic: true,
        private: false,
    };
    vec![
        (
            "hello_request",
            wire::encode_request(1, "hello", &hello).unwrap(),
        ),
        ("new_request", wire::encode_request(2, "new", &new).unwrap()),
        (
            "ok_reply",
            wire::encode_ok_object(&Value::from(2), &object(b"hello world")).unwrap(),
        ),
        ("err_reply", wire::encode_err(&Value::from(3), &err())),
        (
            "update_event",
            wire::encode_event(&AppEvent::Update(object(b"hello again"))).unwrap(),
        ),
    ]
}

/// The JSON twin of a msgpack value: `bin` as `{"$bin": "<hex>"}`, map keys in msgpack
/// order, two-space indentation.
fn to_json(v: &Value, indent: usize, out: &mut String) {
    let pad = |n: usize| "  ".repeat(n);
    match v {
        Value::Nil => out.push_str("null"),
        Value::Boolean(b) => out.push_str(&b.to_string()),
        Value::Integer(i) => out.push_str(&i.to_string()),
        Value::String(s) => out.push_str(&serde_json::to_string(s.as_str().unwrap()).unwrap()),
        Value::Binary(b) => out.push_str(&format!("{{\"$bin\": \"{}\"}}", hex::encode(b))),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                out.push_str(if i == 0 { "\n" } else { ",\n" });
                out.push_str(&pad(indent + 1));
                to_json(item, indent + 1, out);
            }
            out.push_str(&format!("\n{}]", pad(indent)));
        }
        Value::Map(entries) => {
            out.push('{');
            for (i, (k, item)) in entries.iter().enumerate() {
                out.push_str(if i == 0 { "\n" } else { ",\n" });
                let key = serde_json::to_string(k.as_str().expect("string keys")).unwrap();
                out.push_str(&format!("{}{key}: ", pad(indent + 1)));
                to_json(item, indent + 1, out);
            }
            out.push_str(&format!("\n{}}}", pad(indent)));
        }
        other => panic!("no JSON twin for {other}"),
    }
}

fn twin(bytes: &[u8]) -> String {
    let v = rmpv::decode::read_value(&mut &bytes[..]).unwrap();
    let mut s = String::new();
    to_json(&v, 0, &mut s);
    s.push('\n');
    s
}

#[test]
fn encoders_write_the_golden_bytes_and_twins_match() {
    let regen = std::env::var_os("HGX_REGEN").is_some();
    for (name, bytes) in vectors() {
        let mp = dir().join(format!("{name}.msgpack"));
        let js = dir().join(format!("{name}.json"));
        if regen {
            std::fs::create_dir_all(dir()).unwrap();
            std::fs::write(&mp, &bytes).unwrap();
            std::fs::write(&js, twin(&bytes)).unwrap();
            continue;
        }
        let golden = std::fs::read(&mp).unwrap_or_else(|e| panic!("{}: {e}", mp.display()));
        assert_eq!(
            bytes, golden,
            "{name}: the encoder no longer writes the golden bytes"
        );
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&js).unwrap()).unwrap();
        let from_bytes: serde_json::Value = serde_json::from_str(&twin(&golden)).unwrap();
        assert_eq!(
            json, from_bytes,
            "{name}: the JSON twin does not describe the msgpack"
        );
    }
}

fn golden(name: &str) -> Vec<u8> {
    std::fs::read(dir().join(format!("{name}.msgpack"))).unwrap()
}

#[test]
fn decoders_read_the_golden_messages() {
    let raw = wire::decode_request(&golden("hello_request")).unwrap();
    assert_eq!(raw.id, Value::from(1));
    let Request::Hello(h) = Request::decode(&raw.op, raw.args).unwrap() else {
        panic!()
    };
    assert_eq!(
        (h.token.as_ref(), h.client.as_str()),
        (&token()[..], "golden")
    );

    let raw = wire::decode_request(&golden("new_request")).unwrap();
    let Request::New(n) = Request::decode(&raw.op, raw.args).unwrap() else {
        panic!()
    };
    assert_eq!(n.state.as_ref(), b"hello world");
    assert_eq!(
        (n.api_id, n.dynamic, n.private),
        (Some(api_id()), true, false)
    );

    let ServerFrame::Reply {
        id: 2,
        result: Ok(ok),
    } = wire::decode_server_frame(&golden("ok_reply")).unwrap()
    else {
        panic!("not a reply to 2")
    };
    let obj: WireObject = rmpv::ext::from_value(ok).unwrap();
    assert_eq!(ObjectView::from(obj), object(b"hello world"));

    let frame = wire::decode_server_frame(&golden("err_reply")).unwrap();
    assert_eq!(
        frame,
        ServerFrame::Reply {
            id: 3,
            result: Err(err())
        }
    );

    let ServerFrame::Event { name, data } =
        wire::decode_server_frame(&golden("update_event")).unwrap()
    else {
        panic!("not an event")
    };
    let ev = wire::decode_event(&name, data).unwrap().unwrap();
    assert_eq!(ev, AppEvent::Update(object(b"hello again")));
}
