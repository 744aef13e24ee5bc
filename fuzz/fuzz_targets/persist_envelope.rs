//! Persister websocket envelopes: any bytes through the server's two-step request decode
//! (`RawRequest::decode`, then the typed args of every op) and the client's
//! `Incoming::decode`, plus the typed results the client reads out of an `ok`. Never
//! panics; whatever decodes is re-encoded with the crate's own encoders and must decode to
//! the same kind of message whose encoding is the same again (encode . decode is the
//! identity on re-encoded messages; compared as bytes since `Value` has NaN floats and
//! non-UTF-8 strings re-encode as `bin`). The allocation-free `check_shape` guard is
//! checked against `rmpv` itself: it accepts exactly the well-formed values within its
//! limits, and measures them as `rmpv` does.
#![no_main]

use hypergolix::golix::Ghid;
use hypergolix::persist::wire::{
    args, check_shape, encode_err, encode_notify, encode_ok, encode_request, Hello, Incoming,
    PublishAck, RawRequest,
};
use libfuzzer_sys::fuzz_target;
use rmpv::Value;
use serde::de::DeserializeOwned;

fn bytes_of(v: &Value) -> Vec<u8> {
    let mut b = Vec::new();
    rmpv::encode::write_value(&mut b, v).expect("writing into a Vec cannot fail");
    b
}

/// `ok` read as `T` (the client's `call::<T>`); on success `T` re-encodes to bytes that
/// read back as a `T` with the same encoding.
fn result_round_trip<T: DeserializeOwned + serde::Serialize>(ok: &Value) {
    if let Ok(t) = rmpv::ext::from_value::<T>(ok.clone()) {
        let again = rmp_serde::to_vec_named(&t).expect("our result types encode");
        let back: T = rmp_serde::from_slice(&again).expect("re-encoded result must decode");
        assert_eq!(rmp_serde::to_vec_named(&back).expect("encodes"), again);
    }
}

/// Re-encodes a client message with the crate's encoders (what a server would send).
fn encode(msg: &Incoming) -> Vec<u8> {
    match msg {
        Incoming::Ok { id, ok } => encode_ok(id, ok).to_vec(),
        Incoming::Err { id, err } => encode_err(id, &err.code, err.message.clone()).to_vec(),
        Incoming::Notify {
            subscription,
            object,
        } => encode_notify(subscription, object).to_vec(),
        Incoming::OtherEvent(name) => bytes_of(&Value::Map(vec![(
            Value::from("event"),
            Value::from(name.as_str()),
        )])),
    }
}

/// Values in a decoded tree (map keys count), as `check_shape` counts them.
fn count(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(count).sum::<usize>(),
        Value::Map(m) => 1 + m.iter().map(|(k, v)| count(k) + count(v)).sum::<usize>(),
        _ => 1,
    }
}

/// Nesting of non-empty containers, as `check_shape` limits it.
fn depth(v: &Value) -> usize {
    let deepest = match v {
        Value::Array(a) if !a.is_empty() => a.iter().map(depth).max(),
        Value::Map(m) if !m.is_empty() => m.iter().map(|(k, v)| depth(k).max(depth(v))).max(),
        _ => return 0,
    };
    1 + deepest.unwrap_or(0)
}

/// `check_shape` with small limits (so the fuzzer reaches them) against a full decode.
fn shape_agrees_with_rmpv(data: &[u8]) {
    const DEPTH: usize = 6;
    const VALUES: usize = 48;
    let shape = check_shape(data, DEPTH, VALUES);
    let mut rd = data;
    // Deep enough for anything check_shape may accept (rmpv also spends depth on leaves).
    let decoded = rmpv::decode::read_value_with_max_depth(&mut rd, 64);
    let used = data.len() - rd.len();
    match (shape, decoded) {
        (Ok(n), Ok(v)) => {
            assert_eq!(n, used, "check_shape and rmpv disagree on the length");
            assert!(
                count(&v) <= VALUES && depth(&v) <= DEPTH,
                "limits not enforced"
            );
        }
        (Ok(_), Err(e)) => panic!("check_shape accepted what rmpv refuses: {e}"),
        // rmpv reads the reserved marker 0xc1 as nil; refusing it is deliberate.
        (Err(e), Ok(_)) if e.contains("0xc1") && data.contains(&0xc1) => {}
        (Err(e), Ok(v)) => assert!(
            count(&v) > VALUES || depth(&v) > DEPTH,
            "check_shape refused a well-formed value within its limits: {e}"
        ),
        (Err(_), Err(_)) => {}
    }
}

fn server_side(data: &[u8]) {
    let Ok(raw) = RawRequest::decode(data) else {
        return;
    };
    let again = Value::Map(vec![
        (Value::from("id"), raw.id.clone()),
        (Value::from("op"), Value::from(raw.op.as_str())),
        (Value::from("args"), raw.args.clone()),
    ]);
    let back = RawRequest::decode(&bytes_of(&again)).expect("re-encoded envelope must decode");
    assert_eq!(bytes_of(&back.id), bytes_of(&raw.id));
    assert_eq!(back.op, raw.op);
    assert_eq!(bytes_of(&back.args), bytes_of(&raw.args));
    if let Ok(a) = raw.args::<args::ByGhid>() {
        let b = encode_request(1, &raw.op, &a);
        let back = RawRequest::decode(&b).expect("encode_request output must decode");
        assert_eq!(back.args::<args::ByGhid>().expect("same args").ghid, a.ghid);
    }
    if let Ok(a) = raw.args::<args::Publish>() {
        let b = encode_request(2, &raw.op, &a);
        let back = RawRequest::decode(&b).expect("encode_request output must decode");
        assert_eq!(
            back.args::<args::Publish>().expect("same args").object,
            a.object
        );
    }
}

fn client_side(data: &[u8]) {
    let Ok(msg) = Incoming::decode(data) else {
        return;
    };
    if let Incoming::Ok { ok, .. } = &msg {
        result_round_trip::<Hello>(ok);
        result_round_trip::<PublishAck>(ok);
        result_round_trip::<bool>(ok);
        result_round_trip::<serde_bytes::ByteBuf>(ok);
        result_round_trip::<Vec<Ghid>>(ok);
        result_round_trip::<Option<Ghid>>(ok);
    }
    let again = encode(&msg);
    let back = Incoming::decode(&again).expect("re-encoded server message must decode");
    assert_eq!(
        std::mem::discriminant(&back),
        std::mem::discriminant(&msg),
        "re-encoding changed the kind of message"
    );
    assert_eq!(encode(&back), again, "encode . decode must be stable");
}

fuzz_target!(|data: &[u8]| {
    shape_agrees_with_rmpv(data);
    server_side(data);
    client_side(data);
});
