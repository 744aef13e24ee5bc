//! The app plaintext framing inside a decrypted container (`actors::content::unpack`, fed
//! by containers other users share with us): never panics, and whatever unpacks packs back
//! to exactly the input.
#![no_main]

use hypergolix::actors::content::{pack, unpack};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some((api_id, state)) = unpack(data) {
        assert_eq!(
            pack(api_id.as_ref(), &state),
            data,
            "unpack -> pack must give the input back"
        );
    }
});
