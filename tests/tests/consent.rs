//! The target user's consent, over a real broker and real WebRTC: asked only after the
//! technician proved the code, and nothing connects unless the answer (or the mode) allows.

use std::time::Duration;

use deskwire::{
    AcceptanceMode, Agent, AgentConfig, AgentEvent, ConsentAnswer, ConsentRefusal,
    DisconnectReason, Viewer, ViewerConfig, ViewerEvent,
};
use deskwire_capture::{open, OpenOptions, Source, SourceSpec};
use deskwire_tests::session_fixtures::{code_of, loopback, wait_host, wait_viewer, TestBroker};
use deskwire_tests::Xvfb;

const WAIT: Duration = Duration::from_secs(10);

fn synthetic() -> Box<dyn Source> {
    let opts = OpenOptions {
        width: 320,
        height: 240,
        ..OpenOptions::default()
    };
    open(&"synthetic:typing".parse::<SourceSpec>().unwrap(), &opts).unwrap()
}

/// A session whose target may be controlled: it injects into a private Xvfb.
fn start(mode: AcceptanceMode) -> (Xvfb, TestBroker, Viewer, Agent) {
    // RUST_LOG=deskwire_engine=debug shows the negotiation when a test fails.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let xvfb = Xvfb::start(320, 240).expect("starting Xvfb");
    let broker = TestBroker::start().unwrap();
    let c = Viewer::start(ViewerConfig::new(broker.url()).transport(loopback())).unwrap();
    let code = code_of(&c).unwrap();
    let config = AgentConfig::new(broker.url())
        .transport(loopback())
        .view_only(false)
        .input_display(Some(xvfb.display()))
        .acceptance(mode);
    let h = Agent::start(config, synthetic(), code).unwrap();
    (xvfb, broker, c, h)
}

/// The agent's question, checked for what it asks.
fn asked(h: &Agent) -> (AcceptanceMode, bool) {
    wait_host(h.events(), WAIT, |e| match e {
        AgentEvent::ConsentRequested { mode, control, .. } => Some((*mode, *control)),
        AgentEvent::Connected { .. } => panic!("connected before the user answered"),
        _ => None,
    })
    .unwrap()
}

fn host_ended(h: &Agent) -> DisconnectReason {
    wait_host(h.events(), WAIT, |e| match e {
        AgentEvent::Disconnected(r) => Some(r.clone()),
        AgentEvent::Connected { .. } => panic!("connected although refused"),
        _ => None,
    })
    .unwrap()
}

fn viewer_ended(c: &Viewer) -> DisconnectReason {
    wait_viewer(c, WAIT, |e| match e {
        ViewerEvent::Disconnected(r) => Some(r.clone()),
        ViewerEvent::Connected { .. } | ViewerEvent::Frame(_) => {
            panic!("the technician got in although refused")
        }
        _ => None,
    })
    .unwrap()
}

#[test]
fn by_request_the_session_waits_for_the_user_and_gets_only_what_they_allow() {
    let mode = AcceptanceMode::AllowByRequest {
        timeout: Duration::from_secs(60),
    };
    let (_x, _broker, c, h) = start(mode);
    assert_eq!(asked(&h), (mode, true));
    let timeout = wait_viewer(&c, WAIT, |e| match e {
        ViewerEvent::AwaitingConsent { timeout, .. } => Some(*timeout),
        ViewerEvent::Connected { .. } => panic!("connected before the user answered"),
        _ => None,
    })
    .unwrap();
    assert_eq!(timeout, Duration::from_secs(60));
    // View, but no control.
    h.answer_consent(ConsentAnswer::Allow { control: false })
        .unwrap();
    let control = wait_viewer(&c, WAIT, |e| match e {
        ViewerEvent::Permissions { control } => Some(*control),
        _ => None,
    })
    .unwrap();
    assert!(!control, "the user allowed viewing only");
    wait_viewer(&c, WAIT, |e| {
        matches!(e, ViewerEvent::Frame(_)).then_some(())
    })
    .unwrap();
    c.shutdown().unwrap();
    h.shutdown().unwrap();
}

#[test]
fn a_user_who_rejects_keeps_the_technician_out_with_a_reason() {
    let (_x, _broker, c, h) = start(AcceptanceMode::AllowAutomatically {
        reject_window: Duration::from_secs(30),
    });
    asked(&h);
    h.answer_consent(ConsentAnswer::Reject).unwrap();
    assert_eq!(
        host_ended(&h),
        DisconnectReason::Consent(ConsentRefusal::RejectedByUser)
    );
    match viewer_ended(&c) {
        DisconnectReason::PeerBye { detail, .. } => {
            assert!(detail.contains("rejected"), "{detail}")
        }
        other => panic!("unexpected {other:?}"),
    }
    h.shutdown().unwrap();
    c.shutdown().unwrap();
}

// An unanswered request timing out is a rule of the pairing core, tested in virtual time
// (`deskwire_session::pairing` tests: silence_keeps_the_technician_out_by_request_...); the
// driver's timer is exercised for real by the automatic window below.
#[test]
fn deny_refuses_at_once_and_tells_the_technician_why() {
    let (_x, _broker, c, h) = start(AcceptanceMode::Deny);
    assert_eq!(
        host_ended(&h),
        DisconnectReason::Consent(ConsentRefusal::DeniedByPolicy)
    );
    match viewer_ended(&c) {
        DisconnectReason::PeerBye { detail, .. } => {
            assert!(detail.contains("does not accept"), "{detail}")
        }
        other => panic!("unexpected {other:?}"),
    }
    h.shutdown().unwrap();
    c.shutdown().unwrap();
}

#[test]
fn allow_automatically_starts_when_the_window_passes_unanswered() {
    let (_x, _broker, c, h) = start(AcceptanceMode::AllowAutomatically {
        reject_window: Duration::from_millis(300),
    });
    asked(&h);
    let control = wait_host(h.events(), WAIT, |e| match e {
        AgentEvent::Connected { control, .. } => Some(*control),
        _ => None,
    })
    .unwrap();
    assert!(control);
    c.shutdown().unwrap();
    h.shutdown().unwrap();
}

#[test]
fn the_group_policy_from_the_broker_can_only_make_the_target_stricter() {
    use deskwire_broker::store::{Acceptance, Permission, Permissions, Policy};
    // The technician's group: view only, and the user must be asked.
    let policy = Policy {
        acceptance: Acceptance::Request,
        request_timeout_secs: 45,
        ..Policy::default()
    };
    let (broker, token) =
        TestBroker::start_with_accounts(Permissions::NONE.with(Permission::ViewOnly), policy)
            .unwrap();
    let xvfb = Xvfb::start(320, 240).expect("starting Xvfb");
    let c = Viewer::start(
        ViewerConfig::new(broker.url())
            .transport(loopback())
            .token(token),
    )
    .unwrap();
    let code = code_of(&c).unwrap();
    // The target itself would let anyone in at once, with control. It proves which device
    // it is (a key made on first use): a bad proof would be refused before any of this.
    let key = std::env::temp_dir().join(format!("deskwire-consent-{}.key", std::process::id()));
    let _ = std::fs::remove_file(&key);
    let config = AgentConfig::new(broker.url())
        .transport(loopback())
        .view_only(false)
        .input_display(Some(xvfb.display()))
        .device_key(&key);
    let h = Agent::start(config, synthetic(), code).unwrap();
    let (mode, control, technician) = wait_host(h.events(), WAIT, |e| match e {
        AgentEvent::ConsentRequested {
            mode,
            control,
            technician,
            ..
        } => Some((*mode, *control, technician.clone())),
        AgentEvent::Connected { .. } => panic!("connected without asking, against the policy"),
        _ => None,
    })
    .unwrap();
    assert_eq!(
        mode,
        AcceptanceMode::AllowByRequest {
            timeout: Duration::from_secs(45)
        }
    );
    assert!(!control, "the group may only view");
    // Named as the broker verified them: the technician and their company.
    assert_eq!(technician.as_deref(), Some("alice of acme"));
    // Even a user who allows control cannot give more than the group has.
    h.answer_consent(ConsentAnswer::Allow { control: true })
        .unwrap();
    let control = wait_viewer(&c, WAIT, |e| match e {
        ViewerEvent::Permissions { control } => Some(*control),
        _ => None,
    })
    .unwrap();
    assert!(!control);
    c.shutdown().unwrap();
    h.shutdown().unwrap();
    assert!(key.exists(), "the device key was made and kept");
    let _ = std::fs::remove_file(&key);

    // Without a token this broker opens no session at all.
    let anonymous = Viewer::start(ViewerConfig::new(broker.url()).transport(loopback())).unwrap();
    match wait_viewer(&anonymous, WAIT, |e| match e {
        ViewerEvent::Disconnected(r) => Some(r.clone()),
        ViewerEvent::Code { .. } => panic!("a code without a token"),
        _ => None,
    })
    .unwrap()
    {
        DisconnectReason::Broker(why) => assert!(why.contains("API token"), "{why}"),
        other => panic!("unexpected {other:?}"),
    }
    anonymous.shutdown().unwrap();
}
