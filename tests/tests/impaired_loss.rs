//! Random loss and reordering on a real session across the emulated link (the `hotel-wifi`
//! profile: 3 Mbit/s, 40 ms round trip with +/- 15 ms of jitter that reorders, 2 % lost
//! each way). Without the loss shield SCTP read each loss and each reordered packet as
//! congestion, carried under 1 Mbit/s and froze the picture for seconds at a time
//! (`deskwire-bench net --no-loss-shield`: 10-23 fps, 20-62 % frozen); the invariant here
//! is the issue's: no second without a new picture while the content changes.
// The tests print what both programs said, for the record and for a failure's reader.
#![allow(clippy::print_stderr)]

use deskwire_netem::LinkProfile;
use deskwire_tests::impaired::{assert_session_lasted, fps, session, testbed};

#[test]
fn a_lossy_reordering_link_shows_a_new_picture_every_second_and_the_goodbye_arrives() {
    let bed = testbed(LinkProfile::named("hotel-wifi").unwrap());
    let (viewer, agent) = session(&bed, 12);
    eprintln!("viewer: {viewer:#?}\nagent: {agent:#?}");
    // The goodbye crossed the lossy link: the agent ended because the technician did.
    assert_session_lasted(&viewer, &agent);
    let shown = fps(&viewer);
    assert!(shown.len() >= 10, "{shown:?}");
    // The start (8 bands, then one once the path showed its limit) is the rate
    // controller's business; from there on, every second.
    let tail = &shown[shown.len() - 6..];
    assert!(
        tail.iter().all(|&f| f > 0),
        "a second without a picture: {shown:?}"
    );
    // About 33 fps with the shield on this machine; 20 leaves room for a loaded one.
    assert!(tail.iter().sum::<u32>() >= 120, "under 20 fps: {shown:?}");
}
