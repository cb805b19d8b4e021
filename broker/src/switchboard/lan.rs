//! LAN credentials: a LAN target this broker manages reports its current password over a
//! connection authenticated by its device key, and a technician whose group has the `lan`
//! permission reads it back. The broker is the one place the password travels.

use std::time::Duration;

use deskwire_signal::device::DeviceProof;
use deskwire_signal::{BrokerMessage, UnixMillis};

use super::durable::Authenticated;
use super::{ConnId, Output, Role, Switchboard};
use crate::store::{AuditEvent, LanReport, TechnicianId};

/// How far a report's time may be from the broker's clock.
const MAX_SKEW: Duration = Duration::from_secs(5 * 60);

/// What a connection waiting for a token check asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Asked {
    /// `authorize`: whether the group holds this permission.
    Permission(String),
    /// `get_lan_password` for this device.
    LanPassword(String),
    /// An ad-hoc request.
    Adhoc(super::adhoc::AdhocAsk),
    /// `call_unattended` to this device under this grant.
    Unattended {
        /// The device id.
        device: String,
        /// The grant's number.
        grant: u32,
    },
}

impl Switchboard {
    pub(super) fn report_lan_password(
        &mut self,
        conn: ConnId,
        device: DeviceProof,
        password: String,
        rotates_at: UnixMillis,
        reported_at: UnixMillis,
        now: UnixMillis,
    ) {
        let key = match device.verify_lan_report(&password, rotates_at, reported_at) {
            Ok(key) => key,
            Err(e) => return self.refuse(conn, &format!("the LAN password report: {e}")),
        };
        let skew = if reported_at > now {
            reported_at.since(now)
        } else {
            now.since(reported_at)
        };
        if skew > MAX_SKEW {
            return self.refuse(
                conn,
                &format!(
                    "the report is {} s away from the broker's clock (at most {} s): check the clocks",
                    skew.as_secs(),
                    MAX_SKEW.as_secs()
                ),
            );
        }
        if !self.durable {
            return self.refuse(conn, "this broker has no database to keep LAN passwords in");
        }
        self.conns.insert(conn, Role::Reporting);
        self.outputs.push_back(Output::StoreLanReport {
            conn,
            id: device.id,
            key,
            report: LanReport {
                password,
                rotates_at: millis(rotates_at),
                reported_at: millis(reported_at),
            },
        });
    }

    /// The store kept the report (`Ok(true)`), had a newer one (`Ok(false)`) or refused.
    pub(crate) fn handle_lan_stored(&mut self, conn: ConnId, result: Result<bool, String>) {
        let older = "a newer report of this device is already kept";
        self.report_stored(conn, result, BrokerMessage::LanReported {}, older);
    }

    /// A device's signed report (`report_lan_password`, `report_grant`) was kept
    /// (`Ok(true)`): answer `kept`; or a newer one was already there (say `older`); or the
    /// store failed.
    pub(super) fn report_stored(
        &mut self,
        conn: ConnId,
        result: Result<bool, String>,
        kept: BrokerMessage,
        older: &str,
    ) {
        if !matches!(self.conns.get(&conn), Some(Role::Reporting)) {
            return;
        }
        match result {
            Ok(true) => self.answer_and_close(conn, kept),
            Ok(false) => self.refuse(conn, older),
            Err(why) => self.refuse(conn, &why),
        }
    }

    pub(super) fn get_lan_password(&mut self, conn: ConnId, token: String, device: String) {
        self.conns.insert(conn, Role::Authorizing);
        self.authorizing.insert(conn, Asked::LanPassword(device));
        self.outputs.push_back(Output::Authenticate { conn, token });
    }

    /// The technician of a `get_lan_password` authenticated: look the password up if their
    /// group may connect on the LAN.
    pub(super) fn lan_password_authorized(
        &mut self,
        conn: ConnId,
        device: String,
        who: Authenticated,
    ) {
        let ip = self.sources.get(&conn).copied();
        if !who.permissions.contains(&"lan") {
            let why = format!(
                "{}'s group does not have the lan permission, which reading LAN passwords needs",
                who.policy.technician
            );
            self.audit_by(
                AuditEvent::DeniedByPolicy,
                ip,
                None,
                Some(who.technician),
                why.clone(),
            );
            return self.refuse(conn, &why);
        }
        self.conns.insert(conn, Role::LookingUpLan);
        self.outputs.push_back(Output::LookUpLanPassword {
            conn,
            device,
            technician: who.technician,
        });
    }

    /// The store's answer to [`Output::LookUpLanPassword`].
    pub(crate) fn handle_lan_looked_up(
        &mut self,
        conn: ConnId,
        device: String,
        technician: TechnicianId,
        result: Result<Option<LanReport>, String>,
    ) {
        if !matches!(self.conns.get(&conn), Some(Role::LookingUpLan)) {
            return;
        }
        let ip = self.sources.get(&conn).copied();
        match result {
            Ok(Some(r)) => {
                self.audit_by(
                    AuditEvent::PermissionGranted,
                    ip,
                    None,
                    Some(technician),
                    format!("read the LAN password of {device}"),
                );
                self.answer_and_close(
                    conn,
                    BrokerMessage::LanPassword {
                        device,
                        password: r.password,
                        rotates_at: UnixMillis(u64::try_from(r.rotates_at).unwrap_or(0)),
                        reported_at: UnixMillis(u64::try_from(r.reported_at).unwrap_or(0)),
                    },
                );
            }
            Ok(None) => self.refuse(
                conn,
                &format!("device {device} has not reported a LAN password to this broker"),
            ),
            Err(why) => self.refuse(conn, &why),
        }
    }
}

fn millis(t: UnixMillis) -> i64 {
    i64::try_from(t.0).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use deskwire_signal::device::DeviceKey;
    use deskwire_signal::{encode, ClientMessage};
    use rand::SeedableRng;

    use super::*;
    use crate::codes::CodeLimits;
    use crate::limits::JoinLimits;
    use crate::switchboard::Requirements;

    const SRC: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 7));
    const NOW: UnixMillis = UnixMillis(1_700_000_000_000);

    fn board(store: bool) -> Switchboard {
        let limits = CodeLimits {
            ttl: Duration::from_secs(600),
            retention: Duration::from_secs(3600),
            max_pending: 8,
            max_tombstones: 64,
        };
        let b = Switchboard::new(
            limits,
            JoinLimits::default(),
            Requirements::default(),
            rand::rngs::StdRng::seed_from_u64(3),
        );
        if store {
            b.with_store()
        } else {
            b
        }
    }

    fn report(reported_at: UnixMillis, tamper: bool) -> ClientMessage {
        let key = DeviceKey::from_seed([4; 32]);
        let rotates_at = reported_at.plus(Duration::from_secs(86_400));
        let device = key.prove_lan_report("ABCD-EFGH-JKMN", rotates_at, reported_at);
        ClientMessage::ReportLanPassword {
            device,
            password: if tamper {
                "ZZZZ-EFGH-JKMN"
            } else {
                "ABCD-EFGH-JKMN"
            }
            .into(),
            rotates_at,
            reported_at,
        }
    }

    fn outputs(store: bool, msg: &ClientMessage) -> (Switchboard, ConnId, Vec<Output>) {
        let mut b = board(store);
        let c = b.handle_open(SRC);
        b.handle_text(c, &encode(msg), NOW);
        let out = std::iter::from_fn(|| b.poll_output()).collect();
        (b, c, out)
    }

    fn error(out: &[Output]) -> Option<&str> {
        out.iter().find_map(|o| match o {
            Output::Send {
                msg: BrokerMessage::Error { message },
                ..
            } => Some(message.as_str()),
            _ => None,
        })
    }

    #[test]
    fn a_signed_report_in_time_goes_to_the_store_and_is_acknowledged() {
        let (mut b, c, out) = outputs(true, &report(NOW, false));
        assert!(
            matches!(out.as_slice(), [Output::StoreLanReport { report, .. }] if report.password == "ABCD-EFGH-JKMN"),
            "{out:?}"
        );
        b.handle_lan_stored(c, Ok(true));
        let out: Vec<Output> = std::iter::from_fn(|| b.poll_output()).collect();
        assert!(
            matches!(
                out.as_slice(),
                [
                    Output::Send {
                        msg: BrokerMessage::LanReported {},
                        ..
                    },
                    Output::Close { .. }
                ]
            ),
            "{out:?}"
        );
    }

    #[test]
    fn a_tampered_a_stale_or_an_unkept_report_is_refused() {
        let (_, _, out) = outputs(true, &report(NOW, true));
        assert!(
            error(&out).is_some_and(|e| e.contains("signature")),
            "{out:?}"
        );
        let late = UnixMillis(NOW.0 - 10 * 60 * 1000);
        let (_, _, out) = outputs(true, &report(late, false));
        assert!(error(&out).is_some_and(|e| e.contains("clock")), "{out:?}");
        let (_, _, out) = outputs(false, &report(NOW, false));
        assert!(
            error(&out).is_some_and(|e| e.contains("no database")),
            "{out:?}"
        );
        let (mut b, c, _) = outputs(true, &report(NOW, false));
        b.handle_lan_stored(c, Ok(false));
        let out: Vec<Output> = std::iter::from_fn(|| b.poll_output()).collect();
        assert!(
            error(&out).is_some_and(|e| e.contains("newer report")),
            "{out:?}"
        );
    }
}
