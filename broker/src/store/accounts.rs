//! Companies and their groups: what a group's technicians may do (permissions) and how a
//! target accepts them (policy). Technicians and their credentials are in `technicians.rs`.

use std::fmt;
use std::str::FromStr;

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::audit::{self, AuditEvent, AuditRecord};
use super::{check_name, constraint_error, next_id, Store, StoreError};

/// Names a company.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CompanyId(pub i64);

/// Names a group of technicians.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupId(pub i64);

/// A value that is not one of the names a setting accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} {value:?} (expected {expected})")]
pub struct ParseNameError {
    kind: &'static str,
    value: String,
    expected: &'static str,
}

/// Something a group's technicians may do in a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Permission {
    /// Send keyboard and mouse input.
    Control,
    /// Watch the screen (the least a session grants).
    ViewOnly,
    /// Exchange clipboard contents.
    Clipboard,
    /// Send and receive files.
    FileTransfer,
    /// Connect without anyone at the target accepting, under a grant.
    Unattended,
    /// Connect directly on the local network, without the broker.
    Lan,
}

pub(crate) fn parse_error(
    kind: &'static str,
    value: &str,
    expected: &'static str,
) -> ParseNameError {
    ParseNameError {
        kind,
        value: value.to_owned(),
        expected,
    }
}

const PERMISSION_NAMES: &str = "control, view_only, clipboard, file_transfer, unattended, lan";

impl Permission {
    /// Every permission, in a fixed order.
    pub const ALL: [Permission; 6] = [
        Self::Control,
        Self::ViewOnly,
        Self::Clipboard,
        Self::FileTransfer,
        Self::Unattended,
        Self::Lan,
    ];

    /// The name stored in the database and used on command lines.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Control => "control",
            Self::ViewOnly => "view_only",
            Self::Clipboard => "clipboard",
            Self::FileTransfer => "file_transfer",
            Self::Unattended => "unattended",
            Self::Lan => "lan",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl FromStr for Permission {
    type Err = ParseNameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| parse_error("permission", s, PERMISSION_NAMES))
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of [`Permission`]s. Parses from and prints as a comma-separated list (`none` for
/// the empty set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Permissions(u8);

impl Permissions {
    /// The empty set.
    pub const NONE: Permissions = Permissions(0);

    /// This set plus `p`.
    pub fn with(self, p: Permission) -> Self {
        Self(self.0 | p.bit())
    }

    /// Whether `p` is in the set.
    pub fn contains(self, p: Permission) -> bool {
        self.0 & p.bit() != 0
    }

    /// The permissions in the set, in [`Permission::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = Permission> {
        Permission::ALL
            .into_iter()
            .filter(move |p| self.contains(*p))
    }
}

impl FromIterator<Permission> for Permissions {
    fn from_iter<I: IntoIterator<Item = Permission>>(iter: I) -> Self {
        iter.into_iter().fold(Self::NONE, Self::with)
    }
}

impl FromStr for Permissions {
    type Err = ParseNameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim().is_empty() || s.trim() == "none" {
            return Ok(Self::NONE);
        }
        s.split(',').map(|p| p.trim().parse()).collect()
    }
}

impl fmt::Display for Permissions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            return f.write_str("none");
        }
        let names: Vec<&str> = self.iter().map(Permission::as_str).collect();
        f.write_str(&names.join(","))
    }
}

/// How a target accepts an incoming session from a group's technicians.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Acceptance {
    /// The session starts by itself; the user may reject it during the auto-reject window.
    Auto,
    /// The user must accept; no answer within the request timeout refuses.
    #[default]
    Request,
    /// Sessions from this group are refused.
    Deny,
}

impl Acceptance {
    /// The name stored in the database and used on command lines.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Request => "request",
            Self::Deny => "deny",
        }
    }
}

impl FromStr for Acceptance {
    type Err = ParseNameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "request" => Ok(Self::Request),
            "deny" => Ok(Self::Deny),
            _ => Err(parse_error("acceptance mode", s, "auto, request, deny")),
        }
    }
}

impl fmt::Display for Acceptance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A group's session policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// How the target accepts.
    pub acceptance: Acceptance,
    /// Under [`Acceptance::Auto`], seconds the user has to reject before the session starts.
    pub auto_reject_secs: u32,
    /// Under [`Acceptance::Request`], seconds to wait for the user's answer.
    pub request_timeout_secs: u32,
    /// Sessions one technician of the group may hold at once; `None` for no cap.
    pub max_sessions: Option<u32>,
    /// Unattended access with the customer's credentials may be chosen; without it, only
    /// the target's admin credentials at each connection.
    pub customer_credentials: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            acceptance: Acceptance::Request,
            auto_reject_secs: 30,
            request_timeout_secs: 60,
            max_sessions: None,
            customer_credentials: true,
        }
    }
}

impl Policy {
    /// Accepted ranges; the messages name them.
    pub fn validate(&self) -> Result<(), StoreError> {
        let invalid = |what, why: String| Err(StoreError::Invalid { what, why });
        if !(1..=600).contains(&self.auto_reject_secs) {
            return invalid(
                "auto-reject window",
                format!("{} s (expected 1..=600)", self.auto_reject_secs),
            );
        }
        if !(5..=3600).contains(&self.request_timeout_secs) {
            return invalid(
                "request timeout",
                format!("{} s (expected 5..=3600)", self.request_timeout_secs),
            );
        }
        if let Some(max) = self.max_sessions {
            if !(1..=1000).contains(&max) {
                return invalid("max sessions", format!("{max} (expected 1..=1000)"));
            }
        }
        Ok(())
    }
}

/// A customer organisation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Company {
    /// Its id.
    pub id: CompanyId,
    /// Its unique name.
    pub name: String,
}

/// Technicians of one company who share permissions and a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// Its id.
    pub id: GroupId,
    /// The company it belongs to.
    pub company: CompanyId,
    /// Its name, unique within the company.
    pub name: String,
    /// What its technicians may do.
    pub permissions: Permissions,
    /// How targets accept its technicians.
    pub policy: Policy,
}

const GROUP_COLUMNS: &str = "g.id, g.company_id, g.name, g.acceptance, g.auto_reject_secs, \
     g.request_timeout_secs, g.max_sessions, g.customer_credentials";

impl Store {
    /// Create a company.
    pub async fn create_company(&self, name: &str, now: i64) -> Result<CompanyId, StoreError> {
        check_name("company name", name)?;
        let mut tx = self.pool().begin().await?;
        let id = next_id(&mut tx, "company").await?;
        sqlx::query("INSERT INTO companies (id, name, created_at) VALUES ($1, $2, $3)")
            .bind(id)
            .bind(name)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(|e| constraint_error(e, ("company", name), ("company", name)))?;
        tx.commit().await?;
        tracing::info!(company = name, id, "company created");
        Ok(CompanyId(id))
    }

    /// The company called `name`.
    pub async fn company_by_name(&self, name: &str) -> Result<Option<Company>, StoreError> {
        let row = sqlx::query("SELECT id, name FROM companies WHERE name = $1")
            .bind(name)
            .fetch_optional(self.pool())
            .await?;
        row.map(|r| company_from(&r)).transpose()
    }

    /// Every company, by name.
    pub async fn companies(&self) -> Result<Vec<Company>, StoreError> {
        let rows = sqlx::query("SELECT id, name FROM companies ORDER BY name")
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(company_from).collect()
    }

    /// Create a group in `company`.
    pub async fn create_group(
        &self,
        company: CompanyId,
        name: &str,
        permissions: Permissions,
        policy: &Policy,
        now: i64,
    ) -> Result<GroupId, StoreError> {
        check_name("group name", name)?;
        policy.validate()?;
        let mut tx = self.pool().begin().await?;
        let id = next_id(&mut tx, "tech_group").await?;
        sqlx::query(
            "INSERT INTO tech_groups (id, company_id, name, acceptance, auto_reject_secs, \
             request_timeout_secs, max_sessions, created_at, customer_credentials) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(id)
        .bind(company.0)
        .bind(name)
        .bind(policy.acceptance.as_str())
        .bind(i64::from(policy.auto_reject_secs))
        .bind(i64::from(policy.request_timeout_secs))
        .bind(policy.max_sessions.map(i64::from))
        .bind(now)
        .bind(i64::from(policy.customer_credentials))
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            constraint_error(e, ("group", name), ("company id", &company.0.to_string()))
        })?;
        write_permissions(&mut tx, GroupId(id), permissions).await?;
        tx.commit().await?;
        tracing::info!(group = name, id, %permissions, "group created");
        Ok(GroupId(id))
    }

    /// The group called `name` in `company`.
    pub async fn group_by_name(
        &self,
        company: CompanyId,
        name: &str,
    ) -> Result<Option<Group>, StoreError> {
        let sql = format!(
            "SELECT {GROUP_COLUMNS} FROM tech_groups g WHERE g.company_id = $1 AND g.name = $2"
        );
        let row = sqlx::query(&sql)
            .bind(company.0)
            .bind(name)
            .fetch_optional(self.pool())
            .await?;
        match row {
            Some(row) => Ok(Some(self.group_from(&row).await?)),
            None => Ok(None),
        }
    }

    /// The group with id `id`.
    pub async fn group(&self, id: GroupId) -> Result<Option<Group>, StoreError> {
        let sql = format!("SELECT {GROUP_COLUMNS} FROM tech_groups g WHERE g.id = $1");
        let row = sqlx::query(&sql)
            .bind(id.0)
            .fetch_optional(self.pool())
            .await?;
        match row {
            Some(row) => Ok(Some(self.group_from(&row).await?)),
            None => Ok(None),
        }
    }

    /// Every group of `company`, by name.
    pub async fn groups(&self, company: CompanyId) -> Result<Vec<Group>, StoreError> {
        let sql = format!(
            "SELECT {GROUP_COLUMNS} FROM tech_groups g WHERE g.company_id = $1 ORDER BY g.name"
        );
        let rows = sqlx::query(&sql)
            .bind(company.0)
            .fetch_all(self.pool())
            .await?;
        let mut groups = Vec::with_capacity(rows.len());
        for row in &rows {
            groups.push(self.group_from(row).await?);
        }
        Ok(groups)
    }

    /// Replace a group's permissions, recording `permission_changed` in the audit log in the
    /// same transaction (a change is never made without its record, nor recorded without
    /// being made). `actor` is the technician who made the change, if one did.
    pub async fn set_group_permissions(
        &self,
        group: GroupId,
        permissions: Permissions,
        actor: Option<super::TechnicianId>,
        now: i64,
    ) -> Result<(), StoreError> {
        let Some(before) = self.group(group).await? else {
            return Err(not_found_group(group));
        };
        let mut tx = self.pool().begin().await?;
        // The DELETE takes the write lock before the audit append reads the chain head.
        sqlx::query("DELETE FROM group_permissions WHERE group_id = $1")
            .bind(group.0)
            .execute(&mut *tx)
            .await?;
        write_permissions(&mut tx, group, permissions).await?;
        let record = AuditRecord::new(now, AuditEvent::PermissionChanged)
            .maybe_technician(actor)
            .detail(format!(
                "group {} ({}): permissions {} -> {permissions}",
                before.name, group.0, before.permissions
            ));
        audit::append_in(&mut tx, &record).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Replace a group's policy, recording `policy_changed` in the audit log in the same
    /// transaction.
    pub async fn set_group_policy(
        &self,
        group: GroupId,
        policy: &Policy,
        actor: Option<super::TechnicianId>,
        now: i64,
    ) -> Result<(), StoreError> {
        policy.validate()?;
        let mut tx = self.pool().begin().await?;
        let updated = sqlx::query(
            "UPDATE tech_groups SET acceptance = $2, auto_reject_secs = $3, \
             request_timeout_secs = $4, max_sessions = $5, customer_credentials = $6 \
             WHERE id = $1",
        )
        .bind(group.0)
        .bind(policy.acceptance.as_str())
        .bind(i64::from(policy.auto_reject_secs))
        .bind(i64::from(policy.request_timeout_secs))
        .bind(policy.max_sessions.map(i64::from))
        .bind(i64::from(policy.customer_credentials))
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            return Err(not_found_group(group));
        }
        let max = policy
            .max_sessions
            .map_or_else(|| "unlimited".to_owned(), |m| m.to_string());
        let record = AuditRecord::new(now, AuditEvent::PolicyChanged)
            .maybe_technician(actor)
            .detail(format!(
                "group {}: acceptance {}, auto-reject {} s, request timeout {} s, max sessions {max}, \
                 customer credentials {}",
                group.0, policy.acceptance, policy.auto_reject_secs, policy.request_timeout_secs,
                if policy.customer_credentials { "allowed" } else { "not allowed" }
            ));
        audit::append_in(&mut tx, &record).await?;
        tx.commit().await?;
        Ok(())
    }

    /// A group from a row of [`GROUP_COLUMNS`], with its permissions.
    async fn group_from(&self, row: &AnyRow) -> Result<Group, StoreError> {
        let id = GroupId(row.try_get(0)?);
        let acceptance: String = row.try_get(3)?;
        let policy = Policy {
            acceptance: acceptance
                .parse()
                .map_err(|e: ParseNameError| StoreError::Corrupt(e.to_string()))?,
            auto_reject_secs: to_u32(row.try_get(4)?)?,
            request_timeout_secs: to_u32(row.try_get(5)?)?,
            max_sessions: row.try_get::<Option<i64>, _>(6)?.map(to_u32).transpose()?,
            customer_credentials: row.try_get::<i64, _>(7)? != 0,
        };
        Ok(Group {
            id,
            company: CompanyId(row.try_get(1)?),
            name: row.try_get(2)?,
            permissions: self.permissions_of(id).await?,
            policy,
        })
    }

    async fn permissions_of(&self, group: GroupId) -> Result<Permissions, StoreError> {
        let names: Vec<(String,)> =
            sqlx::query_as("SELECT permission FROM group_permissions WHERE group_id = $1")
                .bind(group.0)
                .fetch_all(self.pool())
                .await?;
        let mut permissions = Permissions::NONE;
        for (name,) in names {
            match name.parse() {
                Ok(p) => permissions = permissions.with(p),
                // Written by a newer broker: not granting what we cannot enforce is safe.
                Err(e) => tracing::warn!(group = group.0, "ignoring permission: {e}"),
            }
        }
        Ok(permissions)
    }
}

async fn write_permissions(
    conn: &mut AnyConnection,
    group: GroupId,
    permissions: Permissions,
) -> Result<(), StoreError> {
    for p in permissions.iter() {
        sqlx::query("INSERT INTO group_permissions (group_id, permission) VALUES ($1, $2)")
            .bind(group.0)
            .bind(p.as_str())
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

fn company_from(row: &AnyRow) -> Result<Company, StoreError> {
    Ok(Company {
        id: CompanyId(row.try_get(0)?),
        name: row.try_get(1)?,
    })
}

fn not_found_group(group: GroupId) -> StoreError {
    StoreError::NotFound {
        what: "group with id",
        name: group.0.to_string(),
    }
}

fn to_u32(n: i64) -> Result<u32, StoreError> {
    u32::try_from(n).map_err(|_| StoreError::Corrupt(format!("{n} is not a valid setting")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permissions_round_trip_through_text() {
        let p: Permissions = "control, clipboard,lan".parse().unwrap();
        assert!(p.contains(Permission::Control) && p.contains(Permission::Lan));
        assert!(!p.contains(Permission::Unattended));
        assert_eq!(p.to_string(), "control,clipboard,lan");
        assert_eq!(p.to_string().parse::<Permissions>().unwrap(), p);
        assert_eq!("none".parse::<Permissions>().unwrap(), Permissions::NONE);
        assert_eq!(Permissions::NONE.to_string(), "none");
        let e = "control,root"
            .parse::<Permissions>()
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"root\"") && e.contains("file_transfer"), "{e}");
    }

    #[test]
    fn policy_ranges_are_named() {
        assert!(Policy::default().validate().is_ok());
        let e = Policy {
            auto_reject_secs: 0,
            ..Policy::default()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(e.contains("expected 1..=600"), "{e}");
        let e = Policy {
            max_sessions: Some(0),
            ..Policy::default()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(e.contains("expected 1..=1000"), "{e}");
        assert_eq!("deny".parse::<Acceptance>().unwrap(), Acceptance::Deny);
        assert!("maybe".parse::<Acceptance>().is_err());
    }
}
