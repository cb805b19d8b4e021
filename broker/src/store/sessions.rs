//! Session rows: who connected to which device, when, and how it ended.

use std::fmt;

use sqlx::any::AnyRow;
use sqlx::Row;

use sqlx::AnyConnection;

use super::codes::Refusal;
use super::technicians::TechnicianId;
use super::{constraint_error, next_id, Store, StoreError};

/// Names one session row (not the connection code: codes are reissued after purging).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionRecordId(pub i64);

/// Which side ended a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndedBy {
    /// The technician's side.
    Controller,
    /// The user's side.
    Target,
    /// The broker (policy, timeout, shutdown, restart).
    Broker,
}

impl EndedBy {
    fn as_str(self) -> &'static str {
        match self {
            Self::Controller => "controller",
            Self::Target => "target",
            Self::Broker => "broker",
        }
    }

    fn parse(s: &str) -> Result<Self, StoreError> {
        match s {
            "controller" => Ok(Self::Controller),
            "target" => Ok(Self::Target),
            "broker" => Ok(Self::Broker),
            _ => Err(StoreError::Corrupt(format!("unknown session end {s:?}"))),
        }
    }
}

impl fmt::Display for EndedBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A session about to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSession<'a> {
    /// The connection code's broker half.
    pub session_code: &'a str,
    /// The controller's technician, if authenticated.
    pub technician: Option<TechnicianId>,
    /// The target device, if registered.
    pub device: Option<&'a str>,
    /// Start time (Unix ms).
    pub started_at: i64,
    /// Refuse if the technician already holds this many open sessions (their group's
    /// `max_sessions`); ignored without a technician.
    pub max_sessions: Option<u32>,
}

/// Why a session was not started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SessionRefusal {
    /// The technician's open sessions are at their group's cap.
    #[error("the technician already has {max} open sessions, the most their group allows")]
    TooManySessions {
        /// The cap.
        max: u32,
    },
}

/// Why a join did not start a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JoinDenied {
    /// The code did not work (and nothing changed).
    #[error("{0}")]
    Code(Refusal),
    /// The technician is at their cap (and the code is still pending).
    #[error("{0}")]
    Session(SessionRefusal),
}

/// A session as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// Its id.
    pub id: SessionRecordId,
    /// The connection code's broker half.
    pub session_code: String,
    /// The controller's technician.
    pub technician: Option<TechnicianId>,
    /// The target device.
    pub device: Option<String>,
    /// Start (Unix ms).
    pub started_at: i64,
    /// End (Unix ms), if it ended.
    pub ended_at: Option<i64>,
    /// Who ended it.
    pub ended_by: Option<EndedBy>,
    /// Why, for a human.
    pub end_reason: Option<String>,
}

impl Store {
    /// Record a session start. With a technician and a cap, the count of their open
    /// sessions and the insert happen under one lock, so concurrent starts cannot overshoot.
    pub async fn start_session(
        &self,
        new: &NewSession<'_>,
    ) -> Result<Result<SessionRecordId, SessionRefusal>, StoreError> {
        let mut tx = self.pool().begin().await?;
        let started = start_in(&mut tx, new).await?;
        if started.is_ok() {
            tx.commit().await?;
        }
        Ok(started)
    }

    /// A target joins with `new.session_code`: redeem the code and record the session in one
    /// transaction, so the code is used exactly when a session row exists. The code is
    /// redeemed once across every broker sharing the database; a technician at their cap
    /// leaves it pending (the whole transaction rolls back).
    pub async fn join_code(
        &self,
        new: &NewSession<'_>,
    ) -> Result<Result<SessionRecordId, JoinDenied>, StoreError> {
        let mut tx = self.pool().begin().await?;
        // First statement a write: it takes SQLite's write lock at once, and the code's row
        // lock on PostgreSQL, so two brokers cannot both see it pending.
        let redeemed = sqlx::query(
            "UPDATE codes SET state = 'redeemed', closed_at = $2 \
             WHERE session_code = $1 AND state = 'pending' AND expires_at > $2",
        )
        .bind(new.session_code)
        .bind(new.started_at)
        .execute(&mut *tx)
        .await?;
        if redeemed.rows_affected() != 1 {
            tx.rollback().await?;
            let why = self
                .why_not_pending(new.session_code, new.started_at)
                .await?;
            return Ok(Err(JoinDenied::Code(why)));
        }
        match start_in(&mut tx, new).await? {
            Ok(id) => {
                tx.commit().await?;
                Ok(Ok(id))
            }
            Err(refusal) => {
                tx.rollback().await?;
                Ok(Err(JoinDenied::Session(refusal)))
            }
        }
    }

    /// Record a session's end; false if it had already ended (the first end is kept).
    pub async fn end_session(
        &self,
        id: SessionRecordId,
        ended_at: i64,
        ended_by: EndedBy,
        reason: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE sessions SET ended_at = $2, ended_by = $3, end_reason = $4 \
             WHERE id = $1 AND ended_at IS NULL",
        )
        .bind(id.0)
        .bind(ended_at)
        .bind(ended_by.as_str())
        .bind(reason)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// End every open session as ended by the broker, returning how many: for a broker
    /// starting after a crash, whose sessions' sockets are gone. (Only right while one broker
    /// uses the database: rows do not yet say which broker holds them.)
    pub async fn end_open_sessions(&self, now: i64, reason: &str) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE sessions SET ended_at = $1, ended_by = 'broker', end_reason = $2 \
             WHERE ended_at IS NULL",
        )
        .bind(now)
        .bind(reason)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected())
    }

    /// The session with id `id`.
    pub async fn session(&self, id: SessionRecordId) -> Result<Option<SessionRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT id, session_code, technician_id, device_id, started_at, ended_at, ended_by, \
             end_reason FROM sessions WHERE id = $1",
        )
        .bind(id.0)
        .fetch_optional(self.pool())
        .await?;
        row.map(|r| session_from(&r)).transpose()
    }

    /// Open sessions of `technician`.
    pub async fn open_sessions(&self, technician: TechnicianId) -> Result<u64, StoreError> {
        let (n,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM sessions WHERE technician_id = $1 AND ended_at IS NULL",
        )
        .bind(technician.0)
        .fetch_one(self.pool())
        .await?;
        Ok(super::to_count(n))
    }
}

/// Insert a session row inside the caller's transaction, enforcing the technician's cap.
/// With a technician and a cap, the count of their open sessions and the insert happen under
/// one lock, so concurrent starts cannot overshoot.
async fn start_in(
    tx: &mut AnyConnection,
    new: &NewSession<'_>,
) -> Result<Result<SessionRecordId, SessionRefusal>, StoreError> {
    if let (Some(technician), Some(max)) = (new.technician, new.max_sessions) {
        // A no-op update locks the technician's row on PostgreSQL (and takes SQLite's
        // write lock): concurrent starts for one technician queue here.
        sqlx::query("UPDATE technicians SET id = id WHERE id = $1")
            .bind(technician.0)
            .execute(&mut *tx)
            .await?;
        let (open,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM sessions WHERE technician_id = $1 AND ended_at IS NULL",
        )
        .bind(technician.0)
        .fetch_one(&mut *tx)
        .await?;
        if open >= i64::from(max) {
            return Ok(Err(SessionRefusal::TooManySessions { max }));
        }
    }
    let id = next_id(&mut *tx, "session").await?;
    let technician_name = new.technician.map_or_else(String::new, |t| t.0.to_string());
    sqlx::query(
        "INSERT INTO sessions (id, session_code, technician_id, device_id, started_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(id)
    .bind(new.session_code)
    .bind(new.technician.map(|t| t.0))
    .bind(new.device)
    .bind(new.started_at)
    .execute(&mut *tx)
    .await
    .map_err(|e| {
        constraint_error(
            e,
            ("session", &id.to_string()),
            (
                "technician or device",
                &format!("{technician_name} {:?}", new.device),
            ),
        )
    })?;
    Ok(Ok(SessionRecordId(id)))
}

fn session_from(row: &AnyRow) -> Result<SessionRecord, StoreError> {
    let ended_by: Option<String> = row.try_get(6)?;
    Ok(SessionRecord {
        id: SessionRecordId(row.try_get(0)?),
        session_code: row.try_get(1)?,
        technician: row.try_get::<Option<i64>, _>(2)?.map(TechnicianId),
        device: row.try_get(3)?,
        started_at: row.try_get(4)?,
        ended_at: row.try_get(5)?,
        ended_by: ended_by.as_deref().map(EndedBy::parse).transpose()?,
        end_reason: row.try_get(7)?,
    })
}
