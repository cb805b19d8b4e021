//! The store's side of signalling: one task performs, in the order the switchboard emitted
//! them, the audit appends and the code and session writes, and hands each answer back to
//! the switchboard through [`Hub::drive`].
//!
//! One task rather than a task per job: a failed verification reopens a code before the
//! next attempt's redemption may run, a cancellation lands after the insert it cancels,
//! and audit records keep their order. Code and session writes go before queued audit
//! records ([`Lanes`]). Signalling itself never waits on it.

use std::sync::Arc;
use std::time::Duration;

use deskwire_signal::{JoinRefusal, SessionCode, UnixMillis};
use tokio::sync::mpsc;

use super::{policy_of, Hub};
use crate::codes::SessionId;
use crate::store::{Acceptance, JoinDenied, NewSession, Refusal, Store, StoreError, TechnicianId};
use crate::switchboard::{
    ConnId, Output, RedeemError, Redeemed, ResumeError, Resumed, StoreCodeError, StoredCode,
};

/// How often at most the store's old codes are purged (on the next code issued).
const PURGE_EVERY: Duration = Duration::from_secs(60);

/// Perform the queued jobs until the queue closes, then close the store.
pub(super) async fn work(
    hub: Arc<Hub>,
    store: Store,
    mut jobs: mpsc::UnboundedReceiver<Output>,
    retention: Duration,
) {
    let mut purged_at: Option<UnixMillis> = None;
    let mut lanes = Lanes::default();
    loop {
        // Everything queued so far, sorted into its lane, before choosing what runs next.
        while let Ok(job) = jobs.try_recv() {
            lanes.push(job);
        }
        let job = match lanes.pop() {
            Some(job) => job,
            None => match jobs.recv().await {
                Some(job) => {
                    lanes.push(job);
                    continue;
                }
                None => break,
            },
        };
        if matches!(job, Output::StoreCode { .. }) {
            purge(&hub, &store, &mut purged_at, retention).await;
        }
        perform(&hub, &store, job).await;
    }
    drop(hub);
    store.close().await;
}

/// The queued jobs in two lanes, each in the order the switchboard emitted it: first what
/// a peer waits on (codes, redemptions, sessions), then the audit appends nobody waits on.
/// A backlog of audit records (a flood of refusals) must not hold up a technician's code.
/// Nothing orders a code write after an audit record: the ordering that matters (a code
/// reopened before the next redemption, a cancellation after its insert) is within the
/// first lane, and the audit chain's order is within the second.
#[derive(Debug, Default)]
struct Lanes {
    waited_on: std::collections::VecDeque<Output>,
    audit: std::collections::VecDeque<Output>,
}

impl Lanes {
    fn push(&mut self, job: Output) {
        match job {
            Output::Audit(_) => self.audit.push_back(job),
            _ => self.waited_on.push_back(job),
        }
    }

    fn pop(&mut self) -> Option<Output> {
        self.waited_on
            .pop_front()
            .or_else(|| self.audit.pop_front())
    }
}

/// Forget codes whose retention has passed, at most every [`PURGE_EVERY`], so their numbers
/// can be issued again and the table stays small.
async fn purge(hub: &Hub, store: &Store, purged_at: &mut Option<UnixMillis>, retention: Duration) {
    let now = hub.clock.now();
    if purged_at.is_some_and(|at| now < at.plus(PURGE_EVERY)) {
        return;
    }
    *purged_at = Some(now);
    let before = millis(now) - i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
    match store.purge_codes(before).await {
        Ok(0) => {}
        Ok(n) => tracing::debug!(n, "purged old connection codes"),
        Err(e) => tracing::warn!(error = %e, "cannot purge old connection codes"),
    }
}

async fn perform(hub: &Arc<Hub>, store: &Store, job: Output) {
    match job {
        Output::SaveAdhoc(snapshot) => {
            if let Err(e) = store.save_adhoc(&snapshot, millis(hub.clock.now())).await {
                tracing::error!(error = %e, "cannot save the ad-hoc sessions");
            }
        }
        Output::Audit(record) => {
            if let Err(e) = store.append_audit(&record).await {
                tracing::error!(error = %e, event = %record.event, "cannot append to the audit log");
            }
        }
        Output::StoreCode {
            conn,
            code,
            technician,
            issued_at,
            expires_at,
            resume_hash,
        } => {
            let stored = store
                .insert_resumable_code(
                    &code.to_string(),
                    technician,
                    millis(issued_at),
                    millis(expires_at),
                    resume_hash.as_deref(),
                )
                .await;
            let result = match stored {
                Ok(()) => Ok(()),
                Err(StoreError::Duplicate { .. }) => Err(StoreCodeError::Taken),
                Err(e) => {
                    tracing::error!(error = %e, "cannot record a connection code");
                    Err(StoreCodeError::Unavailable(
                        "the broker cannot record connection codes right now".into(),
                    ))
                }
            };
            let now = hub.clock.now();
            hub.drive(|s| s.board.handle_code_stored(conn, result, now));
        }
        Output::RedeemCode {
            conn,
            session,
            code,
            technician,
            device,
        } => redeem(hub, store, conn, session, code, technician, device).await,
        Output::LookUpCode { conn, code } => {
            let result = match store.code(&code.to_string()).await {
                Ok(found) => Ok(found.map(|c| StoredCode {
                    state: c.state,
                    expires_at: unix(c.expires_at),
                })),
                Err(e) => {
                    tracing::error!(error = %e, "cannot look up a connection code");
                    Err("the broker cannot check codes right now".to_owned())
                }
            };
            let now = hub.clock.now();
            hub.drive(|s| s.board.handle_code_looked_up(conn, result, now));
        }
        Output::ResumeCode {
            conn,
            code,
            resume_hash,
        } => {
            let now = hub.clock.now();
            let result = resume(store, code, &resume_hash, now).await;
            hub.drive(|s| s.board.handle_resumed(conn, code, result, now));
        }
        Output::CancelCode { code } => {
            let now = millis(hub.clock.now());
            if let Err(e) = store.cancel_code(&code.to_string(), now).await {
                tracing::error!(error = %e, "cannot cancel a connection code");
            }
        }
        Output::FailedConfirmation { code } => {
            let now = millis(hub.clock.now());
            match store
                .record_failed_confirmation(&code.to_string(), now)
                .await
            {
                Ok(Ok(_)) => {}
                Ok(Err(refusal)) => tracing::debug!(%refusal, "failed confirmation not counted"),
                Err(e) => tracing::error!(error = %e, "cannot count a failed confirmation"),
            }
        }
        Output::EndSession { record, by, reason } => {
            let now = millis(hub.clock.now());
            if let Err(e) = store.end_session(record, now, by, &reason).await {
                tracing::error!(error = %e, "cannot record the end of a session");
            }
        }
        // Not store work; the hub delivers these itself.
        Output::Send { .. }
        | Output::Close { .. }
        | Output::CheckDevice { .. }
        | Output::Authenticate { .. }
        | Output::StoreLanReport { .. }
        | Output::LookUpLanPassword { .. }
        | Output::MailInvitation { .. }
        | Output::StoreGrant { .. }
        | Output::LookUpGrant { .. } => {}
    }
}

/// Redeem `code` for a target and start its session row, under the technician's group as it
/// is now: a group switched to `deny`, or at its session cap, refuses and leaves the code.
async fn redeem(
    hub: &Arc<Hub>,
    store: &Store,
    conn: ConnId,
    session: SessionId,
    code: SessionCode,
    technician: Option<TechnicianId>,
    device: Option<String>,
) {
    let now = hub.clock.now();
    let result = try_redeem(store, code, technician, device.as_deref(), now)
        .await
        .unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot redeem a connection code");
            Err(RedeemError::Unavailable(
                "the broker cannot check codes right now".into(),
            ))
        });
    hub.drive(|s| s.board.handle_redeemed(conn, session, result, now));
}

async fn try_redeem(
    store: &Store,
    code: SessionCode,
    technician: Option<TechnicianId>,
    device: Option<&str>,
    now: UnixMillis,
) -> Result<Result<Redeemed, RedeemError>, StoreError> {
    let (policy, max_sessions, name) = match technician {
        None => (None, None, String::new()),
        Some(id) => {
            let Some(p) = store.principal(id).await? else {
                let why = "the technician's account no longer exists".to_owned();
                return Ok(Err(RedeemError::Policy(why)));
            };
            if p.group.policy.acceptance == Acceptance::Deny {
                let why = format!("{}'s group may not start sessions", p.technician.name);
                return Ok(Err(RedeemError::Policy(why)));
            }
            (
                Some(policy_of(&p)),
                p.group.policy.max_sessions,
                p.technician.name,
            )
        }
    };
    let text = code.to_string();
    let new = NewSession {
        session_code: &text,
        technician,
        device,
        started_at: millis(now),
        max_sessions,
    };
    Ok(match store.join_code(&new).await? {
        Ok(record) => Ok(Redeemed { record, policy }),
        Err(JoinDenied::Code(refusal)) => Err(RedeemError::Code(join_refusal(refusal))),
        Err(JoinDenied::Session(refusal)) => Err(RedeemError::Policy(format!("{name}: {refusal}"))),
    })
}

async fn resume(
    store: &Store,
    code: SessionCode,
    resume_hash: &str,
    now: UnixMillis,
) -> Result<Resumed, ResumeError> {
    let unavailable = |e: StoreError| {
        tracing::error!(error = %e, "cannot resume a connection code");
        ResumeError::Unavailable("the broker cannot check codes right now".into())
    };
    let record = store
        .resume_code(&code.to_string(), resume_hash, millis(now))
        .await
        .map_err(unavailable)?
        .map_err(ResumeError::Refused)?;
    let policy = match record.technician {
        None => None,
        Some(id) => match store.principal(id).await.map_err(unavailable)? {
            Some(p) => Some(policy_of(&p)),
            None => {
                let why = "the technician's account no longer exists";
                return Err(ResumeError::Unavailable(why.into()));
            }
        },
    };
    Ok(Resumed {
        expires_at: unix(record.expires_at),
        technician: record.technician,
        policy,
    })
}

/// The refusal a target hears for the store's verdict on a code.
fn join_refusal(refusal: Refusal) -> JoinRefusal {
    match refusal {
        Refusal::Expired => JoinRefusal::Expired,
        Refusal::Reused => JoinRefusal::AlreadyUsed,
        Refusal::Cancelled => JoinRefusal::Cancelled,
        Refusal::Burned => JoinRefusal::Burned,
        Refusal::Unknown | Refusal::WrongResumeToken => JoinRefusal::WrongCode,
    }
}

fn millis(t: UnixMillis) -> i64 {
    i64::try_from(t.0).unwrap_or(i64::MAX)
}

fn unix(ms: i64) -> UnixMillis {
    UnixMillis(u64::try_from(ms).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{AuditEvent, AuditRecord};

    fn code(n: u32) -> SessionCode {
        SessionCode::from_number(100_000 + n).unwrap()
    }

    fn cancel(n: u32) -> Output {
        Output::CancelCode { code: code(n) }
    }

    #[test]
    fn code_writes_overtake_an_audit_backlog_and_each_lane_keeps_its_order() {
        let mut lanes = Lanes::default();
        let audit = |i: u32| {
            let mut r = AuditRecord::new(i64::from(i), AuditEvent::DeniedByPolicy);
            r.detail = format!("record {i}");
            Output::Audit(r)
        };
        for i in 0..1000 {
            lanes.push(audit(i));
        }
        lanes.push(cancel(1));
        lanes.push(audit(1000));
        lanes.push(cancel(2));
        assert!(matches!(lanes.pop(), Some(Output::CancelCode { code: c }) if c == code(1)));
        assert!(matches!(lanes.pop(), Some(Output::CancelCode { code: c }) if c == code(2)));
        for i in 0..=1000 {
            match lanes.pop() {
                Some(Output::Audit(r)) => assert_eq!(r.detail, format!("record {i}")),
                other => panic!("expected audit record {i}, got {other:?}"),
            }
        }
        assert!(lanes.pop().is_none());
    }
}
