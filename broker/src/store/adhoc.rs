//! The ad-hoc sessions' state, kept as one snapshot the switchboard writes after each
//! change (through the ordered store queue, so the last write is the newest state).

use super::{Store, StoreError};

/// The saved ad-hoc state: the book's JSON and the host-token digests' JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdhocSnapshot {
    /// [`deskwire_signal::adhoc::AdhocBook`] as JSON.
    pub book: String,
    /// Session id to hex SHA-256 of its host's re-attach token, as JSON.
    pub host_tokens: String,
}

impl Store {
    /// Replace the saved ad-hoc state.
    pub async fn save_adhoc(&self, snapshot: &AdhocSnapshot, now: i64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO adhoc_state (id, book, host_tokens, saved_at) VALUES (1, $1, $2, $3) \
             ON CONFLICT (id) DO UPDATE SET book = $1, host_tokens = $2, saved_at = $3",
        )
        .bind(&snapshot.book)
        .bind(&snapshot.host_tokens)
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The saved ad-hoc state, if any was ever saved.
    pub async fn load_adhoc(&self) -> Result<Option<AdhocSnapshot>, StoreError> {
        let row: Option<(String, String)> =
            sqlx::query_as("SELECT book, host_tokens FROM adhoc_state WHERE id = 1")
                .fetch_optional(self.pool())
                .await?;
        Ok(row.map(|(book, host_tokens)| AdhocSnapshot { book, host_tokens }))
    }
}
