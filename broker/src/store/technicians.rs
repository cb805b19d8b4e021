//! Technicians, their passwords and their API tokens, and authentication by either.

use std::fmt;

use sqlx::any::AnyRow;
use sqlx::Row;

use super::accounts::{CompanyId, Group, GroupId};
use super::audit::{self, AuditEvent, AuditRecord};
use super::secrets::{self, MAX_PASSWORD_BYTES};
use super::{check_name, constraint_error, next_id, Store, StoreError};

/// Names a technician.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TechnicianId(pub i64);

/// Names an API token (not secret; the token itself is).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TokenId(pub i64);

/// Someone who connects to targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Technician {
    /// Its id.
    pub id: TechnicianId,
    /// Its login name, unique across the broker.
    pub name: String,
    /// The group whose permissions and policy apply.
    pub group: GroupId,
    /// The group's company.
    pub company: CompanyId,
    /// That company's name.
    pub company_name: String,
}

/// An authenticated technician with what applies to them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Who.
    pub technician: Technician,
    /// Their group: permissions and policy.
    pub group: Group,
}

/// A token just created: the only time its text exists outside the caller.
pub struct IssuedToken {
    /// The token's id, for listing and revoking.
    pub id: TokenId,
    /// `dw_...`: show it once; only its hash is stored.
    pub token: String,
}

impl fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Debug output ends up in logs; the secret must not.
        f.debug_struct("IssuedToken")
            .field("id", &self.id)
            .field("token", &"dw_***")
            .finish()
    }
}

/// What is known about a token without its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    /// Its id.
    pub id: TokenId,
    /// Its owner.
    pub technician: TechnicianId,
    /// The lookup part of the token (`dw_<lookup>_...`), to recognise it.
    pub lookup: String,
    /// What it is for.
    pub label: String,
    /// When it was created (Unix ms).
    pub created_at: i64,
    /// When it was revoked, if it was.
    pub revoked_at: Option<i64>,
}

const TECHNICIAN_COLUMNS: &str = "t.id, t.name, t.group_id, g.company_id, c.name";
const TECHNICIAN_FROM: &str = "technicians t JOIN tech_groups g ON g.id = t.group_id \
                               JOIN companies c ON c.id = g.company_id";

impl Store {
    /// Create a technician in `group`, with a password if given (hashed with Argon2id).
    pub async fn create_technician(
        &self,
        group: GroupId,
        name: &str,
        password: Option<&str>,
        now: i64,
    ) -> Result<TechnicianId, StoreError> {
        check_name("technician name", name)?;
        let password_hash = match password {
            Some(p) => Some(hash_password(p).await?),
            None => None,
        };
        let mut tx = self.pool().begin().await?;
        let id = next_id(&mut tx, "technician").await?;
        sqlx::query(
            "INSERT INTO technicians (id, group_id, name, password_hash, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id)
        .bind(group.0)
        .bind(name)
        .bind(password_hash)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            constraint_error(e, ("technician", name), ("group id", &group.0.to_string()))
        })?;
        tx.commit().await?;
        tracing::info!(technician = name, id, "technician created");
        Ok(TechnicianId(id))
    }

    /// The technician called `name`.
    pub async fn technician_by_name(&self, name: &str) -> Result<Option<Technician>, StoreError> {
        let sql = format!("SELECT {TECHNICIAN_COLUMNS} FROM {TECHNICIAN_FROM} WHERE t.name = $1");
        let row = sqlx::query(&sql)
            .bind(name)
            .fetch_optional(self.pool())
            .await?;
        row.map(|r| technician_from(&r)).transpose()
    }

    /// The technician with id `id`.
    pub async fn technician(&self, id: TechnicianId) -> Result<Option<Technician>, StoreError> {
        let sql = format!("SELECT {TECHNICIAN_COLUMNS} FROM {TECHNICIAN_FROM} WHERE t.id = $1");
        let row = sqlx::query(&sql)
            .bind(id.0)
            .fetch_optional(self.pool())
            .await?;
        row.map(|r| technician_from(&r)).transpose()
    }

    /// Every technician of `group`, by name.
    pub async fn technicians(&self, group: GroupId) -> Result<Vec<Technician>, StoreError> {
        let sql = format!(
            "SELECT {TECHNICIAN_COLUMNS} FROM {TECHNICIAN_FROM} WHERE t.group_id = $1 ORDER BY t.name"
        );
        let rows = sqlx::query(&sql)
            .bind(group.0)
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(technician_from).collect()
    }

    /// The technician with their group's permissions and policy.
    pub async fn principal(&self, id: TechnicianId) -> Result<Option<Principal>, StoreError> {
        let Some(technician) = self.technician(id).await? else {
            return Ok(None);
        };
        // The foreign key keeps the group; were it gone anyway, no permissions apply.
        let Some(group) = self.group(technician.group).await? else {
            return Ok(None);
        };
        Ok(Some(Principal { technician, group }))
    }

    /// Set or replace a technician's password.
    pub async fn set_password(&self, id: TechnicianId, password: &str) -> Result<(), StoreError> {
        let hash = hash_password(password).await?;
        let done = sqlx::query("UPDATE technicians SET password_hash = $2 WHERE id = $1")
            .bind(id.0)
            .bind(hash)
            .execute(self.pool())
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound {
                what: "technician with id",
                name: id.0.to_string(),
            });
        }
        Ok(())
    }

    /// The technician `name` if `password` is theirs; `None` for an unknown name, a wrong
    /// password, or a technician without a password (the three take the same time).
    pub async fn verify_password(
        &self,
        name: &str,
        password: &str,
    ) -> Result<Option<Principal>, StoreError> {
        let row: Option<(i64, Option<String>)> =
            sqlx::query_as("SELECT id, password_hash FROM technicians WHERE name = $1")
                .bind(name)
                .fetch_optional(self.pool())
                .await?;
        let secret = password.as_bytes().to_vec();
        match row {
            Some((id, Some(phc))) => {
                if secrets::verify(secret, phc).await? {
                    return self.principal(TechnicianId(id)).await;
                }
            }
            _ => secrets::verify_nothing(secret).await?,
        }
        Ok(None)
    }

    /// Create an API token for `technician`. The returned text is the only copy: the store
    /// keeps a lookup id and an Argon2id hash of the secret.
    pub async fn create_token(
        &self,
        technician: TechnicianId,
        label: &str,
        now: i64,
    ) -> Result<IssuedToken, StoreError> {
        check_name("token label", label)?;
        let new = secrets::new_token().await?;
        let mut tx = self.pool().begin().await?;
        let id = next_id(&mut tx, "api_token").await?;
        sqlx::query(
            "INSERT INTO api_tokens (id, technician_id, lookup, secret_hash, label, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(id)
        .bind(technician.0)
        .bind(&new.lookup)
        .bind(&new.secret_hash)
        .bind(label)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            constraint_error(
                e,
                ("token lookup", &new.lookup),
                ("technician with id", &technician.0.to_string()),
            )
        })?;
        let record = AuditRecord::new(now, AuditEvent::TokenCreated)
            .technician(technician)
            .detail(format!("token {id} dw_{}_... ({label})", new.lookup));
        audit::append_in(&mut tx, &record).await?;
        tx.commit().await?;
        tracing::info!(technician = technician.0, token = id, "API token created");
        Ok(IssuedToken {
            id: TokenId(id),
            token: new.token,
        })
    }

    /// Revoke a token, recording `token_revoked` in the audit log in the same transaction;
    /// false if it does not exist or was already revoked.
    pub async fn revoke_token(&self, id: TokenId, now: i64) -> Result<bool, StoreError> {
        let mut tx = self.pool().begin().await?;
        let owner: Option<(i64,)> = sqlx::query_as(
            "UPDATE api_tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL \
             RETURNING technician_id",
        )
        .bind(id.0)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((technician,)) = owner else {
            return Ok(false);
        };
        let record = AuditRecord::new(now, AuditEvent::TokenRevoked)
            .technician(TechnicianId(technician))
            .detail(format!("token {}", id.0));
        audit::append_in(&mut tx, &record).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The tokens of `technician`, oldest first.
    pub async fn tokens(&self, technician: TechnicianId) -> Result<Vec<TokenInfo>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, technician_id, lookup, label, created_at, revoked_at FROM api_tokens \
             WHERE technician_id = $1 ORDER BY id",
        )
        .bind(technician.0)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(TokenInfo {
                    id: TokenId(r.try_get(0)?),
                    technician: TechnicianId(r.try_get(1)?),
                    lookup: r.try_get(2)?,
                    label: r.try_get(3)?,
                    created_at: r.try_get(4)?,
                    revoked_at: r.try_get(5)?,
                })
            })
            .collect()
    }

    /// The technician a `dw_...` token belongs to, with their group's permissions and policy;
    /// `None` for a malformed, unknown, revoked or wrong token. One indexed lookup and one
    /// Argon2id verification, whatever the number of tokens.
    pub async fn authenticate_token(&self, token: &str) -> Result<Option<Principal>, StoreError> {
        let Some((lookup, secret)) = secrets::parse_token(token) else {
            tracing::debug!("refusing a token that is not of the dw_ form");
            return Ok(None);
        };
        let row: Option<(i64, String)> = sqlx::query_as(
            "SELECT technician_id, secret_hash FROM api_tokens \
             WHERE lookup = $1 AND revoked_at IS NULL",
        )
        .bind(lookup)
        .fetch_optional(self.pool())
        .await?;
        // No dummy verification for an unknown lookup: unlike a login name, a lookup id
        // reveals nothing useful, and skipping the hash keeps garbage tokens cheap.
        let Some((technician, phc)) = row else {
            return Ok(None);
        };
        if !secrets::verify(secret.as_bytes().to_vec(), phc).await? {
            tracing::debug!(lookup, "token secret does not match");
            return Ok(None);
        }
        self.principal(TechnicianId(technician)).await
    }
}

async fn hash_password(password: &str) -> Result<String, StoreError> {
    if password.is_empty() || password.len() > MAX_PASSWORD_BYTES {
        return Err(StoreError::Invalid {
            what: "password",
            why: format!(
                "{} bytes (expected 1..={MAX_PASSWORD_BYTES})",
                password.len()
            ),
        });
    }
    secrets::hash(password.as_bytes().to_vec()).await
}

fn technician_from(row: &AnyRow) -> Result<Technician, StoreError> {
    Ok(Technician {
        id: TechnicianId(row.try_get(0)?),
        name: row.try_get(1)?,
        group: GroupId(row.try_get(2)?),
        company: CompanyId(row.try_get(3)?),
        company_name: row.try_get(4)?,
    })
}
