//! `--subscribers N`: N websocket subscribers ([`PersisterClient`]) on one real
//! `hgx-persister`, all subscribed to one dynamic ghid that a publisher updates at a steady
//! rate with frames (and their containers) pre-signed from a fixture identity. A
//! notification counts when its bytes are exactly a pre-signed frame (no RSA verify per
//! notification at this scale); its counter is the update's seq.

use std::collections::HashMap;
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hypergolix::golix::{FirstParty, Ghid};
use hypergolix::persist::client::PersisterClient;
use tokio::sync::oneshot;

use super::pool::{Conn, Connector, Got};
use super::track::Track;
use super::writer::{self, Writer, WriterReport};
use crate::bench_common;

/// The signed objects of a run; index = seq (0 = the state before the run).
pub struct Presigned {
    pub gidc: Bytes,
    pub dynamic: Ghid,
    pub frames: Vec<Bytes>,
    pub containers: Vec<Bytes>,
    /// Frame bytes -> seq, to check notifications.
    pub seq_of: HashMap<Bytes, u64>,
}

/// Signs the frames and containers of the run ([`bench_common::presign`]) and indexes the
/// frames by their bytes.
pub fn presign(a: &FirstParty, size: usize, count: usize) -> Result<Presigned, String> {
    let signed = bench_common::presign(a, size, count);
    Ok(Presigned {
        seq_of: signed
            .frames
            .iter()
            .enumerate()
            .map(|(i, f)| (f.clone(), i as u64))
            .collect(),
        gidc: signed.gidc,
        dynamic: signed.dynamic,
        frames: signed.frames,
        containers: signed.containers,
    })
}

/// The publisher: connects, publishes the identity and update 0, then after `go` publishes
/// each update's frame and container at `rate`.
pub fn publisher(
    url: String,
    pre: Arc<Presigned>,
    rate: f64,
    track: Arc<Track>,
) -> Result<Writer, String> {
    let (ready_tx, ready_rx) = std_mpsc::channel::<Result<(), String>>();
    let (go_tx, go_rx) = oneshot::channel::<()>();
    let join = std::thread::Builder::new()
        .name("load-publisher".into())
        .spawn(move || {
            actix_rt::System::new().block_on(async move {
                let setup = async {
                    let (c, rx) = PersisterClient::connect(&url)
                        .await
                        .map_err(|e| format!("publisher: {e}"))?;
                    for b in [&pre.gidc, &pre.frames[0], &pre.containers[0]] {
                        c.publish(b)
                            .await
                            .map_err(|e| format!("set-up publish: {e}"))?;
                    }
                    Ok::<_, String>((c, rx))
                };
                let (c, _rx) = match setup.await {
                    Ok(x) => x,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.clone()));
                        return WriterReport {
                            first_error: Some(e),
                            ..WriterReport::default()
                        };
                    }
                };
                let _ = ready_tx.send(Ok(()));
                if go_rx.await.is_err() {
                    return WriterReport::default();
                }
                let report = writer::pace(rate, track, |seq| {
                    let c = c.clone();
                    let (f, k) = (
                        pre.frames[seq as usize].clone(),
                        pre.containers[seq as usize].clone(),
                    );
                    async move {
                        // Both at once, the frame's request first (the persister refuses a
                        // container nothing binds): the latency is not the sum of two
                        // acknowledgements.
                        let (a, b) = futures_util::future::join(c.publish(&f), c.publish(&k)).await;
                        a.map_err(|e| format!("frame: {e}"))?;
                        b.map_err(|e| format!("container: {e}"))?;
                        Ok(())
                    }
                })
                .await;
                c.close();
                report
            })
        })
        .map_err(|e| e.to_string())?;
    ready_rx
        .recv_timeout(Duration::from_secs(120))
        .map_err(|_| "publisher set-up timed out".to_owned())??;
    Ok(Writer { go: go_tx, join })
}

/// Opens a subscriber of the dynamic ghid and turns its notifications into deliveries.
pub fn connector(url: String, pre: Arc<Presigned>) -> Connector {
    Arc::new(move |_i| {
        let (url, pre) = (url.clone(), pre.clone());
        Box::pin(async move {
            let (c, rx) = PersisterClient::connect(&url)
                .await
                .map_err(|e| format!("connect: {e}"))?;
            c.subscribe(&pre.dynamic)
                .await
                .map_err(|e| format!("subscribe: {e}"))?;
            let dynamic = pre.dynamic;
            let events = futures_util::stream::unfold(rx, move |mut rx| {
                let pre = pre.clone();
                async move {
                    let n = rx.recv().await?;
                    let got = match pre.seq_of.get(&n.object) {
                        Some(&seq) if n.subscription == dynamic => Got::Seq(seq),
                        Some(_) => Got::Bad(format!("notification for {}", n.subscription)),
                        None => Got::Bad(format!(
                            "notification of {} B is no frame that was sent",
                            n.object.len()
                        )),
                    };
                    Some((got, rx))
                }
            });
            let closer = c.clone();
            Ok(Conn {
                keep: Box::new(c),
                close: Box::new(move || closer.close()),
                events: Box::pin(events),
            })
        })
    })
}
