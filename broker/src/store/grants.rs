//! The broker's copy of unattended-access grants, as devices report them.

use super::audit::{self, AuditEvent, AuditRecord};
use super::{DeviceRefusal, Store, StoreError};

/// A grant as a device reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantReport {
    /// The grant's number on the device.
    pub grant: u32,
    /// The technician it was approved for.
    pub technician: String,
    /// [`deskwire_signal::grant::Grant`] as JSON.
    pub record: String,
    /// When the device sent it.
    pub reported_at: i64,
}

impl Store {
    /// Keep `report` for device `id` (whose key is registered now on first contact), unless
    /// a newer report of the same grant is already kept. `Ok(false)`: an older report,
    /// ignored.
    pub async fn report_grant(
        &self,
        id: &str,
        public_key: &[u8],
        report: &GrantReport,
        now: i64,
    ) -> Result<Result<bool, DeviceRefusal>, StoreError> {
        if let Err(refusal) = self.register_device(id, public_key, now).await? {
            return Ok(Err(refusal));
        }
        let written = sqlx::query(
            "INSERT INTO grants (device, grant_id, technician, record, reported_at) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (device, grant_id) DO UPDATE SET technician = $3, record = $4, \
             reported_at = $5 WHERE grants.reported_at <= $5",
        )
        .bind(id)
        .bind(i64::from(report.grant))
        .bind(&report.technician)
        .bind(&report.record)
        .bind(report.reported_at)
        .execute(self.pool())
        .await?;
        Ok(Ok(written.rows_affected() == 1))
    }

    /// Device `id`'s grant `grant`, as last reported.
    pub async fn grant(&self, id: &str, grant: u32) -> Result<Option<GrantReport>, StoreError> {
        let row: Option<(String, String, i64)> = sqlx::query_as(
            "SELECT technician, record, reported_at FROM grants WHERE device = $1 AND grant_id = $2",
        )
        .bind(id)
        .bind(i64::from(grant))
        .fetch_optional(self.pool())
        .await?;
        Ok(row.map(|(technician, record, reported_at)| GrantReport {
            grant,
            technician,
            record,
            reported_at,
        }))
    }

    /// Every kept grant (of `device` only, if given), by device then grant number.
    pub async fn grants(
        &self,
        device: Option<&str>,
    ) -> Result<Vec<(String, GrantReport)>, StoreError> {
        let rows: Vec<(String, i64, String, String, i64)> = sqlx::query_as(
            "SELECT device, grant_id, technician, record, reported_at FROM grants \
             WHERE $1 IS NULL OR device = $1 ORDER BY device, grant_id",
        )
        .bind(device)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .into_iter()
            .map(|(device, grant, technician, record, reported_at)| {
                let report = GrantReport {
                    grant: u32::try_from(grant).unwrap_or(u32::MAX),
                    technician,
                    record,
                    reported_at,
                };
                (device, report)
            })
            .collect())
    }

    /// Revoke the broker's copy of device `id`'s grant `grant` at `now`: unattended calls
    /// under it are refused here from now on, whatever the device's copy says (an
    /// administrator's revocation, or one the device could not report). Recorded in the
    /// audit log in the same transaction. `Ok(false)`: no such grant, or already revoked.
    pub async fn revoke_grant(&self, id: &str, grant: u32, now: i64) -> Result<bool, StoreError> {
        let mut tx = self.pool().begin().await?;
        let row: Option<(String, String)> = sqlx::query_as(
            "SELECT technician, record FROM grants WHERE device = $1 AND grant_id = $2",
        )
        .bind(id)
        .bind(i64::from(grant))
        .fetch_optional(&mut *tx)
        .await?;
        let Some((technician, record)) = row else {
            return Ok(false);
        };
        let Ok(mut kept) = serde_json::from_str::<deskwire_signal::grant::Grant>(&record) else {
            return Ok(false);
        };
        if kept.revoked_at().is_some() {
            return Ok(false);
        }
        kept.revoke(deskwire_signal::UnixMillis(u64::try_from(now).unwrap_or(0)));
        let record = serde_json::to_string(&kept).unwrap_or(record);
        // Stamped now: a device report older than the revocation no longer replaces it.
        sqlx::query(
            "UPDATE grants SET record = $3, reported_at = $4 WHERE device = $1 AND grant_id = $2",
        )
        .bind(id)
        .bind(i64::from(grant))
        .bind(&record)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let audit = AuditRecord::new(now, AuditEvent::GrantRevoked)
            .device(id)
            .detail(format!(
                "grant {grant} for {technician} revoked at the broker by an administrator"
            ));
        audit::append_in(&mut tx, &audit).await?;
        tx.commit().await?;
        Ok(true)
    }
}
