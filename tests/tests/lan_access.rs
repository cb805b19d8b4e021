//! A LAN target's access modes, on a LAN made of network namespaces: allow automatically
//! (the user may reject in time, silence lets the technician in), allow by request (the user
//! must accept; silence refuses), deny; and a password that rotated after a day.
//!
//! The target is the engine's `Agent::start_lan` and the technician's side its `Viewer`,
//! each on a thread inside its own namespace. Every refused attempt leaves the target
//! listening for the next one, as a managed computer does.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use deskwire::accounts::AdminAccounts;
use deskwire::lan::{BackoffLimits, LanListenConfig, LanPassword, LanPasswords};
use deskwire::UnixMillis;
use deskwire::{
    AcceptanceMode, Agent, AgentConfig, AgentEvent, ConsentAnswer, ConsentRefusal,
    DisconnectReason, TransportConfig, Viewer, ViewerConfig, ViewerEvent,
};
use deskwire_capture::{open, OpenOptions, SourceSpec};
use deskwire_signal::{
    decode_broker, encode, BrokerMessage, ClientMessage, JoinRefusal, PeerSignal,
};
use deskwire_tests::netns::Lan;
use deskwire_tests::session_fixtures::{lan_permission, wait_host, wait_viewer};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(15);

fn source() -> Box<dyn deskwire_capture::Source> {
    let spec: SourceSpec = "synthetic:typing".parse().unwrap();
    let opts = OpenOptions {
        width: 640,
        height: 480,
        ..OpenOptions::default()
    };
    open(&spec, &opts).unwrap()
}

/// A view-only LAN agent in target 0's namespace, with `mode` and `passwords`. Wrong
/// passwords cost no wait here: the back-off has tests of its own, in virtual time and
/// with the sender between namespaces.
fn host(lan: &Lan, mode: AcceptanceMode, passwords: LanPasswords) -> (Agent, SocketAddr) {
    host_with(lan, mode, passwords, None)
}

fn host_with(
    lan: &Lan,
    mode: AcceptanceMode,
    passwords: LanPasswords,
    admins: Option<AdminAccounts>,
) -> (Agent, SocketAddr) {
    let ip = IpAddr::V4(lan.target_ip(0));
    let mut config = AgentConfig::new("")
        .view_only(true)
        .acceptance(mode)
        .transport(TransportConfig::default().bind(vec![ip]));
    if let Some(a) = admins {
        config = config.require_admin(a);
    }
    let no_wait = BackoffLimits {
        first: Duration::ZERO,
        ..BackoffLimits::default()
    };
    let listen = LanListenConfig::new(passwords)
        .listen(SocketAddr::new(ip, 0))
        .backoff(no_wait);
    start_host(lan, config, listen)
}

/// A LAN agent with `config` listening as `listen`, in target 0's namespace.
fn start_host(lan: &Lan, config: AgentConfig, listen: LanListenConfig) -> (Agent, SocketAddr) {
    let h = lan
        .run_in(lan.target(0), move || {
            Agent::start_lan(config, source(), listen)
        })
        .unwrap()
        .expect("starting the LAN host");
    let addr = h.lan_addr().expect("listening");
    (h, addr)
}

fn viewer(lan: &Lan, to: SocketAddr, password: LanPassword) -> Viewer {
    viewer_with(lan, ViewerConfig::lan(to, password, lan_permission()))
}

fn viewer_with(lan: &Lan, config: ViewerConfig) -> Viewer {
    let config =
        config.transport(TransportConfig::default().bind(vec![IpAddr::V4(lan.viewer_ip())]));
    lan.run_in(lan.viewer(), move || Viewer::start(config))
        .unwrap()
        .expect("starting the viewer")
}

/// The end of `c`'s session: how it ended.
fn ended(c: &Viewer) -> DisconnectReason {
    wait_viewer(c, WAIT, |e| match e {
        ViewerEvent::Disconnected(r) => Some(r.clone()),
        _ => None,
    })
    .expect("the session ended")
}

fn asked(h: &Agent) {
    wait_host(h.events(), WAIT, |e| {
        matches!(e, AgentEvent::ConsentRequested { .. }).then_some(())
    })
    .expect("the user was asked");
}

fn connected(h: &Agent, c: &Viewer) {
    wait_host(h.events(), WAIT, |e| {
        matches!(e, AgentEvent::Connected { .. }).then_some(())
    })
    .expect("the target connected");
    wait_viewer(c, WAIT, |e| {
        matches!(e, ViewerEvent::Frame(_)).then_some(())
    })
    .expect("the technician sees the screen");
}

#[test]
fn allow_by_request_refuses_on_reject_and_on_silence_and_connects_on_accept() {
    let lan = Lan::create(1).expect("making the test LAN");
    let passwords = LanPasswords::daily();
    let mode = AcceptanceMode::AllowByRequest {
        timeout: Duration::from_secs(1),
    };
    let (h, to) = host(&lan, mode, passwords.clone());

    // The user says no.
    let c = viewer(&lan, to, passwords.current());
    asked(&h);
    h.answer_consent(ConsentAnswer::Reject).unwrap();
    let r = ended(&c);
    assert!(matches!(r, DisconnectReason::PeerBye { .. }), "{r}");
    assert!(
        r.to_string()
            .contains(ConsentRefusal::RejectedByUser.message()),
        "{r}"
    );
    c.shutdown().unwrap();

    // Nobody answers: refused when the question times out; the target still listens.
    let c = viewer(&lan, to, passwords.current());
    asked(&h);
    let r = ended(&c);
    assert!(
        r.to_string().contains(ConsentRefusal::TimedOut.message()),
        "{r}"
    );
    c.shutdown().unwrap();

    // The user says yes: the session starts.
    let c = viewer(&lan, to, passwords.current());
    asked(&h);
    h.answer_consent(ConsentAnswer::Allow { control: false })
        .unwrap();
    connected(&h, &c);
    c.shutdown().unwrap();
    h.shutdown().unwrap();
}

#[test]
fn allow_automatically_lets_silence_in_and_a_reject_in_time_out() {
    let lan = Lan::create(1).expect("making the test LAN");
    let passwords = LanPasswords::daily();
    let mode = AcceptanceMode::AllowAutomatically {
        reject_window: Duration::from_secs(30),
    };
    let (h, to) = host(&lan, mode, passwords.clone());

    let c = viewer(&lan, to, passwords.current());
    asked(&h);
    h.answer_consent(ConsentAnswer::Reject).unwrap();
    let r = ended(&c);
    assert!(
        r.to_string()
            .contains(ConsentRefusal::RejectedByUser.message()),
        "{r}"
    );
    c.shutdown().unwrap();
    h.shutdown().unwrap();

    // Silence for the whole window lets the technician in (a short window here).
    let mode = AcceptanceMode::AllowAutomatically {
        reject_window: Duration::from_millis(300),
    };
    let (h, to) = host(&lan, mode, passwords.clone());
    let c = viewer(&lan, to, passwords.current());
    asked(&h);
    connected(&h, &c);
    c.shutdown().unwrap();
    h.shutdown().unwrap();
}

#[test]
fn deny_refuses_every_technician_with_the_right_password() {
    let lan = Lan::create(1).expect("making the test LAN");
    let passwords = LanPasswords::daily();
    let (h, to) = host(&lan, AcceptanceMode::Deny, passwords.clone());
    for _ in 0..2 {
        let c = viewer(&lan, to, passwords.current());
        let r = ended(&c);
        assert!(
            r.to_string()
                .contains(ConsentRefusal::DeniedByPolicy.message()),
            "{r}"
        );
        c.shutdown().unwrap();
    }
    h.shutdown().unwrap();
}

#[test]
fn yesterdays_password_stops_working_once_a_day_has_passed() {
    let lan = Lan::create(1).expect("making the test LAN");
    // The password book was started a day (and a second) ago, in virtual time: the
    // password the admin read then is due to rotate now.
    let day = Duration::from_secs(24 * 3600);
    let then = UnixMillis(UnixMillis::now().0 - day.as_millis() as u64 - 1000);
    let passwords = LanPasswords::new(then, day);
    let yesterdays = passwords.current_at(then);
    let mode = AcceptanceMode::AllowAutomatically {
        reject_window: Duration::ZERO,
    };
    let (h, to) = host(&lan, mode, passwords.clone());
    let c = viewer(&lan, to, yesterdays.clone());
    match ended(&c) {
        DisconnectReason::Lan(why) => assert!(why.contains("wrong password"), "{why}"),
        other => panic!("expected a wrong-password refusal, got {other}"),
    }
    c.shutdown().unwrap();
    let today = passwords.current();
    assert_ne!(today, yesterdays);
    let c = viewer(&lan, to, today);
    connected(&h, &c);
    c.shutdown().unwrap();
    h.shutdown().unwrap();
}

#[test]
fn a_target_that_requires_an_administrator_lets_in_only_a_technician_with_its_credentials() {
    let lan = Lan::create(1).expect("making the test LAN");
    let file = std::env::temp_dir().join(format!("deskwire-admins-{}", std::process::id()));
    let _ = std::fs::remove_file(&file);
    let admins = AdminAccounts::at(&file);
    admins.set("it-admin", "Tr0ub4dor&3").unwrap();
    let passwords = LanPasswords::daily();
    let mode = AcceptanceMode::AllowAutomatically {
        reject_window: Duration::ZERO,
    };
    let (h, to) = host_with(&lan, mode, passwords.clone(), Some(admins));
    let lan_config = || ViewerConfig::lan(to, passwords.current(), lan_permission());

    // Without credentials: told what is missing.
    let c = viewer_with(&lan, lan_config());
    match ended(&c) {
        DisconnectReason::Lan(why) => assert!(why.contains("administrators"), "{why}"),
        other => panic!("expected a LAN refusal, got {other}"),
    }
    c.shutdown().unwrap();
    // With a wrong password: refused, and nothing connected.
    let c = viewer_with(
        &lan,
        lan_config().admin_credentials("it-admin", "tr0ub4dor&3"),
    );
    match ended(&c) {
        DisconnectReason::Lan(why) => assert!(
            why.contains("administrator name or password is wrong"),
            "{why}"
        ),
        other => panic!("expected a LAN refusal, got {other}"),
    }
    c.shutdown().unwrap();
    // With the right ones: in.
    let c = viewer_with(
        &lan,
        lan_config().admin_credentials("it-admin", "Tr0ub4dor&3"),
    );
    connected(&h, &c);
    c.shutdown().unwrap();
    h.shutdown().unwrap();
    let _ = std::fs::remove_file(&file);
}

/// A control-capable LAN agent (its own Xvfb for input) that keeps grants and asks its user.
fn grant_host(
    lan: &Lan,
    display: &str,
    grants: &deskwire::grants::LocalGrants,
    accounts: &AdminAccounts,
) -> (Agent, SocketAddr) {
    let ip = IpAddr::V4(lan.target_ip(0));
    let config = AgentConfig::new("")
        .input_display(Some(display.to_owned()))
        // Anyone connecting with the password needs the user, who must answer in time.
        .acceptance(AcceptanceMode::AllowByRequest {
            timeout: Duration::from_secs(2),
        })
        .unattended(
            grants.clone(),
            deskwire_signal::grant::GrantPolicy::default(),
            Some(accounts.clone()),
        )
        .transport(TransportConfig::default().bind(vec![ip]));
    let passwords = LanPasswords::daily();
    let listen = LanListenConfig::new(passwords).listen(SocketAddr::new(ip, 0));
    let h = lan
        .run_in(lan.target(0), move || {
            Agent::start_lan(config, source(), listen)
        })
        .unwrap()
        .expect("starting the LAN host");
    let addr = h.lan_addr().unwrap();
    (h, addr)
}

#[test]
fn a_granted_technician_connects_later_with_nobody_answering_and_only_inside_the_grant() {
    use deskwire::grants::{GrantTicket, LocalGrants};
    use deskwire::GrantDecision;
    use deskwire_signal::grant::{
        approve, CredentialMode, DailyWindow, GrantPolicy, GrantRequest, GrantZone, LocalTime,
        Schedule, Validity, ZoneName, ZoneOf,
    };
    let lan = Lan::create(1).expect("making the test LAN");
    let x = deskwire_tests::Xvfb::start(320, 240).expect("starting Xvfb");
    let tmp = |n: &str| {
        std::env::temp_dir().join(format!("deskwire-lan-grant-{}-{n}", std::process::id()))
    };
    let _ = std::fs::remove_file(tmp("grants"));
    let _ = std::fs::remove_file(tmp("accounts"));
    let grants = LocalGrants::at(tmp("grants"));
    let accounts = AdminAccounts::at(tmp("accounts"));
    accounts.set("it-admin", "Tr0ub4dor&3").unwrap();
    let request = |daily: Option<DailyWindow>| GrantRequest {
        schedule: Schedule::new(Validity::Days { days: 3 }, daily).unwrap(),
        zone: GrantZone {
            of: ZoneOf::Technician,
            name: ZoneName::new("UTC").unwrap(),
        },
        credential_mode: CredentialMode::AskEachConnection,
    };

    // 1. A session with the password; the user lets the technician in and approves a grant.
    let passwords = LanPasswords::daily();
    let ip = IpAddr::V4(lan.target_ip(0));
    let config = AgentConfig::new("")
        .input_display(Some(x.display()))
        .acceptance(AcceptanceMode::AllowByRequest {
            timeout: Duration::from_secs(5),
        })
        .unattended(
            grants.clone(),
            GrantPolicy::default(),
            Some(accounts.clone()),
        )
        .transport(TransportConfig::default().bind(vec![ip]));
    let listen = LanListenConfig::new(passwords.clone()).listen(SocketAddr::new(ip, 0));
    let h = lan
        .run_in(lan.target(0), move || {
            Agent::start_lan(config, source(), listen)
        })
        .unwrap()
        .unwrap();
    let to = h.lan_addr().unwrap();
    let c = viewer(&lan, to, passwords.current());
    asked(&h);
    h.answer_consent(ConsentAnswer::Allow { control: true })
        .unwrap();
    connected(&h, &c);
    let id = c.request_unattended(&request(None)).unwrap();
    let asked_id = wait_host(h.events(), WAIT, |e| match e {
        AgentEvent::GrantRequested { id, .. } => Some(*id),
        _ => None,
    })
    .unwrap();
    assert_eq!(asked_id, id);
    h.answer_grant(id, GrantDecision::Approve).unwrap();
    let ticket: GrantTicket = wait_viewer(&c, WAIT, |e| match e {
        ViewerEvent::GrantAnswered { result, .. } => Some(result.clone()),
        _ => None,
    })
    .unwrap()
    .expect("approved");
    c.shutdown().unwrap();
    h.shutdown().unwrap();

    // 2. Later, nobody at the target: the grant lets the technician in (with the target's
    //    admin credentials, as the grant's mode asks); the user is never asked.
    let (h, to) = grant_host(&lan, &x.display(), &grants, &accounts);
    let config = ViewerConfig::lan_grant(to, ticket.clone(), lan_permission())
        .admin_credentials("it-admin", "Tr0ub4dor&3");
    let c = viewer_with(&lan, config);
    let first = wait_host(h.events(), WAIT, |e| match e {
        AgentEvent::ConsentRequested { .. } => Some("asked"),
        AgentEvent::Connected { .. } => Some("connected"),
        _ => None,
    })
    .unwrap();
    assert_eq!(
        first, "connected",
        "nobody may need to answer under a grant"
    );
    c.shutdown().unwrap();
    h.shutdown().unwrap();

    // 3. Without the admin credentials the grant's mode asks for: refused.
    let (h, to) = grant_host(&lan, &x.display(), &grants, &accounts);
    let c = viewer_with(
        &lan,
        ViewerConfig::lan_grant(to, ticket.clone(), lan_permission()),
    );
    match ended(&c) {
        DisconnectReason::Lan(why) => assert!(why.contains("administrators"), "{why}"),
        other => panic!("expected a refusal, got {other}"),
    }
    c.shutdown().unwrap();
    h.shutdown().unwrap();

    // 4. Outside its daily window (the hour after next, UTC): refused by the target itself.
    let now = UnixMillis::now();
    let hour = ((now.0 / 3_600_000 + 2) % 24) as u8;
    let window = DailyWindow::every_day(
        LocalTime::new(hour, 0).unwrap(),
        LocalTime::new((hour + 1) % 24, 0).unwrap(),
    );
    let (closed, _) = approve(request(Some(window)), &GrantPolicy::default(), now).unwrap();
    let closed = grants.add(None, closed).unwrap();
    let (h, to) = grant_host(&lan, &x.display(), &grants, &accounts);
    let config = ViewerConfig::lan_grant(to, closed, lan_permission())
        .admin_credentials("it-admin", "Tr0ub4dor&3");
    let c = viewer_with(&lan, config);
    match ended(&c) {
        DisconnectReason::Lan(why) => assert!(why.contains("does not let anyone in now"), "{why}"),
        other => panic!("expected a refusal, got {other}"),
    }
    c.shutdown().unwrap();

    // 5. Revoked by the user: refused too.
    assert!(grants.revoke(ticket.id, UnixMillis::now()).unwrap());
    let config = ViewerConfig::lan_grant(to, ticket, lan_permission())
        .admin_credentials("it-admin", "Tr0ub4dor&3");
    let c = viewer_with(&lan, config);
    match ended(&c) {
        DisconnectReason::Lan(why) => assert!(why.contains("revoked"), "{why}"),
        other => panic!("expected a refusal, got {other}"),
    }
    c.shutdown().unwrap();
    h.shutdown().unwrap();
    let _ = std::fs::remove_file(tmp("grants"));
    let _ = std::fs::remove_file(tmp("accounts"));
}

/// A client in the viewer's namespace that completes the handshake and its hello to the
/// LAN target at `to`, then says nothing more; returns the target's last word to it.
fn hello_then_silence(lan: &Lan, to: SocketAddr) -> BrokerMessage {
    lan.run_in(lan.viewer(), move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{to}/v1/lan"))
                .await
                .expect("the LAN target upgrades /v1/lan");
            let hello = ClientMessage::Relay {
                signal: PeerSignal::LanHello { grant: None },
            };
            ws.send(Message::Text(encode(&hello).into())).await.unwrap();
            let mut last = None;
            // Bounded: the target's proof deadline is 2 s, its back-off answer immediate.
            while let Ok(Some(Ok(Message::Text(text)))) =
                tokio::time::timeout(Duration::from_secs(10), ws.next()).await
            {
                last = Some(decode_broker(&text).expect("the target speaks the protocol"));
            }
            last.expect("the target answered")
        })
    })
    .unwrap()
}

#[test]
fn a_client_that_says_hello_and_proves_nothing_is_cut_off_and_then_backed_off() {
    let lan = Lan::create(1).expect("making the test LAN");
    let ip = IpAddr::V4(lan.target_ip(0));
    let listen = LanListenConfig::new(LanPasswords::daily())
        .listen(SocketAddr::new(ip, 0))
        .backoff(BackoffLimits {
            first: Duration::from_secs(60),
            ..BackoffLimits::default()
        });
    let config = AgentConfig::new("")
        .view_only(true)
        .transport(TransportConfig::default().bind(vec![ip]));
    let (h, addr) = start_host(&lan, config, listen);
    // Twice: after its hello the target sends its key exchange and waits for the proof,
    // then refuses; without the deadline it held the one negotiation for a whole step.
    for _ in 0..2 {
        match hello_then_silence(&lan, addr) {
            BrokerMessage::JoinRefused { reason, message } => {
                assert_eq!(reason, JoinRefusal::VerificationFailed);
                assert!(message.contains("not proven in time"), "{message}");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
    // Two stalls count as two failures: the source now waits, told so without a key
    // exchange.
    match hello_then_silence(&lan, addr) {
        BrokerMessage::JoinRefused { reason, message } => {
            assert_eq!(reason, JoinRefusal::TooManyAttempts);
            assert!(message.contains("try again in"), "{message}");
        }
        other => panic!("expected the back-off, got {other:?}"),
    }
    h.shutdown().unwrap();
}
