//! A remote that is connected but answers nothing (its process stopped with SIGSTOP: the
//! kernel keeps the connection) must not hold up what the daemon acknowledges: the account's
//! look at the remotes before a flush is bounded (README, daemon-side limits), so an ack that
//! waits for that flush comes within a few seconds, not after the requests' timeouts.
//!
//! The real binaries (`crash_support`): a persister process and an `hgxd` process on
//! 127.0.0.1, fixture identity 1.

mod common;
mod crash_support;
mod proc_support;

use std::time::{Duration, Instant};

use crash_support::*;

#[actix_rt::test]
async fn a_hung_remote_does_not_hold_up_an_ack_that_waits_for_the_account() {
    let mut p = PersisterProc::start().await;
    let (mut d, app, _) = daemon_with_an_app(&p).await;
    let ghid = new_object(&app, b"start here", None, false).await;

    p.signal(libc::SIGSTOP);
    let t = Instant::now();
    let done = tokio::time::timeout(Duration::from_secs(60), app.register_startup(ghid)).await;
    let took = t.elapsed();
    p.signal(libc::SIGCONT);
    done.expect("no answer within 60 s").unwrap();
    eprintln!("[hung remote] register_startup answered in {took:?}");
    // A refresh gives up after 3 s, and the ack may wait for two flushes (the timed one
    // of the object's records may be running): 6 s measured. Without the bound each
    // refresh waits for a request's 10 s timeout: 20 s measured.
    assert!(took < Duration::from_secs(15), "{took:?}");
    d.terminate().await;
    p.terminate().await;
}
