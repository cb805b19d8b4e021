//! The target end: share this screen with a technician, through a broker with the code they
//! read to you, or directly on the LAN with this computer's rotating password.
//!
//! ```text
//! cargo run --release -p deskwire-agent -- --broker ws://HOST:PORT --code "123 456 7890"
//! cargo run --release -p deskwire-agent -- --lan
//! cargo run --release -p deskwire-agent -- ctl password
//! cargo run --release -p deskwire-agent -- adhoc --broker ws://HOST:PORT --invite 'deskwire://adhoc/...'
//! ```
//! A wrong, expired or used code is reported and a new one can be typed ("Try Again");
//! an empty line cancels. Before the technician gets in, you are asked on the terminal
//! (`--acceptance request`, the default) or told and given time to refuse (`auto`). Type
//! `t` and Enter to end a running session. A local control socket takes the same actions
//! from scripts: `deskwire-agent ctl password | sessions | terminate | code CODE`.
// A program: its report goes to stdout, its one-line error to stderr.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod ui;

use ui::{Outcome, Terminal, Ui};

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use deskwire::accounts::AdminAccounts;
use deskwire::grants::{report_to_broker, LocalGrants};
use deskwire::lan::{device_id, LanAgent, LanAgentConfig, PasswordReportTo, DEFAULT_PORT};
use deskwire::standby::{Standby, StandbyConfig, StandbyEvent};
use deskwire::{AcceptanceMode, Agent, AgentConfig, DisconnectReason, TransportConfig};
use deskwire::{ConnectionCode, UnixMillis};
use deskwire_agent::control;
use deskwire_agent::panel::Panel;
use deskwire_capture::{open, OpenOptions, SourceSpec};
use deskwire_signal::grant::GrantPolicy;
use deskwire_signal::words;

#[derive(Debug, Parser)]
#[command(
    name = "deskwire-agent",
    about = "Share this screen with a technician: through a broker with their code, or on the LAN with this computer's password",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    /// Say more: -v for the engine's progress, -vv for its detail and WebRTC's warnings
    /// (RUST_LOG, when set, decides instead).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    args: Args,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Add (or change) one of this computer's administrator accounts: technicians present
    /// one when the agent runs with --admin-accounts. The password is read from stdin.
    AddAdmin {
        /// The accounts file.
        #[arg(long)]
        admin_accounts: PathBuf,
        /// The account name.
        name: String,
    },
    /// List this computer's unattended-access grants, or revoke one (`--revoke ID`).
    Grants {
        /// The grants file.
        #[arg(long)]
        grants: PathBuf,
        /// Revoke this grant now.
        #[arg(long)]
        revoke: Option<u32>,
        /// Tell this broker about the revocation (default: the broker the grant was
        /// reported to, if any).
        #[arg(long)]
        broker: Option<String>,
        /// This computer's device key, which signs the report (default: the one in
        /// $XDG_CONFIG_HOME/deskwire, else ~/.config/deskwire).
        #[arg(long)]
        device_key: Option<PathBuf>,
    },
    /// Run the temporary host of an ad-hoc support session the technician invited you to
    /// (`--invite LINK`, then the security code); it removes itself when the session ends.
    Adhoc(deskwire_agent::adhoc::TemporaryHostArgs),
    /// Ask the running agent: `password`, `sessions`, `terminate` or `code CODE`.
    Ctl {
        /// Its control socket.
        #[arg(long)]
        control_socket: Option<PathBuf>,
        /// The request.
        #[arg(required = true, num_args = 1..)]
        request: Vec<String>,
    },
}

#[derive(Debug, clap::Args)]
struct Args {
    /// Broker URL (with --code; with --lan, the broker that manages this computer, which
    /// is told the LAN password, signed with --device-key).
    #[arg(long, required_unless_present = "lan")]
    broker: Option<String>,
    /// Another broker to try when the first cannot be reached (repeatable, in order).
    #[arg(long = "fallback-broker")]
    fallback_brokers: Vec<String>,
    /// This computer's device key (made on first use): joins then prove which device this
    /// is. Reports of grants and LAN passwords, and --standby, sign with it; without it they
    /// use device.key in $XDG_CONFIG_HOME/deskwire, else in ~/.config/deskwire.
    #[arg(long)]
    device_key: Option<PathBuf>,
    /// The connection code the technician read to you (ten digits).
    #[arg(long, requires = "broker", conflicts_with = "lan")]
    code: Option<String>,
    /// Listen for technicians on the LAN instead; prints this computer's password.
    #[arg(long)]
    lan: bool,
    /// Where to listen in LAN mode.
    #[arg(long, default_value_t = SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT)))]
    listen: SocketAddr,
    /// The name technicians see on the LAN (default: the host name).
    #[arg(long)]
    name: Option<String>,
    /// Do not announce this computer on the LAN (mDNS).
    #[arg(long)]
    no_announce: bool,
    /// Let technicians in only with the name and password of an administrator account in
    /// this file (see `deskwire-agent add-admin`).
    #[arg(long)]
    admin_accounts: Option<PathBuf>,
    /// Keep unattended-access grants the user approves in this file (without it, requests
    /// are refused).
    #[arg(long)]
    grants: Option<PathBuf>,
    /// Accounts a customer's own credentials are checked against (customer-credential
    /// grants; see `deskwire-agent add-admin`).
    #[arg(long, requires = "grants")]
    customer_accounts: Option<PathBuf>,
    /// Stand by at --broker for unattended calls under the grants in --grants (the device
    /// key signs; approved grants are reported to the broker).
    #[arg(long, requires_all = ["broker", "grants"], conflicts_with_all = ["lan", "code"])]
    standby: bool,
    /// Serve one LAN session, then exit.
    #[arg(long)]
    once: bool,
    /// The local control socket (default: $XDG_RUNTIME_DIR/deskwire-agent.sock, else
    /// /tmp/deskwire-UID/deskwire-agent.sock in a folder only this user may enter).
    #[arg(long)]
    control_socket: Option<PathBuf>,
    /// Screen source: auto, x11, xcap or synthetic:<static|typing|scroll|video|drag>.
    #[arg(long, default_value = "auto")]
    source: String,
    /// Show the screen only; inject no keyboard or mouse input.
    #[arg(long)]
    view_only: bool,
    /// Ask and tell on a small panel on the display as well as on the terminal: the code
    /// with Try Again / Cancel, Accept / View only / Reject with its countdown, unattended
    /// requests (with the user's own account where the grant asks for it), who is
    /// connected with View only / Terminate. On by default whenever the X display can be
    /// opened; with --panel, failing to open it is an error.
    #[arg(long, conflicts_with = "no_panel")]
    panel: bool,
    /// Keep to the terminal and the control socket: no panel on the display.
    #[arg(long)]
    no_panel: bool,
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

/// `given`, else `device.key` in `$XDG_CONFIG_HOME/deskwire` or `~/.config/deskwire` (the
/// folder made private to this user): the key this computer signs its reports with and the
/// broker knows it by.
fn device_key_path(given: Option<&PathBuf>) -> Result<PathBuf> {
    if let Some(path) = given {
        return Ok(path.clone());
    }
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .context("no folder for this computer's device key: set $HOME or pass --device-key")?;
    let dir = config.join("deskwire");
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    Ok(dir.join("device.key"))
}

/// Exit codes: 0 the session (or the command) ended well or was cancelled by the user, 1
/// it failed, was refused, or nobody was there to answer, 2 the command line was wrong.
fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let cli = Cli::parse();
    deskwire::init_tracing_verbosity(cli.verbose);
    if let Some(Command::Ctl {
        control_socket,
        request,
    }) = cli.command
    {
        let path = match control_socket {
            Some(p) => p,
            None => control::default_path()?,
        };
        println!("{}", control::call(&path, &request.join(" "))?);
        return Ok(());
    }
    if let Some(Command::Adhoc(args)) = &cli.command {
        return deskwire_agent::adhoc::run_temporary_host(args);
    }
    if let Some(Command::AddAdmin {
        admin_accounts,
        name,
    }) = &cli.command
    {
        let mut password = String::new();
        std::io::stdin()
            .read_line(&mut password)
            .context("reading the password from stdin")?;
        let accounts = AdminAccounts::at(admin_accounts);
        accounts.set(name, password.trim_end_matches(['\r', '\n']))?;
        println!("administrator {name} saved in {}", admin_accounts.display());
        return Ok(());
    }
    if let Some(Command::Grants {
        grants,
        revoke,
        broker,
        device_key,
    }) = &cli.command
    {
        let store = LocalGrants::at(grants);
        let now = UnixMillis::now();
        if let Some(id) = revoke {
            if !store.revoke(*id, now)? {
                bail!("there is no grant {id} in {}", grants.display());
            }
            println!("grant {id} revoked on this computer");
            // The broker it was reported to (or the one named) is told, so that its copy
            // stops letting calls through as well.
            if let Some(entry) = store.get(*id)? {
                if let Some(broker) = broker.clone().or_else(|| entry.broker.clone()) {
                    let key = device_key_path(device_key.as_ref())?;
                    report_to_broker(&broker, &key, &entry, Duration::from_secs(10)).with_context(
                        || format!("telling {broker} (the grant is revoked here all the same)"),
                    )?;
                    println!("{broker} was told");
                }
            }
        }
        for e in store.list()? {
            let state = match e.grant.check(now) {
                Ok(()) => "open now".to_owned(),
                Err(why) => why.to_string(),
            };
            println!(
                "{}: {} for {} ({}); {state}",
                e.id,
                e.grant.request().credential_mode,
                e.technician.as_deref().unwrap_or("a technician"),
                e.grant
                    .expires_at()
                    .map_or("no end".to_owned(), |t| format!(
                        "ends {}",
                        words::when(now, t)
                    )),
            );
        }
        return Ok(());
    }
    let args = cli.args;
    let display = deskwire_agent::target_display(args.display.clone(), args.view_only)?;
    let window = Duration::from_secs(args.answer_within);
    let acceptance = match args.acceptance.as_str() {
        "request" => AcceptanceMode::AllowByRequest { timeout: window },
        "auto" => AcceptanceMode::AllowAutomatically {
            reject_window: window,
        },
        "deny" => AcceptanceMode::Deny,
        other => bail!("--acceptance {other:?}: expected request, auto or deny"),
    };
    let spec: SourceSpec = args.source.parse()?;
    let opts = OpenOptions {
        display: display.clone(),
        width: args.width,
        height: args.height,
        ..OpenOptions::default()
    };
    let open_source = || open(&spec, &opts).with_context(|| format!("opening source {spec}"));
    let broker = args.broker.clone().unwrap_or_default();
    let transport_url = match &args.broker {
        Some(b) => b.clone(),
        None => format!("ws://{}", args.listen),
    };
    let mut config = AgentConfig::new(&broker)
        .fallback_brokers(args.fallback_brokers.clone())
        .acceptance(acceptance)
        .view_only(args.view_only)
        .input_display(display.clone())
        .transport(TransportConfig::for_broker(&transport_url, args.bind));
    if let Some(path) = &args.device_key {
        config = config.device_key(path);
    }
    // With a broker, approved grants are reported under this computer's device key and
    // their tickets name the device, so the technician can call it unattended later.
    let grants_to = match (&args.broker, &args.grants) {
        (Some(broker), Some(grants)) => {
            let key = device_key_path(args.device_key.as_ref())?;
            config = config.grant_device(device_id(&key)?);
            Some((broker.clone(), key, LocalGrants::at(grants)))
        }
        _ => None,
    };
    if let Some(path) = &args.grants {
        config = config.unattended(
            LocalGrants::at(path),
            GrantPolicy::default(),
            args.customer_accounts.as_ref().map(AdminAccounts::at),
        );
    }
    if let Some(path) = &args.admin_accounts {
        let accounts = AdminAccounts::at(path);
        if accounts.names()?.is_empty() {
            bail!(
                "{} has no administrator accounts: add one with `deskwire-agent add-admin --admin-accounts {} NAME`",
                path.display(),
                path.display()
            );
        }
        config = config.require_admin(accounts);
    }

    // A mistyped code is told before anything starts.
    let first_code: Option<ConnectionCode> = args
        .code
        .as_deref()
        .map(str::parse)
        .transpose()
        .context("--code")?;
    let (control_tx, requests) = mpsc::channel();
    let socket = match args.control_socket.clone() {
        Some(p) => p,
        None => control::default_path()?,
    };
    let socket = control::serve(&socket, control_tx)?;
    println!("control socket: {}", socket.display());
    let mut ui = Ui {
        terminal: Terminal::stdin()?,
        requests,
        answer_within: window,
        panel: match (args.panel, args.no_panel) {
            (true, _) => Some(Panel::open(display.as_deref())?),
            (false, false) => Panel::open_if_possible(display.as_deref()),
            (false, true) => None,
        },
        connected: false,
        grants_to,
    };
    let outcome = if args.standby {
        let Some(broker) = &args.broker else {
            bail!("--standby needs --broker");
        };
        let key = device_key_path(args.device_key.as_ref())?;
        let key = &key;
        println!(
            "this computer is {}; standing by for unattended calls",
            device_id(key)?
        );
        let standby = Standby::start(StandbyConfig::new(broker, key))?;
        let outcome = loop {
            let event = match standby.events().recv_timeout(Duration::from_millis(50)) {
                Ok(event) => event,
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                    match ui.idle("standing by for unattended calls") {
                        Some(outcome) => break outcome,
                        None => continue,
                    }
                }
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                    bail!("the standby stopped")
                }
            };
            match event {
                StandbyEvent::Call {
                    session,
                    grant,
                    technician,
                } => {
                    println!("{technician} connects under grant {grant}");
                    let session = Agent::start_unattended_call(
                        config.clone(),
                        open_source()?,
                        session,
                        grant,
                    )?;
                    let outcome = ui.serve(session, None)?;
                    if matches!(outcome, Outcome::Cancelled | Outcome::NobodyThere) {
                        break outcome;
                    }
                }
                StandbyEvent::Online => println!("standing by"),
                StandbyEvent::Offline { error } => println!("offline ({error}); retrying"),
            }
        };
        let _ = standby.shutdown();
        outcome
    } else if args.lan {
        let mut lan = LanAgentConfig {
            listen: args.listen,
            announce: !args.no_announce,
            once: args.once,
            ..LanAgentConfig::default()
        };
        if let Some(name) = &args.name {
            lan.name = name.clone();
        }
        if let Some(broker) = &args.broker {
            let key = device_key_path(args.device_key.as_ref())?;
            let mut brokers = vec![broker.clone()];
            brokers.extend(args.fallback_brokers.iter().cloned());
            lan.report_to = Some(PasswordReportTo {
                brokers,
                device_key: key,
            });
        }
        let mut agent = LanAgent::start(lan)?;
        if let Some(id) = agent.device_id() {
            println!("this computer is {id} to the broker");
        }
        ui.show_lan(&mut agent);
        loop {
            let session = agent.start_agent(config.clone(), open_source()?)?;
            println!(
                "listening on {} as {:?}",
                session.lan_addr().unwrap_or(args.listen),
                agent.name()
            );
            let outcome = ui.serve(session, Some(&mut agent))?;
            if !agent.serves_another()
                || ui.terminal_ended()
                || matches!(outcome, Outcome::Cancelled | Outcome::NobodyThere)
            {
                break outcome;
            }
        }
    } else {
        let Some(mut code) = first_code else {
            bail!("--broker needs --code (the connection code the technician read to you)");
        };
        loop {
            let session = Agent::start(config.clone(), open_source()?, code)?;
            let outcome = ui.serve(session, None)?;
            // No broker answered (or it went away before the session started): the user
            // may try again with a code, or cancel.
            let Outcome::Ended(DisconnectReason::Broker(_)) = &outcome else {
                break outcome;
            };
            if ui.connected {
                break outcome;
            }
            match ui.ask_code()? {
                Some(next) => code = next,
                None if ui.nobody_at_terminal() => break Outcome::NobodyThere,
                None => break Outcome::Cancelled,
            }
        }
    };
    let _ = std::fs::remove_file(&socket);
    let fine = match outcome {
        Outcome::Ended(r) => matches!(
            r,
            DisconnectReason::Local | DisconnectReason::PeerBye { .. }
        ),
        Outcome::Terminated | Outcome::Cancelled => true,
        Outcome::NobodyThere => false,
    };
    std::process::exit(if fine { 0 } else { 1 });
}
