//! A target that serves technicians on the LAN, session after session: what
//! `deskwire-agent --lan` does, for any program that embeds the library.
//!
//! A [`LanAgent`] holds this run's rotating password, announces the computer over mDNS,
//! tells the brokers that manage it each new password (on a thread of its own, so a slow
//! broker never holds up the caller), and starts one [`Agent`] per session. What a user
//! should see comes out of [`LanAgent::poll_event`] as data; the program decides how to
//! show it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use deskwire_capture::Source;
use deskwire_signal::UnixMillis;

use super::{
    device_id, report_lan_password, Advertisement, LanListenConfig, LanPassword, LanPasswords,
    DEFAULT_PORT,
};
use crate::{Agent, AgentConfig, SessionError};

/// The brokers that manage this computer, told each new LAN password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordReportTo {
    /// Tried in order until one answers.
    pub brokers: Vec<String>,
    /// This computer's device key (made on first use), which signs each report.
    pub device_key: PathBuf,
}

/// How a [`LanAgent`] serves.
#[derive(Debug, Clone)]
pub struct LanAgentConfig {
    /// Where to listen (`0.0.0.0:8451` by default).
    pub listen: SocketAddr,
    /// The name technicians see on the LAN (this computer's host name by default).
    pub name: String,
    /// Announce this computer over mDNS.
    pub announce: bool,
    /// Tell these brokers each new password.
    pub report_to: Option<PasswordReportTo>,
    /// Serve one session, then no more.
    pub once: bool,
    /// How long one broker may take to answer a report.
    pub report_timeout: Duration,
}

impl Default for LanAgentConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT)),
            name: host_name(),
            announce: true,
            report_to: None,
            once: false,
            report_timeout: Duration::from_secs(10),
        }
    }
}

impl LanAgentConfig {
    /// Check every setting.
    pub fn validate(&self) -> Result<(), LanAgentError> {
        if self.announce && !super::valid_name(&self.name) {
            return Err(LanAgentError::Name {
                name: self.name.clone(),
            });
        }
        if self
            .report_to
            .as_ref()
            .is_some_and(|r| r.brokers.is_empty())
        {
            return Err(LanAgentError::NoBroker);
        }
        Ok(())
    }
}

/// Why a [`LanAgent`] cannot start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LanAgentError {
    /// The announced name is empty or longer than a DNS label.
    #[error("a LAN name has 1 to 63 bytes; {name:?} has {}", name.len())]
    Name {
        /// The name.
        name: String,
    },
    /// Reports are asked for, to no broker.
    #[error("the LAN password is to be reported, but to no broker")]
    NoBroker,
    /// The device key that signs the reports cannot be read or made.
    #[error(transparent)]
    DeviceKey(SessionError),
    /// The mDNS announcement cannot start.
    #[error(transparent)]
    Announce(SessionError),
}

/// Why this password was not reported to the brokers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PasswordReportError {
    /// The reporting thread could not start.
    #[error("cannot report the LAN password: {0}")]
    Thread(std::io::Error),
    /// No broker took the report.
    #[error("cannot report the LAN password to the broker: {}", crate::with_causes(.0))]
    Broker(SessionError),
}

/// What a [`LanAgent`] has to tell its user.
#[derive(Debug)]
#[non_exhaustive]
pub enum LanAgentEvent {
    /// A new password is current (the first one too): technicians need this one now.
    Password {
        /// The password.
        password: LanPassword,
        /// When it stops working.
        rotates_at: UnixMillis,
    },
    /// The brokers were told the current password.
    PasswordReported,
    /// The brokers were not told it; the next rotation tries again.
    PasswordNotReported(PasswordReportError),
}

/// A LAN target, session after session. The announcement is withdrawn when it drops.
#[derive(Debug)]
pub struct LanAgent {
    config: LanAgentConfig,
    passwords: LanPasswords,
    device_id: Option<String>,
    /// The password the last [`LanAgentEvent::Password`] gave.
    shown: Option<LanPassword>,
    report_tx: Sender<LanAgentEvent>,
    reports: Receiver<LanAgentEvent>,
    sessions: u64,
    /// Failures per source, across the sessions' listeners.
    backoff: super::BackoffRecord,
    _advert: Option<Advertisement>,
}

impl LanAgent {
    /// A fresh password (rotated daily), and the announcement if `config` asks for one.
    pub fn start(config: LanAgentConfig) -> Result<Self, LanAgentError> {
        config.validate()?;
        let device_id = match &config.report_to {
            Some(r) => Some(device_id(&r.device_key).map_err(LanAgentError::DeviceKey)?),
            None => None,
        };
        let advert = if config.announce {
            Some(
                Advertisement::start(&config.name, config.listen.port())
                    .map_err(LanAgentError::Announce)?,
            )
        } else {
            None
        };
        // Unbounded, but at most two outcomes per rotation (a day) are ever in flight.
        let (report_tx, reports) = crossbeam_channel::unbounded();
        Ok(Self {
            config,
            passwords: LanPasswords::daily(),
            device_id,
            shown: None,
            report_tx,
            reports,
            sessions: 0,
            backoff: super::BackoffRecord::default(),
            _advert: advert,
        })
    }

    /// This run's passwords, shared with every agent it starts.
    pub fn passwords(&self) -> &LanPasswords {
        &self.passwords
    }

    /// The device id the brokers know this computer by, when it reports to them.
    pub fn device_id(&self) -> Option<&str> {
        self.device_id.as_deref()
    }

    /// The name it announces.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The next thing to tell the user, if any: a new password comes out (and goes to the
    /// brokers) as soon as it is current. Call it often, e.g. between agent events.
    pub fn poll_event(&mut self) -> Option<LanAgentEvent> {
        let now = UnixMillis::now();
        let current = self.passwords.current_at(now);
        if self.shown.as_ref() != Some(&current) {
            self.shown = Some(current.clone());
            self.report(now);
            return Some(LanAgentEvent::Password {
                password: current,
                rotates_at: self.passwords.rotates_at(),
            });
        }
        self.reports.try_recv().ok()
    }

    /// Tell the brokers the current password, off the caller's thread.
    fn report(&self, now: UnixMillis) {
        let Some(to) = self.config.report_to.clone() else {
            return;
        };
        let passwords = self.passwords.clone();
        let timeout = self.config.report_timeout;
        let tx = self.report_tx.clone();
        // Not joined: a report blocks up to `timeout` per broker, and the agent must not
        // wait for one to exit; its outcome is dropped if the agent is gone.
        let spawned = std::thread::Builder::new()
            .name("deskwire-lan-report".into())
            .spawn(move || {
                let event = match report_lan_password(
                    &to.brokers,
                    &to.device_key,
                    &passwords,
                    timeout,
                ) {
                    Ok(()) => LanAgentEvent::PasswordReported,
                    Err(e) => {
                        tracing::warn!(error = %crate::with_causes(&e), at = %now, "the LAN password was not reported");
                        LanAgentEvent::PasswordNotReported(PasswordReportError::Broker(e))
                    }
                };
                let _ = tx.send(event);
            });
        if let Err(e) = spawned {
            let _ = self.report_tx.send(LanAgentEvent::PasswordNotReported(
                PasswordReportError::Thread(e),
            ));
        }
    }

    /// Listen for the next session's technician with `config` and `source`.
    pub fn start_agent(
        &mut self,
        config: AgentConfig,
        source: Box<dyn Source>,
    ) -> Result<Agent, SessionError> {
        let lan = LanListenConfig::new(self.passwords.clone())
            .listen(self.config.listen)
            .remembering(&self.backoff);
        let agent = Agent::start_lan(config, source, lan)?;
        self.sessions += 1;
        Ok(agent)
    }

    /// Whether to start another agent once the current session ends (not with `once`).
    pub fn serves_another(&self) -> bool {
        !(self.config.once && self.sessions > 0)
    }
}

/// This computer's host name, for the LAN announcement.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "deskwire-target".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quiet() -> LanAgentConfig {
        LanAgentConfig {
            announce: false,
            ..LanAgentConfig::default()
        }
    }

    #[test]
    fn the_first_poll_gives_the_password_and_the_next_ones_stay_quiet_until_it_rotates() {
        let mut agent = LanAgent::start(quiet()).unwrap();
        match agent.poll_event() {
            Some(LanAgentEvent::Password {
                password,
                rotates_at,
            }) => {
                assert_eq!(password, agent.passwords().current());
                assert_eq!(rotates_at, agent.passwords().rotates_at());
            }
            other => panic!("expected the password, got {other:?}"),
        }
        assert!(agent.poll_event().is_none());
        assert!(agent.poll_event().is_none());
    }

    #[test]
    fn a_report_that_no_broker_takes_comes_back_as_an_event() {
        let key =
            std::env::temp_dir().join(format!("deskwire-lan-agent-{}.key", std::process::id()));
        let config = LanAgentConfig {
            // Nothing listens on the discard port: the report fails at once.
            report_to: Some(PasswordReportTo {
                brokers: vec!["ws://127.0.0.1:9".into()],
                device_key: key.clone(),
            }),
            report_timeout: Duration::from_secs(2),
            ..quiet()
        };
        let mut agent = LanAgent::start(config).unwrap();
        assert!(agent.device_id().is_some_and(|id| id.starts_with("dev-")));
        assert!(matches!(
            agent.poll_event(),
            Some(LanAgentEvent::Password { .. })
        ));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let outcome = loop {
            if let Some(e) = agent.poll_event() {
                break e;
            }
            assert!(std::time::Instant::now() < deadline, "no report outcome");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(
            matches!(
                outcome,
                LanAgentEvent::PasswordNotReported(PasswordReportError::Broker(_))
            ),
            "{outcome:?}"
        );
        let _ = std::fs::remove_file(&key);
    }

    #[test]
    fn bad_settings_are_refused_before_anything_starts() {
        let long = LanAgentConfig {
            name: "x".repeat(64),
            announce: true,
            ..LanAgentConfig::default()
        };
        assert!(matches!(
            LanAgent::start(long),
            Err(LanAgentError::Name { .. })
        ));
        let nobody = LanAgentConfig {
            report_to: Some(PasswordReportTo {
                brokers: vec![],
                device_key: "/nonexistent/key".into(),
            }),
            ..quiet()
        };
        assert!(matches!(
            LanAgent::start(nobody),
            Err(LanAgentError::NoBroker)
        ));
    }

    #[test]
    fn once_serves_one_session_and_otherwise_every_one() {
        let mut once = LanAgent::start(LanAgentConfig {
            once: true,
            ..quiet()
        })
        .unwrap();
        assert!(once.serves_another());
        once.sessions = 1;
        assert!(!once.serves_another());
        let mut always = LanAgent::start(quiet()).unwrap();
        always.sessions = 5;
        assert!(always.serves_another());
    }
}
