//! Model test of the Store + rules (docs/architecture.md, "Testing"): seeded random sequences of
//! publishes and restarts against a small in-memory model of docs/golix.md that keeps no indexes
//! (bindings and debindings are derived by scanning the live set) and collects by a global sweep to
//! a fixed point rather than the archive's queued cascade. After every step the two must agree on
//! every publish result and on exists / status / current frame / bindings of every ghid used. Also
//! here: group commit (concurrent syncs share flushes) and durability across reopen.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use hypergolix::golix::*;
use hypergolix::persist::rules::checks::MAX_CHAIN_DEPTH;
use hypergolix::persist::store::{Binding, Debinding, Record, Sender, SledStore, Store, WriteSet};
use hypergolix::persist::{Archive, PersistError, Status};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const SEEDS: u64 = 20;
const OPS: usize = 200;

/// One pre-signed object of the universe.
struct Item {
    bytes: Vec<u8>,
    obj: Object,
}

struct Universe {
    gidcs: Vec<Item>,
    others: Vec<Item>,
    /// Every ghid worth asking about: objects, frames, dynamic ghids.
    ghids: Vec<Ghid>,
}

fn item(obj: Object) -> Item {
    Item {
        bytes: obj.encode(),
        obj,
    }
}

/// About 50 objects by three identities, signed once for every seed.
fn universe() -> &'static Universe {
    static U: OnceLock<Universe> = OnceLock::new();
    U.get_or_init(|| {
        let (a, b, c) = (common::fixture(1), common::fixture(2), common::fixture(3));
        let geoc =
            |who: &FirstParty, i: u8| who.make_container(&[i; 8], &Secret::random()).unwrap();
        let cs = [
            geoc(&a, 0),
            geoc(&a, 1),
            geoc(&a, 2),
            geoc(&b, 3),
            geoc(&b, 4),
            geoc(&c, 5),
        ];
        let cg = |i: usize| cs[i].ghid;
        let next = |who: &FirstParty, f: &Gobd, t: Ghid| who.make_next_frame(f, t, 3).unwrap();

        let x0 = a.make_bind_dynamic(cg(0)).unwrap();
        let x1 = next(&a, &x0, cg(1));
        let x2 = next(&a, &x1, cg(2));
        let x3 = next(&a, &x2, cg(1));
        let x2_fork = next(&a, &x1, cg(3));
        let y0 = b.make_bind_dynamic(x0.dynamic).unwrap();
        let y1 = next(&b, &y0, cg(3));
        let y2 = next(&b, &y1, cg(4));
        let z0 = a.make_bind_dynamic(y0.dynamic).unwrap();
        let z1 = next(&a, &z0, cg(5));
        let x4_loop = next(&a, &x3, z0.dynamic);
        let y1_loop = next(&b, &y0, z0.dynamic);
        let mut forged = x0.clone();
        forged.binder = b.ghid();
        let x1_by_b = next(&b, &forged, cg(4));
        let w0 = c.make_bind_dynamic(cg(5)).unwrap();

        let s = |who: &FirstParty, t: Ghid| who.make_bind_static(t).unwrap();
        let sa_c0 = s(&a, cg(0));
        let sb_c0 = s(&b, cg(0));
        let statics = [
            s(&a, cg(3)),
            s(&b, x0.dynamic),
            s(&c, cg(5)),
            s(&a, b.ghid()),
            s(&a, sb_c0.ghid),
            s(&b, z0.dynamic),
            s(&a, x1.frame),
            sa_c0.clone(),
            sb_c0.clone(),
        ];
        let garq1 = a
            .make_handshake(b.second_party(), x0.dynamic, &Secret::random())
            .unwrap();
        let garq2 = b.make_nak(c.second_party(), garq1.ghid, 1).unwrap();
        let garq3 = c.make_ack(a.second_party(), garq2.ghid, 0).unwrap();

        let d = |who: &FirstParty, t: Ghid| who.make_debind(t).unwrap();
        let d_sa_c0 = d(&a, sa_c0.ghid);
        let dd = d(&a, d_sa_c0.ghid);
        let d_x = d(&a, x0.dynamic);
        let debinds = vec![
            d(&b, sa_c0.ghid),
            d(&b, x0.dynamic),
            d(&b, y0.dynamic),
            d(&a, z0.dynamic),
            d(&b, statics[1].ghid),
            d(&b, sb_c0.ghid),
            d(&a, cg(0)),
            d(&a, a.ghid()),
            d(&b, garq1.ghid),
            d(&a, garq1.ghid),
            d(&c, garq2.ghid),
            d(&c, w0.dynamic),
            d(&a, x1.frame),
            d(&a, dd.ghid),
            d(&a, d_x.ghid),
            d(&c, statics[2].ghid),
            d_sa_c0,
            dd,
            d_x,
        ];

        let mut others: Vec<Object> = cs.iter().cloned().map(Object::Geoc).collect();
        for f in [
            x0, x1, x2, x3, x2_fork, y0, y1, y2, z0, z1, x4_loop, y1_loop, x1_by_b, w0,
        ] {
            others.push(Object::Gobd(f));
        }
        others.extend(statics.into_iter().map(Object::Gobs));
        others.extend(debinds.into_iter().map(Object::Gdxx));
        others.extend([garq1, garq2, garq3].into_iter().map(Object::Garq));
        let gidcs: Vec<Item> = [&a, &b, &c]
            .iter()
            .map(|p| item(Object::Gidc(p.gidc().clone())))
            .collect();
        let others: Vec<Item> = others.into_iter().map(item).collect();
        let mut ghids = BTreeSet::new();
        for it in gidcs.iter().chain(&others) {
            ghids.insert(it.obj.ghid());
            if let Object::Gobd(f) = &it.obj {
                ghids.insert(f.dynamic);
            }
        }
        Universe {
            gidcs,
            others,
            ghids: ghids.into_iter().collect(),
        }
    })
}

/// What the model knows of a live ghid.
#[derive(Clone, Debug)]
enum M {
    Gidc,
    Geoc,
    Gobs {
        binder: Ghid,
        target: Ghid,
    },
    Frame,
    Dyn {
        binder: Ghid,
        counter: u64,
        frame: Ghid,
        target: Ghid,
    },
    Gdxx {
        debinder: Ghid,
        target: Ghid,
    },
    Garq {
        recipient: Ghid,
    },
}

#[derive(Clone, Default)]
struct Model {
    live: BTreeMap<Ghid, M>,
    collected: BTreeSet<Ghid>,
}

type Verdict = Result<bool, &'static str>;

impl Model {
    /// Who binds `t`: live GOBS targeting it and dynamic objects whose current target it is.
    fn bindings(&self, t: &Ghid) -> BTreeSet<Ghid> {
        let mut out = BTreeSet::new();
        for (g, m) in &self.live {
            match m {
                M::Gobs { target, .. } | M::Dyn { target, .. } if target == t => {
                    out.insert(*g);
                }
                _ => {}
            }
        }
        out
    }

    fn debinders(&self, t: &Ghid) -> Vec<(Ghid, Ghid)> {
        let mut out = Vec::new();
        for (g, m) in &self.live {
            if let M::Gdxx { debinder, target } = m {
                if target == t {
                    out.push((*g, *debinder));
                }
            }
        }
        out
    }

    fn rightful(&self, g: &Ghid) -> Option<Ghid> {
        match self.live.get(g)? {
            M::Gobs { binder, .. } | M::Dyn { binder, .. } => Some(*binder),
            M::Gdxx { debinder, .. } => Some(*debinder),
            M::Garq { recipient } => Some(*recipient),
            M::Gidc | M::Geoc | M::Frame => None,
        }
    }

    fn debound_by(&self, g: &Ghid, who: Ghid) -> bool {
        self.debinders(g).iter().any(|(_, d)| *d == who)
    }

    fn insert(&mut self, g: Ghid, m: M) {
        self.collected.remove(&g);
        self.live.insert(g, m);
    }

    fn drop_ghid(&mut self, g: &Ghid) {
        if self.live.remove(g).is_some() {
            self.collected.insert(*g);
        }
    }

    /// Deletes debindings of `t` not made by `rightful`; says whether a valid one remains.
    fn prune(&mut self, t: &Ghid, rightful: Option<Ghid>) -> bool {
        let mut valid = false;
        for (g, d) in self.debinders(t) {
            if Some(d) == rightful {
                valid = true;
            } else {
                self.drop_ghid(&g);
            }
        }
        valid
    }

    fn target_ok(&self, t: &Ghid) -> Result<(), &'static str> {
        match self.live.get(t) {
            None | Some(M::Geoc) | Some(M::Dyn { .. }) => Ok(()),
            Some(_) => Err("invalid_target"),
        }
    }

    fn publish(&mut self, obj: &Object) -> Verdict {
        let mut next = self.clone();
        let verdict = next.apply(obj)?;
        next.sweep();
        *self = next;
        Ok(verdict)
    }

    fn apply(&mut self, obj: &Object) -> Verdict {
        let g = obj.ghid();
        if let Some(m) = self.live.get(&g) {
            let blocked = match m {
                M::Frame => false, // a live frame's dynamic object is alive: not blocked
                _ => self.rightful(&g).is_some_and(|r| self.debound_by(&g, r)),
            };
            return if blocked {
                Err("already_debound")
            } else {
                Ok(false)
            };
        }
        if let Some(s) = obj.signer() {
            if !matches!(self.live.get(&s), Some(M::Gidc)) {
                return Err("unknown_author");
            }
        }
        match obj {
            Object::Gidc(_) => {
                self.prune(&g, None);
                self.insert(g, M::Gidc);
            }
            Object::Geoc(_) => {
                if self.bindings(&g).is_empty() {
                    return Err("unbound_container");
                }
                self.prune(&g, None);
                self.insert(g, M::Geoc);
            }
            Object::Gobs(s) => {
                if self.prune(&g, Some(s.binder)) {
                    return Err("already_debound");
                }
                self.target_ok(&s.target)?;
                self.insert(
                    g,
                    M::Gobs {
                        binder: s.binder,
                        target: s.target,
                    },
                );
            }
            Object::Gobd(f) => self.frame(f)?,
            Object::Gdxx(d) => {
                if self.prune(&g, Some(d.debinder)) {
                    return Err("already_debound");
                }
                if self.live.contains_key(&d.target) {
                    match self.rightful(&d.target) {
                        None => return Err("invalid_target"),
                        Some(r) if r != d.debinder => return Err("inconsistent_author"),
                        Some(_) => {}
                    }
                }
                self.insert(
                    g,
                    M::Gdxx {
                        debinder: d.debinder,
                        target: d.target,
                    },
                );
            }
            Object::Garq(r) => {
                if !matches!(self.live.get(&r.recipient), Some(M::Gidc)) {
                    return Err("unknown_author");
                }
                if self.prune(&g, Some(r.recipient)) {
                    return Err("already_debound");
                }
                self.insert(
                    g,
                    M::Garq {
                        recipient: r.recipient,
                    },
                );
            }
            Object::GobdV15(_) => return Err("malformed"),
        }
        Ok(true)
    }

    fn frame(&mut self, f: &Gobd) -> Result<(), &'static str> {
        let current = match self.live.get(&f.dynamic) {
            None => None,
            Some(M::Dyn {
                binder,
                counter,
                frame,
                ..
            }) => Some((*binder, *counter, *frame)),
            Some(_) => return Err("illegal_frame"),
        };
        let debound = match current {
            Some((binder, ..)) => self.debound_by(&f.dynamic, binder),
            None => self.prune(&f.dynamic, Some(f.binder)),
        };
        if debound && self.bindings(&f.dynamic).is_empty() {
            return Err("already_debound");
        }
        if let Some((binder, counter, _)) = current {
            if binder != f.binder {
                return Err("inconsistent_author");
            }
            if f.counter <= counter {
                return Err("illegal_frame");
            }
        }
        let target = f.targets[0];
        self.target_ok(&target)?;
        let (mut at, mut depth) = (target, 0);
        loop {
            if at == f.dynamic {
                return Err("circular_binding");
            }
            match self.live.get(&at) {
                Some(M::Dyn { target, .. }) => {
                    depth += 1;
                    if depth > MAX_CHAIN_DEPTH {
                        return Err("limit");
                    }
                    at = *target;
                }
                _ => break,
            }
        }
        self.prune(&f.frame, None);
        if let Some((_, _, old)) = current {
            self.drop_ghid(&old);
        }
        self.insert(f.frame, M::Frame);
        let m = M::Dyn {
            binder: f.binder,
            counter: f.counter,
            frame: f.frame,
            target,
        };
        self.insert(f.dynamic, m);
        Ok(())
    }

    /// Rule 11 as a global fixed point: remove the first dead object until none is dead.
    fn sweep(&mut self) {
        loop {
            let dead = self.live.iter().find_map(|(g, m)| {
                let dead = match m {
                    M::Gidc | M::Frame => false,
                    M::Geoc => self.bindings(g).is_empty(),
                    M::Dyn { binder, .. } => {
                        self.debound_by(g, *binder) && self.bindings(g).is_empty()
                    }
                    M::Gobs { binder, .. } => self.debound_by(g, *binder),
                    M::Gdxx { debinder, .. } => self.debound_by(g, *debinder),
                    M::Garq { recipient } => self.debound_by(g, *recipient),
                };
                dead.then(|| (*g, m.clone()))
            });
            let Some((g, m)) = dead else { return };
            if let M::Dyn { frame, .. } = m {
                self.drop_ghid(&frame);
            }
            self.drop_ghid(&g);
        }
    }

    fn status(&self, g: &Ghid) -> Status {
        if self.live.contains_key(g) {
            Status::Present
        } else if self.collected.contains(g) {
            Status::Collected
        } else {
            Status::Unknown
        }
    }
}

fn verdict(r: Result<hypergolix::persist::Published, PersistError>) -> Verdict {
    r.map(|p| p.new).map_err(|e| e.code())
}

#[track_caller]
fn agree(ar: &Archive, model: &Model, ghids: &[Ghid], context: &str) {
    for g in ghids {
        let want = model.status(g);
        assert_eq!(ar.status(g).unwrap(), want, "status of {g:?} {context}");
        assert_eq!(ar.exists(g).unwrap(), want == Status::Present, "{context}");
        let frame = match model.live.get(g) {
            Some(M::Dyn { frame, .. }) => Some(*frame),
            _ => None,
        };
        assert_eq!(
            ar.current_frame(g).unwrap(),
            frame,
            "frame of {g:?} {context}"
        );
        if want == Status::Present {
            let listed: BTreeSet<Ghid> = ar.list_bindings(g).unwrap().into_iter().collect();
            assert_eq!(listed, model.bindings(g), "bindings of {g:?} {context}");
        }
    }
}

/// Opens the archive at `path`. sled's background threads release the file lock a moment
/// after the last handle drops, so a reopen right after a drop may find it still held:
/// retry, bounded (as `hgxd` does at start).
fn reopen(path: &std::path::Path) -> Archive {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match Archive::open(path) {
            Ok(a) => return a,
            Err(e) if std::time::Instant::now() < deadline && e.to_string().contains("lock") => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => panic!("reopen {}: {e}", path.display()),
        }
    }
}

/// One seeded run: random publishes (identities a little more often) and restarts.
fn run_seed(seed: u64) {
    let u = universe();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ghidcache");
    let mut ar = reopen(&path);
    let mut model = Model::default();
    let mut rng = StdRng::seed_from_u64(seed);
    let (mut accepted, mut refused, mut restarts) = (0, 0, 0);
    for op in 0..OPS {
        let roll = rng.gen_range(0..100);
        if roll < 4 {
            drop(ar);
            ar = reopen(&path);
            restarts += 1;
            agree(
                &ar,
                &model,
                &u.ghids,
                &format!("after restart (seed {seed}, op {op})"),
            );
            continue;
        }
        let it = if roll < 12 {
            &u.gidcs[rng.gen_range(0..u.gidcs.len())]
        } else {
            &u.others[rng.gen_range(0..u.others.len())]
        };
        let want = model.publish(&it.obj);
        let got = verdict(ar.publish(&it.bytes));
        let ctx = format!(
            "seed {seed}, op {op}, {:?} {:?}",
            it.obj.kind(),
            it.obj.ghid()
        );
        assert_eq!(got, want, "publish verdict, {ctx}");
        match want {
            Ok(true) => accepted += 1,
            Err(_) => refused += 1,
            Ok(false) => {}
        }
        agree(&ar, &model, &u.ghids, &ctx);
    }
    drop(ar);
    let ar = reopen(&path);
    agree(&ar, &model, &u.ghids, &format!("at the end (seed {seed})"));
    assert!(
        accepted > 10 && refused > 5 && restarts > 0,
        "seed {seed} exercised little"
    );
}

#[test]
fn store_and_rules_match_the_model() {
    universe();
    // Seeds are independent (one sled directory each): run them on a few threads.
    const WORKERS: u64 = 4;
    std::thread::scope(|s| {
        for w in 0..WORKERS {
            s.spawn(move || (w..SEEDS).step_by(WORKERS as usize).for_each(run_seed));
        }
    });
}

#[test]
fn synced_writes_survive_reopen() {
    let u = universe();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ghidcache");
    let ar = Archive::open(&path).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    for it in &u.gidcs {
        ar.publish(&it.bytes).unwrap();
    }
    rt.block_on(ar.sync()).unwrap();
    assert!(ar.flush_count() >= 1);
    drop(ar);
    let ar = reopen(&path);
    for it in &u.gidcs {
        assert_eq!(
            ar.get(&it.obj.ghid()).unwrap().as_deref(),
            Some(&it.bytes[..])
        );
    }
}

/// A store whose flushes wait for the test to let them through, and are counted.
struct GatedStore {
    inner: SledStore,
    entered: AtomicUsize,
    gate: Mutex<mpsc::Receiver<()>>,
}

impl Store for GatedStore {
    fn object(&self, g: &Ghid) -> Result<Option<Bytes>, PersistError> {
        self.inner.object(g)
    }
    fn record(&self, g: &Ghid) -> Result<Option<Record>, PersistError> {
        self.inner.record(g)
    }
    fn bindings(&self, t: &Ghid) -> Result<Vec<Binding>, PersistError> {
        self.inner.bindings(t)
    }
    fn debindings(&self, t: &Ghid) -> Result<Vec<Debinding>, PersistError> {
        self.inner.debindings(t)
    }
    fn requests(&self, r: &Ghid) -> Result<Vec<(Ghid, Sender)>, PersistError> {
        self.inner.requests(r)
    }
    fn is_collected(&self, g: &Ghid) -> Result<bool, PersistError> {
        self.inner.is_collected(g)
    }
    fn apply(&self, w: &WriteSet) -> Result<(), PersistError> {
        self.inner.apply(w)
    }
    fn flush(&self) -> Result<(), PersistError> {
        self.entered.fetch_add(1, Ordering::SeqCst);
        // Err = the test dropped its sender: let everything through.
        let _ = self.gate.lock().unwrap().recv();
        self.inner.flush()
    }
}

#[test]
fn concurrent_syncs_share_one_flush() {
    fn shareable<T: Clone + Send + Sync + 'static>() {}
    shareable::<Archive>();
    let (open, gate) = mpsc::channel();
    let store = Arc::new(GatedStore {
        inner: SledStore::temporary().unwrap(),
        entered: AtomicUsize::new(0),
        gate: Mutex::new(gate),
    });
    let ar = Archive::with_store(store.clone()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        let first = tokio::spawn({
            let ar = ar.clone();
            async move { ar.sync().await }
        });
        while store.entered.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        // Flush 1 is running (held at the gate); these 32 all register behind it.
        let rest: Vec<_> = (0..32)
            .map(|_| {
                let ar = ar.clone();
                tokio::spawn(async move { ar.sync().await })
            })
            .collect();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        open.send(()).unwrap();
        open.send(()).unwrap();
        first.await.unwrap().unwrap();
        for r in rest {
            r.await.unwrap().unwrap();
        }
    });
    assert_eq!(ar.flush_count(), 2, "33 syncs, two flushes");
    assert_eq!(store.entered.load(Ordering::SeqCst), 2);
    drop(open);
}
