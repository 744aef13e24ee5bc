//! The commit protocol: one rule pass's writes applied to many KV rows as one atomic step,
//! with nothing but per-row compare-and-set (KV `update` with the expected revision; revision
//! 0 = "absent", i.e. `create`).
//!
//! 1. The pass read every row it decided on at some revision (waiting out, finishing or
//!    aborting other transactions' locks first: [`Core::settle`]).
//! 2. Deltas that leave their row as read are dropped (the row is then only read). A
//!    transaction record `t.<id>` is created, *pending*, holding every row's [`Delta`], in the
//!    partition holding most of the rows only read.
//! 3. Prewrite: each written row is rewritten, unchanged but for `lock = id`, at exactly the
//!    revision the pass read. Any mismatch = someone wrote it since: abort, re-run the pass.
//! 4. Validate: every row read but not written, in another partition than the record's, is
//!    read again and must still be at the revision read.
//! 5. Commit point: the record goes pending -> *committed* (compare-and-set, also requiring
//!    the rows only read in its partition at their revisions: the append validates them).
//!    From here the transaction has happened: readers apply its delta to a row it still
//!    locks.
//! 6. Apply: each row becomes its post-image, unlocked (or is deleted when empty); then the
//!    record is deleted. Anyone may do this (roll forward) for a committed record.
//!
//! An abort (by the owner on conflict, or by anyone once a pending record has been seen
//! unchanged for [`LEASE`]) marks the record *aborted* first, so the owner's commit cannot
//! succeed any more, then unlocks the rows and deletes the record. The periodic sweep finishes
//! or aborts records whose owner died. Every step is idempotent and may be repeated by anyone.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::kv;
use bytes::Bytes;
use futures_util::future::join_all;
use serde::{Deserialize, Serialize};
use slog::warn;
use tokio::io::AsyncReadExt;

use super::rows::{Body, Change, Delta, Row, RowKey};
use super::{Core, Ops};
use crate::persist::PersistError;

/// A pending transaction record seen unchanged this long is presumed abandoned and aborted.
pub const LEASE: Duration = Duration::from_secs(10);
/// Longest a read waits for other transactions' locks to clear.
const SETTLE_DEADLINE: Duration = Duration::from_secs(30);
/// The record key that says how rows are partitioned (checked at every start).
const LAYOUT_KEY: &str = "meta.layout";

/// How a commit ended, short of success.
#[derive(Debug)]
pub enum TxError {
    /// A row changed under the pass: run it again.
    Conflict,
    Failed(PersistError),
}

impl From<PersistError> for TxError {
    fn from(e: PersistError) -> Self {
        TxError::Failed(e)
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
enum TxState {
    Pending,
    Committed,
    Aborted,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct TxRecord {
    state: TxState,
    /// (row key, delta) of every row the transaction writes.
    rows: Vec<(String, Delta)>,
}

impl TxRecord {
    fn encode(&self) -> Bytes {
        Bytes::from(rmp_serde::to_vec_named(self).unwrap_or_default())
    }

    fn decode(b: &[u8]) -> Result<TxRecord, PersistError> {
        rmp_serde::from_slice(b)
            .map_err(|e| PersistError::Storage(format!("corrupt transaction record: {e}")))
    }

    fn delta(&self, key: &str) -> Option<&Delta> {
        self.rows.iter().find(|(k, _)| k == key).map(|(_, d)| d)
    }
}

/// Outcome of a conditional write.
enum Cas {
    /// Written; the new revision (0 when the row was deleted).
    Done(u64),
    /// The row was not at the expected revision.
    Stale,
}

/// How long a read waits for a stream to have a leader again.
const READ_RETRY: Duration = Duration::from_secs(10);

fn nats_err(what: &str, e: impl std::fmt::Display) -> PersistError {
    PersistError::Unavailable(format!("nats {what}: {e}"))
}

/// A fresh transaction id: `<partition>-<32 hex>`; the record lives in that partition.
fn new_txid(partition: usize) -> String {
    let mut b = [0u8; 16];
    rand::Rng::fill(&mut rand::thread_rng(), &mut b[..]);
    format!("{partition}-{}", hex::encode(b))
}

fn tx_partition(txid: &str, partitions: usize) -> Result<usize, PersistError> {
    txid.split_once('-')
        .and_then(|(p, _)| p.parse::<usize>().ok())
        .filter(|p| *p < partitions)
        .ok_or_else(|| PersistError::Storage(format!("corrupt transaction id {txid:?}")))
}

impl Core {
    fn tx_bucket(&self, txid: &str) -> Result<&kv::Store, PersistError> {
        Ok(&self.parts[tx_partition(txid, self.parts.len())?])
    }

    fn tx_part(&self, txid: &str) -> Result<usize, PersistError> {
        tx_partition(txid, self.parts.len())
    }

    /// The last message of `key` in `kv`: (revision, value), revision 0 when there is none.
    /// A read is idempotent, so one that meets a stream without a leader (JetStream answers
    /// 503 while it elects one, e.g. after a node restarts) is retried for up to
    /// [`READ_RETRY`] before the client gets `unavailable`.
    async fn raw_entry(kv: &kv::Store, key: &str) -> Result<(u64, Option<Bytes>), PersistError> {
        let deadline = tokio::time::Instant::now() + READ_RETRY;
        let entry = loop {
            match kv.entry(key).await {
                Ok(entry) => break entry,
                Err(e)
                    if e.to_string().contains("temporarily unavailable")
                        && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(nats_err("read", e)),
            }
        };
        match entry {
            Some(e) if e.operation == kv::Operation::Put => Ok((e.revision, Some(e.value))),
            Some(e) => Ok((e.revision, None)),
            None => Ok((0, None)),
        }
    }

    /// A row as stored (possibly locked), with its revision.
    async fn raw(&self, key: &RowKey) -> Result<(u64, Row), PersistError> {
        let (part, text) = (key.partition(self.parts.len()), key.key());
        let before = self.state[part].seq();
        Ops::count(&self.ops.row_reads);
        let (rev, value) = Self::raw_entry(&self.parts[part], &text).await?;
        self.state[part].read(before, &text, rev);
        let row = value
            .map(|v| Row::decode(&v))
            .transpose()?
            .unwrap_or_default();
        self.state[part].saw_row(&text, rev, &row);
        Ok((rev, row))
    }

    async fn tx(&self, txid: &str) -> Result<Option<(u64, TxRecord)>, PersistError> {
        Ops::count(&self.ops.record_reads);
        let (rev, value) = Self::raw_entry(self.tx_bucket(txid)?, &format!("t.{txid}")).await?;
        Ok(match value {
            Some(v) => Some((rev, TxRecord::decode(&v)?)),
            None => None,
        })
    }

    /// Writes `value` under `key` of partition `part` if the key's last revision is `rev`;
    /// an empty value deletes that message instead (no tombstone is left).
    ///
    /// Not with the per-key `Nats-Expected-Last-Subject-Sequence` alone: a clustered stream of
    /// nats-server before 2.9.21 checks it outside Raft, so two concurrent writers expecting
    /// the same revision may both succeed (nats-server issue 4320; `persister_cluster.rs`
    /// reproduced it on 2.9.10 at once). The stream-wide `Nats-Expected-Last-Sequence` is
    /// checked in order with the proposals, so: learn the stream's last sequence `s`, check
    /// the key is at `rev`, then append expecting the stream still at `s`. Success means no
    /// append happened since the check. (Deletes are not appends, but only ever remove a
    /// locked row's message or a finished transaction's record, whose writers all agree on
    /// the outcome.) This process's writes of one partition queue behind one lock, and the
    /// check is skipped when `partition::Partition` already knows the key's revision as of the
    /// expected sequence.
    async fn cas(
        &self,
        part: usize,
        key: &str,
        rev: u64,
        value: Option<Bytes>,
    ) -> Result<Cas, PersistError> {
        self.cas_also(part, key, rev, value, &[]).await
    }

    /// [`Core::cas`] that also requires the keys of `also` (same partition) to be at their
    /// revisions: the append's success proves none of them changed up to that moment.
    async fn cas_also(
        &self,
        part: usize,
        key: &str,
        rev: u64,
        value: Option<Bytes>,
        also: &[(String, u64)],
    ) -> Result<Cas, PersistError> {
        let (kv, state) = (&self.parts[part], &self.state[part]);
        let Some(value) = value else {
            if rev == 0 {
                return Ok(Cas::Done(0));
            }
            Ops::count(&self.ops.deletes);
            let done = match kv.stream.delete_message(rev).await {
                Ok(true) => Ok(Cas::Done(0)),
                Ok(false) => Ok(Cas::Stale),
                Err(e) => match e.kind() {
                    async_nats::jetstream::stream::DeleteMessageErrorKind::JetStream(_) => {
                        Ok(Cas::Stale)
                    }
                    _ => Err(nats_err("delete", e)),
                },
            };
            state.deleted(key);
            return done;
        };
        let subject = format!("{}{key}", kv.prefix);
        let deadline = Instant::now() + SETTLE_DEADLINE;
        let _writer = state.writer.lock().await;
        loop {
            let (last, _) = state.get(key);
            for (k, r) in std::iter::once((key, rev)).chain(also.iter().map(|(k, r)| (&k[..], *r)))
            {
                if state.get(k).1 != Some(r) {
                    Ops::count(&self.ops.check_reads);
                    let now = Self::raw_entry(kv, k).await?.0;
                    state.read(last, k, now);
                    if now != r {
                        return Ok(Cas::Stale);
                    }
                }
            }
            let mut h = async_nats::HeaderMap::new();
            h.insert("Nats-Expected-Last-Sequence", last.to_string().as_str());
            let ack = self
                .js
                .publish_with_headers(subject.clone(), h, value.clone())
                .await
                .map_err(|e| nats_err("write", e))?
                .await;
            match ack {
                Ok(a) => {
                    Ops::count(&self.ops.appends);
                    state.appended(last, key, a.sequence);
                    return Ok(Cas::Done(a.sequence));
                }
                Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => {
                    Ops::count(&self.ops.retries);
                    // "wrong last sequence: N": N is the stream's last sequence now.
                    let actual = e.to_string().rsplit(':').next().and_then(|n| {
                        n.trim()
                            .trim_end_matches(|c: char| !c.is_ascii_digit())
                            .parse::<u64>()
                            .ok()
                    });
                    match actual {
                        Some(n) => state.moved(n),
                        None => self.refresh_last_seq(part).await?,
                    }
                }
                Err(e) => return Err(nats_err("write", e)),
            }
            if Instant::now() > deadline {
                return Err(PersistError::Unavailable(format!(
                    "partition {part} too busy to write {key}"
                )));
            }
        }
    }

    /// Reads a partition stream's last sequence from the server.
    pub async fn refresh_last_seq(&self, part: usize) -> Result<(), PersistError> {
        let mut stream = self.parts[part].stream.clone();
        let info = stream
            .info()
            .await
            .map_err(|e| nats_err("stream info", e))?;
        self.state[part].moved(info.state.last_sequence);
        Ok(())
    }

    async fn write_row(&self, key: &RowKey, rev: u64, row: &Row) -> Result<Cas, PersistError> {
        let value = (!row.is_empty()).then(|| row.encode());
        if let Some(v) = &value {
            if v.len() > self.max_row {
                return Err(PersistError::Limit(format!(
                    "row {} would be {} bytes; the cluster's limit is {}",
                    key.key(),
                    v.len(),
                    self.max_row
                )));
            }
        }
        let (part, text) = (key.partition(self.parts.len()), key.key());
        let done = self.cas(part, &text, rev, value).await?;
        match done {
            Cas::Done(new) => self.state[part].saw_row(&text, new, row),
            Cas::Stale => self.state[part].forget_row(&text),
        }
        Ok(done)
    }

    /// The last unlocked content this front-end saw of a row (see `partition`).
    pub fn cached(&self, key: &RowKey) -> Option<(u64, Row)> {
        self.state[key.partition(self.parts.len())].cached(&key.key())
    }

    /// Drops a row from the cache (it turned out outdated).
    pub fn forget_cached(&self, key: &RowKey) {
        self.state[key.partition(self.parts.len())].forget_row(&key.key());
    }

    /// The committed content of a row, for plain reads: a row locked by a committed
    /// transaction reads as its post-image, by any other as its pre-image.
    pub async fn resolve(&self, key: &RowKey) -> Result<Row, PersistError> {
        for _ in 0..8 {
            let (rev, row) = self.raw(key).await?;
            let Some(txid) = row.lock.clone() else {
                return Ok(row);
            };
            match self.tx(&txid).await? {
                Some((_, rec)) if rec.state == TxState::Committed => {
                    return Ok(match rec.delta(&key.key()) {
                        Some(d) => d.apply(&row),
                        None => row.unlocked(),
                    })
                }
                Some(_) => return Ok(row.unlocked()),
                // Finished meanwhile (the row is unlocked now), or abandoned before commit.
                None => {
                    if self.raw(key).await?.0 == rev {
                        return Ok(row.unlocked());
                    }
                }
            }
        }
        Err(PersistError::Unavailable(format!(
            "row {} keeps changing",
            key.key()
        )))
    }

    /// An unlocked row and its revision, for a rule pass: locks of committed or aborted
    /// transactions are resolved on the spot, pending ones waited for (and aborted once
    /// their record has not moved for [`LEASE`]).
    pub async fn settle(&self, key: &RowKey) -> Result<(u64, Row), PersistError> {
        let start = Instant::now();
        let mut pause = Duration::from_millis(1);
        let mut pending: Option<(String, u64, Instant)> = None;
        loop {
            if start.elapsed() > SETTLE_DEADLINE {
                return Err(PersistError::Unavailable(format!(
                    "row {} stays locked",
                    key.key()
                )));
            }
            let (rev, row) = self.raw(key).await?;
            let Some(txid) = row.lock.clone() else {
                return Ok((rev, row));
            };
            match self.tx(&txid).await? {
                Some((_, rec)) if rec.state == TxState::Committed => {
                    let post = match rec.delta(&key.key()) {
                        Some(d) => d.apply(&row),
                        None => row.unlocked(),
                    };
                    self.write_row(key, rev, &post).await?;
                }
                Some((_, rec)) if rec.state == TxState::Aborted => {
                    self.write_row(key, rev, &row.unlocked()).await?;
                }
                Some((trev, rec)) => {
                    let since = match &pending {
                        Some((id, r, at)) if *id == txid && *r == trev => *at,
                        _ => {
                            let now = Instant::now();
                            pending = Some((txid.clone(), trev, now));
                            now
                        }
                    };
                    if since.elapsed() >= LEASE {
                        warn!(self.log, "aborting an abandoned transaction"; "tx" => &txid);
                        self.abort(&txid, trev, &rec).await?;
                    } else {
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(Duration::from_millis(50));
                    }
                }
                None => {
                    // No record and still the same locked revision: abandoned before its
                    // commit (see the module doc), so the pre-image stands.
                    if self.raw(key).await?.0 == rev {
                        self.write_row(key, rev, &row.unlocked()).await?;
                    }
                }
            }
        }
    }

    /// Bytes of an object row.
    pub async fn body(&self, row: &Row) -> Result<Option<Bytes>, PersistError> {
        match &row.body {
            None => Ok(None),
            Some(Body::Inline(b)) => Ok(Some(Bytes::copy_from_slice(b))),
            Some(Body::Blob(name)) => {
                // The blob was written before the row that names it; a lagging replica may
                // still say "not found" for a moment.
                let mut last = None;
                for _ in 0..20 {
                    match self.blobs.get(name).await {
                        Ok(mut obj) => {
                            let mut out = Vec::new();
                            obj.read_to_end(&mut out)
                                .await
                                .map_err(|e| nats_err("blob read", e))?;
                            return Ok(Some(Bytes::from(out)));
                        }
                        Err(e) => last = Some(e.to_string()),
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(PersistError::Unavailable(format!(
                    "blob {name}: {}",
                    last.unwrap_or_default()
                )))
            }
        }
    }

    async fn delete_blobs(&self, names: &[String]) {
        for n in names {
            if let Err(e) = self.blobs.delete(n).await {
                warn!(self.log, "cannot delete a blob"; "blob" => n, "error" => %e);
            }
        }
    }

    /// Moves large inline bodies to blobs (named after the row and the transaction).
    async fn spill(
        &self,
        txid: &str,
        deltas: &mut BTreeMap<RowKey, Delta>,
    ) -> Result<Vec<String>, PersistError> {
        let mut written = Vec::new();
        for (key, d) in deltas.iter_mut() {
            let Change::Set(Body::Inline(b)) = &d.body else {
                continue;
            };
            if b.len() <= self.inline_max {
                continue;
            }
            let name = format!("{}.{txid}", key.ghid().as_str());
            let mut reader: &[u8] = b;
            if let Err(e) = self.blobs.put(name.as_str(), &mut reader).await {
                self.delete_blobs(&written).await;
                return Err(nats_err("blob write", e));
            }
            d.body = Change::Set(Body::Blob(name.clone()));
            written.push(name);
        }
        Ok(written)
    }

    /// Commits `deltas` conditionally on `reads` (row -> revision and content the pass saw).
    pub async fn commit(
        &self,
        mut reads: HashMap<RowKey, (u64, Row)>,
        mut deltas: BTreeMap<RowKey, Delta>,
    ) -> Result<(), TxError> {
        if deltas.is_empty() {
            return Ok(());
        }
        // Rows written without being read (blind set changes) are read now: their deltas do
        // not depend on what they hold.
        for key in deltas.keys() {
            if !reads.contains_key(key) {
                reads.insert(*key, self.settle(key).await?);
            }
        }
        // A delta that leaves its row as read (a binding set again, say) is no write: the row
        // stays in the read set and is validated instead. Two transactions that only re-state
        // a shared row (every frame re-targeting one container) then do not conflict on it.
        deltas.retain(|key, d| d.apply(&reads[key].1) != reads[key].1);
        if deltas.is_empty() {
            return Ok(());
        }
        // The record goes to the partition holding most of the rows only read: the commit's
        // append there validates them (see below), sparing a read each.
        let n = self.parts.len();
        let mut only_read = vec![0usize; n];
        for k in reads.keys().filter(|k| !deltas.contains_key(k)) {
            only_read[k.partition(n)] += 1;
        }
        let fallback = rand::Rng::gen_range(&mut rand::thread_rng(), 0..n);
        let busiest = (0..n).max_by_key(|p| (only_read[*p], *p == fallback));
        let txid = new_txid(busiest.unwrap_or(fallback));
        let blobs = self.spill(&txid, &mut deltas).await?;
        let mut rec = TxRecord {
            state: TxState::Pending,
            rows: deltas.iter().map(|(k, d)| (k.key(), d.clone())).collect(),
        };
        let tpart = self.tx_part(&txid)?;
        let tkey = format!("t.{txid}");
        self.state[tpart].fresh(&tkey);
        let encoded = rec.encode();
        if encoded.len() > self.max_row {
            self.delete_blobs(&blobs).await;
            return Err(TxError::Failed(PersistError::Limit(format!(
                "a transaction of {} bytes exceeds the cluster's {}",
                encoded.len(),
                self.max_row
            ))));
        }
        let trev = match self.cas(tpart, &tkey, 0, Some(encoded)).await {
            Ok(Cas::Done(r)) => r,
            Ok(Cas::Stale) => {
                self.delete_blobs(&blobs).await;
                return Err(TxError::Conflict);
            }
            Err(e) => {
                self.delete_blobs(&blobs).await;
                return Err(e.into());
            }
        };

        // Prewrite.
        let prewrites = deltas.keys().map(|key| {
            let (rev, row) = &reads[key];
            let locked = Row {
                lock: Some(txid.clone()),
                ..row.clone()
            };
            async move { (*key, self.write_row(key, *rev, &locked).await) }
        });
        let mut locked: Vec<(RowKey, u64)> = Vec::new();
        let mut trouble: Option<TxError> = None;
        for (key, r) in join_all(prewrites).await {
            match r {
                Ok(Cas::Done(rev)) => locked.push((key, rev)),
                Ok(Cas::Stale) => {
                    trouble.get_or_insert(TxError::Conflict);
                }
                Err(e) => trouble = Some(TxError::Failed(e)),
            }
        }

        // Validate what was read and not written: in the record's partition by the commit's
        // own append (its expected sequence proves them unchanged up to the commit point),
        // elsewhere by reading them again now that every written row is locked.
        let in_commit: Vec<(String, u64)> = reads
            .iter()
            .filter(|(k, _)| !deltas.contains_key(k) && k.partition(n) == tpart)
            .map(|(k, (rev, _))| (k.key(), *rev))
            .collect();
        if trouble.is_none() {
            let checks = reads
                .iter()
                .filter(|(k, _)| !deltas.contains_key(k) && k.partition(n) != tpart)
                .map(|(k, (rev, _))| async move { self.raw(k).await.map(|(now, _)| now == *rev) });
            for r in join_all(checks).await {
                match r {
                    Ok(true) => {}
                    Ok(false) => {
                        trouble.get_or_insert(TxError::Conflict);
                    }
                    Err(e) => trouble = Some(TxError::Failed(e)),
                }
            }
        }

        // Commit point.
        let mut committed = false;
        let mut crev = None;
        if trouble.is_none() {
            rec.state = TxState::Committed;
            match self
                .cas_also(tpart, &tkey, trev, Some(rec.encode()), &in_commit)
                .await
            {
                Ok(Cas::Done(r)) => {
                    committed = true;
                    crev = Some(r);
                }
                Ok(Cas::Stale) => trouble = Some(TxError::Conflict),
                // Unknown outcome: the record says.
                Err(e) => match self.tx(&txid).await {
                    Ok(Some((_, r))) if r.state == TxState::Committed => committed = true,
                    _ => trouble = Some(TxError::Failed(e)),
                },
            }
        }
        if !committed {
            rec.state = TxState::Pending;
            match self.abort(&txid, trev, &rec).await {
                Ok(true) => committed = true,
                Ok(false) => {}
                Err(e) => warn!(self.log, "cannot abort a transaction (the sweep will)";
                    "tx" => &txid, "error" => %e),
            }
            if !committed {
                self.delete_blobs(&blobs).await;
                return Err(trouble.unwrap_or(TxError::Conflict));
            }
        }

        // Apply (the transaction has happened: failures here only delay the clean-up).
        let applies = locked.iter().map(|(key, rev)| {
            let post = deltas[key].apply(&reads[key].1);
            async move { self.write_row(key, *rev, &post).await }
        });
        let mut clean = true;
        for r in join_all(applies).await {
            if let Err(e) = r {
                clean = false;
                warn!(self.log, "cannot apply a committed row (readers and the sweep will)";
                    "tx" => &txid, "error" => %e);
            }
        }
        if clean {
            self.forget(&txid, crev).await;
        }
        // Blobs the committed rows no longer name.
        let replaced: Vec<String> = deltas
            .iter()
            .filter(|(_, d)| d.body != Change::Keep)
            .filter_map(|(k, _)| match &reads[k].1.body {
                Some(Body::Blob(n)) => Some(n.clone()),
                _ => None,
            })
            .collect();
        self.delete_blobs(&replaced).await;
        Ok(())
    }

    /// Deletes a finished transaction's record (at revision `rev` when known: nobody writes
    /// a finished record, so it is still there or already deleted).
    async fn forget(&self, txid: &str, rev: Option<u64>) {
        let (Ok(kv), Ok(part)) = (self.tx_bucket(txid), self.tx_part(txid)) else {
            return;
        };
        let key = format!("t.{txid}");
        let rev = match rev {
            Some(r) => Some(r),
            None => match Self::raw_entry(kv, &key).await.inspect(|_| {
                Ops::count(&self.ops.record_reads);
            }) {
                Ok((r, Some(_))) => Some(r),
                _ => None,
            },
        };
        if let Some(rev) = rev {
            if let Err(e) = self.cas(part, &key, rev, None).await {
                warn!(self.log, "cannot delete a transaction record"; "tx" => txid, "error" => %e);
            }
        }
    }

    /// Aborts a pending transaction (record at `trev`): returns `true` if it turned out to be
    /// committed (and was then finished) instead.
    async fn abort(&self, txid: &str, trev: u64, rec: &TxRecord) -> Result<bool, PersistError> {
        let part = self.tx_part(txid)?;
        let key = format!("t.{txid}");
        let mut state = rec.state;
        if state == TxState::Pending {
            let aborted = TxRecord {
                state: TxState::Aborted,
                rows: rec.rows.clone(),
            };
            match self.cas(part, &key, trev, Some(aborted.encode())).await? {
                Cas::Done(_) => state = TxState::Aborted,
                Cas::Stale => match self.tx(txid).await? {
                    Some((_, now)) => state = now.state,
                    None => return Ok(false),
                },
            }
        }
        self.finish(txid, rec, state).await?;
        Ok(state == TxState::Committed)
    }

    /// Rolls every row still locked by `txid` forward (committed) or back (otherwise), then
    /// deletes the record.
    async fn finish(&self, txid: &str, rec: &TxRecord, state: TxState) -> Result<(), PersistError> {
        for (k, d) in &rec.rows {
            let key = RowKey::parse(k)?;
            let (rev, row) = self.raw(&key).await?;
            if row.lock.as_deref() != Some(txid) {
                continue;
            }
            let next = if state == TxState::Committed {
                d.apply(&row)
            } else {
                row.unlocked()
            };
            self.write_row(&key, rev, &next).await?;
        }
        if state != TxState::Committed {
            // Blobs a failed transaction wrote are named after it.
            let names: Vec<String> = rec
                .rows
                .iter()
                .filter_map(|(_, d)| match &d.body {
                    Change::Set(Body::Blob(n)) => Some(n.clone()),
                    _ => None,
                })
                .collect();
            self.delete_blobs(&names).await;
        }
        self.forget(txid, None).await;
        Ok(())
    }

    /// Finishes committed and aborted records whose owner is gone, and aborts pending ones
    /// seen unchanged for [`LEASE`] across sweeps (`seen`: id -> (revision, first seen)).
    pub async fn sweep(
        &self,
        seen: &mut HashMap<String, (u64, Instant)>,
    ) -> Result<(), PersistError> {
        let mut present = Vec::new();
        for kv in &self.parts {
            let filter = format!("$KV.{}.t.>", kv.name);
            let prefix = format!("$KV.{}.t.", kv.name);
            let mut subjects = kv
                .stream
                .info_with_subjects(&filter)
                .await
                .map_err(|e| nats_err("sweep", e))?;
            use futures_util::TryStreamExt;
            while let Some((subject, _)) = subjects
                .try_next()
                .await
                .map_err(|e| nats_err("sweep", e))?
            {
                if let Some(id) = subject.strip_prefix(&prefix) {
                    present.push(id.to_owned());
                }
            }
        }
        seen.retain(|id, _| present.contains(id));
        for id in present {
            let Some((rev, rec)) = self.tx(&id).await? else {
                continue;
            };
            match rec.state {
                TxState::Committed | TxState::Aborted => {
                    // The owner finishes its own within milliseconds; only old ones are ours.
                    let first = seen.entry(id.clone()).or_insert((rev, Instant::now()));
                    if first.1.elapsed() >= LEASE || first.0 != rev {
                        self.finish(&id, &rec, rec.state).await?;
                        seen.remove(&id);
                    }
                }
                TxState::Pending => match seen.get(&id) {
                    Some((r, at)) if *r == rev && at.elapsed() >= LEASE => {
                        warn!(self.log, "aborting an abandoned transaction"; "tx" => &id);
                        self.abort(&id, rev, &rec).await?;
                        seen.remove(&id);
                    }
                    Some((r, _)) if *r == rev => {}
                    _ => {
                        seen.insert(id, (rev, Instant::now()));
                    }
                },
            }
        }
        Ok(())
    }

    /// Records the partition count at first use; refuses to run with a different one (rows
    /// would be looked for in the wrong buckets).
    pub async fn check_layout(&self, partitions: usize) -> Result<(), PersistError> {
        let kv = &self.parts[0];
        let want = format!("partitions={partitions}");
        let (rev, value) = Self::raw_entry(kv, LAYOUT_KEY).await?;
        let found = match value {
            Some(v) => v,
            None => match self
                .cas(0, LAYOUT_KEY, rev, Some(Bytes::from(want.clone())))
                .await?
            {
                Cas::Done(_) => return Ok(()),
                Cas::Stale => Self::raw_entry(kv, LAYOUT_KEY).await?.1.unwrap_or_default(),
            },
        };
        if found != want.as_bytes() {
            return Err(PersistError::Storage(format!(
                "the cluster's rows were laid out with {}; configured {want}",
                String::from_utf8_lossy(&found)
            )));
        }
        Ok(())
    }
}
