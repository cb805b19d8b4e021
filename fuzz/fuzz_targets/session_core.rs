//! The sans-IO session cores fed a hostile peer: each input is a channel, a time step and
//! bytes, handed to both the agent's and the viewer's core as if they came off the wire;
//! every output is drained. Nothing may panic or loop.
#![no_main]

use std::time::Duration;

use deskwire_engine::ColorSpace;
use deskwire_session::wire::Channel;
use deskwire_session::{
    AgentSession, AgentSessionConfig, StreamInfo, ViewerSession, ViewerSessionConfig,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let stream = StreamInfo {
        stream: 1,
        width: 640,
        height: 360,
        color: ColorSpace::default(),
        tops: vec![0, 128, 256],
    };
    let mut now = Duration::ZERO;
    let mut agent = AgentSession::new(AgentSessionConfig::default(), stream, true, now);
    let mut viewer = ViewerSession::new(ViewerSessionConfig::default(), now);
    let mut rest = data;
    while rest.len() >= 3 {
        let channel = match rest[0] % 3 {
            0 => Channel::Control,
            1 => Channel::Video,
            _ => Channel::Input,
        };
        now += Duration::from_millis(u64::from(rest[1]) * 4);
        let len = usize::from(rest[2]).min(rest.len() - 3);
        let msg = &rest[3..3 + len];
        rest = &rest[3 + len..];
        agent.handle_message(now, channel, msg);
        viewer.handle_message(now, channel, msg);
        agent.handle_timeout(now);
        viewer.handle_timeout(now);
        for _ in 0..10_000 {
            let a = agent.poll_transmit().is_some() | agent.poll_event().is_some();
            let v = viewer.poll_transmit().is_some() | viewer.poll_event().is_some();
            if !a && !v {
                break;
            }
        }
        let _ = (agent.poll_timeout(), viewer.poll_timeout());
    }
});
