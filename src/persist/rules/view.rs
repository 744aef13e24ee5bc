//! `View`: the store as one publish sees it — committed state plus the writes this publish has
//! decided so far (read-your-writes), and the helpers that turn decisions into writes.

use bytes::Bytes;

use crate::golix::Ghid;
use crate::persist::store::{Binding, Debinding, Record, Sender, Store, WriteSet};
use crate::persist::PersistError;

/// The store overlaid with pending writes. Nothing reaches the store until the caller applies
/// [`View::into_writes`].
pub struct View<'s> {
    store: &'s dyn Store,
    writes: WriteSet,
}

impl<'s> View<'s> {
    pub fn new(store: &'s dyn Store) -> View<'s> {
        View {
            store,
            writes: WriteSet::default(),
        }
    }

    /// The pending writes.
    pub fn writes(&self) -> &WriteSet {
        &self.writes
    }

    pub fn into_writes(self) -> WriteSet {
        self.writes
    }

    pub fn object(&self, ghid: &Ghid) -> Result<Option<Bytes>, PersistError> {
        match self.writes.objects.get(ghid) {
            Some(v) => Ok(v.clone()),
            None => self.store.object(ghid),
        }
    }

    pub fn record(&self, ghid: &Ghid) -> Result<Option<Record>, PersistError> {
        match self.writes.records.get(ghid) {
            Some(v) => Ok(*v),
            None => self.store.record(ghid),
        }
    }

    /// Present = has a record (a dynamic ghid counts while it has a current frame).
    pub fn exists(&self, ghid: &Ghid) -> Result<bool, PersistError> {
        Ok(self.record(ghid)?.is_some())
    }

    /// The bytes a ghid resolves to: a dynamic ghid gives its current frame.
    pub fn resolve(&self, ghid: &Ghid) -> Result<Option<Bytes>, PersistError> {
        match self.record(ghid)? {
            Some(Record::Dynamic { frame, .. }) => self.object(&frame),
            Some(_) => self.object(ghid),
            None => Ok(None),
        }
    }

    pub fn is_collected(&self, ghid: &Ghid) -> Result<bool, PersistError> {
        match self.writes.collected.get(ghid) {
            Some(v) => Ok(*v),
            None => self.store.is_collected(ghid),
        }
    }

    pub fn bindings(&self, target: &Ghid) -> Result<Vec<Binding>, PersistError> {
        let mut all: std::collections::BTreeMap<Ghid, Binding> = self
            .store
            .bindings(target)?
            .into_iter()
            .map(|b| (b.ghid, b))
            .collect();
        for ((t, m), b) in &self.writes.bindings {
            if t == target {
                match b {
                    Some(b) => all.insert(*m, *b),
                    None => all.remove(m),
                };
            }
        }
        Ok(all.into_values().collect())
    }

    pub fn debindings(&self, target: &Ghid) -> Result<Vec<Debinding>, PersistError> {
        let mut all: std::collections::BTreeMap<Ghid, Debinding> = self
            .store
            .debindings(target)?
            .into_iter()
            .map(|d| (d.ghid, d))
            .collect();
        for ((t, m), d) in &self.writes.debindings {
            if t == target {
                match d {
                    Some(d) => all.insert(*m, *d),
                    None => all.remove(m),
                };
            }
        }
        Ok(all.into_values().collect())
    }

    /// Stored requests to `recipient` and who stored each, in ghid order.
    pub fn requests(&self, recipient: &Ghid) -> Result<Vec<(Ghid, Sender)>, PersistError> {
        let mut all: std::collections::BTreeMap<Ghid, Sender> =
            self.store.requests(recipient)?.into_iter().collect();
        for ((r, g), sender) in &self.writes.requests {
            if r == recipient {
                match sender {
                    Some(s) => all.insert(*g, *s),
                    None => all.remove(g),
                };
            }
        }
        Ok(all.into_iter().collect())
    }

    /// Stores an object: bytes (unless `bytes` is `None`, as for a dynamic ghid) and record;
    /// clears any collected mark.
    pub fn put(&mut self, ghid: Ghid, bytes: Option<Bytes>, record: Record) {
        if let Some(b) = bytes {
            self.writes.objects.insert(ghid, Some(b));
        }
        self.writes.records.insert(ghid, Some(record));
        self.writes.collected.insert(ghid, false);
    }

    /// Removes an object's bytes and record and marks it collected. Index entries are the
    /// caller's to remove.
    pub fn remove(&mut self, ghid: Ghid) {
        self.writes.objects.insert(ghid, None);
        self.writes.records.insert(ghid, None);
        self.writes.collected.insert(ghid, true);
    }

    pub fn set_binding(&mut self, target: Ghid, binding: Binding, present: bool) {
        self.writes
            .bindings
            .insert((target, binding.ghid), present.then_some(binding));
    }

    pub fn set_debinding(&mut self, target: Ghid, debinding: Debinding, present: bool) {
        self.writes
            .debindings
            .insert((target, debinding.ghid), present.then_some(debinding));
    }

    /// Records `garq` as stored for `recipient` by `sender`, or (`None`) as gone.
    pub fn set_request(&mut self, recipient: Ghid, garq: Ghid, sender: Option<Sender>) {
        self.writes.requests.insert((recipient, garq), sender);
    }
}
