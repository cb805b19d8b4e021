//! Pairing at the technician's end: drive `deskwire_session::pairing::ViewerPairing` (create
//! the session or greet a LAN target, the key exchange, administrator credentials, a target
//! whose offer verifies) over the signalling connection; re-attach to the code if the broker
//! goes away meanwhile.

use std::time::{Duration, Instant};

use deskwire_signal::{BrokerMessage, ClientMessage, ConnectionCode, UnixMillis};

use super::{Command, ViewerTask};
use crate::config::ViewerRoute;
use crate::signalling::Signalling;
use crate::{DisconnectReason, ViewerEvent};
use deskwire_session::pairing::{
    PairingEnd, PairingRoute, ViewerPairing, ViewerPairingConfig, ViewerPairingEvent,
};

impl ViewerTask {
    /// Drive the pairing core until a target's offer verifies: open the route, report the
    /// code, run the key exchange, answer a request for credentials. Returns the core (it
    /// MACs the answer next), the verified offer and when the target joined.
    ///
    /// The code's secret half is drawn here and never sent to the broker. An offer whose
    /// MAC does not verify (a mistyped secret, or a broker in the middle) is reported to the
    /// broker, which unpairs that target; this side waits for the next one.
    pub(super) async fn pair(
        &mut self,
        sig: &mut Signalling,
    ) -> Result<(ViewerPairing, String, Instant), DisconnectReason> {
        let clock = Instant::now();
        let mut core = ViewerPairing::new(
            ViewerPairingConfig {
                route: self.route(),
                admin: self
                    .config
                    .admin
                    .as_ref()
                    .map(|a| (a.user.clone(), a.password.clone())),
                timeout: self.config.connect_timeout,
                code_secret: rand::random_range(0..ConnectionCode::SECRET_SPACE),
                credentials_nonce: rand::random(),
                unix_at_start: UnixMillis::now(),
            },
            Duration::ZERO,
        );
        loop {
            let sent = sig.send_all(|| core.poll_transmit()).await;
            while let Some(ev) = core.poll_event() {
                let ev = match ev {
                    ViewerPairingEvent::Code { code, expires_at } => {
                        ViewerEvent::Code { code, expires_at }
                    }
                    ViewerPairingEvent::PeerJoined => ViewerEvent::PeerJoined,
                    ViewerPairingEvent::AwaitingConsent {
                        timeout,
                        starts_on_its_own,
                        by_computer,
                    } => ViewerEvent::AwaitingConsent {
                        timeout,
                        starts_on_its_own,
                        by_computer,
                    },
                    ViewerPairingEvent::ConsentDecided { decision } => {
                        ViewerEvent::ConsentDecided { decision }
                    }
                    ViewerPairingEvent::VerificationFailed { why } => {
                        ViewerEvent::VerificationFailed { why }
                    }
                    ViewerPairingEvent::Offer { sdp, joined_at } => {
                        sent.map_err(DisconnectReason::from)?;
                        return Ok((core, sdp, clock + joined_at));
                    }
                    ViewerPairingEvent::Ended(why) => return Err(pairing_end(why)),
                };
                self.events.emit_important(ev);
            }
            sent.map_err(DisconnectReason::from)?;
            let deadline = core
                .poll_timeout()
                .map(|t| tokio::time::Instant::from_std(clock + t));
            tokio::select! {
                msg = sig.recv() => match msg {
                    Ok(msg) => core.handle_broker(clock.elapsed(), msg),
                    // The broker went away while the code waits for the target: re-attach
                    // to the same code, which the user may be typing right now.
                    Err(e) => match core.handle_broker_lost() {
                        Some(ticket) => {
                            tracing::warn!(error = %crate::with_causes(&e), "lost the broker while the code waits; re-attaching");
                            *sig = self.resume(ticket.code, &ticket.token, ticket.expires_at).await?;
                        }
                        None => return Err(DisconnectReason::from(e)),
                    },
                },
                cmd = self.commands.recv() => {
                    if matches!(cmd, Some(Command::Shutdown) | None) {
                        return Err(DisconnectReason::Local);
                    }
                }
                _ = tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)), if deadline.is_some() => {
                    core.handle_timeout(clock.elapsed());
                }
            }
        }
    }

    /// How this configuration reaches its target.
    fn route(&self) -> PairingRoute {
        let config = &self.config;
        let token = || config.token.clone().unwrap_or_default();
        match &config.route {
            ViewerRoute::Lan(t) => PairingRoute::Lan {
                password: t.password.clone(),
                grant: t.grant.as_ref().map(|g| (g.id, g.secret)),
            },
            ViewerRoute::Unattended(u) => PairingRoute::Unattended {
                token: token(),
                device: u.device.clone(),
                grant: u.ticket.id,
                secret: u.ticket.secret,
            },
            ViewerRoute::Adhoc(a) => PairingRoute::Adhoc {
                token: token(),
                session: a.session,
                secret: a.link.secret,
            },
            ViewerRoute::Code => PairingRoute::Code {
                token: config.token.clone(),
                resumable: config.resumable,
            },
        }
    }

    /// Reconnect to the broker and re-attach to `code` with its resume token, retrying
    /// (100 ms, doubling to 2 s) until the code expires or the broker refuses it.
    async fn resume(
        &mut self,
        code: ConnectionCode,
        token: &str,
        expires: Option<UnixMillis>,
    ) -> Result<Signalling, DisconnectReason> {
        self.events.emit_important(ViewerEvent::BrokerLost);
        let until = expires.unwrap_or_else(|| UnixMillis::now().plus(self.config.connect_timeout));
        let mut wait = Duration::from_millis(100);
        loop {
            if UnixMillis::now() >= until {
                return Err(DisconnectReason::Broker(
                    "lost the broker, and the code expired before it came back".into(),
                ));
            }
            match Signalling::connect(&self.config.broker, self.config.connect_timeout).await {
                Ok(mut sig) => {
                    let ask = ClientMessage::Resume {
                        session: code.session().to_string(),
                        resume: token.to_owned(),
                    };
                    let answer = match sig.send(&ask).await {
                        Ok(()) => sig.recv().await,
                        Err(e) => Err(e),
                    };
                    match answer {
                        Ok(BrokerMessage::SessionCreated { session, .. })
                            if session == code.session() =>
                        {
                            tracing::info!("re-attached to the code after losing the broker");
                            self.events.emit_important(ViewerEvent::BrokerResumed);
                            return Ok(sig);
                        }
                        Ok(BrokerMessage::Error { message }) => {
                            return Err(DisconnectReason::Broker(format!(
                                "the broker is back but the code is not: {message}"
                            )))
                        }
                        Ok(other) => {
                            return Err(DisconnectReason::Broker(format!(
                                "unexpected answer to resume: {other:?}"
                            )))
                        }
                        Err(e) => {
                            tracing::debug!(error = %crate::with_causes(&e), "the broker is not back yet")
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %crate::with_causes(&e), "the broker is not back yet")
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                cmd = self.commands.recv() => {
                    if matches!(cmd, Some(Command::Shutdown) | None) {
                        return Err(DisconnectReason::Local);
                    }
                }
            }
            wait = (wait * 2).min(Duration::from_secs(2));
        }
    }
}

/// Why a pairing attempt ended, as the session's end.
pub(super) fn pairing_end(why: PairingEnd) -> DisconnectReason {
    match why {
        PairingEnd::TimedOut(what) => DisconnectReason::Broker(what.into()),
        other => other.into(),
    }
}
