//! The broker's durable state: accounts, devices, connection codes, sessions and the audit log,
//! in SQLite (embedded, the default) or PostgreSQL (several brokers sharing one database).
//!
//! One [`Store`] over sqlx's `AnyPool` runs the same queries and the same migrations on both,
//! so the two backends cannot drift apart. That constrains the SQL to what both accept:
//! `$N` parameters (SQLite reads them as positional too), BIGINT/TEXT/BYTEA columns, no
//! BOOLEAN (the Any driver cannot decode SQLite's), ids from a counter table instead of
//! SERIAL/AUTOINCREMENT (which have no common spelling), and `UPDATE ... RETURNING` or
//! conditional updates wherever two brokers might race.
//!
//! Like the rest of the broker the store reads no clock: every call that records a time takes
//! `now` in Unix milliseconds.
//!
//! Operations whose answer may be a domain "no" (a reused code, a device with another key, a
//! broken audit chain) return `Result<Result<T, Refusal>, StoreError>`: the outer error means
//! the store itself failed, the inner one is the verdict the caller acts on.

mod accounts;
mod adhoc;
mod audit;
mod codes;
mod devices;
mod grants;
mod migrate;
mod secrets;
mod sessions;
mod technicians;

use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyConnection, AnyPool, ConnectOptions, Connection};

pub use accounts::{
    Acceptance, Company, CompanyId, Group, GroupId, ParseNameError, Permission, Permissions, Policy,
};
pub use adhoc::AdhocSnapshot;
pub use audit::{AuditBreak, AuditEntry, AuditEvent, AuditId, AuditRecord, BreakReason};
pub use codes::{CodeRecord, CodeState, Redeemed, Refusal, MAX_FAILED_CONFIRMATIONS};
pub use devices::{Device, DeviceRefusal, LanReport, Registered};
pub use grants::GrantReport;
pub use sessions::{
    EndedBy, JoinDenied, NewSession, SessionRecord, SessionRecordId, SessionRefusal,
};
pub use technicians::{IssuedToken, Principal, Technician, TechnicianId, TokenId, TokenInfo};

/// How long opening waits for the database to answer before naming the URL in an error.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a query waits for a pooled connection.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);
/// Pool size: SQLite serialises writers anyway; PostgreSQL connections cost a server process
/// each, and one broker's signalling needs few at once.
const SQLITE_CONNECTIONS: u32 = 4;
const POSTGRES_CONNECTIONS: u32 = 8;

/// Which database a [`Store`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file (or `sqlite::memory:`).
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

/// Why a store operation failed (as opposed to a refusal, which is an answer).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The URL names no database this broker supports, or is malformed.
    #[error("unsupported database URL {url:?}: {why} (expected sqlite://PATH, sqlite::memory: or postgres://USER@HOST:PORT/DB)")]
    BadUrl {
        /// The URL with any password replaced by `***`.
        url: String,
        /// What is wrong with it.
        why: String,
    },
    /// The database did not accept a connection.
    #[error("cannot connect to {url}: {source}")]
    Connect {
        /// The URL with any password replaced by `***`.
        url: String,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },
    /// The schema could not be brought up to date.
    #[error("cannot migrate the database schema: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A query failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// An argument is out of range or malformed.
    #[error("invalid {what}: {why}")]
    Invalid {
        /// The argument.
        what: &'static str,
        /// Why it is refused, with the accepted range.
        why: String,
    },
    /// A name or key that must be unique is taken.
    #[error("{what} {name:?} already exists")]
    Duplicate {
        /// What kind of thing ("company", "connection code", ...).
        what: &'static str,
        /// Its name.
        name: String,
    },
    /// Something the operation refers to does not exist.
    #[error("no {what} {name:?}")]
    NotFound {
        /// What kind of thing.
        what: &'static str,
        /// The name or id asked for.
        name: String,
    },
    /// A row holds a value this version does not understand (written by a newer broker or by
    /// hand).
    #[error("unexpected value in the database: {0}")]
    Corrupt(String),
    /// Hashing a password or token failed, or the random source did.
    #[error("credential hashing failed: {0}")]
    Crypto(String),
}

impl StoreError {
    /// True when the caller's input is at fault (a bad URL, name, or a missing or duplicate
    /// entry) rather than the database: command lines exit 2 for these.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            Self::BadUrl { .. }
                | Self::Invalid { .. }
                | Self::Duplicate { .. }
                | Self::NotFound { .. }
        )
    }
}

/// The broker's database: cheap to clone (the pool is shared), safe to use from many tasks.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

impl Store {
    /// Open the database at `url` (`sqlite://PATH[?mode=rwc]`, `sqlite::memory:`,
    /// `postgres://USER[:PASSWORD]@HOST[:PORT]/DB`) and apply any pending migrations.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let backend = backend_of(url)?;
        sqlx::any::install_default_drivers();
        let options: AnyConnectOptions =
            url.parse().map_err(|e: sqlx::Error| StoreError::BadUrl {
                url: redact_url(url),
                why: e.to_string(),
            })?;
        // sqlx keeps a separate in-memory database per connection, so an in-memory store must
        // live on exactly one connection that is never recycled.
        let in_memory = backend == Backend::Sqlite && is_sqlite_memory(url);

        // One direct connection first: the pool would retry a refused connection until its
        // acquire timeout and then report only "timed out"; this names the real cause.
        let probe = tokio::time::timeout(CONNECT_TIMEOUT, options.connect())
            .await
            .map_err(|_| StoreError::Connect {
                url: redact_url(url),
                source: sqlx::Error::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no answer within {CONNECT_TIMEOUT:?}"),
                )),
            })?
            .map_err(|source| connect_error(url, source))?;
        if let Err(e) = probe.close().await {
            tracing::debug!("closing the probe connection failed: {e}");
        }

        let pool_options = AnyPoolOptions::new().acquire_timeout(ACQUIRE_TIMEOUT);
        let pool_options = match (backend, in_memory) {
            (Backend::Sqlite, true) => pool_options
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None),
            (Backend::Sqlite, false) => pool_options.max_connections(SQLITE_CONNECTIONS),
            (Backend::Postgres, _) => pool_options.max_connections(POSTGRES_CONNECTIONS),
        };
        let pool = pool_options
            .connect_with(options)
            .await
            .map_err(|source| connect_error(url, source))?;

        if backend == Backend::Sqlite && !in_memory {
            // WAL lets readers (verification, lookups) run beside the single writer. The mode
            // is stored in the file, so this is a no-op after the first open; failing to
            // switch (another process holds the database) only costs concurrency.
            if let Err(e) = sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&pool)
                .await
            {
                tracing::warn!("cannot switch the SQLite database to WAL mode: {e}");
            }
        }
        migrate::run(&pool).await?;
        tracing::info!(url = %redact_url(url), ?backend, "store open");
        Ok(Self { pool, backend })
    }

    /// Which database this store talks to.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Close every connection, waiting for queries in flight.
    pub async fn close(self) {
        self.pool.close().await;
    }

    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }
}

/// The backend a URL names, or why it names none.
fn backend_of(url: &str) -> Result<Backend, StoreError> {
    let scheme = url.split_once(':').map(|(scheme, _)| scheme);
    match scheme.map(str::to_ascii_lowercase).as_deref() {
        Some("sqlite") => Ok(Backend::Sqlite),
        Some("postgres" | "postgresql") => Ok(Backend::Postgres),
        Some(other) => Err(StoreError::BadUrl {
            url: redact_url(url),
            why: format!("scheme {other:?} is not supported"),
        }),
        None => Err(StoreError::BadUrl {
            url: redact_url(url),
            why: "no scheme".into(),
        }),
    }
}

fn is_sqlite_memory(url: &str) -> bool {
    url.starts_with("sqlite::memory:") || url.contains("mode=memory")
}

fn connect_error(url: &str, source: sqlx::Error) -> StoreError {
    match source {
        sqlx::Error::Configuration(e) => StoreError::BadUrl {
            url: redact_url(url),
            why: e.to_string(),
        },
        source => StoreError::Connect {
            url: redact_url(url),
            source,
        },
    }
}

/// `url` with the password of its user info and any `password=` query parameter replaced by
/// `***`, so errors and logs can name the database without leaking the credential.
pub(crate) fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{user}:***@{host}"),
            None => authority.to_owned(),
        },
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((key, _)) if key.eq_ignore_ascii_case("password") => {
                        format!("{key}=***")
                    }
                    _ => pair.to_owned(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_owned(),
    };
    format!("{scheme}://{authority}{tail}")
}

/// Map a unique-constraint violation to [`StoreError::Duplicate`] and a foreign-key violation
/// to [`StoreError::NotFound`]; other errors pass through.
pub(crate) fn constraint_error(
    error: sqlx::Error,
    duplicate: (&'static str, &str),
    missing: (&'static str, &str),
) -> StoreError {
    if let sqlx::Error::Database(db) = &error {
        if db.is_unique_violation() {
            return StoreError::Duplicate {
                what: duplicate.0,
                name: duplicate.1.to_owned(),
            };
        }
        if db.is_foreign_key_violation() {
            return StoreError::NotFound {
                what: missing.0,
                name: missing.1.to_owned(),
            };
        }
    }
    StoreError::Database(error)
}

/// Take the next id for `table` from `id_counters`. The UPDATE comes first in its transaction
/// so it takes the write lock at once: a row lock on PostgreSQL, the database lock on SQLite.
pub(crate) async fn next_id(
    conn: &mut AnyConnection,
    counter: &'static str,
) -> Result<i64, StoreError> {
    let (id,): (i64,) = sqlx::query_as(
        "UPDATE id_counters SET last_id = last_id + 1 WHERE name = $1 RETURNING last_id",
    )
    .bind(counter)
    .fetch_one(conn)
    .await?;
    Ok(id)
}

/// Refuse names that are empty, too long, padded, or hold control characters: they end up in
/// command lines, logs and the audit log.
pub(crate) fn check_name(what: &'static str, name: &str) -> Result<(), StoreError> {
    const MAX: usize = 100;
    let why = if name.is_empty() {
        "it is empty".to_owned()
    } else if name.chars().count() > MAX {
        format!("{} characters (expected 1..={MAX})", name.chars().count())
    } else if name.trim() != name {
        "leading or trailing whitespace".to_owned()
    } else if name.chars().any(char::is_control) {
        "control characters".to_owned()
    } else {
        return Ok(());
    };
    Err(StoreError::Invalid {
        what,
        why: format!("{name:?}: {why}"),
    })
}

/// A count from the database as u64 (counts are never negative).
pub(crate) fn to_count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_hides_passwords_and_keeps_the_rest() {
        assert_eq!(
            redact_url("postgres://bob:s3cret@db.example:5432/deskwire?sslmode=disable"),
            "postgres://bob:***@db.example:5432/deskwire?sslmode=disable"
        );
        assert_eq!(
            redact_url("postgres://bob@db/x?password=s3cret&application_name=b"),
            "postgres://bob@db/x?password=***&application_name=b"
        );
        assert_eq!(
            redact_url("sqlite://broker.db?mode=rwc"),
            "sqlite://broker.db?mode=rwc"
        );
        assert_eq!(redact_url("sqlite::memory:"), "sqlite::memory:");
        // A password holding '@' still disappears entirely.
        assert_eq!(
            redact_url("postgres://bob:p@ss@db/x"),
            "postgres://bob:***@db/x"
        );
    }

    #[test]
    fn only_sqlite_and_postgres_urls_are_accepted() {
        assert_eq!(backend_of("sqlite://x.db").unwrap(), Backend::Sqlite);
        assert_eq!(backend_of("sqlite::memory:").unwrap(), Backend::Sqlite);
        assert_eq!(backend_of("postgresql://a@b/c").unwrap(), Backend::Postgres);
        let e = backend_of("mysql://root:pw@db/x").unwrap_err().to_string();
        assert!(
            e.contains("\"mysql\"") && e.contains("sqlite://") && e.contains("postgres://"),
            "{e}"
        );
        assert!(!e.contains("pw"), "{e}");
        assert!(backend_of("broker.db").is_err());
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("name", "Acme Support").is_ok());
        for bad in ["", " padded", "tab\there", &"x".repeat(101)] {
            assert!(check_name("name", bad).is_err(), "{bad:?}");
        }
    }
}
