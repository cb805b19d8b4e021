//! The technician's local policy, for when no broker manages the technician: a file an
//! administrator owns (`/etc/deskwire/technician.conf` by default), with lines like
//! `connect_on_lan = no`. With a broker, the technician's group decides instead.

use std::path::Path;

use anyhow::{bail, Context, Result};

/// Where the administrator's file is looked for unless told otherwise.
pub const DEFAULT_PATH: &str = "/etc/deskwire/technician.conf";

/// What the local policy says.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LocalPolicy {
    /// `connect_on_lan`: `None` when the file does not say.
    pub connect_on_lan: Option<bool>,
}

impl LocalPolicy {
    /// Read `path`; a missing file is an empty policy (nothing restricted).
    pub fn load(path: &Path) -> Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text).with_context(|| format!("in {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// `key = value` lines; `#` starts a comment; unknown keys are errors, so a typo never
    /// silently leaves something allowed.
    pub fn parse(text: &str) -> Result<Self> {
        let mut policy = Self::default();
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                bail!("line {}: expected `key = value`, found {line:?}", n + 1);
            };
            let value = match value.trim() {
                "yes" | "true" | "allow" => true,
                "no" | "false" | "deny" => false,
                other => bail!("line {}: {other:?} is not yes or no", n + 1),
            };
            match key.trim() {
                "connect_on_lan" => policy.connect_on_lan = Some(value),
                other => bail!(
                    "line {}: unknown setting {other:?} (known: connect_on_lan)",
                    n + 1
                ),
            }
        }
        Ok(policy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_file_allows_or_refuses_and_rejects_typos() {
        let p = LocalPolicy::parse("# managed by IT\nconnect_on_lan = no\n").unwrap();
        assert_eq!(p.connect_on_lan, Some(false));
        let p = LocalPolicy::parse("connect_on_lan=yes # ok").unwrap();
        assert_eq!(p.connect_on_lan, Some(true));
        assert_eq!(LocalPolicy::parse("").unwrap().connect_on_lan, None);
        assert!(LocalPolicy::parse("conect_on_lan = no").is_err());
        assert!(LocalPolicy::parse("connect_on_lan = maybe").is_err());
        assert!(LocalPolicy::parse("connect_on_lan").is_err());
    }

    #[test]
    fn a_missing_file_restricts_nothing() {
        let p = LocalPolicy::load(Path::new("/nonexistent/deskwire/technician.conf")).unwrap();
        assert_eq!(p, LocalPolicy::default());
    }
}
