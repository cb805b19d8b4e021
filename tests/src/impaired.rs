//! Real sessions (broker, `deskwire-viewer` and `deskwire-agent` binaries, WebRTC, H.264)
//! across an emulated impaired link: the agent in namespace A, broker and viewer in B,
//! `deskwire-netem` forwarding between them. Each scenario lives in its own test binary so
//! they run one after another: two at once would share two cores and measure the CPU.

use std::time::Duration;

use deskwire_netem::testbed::Testbed;
use deskwire_netem::LinkProfile;

use crate::binaries::{binary, Running};

/// Broker and headless viewer in B, the agent in A, streaming the synthetic scrolling page
/// for `secs` after connecting. Returns every line the viewer and the agent printed.
pub fn session(bed: &Testbed, secs: u32) -> (Vec<String>, Vec<String>) {
    let broker_addr = format!("{}:8450", bed.addr_b());
    let url = format!("ws://{broker_addr}");
    let mut broker = bed.command_in_b(binary("deskwire-broker"));
    // An in-memory store: nothing is written into the source tree.
    broker.args(["--listen", &broker_addr, "--database", "sqlite::memory:"]);
    let broker = Running::start(broker);
    // It prints this once its port is bound.
    broker.wait_for("listening on ws://", Duration::from_secs(10));
    let mut viewer = bed.command_in_b(binary("deskwire-viewer"));
    viewer.args([
        "--broker",
        &url,
        "--headless",
        "--duration",
        &secs.to_string(),
    ]);
    let viewer = Running::start(viewer);
    let code = viewer.wait_for_value("connection code: ", Duration::from_secs(10));
    let mut agent = bed.command_in_a(binary("deskwire-agent"));
    agent.args([
        "--broker",
        &url,
        "--code",
        &code,
        "--source",
        "synthetic:scroll",
        "--view-only",
        "--acceptance",
        "auto",
        "--answer-within",
        "0",
    ]);
    let agent = Running::start(agent);
    let viewer_lines = viewer.lines_until_exit(Duration::from_secs(u64::from(secs) + 15));
    // The agent says how the session ended a moment after the viewer left.
    let agent_lines = agent.lines_until("session ended", Duration::from_secs(10));
    drop(broker);
    (viewer_lines, agent_lines)
}

/// The viewer's frames per second, one figure per stats line.
pub fn fps(lines: &[String]) -> Vec<u32> {
    lines
        .iter()
        .filter_map(|l| l.split_once(" fps, ").and_then(|(n, _)| n.parse().ok()))
        .collect()
}

pub fn testbed(profile: LinkProfile) -> Testbed {
    Testbed::start(&profile, &binary("deskwire-netem")).unwrap_or_else(|e| {
        panic!("cannot build the emulated link (needs root, iproute2, /dev/net/tun): {e}")
    })
}

/// The session lasted until the technician ended it: the viewer never reported an end of
/// its own (it prints one only when the session ends before `--duration`), and the agent
/// was told goodbye by the technician.
pub fn assert_session_lasted(viewer: &[String], agent: &[String]) {
    let early = viewer.iter().find(|l| l.starts_with("session ended"));
    assert!(early.is_none(), "the session ended early: {early:?}");
    let end = agent
        .iter()
        .find(|l| l.starts_with("session ended"))
        .expect("the agent reports the end");
    assert!(end.contains("the technician ended the session"), "{end}");
}
