//! Disk use for live data, on the real binaries: one object overwritten many times with large
//! states through `hgxd` and a persister. Afterwards both stores hold one live state (plus the
//! account and a few frames), and the disk they take must stay within a small multiple of it;
//! in both, the live state's container is a file of its own (large objects are kept out of
//! sled) and the superseded ones' files are gone.
//!
//! Default size: 12 pushes of 1 MiB (a few seconds). The recorded run (RELIABILITY.md):
//! `HGX_DISK_PUSHES=120 HGX_DISK_STATE_MIB=8 cargo test --release --features test-suite0
//! --test disk_usage -- --nocapture`.

mod proc_support;

use std::path::Path;
use std::time::{Duration, Instant};

use hypergolix::golix::{Object, Policy};
use hypergolix::ipc::HgxLink;
use hypergolix::persist::client::PersisterClient;
use proc_support::{Home, Persister, WAIT};

const PASSWORD: &str = "correct horse battery staple";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Bytes allocated on disk under `dir`.
fn disk_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => disk_bytes(&e.path()),
            Ok(m) => m.blocks() * 512,
            Err(_) => 0,
        })
        .sum()
}

/// Files under `dir` (at any depth) in a directory named `large` (the stores' large
/// objects) of more than `min` bytes.
fn large_files(dir: &Path, min: u64) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => large_files(&e.path(), min),
            Ok(m) => usize::from(dir.ends_with("large") && m.len() > min),
            Err(_) => 0,
        })
        .sum()
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

#[actix_rt::test]
async fn overwriting_one_object_keeps_disk_use_near_the_live_data() {
    let pushes = env_usize("HGX_DISK_PUSHES", 12);
    let state_len = env_usize("HGX_DISK_STATE_MIB", 1) << 20;
    let dir = tempfile::tempdir().unwrap();
    let persister = Persister::with_server_lines("").await;
    let home = Home::new(dir.path().join("a"), "info", Some(persister.port));
    let (mut daemon, port) = home.start(PASSWORD, Some(1)).await;
    let link = HgxLink::connect_home(&home.path, port).await.unwrap();

    let obj = link
        .new_object(vec![0; state_len], None, true, false)
        .await
        .unwrap();
    let started = Instant::now();
    let mut last = Vec::new();
    for i in 1..=pushes {
        last = (0..state_len).map(|j| (i * 31 + j) as u8).collect();
        link.push(obj.ghid, last.clone(), None).await.unwrap();
    }
    let pushed = started.elapsed();
    // Everything reached the persister: the last frame and its container.
    let deadline = Instant::now() + WAIT * 4;
    loop {
        let (client, _notes) = PersisterClient::connect(&persister.ws_url()).await.unwrap();
        let frame = client
            .get(&obj.ghid)
            .await
            .map(|b| Object::decode(&b, Policy::STRICT));
        let (counter, container) = match frame {
            Ok(Ok(Object::Gobd(f))) => (f.counter, client.get(&f.target()).await.ok()),
            _ => (0, None),
        };
        client.close();
        // (The container follows its frame: wait for both.)
        if counter == pushes as u64 && container.is_some_and(|c| c.len() > state_len) {
            break;
        }
        assert!(Instant::now() < deadline, "persister at frame {counter}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The live state reads back.
    assert!(link.get(obj.ghid).await.unwrap().state == last);
    link.close();
    daemon.stop_clean().await;
    let mut persister = persister;
    persister.proc.stop_clean().await;

    let live = state_len as u64;
    // Large objects are files of their own in both stores, and only the live state's
    // container is left of them.
    for (name, store) in [
        ("hgxd", home.path.join("ghidcache")),
        ("persister", persister.dir.path().join("cache")),
    ] {
        assert_eq!(
            large_files(&store, live),
            1,
            "{name}: large files of more than the state under {}",
            store.display()
        );
    }
    let daemon_disk = disk_bytes(&home.path.join("ghidcache"));
    let persister_disk = disk_bytes(&persister.dir.path().join("cache"));
    let (dr, pr) = (
        daemon_disk as f64 / live as f64,
        persister_disk as f64 / live as f64,
    );
    println!(
        "{pushes} pushes of {:.0} MiB in {pushed:.1?}: hgxd store {:.1} MiB ({dr:.1}x live), \
         persister store {:.1} MiB ({pr:.1}x live)",
        mib(live),
        mib(daemon_disk),
        mib(persister_disk),
    );
    // One live state, plus sled's own files (a few MiB whatever the data).
    let bound = 3 * live + (24 << 20);
    assert!(
        daemon_disk <= bound && persister_disk <= bound,
        "disk use {:.1} / {:.1} MiB for {:.1} MiB live",
        mib(daemon_disk),
        mib(persister_disk),
        mib(live)
    );
}
