//! Any bytes through `Request::decode` (the OAEP plaintext of a GARQ, which a network peer
//! controls entirely): never panics, and whatever decodes re-encodes to exactly the input.
#![no_main]

use hypergolix::golix::{Policy, Request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for policy in [Policy::STRICT, Policy::TESTING] {
        if let Ok(r) = Request::decode(data, policy) {
            assert_eq!(
                r.encode(),
                data,
                "decode -> encode must give the input back"
            );
            assert_eq!(Request::decode(&r.encode(), policy).as_ref(), Ok(&r));
        }
    }
});
