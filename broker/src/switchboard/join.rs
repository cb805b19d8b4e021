//! The target's side: `join` through the limits, the device check and the code, pairing,
//! refusals, and failed verifications that unpair a target or burn its code.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use deskwire_signal::device::DeviceProof;
use deskwire_signal::{BrokerMessage, JoinRefusal, SessionCode, UnixMillis};

use super::{ConnId, Output, Role, Switchboard, MAX_FAILED_VERIFICATIONS};
use crate::codes::SessionId;
use crate::limits::SourceKey;
use crate::store::{AuditEvent, EndedBy};

impl Switchboard {
    /// `join`: the limits, then (with a device proof) the device check, then the code.
    pub(super) fn join(
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
            return self.redeem(conn, refusals, code, None, now);
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
                    self.audit_text(AuditEvent::DeviceRegistered, ip, &code, id.clone());
                }
                self.redeem(conn, refusals, &code, Some(id), now);
            }
            Err(why) => {
                let detail = format!("{id}: {why}");
                self.audit_text(AuditEvent::DeviceKeyMismatch, ip, &code, detail);
                let reason = JoinRefusal::DeviceNotAuthenticated;
                self.refuse_join(conn, refusals, &code, reason, now);
            }
        }
    }

    /// Redeem the code and pair, or refuse. A durable broker asks the store first: about a
    /// code it does not hold, or to redeem one it does.
    pub(super) fn redeem(
        &mut self,
        conn: ConnId,
        refusals: u32,
        code: &str,
        device: Option<String>,
        now: UnixMillis,
    ) {
        if self.durable {
            if let Ok(parsed) = code.parse::<SessionCode>() {
                if !self.codes.holds(parsed) {
                    self.conns.insert(conn, Role::LookingUp { refusals });
                    self.store_joins.insert(conn, (code.to_owned(), device));
                    self.outputs
                        .push_back(Output::LookUpCode { conn, code: parsed });
                    return;
                }
            }
        }
        let found = self.codes.redeem(code, now).and_then(|session_id| {
            match self.sessions.get(&session_id) {
                // A code is only redeemable while its controller is connected: leaving
                // cancels it. Checked anyway, so the tables cannot disagree.
                Some(s) if s.controller.is_some() && s.target.is_none() && s.joining.is_none() => {
                    Ok(session_id)
                }
                _ => Err(JoinRefusal::Cancelled),
            }
        });
        match found {
            Ok(session_id) if self.durable => {
                let Some(session) = self.sessions.get_mut(&session_id) else {
                    return;
                };
                session.joining = Some(conn);
                let (parsed, technician) = (session.code, session.technician);
                self.conns.insert(
                    conn,
                    Role::Redeeming {
                        session: session_id,
                        refusals,
                    },
                );
                self.store_joins
                    .insert(conn, (code.to_owned(), device.clone()));
                self.outputs.push_back(Output::RedeemCode {
                    conn,
                    session: session_id,
                    code: parsed,
                    technician,
                    device,
                });
            }
            Ok(session_id) => self.pair(conn, refusals, session_id, device),
            Err(reason) => self.refuse_join(conn, refusals, code, reason, now),
        }
    }

    /// The code worked: pair the target on `conn` with the session's controller.
    pub(super) fn pair(
        &mut self,
        conn: ConnId,
        refusals: u32,
        session_id: SessionId,
        device: Option<String>,
    ) {
        let Some(session) = self.sessions.get_mut(&session_id) else {
            return;
        };
        session.target = Some(conn);
        session.paired = true;
        session.device = device.clone();
        session.end_audited = false;
        let (code, controller, policy, technician) = (
            session.code,
            session.controller,
            session.policy.clone(),
            session.technician,
        );
        tracing::info!(%session_id, "target joined");
        let source = self.sources.get(&conn).copied();
        let detail = "the target joined; the peers verify each other next".to_owned();
        self.audit_session(
            AuditEvent::SessionStarted,
            source,
            code,
            technician,
            device.as_deref(),
            detail,
        );
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

    /// Tell the target why its join failed; it may try again on the same socket.
    pub(super) fn refuse_join(
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
            JoinRefusal::TooManyAttempts | JoinRefusal::LockedOut | JoinRefusal::ControllerAway
        ) {
            if let Some(source) = source {
                self.limiter.record_failure(SourceKey::of(source), now);
            }
        }
        let typed: String = code.chars().take(32).collect();
        let waiting = matches!(
            reason,
            JoinRefusal::TooManyAttempts | JoinRefusal::LockedOut
        );
        // A source waiting out a limit may send joins as fast as its socket carries them:
        // one record per source and minute, and then one summary of what was left out,
        // so the audit stays complete without a write per spammed join (330 000 in 25 s
        // once queued ahead of every session's writes).
        let record = match (waiting, source) {
            (true, Some(ip)) => self.throttled.admit(ip, now),
            _ => Admit::Record { left_out: 0 },
        };
        if let Admit::Record { left_out } = record {
            if left_out > 0 {
                self.audit_text(
                    refusal_event(reason),
                    source,
                    "",
                    format!(
                        "{left_out} more joins refused while this address waited out its limit"
                    ),
                );
            }
            self.audit_text(
                refusal_event(reason),
                source,
                &typed,
                reason.message().into(),
            );
            tracing::info!(?reason, refusals, "join refused");
        } else {
            tracing::debug!(?reason, refusals, "join refused (summarised)");
        }
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
    pub(super) fn verification_failed(&mut self, session_id: SessionId, now: UnixMillis) {
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
        let record = session.record.take();
        let burned = failures >= MAX_FAILED_VERIFICATIONS;
        if self.durable {
            self.outputs.push_back(Output::FailedConfirmation { code });
            if let Some(record) = record {
                self.outputs.push_back(Output::EndSession {
                    record,
                    by: EndedBy::Broker,
                    reason: format!("the peers' verification failed ({failures})"),
                });
            }
        }
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
    pub(super) fn admit_join(
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
        // A live code refused for now, not a guess: the broker's rule, not the user's error.
        JoinRefusal::ControllerAway => AuditEvent::DeniedByPolicy,
    }
}

/// How long one audit record stands for a source's refused joins while it waits.
const THROTTLE_WINDOW: Duration = Duration::from_secs(60);
/// Sources remembered at once (each a few bytes); past it, finished windows are forgotten.
const THROTTLE_SOURCES: usize = 4096;

/// Per source: when its current window began, and the refusals left out of the audit since.
#[derive(Debug, Default)]
pub(super) struct Throttled {
    sources: HashMap<IpAddr, (UnixMillis, u64)>,
}

/// Whether a throttled refusal gets its own record.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Admit {
    /// Record it, after a summary of the `left_out` before it (if any).
    Record { left_out: u64 },
    /// Count it in the next summary.
    Count,
}

impl Throttled {
    pub(super) fn admit(&mut self, ip: IpAddr, now: UnixMillis) -> Admit {
        if self.sources.len() >= THROTTLE_SOURCES && !self.sources.contains_key(&ip) {
            self.sources
                .retain(|_, (since, _)| now < since.plus(THROTTLE_WINDOW));
            if self.sources.len() >= THROTTLE_SOURCES {
                // Still full of live windows: record rather than forget.
                return Admit::Record { left_out: 0 };
            }
        }
        match self.sources.get_mut(&ip) {
            Some((since, left_out)) if now < since.plus(THROTTLE_WINDOW) => {
                *left_out += 1;
                Admit::Count
            }
            Some((since, left_out)) => {
                let summary = std::mem::take(left_out);
                *since = now;
                Admit::Record { left_out: summary }
            }
            None => {
                self.sources.insert(ip, (now, 0));
                Admit::Record { left_out: 0 }
            }
        }
    }
}

#[cfg(test)]
mod throttle_tests {
    use super::*;

    #[test]
    fn a_waiting_source_gets_one_record_a_minute_and_then_a_count_of_the_rest() {
        let mut t = Throttled::default();
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let t0 = UnixMillis(1_000_000);
        assert_eq!(t.admit(ip, t0), Admit::Record { left_out: 0 });
        for i in 1..=1000 {
            assert_eq!(t.admit(ip, UnixMillis(t0.0 + i)), Admit::Count);
        }
        let other: IpAddr = "192.0.2.8".parse().unwrap();
        assert_eq!(t.admit(other, t0), Admit::Record { left_out: 0 });
        let later = t0.plus(THROTTLE_WINDOW);
        assert_eq!(t.admit(ip, later), Admit::Record { left_out: 1000 });
        assert_eq!(t.admit(ip, later), Admit::Count);
    }
}
