//! A target's agent standing by at its broker for unattended calls.
//!
//! The agent proves its device key on a connection of its own and keeps it open; each
//! technician call the broker lets through (its copy of the grant open at its clock) arrives
//! as [`StandbyEvent::Call`], which the caller serves with
//! [`crate::Agent::start_unattended_call`], where the target checks its own copy of the grant
//! at its own clock before anything connects. A dropped connection is made again by itself.
//!
//! What it sends and when it connects again are decided by
//! `deskwire_session::standing::UnattendedStanding`; this file does the I/O.

use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::Receiver;
use deskwire_session::standing::{Now, UnattendedStanding, UnattendedStandingEvent};
use deskwire_signal::{SessionCode, UnixMillis};
use tokio::sync::mpsc;

use crate::signalling::{recv_if_open, send_if_open, Signalling};
use crate::{spawn_net, Events, SessionError};

/// Settings of a [`Standby`].
#[derive(Debug, Clone)]
pub struct StandbyConfig {
    /// Broker URL, `ws://HOST:PORT`.
    pub broker: String,
    /// This computer's device key (made on first use), the one its grants were reported with.
    pub device_key: PathBuf,
    /// Give up on one connection attempt after this long.
    pub connect_timeout: Duration,
    /// Longest wait between two attempts (the first waits 200 ms, doubling).
    pub max_retry: Duration,
}

impl StandbyConfig {
    /// Defaults for `broker` with the device key at `device_key`.
    pub fn new(broker: impl Into<String>, device_key: impl Into<PathBuf>) -> Self {
        Self {
            broker: broker.into(),
            device_key: device_key.into(),
            connect_timeout: Duration::from_secs(10),
            max_retry: Duration::from_secs(10),
        }
    }
}

/// What a standing-by agent reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StandbyEvent {
    /// Standing by: calls can come.
    Online,
    /// The connection is down (or the broker refused it); the agent tries again by itself.
    Offline {
        /// What happened.
        error: String,
    },
    /// A technician connects under `grant`: serve them with
    /// [`crate::Agent::start_unattended_call`].
    Call {
        /// The code for this connection.
        session: SessionCode,
        /// The grant they connect under.
        grant: u32,
        /// Who, as the broker names them.
        technician: String,
    },
}

enum Command {
    Cut,
    Shutdown,
}

/// An agent standing by. See the module docs.
#[derive(Debug)]
pub struct Standby {
    events: Receiver<StandbyEvent>,
    commands: mpsc::UnboundedSender<Command>,
    net: Option<JoinHandle<()>>,
}

impl Standby {
    /// Start standing by.
    pub fn start(config: StandbyConfig) -> Result<Self, SessionError> {
        let key = crate::device::load_or_create(&config.device_key)?;
        let (events, rx) = Events::new();
        let (commands, cmd_rx) = mpsc::unbounded_channel();
        let net = spawn_net(move |_| async move {
            let core = UnattendedStanding::new(key, config.max_retry);
            stand_by(&config, core, &events, cmd_rx).await;
        })?;
        Ok(Self {
            events: rx,
            commands,
            net: Some(net),
        })
    }

    /// Events, in order.
    pub fn events(&self) -> &Receiver<StandbyEvent> {
        &self.events
    }

    /// Drop the connection as a network failure would; the agent connects again by itself.
    pub fn cut_connection(&self) -> Result<(), SessionError> {
        self.commands
            .send(Command::Cut)
            .map_err(|_| SessionError::Ended)
    }

    /// Stop standing by and join the thread.
    pub fn shutdown(mut self) -> Result<(), SessionError> {
        self.stop()
    }

    fn stop(&mut self) -> Result<(), SessionError> {
        let _ = self.commands.send(Command::Shutdown);
        crate::join_net(&mut self.net)
    }
}

impl Drop for Standby {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// Drive the core until the agent stops: connect when it asks, send what it says, sleep
/// until its deadline.
async fn stand_by(
    config: &StandbyConfig,
    mut core: UnattendedStanding,
    events: &Events<StandbyEvent>,
    mut commands: mpsc::UnboundedReceiver<Command>,
) {
    let epoch = tokio::time::Instant::now();
    // The proof is signed at the system's wall clock (the broker checks it is recent).
    let now = || Now {
        mono: epoch.elapsed(),
        wall: UnixMillis::now(),
    };
    let mut sig: Option<Signalling> = None;
    loop {
        if let Err(why) = send_if_open(&mut sig, || core.poll_transmit()).await {
            core.handle_lost(now(), why);
        }
        if let Some(ev) = core.poll_event() {
            match ev {
                UnattendedStandingEvent::Connect => {
                    match Signalling::connect(&config.broker, config.connect_timeout).await {
                        Ok(open) => {
                            sig = Some(open);
                            core.handle_connected(now());
                        }
                        Err(e) => core.handle_lost(now(), crate::with_causes(&e)),
                    }
                }
                UnattendedStandingEvent::Online => events.emit_important(StandbyEvent::Online),
                UnattendedStandingEvent::Offline { error, retry } => {
                    sig = None;
                    tracing::info!(%error, ?retry, "standby offline; trying again");
                    events.emit_important(StandbyEvent::Offline { error });
                }
                UnattendedStandingEvent::Call {
                    session,
                    grant,
                    technician,
                } => events.emit_important(StandbyEvent::Call {
                    session,
                    grant,
                    technician,
                }),
            }
            continue;
        }
        if core.is_done() {
            if let Some(open) = sig.take() {
                open.close().await;
            }
            return;
        }
        let deadline = core.poll_timeout().map(|t| epoch + t);
        tokio::select! {
            msg = recv_if_open(&mut sig) => match msg {
                Ok(msg) => core.handle_broker(now(), msg),
                Err(e) => {
                    sig = None;
                    core.handle_lost(now(), crate::with_causes(&e));
                }
            },
            cmd = commands.recv() => match cmd {
                Some(Command::Cut) => {
                    if sig.take().is_some() {
                        core.handle_lost(now(), "connection cut".into());
                    }
                }
                Some(Command::Shutdown) | None => core.handle_shutdown(),
            },
            () = tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)), if deadline.is_some() => {
                core.handle_timeout(now());
            }
        }
    }
}
