//! Unattended connections through the broker: devices report the grants their users
//! approved (signed), their agents stand by on a connection of their own, and a technician's
//! call is let through only if the broker's copy of the grant is open at the broker's clock.
//! The agent then checks its own copy at its own clock: neither side trusts the other alone.
//!
//! ```text
//! device agent --report_grant {proof, grant, record}--> broker (kept) --grant_reported-->
//! device agent --standby {proof}--> broker --standing_by--> (stays)
//! technician --call_unattended {device, grant}--> broker: its copy open now? (audited)
//!   yes: --session_created {code}--> technician, --unattended_call {code, grant}--> agent
//!   no:  --error {why}--> technician
//! ```

use std::collections::HashMap;

use deskwire_signal::device::DeviceProof;
use deskwire_signal::grant::Grant;
use deskwire_signal::{BrokerMessage, SessionCode, UnixMillis};

use super::{Authenticated, ConnId, Output, Role, Switchboard};
use crate::store::{AuditEvent, GrantReport};

/// How far a device's clock may be from the broker's for its signed times.
const MAX_SKEW_MS: u64 = 5 * 60 * 1000;

/// Agents standing by, and calls waiting for the store.
#[derive(Debug, Default)]
pub(crate) struct UnattendedDesk {
    /// Device id to its agent's standing connection.
    standing: HashMap<String, ConnId>,
    /// The other way round.
    devices: HashMap<ConnId, String>,
    /// Calls whose grant the store is looking up: the technician.
    lookups: HashMap<ConnId, Authenticated>,
}

fn skew(a: UnixMillis, b: UnixMillis) -> u64 {
    a.0.abs_diff(b.0)
}

impl Switchboard {
    pub(super) fn report_grant(
        &mut self,
        conn: ConnId,
        device: DeviceProof,
        report: GrantReport,
        now: UnixMillis,
    ) {
        let at = UnixMillis(u64::try_from(report.reported_at).unwrap_or(0));
        let key = match device.verify_grant_report(report.grant, &report.record, at) {
            Ok(key) => key,
            Err(e) => return self.refuse(conn, &format!("the grant report: {e}")),
        };
        if skew(at, now) > MAX_SKEW_MS {
            return self.refuse(
                conn,
                "the grant report's time is far from the broker's clock: check the clocks",
            );
        }
        let grant = match serde_json::from_str::<Grant>(&report.record) {
            Ok(g) => g,
            Err(e) => return self.refuse(conn, &format!("the grant record does not read: {e}")),
        };
        if !self.durable {
            return self.refuse(conn, "this broker has no database to keep grants in");
        }
        let (event, what) = match grant.revoked_at() {
            Some(_) => (AuditEvent::GrantRevoked, "revoked"),
            None => (AuditEvent::GrantApproved, "approved"),
        };
        let ip = self.sources.get(&conn).copied();
        self.audit_device(
            event,
            ip,
            None,
            &device.id,
            format!(
                "grant {} for {} {what} on the computer",
                report.grant, report.technician
            ),
        );
        self.conns.insert(conn, Role::Reporting);
        self.outputs.push_back(Output::StoreGrant {
            conn,
            id: device.id,
            key,
            report,
        });
    }

    /// The store kept a grant report (`Ok(true)`), found a newer one, or failed.
    pub(crate) fn handle_grant_stored(&mut self, conn: ConnId, result: Result<bool, String>) {
        let older = "a newer report of this grant is already kept";
        self.report_stored(conn, result, BrokerMessage::GrantReported {}, older);
    }

    pub(super) fn standby(
        &mut self,
        conn: ConnId,
        device: DeviceProof,
        at: UnixMillis,
        now: UnixMillis,
    ) {
        if let Err(e) = device.verify_standby(at) {
            return self.refuse(conn, &format!("the standby proof: {e}"));
        }
        if skew(at, now) > MAX_SKEW_MS {
            return self.refuse(conn, "the standby proof is not recent: check the clocks");
        }
        let id = device.id;
        tracing::info!(device = %id, "agent standing by for unattended calls");
        if let Some(old) = self.unattended.standing.insert(id.clone(), conn) {
            // A newer connection of the same agent (the old one is half dead).
            self.unattended.devices.remove(&old);
            self.conns.remove(&old);
            self.outputs.push_back(Output::Close { conn: old });
        }
        self.unattended.devices.insert(conn, id);
        self.conns.insert(conn, Role::Standby);
        self.send(conn, BrokerMessage::StandingBy {});
    }

    /// A standing connection closed.
    pub(super) fn standby_left(&mut self, conn: ConnId) {
        if let Some(id) = self.unattended.devices.remove(&conn) {
            if self.unattended.standing.get(&id) == Some(&conn) {
                self.unattended.standing.remove(&id);
            }
        }
    }

    /// The technician of a `call_unattended` authenticated: look the grant up if their
    /// group may connect unattended.
    pub(super) fn unattended_authorized(
        &mut self,
        conn: ConnId,
        device: String,
        grant: u32,
        result: Result<Authenticated, String>,
    ) {
        let ip = self.sources.get(&conn).copied();
        match result {
            Ok(who) if who.permissions.contains(&"unattended") => {
                self.unattended.lookups.insert(conn, who);
                self.conns.insert(conn, Role::LookingUpGrant);
                self.outputs.push_back(Output::LookUpGrant {
                    conn,
                    device,
                    grant,
                });
            }
            Ok(who) => {
                let why = format!(
                    "{}'s group does not have the unattended permission",
                    who.policy.technician
                );
                self.audit_by(
                    AuditEvent::UnattendedRefused,
                    ip,
                    None,
                    Some(who.technician),
                    why.clone(),
                );
                self.refuse(conn, &why);
            }
            Err(why) => {
                self.audit(AuditEvent::DeniedByPolicy, ip, None, why.clone());
                self.refuse(conn, &why);
            }
        }
    }

    /// The store's copy of the grant a technician calls under (`None`: never reported).
    pub(crate) fn handle_grant_looked_up(
        &mut self,
        conn: ConnId,
        device: String,
        grant: u32,
        result: Result<Option<GrantReport>, String>,
        now: UnixMillis,
    ) {
        let Some(who) = self.unattended.lookups.remove(&conn) else {
            return; // gone meanwhile
        };
        self.now = now;
        let ip = self.sources.get(&conn).copied();
        let name = who.policy.technician.clone();
        let verdict = match result {
            Err(why) => Err(why),
            Ok(None) => Err(format!("the broker knows no grant {grant} of {device}")),
            Ok(Some(report)) => match serde_json::from_str::<Grant>(&report.record) {
                Err(_) => Err(format!(
                    "the broker's copy of grant {grant} of {device} is damaged"
                )),
                Ok(_) if report.technician != name => Err(format!(
                    "grant {grant} of {device} was approved for another technician"
                )),
                Ok(g) => g.check(now).map_err(|why| {
                    format!("grant {grant} of {device} does not let anyone in now: {why}")
                }),
            },
        };
        let verdict = verdict.and_then(|()| {
            if self.unattended.standing.contains_key(&device) {
                Ok(())
            } else {
                Err(format!(
                    "{device}'s agent is not connected to the broker right now"
                ))
            }
        });
        let detail = format!("{name} to {device} under grant {grant}");
        match verdict {
            Err(why) => {
                tracing::info!(%detail, why, "unattended connection refused");
                self.audit_device(
                    AuditEvent::UnattendedRefused,
                    ip,
                    Some(who.technician),
                    &device,
                    format!("{detail}: {why}"),
                );
                self.refuse(conn, &why);
            }
            Ok(()) => {
                // The broker's part only: the computer checks its own copy of the grant
                // and the credentials next, and a refusal there is audited as it passes.
                self.audit_device(
                    AuditEvent::UnattendedAllowed,
                    ip,
                    Some(who.technician),
                    &device,
                    format!("{detail}: the broker's copy is open; calling the computer"),
                );
                let callee = Some(super::Callee::Agent { device, grant });
                self.create_session(conn, now, Some(who), false, callee);
            }
        }
    }

    /// Called from `announce_code` for an unattended call's code: ask the agent to join.
    pub(super) fn call_agent(
        &mut self,
        controller: ConnId,
        device: String,
        grant: u32,
        code: SessionCode,
        technician: String,
    ) {
        match self.unattended.standing.get(&device) {
            Some(&agent) => {
                tracing::info!(%device, grant, "calling the agent");
                self.send(
                    agent,
                    BrokerMessage::UnattendedCall {
                        session: code,
                        grant,
                        technician,
                    },
                );
            }
            None => self.refuse(
                controller,
                "the agent went offline just now; try again in a moment",
            ),
        }
    }
}
