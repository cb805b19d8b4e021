//! Connecting on the LAN needs the connect-on-LAN permission: a technician asks their broker
//! (a real broker with accounts on a real database) before going around it.

use std::time::Duration;

use std::path::Path;

use deskwire::lan::{check_lan_permission, LanError, LanPermissionError};
use deskwire::SessionError;
use deskwire_broker::store::{Permission, Permissions, Policy};
use deskwire_tests::session_fixtures::TestBroker;

const WAIT: Duration = Duration::from_secs(10);

/// No policy file: with a broker, the broker alone decides.
const POLICY: &str = "/nonexistent/deskwire-tests/technician.conf";

fn check(broker: &TestBroker, token: &str) -> Result<String, LanPermissionError> {
    check_lan_permission(Some(broker.url()), Some(token), Path::new(POLICY), WAIT).map(|p| {
        p.technician()
            .expect("the broker names the technician")
            .to_owned()
    })
}

#[test]
fn a_group_with_the_lan_permission_is_allowed_and_one_without_it_is_told_why_not() {
    let with = Permissions::NONE
        .with(Permission::ViewOnly)
        .with(Permission::Lan);
    let (broker, token) = TestBroker::start_with_accounts(with, Policy::default()).unwrap();
    assert_eq!(check(&broker, &token).unwrap(), "alice");
    // A wrong token is not a technician at all.
    match check(&broker, "dw_not_a_real_token") {
        Err(LanPermissionError::RefusedByBroker(why)) => {
            assert!(why.contains("not valid"), "{why}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    drop(broker);

    let without = Permissions::NONE.with(Permission::Control);
    let (broker, token) = TestBroker::start_with_accounts(without, Policy::default()).unwrap();
    match check(&broker, &token) {
        Err(LanPermissionError::RefusedByBroker(why)) => {
            assert!(why.contains("does not have the lan permission"), "{why}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // Nor may they read a device's LAN password.
    match deskwire::lan::fetch_lan_password(broker.url(), &token, "dev-0000000000000000", WAIT) {
        Err(SessionError::Lan(LanError::Refused(why))) => {
            assert!(why.contains("does not have the lan permission"), "{why}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn a_managed_target_reports_its_lan_password_and_only_a_technician_with_the_permission_reads_it() {
    use deskwire::lan::{device_id, fetch_lan_password, report_lan_password, LanPasswords};
    let with = Permissions::NONE.with(Permission::Lan);
    let (broker, token) = TestBroker::start_with_accounts(with, Policy::default()).unwrap();
    let key = std::env::temp_dir().join(format!("deskwire-lan-report-{}.key", std::process::id()));
    let _ = std::fs::remove_file(&key);
    let passwords = LanPasswords::daily();
    report_lan_password(&[broker.url().to_owned()], &key, &passwords, WAIT).unwrap();
    let device = device_id(&key).unwrap();
    let (read, rotates_at) = fetch_lan_password(broker.url(), &token, &device, WAIT).unwrap();
    assert_eq!(read, passwords.current());
    assert_eq!(rotates_at, passwords.rotates_at());

    // Nothing was reported for another device.
    match fetch_lan_password(broker.url(), &token, "dev-0000000000000000", WAIT) {
        Err(SessionError::Lan(LanError::Refused(why))) => {
            assert!(why.contains("has not reported"), "{why}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // A restart's new password replaces the old one.
    let restarted = LanPasswords::daily();
    report_lan_password(&[broker.url().to_owned()], &key, &restarted, WAIT).unwrap();
    let (read, _) = fetch_lan_password(broker.url(), &token, &device, WAIT).unwrap();
    assert_eq!(read, restarted.current());
    drop(broker);
    let _ = std::fs::remove_file(&key);
}
