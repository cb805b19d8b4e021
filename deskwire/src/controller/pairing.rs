//! Pairing at the technician's end: create the session (or greet a LAN target), run the key
//! exchange, answer a request for administrator credentials, and wait for a target whose
//! offer verifies; re-attach to the code if the broker goes away meanwhile.

use std::time::{Duration, Instant};

use deskwire_signal::pake::{Pake, SessionKeys};
use deskwire_signal::{BrokerMessage, ClientMessage, ConnectionCode, PeerSignal, UnixMillis};

use super::{Command, ControllerTask, MAX_CONSENT_WAIT_MS};
use crate::signalling::Signalling;
use crate::{ControllerEvent, DisconnectReason, SessionError};
use deskwire_session::wire::ByeReason;

impl ControllerTask {
    /// Create the session, report the code, wait for a target whose offer verifies.
    ///
    /// The code's secret half is drawn here and never sent to the broker. An offer whose
    /// MAC does not verify (a mistyped secret, or a broker in the middle) is reported to the
    /// broker, which unpairs that target; this side waits for the next one.
    pub(super) async fn pair(
        &mut self,
        sig: &mut Signalling,
    ) -> Result<(String, SessionKeys, Instant), DisconnectReason> {
        let broker = |e: SessionError| DisconnectReason::from(e);
        // A LAN target answers as a broker would, starting at `peer_joined`; the password
        // takes the code's place.
        let lan = self.config.lan.as_ref().map(|t| t.password.clone());
        // A grant's number and secret: for a LAN target, or for an agent called through
        // the broker.
        let grant = self
            .config
            .lan
            .as_ref()
            .and_then(|t| t.grant.as_ref())
            .or(self.config.unattended.as_ref().map(|u| &u.ticket))
            .map(|g| (g.id, g.secret));
        let refused = |message: String| match lan {
            Some(_) => DisconnectReason::Lan(message),
            None => DisconnectReason::Broker(message),
        };
        let adhoc_secret = self.config.adhoc.as_ref().map(|a| a.link.secret);
        // A call (ad-hoc or unattended) gets a code made for its target, not for reading out.
        let called = adhoc_secret.is_some() || self.config.unattended.is_some();
        let token = self.config.token.clone();
        let opening = match (&lan, &self.config.unattended, &self.config.adhoc) {
            (Some(_), _, _) => None,
            (None, Some(u), _) => Some(ClientMessage::CallUnattended {
                token: token.unwrap_or_default(),
                device: u.device.clone(),
                grant: u.ticket.id,
            }),
            (None, None, Some(a)) => Some(ClientMessage::CallAdhoc {
                token: token.unwrap_or_default(),
                session: a.session,
            }),
            (None, None, None) => Some(ClientMessage::CreateSession {
                token,
                resumable: self.config.resumable,
            }),
        };
        if let Some(opening) = opening {
            sig.send(&opening).await.map_err(broker)?;
        }
        let mut expires: Option<UnixMillis> = None;
        let mut code: Option<ConnectionCode> = None;
        // Proves to a restarted broker that this side created the code.
        let mut resume: Option<String> = None;
        let mut joined_at: Option<Instant> = None;
        let mut pake: Option<Pake> = None;
        let mut keys: Option<SessionKeys> = None;
        // While the target's user is being asked, how long they may take.
        let mut consent_wait = Duration::ZERO;
        loop {
            // Before the target joins, the code's lifetime bounds the wait; after, the
            // connect timeout does (plus the time the target's user may take to answer).
            let wait = match (joined_at, expires) {
                (Some(t), _) => (t + self.config.connect_timeout + consent_wait)
                    .saturating_duration_since(Instant::now()),
                (None, Some(at)) => at.since(UnixMillis::now()) + Duration::from_secs(1),
                (None, None) => self.config.connect_timeout,
            };
            let mut failed: Option<String> = None;
            tokio::select! {
                msg = sig.recv() => match msg {
                    // The broker went away while the code waits for the target: re-attach
                    // to the same code, which the user may be typing right now.
                    Err(e) => match (joined_at, code, resume.clone()) {
                        (None, Some(full), Some(token)) => {
                            tracing::warn!(error = %e, "lost the broker while the code waits; re-attaching");
                            *sig = self.resume(full, &token, expires).await?;
                        }
                        _ => return Err(broker(e)),
                    },
                    Ok(msg) => match msg {
                    BrokerMessage::SessionCreated { session, expires_at, resume: token } => {
                        resume = token;
                        let secret = rand::random_range(0..ConnectionCode::SECRET_SPACE);
                        let full = ConnectionCode::new(session, secret)
                            .ok_or_else(|| DisconnectReason::Error("secret out of range".into()))?;
                        code = Some(full);
                        expires = Some(expires_at);
                        if !called {
                            self.events.emit_important(ControllerEvent::Code { code: full, expires_at });
                        }
                    }
                    BrokerMessage::PeerJoined {} => {
                        if lan.is_some() {
                            // A LAN target learns first which secret this side holds.
                            let hello = PeerSignal::LanHello { grant: grant.map(|g| g.0) };
                            sig.send(&ClientMessage::Relay { signal: hello }).await.map_err(broker)?;
                        }
                        let (p, msg) = match (&lan, code, grant, adhoc_secret) {
                            (_, _, Some((id, secret)), _) => Pake::start_grant(id, &secret),
                            (Some(password), _, None, _) => Pake::start_lan(password),
                            (None, Some(full), None, Some(secret)) => {
                                Pake::start_adhoc(full.session(), &secret)
                            }
                            (None, Some(full), None, None) => Pake::start(&full),
                            (None, None, None, _) => {
                                return Err(DisconnectReason::Broker("peer_joined before a code".into()))
                            }
                        };
                        joined_at = Some(Instant::now());
                        pake = Some(p);
                        keys = None;
                        sig.send(&ClientMessage::Relay { signal: PeerSignal::Pake { msg } })
                            .await
                            .map_err(broker)?;
                        self.events.emit_important(ControllerEvent::PeerJoined);
                    }
                    BrokerMessage::Relay { signal: PeerSignal::Pake { msg } } => {
                        match pake.take().map(|p| p.finish(&msg)) {
                            Some(Ok(k)) => {
                                // Prove we hold the key before the target asks its user.
                                let mac = k.mac_confirm();
                                sig.send(&ClientMessage::Relay { signal: PeerSignal::Confirm { mac } })
                                    .await
                                    .map_err(broker)?;
                                keys = Some(k);
                            }
                            Some(Err(e)) => failed = Some(e.to_string()),
                            None => failed = Some("an unexpected key-exchange message".into()),
                        }
                    }
                    BrokerMessage::Relay { signal: PeerSignal::CredentialsRequired {} } => {
                        let (Some(k), Some(admin)) = (keys.as_ref(), self.config.admin.as_ref()) else {
                            let why = "the target asks for one of its administrators' name and password";
                            let _ = sig.send(&ClientMessage::Relay { signal: PeerSignal::Bye { reason: "no administrator credentials".into() } }).await;
                            return Err(refused(why.into()));
                        };
                        let sealed = k.seal_credentials(&admin.user, &admin.password, rand::random());
                        sig.send(&ClientMessage::Relay { signal: PeerSignal::Credentials { sealed } })
                            .await
                            .map_err(broker)?;
                    }
                    BrokerMessage::Relay { signal: PeerSignal::AwaitingConsent { for_ms } } => {
                        let timeout = Duration::from_millis(for_ms.min(MAX_CONSENT_WAIT_MS));
                        consent_wait = timeout;
                        joined_at = Some(Instant::now());
                        self.events.emit_important(ControllerEvent::AwaitingConsent { timeout });
                    }
                    // One side found the other unverifiable (a mistyped secret, or
                    // tampering): the broker unpaired the target; the code may be typed again.
                    BrokerMessage::AttemptFailed { failures } => {
                        let why = format!("attempt {failures} failed verification; nothing was connected");
                        self.events.emit_important(ControllerEvent::VerificationFailed { why });
                        (pake, keys, joined_at, consent_wait) = (None, None, None, Duration::ZERO);
                    }
                    BrokerMessage::Relay { signal: PeerSignal::Offer { sdp, mac } } => {
                        match keys.as_ref().map(|k| k.verify_offer(&sdp, &mac)) {
                            Some(Ok(())) => {
                                let at = joined_at.unwrap_or_else(Instant::now);
                                let k = keys.take().ok_or_else(|| DisconnectReason::Error("no keys".into()))?;
                                return Ok((sdp, k, at));
                            }
                            Some(Err(e)) => failed = Some(e.to_string()),
                            None => failed = Some("an offer before the key exchange".into()),
                        }
                    }
                    BrokerMessage::Relay { signal: PeerSignal::Bye { reason } } => {
                        return Err(DisconnectReason::PeerBye { reason: ByeReason::Ended, detail: reason });
                    }
                    BrokerMessage::PeerLeft {} => return Err(DisconnectReason::PeerLeft),
                    BrokerMessage::Error { message } => return Err(refused(message)),
                    // Only a LAN target says this to a controller: a wrong password, or
                    // this address must wait after earlier wrong ones.
                    BrokerMessage::JoinRefused { message, .. } if lan.is_some() => {
                        return Err(DisconnectReason::Lan(message));
                    }
                    other => tracing::debug!(?other, "ignored while pairing"),
                },
                },
                cmd = self.commands.recv() => {
                    if matches!(cmd, Some(Command::Shutdown) | None) {
                        return Err(DisconnectReason::Local);
                    }
                }
                _ = tokio::time::sleep(wait) => {
                    let what = if joined_at.is_some() { "no offer from the target in time" } else { "the code expired before anyone joined" };
                    return Err(DisconnectReason::Broker(what.into()));
                }
            }
            if let Some(why) = failed {
                // The broker answers with attempt_failed, handled above.
                tracing::warn!(
                    why,
                    "the target's offer failed verification; nothing was connected"
                );
                sig.send(&ClientMessage::VerificationFailed {})
                    .await
                    .map_err(broker)?;
                if lan.is_some() {
                    // No broker to pair another attempt: this one is over.
                    return Err(DisconnectReason::Lan(format!(
                        "the target could not be verified ({why}); nothing was connected"
                    )));
                }
                (pake, keys) = (None, None);
            }
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
        self.events.emit_important(ControllerEvent::BrokerLost);
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
                            self.events.emit_important(ControllerEvent::BrokerResumed);
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
                        Err(e) => tracing::debug!(error = %e, "the broker is not back yet"),
                    }
                }
                Err(e) => tracing::debug!(error = %e, "the broker is not back yet"),
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
