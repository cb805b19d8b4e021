//! Ad-hoc support sessions end to end: a real broker with a real database, a temporary host
//! on a real X server, real WebRTC on loopback, the broker's clock virtual.
//!
//! One session is activated, connected to, disconnected and connected to again (no new
//! code, no new consent), survives its agent's connection being cut, and ends by "end now"
//! with the temporary host's folder gone; another ends at 24 h of virtual time the same
//! way. Quotas, wrong codes and a computer with a permanent agent are refused with reasons.
// The measured figures (connect times, PSNR) go to stderr.
#![allow(clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deskwire::adhoc::{self, TemporaryHost, TemporaryHostConfig, TemporaryHostEvent};
use deskwire::input::InputEvent;
use deskwire::{Agent, AgentConfig, AgentEvent, Viewer, ViewerConfig, ViewerEvent};
use deskwire_broker::store::{Acceptance, Permission, Permissions, Policy};
use deskwire_broker::{BrokerConfig, Clock};
use deskwire_capture::{Source, Timestamp, X11Source};
use deskwire_signal::adhoc::{Activation, AdhocLimits};
use deskwire_tests::session_fixtures::{loopback, luma_psnr, wait_host, wait_viewer, TestBroker};
use deskwire_tests::{capture_fresh, Scene, Xvfb};
use x11rb::connection::Connection;
use x11rb::protocol::xproto::ConnectionExt;

const WAIT: Duration = Duration::from_secs(15);
const DAY: Duration = Duration::from_secs(24 * 3600);

/// Sessions are heavy (codec threads, X servers): one test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn team(names: &[&str], limits: AdhocLimits) -> (TestBroker, Vec<String>) {
    let permissions = Permissions::NONE.with(Permission::Control);
    let policy = Policy {
        acceptance: Acceptance::Request,
        ..Policy::default()
    };
    TestBroker::start_with_team(
        permissions,
        policy,
        names,
        BrokerConfig::default().adhoc(limits),
    )
    .expect("starting the broker")
}

fn state_dir(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("deskwire-adhoc-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    p
}

fn host_config(broker: &TestBroker, dir: &Path) -> TemporaryHostConfig {
    let clock = broker.clock();
    TemporaryHostConfig::new(broker.url(), dir)
        .clock(Arc::new(move || clock.now()))
        .max_retry(Duration::from_millis(400))
}

fn next_event(t: &TemporaryHost, what: &str) -> TemporaryHostEvent {
    t.events()
        .recv_timeout(WAIT)
        .unwrap_or_else(|_| panic!("no temporary host event ({what}) in {WAIT:?}"))
}

fn activated(t: &TemporaryHost) -> Activation {
    match next_event(t, "activation") {
        TemporaryHostEvent::Activated(a) => a,
        other => panic!("expected the activation, got {other:?}"),
    }
}

fn ended(t: &TemporaryHost) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match t.events().recv_timeout(left) {
            Ok(TemporaryHostEvent::Ended { reason }) => return reason,
            Ok(_) => {}
            Err(_) => panic!("the temporary host did not end in {WAIT:?}"),
        }
    }
}

/// Files left in `dir` (none when it is gone).
fn files_in(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The technician calls the session's temporary host.
fn call(broker: &TestBroker, token: &str, invitation: &adhoc::Invitation) -> Viewer {
    let config = ViewerConfig::adhoc(
        broker.url(),
        token,
        invitation.session,
        invitation.link.clone(),
    )
    .transport(loopback());
    Viewer::start(config).expect("starting the viewer")
}

/// Why the viewer `c` was turned away.
fn refusal(c: &Viewer) -> String {
    wait_viewer(c, WAIT, |_| None::<()>)
        .unwrap_err()
        .to_string()
}

/// One connection: the technician calls, the temporary host serves the call, the picture
/// arrives. Returns the viewer, the agent serving it and the Y-PSNR of the picture.
fn connect(
    broker: &TestBroker,
    token: &str,
    invitation: &adhoc::Invitation,
    temp: &TemporaryHost,
    xvfb: &Xvfb,
) -> (Viewer, Agent, f64) {
    let started = Instant::now();
    let c = call(broker, token, invitation);
    let session = match next_event(temp, "a call") {
        TemporaryHostEvent::Call {
            session,
            technician,
        } => {
            assert_eq!(technician, "alice");
            session
        }
        other => panic!("expected a call, got {other:?}"),
    };
    let source = Box::new(X11Source::open(Some(&xvfb.display())).unwrap());
    let config = AgentConfig::new(broker.url())
        .transport(loopback())
        .device_key(temp.device_key())
        .input_display(Some(xvfb.display()));
    let h = Agent::start_adhoc_call(config, source, session, temp.call_secret()).unwrap();
    // Nobody is asked: the user consented by activating.
    wait_host(h.events(), WAIT, |e| match e {
        AgentEvent::ConsentRequested { .. } => panic!("an activated ad-hoc session asked again"),
        AgentEvent::Connected { .. } => Some(()),
        _ => None,
    })
    .expect("the call connects");
    wait_viewer(&c, WAIT, |e| {
        matches!(e, ViewerEvent::Frame(_)).then_some(())
    })
    .expect("a picture arrives");
    let first = started.elapsed();
    let _ = wait_viewer(&c, Duration::from_millis(500), |_| None::<()>);
    let mut reference = X11Source::open(Some(&xvfb.display())).unwrap();
    let mut frame = reference.alloc_frame().unwrap();
    capture_fresh(&mut reference, &mut frame, Timestamp::from_micros(1), WAIT).unwrap();
    let psnr = c
        .with_frame(|shown| luma_psnr(shown, &frame))
        .expect("a decoded frame");
    eprintln!("ad-hoc call -> first frame {first:?}; Y-PSNR {psnr:.1} dB");
    (c, h, psnr)
}

fn hang_up(c: Viewer, h: Agent) {
    c.shutdown().unwrap();
    wait_host(h.events(), WAIT, |e| {
        matches!(e, AgentEvent::Disconnected(_)).then_some(())
    })
    .expect("the host notices");
    h.shutdown().unwrap();
}

fn pointer(display: &str) -> (i16, i16) {
    let (conn, screen) = x11rb::connect(Some(display)).expect("connecting to Xvfb");
    let root = conn.setup().roots[screen].root;
    let p = conn.query_pointer(root).unwrap().reply().unwrap();
    (p.root_x, p.root_y)
}

#[test]
fn an_adhoc_session_takes_reconnects_and_survives_a_dropped_host_until_ended_now() {
    let _s = serial();
    let (mut broker, tokens) = team(&["alice"], AdhocLimits::default());
    let alice = &tokens[0];
    let xvfb = Xvfb::start(640, 480).expect("starting Xvfb");
    Scene::known(640, 480).draw(&xvfb.display()).unwrap();

    let invitation = adhoc::create(broker.url(), alice, None, WAIT).unwrap();
    assert_eq!(
        invitation
            .capabilities
            .iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>(),
        ["remote_control"]
    );
    // The quota: one per technician, named in the refusal.
    let second = adhoc::create(broker.url(), alice, None, WAIT)
        .unwrap_err()
        .to_string();
    assert!(second.contains("the limit is 1 per technician"), "{second}");

    let dir = state_dir("main");
    let wrong =
        TemporaryHost::activate(host_config(&broker, &dir), &invitation.link, "0000-0000").unwrap();
    match next_event(&wrong, "a refusal") {
        TemporaryHostEvent::Refused { reason } => assert!(reason.contains("wrong"), "{reason}"),
        other => panic!("a wrong security code was not refused: {other:?}"),
    }
    drop(wrong);
    assert!(!dir.exists(), "a refused activation leaves nothing behind");

    let temp = TemporaryHost::activate(
        host_config(&broker, &dir),
        &invitation.link,
        &invitation.code.to_string(),
    )
    .unwrap();
    let activation = activated(&temp);
    assert_eq!(
        activation.expires_at.0 - activation.activated_at.0,
        DAY.as_millis() as u64
    );
    let mut kept = files_in(&dir);
    kept.sort();
    assert_eq!(kept, ["adhoc.json", "device.key"]);

    // First connection: the picture, and control.
    let (c, h, psnr) = connect(&broker, alice, &invitation, &temp, &xvfb);
    assert!(psnr >= 35.0, "Y-PSNR {psnr:.1} dB < 35 dB");
    c.send_input(InputEvent::PointerMove { x: 123, y: 77 })
        .unwrap();
    deskwire_tests::eventually("the pointer moved", WAIT, || {
        pointer(&xvfb.display()) == (123, 77)
    });
    hang_up(c, h);

    // Disconnecting did not end the support session: connect again, no code, no consent.
    let (c, h, psnr) = connect(&broker, alice, &invitation, &temp, &xvfb);
    assert!(psnr >= 35.0, "Y-PSNR {psnr:.1} dB < 35 dB");
    hang_up(c, h);

    // The agent's network drops: it re-attaches by itself, and the technician gets in again.
    temp.cut_connection().unwrap();
    match next_event(&temp, "going offline") {
        TemporaryHostEvent::Offline { .. } => {}
        other => panic!("expected offline, got {other:?}"),
    }
    match next_event(&temp, "re-attaching") {
        TemporaryHostEvent::Reattached => {}
        other => panic!("expected re-attached, got {other:?}"),
    }
    let (c, h, _) = connect(&broker, alice, &invitation, &temp, &xvfb);
    c.send_input(InputEvent::PointerMove { x: 200, y: 100 })
        .unwrap();
    deskwire_tests::eventually("the pointer moved", WAIT, || {
        pointer(&xvfb.display()) == (200, 100)
    });
    hang_up(c, h);

    // The broker restarts (its database keeps the session): the agent re-attaches.
    broker.restart().unwrap();
    let mut events = Vec::new();
    while !events.contains(&TemporaryHostEvent::Reattached) {
        events.push(next_event(&temp, "re-attaching after the broker's restart"));
    }
    assert!(
        matches!(events[0], TemporaryHostEvent::Offline { .. }),
        "{events:?}"
    );
    // The temporary host's process restarts: it takes the session up from its folder.
    temp.shutdown().unwrap();
    assert_eq!(
        files_in(&dir).len(),
        2,
        "the folder outlives a restart of the process"
    );
    let temp = TemporaryHost::resume(host_config(&broker, &dir)).unwrap();
    assert_eq!(
        next_event(&temp, "re-attaching after a restart"),
        TemporaryHostEvent::Reattached
    );
    let (c, h, psnr) = connect(&broker, alice, &invitation, &temp, &xvfb);
    assert!(psnr >= 35.0, "Y-PSNR {psnr:.1} dB < 35 dB");
    hang_up(c, h);

    // End now, from the technician: the agent removes every trace, and calls are refused.
    let said = adhoc::end(broker.url(), alice, invitation.session, WAIT).unwrap();
    assert!(said.contains("alice ended"), "{said}");
    let reason = ended(&temp);
    assert!(reason.contains("alice ended"), "{reason}");
    assert!(!dir.exists(), "left behind: {:?}", files_in(&dir));
    let refused = refusal(&call(&broker, alice, &invitation));
    assert!(refused.contains("ended"), "{refused}");
    // Its place in the quota is free again.
    adhoc::create(broker.url(), alice, None, WAIT).unwrap();
}

#[test]
fn an_adhoc_session_ends_by_itself_24_hours_after_activation_on_broker_and_host() {
    let _s = serial();
    let (broker, tokens) = team(&["alice"], AdhocLimits::default());
    let alice = &tokens[0];
    let invitation = adhoc::create(broker.url(), alice, None, WAIT).unwrap();
    // Activated a day after the invitation: the lifetime counts from activation.
    broker.advance(DAY);
    let dir = state_dir("expiry");
    let temp = TemporaryHost::activate(
        host_config(&broker, &dir),
        &invitation.link,
        &invitation.code.to_string(),
    )
    .unwrap();
    let activation = activated(&temp);
    broker.advance(DAY - Duration::from_secs(1));
    // Still active a second before the end: a call reaches the agent.
    let c = call(&broker, alice, &invitation);
    assert!(matches!(
        next_event(&temp, "a call"),
        TemporaryHostEvent::Call { .. }
    ));
    drop(c);
    broker.advance(Duration::from_secs(1));
    assert!(broker.clock().now() >= activation.expires_at);
    let reason = ended(&temp);
    assert!(reason.contains("lifetime"), "{reason}");
    assert!(!dir.exists(), "left behind: {:?}", files_in(&dir));
    let refused = refusal(&call(&broker, alice, &invitation));
    assert!(refused.contains("end of its lifetime"), "{refused}");
}

#[test]
fn quotas_per_company_and_a_permanent_agent_are_refused_with_the_reason() {
    let _s = serial();
    let limits = AdhocLimits {
        per_company: 2,
        ..AdhocLimits::default()
    };
    let (broker, tokens) = team(&["alice", "bob", "carol"], limits);
    let a = adhoc::create(broker.url(), &tokens[0], None, WAIT).unwrap();
    adhoc::create(broker.url(), &tokens[1], None, WAIT).unwrap();
    let third = adhoc::create(broker.url(), &tokens[2], None, WAIT)
        .unwrap_err()
        .to_string();
    assert!(third.contains("the limit is 2 per company"), "{third}");

    // A computer with a permanent agent: refused, and the invitation still works elsewhere.
    let dir = state_dir("agent");
    let t = TemporaryHost::activate(
        host_config(&broker, &dir).permanent_agent(true),
        &a.link,
        &a.code.to_string(),
    )
    .unwrap();
    match next_event(&t, "a refusal") {
        TemporaryHostEvent::Refused { reason } => {
            assert!(
                reason.contains("already runs the permanent deskwire agent"),
                "{reason}"
            )
        }
        other => panic!("a computer with a permanent agent was not refused: {other:?}"),
    }
    drop(t);
    assert!(!dir.exists());
    let t =
        TemporaryHost::activate(host_config(&broker, &dir), &a.link, &a.code.to_string()).unwrap();
    activated(&t);
    // The technician's own end-now frees the company's place.
    adhoc::end(broker.url(), &tokens[0], a.session, WAIT).unwrap();
    ended(&t);
    adhoc::create(broker.url(), &tokens[2], None, WAIT).unwrap();
}

#[test]
fn a_temporary_host_cut_off_from_its_broker_still_ends_by_its_own_clock_and_removes_itself() {
    let _s = serial();
    let (broker, tokens) = team(&["alice"], AdhocLimits::default());
    let invitation = adhoc::create(broker.url(), &tokens[0], None, WAIT).unwrap();
    let dir = state_dir("own-clock");
    let config = host_config(&broker, &dir);
    let temp =
        TemporaryHost::activate(config, &invitation.link, &invitation.code.to_string()).unwrap();
    activated(&temp);
    let clock = broker.clock();
    drop(broker);
    assert!(matches!(
        next_event(&temp, "going offline"),
        TemporaryHostEvent::Offline { .. }
    ));
    assert!(dir.exists(), "going offline keeps the session");
    clock.advance(DAY);
    let reason = ended(&temp);
    assert!(reason.contains("lifetime"), "{reason}");
    assert!(!dir.exists(), "left behind: {:?}", files_in(&dir));
}
