//! The audit log: append-only and hash-chained, so an edit, deletion, insertion or
//! reordering of past records is detected by [`Store::verify_audit`].
//!
//! Record `n` stores `prev_hash` (record `n-1`'s hash; zeros for the first) and
//! `hash = SHA-256(prev_hash || canonical(n))`, where `canonical` is a length-prefixed
//! encoding of the id and every field, so no two different records encode alike. Ids are
//! dense (1, 2, 3, ...): they come from the chain head row, which every append locks first —
//! that serialises appenders on both backends (a row lock on PostgreSQL, the write lock on
//! SQLite), so two brokers can never fork the chain — and which also records the last id and
//! hash, so deleting the newest records is detected too.
//!
//! What it cannot detect: someone with write access who recomputes every later hash and the
//! head. Anchoring the head hash elsewhere (printed by `audit verify`, shipped to a log host)
//! closes that; a keyed chain would be the next step.

use std::fmt;
use std::str::FromStr;

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

mod chain;

use super::technicians::TechnicianId;
use super::{Store, StoreError};
use chain::{chain_hash, Fields};

pub use chain::{AuditBreak, BreakReason};

/// Longer fields are cut (at a character boundary) rather than refused: losing the end of a
/// detail beats losing the record.
const MAX_DETAIL: usize = 4096;
const MAX_FIELD: usize = 256;

/// Names one audit record; records are numbered 1, 2, 3, ... without gaps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AuditId(pub i64);

/// What happened. Stored as its snake_case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AuditEvent {
    /// A connection code was issued to a controller.
    CodeIssued,
    /// The controller withdrew its code before anyone joined.
    CodeCancelled,
    /// A target typed a code the broker does not know.
    WrongCode,
    /// A target typed a code after its expiry.
    Expired,
    /// A target typed a code that was already used.
    Reused,
    /// A target typed a code its controller had withdrawn.
    Cancelled,
    /// A code stopped working after too many failed confirmations.
    CodeBurned,
    /// The peers' key confirmation failed (a wrong secret half of the code).
    ConfirmationFailed,
    /// A device was seen for the first time.
    DeviceRegistered,
    /// A device did not prove it holds its registered key.
    DeviceNotAuthenticated,
    /// A known device id came with a different public key.
    DeviceKeyMismatch,
    /// A session started.
    SessionStarted,
    /// The target let the technician in, by its user's answer or its acceptance mode (the
    /// detail says with control or to see only).
    AcceptedByUser,
    /// The user at the target rejected the session.
    RejectedByUser,
    /// Nobody answered the acceptance prompt in time.
    TimedOut,
    /// Policy refused the session (acceptance `deny`, a missing permission, a session cap).
    DeniedByPolicy,
    /// A session ended.
    Ended,
    /// A group's permissions changed.
    PermissionChanged,
    /// A group's policy changed.
    PolicyChanged,
    /// An API token was created.
    TokenCreated,
    /// An API token was revoked.
    TokenRevoked,
    /// A password or token was refused.
    LoginFailed,
    /// A technician's group was confirmed to hold a permission used away from the broker
    /// (connecting on the LAN).
    PermissionGranted,
    /// A technician created an ad-hoc session (its invitation was issued).
    AdhocCreated,
    /// A temporary host activated an ad-hoc session, or took it up again.
    AdhocActivated,
    /// An ad-hoc request was refused: a quota, a wrong security code, a permanent agent,
    /// a session that is over.
    AdhocRefused,
    /// An ad-hoc session ended: by the technician, the user, or its lifetime.
    AdhocEnded,
    /// A device reported a grant its user approved.
    GrantApproved,
    /// A device reported that its user revoked a grant.
    GrantRevoked,
    /// A technician was let through to call a device under an unattended-access grant.
    UnattendedAllowed,
    /// An unattended connection was refused: outside the grant's window, revoked, expired,
    /// unknown, another technician's, or no agent standing by.
    UnattendedRefused,
}

impl AuditEvent {
    /// Every event.
    pub const ALL: [AuditEvent; 31] = [
        Self::CodeIssued,
        Self::CodeCancelled,
        Self::WrongCode,
        Self::Expired,
        Self::Reused,
        Self::Cancelled,
        Self::CodeBurned,
        Self::ConfirmationFailed,
        Self::DeviceRegistered,
        Self::DeviceNotAuthenticated,
        Self::DeviceKeyMismatch,
        Self::SessionStarted,
        Self::AcceptedByUser,
        Self::RejectedByUser,
        Self::TimedOut,
        Self::DeniedByPolicy,
        Self::Ended,
        Self::PermissionChanged,
        Self::PolicyChanged,
        Self::TokenCreated,
        Self::TokenRevoked,
        Self::LoginFailed,
        Self::PermissionGranted,
        Self::AdhocCreated,
        Self::AdhocActivated,
        Self::AdhocRefused,
        Self::AdhocEnded,
        Self::GrantApproved,
        Self::GrantRevoked,
        Self::UnattendedAllowed,
        Self::UnattendedRefused,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CodeIssued => "code_issued",
            Self::CodeCancelled => "code_cancelled",
            Self::WrongCode => "wrong_code",
            Self::Expired => "expired",
            Self::Reused => "reused",
            Self::Cancelled => "cancelled",
            Self::CodeBurned => "code_burned",
            Self::ConfirmationFailed => "confirmation_failed",
            Self::DeviceRegistered => "device_registered",
            Self::DeviceNotAuthenticated => "device_not_authenticated",
            Self::DeviceKeyMismatch => "device_key_mismatch",
            Self::SessionStarted => "session_started",
            Self::AcceptedByUser => "accepted_by_user",
            Self::RejectedByUser => "rejected_by_user",
            Self::TimedOut => "timed_out",
            Self::DeniedByPolicy => "denied_by_policy",
            Self::Ended => "ended",
            Self::PermissionChanged => "permission_changed",
            Self::PolicyChanged => "policy_changed",
            Self::TokenCreated => "token_created",
            Self::TokenRevoked => "token_revoked",
            Self::LoginFailed => "login_failed",
            Self::PermissionGranted => "permission_granted",
            Self::AdhocCreated => "adhoc_created",
            Self::AdhocActivated => "adhoc_activated",
            Self::AdhocRefused => "adhoc_refused",
            Self::AdhocEnded => "adhoc_ended",
            Self::GrantApproved => "grant_approved",
            Self::GrantRevoked => "grant_revoked",
            Self::UnattendedAllowed => "unattended_allowed",
            Self::UnattendedRefused => "unattended_refused",
        }
    }
}

impl FromStr for AuditEvent {
    type Err = super::ParseNameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|e| e.as_str() == s)
            .ok_or_else(|| super::accounts::parse_error("audit event", s, "an event name"))
    }
}

impl fmt::Display for AuditEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One record to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// When it happened (Unix ms).
    pub at: i64,
    /// What happened.
    pub event: AuditEvent,
    /// The technician involved.
    pub technician: Option<TechnicianId>,
    /// The device involved.
    pub device: Option<String>,
    /// The network address the request came from.
    pub source: Option<String>,
    /// The session or connection code concerned.
    pub session: Option<String>,
    /// Free text for a human.
    pub detail: String,
}

impl AuditRecord {
    /// A record of `event` at `at` with no other field set.
    pub fn new(at: i64, event: AuditEvent) -> Self {
        Self {
            at,
            event,
            technician: None,
            device: None,
            source: None,
            session: None,
            detail: String::new(),
        }
    }

    /// With the technician involved.
    pub fn technician(self, technician: TechnicianId) -> Self {
        self.maybe_technician(Some(technician))
    }

    /// With the technician involved, if any.
    pub fn maybe_technician(mut self, technician: Option<TechnicianId>) -> Self {
        self.technician = technician;
        self
    }

    /// With the device involved.
    pub fn device(mut self, device: &str) -> Self {
        self.device = Some(device.to_owned());
        self
    }

    /// With the peer's address (`IpAddr`, `SocketAddr`, ...).
    pub fn source(mut self, source: impl fmt::Display) -> Self {
        self.source = Some(source.to_string());
        self
    }

    /// With the session or connection code concerned.
    pub fn session(mut self, session: &str) -> Self {
        self.session = Some(session.to_owned());
        self
    }

    /// With free text for a human.
    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = detail.into();
        self
    }
}

/// A stored record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// Its position in the chain.
    pub id: AuditId,
    /// When it happened (Unix ms).
    pub at: i64,
    /// The event name as stored (see [`AuditEvent`]; a newer broker may write others).
    pub event: String,
    /// The technician involved.
    pub technician: Option<TechnicianId>,
    /// The device involved.
    pub device: Option<String>,
    /// The peer's address.
    pub source: Option<String>,
    /// The session or connection code concerned.
    pub session: Option<String>,
    /// Free text.
    pub detail: String,
    /// The previous record's hash (hex).
    pub prev_hash: String,
    /// This record's hash (hex).
    pub hash: String,
}

impl Store {
    /// Append `record`, returning its id.
    pub async fn append_audit(&self, record: &AuditRecord) -> Result<AuditId, StoreError> {
        let mut tx = self.pool().begin().await?;
        let id = append_in(&mut tx, record).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Up to `limit` records after `after`, oldest first.
    pub async fn audit_entries(
        &self,
        after: AuditId,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        self.audit_page(after.0, i64::from(limit)).await
    }

    async fn audit_page(&self, after: i64, limit: i64) -> Result<Vec<AuditEntry>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, at, event, technician_id, device_id, source_addr, session_code, detail, \
             prev_hash, hash FROM audit_log WHERE id > $1 ORDER BY id LIMIT $2",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(entry_from).collect()
    }
}

/// Append inside the caller's transaction, so a change and its record commit together.
pub(crate) async fn append_in(
    conn: &mut AnyConnection,
    record: &AuditRecord,
) -> Result<AuditId, StoreError> {
    // Locks the head first: the lock is held to commit, so appends are strictly serial.
    let (id, prev): (i64, String) = sqlx::query_as(
        "UPDATE audit_head SET last_id = last_id + 1 WHERE id = 1 RETURNING last_id, last_hash",
    )
    .fetch_one(&mut *conn)
    .await?;
    let fields = Fields {
        at: record.at,
        event: record.event.as_str(),
        technician: record.technician.map(|t| t.0),
        device: record.device.as_deref().map(|d| cut(d, MAX_FIELD)),
        source: record.source.as_deref().map(|s| cut(s, MAX_FIELD)),
        session: record.session.as_deref().map(|s| cut(s, MAX_FIELD)),
        detail: cut(&record.detail, MAX_DETAIL),
    };
    let hash = chain_hash(&prev, id, &fields);
    sqlx::query(
        "INSERT INTO audit_log (id, at, event, technician_id, device_id, source_addr, \
         session_code, detail, prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(id)
    .bind(fields.at)
    .bind(fields.event)
    .bind(fields.technician)
    .bind(fields.device)
    .bind(fields.source)
    .bind(fields.session)
    .bind(fields.detail)
    .bind(&prev)
    .bind(&hash)
    .execute(&mut *conn)
    .await?;
    sqlx::query("UPDATE audit_head SET last_hash = $1 WHERE id = 1")
        .bind(&hash)
        .execute(&mut *conn)
        .await?;
    tracing::debug!(id, event = fields.event, "audit record appended");
    Ok(AuditId(id))
}

/// At most `max` bytes of `s`, cut at a character boundary.
fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn entry_from(row: &AnyRow) -> Result<AuditEntry, StoreError> {
    Ok(AuditEntry {
        id: AuditId(row.try_get(0)?),
        at: row.try_get(1)?,
        event: row.try_get(2)?,
        technician: row.try_get::<Option<i64>, _>(3)?.map(TechnicianId),
        device: row.try_get(4)?,
        source: row.try_get(5)?,
        session: row.try_get(6)?,
        detail: row.try_get(7)?,
        prev_hash: row.try_get(8)?,
        hash: row.try_get(9)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cutting_respects_characters_and_events_round_trip() {
        assert_eq!(cut("héllo", 2), "h");
        assert_eq!(cut("héllo", 3), "hé");
        assert_eq!(cut("abc", 10), "abc");
        for e in AuditEvent::ALL {
            assert_eq!(e.as_str().parse::<AuditEvent>().unwrap(), e);
        }
        assert!("nope".parse::<AuditEvent>().is_err());
    }
}
