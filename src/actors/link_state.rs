//! Where each remote's connection stands, and what is worth telling the operator about it.
//!
//! Owns: [`LinkTracker`], the per-remote state machine (connecting -> connected <->
//! retrying) that the `RemoteActor` drives and `hgxd status` reads, and the rule that a
//! failure is logged at `warning` only when the state changes (connected or connecting ->
//! retrying) or the kind of failure changes, never once per retry; a recovery is logged at
//! `info`. Pure: the actor does the logging this module decides on. Calls nothing.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::persist::client::ClientError;

/// Longest failure reason kept (bytes): the text can come from the peer.
pub const MAX_REASON: usize = 512;

/// Where a remote's connection stands. On the wire: its name as a string (msgpack readers
/// such as rmpv's do not take a string for an enum).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "&'static str", try_from = "String")]
pub enum LinkState {
    /// The first attempt has not finished.
    Connecting,
    Connected,
    /// The last attempt failed; another follows after the backoff.
    Retrying,
}

impl LinkState {
    pub fn as_str(self) -> &'static str {
        match self {
            LinkState::Connecting => "connecting",
            LinkState::Connected => "connected",
            LinkState::Retrying => "retrying",
        }
    }
}

impl From<LinkState> for &'static str {
    fn from(s: LinkState) -> &'static str {
        s.as_str()
    }
}

impl TryFrom<String> for LinkState {
    type Error = String;

    fn try_from(s: String) -> Result<LinkState, String> {
        [
            LinkState::Connecting,
            LinkState::Connected,
            LinkState::Retrying,
        ]
        .into_iter()
        .find(|l| l.as_str() == s)
        .ok_or_else(|| format!("unknown link state {s:?}"))
    }
}

/// Why a connection attempt (or a connection) failed: a stable `kind` (`refused`,
/// `resolve`, `timeout`, `tls`, `certificate`, `handshake`, `network`, `version`,
/// `protocol`, `setup`, `lost`, `overloaded`) and a reason for people.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub kind: String,
    pub reason: String,
}

impl Failure {
    pub fn new(kind: &str, reason: impl Into<String>) -> Failure {
        let mut reason = reason.into();
        if reason.len() > MAX_REASON {
            let mut end = MAX_REASON;
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            reason.truncate(end);
            reason.push('…');
        }
        Failure {
            kind: kind.to_owned(),
            reason,
        }
    }

    /// The failure a client error stands for.
    pub fn from_client(e: &ClientError) -> Failure {
        match e {
            ClientError::Connect { kind, reason, .. } => Failure::new(kind.as_str(), reason),
            ClientError::Server { code, message } => Failure::new(
                "setup",
                format!("the persister refused our identity or a subscription: {code}: {message}"),
            ),
            ClientError::Closed => Failure::new("lost", "the connection closed"),
            ClientError::Timeout => Failure::new("timeout", "a request got no answer in time"),
            ClientError::Protocol(m) => Failure::new("protocol", m.clone()),
        }
    }
}

/// What the actor should log after a transition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Report {
    /// First connection (info).
    Connected,
    /// Connected again after failures (info): how long it was down and the last failure.
    Recovered { down_for: Duration, last: Failure },
    /// A new failure state or kind (warning).
    Failing(Failure),
    /// The same failure again (debug only).
    StillFailing(Failure),
}

/// One remote's state, as `hgxd status` shows it.
#[derive(Clone, Debug)]
pub struct LinkTracker {
    pub state: LinkState,
    /// When `state` began.
    pub since: SystemTime,
    /// The latest failure while retrying (`None` once connected).
    pub last_error: Option<Failure>,
    /// Failed attempts since the last connection.
    pub failures: u32,
}

impl LinkTracker {
    pub fn new(now: SystemTime) -> LinkTracker {
        LinkTracker {
            state: LinkState::Connecting,
            since: now,
            last_error: None,
            failures: 0,
        }
    }

    /// A connection was set up (handshake and greeting done).
    pub fn connected(&mut self, now: SystemTime) -> Report {
        let report = match (self.state, self.last_error.take()) {
            (LinkState::Retrying, Some(last)) => Report::Recovered {
                down_for: now.duration_since(self.since).unwrap_or_default(),
                last,
            },
            _ => Report::Connected,
        };
        self.state = LinkState::Connected;
        self.since = now;
        self.failures = 0;
        report
    }

    /// An attempt failed, or an established connection was lost.
    pub fn failed(&mut self, failure: Failure, now: SystemTime) -> Report {
        self.failures = self.failures.saturating_add(1);
        let same = self.state == LinkState::Retrying
            && self
                .last_error
                .as_ref()
                .is_some_and(|l| l.kind == failure.kind);
        if self.state != LinkState::Retrying {
            self.state = LinkState::Retrying;
            self.since = now;
        }
        self.last_error = Some(failure.clone());
        if same {
            Report::StillFailing(failure)
        } else {
            Report::Failing(failure)
        }
    }
}

/// A remote's status as `hgxd status` (the IPC op `status`) reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteStatus {
    /// The remote's websocket URL.
    pub url: String,
    pub state: LinkState,
    /// Unix seconds at which `state` began.
    pub since: u64,
    pub last_error: Option<Failure>,
    /// Failed attempts since the last connection.
    pub failures: u32,
    /// Objects queued for this remote and not yet acknowledged by it.
    pub outbox: u64,
    /// Every front-end of the remote, the primary first, when it names more than one (a
    /// persister cluster); `url` is the one in use.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub front_ends: Vec<String>,
    /// Moves from one front-end to the next since the daemon started.
    #[serde(default)]
    pub failovers: u32,
    /// The last object this remote refused for good since the daemon started (kind
    /// `refused`, the remote's code and message): it left this remote's outbox unsent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_refusal: Option<Failure>,
}

impl RemoteStatus {
    pub fn new(url: &str, t: &LinkTracker, outbox: usize) -> RemoteStatus {
        let since = t
            .since
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        RemoteStatus {
            url: url.to_owned(),
            state: t.state,
            since,
            last_error: t.last_error.clone(),
            failures: t.failures,
            outbox: outbox as u64,
            front_ends: Vec::new(),
            failovers: 0,
            last_refusal: None,
        }
    }

    /// With the remote's front-ends (listed only when there is more than one) and how often
    /// it moved between them.
    pub fn with_front_ends(mut self, front_ends: Vec<String>, failovers: u32) -> RemoteStatus {
        if front_ends.len() > 1 {
            self.front_ends = front_ends;
        }
        self.failovers = failovers;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(s)
    }

    #[test]
    fn warns_once_per_state_or_kind_change_and_reports_recovery() {
        let mut t = LinkTracker::new(at(0));
        let refused = Failure::new("refused", "connection refused");
        assert_eq!(
            t.failed(refused.clone(), at(1)),
            Report::Failing(refused.clone())
        );
        for s in 2..20 {
            assert_eq!(
                t.failed(refused.clone(), at(s)),
                Report::StillFailing(refused.clone())
            );
        }
        assert_eq!(
            (t.state, t.since, t.failures),
            (LinkState::Retrying, at(1), 19)
        );
        let tls = Failure::new("tls", "handshake failed");
        assert_eq!(t.failed(tls.clone(), at(21)), Report::Failing(tls.clone()));
        assert_eq!(t.since, at(1), "still retrying since the first failure");
        assert_eq!(
            t.connected(at(31)),
            Report::Recovered {
                down_for: Duration::from_secs(30),
                last: tls
            }
        );
        assert_eq!(
            (t.state, t.failures, t.last_error.clone()),
            (LinkState::Connected, 0, None)
        );
        // Losing the connection is a state change: warned again, even with an old kind.
        let lost = Failure::new("lost", "closed");
        assert_eq!(t.failed(lost.clone(), at(40)), Report::Failing(lost));
        assert_eq!(t.failed(refused.clone(), at(41)), Report::Failing(refused));
    }

    #[test]
    fn first_connection_and_status() {
        let mut t = LinkTracker::new(at(5));
        assert_eq!(t.connected(at(7)), Report::Connected);
        let s = RemoteStatus::new("wss://h:1/ws", &t, 3);
        assert_eq!((s.state, s.since, s.outbox), (LinkState::Connected, 7, 3));
    }

    #[test]
    fn status_reads_back_from_msgpack() {
        let mut t = LinkTracker::new(at(5));
        t.failed(Failure::new("refused", "nobody"), at(6));
        let s = RemoteStatus::new("ws://h:1/ws", &t, 0)
            .with_front_ends(vec!["ws://g:1/ws".into(), "ws://h:1/ws".into()], 1);
        let bytes = rmp_serde::to_vec_named(&s).unwrap();
        let v = rmpv::decode::read_value(&mut &bytes[..]).unwrap();
        assert_eq!(rmpv::ext::from_value::<RemoteStatus>(v).unwrap(), s);
        assert!(LinkState::try_from("sleeping".to_owned()).is_err());
    }

    #[test]
    fn reasons_are_bounded() {
        let f = Failure::new("setup", "é".repeat(MAX_REASON));
        assert!(f.reason.len() <= MAX_REASON + '…'.len_utf8());
        assert!(f.reason.ends_with('…'));
    }
}
