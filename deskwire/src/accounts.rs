//! The target's own administrator accounts: names with Argon2id password hashes in a file
//! the agent owns (`name:$argon2id$...`, one per line, readable by its user only). A target
//! that requires them lets a technician in only with a valid pair, checked here — never on
//! the word of a broker.

use std::io::Write;
use std::path::{Path, PathBuf};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

/// Why the administrator accounts cannot be read, checked or changed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AccountsError {
    /// The file exists but cannot be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The accounts file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file cannot be written.
    #[error("cannot write {}", path.display())]
    Write {
        /// The accounts file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A line is not `name:$argon2...`, or its hash cannot be parsed.
    #[error("{} line {line} is not `name:$argon2...`", path.display())]
    Malformed {
        /// The accounts file.
        path: PathBuf,
        /// The line's number, from 1 (0: a hash found later to be unreadable).
        line: usize,
    },
    /// The name is empty, too long, or has a ':' or a control character.
    #[error("an account name has 1 to {MAX_NAME} printable characters and no ':'")]
    BadName,
    /// The password is empty or too long.
    #[error("a password has 1 to {MAX_PASSWORD} bytes")]
    BadPassword,
    /// Argon2 refused to hash (it does not for valid input; kept for completeness).
    #[error("cannot hash the password: {0}")]
    Hash(String),
}

/// Longest account name.
const MAX_NAME: usize = 64;
/// Longest password.
const MAX_PASSWORD: usize = 256;

/// A file of administrator accounts.
#[derive(Debug, Clone)]
pub struct AdminAccounts {
    path: PathBuf,
}

impl AdminAccounts {
    /// The accounts kept at `path` (the file need not exist yet).
    pub fn at(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// Where they are kept.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Add `name` with `password`, or replace its password.
    pub fn set(&self, name: &str, password: &str) -> Result<(), AccountsError> {
        check(name, password)?;
        let salt: [u8; 16] = rand::random();
        let salt = SaltString::encode_b64(&salt).map_err(|e| AccountsError::Hash(e.to_string()))?;
        let phc = Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map_err(|e| AccountsError::Hash(e.to_string()))?
            .to_string();
        let mut lines: Vec<String> = self
            .lines()?
            .into_iter()
            .filter(|(n, _)| n != name)
            .map(|(n, h)| format!("{n}:{h}"))
            .collect();
        lines.push(format!("{name}:{phc}"));
        self.write(&lines)
    }

    /// Names of the accounts.
    pub fn names(&self) -> Result<Vec<String>, AccountsError> {
        Ok(self.lines()?.into_iter().map(|(n, _)| n).collect())
    }

    /// Whether `name` and `password` are those of an account. An unknown name costs as
    /// long as a wrong password, so timing does not tell names apart.
    pub fn verify(&self, name: &str, password: &str) -> Result<bool, AccountsError> {
        if check(name, password).is_err() {
            return Ok(false);
        }
        let stored = self.lines()?.into_iter().find(|(n, _)| n == name);
        let (phc, known) = match &stored {
            Some((_, h)) => (h.as_str(), true),
            None => (DUMMY, false),
        };
        let parsed = PasswordHash::new(phc).map_err(|_| AccountsError::Malformed {
            path: self.path.clone(),
            line: 0,
        })?;
        let matches = Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok();
        Ok(known && matches)
    }

    fn lines(&self) -> Result<Vec<(String, String)>, AccountsError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(AccountsError::Read {
                    path: self.path.clone(),
                    source,
                })
            }
        };
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .enumerate()
            .map(|(i, l)| match l.split_once(':') {
                Some((n, h)) if !n.is_empty() && h.starts_with("$argon2") => {
                    Ok((n.to_owned(), h.to_owned()))
                }
                _ => Err(AccountsError::Malformed {
                    path: self.path.clone(),
                    line: i + 1,
                }),
            })
            .collect()
    }

    fn write(&self, lines: &[String]) -> Result<(), AccountsError> {
        let mut text = String::new();
        for l in lines {
            text.push_str(l);
            text.push('\n');
        }
        write_private(&self.path, text.as_bytes()).map_err(|source| AccountsError::Write {
            path: self.path.clone(),
            source,
        })
    }
}

/// A valid hash of nothing anyone types, verified against for unknown names.
const DUMMY: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$ZGVza3dpcmVkdW1teQ$yOjZWH3NqGHaXi5IE3Vu6n7Ng01Ac8Av/pLa5ByOQXg";

fn check(name: &str, password: &str) -> Result<(), AccountsError> {
    if name.is_empty()
        || name.len() > MAX_NAME
        || name.contains(':')
        || name.chars().any(char::is_control)
    {
        return Err(AccountsError::BadName);
    }
    if password.is_empty() || password.len() > MAX_PASSWORD {
        return Err(AccountsError::BadPassword);
    }
    Ok(())
}

/// Write `bytes` to `path` readable by this user only, beside it first and renamed over it,
/// so a crash never leaves half a file.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> AdminAccounts {
        let path =
            std::env::temp_dir().join(format!("deskwire-accounts-{}-{name}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        AdminAccounts::at(path)
    }

    #[test]
    fn an_account_verifies_with_its_password_only_and_the_file_is_private() {
        let a = temp("verify");
        a.set("admin", "correct horse").unwrap();
        assert!(a.verify("admin", "correct horse").unwrap());
        assert!(!a.verify("admin", "wrong horse").unwrap());
        assert!(!a.verify("root", "correct horse").unwrap());
        assert!(!a.verify("", "").unwrap());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(a.path()).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let text = std::fs::read_to_string(a.path()).unwrap();
        assert!(!text.contains("correct horse"));
        // A new password replaces the old one.
        a.set("admin", "battery staple").unwrap();
        assert!(!a.verify("admin", "correct horse").unwrap());
        assert!(a.verify("admin", "battery staple").unwrap());
        assert_eq!(a.names().unwrap(), ["admin"]);
        let _ = std::fs::remove_file(a.path());
    }

    #[test]
    fn bad_names_and_a_damaged_file_are_clear_errors() {
        let a = temp("bad");
        assert!(matches!(a.set("a:b", "x"), Err(AccountsError::BadName)));
        assert!(matches!(
            a.set("admin", ""),
            Err(AccountsError::BadPassword)
        ));
        std::fs::write(a.path(), "admin:plaintext\n").unwrap();
        let e = a.verify("admin", "plaintext").unwrap_err().to_string();
        assert!(e.contains("line 1"), "{e}");
        let _ = std::fs::remove_file(a.path());
    }

    #[test]
    fn an_unreadable_file_keeps_the_system_error_as_its_source() {
        // A directory where the file should be: reading it fails with an OS error.
        let dir =
            std::env::temp_dir().join(format!("deskwire-accounts-dir-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let e = AdminAccounts::at(&dir).names().unwrap_err();
        let AccountsError::Read { source, .. } = &e else {
            panic!("{e:?}");
        };
        // The system's sentence is kept, said for people (no errno).
        let os = crate::io_words(source);
        let whole = crate::with_causes(&crate::SessionError::from(e));
        assert!(
            whole.starts_with("cannot read") && whole.ends_with(&os) && !whole.contains("os error"),
            "{whole}"
        );
        let _ = std::fs::remove_dir(&dir);
    }

    #[test]
    fn the_dummy_hash_parses() {
        assert!(PasswordHash::new(DUMMY).is_ok());
    }
}
