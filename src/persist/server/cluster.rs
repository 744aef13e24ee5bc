//! # Notifications between front-ends
//!
//! With the cluster store, subscribers of one ghid may sit on any front-end. Each front-end
//! delivers a publish's notifications to its own subscribers (the hub, as always) and
//! announces them on core NATS, subject `<namespace>.n.<ghid>`, payload the raw object. It
//! subscribes to that subject only for the ghids its own clients watch (the hub reports when a
//! ghid gains its first subscriber here and loses its last), and fans what arrives out to them.
//! Its notification connection is opened without echo, so its own announcements never come
//! back to it.
//!
//! Delivery is at most once, like the websocket itself: a front-end cut off from NATS misses
//! what was announced meanwhile (its clients catch up with `get` when they reconnect, as after
//! any disconnect). Order is kept per announcing front-end (one task publishes, in order).
//!
//! Owns: the per-ghid NATS subscriptions and their forwarding tasks, the announce queue.
//! Calls: async-nats, [`Hub`]. Used by the server (publish, subscribe).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use slog::{warn, Logger};
use tokio::sync::{mpsc, oneshot};

use crate::golix::Ghid;
use crate::persist::hub::Hub;
use crate::persist::Notification;

/// Announcements waiting to be handed to the NATS client, at most (then they are dropped,
/// with a warning: remote subscribers catch up by `get`).
const ANNOUNCE_QUEUE: usize = 65_536;
/// Longest a `subscribe` waits for its NATS subscription to be in place.
const READY_TIMEOUT: Duration = Duration::from_secs(5);

enum Control {
    Watch(Ghid),
    Unwatch(Ghid),
    /// Answered once every earlier watch has reached the server.
    Sync(oneshot::Sender<()>),
}

/// The link of one front-end to the others.
pub struct Cluster {
    control: mpsc::UnboundedSender<Control>,
    announce: mpsc::Sender<Notification>,
    log: Logger,
}

fn subject(namespace: &str, g: &Ghid) -> String {
    format!("{namespace}.n.{}", g.as_str())
}

impl Cluster {
    /// Starts the link's task on `rt` (the NATS runtime) and hooks it to the hub's interest.
    pub fn start(
        client: async_nats::Client,
        namespace: String,
        hub: Arc<Hub>,
        rt: &tokio::runtime::Handle,
        log: Logger,
    ) -> Arc<Cluster> {
        let (control, control_rx) = mpsc::unbounded_channel();
        let (announce, announce_rx) = mpsc::channel(ANNOUNCE_QUEUE);
        let hook = control.clone();
        hub.on_interest(Box::new(move |g, watched| {
            let _ = hook.send(if watched {
                Control::Watch(g)
            } else {
                Control::Unwatch(g)
            });
        }));
        rt.spawn(run(
            client,
            namespace,
            hub,
            control_rx,
            announce_rx,
            log.clone(),
        ));
        Arc::new(Cluster {
            control,
            announce,
            log,
        })
    }

    /// Queues `notes` for the other front-ends (never blocks).
    pub fn announce(&self, notes: &[Notification]) {
        for n in notes {
            if self.announce.try_send(n.clone()).is_err() {
                warn!(self.log, "dropping a notification for other front-ends (queue full)";
                    "subscription" => %n.subscription);
            }
        }
    }

    /// Resolves once every ghid watched so far is subscribed at the NATS server, so that a
    /// notification announced after a `subscribe` was answered reaches this front-end.
    pub async fn ready(&self) {
        let (tx, rx) = oneshot::channel();
        if self.control.send(Control::Sync(tx)).is_err() {
            return;
        }
        if tokio::time::timeout(READY_TIMEOUT, rx).await.is_err() {
            warn!(self.log, "nats subscription not confirmed in time");
        }
    }
}

async fn run(
    client: async_nats::Client,
    namespace: String,
    hub: Arc<Hub>,
    mut control: mpsc::UnboundedReceiver<Control>,
    mut announce: mpsc::Receiver<Notification>,
    log: Logger,
) {
    let mut forwarders: HashMap<Ghid, tokio::task::JoinHandle<()>> = HashMap::new();
    loop {
        tokio::select! {
            biased;
            c = control.recv() => match c {
                None => return,
                Some(Control::Watch(g)) => {
                    match client.subscribe(subject(&namespace, &g)).await {
                        Ok(mut sub) => {
                            let hub = hub.clone();
                            let task = tokio::spawn(async move {
                                while let Some(msg) = sub.next().await {
                                    let n = Notification { subscription: g, object: msg.payload };
                                    hub.fanout(std::slice::from_ref(&n), None);
                                }
                            });
                            if let Some(old) = forwarders.insert(g, task) {
                                old.abort();
                            }
                        }
                        Err(e) => warn!(log, "cannot subscribe to other front-ends' notifications";
                            "ghid" => %g, "error" => %e),
                    }
                }
                Some(Control::Unwatch(g)) => {
                    // Dropping the subscriber (inside the aborted task) unsubscribes.
                    if let Some(t) = forwarders.remove(&g) {
                        t.abort();
                    }
                }
                Some(Control::Sync(done)) => {
                    if let Err(e) = client.flush().await {
                        warn!(log, "nats flush failed"; "error" => %e);
                    }
                    let _ = done.send(());
                }
            },
            n = announce.recv() => {
                let Some(n) = n else { return };
                if let Err(e) = client.publish(subject(&namespace, &n.subscription), n.object).await {
                    warn!(log, "cannot announce a notification to other front-ends"; "error" => %e);
                }
            }
        }
    }
}
