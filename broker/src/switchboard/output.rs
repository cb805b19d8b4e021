//! What the switchboard asks its driver to do: messages to queue, sockets to close, and
//! store work whose answers come back as inputs.

use std::net::IpAddr;

use deskwire_signal::{BrokerMessage, SessionCode, UnixMillis, MAX_REASON_CHARS};

use super::{ConnId, Switchboard};
use crate::codes::SessionId;
use crate::store::{AuditEvent, AuditRecord, EndedBy, SessionRecordId, TechnicianId};

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
    /// [`super::Switchboard::handle_device_checked`].
    CheckDevice {
        /// The target's connection.
        conn: ConnId,
        /// The device id.
        id: String,
        /// Its public key, whose signature already verified.
        key: [u8; 32],
    },
    /// Keep this device's LAN password report and answer with
    /// [`super::Switchboard::handle_lan_stored`]. The proof's signature already verified.
    StoreLanReport {
        /// The device's connection.
        conn: ConnId,
        /// The device id.
        id: String,
        /// Its public key, to pin or confirm.
        key: [u8; 32],
        /// The report.
        report: crate::store::LanReport,
    },
    /// Look up a device's LAN password for a technician allowed to read it; answer with
    /// [`super::Switchboard::handle_lan_looked_up`].
    LookUpLanPassword {
        /// The technician's connection.
        conn: ConnId,
        /// The device id.
        device: String,
        /// Who asks (for the audit record).
        technician: TechnicianId,
    },
    /// Check this technician token and report with [`super::Switchboard::handle_authenticated`].
    Authenticate {
        /// The controller's connection.
        conn: ConnId,
        /// The token it sent.
        token: String,
    },
    /// Durable brokers: record this freshly issued code and report with
    /// [`super::Switchboard::handle_code_stored`]. The controller hears of its code only after.
    StoreCode {
        /// The controller's connection.
        conn: ConnId,
        /// The code.
        code: SessionCode,
        /// The controller's technician, if authenticated.
        technician: Option<TechnicianId>,
        /// When it was issued.
        issued_at: UnixMillis,
        /// When it stops working.
        expires_at: UnixMillis,
        /// SHA-256 (hex) of the resume token, if the controller asked for one.
        resume_hash: Option<String>,
    },
    /// Durable brokers: redeem the code and record the session in one transaction, checking
    /// the technician's group as it is now; report with [`super::Switchboard::handle_redeemed`].
    RedeemCode {
        /// The target's connection.
        conn: ConnId,
        /// The session the code names here.
        session: SessionId,
        /// The code.
        code: SessionCode,
        /// The controller's technician, if authenticated.
        technician: Option<TechnicianId>,
        /// The target's device, if it proved one.
        device: Option<String>,
    },
    /// Durable brokers: a target typed a code this broker does not hold (issued before a
    /// restart, or by another broker); report what the store says with
    /// [`super::Switchboard::handle_code_looked_up`]. Changes nothing in the store.
    LookUpCode {
        /// The target's connection.
        conn: ConnId,
        /// The code.
        code: SessionCode,
    },
    /// Durable brokers: check a controller's resume token; report with
    /// [`super::Switchboard::handle_resumed`].
    ResumeCode {
        /// The controller's new connection.
        conn: ConnId,
        /// The code it wants back.
        code: SessionCode,
        /// SHA-256 (hex) of the token it presented.
        resume_hash: String,
    },
    /// Durable brokers: the controller withdrew this pending code.
    CancelCode {
        /// The code.
        code: SessionCode,
    },
    /// Durable brokers: the attempt holding this code failed verification; count it (the
    /// store reopens the code, or burns it at the third failure, as the switchboard did).
    FailedConfirmation {
        /// The code.
        code: SessionCode,
    },
    /// E-mail an ad-hoc invitation and report with [`super::Switchboard::handle_mailed`].
    MailInvitation {
        /// The technician's connection, waiting for `adhoc_created`.
        conn: ConnId,
        /// The user's address.
        to: String,
        /// The technician's name.
        technician: String,
        /// The invitation link.
        link: String,
        /// The security code.
        code: String,
        /// When the invitation runs out.
        expires_at: UnixMillis,
    },
    /// Keep a device's grant report and answer with [`super::Switchboard::handle_grant_stored`].
    /// The proof's signature already verified.
    StoreGrant {
        /// The device's connection.
        conn: ConnId,
        /// The device id.
        id: String,
        /// Its public key, to pin or confirm.
        key: [u8; 32],
        /// The report.
        report: crate::store::GrantReport,
    },
    /// Look up the broker's copy of a grant for a technician's unattended call; answer with
    /// [`super::Switchboard::handle_grant_looked_up`].
    LookUpGrant {
        /// The technician's connection.
        conn: ConnId,
        /// The device id.
        device: String,
        /// The grant's number.
        grant: u32,
    },
    /// Durable brokers: the ad-hoc sessions changed; replace the saved state.
    SaveAdhoc(crate::store::AdhocSnapshot),
    /// Durable brokers: this session row ended.
    EndSession {
        /// The row.
        record: SessionRecordId,
        /// Which side ended it.
        by: EndedBy,
        /// Why, for a human.
        reason: String,
    },
}

/// Emitting outputs: messages, closes and audit records.
impl Switchboard {
    /// Answer `conn` with `msg`, then close it.
    pub(super) fn answer_and_close(&mut self, conn: ConnId, msg: BrokerMessage) {
        self.send(conn, msg);
        self.handle_close(conn);
        self.outputs.push_back(Output::Close { conn });
    }

    /// Tell `conn` what was wrong, then close it.
    pub(super) fn refuse(&mut self, conn: ConnId, message: &str) {
        tracing::debug!(conn = conn.0, "closing after a protocol error: {message}");
        // Peers check the length of error messages; decode errors can quote long input.
        let message: String = message.chars().take(MAX_REASON_CHARS).collect();
        self.answer_and_close(conn, BrokerMessage::Error { message });
    }

    pub(super) fn send(&mut self, to: ConnId, msg: BrokerMessage) {
        self.outputs.push_back(Output::Send { to, msg });
    }

    pub(super) fn audit(
        &mut self,
        event: AuditEvent,
        ip: Option<IpAddr>,
        code: Option<SessionCode>,
        detail: String,
    ) {
        self.audit_by(event, ip, code, None, detail);
    }

    /// An audit record naming the technician involved, if known.
    pub(super) fn audit_by(
        &mut self,
        event: AuditEvent,
        ip: Option<IpAddr>,
        code: Option<SessionCode>,
        technician: Option<TechnicianId>,
        detail: String,
    ) {
        let code = code.map(|c| c.to_string());
        self.audit_record(event, ip, code.as_deref().unwrap_or(""), technician, detail);
    }

    /// A record about a paired session: its code, technician and the target's device.
    pub(super) fn audit_session(
        &mut self,
        event: AuditEvent,
        ip: Option<IpAddr>,
        code: SessionCode,
        technician: Option<TechnicianId>,
        device: Option<&str>,
        detail: String,
    ) {
        let code = code.to_string();
        self.push_audit(event, ip, &code, technician, device, detail);
    }

    /// A record about a device, outside any session.
    pub(super) fn audit_device(
        &mut self,
        event: AuditEvent,
        ip: Option<IpAddr>,
        technician: Option<TechnicianId>,
        device: &str,
        detail: String,
    ) {
        self.push_audit(event, ip, "", technician, Some(device), detail);
    }

    pub(super) fn audit_text(
        &mut self,
        event: AuditEvent,
        ip: Option<IpAddr>,
        session: &str,
        detail: String,
    ) {
        self.audit_record(event, ip, session, None, detail);
    }

    pub(super) fn audit_record(
        &mut self,
        event: AuditEvent,
        ip: Option<IpAddr>,
        session: &str,
        technician: Option<TechnicianId>,
        detail: String,
    ) {
        self.push_audit(event, ip, session, technician, None, detail);
    }

    /// Every audit record goes out here, stamped with the board's clock; empty or absent
    /// fields stay unset.
    fn push_audit(
        &mut self,
        event: AuditEvent,
        ip: Option<IpAddr>,
        session: &str,
        technician: Option<TechnicianId>,
        device: Option<&str>,
        detail: String,
    ) {
        let at = i64::try_from(self.now.0).unwrap_or(i64::MAX);
        let mut record = AuditRecord::new(at, event)
            .detail(detail)
            .maybe_technician(technician);
        if let Some(ip) = ip {
            record = record.source(ip);
        }
        if !session.is_empty() {
            record = record.session(session);
        }
        if let Some(device) = device {
            record = record.device(device);
        }
        self.outputs.push_back(Output::Audit(record));
    }
}
