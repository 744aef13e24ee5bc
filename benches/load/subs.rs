//! `--subscribers N`: N websocket subscribers ([`PersisterClient`]) on one real
//! `hgx-persister`, all subscribed to one dynamic ghid that a publisher updates at a steady
//! rate with frames (and their containers) pre-signed from a fixture identity. A
//! notification counts when its bytes are exactly a pre-signed frame (no RSA verify per
//! notification at this scale); its counter is the update's seq.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hypergolix::golix::{FirstParty, Ghid};
use hypergolix::persist::client::PersisterClient;

use super::pool::{Conn, Connector, Got};
use super::track::Track;
use super::writer::{self, Writer};
use crate::bench_common::{self, publish_update, publisher_connection, spawn_driver};

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
    let setup_pre = pre.clone();
    let setup = move || async move {
        let p = &setup_pre;
        let conn = publisher_connection(&url, &p.gidc, &p.frames, &p.containers).await?;
        Ok((conn, ()))
    };
    let run = move |(c, _rx): (PersisterClient, _)| async move {
        let report = writer::pace(rate, track, |seq| {
            let (c, pre) = (c.clone(), pre.clone());
            async move { publish_update(&c, &pre.frames, &pre.containers, seq).await }
        })
        .await;
        c.close();
        report
    };
    let (publisher, ()) = spawn_driver(
        "load-publisher",
        Duration::from_secs(120),
        setup,
        run,
        writer::setup_failed,
    )?;
    Ok(publisher)
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
