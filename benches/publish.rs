//! Verified, durable publishes per second on one `hgx-persister` (issue 3's figure).
//!
//! Each unit is what an app's `new` costs the server: a static binding (GOBS) then its
//! 1 KiB container (GEOC), both RSA-verified, rule-checked, stored in sled and flushed
//! (group commit) before the ack. Objects are signed before the clock starts, so only the
//! server is measured. `C` client connections each keep up to `W` units in flight.
//!
//! Run: `cargo bench --bench publish` (env `UNITS`, `CONNS`, `WINDOW` override the defaults).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

use futures_util::stream::{self, StreamExt};
use hypergolix::golix::{Object, Secret};
use hypergolix::persist::client::PersisterClient;
use hypergolix::persist::server::{self, Settings};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let units = env("UNITS", 600);
    let conns = env("CONNS", 4).max(1);
    let window = env("WINDOW", 16).max(1);

    let author = common::fixture(1);
    let gidc = Object::Gidc(author.gidc().clone()).encode();
    eprintln!("signing {units} bindings + containers...");
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = (0..units)
        .map(|i| {
            let mut plain = vec![0u8; 1024];
            plain[..8].copy_from_slice(&(i as u64).to_be_bytes());
            let c = author
                .make_container(&plain, &Secret::random())
                .expect("sign");
            let b = author.make_bind_static(c.ghid).expect("sign");
            (b.encode(), c.encode())
        })
        .collect();

    let dir = tempfile::tempdir().expect("tempdir");
    actix_rt::System::new().block_on(async move {
        let running = server::start(Settings::local(Some(dir.path().join("ghidcache"))))
            .await
            .expect("persister starts");
        let url = running.ws_url();
        let mut clients = Vec::with_capacity(conns);
        for _ in 0..conns {
            clients.push(PersisterClient::connect(&url).await.expect("connect").0);
        }
        clients[0].publish(&gidc).await.expect("identity");

        let started = Instant::now();
        let done = stream::iter(pairs.iter().enumerate())
            .map(|(i, (binding, container))| {
                let client = clients[i % conns].clone();
                async move {
                    client.publish(binding).await.expect("binding accepted");
                    client.publish(container).await.expect("container accepted");
                }
            })
            .buffer_unordered(conns * window)
            .count()
            .await;
        let secs = started.elapsed().as_secs_f64();
        running.stop().await.expect("clean stop");

        let objects = 2 * done;
        println!("connections {conns}, in flight per connection {window}, units {done}");
        println!(
            "verified durable publishes: {:.0} objects/s ({:.0} binding+container units/s), {:.2} s",
            objects as f64 / secs,
            done as f64 / secs,
            secs
        );
    });
}
