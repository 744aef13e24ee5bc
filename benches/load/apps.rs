//! `--apps N`: N app connections ([`HgxLink`]: websocket + `hello` with the capability
//! token) on one real `hgxd`, each holding (`get`) one dynamic object that one writer app on
//! the same daemon `push`es to at a steady rate; every `update` event is a delivery
//! (latency = push call to event). The daemon syncs through a real `hgx-persister`.

use std::sync::Arc;
use std::time::Duration;

use hypergolix::actors::api::AppEvent;
use hypergolix::golix::Ghid;
use hypergolix::ipc::{CapabilityToken, HgxLink};

use super::pool::{Conn, Connector, Got};
use super::track::Track;
use super::writer::{self, Writer};
use crate::bench_common::spawn_driver;

/// Update payload: seq as 8 big-endian bytes, then filler up to `size`.
pub use crate::bench_common::{payload, seq_of};

/// The writer app: connects, creates the object with update 0, then after `go` pushes
/// updates 1..=final at `rate`. Returns once the object exists.
pub fn writer(
    url: String,
    token: CapabilityToken,
    size: usize,
    rate: f64,
    track: Arc<Track>,
) -> Result<(Writer, Ghid), String> {
    let setup = move || async move {
        let link = HgxLink::connect(&url, &token)
            .await
            .map_err(|e| format!("writer app: {e}"))?;
        let v = link
            .new_object(payload(0, size), None, true, false)
            .await
            .map_err(|e| format!("new: {e}"))?;
        Ok(((link, v.ghid), v.ghid))
    };
    let run = move |(link, ghid): (HgxLink, Ghid)| async move {
        let report = writer::pace(rate, track, |seq| {
            let link = link.clone();
            async move {
                link.push(ghid, payload(seq, size), None)
                    .await
                    .map_err(|e| e.to_string())
            }
        })
        .await;
        link.close();
        report
    };
    spawn_driver(
        "load-writer",
        Duration::from_secs(120),
        setup,
        run,
        writer::setup_failed,
    )
}

/// Opens an app that holds `ghid` and turns its `update` events into deliveries.
pub fn connector(url: String, token: CapabilityToken, ghid: Ghid, size: usize) -> Connector {
    Arc::new(move |_i| {
        let (url, token) = (url.clone(), token.clone());
        Box::pin(async move {
            let link = HgxLink::connect(&url, &token)
                .await
                .map_err(|e| format!("connect: {e}"))?;
            let rx = link.events();
            link.get(ghid).await.map_err(|e| format!("get: {e}"))?;
            let events = futures_util::stream::unfold(rx, move |mut rx| async move {
                let got = match rx.recv().await? {
                    AppEvent::Update(v) if v.ghid == ghid => match seq_of(&v.state) {
                        Some(seq) if v.state == payload(seq, size) => Got::Seq(seq),
                        _ => Got::Bad(format!(
                            "update state of {} B does not match",
                            v.state.len()
                        )),
                    },
                    AppEvent::Update(v) => Got::Bad(format!("update of another object {}", v.ghid)),
                    _ => Got::Other,
                };
                Some((got, rx))
            });
            let closer = link.clone();
            Ok(Conn {
                keep: Box::new(link),
                close: Box::new(move || closer.close()),
                events: Box::pin(events),
            })
        })
    })
}
