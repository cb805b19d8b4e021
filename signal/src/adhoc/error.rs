//! Why an operation is refused, and the events the broker acts on.

use serde::{Deserialize, Serialize};

use super::{available_list, AdhocId, Capability, CompanyId, DeviceId, EndedBy, TechnicianId};
use crate::time::UnixMillis;

/// Why an ad-hoc operation is refused. Each message says what happened and, where there is
/// one, what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AdhocError {
    /// A value out of its range, malformed, or contradicting the rest of a record.
    #[error("invalid {field} {value} (expected {expected})")]
    Invalid {
        /// Where it is (`limits.per_company`).
        field: &'static str,
        /// The value found.
        value: String,
        /// What is allowed.
        expected: String,
    },
    /// The technician already holds as many sessions as allowed.
    #[error(
        "technician {technician} already has {active} active ad-hoc session(s) and the limit \
         is {limit} per technician (an invitation not yet activated counts): end one or let \
         it expire first"
    )]
    TechnicianLimit {
        /// The technician.
        technician: TechnicianId,
        /// The limit.
        limit: u32,
        /// Their sessions counting now.
        active: u32,
    },
    /// The company already holds as many sessions as allowed.
    #[error(
        "company {company} already has {active} active ad-hoc session(s) and the limit is \
         {limit} per company (an invitation not yet activated counts): end one or let it \
         expire first"
    )]
    CompanyLimit {
        /// The company.
        company: CompanyId,
        /// The limit.
        limit: u32,
        /// Its sessions counting now.
        active: u32,
    },
    /// A session was asked for with nothing to open.
    #[error(
        "an ad-hoc session must allow at least one capability (available: {})",
        available_list()
    )]
    NoCapabilities,
    /// A reserved capability was asked for.
    #[error(
        "{capability} is reserved and not available in ad-hoc sessions yet (available: {})",
        available_list()
    )]
    CapabilityNotAvailable {
        /// The capability.
        capability: Capability,
    },
    /// The session may be open but does not allow this.
    #[error("ad-hoc session {id} does not allow {capability}")]
    CapabilityNotGranted {
        /// The session.
        id: AdhocId,
        /// The capability asked for.
        capability: Capability,
    },
    /// No such session in the book.
    #[error("there is no ad-hoc session {id}")]
    UnknownSession {
        /// The id asked for.
        id: AdhocId,
    },
    /// A technician asked about another technician's session.
    #[error("ad-hoc session {id} belongs to another technician")]
    NotYours {
        /// The session.
        id: AdhocId,
    },
    /// No invitation has this token.
    #[error("this invitation is not known: check the link, or ask the technician for a new one")]
    UnknownInvitation,
    /// The invitation ran out before it was activated.
    #[error(
        "this invitation expired at {} without being activated: ask the technician for a new one",
        shown(.at)
    )]
    InvitationExpired {
        /// Its deadline.
        at: UnixMillis,
    },
    /// The invitation already activated a session.
    #[error(
        "this invitation was already used at {}: an invitation activates one session on one \
         computer, once",
        shown(.at)
    )]
    InvitationUsed {
        /// When it was activated.
        at: UnixMillis,
    },
    /// Too many wrong security codes.
    #[error(
        "this invitation is no longer valid: {attempts} wrong security codes were entered (the \
         last at {}); ask the technician for a new one",
        shown(.at)
    )]
    InvitationBurned {
        /// When the last wrong code came.
        at: UnixMillis,
        /// Wrong codes entered.
        attempts: u32,
    },
    /// A wrong security code; the invitation still works.
    #[error(
        "wrong security code: {attempts_left} more wrong code(s) and the invitation is no \
         longer valid"
    )]
    WrongCode {
        /// Wrong codes still allowed before the invitation is burned.
        attempts_left: u32,
    },
    /// The computer already runs the permanent agent.
    #[error(
        "ad-hoc sessions cannot be used on a computer that already runs the permanent deskwire \
         agent (device {device_id}): connect through the agent instead; the invitation stays \
         valid for another computer"
    )]
    PermanentAgent {
        /// The computer.
        device_id: DeviceId,
    },
    /// Not activated yet.
    #[error(
        "ad-hoc session {id} is not activated yet: the user has to run the temporary host and \
         enter the security code (the invitation is valid until {})",
        shown(.invitation_expires_at)
    )]
    NotActivated {
        /// The session.
        id: AdhocId,
        /// When its invitation runs out.
        invitation_expires_at: UnixMillis,
    },
    /// Its lifetime ran out.
    #[error("ad-hoc session {id} ended by itself at {}, at the end of its lifetime", shown(.at))]
    SessionExpired {
        /// The session.
        id: AdhocId,
        /// Its deadline.
        at: UnixMillis,
    },
    /// Ended before its time.
    #[error("ad-hoc session {id} was ended at {} by {}", shown(.at), by_whom(.by))]
    SessionEnded {
        /// The session.
        id: AdhocId,
        /// When.
        at: UnixMillis,
        /// By whom.
        by: EndedBy,
    },
}

/// An instant in RFC 3339 (UTC) for messages, falling back to milliseconds.
fn shown(t: &UnixMillis) -> String {
    i64::try_from(t.0)
        .ok()
        .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
        .map_or_else(|| t.to_string(), |ts| ts.to_string())
}

fn by_whom(by: &EndedBy) -> String {
    match by {
        EndedBy::Technician { id } => format!("technician {id}"),
        EndedBy::Administrator { id } => format!("administrator {id}"),
        EndedBy::User => "the user at the computer".into(),
    }
}

/// Something the broker must act on: a session that ran out or was ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case", deny_unknown_fields)]
pub enum AdhocEvent {
    /// The lifetime ran out: close the technician's connections and tell the host to stop
    /// and remove itself.
    Expired {
        /// The session.
        session: AdhocId,
        /// Its technician.
        technician: TechnicianId,
        /// Its company.
        company: CompanyId,
        /// The host to stop.
        device_id: DeviceId,
        /// Its deadline.
        at: UnixMillis,
    },
    /// The invitation ran out unused: nothing runs anywhere, the quota is free.
    InvitationExpired {
        /// The session.
        session: AdhocId,
        /// Its technician.
        technician: TechnicianId,
        /// Its company.
        company: CompanyId,
        /// Its deadline.
        at: UnixMillis,
    },
    /// Ended at once ([`AdhocBook::end_now`]).
    Ended {
        /// The session.
        session: AdhocId,
        /// Its technician.
        technician: TechnicianId,
        /// Its company.
        company: CompanyId,
        /// The host to stop, if it was activated.
        device_id: Option<DeviceId>,
        /// Who ended it.
        by: EndedBy,
        /// When.
        at: UnixMillis,
    },
}

impl AdhocEvent {
    /// The session it is about.
    pub fn session(&self) -> AdhocId {
        match self {
            Self::Expired { session, .. }
            | Self::InvitationExpired { session, .. }
            | Self::Ended { session, .. } => *session,
        }
    }

    /// When it happened.
    pub fn at(&self) -> UnixMillis {
        match self {
            Self::Expired { at, .. }
            | Self::InvitationExpired { at, .. }
            | Self::Ended { at, .. } => *at,
        }
    }

    /// The host that must stop and remove itself, if one was activated.
    pub fn host_to_stop(&self) -> Option<&DeviceId> {
        match self {
            Self::Expired { device_id, .. } => Some(device_id),
            Self::Ended { device_id, .. } => device_id.as_ref(),
            Self::InvitationExpired { .. } => None,
        }
    }
}

/// Whether a refusal the broker sent (an [`AdhocError`] as text) is a wrong security code
/// with the invitation still valid: the user may type the code again.
pub fn is_wrong_code(message: &str) -> bool {
    message.starts_with("wrong security code:")
}

#[cfg(test)]
mod wrong_code_tests {
    use super::*;

    #[test]
    fn a_wrong_code_refusal_is_recognised_from_its_text_and_nothing_else_is() {
        let wrong = AdhocError::WrongCode { attempts_left: 2 }.to_string();
        assert!(is_wrong_code(&wrong), "{wrong}");
        let burned = AdhocError::InvitationBurned {
            at: UnixMillis(0),
            attempts: 5,
        }
        .to_string();
        assert!(!is_wrong_code(&burned), "{burned}");
    }
}
