//! What is inside an app object's container and how to reach it: the app plaintext framing
//! (`b"hgxd" | 0x00 | api_id(65) | state`, docs/architecture.md) and the walk of the secret
//! ratchet along a frame's target vector.
//!
//! Owns: pure functions only. Calls: `golix`. Used by the object and pull paths.

use crate::golix::{Ghid, Gobd, Secret, GEOC_OVERHEAD, GHID_LEN};

const MAGIC: &[u8; 4] = b"hgxd";
/// Magic, version byte, api id.
pub const HEADER_LEN: usize = 4 + 1 + GHID_LEN;

/// The size of the container (GEOC) that carries a state of `state_len` bytes.
pub fn container_len(state_len: usize) -> usize {
    GEOC_OVERHEAD + HEADER_LEN + state_len
}

/// Frames app state with its api id.
pub fn pack(api_id: Option<&Ghid>, state: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + state.len());
    out.extend_from_slice(MAGIC);
    out.push(0);
    match api_id {
        Some(a) => out.extend_from_slice(a.as_bytes()),
        None => out.extend_from_slice(&[0; GHID_LEN]),
    }
    out.extend_from_slice(state);
    out
}

/// Splits a decrypted container into (api id, state). `None` if it is not app framing
/// (wrong magic or version, short, or an api id with an unknown algo).
pub fn unpack(plain: &[u8]) -> Option<(Option<Ghid>, Vec<u8>)> {
    if plain.len() < HEADER_LEN || &plain[..4] != MAGIC || plain[4] != 0 {
        return None;
    }
    let raw = &plain[5..HEADER_LEN];
    let api_id = if raw.iter().all(|b| *b == 0) {
        None
    } else {
        Some(Ghid::from_bytes(raw).ok()?)
    };
    Some((api_id, plain[HEADER_LEN..].to_vec()))
}

/// The secret of `frame`'s current target, given the secret `known` of the container
/// `known_container`: found at index `j` of the target vector, it is ratcheted forward `j`
/// times (secret of `targets[i]` -> `targets[i-1]` with salt `targets[i]`, info the dynamic
/// ghid). `None` if the container is not in the vector.
pub fn ratchet_to_current(frame: &Gobd, known: &Secret, known_container: &Ghid) -> Option<Secret> {
    let j = frame.targets.iter().position(|t| t == known_container)?;
    let mut secret = known.clone();
    for i in (1..=j).rev() {
        secret = secret.ratchet(&frame.targets[i], &frame.dynamic);
    }
    Some(secret)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::golix::{Algo, Suite, SIG_LEN};

    #[test]
    fn plaintext_round_trip() {
        let api = Ghid::new(Algo::DUMMY, [7; 64]);
        assert_eq!(
            unpack(&pack(Some(&api), b"abc")),
            Some((Some(api), b"abc".to_vec()))
        );
        let none = pack(None, b"");
        assert_eq!(none.len(), HEADER_LEN);
        assert_eq!(unpack(&none), Some((None, vec![])));
        assert_eq!(unpack(&none[..HEADER_LEN - 1]), None);
        let mut bad = pack(None, b"x");
        bad[4] = 1;
        assert_eq!(unpack(&bad), None);
    }

    #[test]
    fn container_len_is_exact() {
        for n in [0, 1, 1000] {
            let geoc = crate::golix::Geoc {
                suite: Suite::ONE,
                author: Ghid::new(Algo::SHA512, [1; 64]),
                payload: pack(None, &vec![7; n]),
                ghid: Ghid::new(Algo::SHA512, [2; 64]),
                signature: [0; SIG_LEN],
            };
            assert_eq!(geoc.encode().len(), container_len(n));
        }
    }

    #[test]
    fn ratchet_walks_the_target_vector() {
        let dynamic = Ghid::pseudorandom(Algo::SHA512);
        let containers: Vec<Ghid> = (0..4).map(|_| Ghid::pseudorandom(Algo::SHA512)).collect();
        let mut secrets = vec![Secret::random()];
        for c in &containers[..3] {
            let next = secrets.last().unwrap().ratchet(c, &dynamic);
            secrets.push(next);
        }
        let frame = Gobd {
            suite: Suite::ONE,
            binder: dynamic,
            counter: 3,
            targets: containers.iter().rev().copied().collect(),
            dynamic,
            frame: dynamic,
            signature: [0; SIG_LEN],
        };
        for (i, c) in containers.iter().enumerate() {
            assert_eq!(
                ratchet_to_current(&frame, &secrets[i], c).as_ref(),
                Some(&secrets[3])
            );
        }
        let stranger = Ghid::pseudorandom(Algo::SHA512);
        assert!(ratchet_to_current(&frame, &secrets[0], &stranger).is_none());
    }
}
