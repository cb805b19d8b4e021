//! Connecting: the code, the key exchange and confirmation, the user's consent, then the
//! offer and answer (each MACed) until the channels open. Nothing reaches the peer
//! connection before both the code and the user said yes.

use std::time::{Duration, Instant};

use deskwire_signal::lan::LanPassword;
use deskwire_signal::pake::Pake;
use deskwire_signal::{
    BrokerMessage, ClientMessage, ConnectionCode, JoinRefusal, PeerSignal, PolicyAcceptance,
    SessionPolicy,
};
use tokio::sync::mpsc;
use webrtc::peer_connection::{RTCPeerConnectionState, RTCSessionDescription};

use super::{Command, HostTask, Negotiation, Wait, NUDGE_INTERVAL};
use crate::signalling::Signalling;
use crate::transport::{self, Channel, NetEvent, Pc};
use crate::{DisconnectReason, HostEvent, SessionError};
use deskwire_session::consent::{AcceptanceMode, ConsentOutcome, ConsentPrompt};
use deskwire_session::wire::ByeReason;

/// How long to wait before joining again while the technician reconnects, and how often.
const AWAY_RETRY: Duration = Duration::from_millis(500);
const MAX_AWAY_RETRIES: u32 = 60;

/// What the two peers both know, which the PAKE binds the session to.
pub(super) enum Secret {
    /// The connection code the broker accepted (its session half).
    Code(ConnectionCode),
    /// This LAN target's password.
    Lan(LanPassword),
    /// An unattended-access grant's number and secret.
    Grant(u32, [u8; 16]),
    /// An ad-hoc call's code and the invitation link's secret.
    Adhoc(deskwire_signal::SessionCode, [u8; 16]),
}

impl Secret {
    fn start(&self) -> (Pake, String) {
        match self {
            Secret::Code(code) => Pake::start(code),
            Secret::Lan(password) => Pake::start_lan(password),
            Secret::Grant(id, secret) => Pake::start_grant(*id, secret),
            Secret::Adhoc(session, secret) => Pake::start_adhoc(*session, secret),
        }
    }
}

/// What one attempt to connect starts from.
pub(super) struct Attempt<'a> {
    /// The shared secret.
    pub(super) secret: Secret,
    /// This side allows control.
    pub(super) control: bool,
    /// The technician's group policy, from a broker with accounts.
    pub(super) policy: Option<&'a SessionPolicy>,
    /// Under an unattended-access grant: nobody is asked.
    pub(super) unattended: bool,
    /// The technician must present one of these accounts' name and password.
    pub(super) admin: Option<crate::accounts::AdminAccounts>,
}

impl HostTask {
    /// Send the code (if any) until the broker accepts one, the user cancels or the broker
    /// fails; returns the code that was accepted.
    pub(super) async fn join(
        &mut self,
        sig: &mut Signalling,
        first: Option<ConnectionCode>,
        control: &mut bool,
    ) -> Wait<(ConnectionCode, Option<SessionPolicy>)> {
        // Only the broker's half of the code goes to the broker.
        let device = self.device.as_ref();
        let join = |code: ConnectionCode| ClientMessage::Join {
            code: code.session().to_string(),
            device: device.map(|k| k.prove(code.session())),
        };
        let mut pending = first;
        let mut away_retries = 0u32;
        let mut retry_at: Option<tokio::time::Instant> = None;
        if let Some(code) = pending {
            if let Err(e) = sig.send(&join(code)).await {
                return Wait::End(DisconnectReason::from(e));
            }
        }
        loop {
            tokio::select! {
                msg = sig.recv() => match msg {
                    Ok(BrokerMessage::Joined { policy }) => match pending {
                        Some(code) => return Wait::Got((code, policy)),
                        None => return Wait::End(DisconnectReason::Broker("joined without a code".into())),
                    },
                    // The technician's side is re-attaching after a broker restart: the
                    // code still works, so send it again shortly rather than asking the
                    // user to retype it (for up to half a minute).
                    Ok(BrokerMessage::JoinRefused { reason: JoinRefusal::ControllerAway, message })
                        if away_retries < MAX_AWAY_RETRIES =>
                    {
                        away_retries += 1;
                        tracing::info!(message, "the technician is reconnecting; joining again shortly");
                        retry_at = Some(tokio::time::Instant::now() + AWAY_RETRY);
                    }
                    Ok(BrokerMessage::JoinRefused { reason, message }) => {
                        self.events.emit_important(HostEvent::CodeRefused { reason, message });
                    }
                    Ok(BrokerMessage::Error { message }) => {
                        return Wait::End(DisconnectReason::Broker(message))
                    }
                    Ok(other) => tracing::debug!(?other, "ignored while joining"),
                    Err(e) => return Wait::End(DisconnectReason::from(e)),
                },
                _ = tokio::time::sleep_until(retry_at.unwrap_or_else(tokio::time::Instant::now)), if retry_at.is_some() => {
                    retry_at = None;
                    if let Some(code) = pending {
                        if let Err(e) = sig.send(&join(code)).await {
                            return Wait::End(DisconnectReason::from(e));
                        }
                    }
                }
                cmd = self.commands.recv() => match cmd {
                    Some(Command::TryCode(code)) => {
                        away_retries = 0;
                        retry_at = None;
                        pending = Some(code);
                        if let Err(e) = sig.send(&join(code)).await {
                            return Wait::End(DisconnectReason::from(e));
                        }
                    }
                    Some(Command::SetControl(c)) => *control = c && !self.config.view_only,
                    Some(Command::AnswerConsent(_) | Command::AnswerGrant(..)) => {}
                    Some(Command::Shutdown) | None => return Wait::End(DisconnectReason::Local),
                },
            }
        }
    }

    /// Join an ad-hoc call's code, once: it was made for this host, so a refusal ends the
    /// call instead of asking the user for another code.
    pub(super) async fn join_call(
        &mut self,
        sig: &mut Signalling,
        session: deskwire_signal::SessionCode,
    ) -> Wait<Option<SessionPolicy>> {
        let join = ClientMessage::Join {
            code: session.to_string(),
            device: self.device.as_ref().map(|k| k.prove(session)),
        };
        if let Err(e) = sig.send(&join).await {
            return Wait::End(DisconnectReason::from(e));
        }
        loop {
            tokio::select! {
                msg = sig.recv() => match msg {
                    Ok(BrokerMessage::Joined { policy }) => return Wait::Got(policy),
                    Ok(BrokerMessage::JoinRefused { message, .. } | BrokerMessage::Error { message }) => {
                        return Wait::End(DisconnectReason::Broker(message))
                    }
                    Ok(other) => tracing::debug!(?other, "ignored while joining a call"),
                    Err(e) => return Wait::End(DisconnectReason::from(e)),
                },
                cmd = self.commands.recv() => match cmd {
                    Some(Command::Shutdown) | None => return Wait::End(DisconnectReason::Local),
                    Some(_) => {}
                },
            }
        }
    }

    /// Offer, wait for the answer, and wait for the three channels to open.
    pub(super) async fn negotiate(
        &mut self,
        pc: &Pc,
        net_tx: &mpsc::UnboundedSender<NetEvent>,
        net_rx: &mut mpsc::UnboundedReceiver<NetEvent>,
        sig: &mut Signalling,
        attempt: Attempt<'_>,
    ) -> Result<(transport::Channels, bool), Negotiation> {
        let Attempt {
            secret,
            control,
            policy,
            unattended,
            admin,
        } = attempt;
        let end = Negotiation::End;
        let transport_err = |e: SessionError| end(DisconnectReason::Transport(e.to_string()));
        let broker_err = |e: SessionError| end(DisconnectReason::from(e));
        // Key exchange first, then the controller's key confirmation: only a technician who
        // knows the whole code gets as far as a question to the user.
        let (pake, msg) = secret.start();
        sig.send(&ClientMessage::Relay {
            signal: PeerSignal::Pake { msg },
        })
        .await
        .map_err(broker_err)?;
        let deadline = tokio::time::Instant::now() + self.config.connect_timeout;
        let mut pake = Some(pake);
        let mut keys = None;
        let keys = loop {
            match self.next_signal(sig, deadline).await? {
                PeerSignal::Pake { msg } => {
                    let Some(p) = pake.take() else {
                        return Err(self.unverified(sig, "a second key-exchange message").await);
                    };
                    match p.finish(&msg) {
                        Ok(k) => keys = Some(k),
                        Err(e) => return Err(self.unverified(sig, &e.to_string()).await),
                    }
                }
                PeerSignal::Confirm { mac } => match keys.take() {
                    Some(k) if k.verify_confirm(&mac).is_ok() => break k,
                    _ => {
                        return Err(self
                            .unverified(sig, "the key confirmation does not match")
                            .await)
                    }
                },
                other => tracing::debug!(?other, "ignored before the key confirmation"),
            }
        };
        if let Some(accounts) = admin {
            self.admin_credentials(sig, &keys, accounts, deadline)
                .await?;
        }
        let granted = if unattended {
            tracing::info!(
                "unattended session (a grant, or an activated ad-hoc session): nobody is asked"
            );
            // The technician's group still decides whether they may control.
            control && policy.is_none_or(|p| p.control)
        } else {
            self.consent(sig, control, policy).await?
        };

        let channels = transport::create_channels(pc, &self.config.transport)
            .await
            .map_err(transport_err)?;
        for channel in Channel::ALL {
            transport::pump(
                &self.handle,
                channel,
                channels.get(channel).clone(),
                net_tx.clone(),
            );
        }
        let offer = pc.create_offer(None).await.map_err(|e| {
            end(DisconnectReason::Transport(format!(
                "cannot create an offer: {e}"
            )))
        })?;
        pc.set_local_description(offer).await.map_err(|e| {
            end(DisconnectReason::Transport(format!(
                "cannot set the offer: {e}"
            )))
        })?;
        let mut backlog = Vec::new();
        let sdp = transport::gathered_sdp(pc, net_rx, &mut backlog, self.config.connect_timeout)
            .await
            .map_err(transport_err)?;
        let mac = keys.mac_offer(&sdp);
        sig.send(&ClientMessage::Relay {
            signal: PeerSignal::Offer { sdp, mac },
        })
        .await
        .map_err(broker_err)?;
        let deadline = tokio::time::Instant::now() + self.config.connect_timeout;
        let answer = loop {
            match self.next_signal(sig, deadline).await? {
                PeerSignal::Answer { sdp, mac } => {
                    if let Err(e) = keys.verify_answer(&sdp, &mac) {
                        return Err(self.unverified(sig, &e.to_string()).await);
                    }
                    break sdp;
                }
                other => tracing::debug!(?other, "ignored while waiting for the answer"),
            }
        };
        let answer = RTCSessionDescription::answer(answer).map_err(|e| {
            end(DisconnectReason::Transport(format!(
                "the answer is not valid SDP: {e}"
            )))
        })?;
        pc.set_remote_description(answer).await.map_err(|e| {
            end(DisconnectReason::Transport(format!(
                "cannot use the answer: {e}"
            )))
        })?;

        let mut open = 0;
        for ev in backlog {
            if matches!(ev, NetEvent::Open(_)) {
                open += 1;
            }
        }
        // webrtc 0.21's driver handles "DTLS is up" and "SCTP is up" after its write flush,
        // so the SCTP INIT and the channel-open messages those events queue would wait for
        // the driver's next timer (~200 ms each). Any channel call that wakes the driver
        // flushes them; re-setting the (default) low-water mark is such a call and changes
        // nothing. This side is the DTLS client (see `build_peer`), so it is the one with
        // queued handshake data and channel handles to poke.
        let mut nudge = tokio::time::interval(NUDGE_INTERVAL);
        // The controller may send (input, pings) as soon as its own channels are open,
        // which can be before all of ours are: keep that for the session, in order.
        let mut early = Vec::new();
        while open < 3 {
            tokio::select! {
                _ = nudge.tick() => {
                    let _ = channels.video.set_buffered_amount_low_threshold(0).await;
                }
                ev = net_rx.recv() => match ev {
                    Some(NetEvent::Open(_)) => open += 1,
                    Some(ev @ NetEvent::Message(..)) => early.push(ev),
                    Some(NetEvent::State(RTCPeerConnectionState::Failed)) => {
                        return Err(end(DisconnectReason::Transport("ICE failed".into())))
                    }
                    Some(_) => {}
                    None => return Err(end(DisconnectReason::Transport("the peer connection closed".into()))),
                },
                cmd = self.commands.recv() => {
                    if matches!(cmd, Some(Command::Shutdown) | None) {
                        return Err(end(DisconnectReason::Local));
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(end(DisconnectReason::Transport("the data channels did not open in time".into())))
                }
            }
        }
        if !early.is_empty() {
            // Nothing else runs on this thread until the next await: what is queued now
            // follows the early messages, so re-queueing all of it keeps the order.
            while let Ok(ev) = net_rx.try_recv() {
                early.push(ev);
            }
            tracing::debug!(
                n = early.len(),
                "messages that arrived while the channels opened"
            );
            for ev in early {
                let _ = net_tx.send(ev);
            }
        }
        Ok((channels, granted))
    }

    /// The next signal relayed from the controller, or how the attempt ended: unpaired by
    /// the broker after a failed verification (`Retry`), a bye, the peer leaving, shutdown,
    /// or `deadline`.
    async fn next_signal(
        &mut self,
        sig: &mut Signalling,
        deadline: tokio::time::Instant,
    ) -> Result<PeerSignal, Negotiation> {
        let end = Negotiation::End;
        loop {
            tokio::select! {
                msg = sig.recv() => match msg {
                    Ok(BrokerMessage::Relay { signal: PeerSignal::Bye { reason } }) => {
                        return Err(end(DisconnectReason::PeerBye { reason: ByeReason::Ended, detail: reason }))
                    }
                    Ok(BrokerMessage::Relay { signal }) => return Ok(signal),
                    // The controller found this side unverifiable and told the broker, which
                    // unpaired us: back to code entry, where the user hears why.
                    Ok(BrokerMessage::JoinRefused { reason, message }) => {
                        self.events.emit_important(HostEvent::CodeRefused { reason, message });
                        return Err(Negotiation::Retry);
                    }
                    Ok(BrokerMessage::PeerLeft {}) => return Err(end(DisconnectReason::PeerLeft)),
                    Ok(BrokerMessage::Error { message }) => return Err(end(DisconnectReason::Broker(message))),
                    Ok(other) => tracing::debug!(?other, "ignored while connecting"),
                    Err(e) => return Err(end(DisconnectReason::from(e))),
                },
                cmd = self.commands.recv() => {
                    if matches!(cmd, Some(Command::Shutdown) | None) {
                        return Err(end(DisconnectReason::Local));
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(end(DisconnectReason::Transport("the controller did not answer in time".into())))
                }
            }
        }
    }

    /// Ask the controller for an administrator's name and password, sealed under the PAKE
    /// key, and check them against this computer's own accounts.
    async fn admin_credentials(
        &mut self,
        sig: &mut Signalling,
        keys: &deskwire_signal::pake::SessionKeys,
        accounts: crate::accounts::AdminAccounts,
        deadline: tokio::time::Instant,
    ) -> Result<(), Negotiation> {
        let ask = ClientMessage::Relay {
            signal: PeerSignal::CredentialsRequired {},
        };
        sig.send(&ask)
            .await
            .map_err(|e| Negotiation::End(DisconnectReason::from(e)))?;
        let sealed = loop {
            match self.next_signal(sig, deadline).await? {
                PeerSignal::Credentials { sealed } => break sealed,
                other => tracing::debug!(?other, "ignored while waiting for credentials"),
            }
        };
        let (user, password) = match keys.open_credentials(&sealed) {
            Ok(pair) => pair,
            Err(e) => return Err(self.unverified(sig, &e.to_string()).await),
        };
        // Argon2 takes tens of milliseconds: off the network thread.
        let name = user.clone();
        let checked = tokio::task::spawn_blocking(move || accounts.verify(&user, &password)).await;
        match checked {
            Ok(Ok(true)) => {
                tracing::info!(user = name, "administrator credentials accepted");
                Ok(())
            }
            Ok(Ok(false)) => {
                tracing::warn!(user = name, "wrong administrator credentials");
                Err(Negotiation::BadCredentials)
            }
            Ok(Err(e)) => Err(Negotiation::End(DisconnectReason::Error(e.to_string()))),
            Err(e) => Err(Negotiation::End(DisconnectReason::Error(format!(
                "the credential check failed: {e}"
            )))),
        }
    }

    /// Ask the user per the acceptance mode; `Ok(control)` when the session may start.
    ///
    /// The broker's word (the technician's group policy) can only make this stricter than
    /// this side's own settings, never looser.
    async fn consent(
        &mut self,
        sig: &mut Signalling,
        control: bool,
        policy: Option<&SessionPolicy>,
    ) -> Result<bool, Negotiation> {
        let end = Negotiation::End;
        let clock = Instant::now();
        let mode = match policy {
            Some(p) => self.config.acceptance.stricter(broker_mode(p)),
            None => self.config.acceptance,
        };
        let control = control && policy.is_none_or(|p| p.control);
        let technician = policy.map(|p| p.technician.clone());
        let mut prompt = ConsentPrompt::new(mode, control, Duration::ZERO);
        if prompt.asks_the_user() {
            let timeout = prompt.deadline();
            let wait = ClientMessage::Relay {
                signal: PeerSignal::AwaitingConsent {
                    for_ms: timeout.as_millis() as u64,
                },
            };
            sig.send(&wait)
                .await
                .map_err(|e| end(DisconnectReason::from(e)))?;
            self.events.emit_important(HostEvent::ConsentRequested {
                mode,
                control,
                timeout,
                technician,
            });
        }
        loop {
            match prompt.poll(clock.elapsed()) {
                Some(ConsentOutcome::Granted { control }) => return Ok(control),
                Some(ConsentOutcome::Refused(why)) => {
                    tracing::info!(?why, "the session was not accepted");
                    let bye = ClientMessage::Relay {
                        signal: PeerSignal::Bye {
                            reason: why.message().into(),
                        },
                    };
                    let _ = sig.send(&bye).await;
                    return Err(end(DisconnectReason::Consent(why)));
                }
                None => {}
            }
            let deadline = tokio::time::Instant::from_std(clock + prompt.deadline());
            tokio::select! {
                cmd = self.commands.recv() => match cmd {
                    Some(Command::AnswerConsent(a)) => prompt.handle_answer(a),
                    Some(Command::Shutdown) | None => return Err(end(DisconnectReason::Local)),
                    Some(_) => {}
                },
                msg = sig.recv() => match msg {
                    Ok(BrokerMessage::PeerLeft {}) => return Err(end(DisconnectReason::PeerLeft)),
                    Ok(BrokerMessage::Relay { signal: PeerSignal::Bye { reason } }) => {
                        return Err(end(DisconnectReason::PeerBye { reason: ByeReason::Ended, detail: reason }))
                    }
                    Ok(other) => tracing::debug!(?other, "ignored while asking the user"),
                    Err(e) => return Err(end(DisconnectReason::from(e))),
                },
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
    }

    /// The controller's description (or key exchange) did not verify: report it to the
    /// broker, which unpairs this side and tells it why; then wait for another code.
    async fn unverified(&mut self, sig: &mut Signalling, why: &str) -> Negotiation {
        tracing::warn!(
            why,
            "the controller's description failed verification; nothing was connected"
        );
        match sig.send(&ClientMessage::VerificationFailed {}).await {
            Ok(()) => Negotiation::Retry,
            Err(e) => Negotiation::End(DisconnectReason::from(e)),
        }
    }
}

/// A group's acceptance policy as a mode.
fn broker_mode(p: &SessionPolicy) -> AcceptanceMode {
    let window = Duration::from_secs(u64::from(p.window_secs));
    match p.acceptance {
        PolicyAcceptance::Auto => AcceptanceMode::AllowAutomatically {
            reject_window: window,
        },
        PolicyAcceptance::Request => AcceptanceMode::AllowByRequest {
            timeout: window.max(Duration::from_secs(1)),
        },
        PolicyAcceptance::Deny => AcceptanceMode::Deny,
    }
}
