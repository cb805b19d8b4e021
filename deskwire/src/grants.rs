//! The target's own copy of the unattended-access grants its user approved, in a JSON file
//! the agent owns (readable by its user only). The target checks an unattended connection
//! against this copy at its own clock, never on the broker's word alone; its user (or admin)
//! lists and revokes grants here.

use std::path::{Path, PathBuf};

use deskwire_signal::grant::Grant;
use deskwire_signal::UnixMillis;

use crate::SessionError;

/// Why the grants file, a grant ticket or a grant report failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GrantsError {
    /// The file exists but cannot be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The grants file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file cannot be written.
    #[error("cannot write {}", path.display())]
    Write {
        /// The grants file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file, or a grant in it, is not what this program wrote.
    #[error("{} is not a valid grants file", path.display())]
    Malformed {
        /// The grants file.
        path: PathBuf,
        /// Why, when the JSON parser said.
        #[source]
        source: Option<serde_json::Error>,
    },
    /// A grant ticket (from the target, or typed in) is not one.
    #[error("not a valid grant ticket: {0}")]
    BadTicket(&'static str),
    /// A grant ticket's JSON does not parse.
    #[error("not a grant ticket")]
    TicketJson(#[source] serde_json::Error),
    /// The broker refused the report of a grant; its sentence says why.
    #[error("the broker refused the report of grant {id}: {message}")]
    ReportRefused {
        /// The grant's number.
        id: u32,
        /// The broker's sentence.
        message: String,
    },
}

/// One grant as the target keeps it.
#[derive(Clone, PartialEq, Eq)]
pub struct GrantEntry {
    /// Its number on this computer.
    pub id: u32,
    /// Who asked for it, when the broker named them.
    pub technician: Option<String>,
    /// The grant.
    pub grant: Grant,
    /// The secret the technician connects with (the PAKE input), made at approval.
    pub secret: Option<[u8; 16]>,
    /// The broker it was reported to: a revocation is reported there too.
    pub broker: Option<String>,
}

/// Tell `broker` about grant `entry` as it stands now (approved, or revoked), signed with the
/// device key at `device_key`: the broker then checks its window at its own clock before it
/// calls this computer's agent ([`crate::standby`]). Blocks up to about `timeout`.
pub fn report_to_broker(
    broker: &str,
    device_key: &Path,
    entry: &GrantEntry,
    timeout: std::time::Duration,
) -> Result<(), SessionError> {
    let key = crate::device::load_or_create(device_key)?;
    // A grant is plain data: serialising it cannot fail.
    let record = serde_json::to_string(&entry.grant).unwrap_or_default();
    let now = UnixMillis::now();
    let report = deskwire_signal::ClientMessage::ReportGrant {
        device: key.prove_grant_report(entry.id, &record, now),
        grant: entry.id,
        technician: entry.technician.clone().unwrap_or_default(),
        record,
        reported_at: now,
    };
    match crate::signalling::ask_broker(broker, &report, timeout)? {
        deskwire_signal::BrokerMessage::GrantReported {} => Ok(()),
        deskwire_signal::BrokerMessage::Error { message } => Err(GrantsError::ReportRefused {
            id: entry.id,
            message,
        }
        .into()),
        other => Err(crate::signalling::SignalError::unexpected("the broker", &other).into()),
    }
}

impl std::fmt::Debug for GrantEntry {
    // Debug output ends up in logs; the secret must not.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrantEntry")
            .field("id", &self.id)
            .field("technician", &self.technician)
            .field("grant", &self.grant)
            .finish_non_exhaustive()
    }
}

/// What the technician takes away from an approved request: enough to connect later,
/// with nobody at the target, for as long as the grant allows.
#[derive(Clone, PartialEq, Eq)]
pub struct GrantTicket {
    /// The grant's number on the target.
    pub id: u32,
    /// The secret the target made for it.
    pub secret: [u8; 16],
    /// The grant.
    pub grant: Grant,
    /// The device id (`dev-...`) the broker knows the target by, when the target has one:
    /// where an unattended call through the broker goes.
    pub device: Option<String>,
    /// The broker the ticket was issued through (the viewer fills it in when it saves the
    /// ticket): where an unattended call goes when no other broker is named.
    pub broker: Option<String>,
}

/// The longest device id or broker URL a ticket may carry.
const MAX_TICKET_TEXT: usize = 2048;

impl std::fmt::Debug for GrantTicket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrantTicket")
            .field("id", &self.id)
            .field("grant", &self.grant)
            .finish_non_exhaustive()
    }
}

impl GrantTicket {
    /// As JSON, to keep (it is a secret: store it like a password).
    pub fn to_json(&self) -> String {
        let mut v = serde_json::json!({
            "id": self.id,
            "secret": hex(&self.secret),
            "grant": self.grant,
        });
        if let Some(device) = &self.device {
            v["device"] = device.clone().into();
        }
        if let Some(broker) = &self.broker {
            v["broker"] = broker.clone().into();
        }
        v.to_string()
    }

    /// From [`GrantTicket::to_json`].
    pub fn from_json(text: &str) -> Result<Self, GrantsError> {
        let v: serde_json::Value = serde_json::from_str(text).map_err(GrantsError::TicketJson)?;
        let id = v["id"]
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or(GrantsError::BadTicket("it has no id"))?;
        let secret = v["secret"]
            .as_str()
            .and_then(unhex)
            .ok_or(GrantsError::BadTicket("it has no valid secret"))?;
        let grant = serde_json::from_value(v["grant"].clone()).map_err(GrantsError::TicketJson)?;
        // Older tickets have neither; a present one must be plausible text.
        let text = |field: &str, what: &'static str| match &v[field] {
            serde_json::Value::Null => Ok(None),
            serde_json::Value::String(s) if !s.is_empty() && s.len() <= MAX_TICKET_TEXT => {
                Ok(Some(s.clone()))
            }
            _ => Err(GrantsError::BadTicket(what)),
        };
        let device = text("device", "its device id is not valid")?;
        let broker = text("broker", "its broker URL is not valid")?;
        Ok(Self {
            id,
            secret,
            grant,
            device,
            broker,
        })
    }
}

/// Sixteen bytes as 32 lowercase hex digits.
pub(crate) fn hex(bytes: &[u8; 16]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// 32 hex digits back to sixteen bytes.
pub(crate) fn unhex(text: &str) -> Option<[u8; 16]> {
    if text.len() != 32 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// The grants file.
#[derive(Debug, Clone)]
pub struct LocalGrants {
    path: PathBuf,
}

impl LocalGrants {
    /// The grants kept at `path` (the file need not exist yet).
    pub fn at(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// Where they are kept.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every grant, revoked and expired ones included (they stay for the record).
    pub fn list(&self) -> Result<Vec<GrantEntry>, GrantsError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(GrantsError::Read {
                    path: self.path.clone(),
                    source,
                })
            }
        };
        let malformed = |source| GrantsError::Malformed {
            path: self.path.clone(),
            source,
        };
        let values: Vec<serde_json::Value> =
            serde_json::from_str(&text).map_err(|e| malformed(Some(e)))?;
        values
            .into_iter()
            .map(|v| {
                let id = v["id"].as_u64().and_then(|n| u32::try_from(n).ok());
                let technician = v["technician"].as_str().map(str::to_owned);
                let grant = serde_json::from_value::<Grant>(v["grant"].clone());
                let secret = v["secret"].as_str().and_then(unhex);
                let broker = v["broker"].as_str().map(str::to_owned);
                match (id, grant) {
                    (Some(id), Ok(grant)) => Ok(GrantEntry {
                        id,
                        technician,
                        grant,
                        secret,
                        broker,
                    }),
                    (_, Err(e)) => Err(malformed(Some(e))),
                    (None, _) => Err(malformed(None)),
                }
            })
            .collect()
    }

    /// Keep `grant` with a fresh secret; returns what the technician takes away.
    pub fn add(
        &self,
        technician: Option<String>,
        grant: Grant,
    ) -> Result<GrantTicket, GrantsError> {
        let mut all = self.list()?;
        let id = all.iter().map(|e| e.id).max().unwrap_or(0) + 1;
        let secret: [u8; 16] = rand::random();
        all.push(GrantEntry {
            id,
            technician,
            grant: grant.clone(),
            secret: Some(secret),
            broker: None,
        });
        self.write(&all)?;
        Ok(GrantTicket {
            id,
            secret,
            grant,
            device: None,
            broker: None,
        })
    }

    /// Grant `id`, if kept.
    pub fn get(&self, id: u32) -> Result<Option<GrantEntry>, GrantsError> {
        Ok(self.list()?.into_iter().find(|e| e.id == id))
    }

    /// Revoke grant `id` at `now`; `false` when there is no such grant.
    pub fn revoke(&self, id: u32, now: UnixMillis) -> Result<bool, GrantsError> {
        let mut all = self.list()?;
        let Some(entry) = all.iter_mut().find(|e| e.id == id) else {
            return Ok(false);
        };
        entry.grant.revoke(now);
        self.write(&all)?;
        Ok(true)
    }

    /// Remember that grant `id` was reported to `broker` (where its revocation goes too);
    /// `false` when there is no such grant.
    pub fn reported_to(&self, id: u32, broker: &str) -> Result<bool, GrantsError> {
        let mut all = self.list()?;
        let Some(entry) = all.iter_mut().find(|e| e.id == id) else {
            return Ok(false);
        };
        entry.broker = Some(broker.to_owned());
        self.write(&all)?;
        Ok(true)
    }

    fn write(&self, all: &[GrantEntry]) -> Result<(), GrantsError> {
        let values: Vec<serde_json::Value> = all
            .iter()
            .map(|e| {
                serde_json::json!({
                    "id": e.id,
                    "technician": e.technician,
                    "grant": e.grant,
                    "secret": e.secret.as_ref().map(hex),
                    "broker": e.broker,
                })
            })
            .collect();
        // JSON values always serialise.
        let text = serde_json::to_string_pretty(&values).unwrap_or_default();
        crate::accounts::write_private(&self.path, text.as_bytes()).map_err(|source| {
            GrantsError::Write {
                path: self.path.clone(),
                source,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use deskwire_signal::grant::{
        approve, CredentialMode, GrantPolicy, GrantRequest, GrantZone, Schedule, Validity,
        ZoneName, ZoneOf,
    };

    use super::*;

    fn grant(at: UnixMillis) -> Grant {
        let request = GrantRequest {
            schedule: Schedule::new(Validity::Days { days: 3 }, None).unwrap(),
            zone: GrantZone {
                of: ZoneOf::Customer,
                name: ZoneName::new("Europe/Berlin").unwrap(),
            },
            credential_mode: CredentialMode::AskEachConnection,
        };
        approve(request, &GrantPolicy::default(), at).unwrap().0
    }

    #[test]
    fn grants_are_kept_listed_and_revoked_in_a_private_file() {
        let path = std::env::temp_dir().join(format!("deskwire-grants-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let g = LocalGrants::at(&path);
        assert!(g.list().unwrap().is_empty());
        let t0 = UnixMillis(1_790_000_000_000);
        let ticket = g.add(Some("alice".into()), grant(t0)).unwrap();
        let b = g.add(None, grant(t0)).unwrap().id;
        let a = ticket.id;
        assert_eq!((a, b), (1, 2));
        assert_eq!(g.get(1).unwrap().unwrap().secret, Some(ticket.secret));
        assert_eq!(GrantTicket::from_json(&ticket.to_json()).unwrap(), ticket);
        assert!(GrantTicket::from_json("{\"id\":1,\"secret\":\"zz\"}").is_err());
        // Where to call travels with the ticket; an old ticket without it still reads.
        let mut placed = ticket.clone();
        placed.device = Some("dev-abc".into());
        placed.broker = Some("ws://broker:8450".into());
        assert_eq!(GrantTicket::from_json(&placed.to_json()).unwrap(), placed);
        let mut bad: serde_json::Value = serde_json::from_str(&placed.to_json()).unwrap();
        bad["device"] = 7.into();
        assert!(GrantTicket::from_json(&bad.to_string()).is_err());
        let listed = g.list().unwrap();
        assert_eq!(listed.len(), 2);
        assert_eq!(listed[0].technician.as_deref(), Some("alice"));
        assert_eq!(listed[0].grant, grant(t0));
        assert!(listed[0].grant.check(t0).is_ok());
        let later = t0.plus(std::time::Duration::from_secs(60));
        assert!(g.revoke(a, later).unwrap());
        assert!(!g.revoke(99, later).unwrap());
        let listed = g.list().unwrap();
        assert!(listed[0].grant.check(later).is_err(), "revoked");
        assert!(listed[1].grant.check(later).is_ok(), "the other one stands");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        std::fs::write(&path, "[{\"id\":1,\"grant\":{}}]").unwrap();
        let e = g.list().unwrap_err();
        assert!(
            matches!(
                &e,
                GrantsError::Malformed {
                    source: Some(_),
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e.to_string().contains("not a valid grants file"), "{e}");
        let _ = std::fs::remove_file(&path);
    }
}

/// Why a request for unattended access brought no grant, at the technician's end.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GrantAnswerError {
    /// The target refused; its sentence says why.
    #[error("the target refused: {0}")]
    Refused(String),
    /// The target approved, but what it sent is not a grant this side can read.
    #[error("the target sent an unreadable grant: {0}")]
    Unreadable(String),
}
