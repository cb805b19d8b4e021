//! The target end: join a technician's session with a connection code and stream this screen.
//!
//! ```text
//! cargo run --release -p deskwire-examples --example sender -- --broker ws://HOST:PORT --code "123 456 7890"
//! ```
//! A wrong, expired or used code is reported and a new one can be typed ("Try Again");
//! an empty line cancels. Before the technician gets in, you are asked on the terminal
//! (`--acceptance request`, the default) or told and given time to refuse (`auto`).
#![allow(clippy::print_stdout)]

use std::io::{BufRead, Write};
use std::net::IpAddr;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;
use deskwire_capture::{open, OpenOptions, SourceSpec};
use deskwire_engine::session::ConnectionCode;
use deskwire_engine::{
    AcceptanceMode, ConsentAnswer, DisconnectReason, Host, HostConfig, HostEvent,
};
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
    /// Another broker to try when the first cannot be reached (repeatable, in order).
    #[arg(long = "fallback-broker")]
    fallback_brokers: Vec<String>,
    /// This computer's device key (made on first use): joins then prove which device this is.
    #[arg(long)]
    device_key: Option<std::path::PathBuf>,
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
    /// How to admit the technician: request (ask here and wait), auto (start unless you
    /// refuse in time) or deny.
    #[arg(long, default_value = "request")]
    acceptance: String,
    /// Seconds to answer (request) or to refuse (auto).
    #[arg(long, default_value_t = 30)]
    answer_within: u64,
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
    let window = Duration::from_secs(args.answer_within);
    let acceptance = match args.acceptance.as_str() {
        "request" => AcceptanceMode::AllowByRequest { timeout: window },
        "auto" => AcceptanceMode::AllowAutomatically {
            reject_window: window,
        },
        "deny" => AcceptanceMode::Deny,
        other => bail!("--acceptance {other:?}: expected request, auto or deny"),
    };
    let source = open(&spec, &opts).with_context(|| format!("opening source {spec}"))?;
    let mut config = HostConfig::new(&args.broker)
        .fallback_brokers(args.fallback_brokers.clone())
        .acceptance(acceptance)
        .view_only(args.view_only)
        .input_display(display)
        .transport(transport_for(&args.broker, args.bind));
    if let Some(path) = &args.device_key {
        config = config.device_key(path);
    }
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
    let mut consenting = false;
    loop {
        if consenting {
            if let Ok(line) = lines.try_recv() {
                consenting = false;
                let answer = match line.trim() {
                    "y" | "yes" => ConsentAnswer::Allow { control: true },
                    "v" | "view" => ConsentAnswer::Allow { control: false },
                    _ => ConsentAnswer::Reject,
                };
                host.answer_consent(answer)?;
            }
        } else if asking {
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
            HostEvent::ConsentRequested {
                mode,
                control,
                timeout,
                technician,
            } => {
                consenting = true;
                let what = if control { "see and control" } else { "see" };
                let who =
                    technician.map_or("The technician".to_owned(), |t| format!("Technician {t}"));
                let then = match mode {
                    AcceptanceMode::AllowAutomatically { .. } => "it starts on its own",
                    _ => "it is refused",
                };
                print!(
                    "{who} asks to {what} this screen. Allow? [y = yes, v = view only, n = no] \
                     (in {} s {then}): ",
                    timeout.as_secs()
                );
                let _ = std::io::stdout().flush();
            }
            HostEvent::Connected { control, setup } => {
                consenting = false;
                println!(
                    "connected in {} ms; the technician {}",
                    setup.as_millis(),
                    if control {
                        "can see and control this screen"
                    } else {
                        "can see this screen"
                    }
                );
            }
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
