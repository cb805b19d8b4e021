//! A target in its own process, for tests that need to kill one: joins with the code in
//! argv[2] at the broker in argv[1], streams a synthetic desktop view-only, prints
//! "connected" when the session is up.
#![allow(clippy::print_stdout)]

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};

use deskwire::{Agent, AgentConfig, AgentEvent, TransportConfig};
use deskwire_capture::{open, OpenOptions};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, broker, code] = &args[..] else {
        anyhow::bail!("usage: deskwire-test-host BROKER_URL CODE");
    };
    let opts = OpenOptions {
        width: 640,
        height: 480,
        ..OpenOptions::default()
    };
    let source = open(&"synthetic:typing".parse()?, &opts)?;
    let config = AgentConfig::new(broker.as_str())
        .view_only(true)
        .transport(TransportConfig::default().bind(vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]));
    let host = Agent::start(config, source, code.parse()?)?;
    for e in host.events() {
        match e {
            AgentEvent::Connected { .. } => {
                println!("connected");
                std::io::stdout().flush()?;
            }
            AgentEvent::Disconnected(r) => {
                println!("disconnected: {r}");
                break;
            }
            _ => {}
        }
    }
    host.shutdown()?;
    Ok(())
}
