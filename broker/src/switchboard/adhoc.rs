//! Ad-hoc support sessions on the switchboard: the technician creates one (and may have its
//! invitation e-mailed), the user's temporary host activates it and keeps a standing
//! connection, and every later connection is a one-time code the broker makes and calls
//! the host to join. The rules themselves (quotas, codes, lifetime) are
//! [`deskwire_signal::adhoc::AdhocBook`]'s; this module routes them.
//!
//! ```text
//! technician --create_adhoc--> broker --adhoc_created {token, code}--> technician (closes)
//! host --activate_adhoc {token, code}--> broker --adhoc_activated {host_token}--> host (stays)
//! technician --call_adhoc--> broker --session_created {code}--> technician
//!                                   --adhoc_call {code}--> host, which joins it like a target
//! technician --end_adhoc--> broker --adhoc_ended--> both;  lifetime over: adhoc_ended --> host
//! host lost its network: --reattach_adhoc {host_token}--> broker --adhoc_activated--> host
//! ```

use std::collections::HashMap;

use deskwire_signal::adhoc::{
    Activation, AdhocBook, AdhocEvent, AdhocId, AdhocLimits, AdhocLink, AdhocStatus, Capabilities,
    Capability, CompanyId, DeviceId, EndedBy, InvitationEntropy, InvitationToken, SecurityCode,
    TechnicianId,
};
use deskwire_signal::{AdhocMail, BrokerMessage, ClientMessage, SessionCode, UnixMillis};
use rand::Rng;
use sha2::{Digest, Sha256};

use super::{Authenticated, ConnId, Output, Role, Switchboard};
use crate::store::AuditEvent;

/// How long a closed session's record is kept, in milliseconds (a week).
const FORGET_AFTER_MS: u64 = 7 * 24 * 3600 * 1000;

/// What a technician asked, waiting for their token to be checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AdhocAsk {
    Create { mail: Option<AdhocMail> },
    Call(AdhocId),
    End(AdhocId),
}

/// The ad-hoc sessions of one broker and the temporary hosts connected for them.
#[derive(Debug)]
pub(crate) struct AdhocDesk {
    book: AdhocBook,
    /// Each active session's temporary host, while its standing connection is up.
    hosts: HashMap<AdhocId, ConnId>,
    /// SHA-256 of each activated host's re-attach token.
    host_tokens: HashMap<AdhocId, [u8; 32]>,
    /// `adhoc_created` answers held until their e-mail went out (or failed).
    mailing: HashMap<ConnId, BrokerMessage>,
}

impl AdhocDesk {
    pub(crate) fn new(limits: AdhocLimits) -> Self {
        Self {
            // The limits were validated with the broker's configuration.
            book: AdhocBook::new(limits).unwrap_or_else(|_| {
                AdhocBook::new(AdhocLimits::default()).expect("the default limits are valid")
            }),
            hosts: HashMap::new(),
            host_tokens: HashMap::new(),
            mailing: HashMap::new(),
        }
    }

    /// The desk as saved before a restart, under today's `limits`. Refused (with the
    /// field) when the saved state does not read back: starting empty would overwrite it.
    pub(crate) fn restore(
        limits: AdhocLimits,
        saved: &crate::store::AdhocSnapshot,
    ) -> Result<Self, String> {
        let mut book: AdhocBook = serde_json::from_str(&saved.book)
            .map_err(|e| format!("the saved ad-hoc sessions do not read back: {e}"))?;
        book.set_limits(limits).map_err(|e| e.to_string())?;
        let tokens: HashMap<AdhocId, String> = serde_json::from_str(&saved.host_tokens)
            .map_err(|e| format!("the saved host tokens do not read back: {e}"))?;
        let mut host_tokens = HashMap::new();
        for (id, hex) in tokens {
            let digest = hex::decode(&hex)
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .ok_or_else(|| format!("the saved host token of ad-hoc session {id} is damaged"))?;
            host_tokens.insert(id, digest);
        }
        Ok(Self {
            book,
            host_tokens,
            ..Self::new(limits)
        })
    }

    /// The state to save (digests only).
    fn snapshot(&self) -> crate::store::AdhocSnapshot {
        let tokens: HashMap<AdhocId, String> = self
            .host_tokens
            .iter()
            .map(|(id, d)| (*id, hex::encode(d)))
            .collect();
        crate::store::AdhocSnapshot {
            // Plain data with string keys: serialising cannot fail.
            book: serde_json::to_string(&self.book).unwrap_or_default(),
            host_tokens: serde_json::to_string(&tokens).unwrap_or_default(),
        }
    }

    /// When the next lifetime or invitation runs out, for the driver's timer.
    pub(crate) fn next_deadline(&self) -> Option<UnixMillis> {
        self.book.next_deadline()
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Switchboard {
    /// Every ad-hoc message, and anything said on an ad-hoc host's connection.
    pub(super) fn handle_adhoc_text(
        &mut self,
        conn: ConnId,
        role: Role,
        msg: ClientMessage,
        now: UnixMillis,
    ) {
        match (role, msg) {
            (Role::Undecided, ClientMessage::CreateAdhoc { token, mail }) => {
                self.ask_adhoc(conn, token, AdhocAsk::Create { mail })
            }
            (Role::Undecided, ClientMessage::CallAdhoc { token, session }) => {
                self.ask_adhoc(conn, token, AdhocAsk::Call(session))
            }
            (Role::Undecided, ClientMessage::EndAdhoc { token, session }) => {
                self.ask_adhoc(conn, token, AdhocAsk::End(session))
            }
            (
                Role::Undecided,
                ClientMessage::ActivateAdhoc {
                    token,
                    code,
                    device,
                    permanent_agent,
                },
            ) => self.activate_adhoc(conn, &token, &code, &device, permanent_agent, now),
            (
                Role::Undecided,
                ClientMessage::ReattachAdhoc {
                    session,
                    host_token,
                },
            ) => self.reattach_adhoc(conn, session, &host_token, now),
            (Role::AdhocHost { session }, ClientMessage::LeaveAdhoc {}) => {
                self.end_adhoc(conn, session, EndedBy::User, now)
            }
            (Role::AdhocHost { .. }, _) => self.refuse(
                conn,
                "a temporary host's standing connection carries only leave_adhoc",
            ),
            (Role::Mailing, _) => {
                self.refuse(conn, "wait for adhoc_created before sending anything else")
            }
            (_, ClientMessage::LeaveAdhoc {}) => {
                self.refuse(conn, "leave_adhoc is for an activated temporary host")
            }
            _ => self.refuse(
                conn,
                "this request must be the first message on a connection",
            ),
        }
    }

    /// The book changed: a durable broker saves it (in order with everything else).
    fn adhoc_changed(&mut self) {
        if self.durable {
            let snapshot = self.adhoc.snapshot();
            self.outputs.push_back(Output::SaveAdhoc(snapshot));
        }
    }

    fn ask_adhoc(&mut self, conn: ConnId, token: String, ask: AdhocAsk) {
        self.conns.insert(conn, Role::Authorizing);
        self.authorizing.insert(conn, super::lan::Asked::Adhoc(ask));
        self.outputs.push_back(Output::Authenticate { conn, token });
    }

    /// A technician's token was checked for an ad-hoc request.
    pub(super) fn adhoc_authorized(
        &mut self,
        conn: ConnId,
        ask: AdhocAsk,
        result: Result<Authenticated, String>,
    ) {
        let now = self.now;
        let ip = self.sources.get(&conn).copied();
        let who = match result {
            Ok(who) if who.policy.acceptance == deskwire_signal::PolicyAcceptance::Deny => {
                let why = format!("{}'s group may not start sessions", who.policy.technician);
                self.audit_by(
                    AuditEvent::AdhocRefused,
                    ip,
                    None,
                    Some(who.technician),
                    why.clone(),
                );
                return self.refuse(conn, &why);
            }
            Ok(who) => who,
            Err(why) => {
                self.audit(AuditEvent::DeniedByPolicy, ip, None, why.clone());
                return self.refuse(conn, &why);
            }
        };
        let technician = TechnicianId(who.technician.0);
        match ask {
            AdhocAsk::Create { mail } => self.create_adhoc(conn, &who, mail, now),
            AdhocAsk::Call(id) => {
                let checked =
                    self.adhoc
                        .book
                        .check_open(id, technician, Capability::RemoteControl, now);
                match checked {
                    Err(e) => self.adhoc_refused(conn, Some(&who), &e.to_string()),
                    Ok(_) if !self.adhoc.hosts.contains_key(&id) => self.adhoc_refused(
                        conn,
                        Some(&who),
                        &format!(
                            "the temporary host of ad-hoc session {id} is not connected right \
                             now (its network may be down; it reconnects by itself): try again \
                             in a moment"
                        ),
                    ),
                    Ok(_) => {
                        // An ordinary code session, whose target is called rather than told.
                        let callee = Some(super::Callee::Adhoc(id));
                        self.create_session(conn, now, Some(who), false, callee);
                    }
                }
            }
            AdhocAsk::End(id) => {
                match self
                    .adhoc
                    .book
                    .end_now(id, EndedBy::Technician { id: technician }, now)
                {
                    Ok(event) => {
                        let reason = format!("{} ended the session", who.policy.technician);
                        self.adhoc_over(&event, &reason);
                        self.answer_and_close(
                            conn,
                            BrokerMessage::AdhocEnded {
                                session: id,
                                reason,
                            },
                        );
                    }
                    Err(e) => self.adhoc_refused(conn, Some(&who), &e.to_string()),
                }
            }
        }
    }

    fn create_adhoc(
        &mut self,
        conn: ConnId,
        who: &Authenticated,
        mail: Option<AdhocMail>,
        now: UnixMillis,
    ) {
        // What the engine offers today; whether input is allowed stays the group's call,
        // told to the host with each connection.
        let capabilities = Capabilities::REMOTE_CONTROL;
        let entropy = InvitationEntropy {
            token: self.rng.random(),
            code: self.rng.random(),
        };
        let created = self.adhoc.book.create(
            TechnicianId(who.technician.0),
            CompanyId(who.company.0),
            capabilities,
            now,
            entropy,
        );
        let (id, invitation) = match created {
            Ok(c) => c,
            Err(e) => return self.adhoc_refused(conn, Some(who), &e.to_string()),
        };
        self.adhoc_changed();
        let ip = self.sources.get(&conn).copied();
        let detail = format!(
            "ad-hoc session {id} by {}, invitation valid until {}",
            who.policy.technician, invitation.expires_at
        );
        self.audit_text_by(
            AuditEvent::AdhocCreated,
            ip,
            id,
            Some(who.technician),
            detail,
        );
        tracing::info!(%id, "ad-hoc session created");
        let answer = BrokerMessage::AdhocCreated {
            session: id,
            token: invitation.token.clone(),
            code: invitation.code.clone(),
            expires_at: invitation.expires_at,
            capabilities,
            mailed_to: None,
            mail_error: None,
        };
        let Some(mail) = mail else {
            return self.answer_and_close(conn, answer);
        };
        let secret = hex::decode(&mail.secret)
            .ok()
            .and_then(|b| <[u8; 16]>::try_from(b).ok());
        let Some(secret) = secret else {
            // The session exists; only the e-mail cannot go.
            let why = "the link secret for the e-mail is not 32 hex digits; nothing was sent";
            let answer = with_mail_outcome(answer, &mail.to, Err(why.into()));
            return self.answer_and_close(conn, answer);
        };
        let link = AdhocLink {
            token: invitation.token.clone(),
            secret,
        };
        self.conns.insert(conn, Role::Mailing);
        self.adhoc.mailing.insert(conn, answer);
        self.outputs.push_back(Output::MailInvitation {
            conn,
            to: mail.to,
            technician: who.policy.technician.clone(),
            link: link.to_string(),
            code: invitation.code.to_string(),
            expires_at: invitation.expires_at,
        });
    }

    /// The invitation e-mail for `conn`'s new session went out (`Ok`) or not.
    pub(crate) fn handle_mailed(&mut self, conn: ConnId, to: &str, result: Result<(), String>) {
        let Some(answer) = self.adhoc.mailing.remove(&conn) else {
            return; // the technician left meanwhile; the session stands
        };
        if let Err(e) = &result {
            tracing::warn!(error = %e, "could not e-mail an invitation");
        }
        self.answer_and_close(conn, with_mail_outcome(answer, to, result));
    }

    fn activate_adhoc(
        &mut self,
        conn: ConnId,
        token: &InvitationToken,
        code: &str,
        device: &str,
        permanent_agent: bool,
        now: UnixMillis,
    ) {
        let parsed = SecurityCode::parse(code).and_then(|c| Ok((c, DeviceId::new(device)?)));
        let activated = parsed.and_then(|(code, device)| {
            self.adhoc
                .book
                .activate(token, &code, permanent_agent, device, now)
        });
        match activated {
            Ok(activation) => {
                let id = activation.session;
                let host_token = hex::encode(self.rng.random::<[u8; 32]>());
                self.adhoc.host_tokens.insert(id, digest(&host_token));
                self.adhoc_changed();
                let detail = format!(
                    "on {}, until {}",
                    activation.device_id, activation.expires_at
                );
                self.attach_host(conn, activation, Some(host_token), detail);
            }
            Err(e) => {
                // A wrong code counts towards burning the invitation: keep the count.
                self.adhoc_changed();
                self.adhoc_refused(conn, None, &e.to_string())
            }
        }
    }

    fn reattach_adhoc(&mut self, conn: ConnId, id: AdhocId, host_token: &str, now: UnixMillis) {
        let known = self
            .adhoc
            .host_tokens
            .get(&id)
            .is_some_and(|d| constant_eq(d, &digest(host_token)));
        if !known {
            return self.adhoc_refused(
                conn,
                None,
                "this temporary host is not known for that ad-hoc session",
            );
        }
        let Some(session) = self.adhoc.book.get(id) else {
            return self.adhoc_refused(conn, None, "that ad-hoc session is over");
        };
        match (session.status(now), session.activation()) {
            (AdhocStatus::Active { .. }, Some(activation)) => {
                let detail = "the temporary host re-attached".to_owned();
                self.attach_host(conn, activation, None, detail);
            }
            _ => {
                let why = format!("ad-hoc session {id} is over");
                self.answer_and_close(
                    conn,
                    BrokerMessage::AdhocEnded {
                        session: id,
                        reason: why,
                    },
                );
            }
        }
    }

    /// `conn` is now the host of `activation`'s session (audited with `detail`, told with
    /// its `host_token` on first activation); an older connection of it is dropped (its
    /// socket is half dead, or a copy of the host is running twice).
    fn attach_host(
        &mut self,
        conn: ConnId,
        activation: Activation,
        host_token: Option<String>,
        detail: String,
    ) {
        let id = activation.session;
        let ip = self.sources.get(&conn).copied();
        let technician = self.adhoc_technician(id);
        self.audit_text_by(AuditEvent::AdhocActivated, ip, id, technician, detail);
        self.send(
            conn,
            BrokerMessage::AdhocActivated {
                activation,
                host_token,
            },
        );
        self.conns.insert(conn, Role::AdhocHost { session: id });
        if let Some(old) = self.adhoc.hosts.insert(id, conn) {
            if old != conn {
                self.conns.remove(&old);
                self.outputs.push_back(Output::Close { conn: old });
            }
        }
    }

    fn end_adhoc(&mut self, conn: ConnId, id: AdhocId, by: EndedBy, now: UnixMillis) {
        match self.adhoc.book.end_now(id, by, now) {
            Ok(event) => self.adhoc_over(&event, "the user ended the session"),
            Err(e) => self.refuse(conn, &e.to_string()),
        }
    }

    /// Lifetimes and invitations that ran out by `now`: their hosts are told and dropped.
    pub(crate) fn handle_tick(&mut self, now: UnixMillis) {
        self.now = now;
        // Closed sessions are kept a week, so a reused link hears why it fails.
        let before = UnixMillis(now.0.saturating_sub(FORGET_AFTER_MS));
        if self.adhoc.book.forget_closed(before) > 0 {
            self.adhoc_changed();
        }
        for event in self.adhoc.book.poll_expired(now) {
            let reason = match event {
                AdhocEvent::Expired { .. } => "the ad-hoc session reached the end of its lifetime",
                _ => "the invitation expired without being activated",
            };
            self.adhoc_over(&event, reason);
        }
    }

    /// An ad-hoc session is over: tell its host (which removes itself), forget its token,
    /// audit it.
    fn adhoc_over(&mut self, event: &AdhocEvent, reason: &str) {
        let id = event.session();
        tracing::info!(%id, reason, "ad-hoc session over");
        self.adhoc.host_tokens.remove(&id);
        if let Some(host) = self.adhoc.hosts.remove(&id) {
            self.send(
                host,
                BrokerMessage::AdhocEnded {
                    session: id,
                    reason: reason.to_owned(),
                },
            );
            self.conns.remove(&host);
            self.outputs.push_back(Output::Close { conn: host });
        }
        let technician = self.adhoc_technician(id);
        self.audit_text_by(
            AuditEvent::AdhocEnded,
            None,
            id,
            technician,
            reason.to_owned(),
        );
        self.adhoc_changed();
    }

    /// Called from `announce_code` for a call's code: ask the host to join it.
    pub(super) fn call_adhoc_host(
        &mut self,
        controller: ConnId,
        id: AdhocId,
        code: SessionCode,
        technician: String,
    ) {
        match self.adhoc.hosts.get(&id) {
            Some(&host) => {
                tracing::info!(%id, "calling the temporary host");
                self.send(
                    host,
                    BrokerMessage::AdhocCall {
                        session: code,
                        technician,
                    },
                );
            }
            None => self.refuse(
                controller,
                "the temporary host went offline just now; try again in a moment",
            ),
        }
    }

    /// A standing host connection closed: the session stays, waiting for it to re-attach.
    pub(super) fn adhoc_host_left(&mut self, conn: ConnId, id: AdhocId) {
        if self.adhoc.hosts.get(&id) == Some(&conn) {
            self.adhoc.hosts.remove(&id);
            tracing::info!(%id, "temporary host disconnected; it may re-attach");
        }
    }

    /// A technician's mailing request closed before the e-mail outcome.
    pub(super) fn adhoc_mailing_left(&mut self, conn: ConnId) {
        self.adhoc.mailing.remove(&conn);
    }

    fn adhoc_refused(&mut self, conn: ConnId, who: Option<&Authenticated>, why: &str) {
        let ip = self.sources.get(&conn).copied();
        self.audit_by(
            AuditEvent::AdhocRefused,
            ip,
            None,
            who.map(|w| w.technician),
            why.to_owned(),
        );
        self.refuse(conn, why);
    }

    fn adhoc_technician(&self, id: AdhocId) -> Option<crate::store::TechnicianId> {
        self.adhoc
            .book
            .get(id)
            .map(|s| crate::store::TechnicianId(s.technician().0))
    }

    fn audit_text_by(
        &mut self,
        event: AuditEvent,
        ip: Option<std::net::IpAddr>,
        id: AdhocId,
        technician: Option<crate::store::TechnicianId>,
        detail: String,
    ) {
        self.audit_record(event, ip, &format!("adhoc-{id}"), technician, detail);
    }
}

/// `answer` (an `adhoc_created`) saying whether its e-mail to `to` went out.
fn with_mail_outcome(
    mut answer: BrokerMessage,
    to: &str,
    result: Result<(), String>,
) -> BrokerMessage {
    if let BrokerMessage::AdhocCreated {
        mailed_to,
        mail_error,
        ..
    } = &mut answer
    {
        match result {
            Ok(()) => *mailed_to = Some(to.to_owned()),
            Err(e) => {
                *mail_error = Some(e.chars().take(deskwire_signal::MAX_REASON_CHARS).collect())
            }
        }
    }
    answer
}

fn constant_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
