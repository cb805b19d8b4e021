//! The broker's copy of unattended-access grants, as devices report them.

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
}
