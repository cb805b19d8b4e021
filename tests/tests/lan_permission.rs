//! Connecting on the LAN needs the connect-on-LAN permission: a technician asks their broker
//! (a real broker with accounts on a real database) before going around it.

use std::time::Duration;

use deskwire_broker::store::{Permission, Permissions, Policy};
use deskwire_engine::lan::check_lan_permission;
use deskwire_engine::SessionError;
use deskwire_tests::session_fixtures::TestBroker;

const WAIT: Duration = Duration::from_secs(10);

#[test]
fn a_group_with_the_lan_permission_is_allowed_and_one_without_it_is_told_why_not() {
    let with = Permissions::NONE
        .with(Permission::ViewOnly)
        .with(Permission::Lan);
    let (broker, token) = TestBroker::start_with_accounts(with, Policy::default()).unwrap();
    assert_eq!(
        check_lan_permission(broker.url(), &token, WAIT).unwrap(),
        "alice"
    );
    // A wrong token is not a technician at all.
    match check_lan_permission(broker.url(), "dw_not_a_real_token", WAIT) {
        Err(SessionError::Lan(why)) => assert!(why.contains("not valid"), "{why}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    drop(broker);

    let without = Permissions::NONE.with(Permission::Control);
    let (broker, token) = TestBroker::start_with_accounts(without, Policy::default()).unwrap();
    match check_lan_permission(broker.url(), &token, WAIT) {
        Err(SessionError::Lan(why)) => {
            assert!(why.contains("does not have the lan permission"), "{why}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}
