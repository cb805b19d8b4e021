//! Connecting: the code, then the pairing order (key exchange and confirmation, credentials,
//! the user's consent, the MACed offer and answer), until the channels open. The order is
//! `deskwire_session::pairing::AgentPairing`'s; this file does its I/O. Nothing reaches the
//! peer connection before both the code and the user said yes.

use std::time::{Duration, Instant};

use deskwire_signal::{ConnectionCode, SessionPolicy};
use tokio::sync::mpsc;
use webrtc::peer_connection::{RTCPeerConnectionState, RTCSessionDescription};

use super::{AgentTask, Command, Negotiation, Wait, NUDGE_INTERVAL};
use crate::signalling::Signalling;
use crate::transport::{self, Channel, NetEvent, Pc};
use crate::{AgentEvent, DisconnectReason, SessionError};
use deskwire_session::pairing::{
    AgentPairing, AgentPairingConfig, AgentPairingEvent, CodeJoin, CodeJoinEvent, PairingEnd,
    PairingSecret,
};

/// What one attempt to connect starts from.
pub(super) struct Attempt<'a> {
    /// The shared secret.
    pub(super) secret: PairingSecret,
    /// This side allows control.
    pub(super) control: bool,
    /// The technician's group policy, from a broker with accounts.
    pub(super) policy: Option<&'a SessionPolicy>,
    /// Under an unattended-access grant: nobody is asked.
    pub(super) unattended: bool,
    /// The technician must present one of these accounts' name and password.
    pub(super) admin: Option<crate::accounts::AdminAccounts>,
    /// How long the viewer may take for each of its steps.
    pub(super) step_timeout: Duration,
    /// How long the viewer may take to prove the secret, from the start.
    pub(super) proof_timeout: Duration,
}

impl AgentTask {
    /// Send the code (if any) until the broker accepts one, the user cancels or the broker
    /// fails; returns the code that was accepted. The rules are `CodeJoin`'s.
    pub(super) async fn join(
        &mut self,
        sig: &mut Signalling,
        first: Option<ConnectionCode>,
        control: &mut bool,
    ) -> Wait<(ConnectionCode, Option<SessionPolicy>)> {
        let core = CodeJoin::code(first, self.device.clone());
        match self.drive_join(sig, core, control).await {
            Wait::Got((Some(code), policy)) => Wait::Got((code, policy)),
            Wait::Got((None, _)) => {
                Wait::End(DisconnectReason::Error("joined without a code".into()))
            }
            Wait::End(r) => Wait::End(r),
        }
    }

    /// Join an ad-hoc call's code, once: it was made for this agent, so a refusal ends the
    /// call instead of asking the user for another code.
    pub(super) async fn join_call(
        &mut self,
        sig: &mut Signalling,
        session: deskwire_signal::SessionCode,
    ) -> Wait<Option<SessionPolicy>> {
        let core = CodeJoin::call(session, self.device.clone());
        let mut control = false;
        match self.drive_join(sig, core, &mut control).await {
            Wait::Got((_, policy)) => Wait::Got(policy),
            Wait::End(r) => Wait::End(r),
        }
    }

    async fn drive_join(
        &mut self,
        sig: &mut Signalling,
        mut core: CodeJoin,
        control: &mut bool,
    ) -> Wait<(Option<ConnectionCode>, Option<SessionPolicy>)> {
        let clock = Instant::now();
        loop {
            if let Err(e) = sig.send_all(|| core.poll_transmit()).await {
                return Wait::End(DisconnectReason::from(e));
            }
            if let Some(ev) = core.poll_event() {
                match ev {
                    CodeJoinEvent::Joined { code, policy } => return Wait::Got((code, policy)),
                    CodeJoinEvent::Refused { reason, message } => self
                        .events
                        .emit_important(AgentEvent::CodeRefused { reason, message }),
                    CodeJoinEvent::Ended(why) => return Wait::End(why.into()),
                }
                continue;
            }
            let deadline = core
                .poll_timeout()
                .map(|t| tokio::time::Instant::from_std(clock + t));
            tokio::select! {
                msg = sig.recv() => match msg {
                    Ok(msg) => core.handle_broker(clock.elapsed(), msg),
                    Err(e) => return Wait::End(DisconnectReason::from(e)),
                },
                _ = tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)), if deadline.is_some() => {
                    core.handle_timeout(clock.elapsed());
                }
                cmd = self.commands.recv() => match cmd {
                    Some(Command::TryCode(code)) => core.handle_code(code),
                    Some(Command::SetControl(c)) => *control = c && !self.config.view_only,
                    Some(Command::AnswerConsent(_) | Command::AnswerGrant(..)) => {}
                    Some(Command::Shutdown) | None => return Wait::End(DisconnectReason::Local),
                },
            }
        }
    }

    /// Drive the pairing core through one attempt: key exchange, confirmation, credentials,
    /// consent, then the offer, the answer, and the three channels opening.
    /// Run one pairing attempt to an open session or its refusal. The peer connection is
    /// built only at the offer, after the secret (and the user's consent) checked out:
    /// someone who cannot prove the code or password costs no peer connection.
    pub(super) async fn negotiate(
        &mut self,
        peer: &mut LazyPeer,
        sig: &mut Signalling,
        attempt: Attempt<'_>,
    ) -> Result<(transport::Channels, bool), Negotiation> {
        let Attempt {
            secret,
            control,
            policy,
            unattended,
            admin,
            step_timeout,
            proof_timeout,
        } = attempt;
        let end = Negotiation::End;
        let broker_err = |e: SessionError| end(DisconnectReason::from(e));
        let clock = Instant::now();
        let mut core = AgentPairing::new(
            AgentPairingConfig {
                secret,
                control,
                policy: policy.cloned(),
                unattended,
                require_admin: admin.is_some(),
                acceptance: self.config.acceptance,
                timeout: step_timeout,
                proof_timeout,
            },
            Duration::ZERO,
        );
        let mut admin = admin;
        let mut offered: Option<(transport::Channels, Vec<NetEvent>)> = None;
        loop {
            if let Err(e) = sig.send_all(|| core.poll_transmit()).await {
                // The attempt's own ending (a refusal whose goodbye could not be sent)
                // says more than the broker's failure.
                while let Some(ev) = core.poll_event() {
                    if let AgentPairingEvent::Ended(why) = ev {
                        return Err(negotiation_end(why));
                    }
                }
                return Err(broker_err(e));
            }
            if let Some(ev) = core.poll_event() {
                match ev {
                    AgentPairingEvent::CheckCredentials { user, password } => {
                        let accounts = admin.take().ok_or_else(|| {
                            end(DisconnectReason::Error("credentials checked twice".into()))
                        })?;
                        let ok = check_credentials(accounts, user, password).await?;
                        core.handle_credentials_checked(clock.elapsed(), ok);
                    }
                    AgentPairingEvent::AskUser {
                        mode,
                        control,
                        timeout,
                        technician,
                    } => self.events.emit_important(AgentEvent::ConsentRequested {
                        mode,
                        control,
                        timeout,
                        technician,
                    }),
                    AgentPairingEvent::MakeOffer => {
                        let (pc, net_tx, net_rx) = peer.get(self).await?;
                        let (channels, backlog, sdp) = self.make_offer(pc, net_tx, net_rx).await?;
                        offered = Some((channels, backlog));
                        core.handle_local_offer(clock.elapsed(), sdp);
                    }
                    AgentPairingEvent::Connected { answer, control } => {
                        let (channels, backlog) = offered.take().ok_or_else(|| {
                            end(DisconnectReason::Error("an answer before the offer".into()))
                        })?;
                        let (pc, net_tx, net_rx) = peer.get(self).await?;
                        self.open(pc, net_tx, net_rx, &channels, backlog, answer)
                            .await?;
                        return Ok((channels, control));
                    }
                    AgentPairingEvent::Unpaired { reason, message } => {
                        self.events
                            .emit_important(AgentEvent::CodeRefused { reason, message });
                    }
                    AgentPairingEvent::Ended(why) => return Err(negotiation_end(why)),
                }
                continue;
            }
            let deadline = core
                .poll_timeout()
                .map(|t| tokio::time::Instant::from_std(clock + t));
            tokio::select! {
                msg = sig.recv() => match msg {
                    Ok(msg) => core.handle_broker(clock.elapsed(), msg),
                    Err(e) => return Err(broker_err(e)),
                },
                cmd = self.commands.recv() => match cmd {
                    Some(Command::AnswerConsent(a)) => core.handle_consent(clock.elapsed(), a),
                    Some(Command::Shutdown) | None => return Err(end(DisconnectReason::Local)),
                    Some(_) => {}
                },
                _ = tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)), if deadline.is_some() => {
                    core.handle_timeout(clock.elapsed());
                }
            }
        }
    }

    /// Everyone said yes: create the channels, start pumping them, and gather the offer.
    async fn make_offer(
        &mut self,
        pc: &Pc,
        net_tx: &mpsc::UnboundedSender<NetEvent>,
        net_rx: &mut mpsc::UnboundedReceiver<NetEvent>,
    ) -> Result<(transport::Channels, Vec<NetEvent>, String), Negotiation> {
        let end = Negotiation::End;
        let transport_err = |e: SessionError| end(DisconnectReason::from(e));
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
        Ok((channels, backlog, sdp))
    }

    /// The answer verified: use it, and wait for the three channels to open.
    async fn open(
        &mut self,
        pc: &Pc,
        net_tx: &mpsc::UnboundedSender<NetEvent>,
        net_rx: &mut mpsc::UnboundedReceiver<NetEvent>,
        channels: &transport::Channels,
        backlog: Vec<NetEvent>,
        answer: String,
    ) -> Result<(), Negotiation> {
        let end = Negotiation::End;
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
        let deadline = tokio::time::Instant::now() + self.config.connect_timeout;
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
        // The viewer may send (input, pings) as soon as its own channels are open, which
        // can be before all of ours are: keep that for the session, in order.
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
        Ok(())
    }
}

/// Check a technician's administrator name and password against this computer's accounts.
/// Argon2 takes tens of milliseconds: off the network thread.
async fn check_credentials(
    accounts: crate::accounts::AdminAccounts,
    user: String,
    password: String,
) -> Result<bool, Negotiation> {
    let name = user.clone();
    let checked = tokio::task::spawn_blocking(move || accounts.verify(&user, &password)).await;
    match checked {
        Ok(Ok(true)) => {
            tracing::info!(user = name, "administrator credentials accepted");
            Ok(true)
        }
        Ok(Ok(false)) => {
            tracing::warn!(user = name, "wrong administrator credentials");
            Ok(false)
        }
        Ok(Err(e)) => Err(Negotiation::End(DisconnectReason::Error(
            crate::with_causes(&e),
        ))),
        Err(e) => Err(Negotiation::End(DisconnectReason::Error(format!(
            "the credential check failed: {e}"
        )))),
    }
}

/// How a pairing attempt that ended without a connection goes on: back to code entry after
/// a failed verification, a refusal for wrong credentials, or the end.
fn negotiation_end(why: PairingEnd) -> Negotiation {
    match why {
        PairingEnd::Unverified(_) => Negotiation::Retry,
        PairingEnd::BadCredentials => Negotiation::BadCredentials,
        PairingEnd::Unproven => Negotiation::Unproven,
        other => Negotiation::End(other.into()),
    }
}

/// The peer connection of an attempt, built when the pairing first needs it (the offer).
#[derive(Default)]
pub(super) struct LazyPeer(Option<transport::BuiltPeer>);

impl LazyPeer {
    async fn get(
        &mut self,
        task: &AgentTask,
    ) -> Result<
        (
            &Pc,
            &mpsc::UnboundedSender<NetEvent>,
            &mut mpsc::UnboundedReceiver<NetEvent>,
        ),
        Negotiation,
    > {
        let built = match self.0.take() {
            Some(built) => built,
            None => transport::build_peer(&task.config.transport, &task.handle)
                .await
                .map_err(|e| Negotiation::End(DisconnectReason::from(e)))?,
        };
        let (pc, tx, rx) = self.0.insert(built);
        Ok((pc, tx, rx))
    }

    /// The connection once the attempt succeeded: its peer connection and its events.
    pub(super) fn take(&mut self) -> Option<(Pc, mpsc::UnboundedReceiver<NetEvent>)> {
        self.0.take().map(|(pc, _tx, rx)| (pc, rx))
    }

    /// Close what an attempt that failed had built, if anything.
    pub(super) async fn close(&mut self) {
        if let Some((pc, _, _)) = self.0.take() {
            let _ = pc.close().await;
        }
    }
}
