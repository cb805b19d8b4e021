//! The switchboard's store-backed paths, for a broker with a database: codes recorded before
//! the controller hears of them, redeemed once across restarts and brokers, looked up when
//! this broker does not hold them, and resumed by their controller after a restart.
//!
//! Each path emits an output the server performs against the store; the answer comes back
//! through a `handle_*` call here. Between the two the connection waits in its own role, and
//! every answer first checks that the connection is still the one that asked.

use deskwire_signal::{
    BrokerMessage, JoinRefusal, SessionCode, SessionPolicy, UnixMillis, MAX_REASON_CHARS,
};
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::{ConnId, Output, Role, Session, Switchboard};
use crate::codes::SessionId;
use crate::limits::SourceKey;
use crate::store::{AuditEvent, CodeState, EndedBy, Refusal, SessionRecordId, TechnicianId};

/// Random bytes in a resume token: 256 bits, sent as 64 hex digits.
const RESUME_TOKEN_BYTES: usize = 32;
/// Codes drawn for one `create_session` before giving up because the store already holds
/// each (after a restart the book is empty while the store still has the old codes).
const MAX_STORE_ATTEMPTS: u32 = 8;

/// A technician whose token checked out, with what their group allows now.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Authenticated {
    /// Who.
    pub(crate) technician: TechnicianId,
    /// Their company (ad-hoc quotas are per company too).
    pub(crate) company: crate::store::CompanyId,
    /// What the target is told.
    pub(crate) policy: SessionPolicy,
    /// Their group's cap on open sessions, if any.
    pub(crate) max_sessions: Option<u32>,
    /// Their open sessions now (counted only when there is a cap).
    pub(crate) open_sessions: u64,
    /// Their group's permissions, by name (`lan`, `unattended`, ...).
    pub(crate) permissions: Vec<&'static str>,
}

impl Authenticated {
    /// Whether another session would exceed the group's cap.
    pub(crate) fn at_cap(&self) -> bool {
        self.max_sessions
            .is_some_and(|max| self.open_sessions >= u64::from(max))
    }
}

/// Why the store did not record a new code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StoreCodeError {
    /// It already holds that code (pending or tombstone): draw another.
    Taken,
    /// The store failed; the message is for the controller.
    Unavailable(String),
}

/// A code the store redeemed, with the session row it started.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Redeemed {
    /// The session row.
    pub(crate) record: SessionRecordId,
    /// What the technician's group allows as of now (`None` without a technician).
    pub(crate) policy: Option<SessionPolicy>,
}

/// Why the store did not redeem a code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RedeemError {
    /// The code no longer works (used, expired, ... possibly through another broker).
    Code(JoinRefusal),
    /// The technician's group refuses the session now (acceptance `deny`, or its cap on open
    /// sessions is reached). The store left the code pending.
    Policy(String),
    /// The store failed; nothing changed.
    Unavailable(String),
}

/// What the store holds about a code this broker does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StoredCode {
    /// Its state.
    pub(crate) state: CodeState,
    /// When it stops (or stopped) working.
    pub(crate) expires_at: UnixMillis,
}

/// A code whose controller proved it created it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Resumed {
    /// Unchanged from when it was issued.
    pub(crate) expires_at: UnixMillis,
    /// The technician who created it, if authenticated.
    pub(crate) technician: Option<TechnicianId>,
    /// What their group allows as of now.
    pub(crate) policy: Option<SessionPolicy>,
}

/// Why a resume was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ResumeError {
    /// The store's verdict on the code or the token.
    Refused(Refusal),
    /// The store failed, or the technician is gone.
    Unavailable(String),
}

/// SHA-256 of a resume token, hex: what the store keeps instead of the token.
pub(crate) fn resume_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.to_ascii_lowercase().as_bytes()))
}

impl Switchboard {
    /// Record the new code of the session on `conn` in the store; it is announced once the
    /// store holds it.
    pub(super) fn store_code(
        &mut self,
        conn: ConnId,
        session_id: SessionId,
        resumable: bool,
        now: UnixMillis,
    ) {
        let token = resumable.then(|| {
            let mut bytes = [0u8; RESUME_TOKEN_BYTES];
            self.rng.fill_bytes(&mut bytes);
            hex::encode(bytes)
        });
        let Some(session) = self.sessions.get_mut(&session_id) else {
            return;
        };
        let resume_hash = token.as_deref().map(resume_hash);
        session.resume = token;
        self.conns.insert(
            conn,
            Role::Registering {
                session: session_id,
            },
        );
        self.outputs.push_back(Output::StoreCode {
            conn,
            code: session.code,
            technician: session.technician,
            issued_at: now,
            expires_at: session.expires_at,
            resume_hash,
        });
    }

    /// The store's answer to [`Output::StoreCode`] for `conn`.
    pub(crate) fn handle_code_stored(
        &mut self,
        conn: ConnId,
        result: Result<(), StoreCodeError>,
        now: UnixMillis,
    ) {
        let Some(Role::Registering {
            session: session_id,
        }) = self.conns.get(&conn).copied()
        else {
            return; // gone meanwhile; its close queued the code's cancellation
        };
        self.now = now;
        let attempts = self
            .sessions
            .get(&session_id)
            .map_or(MAX_STORE_ATTEMPTS, |s| s.store_attempts);
        match result {
            Ok(()) => {
                self.conns.insert(
                    conn,
                    Role::Controller {
                        session: session_id,
                    },
                );
                self.announce_code(conn, session_id, "");
            }
            Err(StoreCodeError::Taken) if attempts + 1 < MAX_STORE_ATTEMPTS => {
                // Held by the store from before a restart, or issued by another broker:
                // keep it out of this book too, and draw again for the same session.
                let Some(session) = self.sessions.get_mut(&session_id) else {
                    return;
                };
                self.codes.cancel(session.code);
                match self.codes.issue(now, session_id, &mut self.rng) {
                    Ok((code, expires_at)) => {
                        session.code = code;
                        session.expires_at = expires_at;
                        session.store_attempts = attempts + 1;
                        self.outputs.push_back(Output::StoreCode {
                            conn,
                            code,
                            technician: session.technician,
                            issued_at: now,
                            expires_at,
                            resume_hash: session.resume.as_deref().map(resume_hash),
                        });
                    }
                    Err(e) => self.abandon_registration(conn, session_id, &e.to_string()),
                }
            }
            Err(StoreCodeError::Taken) => {
                let why = "no free connection code found; try again";
                self.abandon_registration(conn, session_id, why);
            }
            Err(StoreCodeError::Unavailable(why)) => {
                self.abandon_registration(conn, session_id, &why);
            }
        }
    }

    /// The code could not be recorded: forget the session and tell the controller why.
    fn abandon_registration(&mut self, conn: ConnId, session_id: SessionId, why: &str) {
        if let Some(session) = self.sessions.remove(&session_id) {
            self.codes.cancel(session.code);
        }
        tracing::warn!(%session_id, "refused to create a session: {why}");
        let ip = self.sources.get(&conn).copied();
        self.audit(AuditEvent::DeniedByPolicy, ip, None, why.to_owned());
        self.conns.insert(conn, Role::Undecided);
        self.refuse(conn, why);
    }

    /// The store's answer to [`Output::LookUpCode`] for the target on `conn`.
    pub(crate) fn handle_code_looked_up(
        &mut self,
        conn: ConnId,
        result: Result<Option<StoredCode>, String>,
        now: UnixMillis,
    ) {
        let Some(Role::LookingUp { refusals }) = self.conns.get(&conn).copied() else {
            return;
        };
        let Some((text, device)) = self.store_joins.remove(&conn) else {
            return;
        };
        self.now = now;
        // Its controller may have resumed here while the store was being asked.
        if text
            .parse::<SessionCode>()
            .is_ok_and(|code| self.codes.holds(code))
        {
            return self.redeem(conn, refusals, &text, device, now);
        }
        let reason = match result {
            Ok(None) => JoinRefusal::WrongCode,
            Ok(Some(stored)) => match stored.state {
                // Live, but no controller here to pair with: it is reconnecting (or sits on
                // another broker). The code is left untouched.
                CodeState::Pending if now < stored.expires_at => JoinRefusal::ControllerAway,
                CodeState::Pending => JoinRefusal::Expired,
                CodeState::Redeemed => JoinRefusal::AlreadyUsed,
                CodeState::Cancelled => JoinRefusal::Cancelled,
                CodeState::Burned => JoinRefusal::Burned,
            },
            Err(why) => {
                self.conns.insert(conn, Role::Undecided);
                return self.refuse(conn, &why);
            }
        };
        self.refuse_join(conn, refusals, &text, reason, now);
    }

    /// The store's answer to [`Output::RedeemCode`] for the target on `conn`.
    pub(crate) fn handle_redeemed(
        &mut self,
        conn: ConnId,
        session_id: SessionId,
        result: Result<Redeemed, RedeemError>,
        now: UnixMillis,
    ) {
        self.now = now;
        let role = self.conns.get(&conn).copied();
        let session = self.sessions.get_mut(&session_id);
        let code = session.as_ref().map(|s| s.code);
        if let Some(session) = session {
            if session.joining == Some(conn) {
                session.joining = None;
            }
        }
        let refusals = match role {
            Some(Role::Redeeming { session, refusals }) if session == session_id => refusals,
            _ => return self.redeemed_for_nobody(session_id, code, result),
        };
        let (text, device) = self.store_joins.remove(&conn).unwrap_or_default();
        match result {
            Ok(redeemed) => {
                let session = self
                    .sessions
                    .get_mut(&session_id)
                    .filter(|s| s.controller.is_some() && s.target.is_none());
                let Some(session) = session else {
                    self.outputs.push_back(Output::EndSession {
                        record: redeemed.record,
                        by: EndedBy::Controller,
                        reason: "the controller left while the target was joining".into(),
                    });
                    return self.refuse_join(conn, refusals, &text, JoinRefusal::Cancelled, now);
                };
                session.record = Some(redeemed.record);
                if redeemed.policy.is_some() {
                    session.policy = redeemed.policy;
                }
                self.pair(conn, refusals, session_id, device);
            }
            // The store's precise verdict (another broker may have used it); this book
            // already counts it as used.
            Err(RedeemError::Code(reason)) => self.refuse_join(conn, refusals, &text, reason, now),
            Err(RedeemError::Policy(why)) => {
                self.policy_refused_join(conn, refusals, session_id, &why)
            }
            Err(RedeemError::Unavailable(why)) => {
                if let Some(code) = code {
                    self.codes.reopen(code);
                }
                self.conns.insert(conn, Role::Undecided);
                self.refuse(conn, &why);
            }
        }
    }

    /// The store redeemed (or refused) a code for a target that has left since, or whose
    /// session is gone: end what it started, so no row stays open.
    fn redeemed_for_nobody(
        &mut self,
        session_id: SessionId,
        code: Option<SessionCode>,
        result: Result<Redeemed, RedeemError>,
    ) {
        match result {
            Ok(redeemed) => {
                self.outputs.push_back(Output::EndSession {
                    record: redeemed.record,
                    by: EndedBy::Target,
                    reason: "the target left while joining".into(),
                });
                // The code is used; its controller will get no target.
                let controller = self
                    .sessions
                    .get(&session_id)
                    .filter(|s| !s.paired && s.target.is_none())
                    .and_then(|s| s.controller);
                if let Some(controller) = controller {
                    self.send(controller, BrokerMessage::PeerLeft {});
                }
            }
            Err(RedeemError::Policy(_) | RedeemError::Unavailable(_)) => {
                // The store left the code pending: so does this book.
                if let Some(code) = code {
                    self.codes.reopen(code);
                }
            }
            Err(RedeemError::Code(_)) => {}
        }
    }

    /// The technician's group refuses this session now: the code is withdrawn, the
    /// controller told why and closed, and the target told the technician closed it.
    fn policy_refused_join(
        &mut self,
        conn: ConnId,
        refusals: u32,
        session_id: SessionId,
        why: &str,
    ) {
        let ip = self.sources.get(&conn).copied();
        let (code, technician, controller) = match self.sessions.get(&session_id) {
            Some(s) => (Some(s.code), s.technician, s.controller),
            None => (None, None, None),
        };
        self.audit_by(
            AuditEvent::DeniedByPolicy,
            ip,
            code,
            technician,
            why.to_owned(),
        );
        if let Some(code) = code {
            // Used in this book, still pending in the store: cancelled in both.
            self.codes.reopen(code);
            self.codes.cancel(code);
            self.outputs.push_back(Output::CancelCode { code });
        }
        self.conns.insert(
            conn,
            Role::Target {
                session: None,
                refusals: refusals.saturating_add(1),
            },
        );
        let message: String = why.chars().take(MAX_REASON_CHARS).collect();
        self.send(
            conn,
            BrokerMessage::JoinRefused {
                reason: JoinRefusal::Cancelled,
                message,
            },
        );
        if let Some(controller) = controller {
            self.refuse(controller, why);
        }
    }

    /// `resume`: a controller re-attaching to its code. The store checks the token.
    pub(super) fn resume(&mut self, conn: ConnId, session: &str, token: &str, now: UnixMillis) {
        if !self.durable {
            return self.refuse(
                conn,
                "this broker keeps no codes across restarts: create a new session",
            );
        }
        // Guessing tokens is hopeless (256 bits), but each guess costs a database lookup:
        // failures count against the same budget as failed joins.
        let source = self.sources.get(&conn).copied().map(SourceKey::of);
        if let Some(Err(reason)) = source.map(|s| self.limiter.admit(s, now)) {
            return self.refuse(conn, reason.message());
        }
        let Ok(code) = session.parse::<SessionCode>() else {
            return self.refuse(conn, "resume: that is not a session code");
        };
        if token.len() != 2 * RESUME_TOKEN_BYTES || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
            let ip = self.sources.get(&conn).copied();
            let why = "resume: the token is not one this broker issues";
            self.audit(AuditEvent::LoginFailed, ip, Some(code), why.into());
            if let Some(source) = source {
                self.limiter.record_failure(source, now);
            }
            return self.refuse(conn, why);
        }
        if self.attached(code, now) {
            return self.refuse(conn, "resume: this session's controller is still connected");
        }
        self.conns.insert(conn, Role::Resuming);
        self.outputs.push_back(Output::ResumeCode {
            conn,
            code,
            resume_hash: resume_hash(token),
        });
    }

    /// Whether a live code has its controller connected here.
    fn attached(&self, code: SessionCode, now: UnixMillis) -> bool {
        self.codes
            .session_of(&code.to_string(), now)
            .and_then(|id| self.sessions.get(&id))
            .is_some_and(|s| s.controller.is_some())
    }

    /// The store's answer to [`Output::ResumeCode`] for `conn`.
    pub(crate) fn handle_resumed(
        &mut self,
        conn: ConnId,
        code: SessionCode,
        result: Result<Resumed, ResumeError>,
        now: UnixMillis,
    ) {
        if self.conns.get(&conn) != Some(&Role::Resuming) {
            return; // gone meanwhile; the code stays pending
        }
        self.now = now;
        let ip = self.sources.get(&conn).copied();
        let resumed = match result {
            Ok(resumed) => resumed,
            Err(ResumeError::Refused(refusal)) => {
                if matches!(refusal, Refusal::WrongResumeToken | Refusal::Unknown) {
                    if let Some(ip) = ip {
                        self.limiter.record_failure(SourceKey::of(ip), now);
                    }
                }
                let why = format!("cannot resume session {code}: {refusal}");
                self.audit(refusal.audit_event(), ip, Some(code), why.clone());
                self.conns.insert(conn, Role::Undecided);
                // The caller hears one answer for an unknown code and a wrong token: telling
                // them apart would say which codes are live to whoever guesses. The audit
                // keeps the precise reason.
                let told = match refusal {
                    Refusal::WrongResumeToken | Refusal::Unknown => {
                        format!("cannot resume session {code}: no session with this code and token")
                    }
                    _ => why,
                };
                return self.refuse(conn, &told);
            }
            Err(ResumeError::Unavailable(why)) => {
                self.conns.insert(conn, Role::Undecided);
                return self.refuse(conn, &why);
            }
        };
        // Two connections with the same token may race; the first one back wins.
        if self.attached(code, now) {
            self.conns.insert(conn, Role::Undecided);
            return self.refuse(conn, "resume: this session's controller is still connected");
        }
        let session_id = SessionId(self.next_session);
        self.next_session += 1;
        self.codes.adopt(code, session_id, resumed.expires_at);
        let mut session = Session::new(code, conn, resumed.expires_at, now);
        session.technician = resumed.technician;
        session.policy = resumed.policy;
        self.sessions.insert(session_id, session);
        self.conns.insert(
            conn,
            Role::Controller {
                session: session_id,
            },
        );
        self.announce_code(conn, session_id, ", resumed by its controller");
    }
}
