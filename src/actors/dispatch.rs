//! App identity and share routing (what the reference kept in `dispatch.py`): app tokens,
//! startup objects, private objects, share handlers, and offering objects to the apps that
//! handle their api id.
//!
//! - **Tokens** identify an app across restarts (docs/architecture.md). `register_token` with no
//!   token issues a new random 16-byte one; with a token, re-binds it to this session and
//!   returns its startup object. Known tokens live in the account (`AccountState::tokens`); a
//!   token is bound to at most one live session, and a session binds at most one token.
//! - **Startup objects**: one ghid per token (`AccountState::startup`): an object that
//!   exists and that the token may load (a received share made one is adopted).
//! - **Private objects** belong to the token that created them (`AccountState::private`):
//!   creating one needs a token, only that token's sessions may load it (`access_denied`
//!   otherwise, which the reference forgot), and it is never shared.
//! - **Share handlers** are per session (memory only): a session handles incoming shares of
//!   the api ids it registered. Shares that arrive while nobody handles their api id are kept
//!   in the account (`AccountState::orphan_shares`) and offered when a handler registers
//!   (at most `MAX_ORPHAN_SHARES`; one dropped past it whose object no app adopted is
//!   forgotten whole, see `account_actor::KeepOrphan`).
//!
//! Owns: nothing; the state is in the [`AppRegistry`] (sessions) and the account (through
//! the `AccountActor`). Every function takes what it reaches: the app registry and/or the
//! [`Store`] (the account, `commit::owner`). Used by `DaemonHandle` and the share actor.

use super::account::{AppTokenBytes, OrphanShare};
use super::account_actor as account;
use super::api::{AppEvent, AppId, AppToken, NO_TOKEN};
use super::apps::AppRegistry;
use super::commit::{self, Store};
use super::error::DaemonError;
use crate::golix::Ghid;

/// Binds a token to `app`: a new one when `token` is `None` (or all zeros), else a known
/// one. Returns the token and its startup object.
pub async fn register_token(
    store: &Store,
    apps: &AppRegistry,
    app: AppId,
    token: Option<AppToken>,
) -> Result<(AppToken, Option<Ghid>), DaemonError> {
    if apps.token(app).is_some() {
        return Err(DaemonError::AlreadySet(
            "this session has registered a token already".into(),
        ));
    }
    match token.filter(|t| *t != NO_TOKEN) {
        None => {
            let token = store.account.ask(account::NewToken).await??;
            // The app keeps this token across restarts: make it durable before handing it out.
            // Bound to the session only then: after a failed flush the app's retry gets a new
            // token, and this one, known to nobody, leaves the account.
            if let Err(e) = store.account.flush().await {
                store.account.tell(account::DropToken(AppTokenBytes(token)));
                return Err(e);
            }
            apps.set_token(app, token)?;
            Ok((token, None))
        }
        Some(token) => {
            let key = AppTokenBytes(token);
            let startup = store
                .account
                .ask(account::TokenStartup(key))
                .await?
                .ok_or(DaemonError::UnknownToken)?;
            apps.set_token(app, token)?;
            Ok((token, startup))
        }
    }
}

/// The token of `app`, or `unknown_token` if it registered none.
fn token_of(apps: &AppRegistry, app: AppId) -> Result<AppTokenBytes, DaemonError> {
    apps.token(app)
        .map(AppTokenBytes)
        .ok_or(DaemonError::UnknownToken)
}

/// Sets the startup object of `app`'s token (refused if another one is set; the same one
/// again is ok once it is flushed: the retry of a set whose flush failed). The object must exist
/// (here or on a remote: `not_found`) and must not be private to another token
/// (`access_denied`).
pub async fn register_startup(
    store: &Store,
    apps: &AppRegistry,
    app: AppId,
    ghid: Ghid,
) -> Result<(), DaemonError> {
    let token = token_of(apps, app)?;
    check_access(store, apps, app, ghid).await?;
    if commit::owner(store, ghid).await?.is_none() {
        return Err(DaemonError::NotFound(format!("object {ghid}")));
    }
    // A startup object is the app's: a received share is ours from now on.
    store.account.tell(account::Adopt(ghid));
    store
        .account
        .ask(account::SetStartup { token, ghid })
        .await??;
    // The app is told only once it lasts (a crash before the timed flush would lose it).
    store.account.flush().await
}

/// Clears the startup object of `app`'s token (refused if none is set, unless this daemon
/// cleared it and it was not set since: a retry).
pub async fn deregister_startup(
    store: &Store,
    apps: &AppRegistry,
    app: AppId,
) -> Result<(), DaemonError> {
    let token = token_of(apps, app)?;
    store.account.ask(account::ClearStartup(token)).await??;
    store.account.flush().await
}

/// The token that may create a private object for `app` (`unknown_token` without one).
pub fn private_owner(apps: &AppRegistry, app: AppId) -> Result<AppToken, DaemonError> {
    token_of(apps, app).map(|t| t.0)
}

/// Records that `ghid` is private to `token`, durably: a crash must not leave the object
/// without its owner (any app of the user could then read it).
pub async fn record_private(store: &Store, ghid: Ghid, token: AppToken) -> Result<(), DaemonError> {
    store
        .account
        .ask(account::SetPrivate {
            ghid,
            token: AppTokenBytes(token),
        })
        .await?;
    store.account.flush().await
}

/// The token `ghid` is private to, if it is private.
pub async fn private_to(store: &Store, ghid: Ghid) -> Result<Option<AppToken>, DaemonError> {
    store.account.ask(account::PrivateTo(ghid)).await
}

/// Whether `ghid` is private (to a token, or marked so on this machine).
pub async fn is_private(store: &Store, ghid: Ghid) -> Result<bool, DaemonError> {
    Ok(private_to(store, ghid).await?.is_some() || store.local.meta(&ghid)?.private)
}

/// Refuses `app` access to an object private to another token.
pub async fn check_access(
    store: &Store,
    apps: &AppRegistry,
    app: AppId,
    ghid: Ghid,
) -> Result<(), DaemonError> {
    match private_to(store, ghid).await? {
        Some(owner) if apps.token(app) != Some(owner) => Err(DaemonError::AccessDenied(format!(
            "{ghid} is private to another app"
        ))),
        _ => Ok(()),
    }
}

/// `app` handles shares of `api_id` from now on; shares kept for that api id while nobody
/// handled it are offered to it now (and forgotten; kept again if its inbox closed
/// meanwhile).
pub async fn register_share_handler(
    store: &Store,
    apps: &AppRegistry,
    app: AppId,
    api_id: Ghid,
) -> Result<(), DaemonError> {
    if !apps.add_handler(app, api_id) {
        return Err(DaemonError::BadArgs(format!("app {app} is not connected")));
    }
    let orphans = store.account.ask(account::TakeOrphans(api_id)).await?;
    for o in orphans {
        let event = AppEvent::Share {
            ghid: o.ghid,
            origin: o.origin,
            api_id: o.api_id,
        };
        if apps.send(app, event).is_err() {
            store.account.tell(account::KeepOrphan(o));
        }
    }
    Ok(())
}

/// `app` stops handling shares of `api_id` (`not_found` if it did not handle them).
pub fn deregister_share_handler(
    apps: &AppRegistry,
    app: AppId,
    api_id: Ghid,
) -> Result<(), DaemonError> {
    if apps.remove_handler(app, &api_id) {
        Ok(())
    } else {
        Err(DaemonError::NotFound(format!(
            "a share handler of this session for {api_id}"
        )))
    }
}

/// Sends a `share` event to every session handling `api_id` except `skip`; returns how many
/// took it (an inbox that closed does not).
pub fn offer(
    apps: &AppRegistry,
    ghid: Ghid,
    origin: Ghid,
    api_id: Option<Ghid>,
    skip: Option<AppId>,
) -> usize {
    let Some(api) = api_id else { return 0 };
    let mut n = 0;
    for app in apps.handlers(&api) {
        let event = AppEvent::Share {
            ghid,
            origin,
            api_id,
        };
        if Some(app) != skip && apps.send(app, event).is_ok() {
            n += 1;
        }
    }
    n
}

/// An incoming share: offered to the sessions handling its api id, else kept in the account
/// until one registers.
pub fn offer_or_keep(
    store: &Store,
    apps: &AppRegistry,
    ghid: Ghid,
    origin: Ghid,
    api_id: Option<Ghid>,
) {
    if offer(apps, ghid, origin, api_id, None) > 0 {
        return;
    }
    let orphan = OrphanShare {
        ghid,
        origin,
        api_id,
    };
    store.account.tell(account::KeepOrphan(orphan));
}
