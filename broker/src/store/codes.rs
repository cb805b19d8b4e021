//! Connection codes that survive a restart and are single-use across brokers.
//!
//! A code is keyed by the part the broker knows (the session code). Every state change is one
//! conditional `UPDATE ... WHERE state = ...`: the database applies it to at most one caller,
//! whichever broker or restart that caller lives in, so a code is never held by two attempts.
//! As in the switchboard, a target's join redeems the code; if the peers' key confirmation
//! then fails, the code is reopened for another try, and burned at the third failure. Used
//! codes stay as tombstones (as in the in-memory `CodeBook`) until [`Store::purge_codes`], so a
//! reused code is told apart from a wrong one.

use std::fmt;

use sqlx::any::AnyRow;
use sqlx::Row;

use super::audit::AuditEvent;
use super::technicians::TechnicianId;
use super::{constraint_error, Store, StoreError};

/// Failed key confirmations after which a code is burned.
pub const MAX_FAILED_CONFIRMATIONS: u32 = 3;

/// Why a code did not work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// No such code.
    #[error("no such connection code")]
    Unknown,
    /// The code's time ran out.
    #[error("the connection code has expired")]
    Expired,
    /// The code was already redeemed.
    #[error("the connection code was already used")]
    Reused,
    /// The controller withdrew the code.
    #[error("the connection code was cancelled")]
    Cancelled,
    /// Too many failed confirmations.
    #[error("the connection code was blocked after {MAX_FAILED_CONFIRMATIONS} failed attempts")]
    Burned,
    /// A resume token that is not the one issued with the code (or the code has none).
    #[error("the resume token does not match the connection code")]
    WrongResumeToken,
}

impl Refusal {
    /// The audit event that records this refusal.
    pub fn audit_event(self) -> AuditEvent {
        match self {
            Self::Unknown => AuditEvent::WrongCode,
            Self::Expired => AuditEvent::Expired,
            Self::Reused => AuditEvent::Reused,
            Self::Cancelled => AuditEvent::Cancelled,
            Self::Burned => AuditEvent::CodeBurned,
            Self::WrongResumeToken => AuditEvent::LoginFailed,
        }
    }
}

/// Where a code is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeState {
    /// Issued, not yet used (it may have expired: compare `expires_at` with now).
    Pending,
    /// Used by a target.
    Redeemed,
    /// Withdrawn by the controller.
    Cancelled,
    /// Blocked after too many failed confirmations.
    Burned,
}

impl CodeState {
    fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Redeemed => "redeemed",
            Self::Cancelled => "cancelled",
            Self::Burned => "burned",
        }
    }

    fn parse(s: &str) -> Result<Self, StoreError> {
        [Self::Pending, Self::Redeemed, Self::Cancelled, Self::Burned]
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown code state {s:?}")))
    }
}

impl fmt::Display for CodeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A code as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeRecord {
    /// The broker's half of the code.
    pub session_code: String,
    /// The controller's technician, if they authenticated.
    pub technician: Option<TechnicianId>,
    /// When it was issued (Unix ms).
    pub issued_at: i64,
    /// When it stops working (Unix ms): redeemable while `now < expires_at`.
    pub expires_at: i64,
    /// Its state.
    pub state: CodeState,
    /// Failed key confirmations so far.
    pub failed_confirmations: u32,
    /// When it was redeemed, cancelled or burned.
    pub closed_at: Option<i64>,
}

/// A successful redemption.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Redeemed {
    /// The controller's technician, if they authenticated.
    pub technician: Option<TechnicianId>,
    /// When the code was issued.
    pub issued_at: i64,
    /// When it would have expired.
    pub expires_at: i64,
}

const MAX_SESSION_CODE: usize = 64;

impl Store {
    /// Record a code issued at `now` for `technician`'s controller, redeemable until
    /// `expires_at`. Fails with [`StoreError::Duplicate`] while the code (or its tombstone)
    /// is still in the store.
    pub async fn insert_code(
        &self,
        session_code: &str,
        technician: Option<TechnicianId>,
        now: i64,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        self.insert_resumable_code(session_code, technician, now, expires_at, None)
            .await
    }

    /// [`Store::insert_code`], keeping `resume_hash` (the SHA-256, hex, of the token its
    /// controller may present to [`Store::resume_code`] after losing its broker).
    pub async fn insert_resumable_code(
        &self,
        session_code: &str,
        technician: Option<TechnicianId>,
        now: i64,
        expires_at: i64,
        resume_hash: Option<&str>,
    ) -> Result<(), StoreError> {
        check_session_code(session_code)?;
        if expires_at <= now {
            return Err(StoreError::Invalid {
                what: "code expiry",
                why: format!("{expires_at} is not after the issue time {now}"),
            });
        }
        let technician_name = technician.map_or_else(String::new, |t| t.0.to_string());
        sqlx::query(
            "INSERT INTO codes (session_code, technician_id, issued_at, expires_at, state, \
             failed_confirmations, resume_hash) VALUES ($1, $2, $3, $4, 'pending', 0, $5)",
        )
        .bind(session_code)
        .bind(technician.map(|t| t.0))
        .bind(now)
        .bind(expires_at)
        .bind(resume_hash)
        .execute(self.pool())
        .await
        .map_err(|e| {
            constraint_error(
                e,
                ("connection code", session_code),
                ("technician with id", &technician_name),
            )
        })?;
        Ok(())
    }

    /// Use the code at `now`: succeeds for exactly one caller across every broker sharing the
    /// database, and only while it is pending and unexpired.
    pub async fn redeem_code(
        &self,
        session_code: &str,
        now: i64,
    ) -> Result<Result<Redeemed, Refusal>, StoreError> {
        let row = sqlx::query(
            "UPDATE codes SET state = 'redeemed', closed_at = $2 \
             WHERE session_code = $1 AND state = 'pending' AND expires_at > $2 \
             RETURNING technician_id, issued_at, expires_at",
        )
        .bind(session_code)
        .bind(now)
        .fetch_optional(self.pool())
        .await?;
        match row {
            Some(row) => Ok(Ok(Redeemed {
                technician: row.try_get::<Option<i64>, _>(0)?.map(TechnicianId),
                issued_at: row.try_get(1)?,
                expires_at: row.try_get(2)?,
            })),
            None => Ok(Err(self.why_not_pending(session_code, now).await?)),
        }
    }

    /// The attempt holding the code (it redeemed it at join) failed key confirmation: count
    /// the failure and, in the same statement, reopen the code for another attempt or, at
    /// [`MAX_FAILED_CONFIRMATIONS`], burn it. Returns the count so far. Also counts against a
    /// code still pending. Call it once per failed attempt, only while that attempt holds the
    /// code: a redeemed code has no record of which attempt redeemed it.
    pub async fn record_failed_confirmation(
        &self,
        session_code: &str,
        now: i64,
    ) -> Result<Result<u32, Refusal>, StoreError> {
        // SET expressions all see the row as it was, so every CASE tests the old count + 1.
        let row: Option<(i64,)> = sqlx::query_as(
            "UPDATE codes SET failed_confirmations = failed_confirmations + 1, \
             state = CASE WHEN failed_confirmations + 1 >= $3 THEN 'burned' ELSE 'pending' END, \
             closed_at = CASE WHEN failed_confirmations + 1 >= $3 THEN $2 ELSE NULL END \
             WHERE session_code = $1 AND state IN ('pending', 'redeemed') AND expires_at > $2 \
             RETURNING failed_confirmations",
        )
        .bind(session_code)
        .bind(now)
        .bind(i64::from(MAX_FAILED_CONFIRMATIONS))
        .fetch_optional(self.pool())
        .await?;
        match row {
            Some((count,)) => {
                let count = u32::try_from(count).unwrap_or(u32::MAX);
                if count >= MAX_FAILED_CONFIRMATIONS {
                    tracing::info!(session_code, "connection code burned");
                }
                Ok(Ok(count))
            }
            None => Ok(Err(self.why_not_pending(session_code, now).await?)),
        }
    }

    /// The code, if it is pending and unexpired at `now` and `resume_hash` is the hash stored
    /// with it: its controller may re-attach. Changes nothing either way.
    pub async fn resume_code(
        &self,
        session_code: &str,
        resume_hash: &str,
        now: i64,
    ) -> Result<Result<CodeRecord, Refusal>, StoreError> {
        let row = sqlx::query(
            "SELECT session_code, technician_id, issued_at, expires_at, state, \
             failed_confirmations, closed_at, resume_hash FROM codes WHERE session_code = $1",
        )
        .bind(session_code)
        .fetch_optional(self.pool())
        .await?;
        let Some(row) = row else {
            return Ok(Err(Refusal::Unknown));
        };
        let code = code_from(&row)?;
        let stored: Option<String> = row.try_get(7)?;
        // Hashes of 256-bit random tokens: comparing them leaks nothing usable about the token.
        if stored.as_deref() != Some(resume_hash) {
            return Ok(Err(Refusal::WrongResumeToken));
        }
        Ok(match code.state {
            CodeState::Redeemed => Err(Refusal::Reused),
            CodeState::Cancelled => Err(Refusal::Cancelled),
            CodeState::Burned => Err(Refusal::Burned),
            CodeState::Pending if code.expires_at <= now => Err(Refusal::Expired),
            CodeState::Pending => Ok(code),
        })
    }

    /// Withdraw a pending code; false if it was not pending.
    pub async fn cancel_code(&self, session_code: &str, now: i64) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE codes SET state = 'cancelled', closed_at = $2 \
             WHERE session_code = $1 AND state = 'pending'",
        )
        .bind(session_code)
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The code as stored.
    pub async fn code(&self, session_code: &str) -> Result<Option<CodeRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT session_code, technician_id, issued_at, expires_at, state, \
             failed_confirmations, closed_at FROM codes WHERE session_code = $1",
        )
        .bind(session_code)
        .fetch_optional(self.pool())
        .await?;
        row.map(|r| code_from(&r)).transpose()
    }

    /// Codes pending and unexpired at `now` (what a cap on live codes counts).
    pub async fn pending_codes(&self, now: i64) -> Result<u64, StoreError> {
        let (n,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM codes WHERE state = 'pending' AND expires_at > $1",
        )
        .bind(now)
        .fetch_one(self.pool())
        .await?;
        Ok(super::to_count(n))
    }

    /// Forget every code (pending or tombstone) that expired before `expired_before`
    /// (typically `now - retention`), so its session code can be issued again.
    pub async fn purge_codes(&self, expired_before: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM codes WHERE expires_at < $1")
            .bind(expired_before)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected())
    }

    /// Why a conditional update on a pending code matched nothing.
    pub(super) async fn why_not_pending(
        &self,
        session_code: &str,
        now: i64,
    ) -> Result<Refusal, StoreError> {
        Ok(match self.code(session_code).await? {
            None => Refusal::Unknown,
            Some(code) => match code.state {
                CodeState::Redeemed => Refusal::Reused,
                CodeState::Cancelled => Refusal::Cancelled,
                CodeState::Burned => Refusal::Burned,
                CodeState::Pending if code.expires_at <= now => Refusal::Expired,
                // Pending and live now, so it changed between the two statements: only a
                // purge and re-issue could do that, and to the caller it was not usable.
                CodeState::Pending => Refusal::Reused,
            },
        })
    }
}

fn check_session_code(code: &str) -> Result<(), StoreError> {
    if code.is_empty() || code.len() > MAX_SESSION_CODE || code.chars().any(char::is_control) {
        return Err(StoreError::Invalid {
            what: "session code",
            why: format!("{code:?} (expected 1..={MAX_SESSION_CODE} printable bytes)"),
        });
    }
    Ok(())
}

fn code_from(row: &AnyRow) -> Result<CodeRecord, StoreError> {
    let state: String = row.try_get(4)?;
    let failed: i64 = row.try_get(5)?;
    Ok(CodeRecord {
        session_code: row.try_get(0)?,
        technician: row.try_get::<Option<i64>, _>(1)?.map(TechnicianId),
        issued_at: row.try_get(2)?,
        expires_at: row.try_get(3)?,
        state: CodeState::parse(&state)?,
        failed_confirmations: u32::try_from(failed).unwrap_or(u32::MAX),
        closed_at: row.try_get(6)?,
    })
}
