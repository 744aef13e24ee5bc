//! # Account
//!
//! Owns: the user's account. That is the identity ([`FirstParty`]), the password-derived root
//! secret, the **root dynamic object** (its dynamic ghid is the `user_id`) and everything the
//! account keeps in it ([`AccountState`]: the secret store, app tokens, startup and private
//! objects, api ids, pending and orphan shares, shares received and not adopted yet, holds). The state is synced to every machine of
//! the user through the root object itself (docs/architecture.md); nothing else
//! persists it.
//!
//! Calls: `golix` only (containers, frames, the secret ratchet), plus scrypt and HKDF. No I/O,
//! no actors, no clocks. The caller (the daemon) ingests the bytes that [`Account::create`] and
//! [`Account::flush`] return, in order (a binding before its container), and fetches and
//! verifies the root frame and container that [`Account::open`] takes, from the local cache
//! or the remotes.
//!
//! # The root object
//!
//! - Root secret: `scrypt(password, salt = the 65 fingerprint bytes, ScryptParams, 48 bytes)`,
//!   key = bytes 0..32, seed = bytes 32..48 ([`derive_root_secret`]).
//! - Frame 0 holds random filler under a random, forgotten secret: its only purpose is to fix
//!   the dynamic ghid. Every later frame `k` is master-secreted:
//!   `secret_k = root_secret.ratchet(frame_k.targets[1], frame_k.dynamic)`, so the current
//!   frame is always openable from the root secret alone.
//! - Plaintext: `b"HGXA" | u32 version (1) | u32 len | msgpack(RootDoc) | random padding |
//!   SHA-512 of everything before (64 bytes)`, integers big-endian. A trailer that does not
//!   check out means the password is wrong ([`DaemonError::WrongPassword`]).
//! - `RootDoc = { identity: { signature_pkcs8, encryption_pkcs8, exchange }, state }`, named
//!   msgpack fields, byte strings as `bin`; unknown fields are ignored and missing ones default,
//!   so later versions can add fields.
//!
//! Secrets never appear in `Debug` output or error messages; plaintext buffers are zeroized.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::Write;
use std::sync::Arc;

use hkdf::Hkdf;
use rand::{Rng, RngCore};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha512};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::api::AppToken;
use super::error::DaemonError;
use crate::golix::{FirstParty, Geoc, Ghid, Gobd, Policy, Secret, DEFAULT_LEGROOM};

/// Magic of the root plaintext.
pub const ROOT_MAGIC: &[u8; 4] = b"HGXA";
/// Version of the root plaintext layout.
pub const ROOT_VERSION: u32 = 1;
/// Length of the scrypt output: a suite-1 key (32) and seed (16).
pub const ROOT_SECRET_LEN: usize = 48;
/// Magic + version + length.
const ROOT_HEADER_LEN: usize = 12;
/// The SHA-512 trailer.
const ROOT_TRAILER_LEN: usize = 64;
/// Padding: at least this many random bytes...
const PAD_MIN: usize = 64;
/// ...plus a random number of bytes below this.
const PAD_RANDOM: usize = 1024;
/// Targets each root frame keeps (newest first), so older containers stay reachable.
const ROOT_LEGROOM: usize = DEFAULT_LEGROOM;
/// HKDF info of the local vault key.
const VAULT_INFO: &[u8] = b"hgx local vault v1";
/// Largest scrypt memory we agree to allocate (128 · r · 2^log_n bytes): 4 GiB.
const MAX_SCRYPT_MEMORY: u128 = 1 << 32;
/// Largest scrypt parallelism we agree to run (time grows linearly with p).
const MAX_SCRYPT_P: u32 = 64;

/// scrypt cost parameters. Recorded in the config beside the fingerprint so they can be raised
/// later without locking existing users out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ScryptParams {
    /// log2 of N.
    pub log_n: u8,
    pub r: u32,
    pub p: u32,
}

impl ScryptParams {
    /// N = 2^15, r = 8, p = 1: what the Python reference used.
    pub const DEFAULT: ScryptParams = ScryptParams {
        log_n: 15,
        r: 8,
        p: 1,
    };
    /// N = 2^10: fast, for tests only.
    pub const TEST: ScryptParams = ScryptParams {
        log_n: 10,
        r: 8,
        p: 1,
    };

    fn to_scrypt(self) -> Result<scrypt::Params, DaemonError> {
        let out_of_range = self.log_n >= 64
            || (128 * u128::from(self.r)) << self.log_n > MAX_SCRYPT_MEMORY
            || self.p > MAX_SCRYPT_P;
        if out_of_range {
            return Err(DaemonError::Account(format!(
                "scrypt parameters out of range: {self:?}"
            )));
        }
        scrypt::Params::new(self.log_n, self.r, self.p, ROOT_SECRET_LEN)
            .map_err(|_| DaemonError::Account(format!("invalid scrypt parameters: {self:?}")))
    }
}

impl Default for ScryptParams {
    fn default() -> Self {
        ScryptParams::DEFAULT
    }
}

/// `scrypt(password, salt = the 65 fingerprint bytes, params, 48 bytes)` ->
/// `Secret(key = bytes 0..32, seed = bytes 32..48)`. Slow by design (about 0.1 s at the
/// default parameters in release builds).
pub fn derive_root_secret(
    password: &[u8],
    fingerprint: &Ghid,
    params: ScryptParams,
) -> Result<Secret, DaemonError> {
    let params = params.to_scrypt()?;
    let mut out = Zeroizing::new([0u8; ROOT_SECRET_LEN]);
    scrypt::scrypt(password, fingerprint.as_bytes(), &params, &mut out[..])
        .map_err(|_| DaemonError::Account("scrypt output length".into()))?;
    let mut key = Zeroizing::new([0u8; 32]);
    let mut seed = Zeroizing::new([0u8; 16]);
    key.copy_from_slice(&out[..32]);
    seed.copy_from_slice(&out[32..]);
    Ok(Secret::from_parts(*key, *seed))
}

/// An app token as stored in the account: serialized as msgpack `bin` (16 bytes), ordered by
/// its bytes. Tokens are bearer credentials for private objects, so `Debug` shows only a
/// prefix.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AppTokenBytes(pub AppToken);

impl From<AppToken> for AppTokenBytes {
    fn from(t: AppToken) -> Self {
        AppTokenBytes(t)
    }
}

impl From<AppTokenBytes> for AppToken {
    fn from(t: AppTokenBytes) -> Self {
        t.0
    }
}

impl fmt::Debug for AppTokenBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AppToken({}…)", hex::encode(&self.0[..4]))
    }
}

impl Serialize for AppTokenBytes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for AppTokenBytes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let b: serde_bytes::ByteBuf = Deserialize::deserialize(d)?;
        let t: AppToken = b
            .as_slice()
            .try_into()
            .map_err(|_| serde::de::Error::invalid_length(b.len(), &"a 16-byte app token"))?;
        Ok(AppTokenBytes(t))
    }
}

/// `Secret` as msgpack `bin` of its 53-byte encoding; decoding refuses suite 0.
mod secret_bin {
    use super::*;

    pub fn serialize<S: serde::Serializer>(secret: &Secret, s: S) -> Result<S::Ok, S::Error> {
        let b = Zeroizing::new(secret.encode());
        s.serialize_bytes(&b)
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
        let b: serde_bytes::ByteBuf = Deserialize::deserialize(d)?;
        let b = Zeroizing::new(b.into_vec());
        Secret::decode(&b, Policy::STRICT).map_err(|_| serde::de::Error::custom("malformed secret"))
    }
}

/// The newest secret we know for an object, and the container it opens.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSecret {
    /// `Debug` of [`Secret`] is redacted.
    #[serde(with = "secret_bin")]
    pub secret: Secret,
    pub container: Ghid,
}

/// An outgoing share awaiting the recipient's ack or nak.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingShare {
    /// The GARQ (handshake) we sent.
    pub request: Ghid,
    /// The shared object.
    pub target: Ghid,
    /// Whom we shared it with.
    pub recipient: Ghid,
    /// The app that asked for the share, to route the result to.
    #[serde(default)]
    pub token: Option<AppTokenBytes>,
}

/// A received share that no app has handled yet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrphanShare {
    /// The shared object.
    pub ghid: Ghid,
    /// The sharer's fingerprint.
    pub origin: Ghid,
    #[serde(default)]
    pub api_id: Option<Ghid>,
}

/// Everything the account keeps, synced through its root object. Every field defaults, so a
/// later version can add fields and an older one ignores them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AccountState {
    /// Object ghid (dynamic ghid, or static container ghid) -> the newest secret we know and
    /// the container it opens.
    pub secrets: BTreeMap<Ghid, StoredSecret>,
    /// Registered app tokens.
    pub tokens: BTreeSet<AppTokenBytes>,
    /// Token -> its startup object.
    pub startup: BTreeMap<AppTokenBytes, Ghid>,
    /// Private object -> the token that owns it.
    pub private: BTreeMap<Ghid, AppTokenBytes>,
    /// Object -> api_id, for the objects we know.
    pub api_ids: BTreeMap<Ghid, Ghid>,
    /// Outgoing shares awaiting ack/nak.
    pub pending_shares: Vec<PendingShare>,
    /// Received shares no app handled yet.
    pub orphan_shares: Vec<OrphanShare>,
    /// Objects other users shared with us that no app of ours has acted on yet (loaded,
    /// held, shared on, made a startup object) -> the sharer's fingerprint. Their secrets are
    /// in `secrets` like any other; these entries are what the bounds on what other users
    /// can make us keep count (`account_actor::ShareLimits`). Absent in older roots.
    pub received_shares: BTreeMap<Ghid, Ghid>,
    /// When each entry of `received_shares` was received (unix milliseconds): unadopted entries
    /// older than `account_actor::MAX_UNADOPTED_AGE` are forgotten, and past the bound in
    /// all the newest go first. Absent in older roots: an entry without one is dated when
    /// this daemon first sees it.
    pub received_at: BTreeMap<Ghid, u64>,
    /// Objects held (kept alive) by the user.
    pub holds: BTreeSet<Ghid>,
}

/// The identity keys as written into the root document (borrowed: nothing is copied).
#[derive(Serialize)]
struct IdentityOut<'a> {
    #[serde(with = "serde_bytes")]
    signature_pkcs8: &'a [u8],
    #[serde(with = "serde_bytes")]
    encryption_pkcs8: &'a [u8],
    #[serde(with = "serde_bytes")]
    exchange: &'a [u8],
}

#[derive(Serialize)]
struct RootDocOut<'a> {
    identity: IdentityOut<'a>,
    state: &'a AccountState,
}

/// The identity keys as read from the root document: borrowed from the (zeroized) plaintext.
#[derive(Deserialize)]
struct IdentityIn<'a> {
    #[serde(borrow, with = "serde_bytes")]
    signature_pkcs8: &'a [u8],
    #[serde(borrow, with = "serde_bytes")]
    encryption_pkcs8: &'a [u8],
    #[serde(borrow, with = "serde_bytes")]
    exchange: &'a [u8],
}

#[derive(Deserialize)]
struct RootDocIn<'a> {
    #[serde(borrow)]
    identity: IdentityIn<'a>,
    #[serde(default)]
    state: AccountState,
}

/// Counts the bytes a serializer writes, so the real buffer can be allocated once, exactly
/// (a growing `Vec` would leave copies of key material behind in freed memory).
struct CountingWriter(usize);

impl Write for CountingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Named msgpack of `value`, written into one zeroize-on-drop buffer allocated once: it starts
/// with `reserve_before` zero bytes (for a header), then the msgpack, and has room for
/// `reserve_after` more bytes without reallocating. Returns the buffer and the msgpack length.
pub(crate) fn msgpack_exact<T: Serialize>(
    value: &T,
    reserve_before: usize,
    reserve_after: usize,
) -> Result<(Zeroizing<Vec<u8>>, usize), rmp_serde::encode::Error> {
    let mut count = CountingWriter(0);
    rmp_serde::encode::write_named(&mut count, value)?;
    let mut out = Zeroizing::new(Vec::with_capacity(reserve_before + count.0 + reserve_after));
    out.resize(reserve_before, 0);
    rmp_serde::encode::write_named(&mut *out, value)?;
    Ok((out, count.0))
}

fn account_err(msg: impl Into<String>) -> DaemonError {
    DaemonError::Account(msg.into())
}

/// The root plaintext for `identity` and `state` (see the module doc).
fn seal_root(
    identity: &FirstParty,
    state: &AccountState,
) -> Result<Zeroizing<Vec<u8>>, DaemonError> {
    let keys = identity.export();
    let doc = RootDocOut {
        identity: IdentityOut {
            signature_pkcs8: &keys.signature_pkcs8,
            encryption_pkcs8: &keys.encryption_pkcs8,
            exchange: &keys.exchange[..],
        },
        state,
    };
    let mut rng = rand::thread_rng();
    let pad = PAD_MIN + rng.gen_range(0..PAD_RANDOM);
    let (mut out, len) = msgpack_exact(&doc, ROOT_HEADER_LEN, pad + ROOT_TRAILER_LEN)
        .map_err(|e| account_err(format!("cannot encode the account state: {e}")))?;
    let len = u32::try_from(len).map_err(|_| account_err("account state too large"))?;
    out[..4].copy_from_slice(ROOT_MAGIC);
    out[4..8].copy_from_slice(&ROOT_VERSION.to_be_bytes());
    out[8..12].copy_from_slice(&len.to_be_bytes());
    let start = out.len();
    out.resize(start + pad, 0);
    rng.fill_bytes(&mut out[start..]);
    let digest = Sha512::digest(&out[..]);
    out.extend_from_slice(&digest);
    Ok(out)
}

/// Parses a root plaintext: the trailer first (a mismatch is a wrong password), then the
/// header and the document. Pure (public so that the fuzz target `account_state` reaches it);
/// [`Account::open`] calls it on the decrypted root container.
pub fn unseal_root(plain: &[u8]) -> Result<(FirstParty, AccountState), DaemonError> {
    if plain.len() < ROOT_HEADER_LEN + ROOT_TRAILER_LEN {
        return Err(account_err("root container too short"));
    }
    let (body, trailer) = plain.split_at(plain.len() - ROOT_TRAILER_LEN);
    let digest = Sha512::digest(body);
    if !bool::from(digest.as_slice().ct_eq(trailer)) {
        return Err(DaemonError::WrongPassword);
    }
    if &body[..4] != ROOT_MAGIC {
        return Err(account_err("root object is not an account (bad magic)"));
    }
    let version = u32::from_be_bytes(body[4..8].try_into().expect("4"));
    if version != ROOT_VERSION {
        return Err(account_err(format!(
            "unsupported account version {version}"
        )));
    }
    let len = u32::from_be_bytes(body[8..12].try_into().expect("4")) as usize;
    let doc = body[ROOT_HEADER_LEN..]
        .get(..len)
        .ok_or_else(|| account_err("account document length exceeds the container"))?;
    // No serde detail in the message: it could quote decrypted bytes.
    let doc: RootDocIn<'_> =
        rmp_serde::from_slice(doc).map_err(|_| account_err("account document does not decode"))?;
    let exchange: &[u8; 32] = doc
        .identity
        .exchange
        .try_into()
        .map_err(|_| account_err("identity exchange key is not 32 bytes"))?;
    let identity = FirstParty::import(
        doc.identity.signature_pkcs8,
        doc.identity.encryption_pkcs8,
        exchange,
    )
    .map_err(|e| account_err(format!("identity keys do not load: {e}")))?;
    Ok((identity, doc.state))
}

/// The user's account: identity, root object and state. See the module doc.
pub struct Account {
    /// Our identity; shared with whoever signs for us.
    identity: Arc<FirstParty>,
    /// Password-derived; every root frame after frame 0 is ratcheted from it.
    root_secret: Secret,
    /// The newest root frame we wrote or opened.
    frame: Gobd,
    state: AccountState,
    /// `state` changed since the last flush or open.
    dirty: bool,
}

impl fmt::Debug for Account {
    /// Addresses and counts only: no key material, no state contents.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Account")
            .field("user_id", &self.user_id())
            .field("fingerprint", &self.fingerprint())
            .field("frame_counter", &self.frame.counter)
            .field("secrets", &self.state.secrets.len())
            .field("tokens", &self.state.tokens.len())
            .field("dirty", &self.dirty)
            .finish_non_exhaustive()
    }
}

impl Account {
    /// A new account for `identity` (a fixture in tests, generated on first run). Builds the
    /// root dynamic object: frame 0 with random filler under a random secret, then frame 1
    /// holding the (empty) state under a master-derived secret, so the current frame is always
    /// openable from `root_secret`.
    ///
    /// Returns the account and the Golix objects to ingest, in ingest order: the GIDC, then
    /// for each frame the GOBD before its GEOC (a binding must arrive before its container).
    pub fn create(
        identity: FirstParty,
        root_secret: Secret,
    ) -> Result<(Account, Vec<Vec<u8>>), DaemonError> {
        let identity = Arc::new(identity);
        let mut objects = vec![identity.gidc().encode()];
        let mut rng = rand::thread_rng();
        let mut filler = vec![0u8; PAD_MIN + rng.gen_range(0..PAD_RANDOM)];
        rng.fill_bytes(&mut filler);
        let c0 = identity.make_container(&filler, &Secret::random())?;
        let f0 = identity.make_bind_dynamic(c0.ghid)?;
        objects.push(f0.encode());
        objects.push(c0.encode());
        let mut account = Account {
            identity,
            root_secret,
            frame: f0,
            state: AccountState::default(),
            dirty: true,
        };
        objects.extend(account.flush()?);
        Ok((account, objects))
    }

    /// Opens the account from the root's current `frame` and that frame's target `container`,
    /// both verified by the caller. Fails with [`DaemonError::WrongPassword`] when the SHA-512
    /// trailer of the decrypted plaintext does not check out, and with
    /// [`DaemonError::Account`] for other inconsistencies (the container is not the frame's
    /// target, frame 0, the frame's binder or the container's author is not the identity
    /// inside, a malformed document).
    pub fn open(
        root_secret: Secret,
        frame: &Gobd,
        container: &Geoc,
    ) -> Result<Account, DaemonError> {
        if frame.target() != container.ghid {
            return Err(account_err(
                "container is not the root frame's current target",
            ));
        }
        if frame.counter == 0 || frame.targets.len() < 2 {
            return Err(account_err(
                "root frame 0 is not openable from the root secret",
            ));
        }
        let secret = root_secret.ratchet(&frame.targets[1], &frame.dynamic);
        let plain = Zeroizing::new(FirstParty::decrypt(container, &secret));
        let (identity, state) = unseal_root(&plain)?;
        if frame.binder != identity.ghid() {
            return Err(account_err(format!(
                "root frame binder {} is not the account identity {}",
                frame.binder,
                identity.ghid()
            )));
        }
        if container.author != identity.ghid() {
            return Err(account_err(format!(
                "root container author {} is not the account identity {}",
                container.author,
                identity.ghid()
            )));
        }
        Ok(Account {
            identity: Arc::new(identity),
            root_secret,
            frame: frame.clone(),
            state,
            dirty: false,
        })
    }

    /// Makes the next flush follow `newest`: a root frame of ours that the local archive holds
    /// but whose container a crash lost, not older than the frame the account was opened
    /// from. The state stays the one opened; the next frame's counter exceeds `newest`'s (the
    /// archive refuses any other), and a flush is due. The next container's secret derives
    /// from the root secret and `newest`'s target address alone, so the lost container is not
    /// needed, and a reader opens the next root as usual.
    pub fn continue_after(&mut self, newest: &Gobd) -> Result<(), DaemonError> {
        if newest.dynamic != self.frame.dynamic || newest.binder != self.identity.ghid() {
            return Err(account_err(
                "the frame to continue after is not of this root",
            ));
        }
        if newest.counter < self.frame.counter {
            return Err(account_err(
                "the frame to continue after is older than the root",
            ));
        }
        self.frame = newest.clone();
        self.dirty = true;
        Ok(())
    }

    /// The root object's dynamic ghid.
    pub fn user_id(&self) -> Ghid {
        self.frame.dynamic
    }

    /// Our identity's ghid.
    pub fn fingerprint(&self) -> Ghid {
        self.identity.ghid()
    }

    pub fn identity(&self) -> &Arc<FirstParty> {
        &self.identity
    }

    /// The newest root frame (written by [`Account::flush`] or given to [`Account::open`]).
    pub fn frame(&self) -> &Gobd {
        &self.frame
    }

    pub fn state(&self) -> &AccountState {
        &self.state
    }

    /// Mutable state; marks the account dirty (flush to persist it).
    pub fn state_mut(&mut self) -> &mut AccountState {
        self.dirty = true;
        &mut self.state
    }

    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// A new root frame holding the current state. Returns `[frame, container]` to ingest, in
    /// that order. Clears the dirty flag.
    pub fn flush(&mut self) -> Result<Vec<Vec<u8>>, DaemonError> {
        let plain = seal_root(&self.identity, &self.state)?;
        let previous = self.frame.target();
        let secret = self.root_secret.ratchet(&previous, &self.frame.dynamic);
        let container = self.identity.make_container(&plain, &secret)?;
        let frame = self
            .identity
            .make_next_frame(&self.frame, container.ghid, ROOT_LEGROOM)?;
        debug_assert_eq!(frame.targets.get(1), Some(&previous));
        let out = vec![frame.encode(), container.encode()];
        self.frame = frame;
        self.dirty = false;
        Ok(out)
    }

    /// The objects of the last [`Account::flush`] were not committed: the state is to be
    /// written again (the next frame follows the uncommitted one; its secret derives from the
    /// root secret and that frame's target address alone, as after [`Account::continue_after`]).
    pub fn unflushed(&mut self) {
        self.dirty = true;
    }

    /// The 32-byte key of the local vault: HKDF-SHA512(IKM = root key ‖ root seed, no salt,
    /// info = `"hgx local vault v1"`).
    pub fn vault_key(&self) -> Zeroizing<[u8; 32]> {
        vault_key(&self.root_secret)
    }
}

/// [`Account::vault_key`] from the root secret alone (start-up reads the vault before the
/// account is opened).
pub fn vault_key(root_secret: &Secret) -> Zeroizing<[u8; 32]> {
    let mut ikm = Zeroizing::new([0u8; 48]);
    ikm[..32].copy_from_slice(root_secret.key());
    ikm[32..].copy_from_slice(root_secret.seed());
    let hk = Hkdf::<Sha512>::new(None, &ikm[..]);
    let mut okm = Zeroizing::new([0u8; 32]);
    hk.expand(VAULT_INFO, &mut okm[..])
        .expect("32 bytes is a valid HKDF-SHA512 length");
    okm
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::golix::Algo;

    fn fixture1() -> FirstParty {
        crate::testdata::fixture_first_party(1)
    }

    /// Every way the bytes of `secret` could be spelled in a Debug string.
    fn spellings(bytes: &[u8]) -> Vec<String> {
        vec![
            hex::encode(bytes),
            hex::encode_upper(bytes),
            format!("{bytes:?}"),
            format!("{:?}", &bytes[..8]),
            base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE, bytes),
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, bytes),
        ]
    }

    #[test]
    fn debug_shows_no_key_bytes() {
        let secret = Secret::random();
        let stored = StoredSecret {
            secret: secret.clone(),
            container: Ghid::pseudorandom(Algo::SHA512),
        };
        let mut state = AccountState::default();
        state
            .secrets
            .insert(Ghid::pseudorandom(Algo::SHA512), stored.clone());
        let root = Secret::random();
        let (mut account, _) = Account::create(fixture1(), root.clone()).unwrap();
        account.state_mut().secrets = state.secrets.clone();
        let vault_key = account.vault_key();
        let keys = account.identity().export();
        let printed = [
            format!("{stored:?}"),
            format!("{stored:#?}"),
            format!("{state:?}"),
            format!("{account:?}"),
            format!("{account:#?}"),
        ];
        let mut forbidden = Vec::new();
        for b in [
            &secret.key()[..],
            &secret.seed()[..],
            &root.key()[..],
            &root.seed()[..],
            &vault_key[..],
            &keys.exchange[..],
            &keys.signature_pkcs8[64..128],
        ] {
            forbidden.extend(spellings(b));
        }
        for p in &printed {
            for f in &forbidden {
                assert!(!p.contains(f.as_str()), "{p} leaks {f}");
            }
        }
        assert!(printed[0].contains("redacted"));
    }

    #[test]
    fn handles_cross_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Account>();
        send_sync::<AccountState>();
        send_sync::<crate::actors::vault::Vault>();
    }

    #[test]
    fn app_token_debug_is_a_prefix() {
        let t = AppTokenBytes([0xab; 16]);
        assert_eq!(format!("{t:?}"), "AppToken(abababab…)");
    }

    #[test]
    fn scrypt_params_bounds() {
        assert_eq!(
            ScryptParams::default(),
            ScryptParams {
                log_n: 15,
                r: 8,
                p: 1
            }
        );
        assert!(ScryptParams::DEFAULT.to_scrypt().is_ok());
        for bad in [
            ScryptParams {
                log_n: 15,
                r: 0,
                p: 1,
            },
            ScryptParams {
                log_n: 15,
                r: 8,
                p: 0,
            },
            ScryptParams {
                log_n: 64,
                r: 8,
                p: 1,
            },
            ScryptParams {
                log_n: 30,
                r: 8,
                p: 1,
            },
            ScryptParams {
                log_n: 15,
                r: 8,
                p: 1000,
            },
        ] {
            assert!(
                matches!(bad.to_scrypt(), Err(DaemonError::Account(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_state_written_before_received_shares_loads() {
        /// What a root of an older version held (a subset of today's fields).
        #[derive(Serialize)]
        struct Older {
            holds: BTreeSet<Ghid>,
            orphan_shares: Vec<OrphanShare>,
        }
        let held = Ghid::pseudorandom(Algo::SHA512);
        let older = Older {
            holds: [held].into(),
            orphan_shares: Vec::new(),
        };
        let bytes = rmp_serde::to_vec_named(&older).unwrap();
        let state: AccountState = rmp_serde::from_slice(&bytes).unwrap();
        assert!(state.holds.contains(&held));
        assert!(state.received_shares.is_empty());
        assert!(state.received_at.is_empty());
    }

    #[test]
    fn root_plaintext_round_trips_and_trailer_guards_it() {
        let id = fixture1();
        let mut state = AccountState::default();
        state.holds.insert(Ghid::pseudorandom(Algo::SHA512));
        let plain = seal_root(&id, &state).unwrap();
        assert_eq!(&plain[..4], ROOT_MAGIC);
        let (back, back_state) = unseal_root(&plain).unwrap();
        assert_eq!(back.ghid(), id.ghid());
        assert_eq!(back_state, state);
        let mut bad = plain.to_vec();
        bad[20] ^= 1;
        assert!(matches!(unseal_root(&bad), Err(DaemonError::WrongPassword)));
        assert!(matches!(
            unseal_root(&plain[..70]),
            Err(DaemonError::Account(_))
        ));
    }
}
