//! Unattended-access requests during a session: refused outright when this session may not
//! make them, else put to the user; an approval is made under this computer's grant policy
//! and kept in its own grants file before the technician hears of it.

use std::collections::HashMap;

use deskwire_signal::grant::{approve, CredentialMode, GrantRequest};
use deskwire_signal::{SessionPolicy, UnixMillis};

use crate::config::AgentConfig;
use crate::{AgentEvent, GrantDecision};
use deskwire_session::wire::ControlMessage;

/// Why a request for unattended access was not granted. Its sentence is what the
/// technician is told.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GrantRefusal {
    /// The session may not control, so it may not ask either.
    #[error("a view-only session cannot ask for unattended access")]
    ViewOnly,
    /// The technician's group lacks the permission.
    #[error("{technician}'s group does not have the unattended permission")]
    GroupForbids {
        /// Who asked.
        technician: String,
    },
    /// This computer keeps no grants file.
    #[error("this computer does not keep unattended-access grants")]
    NoGrants,
    /// Requests already wait for the user (or this number is taken).
    #[error("too many requests are waiting for the user")]
    TooManyWaiting,
    /// The request could not be read.
    #[error("the request is not valid: {0}")]
    InvalidRequest(String),
    /// The group may only use the computer's administrator credentials.
    #[error(
        "{technician}'s group may not use the customer's credentials: ask for the computer's \
         admin credentials at each connection instead"
    )]
    CustomerCredentialsForbidden {
        /// Who asked.
        technician: String,
    },
    /// Customer credentials were asked for, but this computer has no accounts to check.
    #[error("this computer has no accounts to check the customer's credentials against")]
    NoCustomerAccounts,
    /// The user said no.
    #[error("the user refused unattended access")]
    RefusedByUser,
    /// Customer-credential access was approved without a name and password.
    #[error("customer-credential access needs the customer's name and password")]
    CredentialsMissing,
    /// The customer's name or password is wrong.
    #[error("the customer's credentials are wrong")]
    WrongCredentials,
    /// The request does not fit this computer's grant policy.
    #[error(transparent)]
    Policy(#[from] deskwire_signal::grant::GrantError),
    /// The accounts or the grants file could not be read or written (the sentence says
    /// which and why).
    #[error("{0}")]
    Storage(String),
}

/// Requests waiting for the user, and why new ones are refused (if they are).
pub(super) struct GrantDesk {
    pending: HashMap<u32, GrantRequest>,
    /// The group's verdict: `Err` names why it may not ask.
    group: Result<(), GrantRefusal>,
    technician: Option<String>,
    /// The group may not choose the customer's credentials.
    admin_credentials_only: bool,
}

/// At most this many requests wait for the user at once.
const MAX_PENDING: usize = 4;

impl GrantDesk {
    pub(super) fn new(policy: Option<&SessionPolicy>) -> Self {
        let group = match policy {
            Some(p) if !p.unattended => Err(GrantRefusal::GroupForbids {
                technician: p.technician.clone(),
            }),
            _ => Ok(()),
        };
        Self {
            pending: HashMap::new(),
            group,
            technician: policy.map(|p| p.technician.clone()),
            admin_credentials_only: policy.is_some_and(|p| p.admin_credentials_only),
        }
    }

    /// A request arrived: `Ok` with the question for the user, or `Err` with the answer
    /// to send at once.
    pub(super) fn handle_request(
        &mut self,
        id: u32,
        json: &str,
        control: bool,
        config: &AgentConfig,
    ) -> Result<AgentEvent, ControlMessage> {
        let refuse = |why: GrantRefusal| ControlMessage::GrantAnswer {
            id,
            approved: false,
            detail: why.to_string(),
        };
        if !control {
            return Err(refuse(GrantRefusal::ViewOnly));
        }
        self.group.clone().map_err(refuse)?;
        if config.grants.is_none() {
            return Err(refuse(GrantRefusal::NoGrants));
        }
        if self.pending.len() >= MAX_PENDING || self.pending.contains_key(&id) {
            return Err(refuse(GrantRefusal::TooManyWaiting));
        }
        let request: GrantRequest = serde_json::from_str(json)
            .map_err(|e| refuse(GrantRefusal::InvalidRequest(e.to_string())))?;
        if request.credential_mode == CredentialMode::CustomerCredentials
            && self.admin_credentials_only
        {
            return Err(refuse(GrantRefusal::CustomerCredentialsForbidden {
                technician: self
                    .technician
                    .clone()
                    .unwrap_or_else(|| "the technician".into()),
            }));
        }
        if request.credential_mode == CredentialMode::CustomerCredentials
            && config.customer_accounts.is_none()
        {
            return Err(refuse(GrantRefusal::NoCustomerAccounts));
        }
        self.pending.insert(id, request.clone());
        Ok(AgentEvent::GrantRequested {
            id,
            request,
            technician: self.technician.clone(),
        })
    }

    /// The user decided on request `id` at `now`: the answer to send and the event to
    /// emit; `None` when no such request waits.
    pub(super) fn handle_decision(
        &mut self,
        id: u32,
        decision: GrantDecision,
        config: &AgentConfig,
        now: UnixMillis,
    ) -> Option<(ControlMessage, AgentEvent)> {
        let request = self.pending.remove(&id)?;
        let outcome = self.decide(request, decision, config, now);
        let answer = match &outcome {
            Ok((_, json)) => ControlMessage::GrantAnswer {
                id,
                approved: true,
                detail: json.clone(),
            },
            Err(why) => ControlMessage::GrantAnswer {
                id,
                approved: false,
                detail: why.to_string(),
            },
        };
        let result = outcome.map(|(local_id, _)| local_id);
        Some((answer, AgentEvent::GrantDecided { id, result }))
    }

    /// `Ok((number in the grants file, grant JSON))` or why not.
    fn decide(
        &self,
        request: GrantRequest,
        decision: GrantDecision,
        config: &AgentConfig,
        now: UnixMillis,
    ) -> Result<(u32, String), GrantRefusal> {
        let mode = request.credential_mode;
        match (&decision, mode) {
            (GrantDecision::Reject, _) => return Err(GrantRefusal::RefusedByUser),
            (
                GrantDecision::ApproveWithCredentials { user, password },
                CredentialMode::CustomerCredentials,
            ) => {
                let accounts = config
                    .customer_accounts
                    .as_ref()
                    .ok_or(GrantRefusal::NoCustomerAccounts)?;
                match accounts.verify(user, password) {
                    Ok(true) => {}
                    Ok(false) => return Err(GrantRefusal::WrongCredentials),
                    Err(e) => return Err(GrantRefusal::Storage(crate::with_causes(&e))),
                }
            }
            (GrantDecision::Approve, CredentialMode::CustomerCredentials) => {
                return Err(GrantRefusal::CredentialsMissing)
            }
            (_, CredentialMode::AskEachConnection) => {}
        }
        let (grant, adjustment) = approve(request, &config.grant_policy, now)?;
        let grants = config.grants.as_ref().ok_or(GrantRefusal::NoGrants)?;
        let mut ticket = grants
            .add(self.technician.clone(), grant)
            .map_err(|e| GrantRefusal::Storage(crate::with_causes(&e)))?;
        ticket.device = config.grant_device.clone();
        tracing::info!(local = ticket.id, ?adjustment, "unattended access granted");
        // The ticket (with its secret) goes to the technician over the encrypted,
        // authenticated control channel; the broker never sees it.
        Ok((ticket.id, ticket.to_json()))
    }
}

#[cfg(test)]
mod tests {
    use deskwire_signal::grant::{GrantPolicy, GrantZone, Schedule, Validity, ZoneName, ZoneOf};
    use deskwire_signal::PolicyAcceptance;

    use super::*;
    use crate::accounts::AdminAccounts;
    use crate::grants::LocalGrants;

    fn group(admin_credentials_only: bool) -> SessionPolicy {
        SessionPolicy {
            technician: "alice".into(),
            company: String::new(),
            acceptance: PolicyAcceptance::Auto,
            window_secs: 30,
            control: true,
            unattended: true,
            admin_credentials_only,
        }
    }

    fn request(mode: CredentialMode) -> String {
        serde_json::to_string(&GrantRequest {
            schedule: Schedule::new(Validity::Days { days: 2 }, None).unwrap(),
            zone: GrantZone {
                of: ZoneOf::Customer,
                name: ZoneName::new("UTC").unwrap(),
            },
            credential_mode: mode,
        })
        .unwrap()
    }

    #[test]
    fn a_group_limited_to_admin_credentials_cannot_ask_for_customer_credentials() {
        let dir = std::env::temp_dir().join(format!("deskwire-desk-{}", std::process::id()));
        let config = AgentConfig::new("").unattended(
            LocalGrants::at(dir.join("grants")),
            GrantPolicy::default(),
            Some(AdminAccounts::at(dir.join("accounts"))),
        );
        let strict = group(true);
        let mut desk = GrantDesk::new(Some(&strict));
        let refused = desk
            .handle_request(
                1,
                &request(CredentialMode::CustomerCredentials),
                true,
                &config,
            )
            .unwrap_err();
        let ControlMessage::GrantAnswer {
            approved, detail, ..
        } = refused
        else {
            panic!("{refused:?}");
        };
        assert!(
            !approved && detail.contains("alice's group may not use the customer's credentials"),
            "{detail}"
        );
        // The mode the group allows still reaches the user, and so does either mode for a
        // group without the limit.
        assert!(desk
            .handle_request(
                2,
                &request(CredentialMode::AskEachConnection),
                true,
                &config
            )
            .is_ok());
        let open = group(false);
        let mut desk = GrantDesk::new(Some(&open));
        assert!(desk
            .handle_request(
                3,
                &request(CredentialMode::CustomerCredentials),
                true,
                &config
            )
            .is_ok());
    }
}
