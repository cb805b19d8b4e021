//! Anything a client or a broker can send as signalling text: refused cleanly or decoded,
//! and what decodes encodes back to the same message.
#![no_main]

use deskwire_signal::{decode_broker, decode_client, encode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(msg) = decode_client(text) {
        assert_eq!(decode_client(&encode(&msg)).as_ref(), Ok(&msg));
    }
    if let Ok(msg) = decode_broker(text) {
        assert_eq!(decode_broker(&encode(&msg)).as_ref(), Ok(&msg));
    }
});
