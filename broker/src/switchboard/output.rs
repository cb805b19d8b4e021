//! What the switchboard asks its driver to do: messages to queue, sockets to close, and
//! store work whose answers come back as inputs.

use deskwire_signal::{BrokerMessage, SessionCode, UnixMillis};

use super::ConnId;
use crate::codes::SessionId;
use crate::store::{AuditRecord, EndedBy, SessionRecordId, TechnicianId};

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
