//! Live sessions end to end: a real broker, real WebRTC on loopback, a real X server.
// The measured figures (first frame, PSNR, time to notice a vanished peer) go to stderr.
#![allow(clippy::print_stderr)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use deskwire::input::{InputEvent, InputRefusal, Key, NamedKey, PointerButton};
use deskwire::{
    Agent, AgentConfig, AgentEvent, DisconnectReason, Viewer, ViewerConfig, ViewerEvent,
};
use deskwire::{ConnectionCode, JoinRefusal, SessionCode};
use deskwire_capture::{open, OpenOptions, Source, SourceSpec, Timestamp, X11Source};
use deskwire_tests::session_fixtures::{
    code_of, deskwire_threads, loopback, luma_psnr, wait_host, wait_viewer, TestBroker,
};
use deskwire_tests::{capture_fresh, Painter, Scene, TypingTarget, Xvfb};
use x11rb::connection::Connection;
use x11rb::protocol::xproto::ConnectionExt;

/// Sessions are heavy (codec threads, X servers) and one test counts threads: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

const WAIT: Duration = Duration::from_secs(15);

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn viewer(broker: &TestBroker) -> Viewer {
    Viewer::start(ViewerConfig::new(broker.url()).transport(loopback()))
        .expect("starting the viewer")
}

fn host_on(
    broker: &TestBroker,
    source: Box<dyn Source>,
    code: ConnectionCode,
    view_only: bool,
    display: Option<String>,
) -> Agent {
    let config = AgentConfig::new(broker.url())
        .transport(loopback())
        .view_only(view_only)
        .input_display(display);
    Agent::start(config, source, code).expect("starting the host")
}

fn synthetic() -> Box<dyn Source> {
    let opts = OpenOptions {
        width: 640,
        height: 480,
        ..OpenOptions::default()
    };
    open(&"synthetic:typing".parse::<SourceSpec>().unwrap(), &opts).unwrap()
}

fn connected(c: &Viewer) {
    wait_viewer(c, WAIT, |e| {
        matches!(e, ViewerEvent::Connected { .. }).then_some(())
    })
    .expect("the session connects");
}

fn pointer(display: &str) -> (i16, i16, u16) {
    let (conn, screen) = x11rb::connect(Some(display)).expect("connecting to Xvfb");
    let root = conn.setup().roots[screen].root;
    let p = conn.query_pointer(root).unwrap().reply().unwrap();
    (p.root_x, p.root_y, u16::from(p.mask))
}

fn eventually(what: &str, ok: impl FnMut() -> bool) {
    deskwire_tests::eventually(what, Duration::from_secs(5), ok);
}

#[test]
fn the_viewer_shows_what_is_on_the_target_screen() {
    let _s = serial();
    let xvfb = Xvfb::start(1280, 720).expect("starting Xvfb");
    let scene = Scene::known(1280, 720);
    scene.draw(&xvfb.display()).unwrap();
    let broker = TestBroker::start().unwrap();
    let c = viewer(&broker);
    let code = code_of(&c).unwrap();
    let entered = Instant::now();
    let source = Box::new(X11Source::open(Some(&xvfb.display())).unwrap());
    let h = host_on(&broker, source, code, true, None);
    connected(&c);
    wait_viewer(&c, WAIT, |e| {
        matches!(e, ViewerEvent::Frame(_)).then_some(())
    })
    .unwrap();
    let first = entered.elapsed();
    // Give the encoder's refinement of the first frames a moment, then compare.
    let _ = wait_viewer(&c, Duration::from_millis(500), |_| None::<()>);
    let mut reference = X11Source::open(Some(&xvfb.display())).unwrap();
    let mut frame = reference.alloc_frame().unwrap();
    capture_fresh(&mut reference, &mut frame, Timestamp::from_micros(1), WAIT).unwrap();
    let psnr = c
        .with_frame(|shown| luma_psnr(shown, &frame))
        .expect("a decoded frame");
    eprintln!("code entry -> first frame {first:?}; Y-PSNR {psnr:.1} dB");
    assert!(psnr >= 35.0, "viewer picture Y-PSNR {psnr:.1} dB < 35 dB");
    c.shutdown().unwrap();
    let reason = wait_host(h.events(), WAIT, |e| match e {
        AgentEvent::Disconnected(r) => Some(r.clone()),
        _ => None,
    })
    .unwrap();
    assert!(
        matches!(reason, DisconnectReason::PeerBye { .. }),
        "{reason:?}"
    );
    h.shutdown().unwrap();
}

#[test]
fn viewer_input_moves_clicks_and_types_on_the_target() {
    let _s = serial();
    let xvfb = Xvfb::start(800, 600).expect("starting Xvfb");
    let display = xvfb.display();
    // An application that writes what it receives, covering the pointer.
    let typed = TypingTarget::start(&display).unwrap();

    let broker = TestBroker::start().unwrap();
    let c = viewer(&broker);
    let code = code_of(&c).unwrap();
    let source = Box::new(X11Source::open(Some(&display)).unwrap());
    let h = host_on(&broker, source, code, false, Some(display.clone()));
    connected(&c);
    wait_host(h.events(), WAIT, |e| {
        matches!(e, AgentEvent::Connected { control: true, .. }).then_some(())
    })
    .unwrap();

    c.send_input(InputEvent::PointerMove { x: 123, y: 77 })
        .unwrap();
    eventually("the pointer is where the viewer put it", || {
        let (x, y, _) = pointer(&display);
        (x, y) == (123, 77)
    });
    eventually("the remote pointer drawn at the viewer follows", || {
        c.cursor().is_some_and(|p| (p.x, p.y) == (123, 77))
    });
    c.send_input(InputEvent::PointerMove { x: 5000, y: -20 })
        .unwrap();
    eventually("an out-of-screen position is clamped", || {
        let (x, y, _) = pointer(&display);
        (x, y) == (799, 0)
    });
    c.send_input(InputEvent::PointerMove { x: 100, y: 100 })
        .unwrap();
    c.send_input(InputEvent::Button {
        button: PointerButton::Left,
        down: true,
    })
    .unwrap();
    eventually("button 1 is held", || pointer(&display).2 & 0x100 != 0);
    c.send_input(InputEvent::Button {
        button: PointerButton::Left,
        down: false,
    })
    .unwrap();
    eventually("button 1 is released", || pointer(&display).2 & 0x100 == 0);

    c.send_input(InputEvent::Text("hello deskwire".into()))
        .unwrap();
    c.send_input(InputEvent::Key {
        key: Key::Named(NamedKey::Return),
        down: true,
    })
    .unwrap();
    c.send_input(InputEvent::Key {
        key: Key::Named(NamedKey::Return),
        down: false,
    })
    .unwrap();
    eventually("cat wrote the typed line", || {
        typed.text() == "hello deskwire\n"
    });

    // A button held when the session ends is released by the target.
    c.send_input(InputEvent::Button {
        button: PointerButton::Right,
        down: true,
    })
    .unwrap();
    eventually("button 3 is held", || pointer(&display).2 & 0x400 != 0);
    c.shutdown().unwrap();
    eventually("button 3 is released at the end", || {
        pointer(&display).2 & 0x400 == 0
    });
    h.shutdown().unwrap();
}

#[test]
fn a_view_only_session_injects_nothing() {
    let _s = serial();
    let xvfb = Xvfb::start(800, 600).expect("starting Xvfb");
    let display = xvfb.display();
    let before = pointer(&display);
    let broker = TestBroker::start().unwrap();
    let c = viewer(&broker);
    let code = code_of(&c).unwrap();
    let source = Box::new(X11Source::open(Some(&display)).unwrap());
    let h = host_on(&broker, source, code, true, Some(display.clone()));
    connected(&c);
    let control = wait_viewer(&c, WAIT, |e| match e {
        ViewerEvent::Permissions { control } => Some(*control),
        _ => None,
    })
    .unwrap();
    assert!(!control, "a view-only target announced control");
    c.send_input(InputEvent::PointerMove { x: 10, y: 10 })
        .unwrap();
    c.send_input(InputEvent::Button {
        button: PointerButton::Left,
        down: true,
    })
    .unwrap();
    for _ in 0..2 {
        let reason = wait_host(h.events(), WAIT, |e| match e {
            AgentEvent::InputRefused { reason, .. } => Some(*reason),
            AgentEvent::InputInjected(k) => panic!("{k:?} was injected in a view-only session"),
            _ => None,
        })
        .unwrap();
        assert_eq!(reason, InputRefusal::ViewOnly);
    }
    assert_eq!(
        pointer(&display),
        before,
        "the pointer did not move and no button is down"
    );

    // The technician still sees the user's pointer: where it is, and its shape.
    let user = Painter::connect(&display).unwrap();
    user.move_pointer(321, 123).unwrap();
    eventually("the viewer draws the user's pointer where it is", || {
        c.cursor()
            .is_some_and(|p| (p.x, p.y, p.visible) == (321, 123, true) && p.shape.is_some())
    });
    let arrow = c.cursor().and_then(|p| p.shape).unwrap();
    user.set_root_cursor(60).unwrap();
    eventually("the viewer gets the pointer's new shape", || {
        c.cursor()
            .and_then(|p| p.shape)
            .is_some_and(|s| s.serial != arrow.serial && s.rgba != arrow.rgba)
    });
    c.shutdown().unwrap();
    h.shutdown().unwrap();
}

#[test]
fn revoking_control_mid_session_releases_what_is_held_and_refuses_further_input() {
    let _s = serial();
    let xvfb = Xvfb::start(640, 480).expect("starting Xvfb");
    let display = xvfb.display();
    let broker = TestBroker::start().unwrap();
    let c = viewer(&broker);
    let code = code_of(&c).unwrap();
    let source = Box::new(X11Source::open(Some(&display)).unwrap());
    let h = host_on(&broker, source, code, false, Some(display.clone()));
    connected(&c);
    // Input counts from when the target has the session up (the viewer hears so in
    // `Permissions`); before that it is refused as not established.
    wait_host(h.events(), WAIT, |e| {
        matches!(e, AgentEvent::Connected { control: true, .. }).then_some(())
    })
    .unwrap();
    c.send_input(InputEvent::Button {
        button: PointerButton::Left,
        down: true,
    })
    .unwrap();
    eventually("button 1 is held", || pointer(&display).2 & 0x100 != 0);

    // The target user downgrades the session to view-only.
    h.set_control(false).unwrap();
    eventually("button 1 is released by the downgrade", || {
        pointer(&display).2 & 0x100 == 0
    });
    let control = wait_viewer(&c, WAIT, |e| match e {
        ViewerEvent::Permissions { control } if !*control => Some(*control),
        _ => None,
    })
    .unwrap();
    assert!(!control, "the technician is told");
    c.send_input(InputEvent::Button {
        button: PointerButton::Left,
        down: true,
    })
    .unwrap();
    let reason = wait_host(h.events(), WAIT, |e| match e {
        AgentEvent::InputRefused { reason, .. } => Some(*reason),
        _ => None,
    })
    .unwrap();
    assert_eq!(reason, InputRefusal::ViewOnly);
    assert_eq!(
        pointer(&display).2 & 0x100,
        0,
        "nothing pressed after the downgrade"
    );
    c.shutdown().unwrap();
    h.shutdown().unwrap();
}

#[test]
fn a_target_fails_over_to_the_next_broker_when_the_first_is_unreachable() {
    let _s = serial();
    let broker = TestBroker::start().unwrap();
    let c = viewer(&broker);
    let code = code_of(&c).unwrap();
    // Nothing listens on the first one (a port just freed).
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("ws://{}", dead.local_addr().unwrap());
    drop(dead);
    let config = AgentConfig::new(dead_url)
        .fallback_brokers(vec![broker.url().to_owned()])
        .transport(loopback())
        .view_only(true);
    let h = Agent::start(config, synthetic(), code).unwrap();
    connected(&c);
    c.shutdown().unwrap();
    h.shutdown().unwrap();
}

#[test]
fn a_wrong_code_can_be_corrected_and_a_used_code_is_refused() {
    let _s = serial();
    let broker = TestBroker::start().unwrap();
    let c = viewer(&broker);
    let code = code_of(&c).unwrap();
    let other = SessionCode::from_number((code.session().number() + 1) % SessionCode::SPACE);
    let wrong = ConnectionCode::new(other.unwrap(), code.secret()).unwrap();
    let h = host_on(&broker, synthetic(), wrong, true, None);
    let refusal = wait_host(h.events(), WAIT, |e| match e {
        AgentEvent::CodeRefused { reason, .. } => Some(*reason),
        _ => None,
    })
    .unwrap();
    assert_eq!(refusal, JoinRefusal::WrongCode);
    h.try_code(code).unwrap();
    connected(&c);

    let again = host_on(&broker, synthetic(), code, true, None);
    let refusal = wait_host(again.events(), WAIT, |e| match e {
        AgentEvent::CodeRefused { reason, message } => {
            assert!(message.contains("already used"), "{message}");
            Some(*reason)
        }
        _ => None,
    })
    .unwrap();
    assert_eq!(refusal, JoinRefusal::AlreadyUsed);
    // Cancel instead of trying again.
    again.shutdown().unwrap();
    c.shutdown().unwrap();
    h.shutdown().unwrap();
}

/// The code with the same session half and another secret: what a user who mistyped the
/// last four digits enters.
fn wrong_secret(code: ConnectionCode) -> ConnectionCode {
    ConnectionCode::new(
        code.session(),
        (code.secret() + 1) % ConnectionCode::SECRET_SPACE,
    )
    .unwrap()
}

#[test]
fn a_mistyped_secret_connects_nothing_and_the_right_code_then_works() {
    let _s = serial();
    let broker = TestBroker::start().unwrap();
    let c = viewer(&broker);
    let code = code_of(&c).unwrap();
    let h = host_on(&broker, synthetic(), wrong_secret(code), true, None);
    let refusal = wait_host(h.events(), WAIT, |e| match e {
        AgentEvent::CodeRefused { reason, .. } => Some(*reason),
        AgentEvent::Connected { .. } => panic!("connected with the wrong secret"),
        _ => None,
    })
    .unwrap();
    assert_eq!(refusal, JoinRefusal::VerificationFailed);
    wait_viewer(&c, WAIT, |e| match e {
        ViewerEvent::VerificationFailed { .. } => Some(()),
        ViewerEvent::Connected { .. } => panic!("connected with the wrong secret"),
        _ => None,
    })
    .unwrap();
    // The broker makes a retry on that session wait a second (doubling per failure).
    broker.advance(Duration::from_secs(1));
    h.try_code(code).unwrap();
    connected(&c);
    c.shutdown().unwrap();
    h.shutdown().unwrap();
}

#[test]
fn three_failed_verifications_burn_the_code() {
    let _s = serial();
    let broker = TestBroker::start().unwrap();
    let c = viewer(&broker);
    let code = code_of(&c).unwrap();
    let h = host_on(&broker, synthetic(), wrong_secret(code), true, None);
    let refused = |h: &Agent| {
        wait_host(h.events(), WAIT, |e| match e {
            AgentEvent::CodeRefused { reason, .. } => Some(*reason),
            AgentEvent::Connected { .. } => panic!("connected with the wrong secret"),
            _ => None,
        })
        .unwrap()
    };
    assert_eq!(refused(&h), JoinRefusal::VerificationFailed);
    // Too soon: the session makes a retry wait a second after the first failure.
    h.try_code(wrong_secret(code)).unwrap();
    assert_eq!(refused(&h), JoinRefusal::TooManyAttempts);
    broker.advance(Duration::from_secs(1));
    h.try_code(wrong_secret(code)).unwrap();
    assert_eq!(refused(&h), JoinRefusal::VerificationFailed);
    broker.advance(Duration::from_secs(2));
    h.try_code(wrong_secret(code)).unwrap();
    assert_eq!(refused(&h), JoinRefusal::Burned);
    // Burned for good: the right code no longer works either, and the technician is told.
    h.try_code(code).unwrap();
    assert_eq!(refused(&h), JoinRefusal::Burned);
    let ended = wait_viewer(&c, WAIT, |e| match e {
        ViewerEvent::Disconnected(r) => Some(r.clone()),
        _ => None,
    })
    .unwrap();
    assert!(matches!(ended, DisconnectReason::Broker(_)), "{ended:?}");
    h.shutdown().unwrap();
    c.shutdown().unwrap();
}

#[test]
fn an_expired_code_is_refused_with_its_reason() {
    let _s = serial();
    let broker = TestBroker::start().unwrap();
    let c = viewer(&broker);
    let code = code_of(&c).unwrap();
    broker.advance(Duration::from_secs(10 * 60 + 1));
    let h = host_on(&broker, synthetic(), code, true, None);
    let refusal = wait_host(h.events(), WAIT, |e| match e {
        AgentEvent::CodeRefused { reason, .. } => Some(*reason),
        AgentEvent::Connected { .. } => panic!("connected with an expired code"),
        _ => None,
    })
    .unwrap();
    assert_eq!(refusal, JoinRefusal::Expired);
    h.shutdown().unwrap();
    c.shutdown().unwrap();
}

#[test]
fn a_vanished_target_shows_reconnecting_within_seconds_ends_at_the_peer_timeout_and_leaves_no_thread(
) {
    let _s = serial();
    let broker = TestBroker::start().unwrap();
    // Without a goodbye, a killed target looks like an outage: the technician is told at
    // once that the session is reconnecting, and it ends at the peer timeout (short here;
    // 30 s by default, to ride out real outages).
    let c = Viewer::start(
        ViewerConfig::new(broker.url())
            .transport(loopback())
            .peer_timeout(Duration::from_secs(5)),
    )
    .expect("starting the viewer");
    let code = code_of(&c).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_deskwire-test-host"))
        .arg(broker.url())
        .arg(code.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "connected");
    connected(&c);
    wait_viewer(&c, WAIT, |e| {
        matches!(e, ViewerEvent::Frame(_)).then_some(())
    })
    .unwrap();

    child.kill().unwrap(); // SIGKILL: no goodbye of any kind
    let killed = Instant::now();
    let _ = child.wait();
    wait_viewer(&c, Duration::from_secs(5), |e| {
        matches!(e, ViewerEvent::Reconnecting).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let told = killed.elapsed();
    assert!(
        told < Duration::from_secs(4),
        "reconnecting shown after {told:?}"
    );
    let reason = wait_viewer(&c, Duration::from_secs(10), |e| match e {
        ViewerEvent::Disconnected(r) => Some(r.clone()),
        _ => None,
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let after = killed.elapsed();
    eprintln!("target killed; reconnecting after {told:?}, {reason:?} after {after:?}");
    assert!(
        matches!(
            reason,
            DisconnectReason::PeerTimeout(_) | DisconnectReason::Transport(_)
        ),
        "{reason:?}"
    );
    assert!(after < Duration::from_secs(8), "took {after:?}");
    c.shutdown().unwrap();
    assert_eq!(
        deskwire_threads(),
        Vec::<String>::new(),
        "threads left after shutdown"
    );
}
