//! Msgpack builders and readers for tests that speak the IPC wire by hand (`{id, op, args}`
//! requests, replies read by key). Included by `tests/ipc_mock` and `tests/hostile_support`
//! as their `msgpack` submodule and re-exported from there.
#![allow(dead_code)]

use rmpv::Value;

/// Builds a msgpack map from string keys.
pub fn map(entries: Vec<(&str, Value)>) -> Value {
    Value::Map(
        entries
            .into_iter()
            .map(|(k, v)| (Value::from(k), v))
            .collect(),
    )
}

pub fn bin(b: &[u8]) -> Value {
    Value::Binary(b.to_vec())
}

pub fn encode(v: &Value) -> Vec<u8> {
    let mut buf = Vec::new();
    rmpv::encode::write_value(&mut buf, v).unwrap();
    buf
}

/// `{id, op, args}`.
pub fn request(id: u64, op: &str, args: Value) -> Vec<u8> {
    encode(&map(vec![
        ("id", Value::from(id)),
        ("op", Value::from(op)),
        ("args", args),
    ]))
}

/// `key` of a msgpack map (`nil` when absent).
pub fn get<'a>(v: &'a Value, key: &str) -> &'a Value {
    static NIL: Value = Value::Nil;
    v.as_map()
        .and_then(|m| m.iter().find(|(k, _)| k.as_str() == Some(key)))
        .map(|(_, v)| v)
        .unwrap_or(&NIL)
}

/// The `err.code` of a reply, if any.
pub fn err_code(v: &Value) -> Option<&str> {
    get(get(v, "err"), "code").as_str()
}
