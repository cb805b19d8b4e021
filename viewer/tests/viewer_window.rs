//! deskwire-viewer with its window, as a technician uses it: on one X server (the
//! technician's desktop) it shows the screen of another (the target's), and what is typed and
//! pointed in its window arrives on the target.
// The measured picture quality goes to stderr.
#![allow(clippy::print_stderr)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use deskwire::ConnectionCode;
use deskwire::{Agent, AgentConfig, AgentEvent};
use deskwire_capture::{CaptureOutcome, Source, Timestamp, X11Source};
use deskwire_tests::session_fixtures::{loopback, luma_psnr_at, wait_host, TestBroker};
use deskwire_tests::{eventually, Scene, TypingTarget, Xvfb};

const WAIT: Duration = Duration::from_secs(10);

/// The viewer process, killed by PID when dropped.
struct ViewerProcess(Child);

impl Drop for ViewerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn xdotool(display: &str, args: &[&str]) -> String {
    let out = Command::new("xdotool")
        .args(args)
        .env("DISPLAY", display)
        .output()
        .expect("xdotool is installed by scripts/setup");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `(x, y, width, height)` of the viewer's window on `display`.
fn window_geometry(display: &str, window: &str) -> (u32, u32, u32, u32) {
    let shell = xdotool(display, &["getwindowgeometry", "--shell", window]);
    let field = |name: &str| -> u32 {
        shell
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in xdotool's answer: {shell}"))
    };
    (field("X"), field("Y"), field("WIDTH"), field("HEIGHT"))
}

/// Pixels of `region` (target coordinates) whose colour in the window, at `at` on the
/// technician's screen, is far from the target's.
fn differing(
    desk: &deskwire_capture::Frame,
    at: (u32, u32),
    target: &deskwire_capture::Frame,
    region: (std::ops::Range<u32>, std::ops::Range<u32>),
) -> usize {
    let (xs, ys) = region;
    ys.flat_map(|y| xs.clone().map(move |x| (x, y)))
        .filter(|&(x, y)| {
            let a = desk.pixel(x + at.0, y + at.1);
            let b = target.pixel(x, y);
            (0..3).map(|i| a[i].abs_diff(b[i]) as u32).sum::<u32>() > 150
        })
        .count()
}

#[test]
fn the_viewer_window_shows_the_remote_screen_and_sends_what_is_typed_and_pointed_in_it() {
    let local = Xvfb::start(1600, 1000).expect("starting the technician's Xvfb");
    let remote = Xvfb::start(1280, 720).expect("starting the target's Xvfb");
    Scene::known(1280, 720).draw(&remote.display()).unwrap();
    let typed = TypingTarget::start(&remote.display()).unwrap();
    let broker = TestBroker::start().unwrap();

    let mut child = Command::new(env!("CARGO_BIN_EXE_deskwire-viewer"))
        .args(["--broker", broker.url()])
        .env("DISPLAY", local.display())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting the viewer");
    let stdout = child.stdout.take().expect("piped stdout");
    let _viewer = ViewerProcess(child);
    let (line_tx, line_rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line_tx.send(line).is_err() {
                break;
            }
        }
    });
    let code: ConnectionCode = loop {
        let line = line_rx
            .recv_timeout(WAIT)
            .expect("the viewer printed no connection code");
        if let Some(c) = line.strip_prefix("connection code: ") {
            break c.parse().expect("a well-formed code");
        }
    };

    let config = AgentConfig::new(broker.url())
        .transport(loopback())
        .input_display(Some(remote.display()));
    let source = Box::new(X11Source::open(Some(&remote.display())).unwrap());
    let host = Agent::start(config, source, code).unwrap();
    wait_host(host.events(), WAIT, |e| {
        matches!(e, AgentEvent::Connected { control: true, .. }).then_some(())
    })
    .unwrap();

    let mut window = String::new();
    eventually("the viewer opened its window", WAIT, || {
        window = xdotool(&local.display(), &["search", "--name", "^deskwire - "])
            .lines()
            .next()
            .unwrap_or("")
            .to_owned();
        !window.is_empty()
    });
    let (x, y, w, h) = window_geometry(&local.display(), &window);
    assert_eq!((w, h), (1280, 720), "a 1280x720 screen fits at 1:1");

    // What the window shows is what the target's screen shows.
    let mut target = X11Source::open(Some(&remote.display())).unwrap();
    let mut target_frame = target.alloc_frame().unwrap();
    let mut desk = X11Source::open(Some(&local.display())).unwrap();
    let mut desk_frame = desk.alloc_frame().unwrap();
    let mut psnr = 0.0;
    let start = Instant::now();
    eventually("the window shows the remote screen", WAIT, || {
        let now = Timestamp::from_micros(start.elapsed().as_micros() as u64 + 1);
        let a = target.capture(&mut target_frame, now);
        let b = desk.capture(&mut desk_frame, now);
        if !matches!(
            (a, b),
            (Ok(CaptureOutcome::Fresh | CaptureOutcome::Unchanged), Ok(_))
        ) {
            return false;
        }
        psnr = luma_psnr_at(&desk_frame, (x, y), &target_frame);
        psnr >= 35.0
    });
    eprintln!("viewer window vs target screen: Y-PSNR {psnr:.1} dB");

    // The pointer follows the technician's, in the target's coordinates (1:1 here).
    let local_display = local.display();
    xdotool(
        &local_display,
        &["mousemove", "--window", &window, "300", "200"],
    );
    eventually("the target's pointer followed", WAIT, || {
        xdotool(&remote.display(), &["getmouselocation", "--shell"])
            .lines()
            .take(2)
            .collect::<Vec<_>>()
            == ["X=300", "Y=200"]
    });

    // The target's pointer is drawn in the window where it is on the target (X grabs leave
    // pointers out, so the target's screen has none there and the window's picture does).
    let mut drawn = 0;
    eventually("the window draws the target's pointer", WAIT, || {
        let now = Timestamp::from_micros(start.elapsed().as_micros() as u64 + 1);
        if target.capture(&mut target_frame, now).is_err()
            || desk.capture(&mut desk_frame, now).is_err()
        {
            return false;
        }
        drawn = differing(&desk_frame, (x, y), &target_frame, (284..316, 184..216));
        drawn >= 20
    });
    let away = differing(&desk_frame, (x, y), &target_frame, (700..732, 500..532));
    eprintln!("pixels that differ around the pointer: {drawn}, far from it: {away}");
    assert!(
        away < 5,
        "the window differs from the screen away from the pointer"
    );

    // Typing with the pointer over the window (no window manager: focus follows the pointer)
    // reaches the application under the target's pointer.
    xdotool(
        &local_display,
        &["type", "--delay", "20", "Typed in the viewer!"],
    );
    xdotool(&local_display, &["key", "Return"]);
    eventually("the target's application got the line", WAIT, || {
        typed.text() == "Typed in the viewer!\n"
    });
    host.shutdown().unwrap();
}
