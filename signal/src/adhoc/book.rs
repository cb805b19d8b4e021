//! The book of ad-hoc sessions: creation under quotas, activation, connection checks,
//! ending and expiry.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::invitation::Digest;
use super::session::{Activated, Closure, Pending};
use super::{
    Activation, AdhocError, AdhocEvent, AdhocId, AdhocLimits, AdhocSession, AdhocStatus,
    Capabilities, Capability, CompanyId, DeviceId, EndedBy, Invitation, InvitationEntropy,
    InvitationToken, SecurityCode, TechnicianId,
};
use crate::time::UnixMillis;

/// The latest `now` the book accepts for a new session (the end of year 9999): far from
/// where adding a lifetime could saturate, so every deadline is exact.
const MAX_NOW: UnixMillis = UnixMillis(253_402_300_799_999);

/// Every ad-hoc session of a broker, with the limits that apply to new ones.
///
/// Serializes as a whole (limits, next id, sessions); reading it back checks every record
/// and that ids and tokens are unique.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "BookRepr", into = "BookRepr")]
pub struct AdhocBook {
    limits: AdhocLimits,
    next_id: u64,
    sessions: BTreeMap<AdhocId, AdhocSession>,
    /// Token digest to session: rebuilt on reading, never written.
    by_token: HashMap<Digest, AdhocId>,
}

impl AdhocBook {
    /// An empty book under `limits`.
    pub fn new(limits: AdhocLimits) -> Result<Self, AdhocError> {
        limits.validate()?;
        Ok(Self {
            limits,
            next_id: 1,
            sessions: BTreeMap::new(),
            by_token: HashMap::new(),
        })
    }

    /// The limits in force.
    pub fn limits(&self) -> &AdhocLimits {
        &self.limits
    }

    /// Apply new limits (say, from configuration after loading a book). They govern what
    /// happens from now on: new sessions, new activations' lifetime and wrong codes to come.
    /// Sessions over a lowered quota keep running; running sessions keep their deadline.
    pub fn set_limits(&mut self, limits: AdhocLimits) -> Result<(), AdhocError> {
        limits.validate()?;
        self.limits = limits;
        Ok(())
    }

    /// A new session for `technician` of `company`, allowing `capabilities`, and its
    /// invitation, valid for [`AdhocLimits::invitation_ttl`] from `now`.
    ///
    /// Refused when the technician or the company already holds as many sessions as the
    /// limits allow (see the module docs for what counts), for an empty set or a reserved
    /// capability, and for entropy that repeats a token already issued.
    pub fn create(
        &mut self,
        technician: TechnicianId,
        company: CompanyId,
        capabilities: Capabilities,
        now: UnixMillis,
        entropy: InvitationEntropy,
    ) -> Result<(AdhocId, Invitation), AdhocError> {
        if now > MAX_NOW {
            return Err(AdhocError::Invalid {
                field: "now",
                value: now.0.to_string(),
                expected: format!("at most {} (the end of year 9999)", MAX_NOW.0),
            });
        }
        if capabilities.is_empty() {
            return Err(AdhocError::NoCapabilities);
        }
        if let Some(capability) = capabilities.iter().find(|c| !c.is_available()) {
            return Err(AdhocError::CapabilityNotAvailable { capability });
        }
        let active = self.active_for_technician(technician, now);
        if active >= self.limits.per_technician {
            return Err(AdhocError::TechnicianLimit {
                technician,
                limit: self.limits.per_technician,
                active,
            });
        }
        let active = self.active_for_company(company, now);
        if active >= self.limits.per_company {
            return Err(AdhocError::CompanyLimit {
                company,
                limit: self.limits.per_company,
                active,
            });
        }
        let token = InvitationToken::from_random(entropy.token);
        let code = SecurityCode::from_random(entropy.code);
        let token_sha256 = token.digest();
        if self.by_token.contains_key(&token_sha256) {
            // Only a broken random source repeats 128 bits; refuse rather than alias a session.
            return Err(AdhocError::Invalid {
                field: "entropy.token",
                value: "a token already issued".into(),
                expected: "fresh random bits from a cryptographic source".into(),
            });
        }
        let id = AdhocId(self.next_id);
        let next_id = self.next_id.checked_add(1).ok_or(AdhocError::Invalid {
            field: "next_id",
            value: self.next_id.to_string(),
            expected: "an id below u64::MAX".into(),
        })?;
        let expires_at = now.plus(self.limits.invitation_ttl);
        let session = AdhocSession {
            id,
            technician,
            company,
            capabilities,
            created_at: now,
            invitation: Pending {
                token_sha256,
                code_sha256: code.digest(&token),
                expires_at,
                failed_attempts: 0,
            },
            activated: None,
            closed: None,
        };
        self.next_id = next_id;
        self.sessions.insert(id, session);
        self.by_token.insert(token_sha256, id);
        Ok((
            id,
            Invitation {
                session: id,
                token,
                code,
                expires_at,
            },
        ))
    }

    /// The user's temporary host activates the session of `token` with `code` on
    /// `device_id`, at `now`; the session then lives [`AdhocLimits::lifetime`] from `now`.
    ///
    /// Checked in this order: the token is known; its session is still waiting (else it
    /// expired, was used, burned or ended, each said as such); the code is right (a wrong one
    /// counts, and the [`AdhocLimits::max_code_attempts`]th burns the invitation); the
    /// computer runs no permanent agent. The code comes before the agent so that only someone
    /// holding both token and code learns anything about the computer's eligibility; the
    /// agent refusal leaves the invitation usable elsewhere.
    pub fn activate(
        &mut self,
        token: &InvitationToken,
        code: &SecurityCode,
        device_has_permanent_agent: bool,
        device_id: DeviceId,
        now: UnixMillis,
    ) -> Result<Activation, AdhocError> {
        let id = *self
            .by_token
            .get(&token.digest())
            .ok_or(AdhocError::UnknownInvitation)?;
        let lifetime = self.limits.lifetime;
        let max_attempts = self.limits.max_code_attempts;
        let session = self
            .sessions
            .get_mut(&id)
            .ok_or(AdhocError::UnknownInvitation)?;
        let at = session.clamp(now);
        if let Some(a) = &session.activated {
            return Err(AdhocError::InvitationUsed { at: a.at });
        }
        if let Some(refusal) = session.refusal(at) {
            return Err(refusal);
        }
        if !code.digest(token).matches(&session.invitation.code_sha256) {
            let attempts = session.invitation.failed_attempts.saturating_add(1);
            session.invitation.failed_attempts = attempts;
            if attempts >= max_attempts {
                session.closed = Some(Closure::Burned { at });
                return Err(AdhocError::InvitationBurned { at, attempts });
            }
            return Err(AdhocError::WrongCode {
                attempts_left: max_attempts - attempts,
            });
        }
        if device_has_permanent_agent {
            return Err(AdhocError::PermanentAgent { device_id });
        }
        session.activated = Some(Activated {
            device_id,
            at,
            expires_at: at.plus(lifetime),
        });
        session
            .activation()
            .ok_or(AdhocError::UnknownSession { id })
    }

    /// Whether `technician` may connect to session `id` at `now`: yes while it is active, as
    /// many times as they like (this changes nothing in the book); otherwise why not.
    pub fn check_connect(
        &self,
        id: AdhocId,
        technician: TechnicianId,
        now: UnixMillis,
    ) -> Result<Activation, AdhocError> {
        let session = self.owned(id, technician)?;
        match session.status(now) {
            AdhocStatus::Invited { until } => Err(AdhocError::NotActivated {
                id,
                invitation_expires_at: until,
            }),
            AdhocStatus::Active { .. } => session
                .activation()
                .ok_or(AdhocError::UnknownSession { id }),
            _ => Err(session
                .refusal(now)
                .unwrap_or(AdhocError::UnknownSession { id })),
        }
    }

    /// [`Self::check_connect`], and that the session allows `capability`.
    pub fn check_open(
        &self,
        id: AdhocId,
        technician: TechnicianId,
        capability: Capability,
        now: UnixMillis,
    ) -> Result<Activation, AdhocError> {
        let activation = self.check_connect(id, technician, now)?;
        if activation.capabilities.contains(capability) {
            Ok(activation)
        } else {
            Err(AdhocError::CapabilityNotGranted { id, capability })
        }
    }

    /// "End session now": ends session `id` at once, activated or not, and frees its quota.
    ///
    /// A technician may end only their own session; [`EndedBy::Administrator`] and
    /// [`EndedBy::User`] are taken as the broker vouches for them. A session already over is
    /// refused with the reason, including one whose deadline passed but that
    /// [`Self::poll_expired`] has not reported yet: that report stays poll's, so every
    /// expiry is reported exactly once.
    pub fn end_now(
        &mut self,
        id: AdhocId,
        by: EndedBy,
        now: UnixMillis,
    ) -> Result<AdhocEvent, AdhocError> {
        if let EndedBy::Technician { id: technician } = by {
            self.owned(id, technician)?;
        }
        let session = self
            .sessions
            .get_mut(&id)
            .ok_or(AdhocError::UnknownSession { id })?;
        if let Some(refusal) = session.refusal(now) {
            return Err(refusal);
        }
        let at = session.clamp(now);
        session.closed = Some(Closure::Ended { at, by });
        Ok(AdhocEvent::Ended {
            session: id,
            technician: session.technician,
            company: session.company,
            device_id: session.activated.as_ref().map(|a| a.device_id.clone()),
            by,
            at,
        })
    }

    /// Records every deadline passed by `now` and reports each once, in deadline order:
    /// sessions whose lifetime ran out (the host must stop) and invitations that ran out
    /// unused.
    pub fn poll_expired(&mut self, now: UnixMillis) -> Vec<AdhocEvent> {
        let mut events = Vec::new();
        for session in self.sessions.values_mut() {
            if session.closed.is_some() {
                continue;
            }
            let event = match session.status(now) {
                AdhocStatus::Expired { at } => session.activated.as_ref().map(|a| {
                    (
                        Closure::Expired { at },
                        AdhocEvent::Expired {
                            session: session.id,
                            technician: session.technician,
                            company: session.company,
                            device_id: a.device_id.clone(),
                            at,
                        },
                    )
                }),
                AdhocStatus::InvitationExpired { at } => Some((
                    Closure::InvitationExpired { at },
                    AdhocEvent::InvitationExpired {
                        session: session.id,
                        technician: session.technician,
                        company: session.company,
                        at,
                    },
                )),
                _ => None,
            };
            if let Some((closure, event)) = event {
                session.closed = Some(closure);
                events.push(event);
            }
        }
        // Ids come in order already; a stable sort keeps it among equal deadlines.
        events.sort_by_key(AdhocEvent::at);
        events
    }

    /// The earliest deadline still to be reported, so the driver knows when to poll next.
    pub fn next_deadline(&self) -> Option<UnixMillis> {
        self.sessions
            .values()
            .filter_map(AdhocSession::deadline)
            .min()
    }

    /// Sessions of `technician` that count towards the quota at `now`.
    pub fn active_for_technician(&self, technician: TechnicianId, now: UnixMillis) -> u32 {
        self.count(now, |s| s.technician == technician)
    }

    /// Sessions of `company` that count towards the quota at `now`.
    pub fn active_for_company(&self, company: CompanyId, now: UnixMillis) -> u32 {
        self.count(now, |s| s.company == company)
    }

    fn count(&self, now: UnixMillis, which: impl Fn(&AdhocSession) -> bool) -> u32 {
        let n = self
            .sessions
            .values()
            .filter(|s| which(s) && s.status(now).counts_towards_quota())
            .count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    /// Session `id`.
    pub fn get(&self, id: AdhocId) -> Option<&AdhocSession> {
        self.sessions.get(&id)
    }

    /// Every session, by id.
    pub fn sessions(&self) -> impl Iterator<Item = &AdhocSession> {
        self.sessions.values()
    }

    /// Drops sessions whose closure was recorded before `before`, to keep the book small
    /// (the broker keeps its history elsewhere). Their tokens are then simply unknown.
    /// Returns how many were dropped.
    pub fn forget_closed(&mut self, before: UnixMillis) -> usize {
        let gone: Vec<AdhocId> = self
            .sessions
            .values()
            .filter(|s| s.closed.is_some_and(|c| c.at() < before))
            .map(|s| s.id)
            .collect();
        for id in &gone {
            if let Some(s) = self.sessions.remove(id) {
                self.by_token.remove(&s.invitation.token_sha256);
            }
        }
        gone.len()
    }

    fn owned(&self, id: AdhocId, technician: TechnicianId) -> Result<&AdhocSession, AdhocError> {
        let session = self
            .sessions
            .get(&id)
            .ok_or(AdhocError::UnknownSession { id })?;
        if session.technician != technician {
            return Err(AdhocError::NotYours { id });
        }
        Ok(session)
    }
}

/// A book on the wire.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct BookRepr {
    limits: AdhocLimits,
    next_id: u64,
    sessions: Vec<AdhocSession>,
}

impl TryFrom<BookRepr> for AdhocBook {
    type Error = AdhocError;
    fn try_from(r: BookRepr) -> Result<Self, AdhocError> {
        let mut book = Self::new(r.limits)?;
        if r.next_id == 0 {
            return Err(AdhocError::Invalid {
                field: "book.next_id",
                value: "0".into(),
                expected: "1 or more (ids start at 1)".into(),
            });
        }
        book.next_id = r.next_id;
        for s in r.sessions {
            let id = s.id;
            if id.0 == 0 || id.0 >= r.next_id {
                return Err(AdhocError::Invalid {
                    field: "book.sessions.id",
                    value: id.to_string(),
                    expected: format!("1..{} (below next_id)", r.next_id),
                });
            }
            if book
                .by_token
                .insert(s.invitation.token_sha256, id)
                .is_some()
            {
                return Err(AdhocError::Invalid {
                    field: "book.sessions.invitation.token_sha256",
                    value: format!("the token of session {id}"),
                    expected: "a token no other session has".into(),
                });
            }
            if book.sessions.insert(id, s).is_some() {
                return Err(AdhocError::Invalid {
                    field: "book.sessions.id",
                    value: id.to_string(),
                    expected: "an id no other session has".into(),
                });
            }
        }
        Ok(book)
    }
}

impl From<AdhocBook> for BookRepr {
    fn from(b: AdhocBook) -> Self {
        Self {
            limits: b.limits,
            next_id: b.next_id,
            sessions: b.sessions.into_values().collect(),
        }
    }
}
