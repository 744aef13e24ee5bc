//! A real NATS JetStream cluster for tests: `nats-server` processes (Debian's package, which
//! `.ci/run` installs) on 127.0.0.1 with free ports, each with its own store directory in one
//! temporary directory, routed to each other. Nodes can be SIGKILLed, stopped cleanly and
//! restarted on their own data. Every wait is bounded. Used by `persister_cluster.rs`,
//! `cluster_failover.rs` and `cluster_measure.rs`.
//!
//! [`NatsCluster::start`] returns `None` (and says why) only when `nats-server` is not
//! installed, so that a machine without it skips these tests visibly instead of failing.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use hypergolix::persist::store::NatsOptions;

use crate::proc_support::{free_port, Proc, START};

/// Where Debian puts the server (not always on a user's PATH).
const CANDIDATES: [&str; 2] = ["/usr/sbin/nats-server", "/usr/bin/nats-server"];

/// The `nats-server` binary, if installed.
pub fn server_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("nats-server"))
            .find(|p| p.is_file())
    }) {
        return Some(p);
    }
    CANDIDATES.iter().map(PathBuf::from).find(|p| p.is_file())
}

pub struct Node {
    pub name: String,
    pub client_port: u16,
    /// The HTTP monitoring port (`/connz`).
    pub monitor_port: u16,
    pub route_port: u16,
    pub config: PathBuf,
    pub proc: Option<Proc>,
}

/// A JetStream cluster of N nodes (killed when dropped).
pub struct NatsCluster {
    pub dir: tempfile::TempDir,
    pub nodes: Vec<Node>,
    binary: PathBuf,
}

impl NatsCluster {
    /// Starts `n` nodes and waits until JetStream answers through every one of them.
    pub async fn start(n: usize) -> Option<NatsCluster> {
        let Some(binary) = server_binary() else {
            eprintln!(
                "SKIPPED: nats-server is not installed (apt-get install -y nats-server); \
                 the cluster tests need a real server"
            );
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let monitors: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let mut nodes = Vec::new();
        for (i, (client, route)) in ports.iter().enumerate() {
            let name = format!("n{i}");
            let routes: Vec<String> = ports
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, (_, r))| format!("nats-route://127.0.0.1:{r}"))
                .collect();
            let config = dir.path().join(format!("{name}.conf"));
            let cluster = if n > 1 {
                format!(
                    "cluster {{\n  name: hgx-test\n  listen: 127.0.0.1:{route}\n  routes: [{}]\n}}\n",
                    routes.join(", ")
                )
            } else {
                String::new()
            };
            std::fs::write(
                &config,
                format!(
                    "server_name: {name}\nlisten: 127.0.0.1:{client}\nhttp: 127.0.0.1:{}\n\
                     jetstream {{\n  store_dir: \"{}\"\n  max_memory_store: 64MB\n  max_file_store: 2GB\n}}\n{cluster}",
                    monitors[i],
                    dir.path().join(&name).display()
                ),
            )
            .unwrap();
            nodes.push(Node {
                name,
                client_port: *client,
                monitor_port: monitors[i],
                route_port: *route,
                config,
                proc: None,
            });
        }
        let mut c = NatsCluster { dir, nodes, binary };
        for i in 0..n {
            c.spawn(i);
        }
        for i in 0..n {
            c.wait_node(i).await;
        }
        c.wait_jetstream().await;
        Some(c)
    }

    fn spawn(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let mut cmd = Command::new(&self.binary);
        cmd.arg("-c").arg(&node.config);
        node.proc = Some(Proc::spawn(&format!("nats-server {}", node.name), cmd));
    }

    async fn wait_node(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let p = node.proc.as_mut().expect("started");
        p.wait_line("Server is ready", START).await;
    }

    /// `nats://127.0.0.1:a,127.0.0.1:b,…` (the `--store` value).
    pub fn url(&self) -> String {
        let all: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.client_port))
            .collect();
        format!("nats://{}", all.join(","))
    }

    /// Waits until a JetStream request succeeds through every running node (meta leader
    /// elected, peers known). Bounded generously: the suite starts several clusters at once
    /// on two cores, and a meta leader election once took longer than 60 s there.
    pub async fn wait_jetstream(&self) {
        let deadline = Instant::now() + Duration::from_secs(120);
        for n in self.nodes.iter().filter(|n| n.proc.is_some()) {
            let url = format!("nats://127.0.0.1:{}", n.client_port);
            loop {
                assert!(
                    Instant::now() < deadline,
                    "JetStream not ready through {url}:\n{}",
                    self.logs()
                );
                if let Ok(Ok(c)) =
                    tokio::time::timeout(Duration::from_secs(2), async_nats::connect(&url)).await
                {
                    // The account info answer is an error until a metadata leader is elected.
                    let info = c.request("$JS.API.INFO", "".into());
                    if let Ok(Ok(reply)) = tokio::time::timeout(Duration::from_secs(2), info).await
                    {
                        let v: serde_json::Value =
                            serde_json::from_slice(&reply.payload).unwrap_or_default();
                        if v.get("type").is_some() && v.get("error").is_none() {
                            break;
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }

    /// SIGKILL of node `i`.
    pub async fn kill9(&mut self, i: usize) {
        if let Some(mut p) = self.nodes[i].proc.take() {
            p.kill9().await;
        }
    }

    /// SIGTERM of node `i`, waiting for its exit (a clean stop syncs its store; the server
    /// exits with status 1 on SIGTERM, so only the exit is checked).
    pub async fn stop(&mut self, i: usize) {
        if let Some(mut p) = self.nodes[i].proc.take() {
            p.terminate();
            p.wait_exit(crate::proc_support::WAIT).await;
            assert!(
                p.output().contains("Server Exiting"),
                "{}: no clean shutdown:\n{}",
                self.nodes[i].name,
                tail(&p.output(), 20)
            );
        }
    }

    /// Starts node `i` again on its own data and waits for it.
    pub async fn restart(&mut self, i: usize) {
        assert!(self.nodes[i].proc.is_none(), "node {i} is running");
        self.spawn(i);
        self.wait_node(i).await;
    }

    /// Cluster store options for this cluster in namespace `ns` (3 partitions; a small
    /// `inline_max`, so that ordinary test containers exercise the object store too).
    pub fn store_options(&self, ns: &str) -> NatsOptions {
        let mut o = NatsOptions::from_url(&self.url()).unwrap();
        o.namespace = ns.into();
        o.partitions = 3;
        o.inline_max = 4096;
        o
    }

    /// A monitoring page (`/connz?…`, `/jsz`) of every running node, as JSON.
    fn monitor(&self, path: &str) -> Vec<serde_json::Value> {
        use std::io::{Read, Write};
        let mut out = Vec::new();
        for n in self.nodes.iter().filter(|n| n.proc.is_some()) {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", n.monitor_port)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
                .unwrap();
            let mut text = String::new();
            s.read_to_string(&mut text).unwrap();
            let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
            out.push(serde_json::from_str(body).unwrap_or_default());
        }
        out
    }

    /// Subjects starting with `prefix` that connections named `conn_name` are subscribed to,
    /// over every running node (the servers' `/connz?subs=1` monitoring page).
    pub fn subscriptions(&self, conn_name: &str, prefix: &str) -> Vec<String> {
        let mut out = Vec::new();
        for v in self.monitor("/connz?subs=1&limit=4096") {
            for c in v["connections"].as_array().into_iter().flatten() {
                if c["name"] != conn_name {
                    continue;
                }
                for sub in c["subscriptions_list"].as_array().into_iter().flatten() {
                    if let Some(sub) = sub.as_str().filter(|x| x.starts_with(prefix)) {
                        out.push(sub.to_owned());
                    }
                }
            }
        }
        out.sort();
        out
    }

    /// Traffic so far, over every running node: messages sent by connections named
    /// `conn_name` (JetStream writes and API requests), and JetStream API requests served
    /// (reads, stream info, deletes; from every client).
    pub fn traffic(&self, conn_name: &str) -> (u64, u64) {
        let sent = self
            .monitor("/connz?limit=4096")
            .iter()
            .flat_map(|v| v["connections"].as_array().cloned().unwrap_or_default())
            .filter(|c| c["name"] == conn_name)
            .map(|c| c["in_msgs"].as_u64().unwrap_or(0))
            .sum();
        let api = self
            .monitor("/jsz")
            .iter()
            .map(|v| v["api"]["total"].as_u64().unwrap_or(0))
            .sum();
        (sent, api)
    }

    pub fn store_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(&self.nodes[i].name)
    }

    /// Every node's output (for assertion messages).
    pub fn logs(&self) -> String {
        let mut s = String::new();
        for n in &self.nodes {
            if let Some(p) = &n.proc {
                s.push_str(&format!("--- {} ---\n{}\n", n.name, tail(&p.output(), 40)));
            }
        }
        s
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

fn tail(s: &str, lines: usize) -> String {
    let all: Vec<&str> = s.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
