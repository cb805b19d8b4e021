//! Unattended access through the product binaries: `deskwire-agent --standby` with a grant its user
//! approved earlier, and `deskwire-viewer --unattended` connecting with nobody at the target, through
//! a real broker with a database that checks its own copy of the grant.

use std::process::Command;
use std::time::Duration;

use deskwire_tests::binaries::{viewer, Running};

use deskwire::accounts::AdminAccounts;
use deskwire::grants::{report_to_broker, LocalGrants};
use deskwire::UnixMillis;
use deskwire_broker::store::{Permission, Permissions, Policy};
use deskwire_signal::grant::{
    approve, CredentialMode, GrantPolicy, GrantRequest, GrantZone, Schedule, Validity, ZoneName,
    ZoneOf,
};
use deskwire_tests::session_fixtures::TestBroker;

const WAIT: Duration = Duration::from_secs(20);

#[test]
fn a_standing_by_sender_lets_the_viewer_in_unattended_only_while_the_grant_is_open() {
    let permissions = Permissions::NONE
        .with(Permission::Control)
        .with(Permission::Unattended);
    let (broker, token) = TestBroker::start_with_accounts(permissions, Policy::default()).unwrap();
    let url = broker.url();
    let dir = std::env::temp_dir().join(format!("dw-unattended-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (key, grants_file, accounts_file, ticket_file) = (
        dir.join("device.key"),
        dir.join("grants.json"),
        dir.join("accounts"),
        dir.join("ticket.json"),
    );
    AdminAccounts::at(&accounts_file)
        .set("root", "correct horse")
        .unwrap();

    // What an approval in an earlier session left: the target's grant and the technician's
    // ticket; the target reported it to the broker.
    let now = UnixMillis::now();
    broker.clock().set(now);
    let request = GrantRequest {
        schedule: Schedule::new(Validity::Days { days: 1 }, None).unwrap(),
        zone: GrantZone {
            of: ZoneOf::Customer,
            name: ZoneName::new("UTC").unwrap(),
        },
        credential_mode: CredentialMode::AskEachConnection,
    };
    let (grant, _) = approve(request, &GrantPolicy::default(), now).unwrap();
    let grants = LocalGrants::at(&grants_file);
    let ticket = grants.add(Some("alice".into()), grant).unwrap();
    std::fs::write(&ticket_file, ticket.to_json()).unwrap();
    let entry = grants.get(ticket.id).unwrap().unwrap();
    report_to_broker(url, &key, &entry, WAIT).unwrap();
    let device = deskwire::lan::device_id(&key).unwrap();

    let mut cmd = Command::new(env!("CARGO_BIN_EXE_deskwire-agent"));
    cmd.args(["--standby", "--broker", url, "--view-only"])
        .args([
            "--source",
            "synthetic:typing",
            "--width",
            "640",
            "--height",
            "480",
        ])
        .arg("--device-key")
        .arg(&key)
        .arg("--grants")
        .arg(&grants_file)
        .arg("--customer-accounts")
        .arg(&accounts_file)
        .arg("--control-socket")
        .arg(dir.join("ctl.sock"))
        .env("RUST_LOG", "error");
    let sender = Running::start(cmd);
    let wait_for = |what: &str| sender.wait_for(what, WAIT);
    wait_for("standing by");

    let shot = dir.join("shot.png");
    let (shot_arg, ticket_arg) = (
        shot.to_string_lossy().into_owned(),
        ticket_file.to_string_lossy().into_owned(),
    );
    let connect = |admin_password: &str| {
        let args = [
            "--broker",
            url,
            "--token",
            &token,
            "--unattended",
            &device,
            "--grant",
            &ticket_arg,
            "--admin-user",
            "root",
            "--headless",
            "--duration",
            "1",
            "--snapshot",
            &shot_arg,
        ];
        viewer(&args, &[("DESKWIRE_ADMIN_PASSWORD", admin_password)])
    };
    let (ok, text) = connect("correct horse");
    assert!(ok && text.contains("snapshot:"), "ok {ok}: {text}");
    let png = std::fs::read(&shot).expect("the snapshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 1000,
        "{} bytes",
        png.len()
    );
    wait_for("connects under grant");

    // The target's admin credentials are checked at each connection.
    let (ok, text) = connect("wrong horse");
    assert!(!ok, "a refused viewer exits with a failure: {text}");
    assert!(
        text.contains("administrator name or password is wrong"),
        "{text}"
    );
    assert!(text.contains("no frame was decoded"), "{text}");

    // Two days later by the broker's clock the grant has run out: refused there.
    broker.advance(Duration::from_secs(2 * 24 * 3600));
    let (ok, text) = connect("correct horse");
    assert!(!ok, "a refused viewer exits with a failure: {text}");
    assert!(
        text.contains("does not let anyone in now") && text.contains("expired"),
        "{text}"
    );
    assert!(!text.contains("snapshot:"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The README's unattended flow, typed as written: the technician asks during a session
/// and saves the ticket, the user approves on the agent's terminal (no device key given),
/// the agent stands by, and the technician calls with only the ticket (no device id, no
/// broker URL: the ticket names both).
#[test]
fn the_readme_unattended_flow_works_with_no_device_key_and_a_ticket_that_names_where_to_call() {
    let permissions = Permissions::NONE
        .with(Permission::Control)
        .with(Permission::Unattended);
    let (broker, token) = TestBroker::start_with_accounts(permissions, Policy::default()).unwrap();
    let url = broker.url();
    let screen = deskwire_tests::Xvfb::start(320, 240).expect("starting the target's Xvfb");
    let dir = std::env::temp_dir().join(format!("dw-readme-unattended-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (grants, ticket, accounts, config) = (
        dir.join("grants.json"),
        dir.join("ticket.json"),
        dir.join("accounts"),
        dir.join("config"),
    );
    AdminAccounts::at(&accounts)
        .set("root", "correct horse")
        .unwrap();
    let agent = |args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_deskwire-agent"));
        cmd.args(["--broker", url, "--source", "synthetic:static"])
            .args(["--width", "320", "--height", "240"])
            .arg("--grants")
            .arg(&grants)
            .arg("--customer-accounts")
            .arg(&accounts)
            .arg("--control-socket")
            .arg(dir.join("ctl.sock"))
            .args(args)
            .env("DISPLAY", screen.display())
            .env("XDG_CONFIG_HOME", &config)
            .env("RUST_LOG", "error");
        Running::start(cmd)
    };

    // During a session: the technician asks, the user says yes twice.
    let mut viewer_cmd = Command::new(deskwire_tests::binaries::binary("deskwire-viewer"));
    viewer_cmd
        .args(["--broker", url, "--token", &token, "--headless"])
        .args([
            "--duration",
            "4",
            "--request-unattended",
            "1",
            "--zone",
            "UTC",
        ])
        .arg("--save-grant")
        .arg(&ticket)
        .env("RUST_LOG", "error");
    let viewer_run = Running::start(viewer_cmd);
    let code = viewer_run.wait_for_value("connection code: ", WAIT);
    let mut user = agent(&["--code", &code]);
    let asked = user.wait_for("Allow?", WAIT);
    // Named as the broker verified them: the technician and their company.
    assert!(
        asked.starts_with("Technician alice of acme asks to see and control this screen."),
        "{asked}"
    );
    user.type_line("y");
    let asked = user.wait_for("asks to connect when nobody is here", WAIT);
    assert!(asked.contains("(for 1 day,"), "{asked}");
    user.type_line("y");
    user.wait_for("unattended access granted (grant 1)", WAIT);
    user.wait_for("grant 1 reported to the broker", WAIT);
    let saved = viewer_run.lines_until_exit(WAIT);
    assert!(
        saved.iter().any(|l| l.starts_with("grant saved to")),
        "{saved:#?}"
    );
    // While the user decided, the technician was told so.
    assert!(
        saved
            .iter()
            .any(|l| l.starts_with("waiting for the user to let you in (up to 30 s)")),
        "{saved:#?}"
    );
    drop(user);
    let kept = deskwire::grants::GrantTicket::from_json(&std::fs::read_to_string(&ticket).unwrap())
        .unwrap();
    let device = kept.device.clone().expect("the ticket names the device");
    assert!(device.starts_with("dev-"), "{device}");
    assert_eq!(kept.broker.as_deref(), Some(url));

    // Later, nobody at the computer (the broker's clock is virtual: it reads real time now).
    broker.clock().set(UnixMillis::now());
    let standby = agent(&["--standby"]);
    let standing = standby.wait_for("standing by for unattended calls", WAIT);
    assert!(standing.contains(&device), "the same device: {standing}");
    let shot = dir.join("shot.png");
    // The technician's call with nobody there: only the ticket, the token and an account.
    let call = |extra: &[&str]| {
        let ticket = ticket.to_string_lossy();
        let mut args = vec![
            "--unattended",
            "--grant",
            &ticket,
            "--token",
            &token,
            "--admin-user",
            "root",
            "--headless",
            "--duration",
            "1",
        ];
        args.extend_from_slice(extra);
        viewer(&args, &[("DESKWIRE_ADMIN_PASSWORD", "correct horse")])
    };
    let (ok, text) = call(&["--snapshot", &shot.to_string_lossy()]);
    assert!(ok && text.contains("snapshot:"), "ok {ok}: {text}");
    standby.wait_for("connects under grant 1", WAIT);

    // The user revokes the grant on the computer: the broker it was reported to is told,
    // and calls are refused there as well.
    let admin = |args: &[&str]| {
        let out = Command::new(deskwire_tests::binaries::binary("deskwire-broker"))
            .args(args)
            .args(["--database", broker.database_url().unwrap()])
            .env("RUST_LOG", "error")
            .output()
            .unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let (_, listed) = admin(&["admin", "list-grants"]);
    assert!(
        listed.contains(&format!("{device} grant 1 for alice: open now")),
        "{listed}"
    );
    let revoked = Command::new(env!("CARGO_BIN_EXE_deskwire-agent"))
        .args(["grants", "--revoke", "1", "--grants"])
        .arg(&grants)
        .env("XDG_CONFIG_HOME", &config)
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&revoked.stdout);
    assert!(revoked.status.success(), "{revoked:?}");
    assert!(said.contains(&format!("{url} was told")), "{said}");
    let (_, listed) = admin(&["admin", "list-grants", "--device", &device]);
    assert!(listed.contains("revoked"), "{listed}");
    broker.clock().set(UnixMillis::now());
    let (ok, text) = call(&[]);
    assert!(!ok && text.contains("revoked"), "ok {ok}: {text}");
    // Revoked already: the administrator's revocation at the broker says so.
    let (ok, said) = admin(&["admin", "revoke-grant", "--device", &device, "--grant", "1"]);
    assert!(!ok && said.contains("open grant"), "{said}");
    // The audit tells the whole story, in order.
    let (_, audit) = admin(&["audit", "list"]);
    let order = [
        "accepted_by_user",
        "grant_approved",
        "unattended_allowed",
        "grant_revoked",
        "unattended_refused",
    ];
    let mut at = 0;
    for event in order {
        let found = audit[at..].find(event);
        assert!(
            found.is_some(),
            "no {event} after the ones before:\n{audit}"
        );
        at += found.unwrap_or(0);
    }
    assert!(!audit.contains("technician #"), "names, not ids:\n{audit}");
    let _ = std::fs::remove_dir_all(&dir);
}
