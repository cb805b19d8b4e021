//! The signalling rules, without sockets: who may say what, who is paired with whom, and what
//! each connection is sent in return.
//!
//! The server feeds it what arrives (`handle_open`, `handle_text`, `handle_binary`,
//! `handle_close`) and drains `poll_output` into per-connection queues after each call. It
//! reads no clock: `now` comes with every message.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;

use deskwire_signal::{
    decode_client, BrokerMessage, ClientMessage, JoinRefusal, PeerSignal, SessionCode, UnixMillis,
    MAX_REASON_CHARS,
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
}

/// What a connection turned out to be. Its first message decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Nothing received yet.
    Undecided,
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
    sessions: HashMap<SessionId, Session>,
    next_conn: u64,
    next_session: u64,
    outputs: VecDeque<Output>,
}

impl Switchboard {
    /// An empty switchboard.
    pub(crate) fn new(limits: CodeLimits, join_limits: JoinLimits, rng: StdRng) -> Self {
        Self {
            codes: CodeBook::new(limits),
            rng,
            conns: HashMap::new(),
            sources: HashMap::new(),
            now: UnixMillis(0),
            limiter: JoinLimiter::new(join_limits),
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
            (Role::Undecided, ClientMessage::CreateSession {}) => self.create_session(conn, now),
            (Role::Undecided, ClientMessage::Join { code }) => self.join(conn, 0, &code, now),
            (
                Role::Target {
                    session: None,
                    refusals,
                },
                ClientMessage::Join { code },
            ) => self.join(conn, refusals, &code, now),
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
            (Role::Controller { .. }, ClientMessage::CreateSession {}) => {
                self.refuse(conn, "a session was already created on this connection")
            }
            (Role::Controller { .. }, ClientMessage::Join { .. }) => {
                self.refuse(conn, "a controller cannot join a session")
            }
            (
                Role::Target {
                    session: Some(_), ..
                },
                ClientMessage::Join { .. },
            ) => self.refuse(conn, "this connection has already joined a session"),
            (Role::Target { .. }, ClientMessage::CreateSession {}) => {
                self.refuse(conn, "a target cannot create a session")
            }
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
        let Some(role) = self.conns.remove(&conn) else {
            return;
        };
        let session_id = match role {
            Role::Controller { session }
            | Role::Target {
                session: Some(session),
                ..
            } => session,
            Role::Undecided | Role::Target { session: None, .. } => return,
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

    fn create_session(&mut self, conn: ConnId, now: UnixMillis) {
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

    fn join(&mut self, conn: ConnId, refusals: u32, code: &str, now: UnixMillis) {
        let source = self.sources.get(&conn).copied();
        let paired = self
            .admit_join(source.map(SourceKey::of), code, now)
            .and_then(|()| self.codes.redeem(code, now))
            .and_then(|session_id| match self.sessions.get_mut(&session_id) {
                // A code is only redeemable while its controller is connected: leaving
                // cancels it. Checked anyway, so the tables cannot disagree.
                Some(session) if session.controller.is_some() && session.target.is_none() => {
                    session.target = Some(conn);
                    session.paired = true;
                    Ok((session_id, session.controller))
                }
                _ => Err(JoinRefusal::Cancelled),
            });
        match paired {
            Ok((session_id, controller)) => {
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
                self.send(conn, BrokerMessage::Joined {});
                if let Some(controller) = controller {
                    self.send(controller, BrokerMessage::PeerJoined {});
                }
            }
            Err(reason) => {
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
        }
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
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use deskwire_signal::encode;
    use rand::SeedableRng;

    use super::*;

    /// Where the test connections come from.
    const SRC: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));

    const T0: UnixMillis = UnixMillis(1_700_000_000_000);
    const TTL: Duration = Duration::from_secs(600);

    fn board() -> Switchboard {
        let limits = CodeLimits {
            ttl: TTL,
            retention: Duration::from_secs(3600),
            max_pending: 8,
            max_tombstones: 64,
        };
        Switchboard::new(limits, JoinLimits::default(), StdRng::seed_from_u64(3))
    }

    /// What the server must do, without the audit records (checked on their own).
    fn drain(b: &mut Switchboard) -> Vec<Output> {
        std::iter::from_fn(|| b.poll_output())
            .filter(|o| !matches!(o, Output::Audit(_)))
            .collect()
    }

    /// Only the audit records, as (event, session, source).
    fn audits(b: &mut Switchboard) -> Vec<(String, Option<String>, Option<String>)> {
        std::iter::from_fn(|| b.poll_output())
            .filter_map(|o| match o {
                Output::Audit(r) => Some((r.event.to_string(), r.session, r.source)),
                _ => None,
            })
            .collect()
    }

    fn say(b: &mut Switchboard, conn: ConnId, msg: &ClientMessage, now: UnixMillis) -> Vec<Output> {
        b.handle_text(conn, &encode(msg), now);
        drain(b)
    }

    fn send(to: ConnId, msg: BrokerMessage) -> Output {
        Output::Send { to, msg }
    }

    /// A controller with a session; returns its connection and code.
    fn controller(b: &mut Switchboard) -> (ConnId, SessionCode) {
        let c = b.handle_open(SRC);
        match say(b, c, &ClientMessage::CreateSession {}, T0).as_slice() {
            [Output::Send {
                to,
                msg:
                    BrokerMessage::SessionCreated {
                        session: code,
                        expires_at,
                    },
            }] => {
                assert_eq!(*to, c);
                assert_eq!(*expires_at, T0.plus(TTL));
                (c, *code)
            }
            other => panic!("expected session_created, got {other:?}"),
        }
    }

    fn join(code: impl ToString) -> ClientMessage {
        ClientMessage::Join {
            code: code.to_string(),
        }
    }

    fn offer() -> ClientMessage {
        ClientMessage::Relay {
            signal: PeerSignal::Offer {
                sdp: "v=0 offer".into(),
                mac: "ab".into(),
            },
        }
    }

    fn is_error_then_close(out: &[Output], conn: ConnId) -> bool {
        matches!(out, [Output::Send { to, msg: BrokerMessage::Error { .. } }, Output::Close { conn: c }]
            if *to == conn && *c == conn)
    }

    #[test]
    fn a_target_with_the_code_is_paired_and_signals_flow_both_ways() {
        let mut b = board();
        let (c, code) = controller(&mut b);
        let t = b.handle_open(SRC);
        assert_eq!(
            say(&mut b, t, &join(code), T0),
            [
                send(t, BrokerMessage::Joined {}),
                send(c, BrokerMessage::PeerJoined {})
            ]
        );
        let sent = PeerSignal::Offer {
            sdp: "v=0 offer".into(),
            mac: "ab".into(),
        };
        assert_eq!(
            say(&mut b, t, &offer(), T0),
            [send(c, BrokerMessage::Relay { signal: sent })]
        );
        let answer = PeerSignal::Answer {
            sdp: "v=0 answer".into(),
            mac: "cd".into(),
        };
        let msg = ClientMessage::Relay {
            signal: answer.clone(),
        };
        assert_eq!(
            say(&mut b, c, &msg, T0),
            [send(t, BrokerMessage::Relay { signal: answer })]
        );
    }

    #[test]
    fn a_refused_join_keeps_the_socket_so_the_user_can_try_again() {
        let mut b = board();
        let (c, code) = controller(&mut b);
        let t = b.handle_open(SRC);
        let wrong = (code.number() + 1) % SessionCode::SPACE;
        let out = say(
            &mut b,
            t,
            &join(SessionCode::from_number(wrong).unwrap()),
            T0,
        );
        assert_eq!(
            out,
            [send(
                t,
                BrokerMessage::JoinRefused {
                    reason: JoinRefusal::WrongCode,
                    message: JoinRefusal::WrongCode.message().into()
                }
            )]
        );
        let out = say(&mut b, t, &join("12 34"), T0);
        assert!(matches!(
            out.as_slice(),
            [Output::Send {
                msg: BrokerMessage::JoinRefused {
                    reason: JoinRefusal::Malformed,
                    ..
                },
                ..
            }]
        ));
        assert_eq!(
            say(&mut b, t, &join(code), T0),
            [
                send(t, BrokerMessage::Joined {}),
                send(c, BrokerMessage::PeerJoined {})
            ]
        );
    }

    #[test]
    fn expired_and_reused_codes_are_refused_with_their_reason() {
        let mut b = board();
        let (_, code) = controller(&mut b);
        let late = b.handle_open(SRC);
        let out = say(&mut b, late, &join(code), T0.plus(TTL));
        assert!(matches!(
            out.as_slice(),
            [Output::Send {
                msg: BrokerMessage::JoinRefused {
                    reason: JoinRefusal::Expired,
                    ..
                },
                ..
            }]
        ));

        let (_, code) = controller(&mut b);
        let first = b.handle_open(SRC);
        let second = b.handle_open(SRC);
        assert_eq!(say(&mut b, first, &join(code), T0).len(), 2);
        let out = say(&mut b, second, &join(code), T0);
        assert!(matches!(
            out.as_slice(),
            [Output::Send { to, msg: BrokerMessage::JoinRefused { reason: JoinRefusal::AlreadyUsed, .. } }]
                if *to == second
        ));
    }

    #[test]
    fn a_controller_leaving_before_a_join_cancels_its_code() {
        let mut b = board();
        let (c, code) = controller(&mut b);
        b.handle_close(c);
        assert!(drain(&mut b).is_empty());
        assert_eq!(b.sessions(), 0);
        let t = b.handle_open(SRC);
        let out = say(&mut b, t, &join(code), T0);
        assert!(matches!(
            out.as_slice(),
            [Output::Send {
                msg: BrokerMessage::JoinRefused {
                    reason: JoinRefusal::Cancelled,
                    ..
                },
                ..
            }]
        ));
    }

    #[test]
    fn either_side_leaving_tells_the_other_and_late_relays_are_dropped() {
        let mut b = board();
        let (c, code) = controller(&mut b);
        let t = b.handle_open(SRC);
        say(&mut b, t, &join(code), T0);
        b.handle_close(c);
        assert_eq!(drain(&mut b), [send(t, BrokerMessage::PeerLeft {})]);
        // The target's offer may cross the controller's departure: no error, no panic.
        assert!(say(&mut b, t, &offer(), T0).is_empty());
        b.handle_close(t);
        assert!(drain(&mut b).is_empty());
        assert_eq!((b.sessions(), b.connections()), (0, 0));

        let (c, code) = controller(&mut b);
        let t = b.handle_open(SRC);
        say(&mut b, t, &join(code), T0);
        b.handle_close(t);
        assert_eq!(drain(&mut b), [send(c, BrokerMessage::PeerLeft {})]);
    }

    #[test]
    fn protocol_violations_get_an_error_and_a_close() {
        let mut b = board();
        // Relay before pairing, from a fresh socket and from a waiting controller.
        let fresh = b.handle_open(SRC);
        assert!(is_error_then_close(
            &say(&mut b, fresh, &offer(), T0),
            fresh
        ));
        let (c, code) = controller(&mut b);
        assert!(is_error_then_close(&say(&mut b, c, &offer(), T0), c));
        // That controller is gone, so its code is cancelled.
        let t = b.handle_open(SRC);
        let out = say(&mut b, t, &join(code), T0);
        assert!(matches!(
            out.as_slice(),
            [Output::Send {
                msg: BrokerMessage::JoinRefused {
                    reason: JoinRefusal::Cancelled,
                    ..
                },
                ..
            }]
        ));

        // A second create_session, and a join after pairing.
        let (c, code) = controller(&mut b);
        let t = b.handle_open(SRC);
        say(&mut b, t, &join(code), T0);
        let out = say(&mut b, t, &join(code), T0);
        assert!(matches!(out.as_slice(),
            [Output::Send { to, msg: BrokerMessage::Error { .. } }, Output::Send { to: peer, msg: BrokerMessage::PeerLeft {} }, Output::Close { conn }]
            if *to == t && *peer == c && *conn == t));
        let out = say(&mut b, c, &ClientMessage::CreateSession {}, T0);
        assert!(is_error_then_close(&out, c));
        assert_eq!(
            b.connections(),
            1,
            "only the refused target (no session) is left"
        );
    }

    #[test]
    fn garbage_binary_and_other_versions_close_only_the_sender() {
        let mut b = board();
        let (c, code) = controller(&mut b);
        let t = b.handle_open(SRC);
        say(&mut b, t, &join(code), T0);

        let long_garbage = format!("{{\"v\":1,\"type\":\"{}\"}}", "x".repeat(5000));
        for text in [
            "not json",
            "{\"v\":2,\"type\":\"create_session\"}",
            &long_garbage,
        ] {
            let x = b.handle_open(SRC);
            b.handle_text(x, text, T0);
            let out = drain(&mut b);
            assert!(is_error_then_close(&out, x), "{text:?}: {out:?}");
            let Output::Send {
                msg: BrokerMessage::Error { message },
                ..
            } = &out[0]
            else {
                unreachable!()
            };
            // The peer's decoder must accept the message, however long the input was.
            assert!(
                deskwire_signal::decode_broker(&encode(&BrokerMessage::Error {
                    message: message.clone()
                }))
                .is_ok()
            );
        }
        let x = b.handle_open(SRC);
        b.handle_binary(x);
        assert!(is_error_then_close(&drain(&mut b), x));
        // Input from a closed connection is ignored.
        b.handle_text(x, "still here", T0);
        b.handle_binary(x);
        assert!(drain(&mut b).is_empty());

        // The paired session was not disturbed.
        let out = say(&mut b, t, &offer(), T0);
        assert!(
            matches!(out.as_slice(), [Output::Send { to, msg: BrokerMessage::Relay { .. } }] if *to == c)
        );
    }

    #[test]
    fn the_pending_code_cap_refuses_more_sessions_with_an_error() {
        let mut b = board();
        for _ in 0..8 {
            controller(&mut b);
        }
        let c = b.handle_open(SRC);
        let out = say(&mut b, c, &ClientMessage::CreateSession {}, T0);
        assert!(is_error_then_close(&out, c));
        let Output::Send {
            msg: BrokerMessage::Error { message },
            ..
        } = &out[0]
        else {
            unreachable!()
        };
        assert!(message.contains("8 connection codes"), "{message}");
    }

    #[test]
    fn a_failed_verification_unpairs_the_target_which_may_join_again() {
        let mut b = board();
        let (c, code) = controller(&mut b);
        let t = b.handle_open(SRC);
        say(&mut b, t, &join(code), T0);
        let failed = ClientMessage::VerificationFailed {};
        let reason = JoinRefusal::VerificationFailed;
        assert_eq!(
            say(&mut b, c, &failed, T0),
            [
                send(
                    t,
                    BrokerMessage::JoinRefused {
                        reason,
                        message: reason.message().into()
                    }
                ),
                send(c, BrokerMessage::AttemptFailed { failures: 1 }),
            ]
        );
        // The other side reporting the same attempt does not count twice.
        assert!(say(&mut b, c, &failed, T0).is_empty());
        // A retry must wait a second (doubling with each failure); an early one is refused
        // without using up the code.
        let wait = JoinRefusal::TooManyAttempts;
        assert_eq!(
            say(&mut b, t, &join(code), T0),
            [send(
                t,
                BrokerMessage::JoinRefused {
                    reason: wait,
                    message: wait.message().into()
                }
            )]
        );
        let later = T0.plus(Duration::from_secs(1));
        assert_eq!(
            say(&mut b, t, &join(code), later),
            [
                send(t, BrokerMessage::Joined {}),
                send(c, BrokerMessage::PeerJoined {})
            ]
        );
    }

    #[test]
    fn the_third_failed_verification_burns_the_code() {
        let mut b = board();
        let (c, code) = controller(&mut b);
        let t = b.handle_open(SRC);
        // Far enough apart that the doubling delay never refuses a try.
        let at = |i: u64| T0.plus(Duration::from_secs(10 * i));
        for i in 0..u64::from(MAX_FAILED_VERIFICATIONS) - 1 {
            say(&mut b, t, &join(code), at(i));
            say(&mut b, t, &ClientMessage::VerificationFailed {}, at(i));
        }
        let last = at(u64::from(MAX_FAILED_VERIFICATIONS));
        say(&mut b, t, &join(code), last);
        let out = say(&mut b, t, &ClientMessage::VerificationFailed {}, last);
        let burned = JoinRefusal::Burned;
        assert_eq!(
            out[0],
            send(
                t,
                BrokerMessage::JoinRefused {
                    reason: burned,
                    message: burned.message().into()
                }
            )
        );
        assert!(is_error_then_close(&out[1..], c), "{out:?}");
        // Even a fresh connection with the right session code is refused now.
        let t2 = b.handle_open(IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 99)));
        assert_eq!(
            say(&mut b, t2, &join(code), last),
            [send(
                t2,
                BrokerMessage::JoinRefused {
                    reason: burned,
                    message: burned.message().into()
                }
            )]
        );
    }

    #[test]
    fn every_attempt_and_outcome_is_audited_with_its_source_and_code() {
        let mut b = board();
        let c = b.handle_open(SRC);
        b.handle_text(c, &encode(&ClientMessage::CreateSession {}), T0);
        let code = std::iter::from_fn(|| b.poll_output())
            .find_map(|o| match o {
                Output::Send {
                    msg: BrokerMessage::SessionCreated { session, .. },
                    ..
                } => Some(session),
                _ => None,
            })
            .unwrap();
        let src = Some(SRC.to_string());
        let c_text = Some(code.to_string());
        let t = b.handle_open(SRC);
        b.handle_text(t, &encode(&join("000 000")), T0);
        b.handle_text(t, &encode(&join(code)), T0);
        b.handle_text(c, &encode(&ClientMessage::VerificationFailed {}), T0);
        b.handle_close(t);
        b.handle_close(c);
        let events = audits(&mut b);
        assert_eq!(
            events,
            [
                (
                    "wrong_code".to_owned(),
                    Some("000 000".to_owned()),
                    src.clone()
                ),
                ("session_started".to_owned(), c_text.clone(), src.clone()),
                (
                    "confirmation_failed".to_owned(),
                    c_text.clone(),
                    src.clone()
                ),
                // The failed target was unpaired, so the controller leaving withdraws the
                // code rather than ending a session.
                ("code_cancelled".to_owned(), c_text.clone(), src.clone()),
            ],
            "{events:?}"
        );
    }
}
