//! Cheap sanity checks on the public keys of a GIDC, run before anyone trusts its signatures
//! or encrypts to it ([`super::SecondParty::from_gidc`]). They refuse keys that are broken
//! or trivially weak, not every weak key: an RSA modulus must be exactly 4096 bits, odd,
//! have between 1536 and 2560 bits set (a product of two random primes has 2048 ± 32; this
//! refuses patterned values such as `2^4095 + 1`), no prime factor below 2^16, and not be a
//! perfect square (refused when it is a quadratic residue modulo each of the first 128 odd
//! primes: a non-square passes that with probability 2^-128). Moduli whose two factors are
//! close (Fermat factoring) are not detected. An X25519 key must not be all zero, nor of
//! small order (a point whose exchange with any clamped scalar is all zero: the identity,
//! the point of order 2 and the points of order 4 and 8, in any encoding).
//!
//! Owns: pure functions; a table of the odd primes below 2^16, built once. Calls nothing.

use std::sync::OnceLock;

use super::{Error, EXCHANGE_LEN, PUBKEY_LEN};

/// Trial division bound.
const SMALL_PRIME_BOUND: u32 = 1 << 16;
/// Odd primes whose quadratic residues decide "perfect square".
const SQUARE_WITNESSES: usize = 128;
/// Bits set in an acceptable modulus: 2048 ± 16 standard deviations.
const MIN_BITS_SET: u32 = 1536;
const MAX_BITS_SET: u32 = 2560;

fn weak(why: String) -> Error {
    Error::WeakKey(why)
}

/// The odd primes below [`SMALL_PRIME_BOUND`], ascending.
fn odd_primes() -> &'static [u32] {
    static PRIMES: OnceLock<Vec<u32>> = OnceLock::new();
    PRIMES.get_or_init(|| {
        let n = SMALL_PRIME_BOUND as usize;
        let mut composite = vec![false; n];
        let mut out = Vec::new();
        for i in 3..n {
            if composite[i] || i % 2 == 0 {
                continue;
            }
            out.push(i as u32);
            let mut j = i * i;
            while j < n {
                composite[j] = true;
                j += i;
            }
        }
        out
    })
}

/// `n mod p` for every odd prime `p` below the bound, in [`odd_primes`] order. Two primes at
/// a time: their product fits in 32 bits, so one pass over the modulus' 32-bit words serves
/// both.
fn residues(n: &[u8; PUBKEY_LEN]) -> Vec<u32> {
    let primes = odd_primes();
    let mut out = Vec::with_capacity(primes.len());
    for pair in primes.chunks(2) {
        let m: u64 = pair.iter().map(|&p| u64::from(p)).product();
        let mut r = 0u64;
        for w in n.chunks_exact(4) {
            let w = u64::from(u32::from_be_bytes([w[0], w[1], w[2], w[3]]));
            r = ((r << 32) | w) % m;
        }
        out.extend(pair.iter().map(|&p| (r % u64::from(p)) as u32));
    }
    out
}

/// Whether `a` is a quadratic residue (or zero) modulo the odd prime `p` (Euler's criterion).
fn is_square_mod(a: u32, p: u32) -> bool {
    let (p, mut base, mut e, mut acc) = (u64::from(p), u64::from(a), (p - 1) / 2, 1u64);
    if base % p == 0 {
        return true;
    }
    while e > 0 {
        if e & 1 == 1 {
            acc = acc * base % p;
        }
        base = base * base % p;
        e >>= 1;
    }
    acc == 1
}

/// Refuses an RSA modulus (big-endian, e = 65537 implied) that is not exactly 4096 bits, is
/// even, is patterned, has a small prime factor or is a perfect square.
pub fn check_rsa_modulus(n: &[u8; PUBKEY_LEN]) -> Result<(), Error> {
    if n[0] & 0x80 == 0 {
        return Err(Error::BadModulus);
    }
    if n[PUBKEY_LEN - 1] & 1 == 0 {
        return Err(weak("the RSA modulus is even".into()));
    }
    let set: u32 = n.iter().map(|b| b.count_ones()).sum();
    if !(MIN_BITS_SET..=MAX_BITS_SET).contains(&set) {
        return Err(weak(format!(
            "the RSA modulus has {set} of 4096 bits set (a real one has about 2048)"
        )));
    }
    let rs = residues(n);
    if let Some((p, _)) = odd_primes().iter().zip(&rs).find(|(_, &r)| r == 0) {
        return Err(weak(format!("the RSA modulus is divisible by {p}")));
    }
    let square = odd_primes()
        .iter()
        .zip(&rs)
        .take(SQUARE_WITNESSES)
        .all(|(&p, &r)| is_square_mod(r, p));
    if square {
        return Err(weak("the RSA modulus is a perfect square".into()));
    }
    Ok(())
}

/// Refuses an X25519 public key that is all zero or of small order.
pub fn check_exchange_key(key: &[u8; EXCHANGE_LEN]) -> Result<(), Error> {
    if key.iter().all(|&b| b == 0) {
        return Err(weak("the X25519 key is all zero".into()));
    }
    // Any clamped scalar is a multiple of 8, so it sends every point of order 1, 2, 4 or 8
    // to the identity: the exchange is all zero exactly for the small-order keys.
    let probe = x25519_dalek::StaticSecret::from([0x5a; 32]);
    let shared = probe.diffie_hellman(&x25519_dalek::PublicKey::from(*key));
    if !shared.was_contributory() {
        return Err(weak("the X25519 key is a point of small order".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prime_table_and_residues_are_right() {
        let p = odd_primes();
        assert_eq!(&p[..6], &[3, 5, 7, 11, 13, 17]);
        assert_eq!(p.len(), 6541, "odd primes below 2^16");
        assert_eq!(*p.last().unwrap(), 65521);
        let mut n = [0u8; PUBKEY_LEN];
        n[PUBKEY_LEN - 2..].copy_from_slice(&1000u16.to_be_bytes());
        let rs = residues(&n);
        for (&p, &r) in p.iter().zip(&rs) {
            assert_eq!(r, 1000 % p, "mod {p}");
        }
        assert!(is_square_mod(4, 7) && is_square_mod(2, 7) && !is_square_mod(3, 7));
    }

    use crate::golix::{Gidc, Object, Policy, SecondParty};

    /// Fixture identity 1's GIDC.
    fn fixture_gidc() -> Gidc {
        let id = crate::testdata::fixture_identity_json(1);
        let bytes = hex::decode(id["rebuilt_gidc_hex"].as_str().unwrap()).unwrap();
        match Object::decode(&bytes, Policy::STRICT).unwrap() {
            Object::Gidc(g) => g,
            other => panic!("{other:?}"),
        }
    }

    /// The fixture GIDC with `patch` applied (and its address recomputed), as
    /// `SecondParty::from_gidc` answers it.
    fn parse_patched(patch: impl FnOnce(&mut Gidc)) -> Result<SecondParty, Error> {
        let mut g = fixture_gidc();
        patch(&mut g);
        g.ghid = g.computed_address();
        SecondParty::from_gidc(g)
    }

    fn refusal(patch: impl FnOnce(&mut Gidc)) -> String {
        match parse_patched(patch) {
            Err(e @ Error::WeakKey(_)) => e.to_string(),
            Err(e) => panic!("refused, but not as a weak key: {e}"),
            Ok(_) => panic!("accepted"),
        }
    }

    /// `n += k` (big-endian).
    fn add_small(n: &mut [u8], mut k: u64) {
        for b in n.iter_mut().rev() {
            k += u64::from(*b);
            *b = k as u8;
            k >>= 8;
        }
    }

    /// `x * x` for a 256-byte big-endian `x`.
    fn square(x: &[u8; 256]) -> [u8; PUBKEY_LEN] {
        let limbs: Vec<u64> = x
            .rchunks_exact(4)
            .map(|c| u64::from(u32::from_be_bytes(c.try_into().unwrap())))
            .collect();
        let mut acc = vec![0u64; 128];
        for (i, a) in limbs.iter().enumerate() {
            let mut carry = 0u64;
            for (j, b) in limbs.iter().enumerate() {
                let t = acc[i + j] + a * b + carry;
                acc[i + j] = t & 0xffff_ffff;
                carry = t >> 32;
            }
            acc[i + limbs.len()] += carry;
        }
        let mut out = [0u8; PUBKEY_LEN];
        for (i, limb) in acc.iter().enumerate() {
            let at = PUBKEY_LEN - 4 * (i + 1);
            out[at..at + 4].copy_from_slice(&(*limb as u32).to_be_bytes());
        }
        out
    }

    #[test]
    fn crafted_gidcs_with_weak_keys_are_refused() {
        assert!(parse_patched(|_| {}).is_ok(), "the fixture itself passes");

        let m = refusal(|g| g.signature_key[PUBKEY_LEN - 1] &= 0xfe);
        assert!(m.contains("even"), "{m}");
        let m = refusal(|g| g.encryption_key[PUBKEY_LEN - 1] &= 0xfe);
        assert!(m.contains("even"), "{m}");
        assert!(matches!(
            parse_patched(|g| g.signature_key[0] &= 0x7f),
            Err(Error::BadModulus)
        ));
        for patterned in [[0xff; PUBKEY_LEN], {
            let mut n = [0u8; PUBKEY_LEN];
            n[0] = 0xc0;
            n[PUBKEY_LEN - 1] = 1;
            n
        }] {
            let m = refusal(|g| g.signature_key = patterned);
            assert!(m.contains("bits set"), "{m}");
        }

        // The fixture modulus moved (by an even step) onto a multiple of 3, then of 65521.
        let mut n = fixture_gidc().signature_key;
        while residues(&n)[0] != 0 {
            add_small(&mut n, 2);
        }
        let m = refusal(|g| g.signature_key = n);
        assert!(m.contains("divisible by 3"), "{m}");
        let mut n = fixture_gidc().encryption_key;
        let r = u64::from(*residues(&n).last().unwrap());
        add_small(&mut n, 2 * ((65521 - r) * 32761 % 65521)); // 32761 = 1/2 mod 65521
        let m = refusal(|g| g.encryption_key = n);
        assert!(m.contains("divisible by"), "{m}");

        // A square of a 2048-bit odd number without small factors.
        let mut x = [0u8; 256];
        x.copy_from_slice(&fixture_gidc().signature_key[..256]);
        x[0] |= 0xc0;
        x[255] |= 1;
        let padded = |x: &[u8; 256]| {
            let mut p = [0u8; PUBKEY_LEN];
            p[256..].copy_from_slice(x);
            p
        };
        while residues(&padded(&x)).contains(&0) {
            add_small(&mut x, 2);
        }
        let m = refusal(|g| g.signature_key = square(&x));
        assert!(m.contains("perfect square"), "{m}");

        let m = refusal(|g| g.exchange_key = [0; 32]);
        assert!(m.contains("all zero"), "{m}");
        let order8 =
            hex::decode("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800");
        let m = refusal(|g| g.exchange_key = order8.unwrap().try_into().unwrap());
        assert!(m.contains("small order"), "{m}");
    }

    #[test]
    fn every_small_order_encoding_is_refused() {
        let hex32 = |s: &str| -> [u8; 32] { hex::decode(s).unwrap().try_into().unwrap() };
        let small = [
            "0000000000000000000000000000000000000000000000000000000000000000",
            "0100000000000000000000000000000000000000000000000000000000000000",
            "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
            "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
            "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
            "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
            "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        ];
        for s in small {
            let mut k = hex32(s);
            assert!(check_exchange_key(&k).is_err(), "{s}");
            // The top bit is ignored by X25519: the same point.
            k[31] |= 0x80;
            assert!(check_exchange_key(&k).is_err(), "{s} with the top bit");
        }
        for _ in 0..32 {
            let k: [u8; 32] = rand::random();
            let public = x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(k));
            assert!(check_exchange_key(public.as_bytes()).is_ok());
        }
    }
}
