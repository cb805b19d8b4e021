//! The consent order through both cores: nothing is offered before the key is confirmed
//! and the user said yes; refusals, credentials, silence, and the group's policy.

use super::*;

#[test]
fn the_offer_goes_out_only_after_the_key_confirmation_and_the_users_yes() {
    let mut h = Harness::new(
        code_route(),
        agent_config(PairingSecret::Code(code(SECRET)), by_request(30)),
        Script::default(),
    );
    h.run(Duration::from_secs(60));
    let code_shown = h.viewer_saw(
        |e| matches!(e, ViewerPairingEvent::Code { code: c, .. } if *c == code(SECRET)),
    );
    assert!(code_shown.is_some(), "{:?}", h.viewer_events);
    let asked_at = h.agent_saw(asked).expect("the user was asked");
    let offer_at = h
        .agent_saw(|e| matches!(e, AgentPairingEvent::MakeOffer))
        .expect("an offer was made");
    // Joined at ~1.04 s; PAKE and confirmation take one round trip more.
    assert!(asked_at > Duration::from_secs(1), "{asked_at:?}");
    assert_eq!(
        offer_at,
        asked_at + Duration::from_secs(2),
        "only after the answer"
    );
    let waited = h.viewer_saw(|e| {
        matches!(e, ViewerPairingEvent::AwaitingConsent { timeout, starts_on_its_own: false, .. } if *timeout == Duration::from_secs(30))
    });
    assert!(waited.is_some(), "the viewer hears it waits for the user");
    let decided = h.viewer_saw(|e| {
        matches!(
            e,
            ViewerPairingEvent::ConsentDecided {
                decision: deskwire_signal::ConsentDecision::Control
            }
        )
    });
    assert!(
        decided.is_some_and(|at| at >= offer_at),
        "the viewer hears the user's yes: {decided:?}"
    );
    let (connected_at, control) = h.connected().expect("connected");
    assert!(control);
    assert_eq!(
        connected_at,
        offer_at + 2 * ONE_WAY,
        "one round trip for the answer"
    );
    assert_eq!(h.agent_end(), None);
    assert_eq!(h.viewer_end(), None);
}

#[test]
fn a_wrong_code_is_refused_before_anyone_asks_the_user() {
    let mut h = Harness::new(
        code_route(),
        agent_config(PairingSecret::Code(code(SECRET + 1)), by_request(30)),
        Script::default(),
    );
    h.run(Duration::from_secs(60));
    assert!(
        matches!(h.agent_end(), Some(PairingEnd::Unverified(_))),
        "{:?}",
        h.agent_events
    );
    assert!(
        h.agent_saw(asked).is_none(),
        "nobody is asked for a wrong code"
    );
    assert!(h
        .agent_saw(|e| matches!(e, AgentPairingEvent::MakeOffer))
        .is_none());
    assert!(h
        .viewer_saw(|e| matches!(e, ViewerPairingEvent::VerificationFailed { .. }))
        .is_some());
    // The code still waits for the right one, until it expires.
    assert_eq!(
        h.viewer.poll_timeout(),
        Some(CODE_LIFETIME + Duration::from_secs(1)),
        "the code's lifetime bounds the wait again"
    );
}

#[test]
fn administrator_credentials_are_checked_before_the_user_is_asked() {
    let mut viewer = viewer_config(code_route());
    viewer.admin = Some(("admin".into(), "correct horse".into()));
    let mut agent = agent_config(PairingSecret::Code(code(SECRET)), by_request(30));
    agent.require_admin = true;
    let script = Script {
        credentials_ok: |u, p| u == "admin" && p == "correct horse",
        ..Script::default()
    };
    let mut h = Harness::with_viewer(viewer.clone(), agent.clone(), script);
    h.run(Duration::from_secs(60));
    let checked = h
        .agent_saw(
            |e| matches!(e, AgentPairingEvent::CheckCredentials { user, .. } if user == "admin"),
        )
        .expect("credentials were checked");
    assert!(h.agent_saw(asked).unwrap() >= checked);
    assert!(h.connected().is_some());

    // A wrong password: nobody is asked, nothing is offered.
    let script = Script {
        credentials_ok: |_, _| false,
        ..Script::default()
    };
    let mut h = Harness::with_viewer(viewer, agent.clone(), script);
    h.run(Duration::from_secs(60));
    assert_eq!(h.agent_end(), Some(&PairingEnd::BadCredentials));
    assert!(h.agent_saw(asked).is_none());

    // No credentials at all: the viewer says so and stops.
    let mut h = Harness::new(code_route(), agent, Script::default());
    h.run(Duration::from_secs(60));
    match h.viewer_end() {
        Some(PairingEnd::Broker(why)) => assert!(why.contains("administrators"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert!(
        matches!(h.agent_end(), Some(PairingEnd::PeerBye(_))),
        "{:?}",
        h.agent_events
    );
}

#[test]
fn silence_keeps_the_technician_out_by_request_and_lets_them_in_automatically() {
    let script = || Script {
        consent: None,
        ..Script::default()
    };
    let mut h = Harness::new(
        code_route(),
        agent_config(PairingSecret::Code(code(SECRET)), by_request(30)),
        script(),
    );
    h.run(Duration::from_secs(120));
    assert_eq!(
        h.agent_end(),
        Some(&PairingEnd::Consent(ConsentRefusal::TimedOut))
    );
    let asked_at = h.agent_saw(asked).unwrap();
    let ended_at = h
        .agent_saw(|e| matches!(e, AgentPairingEvent::Ended(_)))
        .unwrap();
    assert_eq!(ended_at - asked_at, Duration::from_secs(30));
    // The viewer hears the goodbye, well before its own wait (consent + timeout) runs out.
    assert!(
        matches!(h.viewer_end(), Some(PairingEnd::PeerBye(_))),
        "{:?}",
        h.viewer_events
    );

    let auto = AcceptanceMode::AllowAutomatically {
        reject_window: Duration::from_secs(10),
    };
    let mut h = Harness::new(
        code_route(),
        agent_config(PairingSecret::Code(code(SECRET)), auto),
        script(),
    );
    h.run(Duration::from_secs(120));
    let asked_at = h.agent_saw(asked).unwrap();
    let (at, control) = h.connected().expect("silence lets them in");
    assert!(control);
    assert_eq!(at, asked_at + Duration::from_secs(10) + 2 * ONE_WAY);
}

#[test]
fn the_technicians_group_can_only_make_the_agent_stricter() {
    let mut agent = agent_config(
        PairingSecret::Code(code(SECRET)),
        AcceptanceMode::AllowAutomatically {
            reject_window: Duration::ZERO,
        },
    );
    agent.policy = Some(SessionPolicy {
        technician: "Ada".into(),
        company: String::new(),
        acceptance: PolicyAcceptance::Request,
        window_secs: 20,
        control: false,
        unattended: false,
        admin_credentials_only: false,
    });
    let mut h = Harness::new(code_route(), agent.clone(), Script::default());
    h.run(Duration::from_secs(60));
    let ask = h
        .agent_events
        .iter()
        .find(|(_, e)| asked(e))
        .map(|(_, e)| e.clone());
    assert_eq!(
        ask,
        Some(AgentPairingEvent::AskUser {
            mode: by_request(20),
            control: false,
            timeout: Duration::from_secs(20),
            technician: Some("Ada".into()),
        })
    );
    let (_, control) = h.connected().unwrap();
    assert!(
        !control,
        "the user's yes cannot widen what the group allows"
    );

    // A group that denies: refused at once, nobody asked.
    agent.policy.as_mut().unwrap().acceptance = PolicyAcceptance::Deny;
    let mut h = Harness::new(code_route(), agent, Script::default());
    h.run(Duration::from_secs(60));
    assert_eq!(
        h.agent_end(),
        Some(&PairingEnd::Consent(ConsentRefusal::DeniedByPolicy))
    );
    assert!(h.agent_saw(asked).is_none());
}

#[test]
fn the_technician_hears_how_the_wait_ends_and_whose_rule_it_is() {
    let group = |acceptance| SessionPolicy {
        technician: "Ada".into(),
        company: String::new(),
        acceptance,
        window_secs: 20,
        control: true,
        unattended: false,
        admin_credentials_only: false,
    };
    let told = |mode: AcceptanceMode, policy: SessionPolicy| {
        let mut agent = agent_config(PairingSecret::Code(code(SECRET)), mode);
        agent.policy = Some(policy);
        let mut h = Harness::new(code_route(), agent, Script::default());
        h.run(Duration::from_secs(60));
        h.viewer_events.iter().find_map(|(_, e)| match e {
            ViewerPairingEvent::AwaitingConsent {
                starts_on_its_own,
                by_computer,
                ..
            } => Some((*starts_on_its_own, *by_computer)),
            _ => None,
        })
    };
    // The group lets them in automatically, the computer asks its user first: it is the
    // computer's rule, and silence refuses.
    assert_eq!(
        told(by_request(30), group(PolicyAcceptance::Auto)),
        Some((false, true))
    );
    // Both automatic: silence lets them in, and the group's window is not overridden.
    let auto = AcceptanceMode::AllowAutomatically {
        reject_window: Duration::from_secs(10),
    };
    assert_eq!(
        told(auto, group(PolicyAcceptance::Auto)),
        Some((true, false))
    );
    // The group asks: its rule.
    assert_eq!(
        told(auto, group(PolicyAcceptance::Request)),
        Some((false, false))
    );
}
