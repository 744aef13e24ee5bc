//! Secrets never reach the logs (issue 8 part 4). The real binaries run a whole scenario at
//! their most verbose (`extreme`): two accounts are created (fixtures 1 and 2), Alice's app
//! registers an app token, creates a public and a private object, pushes, and shares the
//! public one with Bob while his daemon is down; Bob logs in with a wrong password, then the
//! right one, receives the share and follows Alice's next push. Then everything either
//! program printed (stdout, stderr) or wrote to its log directory is searched for every
//! secret of the scenario, in every encoding the code could print it in: the passwords
//! (the wrong one too), each start's IPC token, the app token, the fixtures' private keys,
//! both root secrets, the shared object's secret (read by the test from Bob's request on
//! the persister, with Bob's fixture keys), and the objects' plaintext states.

mod proc_support;

#[path = "common/mod.rs"]
mod common;

use std::str::FromStr;
use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use hypergolix::actors::account::{derive_root_secret, ScryptParams};
use hypergolix::actors::api::AppEvent;
use hypergolix::golix::{Ghid, Object, Policy, RequestBody, SecondParty};
use hypergolix::ipc::{CapabilityToken, HgxLink};
use hypergolix::persist::client::PersisterClient;
use proc_support::{files_text, identity_json, Home, Persister, Proc, WAIT};

const ALICE_PW: &str = "alice's 1st passphrase";
const BOB_PW: &str = "bob's 2nd passphrase";
const WRONG_PW: &str = "not bob's passphrase";

/// Every text form of `bytes` a log line could carry: hex (both cases), base64 (standard
/// and url-safe, padded or not) and Rust's `Debug` of a byte slice. Long values are also
/// cut into 16-byte windows, so that a partial dump is caught as well.
fn encodings(bytes: &[u8]) -> Vec<String> {
    let mut parts = vec![bytes.to_vec()];
    if bytes.len() > 24 {
        // Windows at multiples of 3 bytes: their base64 is a substring of the whole's.
        parts.extend(
            bytes
                .chunks(24)
                .filter(|c| c.len() >= 12)
                .map(<[u8]>::to_vec),
        );
    }
    let mut out = Vec::new();
    for p in parts {
        let hex = hex::encode(&p);
        out.push(hex.to_uppercase());
        out.push(hex);
        for engine in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD] {
            out.push(engine.encode(&p));
        }
        let debug = format!("{:?}", &p[..p.len().min(12)]);
        out.push(debug.trim_end_matches(']').to_owned());
    }
    out.sort();
    out.dedup();
    out
}

/// (what, text) pairs whose presence anywhere in the logs is a leak.
struct Secrets(Vec<(String, String)>);

impl Secrets {
    fn bytes(&mut self, what: &str, bytes: &[u8]) {
        for e in encodings(bytes) {
            self.0.push((what.to_owned(), e));
        }
    }

    fn text(&mut self, what: &str, text: &str) {
        self.0.push((what.to_owned(), text.to_owned()));
    }

    /// Every secret found in `haystack`, with a line of context.
    fn leaks(&self, haystack: &str) -> Vec<String> {
        self.0
            .iter()
            .filter_map(|(what, needle)| {
                let at = haystack.find(needle.as_str())?;
                let line_start = haystack[..at].rfind('\n').map_or(0, |i| i + 1);
                let line_end = haystack[at..].find('\n').map_or(haystack.len(), |i| at + i);
                Some(format!(
                    "{what} ({needle}) in: {}",
                    &haystack[line_start..line_end]
                ))
            })
            .collect()
    }
}

fn config_scrypt(home: &Home) -> ScryptParams {
    let cfg =
        hypergolix::config::Config::load_from(Some(&home.file("hypergolix.yml")), false).unwrap();
    let s = cfg.user.scrypt.expect("user.scrypt");
    ScryptParams {
        log_n: s.log_n,
        r: s.r,
        p: s.p,
    }
}

fn ipc_token(home: &Home) -> Vec<u8> {
    CapabilityToken::read_file(&home.path)
        .expect("ipc.token")
        .as_bytes()
        .to_vec()
}

#[actix_rt::test]
async fn no_secret_reaches_any_log_at_extreme_verbosity() {
    let top = tempfile::tempdir().unwrap();
    let mut persister = Persister::start("extreme").await;
    let alice_home = Home::new(top.path().join("alice"), "extreme", Some(persister.port));
    let bob_home = Home::new(top.path().join("bob"), "extreme", Some(persister.port));
    let mut secrets = Secrets(Vec::new());
    let mut procs: Vec<Proc> = Vec::new();
    let tag = format!("{:08x}", rand::random::<u32>());
    let public_states: Vec<String> = (1..=3)
        .map(|v| format!("PUBLIC-STATE-{tag}-v{v}"))
        .collect();
    let private_state = format!("PRIVATE-PLAINTEXT-{tag}");

    // Bob's account exists (his identity is on the persister); his daemon then stops.
    let (bob, _) = bob_home.start(BOB_PW, Some(2)).await;
    secrets.bytes("Bob's first IPC token", &ipc_token(&bob_home));
    bob.terminate();
    procs.push(bob);
    procs.last_mut().unwrap().wait_exit(WAIT).await;
    let bob_fp = Ghid::from_str(identity_json(2)["ghid_b64"].as_str().unwrap()).unwrap();

    // Alice: a token, a public and a private object, a push, a share with offline Bob.
    let (alice, alice_port) = alice_home.start(ALICE_PW, Some(1)).await;
    procs.push(alice);
    secrets.bytes("Alice's IPC token", &ipc_token(&alice_home));
    let a = HgxLink::connect_home(&alice_home.path, alice_port)
        .await
        .unwrap();
    let (app_token, _) = a.register_token(None).await.unwrap();
    secrets.bytes("Alice's app token", &app_token);
    let api = Ghid::new(hypergolix::golix::Algo::DUMMY, [0x5a; 64]);
    let obj = a
        .new_object(
            public_states[0].clone().into_bytes(),
            Some(api),
            true,
            false,
        )
        .await
        .unwrap();
    a.push(obj.ghid, public_states[1].clone().into_bytes(), None)
        .await
        .unwrap();
    let private = a
        .new_object(private_state.clone().into_bytes(), None, true, true)
        .await
        .unwrap();
    assert!(private.private);
    a.share(obj.ghid, bob_fp).await.unwrap();

    // The shared secret, from Bob's stored request, opened with Bob's fixture keys.
    let bob_keys = common::fixture(2);
    let alice_public = SecondParty::from_gidc(common::fixture(1).gidc().clone()).unwrap();
    let (client, mut notes) = PersisterClient::connect(&persister.ws_url()).await.unwrap();
    client.subscribe(&bob_fp).await.unwrap();
    let shared_secret = tokio::time::timeout(WAIT, async {
        loop {
            let note = notes.recv().await.expect("notifications open");
            let Ok(Object::Garq(g)) = Object::decode(&note.object, Policy::STRICT) else {
                continue;
            };
            let Ok(req) = bob_keys.open_request(&g, |_| Some(alice_public.clone())) else {
                continue;
            };
            if let RequestBody::Handshake { target, secret } = req.body {
                assert_eq!(target, obj.ghid);
                return secret;
            }
        }
    })
    .await
    .expect("Alice's handshake reaches the persister");
    client.close();
    secrets.bytes("the shared object's secret", &shared_secret.encode());
    secrets.bytes("the shared object's key", shared_secret.key());
    secrets.bytes("the shared object's seed", shared_secret.seed());

    // Bob: a wrong password, then the right one; he receives the share and follows it.
    let (st, out) = bob_home.run(Some(WRONG_PW), &[]).await;
    assert!(!st.success(), "a wrong password was accepted:\n{out}");
    let (bob, bob_port) = bob_home.start(BOB_PW, None).await;
    procs.push(bob);
    secrets.bytes("Bob's second IPC token", &ipc_token(&bob_home));
    let b = HgxLink::connect_home(&bob_home.path, bob_port)
        .await
        .unwrap();
    let mut b_events = b.events();
    b.register_share_handler(api).await.unwrap();
    tokio::time::timeout(WAIT, async {
        loop {
            if let Some(AppEvent::Share { ghid, .. }) = b_events.recv().await {
                assert_eq!(ghid, obj.ghid);
                return;
            }
        }
    })
    .await
    .expect("the share reaches Bob");
    assert_eq!(
        b.get(obj.ghid).await.unwrap().state,
        public_states[1].as_bytes()
    );
    a.push(obj.ghid, public_states[2].clone().into_bytes(), None)
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while b.get(obj.ghid).await.unwrap().state != public_states[2].as_bytes() {
        assert!(tokio::time::Instant::now() < deadline, "Bob never saw v3");
        let _ = b.sync(obj.ghid).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    a.close();
    b.close();

    // The remaining secrets: passwords, keys, root secrets, plaintexts.
    for (what, pw) in [
        ("Alice's password", ALICE_PW),
        ("Bob's password", BOB_PW),
        ("the wrong password", WRONG_PW),
    ] {
        secrets.text(what, pw);
        secrets.bytes(what, pw.as_bytes());
    }
    for n in [1, 2] {
        let id = identity_json(n);
        for key in [
            "signature_private_der_hex",
            "encryption_private_der_hex",
            "exchange_private_hex",
        ] {
            let bytes = hex::decode(id[key].as_str().unwrap()).unwrap();
            secrets.bytes(&format!("fixture {n} {key}"), &bytes);
        }
    }
    for (who, home, pw, n) in [
        ("Alice", &alice_home, ALICE_PW, 1),
        ("Bob", &bob_home, BOB_PW, 2),
    ] {
        let fp = common::fixture(n).ghid();
        let root = derive_root_secret(pw.as_bytes(), &fp, config_scrypt(home)).unwrap();
        secrets.bytes(&format!("{who}'s root secret"), &root.encode());
        secrets.bytes(&format!("{who}'s root key"), root.key());
    }
    for s in &public_states {
        secrets.text("a public object's plaintext", s);
    }
    secrets.text("the private object's plaintext", &private_state);
    secrets.bytes("the private object's plaintext", private_state.as_bytes());

    // Stop everything so the asynchronous log drains flush, then search.
    for p in &procs {
        p.terminate();
    }
    for p in procs.iter_mut() {
        p.wait_exit(WAIT).await;
    }
    persister.proc.terminate();
    persister.proc.wait_exit(WAIT).await;
    let mut haystack = String::new();
    for p in &procs {
        haystack.push_str(&p.output());
        haystack.push('\n');
    }
    haystack.push_str(&out);
    haystack.push_str(&persister.proc.output());
    haystack.push_str(&alice_home.log_files());
    haystack.push_str(&bob_home.log_files());
    haystack.push_str(&files_text(&persister.dir.path().join("logs")));
    // The logs really are the most verbose ones (not an empty haystack).
    assert!(
        haystack.contains("TRCE") || haystack.contains("DEBG"),
        "no debug or trace lines were logged"
    );
    assert!(haystack.lines().count() > 50, "{haystack}");
    // The search finds what it looks for (a guard against a matcher that never matches).
    let planted = format!("x {} y", STANDARD.encode(private_state.as_bytes()));
    assert!(!secrets.leaks(&planted).is_empty());
    assert!(!alice_home.log_files().is_empty() && !bob_home.log_files().is_empty());
    let leaks = secrets.leaks(&haystack);
    eprintln!(
        "searched {} lines ({} bytes) for {} secret encodings",
        haystack.lines().count(),
        haystack.len(),
        secrets.0.len()
    );
    assert!(
        leaks.is_empty(),
        "secrets in the logs:\n{}",
        leaks.join("\n")
    );
}
