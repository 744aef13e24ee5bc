//! The account actor's forgetting of received shares, run whole (real vault and archive on
//! disk, the actor on its own arbiter): the vault records go before the next message is
//! handled, an object with a live actor is never forgotten, a share recorded while it loads
//! is not counted, a load racing a forget keeps the secret in the account, and an eviction
//! whose victim is live (adopted instead) keeps the count within the bound.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use actix::Addr;

use super::{
    AccountActor, AccountHandle, Admission, AdmitShare, AdoptLoaded, KeepOrphan, RecordSecret,
    ShareLimits, MAX_ORPHAN_SHARES,
};
use crate::actors::account::{Account, OrphanShare, StoredSecret};
use crate::actors::arbiters::ActorThreads;
use crate::actors::gc::Liveness;
use crate::actors::local::{Gate, Local, SecretRecord};
use crate::actors::publish_queue::PublishQueue;
use crate::actors::upstream::Upstream;
use crate::actors::vault::{test_tree, Vault};
use crate::golix::{Algo, Ghid, Secret};
use crate::persist::Archive;

/// The object registry's answer, as the test sets it.
#[derive(Default)]
struct Live(Mutex<HashSet<Ghid>>);

impl Liveness for Live {
    fn is_live(&self, ghid: &Ghid) -> bool {
        self.0.lock().unwrap().contains(ghid)
    }
}

fn stored() -> StoredSecret {
    StoredSecret {
        secret: Secret::random(),
        container: Ghid::pseudorandom(Algo::SHA512),
    }
}

/// A new account of fixture 2 over a real vault and archive in a temporary directory, and
/// the actor threads to run it on.
fn setup() -> (tempfile::TempDir, ActorThreads, Arc<Local>, Account, Secret) {
    let dir = tempfile::tempdir().unwrap();
    let log = crate::logging::discard();
    let archive = Archive::open(&dir.path().join("objects")).unwrap();
    let vault = Vault::open(&test_tree(dir.path(), "daemon"), &[7; 32]).unwrap();
    let threads = ActorThreads::start(1).unwrap();
    let root = Secret::random();
    let (account, objects) =
        Account::create(crate::testdata::fixture_first_party(2), root.clone()).unwrap();
    for o in objects {
        archive.publish(&o).unwrap();
    }
    let local = Arc::new(Local {
        runtime: tokio::runtime::Handle::current(),
        arbiters: threads.arbiters(),
        identity: account.identity().clone(),
        user_id: account.user_id(),
        archive,
        publish_queue: PublishQueue::open(vault.clone(), &[]).unwrap(),
        vault,
        gate: Gate::default(),
        log,
    });
    (dir, threads, local, account, root)
}

/// The account actor on `threads`, with no remotes, `live` answering for the object
/// registry.
fn start_actor(
    threads: &ActorThreads,
    account: Account,
    root: Secret,
    local: &Arc<Local>,
    limits: ShareLimits,
    live: &Arc<Live>,
) -> (Addr<AccountActor>, AccountHandle) {
    AccountHandle::start(
        &threads.arbiters(),
        account,
        root,
        local.clone(),
        Upstream::new(Vec::new()),
        limits,
        Arc::downgrade(live) as Weak<dyn Liveness>,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forgetting_is_ordered_before_later_messages_and_spares_live_objects() {
    let (_dir, threads, local, mut account, root) = setup();

    // Two shares received, no longer offered once two more orphans come: one no app has,
    // one live.
    let sharer = Ghid::pseudorandom(Algo::SHA512);
    let orphan = |ghid| OrphanShare {
        ghid,
        origin: sharer,
        api_id: None,
    };
    let (old, live_old) = (
        Ghid::pseudorandom(Algo::SHA512),
        Ghid::pseudorandom(Algo::SHA512),
    );
    // A share received from `sharer`: its secret in the vault and in the account.
    let mut receive = |g: Ghid| {
        let s = stored();
        let record = SecretRecord {
            stored: s.clone(),
            counter: 0,
        };
        local.put_secret(&g, &record).unwrap();
        let st = account.state_mut();
        st.secrets.insert(g, s);
        st.received_shares.insert(g, sharer);
    };
    receive(old);
    receive(live_old);
    // And one received long ago (past the age bound), delivered to an app that did not
    // adopt it.
    let ancient = Ghid::pseudorandom(Algo::SHA512);
    receive(ancient);
    let st = account.state_mut();
    st.orphan_shares.push(orphan(old));
    st.orphan_shares.push(orphan(live_old));
    st.received_at.insert(ancient, 1);
    while st.orphan_shares.len() < MAX_ORPHAN_SHARES {
        st.orphan_shares
            .push(orphan(Ghid::pseudorandom(Algo::SHA512)));
    }
    let live = Arc::new(Live::default());
    live.0.lock().unwrap().insert(live_old);
    let (addr, handle) = start_actor(
        &threads,
        account,
        root,
        &local,
        ShareLimits::default(),
        &live,
    );
    let admit = |ghid| AdmitShare { ghid, sharer };

    // Their orphan entries dropped: `old` is forgotten whole, and its vault records are
    // gone before anything after it is handled.
    for _ in 0..2 {
        handle.tell(KeepOrphan(orphan(Ghid::pseudorandom(Algo::SHA512))));
    }
    let fresh = Ghid::pseudorandom(Algo::SHA512);
    assert_eq!(
        handle.ask(admit(fresh)).await.unwrap().unwrap(),
        Admission::Allowed
    );
    assert!(local.secret(&old).unwrap().is_none(), "vault record left");
    assert!(handle.lookup(old).await.is_empty(), "account secret left");
    // The expiry (at start and at each admission) forgot the ancient one the same way.
    assert!(
        local.secret(&ancient).unwrap().is_none(),
        "vault record left"
    );
    assert!(
        handle.lookup(ancient).await.is_empty(),
        "account secret left"
    );
    // The live one is an app's: adopted, its secret kept here and in the account.
    assert!(local.secret(&live_old).unwrap().is_some());
    assert_eq!(handle.lookup(live_old).await.len(), 1);
    assert_eq!(
        handle.ask(admit(live_old)).await.unwrap().unwrap(),
        Admission::Ours
    );

    // Shared again after the forget: accepted, and what it records stays.
    assert_eq!(
        handle.ask(admit(old)).await.unwrap().unwrap(),
        Admission::Allowed
    );
    let again = stored();
    let record = SecretRecord {
        stored: again.clone(),
        counter: 0,
    };
    local.put_secret(&old, &record).unwrap();
    handle.tell(RecordSecret {
        ghid: old,
        stored: again.clone(),
        counter: 0,
        api_id: None,
        received_from: Some(sharer),
    });
    assert_eq!(
        handle.ask(admit(old)).await.unwrap().unwrap(),
        Admission::Again
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(local.secret(&old).unwrap().map(|r| r.stored), Some(again));

    // A share recorded while an app loads it (the object live already) is not counted.
    let loading = Ghid::pseudorandom(Algo::SHA512);
    live.0.lock().unwrap().insert(loading);
    handle.tell(RecordSecret {
        ghid: loading,
        stored: stored(),
        counter: 0,
        api_id: None,
        received_from: Some(sharer),
    });
    assert_eq!(
        handle.ask(admit(loading)).await.unwrap().unwrap(),
        Admission::Ours
    );

    // A load that read a secret the account then forgot: recorded again, as the app's,
    // in the account and here (the forget removed the vault record and the following).
    let raced = Ghid::pseudorandom(Algo::SHA512);
    let s = stored();
    handle.tell(AdoptLoaded {
        ghid: raced,
        stored: s.clone(),
        counter: 3,
        api_id: None,
    });
    assert_eq!(handle.lookup(raced).await, vec![s.clone()]);
    let here = local
        .secret(&raced)
        .unwrap()
        .expect("the vault record again");
    assert_eq!((here.stored, here.counter), (s, 3));
    assert!(local.followed().unwrap().contains(&raced), "followed again");
    assert_eq!(
        handle.ask(admit(raced)).await.unwrap().unwrap(),
        Admission::Ours
    );

    drop(addr);
    threads.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_eviction_whose_victim_is_live_stays_within_the_bound() {
    let (_dir, threads, local, mut account, root) = setup();
    // Full at 3 in all: x's two (its newest live: an app loaded it meanwhile) and y's one.
    let (x, y, z) = (
        Ghid::pseudorandom(Algo::SHA512),
        Ghid::pseudorandom(Algo::SHA512),
        Ghid::pseudorandom(Algo::SHA512),
    );
    let entries: Vec<(Ghid, Ghid)> = [x, x, y]
        .iter()
        .map(|s| (Ghid::pseudorandom(Algo::SHA512), *s))
        .collect();
    let st = account.state_mut();
    for (i, (g, sharer)) in entries.iter().enumerate() {
        st.secrets.insert(*g, stored());
        st.received_shares.insert(*g, *sharer);
        // Dated in the past: a date past now would count as now.
        st.received_at
            .insert(*g, super::received::now_millis() - 10 + i as u64);
    }
    let live_newest = entries[1].0;
    let live = Arc::new(Live::default());
    live.0.lock().unwrap().insert(live_newest);
    let limits = ShareLimits {
        per_sharer: 4,
        total: 3,
    };
    let (addr, handle) = start_actor(&threads, account, root, &local, limits, &live);

    // z (none yet) gets in: x's newest, the victim, is an app's, adopted rather than
    // forgotten, and out of the count all the same.
    let fresh = Ghid::pseudorandom(Algo::SHA512);
    let admit = |ghid, sharer| AdmitShare { ghid, sharer };
    assert_eq!(
        handle.ask(admit(fresh, z)).await.unwrap().unwrap(),
        Admission::Allowed
    );
    handle.tell(RecordSecret {
        ghid: fresh,
        stored: stored(),
        counter: 0,
        api_id: None,
        received_from: Some(z),
    });
    assert_eq!(
        handle.lookup(live_newest).await.len(),
        1,
        "the app's secret kept"
    );
    assert_eq!(
        handle.ask(admit(live_newest, y)).await.unwrap().unwrap(),
        Admission::Ours
    );
    // Three entries, one each: full, and no sharer holds fewer than the heaviest. Had the
    // adopted one still counted, y (1 < x's 2) would evict it and get in.
    assert_eq!(
        handle
            .ask(admit(Ghid::pseudorandom(Algo::SHA512), y))
            .await
            .unwrap()
            .unwrap(),
        Admission::PastTotal
    );

    drop(addr);
    threads.stop().await;
}
