//! A LAN viewer's first words: any hello text and any PAKE message, against a real
//! password. Refused without a panic; never a key from garbage.
#![no_main]

use deskwire_signal::lan::LanPassword;
use deskwire_signal::pake::Pake;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = text.parse::<LanPassword>();
    let (pake, _ours) = Pake::start_lan(&LanPassword::from_random(7));
    let _ = pake.finish(text);
});
