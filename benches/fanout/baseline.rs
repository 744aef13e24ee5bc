//! The baselines run beside each level with the identical workload (same N, payload bytes,
//! update schedule, window, subscriber threads and checks): Redis pub/sub
//! ([`super::redis`]), core NATS and JetStream ([`super::nats`]). This module starts their
//! servers once per invocation, builds each run's publisher (on the driver thread) and
//! subscribers (on the client threads), and turns the run into a [`RunResult`] like the
//! levels' own.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::drive::{self, Mode};
use super::nats;
use super::nats_server::{self, NatsServer};
use super::persister::{setup_failed, Publisher};
use super::redis::{self, RedisServer};
use super::stats::{RunResult, Shared};
use super::subs::{self, Broker, Content, Target};
use super::{Ctx, Level};
use crate::bench_common::spawn_driver;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Baseline {
    /// Redis pub/sub (`redis-server`, no persistence).
    Redis,
    /// Core NATS pub/sub (`nats-server`).
    Nats,
    /// NATS JetStream: a file-backed stream, each update acknowledged once stored.
    Jetstream,
}

impl Baseline {
    pub fn name(self) -> &'static str {
        match self {
            Baseline::Redis => "redis",
            Baseline::Nats => "nats",
            Baseline::Jetstream => "jetstream",
        }
    }
}

/// How JetStream subscribers receive the stream's messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum JetstreamDelivery {
    /// Each subscriber its own ephemeral ordered push consumer: delivery out of the stream,
    /// after the store (as the persister announces a frame once stored).
    Consumer,
    /// Core subscriptions on the stream's subject: routed at publish time, before the store.
    Core,
}

/// The baseline servers of this invocation and their versions.
#[derive(Default)]
pub struct Servers {
    pub redis: Option<RedisServer>,
    pub nats: Option<NatsServer>,
    pub jetstream: Option<NatsServer>,
    pub redis_version: Option<String>,
    pub nats_version: Option<String>,
    /// Said once in the report (e.g. how durable a JetStream acknowledgement is).
    pub notes: Vec<String>,
}

/// True for nats-server ≥ 2.10, which has `jetstream { sync_interval: always }`.
fn has_sync_always(version: &str) -> bool {
    let v = version.rsplit('v').next().unwrap_or_default();
    let mut parts = v.split('.').map(|p| p.trim().parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (2, 10)
}

/// Checks that each baseline's server can run (a clear message if not), then starts them;
/// JetStream's store goes under `store_parent` ($TMPDIR on disk, or /dev/shm).
pub fn start(wanted: &[Baseline], store_parent: &std::path::Path) -> Result<Servers, String> {
    let mut s = Servers::default();
    if wanted.contains(&Baseline::Redis) {
        s.redis_version = Some(redis::version()?);
    }
    if wanted.contains(&Baseline::Nats) || wanted.contains(&Baseline::Jetstream) {
        s.nats_version = Some(nats_server::version()?);
    }
    if wanted.contains(&Baseline::Redis) {
        let r = RedisServer::start()?;
        eprintln!("redis-server pid {} on {}", r.pid(), r.addr);
        s.redis = Some(r);
    }
    if wanted.contains(&Baseline::Nats) {
        let n = NatsServer::start(None, false)?;
        eprintln!("nats-server pid {} on {}", n.pid(), n.addr);
        s.nats = Some(n);
    }
    if wanted.contains(&Baseline::Jetstream) {
        let version = s.nats_version.clone().unwrap_or_default();
        let sync_always = has_sync_always(&version);
        let j = NatsServer::start(Some(store_parent), sync_always)?;
        eprintln!(
            "nats-server (JetStream, store {}) pid {} on {}",
            j.store_dir.as_deref().unwrap_or(store_parent).display(),
            j.pid(),
            j.addr
        );
        s.notes.push(if sync_always {
            format!("jetstream: {version} with `sync_interval: always`: a PubAck follows an fsync of the stream's file, as a persister ack follows sled's flush")
        } else {
            format!("jetstream: {version} has no `sync_interval` setting (added in 2.10): it acknowledges once the message is written to the stream's file, and syncs the file every 2 minutes; durable against a server crash, not against power loss — compare it with the persister on `--ghidcache tmpfs`, where a flush costs no disk")
        });
        s.jetstream = Some(j);
    }
    Ok(s)
}

/// One run of `baseline` carrying `level`'s messages to `n` subscribers.
pub fn run(
    ctx: &mut Ctx,
    baseline: Baseline,
    level: Level,
    n: usize,
    mode: Mode,
) -> Result<RunResult, String> {
    let channel = super::channel(ctx);
    let subject = String::from_utf8(channel.clone()).expect("ascii channel name");
    let shared = Arc::new(Shared::new(mode.updates()));
    let (content, messages): (Content, Messages) = match level {
        Level::Persister => {
            let pre = ctx.presigned.clone().expect("presigned");
            (
                Content::Frames {
                    binder_gidc: pre.gidc.to_vec(),
                    verify: ctx.args.verify,
                },
                Arc::new(move |seq| pre.frames[seq as usize].clone()),
            )
        }
        Level::Daemon => {
            let size = ctx.args.payload;
            (
                Content::Payload,
                Arc::new(move |seq| Bytes::from(subs::payload(seq, size))),
            )
        }
    };
    let (window, servers) = (ctx.args.window, &ctx.servers);
    let missing = |what: &str| format!("the {what} server is not running");
    let (broker, publisher, pid, process) = match baseline {
        Baseline::Redis => {
            let addr = servers.redis.as_ref().ok_or_else(|| missing("redis"))?.addr;
            let p = redis_publisher(
                addr,
                channel.clone(),
                messages,
                mode,
                window,
                shared.clone(),
                n as i64,
            )?;
            let pid = servers.redis.as_ref().map_or(0, |r| r.pid());
            (Broker::Redis { addr, channel }, p, pid, "redis-server")
        }
        Baseline::Nats => {
            let s = servers.nats.as_ref().ok_or_else(|| missing("nats"))?;
            let p = nats_publisher(
                s.addr,
                subject.clone(),
                None,
                messages,
                mode,
                window,
                &shared,
            )?;
            let broker = Broker::Nats {
                addr: s.addr,
                subject,
                delivery: nats::Delivery::Core,
            };
            (broker, p, s.pid(), "nats-server")
        }
        Baseline::Jetstream => {
            let s = servers
                .jetstream
                .as_ref()
                .ok_or_else(|| missing("jetstream"))?;
            // One stream per run, named like its subject.
            let stream = subject.clone();
            let p = nats_publisher(
                s.addr,
                subject.clone(),
                Some(stream.clone()),
                messages,
                mode,
                window,
                &shared,
            )?;
            let delivery = match ctx.args.jetstream_delivery {
                JetstreamDelivery::Consumer => nats::Delivery::Consumer { stream },
                JetstreamDelivery::Core => nats::Delivery::Core,
            };
            let broker = Broker::Nats {
                addr: s.addr,
                subject,
                delivery,
            };
            (broker, p, s.pid(), "nats-server")
        }
    };
    let target = Arc::new(Target::Broker { broker, content });
    let pool = subs::start(target, n, ctx.args.client_threads, shared.clone())?;
    let label = format!(
        "{}({}) N={n} {}",
        baseline.name(),
        level.name(),
        mode.name()
    );
    let followed = super::follow(ctx, &label, n, &shared, publisher, &[(pid, process)]);
    let logs = pool.stop();
    let mut r = super::result(level, baseline.name(), n, mode, &shared, followed, logs);
    if baseline == Baseline::Jetstream {
        r.notes.push(match ctx.args.jetstream_delivery {
            JetstreamDelivery::Consumer => {
                "subscribers: one ephemeral ordered push consumer each (delivered from the stream after the store)".into()
            }
            JetstreamDelivery::Core => {
                "subscribers: core subscriptions on the stream's subject (routed before the store)".into()
            }
        });
    }
    Ok(r)
}

/// Update `seq`'s message bytes.
type Messages = Arc<dyn Fn(u64) -> Bytes + Send + Sync>;

/// The Redis publisher: one PUBLISH per update on one pipelined connection; an update that
/// reached fewer than `expect_receivers` subscribers is an error.
fn redis_publisher(
    addr: SocketAddr,
    channel: Vec<u8>,
    messages: Messages,
    mode: Mode,
    window: usize,
    shared: Arc<Shared>,
    expect_receivers: i64,
) -> Result<Publisher, String> {
    let setup = move || async move { Ok((redis::Publisher::connect(addr).await?, ())) };
    let run = move |p: redis::Publisher| async move {
        let channel = Bytes::from(channel);
        drive::drive(mode, window, shared, |seq| {
            let (p, channel, msg) = (p.clone(), channel.clone(), messages(seq));
            async move {
                let got = p.publish(&channel, &msg).await?;
                if got < expect_receivers {
                    return Err(format!(
                        "update {seq} reached {got} of {expect_receivers} subscribers"
                    ));
                }
                Ok(())
            }
        })
        .await
    };
    let (publisher, ()) = spawn_driver(
        "fanout-publisher",
        Duration::from_secs(60),
        setup,
        run,
        setup_failed,
    )?;
    Ok(publisher)
}

/// The NATS publisher on one pipelined connection: core PUBs acknowledged by the PONG of a
/// PING after each, or (with `stream`, created in the set-up) publishes acknowledged by the
/// stream's PubAck.
fn nats_publisher(
    addr: SocketAddr,
    subject: String,
    stream: Option<String>,
    messages: Messages,
    mode: Mode,
    window: usize,
    shared: &Arc<Shared>,
) -> Result<Publisher, String> {
    let durable = stream.is_some();
    let shared = shared.clone();
    let setup_subject = subject.clone();
    let setup = move || async move {
        let p = nats::Publisher::connect(addr).await?;
        if let Some(name) = &stream {
            p.create_stream(name, &setup_subject).await?;
        }
        Ok((p, ()))
    };
    let run = move |p: nats::Publisher| async move {
        let subject: Arc<str> = subject.into();
        drive::drive(mode, window, shared, |seq| {
            let (p, subject, msg) = (p.clone(), subject.clone(), messages(seq));
            async move {
                if durable {
                    p.publish_acked(&subject, &msg).await
                } else {
                    p.publish(&subject, &msg).await
                }
                .map_err(|e| format!("update {seq}: {e}"))
            }
        })
        .await
    };
    let (publisher, ()) = spawn_driver(
        "fanout-publisher",
        Duration::from_secs(60),
        setup,
        run,
        setup_failed,
    )?;
    Ok(publisher)
}

/// Start-up checks of the hand-written protocol parsers.
pub fn self_check() {
    redis::self_check();
    nats::self_check();
    assert!(has_sync_always("nats-server: v2.10.0"));
    assert!(has_sync_always("nats-server: v2.12.1"));
    assert!(!has_sync_always("nats-server: v2.9.10"));
}
