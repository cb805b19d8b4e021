//! Ad-hoc support sessions at both ends.
//!
//! The technician [`create`]s one and hands the user the invitation (a link whose secret
//! half this side drew, and a security code), or has the broker e-mail it. The user runs a
//! [`TemporaryHost`]: it activates the session, keeps a standing connection to the broker
//! (re-attaching by itself when its network drops), and reports each technician's call
//! ([`TemporaryHostEvent::Call`]), which the caller serves with [`crate::Agent::start_adhoc_call`].
//! When the session ends (the technician's [`end`], the user's [`TemporaryHost::end_now`],
//! or its lifetime, by the broker's clock or this host's own) the temporary host removes
//! its folder: the device key, the host token, the link secret. Nothing else is written.
//!
//! What the standing connection sends, when it connects again and when the lifetime is
//! over are decided by `deskwire_session::standing::AdhocStanding`; this file does the
//! I/O: the WebSocket, the folder, the events.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::Receiver;
use deskwire_session::standing::{AdhocStanding, AdhocStandingEvent, AdhocStart, Now};
use deskwire_signal::adhoc::{Activation, AdhocId, AdhocLink, Capabilities, SecurityCode};
use deskwire_signal::{AdhocMail, BrokerMessage, ClientMessage, SessionCode, UnixMillis};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::signalling::{ask_broker, SignalError};
use crate::signalling::{recv_if_open, send_if_open, Signalling};
use crate::{spawn_net, Events, SessionError};

/// What the technician gets from [`create`]: show it once, then pass it on.
#[derive(Debug, Clone)]
pub struct Invitation {
    /// The ad-hoc session, for [`crate::ViewerConfig::adhoc`] and [`end`].
    pub session: AdhocId,
    /// The link the user opens (its secret half never went to the broker, unless e-mailed).
    pub link: AdhocLink,
    /// The security code the user types.
    pub code: SecurityCode,
    /// When the invitation stops working if not activated.
    pub expires_at: UnixMillis,
    /// What the technician may open.
    pub capabilities: Capabilities,
    /// Where the broker e-mailed it.
    pub mailed_to: Option<String>,
    /// Why the e-mail could not go (the session exists anyway).
    pub mail_error: Option<String>,
}

/// Create an ad-hoc session on `broker` for the technician holding `token`; with
/// `mail_to`, the broker e-mails the invitation there. Refused with the broker's reason (a
/// quota names its limit). Blocks up to about `timeout`.
pub fn create(
    broker: &str,
    token: &str,
    mail_to: Option<&str>,
    timeout: Duration,
) -> Result<Invitation, SessionError> {
    let secret: [u8; 16] = rand::random();
    let ask = ClientMessage::CreateAdhoc {
        token: token.to_owned(),
        mail: mail_to.map(|to| AdhocMail {
            to: to.to_owned(),
            secret: crate::grants::hex(&secret),
        }),
    };
    match ask_broker(broker, &ask, timeout)? {
        BrokerMessage::AdhocCreated {
            session,
            token,
            code,
            expires_at,
            capabilities,
            mailed_to,
            mail_error,
        } => Ok(Invitation {
            session,
            link: AdhocLink { token, secret },
            code,
            expires_at,
            capabilities,
            mailed_to,
            mail_error,
        }),
        BrokerMessage::Error { message } => Err(AdhocError::Refused(message).into()),
        other => Err(SignalError::unexpected("the broker", &other).into()),
    }
}

/// "End session now": ends ad-hoc session `session` on the broker, which tells its
/// temporary host to remove itself. Returns the broker's account of it.
pub fn end(
    broker: &str,
    token: &str,
    session: AdhocId,
    timeout: Duration,
) -> Result<String, SessionError> {
    let ask = ClientMessage::EndAdhoc {
        token: token.to_owned(),
        session,
    };
    match ask_broker(broker, &ask, timeout)? {
        BrokerMessage::AdhocEnded { reason, .. } => Ok(reason),
        BrokerMessage::Error { message } => Err(AdhocError::Refused(message).into()),
        other => Err(SignalError::unexpected("the broker", &other).into()),
    }
}

/// Why an ad-hoc session could not be created, ended or taken up again.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdhocError {
    /// The broker refused; its sentence says why (a quota names its limit).
    #[error("{0}")]
    Refused(String),
    /// The temporary host's folder or state file cannot be made, read or written.
    #[error("cannot {what} {}", path.display())]
    State {
        /// What was being done.
        what: &'static str,
        /// The folder or file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The state file is not one this program wrote.
    #[error("{} is not a temporary host's state", path.display())]
    DamagedState {
        /// The file.
        path: PathBuf,
        /// Why, when the JSON parser said.
        #[source]
        source: Option<serde_json::Error>,
    },
}

/// Reads the wall clock; tests pass their own.
pub type WallClock = Arc<dyn Fn() -> UnixMillis + Send + Sync>;

/// Settings of a [`TemporaryHost`].
#[derive(Clone)]
pub struct TemporaryHostConfig {
    /// Broker URL, `ws://HOST:PORT`.
    pub broker: String,
    /// The folder the temporary host keeps its state in, made private (0700) and removed
    /// entirely when the session ends.
    pub state_dir: PathBuf,
    /// A permanent agent runs on this computer (the caller checks): activation is refused.
    pub permanent_agent: bool,
    /// Give up on one connection attempt after this long.
    pub connect_timeout: Duration,
    /// Longest wait between two attempts to re-attach (the first waits 200 ms, doubling).
    pub max_retry: Duration,
    /// The clock this host checks the session's lifetime against, itself.
    pub clock: WallClock,
}

impl std::fmt::Debug for TemporaryHostConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TemporaryHostConfig")
            .field("broker", &self.broker)
            .field("state_dir", &self.state_dir)
            .field("permanent_agent", &self.permanent_agent)
            .finish_non_exhaustive()
    }
}

impl TemporaryHostConfig {
    /// Defaults for `broker`, keeping state in `state_dir`.
    pub fn new(broker: impl Into<String>, state_dir: impl Into<PathBuf>) -> Self {
        Self {
            broker: broker.into(),
            state_dir: state_dir.into(),
            permanent_agent: false,
            connect_timeout: Duration::from_secs(10),
            max_retry: Duration::from_secs(5),
            clock: Arc::new(UnixMillis::now),
        }
    }

    /// Whether a permanent agent runs here.
    pub fn permanent_agent(mut self, present: bool) -> Self {
        self.permanent_agent = present;
        self
    }

    /// Check the lifetime against this clock instead of the system's.
    pub fn clock(mut self, clock: WallClock) -> Self {
        self.clock = clock;
        self
    }

    /// Longest wait between attempts to re-attach.
    pub fn max_retry(mut self, max: Duration) -> Self {
        self.max_retry = max;
        self
    }
}

/// What the temporary host reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemporaryHostEvent {
    /// The session is active on this computer until `expires_at`.
    Activated(Activation),
    /// The standing connection is back after a drop (or a restart of this process).
    Reattached,
    /// A technician is connecting: serve them with [`crate::Agent::start_adhoc_call`].
    Call {
        /// The code for this connection.
        session: SessionCode,
        /// Who.
        technician: String,
    },
    /// The connection to the broker is down; the host tries again by itself.
    Offline {
        /// What happened.
        error: String,
    },
    /// The session is over and this host's folder is gone. Nothing follows.
    Ended {
        /// Why.
        reason: String,
    },
    /// The broker refused the activation (the message says why); the folder is gone.
    /// Nothing follows.
    Refused {
        /// Why.
        reason: String,
    },
}

/// What the temporary host keeps between connections (and across a restart of its
/// process), in `state_dir/adhoc.json`, readable by this user only.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Saved {
    session: AdhocId,
    host_token: String,
    secret: String,
    expires_at: UnixMillis,
}

enum Command {
    EndNow,
    /// Cut the standing connection as a network drop would (it re-attaches).
    Cut,
    Shutdown,
}

/// The user's side of an ad-hoc session. See the module docs.
#[derive(Debug)]
pub struct TemporaryHost {
    events: Receiver<TemporaryHostEvent>,
    commands: mpsc::UnboundedSender<Command>,
    net: Option<JoinHandle<()>>,
    secret: [u8; 16],
    state_dir: PathBuf,
}

impl TemporaryHost {
    /// Activate the invitation `link` with the security `code` the user typed.
    pub fn activate(
        config: TemporaryHostConfig,
        link: &AdhocLink,
        code: &str,
    ) -> Result<Self, SessionError> {
        make_private_dir(&config.state_dir)?;
        let start = AdhocStart::Activate {
            token: link.token.clone(),
            code: code.to_owned(),
            device: String::new(), // filled in once the key exists
            permanent_agent: config.permanent_agent,
        };
        Self::spawn(config, link.secret, start)
    }

    /// Take up the session this folder holds, after this process restarted.
    pub fn resume(config: TemporaryHostConfig) -> Result<Self, SessionError> {
        let path = config.state_dir.join("adhoc.json");
        let text = std::fs::read_to_string(&path).map_err(|source| AdhocError::State {
            what: "read an ad-hoc session to resume from",
            path: path.clone(),
            source,
        })?;
        let damaged = |source| AdhocError::DamagedState {
            path: path.clone(),
            source,
        };
        let saved: Saved = serde_json::from_str(&text).map_err(|e| damaged(Some(e)))?;
        let secret = crate::grants::unhex(&saved.secret).ok_or_else(|| damaged(None))?;
        let start = AdhocStart::Reattach {
            session: saved.session,
            host_token: saved.host_token,
            expires_at: saved.expires_at,
        };
        Self::spawn(config, secret, start)
    }

    fn spawn(
        config: TemporaryHostConfig,
        secret: [u8; 16],
        mut start: AdhocStart,
    ) -> Result<Self, SessionError> {
        let key = crate::device::load_or_create(&config.state_dir.join("device.key"))?;
        if let AdhocStart::Activate { device, .. } = &mut start {
            *device = key.id();
        }
        let (events, rx) = Events::new();
        let (commands, cmd_rx) = mpsc::unbounded_channel();
        let state_dir = config.state_dir.clone();
        let net = spawn_net(move |_| async move {
            let mut agent = TemporaryHostTask {
                config,
                secret,
                events,
                commands: cmd_rx,
            };
            agent.run(start).await;
        })?;
        Ok(Self {
            events: rx,
            commands,
            net: Some(net),
            secret,
            state_dir,
        })
    }

    /// Events, in order. After `Ended` or `Refused` no more follow.
    pub fn events(&self) -> &Receiver<TemporaryHostEvent> {
        &self.events
    }

    /// The secret each call's key exchange runs on (from the link).
    pub fn call_secret(&self) -> [u8; 16] {
        self.secret
    }

    /// This computer's key for the calls' joins ([`crate::AgentConfig::device_key`]); it is
    /// removed with the folder.
    pub fn device_key(&self) -> PathBuf {
        self.state_dir.join("device.key")
    }

    /// The user ends the session now: the broker is told, the folder removed.
    pub fn end_now(&self) -> Result<(), SessionError> {
        self.commands
            .send(Command::EndNow)
            .map_err(|_| SessionError::Ended)
    }

    /// Drop the standing connection as a network failure would; the host re-attaches by
    /// itself (for tests and diagnostics).
    pub fn cut_connection(&self) -> Result<(), SessionError> {
        self.commands
            .send(Command::Cut)
            .map_err(|_| SessionError::Ended)
    }

    /// Stop this process's part without ending the session: the folder stays, and
    /// [`TemporaryHost::resume`] takes it up again.
    pub fn shutdown(mut self) -> Result<(), SessionError> {
        self.stop()
    }

    fn stop(&mut self) -> Result<(), SessionError> {
        let _ = self.commands.send(Command::Shutdown);
        crate::join_net(&mut self.net)
    }
}

impl Drop for TemporaryHost {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

fn make_private_dir(dir: &Path) -> Result<(), SessionError> {
    let fail = |source| AdhocError::State {
        what: "make the folder",
        path: dir.to_owned(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(fail)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(fail)?;
    }
    Ok(())
}

/// Drives [`AdhocStanding`]: the connection, the folder and the user's events. What to
/// send, when to connect again and when the lifetime is over are the core's.
struct TemporaryHostTask {
    config: TemporaryHostConfig,
    secret: [u8; 16],
    events: Events<TemporaryHostEvent>,
    commands: mpsc::UnboundedReceiver<Command>,
}

impl TemporaryHostTask {
    async fn run(&mut self, start: AdhocStart) {
        let epoch = tokio::time::Instant::now();
        let clock = self.config.clock.clone();
        // The core's two clocks: the back-off on this runtime's, the expiry on the injected
        // wall clock (see `deskwire_session::standing`).
        let now = move || Now {
            mono: epoch.elapsed(),
            wall: clock(),
        };
        let mut core = AdhocStanding::new(start, self.config.max_retry, now());
        let mut sig: Option<Signalling> = None;
        loop {
            if let Err(why) = send_if_open(&mut sig, || core.poll_transmit()).await {
                core.handle_lost(now(), why);
            }
            if let Some(ev) = core.poll_event() {
                self.act(ev, &mut core, &mut sig, &now).await;
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
                cmd = self.commands.recv() => match cmd {
                    Some(Command::EndNow) => core.handle_end_now(now()),
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

    /// Do what the core's event says: connect, drop the connection, keep or remove the
    /// folder; and tell the user.
    async fn act(
        &mut self,
        ev: AdhocStandingEvent,
        core: &mut AdhocStanding,
        sig: &mut Option<Signalling>,
        now: &impl Fn() -> Now,
    ) {
        match ev {
            AdhocStandingEvent::Connect => {
                match Signalling::connect(&self.config.broker, self.config.connect_timeout).await {
                    Ok(open) => {
                        *sig = Some(open);
                        core.handle_connected(now());
                    }
                    Err(e) => core.handle_lost(now(), crate::with_causes(&e)),
                }
            }
            AdhocStandingEvent::Offline { error, retry } => {
                *sig = None;
                tracing::info!(%error, ?retry, "temporary host offline; trying again");
                self.events
                    .emit_important(TemporaryHostEvent::Offline { error });
            }
            AdhocStandingEvent::Activated {
                activation,
                host_token,
            } => {
                if let Err(e) = self.save(&activation, host_token) {
                    tracing::error!(error = %e, "cannot keep the session's state");
                }
                self.events
                    .emit_important(TemporaryHostEvent::Activated(activation));
            }
            AdhocStandingEvent::Reattached => {
                self.events.emit_important(TemporaryHostEvent::Reattached)
            }
            AdhocStandingEvent::Call {
                session,
                technician,
            } => self.events.emit_important(TemporaryHostEvent::Call {
                session,
                technician,
            }),
            AdhocStandingEvent::Ended { reason } => {
                self.wipe();
                tracing::info!(
                    reason,
                    "ad-hoc session over; temporary host removed its state"
                );
                self.events
                    .emit_important(TemporaryHostEvent::Ended { reason });
            }
            AdhocStandingEvent::Refused { reason } => {
                self.wipe();
                self.events
                    .emit_important(TemporaryHostEvent::Refused { reason });
            }
        }
    }

    fn save(&mut self, activation: &Activation, host_token: String) -> Result<(), SessionError> {
        let saved = Saved {
            session: activation.session,
            host_token,
            secret: crate::grants::hex(&self.secret),
            expires_at: activation.expires_at,
        };
        // Plain data always serialises.
        let text = serde_json::to_string(&saved).unwrap_or_default();
        let path = self.config.state_dir.join("adhoc.json");
        crate::accounts::write_private(&path, text.as_bytes()).map_err(|source| {
            AdhocError::State {
                what: "write the state to",
                path: path.clone(),
                source,
            }
            .into()
        })
    }

    fn wipe(&mut self) {
        match std::fs::remove_dir_all(&self.config.state_dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::error!(error = %e, dir = %self.config.state_dir.display(), "cannot remove the temporary host's folder")
            }
        }
    }
}
