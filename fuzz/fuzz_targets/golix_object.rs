//! Any bytes through `Object::decode`: never panics, and whatever decodes re-encodes to
//! exactly the input (the codec is a bijection on what it accepts; trailing bytes refused).
#![no_main]

use hypergolix::golix::{Object, Policy, SecondParty};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let strict = Object::decode(data, Policy::STRICT);
    let Ok(obj) = Object::decode(data, Policy::TESTING) else {
        assert!(strict.is_err(), "STRICT accepted what TESTING refused");
        return;
    };
    assert_eq!(
        obj.encode(),
        data,
        "decode -> encode must give the input back"
    );
    if let Ok(s) = strict {
        assert_eq!(
            s, obj,
            "STRICT and TESTING decode the same bytes differently"
        );
    }
    // The keyless checks and accessors must not panic on anything that decodes.
    let _ = (
        obj.kind(),
        obj.version(),
        obj.suite(),
        obj.ghid(),
        obj.signer(),
    );
    let _ = obj.verify_address();
    assert!(obj.signer().is_none() || obj.verify_signature(None).is_err());
    if let Object::Gidc(g) = &obj {
        // With algo 0 the address always matches, so arbitrary moduli reach key parsing.
        let _ = SecondParty::from_gidc(g.clone());
    }
});
