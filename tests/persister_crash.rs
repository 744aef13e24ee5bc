//! Durability under a crash: the real binary is SIGKILLed while a client streams publishes;
//! after a restart on the same ghidcache, every publish acknowledged before the kill is there
//! and verifies.

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

fn write_config(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("hypergolix.yml");
    std::fs::write(
        &path,
        "server:\n  port: 0\n  ghidcache: ./cache\n  logdir: ./logs\n  pid_file: ./persister.pid\n",
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
        async move {
            for (ghid, bytes) in mine {
                match client.publish(&bytes).await {
                    Ok(ack) => {
                        assert_eq!(ack.ghid, ghid);
                        acked.borrow_mut().push((ghid, bytes));
                    }
                    Err(_) => return, // the server is gone
                }
            }
        }
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
