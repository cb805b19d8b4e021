//! Ad-hoc support on the user's side: the temporary host, `deskwire-agent adhoc --invite LINK`.
//!
//! The temporary host keeps everything in one private folder (the device key, the host
//! token, the link secret) and removes it when the session ends: by the technician, by the
//! user typing `e`, or at the end of its lifetime. Stopping it with Ctrl-C or `q` keeps the
//! folder, and running `deskwire-agent adhoc` again takes the session up again.
#![allow(clippy::print_stdout)]

use std::io::{BufRead, Write};
use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use crossbeam_channel::{select, Receiver};
use deskwire::adhoc::{TemporaryHost, TemporaryHostConfig, TemporaryHostEvent};
use deskwire::{Agent, AgentConfig, AgentEvent, TransportConfig};
use deskwire_capture::{open, OpenOptions, SourceSpec};
use deskwire_signal::adhoc::{AdhocLink, SecurityCode};

/// `deskwire-agent adhoc`: run the temporary host of an ad-hoc support session.
#[derive(Debug, clap::Args)]
pub struct TemporaryHostArgs {
    /// Broker URL.
    #[arg(long)]
    pub broker: String,
    /// The invitation link the technician gave you (`deskwire://adhoc/...`). Not needed to
    /// take up a session this computer already activated.
    #[arg(long)]
    pub invite: Option<String>,
    /// The security code that came with it (asked on the terminal if not given).
    #[arg(long, env = "DESKWIRE_SECURITY_CODE", hide_env_values = true)]
    pub security_code: Option<String>,
    /// Where the temporary host keeps its state (removed when the session ends).
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// The permanent agent's control socket: if an agent answers there, ad-hoc sessions are
    /// refused on this computer (default: the agent's own default socket).
    #[arg(long)]
    pub agent_socket: Option<PathBuf>,
    /// Screen source: auto, x11, xcap or synthetic:<static|typing|scroll|video|drag>.
    #[arg(long, default_value = "auto")]
    pub source: String,
    /// X display to capture and inject into (default: $DISPLAY).
    #[arg(long)]
    pub display: Option<String>,
    /// Show the screen only; inject no keyboard or mouse input.
    #[arg(long)]
    pub view_only: bool,
    /// Size of a synthetic desktop.
    #[arg(long, default_value_t = 1280)]
    pub width: u32,
    /// Size of a synthetic desktop.
    #[arg(long, default_value_t = 720)]
    pub height: u32,
    /// IP to gather WebRTC candidates on (default: 127.0.0.1 for a loopback broker, else all).
    #[arg(long)]
    pub bind: Option<IpAddr>,
}

/// The default state folder: `deskwire-adhoc` in this user's runtime folder
/// ([`crate::control::runtime_dir`]), never a name other users of the machine share.
pub fn default_state_dir() -> Result<PathBuf> {
    Ok(crate::control::runtime_dir()?.join("deskwire-adhoc"))
}

/// Whether a permanent agent answers on its control socket.
fn permanent_agent_running(socket: &std::path::Path) -> bool {
    std::os::unix::net::UnixStream::connect(socket).is_ok()
}

/// Run the temporary host until the session ends (or the user stops it).
pub fn run_temporary_host(args: &TemporaryHostArgs) -> Result<()> {
    let dir = match args.state_dir.clone() {
        Some(d) => d,
        None => default_state_dir()?,
    };
    let agent_socket = match args.agent_socket.clone() {
        Some(p) => p,
        None => crate::control::default_path()?,
    };
    let config = || {
        TemporaryHostConfig::new(&args.broker, &dir)
            .permanent_agent(permanent_agent_running(&agent_socket))
    };
    let display = crate::target_display(args.display.clone(), args.view_only)?;
    let spec: SourceSpec = args.source.parse()?;
    let opts = OpenOptions {
        display: display.clone(),
        width: args.width,
        height: args.height,
        ..OpenOptions::default()
    };
    let link = args
        .invite
        .as_deref()
        .map(AdhocLink::parse)
        .transpose()
        .context("--invite")?;
    let mut temp = match &link {
        _ if dir.join("adhoc.json").exists() => {
            println!("taking up the ad-hoc session kept in {}", dir.display());
            TemporaryHost::resume(config())?
        }
        Some(link) => {
            let code = match &args.security_code {
                Some(c) => c.clone(),
                None => {
                    // A code of the wrong shape is told and asked again before anything
                    // is sent.
                    let mut code = ask("security code: ")?;
                    while let Err(e) = SecurityCode::parse(&code) {
                        println!("{e}");
                        code = ask("security code (empty to stop): ")?;
                        if code.is_empty() {
                            println!("stopped");
                            return Ok(());
                        }
                    }
                    code
                }
            };
            TemporaryHost::activate(config(), link, &code)?
        }
        None => bail!("give the invitation link the technician sent you (--invite)"),
    };
    let lines = stdin_lines();
    let mut serving: Option<Agent> = None;
    let never = crossbeam_channel::never::<AgentEvent>();
    println!("type e and Enter to end the support session now, q to stop this program");
    loop {
        let host_events = serving.as_ref().map_or(&never, |h| h.events());
        select! {
            recv(temp.events()) -> e => match e {
                Ok(TemporaryHostEvent::Activated(a)) => println!(
                    "ad-hoc session {} active on this computer until {}",
                    a.session, deskwire_signal::words::when(deskwire::UnixMillis::now(), a.expires_at)
                ),
                Ok(TemporaryHostEvent::Reattached) => println!("reconnected to the broker"),
                Ok(TemporaryHostEvent::Offline { error }) => {
                    println!("offline ({error}); reconnecting by itself")
                }
                Ok(TemporaryHostEvent::Call { session, technician }) => {
                    if let Some(h) = serving.take() {
                        let _ = h.shutdown();
                    }
                    println!("{technician} is connecting");
                    let source = open(&spec, &opts).with_context(|| format!("opening source {spec}"))?;
                    let config = AgentConfig::new(&args.broker)
                        .device_key(temp.device_key())
                        .view_only(args.view_only)
                        .input_display(display.clone())
                        .transport(TransportConfig::for_broker(&args.broker, args.bind));
                    serving = Some(Agent::start_adhoc_call(config, source, session, temp.call_secret())?);
                }
                Ok(TemporaryHostEvent::Ended { reason }) => {
                    if let Some(h) = serving.take() {
                        let _ = h.shutdown();
                    }
                    println!("the support session is over: {reason}");
                    println!("removed {}", dir.display());
                    return Ok(());
                }
                Ok(TemporaryHostEvent::Refused { reason }) => {
                    // A mistyped security code: the invitation still works, so ask again
                    // (when the code came from the terminal; a wrong --security-code is
                    // the caller's to fix).
                    let (Some(link), None, true) = (
                        &link,
                        &args.security_code,
                        deskwire_signal::adhoc::is_wrong_code(&reason),
                    ) else {
                        bail!("{reason}");
                    };
                    println!("{reason}");
                    print!("security code (empty to stop): ");
                    let _ = std::io::stdout().flush();
                    // The terminal's lines come through `lines` now: its reader owns stdin.
                    let code = lines.recv().unwrap_or_default().trim().to_owned();
                    if code.is_empty() {
                        println!("stopped");
                        return Ok(());
                    }
                    temp = TemporaryHost::activate(config(), link, &code)?;
                }
                Err(_) => bail!("the temporary host stopped"),
            },
            recv(host_events) -> e => match e {
                Ok(AgentEvent::Connected { .. }) => println!("the technician is connected"),
                Ok(AgentEvent::Disconnected(r)) => {
                    println!("the technician left ({r}); they may connect again");
                    serving = None;
                }
                Ok(_) => {}
                Err(_) => serving = None,
            },
            recv(lines) -> line => match line.as_deref().map(str::trim) {
                Ok("e") => temp.end_now()?,
                Ok("q") | Err(_) => {
                    println!("stopped; run again to take the session up ({} is kept)", dir.display());
                    return Ok(());
                }
                Ok(_) => {}
            },
        }
    }
}

fn ask(prompt: &str) -> Result<String> {
    print!("{prompt}");
    let _ = std::io::stdout().flush();
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("reading from stdin")?;
    Ok(line.trim().to_owned())
}

fn stdin_lines() -> Receiver<String> {
    let (tx, rx) = crossbeam_channel::unbounded();
    let _ = std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
    rx
}
