//! `authorize`: a technician asks whether their group holds a permission they are about to
//! use where the broker is not in the path (connecting on the LAN). The broker checks the
//! token, answers `authorized` or says why not, audits either way, and closes.

use deskwire_signal::BrokerMessage;

use super::durable::Authenticated;
use super::lan::Asked;
use super::{ConnId, Output, Role, Switchboard};
use crate::store::AuditEvent;

/// Permissions a technician may ask about.
const ASKABLE: [&str; 6] = [
    "control",
    "view_only",
    "clipboard",
    "file_transfer",
    "unattended",
    "lan",
];

impl Switchboard {
    pub(super) fn authorize(&mut self, conn: ConnId, token: String, permission: String) {
        if !ASKABLE.contains(&permission.as_str()) {
            let why = format!(
                "unknown permission {permission:?} (expected one of {})",
                ASKABLE.join(", ")
            );
            return self.refuse(conn, &why);
        }
        self.conns.insert(conn, Role::Authorizing);
        self.authorizing.insert(conn, Asked::Permission(permission));
        self.outputs.push_back(Output::Authenticate { conn, token });
    }

    /// The token of an `authorize` was checked.
    pub(super) fn authorized(&mut self, conn: ConnId, result: Result<Authenticated, String>) {
        let ip = self.sources.get(&conn).copied();
        let permission = match (self.authorizing.remove(&conn), result) {
            (Some(Asked::Permission(p)), result) => (p, result),
            (Some(Asked::LanPassword(device)), Ok(who)) => {
                return self.lan_password_authorized(conn, device, who)
            }
            (Some(Asked::LanPassword(_)), Err(why)) => (String::new(), Err(why)),
            (Some(Asked::Adhoc(ask)), result) => return self.adhoc_authorized(conn, ask, result),
            (Some(Asked::Unattended { device, grant }), result) => {
                return self.unattended_authorized(conn, device, grant, result)
            }
            (None, _) => return,
        };
        let (permission, result) = permission;
        match result {
            Ok(who) if who.permissions.contains(&permission.as_str()) => {
                let technician = who.policy.technician.clone();
                self.audit_by(
                    AuditEvent::PermissionGranted,
                    ip,
                    None,
                    Some(who.technician),
                    format!("{technician} may use {permission}"),
                );
                self.answer_and_close(
                    conn,
                    BrokerMessage::Authorized {
                        technician,
                        permission,
                    },
                );
            }
            Ok(who) => {
                let why = format!(
                    "{}'s group does not have the {permission} permission; an admin can grant it with `deskwire-broker admin`",
                    who.policy.technician
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
            Err(why) => {
                self.audit(AuditEvent::LoginFailed, ip, None, why.clone());
                self.refuse(conn, &why);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;
    use std::time::Duration;

    use deskwire_signal::{encode, ClientMessage, PolicyAcceptance, SessionPolicy, UnixMillis};
    use rand::SeedableRng;

    use super::*;
    use crate::codes::CodeLimits;
    use crate::limits::JoinLimits;
    use crate::store::TechnicianId;
    use crate::switchboard::Requirements;

    const SRC: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 9));
    const T0: UnixMillis = UnixMillis(1_700_000_000_000);

    fn board() -> Switchboard {
        let limits = CodeLimits {
            ttl: Duration::from_secs(600),
            retention: Duration::from_secs(3600),
            max_pending: 8,
            max_tombstones: 64,
        };
        Switchboard::new(
            limits,
            JoinLimits::default(),
            Requirements::default(),
            rand::rngs::StdRng::seed_from_u64(9),
        )
    }

    fn alice(permissions: Vec<&'static str>) -> Authenticated {
        Authenticated {
            technician: TechnicianId(3),
            policy: SessionPolicy {
                technician: "alice".into(),
                company: String::new(),
                acceptance: PolicyAcceptance::Request,
                window_secs: 30,
                control: false,
                unattended: false,
                admin_credentials_only: false,
            },
            max_sessions: None,
            open_sessions: 0,
            company: crate::store::CompanyId(1),
            permissions,
        }
    }

    /// Ask about `permission`; the token check's answer is `answer`.
    fn ask(permission: &str, answer: Option<Result<Authenticated, String>>) -> Vec<Output> {
        let mut b = board();
        let c = b.handle_open(SRC);
        let msg = ClientMessage::Authorize {
            token: "dw_token".into(),
            permission: permission.into(),
        };
        b.handle_text(c, &encode(&msg), T0);
        let mut out: Vec<Output> = std::iter::from_fn(|| b.poll_output()).collect();
        if let Some(answer) = answer {
            assert!(
                matches!(out.as_slice(), [Output::Authenticate { token, .. }] if token == "dw_token"),
                "{out:?}"
            );
            b.handle_authenticated(c, answer, T0);
            out = std::iter::from_fn(|| b.poll_output()).collect();
        }
        out
    }

    fn audited(out: &[Output], event: AuditEvent) -> bool {
        out.iter()
            .any(|o| matches!(o, Output::Audit(r) if r.event == event))
    }

    #[test]
    fn a_group_with_the_permission_is_told_so_audited_and_closed() {
        let out = ask("lan", Some(Ok(alice(vec!["view_only", "lan"]))));
        assert!(audited(&out, AuditEvent::PermissionGranted), "{out:?}");
        assert!(out.iter().any(|o| matches!(o, Output::Send { msg: BrokerMessage::Authorized { technician, permission }, .. }
            if technician == "alice" && permission == "lan")), "{out:?}");
        assert!(matches!(out.last(), Some(Output::Close { .. })), "{out:?}");
    }

    #[test]
    fn a_group_without_it_is_refused_naming_the_permission() {
        let out = ask("lan", Some(Ok(alice(vec!["control"]))));
        assert!(audited(&out, AuditEvent::DeniedByPolicy), "{out:?}");
        assert!(
            out.iter().any(
                |o| matches!(o, Output::Send { msg: BrokerMessage::Error { message }, .. }
            if message.contains("alice's group does not have the lan permission"))
            ),
            "{out:?}"
        );
        assert!(!out.iter().any(|o| matches!(
            o,
            Output::Send {
                msg: BrokerMessage::Authorized { .. },
                ..
            }
        )));
    }

    #[test]
    fn a_bad_token_or_an_unknown_permission_is_refused() {
        let out = ask("lan", Some(Err("the API token is not valid".into())));
        assert!(audited(&out, AuditEvent::LoginFailed), "{out:?}");
        assert!(
            out.iter().any(
                |o| matches!(o, Output::Send { msg: BrokerMessage::Error { message }, .. }
            if message.contains("not valid"))
            ),
            "{out:?}"
        );
        let out = ask("root", None);
        assert!(
            out.iter().any(
                |o| matches!(o, Output::Send { msg: BrokerMessage::Error { message }, .. }
            if message.contains("unknown permission"))
            ),
            "{out:?}"
        );
        assert!(!out.iter().any(|o| matches!(o, Output::Authenticate { .. })));
    }
}
