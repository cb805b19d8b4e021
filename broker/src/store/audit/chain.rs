//! The hash chain: the canonical encoding of a record, its hash, and verification.

use std::fmt;

use sha2::{Digest, Sha256};

use super::AuditEntry;
use crate::store::{Store, StoreError};

/// The `prev_hash` of the first record.
pub(super) const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// Distinguishes this encoding from any later one.
const DOMAIN: &[u8] = b"deskwire-audit-v1\0";
/// Records read per query while verifying, to bound memory on a long log.
const PAGE: i64 = 1000;

/// Where and why the chain is broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit record {first_bad_id}: {why}")]
pub struct AuditBreak {
    /// The first record that is not intact (or is missing).
    pub first_bad_id: i64,
    /// What is wrong with it.
    pub why: BreakReason,
}

/// What is wrong with a record.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BreakReason {
    /// It is gone: the next record present is `next`, or none.
    Missing {
        /// The next id present.
        next: Option<i64>,
    },
    /// Its contents do not produce its hash: it was edited (or moved to another id).
    Edited,
    /// Its `prev_hash` is not the previous record's hash: a record before it was replaced.
    Relinked,
    /// It lies past the chain head, which was at `head`: it was added outside the store.
    BeyondHead {
        /// The last id the head accounts for.
        head: i64,
    },
    /// The chain head's hash is not this (last) record's.
    HeadMismatch,
}

impl fmt::Display for BreakReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing { next: Some(next) } => {
                write!(f, "missing (deleted); the next record present is {next}")
            }
            Self::Missing { next: None } => {
                f.write_str("missing (deleted); the log ends before the chain head")
            }
            Self::Edited => f.write_str("contents do not match the stored hash (edited or moved)"),
            Self::Relinked => f.write_str("prev_hash does not match the previous record's hash"),
            Self::BeyondHead { head } => {
                write!(f, "lies beyond the chain head at record {head} (inserted)")
            }
            Self::HeadMismatch => f.write_str("the chain head's hash does not match this record"),
        }
    }
}

impl Store {
    /// Check the whole chain: `Ok(n)` with the number of intact records, or the first break.
    /// Runs beside appenders: records appended while it runs are checked too.
    pub async fn verify_audit(&self) -> Result<Result<u64, AuditBreak>, StoreError> {
        let mut cursor = 0i64;
        let mut prev = GENESIS.to_owned();
        // The head as read before the latest scan: every record up to it had committed
        // before that read, so a scan that stops short of it found a deletion.
        let mut head_before_scan: Option<i64> = None;
        loop {
            loop {
                let rows = self.audit_page(cursor, PAGE).await?;
                if rows.is_empty() {
                    break;
                }
                for entry in rows {
                    if let Err(why) = check(&entry, cursor, &prev) {
                        let first_bad_id = match why {
                            BreakReason::Missing { .. } => cursor + 1,
                            _ => entry.id.0,
                        };
                        return Ok(Err(AuditBreak { first_bad_id, why }));
                    }
                    cursor = entry.id.0;
                    prev = entry.hash;
                }
            }
            if let Some(head) = head_before_scan {
                if cursor < head {
                    let why = BreakReason::Missing { next: None };
                    return Ok(Err(AuditBreak {
                        first_bad_id: cursor + 1,
                        why,
                    }));
                }
            }
            let (head, head_hash): (i64, String) =
                sqlx::query_as("SELECT last_id, last_hash FROM audit_head WHERE id = 1")
                    .fetch_one(self.pool())
                    .await?;
            if head < cursor {
                let why = BreakReason::BeyondHead { head };
                return Ok(Err(AuditBreak {
                    first_bad_id: head + 1,
                    why,
                }));
            }
            if head == cursor {
                if head_hash != prev {
                    let why = BreakReason::HeadMismatch;
                    return Ok(Err(AuditBreak {
                        first_bad_id: cursor,
                        why,
                    }));
                }
                return Ok(Ok(crate::store::to_count(cursor)));
            }
            // Appended while we scanned, or the newest records were deleted: scan again.
            head_before_scan = Some(head);
        }
    }
}

/// The hashed fields of one record, as stored.
pub(super) struct Fields<'a> {
    pub(super) at: i64,
    pub(super) event: &'a str,
    pub(super) technician: Option<i64>,
    pub(super) device: Option<&'a str>,
    pub(super) source: Option<&'a str>,
    pub(super) session: Option<&'a str>,
    pub(super) detail: &'a str,
}

/// Whether `entry` follows a chain that is intact through `cursor`, whose last hash is `prev`.
fn check(entry: &AuditEntry, cursor: i64, prev: &str) -> Result<(), BreakReason> {
    if entry.id.0 != cursor + 1 {
        return Err(BreakReason::Missing {
            next: Some(entry.id.0),
        });
    }
    if entry.prev_hash != prev {
        return Err(BreakReason::Relinked);
    }
    let fields = Fields {
        at: entry.at,
        event: &entry.event,
        technician: entry.technician.map(|t| t.0),
        device: entry.device.as_deref(),
        source: entry.source.as_deref(),
        session: entry.session.as_deref(),
        detail: &entry.detail,
    };
    if chain_hash(&entry.prev_hash, entry.id.0, &fields) != entry.hash {
        return Err(BreakReason::Edited);
    }
    Ok(())
}

/// Hex SHA-256 of `prev_hash || canonical(id, fields)`. The previous hash is taken as its
/// stored hex text, so a malformed stored value simply fails to match.
pub(super) fn chain_hash(prev_hash: &str, id: i64, fields: &Fields<'_>) -> String {
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    h.update(canonical(id, fields));
    hex::encode(h.finalize())
}

/// Fixed order, fixed-width integers, every string length-prefixed and every optional field
/// tagged present/absent: the encoding is injective.
fn canonical(id: i64, f: &Fields<'_>) -> Vec<u8> {
    fn text(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&(s.len() as u64).to_be_bytes());
        out.extend_from_slice(s.as_bytes());
    }
    fn optional_text(out: &mut Vec<u8>, s: Option<&str>) {
        match s {
            Some(s) => {
                out.push(1);
                text(out, s);
            }
            None => out.push(0),
        }
    }
    let mut out = Vec::with_capacity(128 + f.detail.len());
    out.extend_from_slice(DOMAIN);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&f.at.to_be_bytes());
    text(&mut out, f.event);
    match f.technician {
        Some(t) => {
            out.push(1);
            out.extend_from_slice(&t.to_be_bytes());
        }
        None => out.push(0),
    }
    optional_text(&mut out, f.device);
    optional_text(&mut out, f.source);
    optional_text(&mut out, f.session);
    text(&mut out, f.detail);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{AuditId, TechnicianId};

    fn fields(detail: &str) -> Fields<'_> {
        Fields {
            at: 5,
            event: "ended",
            technician: Some(7),
            device: None,
            source: Some("127.0.0.1:9"),
            session: Some("123456"),
            detail,
        }
    }

    #[test]
    fn the_encoding_separates_fields_and_presence() {
        let a = Fields {
            device: Some("ab"),
            source: Some("c"),
            ..fields("")
        };
        let b = Fields {
            device: Some("a"),
            source: Some("bc"),
            ..fields("")
        };
        assert_ne!(canonical(1, &a), canonical(1, &b));
        let none = Fields {
            device: None,
            ..fields("")
        };
        let empty = Fields {
            device: Some(""),
            ..fields("")
        };
        assert_ne!(canonical(1, &none), canonical(1, &empty));
        assert_ne!(canonical(1, &fields("x")), canonical(2, &fields("x")));
    }

    #[test]
    fn the_hash_depends_on_the_previous_one_and_every_field() {
        let h = chain_hash(GENESIS, 1, &fields("x"));
        assert_eq!(h.len(), 64);
        assert_eq!(h, chain_hash(GENESIS, 1, &fields("x")));
        assert_ne!(h, chain_hash(&h, 1, &fields("x")));
        assert_ne!(h, chain_hash(GENESIS, 1, &fields("y")));
    }

    #[test]
    fn check_names_what_is_wrong() {
        let f = fields("x");
        let hash = chain_hash(GENESIS, 1, &f);
        let entry = AuditEntry {
            id: AuditId(1),
            at: f.at,
            event: f.event.into(),
            technician: Some(TechnicianId(7)),
            device: None,
            source: Some("127.0.0.1:9".into()),
            session: Some("123456".into()),
            detail: "x".into(),
            prev_hash: GENESIS.into(),
            hash,
        };
        assert_eq!(check(&entry, 0, GENESIS), Ok(()));
        let edited = AuditEntry {
            detail: "y".into(),
            ..entry.clone()
        };
        assert_eq!(check(&edited, 0, GENESIS), Err(BreakReason::Edited));
        assert_eq!(
            check(&entry, 0, &"1".repeat(64)),
            Err(BreakReason::Relinked)
        );
        let later = AuditEntry {
            id: AuditId(3),
            ..entry.clone()
        };
        assert_eq!(
            check(&later, 1, GENESIS),
            Err(BreakReason::Missing { next: Some(3) })
        );
    }
}
