//! The app registry: which app sessions are connected, which objects each one tracks, the
//! app token each one registered, the api ids it handles shares for, and one event mailbox
//! per app. Tokens and share handlers live as long as the session (as in the Python
//! reference); what persists (known tokens, startup and private objects) is in the account.
//!
//! Owns: the `AppId` counter, per-app tracked-object sets, tokens and share handlers, and
//! each app's `Recipient<AppEvent>`: its session's [`AppInbox`](super::inbox::AppInbox),
//! which coalesces an object's updates while the app is slow and is bounded. Sending never
//! waits (`do_send`). Calls: each app's inbox. Used by `ObjectActor`s, the share actor,
//! `dispatch`, the remote drains and `DaemonHandle`. A read-mostly registry behind a std
//! `Mutex` (held only for map operations, never across an await).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use actix::Recipient;

use super::api::{AppEvent, AppId, AppToken};
use super::error::DaemonError;
use crate::golix::Ghid;

/// Connected apps and what they track.
#[derive(Default)]
pub struct AppRegistry {
    next_id: AtomicU64,
    apps: Mutex<HashMap<AppId, AppEntry>>,
}

struct AppEntry {
    inbox: Recipient<AppEvent>,
    tracked: HashSet<Ghid>,
    /// Set once per session by `register_token`.
    token: Option<AppToken>,
    /// Api ids this session handles incoming shares for.
    handlers: HashSet<Ghid>,
}

impl AppRegistry {
    /// Registers an app whose events go to `inbox`.
    pub fn connect(&self, inbox: Recipient<AppEvent>) -> AppId {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let entry = AppEntry {
            inbox,
            tracked: HashSet::new(),
            token: None,
            handlers: HashSet::new(),
        };
        self.lock().insert(id, entry);
        id
    }

    /// Forgets an app; returns the ghids it tracked (the caller untracks them).
    pub fn disconnect(&self, app: AppId) -> Vec<Ghid> {
        self.lock()
            .remove(&app)
            .map(|e| e.tracked.into_iter().collect())
            .unwrap_or_default()
    }

    /// Whether `app` is connected.
    pub fn is_connected(&self, app: AppId) -> bool {
        self.lock().contains_key(&app)
    }

    /// Records that `app` tracks `ghid`. False if the app is not connected.
    pub fn track(&self, app: AppId, ghid: Ghid) -> bool {
        match self.lock().get_mut(&app) {
            Some(e) => {
                e.tracked.insert(ghid);
                true
            }
            None => false,
        }
    }

    /// Whether `app` tracks `ghid`.
    pub fn tracks(&self, app: AppId, ghid: &Ghid) -> bool {
        self.lock()
            .get(&app)
            .is_some_and(|e| e.tracked.contains(ghid))
    }

    /// Every app tracking `ghid`.
    pub fn trackers(&self, ghid: &Ghid) -> Vec<AppId> {
        self.lock()
            .iter()
            .filter(|(_, e)| e.tracked.contains(ghid))
            .map(|(id, _)| *id)
            .collect()
    }

    /// Records that `app` no longer tracks `ghid`.
    pub fn untrack(&self, app: AppId, ghid: &Ghid) {
        if let Some(e) = self.lock().get_mut(&app) {
            e.tracked.remove(ghid);
        }
    }

    /// Queues `event` for `app` without waiting (dropped if the app is gone).
    pub fn send(&self, app: AppId, event: AppEvent) {
        if let Some(e) = self.lock().get(&app) {
            e.inbox.do_send(event);
        }
    }

    /// Every connected app id.
    pub fn all(&self) -> Vec<AppId> {
        self.lock().keys().copied().collect()
    }

    /// Binds `token` to `app`: refused if the app has a token already (`already_set`) or
    /// another live session holds this one (`token_in_use`).
    pub fn set_token(&self, app: AppId, token: AppToken) -> Result<(), DaemonError> {
        let mut apps = self.lock();
        if apps
            .iter()
            .any(|(id, e)| *id != app && e.token == Some(token))
        {
            return Err(DaemonError::TokenInUse);
        }
        let e = apps
            .get_mut(&app)
            .ok_or_else(|| DaemonError::BadArgs(format!("app {app} is not connected")))?;
        if e.token.is_some() {
            return Err(DaemonError::AlreadySet(
                "this session has registered a token already".into(),
            ));
        }
        e.token = Some(token);
        Ok(())
    }

    /// The token `app` registered, if any.
    pub fn token(&self, app: AppId) -> Option<AppToken> {
        self.lock().get(&app).and_then(|e| e.token)
    }

    /// The live sessions of `token` (at most one).
    pub fn with_token(&self, token: &AppToken) -> Vec<AppId> {
        self.lock()
            .iter()
            .filter(|(_, e)| e.token.as_ref() == Some(token))
            .map(|(id, _)| *id)
            .collect()
    }

    /// `app` handles shares of `api_id` from now on. False if the app is not connected.
    pub fn add_handler(&self, app: AppId, api_id: Ghid) -> bool {
        match self.lock().get_mut(&app) {
            Some(e) => {
                e.handlers.insert(api_id);
                true
            }
            None => false,
        }
    }

    /// `app` no longer handles shares of `api_id`; false if it did not.
    pub fn remove_handler(&self, app: AppId, api_id: &Ghid) -> bool {
        self.lock()
            .get_mut(&app)
            .is_some_and(|e| e.handlers.remove(api_id))
    }

    /// The sessions that handle shares of `api_id`, in id order.
    pub fn handlers(&self, api_id: &Ghid) -> Vec<AppId> {
        let mut ids: Vec<AppId> = self
            .lock()
            .iter()
            .filter(|(_, e)| e.handlers.contains(api_id))
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        ids
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<AppId, AppEntry>> {
        // A poisoned map is still a consistent map: every critical section is a single
        // insert/remove/lookup.
        self.apps.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actors::inbox::Inbox;
    use crate::golix::Algo;

    fn inbox() -> Recipient<AppEvent> {
        Inbox::start(crate::logging::discard()).recipient()
    }

    #[actix_rt::test]
    async fn tokens_bind_once_per_session_and_per_live_session() {
        let reg = AppRegistry::default();
        let (a, b) = (reg.connect(inbox()), reg.connect(inbox()));
        reg.set_token(a, [1; 16]).unwrap();
        assert!(matches!(
            reg.set_token(a, [2; 16]),
            Err(DaemonError::AlreadySet(_))
        ));
        assert!(matches!(
            reg.set_token(b, [1; 16]),
            Err(DaemonError::TokenInUse)
        ));
        assert_eq!(reg.with_token(&[1; 16]), vec![a]);
        reg.disconnect(a);
        reg.set_token(b, [1; 16]).unwrap();
        assert_eq!(reg.token(b), Some([1; 16]));
    }

    #[actix_rt::test]
    async fn share_handlers_are_per_session() {
        let reg = AppRegistry::default();
        let (a, b) = (reg.connect(inbox()), reg.connect(inbox()));
        let api = Ghid::new(Algo::DUMMY, [3; 64]);
        assert!(reg.add_handler(b, api) && reg.add_handler(a, api));
        assert_eq!(reg.handlers(&api), vec![a, b]);
        assert!(reg.remove_handler(a, &api));
        assert!(!reg.remove_handler(a, &api));
        reg.disconnect(b);
        assert!(reg.handlers(&api).is_empty());
        assert!(!reg.add_handler(b, api));
    }
}
