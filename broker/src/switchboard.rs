//! The signalling rules, without sockets: who may say what, who is paired with whom, and what
//! each connection is sent in return.
//!
//! The server feeds it what arrives (`handle_open`, `handle_text`, `handle_binary`,
//! `handle_close`) and drains `poll_output` into per-connection queues after each call. It
//! reads no clock: `now` comes with every message.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;

use deskwire_signal::device::DeviceProof;
use deskwire_signal::{
    decode_client, BrokerMessage, ClientMessage, JoinRefusal, PeerSignal, PolicyAcceptance,
    SessionCode, SessionPolicy, UnixMillis, MAX_REASON_CHARS,
};
use rand::rngs::StdRng;

use crate::codes::{CodeBook, CodeLimits, SessionId};
use crate::limits::{JoinLimiter, JoinLimits, SourceKey};
use crate::store::{AuditEvent, AuditRecord};

/// Names one signalling connection for as long as it is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct ConnId(pub(crate) u64);

/// What the server must do after an input.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Output {
    /// Queue this message on the connection.
    Send {
        /// Recipient.
        to: ConnId,
        /// Message.
        msg: BrokerMessage,
    },
    /// Close the connection once what was queued for it has gone out. The switchboard has
    /// already forgotten it (and told its peer), so later input from it is ignored.
    Close {
        /// The connection.
        conn: ConnId,
    },
    /// Append this to the audit log (when the broker has a store).
    Audit(AuditRecord),
    /// Check this device key against the registry (pin it on first contact) and report with
    /// [`Switchboard::handle_device_checked`].
    CheckDevice {
        /// The target's connection.
        conn: ConnId,
        /// The device id.
        id: String,
        /// Its public key, whose signature already verified.
        key: [u8; 32],
    },
    /// Check this technician token and report with [`Switchboard::handle_authenticated`].
    Authenticate {
        /// The controller's connection.
        conn: ConnId,
        /// The token it sent.
        token: String,
    },
}

/// What a connection turned out to be. Its first message decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Nothing received yet.
    Undecided,
    /// Sent `create_session` with a token that is being checked.
    Authenticating,
    /// Sent `join` with a device proof whose key is being checked against the registry.
    CheckingDevice { refusals: u32 },
    /// Sent `create_session`.
    Controller { session: SessionId },
    /// Sent `join`; `session` is set once a code worked.
    Target {
        session: Option<SessionId>,
        refusals: u32,
    },
}

#[derive(Debug)]
struct Session {
    code: SessionCode,
    controller: Option<ConnId>,
    target: Option<ConnId>,
    /// A target joined at some point. Relays are refused before that, and dropped quietly
    /// after the other side has left (the two may cross on the wire).
    paired: bool,
    /// Attempts whose PAKE verification failed; the code burns at [`MAX_FAILED_VERIFICATIONS`].
    failed_verifications: u32,
    /// When the last one failed: the next join waits a delay that doubles per failure.
    last_failure: UnixMillis,
    /// What the technician's group allows, told to the target when it joins.
    policy: Option<SessionPolicy>,
}

/// What peers must present.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Requirements {
    /// A technician's API token with `create_session`.
    pub(crate) require_token: bool,
    /// A device proof with `join`.
    pub(crate) require_device: bool,
}

/// Failed verifications after which a code stops working: a broker or a bystander who knows
/// the session code gets this many guesses at the four secret digits.
pub(crate) const MAX_FAILED_VERIFICATIONS: u32 = 3;

/// The connections and sessions of one broker.
#[derive(Debug)]
pub(crate) struct Switchboard {
    codes: CodeBook,
    /// Must be unpredictable outside tests: codes are the only secret a session has.
    rng: StdRng,
    conns: HashMap<ConnId, Role>,
    /// Where each connection comes from, for the join limits and the audit log.
    sources: HashMap<ConnId, IpAddr>,
    /// The time of the last message handled, for audit records of closes.
    now: UnixMillis,
    limiter: JoinLimiter,
    /// Refuse `create_session` without a token.
    require_token: bool,
    /// Refuse `join` without a device proof.
    require_device: bool,
    /// Joins waiting for their device check: the code typed and the device id.
    device_checks: HashMap<ConnId, (String, String)>,
    sessions: HashMap<SessionId, Session>,
    next_conn: u64,
    next_session: u64,
    outputs: VecDeque<Output>,
}

impl Switchboard {
    /// An empty switchboard.
    pub(crate) fn new(
        limits: CodeLimits,
        join_limits: JoinLimits,
        rules: Requirements,
        rng: StdRng,
    ) -> Self {
        Self {
            codes: CodeBook::new(limits),
            rng,
            conns: HashMap::new(),
            sources: HashMap::new(),
            now: UnixMillis(0),
            limiter: JoinLimiter::new(join_limits),
            require_token: rules.require_token,
            require_device: rules.require_device,
            device_checks: HashMap::new(),
            sessions: HashMap::new(),
            next_conn: 0,
            next_session: 0,
            outputs: VecDeque::new(),
        }
    }

    /// Open connections.
    #[cfg(test)]
    pub(crate) fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Sessions with at least one side still connected.
    #[cfg(test)]
    pub(crate) fn sessions(&self) -> usize {
        self.sessions.len()
    }

    /// A new connection arrived from `source`.
    pub(crate) fn handle_open(&mut self, source: IpAddr) -> ConnId {
        let conn = ConnId(self.next_conn);
        self.next_conn += 1;
        self.conns.insert(conn, Role::Undecided);
        self.sources.insert(conn, source);
        conn
    }

    /// A text message arrived on `conn`.
    pub(crate) fn handle_text(&mut self, conn: ConnId, text: &str, now: UnixMillis) {
        self.now = now;
        let Some(&role) = self.conns.get(&conn) else {
            // Already closed by us; the socket has not noticed yet.
            return;
        };
        let msg = match decode_client(text) {
            Ok(msg) => msg,
            Err(e) => return self.refuse(conn, &e.to_string()),
        };
        match (role, msg) {
            (Role::Undecided, ClientMessage::CreateSession { token }) => {
                self.request_session(conn, token, now)
            }
            (Role::Undecided, ClientMessage::Join { code, device }) => {
                self.join(conn, 0, &code, device, now)
            }
            (
                Role::Target {
                    session: None,
                    refusals,
                },
                ClientMessage::Join { code, device },
            ) => self.join(conn, refusals, &code, device, now),
            (
                Role::Controller { session }
                | Role::Target {
                    session: Some(session),
                    ..
                },
                ClientMessage::Relay { signal },
            ) => self.relay(conn, session, signal),
            (
                Role::Controller { session }
                | Role::Target {
                    session: Some(session),
                    ..
                },
                ClientMessage::VerificationFailed {},
            ) => self.verification_failed(session, now),
            (
                Role::Undecided | Role::Target { session: None, .. },
                ClientMessage::VerificationFailed {},
            ) => self.refuse(conn, "verification_failed before pairing"),
            (Role::Undecided | Role::Target { session: None, .. }, ClientMessage::Relay { .. }) => {
                self.refuse(conn, "relay before pairing: join a session first")
            }
            (
                Role::Controller { .. } | Role::Authenticating,
                ClientMessage::CreateSession { .. },
            ) => self.refuse(conn, "a session was already created on this connection"),
            (Role::Controller { .. }, ClientMessage::Join { .. }) => {
                self.refuse(conn, "a controller cannot join a session")
            }
            (
                Role::Target {
                    session: Some(_), ..
                },
                ClientMessage::Join { .. },
            ) => self.refuse(conn, "this connection has already joined a session"),
            (Role::Target { .. }, ClientMessage::CreateSession { .. }) => {
                self.refuse(conn, "a target cannot create a session")
            }
            (Role::Authenticating | Role::CheckingDevice { .. }, _) => self.refuse(
                conn,
                "wait for session_created before sending anything else",
            ),
        }
    }

    /// A binary message arrived on `conn`: the protocol has none.
    pub(crate) fn handle_binary(&mut self, conn: ConnId) {
        if self.conns.contains_key(&conn) {
            self.refuse(
                conn,
                "binary messages are not part of the signalling protocol",
            );
        }
    }

    /// `conn` is gone (closed by the peer, broken, or dropped by the server).
    /// Idempotent: closing a connection the switchboard already closed does nothing.
    pub(crate) fn handle_close(&mut self, conn: ConnId) {
        let ip = self.sources.remove(&conn);
        self.device_checks.remove(&conn);
        let Some(role) = self.conns.remove(&conn) else {
            return;
        };
        let session_id = match role {
            Role::Controller { session }
            | Role::Target {
                session: Some(session),
                ..
            } => session,
            Role::Undecided
            | Role::Authenticating
            | Role::CheckingDevice { .. }
            | Role::Target { session: None, .. } => return,
        };
        let Some(session) = self.sessions.get_mut(&session_id) else {
            return;
        };
        let is_controller = matches!(role, Role::Controller { .. });
        let code = session.code;
        let mut cancelled = false;
        if is_controller {
            session.controller = None;
            if !session.paired && self.codes.cancel(session.code) {
                tracing::info!(%session_id, "controller left before anyone joined; code cancelled");
                cancelled = true;
            }
        } else {
            session.target = None;
        }
        let who = if is_controller {
            "controller"
        } else {
            "target"
        };
        let (event, detail) = if cancelled {
            (
                AuditEvent::CodeCancelled,
                "the controller left before anyone joined".to_owned(),
            )
        } else {
            (AuditEvent::Ended, format!("the {who} left"))
        };
        self.audit(event, ip, Some(code), detail);
        let Some(session) = self.sessions.get_mut(&session_id) else {
            return;
        };
        let other = if is_controller {
            session.target
        } else {
            session.controller
        };
        match other {
            Some(other) => {
                tracing::info!(%session_id, "{} left", if is_controller { "controller" } else { "target" });
                self.outputs.push_back(Output::Send {
                    to: other,
                    msg: BrokerMessage::PeerLeft {},
                });
            }
            None => {
                tracing::info!(%session_id, "session ended");
                self.sessions.remove(&session_id);
            }
        }
    }

    /// The next thing the server must do, in order.
    pub(crate) fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// `create_session`: check the token first when there is one (or one is required).
    fn request_session(&mut self, conn: ConnId, token: Option<String>, now: UnixMillis) {
        match token {
            Some(token) => {
                self.conns.insert(conn, Role::Authenticating);
                self.outputs.push_back(Output::Authenticate { conn, token });
            }
            None if self.require_token => {
                let ip = self.sources.get(&conn).copied();
                let why = "this broker requires a technician's API token";
                self.audit(AuditEvent::DeniedByPolicy, ip, None, why.into());
                self.refuse(conn, why);
            }
            None => self.create_session(conn, now, None),
        }
    }

    /// The token sent on `conn` was checked: `Ok` with the technician's policy, or why not.
    pub(crate) fn handle_authenticated(
        &mut self,
        conn: ConnId,
        result: Result<SessionPolicy, String>,
        now: UnixMillis,
    ) {
        if self.conns.get(&conn) != Some(&Role::Authenticating) {
            return; // gone meanwhile
        }
        self.now = now;
        let ip = self.sources.get(&conn).copied();
        match result {
            Ok(policy) if policy.acceptance == PolicyAcceptance::Deny => {
                let why = format!("{}'s group may not start sessions", policy.technician);
                self.audit(AuditEvent::DeniedByPolicy, ip, None, why.clone());
                self.refuse(conn, &why);
            }
            Ok(policy) => self.create_session(conn, now, Some(policy)),
            Err(why) => {
                self.audit(AuditEvent::DeniedByPolicy, ip, None, why.clone());
                self.refuse(conn, &why);
            }
        }
    }

    fn create_session(&mut self, conn: ConnId, now: UnixMillis, policy: Option<SessionPolicy>) {
        let session_id = SessionId(self.next_session);
        match self.codes.issue(now, session_id, &mut self.rng) {
            Ok((code, expires_at)) => {
                self.next_session += 1;
                self.conns.insert(
                    conn,
                    Role::Controller {
                        session: session_id,
                    },
                );
                self.sessions.insert(
                    session_id,
                    Session {
                        code,
                        controller: Some(conn),
                        target: None,
                        paired: false,
                        failed_verifications: 0,
                        last_failure: now,
                        policy,
                    },
                );
                tracing::info!(%session_id, %expires_at, "session created");
                let ip = self.sources.get(&conn).copied();
                let detail = format!("{session_id}, expires at {expires_at}");
                self.audit(AuditEvent::CodeIssued, ip, Some(code), detail);
                self.send(
                    conn,
                    BrokerMessage::SessionCreated {
                        session: code,
                        expires_at,
                    },
                );
            }
            Err(e) => {
                tracing::warn!("refused to create a session: {e}");
                let ip = self.sources.get(&conn).copied();
                self.audit(AuditEvent::DeniedByPolicy, ip, None, e.to_string());
                self.refuse(conn, &e.to_string());
            }
        }
    }

    /// `join`: the limits, then (with a device proof) the device check, then the code.
    fn join(
        &mut self,
        conn: ConnId,
        refusals: u32,
        code: &str,
        device: Option<DeviceProof>,
        now: UnixMillis,
    ) {
        let source = self.sources.get(&conn).copied();
        if let Err(reason) = self.admit_join(source.map(SourceKey::of), code, now) {
            return self.refuse_join(conn, refusals, code, reason, now);
        }
        let Some(proof) = device else {
            if self.require_device {
                let reason = JoinRefusal::DeviceNotAuthenticated;
                return self.refuse_join(conn, refusals, code, reason, now);
            }
            return self.redeem(conn, refusals, code, now);
        };
        let checked = code
            .parse::<SessionCode>()
            .map_err(|_| JoinRefusal::Malformed)
            .and_then(|session| {
                proof
                    .verify(session)
                    .map_err(|_| JoinRefusal::DeviceNotAuthenticated)
            });
        match checked {
            Ok(key) => {
                // The signature holds; the store says whether the key is the one pinned to
                // the id, and `handle_device_checked` goes on.
                self.conns.insert(conn, Role::CheckingDevice { refusals });
                self.device_checks
                    .insert(conn, (code.to_owned(), proof.id.clone()));
                self.outputs.push_back(Output::CheckDevice {
                    conn,
                    id: proof.id,
                    key,
                });
            }
            Err(reason) => self.refuse_join(conn, refusals, code, reason, now),
        }
    }

    /// The store's answer for the device on `conn`: `Ok(true)` first contact (registered),
    /// `Ok(false)` known and matching, `Err` why not.
    pub(crate) fn handle_device_checked(
        &mut self,
        conn: ConnId,
        result: Result<bool, String>,
        now: UnixMillis,
    ) {
        let Some(Role::CheckingDevice { refusals }) = self.conns.get(&conn).copied() else {
            return; // gone meanwhile
        };
        let Some((code, id)) = self.device_checks.remove(&conn) else {
            return;
        };
        self.now = now;
        let ip = self.sources.get(&conn).copied();
        match result {
            Ok(first) => {
                if first {
                    self.audit_text(AuditEvent::DeviceRegistered, ip, &code, id);
                }
                self.redeem(conn, refusals, &code, now);
            }
            Err(why) => {
                let detail = format!("{id}: {why}");
                self.audit_text(AuditEvent::DeviceKeyMismatch, ip, &code, detail);
                let reason = JoinRefusal::DeviceNotAuthenticated;
                self.refuse_join(conn, refusals, &code, reason, now);
            }
        }
    }

    /// Redeem the code and pair, or refuse.
    fn redeem(&mut self, conn: ConnId, refusals: u32, code: &str, now: UnixMillis) {
        let source = self.sources.get(&conn).copied();
        let paired = self.codes.redeem(code, now).and_then(|session_id| {
            match self.sessions.get_mut(&session_id) {
                // A code is only redeemable while its controller is connected: leaving
                // cancels it. Checked anyway, so the tables cannot disagree.
                Some(session) if session.controller.is_some() && session.target.is_none() => {
                    session.target = Some(conn);
                    session.paired = true;
                    Ok((session_id, session.controller, session.policy.clone()))
                }
                _ => Err(JoinRefusal::Cancelled),
            }
        });
        match paired {
            Ok((session_id, controller, policy)) => {
                tracing::info!(%session_id, "target joined");
                let code = self.sessions.get(&session_id).map(|s| s.code);
                let detail = "the target joined; the peers verify each other next".to_owned();
                self.audit(AuditEvent::SessionStarted, source, code, detail);
                self.conns.insert(
                    conn,
                    Role::Target {
                        session: Some(session_id),
                        refusals,
                    },
                );
                self.send(conn, BrokerMessage::Joined { policy });
                if let Some(controller) = controller {
                    self.send(controller, BrokerMessage::PeerJoined {});
                }
            }
            Err(reason) => self.refuse_join(conn, refusals, code, reason, now),
        }
    }

    /// Tell the target why its join failed; it may try again on the same socket.
    fn refuse_join(
        &mut self,
        conn: ConnId,
        refusals: u32,
        code: &str,
        reason: JoinRefusal,
        now: UnixMillis,
    ) {
        let source = self.sources.get(&conn).copied();
        let refusals = refusals.saturating_add(1);
        // Waiting out a limit is not a guess; everything else counts.
        if !matches!(
            reason,
            JoinRefusal::TooManyAttempts | JoinRefusal::LockedOut
        ) {
            if let Some(source) = source {
                self.limiter.record_failure(SourceKey::of(source), now);
            }
        }
        let typed: String = code.chars().take(32).collect();
        self.audit_text(
            refusal_event(reason),
            source,
            &typed,
            reason.message().into(),
        );
        tracing::info!(?reason, refusals, "join refused");
        self.conns.insert(
            conn,
            Role::Target {
                session: None,
                refusals,
            },
        );
        let message = reason.message().to_owned();
        self.send(conn, BrokerMessage::JoinRefused { reason, message });
    }

    /// A peer says the other's description did not verify: unpair the target (it may try
    /// again, typing the code anew), or burn the code after too many failures.
    fn verification_failed(&mut self, session_id: SessionId, now: UnixMillis) {
        let Some(session) = self.sessions.get_mut(&session_id) else {
            return;
        };
        if !session.paired {
            // Reported by both sides of the same attempt: count it once.
            return;
        }
        session.failed_verifications += 1;
        session.last_failure = now;
        session.paired = false;
        let failures = session.failed_verifications;
        let code = session.code;
        let controller = session.controller;
        let target = session.target.take();
        let burned = failures >= MAX_FAILED_VERIFICATIONS;
        tracing::warn!(%session_id, failures, burned, "a peer failed verification");
        let reason = if burned {
            self.codes.burn(code);
            JoinRefusal::Burned
        } else {
            self.codes.reopen(code);
            JoinRefusal::VerificationFailed
        };
        if let Some(t) = target {
            let ip = self.sources.get(&t).copied();
            if let Some(ip) = ip {
                self.limiter.record_failure(SourceKey::of(ip), now);
            }
            let event = if burned {
                AuditEvent::CodeBurned
            } else {
                AuditEvent::ConfirmationFailed
            };
            self.audit(
                event,
                ip,
                Some(code),
                format!("failed verification {failures}"),
            );
            if let Some(Role::Target { refusals, .. }) = self.conns.get(&t).copied() {
                self.conns.insert(
                    t,
                    Role::Target {
                        session: None,
                        refusals: refusals.saturating_add(1),
                    },
                );
            }
            let message = reason.message().to_owned();
            self.send(t, BrokerMessage::JoinRefused { reason, message });
        }
        if let Some(c) = controller {
            if burned {
                self.refuse(c, reason.message());
            } else {
                self.send(c, BrokerMessage::AttemptFailed { failures });
            }
        }
    }

    /// The join limits: the source's failure budget, then the session's growing delay after
    /// failed verifications (checked before redeeming, so a refused try keeps the code).
    fn admit_join(
        &mut self,
        source: Option<SourceKey>,
        code: &str,
        now: UnixMillis,
    ) -> Result<(), JoinRefusal> {
        if let Some(source) = source {
            self.limiter.admit(source, now)?;
        }
        if let Some(session) = self
            .codes
            .session_of(code, now)
            .and_then(|id| self.sessions.get(&id))
        {
            let retry_at = self
                .limiter
                .session_retry_at(session.failed_verifications, session.last_failure);
            if now < retry_at {
                return Err(JoinRefusal::TooManyAttempts);
            }
        }
        Ok(())
    }

    fn relay(&mut self, from: ConnId, session_id: SessionId, signal: PeerSignal) {
        let Some(session) = self.sessions.get(&session_id) else {
            return;
        };
        if !session.paired {
            return self.refuse(from, "relay before pairing: wait for peer_joined");
        }
        let to = if session.controller == Some(from) {
            session.target
        } else {
            session.controller
        };
        match to {
            Some(to) => {
                tracing::debug!(%session_id, "relaying a signal");
                self.send(to, BrokerMessage::Relay { signal });
            }
            None => tracing::debug!(%session_id, "dropped a relay: the other peer has left"),
        }
    }

    /// Tell `conn` what was wrong, then close it.
    fn refuse(&mut self, conn: ConnId, message: &str) {
        tracing::debug!(conn = conn.0, "closing after a protocol error: {message}");
        // Peers check the length of error messages; decode errors can quote long input.
        let message: String = message.chars().take(MAX_REASON_CHARS).collect();
        self.send(conn, BrokerMessage::Error { message });
        self.handle_close(conn);
        self.outputs.push_back(Output::Close { conn });
    }

    fn send(&mut self, to: ConnId, msg: BrokerMessage) {
        self.outputs.push_back(Output::Send { to, msg });
    }

    fn audit(
        &mut self,
        event: AuditEvent,
        ip: Option<IpAddr>,
        code: Option<SessionCode>,
        detail: String,
    ) {
        let code = code.map(|c| c.to_string());
        self.audit_text(event, ip, code.as_deref().unwrap_or(""), detail);
    }

    fn audit_text(&mut self, event: AuditEvent, ip: Option<IpAddr>, session: &str, detail: String) {
        let at = i64::try_from(self.now.0).unwrap_or(i64::MAX);
        let mut record = AuditRecord::new(at, event).detail(detail);
        if let Some(ip) = ip {
            record = record.source(ip);
        }
        if !session.is_empty() {
            record = record.session(session);
        }
        self.outputs.push_back(Output::Audit(record));
    }
}

/// The audit event for a refused join.
fn refusal_event(reason: JoinRefusal) -> AuditEvent {
    match reason {
        JoinRefusal::Malformed | JoinRefusal::WrongCode => AuditEvent::WrongCode,
        JoinRefusal::Expired => AuditEvent::Expired,
        JoinRefusal::AlreadyUsed => AuditEvent::Reused,
        JoinRefusal::Cancelled => AuditEvent::Cancelled,
        JoinRefusal::Burned => AuditEvent::CodeBurned,
        JoinRefusal::VerificationFailed => AuditEvent::ConfirmationFailed,
        JoinRefusal::TooManyAttempts | JoinRefusal::LockedOut => AuditEvent::DeniedByPolicy,
        JoinRefusal::DeviceNotAuthenticated => AuditEvent::DeviceNotAuthenticated,
    }
}

#[cfg(test)]
mod tests;
