//! The token file: API tokens of gateways, dashboards and operators, stored
//! as SHA-256 hashes, one token a line, managed by `cloud-sync tokens`.
//!
//! ```text
//! # comment
//! id        role    gateway  hash                                                                      created
//! 3f9a2c1b  ingest  gw-1     sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08  2026-11-29T01:40:48Z
//! 7b21e0d4  read    -        sha256:...                                                                2026-11-29T01:41:02Z
//! ```
//!
//! Fields are separated by spaces; `gateway` is `-` unless the role is
//! `ingest`. A token is `cst_` + 43 base64url characters (32 random bytes)
//! and is shown once, when it is made. Only its SHA-256 is kept: a token is
//! 256 random bits, so a fast unsalted hash is as safe as argon2 would be
//! (nobody can guess a preimage) and costs a microsecond per request
//! instead of tens of milliseconds; argon2 is for low-entropy passwords.
//!
//! Invariants: ids are unique; no line holds a token; the file is written
//! to a temp file and renamed into place, so a reader never sees half a
//! file. A running collector re-reads the file when its modification time
//! or length changes (checked on each authenticated request), so `tokens
//! add` and `tokens revoke` take effect without a restart.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::time::SystemTime;

use base64::Engine;
use sha2::{Digest, Sha256};

/// The prefix of every token, so that a leaked one is recognisable (secret
/// scanners, logs) and cannot be mistaken for another system's.
pub const TOKEN_PREFIX: &str = "cst_";
/// Random bytes in a token.
const TOKEN_BYTES: usize = 32;
/// The prefix of a hash field: the algorithm, so that it can change later.
const HASH_PREFIX: &str = "sha256:";

/// What a token may do.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Role {
    /// Post batches for this one gateway id; no reads.
    Ingest { gateway_id: String },
    /// Read the query API (the dashboard); no posts.
    Read,
    /// Read, and post batches for any gateway (tools, migrations).
    Admin,
}

impl Role {
    /// The role's name in the file and in `tokens list`.
    pub fn name(&self) -> &'static str {
        match self {
            Role::Ingest { .. } => "ingest",
            Role::Read => "read",
            Role::Admin => "admin",
        }
    }

    /// The gateway an ingest token is bound to.
    pub fn gateway_id(&self) -> Option<&str> {
        match self {
            Role::Ingest { gateway_id } => Some(gateway_id),
            _ => None,
        }
    }
}

/// One token as `tokens list` shows it: never the token, never its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    pub id: String,
    pub role: Role,
    /// When it was made, RFC 3339 UTC.
    pub created: String,
}

/// Why the token file cannot be used or changed.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    /// The file cannot be read or written; check the path and permissions.
    #[error("token file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A line is not `id role gateway sha256:hex created`; fix or remove it.
    #[error("token file {path}, line {line}: {reason}")]
    Format {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    /// The gateway id of `tokens add --gateway` is not `[A-Za-z0-9_.-]{{1,64}}`.
    #[error("gateway id: {0}")]
    GatewayId(#[from] telemetry::DeviceIdError),
    /// `tokens revoke` named an id that is not in the file; see `tokens list`.
    #[error("no token with id {0:?} (see `cloud-sync tokens list`)")]
    UnknownId(String),
}

/// The tokens of one file, reloaded when the file changes.
pub struct TokenFile {
    path: PathBuf,
    state: RwLock<Loaded>,
}

impl std::fmt::Debug for TokenFile {
    /// Shows the file, never the hashes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenFile")
            .field("path", &self.path)
            .finish()
    }
}

#[derive(Default)]
struct Loaded {
    /// Modification time and length of the file as read; `None` when missing.
    stamp: Option<(SystemTime, u64)>,
    /// In file order, for listing and rewriting.
    entries: Vec<Entry>,
    /// Digest → index into `entries`.
    by_hash: HashMap<[u8; 32], usize>,
}

#[derive(Clone)]
struct Entry {
    info: TokenInfo,
    hash: [u8; 32],
}

impl TokenFile {
    /// Loads `path`; a missing file holds no tokens (it is created by the
    /// first `add`).
    pub fn load(path: &Path) -> Result<TokenFile, TokenFileError> {
        Ok(TokenFile {
            path: path.to_path_buf(),
            state: RwLock::new(read(path)?),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The role of `token`, if it is in the file. One SHA-256 and a map
    /// lookup: cheap enough for every request. The lookup is by digest, so
    /// its timing tells an attacker nothing about any stored token.
    pub fn verify(&self, token: &str) -> Option<Role> {
        self.identify(token).map(|info| info.role)
    }

    /// The id, role and creation time of `token`, if it is in the file: what
    /// the audit log names a request's actor by (the id, never the token).
    pub fn identify(&self, token: &str) -> Option<TokenInfo> {
        self.reload_if_changed();
        let digest = digest(token);
        let state = self.state.read().ok()?;
        let index = *state.by_hash.get(&digest)?;
        Some(state.entries[index].info.clone())
    }

    /// Every token's id, role, gateway and creation time, in file order.
    pub fn list(&self) -> Vec<TokenInfo> {
        self.reload_if_changed();
        self.state
            .read()
            .map(|s| s.entries.iter().map(|e| e.info.clone()).collect())
            .unwrap_or_default()
    }

    /// Makes a new token with `role`, writes its hash and returns the token
    /// itself: the only time anyone sees it.
    pub fn add(&self, role: Role) -> Result<(TokenInfo, String), TokenFileError> {
        if let Role::Ingest { gateway_id } = &role {
            telemetry::validate_device_id(gateway_id)?;
        }
        let token = generate_token();
        let mut info = None;
        self.change(|entries| {
            let mut id = new_id();
            while entries.iter().any(|e| e.info.id == id) {
                id = new_id();
            }
            let entry = Entry {
                info: TokenInfo {
                    id,
                    role,
                    created: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
                },
                hash: digest(&token),
            };
            info = Some(entry.info.clone());
            entries.push(entry);
            Ok(())
        })?;
        Ok((info.expect("set by the edit"), token))
    }

    /// Removes the token `id`; it is refused from the collector's next
    /// request on.
    pub fn revoke(&self, id: &str) -> Result<TokenInfo, TokenFileError> {
        let mut removed = None;
        self.change(|entries| {
            let index = entries
                .iter()
                .position(|e| e.info.id == id)
                .ok_or_else(|| TokenFileError::UnknownId(id.to_owned()))?;
            removed = Some(entries.remove(index).info);
            Ok(())
        })?;
        Ok(removed.expect("set by the edit"))
    }

    fn change(
        &self,
        edit: impl FnOnce(&mut Vec<Entry>) -> Result<(), TokenFileError>,
    ) -> Result<(), TokenFileError> {
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        // Start from the file as it is now, not as it was when loaded.
        let mut entries = read(&self.path)?.entries;
        edit(&mut entries)?;
        write(&self.path, &entries)?;
        *state = read(&self.path)?;
        Ok(())
    }

    fn reload_if_changed(&self) {
        let now = stamp(&self.path);
        let stale = self.state.read().map(|s| s.stamp != now).unwrap_or(false);
        if !stale {
            return;
        }
        match read(&self.path) {
            Ok(loaded) => {
                let count = loaded.entries.len();
                if let Ok(mut state) = self.state.write() {
                    *state = loaded;
                }
                tracing::info!(path = %self.path.display(), tokens = count, "token file reloaded");
            }
            Err(err) => {
                // Keeping the old tokens keeps gateways posting; a revoked
                // token stays valid until the file is fixed, hence ERROR.
                // Remember the stamp so that the error is logged once per change.
                if let Ok(mut state) = self.state.write() {
                    state.stamp = now;
                }
                tracing::error!(error = %err, "token file changed but cannot be read; keeping the tokens loaded before");
            }
        }
    }
}

/// A fresh token: `cst_` + 32 random bytes in base64url without padding.
pub fn generate_token() -> String {
    let bytes: [u8; TOKEN_BYTES] = rand::random();
    format!(
        "{TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

fn new_id() -> String {
    hex::encode(rand::random::<[u8; 4]>())
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

fn read(path: &Path) -> Result<Loaded, TokenFileError> {
    let before = stamp(path);
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(source) => {
            return Err(TokenFileError::Io {
                path: path.into(),
                source,
            })
        }
    };
    let mut loaded = Loaded {
        stamp: before,
        ..Loaded::default()
    };
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let format = |reason: String| TokenFileError::Format {
            path: path.into(),
            line: index + 1,
            reason,
        };
        let entry = parse_line(line).map_err(format)?;
        if loaded.entries.iter().any(|e| e.info.id == entry.info.id) {
            return Err(format(format!("id {} is used twice", entry.info.id)));
        }
        loaded.by_hash.insert(entry.hash, loaded.entries.len());
        loaded.entries.push(entry);
    }
    Ok(loaded)
}

fn parse_line(line: &str) -> Result<Entry, String> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let [id, role, gateway, hash, created] = fields[..] else {
        return Err(format!(
            "expected 5 fields (id role gateway hash created), found {}",
            fields.len()
        ));
    };
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(format!("id {id:?} must be letters, digits or '-'"));
    }
    let role = match (role, gateway) {
        ("ingest", "-") => return Err("an ingest token needs a gateway id".into()),
        ("ingest", gateway) => {
            telemetry::validate_device_id(gateway).map_err(|e| e.to_string())?;
            Role::Ingest {
                gateway_id: gateway.to_owned(),
            }
        }
        ("read", "-") => Role::Read,
        ("admin", "-") => Role::Admin,
        ("read" | "admin", _) => return Err(format!("a {role} token has gateway \"-\"")),
        (other, _) => return Err(format!("role {other:?} is not one of ingest, read, admin")),
    };
    let hex_digest = hash
        .strip_prefix(HASH_PREFIX)
        .ok_or_else(|| format!("hash must start with {HASH_PREFIX}"))?;
    let mut digest = [0u8; 32];
    hex::decode_to_slice(hex_digest, &mut digest)
        .map_err(|_| "hash must be sha256: and 64 hex digits".to_string())?;
    humantime::parse_rfc3339(created)
        .map_err(|_| format!("created {created:?} is not an RFC 3339 time"))?;
    Ok(Entry {
        info: TokenInfo {
            id: id.to_owned(),
            role,
            created: created.to_owned(),
        },
        hash: digest,
    })
}

fn write(path: &Path, entries: &[Entry]) -> Result<(), TokenFileError> {
    let io = |source| TokenFileError::Io {
        path: path.into(),
        source,
    };
    let mut text = String::from(
        "# cloud-sync tokens: id role gateway sha256-hash created. Manage with `cloud-sync tokens`.\n",
    );
    for entry in entries {
        text.push_str(&format!(
            "{} {} {} {HASH_PREFIX}{} {}\n",
            entry.info.id,
            entry.info.role.name(),
            entry.info.role.gateway_id().unwrap_or("-"),
            hex::encode(entry.hash),
            entry.info.created,
        ));
    }
    let temp = path.with_extension("tmp");
    std::fs::write(&temp, text).map_err(io)?;
    restrict(&temp).map_err(io)?;
    std::fs::rename(&temp, path).map_err(io)
}

/// Hashes are not secrets the way tokens are, but nobody else needs them:
/// owner read/write only.
#[cfg(unix)]
fn restrict(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

#[cfg(not(unix))]
fn restrict(_path: &Path) -> std::io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ingest(gateway: &str) -> Role {
        Role::Ingest {
            gateway_id: gateway.into(),
        }
    }

    #[test]
    fn add_verify_list_revoke() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        let file = TokenFile::load(&path).unwrap();
        assert!(file.list().is_empty());
        let (gw, gw_token) = file.add(ingest("gw-1")).unwrap();
        let (read, read_token) = file.add(Role::Read).unwrap();
        assert!(gw_token.starts_with(TOKEN_PREFIX));
        assert_eq!(gw_token.len(), TOKEN_PREFIX.len() + 43);
        assert_eq!(file.verify(&gw_token), Some(ingest("gw-1")));
        assert_eq!(file.verify(&read_token), Some(Role::Read));
        assert_eq!(file.verify("cst_nope"), None);
        assert_eq!(file.list(), vec![gw.clone(), read.clone()]);

        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(&gw_token[TOKEN_PREFIX.len()..]), "{text}");
        assert!(
            text.contains(&format!("{} ingest gw-1 sha256:", gw.id)),
            "{text}"
        );

        assert_eq!(file.revoke(&gw.id).unwrap(), gw);
        assert_eq!(file.verify(&gw_token), None);
        assert_eq!(file.list(), vec![read]);
        assert!(matches!(
            file.revoke(&gw.id),
            Err(TokenFileError::UnknownId(_))
        ));
    }

    #[test]
    fn another_process_s_changes_are_picked_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        let running = TokenFile::load(&path).unwrap();
        let cli = TokenFile::load(&path).unwrap();
        let (info, token) = cli.add(Role::Admin).unwrap();
        assert_eq!(running.verify(&token), Some(Role::Admin));
        cli.revoke(&info.id).unwrap();
        assert_eq!(running.verify(&token), None);
    }

    #[test]
    fn a_broken_file_keeps_the_old_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        let running = TokenFile::load(&path).unwrap();
        let (_, token) = running.add(Role::Read).unwrap();
        std::fs::write(&path, "garbage line\n").unwrap();
        assert_eq!(running.verify(&token), Some(Role::Read));
        assert!(TokenFile::load(&path).is_err());
    }

    #[test]
    fn bad_lines_name_the_line_and_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        let hash = format!("sha256:{}", "ab".repeat(32));
        for (line, expected) in [
            ("a b c".to_string(), "expected 5 fields"),
            (
                format!("a ingest - {hash} 2026-01-01T00:00:00Z"),
                "needs a gateway",
            ),
            (
                format!("a read gw {hash} 2026-01-01T00:00:00Z"),
                "gateway \"-\"",
            ),
            (
                format!("a root - {hash} 2026-01-01T00:00:00Z"),
                "role \"root\"",
            ),
            (
                "a read - md5:00 2026-01-01T00:00:00Z".to_string(),
                "sha256:",
            ),
            (format!("a read - {hash} yesterday"), "RFC 3339"),
            (
                format!("a ingest bad/gw {hash} 2026-01-01T00:00:00Z"),
                "device id",
            ),
        ] {
            std::fs::write(&path, format!("# c\n{line}\n")).unwrap();
            let err = TokenFile::load(&path).unwrap_err().to_string();
            assert!(err.contains("line 2"), "{err}");
            assert!(err.contains(expected), "{line}: {err}");
        }
    }
}
