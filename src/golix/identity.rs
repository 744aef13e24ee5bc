//! Identities. `SecondParty`: someone else, known from their GIDC (verify their signatures,
//! encrypt requests to them). `FirstParty`: us, holding private keys, making every container.

use std::sync::Arc;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair, KeySize, OaepPrivateDecryptingKey, OaepPublicEncryptingKey};
use aws_lc_rs::rsa::{PrivateDecryptingKey, OAEP_SHA512_MGF1SHA512};
use aws_lc_rs::signature::{KeyPair as _, ParsedPublicKey};
use zeroize::Zeroizing;

use super::cipher;
use super::gobd::unsigned_frame;
use super::keycheck;
use super::{
    Algo, Error, Garq, Gdxx, Geoc, Ghid, Gidc, Gobd, Gobs, Policy, Request, RequestBody, Secret,
    Suite, ASYM_LEN, PUBKEY_LEN, SIG_LEN,
};

/// Default and minimum number of targets a dynamic frame carries (newest first).
pub const DEFAULT_LEGROOM: usize = 7;
pub const MIN_LEGROOM: usize = 2;

/// Another identity, parsed once from its GIDC. Cheap to clone.
#[derive(Clone)]
pub struct SecondParty {
    inner: Arc<SecondInner>,
}

struct SecondInner {
    gidc: Gidc,
    /// `None` only for suite-0 (dummy) identities.
    verify_key: Option<ParsedPublicKey>,
    encrypt_key: Option<OaepPublicEncryptingKey>,
}

impl std::fmt::Debug for SecondParty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecondParty({})", self.ghid())
    }
}

impl SecondParty {
    /// Parses the keys of a GIDC. Its address must verify; suite-1 keys must pass the
    /// checks of `golix::keycheck` (4096-bit moduli that are not trivially weak, an X25519
    /// key not of small order).
    pub fn from_gidc(gidc: Gidc) -> Result<SecondParty, Error> {
        if gidc.computed_address() != gidc.ghid {
            return Err(Error::BadAddress);
        }
        let (verify_key, encrypt_key) = if gidc.suite == Suite::DUMMY {
            (None, None)
        } else {
            keycheck::check_rsa_modulus(&gidc.signature_key)?;
            keycheck::check_rsa_modulus(&gidc.encryption_key)?;
            keycheck::check_exchange_key(&gidc.exchange_key)?;
            (
                Some(cipher::rsa_verify_key(&gidc.signature_key)?),
                Some(cipher::rsa_encrypt_key(&gidc.encryption_key)?),
            )
        };
        Ok(SecondParty {
            inner: Arc::new(SecondInner {
                gidc,
                verify_key,
                encrypt_key,
            }),
        })
    }

    pub fn ghid(&self) -> Ghid {
        self.inner.gidc.ghid
    }

    pub fn gidc(&self) -> &Gidc {
        &self.inner.gidc
    }

    /// Verifies a signature whose mHash is `digest`, made under `suite`.
    pub fn verify(
        &self,
        suite: Suite,
        digest: &[u8; 64],
        sig: &[u8; SIG_LEN],
    ) -> Result<(), Error> {
        match (&self.inner.verify_key, suite) {
            (Some(k), Suite::ONE) => cipher::verify_digest(k, digest, sig),
            // Dummy signatures only verify for dummy identities (decoded under Policy::TESTING).
            (None, Suite::DUMMY) if sig == cipher::DUMMY_SIGNATURE => Ok(()),
            _ => Err(Error::BadSignature),
        }
    }
}

/// Exportable private keys of a first party (not a wire format).
#[derive(Clone)]
pub struct KeyBundle {
    pub signature_pkcs8: Zeroizing<Vec<u8>>,
    pub encryption_pkcs8: Zeroizing<Vec<u8>>,
    pub exchange: Zeroizing<[u8; 32]>,
}

/// Us: the private halves of an identity, and every container-making operation.
pub struct FirstParty {
    public: SecondParty,
    sign_key: KeyPair,
    decrypt_key: OaepPrivateDecryptingKey,
    exchange: x25519_dalek::StaticSecret,
    bundle: KeyBundle,
}

impl std::fmt::Debug for FirstParty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FirstParty({})", self.ghid())
    }
}

fn modulus(kp: &KeyPair) -> Result<[u8; PUBKEY_LEN], Error> {
    let n = kp.public_key().modulus();
    let n = n.big_endian_without_leading_zero();
    if n.len() != PUBKEY_LEN {
        return Err(Error::BadModulus);
    }
    Ok(n.try_into().expect("512"))
}

impl FirstParty {
    /// New identity: two RSA-4096 keys and an X25519 key. Slow (about a second in release,
    /// far more in debug builds): tests use fixture identities instead.
    pub fn generate() -> Result<FirstParty, Error> {
        let s = KeyPair::generate(KeySize::Rsa4096)?;
        let e = KeyPair::generate(KeySize::Rsa4096)?;
        let mut x = Zeroizing::new([0u8; 32]);
        aws_lc_rs::rand::fill(&mut x[..])?;
        FirstParty::from_keys(s, e, x)
    }

    /// From PKCS#8 (what `export` writes) or traditional PKCS#1 (the fixtures) DER keys and
    /// the raw X25519 scalar.
    pub fn import(
        signature_der: &[u8],
        encryption_der: &[u8],
        exchange: &[u8; 32],
    ) -> Result<FirstParty, Error> {
        let load = |der: &[u8]| KeyPair::from_pkcs8(der).or_else(|_| KeyPair::from_der(der));
        FirstParty::from_keys(
            load(signature_der)?,
            load(encryption_der)?,
            Zeroizing::new(*exchange),
        )
    }

    fn from_keys(
        sign_key: KeyPair,
        enc: KeyPair,
        exchange: Zeroizing<[u8; 32]>,
    ) -> Result<FirstParty, Error> {
        let signature_pkcs8 = Zeroizing::new(sign_key.as_der()?.as_ref().to_vec());
        let encryption_pkcs8 = Zeroizing::new(enc.as_der()?.as_ref().to_vec());
        let decrypt_key =
            OaepPrivateDecryptingKey::new(PrivateDecryptingKey::from_pkcs8(&encryption_pkcs8)?)?;
        let x = x25519_dalek::StaticSecret::from(*exchange);
        let mut gidc = Gidc {
            suite: Suite::ONE,
            signature_key: modulus(&sign_key)?,
            encryption_key: modulus(&enc)?,
            exchange_key: x25519_dalek::PublicKey::from(&x).to_bytes(),
            ghid: Ghid::new(Algo::SHA512, [0; 64]),
        };
        gidc.ghid = gidc.computed_address();
        Ok(FirstParty {
            public: SecondParty::from_gidc(gidc)?,
            sign_key,
            decrypt_key,
            exchange: x,
            bundle: KeyBundle {
                signature_pkcs8,
                encryption_pkcs8,
                exchange,
            },
        })
    }

    /// The private keys, PKCS#8 DER and raw X25519.
    pub fn export(&self) -> KeyBundle {
        self.bundle.clone()
    }

    pub fn ghid(&self) -> Ghid {
        self.public.ghid()
    }

    pub fn gidc(&self) -> &Gidc {
        self.public.gidc()
    }

    /// Our public half.
    pub fn second_party(&self) -> &SecondParty {
        &self.public
    }

    pub(super) fn sign(&self, digest: &[u8; 64]) -> Result<[u8; SIG_LEN], Error> {
        cipher::sign_digest(&self.sign_key, digest)
    }

    /// Encrypts `plaintext` with `secret` into a signed GEOC.
    pub fn make_container(&self, plaintext: &[u8], secret: &Secret) -> Result<Geoc, Error> {
        let mut g = self.unsigned_container(plaintext, secret);
        self.sign_container(&mut g)?;
        Ok(g)
    }

    /// [`FirstParty::make_container`] without the signature (all zero): its address is
    /// final, since the signature lies outside it, so a frame can point at it while it is
    /// being signed ([`FirstParty::sign_container`]).
    pub fn unsigned_container(&self, plaintext: &[u8], secret: &Secret) -> Geoc {
        let mut payload = plaintext.to_vec();
        cipher::apply_keystream(secret, &mut payload);
        let mut g = Geoc {
            suite: Suite::ONE,
            author: self.ghid(),
            payload,
            ghid: Ghid::new(Algo::SHA512, [0; 64]),
            signature: [0; SIG_LEN],
        };
        g.ghid = g.computed_address();
        g
    }

    /// Signs a container of ours built by [`FirstParty::unsigned_container`].
    pub fn sign_container(&self, g: &mut Geoc) -> Result<(), Error> {
        if g.author != self.ghid() {
            return Err(Error::WrongSigner(g.author.as_str()));
        }
        g.signature = self.sign(g.ghid.digest())?;
        Ok(())
    }

    /// A static binding of `target`.
    pub fn make_bind_static(&self, target: Ghid) -> Result<Gobs, Error> {
        let mut b = Gobs {
            suite: Suite::ONE,
            binder: self.ghid(),
            target,
            ghid: Ghid::new(Algo::SHA512, [0; 64]),
            signature: [0; SIG_LEN],
        };
        b.ghid = b.computed_address();
        b.signature = self.sign(b.ghid.digest())?;
        Ok(b)
    }

    /// Frame 0 of a new dynamic object pointing at `target`.
    pub fn make_bind_dynamic(&self, target: Ghid) -> Result<Gobd, Error> {
        let mut f = unsigned_frame(Suite::ONE, self.ghid(), 0, vec![target], None, Algo::SHA512);
        f.signature = self.sign(f.frame.digest())?;
        Ok(f)
    }

    /// The frame after `previous`: counter + 1, `[target, previous targets...]` capped at
    /// `legroom` (at least 2) entries, the same dynamic ghid.
    pub fn make_next_frame(
        &self,
        previous: &Gobd,
        target: Ghid,
        legroom: usize,
    ) -> Result<Gobd, Error> {
        let mut f = self.unsigned_next_frame(previous, target, legroom)?;
        self.sign_frame(&mut f)?;
        Ok(f)
    }

    /// [`FirstParty::make_next_frame`] without the signature (all zero); its address is
    /// final. `previous` may be unsigned too (only its counter, targets and ghids count), so
    /// frames can be built ahead of their predecessors' signatures.
    pub fn unsigned_next_frame(
        &self,
        previous: &Gobd,
        target: Ghid,
        legroom: usize,
    ) -> Result<Gobd, Error> {
        if previous.binder != self.ghid() {
            return Err(Error::WrongSigner(previous.binder.as_str()));
        }
        let legroom = legroom.clamp(MIN_LEGROOM, super::gobd::MAX_TARGETS);
        let counter = previous
            .counter
            .checked_add(1)
            .ok_or(Error::InvalidArgument("frame counter overflow"))?;
        let mut targets = Vec::with_capacity(legroom);
        targets.push(target);
        targets.extend(previous.targets.iter().take(legroom - 1).copied());
        Ok(unsigned_frame(
            Suite::ONE,
            self.ghid(),
            counter,
            targets,
            Some(previous.dynamic),
            Algo::SHA512,
        ))
    }

    /// Signs a frame of ours built by [`FirstParty::unsigned_next_frame`].
    pub fn sign_frame(&self, f: &mut Gobd) -> Result<(), Error> {
        if f.binder != self.ghid() {
            return Err(Error::WrongSigner(f.binder.as_str()));
        }
        f.signature = self.sign(f.frame.digest())?;
        Ok(())
    }

    /// A debinding of `target` (a GOBS ghid, a dynamic ghid, a GDXX or a GARQ to us).
    pub fn make_debind(&self, target: Ghid) -> Result<Gdxx, Error> {
        let mut d = Gdxx {
            suite: Suite::ONE,
            debinder: self.ghid(),
            target,
            ghid: Ghid::new(Algo::SHA512, [0; 64]),
            signature: [0; SIG_LEN],
        };
        d.ghid = d.computed_address();
        d.signature = self.sign(d.ghid.digest())?;
        Ok(d)
    }

    /// A request to `recipient`: OAEP-encrypted body, MAC under our static pair key.
    pub fn make_request(&self, recipient: &SecondParty, body: RequestBody) -> Result<Garq, Error> {
        let plain = Zeroizing::new(
            Request {
                author: self.ghid(),
                body,
            }
            .encode(),
        );
        let key = recipient
            .inner
            .encrypt_key
            .as_ref()
            .ok_or(Error::InvalidArgument("recipient has dummy keys"))?;
        let mut g = Garq {
            suite: Suite::ONE,
            recipient: recipient.ghid(),
            payload: cipher::oaep_encrypt(key, &plain)?,
            ghid: Ghid::new(Algo::SHA512, [0; 64]),
            mac: [0; 64],
        };
        g.ghid = g.computed_address();
        let mac_key = Zeroizing::new(self.mac_key(recipient)?);
        g.mac = cipher::request_mac(&mac_key, g.ghid.digest());
        Ok(g)
    }

    /// Share `target` (readable with `secret`) with `recipient`.
    pub fn make_handshake(
        &self,
        recipient: &SecondParty,
        target: Ghid,
        secret: &Secret,
    ) -> Result<Garq, Error> {
        self.make_request(
            recipient,
            RequestBody::Handshake {
                target,
                secret: secret.clone(),
            },
        )
    }

    /// Accept the request `request` (a GARQ ghid) from `recipient`.
    pub fn make_ack(
        &self,
        recipient: &SecondParty,
        request: Ghid,
        status: u32,
    ) -> Result<Garq, Error> {
        self.make_request(
            recipient,
            RequestBody::Ack {
                target: request,
                status,
            },
        )
    }

    /// Refuse the request `request` from `recipient`.
    pub fn make_nak(
        &self,
        recipient: &SecondParty,
        request: Ghid,
        status: u32,
    ) -> Result<Garq, Error> {
        self.make_request(
            recipient,
            RequestBody::Nak {
                target: request,
                status,
            },
        )
    }

    fn mac_key(&self, other: &SecondParty) -> Result<[u8; 64], Error> {
        cipher::request_mac_key(
            &self.exchange,
            &other.gidc().exchange_key,
            &self.ghid(),
            &other.ghid(),
        )
    }

    /// Opens a request addressed to us, in the receiving order of docs/golix.md: address,
    /// OAEP decrypt, find the author's identity with `lookup`, derive the MAC key, check the
    /// MAC. Nothing is returned unless every step passes.
    pub fn open_request(
        &self,
        garq: &Garq,
        lookup: impl FnOnce(&Ghid) -> Option<SecondParty>,
    ) -> Result<Request, Error> {
        if garq.recipient != self.ghid() {
            return Err(Error::WrongSigner(garq.recipient.as_str()));
        }
        if garq.computed_address() != garq.ghid {
            return Err(Error::BadAddress);
        }
        let mut buf = Zeroizing::new([0u8; ASYM_LEN]);
        let plain = self
            .decrypt_key
            .decrypt(&OAEP_SHA512_MGF1SHA512, &garq.payload, &mut buf[..], None)
            .map_err(|_| Error::DecryptFailed)?;
        let request = Request::decode(plain, Policy::STRICT)?;
        let author =
            lookup(&request.author).ok_or_else(|| Error::WrongSigner(request.author.as_str()))?;
        if author.ghid() != request.author {
            return Err(Error::WrongSigner(author.ghid().as_str()));
        }
        let mac_key = Zeroizing::new(self.mac_key(&author)?);
        cipher::verify_request_mac(&mac_key, garq.ghid.digest(), &garq.mac)?;
        Ok(request)
    }

    /// Decrypts a GEOC with `secret` (no authorship check: verify the container first).
    pub fn decrypt(geoc: &Geoc, secret: &Secret) -> Vec<u8> {
        let mut out = geoc.payload.clone();
        cipher::apply_keystream(secret, &mut out);
        out
    }
}
