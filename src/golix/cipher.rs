//! Cipher suite 1 primitives, exactly as docs/golix.md: RSA-4096 PSS-SHA512 (salt 64) over the
//! 64-byte digest, OAEP-SHA512 with an empty label, AES-256-CTR with a 128-bit big-endian
//! counter starting at the seed, X25519 + HKDF-SHA512 (XOR salt) for the request MAC key,
//! HMAC-SHA512 over the request digest. Plus the suite-0 dummy constants.

use aes::cipher::{KeyIvInit, StreamCipher};
use aws_lc_rs::digest::{Digest as LcDigest, SHA512};
use aws_lc_rs::rsa::{
    KeyPair, OaepPublicEncryptingKey, PublicKeyComponents, OAEP_SHA512_MGF1SHA512,
};
use aws_lc_rs::signature::{ParsedPublicKey, RSA_PSS_2048_8192_SHA512, RSA_PSS_SHA512};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::Sha512;

use super::{Error, Secret, Suite, ASYM_LEN, MAC_LEN, PUBKEY_LEN, SIG_LEN};

/// RSA public exponent implied by every GIDC.
pub const RSA_E: [u8; 3] = [0x01, 0x00, 0x01];
/// Largest OAEP-SHA512 plaintext for a 4096-bit key: 512 - 2·64 - 2.
pub const OAEP_MAX: usize = ASYM_LEN - 2 * 64 - 2;

/// Suite-0 placeholders (docs/golix.md, "Suite 0").
pub const DUMMY_PUBKEY: &[u8; PUBKEY_LEN] = b"[ ----------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------- MOCK PUBLIC KEY ------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------ ]";
pub const DUMMY_EXCHANGE: &[u8; 32] = b"[ ------ MOCK PUBLIC KEY ----- ]";
pub const DUMMY_SIGNATURE: &[u8; SIG_LEN] = b"[[ Start signature -------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------- End signature ]]";
pub const DUMMY_MAC: &[u8; MAC_LEN] =
    b"[[ Start MAC ---------------------------------------- End MAC ]]";
pub const DUMMY_ASYM: &[u8; ASYM_LEN] = b"[[ Start asymmetric payload -------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------- End asymmetric payload ]]";

/// Applies the AES-256-CTR keystream of `secret` in place (encrypt and decrypt are the same).
/// Suite 0 is the identity.
pub fn apply_keystream(secret: &Secret, data: &mut [u8]) {
    if secret.suite() == Suite::DUMMY {
        return;
    }
    let mut c = ctr::Ctr128BE::<aes::Aes256>::new(secret.key().into(), secret.seed().into());
    c.apply_keystream(data);
}

/// Checks a GIDC modulus is exactly 4096 bits, then builds the PSS verification key.
pub fn rsa_verify_key(modulus: &[u8; PUBKEY_LEN]) -> Result<ParsedPublicKey, Error> {
    check_modulus(modulus)?;
    let c = PublicKeyComponents {
        n: &modulus[..],
        e: &RSA_E[..],
    };
    Ok(c.to_parsed_public_key(&RSA_PSS_2048_8192_SHA512)?)
}

/// Builds the OAEP encryption key from a GIDC modulus (exactly 4096 bits).
pub fn rsa_encrypt_key(modulus: &[u8; PUBKEY_LEN]) -> Result<OaepPublicEncryptingKey, Error> {
    check_modulus(modulus)?;
    let c = PublicKeyComponents {
        n: &modulus[..],
        e: &RSA_E[..],
    };
    Ok(OaepPublicEncryptingKey::new(c.try_into()?)?)
}

fn check_modulus(modulus: &[u8; PUBKEY_LEN]) -> Result<(), Error> {
    if modulus[0] & 0x80 == 0 {
        return Err(Error::BadModulus);
    }
    Ok(())
}

/// RSASSA-PSS-SHA512 (salt 64) with the 64-byte digest as mHash.
pub fn sign_digest(key: &KeyPair, digest: &[u8; 64]) -> Result<[u8; SIG_LEN], Error> {
    if key.public_modulus_len() != SIG_LEN {
        return Err(Error::BadModulus);
    }
    let d = LcDigest::import_less_safe(digest, &SHA512)?;
    let mut sig = [0u8; SIG_LEN];
    key.sign_digest(&RSA_PSS_SHA512, &d, &mut sig)?;
    Ok(sig)
}

/// Verifies a PSS-SHA512 signature whose mHash is `digest`.
pub fn verify_digest(key: &ParsedPublicKey, digest: &[u8; 64], sig: &[u8]) -> Result<(), Error> {
    let d = LcDigest::import_less_safe(digest, &SHA512).map_err(|_| Error::BadSignature)?;
    key.verify_digest_sig(&d, sig)
        .map_err(|_| Error::BadSignature)
}

/// OAEP-SHA512 (MGF1-SHA512, empty label) encryption to a 4096-bit key.
pub fn oaep_encrypt(
    key: &OaepPublicEncryptingKey,
    plaintext: &[u8],
) -> Result<[u8; ASYM_LEN], Error> {
    if plaintext.len() > OAEP_MAX {
        return Err(Error::TooLarge(plaintext.len()));
    }
    let mut out = [0u8; ASYM_LEN];
    let n = key
        .encrypt(&OAEP_SHA512_MGF1SHA512, plaintext, &mut out, None)?
        .len();
    if n != ASYM_LEN {
        return Err(Error::BadModulus);
    }
    Ok(out)
}

/// The static request MAC key between two identities: HKDF-SHA512 over the X25519 shared
/// secret, salt = XOR of the two identities' 64-byte digests, empty info, 64 bytes.
/// Refuses non-contributory (low-order) exchanges.
pub fn request_mac_key(
    own: &x25519_dalek::StaticSecret,
    their_public: &[u8; 32],
    own_ghid: &super::Ghid,
    their_ghid: &super::Ghid,
) -> Result<[u8; 64], Error> {
    let shared = own.diffie_hellman(&x25519_dalek::PublicKey::from(*their_public));
    if !shared.was_contributory() {
        return Err(Error::NonContributory);
    }
    let mut salt = [0u8; 64];
    for (s, (a, b)) in salt
        .iter_mut()
        .zip(own_ghid.digest().iter().zip(their_ghid.digest().iter()))
    {
        *s = a ^ b;
    }
    let hk = Hkdf::<Sha512>::new(Some(&salt), shared.as_bytes());
    let mut key = [0u8; 64];
    hk.expand(&[], &mut key)
        .expect("64 bytes is a valid length");
    Ok(key)
}

/// HMAC-SHA512(key, digest).
pub fn request_mac(key: &[u8; 64], digest: &[u8; 64]) -> [u8; MAC_LEN] {
    let mut m = <Hmac<Sha512> as Mac>::new_from_slice(key).expect("any key length");
    m.update(digest);
    m.finalize().into_bytes().into()
}

/// Constant-time MAC check.
pub fn verify_request_mac(
    key: &[u8; 64],
    digest: &[u8; 64],
    mac: &[u8; MAC_LEN],
) -> Result<(), Error> {
    let mut m = <Hmac<Sha512> as Mac>::new_from_slice(key).expect("any key length");
    m.update(digest);
    m.verify_slice(mac).map_err(|_| Error::BadMac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dummy_constants_have_spec_lengths() {
        assert_eq!(DUMMY_PUBKEY.len(), 512);
        assert!(DUMMY_PUBKEY.starts_with(b"[ ") && DUMMY_PUBKEY.ends_with(b" ]"));
        assert_eq!(&DUMMY_PUBKEY[247..264], b" MOCK PUBLIC KEY ");
        assert_eq!(&DUMMY_SIGNATURE[..19], b"[[ Start signature ");
        assert_eq!(&DUMMY_ASYM[..28], b"[[ Start asymmetric payload ");
        assert_eq!(&DUMMY_EXCHANGE[8..25], b" MOCK PUBLIC KEY ");
    }

    #[test]
    fn ctr_uses_full_128_bit_counter() {
        // A seed of all 0xff must carry into the whole block, not wrap a 32/64-bit half.
        let s = Secret::from_parts([7; 32], [0xff; 16]);
        let mut a = vec![0u8; 32];
        apply_keystream(&s, &mut a);
        let mut blk = [0u8; 16];
        use aes::cipher::{BlockEncrypt, KeyInit};
        let aes = aes::Aes256::new(&[7u8; 32].into());
        aes.encrypt_block((&mut blk).into()); // counter 0 after wrapping all 128 bits
        assert_eq!(&a[16..], &blk);
    }
}
