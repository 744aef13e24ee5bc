//! Daemon failover between front-ends of one persister cluster: a real `hgxd` whose remote
//! names two `hgx-persister` front-ends of a real 3-node NATS JetStream cluster uses one,
//! loses it (SIGKILL), fails over to the other, and its writes reach the cluster through it.
//! Skipped, with a message, only when `nats-server` is not installed.

#[allow(unused_imports)]
mod common;
mod nats_support;
mod proc_support;

use std::time::{Duration, Instant};

use hypergolix::golix::{Ghid, Object, Policy};
use hypergolix::ipc::client::HgxLink;
use hypergolix::persist::client::PersisterClient;
use nats_support::NatsCluster;
use proc_support::{Home, Persister};

const PASSWORD: &str = "failover password";

/// Polls `ghid` through `c` until its bytes satisfy `ok` (bounded).
async fn wait_for(c: &PersisterClient, ghid: &Ghid, ok: impl Fn(&[u8]) -> bool) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(b) = c.get(ghid).await {
            if ok(&b) {
                return b.to_vec();
            }
        }
        assert!(
            Instant::now() < deadline,
            "{ghid:?} never reached the cluster"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn counter(frame: &[u8]) -> u64 {
    match Object::decode(frame, Policy::STRICT).unwrap() {
        Object::Gobd(g) => g.counter,
        other => panic!("a frame, not {other:?}"),
    }
}

#[actix_rt::test]
async fn a_daemon_fails_over_to_another_front_end() {
    let Some(cluster) = NatsCluster::start(3).await else {
        return;
    };
    let lines = format!(
        "  store: {}\n  nats:\n    namespace: fo\n    partitions: 2\n",
        cluster.url()
    );
    let mut p1 = Persister::with_server_lines(&lines).await;
    let p2 = Persister::with_server_lines(&lines).await;
    let dir = tempfile::tempdir().unwrap();
    let home = Home::new(dir.path().join("home"), "info", Some(p1.port));
    let config = home.file("hypergolix.yml");
    let mut yml = std::fs::read_to_string(&config).unwrap();
    yml.push_str(&format!("    failover: [\"127.0.0.1:{}\"]\n", p2.port));
    std::fs::write(&config, yml).unwrap();
    let (mut daemon, port) = home.start(PASSWORD, Some(1)).await;
    let link = HgxLink::connect_home(&home.path, port).await.unwrap();
    let (watch, _rx) = PersisterClient::connect(&p2.ws_url()).await.unwrap();

    let obj = link
        .new_object(b"v0".to_vec(), None, true, false)
        .await
        .unwrap();
    let first = wait_for(&watch, &obj.ghid, |_| true).await;
    assert_eq!(counter(&first), 0);

    // The front-end in use dies; the next write goes through the other one.
    p1.proc.kill9().await;
    link.push(obj.ghid, b"v1".to_vec(), None).await.unwrap();
    let next = wait_for(&watch, &obj.ghid, |b| counter(b) >= 1).await;
    assert_eq!(counter(&next), 1, "one new frame, published once");
    let fail_over = Instant::now() + Duration::from_secs(30);
    while !home.log_files().contains("failing over") {
        assert!(
            Instant::now() < fail_over,
            "no failover logged:\n{}",
            home.log_files()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // `hgxd status` shows the front-end in use, the others, and the failover.
    let status = link.status().await.unwrap();
    let r = &status.remotes[0];
    assert_eq!(r.url, p2.ws_url(), "the front-end in use");
    assert_eq!(r.front_ends, [p1.ws_url(), p2.ws_url()]);
    assert!(r.failovers >= 1, "{r:?}");
    daemon.stop_clean().await;
}
