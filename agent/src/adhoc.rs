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

use crate::panel::{Action, CodeKind, Panel, View};

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
    /// The security code that came with it (asked on the panel and the terminal if not
    /// given).
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
    /// Keep to the terminal: no panel on the display (by default the security code is
    /// asked, and who is connected shown with View only and End, on a small window there).
    #[arg(long)]
    pub no_panel: bool,
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
    let lines = stdin_lines();
    let panel = if args.no_panel {
        None
    } else {
        Panel::open_if_possible(display.as_deref())
    };
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
                    let mut why = "Type the security code the technician gave you.".to_owned();
                    let mut prompt = "security code: ";
                    loop {
                        let Some(code) = ask_code(&lines, panel.as_ref(), prompt, &why)? else {
                            println!("stopped");
                            return Ok(());
                        };
                        match SecurityCode::parse(&code) {
                            Ok(_) => break code,
                            Err(e) => {
                                println!("{e}");
                                why = e.to_string();
                                prompt = "security code (empty to stop): ";
                            }
                        }
                    }
                }
            };
            TemporaryHost::activate(config(), link, &code)?
        }
        None => bail!("give the invitation link the technician sent you (--invite)"),
    };
    let mut serving: Option<Agent> = None;
    // Who is connected and whether they control, for the panel.
    let mut connected: Option<(String, bool)> = None;
    let mut technician = String::new();
    // Clicks on the panel are polled; without one, nothing wakes the loop for them.
    let tick = match panel {
        Some(_) => crossbeam_channel::tick(std::time::Duration::from_millis(50)),
        None => crossbeam_channel::never(),
    };
    let never = crossbeam_channel::never::<AgentEvent>();
    println!("type e and Enter to end the support session now, q to stop this program");
    let mut shown: Option<Option<(String, bool)>> = None;
    loop {
        if let Some(panel) = &panel {
            if shown.as_ref() != Some(&connected) {
                panel.show(match &connected {
                    Some((who, control)) => View::Connected {
                        who: who.clone(),
                        control: *control,
                        end: "End session",
                    },
                    None => View::Hidden,
                });
                shown = Some(connected.clone());
            }
        }
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
                Ok(TemporaryHostEvent::Call { session, technician: who }) => {
                    if let Some(h) = serving.take() {
                        let _ = h.shutdown();
                    }
                    connected = None;
                    println!("{who} is connecting");
                    technician = who;
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
                    let prompt = "security code (empty to stop): ";
                    let Some(code) = ask_code(&lines, panel.as_ref(), prompt, &reason)? else {
                        println!("stopped");
                        return Ok(());
                    };
                    temp = TemporaryHost::activate(config(), link, &code)?;
                }
                Err(_) => bail!("the temporary host stopped"),
            },
            recv(host_events) -> e => match e {
                Ok(AgentEvent::Connected { control, .. }) => {
                    println!("the technician is connected");
                    connected = Some((technician.clone(), control));
                }
                Ok(AgentEvent::Disconnected(r)) => {
                    println!("the technician left ({r}); they may connect again");
                    serving = None;
                    connected = None;
                }
                Ok(_) => {}
                Err(_) => {
                    serving = None;
                    connected = None;
                }
            },
            recv(tick) -> _ => {
                // What was clicked on the panel: taking control back, or ending the session.
                match panel.as_ref().and_then(Panel::try_action) {
                    Some(Action::StopControl) => {
                        if let (Some(h), Some((_, control))) = (&serving, &mut connected) {
                            h.set_control(false)?;
                            *control = false;
                            println!("control taken back: the technician can only see this screen now");
                        }
                    }
                    Some(Action::Terminate) => temp.end_now()?,
                    _ => {}
                }
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

/// Ask for the security code on the terminal and, if there is one, on the panel (`why`:
/// what to type, or what was wrong with the last one); whichever answers first. `None`
/// when the user cancels (an empty line, Cancel) or nobody can answer (no panel, and the
/// terminal's input ended).
fn ask_code(
    lines: &Receiver<String>,
    panel: Option<&Panel>,
    prompt: &str,
    why: &str,
) -> Result<Option<String>> {
    print!("{prompt}");
    let _ = std::io::stdout().flush();
    if let Some(panel) = panel {
        panel.show(View::AskingCode {
            why: why.to_owned(),
            kind: CodeKind::Security,
        });
    }
    let mut terminal_open = true;
    let answer = loop {
        if terminal_open {
            match lines.recv_timeout(std::time::Duration::from_millis(50)) {
                Ok(line) => break Some(line.trim().to_owned()).filter(|l| !l.is_empty()),
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => terminal_open = false,
            }
        } else if panel.is_none() {
            println!();
            break None;
        } else {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        match panel.and_then(Panel::try_action) {
            Some(Action::Code(code)) if !code.is_empty() => {
                println!();
                break Some(code);
            }
            Some(Action::Cancel) => break None,
            _ => {}
        }
    };
    if let Some(panel) = panel {
        panel.show(View::Hidden);
    }
    Ok(answer)
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
