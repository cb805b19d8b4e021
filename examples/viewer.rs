//! The technician's end: get a connection code, read it to the user, see their screen.
//!
//! ```text
//! cargo run --release -p deskwire-examples --example viewer -- --broker ws://HOST:PORT --headless --snapshot shot.png --duration 5
//! ```
//! Prints `connection code: <CODE>` as soon as the broker gives one.
#![allow(clippy::print_stdout)]

use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use clap::Parser;
use deskwire_engine::{Controller, ControllerConfig, ControllerEvent, DisconnectReason};
use deskwire_examples::{init_tracing, transport_for, write_png};

#[derive(Debug, Parser)]
#[command(
    name = "viewer",
    about = "Open a support session and see the user's screen"
)]
struct Args {
    /// Broker URL.
    #[arg(long)]
    broker: String,
    /// No window: stream for --duration seconds after connecting, then write --snapshot.
    #[arg(long)]
    headless: bool,
    /// Where to write the last decoded picture (PNG).
    #[arg(long)]
    snapshot: Option<PathBuf>,
    /// Seconds to stay connected (headless mode).
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// IP to gather WebRTC candidates on (default: 127.0.0.1 for a loopback broker, else all).
    #[arg(long)]
    bind: Option<IpAddr>,
}

fn main() -> Result<()> {
    init_tracing();
    let args = Args::parse();
    if !args.headless {
        bail!("this build of the viewer has no window yet: run it with --headless --snapshot PATH");
    }
    let config =
        ControllerConfig::new(&args.broker).transport(transport_for(&args.broker, args.bind));
    let controller = Controller::start(config)?;
    let mut until: Option<Instant> = None;
    let mut first_frame: Option<Instant> = None;
    let mut joined: Option<Instant> = None;
    loop {
        if until.is_some_and(|t| Instant::now() >= t) {
            break;
        }
        let Ok(event) = controller.events().recv_timeout(Duration::from_millis(50)) else {
            continue;
        };
        match event {
            ControllerEvent::Code { code, .. } => {
                println!("connection code: {code}");
                let _ = std::io::stdout().flush();
            }
            ControllerEvent::PeerJoined => joined = Some(Instant::now()),
            ControllerEvent::Connected { setup } => {
                println!("connected in {} ms", setup.as_millis());
                until = Some(Instant::now() + Duration::from_secs_f64(args.duration));
            }
            ControllerEvent::StreamStarted {
                width,
                height,
                bands,
            } => {
                println!("stream {width}x{height} in {bands} bands");
            }
            ControllerEvent::Frame(_) if first_frame.is_none() => {
                first_frame = Some(Instant::now());
                if let Some(j) = joined {
                    println!(
                        "first frame {} ms after the code was entered",
                        j.elapsed().as_millis()
                    );
                }
            }
            ControllerEvent::Stats(s) => println!(
                "{:.0} fps, {:.0} kbps, rtt {:?}, latency p50 {:?} p99 {:?}",
                s.fps, s.kbps, s.rtt, s.latency_p50, s.latency_p99
            ),
            ControllerEvent::Disconnected(reason) => {
                println!("session ended: {reason}");
                save(&controller, &args)?;
                controller.shutdown()?;
                let fine = matches!(
                    reason,
                    DisconnectReason::Local | DisconnectReason::PeerBye { .. }
                );
                std::process::exit(if fine { 0 } else { 1 });
            }
            _ => {}
        }
    }
    save(&controller, &args)?;
    controller.shutdown()?;
    Ok(())
}

fn save(controller: &Controller, args: &Args) -> Result<()> {
    let Some(path) = &args.snapshot else {
        return Ok(());
    };
    match controller.with_frame(|f| write_png(path, f)) {
        Some(r) => {
            r?;
            println!("snapshot: {}", path.display());
        }
        None => println!("no frame was decoded; no snapshot written"),
    }
    Ok(())
}
