//! Asking for unattended access during a live session (real broker, real WebRTC on
//! loopback): the customer approves or refuses on the target, the target keeps the grant in
//! its own file, and a session or a group that may not ask is refused with its reason.

use std::time::Duration;

use deskwire::accounts::AdminAccounts;
use deskwire::grants::LocalGrants;
use deskwire::{Agent, AgentConfig, AgentEvent, ConsentAnswer, Viewer, ViewerConfig, ViewerEvent};
use deskwire::{GrantAnswerError, GrantDecision, UnixMillis};
use deskwire_broker::store::{Acceptance, Permission, Permissions, Policy};
use deskwire_capture::{open, OpenOptions, Source, SourceSpec};
use deskwire_signal::grant::{
    CredentialMode, Grant, GrantPolicy, GrantRequest, GrantZone, Schedule, Validity, ZoneName,
    ZoneOf,
};
use deskwire_tests::session_fixtures::{code_of, loopback, wait_host, wait_viewer, TestBroker};
use deskwire_tests::Xvfb;

const WAIT: Duration = Duration::from_secs(15);
const DAY_MS: u64 = 24 * 3600 * 1000;

fn synthetic() -> Box<dyn Source> {
    let opts = OpenOptions {
        width: 320,
        height: 240,
        ..OpenOptions::default()
    };
    let spec: SourceSpec = "synthetic:typing".parse().unwrap();
    open(&spec, &opts).unwrap()
}

fn request(days: u32, mode: CredentialMode) -> GrantRequest {
    GrantRequest {
        schedule: Schedule::new(Validity::Days { days }, None).unwrap(),
        zone: GrantZone {
            of: ZoneOf::Customer,
            name: ZoneName::new("Europe/Berlin").unwrap(),
        },
        credential_mode: mode,
    }
}

fn temp(name: &str) -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!("deskwire-unattended-{}-{name}", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p
}

/// A live session through `broker`: control unless `view_only`; the target keeps grants in
/// `grants` and checks customer credentials against `customers`.
struct Live {
    c: Viewer,
    h: Agent,
    _x: Xvfb,
}

fn live(
    broker: &TestBroker,
    token: Option<String>,
    view_only: bool,
    grants: &LocalGrants,
    customers: Option<AdminAccounts>,
) -> Live {
    let x = Xvfb::start(320, 240).expect("starting Xvfb");
    let mut cc = ViewerConfig::new(broker.url()).transport(loopback());
    if let Some(t) = token {
        cc = cc.token(t);
    }
    let c = Viewer::start(cc).unwrap();
    let code = code_of(&c).unwrap();
    let config = AgentConfig::new(broker.url())
        .transport(loopback())
        .view_only(view_only)
        .input_display(Some(x.display()))
        .unattended(grants.clone(), GrantPolicy::default(), customers);
    let h = Agent::start(config, synthetic(), code).unwrap();
    // A group policy may have the user asked first: they accept.
    let asked = wait_host(h.events(), WAIT, |e| match e {
        AgentEvent::ConsentRequested { .. } => Some(true),
        AgentEvent::Connected { .. } => Some(false),
        _ => None,
    })
    .unwrap();
    if asked {
        h.answer_consent(ConsentAnswer::Allow {
            control: !view_only,
        })
        .unwrap();
        wait_host(h.events(), WAIT, |e| {
            matches!(e, AgentEvent::Connected { .. }).then_some(())
        })
        .unwrap();
    }
    wait_viewer(&c, WAIT, |e| {
        matches!(e, ViewerEvent::Frame(_)).then_some(())
    })
    .unwrap();
    Live { c, h, _x: x }
}

fn answered(c: &Viewer, id: u32) -> Result<Grant, String> {
    wait_viewer(c, WAIT, |e| match e {
        ViewerEvent::GrantAnswered { id: got, result } if *got == id => {
            // A refusal carries the target's sentence; anything else is a failure here.
            Some(
                result
                    .clone()
                    .map(|ticket| ticket.grant)
                    .map_err(|e| match e {
                        GrantAnswerError::Refused(why) => why,
                        other => panic!("{other}"),
                    }),
            )
        }
        _ => None,
    })
    .unwrap()
}

fn asked(h: &Agent) -> u32 {
    wait_host(h.events(), WAIT, |e| match e {
        AgentEvent::GrantRequested { id, .. } => Some(*id),
        _ => None,
    })
    .unwrap()
}

#[test]
fn an_approved_request_gives_a_grant_the_target_keeps_and_can_revoke() {
    let broker = TestBroker::start().unwrap();
    let grants = LocalGrants::at(temp("kept"));
    let s = live(&broker, None, false, &grants, None);
    let before = UnixMillis::now();
    let id =
        s.c.request_unattended(&request(3, CredentialMode::AskEachConnection))
            .unwrap();
    assert_eq!(asked(&s.h), id);
    s.h.answer_grant(id, GrantDecision::Approve).unwrap();
    let grant = answered(&s.c, id).expect("approved");
    let ends = grant.expires_at().expect("three days").0;
    // Three calendar days in Berlin: 72 h, or 71/73 across a DST change.
    let span = ends - grant.approved_at().0;
    assert!(span.abs_diff(3 * DAY_MS) <= 3600 * 1000, "{span} ms");
    assert!(grant.approved_at() >= before);
    let kept = grants.list().unwrap();
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].grant, grant);
    assert!(kept[0].grant.check(UnixMillis::now()).is_ok());
    // The user revokes it locally: it no longer lets anyone in.
    assert!(grants.revoke(kept[0].id, UnixMillis::now()).unwrap());
    assert!(grants.list().unwrap()[0]
        .grant
        .check(UnixMillis::now())
        .is_err());

    // The user may also say no.
    let id =
        s.c.request_unattended(&request(1, CredentialMode::AskEachConnection))
            .unwrap();
    assert_eq!(asked(&s.h), id);
    s.h.answer_grant(id, GrantDecision::Reject).unwrap();
    let why = answered(&s.c, id).unwrap_err();
    assert!(why.contains("refused"), "{why}");
    assert_eq!(grants.list().unwrap().len(), 1);
    s.c.shutdown().unwrap();
    s.h.shutdown().unwrap();
    let _ = std::fs::remove_file(grants.path());
}

#[test]
fn a_view_only_session_or_a_group_without_the_permission_cannot_ask() {
    let broker = TestBroker::start().unwrap();
    let grants = LocalGrants::at(temp("view"));
    let s = live(&broker, None, true, &grants, None);
    let id =
        s.c.request_unattended(&request(1, CredentialMode::AskEachConnection))
            .unwrap();
    let why = answered(&s.c, id).unwrap_err();
    assert!(why.contains("view-only"), "{why}");
    s.c.shutdown().unwrap();
    s.h.shutdown().unwrap();
    drop(broker);

    let policy = Policy {
        acceptance: Acceptance::Auto,
        auto_reject_secs: 1,
        ..Policy::default()
    };
    let (broker, token) =
        TestBroker::start_with_accounts(Permissions::NONE.with(Permission::Control), policy)
            .unwrap();
    let s = live(&broker, Some(token), false, &grants, None);
    let id =
        s.c.request_unattended(&request(1, CredentialMode::AskEachConnection))
            .unwrap();
    let why = answered(&s.c, id).unwrap_err();
    assert!(
        why.contains("does not have the unattended permission"),
        "{why}"
    );
    assert!(grants.list().unwrap().is_empty());
    s.c.shutdown().unwrap();
    s.h.shutdown().unwrap();
}

#[test]
fn customer_credentials_are_checked_and_hold_for_two_weeks_at_most() {
    let broker = TestBroker::start().unwrap();
    let grants = LocalGrants::at(temp("customer"));
    let customers = AdminAccounts::at(temp("customers"));
    customers.set("maria", "blue-tulip-42").unwrap();
    let s = live(&broker, None, false, &grants, Some(customers.clone()));

    // Thirty days on customer credentials is over the two-week cap: refused, saying so.
    let id =
        s.c.request_unattended(&request(30, CredentialMode::CustomerCredentials))
            .unwrap();
    assert_eq!(asked(&s.h), id);
    let right = GrantDecision::ApproveWithCredentials {
        user: "maria".into(),
        password: "blue-tulip-42".into(),
    };
    s.h.answer_grant(id, right.clone()).unwrap();
    let why = answered(&s.c, id).unwrap_err();
    assert!(why.contains("14"), "{why}");

    // Wrong credentials: refused.
    let id =
        s.c.request_unattended(&request(7, CredentialMode::CustomerCredentials))
            .unwrap();
    assert_eq!(asked(&s.h), id);
    let wrong = GrantDecision::ApproveWithCredentials {
        user: "maria".into(),
        password: "red-tulip-42".into(),
    };
    s.h.answer_grant(id, wrong).unwrap();
    let why = answered(&s.c, id).unwrap_err();
    assert!(why.contains("credentials are wrong"), "{why}");

    // A week with the right ones: granted.
    let id =
        s.c.request_unattended(&request(7, CredentialMode::CustomerCredentials))
            .unwrap();
    assert_eq!(asked(&s.h), id);
    s.h.answer_grant(id, right).unwrap();
    let grant = answered(&s.c, id).expect("approved");
    assert_eq!(
        grant.request().credential_mode,
        CredentialMode::CustomerCredentials
    );
    assert_eq!(grants.list().unwrap().len(), 1);
    s.c.shutdown().unwrap();
    s.h.shutdown().unwrap();
    let _ = std::fs::remove_file(grants.path());
    let _ = std::fs::remove_file(customers.path());
}
