//! The target end: join a technician's session with a connection code and stream this screen.
//!
//! ```text
//! cargo run --release -p deskwire-examples --example sender -- --broker ws://HOST:PORT --code "123 456 7890"
//! ```
//! A wrong, expired or used code is reported and a new one can be typed ("Try Again");
//! an empty line cancels.
#![allow(clippy::print_stdout)]

use std::io::{BufRead, Write};
use std::net::IpAddr;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;
use deskwire_capture::{open, OpenOptions, SourceSpec};
use deskwire_engine::session::ConnectionCode;
use deskwire_engine::{DisconnectReason, Host, HostConfig, HostEvent};
use deskwire_examples::{init_tracing, transport_for};

#[derive(Debug, Parser)]
#[command(
    name = "sender",
    about = "Share this screen with a technician who gave you a code"
)]
struct Args {
    /// Broker URL.
    #[arg(long)]
    broker: String,
    /// The connection code the technician read to you (ten digits).
    #[arg(long)]
    code: String,
    /// Screen source: auto, x11, xcap or synthetic:<static|typing|scroll|video|drag>.
    #[arg(long, default_value = "auto")]
    source: String,
    /// Show the screen only; inject no keyboard or mouse input.
    #[arg(long)]
    view_only: bool,
    /// X display to capture and inject into (default: $DISPLAY).
    #[arg(long)]
    display: Option<String>,
    /// Size of a synthetic desktop.
    #[arg(long, default_value_t = 1920)]
    width: u32,
    /// Size of a synthetic desktop.
    #[arg(long, default_value_t = 1080)]
    height: u32,
    /// IP to gather WebRTC candidates on (default: 127.0.0.1 for a loopback broker, else all).
    #[arg(long)]
    bind: Option<IpAddr>,
}

fn main() -> Result<()> {
    init_tracing();
    let args = Args::parse();
    let code: ConnectionCode = args.code.parse().context("--code")?;
    let spec: SourceSpec = args.source.parse()?;
    let display = args
        .display
        .clone()
        .or_else(|| std::env::var("DISPLAY").ok());
    if display.is_none() && !args.view_only {
        bail!("no X display to inject input into: set $DISPLAY or --display, or pass --view-only");
    }
    let opts = OpenOptions {
        display: display.clone(),
        width: args.width,
        height: args.height,
        ..OpenOptions::default()
    };
    let source = open(&spec, &opts).with_context(|| format!("opening source {spec}"))?;
    let config = HostConfig::new(&args.broker)
        .view_only(args.view_only)
        .input_display(display)
        .transport(transport_for(&args.broker, args.bind));
    let host = Host::start(config, source, code)?;

    // Typed codes arrive on their own thread so events keep flowing while we wait.
    let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            for line in std::io::stdin().lock().lines().map_while(Result::ok) {
                if lines_tx.send(line).is_err() {
                    break;
                }
            }
        })?;
    let mut asking = false;
    loop {
        if asking {
            if let Ok(line) = lines.try_recv() {
                let line = line.trim().to_owned();
                if line.is_empty() {
                    println!("cancelled");
                    host.shutdown()?;
                    return Ok(());
                }
                match line.parse::<ConnectionCode>() {
                    Ok(code) => {
                        asking = false;
                        host.try_code(code)?;
                    }
                    Err(e) => prompt(&format!("{e}; try again")),
                }
            }
        }
        let Ok(event) = host.events().recv_timeout(Duration::from_millis(50)) else {
            continue;
        };
        match event {
            HostEvent::CodeRefused { message, .. } => {
                asking = true;
                prompt(&message);
            }
            HostEvent::Joined => println!("code accepted, connecting"),
            HostEvent::Connected { control, setup } => println!(
                "connected in {} ms; the technician {}",
                setup.as_millis(),
                if control {
                    "can see and control this screen"
                } else {
                    "can see this screen"
                }
            ),
            HostEvent::Stats(s) => println!(
                "sending {:.0} fps, {:.0} kbps; viewer latency p50 {:?}",
                s.fps, s.kbps, s.viewer_latency_p50
            ),
            HostEvent::Disconnected(reason) => {
                println!("session ended: {reason}");
                host.shutdown()?;
                let fine = matches!(
                    reason,
                    DisconnectReason::Local | DisconnectReason::PeerBye { .. }
                );
                std::process::exit(if fine { 0 } else { 1 });
            }
            _ => {}
        }
    }
}

fn prompt(why: &str) {
    print!("{why}\nenter the code again (empty line to cancel): ");
    let _ = std::io::stdout().flush();
}
