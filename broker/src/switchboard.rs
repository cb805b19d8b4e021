//! The signalling rules, without sockets: who may say what, who is paired with whom, and what
//! each connection is sent in return.
//!
//! The server feeds it what arrives (`handle_open`, `handle_text`, `handle_binary`,
//! `handle_close`) and drains `poll_output` into per-connection queues after each call. It
//! reads no clock: `now` comes with every message.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;

use deskwire_signal::{
    decode_client, BrokerMessage, ClientMessage, ConsentDecision, PeerSignal, PolicyAcceptance,
    SessionCode, SessionPolicy, UnixMillis,
};
use rand::rngs::StdRng;

use crate::codes::{CodeBook, CodeLimits, SessionId};
use crate::limits::{CreationLimiter, JoinLimiter, JoinLimits};
use crate::store::{AuditEvent, EndedBy, SessionRecordId, TechnicianId};

mod adhoc;
mod authorize;
mod create;
mod durable;
mod join;
mod lan;
mod output;
mod unattended;

pub(crate) use output::Output;

pub(crate) use durable::{
    Authenticated, RedeemError, Redeemed, ResumeError, Resumed, StoreCodeError, StoredCode,
};

/// Names one signalling connection for as long as it is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct ConnId(pub(crate) u64);

/// What a connection turned out to be. Its first message decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Nothing received yet.
    Undecided,
    /// Sent `create_session` with a token that is being checked.
    Authenticating { resumable: bool },
    /// Sent `create_session`; its code is being recorded in the store.
    Registering { session: SessionId },
    /// Sent `resume`; the store is checking the token.
    Resuming,
    /// Sent `authorize` or `get_lan_password`; its token is being checked (what it asked is
    /// in `authorizing`).
    Authorizing,
    /// Sent `report_lan_password`; the store is keeping it.
    Reporting,
    /// Sent `get_lan_password` with the permission; the store is looking it up.
    LookingUpLan,
    /// Sent `join` with a device proof whose key is being checked against the registry.
    CheckingDevice { refusals: u32 },
    /// Sent `create_session`.
    Controller { session: SessionId },
    /// Sent `join`; `session` is set once a code worked.
    Target {
        session: Option<SessionId>,
        refusals: u32,
    },
    /// Sent `join` with a code this broker holds; the store is redeeming it.
    Redeeming { session: SessionId, refusals: u32 },
    /// Sent `join` with a code this broker does not hold; the store is being asked about it.
    LookingUp { refusals: u32 },
    /// An activated temporary host's standing connection.
    AdhocHost {
        session: deskwire_signal::adhoc::AdhocId,
    },
    /// Sent `create_adhoc` with an e-mail address; the mail is going out.
    Mailing,
    /// An agent standing by for unattended calls.
    Standby,
    /// Sent `call_unattended`; the store is looking the grant up.
    LookingUpGrant,
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
    /// The controller's technician, if authenticated.
    technician: Option<TechnicianId>,
    /// When the code stops working.
    expires_at: UnixMillis,
    /// A target whose redemption the store is working on.
    joining: Option<ConnId>,
    /// The store's row for the current attempt, ended when it ends.
    record: Option<SessionRecordId>,
    /// The resume token to hand the controller once the store holds the code.
    resume: Option<String>,
    /// Codes drawn for this session that the store already held.
    store_attempts: u32,
    /// Whose target is called to join this code, rather than told it by the user.
    callee: Option<Callee>,
    /// The device the target proved it is, if it did.
    device: Option<String>,
    /// The pairing's end is in the audit: the second side to leave adds no second row.
    end_audited: bool,
}

/// A target the broker calls to join a code, on its standing connection.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Callee {
    /// The temporary host of this ad-hoc session.
    Adhoc(deskwire_signal::adhoc::AdhocId),
    /// This device's agent, under this grant.
    Agent { device: String, grant: u32 },
}

impl Session {
    fn new(code: SessionCode, controller: ConnId, expires_at: UnixMillis, now: UnixMillis) -> Self {
        Self {
            code,
            controller: Some(controller),
            target: None,
            paired: false,
            failed_verifications: 0,
            last_failure: now,
            policy: None,
            technician: None,
            expires_at,
            joining: None,
            record: None,
            resume: None,
            store_attempts: 0,
            callee: None,
            device: None,
            end_audited: false,
        }
    }
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
    /// Sessions created per source (`create_session`), checked before any token is.
    creations: CreationLimiter,
    /// Creations refused while their source waits, summarised like throttled joins.
    creations_throttled: join::Throttled,
    /// Joins refused while their source waits out a limit, summarised per source: see
    /// [`Self::refuse_join`].
    throttled: join::Throttled,
    /// Refuse `create_session` without a token.
    require_token: bool,
    /// Refuse `join` without a device proof.
    require_device: bool,
    /// Joins waiting for their device check: the code typed and the device id.
    device_checks: HashMap<ConnId, (String, String)>,
    /// `authorize` / `get_lan_password` requests waiting for their token check.
    authorizing: HashMap<ConnId, lan::Asked>,
    /// Joins waiting for the store: the code typed and the device id, if proved.
    store_joins: HashMap<ConnId, (String, Option<String>)>,
    /// Codes, redemptions and sessions go through the store too, so they survive a restart
    /// and are single-use across brokers sharing it.
    durable: bool,
    /// The broker is shutting down: a controller's socket closing is not its leaving, and
    /// its pending code stays valid for it to resume.
    stopping: bool,
    sessions: HashMap<SessionId, Session>,
    /// Ad-hoc support sessions and their temporary hosts.
    adhoc: adhoc::AdhocDesk,
    /// Agents standing by for unattended calls.
    unattended: unattended::UnattendedDesk,
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
            creations: CreationLimiter::new(join_limits),
            creations_throttled: join::Throttled::default(),
            throttled: join::Throttled::default(),
            require_token: rules.require_token,
            require_device: rules.require_device,
            device_checks: HashMap::new(),
            authorizing: HashMap::new(),
            store_joins: HashMap::new(),
            durable: false,
            stopping: false,
            sessions: HashMap::new(),
            adhoc: adhoc::AdhocDesk::new(deskwire_signal::adhoc::AdhocLimits::default()),
            unattended: unattended::UnattendedDesk::default(),
            next_conn: 0,
            next_session: 0,
            outputs: VecDeque::new(),
        }
    }

    /// Keep codes and sessions in the store (see [`Output::StoreCode`] and the outputs after
    /// it), for a broker that has one.
    pub(crate) fn with_store(mut self) -> Self {
        self.durable = true;
        self
    }

    /// Ad-hoc sessions under these quotas and times (validated with the configuration),
    /// starting from the state a durable broker saved, if any.
    pub(crate) fn with_adhoc(
        mut self,
        limits: deskwire_signal::adhoc::AdhocLimits,
        saved: Option<&crate::store::AdhocSnapshot>,
    ) -> Result<Self, String> {
        self.adhoc = match saved {
            Some(saved) => adhoc::AdhocDesk::restore(limits, saved)?,
            None => adhoc::AdhocDesk::new(limits),
        };
        Ok(self)
    }

    /// When the next ad-hoc deadline falls, for [`Self::handle_tick`].
    pub(crate) fn next_adhoc_deadline(&self) -> Option<UnixMillis> {
        self.adhoc.next_deadline()
    }

    /// The broker is about to close every socket: keep pending codes alive for their
    /// controllers to resume on the next broker.
    pub(crate) fn handle_shutdown(&mut self) {
        self.stopping = true;
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
            (Role::Undecided, ClientMessage::CreateSession { token, resumable }) => {
                self.request_session(conn, token, resumable, now)
            }
            (Role::Undecided, ClientMessage::Authorize { token, permission }) => {
                self.authorize(conn, token, permission)
            }
            (
                Role::Undecided,
                ClientMessage::ReportLanPassword {
                    device,
                    password,
                    rotates_at,
                    reported_at,
                },
            ) => self.report_lan_password(conn, device, password, rotates_at, reported_at, now),
            (Role::Undecided, ClientMessage::GetLanPassword { token, device }) => {
                self.get_lan_password(conn, token, device)
            }
            (Role::Undecided, ClientMessage::Resume { session, resume }) => {
                self.resume(conn, &session, &resume, now)
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
            (Role::Controller { .. }, ClientMessage::CreateSession { .. }) => {
                self.refuse(conn, "a session was already created on this connection")
            }
            (Role::Controller { .. }, ClientMessage::Join { .. }) => {
                self.refuse(conn, "a controller cannot join a session")
            }
            (Role::Controller { .. } | Role::Target { .. }, ClientMessage::Resume { .. }) => {
                self.refuse(conn, "resume must be the first message on a connection")
            }
            (
                Role::Controller { .. } | Role::Target { .. },
                ClientMessage::Authorize { .. }
                | ClientMessage::ReportLanPassword { .. }
                | ClientMessage::GetLanPassword { .. },
            ) => self.refuse(
                conn,
                "this request must be the first message on a connection",
            ),
            (
                Role::Target {
                    session: Some(_), ..
                },
                ClientMessage::Join { .. },
            ) => self.refuse(conn, "this connection has already joined a session"),
            (Role::Target { .. }, ClientMessage::CreateSession { .. }) => {
                self.refuse(conn, "a target cannot create a session")
            }
            (Role::Authenticating { .. } | Role::Registering { .. } | Role::Resuming, _) => self
                .refuse(
                    conn,
                    "wait for session_created before sending anything else",
                ),
            (Role::Authorizing | Role::Reporting | Role::LookingUpLan, _) => {
                self.refuse(conn, "wait for the answer before sending anything else")
            }
            (Role::CheckingDevice { .. } | Role::Redeeming { .. } | Role::LookingUp { .. }, _) => {
                self.refuse(
                    conn,
                    "wait for joined or join_refused before sending anything else",
                )
            }
            (
                Role::Undecided,
                ClientMessage::ReportGrant {
                    device,
                    grant,
                    technician,
                    record,
                    reported_at,
                },
            ) => {
                let report = crate::store::GrantReport {
                    grant,
                    technician,
                    record,
                    reported_at: i64::try_from(reported_at.0).unwrap_or(i64::MAX),
                };
                self.report_grant(conn, device, report, now)
            }
            (Role::Undecided, ClientMessage::Standby { device, at }) => {
                self.standby(conn, device, at, now)
            }
            (
                Role::Undecided,
                ClientMessage::CallUnattended {
                    token,
                    device,
                    grant,
                },
            ) => {
                self.conns.insert(conn, Role::Authorizing);
                self.authorizing
                    .insert(conn, lan::Asked::Unattended { device, grant });
                self.outputs.push_back(Output::Authenticate { conn, token });
            }
            (Role::Standby, _) => self.refuse(
                conn,
                "a standing-by agent's connection carries nothing after standby",
            ),
            (Role::LookingUpGrant, _) => {
                self.refuse(conn, "wait for the answer before sending anything else")
            }
            (role, msg) => self.handle_adhoc_text(conn, role, msg, now),
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
        self.authorizing.remove(&conn);
        self.store_joins.remove(&conn);
        let Some(role) = self.conns.remove(&conn) else {
            return;
        };
        let session_id = match role {
            Role::Controller { session }
            | Role::Registering { session }
            | Role::Target {
                session: Some(session),
                ..
            } => session,
            Role::Redeeming { session, .. } => {
                // The store's answer finds the target gone and ends what it started.
                if let Some(s) = self.sessions.get_mut(&session) {
                    s.joining = None;
                }
                return;
            }
            Role::AdhocHost { session } => return self.adhoc_host_left(conn, session),
            Role::Mailing => return self.adhoc_mailing_left(conn),
            Role::Standby => return self.standby_left(conn),
            Role::LookingUpGrant => return,
            Role::Undecided
            | Role::Authenticating { .. }
            | Role::Resuming
            | Role::Authorizing
            | Role::Reporting
            | Role::LookingUpLan
            | Role::CheckingDevice { .. }
            | Role::LookingUp { .. }
            | Role::Target { session: None, .. } => return,
        };
        let Some(session) = self.sessions.get_mut(&session_id) else {
            return;
        };
        let is_controller = matches!(role, Role::Controller { .. } | Role::Registering { .. });
        let code = session.code;
        let technician = session.technician;
        let mut cancelled = false;
        let mut detached = false;
        if is_controller {
            session.controller = None;
            if !session.paired && session.joining.is_none() {
                if self.stopping && self.durable {
                    // The broker is going away, not the technician: the stored code stays
                    // pending for them to resume elsewhere.
                    detached = true;
                } else if self.codes.cancel(session.code) {
                    tracing::info!(%session_id, "controller left before anyone joined; code cancelled");
                    cancelled = true;
                }
            }
        } else {
            session.target = None;
        }
        let ended_by = match (self.stopping, is_controller) {
            (true, _) => EndedBy::Broker,
            (false, true) => EndedBy::Controller,
            (false, false) => EndedBy::Target,
        };
        let who = if is_controller {
            "controller"
        } else {
            "target"
        };
        let detail = if self.stopping {
            "the broker shut down".to_owned()
        } else {
            format!("the {who} left")
        };
        if let Some(record) = session.record.take() {
            self.outputs.push_back(Output::EndSession {
                record,
                by: ended_by,
                reason: detail.clone(),
            });
        }
        if cancelled && self.durable {
            self.outputs.push_back(Output::CancelCode { code });
        }
        if cancelled {
            let why = "the controller left before anyone joined";
            self.audit_by(
                AuditEvent::CodeCancelled,
                ip,
                Some(code),
                technician,
                why.into(),
            );
        } else if detached {
            tracing::info!(%session_id, "broker stopping; the code stays pending for its controller");
        } else if !session.end_audited {
            session.end_audited = true;
            let device = session.device.clone();
            self.audit_session(
                AuditEvent::Ended,
                ip,
                code,
                technician,
                device.as_deref(),
                detail,
            );
        }
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
                tracing::info!(%session_id, "{who} left");
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

    /// The token sent on `conn` was checked: `Ok` with the technician and what their group
    /// allows now, or why not.
    pub(crate) fn handle_authenticated(
        &mut self,
        conn: ConnId,
        result: Result<Authenticated, String>,
        now: UnixMillis,
    ) {
        if let Some(Role::Authorizing) = self.conns.get(&conn) {
            self.now = now;
            return self.authorized(conn, result);
        }
        let Some(Role::Authenticating { resumable }) = self.conns.get(&conn).copied() else {
            return; // gone meanwhile
        };
        self.now = now;
        let ip = self.sources.get(&conn).copied();
        match result {
            Ok(who) if who.policy.acceptance == PolicyAcceptance::Deny => {
                let why = format!("{}'s group may not start sessions", who.policy.technician);
                self.audit_by(
                    AuditEvent::DeniedByPolicy,
                    ip,
                    None,
                    Some(who.technician),
                    why.clone(),
                );
                self.refuse(conn, &why);
            }
            Ok(who) if who.at_cap() => {
                let max = who.max_sessions.unwrap_or(0);
                let why = format!(
                    "{} already has {} open sessions; their group allows at most {max}",
                    who.policy.technician, who.open_sessions
                );
                self.audit_by(
                    AuditEvent::DeniedByPolicy,
                    ip,
                    None,
                    Some(who.technician),
                    why.clone(),
                );
                self.refuse(conn, &why);
            }
            Ok(who) => self.create_session(conn, now, Some(who), resumable, None),
            Err(why) => {
                self.audit(AuditEvent::DeniedByPolicy, ip, None, why.clone());
                self.refuse(conn, &why);
            }
        }
    }

    /// Tell the controller on `conn` its code (and resume token, if it has one waiting).
    fn announce_code(&mut self, conn: ConnId, session_id: SessionId, how: &str) {
        let Some(session) = self.sessions.get_mut(&session_id) else {
            return;
        };
        let (code, expires_at, technician) = (session.code, session.expires_at, session.technician);
        let resume = session.resume.take();
        let callee = session.callee.clone();
        let name = session.policy.as_ref().map(|p| p.technician.clone());
        tracing::info!(%session_id, %expires_at, "session created{how}");
        let ip = self.sources.get(&conn).copied();
        let detail = format!("{session_id}, expires at {expires_at}{how}");
        self.audit_by(AuditEvent::CodeIssued, ip, Some(code), technician, detail);
        self.send(
            conn,
            BrokerMessage::SessionCreated {
                session: code,
                expires_at,
                resume,
            },
        );
        let technician = name.unwrap_or_default();
        match callee {
            Some(Callee::Adhoc(id)) => self.call_adhoc_host(conn, id, code, technician),
            Some(Callee::Agent { device, grant }) => {
                self.call_agent(conn, device, grant, code, technician)
            }
            None => {}
        }
    }

    fn relay(&mut self, from: ConnId, session_id: SessionId, signal: PeerSignal) {
        let Some(session) = self.sessions.get(&session_id) else {
            return;
        };
        if !session.paired {
            return self.refuse(from, "relay before pairing: wait for peer_joined");
        }
        let from_target = session.target == Some(from);
        let to = if session.controller == Some(from) {
            session.target
        } else {
            session.controller
        };
        if let (true, PeerSignal::ConsentDecided { decision }) = (from_target, &signal) {
            // The target's own word on its user's decision: the audit keeps it, with who
            // asked and which device answered.
            let event = match decision {
                ConsentDecision::Control | ConsentDecision::ViewOnly => AuditEvent::AcceptedByUser,
                ConsentDecision::Rejected => AuditEvent::RejectedByUser,
                ConsentDecision::TimedOut => AuditEvent::TimedOut,
                ConsentDecision::Denied => AuditEvent::DeniedByPolicy,
                ConsentDecision::BadCredentials => AuditEvent::LoginFailed,
            };
            let (code, technician, device) =
                (session.code, session.technician, session.device.clone());
            let source = self.sources.get(&from).copied();
            self.audit_session(
                event,
                source,
                code,
                technician,
                device.as_deref(),
                match decision {
                    ConsentDecision::Control => "let in to see and control",
                    ConsentDecision::ViewOnly => "let in to see only",
                    ConsentDecision::Rejected => "the user said no",
                    ConsentDecision::TimedOut => "nobody answered in time",
                    ConsentDecision::Denied => "the computer accepts no sessions",
                    ConsentDecision::BadCredentials => {
                        "the computer refused the administrator name or password"
                    }
                }
                .to_owned(),
            );
        }
        match to {
            Some(to) => {
                tracing::debug!(%session_id, "relaying a signal");
                self.send(to, BrokerMessage::Relay { signal });
            }
            None => tracing::debug!(%session_id, "dropped a relay: the other peer has left"),
        }
    }
}

#[cfg(test)]
mod adhoc_tests;
#[cfg(test)]
mod durable_tests;
#[cfg(test)]
mod test_support;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod unattended_tests;
