//! Device identity: a file of device ids and argon2 password hashes, one
//! device a line, in the manner of htpasswd:
//!
//! ```text
//! # comment
//! sensor-01:$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>
//! ```
//!
//! Passwords are never stored, logged or returned; only their PHC hashes are
//! kept. The file is re-read when it changes, so `edge-agent devices add`
//! takes effect without a restart. Writes go to a temp file and are renamed
//! into place, so a reader never sees half a file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::time::SystemTime;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

/// Why the device file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The file cannot be read or written; check the path and permissions.
    #[error("device file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A line is not `device_id:phc-hash`; fix or remove that line.
    #[error("device file {path}, line {line}: {reason}")]
    Format {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    /// The device id is not `[A-Za-z0-9_.-]{{1,64}}`.
    #[error(transparent)]
    DeviceId(#[from] telemetry::DeviceIdError),
    /// `add` for a device that exists (use `rotate`), or `remove`/`rotate` for one that does not.
    #[error("device {0:?} {1}")]
    Exists(String, &'static str),
    /// A password shorter than 12 characters.
    #[error("a device password must have at least 12 characters")]
    WeakPassword,
}

/// The registered devices, loaded from (and saved to) one file.
pub struct DeviceRegistry {
    path: PathBuf,
    state: RwLock<Loaded>,
}

impl std::fmt::Debug for DeviceRegistry {
    /// Shows the file, never the hashes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceRegistry")
            .field("path", &self.path)
            .finish()
    }
}

struct Loaded {
    modified: Option<SystemTime>,
    hashes: BTreeMap<String, String>,
}

/// A hash to verify against when the device is unknown, so that an unknown
/// id costs as much time as a wrong password.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$5Qr1nQ0VTPdW3YOoWGuRTZ7TzQ2Fx/VpbEpvMeDzEAc";

impl DeviceRegistry {
    /// Loads `path`; a missing file is an empty registry (created on first save).
    pub fn load(path: &Path) -> Result<DeviceRegistry, AuthError> {
        let loaded = read(path)?;
        Ok(DeviceRegistry {
            path: path.to_path_buf(),
            state: RwLock::new(loaded),
        })
    }

    /// Whether `password` is the password of `device_id`. Slow on purpose
    /// (argon2): call it off the async runtime.
    pub fn verify(&self, device_id: &str, password: &str) -> bool {
        self.reload_if_changed();
        let hash = self
            .state
            .read()
            .ok()
            .and_then(|s| s.hashes.get(device_id).cloned());
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| DUMMY_HASH.to_string());
        let Ok(parsed) = PasswordHash::new(&hash) else {
            return false;
        };
        let matches = Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok();
        known && matches
    }

    /// Whether `device_id` is registered, whatever its password. For devices
    /// that proved their identity otherwise (a client certificate): removing
    /// a device from the file still shuts it out.
    pub fn is_registered(&self, device_id: &str) -> bool {
        self.reload_if_changed();
        self.state
            .read()
            .map(|s| s.hashes.contains_key(device_id))
            .unwrap_or(false)
    }

    /// Device ids, sorted.
    pub fn list(&self) -> Vec<String> {
        self.reload_if_changed();
        self.state
            .read()
            .map(|s| s.hashes.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Registers a new device.
    pub fn add(&self, device_id: &str, password: &str) -> Result<(), AuthError> {
        self.change(device_id, |hashes| {
            if hashes.contains_key(device_id) {
                return Err(AuthError::Exists(
                    device_id.into(),
                    "exists already; use rotate",
                ));
            }
            hashes.insert(device_id.into(), hash(password)?);
            Ok(())
        })
    }

    /// Gives a registered device a new password.
    pub fn rotate(&self, device_id: &str, password: &str) -> Result<(), AuthError> {
        self.change(device_id, |hashes| match hashes.get_mut(device_id) {
            Some(entry) => {
                *entry = hash(password)?;
                Ok(())
            }
            None => Err(AuthError::Exists(device_id.into(), "is not registered")),
        })
    }

    /// Removes a device; it can no longer connect.
    pub fn remove(&self, device_id: &str) -> Result<(), AuthError> {
        self.change(device_id, |hashes| match hashes.remove(device_id) {
            Some(_) => Ok(()),
            None => Err(AuthError::Exists(device_id.into(), "is not registered")),
        })
    }

    fn change(
        &self,
        device_id: &str,
        edit: impl FnOnce(&mut BTreeMap<String, String>) -> Result<(), AuthError>,
    ) -> Result<(), AuthError> {
        telemetry::validate_device_id(device_id)?;
        let mut state = self.state.write().expect("registry lock");
        // Start from the file as it is now, not as it was when loaded.
        *state = read(&self.path)?;
        edit(&mut state.hashes)?;
        write(&self.path, &state.hashes)?;
        state.modified = modified(&self.path);
        Ok(())
    }

    fn reload_if_changed(&self) {
        let now = modified(&self.path);
        let stale = self
            .state
            .read()
            .map(|s| s.modified != now)
            .unwrap_or(false);
        if stale {
            match read(&self.path) {
                Ok(loaded) => {
                    if let Ok(mut state) = self.state.write() {
                        *state = loaded;
                    }
                }
                Err(err) => {
                    tracing::error!(error = %err, "device file changed but cannot be read; keeping the old one")
                }
            }
        }
    }
}

fn hash(password: &str) -> Result<String, AuthError> {
    if password.chars().count() < 12 {
        return Err(AuthError::WeakPassword);
    }
    let salt = SaltString::generate(&mut OsRng);
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 with default parameters hashes any password")
        .to_string())
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn read(path: &Path) -> Result<Loaded, AuthError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(source) => {
            return Err(AuthError::Io {
                path: path.into(),
                source,
            })
        }
    };
    let mut hashes = BTreeMap::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let format = |reason: &str| AuthError::Format {
            path: path.into(),
            line: index + 1,
            reason: reason.into(),
        };
        let (device_id, hash) = line
            .split_once(':')
            .ok_or_else(|| format("expected device_id:hash"))?;
        telemetry::validate_device_id(device_id).map_err(|e| format(&e.to_string()))?;
        PasswordHash::new(hash).map_err(|_| format("not a PHC password hash"))?;
        hashes.insert(device_id.to_string(), hash.to_string());
    }
    Ok(Loaded {
        modified: modified(path),
        hashes,
    })
}

fn write(path: &Path, hashes: &BTreeMap<String, String>) -> Result<(), AuthError> {
    let io = |source| AuthError::Io {
        path: path.into(),
        source,
    };
    let mut text = String::from(
        "# edge-agent devices: device_id:argon2 hash. Manage with `edge-agent devices`.\n",
    );
    for (device_id, hash) in hashes {
        text.push_str(&format!("{device_id}:{hash}\n"));
    }
    let temp = path.with_extension("tmp");
    std::fs::write(&temp, text).map_err(io)?;
    std::fs::rename(&temp, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_verify_rotate_remove() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("devices");
        let registry = DeviceRegistry::load(&path).unwrap();
        registry.add("dev-1", "correct horse battery").unwrap();
        assert!(registry.verify("dev-1", "correct horse battery"));
        assert!(!registry.verify("dev-1", "wrong password!!"));
        assert!(!registry.verify("dev-2", "correct horse battery"));
        assert!(matches!(
            registry.add("dev-1", "another password"),
            Err(AuthError::Exists(..))
        ));

        registry.rotate("dev-1", "a brand new secret").unwrap();
        assert!(!registry.verify("dev-1", "correct horse battery"));
        assert!(registry.verify("dev-1", "a brand new secret"));

        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            !text.contains("a brand new secret"),
            "passwords are never stored"
        );
        assert!(text.contains("dev-1:$argon2id$"));

        assert!(registry.is_registered("dev-1"));
        registry.remove("dev-1").unwrap();
        assert!(!registry.verify("dev-1", "a brand new secret"));
        assert!(!registry.is_registered("dev-1"));
        assert!(registry.list().is_empty());
    }

    #[test]
    fn another_process_s_changes_are_picked_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("devices");
        let running = DeviceRegistry::load(&path).unwrap();
        assert!(!running.verify("dev-1", "correct horse battery"));
        // The CLI is another registry on the same file.
        std::thread::sleep(std::time::Duration::from_millis(20));
        DeviceRegistry::load(&path)
            .unwrap()
            .add("dev-1", "correct horse battery")
            .unwrap();
        assert!(running.verify("dev-1", "correct horse battery"));
    }

    #[test]
    fn the_dummy_hash_parses_so_unknown_devices_cost_a_full_verify() {
        assert!(PasswordHash::new(DUMMY_HASH).is_ok());
    }

    #[test]
    fn weak_passwords_and_bad_lines_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("devices");
        let registry = DeviceRegistry::load(&path).unwrap();
        assert!(matches!(
            registry.add("dev-1", "short"),
            Err(AuthError::WeakPassword)
        ));
        std::fs::write(&path, "dev-1:not-a-hash\n").unwrap();
        let err = DeviceRegistry::load(&path).err().unwrap();
        assert!(err.to_string().contains("line 1"), "{err}");
    }
}
