//! The op table: the one place that names every IPC op, its arguments, their defaults and
//! its result, and every event. `hello` sends it ([`hello_reply`]), dispatch fills missing
//! arguments from it ([`Request::decode`]), and `src/ipc/PROTOCOL.md` carries it as
//! [`markdown_table`] renders it (a test keeps the file in step). Adding an op or an
//! argument with a default is additive within protocol 1 (src/ipc/PROTOCOL.md).
//!
//! Calls nothing; used by `session` (dispatch) and `client` (typed args and results).

use rmpv::Value;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::actors::api::AppToken;
use crate::actors::link_state::RemoteStatus;
use crate::golix::Ghid;

/// The protocol version `hello` announces. Within one version, changes are additive only.
pub const PROTOCOL: u32 = 1;

/// A default an argument takes when the client leaves it out (or sends `nil`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArgDefault {
    Nil,
    Bool(bool),
    Str(&'static str),
}

impl ArgDefault {
    pub fn to_value(self) -> Value {
        match self {
            ArgDefault::Nil => Value::Nil,
            ArgDefault::Bool(b) => Value::Boolean(b),
            ArgDefault::Str(s) => Value::from(s),
        }
    }

    fn to_json(self) -> String {
        match self {
            ArgDefault::Nil => "nil".into(),
            ArgDefault::Bool(b) => b.to_string(),
            ArgDefault::Str(s) => format!("{s:?}"),
        }
    }
}

/// One argument of an op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArgSpec {
    pub name: &'static str,
    /// Wire type, for people: `bin`, `str`, `bool`, `ghid` (65-byte bin), `x or nil`.
    pub kind: &'static str,
    /// `None`: required.
    pub default: Option<ArgDefault>,
}

/// One op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpSpec {
    pub name: &'static str,
    pub args: &'static [ArgSpec],
    /// What `ok` carries, for people.
    pub result: &'static str,
    pub doc: &'static str,
}

/// One event the daemon pushes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventSpec {
    pub name: &'static str,
    pub data: &'static str,
    pub doc: &'static str,
}

const fn req(name: &'static str, kind: &'static str) -> ArgSpec {
    ArgSpec {
        name,
        kind,
        default: None,
    }
}

const fn opt(name: &'static str, kind: &'static str, default: ArgDefault) -> ArgSpec {
    ArgSpec {
        name,
        kind,
        default: Some(default),
    }
}

const GHID_ONLY: &[ArgSpec] = &[req("ghid", "ghid")];

/// Every op, in the order `hello` lists them.
pub const OPS: &[OpSpec] = &[
    OpSpec {
        name: "hello",
        args: &[req("token", "bin"), opt("client", "str", ArgDefault::Str(""))],
        result: "{protocol, ops, events, fingerprint, user_id, max_message}",
        doc: "Must be the first request: presents the capability token from `ipc.token`. A wrong token answers `access_denied` and closes the connection; `limit` while `process.ipc_max_apps` (1024) apps are connected (the connection stays open until its hello timeout).",
    },
    OpSpec {
        name: "whoami",
        args: &[],
        result: "{fingerprint, user_id}",
        doc: "The user's identity and account root.",
    },
    OpSpec {
        name: "status",
        args: &[],
        result: "{remotes: [{url, state, since, last_error, failures, outbox}]}",
        doc: "Each remote in configuration order: `state` `connecting`, `connected` or `retrying` since `since` (unix seconds), `last_error` `{kind, reason}` or nil, failed attempts since the last connection, and objects still queued for it (what `hgxd status` prints).",
    },
    OpSpec {
        name: "new",
        args: &[
            req("state", "bin"),
            opt("api_id", "ghid or nil", ArgDefault::Nil),
            opt("dynamic", "bool", ArgDefault::Bool(true)),
            opt("private", "bool", ArgDefault::Bool(false)),
        ],
        result: "object",
        doc: "Creates an object owned by the user, tracked by this session.",
    },
    OpSpec {
        name: "get",
        args: GHID_ONLY,
        result: "object",
        doc: "Loads an object and tracks it for this session (its updates arrive as events). An object not cached here is fetched from the remotes: `not_found` only if every remote answered that it does not have it; `unavailable_upstream` (naming the remotes and why) while one could not be asked.",
    },
    OpSpec {
        name: "push",
        args: &[
            req("ghid", "ghid"),
            req("state", "bin"),
            opt("private", "bool or nil", ArgDefault::Nil),
        ],
        result: "nil",
        doc: "New state for a dynamic object the user owns; `private` nil keeps the current privacy.",
    },
    OpSpec {
        name: "sync",
        args: GHID_ONLY,
        result: "object",
        doc: "Pulls the newest frame from every remote that answers; returns the state once it is applied. `unavailable_upstream` if no remote can be asked; a remote's frame that cannot be fetched, verified, stored or opened is an error (a temporary one first), not `ok` with the older state. Only what this sync pulled counts: an earlier update that could not be opened is not its failure. `unavailable` if the object is not done with what was queued before the sync within 10 s (the pulled frame is still applied).",
    },
    OpSpec {
        name: "freeze",
        args: GHID_ONLY,
        result: "ghid",
        doc: "Binds the current state statically; returns the static ghid.",
    },
    OpSpec {
        name: "hold",
        args: GHID_ONLY,
        result: "nil",
        doc: "Adds the user's own binding, so the object outlives its author's delete.",
    },
    OpSpec {
        name: "discard",
        args: GHID_ONLY,
        result: "nil",
        doc: "Stops tracking the object for this session (local only).",
    },
    OpSpec {
        name: "delete",
        args: GHID_ONLY,
        result: "nil",
        doc: "Debinds the user's bindings; other holders get a `delete` event.",
    },
    OpSpec {
        name: "register_token",
        args: &[opt("token", "bin or nil", ArgDefault::Nil)],
        result: "{token, startup}",
        doc: "Binds an app token (16 bytes) to this session: nil (or all zeros) issues a new one, else a known one (`unknown_token`; `token_in_use` while another session holds it; `already_set` if this session has one; a new token that could not be stored is not bound nor kept, so a retry issues another; `limit` when the account has 4096 tokens). `startup`: the token's startup ghid or nil.",
    },
    OpSpec {
        name: "register_startup",
        args: GHID_ONLY,
        result: "nil",
        doc: "Sets the startup object of this session's token (`unknown_token` without one; `already_set` if another one is set, while the same one again is ok: a retry after a failure; `not_found` for an object that does not exist; `access_denied` for another app's private object).",
    },
    OpSpec {
        name: "deregister_startup",
        args: &[],
        result: "nil",
        doc: "Clears the startup object of this session's token (`not_found` if none is set, unless this daemon cleared it and it was not set since: a retry is ok, until the daemon restarts).",
    },
    OpSpec {
        name: "register_share_handler",
        args: &[req("api_id", "ghid")],
        result: "nil",
        doc: "This session receives `share` events for objects of `api_id` (shares kept while nobody handled it arrive now).",
    },
    OpSpec {
        name: "deregister_share_handler",
        args: &[req("api_id", "ghid")],
        result: "nil",
        doc: "This session stops handling shares of `api_id` (`not_found` if it did not).",
    },
    OpSpec {
        name: "share",
        args: &[req("ghid", "ghid"), req("recipient", "ghid")],
        result: "nil",
        doc: "Shares an object with another user's fingerprint (`unknown_recipient`, `unsharable` for private objects; `unavailable_upstream` when the object or the recipient's identity is not known here and a remote could not be asked); the outcome arrives as `share_result`.",
    },
];

/// Every event, in the order `hello` lists them.
pub const EVENTS: &[EventSpec] = &[
    EventSpec {
        name: "update",
        data: "object",
        doc: "A tracked object has new state from elsewhere (never sent to the pusher).",
    },
    EventSpec {
        name: "delete",
        data: "{ghid}",
        doc: "A tracked object was deleted.",
    },
    EventSpec {
        name: "share",
        data: "{ghid, origin, api_id}",
        doc: "An object was shared with this app's api_id (origin: the sharer's fingerprint, or the user's own for an object another app of the user created).",
    },
    EventSpec {
        name: "share_result",
        data: "{ghid, recipient, ok, status}",
        doc: "The outcome of a share this app (or its token) asked for; `status` 0 = accepted.",
    },
    EventSpec {
        name: "remote_refused",
        data: "{ghid, remote, code, message}",
        doc: "A remote refused an object of the user's for good (`code`, e.g. `too_large`): it keeps the tracked object's previous state until a later push fits. Also in the daemon's log as a warning.",
    },
];

/// The op named `name`.
pub fn find(name: &str) -> Option<&'static OpSpec> {
    OPS.iter().find(|op| op.name == name)
}

/// Arguments of `hello`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelloArgs {
    /// The capability token: its 32 raw bytes, or (tolerated) its 64 hex characters.
    pub token: ByteBuf,
    pub client: String,
}

/// Arguments of `new`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewArgs {
    pub state: ByteBuf,
    pub api_id: Option<Ghid>,
    pub dynamic: bool,
    pub private: bool,
}

/// Arguments of ops that take only a ghid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GhidArgs {
    pub ghid: Ghid,
}

/// Arguments of `push`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushArgs {
    pub ghid: Ghid,
    pub state: ByteBuf,
    pub private: Option<bool>,
}

/// Arguments of `register_token`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenArgs {
    pub token: Option<ByteBuf>,
}

impl TokenArgs {
    /// The token, `None` for a new one (nil or all zeros); an error for a wrong length.
    pub fn token(&self) -> Result<Option<AppToken>, String> {
        let Some(b) = &self.token else {
            return Ok(None);
        };
        let t: AppToken = b
            .as_slice()
            .try_into()
            .map_err(|_| format!("register_token: a token is 16 bytes, not {}", b.len()))?;
        Ok((t != [0; 16]).then_some(t))
    }
}

/// Result of `register_token`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenReply {
    pub token: ByteBuf,
    pub startup: Option<Ghid>,
}

/// Arguments of the share-handler ops.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiArgs {
    pub api_id: Ghid,
}

/// Arguments of `share`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareArgs {
    pub ghid: Ghid,
    pub recipient: Ghid,
}

/// Arguments of ops without any.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoArgs {}

/// Result of `whoami` (and part of `hello`'s).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Whoami {
    pub fingerprint: Ghid,
    pub user_id: Ghid,
}

/// Result of `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReply {
    pub remotes: Vec<RemoteStatus>,
}

/// A request with typed arguments, after the second decoding step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Hello(HelloArgs),
    Whoami,
    Status,
    New(NewArgs),
    Get(GhidArgs),
    Push(PushArgs),
    Sync(GhidArgs),
    Freeze(GhidArgs),
    Hold(GhidArgs),
    Discard(GhidArgs),
    Delete(GhidArgs),
    RegisterToken(TokenArgs),
    RegisterStartup(GhidArgs),
    DeregisterStartup,
    RegisterShareHandler(ApiArgs),
    DeregisterShareHandler(ApiArgs),
    Share(ShareArgs),
}

/// Why [`Request::decode`] refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArgsError {
    /// Not in [`OPS`]: wire code `unknown_op`.
    UnknownOp(String),
    /// Missing or mistyped arguments: wire code `bad_args`.
    BadArgs(String),
}

impl Request {
    /// Second decoding step: fills defaults from [`OPS`], then decodes the typed arguments.
    /// Unknown argument names are ignored.
    pub fn decode(op: &str, args: Value) -> Result<Request, ArgsError> {
        let spec = find(op).ok_or_else(|| ArgsError::UnknownOp(op.to_owned()))?;
        let args = with_defaults(spec, args)?;
        fn typed<T: serde::de::DeserializeOwned>(op: &str, args: Value) -> Result<T, ArgsError> {
            rmpv::ext::from_value(args).map_err(|e| ArgsError::BadArgs(format!("{op}: {e}")))
        }
        Ok(match spec.name {
            "hello" => Request::Hello(typed(op, args)?),
            "whoami" => Request::Whoami,
            "status" => Request::Status,
            "new" => Request::New(typed(op, args)?),
            "get" => Request::Get(typed(op, args)?),
            "push" => Request::Push(typed(op, args)?),
            "sync" => Request::Sync(typed(op, args)?),
            "freeze" => Request::Freeze(typed(op, args)?),
            "hold" => Request::Hold(typed(op, args)?),
            "discard" => Request::Discard(typed(op, args)?),
            "delete" => Request::Delete(typed(op, args)?),
            "register_token" => Request::RegisterToken(typed(op, args)?),
            "register_startup" => Request::RegisterStartup(typed(op, args)?),
            "deregister_startup" => Request::DeregisterStartup,
            "register_share_handler" => Request::RegisterShareHandler(typed(op, args)?),
            "deregister_share_handler" => Request::DeregisterShareHandler(typed(op, args)?),
            "share" => Request::Share(typed(op, args)?),
            // In the table but not dispatched: a test makes sure this cannot happen.
            other => return Err(ArgsError::UnknownOp(other.to_owned())),
        })
    }

    /// The op's name.
    pub fn op(&self) -> &'static str {
        match self {
            Request::Hello(_) => "hello",
            Request::Whoami => "whoami",
            Request::Status => "status",
            Request::New(_) => "new",
            Request::Get(_) => "get",
            Request::Push(_) => "push",
            Request::Sync(_) => "sync",
            Request::Freeze(_) => "freeze",
            Request::Hold(_) => "hold",
            Request::Discard(_) => "discard",
            Request::Delete(_) => "delete",
            Request::RegisterToken(_) => "register_token",
            Request::RegisterStartup(_) => "register_startup",
            Request::DeregisterStartup => "deregister_startup",
            Request::RegisterShareHandler(_) => "register_share_handler",
            Request::DeregisterShareHandler(_) => "deregister_share_handler",
            Request::Share(_) => "share",
        }
    }
}

/// The args map with the op's arguments only (string keys), `nil` treated as absent,
/// defaults filled in. A missing required argument is `bad_args`.
fn with_defaults(spec: &OpSpec, args: Value) -> Result<Value, ArgsError> {
    let mut given = match args {
        Value::Nil => Vec::new(),
        Value::Map(m) => m,
        _ => {
            return Err(ArgsError::BadArgs(format!(
                "{}: {}",
                spec.name,
                crate::persist::wire::ARGS_NOT_A_MAP
            )))
        }
    };
    let mut out = Vec::with_capacity(spec.args.len());
    for arg in spec.args {
        let value = given
            .iter()
            .position(|(k, v)| k.as_str() == Some(arg.name) && !v.is_nil())
            .map(|i| given.swap_remove(i).1);
        match (value, arg.default) {
            (Some(v), _) => out.push((Value::from(arg.name), v)),
            (None, Some(d)) => out.push((Value::from(arg.name), d.to_value())),
            (None, None) => {
                return Err(ArgsError::BadArgs(format!(
                    "{}: missing argument `{}`",
                    spec.name, arg.name
                )))
            }
        }
    }
    Ok(Value::Map(out))
}

/// `hello`'s reply: `{protocol, ops: {name: {args, defaults, result}}, events, fingerprint,
/// user_id, max_message}`.
pub fn hello_reply(who: &Whoami, max_message: usize) -> Value {
    let ops = OPS
        .iter()
        .map(|op| {
            let args = op.args.iter().map(|a| Value::from(a.name)).collect();
            let defaults = op
                .args
                .iter()
                .filter_map(|a| a.default.map(|d| (Value::from(a.name), d.to_value())))
                .collect();
            let entry = Value::Map(vec![
                (Value::from("args"), Value::Array(args)),
                (Value::from("defaults"), Value::Map(defaults)),
                (Value::from("result"), Value::from(op.result)),
            ]);
            (Value::from(op.name), entry)
        })
        .collect();
    let events = EVENTS.iter().map(|e| Value::from(e.name)).collect();
    Value::Map(vec![
        (Value::from("protocol"), Value::from(PROTOCOL)),
        (Value::from("ops"), Value::Map(ops)),
        (Value::from("events"), Value::Array(events)),
        (
            Value::from("fingerprint"),
            Value::Binary(who.fingerprint.as_bytes().to_vec()),
        ),
        (
            Value::from("user_id"),
            Value::Binary(who.user_id.as_bytes().to_vec()),
        ),
        (Value::from("max_message"), Value::from(max_message as u64)),
    ])
}

/// What a client reads from `hello`'s reply (tolerantly: everything but the identity is
/// optional).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct HelloInfo {
    #[serde(default)]
    pub protocol: u32,
    #[serde(default)]
    pub ops: std::collections::BTreeMap<String, OpInfo>,
    #[serde(default)]
    pub events: Vec<String>,
    pub fingerprint: Ghid,
    pub user_id: Ghid,
    #[serde(default)]
    pub max_message: Option<u64>,
}

/// One op as `hello` describes it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct OpInfo {
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub defaults: std::collections::BTreeMap<String, Value>,
    #[serde(default)]
    pub result: String,
}

/// The op and event tables as markdown (what `PROTOCOL.md` carries).
pub fn markdown_table() -> String {
    let mut s = String::from("| op | arguments (default) | result | what |\n|---|---|---|---|\n");
    for op in OPS {
        let args: Vec<String> = op
            .args
            .iter()
            .map(|a| match a.default {
                None => format!("`{}`: {}", a.name, a.kind),
                Some(d) => format!("`{}`: {} = `{}`", a.name, a.kind, d.to_json()),
            })
            .collect();
        s += &format!(
            "| `{}` | {} | {} | {} |\n",
            op.name,
            if args.is_empty() {
                "-".into()
            } else {
                args.join(", ")
            },
            op.result,
            op.doc
        );
    }
    s += "\n| event | data | what |\n|---|---|---|\n";
    for ev in EVENTS {
        s += &format!("| `{}` | {} | {} |\n", ev.name, ev.data, ev.doc);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::golix::Algo;

    fn sample(kind: &str) -> Value {
        match kind.trim_end_matches(" or nil") {
            "bin" => Value::Binary(vec![1; 32]),
            "str" => Value::from("s"),
            "bool" => Value::Boolean(true),
            "ghid" => Value::Binary(Ghid::new(Algo::SHA512, [7; 64]).as_bytes().to_vec()),
            other => panic!("no sample for kind {other}"),
        }
    }

    /// Table and dispatch cannot drift: every op decodes with all its arguments, and with
    /// only its required ones; each typed struct has exactly the table's argument names.
    #[test]
    fn every_op_in_the_table_dispatches() {
        for op in OPS {
            let full = Value::Map(
                op.args
                    .iter()
                    .map(|a| (Value::from(a.name), sample(a.kind)))
                    .collect(),
            );
            let req =
                Request::decode(op.name, full).unwrap_or_else(|e| panic!("{}: {e:?}", op.name));
            assert_eq!(req.op(), op.name);
            let required = Value::Map(
                op.args
                    .iter()
                    .filter(|a| a.default.is_none())
                    .map(|a| (Value::from(a.name), sample(a.kind)))
                    .collect(),
            );
            let req = Request::decode(op.name, required).unwrap();
            fn named<T: Serialize>(a: &T) -> Value {
                let bytes = rmp_serde::to_vec_named(a).unwrap();
                rmpv::decode::read_value(&mut &bytes[..]).unwrap()
            }
            let encoded = match &req {
                Request::Hello(a) => named(a),
                Request::Whoami | Request::Status | Request::DeregisterStartup => named(&NoArgs {}),
                Request::New(a) => named(a),
                Request::Push(a) => named(a),
                Request::Get(a)
                | Request::Sync(a)
                | Request::Freeze(a)
                | Request::Hold(a)
                | Request::Discard(a)
                | Request::Delete(a)
                | Request::RegisterStartup(a) => named(a),
                Request::RegisterToken(a) => named(a),
                Request::RegisterShareHandler(a) | Request::DeregisterShareHandler(a) => named(a),
                Request::Share(a) => named(a),
            };
            let names: Vec<&str> = encoded
                .as_map()
                .unwrap()
                .iter()
                .map(|(k, _)| k.as_str().unwrap())
                .collect();
            let table: Vec<&str> = op.args.iter().map(|a| a.name).collect();
            assert_eq!(
                names, table,
                "typed args of {} differ from the table",
                op.name
            );
            // Defaults are the table's.
            for a in op.args {
                if let Some(d) = a.default {
                    let got = encoded
                        .as_map()
                        .unwrap()
                        .iter()
                        .find(|(k, _)| k.as_str() == Some(a.name));
                    assert_eq!(got.unwrap().1, d.to_value(), "{}.{}", op.name, a.name);
                }
            }
        }
    }

    #[test]
    fn defaults_nil_unknown_and_bad_args() {
        let g = Ghid::new(Algo::SHA512, [7; 64]);
        let args = Value::Map(vec![
            (Value::from("state"), Value::Binary(b"x".to_vec())),
            (Value::from("dynamic"), Value::Nil),
            (Value::from("from_the_future"), Value::from(1)),
            (Value::from(3), Value::from(1)),
        ]);
        let Request::New(n) = Request::decode("new", args).unwrap() else {
            panic!()
        };
        assert_eq!((n.api_id, n.dynamic, n.private), (None, true, false));
        assert_eq!(n.state.as_ref(), b"x");

        assert_eq!(
            Request::decode("frobnicate", Value::Nil),
            Err(ArgsError::UnknownOp("frobnicate".into()))
        );
        assert!(
            matches!(Request::decode("get", Value::Nil), Err(ArgsError::BadArgs(m)) if m.contains("ghid"))
        );
        assert!(matches!(
            Request::decode(
                "get",
                Value::Map(vec![(Value::from("ghid"), Value::Binary(vec![1; 3]))])
            ),
            Err(ArgsError::BadArgs(_))
        ));
        assert!(matches!(
            Request::decode("get", Value::from(5)),
            Err(ArgsError::BadArgs(_))
        ));
        assert!(matches!(
            Request::decode(
                "new",
                Value::Map(vec![
                    (Value::from("state"), Value::Binary(vec![])),
                    (Value::from("dynamic"), Value::from("yes")),
                ])
            ),
            Err(ArgsError::BadArgs(_))
        ));
        let Request::Push(p) = Request::decode(
            "push",
            Value::Map(vec![
                (Value::from("ghid"), Value::Binary(g.as_bytes().to_vec())),
                (Value::from("state"), Value::Binary(vec![])),
            ]),
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(p.private, None);
        assert_eq!(Request::decode("whoami", Value::Nil), Ok(Request::Whoami));
    }

    #[test]
    fn token_args_accept_nil_zeros_and_16_bytes_only() {
        let args = |t: Option<Vec<u8>>| TokenArgs {
            token: t.map(ByteBuf::from),
        };
        assert_eq!(args(None).token(), Ok(None));
        assert_eq!(args(Some(vec![0; 16])).token(), Ok(None));
        assert_eq!(args(Some(vec![9; 16])).token(), Ok(Some([9; 16])));
        for bad in [0, 15, 17, 65] {
            assert!(args(Some(vec![1; bad])).token().is_err(), "{bad} bytes");
        }
    }

    #[test]
    fn hello_reply_reads_back() {
        let who = Whoami {
            fingerprint: Ghid::new(Algo::SHA512, [1; 64]),
            user_id: Ghid::new(Algo::SHA512, [2; 64]),
        };
        let info: HelloInfo = rmpv::ext::from_value(hello_reply(&who, 99)).unwrap();
        assert_eq!(info.protocol, PROTOCOL);
        assert_eq!(info.fingerprint, who.fingerprint);
        assert_eq!(info.max_message, Some(99));
        assert_eq!(info.ops.len(), OPS.len());
        assert_eq!(
            info.ops["new"].args,
            ["state", "api_id", "dynamic", "private"]
        );
        assert_eq!(
            info.events,
            [
                "update",
                "delete",
                "share",
                "share_result",
                "remote_refused"
            ]
        );
    }

    /// `PROTOCOL.md` shows the table exactly as [`markdown_table`] renders it.
    #[test]
    fn protocol_md_carries_the_table() {
        let doc = include_str!("PROTOCOL.md");
        if std::env::var_os("HGX_REGEN").is_some() {
            let begin_at = doc.find("<!-- op-table:begin -->\n").unwrap() + 24;
            let end_at = doc.find("<!-- op-table:end -->").unwrap();
            let new = format!("{}{}{}", &doc[..begin_at], markdown_table(), &doc[end_at..]);
            let path = concat!(env!("CARGO_MANIFEST_DIR"), "/src/ipc/PROTOCOL.md");
            std::fs::write(path, new).unwrap();
            return;
        }
        let begin = "<!-- op-table:begin -->\n";
        let end = "<!-- op-table:end -->";
        let start = doc.find(begin).expect("begin marker") + begin.len();
        let stop = doc.find(end).expect("end marker");
        assert_eq!(
            &doc[start..stop],
            markdown_table(),
            "regenerate the table in src/ipc/PROTOCOL.md from ops::markdown_table()"
        );
    }
}
