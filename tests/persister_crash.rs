//! Durability under a crash: the real binary is SIGKILLed while a client streams publishes;
//! after a restart on the same ghidcache, every publish acknowledged before the kill is there
//! and verifies. The store's write-ahead log moves into sled every [`MOVE_MS`], so the kills
//! land during moves too.

mod common;

use std::cell::RefCell;
use std::path::Path;
use std::process::Child;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hypergolix::golix::{Ghid, Object, Policy, Secret};
use hypergolix::persist::client::PersisterClient;

/// Static objects (binding + container pairs) pre-signed for the stream.
const PAIRS: usize = 150;
/// Publishes acknowledged before the kill, at least.
const KILL_AFTER: usize = 100;
/// Concurrent publishers on the one connection (so acks ride on shared flushes).
const STREAMS: usize = 8;

/// Publishes acknowledged so far: (ghid, bytes), shared by the streams on this thread.
type Acked = Rc<RefCell<Vec<(Ghid, Vec<u8>)>>>;

/// The write-ahead log's move period: short, so that the kills land in every step of a move
/// (rotate, sled transaction, sled flush, removing the moved log files), not only between.
const MOVE_MS: u64 = 20;

fn write_config(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("hypergolix.yml");
    std::fs::write(
        &path,
        format!(
            "server:\n  port: 0\n  ghidcache: ./cache\n  logdir: ./logs\n  pid_file: ./persister.pid\n  wal_move_ms: {MOVE_MS}\n"
        ),
    )
    .unwrap();
    path
}

/// The persister on `config` and its websocket URL.
fn spawn_persister(config: &Path) -> (Child, String) {
    let (child, addr) = common::spawn_persister(config);
    (child, format!("ws://{addr}/ws"))
}

#[actix_rt::test]
async fn every_acknowledged_publish_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let a = common::fixture(1);
    let secret = Secret::random();
    let objects: Vec<(Ghid, Vec<u8>)> = (0..PAIRS)
        .flat_map(|i| {
            let c = a
                .make_container(format!("object {i}").as_bytes(), &secret)
                .unwrap();
            let b = a.make_bind_static(c.ghid).unwrap();
            [(b.ghid, b.encode()), (c.ghid, c.encode())]
        })
        .collect();

    let (mut child, url) = spawn_persister(&config);
    let (client, _rx) = PersisterClient::connect(&url).await.unwrap();
    client.publish(&a.gidc().encode()).await.unwrap();

    // STREAMS concurrent streams, each publishing its share of pairs in order (binding first:
    // a container is only accepted once bound).
    let acked: Acked = Rc::default();
    let pairs: Vec<&[(Ghid, Vec<u8>)]> = objects.chunks(2).collect();
    let streams = (0..STREAMS).map(|s| {
        let (client, acked) = (client.clone(), acked.clone());
        let mine: Vec<(Ghid, Vec<u8>)> = pairs
            .iter()
            .skip(s)
            .step_by(STREAMS)
            .flat_map(|p| p.iter().cloned())
            .collect();
        publish_in_order(client, mine, move |ghid, bytes| {
            acked.borrow_mut().push((ghid, bytes))
        })
    });
    let pid = child.id() as i32;
    let killer = {
        let acked = acked.clone();
        async move {
            let t = Instant::now();
            while acked.borrow().len() < KILL_AFTER {
                assert!(
                    t.elapsed() < Duration::from_secs(30),
                    "publishes are acknowledged"
                );
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            // SAFETY: killing our own child.
            assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
            acked.borrow().len()
        }
    };
    let (_, at_kill) =
        futures_util::future::join(futures_util::future::join_all(streams), killer).await;
    let st = common::wait_exit(&mut child, Duration::from_secs(10));
    assert!(!st.success(), "killed, not exited: {st:?}");
    let acked = acked.borrow().clone();
    println!(
        "{} publishes acknowledged ({at_kill} when the kill was sent) of {}",
        acked.len(),
        objects.len()
    );
    assert!(acked.len() >= KILL_AFTER);
    assert!(acked.len() < objects.len(), "the kill landed mid-stream");

    // Restart on the same ghidcache (the stale pid file of the killed process is replaced).
    let (mut child, url) = spawn_persister(&config);
    let (client, _rx) = PersisterClient::connect(&url).await.unwrap();
    for (ghid, bytes) in &acked {
        let got = client
            .get(ghid)
            .await
            .unwrap_or_else(|e| panic!("{ghid:?} lost after the crash: {e}"));
        assert_eq!(got, Bytes::from(bytes.clone()));
        let obj = Object::decode(&got, Policy::STRICT).unwrap();
        assert_eq!(obj.ghid(), *ghid);
        obj.verify(Some(a.second_party())).expect("verifies");
    }
    // The store still takes writes: finish the stream.
    for (_, bytes) in &objects {
        client.publish(bytes).await.unwrap();
    }
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    assert!(common::wait_exit(&mut child, Duration::from_secs(20)).success());
}

/// One container, its static binding, and (every other one) a debinding of that binding.
struct Item {
    container: (Ghid, Vec<u8>),
    binding: (Ghid, Vec<u8>),
    debinding: Option<(Ghid, Vec<u8>)>,
}

/// What a restarted persister must serve, given the acknowledged publishes.
async fn check_rule_states(client: &PersisterClient, items: &[Item], acked: &[Ghid]) {
    let acked = |g: &Ghid| acked.contains(g);
    for it in items {
        let (c, b) = (it.container.0, it.binding.0);
        // A debinding in flight at the kill may be stored, unacknowledged: then all of it.
        let stored = match &it.debinding {
            Some((d, _)) if !acked(d) => client.query_debinding(&b).await.unwrap() == Some(*d),
            _ => false,
        };
        let debound = it.debinding.as_ref().filter(|d| acked(&d.0) || stored);
        if let Some((d, _)) = debound {
            // Debound: the binding and the container it alone held are gone; the GDXX stays.
            assert_eq!(client.query_debinding(&b).await.unwrap(), Some(*d));
            assert!(!client.exists(&b).await.unwrap(), "{b:?} debound");
            assert!(!client.exists(&c).await.unwrap(), "{c:?} collected");
            assert!(client.exists(d).await.unwrap());
            continue;
        }
        if acked(&b) {
            assert!(client.exists(&b).await.unwrap(), "{b:?} lost");
            assert_eq!(
                client.get(&b).await.unwrap(),
                Bytes::from(it.binding.1.clone())
            );
            assert_eq!(client.query_debinding(&b).await.unwrap(), None);
        }
        if acked(&c) {
            assert_eq!(
                client.get(&c).await.unwrap(),
                Bytes::from(it.container.1.clone())
            );
            assert_eq!(client.list_bindings(&c).await.unwrap(), vec![b]);
        }
    }
}

/// Publishes `items` (binding, container, debinding; but none in `skip`) on STREAMS
/// concurrent streams, noting each acknowledged ghid in `acked`, until every stream ended
/// (done, or the server gone).
async fn stream_items(
    client: &PersisterClient,
    items: &[Item],
    skip: &[Ghid],
    acked: &Rc<RefCell<Vec<Ghid>>>,
) {
    let streams = (0..STREAMS).map(|s| {
        let (client, acked) = (client.clone(), acked.clone());
        let mine: Vec<(Ghid, Vec<u8>)> = items
            .iter()
            .skip(s)
            .step_by(STREAMS)
            .flat_map(|it| {
                [
                    Some(it.binding.clone()),
                    Some(it.container.clone()),
                    it.debinding.clone(),
                ]
            })
            .flatten()
            .filter(|(g, _)| !skip.contains(g))
            .collect();
        publish_in_order(client, mine, move |ghid, _| acked.borrow_mut().push(ghid))
    });
    futures_util::future::join_all(streams).await;
}

/// One stream: publishes `mine` in order, telling `acked` of each acknowledgement, until
/// done or the server is gone.
async fn publish_in_order(
    client: PersisterClient,
    mine: Vec<(Ghid, Vec<u8>)>,
    mut acked: impl FnMut(Ghid, Vec<u8>),
) {
    for (ghid, bytes) in mine {
        match client.publish(&bytes).await {
            Ok(ack) => {
                assert_eq!(ack.ghid, ghid);
                acked(ghid, bytes);
            }
            Err(_) => return, // the server is gone
        }
    }
}

fn kill9(child: &mut Child) {
    // SAFETY: killing our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGKILL) }, 0);
    let st = common::wait_exit(child, Duration::from_secs(10));
    assert!(!st.success(), "killed, not exited: {st:?}");
}

/// The persister's write-ahead log under kill -9: bindings, containers and debindings are
/// acknowledged under load, the process is killed mid-stream, restarted (the log replayed),
/// the rest published and the process killed again at once (acknowledged in the log, not yet
/// in sled); after each restart every acknowledged object is served and every binding,
/// debinding and collection is as acknowledged.
#[actix_rt::test]
async fn acknowledged_bindings_and_debindings_survive_two_sigkills() {
    const ITEMS: usize = 60;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let a = common::fixture(1);
    let secret = Secret::random();
    let items: Vec<Item> = (0..ITEMS)
        .map(|i| {
            let c = a
                .make_container(format!("item {i}").as_bytes(), &secret)
                .unwrap();
            let b = a.make_bind_static(c.ghid).unwrap();
            let d = (i % 2 == 0).then(|| a.make_debind(b.ghid).unwrap());
            Item {
                container: (c.ghid, c.encode()),
                binding: (b.ghid, b.encode()),
                debinding: d.map(|d| (d.ghid, d.encode())),
            }
        })
        .collect();
    let total: usize = items
        .iter()
        .map(|i| 2 + usize::from(i.debinding.is_some()))
        .sum();

    // Round 1: killed mid-stream.
    let (mut child, url) = spawn_persister(&config);
    let (client, _rx) = PersisterClient::connect(&url).await.unwrap();
    client.publish(&a.gidc().encode()).await.unwrap();
    let acked: Rc<RefCell<Vec<Ghid>>> = Rc::default();
    let killer = {
        let acked = acked.clone();
        let pid = child.id() as i32;
        async move {
            let t = Instant::now();
            while acked.borrow().len() < total / 2 {
                assert!(
                    t.elapsed() < Duration::from_secs(60),
                    "publishes are acknowledged"
                );
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            // SAFETY: killing our own child.
            assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
        }
    };
    futures_util::future::join(stream_items(&client, &items, &[], &acked), killer).await;
    let st = common::wait_exit(&mut child, Duration::from_secs(10));
    assert!(!st.success(), "killed, not exited: {st:?}");
    let first = acked.borrow().clone();
    assert!(
        first.len() >= total / 2 && first.len() < total,
        "killed mid-stream: {}",
        first.len()
    );

    // Round 2: replayed; everything acknowledged is there; the rest is published, then the
    // process is killed before the log is moved into sled (a move waits 5 s after the first write).
    let (mut child, url) = spawn_persister(&config);
    let (client, _rx) = PersisterClient::connect(&url).await.unwrap();
    check_rule_states(&client, &items, &first).await;
    let acked: Rc<RefCell<Vec<Ghid>>> = Rc::default();
    stream_items(&client, &items, &first, &acked).await;
    kill9(&mut child);
    let mut all = first;
    all.extend(acked.borrow().iter().copied());
    for it in &items {
        for g in [
            Some(it.binding.0),
            Some(it.container.0),
            it.debinding.as_ref().map(|d| d.0),
        ]
        .into_iter()
        .flatten()
        {
            assert!(all.contains(&g), "{g:?} acknowledged in one of the rounds");
        }
    }

    // Round 3: the final state, from the log.
    let (mut child, url) = spawn_persister(&config);
    let (client, _rx) = PersisterClient::connect(&url).await.unwrap();
    check_rule_states(&client, &items, &all).await;
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    assert!(common::wait_exit(&mut child, Duration::from_secs(20)).success());
}
