//! How far each object's frames run ahead of the account's flushed state.
//!
//! Owns: [`FlushedCounters`], the frame counter of each object's secret in the account state
//! this machine last flushed, shared between the `AccountActor` (which writes it after each
//! flush) and the push pipeline (which reads it when it sizes a frame's target vector, see
//! `commit::legroom`). Another machine of the user opens our objects with the
//! flushed secret, ratcheting forward along a frame's target vector, so a frame reaches back
//! to the flushed secret's container and the account need not flush every few frames.
//!
//! Calls: nothing. Used by `AccountActor` and `commit`.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::golix::Ghid;

/// Flushed frame counters, by object (only those known for certain). Cheap to clone.
#[derive(Clone, Default)]
pub struct FlushedCounters(Arc<RwLock<HashMap<Ghid, u64>>>);

impl FlushedCounters {
    /// The frame counter of `ghid`'s secret in the last flushed account state, if known.
    pub fn get(&self, ghid: &Ghid) -> Option<u64> {
        self.read().get(ghid).copied()
    }

    /// A flush wrote these counters.
    pub fn flushed(&self, counters: impl IntoIterator<Item = (Ghid, u64)>) {
        self.write().extend(counters);
    }

    pub fn forget(&self, ghid: &Ghid) {
        self.write().remove(ghid);
    }

    /// The account state came from elsewhere: nothing is known for certain.
    pub fn clear(&self) {
        self.write().clear();
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<Ghid, u64>> {
        self.0.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<Ghid, u64>> {
        self.0.write().unwrap_or_else(|p| p.into_inner())
    }
}
