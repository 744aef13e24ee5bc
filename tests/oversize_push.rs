//! States larger than a remote can store, on the real binaries: `hgxd` learns each remote's
//! `max_frame` from its `hello` and refuses such a push with `too_large` before committing
//! anything (also while the remote is away), and a remote whose limit shrank while the daemon
//! was offline never gets a frame without its container: the whole push is kept from it,
//! the app hears `remote_refused`, and other machines keep reading the object.
//!
//! Every process listens on 127.0.0.1 only, identities come from the fixtures, and every
//! wait is bounded.

mod proc_support;

use std::time::{Duration, Instant};

use hypergolix::actors::api::AppEvent;
use hypergolix::golix::{Ghid, Object, Policy};
use hypergolix::ipc::HgxLink;
use hypergolix::persist::client::PersisterClient;
use proc_support::{Home, Persister, WAIT};
use tokio::sync::mpsc::UnboundedReceiver;

const PASSWORD: &str = "correct horse battery staple";
/// The persister's message limit in these tests.
const SMALL: &str = "  max_frame: 65536\n";
/// A state whose container cannot fit in 64 KiB.
const BIG: usize = 70_000;

/// The persister's current frame of `dynamic`: (counter, whether its container is stored).
async fn upstream(persister: &Persister, dynamic: &Ghid) -> Option<(u64, bool)> {
    let (client, _notes) = PersisterClient::connect(&persister.ws_url()).await.ok()?;
    let frame = client.get(dynamic).await.ok()?;
    let Ok(Object::Gobd(f)) = Object::decode(&frame, Policy::STRICT) else {
        return None;
    };
    let container = client.get(&f.target()).await.is_ok();
    client.close();
    Some((f.counter, container))
}

/// Waits until the persister's frame of `dynamic` has `counter` and its container (which
/// follows the frame).
async fn wait_upstream(persister: &Persister, dynamic: &Ghid, counter: u64) {
    let deadline = Instant::now() + WAIT;
    loop {
        let now = upstream(persister, dynamic).await;
        if now == Some((counter, true)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the persister never had frame {counter} and its container (has {now:?})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A machine of the account: its home, its `hgxd` and an app connected to it.
struct Machine {
    home: Home,
    daemon: proc_support::Proc,
    link: HgxLink,
}

impl Machine {
    async fn first(dir: &tempfile::TempDir, name: &str, persister: &Persister) -> Machine {
        let home = Home::new(dir.path().join(name), "info", Some(persister.port));
        Machine::start(home, Some(1)).await
    }

    async fn second(dir: &tempfile::TempDir, persister: &Persister, first: &Machine) -> Machine {
        let home = Home::second_machine(dir.path().join("b"), "info", persister.port, &first.home);
        Machine::start(home, None).await
    }

    async fn start(home: Home, identity: Option<usize>) -> Machine {
        let (daemon, port) = home.start(PASSWORD, identity).await;
        let link = HgxLink::connect_home(&home.path, port).await.unwrap();
        Machine { home, daemon, link }
    }

    /// SIGTERM, then the same home again.
    async fn restart(self) -> Machine {
        let Machine {
            home,
            mut daemon,
            link,
        } = self;
        link.close();
        daemon.stop_clean().await;
        Machine::start(home, None).await
    }
}

/// The state of `ghid` as `link` reads it, once it is `want` (another machine catches up).
async fn read_until(link: &HgxLink, ghid: Ghid, want: &[u8]) {
    let deadline = Instant::now() + WAIT;
    loop {
        let got = link.get(ghid).await.map(|v| v.state);
        if got.as_deref().ok() == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "never read {:?}: {got:?}",
            String::from_utf8_lossy(want)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn refused_event(events: &mut UnboundedReceiver<AppEvent>, ghid: Ghid) -> (String, String) {
    tokio::time::timeout(WAIT, async {
        loop {
            match events.recv().await.expect("events") {
                AppEvent::RemoteRefused {
                    ghid: g,
                    code,
                    message,
                    ..
                } if g == ghid => return (code, message),
                _ => {}
            }
        }
    })
    .await
    .expect("a remote_refused event")
}

#[actix_rt::test]
async fn an_oversize_push_is_refused_before_anything_is_committed() {
    let dir = tempfile::tempdir().unwrap();
    let persister = Persister::with_server_lines(SMALL).await;
    let a = Machine::first(&dir, "a", &persister).await;
    let obj = a
        .link
        .new_object(b"v1".to_vec(), None, true, false)
        .await
        .unwrap();
    wait_upstream(&persister, &obj.ghid, 0).await;

    let e = a.link.push(obj.ghid, vec![7; BIG], None).await.unwrap_err();
    assert_eq!(e.code(), Some("too_large"), "{e}");
    let e = a
        .link
        .new_object(vec![7; BIG], None, true, false)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("too_large"), "{e}");
    // Nothing of it anywhere: locally the object keeps its state, upstream its frame 0.
    assert_eq!(a.link.get(obj.ghid).await.unwrap().state, b"v1");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(upstream(&persister, &obj.ghid).await, Some((0, true)));
    let b = Machine::second(&dir, &persister, &a).await;
    read_until(&b.link, obj.ghid, b"v1").await;

    // A state that fits still goes through, to both machines.
    let fits = vec![8; 60_000];
    a.link.push(obj.ghid, fits.clone(), None).await.unwrap();
    wait_upstream(&persister, &obj.ghid, 1).await;
    read_until(&b.link, obj.ghid, &fits).await;

    // The limit is remembered: with the persister gone and the daemon restarted, the same
    // push is still refused.
    let mut persister = persister;
    persister.proc.kill9().await;
    let a = a.restart().await;
    let e = a.link.push(obj.ghid, vec![7; BIG], None).await.unwrap_err();
    assert_eq!(e.code(), Some("too_large"), "{e}");
    assert_eq!(a.link.get(obj.ghid).await.unwrap().state, fits);
}

/// The persister's limit shrinks while the daemon, which knew the larger one, has a push of
/// a big state queued for it: the frame and its container are kept from the persister as a
/// unit, the app hears `remote_refused`, the log has a warning, and the other machine keeps
/// the last state the persister has, then gets the next push that fits (whose frame ratchets
/// over the one the persister never got).
#[actix_rt::test]
async fn a_push_a_remote_can_no_longer_store_is_kept_from_it_whole() {
    let dir = tempfile::tempdir().unwrap();
    let mut persister = Persister::with_server_lines("").await;
    let mut a = Machine::first(&dir, "a", &persister).await;
    let mut events = a.link.events();
    let obj = a
        .link
        .new_object(b"v1".to_vec(), None, true, false)
        .await
        .unwrap();
    wait_upstream(&persister, &obj.ghid, 0).await;
    let b = Machine::second(&dir, &persister, &a).await;
    read_until(&b.link, obj.ghid, b"v1").await;

    persister.proc.kill9().await;
    // Known limit 16 MiB: committed locally and queued.
    a.link.push(obj.ghid, vec![7; BIG], None).await.unwrap();
    persister.restart_with(SMALL).await;

    let (code, message) = refused_event(&mut events, obj.ghid).await;
    assert_eq!(code, "too_large", "{message}");
    assert_eq!(upstream(&persister, &obj.ghid).await, Some((0, true)));
    // Logged before the event is sent, but read from the daemon's stderr by another thread.
    a.daemon
        .wait_line("remote refused an object for good", WAIT)
        .await;
    assert_eq!(b.link.get(obj.ghid).await.unwrap().state, b"v1");

    a.link.push(obj.ghid, b"v3".to_vec(), None).await.unwrap();
    wait_upstream(&persister, &obj.ghid, 2).await;
    read_until(&b.link, obj.ghid, b"v3").await;
}
