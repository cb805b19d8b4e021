//! What the switchboard's message-by-message tests share: a board, a technician, and the
//! outputs sorted out.

use std::time::Duration;

use deskwire_signal::{BrokerMessage, PolicyAcceptance, SessionPolicy};
use rand::SeedableRng;

use super::{Authenticated, ConnId, Output, Requirements, Switchboard};
use crate::codes::CodeLimits;
use crate::limits::JoinLimits;
use crate::store::{CompanyId, TechnicianId};

/// A board with small code limits and a seeded random source.
pub(super) fn board(seed: u64) -> Switchboard {
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
        rand::rngs::StdRng::seed_from_u64(seed),
    )
}

/// Alice of company 1, whose group allows control (and holds `permissions`).
pub(super) fn alice(permissions: Vec<&'static str>) -> Authenticated {
    Authenticated {
        technician: TechnicianId(3),
        company: CompanyId(1),
        policy: SessionPolicy {
            technician: "alice".into(),
            company: String::new(),
            acceptance: PolicyAcceptance::Auto,
            window_secs: 30,
            control: true,
            unattended: permissions.contains(&"unattended"),
            admin_credentials_only: false,
        },
        max_sessions: None,
        open_sessions: 0,
        permissions,
    }
}

/// Everything the board asked for since the last call.
pub(super) fn out(b: &mut Switchboard) -> Vec<Output> {
    std::iter::from_fn(|| b.poll_output()).collect()
}

/// The messages among `outputs`, with their recipients.
pub(super) fn sent(outputs: &[Output]) -> Vec<(ConnId, BrokerMessage)> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Send { to, msg } => Some((*to, msg.clone())),
            _ => None,
        })
        .collect()
}
