//! Ghid text and wire forms: the strict 88-character parser never panics, accepts only the
//! canonical form (parse -> as_str gives the input back), and the two forms agree.
#![no_main]

use hypergolix::golix::{Ghid, GHID_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(g) = s.parse::<Ghid>() {
            assert_eq!(g.as_str(), s, "only the canonical text form may parse");
            assert_eq!(Ghid::from_bytes(g.as_bytes()), Ok(g));
            let _ = format!("{g} {g:?}");
        }
    }
    if let Ok(g) = Ghid::from_bytes(data) {
        assert_eq!(data.len(), GHID_LEN);
        assert_eq!(&g.as_bytes()[..], data);
        assert_eq!(g.as_str().parse::<Ghid>(), Ok(g));
    }
});
