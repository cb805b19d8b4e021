//! A LAN target: listen for viewers, answer each the way a broker would, and run the
//! same key exchange, consent and MACed negotiation as with a broker, under the password.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use deskwire_capture::Source;
use deskwire_signal::grant::CredentialMode;
use deskwire_signal::{BrokerMessage, JoinRefusal, UnixMillis};
use tokio::net::TcpListener;

use self::greeter::Greeted;
use super::connect::Attempt;
use super::{AgentTask, Command, Connected, Negotiation};
use crate::accounts::AdminAccounts;
use crate::lan::LanListenConfig;
use crate::signalling::Signalling;
use crate::{AgentEvent, DisconnectReason};
use deskwire_engine::pipeline::Pipeline;
use deskwire_session::pairing::PairingSecret;

mod greeter;

/// Greeted connections kept waiting for their turn at most; past it, the oldest from a
/// source with failures (else the oldest) is dropped.
const MAX_WAITING: usize = 16;

/// The next greeted connection to serve: the oldest from a source without failures, else
/// the oldest. Every attempt holds the loop until its password is proven (up to
/// `LAN_PROOF`): served in arrival order, stallers from four addresses kept a technician
/// waiting 7-9 s for each picture. A source that stalled or guessed wrong before goes
/// behind every clean one, so a technician waits for at most the attempt in progress.
fn next_in_line<T>(waiting: &mut VecDeque<T>, failing: impl Fn(&T) -> bool) -> Option<T> {
    while waiting.len() > MAX_WAITING {
        let drop_at = waiting.iter().position(&failing).unwrap_or(0);
        waiting.remove(drop_at);
        tracing::info!("LAN connection dropped: too many waiting for their turn");
    }
    let at = waiting.iter().position(|g| !failing(g)).unwrap_or(0);
    waiting.remove(at)
}

/// How long a LAN viewer may take for each step of its negotiation once its password is
/// proven.
const LAN_STEP: std::time::Duration = std::time::Duration::from_secs(5);
/// How long it may take to prove the password (key exchange and confirmation), from its
/// turn: a round trip and a few milliseconds of SPAKE2 on a LAN. Until then it holds the
/// one attempt this loop runs at a time, so a viewer that says hello and then nothing holds
/// it this long, and its source then waits as after a wrong password and goes behind every
/// clean source (`next_in_line`).
const LAN_PROOF: std::time::Duration = std::time::Duration::from_secs(1);

impl AgentTask {
    /// Serve viewers on `listener` until one gets a session, then stream to it.
    pub(super) async fn run_lan(
        &mut self,
        source: Box<dyn Source>,
        listener: std::net::TcpListener,
        lan: LanListenConfig,
    ) -> DisconnectReason {
        let mut started = Instant::now();
        let listener = match TcpListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => return DisconnectReason::Lan(format!("cannot listen: {e}")),
        };
        let mut backoff = lan.record.take(lan.backoff);
        let mut control = !self.config.view_only;
        let mut source = Some(source);
        let mut pipeline: Option<Arc<Pipeline>> = None;
        let (mut greeted, greeter) = greeter::spawn(listener);
        // Greeted connections not served yet: see `next_in_line`.
        let mut waiting: VecDeque<Greeted> = VecDeque::new();
        let connected: Result<Connected, DisconnectReason> = loop {
            while let Ok(g) = greeted.try_recv() {
                waiting.push_back(g);
            }
            let Some(Greeted {
                mut sig,
                from,
                grant,
            }) = next_in_line(&mut waiting, |g| backoff.failures(g.from.ip()) > 0)
            else {
                tokio::select! {
                    g = greeted.recv() => match g {
                        Some(g) => waiting.push_back(g),
                        None => break Err(DisconnectReason::Lan("the LAN listener stopped".into())),
                    },
                    cmd = self.commands.recv() => match cmd {
                        Some(Command::SetControl(c)) => control = c && !self.config.view_only,
                        Some(Command::TryCode(_) | Command::AnswerConsent(_) | Command::AnswerGrant(..)) => {}
                        Some(Command::Shutdown) | None => break Err(DisconnectReason::Local),
                    },
                }
                continue;
            };
            // A source that guessed wrong waits before it may guess again; it is told so
            // without a key exchange, so waiting is the only way to another guess.
            if let Err(wait) = backoff.check(from.ip(), UnixMillis::now()) {
                let message = format!(
                    "too many wrong passwords from {}; try again in {} s",
                    from.ip(),
                    wait.as_secs().max(1)
                );
                tracing::info!(%from, ?wait, "LAN connection refused while its source backs off");
                self.refuse(sig, from, JoinRefusal::TooManyAttempts, message)
                    .await;
                continue;
            }
            tracing::info!(%from, "LAN viewer connected");
            let under_grant =
                match grant.map(|id| (id, self.unattended_grant(id, UnixMillis::now()))) {
                    None => None,
                    Some((id, Ok((secret, admin)))) => Some((id, secret, admin)),
                    Some((id, Err(why))) => {
                        // Outside its window, revoked, expired or unknown: refused here, whatever
                        // a broker might have said.
                        tracing::warn!(%from, grant = id, why, "unattended connection refused");
                        self.refuse(sig, from, JoinRefusal::Cancelled, why).await;
                        continue;
                    }
                };
            // No "a technician is connecting" here: on the LAN anyone can say hello, and
            // until the password is proven nobody is connecting. The user hears of a
            // technician from the consent question, which comes only after the proof.
            // Set-up counts from this viewer's arrival, not from when the agent began to
            // listen.
            started = Instant::now();
            if let Err(r) = self.ensure_pipeline(&mut source, &mut pipeline) {
                break Err(r);
            }
            // Built at the offer, once the password is proven (see `negotiate`).
            let mut peer = super::connect::LazyPeer::default();
            let attempt = match under_grant {
                None => Attempt {
                    secret: PairingSecret::Lan(lan.passwords.current_at(UnixMillis::now())),
                    control,
                    policy: None,
                    unattended: false,
                    admin: self.config.require_admin.clone(),
                    step_timeout: LAN_STEP.min(self.config.connect_timeout),
                    proof_timeout: LAN_PROOF.min(self.config.connect_timeout),
                },
                Some((id, secret, admin)) => Attempt {
                    secret: PairingSecret::Grant(id, secret),
                    control: !self.config.view_only,
                    policy: None,
                    unattended: true,
                    admin,
                    step_timeout: LAN_STEP.min(self.config.connect_timeout),
                    proof_timeout: LAN_PROOF.min(self.config.connect_timeout),
                },
            };
            let result = self.negotiate(&mut peer, &mut sig, attempt).await;
            match result {
                Ok((channels, granted)) => {
                    backoff.record_success(from.ip());
                    control = granted;
                    sig.close().await;
                    match peer.take() {
                        Some((pc, net_rx)) => break Ok((pc, net_rx, channels)),
                        None => {
                            break Err(DisconnectReason::Error("connected without a peer".into()))
                        }
                    }
                }
                Err(Negotiation::Retry) => {
                    let wait = backoff.record_failure(from.ip(), UnixMillis::now());
                    let failures = backoff.failures(from.ip());
                    tracing::warn!(%from, failures, ?wait, "wrong LAN password; nothing was connected");
                    let message = if wait.is_zero() {
                        "wrong password; check it and try again".to_owned()
                    } else {
                        format!("wrong password; try again in {} s", wait.as_secs().max(1))
                    };
                    peer.close().await;
                    self.refuse(sig, from, JoinRefusal::VerificationFailed, message)
                        .await;
                    continue;
                }
                Err(Negotiation::Unproven) => {
                    // Said hello, then did not prove the password: a stall costs its source
                    // a wait, as a wrong guess does, so it cannot hold the loop again and
                    // again.
                    let wait = backoff.record_failure(from.ip(), UnixMillis::now());
                    tracing::info!(%from, ?wait, "LAN viewer did not prove the password in time");
                    peer.close().await;
                    self.refuse(
                        sig,
                        from,
                        JoinRefusal::VerificationFailed,
                        "the password was not proven in time".to_owned(),
                    )
                    .await;
                    continue;
                }
                Err(Negotiation::BadCredentials) => {
                    let wait = backoff.record_failure(from.ip(), UnixMillis::now());
                    let message = if wait.is_zero() {
                        "the administrator name or password is wrong; check them and try again"
                            .to_owned()
                    } else {
                        format!(
                            "the administrator name or password is wrong; try again in {} s",
                            wait.as_secs().max(1)
                        )
                    };
                    peer.close().await;
                    self.refuse(sig, from, JoinRefusal::VerificationFailed, message)
                        .await;
                    continue;
                }
                Err(Negotiation::End(DisconnectReason::Local)) => {
                    peer.close().await;
                    sig.close().await;
                    break Err(DisconnectReason::Local);
                }
                Err(Negotiation::End(r)) => {
                    // Refused by the user, the viewer left, a transport failure: this
                    // attempt is over, the target keeps listening.
                    tracing::info!(%from, reason = %r, "LAN attempt ended without a session");
                    sig.close().await;
                }
            }
            peer.close().await;
        };
        // The listener closes with its task: the session has begun (or ended).
        greeter.abort();
        lan.record.put(backoff);
        let desk = super::grants::GrantDesk::new(None);
        self.conclude(connected, pipeline, control, started, desk)
            .await
    }

    /// Grant `id` as this computer keeps it, if it lets someone in at `now`: its secret and
    /// the accounts whose credentials the technician must present.
    pub(super) fn unattended_grant(
        &self,
        id: u32,
        now: UnixMillis,
    ) -> Result<([u8; 16], Option<AdminAccounts>), String> {
        let grants = self
            .config
            .grants
            .as_ref()
            .ok_or("this computer keeps no unattended-access grants")?;
        let entry = grants
            .get(id)
            .map_err(|e| crate::with_causes(&e))?
            .ok_or_else(|| format!("this computer has no grant {id}"))?;
        entry
            .grant
            .check(now)
            .map_err(|why| format!("grant {id} does not let anyone in now: {why}"))?;
        let secret = entry
            .secret
            .ok_or_else(|| format!("grant {id} has no secret to connect with"))?;
        let admin = match entry.grant.request().credential_mode {
            // The technician proves they administer this computer at every connection.
            CredentialMode::AskEachConnection => Some(
                self.config
                    .require_admin
                    .clone()
                    .or_else(|| self.config.customer_accounts.clone())
                    .ok_or(
                        "this computer has no accounts to check administrator credentials against",
                    )?,
            ),
            CredentialMode::CustomerCredentials => self.config.require_admin.clone(),
        };
        Ok((secret, admin))
    }

    /// Tell a LAN viewer why it is turned away, close, and report it.
    async fn refuse(
        &mut self,
        mut sig: Signalling,
        from: std::net::SocketAddr,
        reason: JoinRefusal,
        message: String,
    ) {
        let _ = sig
            .send_as_broker(&BrokerMessage::JoinRefused {
                reason,
                message: message.clone(),
            })
            .await;
        sig.close().await;
        self.events
            .emit_important(AgentEvent::LanRefused { from, message });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_sources_are_served_first_in_arrival_order_and_the_queue_stays_bounded() {
        // (arrival, failing source)
        let mut waiting: VecDeque<(u32, bool)> =
            [(1, true), (2, false), (3, true), (4, false)].into();
        let failing = |g: &(u32, bool)| g.1;
        assert_eq!(next_in_line(&mut waiting, failing), Some((2, false)));
        assert_eq!(next_in_line(&mut waiting, failing), Some((4, false)));
        assert_eq!(next_in_line(&mut waiting, failing), Some((1, true)));
        assert_eq!(next_in_line(&mut waiting, failing), Some((3, true)));
        assert_eq!(next_in_line(&mut waiting, failing), None);
        // Over the bound, failing sources' connections go first, oldest first.
        let mut waiting: VecDeque<(u32, bool)> = (0..MAX_WAITING as u32 + 2)
            .map(|i| (i, i % 4 == 3))
            .collect();
        assert_eq!(next_in_line(&mut waiting, failing), Some((0, false)));
        assert_eq!(waiting.len(), MAX_WAITING - 1);
        assert!(!waiting.iter().any(|g| g.0 == 3 || g.0 == 7));
    }
}
