//! Direct connections on a LAN with no broker: network namespaces the test makes stand in
//! for a technician's computer and two targets on one Ethernet segment. The targets run the
//! real agent (`deskwire-agent --lan`); the technician's side is the engine's `Viewer` and `Browser`,
//! run on a thread inside the technician's namespace.
// The measured picture quality goes to stderr.
#![allow(clippy::print_stderr)]

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use deskwire::input::{InputEvent, Key, NamedKey};
use deskwire::lan::{Browser, LanPassword, LanPeer};
use deskwire::{DisconnectReason, TransportConfig, Viewer, ViewerConfig, ViewerEvent};
use deskwire_capture::{CaptureOutcome, Source, Timestamp, X11Source};
use deskwire_tests::binaries::Running;
use deskwire_tests::netns::Lan;
use deskwire_tests::session_fixtures::{lan_permission, luma_psnr, wait_viewer};
use deskwire_tests::{eventually, Scene, TypingTarget, Xvfb};

const WAIT: Duration = Duration::from_secs(15);
const PORT: u16 = 8451;

/// A small still screen for a target whose picture the test does not look at.
const STILL_SCREEN: [&str; 6] = [
    "--source",
    "synthetic:static",
    "--width",
    "640",
    "--height",
    "480",
];

/// A target that lets a proven technician in at once, view only, without announcing itself.
const LET_IN_AT_ONCE: [&str; 6] = [
    "--view-only",
    "--no-announce",
    "--acceptance",
    "auto",
    "--answer-within",
    "0",
];

/// An agent in LAN mode inside a target's namespace; killed by PID when dropped.
struct Target {
    agent: Running,
    socket: PathBuf,
    password: LanPassword,
}

impl Target {
    fn start(lan: &Lan, i: usize, name: &str, extra: &[&str]) -> Self {
        let socket = std::env::temp_dir().join(format!(
            "dw-lan-{}-{}-{name}.sock",
            std::process::id(),
            lan.target(i)
        ));
        let listen = SocketAddr::new(IpAddr::V4(lan.target_ip(i)), PORT).to_string();
        let mut cmd = lan.command(lan.target(i), env!("CARGO_BIN_EXE_deskwire-agent"));
        cmd.args([
            "--lan",
            "--name",
            name,
            "--listen",
            &listen,
            "--control-socket",
        ])
        .arg(&socket)
        .args(extra)
        .env("RUST_LOG", "warn")
        .stderr(Stdio::null());
        let mut t = Self {
            agent: Running::start(cmd),
            socket,
            password: LanPassword::from_random(0),
        };
        let shown = t.wait_line("LAN password: ");
        t.password = shown
            .split_whitespace()
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no password in {shown:?}"));
        t.wait_line("listening on ");
        t
    }

    /// The rest of the next line that starts with `prefix`.
    fn wait_line(&self, prefix: &str) -> String {
        let line = self.agent.wait_for(prefix, WAIT);
        line.split_once(prefix)
            .map_or(line.clone(), |(_, rest)| rest.to_owned())
    }

    /// `deskwire-agent ctl REQUEST` against this target's control socket.
    fn ctl(&self, request: &str) -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_deskwire-agent"))
            .args(["ctl", "--control-socket"])
            .arg(&self.socket)
            .args(request.split(' '))
            .output()
            .expect("running deskwire-agent ctl");
        assert!(
            out.status.success(),
            "deskwire-agent ctl {request}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        // The agent itself is killed when `agent` drops, right after this.
        let _ = std::fs::remove_file(&self.socket);
    }
}

fn transport(lan: &Lan) -> TransportConfig {
    TransportConfig::default().bind(vec![IpAddr::V4(lan.viewer_ip())])
}

/// Connect from the technician's namespace and wait for the first frame, or for the end.
fn connect(lan: &Lan, to: SocketAddr, password: LanPassword) -> Result<Viewer, DisconnectReason> {
    let config = ViewerConfig::lan(to, password, lan_permission()).transport(transport(lan));
    let started = Instant::now();
    let c = lan
        .run_in(lan.viewer(), move || Viewer::start(config))
        .expect("entering the technician's namespace")
        .expect("starting the viewer");
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match c.events().recv_timeout(left) {
            Ok(ViewerEvent::Frame(_)) => {
                eprintln!(
                    "LAN connect -> first frame: {} ms",
                    started.elapsed().as_millis()
                );
                return Ok(c);
            }
            Ok(ViewerEvent::Disconnected(r)) => return Err(r),
            Ok(_) => {}
            Err(_) => panic!("no frame and no end in {WAIT:?}"),
        }
    }
}

fn refusal(r: Result<Viewer, DisconnectReason>) -> String {
    match r {
        Err(DisconnectReason::Lan(why)) => why,
        Err(other) => panic!("expected a LAN refusal, got {other}"),
        Ok(_) => panic!("expected a LAN refusal, got a session"),
    }
}

#[test]
fn targets_are_found_on_the_lan_and_one_is_streamed_driven_and_ended_from_its_side() {
    let lan = Lan::create(2).expect("making the test LAN");
    let screen = Xvfb::start(1280, 720).expect("starting the target's Xvfb");
    let scene = Scene::known(1280, 720);
    scene.draw(&screen.display()).unwrap();
    let typed = TypingTarget::start(&screen.display()).unwrap();
    let display = screen.display();
    let a = Target::start(
        &lan,
        0,
        "reception-pc",
        &[
            "--source",
            "x11",
            "--display",
            &display,
            "--acceptance",
            "auto",
            "--answer-within",
            "0",
        ],
    );
    let _b = Target::start(
        &lan,
        1,
        "accounting-pc",
        &[&STILL_SCREEN[..], &["--view-only"]].concat(),
    );

    // The password is on the agent's terminal and behind its control socket, the same.
    let by_ctl = a.ctl("password");
    assert!(
        by_ctl.starts_with(&a.password.to_string()),
        "ctl says {by_ctl:?}, the terminal said {}",
        a.password
    );

    // Discovery streams each target as it answers; filters pick by name or address.
    let found: Vec<LanPeer> = lan
        .run_in(lan.viewer(), || {
            let browser = Browser::start().expect("browsing");
            let mut found: Vec<LanPeer> = Vec::new();
            let deadline = Instant::now() + WAIT;
            while found.len() < 2 && Instant::now() < deadline {
                if let Ok(p) = browser.found().recv_timeout(Duration::from_millis(100)) {
                    if !found.iter().any(|f| f.name == p.name) {
                        found.push(p);
                    }
                }
            }
            found
        })
        .unwrap();
    let names: Vec<&str> = found.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(found.len(), 2, "found {names:?}");
    let reception = found
        .iter()
        .find(|p| p.name == "reception-pc")
        .expect("reception-pc");
    assert_eq!(
        reception.socket_addr(),
        Some(SocketAddr::new(IpAddr::V4(lan.target_ip(0)), PORT))
    );
    let by = |f: &str| -> Vec<&str> {
        found
            .iter()
            .filter(|p| p.matches(f))
            .map(|p| p.name.as_str())
            .collect()
    };
    assert_eq!(by("RECEP"), ["reception-pc"]);
    assert_eq!(by(&lan.target_ip(1).to_string()), ["accounting-pc"]);
    assert_eq!(by("-pc").len(), 2);
    assert!(by("warehouse").is_empty());

    // A wrong password is refused. The first costs no wait (a typo is retyped at once);
    // after the second the same address waits before another try, even with the right one.
    let to = reception.socket_addr().unwrap();
    let wrong = LanPassword::from_random(12345);
    let why = refusal(connect(&lan, to, wrong.clone()));
    assert_eq!(why, "wrong password; check it and try again");
    let why = refusal(connect(&lan, to, wrong));
    assert!(why.contains("wrong password; try again in 1 s"), "{why}");
    let why = refusal(connect(&lan, to, a.password.clone()));
    assert!(why.contains("too many wrong passwords"), "{why}");
    let why = a.wait_line("refused a connection from ");
    assert!(why.contains("10.77.0.1"), "{why}");

    // After the back-off (one second after two failures) the right password gets in.
    let mut session = None;
    eventually("the back-off ended and the session started", WAIT, || {
        session = connect(&lan, to, a.password.clone()).ok();
        session.is_some()
    });
    let c = session.unwrap();

    // What the technician sees is the target's screen.
    let mut target = X11Source::open(Some(&display)).unwrap();
    let mut shot = target.alloc_frame().unwrap();
    let mut psnr = 0.0;
    eventually("the picture matches the target's screen", WAIT, || {
        let now = Timestamp::from_micros(1);
        if !matches!(
            target.capture(&mut shot, now),
            Ok(CaptureOutcome::Fresh | CaptureOutcome::Unchanged)
        ) {
            return false;
        }
        psnr = c.with_frame(|f| luma_psnr(f, &shot)).unwrap_or(0.0);
        psnr >= 35.0
    });
    eprintln!("LAN session: Y-PSNR {psnr:.1} dB against the target's screen");
    assert!(a.ctl("sessions").starts_with("1 session: control"));

    // What the technician types arrives in the target's application (under the pointer:
    // there is no window manager, focus follows the pointer).
    c.send_input(InputEvent::PointerMove { x: 60, y: 60 })
        .unwrap();
    c.send_input(InputEvent::Text("over the LAN".into()))
        .unwrap();
    for down in [true, false] {
        c.send_input(InputEvent::Key {
            key: Key::Named(NamedKey::Return),
            down,
        })
        .unwrap();
    }
    eventually("the target's application got the line", WAIT, || {
        typed.text() == "over the LAN\n"
    });

    // The target's side ends it; the technician hears so.
    assert_eq!(a.ctl("terminate"), "terminated");
    let ended = wait_viewer(&c, WAIT, |e| match e {
        ViewerEvent::Disconnected(r) => Some(r.clone()),
        _ => None,
    });
    match ended {
        Ok(DisconnectReason::PeerBye { .. }) => {}
        Err(e) if e.to_string().contains("ended") => {}
        other => panic!("expected the target's goodbye, got {other:?}"),
    }
    a.wait_line("session terminated on this computer");
    c.shutdown().unwrap();
}

#[test]
fn a_restarted_target_has_a_new_password_and_the_old_one_stops_working() {
    let lan = Lan::create(1).expect("making the test LAN");
    let view = [&STILL_SCREEN[..], &LET_IN_AT_ONCE[..]].concat();
    let first = Target::start(&lan, 0, "kiosk", &view);
    let old = first.password.clone();
    drop(first);
    let second = Target::start(&lan, 0, "kiosk", &view);
    assert_ne!(second.password, old, "a restart rotates the password");
    let to = SocketAddr::new(IpAddr::V4(lan.target_ip(0)), PORT);
    let why = refusal(connect(&lan, to, old));
    assert!(why.contains("wrong password"), "{why}");
    let mut session = None;
    eventually(
        "the new password gets in once the back-off ended",
        WAIT,
        || {
            session = connect(&lan, to, second.password.clone()).ok();
            session.is_some()
        },
    );
    session.unwrap().shutdown().unwrap();
}

#[test]
fn the_viewer_refuses_the_lan_when_the_local_policy_or_the_broker_says_no() {
    let policy = std::env::temp_dir().join(format!("dw-policy-{}.conf", std::process::id()));
    std::fs::write(&policy, "connect_on_lan = no\n").unwrap();
    let policy_arg = policy.to_string_lossy().into_owned();
    let (ok, text) = deskwire_tests::binaries::viewer(
        &[
            "--browse",
            "--browse-seconds",
            "0.1",
            "--policy",
            &policy_arg,
        ],
        &[],
    );
    assert!(!ok, "{text}");
    assert!(text.contains("connect_on_lan = no"), "{text}");
    std::fs::write(&policy, "connect_on_lan = yes\n").unwrap();
    let (ok, text) = deskwire_tests::binaries::viewer(
        &[
            "--browse",
            "no-such-computer-zz",
            "--browse-seconds",
            "0.1",
            "--policy",
            &policy_arg,
        ],
        &[],
    );
    assert!(ok, "{text}");
    // Finding nothing is said, not left silent.
    assert!(
        text.contains("no computer matching \"no-such-computer-zz\" answered in 100 ms"),
        "{text}"
    );
    let _ = std::fs::remove_file(&policy);

    use deskwire_broker::store::{Permission, Permissions, Policy};
    let (broker, token) = deskwire_tests::session_fixtures::TestBroker::start_with_accounts(
        Permissions::NONE.with(Permission::Control),
        Policy::default(),
    )
    .unwrap();
    let (ok, text) = deskwire_tests::binaries::viewer(
        &[
            "--browse",
            "--browse-seconds",
            "0.1",
            "--broker",
            broker.url(),
            "--token",
            &token,
        ],
        &[],
    );
    assert!(!ok, "{text}");
    assert!(text.contains("does not have the lan permission"), "{text}");
}

#[test]
fn silent_and_slow_connections_do_not_keep_a_technician_out() {
    let lan = Lan::create(1).expect("making the test LAN");
    let args = [&STILL_SCREEN[..], &LET_IN_AT_ONCE[..]].concat();
    let target = Target::start(&lan, 0, "front-desk", &args);
    let to = SocketAddr::new(IpAddr::V4(lan.target_ip(0)), PORT);
    // From the technician's own network: connections that say nothing, one that sends
    // half a request, and one that asks for another path.
    let held = lan
        .run_in(lan.viewer(), move || {
            use std::io::Write;
            let mut held = Vec::new();
            for _ in 0..6 {
                held.push(std::net::TcpStream::connect(to).expect("connecting"));
            }
            let mut half = std::net::TcpStream::connect(to).expect("connecting");
            let _ = half.write_all(b"GET /v1/lan HTTP/1.1\r\nHost: x\r\n");
            held.push(half);
            let mut other = std::net::TcpStream::connect(to).expect("connecting");
            let _ = other.write_all(
                b"GET /nope HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                  Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            );
            held.push(other);
            held
        })
        .expect("entering the technician's namespace");
    // While they are held open, the technician with the password gets in.
    let started = Instant::now();
    let session = connect(&lan, to, target.password.clone()).expect("the technician got in");
    eprintln!(
        "with {} hostile connections held: picture {} ms after connecting",
        held.len(),
        started.elapsed().as_millis()
    );
    // The wrong path was answered with a refusal, not an upgrade.
    let mut other = held.last().expect("held").try_clone().unwrap();
    other
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut answer = [0u8; 12];
    let _ = std::io::Read::read(&mut other, &mut answer);
    assert!(
        answer.starts_with(b"HTTP/1.1 404"),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );
    // Nobody was announced to the user before a password was proven.
    let said = target.agent.lines_so_far();
    assert!(
        !said
            .iter()
            .any(|l| l.contains("a technician is connecting")),
        "{said:#?}"
    );
    session.shutdown().unwrap();
    drop(held);
}
