//! Whether this technician may connect on the LAN, around any broker.
//!
//! A broker-managed technician's group decides (the broker's `lan` permission); with no
//! broker, the local policy file an administrator owns (`/etc/deskwire/technician.conf` by
//! default, lines like `connect_on_lan = no`). The answer is a [`LanPermission`], which
//! only [`check_lan_permission`] makes and a LAN [`crate::LanTarget`] requires: a program
//! built on [`crate::Viewer`] cannot connect on the LAN without asking.

use std::path::{Path, PathBuf};
use std::time::Duration;

use deskwire_signal::{BrokerMessage, ClientMessage};

use crate::signalling::SignalError;

/// Where the administrator's policy file is looked for unless told otherwise.
pub const DEFAULT_POLICY_PATH: &str = "/etc/deskwire/technician.conf";

/// Proof that this technician was allowed to connect on the LAN: only
/// [`check_lan_permission`] makes one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LanPermission {
    // Private, so the only way to hold one is to have asked.
    from: Authority,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Authority {
    /// The broker allowed this technician (its account name).
    Broker { technician: String },
    /// The local policy file does not turn it off.
    LocalPolicy,
}

impl LanPermission {
    /// The technician's name, when a broker gave the permission.
    pub fn technician(&self) -> Option<&str> {
        match &self.from {
            Authority::Broker { technician } => Some(technician),
            Authority::LocalPolicy => None,
        }
    }
}

/// Why connecting on the LAN is not allowed (or could not be checked).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LanPermissionError {
    /// The broker says this technician's group may not (or the token is not valid).
    #[error("LAN: the broker does not allow connecting on the LAN: {0}")]
    RefusedByBroker(String),
    /// A broker manages this technician, but no API token was given to ask it with.
    #[error("a broker manages your permissions: give your API token to connect on the LAN")]
    NoToken,
    /// The local policy file turns it off.
    #[error(
        "connecting on the LAN is turned off for this computer's technicians ({}: connect_on_lan = no)",
        path.display()
    )]
    RefusedByPolicy {
        /// The policy file.
        path: PathBuf,
    },
    /// The local policy file cannot be read or has a mistake.
    #[error(transparent)]
    Policy(#[from] LocalPolicyError),
    /// The broker cannot be reached or answered something else.
    #[error(transparent)]
    Broker(#[from] SignalError),
}

/// Check whether this technician may connect on the LAN. With a `broker`, it decides:
/// asked with `token` (none is a refusal), blocking up to about `timeout`. Without one, the
/// policy file at `policy` does ([`DEFAULT_POLICY_PATH`] normally; a missing file allows).
pub fn check_lan_permission(
    broker: Option<&str>,
    token: Option<&str>,
    policy: &Path,
    timeout: Duration,
) -> Result<LanPermission, LanPermissionError> {
    let from = match (broker, token) {
        (Some(broker), Some(token)) => Authority::Broker {
            technician: ask_broker(broker, token, timeout)?,
        },
        (Some(_), None) => return Err(LanPermissionError::NoToken),
        (None, _) => match LocalPolicy::load(policy)?.connect_on_lan {
            Some(false) => {
                return Err(LanPermissionError::RefusedByPolicy {
                    path: policy.to_owned(),
                })
            }
            Some(true) | None => Authority::LocalPolicy,
        },
    };
    tracing::info!(?from, "may connect on the LAN");
    Ok(LanPermission { from })
}

/// The technician's name if the broker gives the holder of `token` its `lan` permission.
fn ask_broker(broker: &str, token: &str, timeout: Duration) -> Result<String, LanPermissionError> {
    let ask = ClientMessage::Authorize {
        token: token.to_owned(),
        permission: "lan".to_owned(),
    };
    match crate::signalling::ask_broker(broker, &ask, timeout)? {
        BrokerMessage::Authorized { technician, .. } => Ok(technician),
        BrokerMessage::Error { message } => Err(LanPermissionError::RefusedByBroker(message)),
        other => Err(SignalError::unexpected("the broker", &other).into()),
    }
}

/// What the technician's local policy file says, for when no broker manages them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LocalPolicy {
    /// `connect_on_lan`: `None` when the file does not say.
    pub connect_on_lan: Option<bool>,
}

/// Why a policy file cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LocalPolicyError {
    /// The file exists but cannot be read.
    #[error("reading {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file has a mistake.
    #[error("in {}", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The mistake.
        #[source]
        source: PolicySyntaxError,
    },
}

/// A mistake in a policy file's text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicySyntaxError {
    /// A line that is not `key = value`.
    #[error("line {line}: expected `key = value`, found {found:?}")]
    NotKeyValue {
        /// Its number, from 1.
        line: usize,
        /// The line, without its comment.
        found: String,
    },
    /// A value that is not yes or no.
    #[error("line {line}: {value:?} is not yes or no")]
    NotYesOrNo {
        /// Its number, from 1.
        line: usize,
        /// The value.
        value: String,
    },
    /// A setting this version does not know.
    #[error("line {line}: unknown setting {key:?} (known: connect_on_lan)")]
    UnknownSetting {
        /// Its number, from 1.
        line: usize,
        /// The key.
        key: String,
    },
}

impl LocalPolicy {
    /// Read `path`; a missing file is an empty policy (nothing restricted).
    pub fn load(path: &Path) -> Result<Self, LocalPolicyError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text).map_err(|source| LocalPolicyError::Syntax {
                path: path.to_owned(),
                source,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(source) => Err(LocalPolicyError::Read {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// `key = value` lines; `#` starts a comment; unknown keys are errors, so a typo never
    /// silently leaves something allowed.
    pub fn parse(text: &str) -> Result<Self, PolicySyntaxError> {
        let mut policy = Self::default();
        for (n, line) in text.lines().enumerate() {
            let line_no = n + 1;
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                return Err(PolicySyntaxError::NotKeyValue {
                    line: line_no,
                    found: line.to_owned(),
                });
            };
            let value = match value.trim() {
                "yes" | "true" | "allow" => true,
                "no" | "false" | "deny" => false,
                other => {
                    return Err(PolicySyntaxError::NotYesOrNo {
                        line: line_no,
                        value: other.to_owned(),
                    })
                }
            };
            match key.trim() {
                "connect_on_lan" => policy.connect_on_lan = Some(value),
                other => {
                    return Err(PolicySyntaxError::UnknownSetting {
                        line: line_no,
                        key: other.to_owned(),
                    })
                }
            }
        }
        Ok(policy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: Duration = Duration::from_secs(1);

    /// A policy file with `text`, removed when dropped.
    struct PolicyFile(PathBuf);

    impl PolicyFile {
        fn new(name: &str, text: &str) -> Self {
            let path = std::env::temp_dir().join(format!(
                "deskwire-policy-{}-{name}.conf",
                std::process::id()
            ));
            std::fs::write(&path, text).unwrap();
            Self(path)
        }
    }

    impl Drop for PolicyFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    #[test]
    fn a_policy_file_allows_or_refuses_and_rejects_typos() {
        let p = LocalPolicy::parse("# managed by IT\nconnect_on_lan = no\n").unwrap();
        assert_eq!(p.connect_on_lan, Some(false));
        let p = LocalPolicy::parse("connect_on_lan=yes # ok").unwrap();
        assert_eq!(p.connect_on_lan, Some(true));
        assert_eq!(LocalPolicy::parse("").unwrap().connect_on_lan, None);
        assert!(matches!(
            LocalPolicy::parse("conect_on_lan = no"),
            Err(PolicySyntaxError::UnknownSetting { line: 1, .. })
        ));
        assert!(LocalPolicy::parse("connect_on_lan = maybe").is_err());
        assert!(LocalPolicy::parse("\nconnect_on_lan")
            .unwrap_err()
            .to_string()
            .starts_with("line 2: expected `key = value`"));
    }

    #[test]
    fn a_missing_policy_file_restricts_nothing() {
        let p = LocalPolicy::load(Path::new("/nonexistent/deskwire/technician.conf")).unwrap();
        assert_eq!(p, LocalPolicy::default());
        let allowed = check_lan_permission(
            None,
            None,
            Path::new("/nonexistent/deskwire/technician.conf"),
            WAIT,
        )
        .unwrap();
        assert_eq!(allowed.technician(), None);
    }

    #[test]
    fn a_policy_file_that_says_no_refuses_and_names_itself() {
        let file = PolicyFile::new("no", "connect_on_lan = no\n");
        let refused = check_lan_permission(None, None, &file.0, WAIT).unwrap_err();
        assert!(matches!(
            refused,
            LanPermissionError::RefusedByPolicy { .. }
        ));
        let why = refused.to_string();
        assert!(why.contains(&file.0.display().to_string()), "{why}");
        assert!(why.contains("connect_on_lan = no"), "{why}");
    }

    #[test]
    fn a_policy_file_that_says_yes_allows() {
        let file = PolicyFile::new("yes", "connect_on_lan = yes\n");
        assert!(check_lan_permission(None, None, &file.0, WAIT).is_ok());
    }

    #[test]
    fn a_policy_file_with_a_mistake_refuses_rather_than_allows() {
        let file = PolicyFile::new("typo", "conect_on_lan = no\n");
        let err = check_lan_permission(None, None, &file.0, WAIT).unwrap_err();
        assert!(
            matches!(
                err,
                LanPermissionError::Policy(LocalPolicyError::Syntax { .. })
            ),
            "{err:?}"
        );
    }

    #[test]
    fn a_broker_without_a_token_refuses_without_asking_or_reading_the_policy() {
        // The policy would allow, and nothing listens at the broker's address: the
        // refusal comes first.
        let err = check_lan_permission(
            Some("ws://127.0.0.1:9"),
            None,
            Path::new("/nonexistent/deskwire/technician.conf"),
            WAIT,
        )
        .unwrap_err();
        assert!(matches!(err, LanPermissionError::NoToken), "{err:?}");
    }
}
