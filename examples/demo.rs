//! One-shot demo: a broker, a target and a technician in one process on loopback. The
//! technician gets a code, the target joins with it, the screen streams for a few seconds,
//! and the session statistics and a snapshot PNG are printed.
//!
//! Uses the real display when `$DISPLAY` is set, else a synthetic desktop.
//!
//! ```text
//! cargo run --release -p deskwire-examples --example demo -- --seconds 5
//! ```
#![allow(clippy::print_stdout)]

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use clap::Parser;
use deskwire::{
    Agent, AgentConfig, AgentEvent, TransportConfig, Viewer, ViewerConfig, ViewerEvent,
};
use deskwire_engine::{BandSpec, CodecConfig, PipelineConfig};
use deskwire_examples::{demo_source, wait_for_code, DemoArgs, LoopbackBroker, SessionReport};
use deskwire_viewer::write_png;

fn main() -> Result<()> {
    deskwire::init_tracing();
    let args = DemoArgs::parse();
    let (spec, source) = demo_source(args.source.as_deref(), args.width, args.height)?;
    let (w, h) = source.size();
    let broker = LoopbackBroker::start()?;
    println!("broker on {}", broker.url());

    // The technician asks the broker for a code...
    let transport = TransportConfig::default().bind(vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]);
    let config = ViewerConfig::new(broker.url()).transport(transport.clone());
    let viewer = Viewer::start(config)?;
    let code = wait_for_code(&viewer, Duration::from_secs(10))?;
    println!("connection code: {code}");

    // ...and the target enters it. With no display to inject into, it is view-only.
    let display = std::env::var("DISPLAY").ok();
    let view_only = matches!(spec, deskwire_capture::SourceSpec::Synthetic(_)) || display.is_none();
    let codec = match args.bands {
        Some(b) => CodecConfig::default().bands(BandSpec::Count(b)),
        None => CodecConfig::default(),
    };
    let host_config = AgentConfig::new(broker.url())
        .transport(transport)
        .view_only(view_only)
        .input_display(display)
        .pipeline(PipelineConfig::default().codec(codec));
    let entered = Instant::now();
    let host = Agent::start(host_config, source, code)?;
    println!("streaming {spec}, {w}x{h}, for {:.1} s", args.seconds);

    let mut report = SessionReport::new(entered);
    let mut end = None;
    while end.is_none_or(|t| Instant::now() < t) {
        while let Ok(e) = host.events().try_recv() {
            match e {
                AgentEvent::Disconnected(r) => bail!("target side ended: {r}"),
                AgentEvent::Stats(s) => report.handle_host_stats(s),
                _ => {}
            }
        }
        let Ok(event) = viewer.events().recv_timeout(Duration::from_millis(20)) else {
            if end.is_none() && entered.elapsed() > Duration::from_secs(20) {
                bail!("the session did not start within 20 s");
            }
            continue;
        };
        report.handle_viewer(&event);
        match event {
            ViewerEvent::Connected { setup } => {
                let ms = setup.as_millis();
                println!("connected: channels open {ms} ms after the target joined");
                end = Some(Instant::now() + Duration::from_secs_f64(args.seconds));
            }
            ViewerEvent::Disconnected(r) => bail!("technician side ended: {r}"),
            _ => {}
        }
    }
    println!("{report}");
    let cursor = viewer.cursor();
    let saved = viewer.with_frame(|f| write_png(&args.snapshot, f, cursor.as_ref()));
    viewer.shutdown()?;
    host.shutdown()?;
    drop(broker);
    match saved {
        Some(r) => r.map(|()| println!("snapshot: {}", args.snapshot.display()))?,
        None => println!("no frame was decoded; no snapshot written"),
    }
    Ok(())
}
