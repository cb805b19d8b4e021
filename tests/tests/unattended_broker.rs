//! Unattended access through the broker (real broker and database, real WebRTC on loopback,
//! a real X server): a grant approved in a live session is reported by the target, its
//! agent stands by, and a later call starts with nobody asked. The broker refuses (and
//! audits) a call outside the grant's window at its own clock; the target refuses one its
//! own copy does not allow, even when the broker let it through.
// The measured figures go to stderr.
#![allow(clippy::print_stderr)]

use std::time::{Duration, Instant};

use deskwire::accounts::AdminAccounts;
use deskwire::grants::{self, GrantTicket, LocalGrants};
use deskwire::standby::{Standby, StandbyConfig, StandbyEvent};
use deskwire::{
    Agent, AgentConfig, AgentEvent, ConsentAnswer, DisconnectReason, Viewer, ViewerConfig,
    ViewerEvent,
};
use deskwire::{GrantDecision, UnixMillis};
use deskwire_broker::store::{AuditId, Permission, Permissions, Policy, Store};
use deskwire_broker::BrokerConfig;
use deskwire_capture::{open, OpenOptions, Source, SourceSpec};
use deskwire_signal::grant::{
    CredentialMode, GrantPolicy, GrantRequest, GrantZone, Schedule, Validity, ZoneName, ZoneOf,
};
use deskwire_tests::session_fixtures::{code_of, loopback, wait_host, wait_viewer, TestBroker};
use deskwire_tests::Xvfb;

const WAIT: Duration = Duration::from_secs(15);
const DAY: Duration = Duration::from_secs(24 * 3600);

fn synthetic() -> Box<dyn Source> {
    let opts = OpenOptions {
        width: 320,
        height: 240,
        ..OpenOptions::default()
    };
    open(&"synthetic:typing".parse::<SourceSpec>().unwrap(), &opts).unwrap()
}

fn temp(name: &str) -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!(
        "deskwire-unattended-broker-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&p);
    p
}

/// The target's settings: its device key, its grants, its admin accounts.
struct Target {
    device_key: std::path::PathBuf,
    grants: LocalGrants,
    admins: AdminAccounts,
    xvfb: Xvfb,
}

impl Target {
    fn config(&self, broker: &TestBroker) -> AgentConfig {
        AgentConfig::new(broker.url())
            .transport(loopback())
            .device_key(&self.device_key)
            .input_display(Some(self.xvfb.display()))
            .unattended(
                self.grants.clone(),
                GrantPolicy::default(),
                Some(self.admins.clone()),
            )
    }
}

/// A live session in which alice asks for three days of unattended access and the user
/// approves; returns her ticket.
fn approved_grant(broker: &TestBroker, token: &str, target: &Target) -> GrantTicket {
    let c = Viewer::start(
        ViewerConfig::new(broker.url())
            .token(token)
            .transport(loopback()),
    )
    .unwrap();
    let code = code_of(&c).unwrap();
    let h = Agent::start(target.config(broker), synthetic(), code).unwrap();
    wait_host(h.events(), WAIT, |e| {
        matches!(e, AgentEvent::ConsentRequested { .. }).then_some(())
    })
    .unwrap();
    h.answer_consent(ConsentAnswer::Allow { control: true })
        .unwrap();
    wait_viewer(&c, WAIT, |e| {
        matches!(e, ViewerEvent::Frame(_)).then_some(())
    })
    .unwrap();
    let request = GrantRequest {
        schedule: Schedule::new(Validity::Days { days: 3 }, None).unwrap(),
        zone: GrantZone {
            of: ZoneOf::Technician,
            name: ZoneName::new("Europe/Berlin").unwrap(),
        },
        credential_mode: CredentialMode::AskEachConnection,
    };
    let id = c.request_unattended(&request).unwrap();
    wait_host(h.events(), WAIT, |e| {
        matches!(e, AgentEvent::GrantRequested { .. }).then_some(())
    })
    .unwrap();
    h.answer_grant(id, GrantDecision::Approve).unwrap();
    let ticket = wait_viewer(&c, WAIT, |e| match e {
        ViewerEvent::GrantAnswered { id: got, result } if *got == id => Some(result.clone()),
        _ => None,
    })
    .unwrap()
    .expect("approved");
    // The session ends; the grant remains.
    c.shutdown().unwrap();
    h.shutdown().unwrap();
    ticket
}

/// Alice calls `device` under `ticket`; the agent serves the call. `Ok` once frames arrive
/// (nobody asked), or the reason the viewer was refused.
fn call(
    broker: &TestBroker,
    token: &str,
    device: &str,
    ticket: &GrantTicket,
    standby: &Standby,
    target: &Target,
) -> Result<Duration, String> {
    let started = Instant::now();
    let config = ViewerConfig::unattended(broker.url(), token, device, ticket.clone())
        .admin_credentials("root", "correct horse")
        .transport(loopback());
    let c = Viewer::start(config).unwrap();
    let (session, grant) = match standby.events().recv_timeout(Duration::from_secs(2)) {
        Ok(StandbyEvent::Call {
            session,
            grant,
            technician,
        }) => {
            assert_eq!(technician, "alice");
            (session, grant)
        }
        Ok(other) => panic!("expected a call, got {other:?}"),
        // The broker refused: the viewer says why.
        Err(_) => {
            return Err(wait_viewer(&c, WAIT, |_| None::<()>)
                .unwrap_err()
                .to_string());
        }
    };
    let h =
        Agent::start_unattended_call(target.config(broker), synthetic(), session, grant).unwrap();
    let got = wait_viewer(&c, WAIT, |e| {
        matches!(e, ViewerEvent::Frame(_)).then_some(())
    });
    let result = match got {
        Ok(()) => Ok(started.elapsed()),
        Err(e) => Err(e.to_string()),
    };
    let mut asked = false;
    while let Ok(e) = h.events().recv_timeout(Duration::from_millis(100)) {
        asked |= matches!(e, AgentEvent::ConsentRequested { .. });
        if let AgentEvent::Disconnected(DisconnectReason::Error(_)) = e {
            break;
        }
    }
    assert!(!asked, "an unattended call asked the user");
    let _ = c.shutdown();
    let _ = h.shutdown();
    result
}

async fn audit_events(url: &str) -> Vec<(String, String)> {
    let store = Store::open(url).await.unwrap();
    let entries = store.audit_entries(AuditId(0), 1000).await.unwrap();
    store.close().await;
    entries.into_iter().map(|e| (e.event, e.detail)).collect()
}

#[test]
fn an_unattended_call_through_the_broker_needs_both_the_brokers_and_the_targets_copy_open() {
    let permissions = Permissions::NONE
        .with(Permission::Control)
        .with(Permission::Unattended);
    let (broker, tokens) = TestBroker::start_with_team(
        permissions,
        Policy::default(),
        &["alice"],
        BrokerConfig::default(),
    )
    .unwrap();
    let token = &tokens[0];
    let target = Target {
        device_key: temp("device.key"),
        grants: LocalGrants::at(temp("grants")),
        admins: AdminAccounts::at(temp("admins")),
        xvfb: Xvfb::start(320, 240).expect("starting Xvfb"),
    };
    target.admins.set("root", "correct horse").unwrap();
    let ticket = approved_grant(&broker, token, &target);
    // The broker's virtual clock started before the approval; bring it to the real time.
    broker.clock().set(UnixMillis::now());
    let device = deskwire::lan::device_id(&target.device_key).unwrap();

    // Before the target reports the grant, the broker knows nothing of it.
    let standby = Standby::start(StandbyConfig::new(broker.url(), &target.device_key)).unwrap();
    assert_eq!(
        standby.events().recv_timeout(WAIT),
        Ok(StandbyEvent::Online)
    );
    let why = call(&broker, token, &device, &ticket, &standby, &target).unwrap_err();
    assert!(why.contains("knows no grant"), "{why}");

    // Reported: inside the window, nobody is asked.
    let entry = target.grants.get(ticket.id).unwrap().unwrap();
    grants::report_to_broker(broker.url(), &target.device_key, &entry, WAIT).unwrap();
    let took =
        call(&broker, token, &device, &ticket, &standby, &target).expect("inside the window");
    eprintln!("unattended call -> first frame {took:?}");

    // The agent's connection drops: it stands by again by itself.
    standby.cut_connection().unwrap();
    assert!(matches!(
        standby.events().recv_timeout(WAIT),
        Ok(StandbyEvent::Offline { .. })
    ));
    assert_eq!(
        standby.events().recv_timeout(WAIT),
        Ok(StandbyEvent::Online)
    );

    // Revoked on the target but not reported: the broker lets the call through, the target
    // refuses it by its own copy.
    assert!(target.grants.revoke(ticket.id, UnixMillis::now()).unwrap());
    let why = call(&broker, token, &device, &ticket, &standby, &target).unwrap_err();
    assert!(
        why.contains("the computer refused") && why.contains("revoked"),
        "{why}"
    );

    // Four days on by the broker's clock: refused there, and audited.
    broker.advance(4 * DAY);
    let why = call(&broker, token, &device, &ticket, &standby, &target).unwrap_err();
    assert!(
        why.contains("does not let anyone in now") && why.contains("expired"),
        "{why}"
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let events = rt.block_on(audit_events(broker.database_url().unwrap()));
    let refused: Vec<_> = events
        .iter()
        .filter(|(e, _)| e == "unattended_refused")
        .collect();
    let allowed = events
        .iter()
        .filter(|(e, _)| e == "unattended_allowed")
        .count();
    assert_eq!(refused.len(), 2, "{events:?}");
    assert!(refused[1].1.contains("expired"), "{refused:?}");
    assert_eq!(allowed, 2, "{events:?}");
    standby.shutdown().unwrap();
}
