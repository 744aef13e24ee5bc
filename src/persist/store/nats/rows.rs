//! Rows: how the store's data is laid out as JetStream KV entries, and how a [`WriteSet`]
//! becomes one [`Delta`] per row.
//!
//! | key | row holds |
//! |---|---|
//! | `o.<ghid>` | the [`Record`] (sled encoding), the object's bytes (inline, or the name of a blob in the object store) and the "collected" mark |
//! | `b.<target>` | the bindings of `target`: member ghid -> kind byte ‖ binder |
//! | `d.<target>` | the debindings of `target`: GDXX ghid -> debinder |
//! | `q.<recipient>` | the GARQs addressed to `recipient`: GARQ ghid -> sender (empty: anonymous, else its 64-byte key) |
//!
//! `<ghid>` is the 88-character base64url text form (valid in KV keys). Each row is one
//! compare-and-set unit. A row also carries the id of the transaction that has locked it
//! (`lock`); its other fields are then still the row's committed content (the pre-image).
//! A row whose fields are all empty is not stored at all.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::golix::{Ghid, GHID_LEN};
use crate::persist::store::sled_store::{encode_binding, encode_record, encode_sender};
use crate::persist::store::WriteSet;
use crate::persist::PersistError;

/// Which row, of which ghid.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum RowKey {
    Object(Ghid),
    Bindings(Ghid),
    Debindings(Ghid),
    Requests(Ghid),
}

impl RowKey {
    pub fn ghid(&self) -> &Ghid {
        match self {
            RowKey::Object(g)
            | RowKey::Bindings(g)
            | RowKey::Debindings(g)
            | RowKey::Requests(g) => g,
        }
    }

    /// The KV key.
    pub fn key(&self) -> String {
        let tag = match self {
            RowKey::Object(_) => "o",
            RowKey::Bindings(_) => "b",
            RowKey::Debindings(_) => "d",
            RowKey::Requests(_) => "q",
        };
        format!("{tag}.{}", self.ghid().as_str())
    }

    /// Parses [`RowKey::key`].
    pub fn parse(key: &str) -> Result<RowKey, PersistError> {
        let bad = || PersistError::Storage(format!("corrupt row key {key:?}"));
        let (tag, rest) = key.split_once('.').ok_or_else(bad)?;
        let g: Ghid = rest.parse().map_err(|_| bad())?;
        Ok(match tag {
            "o" => RowKey::Object(g),
            "b" => RowKey::Bindings(g),
            "d" => RowKey::Debindings(g),
            "q" => RowKey::Requests(g),
            _ => return Err(bad()),
        })
    }

    /// The partition (KV bucket) of this row among `n`: every row of one ghid lives in the
    /// same one, chosen by the ghid's digest (uniform).
    pub fn partition(&self, n: usize) -> usize {
        partition_of(self.ghid().as_bytes(), n)
    }
}

/// A partition index from hash-like bytes.
pub fn partition_of(bytes: &[u8], n: usize) -> usize {
    let mut b = [0u8; 8];
    for (i, x) in bytes.iter().skip(1).take(8).enumerate() {
        b[i] = *x;
    }
    (u64::from_le_bytes(b) % n.max(1) as u64) as usize
}

/// Where an object's bytes are.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum Body {
    Inline(ByteBuf),
    /// The name of an object-store entry (large objects).
    Blob(String),
}

/// One KV entry's value (msgpack with field names).
#[derive(Clone, Default, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct Row {
    /// The transaction that holds this row, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lock: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record: Option<ByteBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<Body>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub collected: bool,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub members: BTreeMap<ByteBuf, ByteBuf>,
}

impl Row {
    pub fn decode(b: &[u8]) -> Result<Row, PersistError> {
        rmp_serde::from_slice(b).map_err(|e| PersistError::Storage(format!("corrupt row: {e}")))
    }

    pub fn encode(&self) -> Bytes {
        // Serializing plain owned data into a Vec cannot fail.
        Bytes::from(rmp_serde::to_vec_named(self).unwrap_or_default())
    }

    /// Nothing to store (the entry is deleted instead).
    pub fn is_empty(&self) -> bool {
        self.lock.is_none()
            && self.record.is_none()
            && self.body.is_none()
            && !self.collected
            && self.members.is_empty()
    }

    /// The row without its lock.
    pub fn unlocked(&self) -> Row {
        Row {
            lock: None,
            ..self.clone()
        }
    }

    /// Member ghids with their values, in ghid order.
    pub fn members(&self) -> Result<Vec<(Ghid, &[u8])>, PersistError> {
        self.members
            .iter()
            .map(|(k, v)| {
                Ghid::from_bytes(k)
                    .map(|g| (g, &v[..]))
                    .map_err(|_| PersistError::Storage("corrupt row member".into()))
            })
            .collect()
    }
}

/// A change to one field.
#[derive(Clone, Default, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum Change<T> {
    #[default]
    Keep,
    Clear,
    Set(T),
}

impl<T: Clone> Change<T> {
    fn apply(&self, field: &mut Option<T>) {
        match self {
            Change::Keep => {}
            Change::Clear => *field = None,
            Change::Set(v) => *field = Some(v.clone()),
        }
    }

    fn from_option(v: Option<T>) -> Change<T> {
        v.map_or(Change::Clear, Change::Set)
    }
}

/// What one transaction does to one row. Applied to the row's pre-image, it gives the
/// post-image; it never depends on anything else, so anyone may apply it (roll forward).
#[derive(Clone, Default, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct Delta {
    pub record: Change<ByteBuf>,
    pub body: Change<Body>,
    pub collected: Option<bool>,
    pub put: BTreeMap<ByteBuf, ByteBuf>,
    pub remove: Vec<ByteBuf>,
}

impl Delta {
    /// The post-image of `pre` (unlocked).
    pub fn apply(&self, pre: &Row) -> Row {
        let mut row = pre.unlocked();
        self.record.apply(&mut row.record);
        self.body.apply(&mut row.body);
        if let Some(c) = self.collected {
            row.collected = c;
        }
        for k in &self.remove {
            row.members.remove(k);
        }
        for (k, v) in &self.put {
            row.members.insert(k.clone(), v.clone());
        }
        row
    }
}

fn member(g: &Ghid) -> ByteBuf {
    ByteBuf::from(g.as_bytes().to_vec())
}

fn set_member(d: &mut Delta, m: &Ghid, value: Option<Vec<u8>>) {
    let k = member(m);
    d.put.remove(&k);
    d.remove.retain(|x| x != &k);
    match value {
        Some(v) => {
            d.put.insert(k, ByteBuf::from(v));
        }
        None => d.remove.push(k),
    }
}

/// The per-row deltas of a [`WriteSet`] (object bytes inline; the store moves large ones to
/// blobs before committing).
pub fn deltas(w: &WriteSet) -> BTreeMap<RowKey, Delta> {
    let mut out: BTreeMap<RowKey, Delta> = BTreeMap::new();
    for (g, b) in &w.objects {
        let d = out.entry(RowKey::Object(*g)).or_default();
        d.body = Change::from_option(b.as_ref().map(|b| Body::Inline(ByteBuf::from(b.to_vec()))));
    }
    for (g, r) in &w.records {
        let d = out.entry(RowKey::Object(*g)).or_default();
        d.record = Change::from_option(r.as_ref().map(|r| ByteBuf::from(encode_record(r))));
    }
    for (g, c) in &w.collected {
        out.entry(RowKey::Object(*g)).or_default().collected = Some(*c);
    }
    for ((t, m), b) in &w.bindings {
        let d = out.entry(RowKey::Bindings(*t)).or_default();
        set_member(d, m, b.as_ref().map(encode_binding));
    }
    for ((t, m), x) in &w.debindings {
        let d = out.entry(RowKey::Debindings(*t)).or_default();
        set_member(d, m, x.as_ref().map(|x| x.debinder.as_bytes().to_vec()));
    }
    for ((r, g), sender) in &w.requests {
        let d = out.entry(RowKey::Requests(*r)).or_default();
        set_member(d, g, sender.as_ref().map(encode_sender));
    }
    out
}

/// A `target ‖ member` key as the sled encodings expect it.
pub fn pair(a: &Ghid, b: &Ghid) -> [u8; 2 * GHID_LEN] {
    crate::persist::store::sled_store::pair_key(a, b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::golix::{Algo, Kind};
    use crate::persist::store::{Binding, Record};

    #[test]
    fn keys_round_trip_and_partition_by_ghid() {
        let g = Ghid::pseudorandom(Algo::SHA512);
        for k in [
            RowKey::Object(g),
            RowKey::Bindings(g),
            RowKey::Debindings(g),
            RowKey::Requests(g),
        ] {
            assert_eq!(RowKey::parse(&k.key()).unwrap(), k);
            assert_eq!(k.partition(7), RowKey::Object(g).partition(7));
        }
        assert!(RowKey::parse("x.abc").is_err());
    }

    #[test]
    fn deltas_apply_to_pre_images_and_empty_rows_vanish() {
        let (t, m, who) = (
            Ghid::pseudorandom(Algo::SHA512),
            Ghid::pseudorandom(Algo::SHA512),
            Ghid::pseudorandom(Algo::SHA512),
        );
        let mut w = WriteSet::default();
        w.objects.insert(m, Some(Bytes::from_static(b"obj")));
        w.records.insert(
            m,
            Some(Record::Static {
                binder: who,
                target: t,
            }),
        );
        w.collected.insert(m, false);
        let b = Binding {
            ghid: m,
            kind: Kind::Gobs,
            binder: who,
        };
        w.bindings.insert((t, m), Some(b));
        let d = deltas(&w);
        assert_eq!(d.len(), 2);
        let row = d[&RowKey::Bindings(t)].apply(&Row::default());
        let back = Row::decode(&row.encode()).unwrap();
        assert_eq!(back, row);
        assert_eq!(back.members().unwrap()[0].0, m);

        let mut w = WriteSet::default();
        w.bindings.insert((t, m), None);
        let gone = deltas(&w)[&RowKey::Bindings(t)].apply(&row);
        assert!(gone.is_empty());
        let locked = Row {
            lock: Some("tx".into()),
            ..row.clone()
        };
        assert_eq!(deltas(&w)[&RowKey::Bindings(t)].apply(&locked), gone);
    }
}
