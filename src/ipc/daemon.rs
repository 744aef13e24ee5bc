//! The real daemon behind the app endpoint: [`DaemonApi`] for [`DaemonHandle`], by plain
//! delegation (the trait exists so the endpoint can be tested on its own).
//!
//! Owns nothing. Calls: `actors::daemon`.

use std::future::Future;

use actix::Recipient;

use super::DaemonApi;
use crate::actors::api::{AppEvent, AppId, AppToken, ObjectView};
use crate::actors::daemon::DaemonHandle;
use crate::actors::error::DaemonError;
use crate::actors::link_state::RemoteStatus;
use crate::golix::Ghid;

impl DaemonApi for DaemonHandle {
    fn fingerprint(&self) -> Ghid {
        DaemonHandle::fingerprint(self)
    }

    fn user_id(&self) -> Ghid {
        DaemonHandle::user_id(self)
    }

    fn remotes(&self) -> Vec<RemoteStatus> {
        DaemonHandle::remotes(self)
    }

    fn connect_app(&self, events: Recipient<AppEvent>) -> AppId {
        DaemonHandle::connect_app(self, events)
    }

    fn disconnect_app(&self, app: AppId) {
        DaemonHandle::disconnect_app(self, app)
    }

    fn new_object(
        &self,
        app: AppId,
        state: Vec<u8>,
        api_id: Option<Ghid>,
        dynamic: bool,
        private: bool,
    ) -> impl Future<Output = Result<ObjectView, DaemonError>> {
        DaemonHandle::new_object(self, app, state, api_id, dynamic, private)
    }

    fn get_object(
        &self,
        app: AppId,
        ghid: Ghid,
    ) -> impl Future<Output = Result<ObjectView, DaemonError>> {
        DaemonHandle::get_object(self, app, ghid)
    }

    fn push(
        &self,
        app: AppId,
        ghid: Ghid,
        state: Vec<u8>,
        private: Option<bool>,
    ) -> impl Future<Output = Result<(), DaemonError>> {
        DaemonHandle::push(self, app, ghid, state, private)
    }

    fn sync(
        &self,
        app: AppId,
        ghid: Ghid,
    ) -> impl Future<Output = Result<ObjectView, DaemonError>> {
        DaemonHandle::sync(self, app, ghid)
    }

    fn freeze(&self, app: AppId, ghid: Ghid) -> impl Future<Output = Result<Ghid, DaemonError>> {
        DaemonHandle::freeze(self, app, ghid)
    }

    fn hold(&self, app: AppId, ghid: Ghid) -> impl Future<Output = Result<(), DaemonError>> {
        DaemonHandle::hold(self, app, ghid)
    }

    fn discard(&self, app: AppId, ghid: Ghid) -> impl Future<Output = Result<(), DaemonError>> {
        DaemonHandle::discard(self, app, ghid)
    }

    fn delete(&self, app: AppId, ghid: Ghid) -> impl Future<Output = Result<(), DaemonError>> {
        DaemonHandle::delete(self, app, ghid)
    }

    fn register_token(
        &self,
        app: AppId,
        token: Option<AppToken>,
    ) -> impl Future<Output = Result<(AppToken, Option<Ghid>), DaemonError>> {
        DaemonHandle::register_token(self, app, token)
    }

    fn register_startup(
        &self,
        app: AppId,
        ghid: Ghid,
    ) -> impl Future<Output = Result<(), DaemonError>> {
        DaemonHandle::register_startup(self, app, ghid)
    }

    fn deregister_startup(&self, app: AppId) -> impl Future<Output = Result<(), DaemonError>> {
        DaemonHandle::deregister_startup(self, app)
    }

    fn register_share_handler(
        &self,
        app: AppId,
        api_id: Ghid,
    ) -> impl Future<Output = Result<(), DaemonError>> {
        DaemonHandle::register_share_handler(self, app, api_id)
    }

    fn deregister_share_handler(
        &self,
        app: AppId,
        api_id: Ghid,
    ) -> impl Future<Output = Result<(), DaemonError>> {
        DaemonHandle::deregister_share_handler(self, app, api_id)
    }

    fn share(
        &self,
        app: AppId,
        ghid: Ghid,
        recipient: Ghid,
    ) -> impl Future<Output = Result<(), DaemonError>> {
        DaemonHandle::share(self, app, ghid, recipient)
    }
}
