//! Ad-hoc support sessions: a technician invites a user, the user runs a temporary host and
//! activates the session, and for a fixed time the technician may connect to that computer
//! as often as needed.
//!
//! # Lifecycle
//!
//! ```text
//! create ─> Invited ─activate─> Active ─lifetime (24 h) from activation─> Expired
//!             │                   └─end_now─> Ended
//!             ├─end_now─> Ended
//!             ├─invitation_ttl (72 h) from creation─> InvitationExpired
//!             └─max_code_attempts (5) wrong codes─> Burned
//! ```
//!
//! - [`AdhocBook::create`] issues an [`Invitation`]: a 128-bit bearer token for the link and
//!   an 8-character security code to type (the caller passes the random bits,
//!   [`InvitationEntropy`]). The book keeps only digests of both, so the invitation is shown
//!   once; a lost one is ended and replaced.
//! - [`AdhocBook::activate`] binds the session to one computer. The session then lives
//!   [`AdhocLimits::lifetime`] (24 h) **from activation**, not from creation; the host is
//!   given the deadline in its [`Activation`] so it ends by itself even if the broker is gone.
//! - [`AdhocBook::check_connect`] allows the technician in any number of times while active.
//!   It changes nothing: a viewer that disconnects does not end the support session, since
//!   only [`AdhocBook::end_now`] and the deadline do.
//! - [`AdhocBook::poll_expired`] records and reports deadlines that have passed, each once,
//!   so the broker can tell the host to stop and remove itself;
//!   [`AdhocBook::next_deadline`] says when to poll next.
//!
//! # Quotas
//!
//! At most [`AdhocLimits::per_technician`] (1) and [`AdhocLimits::per_company`] (5) sessions
//! that *count* at once; creating one more is refused with an error naming the limit.
//! A session counts while [`AdhocStatus::counts_towards_quota`]: **invited or active**. An
//! invitation not yet activated counts because it can become an active session at any time
//! without asking again: not counting it would let a technician hold more sessions than the
//! limit by sending invitations ahead. A session stops counting the moment it ends, runs out,
//! its invitation runs out, or is burned: at the deadline itself, whether or not
//! [`AdhocBook::poll_expired`] has run, because the state is computed at each `now` from the
//! deadlines in the record. Why the invitation lasts 72 h by default: long enough for a link
//! sent on Friday evening to be opened on Monday morning, short enough that a bearer link
//! does not linger, and a forgotten invitation frees its place by itself within days (ending
//! it frees it at once). Changing the limits never ends sessions already running.
//!
//! # Permanent agents
//!
//! A computer that already runs the permanent agent is refused on activation
//! ([`AdhocError::PermanentAgent`]): it is reached through the agent, and a second, temporary
//! host next to it would escape the agent's policy. The refusal does not use the invitation
//! up, so it still works on another computer.
//!
//! # Persisting
//!
//! [`AdhocBook`], [`AdhocSession`], [`AdhocLimits`], [`Invitation`], [`Activation`] and
//! [`AdhocEvent`] are serde JSON; reading refuses unknown fields, values out of range and
//! records that contradict themselves (an expiry that is not at its deadline, an activation
//! after the invitation ran out), naming the field. Closed sessions stay in the book, so a
//! reused link hears "already used" or "expired" rather than "unknown", until
//! [`AdhocBook::forget_closed`] drops them.
//!
//! Nothing here reads a clock, draws random numbers or does I/O.

mod book;
mod error;
mod invitation;
mod limits;
mod link;
mod session;

#[cfg(test)]
mod format_tests;
#[cfg(test)]
mod lifetime_tests;
#[cfg(test)]
mod tests;

use std::fmt;

use serde::{Deserialize, Serialize};

pub use book::AdhocBook;
pub use error::{is_wrong_code, AdhocError, AdhocEvent};
pub use invitation::{Invitation, InvitationEntropy, InvitationToken, SecurityCode, TOKEN_BYTES};
pub use limits::AdhocLimits;
pub use link::AdhocLink;
pub use session::{Activation, AdhocSession, AdhocStatus, EndedBy};

/// Names a technician (the broker's technician id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TechnicianId(pub i64);

/// Names a company (the broker's company id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CompanyId(pub i64);

/// Names an ad-hoc session; the book hands them out in order from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AdhocId(pub u64);

macro_rules! display_number {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }
    )*};
}
display_number!(TechnicianId, CompanyId, AdhocId);

/// The computer a session was activated on, as the host names itself (a device key's id,
/// `dev-...`, or whatever stable id the temporary host has).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeviceId(String);

impl DeviceId {
    /// The longest id accepted.
    pub const MAX_CHARS: usize = 128;

    /// `id` if it is 1 to [`Self::MAX_CHARS`] printable ASCII characters without spaces, so
    /// it can go into logs and messages as it stands.
    pub fn new(id: &str) -> Result<Self, AdhocError> {
        let ok = !id.is_empty()
            && id.len() <= Self::MAX_CHARS
            && id.bytes().all(|b| b.is_ascii_graphic());
        if ok {
            Ok(Self(id.to_owned()))
        } else {
            Err(AdhocError::Invalid {
                field: "device_id",
                value: invitation::excerpt(id),
                expected: format!(
                    "1..={} printable ASCII characters without spaces",
                    Self::MAX_CHARS
                ),
            })
        }
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for DeviceId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for DeviceId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::new(&s).map_err(serde::de::Error::custom)
    }
}

/// Something a technician may open in an ad-hoc session, written by name in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Capability {
    /// See the screen and control it.
    RemoteControl,
    /// Reserved: file transfer (not available yet).
    FileManager,
    /// Reserved: the system dashboard (not available yet).
    Dashboard,
}

impl Capability {
    /// Every capability, in the order sets are written.
    pub const ALL: [Capability; 3] = [Self::RemoteControl, Self::FileManager, Self::Dashboard];

    /// Whether a new session may be given it now. Reserved ones are known, so records written
    /// by a later version still read, but not granted until the engine has them.
    pub fn is_available(self) -> bool {
        matches!(self, Self::RemoteControl)
    }

    fn bit(self) -> u8 {
        match self {
            Self::RemoteControl => 1,
            Self::FileManager => 2,
            Self::Dashboard => 4,
        }
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::RemoteControl => "remote_control",
            Self::FileManager => "file_manager",
            Self::Dashboard => "dashboard",
        })
    }
}

/// A set of [`Capability`], written as a JSON list of names (`["remote_control"]`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Capabilities(u8);

impl Capabilities {
    /// The empty set.
    pub const NONE: Self = Self(0);
    /// Remote control only: what a session offers today.
    pub const REMOTE_CONTROL: Self = Self(1);

    /// The set of `caps`.
    pub fn of(caps: impl IntoIterator<Item = Capability>) -> Self {
        Self(caps.into_iter().fold(0, |acc, c| acc | c.bit()))
    }

    /// Whether `cap` is in the set.
    pub fn contains(self, cap: Capability) -> bool {
        self.0 & cap.bit() != 0
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The members, in [`Capability::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = Capability> {
        Capability::ALL
            .into_iter()
            .filter(move |c| self.contains(*c))
    }
}

impl fmt::Debug for Capabilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl Serialize for Capabilities {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for Capabilities {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let list = Vec::<Capability>::deserialize(d)?;
        let mut set = Self::NONE;
        for cap in list {
            // A name twice is a hand-edited or corrupted record: say so rather than guess.
            if set.contains(cap) {
                return Err(serde::de::Error::custom(format!(
                    "capability {cap} listed twice"
                )));
            }
            set.0 |= cap.bit();
        }
        Ok(set)
    }
}

pub(super) fn available_list() -> String {
    let names: Vec<String> = Capability::ALL
        .iter()
        .filter(|c| c.is_available())
        .map(ToString::to_string)
        .collect();
    names.join(", ")
}
