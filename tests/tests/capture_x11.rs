//! The X11 (MIT-SHM + DAMAGE) backend against a real Xvfb.

use std::time::{Duration, Instant};

use deskwire_capture::{
    open, CaptureError, CaptureOutcome, Frame, OpenOptions, PixelFormat, Rect, Source, SourceSpec,
    Timestamp, Waited, X11Source,
};
use deskwire_tests::{bgr, capture_fresh, resize_screen, Painter, Scene, Xvfb};

const T0: Timestamp = Timestamp::from_micros(1_000);
const T1: Timestamp = Timestamp::from_micros(2_000);

fn server_with_scene(width: u32, height: u32) -> (Xvfb, Scene) {
    let xvfb = Xvfb::start(width, height).expect("starting Xvfb");
    let scene = Scene::known(width, height);
    scene.draw(&xvfb.display()).expect("drawing the scene");
    (xvfb, scene)
}

#[test]
fn x11_capture_reads_known_pixels() {
    let (xvfb, scene) = server_with_scene(640, 480);
    let mut source = X11Source::open(Some(&xvfb.display())).expect("opening X11 source");
    assert_eq!(source.name(), "x11");
    assert_eq!(source.size(), (640, 480));

    let mut frame = source.alloc_frame().unwrap();
    assert_eq!((frame.width(), frame.height()), (640, 480));
    assert_eq!(frame.stride(), 640 * 4);
    assert_eq!(frame.format(), PixelFormat::Bgrx);
    assert_eq!(frame.data().len(), 640 * 4 * 480);

    assert_eq!(
        source.capture(&mut frame, T0).unwrap(),
        CaptureOutcome::Fresh
    );
    assert_eq!(frame.timestamp(), T0);
    assert_eq!(
        frame.damage().hint(),
        None,
        "the first frame has no damage baseline"
    );
    scene.assert_shown_by(&frame);

    // Spot checks spelled out in B, G, R order.
    assert_eq!(frame.pixel(0, 0)[..3], [0x60, 0x40, 0x20]);
    assert_eq!(frame.pixel(10, 20)[..3], [0x00, 0x00, 0xff]);
    assert_eq!(frame.pixel(9, 20)[..3], [0x60, 0x40, 0x20]);
    assert_eq!(frame.pixel(263, 213)[..3], [0x00, 0xff, 0x00]);
    assert_eq!(frame.pixel(264, 213)[..3], [0x60, 0x40, 0x20]);
    assert_eq!(
        frame.pixel(60, 50)[..3],
        [0x56, 0x34, 0x12],
        "the later rectangle wins"
    );
    assert_eq!(frame.pixel(639, 479)[..3], [0xba, 0xdc, 0xfe]);
}

#[test]
fn x11_unchanged_screen_reports_unchanged_without_grabbing() {
    let (xvfb, scene) = server_with_scene(640, 480);
    let mut source = X11Source::open(Some(&xvfb.display())).unwrap();
    let mut frame = source.alloc_frame().unwrap();
    assert_eq!(
        source.capture(&mut frame, T0).unwrap(),
        CaptureOutcome::Fresh
    );

    // Scribble on the frame: an Unchanged capture must leave it (and its timestamp) alone,
    // which shows no image was fetched into it.
    frame.data_mut()[..4].copy_from_slice(&[1, 2, 3, 4]);
    for _ in 0..3 {
        assert_eq!(
            source.capture(&mut frame, T1).unwrap(),
            CaptureOutcome::Unchanged
        );
    }
    assert_eq!(frame.timestamp(), T0);
    assert_eq!(frame.data()[..4], [1, 2, 3, 4]);

    // And drawing again wakes it up.
    Painter::connect(&xvfb.display())
        .unwrap()
        .fill(Rect::new(0, 0, 1, 1), scene.background)
        .unwrap();
    capture_fresh(&mut source, &mut frame, T1, Duration::from_secs(5)).unwrap();
    scene.assert_shown_by(&frame);
}

#[test]
fn x11_damage_hint_covers_what_was_drawn() {
    let (xvfb, _scene) = server_with_scene(640, 480);
    let mut source = X11Source::open(Some(&xvfb.display())).unwrap();
    let mut frame = source.alloc_frame().unwrap();
    assert_eq!(
        source.capture(&mut frame, T0).unwrap(),
        CaptureOutcome::Fresh
    );
    let before = frame.data().to_vec();

    let drawn = Rect::new(400, 300, 37, 21);
    let colour = 0x0a_0b_0c;
    Painter::connect(&xvfb.display())
        .unwrap()
        .fill(drawn, colour)
        .unwrap();
    capture_fresh(&mut source, &mut frame, T1, Duration::from_secs(5)).unwrap();
    assert_eq!(frame.timestamp(), T1);

    let hint = frame
        .damage()
        .hint()
        .expect("the second frame has a damage hint");
    assert!(!hint.is_empty(), "something was drawn");
    let hinted = |x, y| hint.iter().any(|r| r.contains(x, y));
    for y in 0..480 {
        for x in 0..640 {
            let i = y as usize * frame.stride() + x as usize * 4;
            if drawn.contains(x, y) {
                assert!(
                    hinted(x, y),
                    "drawn pixel ({x}, {y}) missing from hint {hint:?}"
                );
                assert_eq!(frame.pixel(x, y)[..3], bgr(colour));
            } else if !hinted(x, y) {
                assert_eq!(
                    frame.data()[i..i + 3],
                    before[i..i + 3],
                    "pixel ({x}, {y}) outside the hint changed"
                );
            }
        }
    }
    for r in hint {
        assert_eq!(r.clip_to(640, 480), *r, "hint rectangles lie on the screen");
    }

    // The damage was consumed: nothing new, nothing to grab.
    assert_eq!(
        source.capture(&mut frame, T1).unwrap(),
        CaptureOutcome::Unchanged
    );
}

#[test]
fn x11_rejects_foreign_frames() {
    let (xvfb, _scene) = server_with_scene(640, 480);
    let mut source = X11Source::open(Some(&xvfb.display())).unwrap();

    let mut heap = Frame::new(640, 480);
    let err = source.capture(&mut heap, T0).unwrap_err();
    assert!(matches!(err, CaptureError::ForeignFrame { .. }), "{err}");

    // Shared memory of another source on the same server is foreign too.
    let mut other = X11Source::open(Some(&xvfb.display())).unwrap();
    let mut theirs = other.alloc_frame().unwrap();
    let err = source.capture(&mut theirs, T0).unwrap_err();
    assert!(matches!(err, CaptureError::ForeignFrame { .. }), "{err}");

    // The refusals did not disturb the source.
    let mut ours = source.alloc_frame().unwrap();
    assert_eq!(
        source.capture(&mut ours, T0).unwrap(),
        CaptureOutcome::Fresh
    );
    assert_eq!(
        other.capture(&mut theirs, T0).unwrap(),
        CaptureOutcome::Fresh
    );
}

#[test]
fn x11_open_fails_clearly_without_a_display() {
    let err = X11Source::open(Some(":4242")).unwrap_err();
    assert!(matches!(err, CaptureError::NoDisplay { .. }), "{err}");
    assert!(err.to_string().contains(":4242"), "{err}");
}

#[test]
fn auto_picks_x11_when_the_display_has_mit_shm() {
    let (xvfb, scene) = server_with_scene(640, 480);
    let opts = OpenOptions {
        display: Some(xvfb.display()),
        ..OpenOptions::default()
    };
    let mut source = open(&SourceSpec::Auto, &opts).expect("opening auto source");
    assert_eq!(source.name(), "x11");
    let mut frame = source.alloc_frame().unwrap();
    assert_eq!(
        source.capture(&mut frame, T0).unwrap(),
        CaptureOutcome::Fresh
    );
    scene.assert_shown_by(&frame);
}

#[test]
fn x11_frames_outlive_their_source() {
    let (xvfb, scene) = server_with_scene(640, 480);
    let mut source = X11Source::open(Some(&xvfb.display())).unwrap();
    let mut frame = source.alloc_frame().unwrap();
    assert_eq!(
        source.capture(&mut frame, T0).unwrap(),
        CaptureOutcome::Fresh
    );
    drop(source);
    // Pool frames may be dropped after the source (and on another thread).
    std::thread::spawn(move || {
        scene.assert_shown_by(&frame);
        drop(frame);
    })
    .join()
    .unwrap();
}

#[test]
fn x11_reports_a_resized_screen_and_then_captures_at_the_new_size() {
    let (xvfb, _scene) = server_with_scene(640, 480);
    let mut source = X11Source::open(Some(&xvfb.display())).unwrap();
    let mut old = source.alloc_frame().unwrap();
    assert_eq!(source.capture(&mut old, T0).unwrap(), CaptureOutcome::Fresh);

    resize_screen(&xvfb.display(), 320, 240).expect("resizing through RandR");
    // The resize reaches the source as an event, a moment after RandR's round trip.
    let deadline = Instant::now() + Duration::from_secs(5);
    let err = loop {
        match source.capture(&mut old, T1) {
            Err(e) => break e,
            Ok(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(1)),
            Ok(outcome) => panic!("resize not noticed within 5 s (last: {outcome:?})"),
        }
    };
    assert!(
        matches!(
            err,
            CaptureError::SizeChanged {
                old_w: 640,
                old_h: 480,
                new_w: 320,
                new_h: 240
            }
        ),
        "{err}"
    );
    assert_eq!(source.size(), (320, 240));

    let err = source.capture(&mut old, T1).unwrap_err();
    assert!(matches!(err, CaptureError::ForeignFrame { .. }), "{err}");

    let scene = Scene {
        width: 320,
        height: 240,
        background: 0x11_22_33,
        rects: vec![(Rect::new(300, 200, 20, 40), 0x44_55_66)],
    };
    scene.draw(&xvfb.display()).unwrap();
    let mut new = source.alloc_frame().unwrap();
    assert_eq!(source.capture(&mut new, T1).unwrap(), CaptureOutcome::Fresh);
    assert_eq!(
        new.damage().hint(),
        None,
        "nothing to compare with after a resize"
    );
    scene.assert_shown_by(&new);
}

#[test]
fn x11_pointer_reports_where_it_is_and_each_new_shape_once() {
    let xvfb = Xvfb::start(640, 480).expect("starting Xvfb");
    let painter = Painter::connect(&xvfb.display()).unwrap();
    painter.warp_pointer(100, 50).unwrap();
    let mut source = X11Source::open(Some(&xvfb.display())).unwrap();
    let mut frame = source.alloc_frame().unwrap();
    source.capture(&mut frame, T0).unwrap();

    let first = source.pointer().unwrap().expect("X11 knows its pointer");
    assert_eq!((first.x, first.y, first.visible), (100, 50, true));
    let shape = first.shape.expect("the first read carries the shape");
    assert!(shape.width > 0 && shape.height > 0 && shape.hot_x < shape.width);
    assert!(
        shape.rgba.chunks(4).any(|p| p[3] == 255),
        "the default cursor has opaque pixels"
    );

    // The same shape is not read again; a device's move is seen at once.
    painter.move_pointer(300, 200).unwrap();
    source.capture(&mut frame, T1).unwrap();
    let moved = source.pointer().unwrap().unwrap();
    assert_eq!((moved.x, moved.y), (300, 200));
    assert!(
        moved.shape.is_none(),
        "an unchanged shape is not sent again"
    );
    assert_eq!(moved.serial, first.serial);
    // A warp moves no device (no motion event): it is seen when the last reading expires.
    painter.warp_pointer(310, 210).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        source.capture(&mut frame, T1).unwrap();
        let p = source.pointer().unwrap().unwrap();
        if (p.x, p.y) == (310, 210) {
            break;
        }
        assert!(Instant::now() < deadline, "the warp was never seen");
        std::thread::sleep(Duration::from_millis(20));
    }

    // A new cursor on the window under the pointer is a new shape, read once.
    painter.set_root_cursor(60).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let new_shape = loop {
        source.capture(&mut frame, T1).unwrap();
        let p = source.pointer().unwrap().unwrap();
        if let Some(s) = p.shape {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "no CursorNotify for the new cursor"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_ne!(new_shape.serial, first.serial);
    assert_ne!(
        new_shape.rgba, shape.rgba,
        "the hand is not the default cursor"
    );
    source.capture(&mut frame, T1).unwrap();
    assert!(source.pointer().unwrap().unwrap().shape.is_none());
}

#[test]
fn x11_wait_sleeps_through_a_still_screen_and_wakes_at_a_change() {
    let (xvfb, _scene) = server_with_scene(640, 480);
    let mut source = X11Source::open(Some(&xvfb.display())).unwrap();
    let mut frame = source.alloc_frame().unwrap();
    // The first capture and the first pointer reading are news.
    assert_eq!(source.wait(Duration::ZERO).unwrap(), Waited::News);
    source.capture(&mut frame, T0).unwrap();
    source.pointer().unwrap();
    assert_eq!(
        source.wait(Duration::from_millis(100)).unwrap(),
        Waited::Timeout,
        "a still screen and a still pointer are no news"
    );

    // Drawing wakes a long wait.
    let display = xvfb.display();
    let painter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        deskwire_tests::fill_rect(&display, 10, 10, 20, 20, 0x00ff00).unwrap();
    });
    assert_eq!(source.wait(Duration::from_secs(30)).unwrap(), Waited::News);
    painter.join().unwrap();
    assert_eq!(
        source.capture(&mut frame, T1).unwrap(),
        CaptureOutcome::Fresh
    );
    source.pointer().unwrap();

    // So does the pointer moved as a device moves it, and the reading after says where.
    let p = Painter::connect(&xvfb.display()).unwrap();
    p.move_pointer(200, 100).unwrap();
    assert_eq!(source.wait(Duration::from_secs(30)).unwrap(), Waited::News);
    source.capture(&mut frame, T1).unwrap();
    let at = source.pointer().unwrap().unwrap();
    assert_eq!((at.x, at.y), (200, 100));
}
