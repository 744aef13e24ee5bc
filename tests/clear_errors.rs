//! Errors that say what is wrong, on the real persister (issue 15): one nesting limit with
//! one message, `args` that must be a map for every op (the app protocol's rule), ghids with
//! the test-only address algo 0 refused wherever a ghid is taken (as decoding refuses them),
//! and a GEOC whose length field lies named for that field, not for whichever field after it
//! was misread.

mod common;
mod persister_attack_support;

use hypergolix::golix::{Algo, Ghid};
use hypergolix::persist::wire::{args, Incoming};
use persister_attack_support::*;
use rmpv::Value;

/// `{id, op, args}` as msgpack.
fn envelope(id: u64, op: &str, args: Value) -> Vec<u8> {
    let v = Value::Map(vec![
        (Value::from("id"), Value::from(id)),
        (Value::from("op"), Value::from(op)),
        (Value::from("args"), args),
    ]);
    let mut b = Vec::new();
    rmpv::encode::write_value(&mut b, &v).unwrap();
    b
}

/// A ping whose envelope nests `n` containers deep.
fn nested_ping(id: u64, n: usize) -> Vec<u8> {
    let mut v = Value::Nil;
    for _ in 0..n - 2 {
        v = Value::Array(vec![v]);
    }
    envelope(id, "ping", Value::Map(vec![(Value::from("x"), v)]))
}

/// The next reply: `Ok(())` or `Err((code, message))`.
async fn answer(ws: &mut RawWs) -> Result<(), (String, String)> {
    match ws.reply().await {
        Incoming::Ok { .. } => Ok(()),
        Incoming::Err { err, .. } => Err((err.code, err.message)),
        other => panic!("expected a reply, got {other:?}"),
    }
}

#[actix_rt::test]
async fn the_persister_names_what_is_wrong() {
    let p = Persister::spawn("");
    let mut ws = RawWs::connect(p.addr).await;

    // One nesting limit, one message.
    for n in [8, 15, 16] {
        ws.send_binary(&nested_ping(n as u64, n)).await;
        assert_eq!(answer(&mut ws).await, Ok(()), "nesting {n}");
    }
    for n in [17, 18, 40] {
        ws.send_binary(&nested_ping(n as u64, n)).await;
        let (code, message) = answer(&mut ws).await.unwrap_err();
        assert_eq!(code, "malformed", "nesting {n}");
        assert!(
            message.contains("nested deeper than 16"),
            "nesting {n}: {message}"
        );
    }

    // `args` must be a map, for every op.
    let g = Ghid::pseudorandom(Algo::SHA512);
    for (op, positional) in [
        (
            "get",
            Value::Array(vec![Value::Binary(g.as_bytes().to_vec())]),
        ),
        ("ping", Value::Array(vec![])),
        ("hello", Value::from(3)),
    ] {
        ws.send_binary(&envelope(1, op, positional)).await;
        let (code, message) = answer(&mut ws).await.unwrap_err();
        assert_eq!(code, "bad_args", "{op}");
        assert!(message.contains("must be a map"), "{op}: {message}");
    }

    // Algo-0 ghids: refused by every op that takes a ghid, as decoding refuses them.
    let dummy = Ghid::new(Algo::DUMMY, [0; 64]);
    for op in ["subscribe", "get", "exists", "unsubscribe", "list_bindings"] {
        ws.request(2, op, args::ByGhid { ghid: dummy }).await;
        let (code, message) = answer(&mut ws).await.unwrap_err();
        assert_eq!(code, "bad_args", "{op}");
        assert!(message.contains("algo 0"), "{op}: {message}");
    }

    // A GEOC whose payload length field is one short: the length is named. The address is
    // then read one byte early, from the last ciphertext byte; when that byte happens to be
    // 1 (a valid algo) the object parses to the end and only the trailing byte shows, which
    // no decoder can tell from junk appended to a good object. Such draws are skipped.
    let who = common::fixture(1);
    let at = 4 + 4 + 1 + 65; // magic, version, suite, author
    let payload_len = |c: &[u8]| u64::from_be_bytes(c[at..at + 8].try_into().unwrap());
    let c = (0..16)
        .map(|_| container(&who, "some state").encode())
        .find(|c| c[at + 8 + payload_len(c) as usize - 1] != 1)
        .expect("16 draws with the last ciphertext byte 1");
    let mut lying = c.clone();
    let n = payload_len(&lying);
    lying[at..at + 8].copy_from_slice(&(n - 1).to_be_bytes());
    ws.request(3, "publish", args::Publish { object: lying })
        .await;
    let (code, message) = answer(&mut ws).await.unwrap_err();
    assert_eq!(code, "malformed");
    assert!(
        message.contains("declared payload length"),
        "a lying length field: {message}"
    );
    ws.assert_alive(4).await;
}
