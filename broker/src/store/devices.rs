//! Devices (targets) by id and public key, trusted on first contact: the first key seen for
//! an id is the one it must keep presenting.

use sqlx::Row;

use super::{Store, StoreError};

const MAX_DEVICE_ID: usize = 128;
const MAX_PUBLIC_KEY: usize = 1024;

/// A registered device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// Its id, chosen by the device.
    pub id: String,
    /// The public key it registered with.
    pub public_key: Vec<u8>,
    /// First contact (Unix ms).
    pub first_seen: i64,
    /// Latest contact (Unix ms).
    pub last_seen: i64,
}

/// A device accepted by [`Store::register_device`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    /// The device as stored now.
    pub device: Device,
    /// True if this call registered it.
    pub first_contact: bool,
}

/// A LAN password as a device reported it.
#[derive(Clone, PartialEq, Eq)]
pub struct LanReport {
    /// The password, as the target shows it.
    pub password: String,
    /// When it rotates (Unix ms).
    pub rotates_at: i64,
    /// When the device reported it (Unix ms, the device's clock).
    pub reported_at: i64,
}

impl std::fmt::Debug for LanReport {
    // Debug output ends up in logs; the password must not.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LanReport")
            .field("password", &"***")
            .field("rotates_at", &self.rotates_at)
            .field("reported_at", &self.reported_at)
            .finish()
    }
}

/// Why a device was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceRefusal {
    /// The id is registered with another public key.
    #[error("device {id:?} is registered with a different public key")]
    KeyMismatch {
        /// The device id.
        id: String,
    },
}

impl Store {
    /// Register `id` with `public_key` on first contact, or confirm it on a later one
    /// (updating its last contact). A known id presenting another key is refused and the
    /// stored key is kept.
    pub async fn register_device(
        &self,
        id: &str,
        public_key: &[u8],
        now: i64,
    ) -> Result<Result<Registered, DeviceRefusal>, StoreError> {
        check_device(id, public_key)?;
        // Insert-if-absent, then confirm-if-same-key: each is one atomic statement, so two
        // brokers seeing a new device at once register one key and refuse the other.
        let inserted = sqlx::query(
            "INSERT INTO devices (id, public_key, first_seen, last_seen) VALUES ($1, $2, $3, $3) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(id)
        .bind(public_key)
        .bind(now)
        .execute(self.pool())
        .await?;
        let first_contact = inserted.rows_affected() == 1;
        if !first_contact {
            let confirmed = sqlx::query(
                "UPDATE devices SET last_seen = CASE WHEN last_seen > $3 THEN last_seen ELSE $3 END \
                 WHERE id = $1 AND public_key = $2",
            )
            .bind(id)
            .bind(public_key)
            .bind(now)
            .execute(self.pool())
            .await?;
            if confirmed.rows_affected() == 0 {
                tracing::warn!(device = id, "device presented a different public key");
                return Ok(Err(DeviceRefusal::KeyMismatch { id: id.to_owned() }));
            }
        } else {
            tracing::info!(device = id, "device registered");
        }
        match self.device(id).await? {
            Some(device) => Ok(Ok(Registered {
                device,
                first_contact,
            })),
            None => Err(StoreError::NotFound {
                what: "device",
                name: id.to_owned(),
            }),
        }
    }

    /// Keep `password` as device `id`'s current LAN password, unless a more recent report
    /// is already kept (a replayed or delayed report never moves it back). The
    /// device's key must already be registered (or is registered now, on first contact).
    /// `Ok(false)`: an older report, ignored.
    pub async fn report_lan_password(
        &self,
        id: &str,
        public_key: &[u8],
        report: &LanReport,
        now: i64,
    ) -> Result<Result<bool, DeviceRefusal>, StoreError> {
        if report.password.is_empty() || report.password.len() > 32 {
            return Err(StoreError::Invalid {
                what: "LAN password",
                why: format!("{} bytes (expected 1..=32)", report.password.len()),
            });
        }
        if let Err(refusal) = self.register_device(id, public_key, now).await? {
            return Ok(Err(refusal));
        }
        let updated = sqlx::query(
            "UPDATE devices SET lan_password = $2, lan_rotates_at = $3, lan_reported_at = $4 \
             WHERE id = $1 AND (lan_reported_at IS NULL OR lan_reported_at <= $4)",
        )
        .bind(id)
        .bind(&report.password)
        .bind(report.rotates_at)
        .bind(report.reported_at)
        .execute(self.pool())
        .await?;
        Ok(Ok(updated.rows_affected() == 1))
    }

    /// Device `id`'s last reported LAN password, if it ever reported one.
    pub async fn lan_password(&self, id: &str) -> Result<Option<LanReport>, StoreError> {
        let row: Option<(Option<String>, Option<i64>, Option<i64>)> = sqlx::query_as(
            "SELECT lan_password, lan_rotates_at, lan_reported_at FROM devices WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        Ok(match row {
            Some((Some(password), Some(rotates_at), Some(reported_at))) => Some(LanReport {
                password,
                rotates_at,
                reported_at,
            }),
            _ => None,
        })
    }

    /// The device with id `id`.
    pub async fn device(&self, id: &str) -> Result<Option<Device>, StoreError> {
        let row =
            sqlx::query("SELECT id, public_key, first_seen, last_seen FROM devices WHERE id = $1")
                .bind(id)
                .fetch_optional(self.pool())
                .await?;
        match row {
            Some(r) => Ok(Some(Device {
                id: r.try_get(0)?,
                public_key: r.try_get(1)?,
                first_seen: r.try_get(2)?,
                last_seen: r.try_get(3)?,
            })),
            None => Ok(None),
        }
    }
}

fn check_device(id: &str, public_key: &[u8]) -> Result<(), StoreError> {
    if id.is_empty() || id.len() > MAX_DEVICE_ID || id.chars().any(char::is_control) {
        return Err(StoreError::Invalid {
            what: "device id",
            why: format!("{id:?} (expected 1..={MAX_DEVICE_ID} printable bytes)"),
        });
    }
    if public_key.is_empty() || public_key.len() > MAX_PUBLIC_KEY {
        return Err(StoreError::Invalid {
            what: "public key",
            why: format!("{} bytes (expected 1..={MAX_PUBLIC_KEY})", public_key.len()),
        });
    }
    Ok(())
}
