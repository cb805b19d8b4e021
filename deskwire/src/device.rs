//! This computer's device key, kept in a file the agent owns.

use std::io::Write;
use std::path::{Path, PathBuf};

use deskwire_signal::device::DeviceKey;

/// Why this computer's device key cannot be read or made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceKeyError {
    /// Reading, creating or writing the key file failed.
    #[error("{what} {}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The key file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a key this program made.
    #[error("{} is not a device key ({len} bytes, expected 32)", path.display())]
    NotAKey {
        /// The key file.
        path: PathBuf,
        /// Its length.
        len: usize,
    },
}

/// Load the key at `path`, or make one and store it there (readable by this user only).
pub(crate) fn load_or_create(path: &Path) -> Result<DeviceKey, DeviceKeyError> {
    let fail = |what: &'static str, source: std::io::Error| DeviceKeyError::Io {
        what,
        path: path.to_owned(),
        source,
    };
    match std::fs::read(path) {
        Ok(bytes) => {
            let seed: [u8; 32] =
                bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| DeviceKeyError::NotAKey {
                        path: path.to_owned(),
                        len: bytes.len(),
                    })?;
            Ok(DeviceKey::from_seed(seed))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = DeviceKey::from_seed(rand::random());
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| fail("cannot create the folder of", e))?;
            }
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                options.mode(0o600);
            }
            let mut file = options
                .open(path)
                .map_err(|e| fail("cannot create the device key", e))?;
            file.write_all(&key.seed())
                .and_then(|()| file.sync_all())
                .map_err(|e| fail("cannot write the device key", e))?;
            tracing::info!(id = %key.id(), path = %path.display(), "created this device's key");
            Ok(key)
        }
        Err(e) => Err(fail("cannot read the device key", e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_created_once_kept_private_and_read_back_the_same() {
        let dir = std::env::temp_dir().join(format!("deskwire-device-{}", std::process::id()));
        let path = dir.join("sub").join("device.key");
        let _ = std::fs::remove_dir_all(&dir);
        let made = load_or_create(&path).unwrap();
        let again = load_or_create(&path).unwrap();
        assert_eq!(made.id(), again.id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(&path, b"short").unwrap();
        let e = load_or_create(&path).unwrap_err();
        assert!(e.to_string().contains("not a device key"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
