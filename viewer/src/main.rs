//! The technician's end: get a connection code, read it to the user, see their screen in a
//! window and drive it with the keyboard and mouse.
//!
//! ```text
//! cargo run --release -p deskwire-viewer -- --broker ws://HOST:PORT
//! cargo run --release -p deskwire-viewer -- --broker ws://HOST:PORT --headless --snapshot shot.png --duration 5
//! ```
//! Prints `connection code: <CODE>` as soon as the broker gives one. Closing the window ends
//! the session. On the LAN, no broker: `--browse` lists the computers that announce
//! themselves as they answer, and `--lan` connects to one (by address, or by the first whose
//! name or address contains the text) with its password:
//!
//! ```text
//! cargo run --release -p deskwire-viewer -- --browse
//! cargo run --release -p deskwire-viewer -- --lan reception --password 7KQM-2X9P-4TRW
//! ```
//! Ad-hoc support: `--adhoc-create [--mail-to ADDR]` prints an invitation for the user's
//! temporary host (`deskwire-agent adhoc`), `--adhoc ID --invite LINK` connects to it (as often as
//! needed for 24 h after activation) and `--adhoc-end ID` ends it now.
// A program: its report goes to stdout, its one-line error to stderr.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod window_loop;

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use deskwire::grants::GrantTicket;
use deskwire::lan::{
    check_lan_permission, fetch_lan_password, Browser, LanPassword, LanPeer, LanPermission,
    LanPermissionError, DEFAULT_POLICY_PATH, DEFAULT_PORT,
};
use deskwire::{DisconnectReason, TransportConfig, UnixMillis, Viewer, ViewerConfig, ViewerEvent};
use deskwire_signal::grant::{
    CredentialMode, GrantRequest, GrantZone, Schedule, Validity, ZoneName, ZoneOf,
};
use deskwire_signal::words;
use deskwire_viewer::write_png;

#[derive(Debug, Parser)]
#[command(
    name = "deskwire-viewer",
    about = "Open a support session: see the user's screen in a window and drive it"
)]
struct Args {
    /// Say more: -v for the engine's progress, -vv for its detail and WebRTC's warnings
    /// (RUST_LOG, when set, decides instead).
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Broker URL.
    #[arg(long, required_unless_present_any = ["lan", "browse", "unattended"])]
    broker: Option<String>,
    /// Connect directly to a LAN computer: `ADDR[:PORT]`, or text to find in the name or
    /// address of a computer on the LAN (the first that matches).
    #[arg(long, conflicts_with = "browse")]
    lan: Option<String>,
    /// With --lan and --broker: read the computer's password from the broker, which this
    /// device (`dev-...`) reports it to.
    #[arg(long, conflicts_with = "password", requires_all = ["lan", "broker"])]
    device: Option<String>,
    /// An administrator account of the target, for a target that asks for one; the password
    /// comes from DESKWIRE_ADMIN_PASSWORD or, without it, one line on stdin.
    #[arg(long)]
    admin_user: Option<String>,
    /// Once connected (with control), ask the user for unattended access for this many
    /// days; you will present the target's admin credentials at each connection.
    #[arg(long)]
    request_unattended: Option<u32>,
    /// How an unattended grant is vouched for: `each-time` (you present the target's
    /// admin credentials at every connection) or `customer` (the user approves with their
    /// own account now, and nothing is asked later; two weeks at most).
    #[arg(long, default_value = "each-time", value_parser = ["each-time", "customer"], requires = "request_unattended")]
    grant_credentials: String,
    /// Where to keep the grant (with its secret) when the user approves.
    #[arg(long, requires = "request_unattended")]
    save_grant: Option<PathBuf>,
    /// With --lan or --unattended: connect under this saved grant, with nobody at the
    /// target (the target's admin credentials may be asked: --admin-user).
    #[arg(long, conflicts_with = "password")]
    grant: Option<PathBuf>,
    /// Connect unattended under --grant, with nobody at the computer: to this device
    /// (`dev-...`), or without a value to the one the ticket names, through --broker or the
    /// ticket's broker; its agent stands by (`deskwire-agent --standby`).
    #[arg(
        long,
        num_args = 0..=1,
        default_missing_value = "",
        requires_all = ["token", "grant"],
        conflicts_with = "lan"
    )]
    unattended: Option<String>,
    /// The time zone the unattended days count in (IANA name, e.g. Europe/Berlin).
    #[arg(long, default_value = "UTC")]
    zone: String,
    /// The LAN computer's password (as its user or admin reads it to you).
    #[arg(long, env = "DESKWIRE_LAN_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// List computers on the LAN as they answer (only those whose name or address contains
    /// the text, if given), then exit.
    #[arg(long, num_args = 0..=1, default_missing_value = "")]
    browse: Option<String>,
    /// The local policy file consulted when no --broker manages you.
    #[arg(long, default_value = DEFAULT_POLICY_PATH)]
    policy: PathBuf,
    /// How long to look for computers on the LAN.
    #[arg(long, default_value_t = 5.0)]
    browse_seconds: f64,
    /// No window: stream for --duration seconds after connecting, then write --snapshot.
    #[arg(long)]
    headless: bool,
    /// Where to write the last decoded picture (PNG) when the session ends.
    #[arg(long)]
    snapshot: Option<PathBuf>,
    /// Seconds to stay connected (headless mode).
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// IP to gather WebRTC candidates on (default: 127.0.0.1 for a loopback broker, else all).
    #[arg(long)]
    bind: Option<IpAddr>,
    /// Create an ad-hoc support session and print its invitation (link and security code)
    /// for the user, then exit.
    #[arg(long, requires_all = ["broker", "token"])]
    adhoc_create: bool,
    /// With --adhoc-create: have the broker e-mail the invitation to this address.
    #[arg(long, requires = "adhoc_create")]
    mail_to: Option<String>,
    /// Connect to this active ad-hoc session (its --invite link is needed too).
    #[arg(long, requires_all = ["broker", "token", "invite"])]
    adhoc: Option<u64>,
    /// The ad-hoc session's invitation link, as --adhoc-create printed it.
    #[arg(long, requires = "adhoc")]
    invite: Option<String>,
    /// End this ad-hoc session now ("End session now"); its temporary host removes itself.
    #[arg(long, requires_all = ["broker", "token"])]
    adhoc_end: Option<u64>,
    /// Your API token, for a broker with accounts (`deskwire-broker admin create-token`).
    #[arg(long, env = "DESKWIRE_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

/// Exit codes: 0 the session ran and ended well (or the command did its work), 1 it failed
/// or was refused (said once, on the last line), 2 the command line was wrong.
fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) if e.is::<SessionFailed>() => std::process::ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// A session that ended badly: already told as "session ended: ...", not told again.
#[derive(Debug, thiserror::Error)]
#[error("the session ended badly")]
struct SessionFailed;

fn run() -> Result<()> {
    let args = Args::parse();
    deskwire::init_tracing_verbosity(args.verbose);
    let lan_permission = if args.lan.is_some() || args.browse.is_some() {
        Some(may_connect_on_lan(&args)?)
    } else {
        None
    };
    if let Some(filter) = &args.browse {
        let mut seen = 0usize;
        browse(filter, args.browse_seconds, |peer| {
            seen += 1;
            println!("found {} {}", peer.name, join_addrs(peer));
            let _ = std::io::stdout().flush();
            false
        })?;
        if seen == 0 {
            let which = if filter.is_empty() {
                String::new()
            } else {
                format!(" matching {filter:?}")
            };
            println!(
                "no computer{which} answered in {} (is its agent running with --lan, and on this network?)",
                words::duration(Duration::from_secs_f64(args.browse_seconds))
            );
        }
        return Ok(());
    }
    if let (true, Some(broker), Some(token)) = (args.adhoc_create, &args.broker, &args.token) {
        let invitation = deskwire::adhoc::create(
            broker,
            token,
            args.mail_to.as_deref(),
            deskwire_viewer::adhoc::REQUEST_TIMEOUT,
        )?;
        deskwire_viewer::adhoc::print_invitation(&invitation, broker);
        return Ok(());
    }
    if let (Some(id), Some(broker), Some(token)) = (args.adhoc_end, &args.broker, &args.token) {
        let said = deskwire::adhoc::end(
            broker,
            token,
            deskwire_signal::adhoc::AdhocId(id),
            deskwire_viewer::adhoc::REQUEST_TIMEOUT,
        )?;
        println!("ad-hoc session {id} ended: {said}");
        return Ok(());
    }
    if !args.headless && std::env::var_os("DISPLAY").is_none() {
        bail!("no display to open a window on (DISPLAY is not set): run on a desktop, or use --headless --snapshot PATH");
    }
    let mut session = Session {
        save_grant: args.save_grant.clone(),
        ..Session::default()
    };
    if let Some(days) = args.request_unattended {
        session.grant_request = Some(GrantRequest {
            schedule: Schedule::new(Validity::Days { days }, None)
                .context("--request-unattended")?,
            zone: GrantZone {
                of: ZoneOf::Technician,
                name: ZoneName::new(&args.zone).context("--zone")?,
            },
            credential_mode: if args.grant_credentials == "customer" {
                CredentialMode::CustomerCredentials
            } else {
                CredentialMode::AskEachConnection
            },
        });
    }
    // An unattended call may take its broker from the ticket.
    let ticket_broker = match (&args.unattended, &args.grant, &args.broker) {
        (Some(_), Some(path), None) => read_ticket(path)?.broker,
        _ => None,
    };
    session.broker = args.broker.clone();
    let config = match (&args.lan, args.broker.as_ref().or(ticket_broker.as_ref())) {
        (Some(target), _) => {
            let ticket = match &args.grant {
                Some(path) => {
                    let text = std::fs::read_to_string(path)
                        .with_context(|| format!("reading the grant {}", path.display()))?;
                    Some(GrantTicket::from_json(&text)?)
                }
                None => None,
            };
            let password: LanPassword = match (&args.password, &args.device, &args.broker) {
                _ if ticket.is_some() => LanPassword::from_random(0),
                (Some(p), _, _) => p.parse().context("--password")?,
                (None, Some(device), Some(broker)) => {
                    let token = args.token.as_deref().context(
                        "reading a LAN password from the broker needs your API token (--token)",
                    )?;
                    let (password, _) =
                        fetch_lan_password(broker, token, device, Duration::from_secs(10))?;
                    println!("got {device}'s LAN password from the broker");
                    password
                }
                _ => bail!("--lan needs the computer's --password (or --device with --broker)"),
            };
            let permission = lan_permission
                .clone()
                .expect("checked at the start: --lan was given");
            let addr = lan_target(target, args.browse_seconds)?;
            println!("connecting to {addr}");
            session.code = addr.to_string();
            let url = format!("ws://{addr}");
            match ticket {
                Some(t) => ViewerConfig::lan_grant(addr, t, permission),
                None => ViewerConfig::lan(addr, password, permission),
            }
            .transport(TransportConfig::for_broker(&url, args.bind))
        }
        (None, Some(broker)) if args.unattended.is_some() => {
            let (Some(device), Some(path), Some(token)) =
                (&args.unattended, &args.grant, &args.token)
            else {
                bail!("--unattended needs --grant FILE and --token");
            };
            let ticket = read_ticket(path)?;
            let device = match (device.as_str(), &ticket.device) {
                ("", Some(named)) => named.clone(),
                ("", None) => bail!(
                    "{} names no device (an older ticket): give it, --unattended dev-...",
                    path.display()
                ),
                (given, _) => given.to_owned(),
            };
            session.code = format!("{device} (unattended)");
            ViewerConfig::unattended(broker, token, &device, ticket)
                .transport(TransportConfig::for_broker(broker, args.bind))
        }
        (None, Some(broker)) if args.adhoc.is_some() => {
            let (Some(id), Some(link), Some(token)) = (args.adhoc, &args.invite, &args.token)
            else {
                bail!("--adhoc needs --invite LINK and --token");
            };
            let link = deskwire_signal::adhoc::AdhocLink::parse(link).context("--invite")?;
            session.code = format!("ad-hoc session {id}");
            ViewerConfig::adhoc(broker, token, deskwire_signal::adhoc::AdhocId(id), link)
                .transport(TransportConfig::for_broker(broker, args.bind))
        }
        (None, Some(broker)) => {
            let mut config =
                ViewerConfig::new(broker).transport(TransportConfig::for_broker(broker, args.bind));
            if let Some(token) = &args.token {
                config = config.token(token.clone());
            }
            config
        }
        (None, None) => bail!(
            "give --broker URL, --lan TARGET or --browse (an --unattended call whose ticket names no broker needs --broker)"
        ),
    };
    let config = match &args.admin_user {
        Some(user) => {
            let password = match std::env::var("DESKWIRE_ADMIN_PASSWORD") {
                Ok(p) => p,
                Err(_) => {
                    print!("{user}'s password on the target: ");
                    let _ = std::io::stdout().flush();
                    let mut line = String::new();
                    std::io::stdin()
                        .read_line(&mut line)
                        .context("reading the administrator's password")?;
                    line.trim_end_matches(['\r', '\n']).to_owned()
                }
            };
            config.admin_credentials(user.clone(), password)
        }
        None => config,
    };
    let viewer = Viewer::start(config)?;
    let ended = if args.headless {
        run_headless(&viewer, &mut session, &args)
    } else {
        window_loop::run_window(&viewer, &mut session)
    };
    save(&viewer, &args)?;
    viewer.shutdown()?;
    match ended? {
        None => Ok(()),
        Some(reason) => {
            // The target saying goodbye ends a session well; before any picture it is a
            // refusal (wrong administrator credentials, a grant it does not honour).
            let fine = match reason {
                DisconnectReason::Local => true,
                DisconnectReason::PeerBye { .. } => session.first_frame,
                _ => false,
            };
            if fine {
                Ok(())
            } else {
                Err(SessionFailed.into())
            }
        }
    }
}

/// A saved grant ticket.
fn read_ticket(path: &std::path::Path) -> Result<GrantTicket> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the grant {}", path.display()))?;
    GrantTicket::from_json(&text).with_context(|| format!("reading the grant {}", path.display()))
}

/// Connecting on the LAN needs the permission: from the technician's group when a broker
/// manages them (`--broker` with a token), else from the local policy file.
fn may_connect_on_lan(args: &Args) -> Result<LanPermission> {
    let checked = check_lan_permission(
        args.broker.as_deref(),
        args.token.as_deref(),
        &args.policy,
        Duration::from_secs(10),
    );
    match checked {
        Ok(permission) => {
            if let Some(who) = permission.technician() {
                println!("{who} may connect on the LAN (checked with the broker)");
            }
            Ok(permission)
        }
        Err(LanPermissionError::NoToken) => bail!(
            "--broker manages your permissions: give your API token (--token or DESKWIRE_TOKEN) to connect on the LAN"
        ),
        Err(e) => Err(e.into()),
    }
}

/// Report LAN computers (matching `filter`) to `found` as they answer, for `seconds` or
/// until `found` returns true; returns the one it stopped at.
fn browse(
    filter: &str,
    seconds: f64,
    mut found: impl FnMut(&LanPeer) -> bool,
) -> Result<Option<LanPeer>> {
    let browser = Browser::start()?;
    let until = Instant::now() + Duration::from_secs_f64(seconds);
    while let Some(left) = until.checked_duration_since(Instant::now()) {
        let Ok(peer) = browser.found().recv_timeout(left) else {
            break;
        };
        if peer.matches(filter) && found(&peer) {
            return Ok(Some(peer));
        }
    }
    Ok(None)
}

/// `ADDR[:PORT]` as it is; anything else names a computer to find on the LAN.
fn lan_target(target: &str, seconds: f64) -> Result<SocketAddr> {
    if let Ok(addr) = target.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if let Ok(ip) = target.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, DEFAULT_PORT));
    }
    println!("looking for {target:?} on the LAN");
    let peer = browse(target, seconds, |peer| {
        println!("found {} {}", peer.name, join_addrs(peer));
        true
    })?;
    peer.and_then(|p| p.socket_addr())
        .with_context(|| format!("no computer whose name or address contains {target:?} answered on the LAN in {seconds} s"))
}

/// Write `text` to `path`, readable by this user only.
fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())
}

fn join_addrs(peer: &LanPeer) -> String {
    let addrs: Vec<String> = peer
        .addresses
        .iter()
        .map(|a| SocketAddr::new(*a, peer.port).to_string())
        .collect();
    addrs.join(" ")
}

/// What the viewer knows of the session, from the viewer's events.
#[derive(Debug, Default)]
struct Session {
    joined: Option<Instant>,
    connected: bool,
    first_frame: bool,
    /// Remote screen size, once the stream started.
    size: Option<(u32, u32)>,
    /// Frames decoded so far.
    frames: u64,
    /// Moves of the target's pointer so far.
    cursor_moves: u64,
    /// The target lets us drive it.
    control: bool,
    /// Unattended access to ask for once we may control the screen.
    grant_request: Option<GrantRequest>,
    /// Where to keep a granted ticket.
    save_grant: Option<PathBuf>,
    /// The broker this session went through, written into a saved ticket.
    broker: Option<String>,
    /// The target asked its user (rather than letting us in by its mode alone).
    user_asked: bool,
    code: String,
}

impl Session {
    /// Print what the user should know; `Some` when the session is over.
    fn handle(&mut self, event: ViewerEvent) -> Option<DisconnectReason> {
        match event {
            ViewerEvent::Code { code, .. } => {
                println!("connection code: {code}");
                let _ = std::io::stdout().flush();
                self.code = code.to_string();
            }
            ViewerEvent::PeerJoined => self.joined = Some(Instant::now()),
            ViewerEvent::ConsentDecided { decision } => {
                // "The user let you in" only when the user was asked; a refusal always.
                let let_in = matches!(
                    decision,
                    deskwire_signal::ConsentDecision::Control
                        | deskwire_signal::ConsentDecision::ViewOnly
                );
                if self.user_asked || !let_in {
                    println!("{}", decision.message());
                }
            }
            ViewerEvent::AwaitingConsent {
                timeout,
                starts_on_its_own,
                by_computer,
            } => {
                self.user_asked = true;
                let whose = if by_computer {
                    " (the computer's own setting, stricter than your group's)"
                } else {
                    ""
                };
                if starts_on_its_own {
                    println!(
                        "the user may refuse within {}{whose}; the session starts on its own after that",
                        words::duration(timeout)
                    );
                } else {
                    println!(
                        "waiting for the user to let you in (up to {}){whose}",
                        words::duration(timeout)
                    );
                }
            }
            ViewerEvent::BrokerLost => println!("lost the broker; keeping the code alive"),
            ViewerEvent::BrokerResumed => println!("the broker is back; the code still works"),
            ViewerEvent::Connected { setup } => {
                println!("connected in {}", words::duration(setup));
                self.connected = true;
            }
            ViewerEvent::StreamStarted {
                width,
                height,
                bands,
            } => {
                // Again when the agent restarts the stream in another band layout (fewer
                // bands on a slow link).
                println!("stream {width}x{height} in {bands} bands");
                self.size = Some((width, height));
            }
            ViewerEvent::Permissions { control } => {
                println!(
                    "{}",
                    if control {
                        "you may control the screen"
                    } else {
                        "view only"
                    }
                );
                self.control = control;
            }
            ViewerEvent::GrantAnswered { result, .. } => match result {
                Ok(mut ticket) => {
                    println!(
                        "unattended access granted (grant {}) until {}",
                        ticket.id,
                        ticket.grant.expires_at().map_or("it is revoked".to_owned(), |t| {
                            words::when(UnixMillis::now(), t)
                        })
                    );
                    if ticket.broker.is_none() {
                        ticket.broker = self.broker.clone();
                    }
                    if let Some(path) = &self.save_grant {
                        match write_private(path, &ticket.to_json()) {
                            Ok(()) => println!(
                                "grant saved to {} (keep it like a password); later, with nobody there: deskwire-viewer --unattended --grant {} --token ... --admin-user NAME",
                                path.display(),
                                path.display()
                            ),
                            Err(e) => println!("cannot save the grant to {}: {e}", path.display()),
                        }
                    }
                }
                Err(why) => println!("unattended access refused: {why}"),
            },
            ViewerEvent::Frame(_) => {
                self.frames += 1;
                if !self.first_frame {
                    self.first_frame = true;
                    if let Some(j) = self.joined {
                        println!(
                            "first picture {} after the computer joined",
                            words::duration(j.elapsed())
                        );
                    }
                }
            }
            ViewerEvent::CursorMoved => self.cursor_moves += 1,
            ViewerEvent::Reconnecting => {
                println!("reconnecting: nothing heard from the computer; waiting for the link")
            }
            ViewerEvent::Reconnected => println!("reconnected"),
            ViewerEvent::Stats(s) => println!(
                "{:.0} fps, {}, round trip {}, capture to picture {} (median), {} (99th percentile)",
                s.fps,
                words::rate(s.kbps * 1e3),
                s.rtt.map_or("not measured yet".to_owned(), words::duration),
                s.latency_p50.map_or("not measured yet".to_owned(), words::duration),
                s.latency_p99.map_or("not measured yet".to_owned(), words::duration)
            ),
            ViewerEvent::Disconnected(reason) => {
                match (&reason, self.connected) {
                    (DisconnectReason::Broker(why), false) => {
                        println!("cannot go on with the broker: {why}")
                    }
                    _ => println!("session ended: {reason}"),
                }
                return Some(reason);
            }
            _ => {}
        }
        None
    }
}

fn run_headless(
    viewer: &Viewer,
    session: &mut Session,
    args: &Args,
) -> Result<Option<DisconnectReason>> {
    let mut until: Option<Instant> = None;
    loop {
        if until.is_some_and(|t| Instant::now() >= t) {
            return Ok(None);
        }
        let Ok(event) = viewer.events().recv_timeout(Duration::from_millis(50)) else {
            continue;
        };
        if let Some(reason) = session.handle(event) {
            return Ok(Some(reason));
        }
        session.ask_for_grant(viewer);
        if session.connected && until.is_none() {
            until = Some(Instant::now() + Duration::from_secs_f64(args.duration));
        }
    }
}

impl Session {
    /// Ask for unattended access once, as soon as the session allows control.
    fn ask_for_grant(&mut self, viewer: &Viewer) {
        if self.control {
            if let Some(request) = self.grant_request.take() {
                match viewer.request_unattended(&request) {
                    Ok(_) => println!("asked the user for unattended access"),
                    Err(e) => println!("cannot ask for unattended access: {e}"),
                }
            }
        }
    }
}

fn save(viewer: &Viewer, args: &Args) -> Result<()> {
    let Some(path) = &args.snapshot else {
        return Ok(());
    };
    let cursor = viewer.cursor();
    match viewer.with_frame(|f| write_png(path, f, cursor.as_ref())) {
        Some(r) => {
            r?;
            println!("snapshot: {}", path.display());
        }
        None => println!("no frame was decoded; no snapshot written"),
    }
    Ok(())
}
