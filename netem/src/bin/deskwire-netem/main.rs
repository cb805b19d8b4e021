//! `deskwire-netem`: the impaired-link forwarder and its probe. See `--help`.
//!
//! Exit codes: 0 done (also after SIGTERM/SIGINT), 1 failed, 2 bad arguments, 3 missing
//! privileges.

mod forwarder;
mod probe;
mod signals;
mod tun;

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use deskwire_netem::{
    ForwarderStats, LinkConfig, LinkProfile, LinkStats, Outage, ProfileOverrides, PROFILE_NAMES,
};

use crate::forwarder::{ForwardConfig, Subnet};

#[derive(Debug, Parser)]
#[command(
    name = "deskwire-netem",
    version,
    about = "A userspace impaired-link emulator: forwards IPv4 between two network namespaces through a TUN device, with delay, jitter, loss, a rate-limited queue and outages."
)]
struct Cli {
    /// More log output on stderr (-v info, -vv debug, -vvv trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Forward between sides A and B through a TUN device in this (the middle) namespace.
    ///
    /// Packets to --b-net take the A->B link, packets to --a-net the B->A link. Routing must
    /// send the veths' traffic into the TUN and what comes out of it to the veths (the
    /// testbed and scripts/netem-link set that up). Stops on SIGTERM or SIGINT.
    Run(Box<RunArgs>),
    /// Measure a link with timestamped UDP.
    #[command(subcommand)]
    Probe(ProbeCommand),
    /// List the named profiles and what each does per direction.
    Profiles,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// The named profile to start from: lan, cable, dsl, lte, hotel-wifi, satellite, step,
    /// outage-8, outage-25, custom (a perfect link to shape with the options below).
    #[arg(long, default_value = "custom")]
    profile: String,
    /// Side A's subnet (the host's), e.g. 10.79.0.0/24.
    #[arg(long, value_parser = clap::value_parser!(Subnet))]
    a_net: Subnet,
    /// Side B's subnet (the viewer's), e.g. 10.79.1.0/24.
    #[arg(long, value_parser = clap::value_parser!(Subnet))]
    b_net: Subnet,
    /// The TUN device to create in this namespace.
    #[arg(long, default_value = "dwnetem0")]
    tun: String,
    /// Replace the A->B direction entirely: rate=BITS|unlimited,delay_ms=,jitter_ms=,
    /// jitter=uniform|normal,reorder=,loss=,ge=GB/BG/LG/LB,queue_ms=|queue_bytes=,
    /// step=AT_S:BITS,random_rate=MIN:MAX:EVERY_S,outage=START_S:LEN_S,seed=
    #[arg(long, value_name = "SPEC")]
    a_to_b: Option<LinkConfig>,
    /// Replace the B->A direction entirely (same form as --a-to-b).
    #[arg(long, value_name = "SPEC")]
    b_to_a: Option<LinkConfig>,
    /// Both directions' rate in Mbit/s (replaces rate schedules).
    #[arg(long)]
    rate_mbit: Option<f64>,
    /// The B->A (uplink) rate in Mbit/s, if it differs.
    #[arg(long)]
    rate_b_to_a_mbit: Option<f64>,
    /// Round-trip time in ms (each direction gets half).
    #[arg(long)]
    rtt_ms: Option<f64>,
    /// Round-trip jitter, +/- ms (each direction gets half).
    #[arg(long)]
    jitter_ms: Option<f64>,
    /// Whether jitter may reorder packets.
    #[arg(long, value_name = "BOOL")]
    reorder: Option<bool>,
    /// Random loss probability per direction, 0 to 1 (replaces bursty loss).
    #[arg(long)]
    loss: Option<f64>,
    /// An outage START:LENGTH in seconds since start, e.g. 4:8; repeatable.
    #[arg(long, value_name = "START:LEN")]
    outage: Vec<Outage>,
    /// Queue limit in ms at the current rate (at least 30 kB).
    #[arg(long)]
    queue_ms: Option<f64>,
    /// Queue limit in kB.
    #[arg(long)]
    queue_kb: Option<f64>,
    /// Seed for loss, jitter and rate draws.
    #[arg(long)]
    seed: Option<u64>,
    /// At exit, print the counters as one JSON line instead of a table.
    #[arg(long, visible_alias = "stats")]
    stats_json: bool,
    /// Keep the counters as one JSON line in this file (written at start, then periodically).
    #[arg(long)]
    stats_file: Option<PathBuf>,
    /// How often to rewrite --stats-file.
    #[arg(long, default_value_t = 1000)]
    stats_every_ms: u64,
}

#[derive(Debug, Subcommand)]
enum ProbeCommand {
    /// Echo UDP datagrams back to their sender.
    Echo {
        #[arg(long)]
        listen: SocketAddr,
        /// Stop after this many seconds (default: on SIGTERM/SIGINT).
        #[arg(long)]
        secs: Option<f64>,
    },
    /// Send timestamped UDP at a rate to an echo server; print a JSON report.
    Send {
        #[arg(long)]
        to: SocketAddr,
        #[arg(long, default_value_t = 1000.0)]
        rate_kbit: f64,
        #[arg(long, default_value_t = 5.0)]
        secs: f64,
        /// UDP payload bytes per packet.
        #[arg(long, default_value_t = 1000)]
        size: usize,
        /// How long to keep listening for echoes after the last send.
        #[arg(long, default_value_t = 1000)]
        linger_ms: u64,
        /// How long to wait for the echo server to answer before starting.
        #[arg(long, default_value_t = 3000)]
        wait_ms: u64,
    },
}

fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// A failure to report on stderr with its exit code.
#[derive(Debug)]
struct Failure {
    code: u8,
    message: String,
}

fn fail(code: u8, e: impl std::fmt::Display) -> Failure {
    Failure {
        code,
        message: e.to_string(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    match dispatch(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            let _ = writeln!(std::io::stderr(), "deskwire-netem: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

fn dispatch(command: Command) -> Result<(), Failure> {
    match command {
        Command::Run(args) => run(*args),
        Command::Probe(p) => {
            signals::install().map_err(|e| fail(1, format!("installing signal handlers: {e}")))?;
            match p {
                ProbeCommand::Echo { listen, secs } => {
                    probe::echo(listen, secs).map_err(|e| fail(e.exit_code(), e))
                }
                ProbeCommand::Send {
                    to,
                    rate_kbit,
                    secs,
                    size,
                    linger_ms,
                    wait_ms,
                } => {
                    let report = probe::send(probe::SendPlan {
                        to,
                        rate_kbit,
                        secs,
                        size,
                        linger: Duration::from_millis(linger_ms),
                        wait: Duration::from_millis(wait_ms),
                    })
                    .map_err(|e| fail(e.exit_code(), e))?;
                    print_line(&report.to_json())
                }
            }
        }
        Command::Profiles => {
            for name in PROFILE_NAMES {
                let p = LinkProfile::named(name).map_err(|e| fail(1, e))?;
                print_line(&format!("{name}\n  A->B {}\n  B->A {}", p.a_to_b, p.b_to_a))?;
            }
            Ok(())
        }
    }
}

fn print_line(text: &str) -> Result<(), Failure> {
    writeln!(std::io::stdout(), "{text}").map_err(|e| fail(1, format!("writing to stdout: {e}")))
}

fn profile(args: &RunArgs) -> Result<LinkProfile, Failure> {
    let mut p = LinkProfile::named(&args.profile).map_err(|e| fail(2, e))?;
    if let Some(c) = &args.a_to_b {
        p.a_to_b = c.clone();
    }
    if let Some(c) = &args.b_to_a {
        p.b_to_a = c.clone();
    }
    let overrides = ProfileOverrides {
        rate_mbit: args.rate_mbit,
        rate_b_to_a_mbit: args.rate_b_to_a_mbit,
        rtt_ms: args.rtt_ms,
        jitter_ms: args.jitter_ms,
        reorder: args.reorder,
        loss: args.loss,
        outages: args.outage.clone(),
        queue_ms: args.queue_ms,
        queue_kb: args.queue_kb,
        seed: args.seed,
    };
    p.apply(&overrides).map_err(|e| fail(2, e))?;
    Ok(p)
}

fn run(args: RunArgs) -> Result<(), Failure> {
    let profile = profile(&args)?;
    if args.stats_every_ms == 0 {
        return Err(fail(2, "--stats-every-ms must be at least 1"));
    }
    signals::install().map_err(|e| fail(1, format!("installing signal handlers: {e}")))?;
    let stats = forwarder::run(ForwardConfig {
        tun: args.tun,
        a_net: args.a_net,
        b_net: args.b_net,
        profile,
        stats_file: args.stats_file,
        stats_every: Duration::from_millis(args.stats_every_ms),
    })
    .map_err(|e| fail(e.exit_code(), e))?;
    if args.stats_json {
        print_line(&stats.to_json())
    } else {
        print_line(&table(&stats))
    }
}

fn table(s: &ForwarderStats) -> String {
    let row = |name: &str, l: &LinkStats| {
        format!(
            "{name}: {} in, {} delivered, dropped {} by loss, {} by queue, {} by outage",
            l.packets_in, l.delivered, l.dropped_loss, l.dropped_queue, l.dropped_outage
        )
    };
    format!(
        "{}\n{}\nafter {:.1} s; {} ignored, {} refused by the kernel",
        row("A->B", &s.a_to_b),
        row("B->A", &s.b_to_a),
        s.elapsed_s,
        s.ignored,
        s.write_errors
    )
}
