//! An outage on a real session across the emulated link: the session rides it out, both
//! ends say so, and the picture comes back with the link.
// The tests print what both programs said, for the record and for a failure's reader.
#![allow(clippy::print_stderr)]

use std::time::Duration;

use deskwire_netem::{LinkProfile, Outage, ProfileOverrides};
use deskwire_tests::impaired::{assert_session_lasted, fps, session, testbed};

#[test]
fn an_outage_is_ridden_out_and_the_picture_returns_with_the_link() {
    let mut profile = LinkProfile::named("cable").unwrap();
    profile
        .apply(&ProfileOverrides {
            loss: Some(0.0),
            outages: vec![Outage {
                start: Duration::from_secs(3),
                length: Duration::from_secs(4),
            }],
            ..ProfileOverrides::default()
        })
        .unwrap();
    let bed = testbed(profile);
    let (viewer, agent) = session(&bed, 10);
    eprintln!("viewer: {viewer:#?}\nagent: {agent:#?}");
    assert_session_lasted(&viewer, &agent);
    let reconnecting = viewer
        .iter()
        .position(|l| l.starts_with("reconnecting"))
        .expect("reconnecting shown");
    let back = viewer
        .iter()
        .position(|l| l.starts_with("reconnected"))
        .expect("reconnected shown");
    assert!(back > reconnecting);
    // New pictures after the link is back (their rate on this content and machine is the
    // bench's business: `deskwire-bench net`).
    let after = fps(&viewer[back..]);
    assert!(
        after.iter().filter(|&&f| f > 0).count() >= 2,
        "fps after the outage {after:?}"
    );
    assert!(
        agent.iter().any(|l| l.contains("connection dropped")),
        "{agent:?}"
    );
    assert!(
        agent.iter().any(|l| l.contains("connection is back")),
        "{agent:?}"
    );
}
