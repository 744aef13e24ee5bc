//! GOBD v16 (dynamic binding frame; read and write) and GOBD v15 (legacy; read and verify
//! only, for old caches and the Hypergolix vectors).

use super::codec::{address_of, after_length, checked_ghid, put_header, Sink};
use super::{Algo, DecodeError, Ghid, Policy, Reader, Suite, GHID_LEN, SIG_LEN};

pub const GOBD_MAGIC: &str = "GOBD";
pub const GOBD_VERSION: u32 = 16;
pub const GOBD_V15_VERSION: u32 = 15;
/// Size without the target vector.
pub const GOBD_OVERHEAD: usize = 726;
/// Most targets a vector can hold (u16 byte length).
pub const MAX_TARGETS: usize = u16::MAX as usize / GHID_LEN;

/// One frame of a dynamic object.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Gobd {
    pub suite: Suite,
    pub binder: Ghid,
    /// Frame index, 0 for the first frame, +1 per frame.
    pub counter: u64,
    /// Newest first; `targets[0]` is the current target and the only one that keeps anything
    /// alive. Never empty.
    pub targets: Vec<Ghid>,
    /// Fixed by frame 0: the hash of frame 0 up to its dynamic algo byte.
    pub dynamic: Ghid,
    /// This frame's address.
    pub frame: Ghid,
    pub signature: [u8; SIG_LEN],
}

/// A target vector (or v15 history) whose byte length, already read, is `len`.
fn read_targets(
    r: &mut Reader<'_>,
    field: &'static str,
    len: usize,
    policy: Policy,
) -> Result<Vec<Ghid>, DecodeError> {
    if len % GHID_LEN != 0 {
        return Err(DecodeError::BadLength { field, len });
    }
    let raw = r.take(len, field)?;
    raw.chunks_exact(GHID_LEN)
        .map(|c| checked_ghid(c, policy))
        .collect()
}

fn put_targets(s: &mut impl Sink, targets: &[Ghid]) {
    // Decoding can never produce more (u16 byte length); only a hand-built struct can.
    assert!(
        targets.len() <= MAX_TARGETS,
        "a target vector holds at most {MAX_TARGETS} ghids"
    );
    s.put(&((targets.len() * GHID_LEN) as u16).to_be_bytes());
    for t in targets {
        s.put(t.as_bytes());
    }
}

impl Gobd {
    pub fn read(r: &mut Reader<'_>, policy: Policy) -> Result<Gobd, DecodeError> {
        let suite = r.header(GOBD_MAGIC, GOBD_VERSION, policy)?;
        let binder = r.ghid("binder", policy)?;
        let counter = r.u64("counter")?;
        let len = usize::from(r.u16("target vector")?);
        let available = r.remaining().saturating_sub(2 * GHID_LEN + SIG_LEN);
        let targets = read_targets(r, "target vector", len, policy)?;
        if targets.is_empty() {
            return Err(DecodeError::BadLength {
                field: "target vector",
                len: 0,
            });
        }
        let tail = |r: &mut Reader<'_>| -> Result<(Ghid, Ghid, [u8; SIG_LEN]), DecodeError> {
            Ok((
                r.address(policy)?,
                r.address(policy)?,
                r.array("signature")?,
            ))
        };
        let (dynamic, frame, signature) =
            tail(r).map_err(|e| after_length(e, "target vector", len as u64, available))?;
        Ok(Gobd {
            suite,
            binder,
            counter,
            targets,
            dynamic,
            frame,
            signature,
        })
    }

    /// Everything up to and including the dynamic algo byte (what frame 0's dynamic ghid hashes).
    fn write_dynamic_prefix(&self, s: &mut impl Sink) {
        put_header(s, GOBD_MAGIC, GOBD_VERSION, self.suite);
        s.put(self.binder.as_bytes());
        s.put(&self.counter.to_be_bytes());
        put_targets(s, &self.targets);
        s.put(&[self.dynamic.algo().0]);
    }

    pub(crate) fn write_prefix(&self, s: &mut impl Sink) {
        self.write_dynamic_prefix(s);
        s.put(self.dynamic.digest());
        s.put(&[self.frame.algo().0]);
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(GOBD_OVERHEAD + self.targets.len() * GHID_LEN);
        self.write_prefix(&mut out);
        out.put(self.frame.digest());
        out.put(&self.signature);
        out
    }

    /// The frame address recomputed from the content.
    pub fn computed_address(&self) -> Ghid {
        address_of(self.frame.algo(), |h| self.write_prefix(h))
    }

    /// The dynamic ghid this frame would have if it were frame 0.
    pub fn computed_dynamic(&self) -> Ghid {
        address_of(self.dynamic.algo(), |h| self.write_dynamic_prefix(h))
    }

    /// The current target.
    pub fn target(&self) -> Ghid {
        self.targets[0]
    }
}

/// A legacy frame: one target and a history of previous frame ghids (newest first).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct GobdV15 {
    pub suite: Suite,
    pub binder: Ghid,
    pub history: Vec<Ghid>,
    pub target: Ghid,
    pub dynamic: Ghid,
    pub frame: Ghid,
    pub signature: [u8; SIG_LEN],
}

impl GobdV15 {
    pub fn read(r: &mut Reader<'_>, policy: Policy) -> Result<GobdV15, DecodeError> {
        let suite = r.header(GOBD_MAGIC, GOBD_V15_VERSION, policy)?;
        let binder = r.ghid("binder", policy)?;
        let len = usize::from(r.u16("history")?);
        let available = r.remaining().saturating_sub(3 * GHID_LEN + SIG_LEN);
        let history = read_targets(r, "history", len, policy)?;
        type Tail = (Ghid, Ghid, Ghid, [u8; SIG_LEN]);
        let tail = |r: &mut Reader<'_>| -> Result<Tail, DecodeError> {
            Ok((
                r.ghid("target", policy)?,
                r.address(policy)?,
                r.address(policy)?,
                r.array("signature")?,
            ))
        };
        let (target, dynamic, frame, signature) =
            tail(r).map_err(|e| after_length(e, "history", len as u64, available))?;
        Ok(GobdV15 {
            suite,
            binder,
            history,
            target,
            dynamic,
            frame,
            signature,
        })
    }

    fn write_dynamic_prefix(&self, s: &mut impl Sink) {
        put_header(s, GOBD_MAGIC, GOBD_V15_VERSION, self.suite);
        s.put(self.binder.as_bytes());
        put_targets(s, &self.history);
        s.put(self.target.as_bytes());
        s.put(&[self.dynamic.algo().0]);
    }

    pub(crate) fn write_prefix(&self, s: &mut impl Sink) {
        self.write_dynamic_prefix(s);
        s.put(self.dynamic.digest());
        s.put(&[self.frame.algo().0]);
    }

    /// Re-encodes a decoded frame byte for byte. (Nothing writes new v15 frames.)
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_prefix(&mut out);
        out.put(self.frame.digest());
        out.put(&self.signature);
        out
    }

    pub fn computed_address(&self) -> Ghid {
        address_of(self.frame.algo(), |h| self.write_prefix(h))
    }

    pub fn computed_dynamic(&self) -> Ghid {
        address_of(self.dynamic.algo(), |h| self.write_dynamic_prefix(h))
    }
}

/// Placeholder for a frame being built: the address fields are filled in by the signer.
pub(crate) fn unsigned_frame(
    suite: Suite,
    binder: Ghid,
    counter: u64,
    targets: Vec<Ghid>,
    dynamic: Option<Ghid>,
    algo: Algo,
) -> Gobd {
    let mut f = Gobd {
        suite,
        binder,
        counter,
        targets,
        dynamic: dynamic.unwrap_or_else(|| Ghid::new(algo, [0; 64])),
        frame: Ghid::new(algo, [0; 64]),
        signature: [0; SIG_LEN],
    };
    if dynamic.is_none() {
        f.dynamic = f.computed_dynamic();
    }
    f.frame = f.computed_address();
    f
}
