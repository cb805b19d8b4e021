//! One ad-hoc session's record, its state at a given `now`, and its JSON form.
//!
//! The record stores what happened (created, activated, closed) and the deadlines fixed when
//! it happened; whether a deadline has passed is computed at each `now`. So a session that
//! ran out is over, and frees its quota, at its deadline to the millisecond, whether or not
//! the driver has polled yet: [`super::AdhocBook::poll_expired`] only *records* the closure
//! and reports it.

use serde::{Deserialize, Serialize};

use super::invitation::Digest;
use super::{AdhocError, AdhocId, Capabilities, CompanyId, DeviceId, TechnicianId};
use crate::time::UnixMillis;

/// Who ended a session before its time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum EndedBy {
    /// The technician who created it ("End session now").
    Technician {
        /// Their id (must be the session's technician).
        id: TechnicianId,
    },
    /// Someone else the broker allowed to (a company administrator); the broker checks that
    /// right, the book only records who it was.
    Administrator {
        /// Their id.
        id: TechnicianId,
    },
    /// The person at the computer closed the temporary host.
    User,
}

/// Where a session stands at some `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case", deny_unknown_fields)]
pub enum AdhocStatus {
    /// Issued, not yet activated. Counts towards the quotas.
    Invited {
        /// When the invitation stops working.
        until: UnixMillis,
    },
    /// Activated on a computer; the technician may connect. Counts towards the quotas.
    Active {
        /// When the session ends by itself.
        until: UnixMillis,
    },
    /// Ended before its time. Frees its quota.
    Ended {
        /// When.
        at: UnixMillis,
        /// By whom.
        by: EndedBy,
    },
    /// Ran out its lifetime after activation. Frees its quota.
    Expired {
        /// Its deadline.
        at: UnixMillis,
    },
    /// Never activated in time. Frees its quota.
    InvitationExpired {
        /// The invitation's deadline.
        at: UnixMillis,
    },
    /// Too many wrong security codes. Frees its quota.
    Burned {
        /// When the last wrong code came.
        at: UnixMillis,
    },
}

impl AdhocStatus {
    /// Whether a session in this state takes a place in its technician's and company's
    /// quotas: an open invitation or an active session does; anything over does not.
    pub fn counts_towards_quota(&self) -> bool {
        matches!(self, Self::Invited { .. } | Self::Active { .. })
    }
}

/// What the temporary host is told on activation, so it ends by itself at `expires_at`
/// even if it never hears from the broker again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Activation {
    /// The session.
    pub session: AdhocId,
    /// The computer it was activated on.
    pub device_id: DeviceId,
    /// When.
    pub activated_at: UnixMillis,
    /// When it ends by itself (excluded): `activated_at` plus the lifetime.
    pub expires_at: UnixMillis,
    /// What the technician may open.
    pub capabilities: Capabilities,
}

impl Activation {
    /// Whether the session is still within its lifetime at `now` (the host's own check; an
    /// early end reaches it as a message instead).
    pub fn is_live(&self, now: UnixMillis) -> bool {
        now < self.expires_at
    }
}

/// The invitation as the book keeps it: digests, deadline and wrong codes so far.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Pending {
    pub(super) token_sha256: Digest,
    pub(super) code_sha256: Digest,
    pub(super) expires_at: UnixMillis,
    pub(super) failed_attempts: u32,
}

/// The activation as the book keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Activated {
    pub(super) device_id: DeviceId,
    pub(super) at: UnixMillis,
    pub(super) expires_at: UnixMillis,
}

/// How and when a session was closed, once that is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case", deny_unknown_fields)]
pub(super) enum Closure {
    Ended { at: UnixMillis, by: EndedBy },
    Expired { at: UnixMillis },
    InvitationExpired { at: UnixMillis },
    Burned { at: UnixMillis },
}

impl Closure {
    pub(super) fn at(self) -> UnixMillis {
        match self {
            Self::Ended { at, .. }
            | Self::Expired { at }
            | Self::InvitationExpired { at }
            | Self::Burned { at } => at,
        }
    }
}

/// One ad-hoc session, as the broker persists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "SessionRepr", into = "SessionRepr")]
pub struct AdhocSession {
    pub(super) id: AdhocId,
    pub(super) technician: TechnicianId,
    pub(super) company: CompanyId,
    pub(super) capabilities: Capabilities,
    pub(super) created_at: UnixMillis,
    pub(super) invitation: Pending,
    pub(super) activated: Option<Activated>,
    pub(super) closed: Option<Closure>,
}

impl AdhocSession {
    /// Its id.
    pub fn id(&self) -> AdhocId {
        self.id
    }

    /// The technician who created it.
    pub fn technician(&self) -> TechnicianId {
        self.technician
    }

    /// The technician's company.
    pub fn company(&self) -> CompanyId {
        self.company
    }

    /// What the technician may open in it.
    pub fn capabilities(&self) -> Capabilities {
        self.capabilities
    }

    /// When it was created (the invitation issued).
    pub fn created_at(&self) -> UnixMillis {
        self.created_at
    }

    /// When the invitation stops working if not activated.
    pub fn invitation_expires_at(&self) -> UnixMillis {
        self.invitation.expires_at
    }

    /// Wrong security codes so far.
    pub fn failed_attempts(&self) -> u32 {
        self.invitation.failed_attempts
    }

    /// The activation, once activated (also after it ended).
    pub fn activation(&self) -> Option<Activation> {
        self.activated.as_ref().map(|a| Activation {
            session: self.id,
            device_id: a.device_id.clone(),
            activated_at: a.at,
            expires_at: a.expires_at,
            capabilities: self.capabilities,
        })
    }

    /// Where it stands at `now`. A deadline that has passed counts even before
    /// [`super::AdhocBook::poll_expired`] recorded it.
    pub fn status(&self, now: UnixMillis) -> AdhocStatus {
        if let Some(c) = self.closed {
            return match c {
                Closure::Ended { at, by } => AdhocStatus::Ended { at, by },
                Closure::Expired { at } => AdhocStatus::Expired { at },
                Closure::InvitationExpired { at } => AdhocStatus::InvitationExpired { at },
                Closure::Burned { at } => AdhocStatus::Burned { at },
            };
        }
        match &self.activated {
            Some(a) if now >= a.expires_at => AdhocStatus::Expired { at: a.expires_at },
            Some(a) => AdhocStatus::Active {
                until: a.expires_at,
            },
            None if now >= self.invitation.expires_at => AdhocStatus::InvitationExpired {
                at: self.invitation.expires_at,
            },
            None => AdhocStatus::Invited {
                until: self.invitation.expires_at,
            },
        }
    }

    /// The deadline it waits for, while open (closure not recorded).
    pub(super) fn deadline(&self) -> Option<UnixMillis> {
        if self.closed.is_some() {
            return None;
        }
        Some(
            self.activated
                .as_ref()
                .map_or(self.invitation.expires_at, |a| a.expires_at),
        )
    }

    /// The instant to record for something happening at `now`: never before what the record
    /// already holds, so a clock that steps back cannot make a record contradict itself.
    pub(super) fn clamp(&self, now: UnixMillis) -> UnixMillis {
        let floor = self.activated.as_ref().map_or(self.created_at, |a| a.at);
        now.max(floor).max(self.created_at)
    }

    /// The refusal that fits a session that is over, or `None` while it is open at `now`.
    pub(super) fn refusal(&self, now: UnixMillis) -> Option<AdhocError> {
        let id = self.id;
        match self.status(now) {
            AdhocStatus::Invited { .. } | AdhocStatus::Active { .. } => None,
            AdhocStatus::Ended { at, by } => Some(AdhocError::SessionEnded { id, at, by }),
            AdhocStatus::Expired { at } => Some(AdhocError::SessionExpired { id, at }),
            AdhocStatus::InvitationExpired { at } => Some(AdhocError::InvitationExpired { at }),
            AdhocStatus::Burned { at } => Some(AdhocError::InvitationBurned {
                at,
                attempts: self.invitation.failed_attempts,
            }),
        }
    }
}

/// A session on the wire; read back only if it is consistent with itself.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionRepr {
    id: AdhocId,
    technician: TechnicianId,
    company: CompanyId,
    capabilities: Capabilities,
    created_at: UnixMillis,
    invitation: Pending,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    activated: Option<Activated>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    closed: Option<Closure>,
}

fn inconsistent(field: &'static str, value: u64, expected: String) -> AdhocError {
    AdhocError::Invalid {
        field,
        value: value.to_string(),
        expected,
    }
}

impl TryFrom<SessionRepr> for AdhocSession {
    type Error = AdhocError;
    fn try_from(r: SessionRepr) -> Result<Self, AdhocError> {
        if r.capabilities.is_empty() {
            return Err(AdhocError::NoCapabilities);
        }
        let inv = &r.invitation;
        if inv.expires_at < r.created_at {
            return Err(inconsistent(
                "session.invitation.expires_at",
                inv.expires_at.0,
                format!("at or after created_at ({})", r.created_at.0),
            ));
        }
        if let Some(a) = &r.activated {
            // Activation happens while the invitation is open.
            if a.at < r.created_at || a.at >= inv.expires_at {
                return Err(inconsistent(
                    "session.activated.at",
                    a.at.0,
                    format!(
                        "from created_at ({}) to before the invitation's expires_at ({})",
                        r.created_at.0, inv.expires_at.0
                    ),
                ));
            }
            if a.expires_at < a.at {
                return Err(inconsistent(
                    "session.activated.expires_at",
                    a.expires_at.0,
                    format!("at or after activated.at ({})", a.at.0),
                ));
            }
        }
        if let Some(c) = r.closed {
            check_closure(&r, c)?;
        }
        Ok(Self {
            id: r.id,
            technician: r.technician,
            company: r.company,
            capabilities: r.capabilities,
            created_at: r.created_at,
            invitation: r.invitation,
            activated: r.activated,
            closed: r.closed,
        })
    }
}

/// A closure must be one the book could have recorded: at the deadline it names, or while
/// the session was still open.
fn check_closure(r: &SessionRepr, c: Closure) -> Result<(), AdhocError> {
    let inv_end = r.invitation.expires_at;
    let at = c.at();
    let (ok, expected) = match (c, &r.activated) {
        (Closure::Expired { .. }, Some(a)) => (
            at == a.expires_at,
            format!("the activation's expires_at ({})", a.expires_at.0),
        ),
        (Closure::Expired { .. }, None) => (false, "an activated session to expire".into()),
        (Closure::InvitationExpired { .. }, None) => (
            at == inv_end,
            format!("the invitation's expires_at ({})", inv_end.0),
        ),
        (Closure::InvitationExpired { .. } | Closure::Burned { .. }, Some(_)) => {
            (false, "a session that was never activated".into())
        }
        (Closure::Burned { .. }, None) => (
            r.invitation.failed_attempts > 0 && at >= r.created_at && at < inv_end,
            format!(
                "a wrong code recorded, from created_at ({}) to before the invitation's \
                 expires_at ({})",
                r.created_at.0, inv_end.0
            ),
        ),
        (Closure::Ended { .. }, Some(a)) => (
            at >= a.at && at < a.expires_at,
            format!(
                "from activated.at ({}) to before its expires_at ({})",
                a.at.0, a.expires_at.0
            ),
        ),
        (Closure::Ended { .. }, None) => (
            at >= r.created_at && at < inv_end,
            format!(
                "from created_at ({}) to before the invitation's expires_at ({})",
                r.created_at.0, inv_end.0
            ),
        ),
    };
    if ok {
        Ok(())
    } else {
        Err(inconsistent("session.closed.at", at.0, expected))
    }
}

impl From<AdhocSession> for SessionRepr {
    fn from(s: AdhocSession) -> Self {
        Self {
            id: s.id,
            technician: s.technician,
            company: s.company,
            capabilities: s.capabilities,
            created_at: s.created_at,
            invitation: s.invitation,
            activated: s.activated,
            closed: s.closed,
        }
    }
}
