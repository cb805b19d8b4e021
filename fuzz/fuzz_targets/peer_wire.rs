//! Anything a peer can put on a data channel: decoded without a panic, and what decodes
//! encodes back to the same message.
#![no_main]

use deskwire_session::wire::{decode_control, decode_input, decode_input_at, decode_video};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = decode_control(data) {
        let mut out = bytes::BytesMut::new();
        msg.encode(&mut out);
        assert_eq!(decode_control(&out).as_ref(), Ok(&msg));
    }
    let _ = decode_input(data);
    let _ = decode_input_at(data);
    let _ = decode_video(data);
});
