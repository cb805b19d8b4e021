//! `create_session`: the per-source creation limit, the token check, issuing the code.

use std::net::IpAddr;
use std::time::Duration;

use deskwire_signal::UnixMillis;

use super::{join, Authenticated, Callee, ConnId, Output, Role, Session, SessionId, Switchboard};
use crate::limits::SourceKey;
use crate::store::AuditEvent;

impl Switchboard {
    /// `create_session`: check the token first when there is one (or one is required).
    pub(super) fn request_session(
        &mut self,
        conn: ConnId,
        token: Option<String>,
        resumable: bool,
        now: UnixMillis,
    ) {
        // Before the token: a flood of creations must not become a flood of token checks.
        if let Some(ip) = self.sources.get(&conn).copied() {
            if let Err(wait) = self.creations.admit(SourceKey::of(ip), now) {
                return self.refuse_creation(conn, ip, wait, now);
            }
        }
        match token {
            Some(token) => {
                self.conns.insert(conn, Role::Authenticating { resumable });
                self.outputs.push_back(Output::Authenticate { conn, token });
            }
            None if self.require_token => {
                let ip = self.sources.get(&conn).copied();
                let why = "this broker requires a technician's API token";
                self.audit(AuditEvent::DeniedByPolicy, ip, None, why.into());
                self.refuse(conn, why);
            }
            None => self.create_session(conn, now, None, resumable, None),
        }
    }

    /// `ip` created as many sessions as a minute allows: say when it may go on, and audit
    /// once a minute per source with a count of the rest.
    fn refuse_creation(&mut self, conn: ConnId, ip: IpAddr, wait: Duration, now: UnixMillis) {
        let why = format!(
            "too many sessions created from your address; try again in {}",
            deskwire_signal::words::duration(wait.max(Duration::from_secs(1)))
        );
        if let join::Admit::Record { left_out } = self.creations_throttled.admit(ip, now) {
            if left_out > 0 {
                let more = format!("{left_out} more session creations refused from this address");
                self.audit(AuditEvent::DeniedByPolicy, Some(ip), None, more);
            }
            self.audit(AuditEvent::DeniedByPolicy, Some(ip), None, why.clone());
        }
        self.refuse(conn, &why);
    }

    pub(super) fn create_session(
        &mut self,
        conn: ConnId,
        now: UnixMillis,
        who: Option<Authenticated>,
        resumable: bool,
        callee: Option<Callee>,
    ) {
        let session_id = SessionId(self.next_session);
        match self.codes.issue(now, session_id, &mut self.rng) {
            Ok((code, expires_at)) => {
                self.next_session += 1;
                let mut session = Session::new(code, conn, expires_at, now);
                session.technician = who.as_ref().map(|w| w.technician);
                session.policy = who.map(|w| w.policy);
                session.callee = callee;
                self.sessions.insert(session_id, session);
                if self.durable {
                    return self.store_code(conn, session_id, resumable, now);
                }
                self.conns.insert(
                    conn,
                    Role::Controller {
                        session: session_id,
                    },
                );
                self.announce_code(conn, session_id, "");
            }
            Err(e) => {
                tracing::warn!("refused to create a session: {e}");
                let ip = self.sources.get(&conn).copied();
                self.audit(AuditEvent::DeniedByPolicy, ip, None, e.to_string());
                self.refuse(conn, &e.to_string());
            }
        }
    }
}
