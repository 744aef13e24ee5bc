//! `--apps N`: N app connections ([`HgxLink`]: websocket + `hello` with the capability
//! token) on one real `hgxd`, each holding (`get`) one dynamic object that one writer app on
//! the same daemon `push`es to at a steady rate; every `update` event is a delivery
//! (latency = push call to event). The daemon syncs through a real `hgx-persister`.

use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::Duration;

use hypergolix::actors::api::AppEvent;
use hypergolix::golix::Ghid;
use hypergolix::ipc::{CapabilityToken, HgxLink};
use tokio::sync::oneshot;

use super::pool::{Conn, Connector, Got};
use super::track::Track;
use super::writer::{self, Writer, WriterReport};

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
    let (ready_tx, ready_rx) = std_mpsc::channel::<Result<Ghid, String>>();
    let (go_tx, go_rx) = oneshot::channel::<()>();
    let join = std::thread::Builder::new()
        .name("load-writer".into())
        .spawn(move || {
            actix_rt::System::new().block_on(async move {
                let setup = async {
                    let link = HgxLink::connect(&url, &token)
                        .await
                        .map_err(|e| format!("writer app: {e}"))?;
                    let v = link
                        .new_object(payload(0, size), None, true, false)
                        .await
                        .map_err(|e| format!("new: {e}"))?;
                    Ok::<_, String>((link, v.ghid))
                };
                let (link, ghid) = match setup.await {
                    Ok(x) => x,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.clone()));
                        return WriterReport {
                            first_error: Some(e),
                            ..WriterReport::default()
                        };
                    }
                };
                let _ = ready_tx.send(Ok(ghid));
                if go_rx.await.is_err() {
                    return WriterReport::default();
                }
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
            })
        })
        .map_err(|e| e.to_string())?;
    let ghid = ready_rx
        .recv_timeout(Duration::from_secs(120))
        .map_err(|_| "writer app set-up timed out".to_owned())??;
    Ok((Writer { go: go_tx, join }, ghid))
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
