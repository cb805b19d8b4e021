//! The portable xcap backend against a real Xvfb.
//!
//! xcap only reads `$DISPLAY`, which is process-wide, so this file runs in its own test
//! process and every test here sets the variable while holding [`DISPLAY_LOCK`].

use std::sync::Mutex;

use deskwire_capture::{CaptureOutcome, PixelFormat, Source, Timestamp, XcapSource};
use deskwire_tests::{Scene, Xvfb};

static DISPLAY_LOCK: Mutex<()> = Mutex::new(());

/// Run `f` with `$DISPLAY` pointing at `display` (and no Wayland session in sight).
fn with_display<T>(display: &str, f: impl FnOnce() -> T) -> T {
    let _guard = DISPLAY_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    std::env::set_var("DISPLAY", display);
    std::env::remove_var("WAYLAND_DISPLAY");
    std::env::set_var("XDG_SESSION_TYPE", "x11");
    f()
}

#[test]
fn xcap_capture_reads_known_pixels() {
    let xvfb = Xvfb::start(640, 480).expect("starting Xvfb");
    let scene = Scene::known(640, 480);
    scene.draw(&xvfb.display()).unwrap();

    with_display(&xvfb.display(), || {
        let mut source = XcapSource::open().expect("opening xcap source");
        assert_eq!(source.name(), "xcap");
        assert_eq!(source.size(), (640, 480));
        let mut frame = source.alloc_frame().unwrap();
        assert_eq!(frame.format(), PixelFormat::Bgra);

        let now = Timestamp::from_micros(5);
        assert_eq!(
            source.capture(&mut frame, now).unwrap(),
            CaptureOutcome::Fresh
        );
        assert_eq!(frame.timestamp(), now);
        assert_eq!(
            frame.damage().hint(),
            None,
            "xcap knows nothing about changes"
        );
        scene.assert_shown_by(&frame);
        assert_eq!(
            frame.pixel(10, 20),
            [0x00, 0x00, 0xff, 0xff],
            "B, G, R, opaque"
        );
    });
}
