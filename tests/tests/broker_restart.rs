//! A broker restarting while a code waits for its target: the technician's side re-attaches
//! to the same code by itself, the user types the code they were given, and the session
//! starts; the code still works once only.

use std::time::Duration;

use deskwire::JoinRefusal;
use deskwire::{
    AcceptanceMode, Agent, AgentConfig, AgentEvent, ConsentAnswer, Viewer, ViewerConfig,
    ViewerEvent,
};
use deskwire_broker::store::{Acceptance, Permission, Permissions, Policy};
use deskwire_capture::{open, OpenOptions, Source, SourceSpec};
use deskwire_tests::session_fixtures::{code_of, loopback, wait_host, wait_viewer, TestBroker};

const WAIT: Duration = Duration::from_secs(15);

fn synthetic() -> Box<dyn Source> {
    let opts = OpenOptions {
        width: 320,
        height: 240,
        ..OpenOptions::default()
    };
    let spec: SourceSpec = "synthetic:typing".parse().unwrap();
    open(&spec, &opts).unwrap()
}

#[test]
fn a_code_survives_a_broker_restart_and_still_works_exactly_once() {
    // The group lets sessions start unless the user rejects them (the user accepts below).
    let policy = Policy {
        acceptance: Acceptance::Auto,
        auto_reject_secs: 1,
        ..Policy::default()
    };
    let (mut broker, token) =
        TestBroker::start_with_accounts(Permissions::NONE.with(Permission::ViewOnly), policy)
            .unwrap();
    let c = Viewer::start(
        ViewerConfig::new(broker.url())
            .transport(loopback())
            .token(token),
    )
    .unwrap();
    let code = code_of(&c).unwrap();

    broker
        .restart()
        .expect("restarting the broker on its database");
    wait_viewer(&c, WAIT, |e| {
        matches!(e, ViewerEvent::BrokerLost).then_some(())
    })
    .unwrap();
    wait_viewer(&c, WAIT, |e| {
        matches!(e, ViewerEvent::BrokerResumed).then_some(())
    })
    .unwrap();

    // The user types the code they were read before the restart.
    let config = AgentConfig::new(broker.url())
        .transport(loopback())
        .view_only(true)
        .acceptance(AcceptanceMode::AllowAutomatically {
            reject_window: Duration::ZERO,
        });
    let h = Agent::start(config.clone(), synthetic(), code).unwrap();
    wait_host(h.events(), WAIT, |e| {
        matches!(e, AgentEvent::ConsentRequested { .. }).then_some(())
    })
    .unwrap();
    h.answer_consent(ConsentAnswer::Allow { control: false })
        .unwrap();
    wait_host(h.events(), WAIT, |e| {
        matches!(e, AgentEvent::Connected { .. }).then_some(())
    })
    .unwrap();
    wait_viewer(&c, WAIT, |e| {
        matches!(e, ViewerEvent::Frame(_)).then_some(())
    })
    .unwrap();

    // Another target with the same code is told it was used.
    let second = Agent::start(config, synthetic(), code).unwrap();
    let reason = wait_host(second.events(), WAIT, |e| match e {
        AgentEvent::CodeRefused { reason, .. } => Some(*reason),
        _ => None,
    })
    .unwrap();
    assert_eq!(reason, JoinRefusal::AlreadyUsed);
    second.shutdown().unwrap();
    c.shutdown().unwrap();
    h.shutdown().unwrap();
}
