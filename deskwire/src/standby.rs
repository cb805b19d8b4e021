//! A target's agent standing by at its broker for unattended calls.
//!
//! The agent proves its device key on a connection of its own and keeps it open; each
//! technician call the broker lets through (its copy of the grant open at its clock) arrives
//! as [`StandbyEvent::Call`], which the caller serves with
//! [`crate::Host::start_unattended_call`], where the target checks its own copy of the grant
//! at its own clock before anything connects. A dropped connection is made again by itself.

use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::Receiver;
use deskwire_signal::device::DeviceKey;
use deskwire_signal::{BrokerMessage, ClientMessage, SessionCode, UnixMillis};
use tokio::sync::mpsc;

use crate::signalling::Signalling;
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
    /// [`crate::Host::start_unattended_call`].
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
        let (commands, mut cmd_rx) = mpsc::unbounded_channel();
        let net = spawn_net(move |_| async move {
            let mut retry = FIRST_RETRY;
            loop {
                let lost = match stand_by(&config, &key, &events, &mut cmd_rx).await {
                    Ok(()) => return,
                    Err(lost) => lost,
                };
                if lost.online {
                    retry = FIRST_RETRY;
                }
                tracing::info!(error = %lost.error, ?retry, "standby offline; trying again");
                events.emit_important(StandbyEvent::Offline { error: lost.error });
                tokio::select! {
                    () = tokio::time::sleep(retry) => {}
                    cmd = cmd_rx.recv() => if matches!(cmd, Some(Command::Shutdown) | None) { return },
                }
                retry = (retry * 2).min(config.max_retry);
            }
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

const FIRST_RETRY: Duration = Duration::from_millis(200);

/// Why a standing connection ended, and whether it had been up.
struct Lost {
    error: String,
    online: bool,
}

/// One standing connection, until it drops (`Err`) or the agent stops (`Ok`).
async fn stand_by(
    config: &StandbyConfig,
    key: &DeviceKey,
    events: &Events<StandbyEvent>,
    commands: &mut mpsc::UnboundedReceiver<Command>,
) -> Result<(), Lost> {
    let lost = |error: String, online: bool| Lost { error, online };
    let mut sig = Signalling::connect(&config.broker, config.connect_timeout)
        .await
        .map_err(|e| lost(e.to_string(), false))?;
    let at = UnixMillis::now();
    let hello = ClientMessage::Standby {
        device: key.prove_standby(at),
        at,
    };
    sig.send(&hello)
        .await
        .map_err(|e| lost(e.to_string(), false))?;
    let mut online = false;
    loop {
        tokio::select! {
            msg = sig.recv() => match msg {
                Ok(BrokerMessage::StandingBy {}) => {
                    online = true;
                    events.emit_important(StandbyEvent::Online);
                }
                Ok(BrokerMessage::UnattendedCall { session, grant, technician }) => {
                    events.emit_important(StandbyEvent::Call { session, grant, technician });
                }
                Ok(BrokerMessage::Error { message }) => return Err(lost(message, online)),
                Ok(other) => tracing::debug!(?other, "ignored while standing by"),
                Err(e) => return Err(lost(e.to_string(), online)),
            },
            cmd = commands.recv() => match cmd {
                Some(Command::Cut) => return Err(lost("connection cut".into(), online)),
                Some(Command::Shutdown) | None => {
                    sig.close().await;
                    return Ok(());
                }
            },
        }
    }
}
