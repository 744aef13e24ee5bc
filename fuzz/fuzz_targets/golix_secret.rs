//! Any bytes through `Secret::decode`: never panics, and whatever decodes re-encodes to
//! exactly the input; the ratchet runs on anything that decodes.
#![no_main]

use hypergolix::golix::{Algo, Ghid, Policy, Secret};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let strict = Secret::decode(data, Policy::STRICT);
    let Ok(s) = Secret::decode(data, Policy::TESTING) else {
        assert!(strict.is_err(), "STRICT accepted what TESTING refused");
        return;
    };
    assert_eq!(
        s.encode(),
        data,
        "decode -> encode must give the input back"
    );
    if let Ok(strict) = strict {
        assert_eq!(strict, s);
    }
    let g = Ghid::new(Algo::SHA512, [7; 64]);
    let _ = s.ratchet(&g, &g);
});
