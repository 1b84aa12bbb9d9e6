//! Encryption of the spool at rest: blocks and dead letters are sealed with
//! XChaCha20-Poly1305 under a key of the gateway's key ring.
//!
//! ```text
//! sealed value:  bytes 0..4    key id (u32 BE)
//!                bytes 4..28   nonce (24 random bytes)
//!                bytes 28..    ciphertext + 16-byte Poly1305 tag
//!
//! key ring (file `spool.key_file`, mode 0600, or $EDGE_AGENT_SPOOL_KEYS):
//!   # comment
//!   <id> <created, RFC 3339> <key, 32 bytes in base64>
//!   the last line is the current key: new blocks are sealed with it
//!
//! file "sealing" beside sled's files, one line per key id that ever sealed
//! something in this spool:
//!   <id> <hex of a sealed check value>
//! ```
//!
//! Invariants: a nonce is random and 192 bits long, so it never repeats
//! under one key; the caller's associated data (a block's header) is
//! authenticated, so a header moved onto another block's body fails to
//! open; a spool whose `sealing` file names a key is opened only when the
//! ring holds that key and it opens the check value, and is otherwise left
//! exactly as it was (see [`check`]).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

/// The environment variable that may hold the key ring instead of a file.
pub const KEYS_ENV: &str = "EDGE_AGENT_SPOOL_KEYS";
/// The file beside sled's that names the keys this spool was sealed with.
const SEALING_FILE: &str = "sealing";
/// What the check value in `sealing` holds once opened.
const CHECK_PLAINTEXT: &[u8] = b"edge-agent spool key check";
const KEY_ID_LEN: usize = 4;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// Bytes a sealed value adds to its plaintext.
pub const OVERHEAD: usize = KEY_ID_LEN + NONCE_LEN + TAG_LEN;

/// Why keys cannot be loaded or a sealed value cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The key file or variable is malformed, unreadable or too open.
    /// The operator must fix it; nothing was read from the spool.
    #[error("spool key ring {source_name}: {reason}")]
    Keys { source_name: String, reason: String },
    /// A sealed value names a key the ring does not hold.
    #[error("sealed with key {0}, which the key ring does not hold")]
    UnknownKey(u32),
    /// The value was sealed, but no key ring is configured.
    #[error("sealed, but no spool key is configured")]
    NoKeys,
    /// Authentication failed: the bytes were changed, or the key with this
    /// id is not the key they were sealed with.
    #[error("sealed value does not authenticate under key {0} (tampered, or the wrong key)")]
    Forged(u32),
    /// Shorter than an empty sealed value.
    #[error("sealed value is {0} bytes, too short")]
    Short(usize),
}

/// A 256-bit key with its id. Never printed.
#[derive(Clone)]
struct Key {
    id: u32,
    created: String,
    cipher: XChaCha20Poly1305,
}

/// The keys a gateway may seal and open with; empty means "no encryption".
#[derive(Clone, Default)]
pub struct KeyRing {
    /// Where the keys came from, for messages (`None` when empty).
    source: Option<String>,
    keys: BTreeMap<u32, Key>,
    /// The id new values are sealed with.
    current: Option<u32>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("source", &self.source)
            .field("ids", &self.keys.keys().collect::<Vec<_>>())
            .field("current", &self.current)
            .finish()
    }
}

/// One key as `edge-agent keys list` shows it: never the key itself.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KeyInfo {
    pub id: u32,
    pub created: String,
    pub current: bool,
}

impl KeyRing {
    /// A ring that seals nothing and opens only plaintext.
    pub fn none() -> KeyRing {
        KeyRing::default()
    }

    /// Whether new values are sealed.
    pub fn is_enabled(&self) -> bool {
        self.current.is_some()
    }

    /// Loads the ring from `$EDGE_AGENT_SPOOL_KEYS` if set, else from
    /// `file` if given, else an empty ring. Both at once is an error, so
    /// that nobody wonders which one is used.
    pub fn load(file: Option<&Path>) -> Result<KeyRing, SealError> {
        match (std::env::var(KEYS_ENV).ok(), file) {
            (Some(_), Some(file)) => Err(SealError::Keys {
                source_name: KEYS_ENV.into(),
                reason: format!(
                    "is set and spool.key_file is {}; use one of them",
                    file.display()
                ),
            }),
            (Some(text), None) => KeyRing::parse(KEYS_ENV, &text),
            (None, Some(file)) => KeyRing::read_file(file),
            (None, None) => Ok(KeyRing::none()),
        }
    }

    /// Reads a key file, refusing one that others than its owner can read.
    pub fn read_file(file: &Path) -> Result<KeyRing, SealError> {
        let name = file.display().to_string();
        let error = |reason: String| SealError::Keys {
            source_name: name.clone(),
            reason,
        };
        let meta = std::fs::metadata(file).map_err(|e| error(e.to_string()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(error(format!(
                    "mode is {mode:o}; a key file must be readable by its owner only (chmod 600)"
                )));
            }
        }
        let _ = meta;
        let text = std::fs::read_to_string(file).map_err(|e| error(e.to_string()))?;
        KeyRing::parse(&name, &text)
    }

    /// Parses the key ring text; the last key is the current one.
    pub fn parse(source_name: &str, text: &str) -> Result<KeyRing, SealError> {
        let mut ring = KeyRing {
            source: Some(source_name.to_string()),
            ..KeyRing::default()
        };
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            // Never echo the line: it holds a key.
            let error = |reason: &str| SealError::Keys {
                source_name: source_name.to_string(),
                reason: format!("line {}: {reason}", number + 1),
            };
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [id, created, key] = fields[..] else {
                return Err(error("expected `<id> <created> <base64 key>`"));
            };
            let id: u32 = id.parse().map_err(|_| error("the id is not a number"))?;
            let key = base64::engine::general_purpose::STANDARD
                .decode(key)
                .map_err(|_| error("the key is not base64"))?;
            if key.len() != 32 {
                return Err(error("the key is not 32 bytes"));
            }
            if ring.keys.contains_key(&id) {
                return Err(error("the id appears twice"));
            }
            let cipher = XChaCha20Poly1305::new_from_slice(&key).expect("32-byte key");
            ring.keys.insert(
                id,
                Key {
                    id,
                    created: created.to_string(),
                    cipher,
                },
            );
            ring.current = Some(id);
        }
        if ring.current.is_none() {
            return Err(SealError::Keys {
                source_name: source_name.to_string(),
                reason: "holds no key".into(),
            });
        }
        Ok(ring)
    }

    /// The keys, oldest first.
    pub fn list(&self) -> Vec<KeyInfo> {
        self.keys
            .values()
            .map(|key| KeyInfo {
                id: key.id,
                created: key.created.clone(),
                current: Some(key.id) == self.current,
            })
            .collect()
    }

    /// Whether the ring holds key `id`.
    pub fn has(&self, id: u32) -> bool {
        self.keys.contains_key(&id)
    }

    /// Seals `plaintext` under the current key, authenticating `aad` too.
    /// `None` when the ring is empty.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Option<Vec<u8>> {
        let key = &self.keys[&self.current?];
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let sealed = key
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .expect("encryption of an in-memory buffer cannot fail");
        let mut out = Vec::with_capacity(KEY_ID_LEN + NONCE_LEN + sealed.len());
        out.extend_from_slice(&key.id.to_be_bytes());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Some(out)
    }

    /// The key id a sealed value names.
    pub fn key_id(sealed: &[u8]) -> Result<u32, SealError> {
        if sealed.len() < OVERHEAD {
            return Err(SealError::Short(sealed.len()));
        }
        Ok(u32::from_be_bytes(sealed[..4].try_into().expect("4 bytes")))
    }

    /// Opens a value made by [`KeyRing::seal`] with the same `aad`.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        let id = KeyRing::key_id(sealed)?;
        if self.keys.is_empty() {
            return Err(SealError::NoKeys);
        }
        let key = self.keys.get(&id).ok_or(SealError::UnknownKey(id))?;
        let nonce = XNonce::from_slice(&sealed[KEY_ID_LEN..KEY_ID_LEN + NONCE_LEN]);
        key.cipher
            .decrypt(
                nonce,
                Payload {
                    msg: &sealed[KEY_ID_LEN + NONCE_LEN..],
                    aad,
                },
            )
            .map_err(|_| SealError::Forged(id))
    }
}

/// Why a spool's keys do not fit the ring; the spool is left untouched.
#[derive(Debug, thiserror::Error)]
pub enum KeyMismatch {
    #[error("the spool is encrypted (keys {ids:?}) but no spool key is configured: set spool.key_file or {KEYS_ENV}")]
    Missing { ids: Vec<u32> },
    #[error("the spool was sealed with key {id}, and the configured key {id} is not that key")]
    Wrong { id: u32 },
    #[error("the spool was sealed with keys {ids:?}; the configured key ring holds none of them")]
    NoneOf { ids: Vec<u32> },
    #[error("the sealing file {path}: {reason}")]
    File { path: PathBuf, reason: String },
}

/// Checks the ring against the spool's `sealing` file before anything else
/// touches the spool. Returns the key ids the file lists.
pub fn check(dir: &Path, ring: &KeyRing) -> Result<Vec<u32>, KeyMismatch> {
    let checks = read_checks(dir)?;
    if checks.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<u32> = checks.keys().copied().collect();
    if ring.keys.is_empty() {
        return Err(KeyMismatch::Missing { ids });
    }
    let mut known = 0;
    for (&id, sealed) in &checks {
        if !ring.has(id) {
            continue;
        }
        match ring.open(&check_aad(id), sealed) {
            Ok(plain) if plain == CHECK_PLAINTEXT => known += 1,
            _ => return Err(KeyMismatch::Wrong { id }),
        }
    }
    if known == 0 {
        return Err(KeyMismatch::NoneOf { ids });
    }
    Ok(ids)
}

/// Adds the ring's current key to the spool's `sealing` file unless it is
/// there; called before the first value is sealed with that key.
pub fn record_current(dir: &Path, ring: &KeyRing, listed: &[u32]) -> std::io::Result<()> {
    let Some(id) = ring.current else {
        return Ok(());
    };
    if listed.contains(&id) {
        return Ok(());
    }
    let sealed = ring
        .seal(&check_aad(id), CHECK_PLAINTEXT)
        .expect("the ring has a current key");
    let path = dir.join(SEALING_FILE);
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)?;
    writeln!(file, "{id} {}", hex::encode(sealed))?;
    file.sync_all()?;
    // The new file's name must be durable too.
    std::fs::File::open(dir)?.sync_all()
}

fn check_aad(id: u32) -> Vec<u8> {
    let mut aad = b"sealing check ".to_vec();
    aad.extend_from_slice(&id.to_be_bytes());
    aad
}

fn read_checks(dir: &Path) -> Result<BTreeMap<u32, Vec<u8>>, KeyMismatch> {
    let path = dir.join(SEALING_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(err) => {
            return Err(KeyMismatch::File {
                path,
                reason: err.to_string(),
            })
        }
    };
    let mut checks = BTreeMap::new();
    for (number, line) in text.lines().enumerate() {
        let bad = || KeyMismatch::File {
            path: path.clone(),
            reason: format!("line {} is not `<id> <hex>`", number + 1),
        };
        let (id, sealed) = line.split_once(' ').ok_or_else(bad)?;
        let id: u32 = id.parse().map_err(|_| bad())?;
        checks.insert(id, hex::decode(sealed.trim()).map_err(|_| bad())?);
    }
    Ok(checks)
}

/// Makes a new key and writes the ring to `file` with it as the current key
/// (creating the file, mode 0600, if needed). Returns the new key's id.
pub fn rotate(file: &Path) -> Result<u32, SealError> {
    let existing = match std::fs::metadata(file) {
        Ok(_) => Some(std::fs::read_to_string(file).map_err(|e| SealError::Keys {
            source_name: file.display().to_string(),
            reason: e.to_string(),
        })?),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
        Err(err) => {
            return Err(SealError::Keys {
                source_name: file.display().to_string(),
                reason: err.to_string(),
            })
        }
    };
    let id = match &existing {
        Some(_) => KeyRing::read_file(file)?
            .keys
            .keys()
            .max()
            .map_or(1, |max| max + 1),
        None => 1,
    };
    let key: [u8; 32] = rand::random();
    let created = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
    let mut text = existing.unwrap_or_else(|| {
        "# edge-agent spool keys: <id> <created> <base64 key>; the last one seals new blocks.\n\
         # Keep every key until `edge-agent spool stats` shows no block sealed with it.\n"
            .to_string()
    });
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&format!(
        "{id} {created} {}\n",
        base64::engine::general_purpose::STANDARD.encode(key)
    ));
    write_private(file, text.as_bytes()).map_err(|e| SealError::Keys {
        source_name: file.display().to_string(),
        reason: e.to_string(),
    })?;
    Ok(id)
}

/// Writes a file readable by its owner only, atomically.
fn write_private(file: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = file.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut out = options.open(&tmp)?;
    out.write_all(bytes)?;
    out.sync_all()?;
    std::fs::rename(&tmp, file)?;
    if let Some(parent) = file.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(lines: &[(u32, [u8; 32])]) -> KeyRing {
        let text: String = lines
            .iter()
            .map(|(id, key)| {
                format!(
                    "{id} 2026-11-29T00:00:00Z {}\n",
                    base64::engine::general_purpose::STANDARD.encode(key)
                )
            })
            .collect();
        KeyRing::parse("test", &text).unwrap()
    }

    #[test]
    fn seals_under_the_last_key_and_opens_with_any_listed_key() {
        let old = ring(&[(1, [1; 32])]);
        let sealed_old = old.seal(b"aad", b"reading").unwrap();
        let both = ring(&[(1, [1; 32]), (2, [2; 32])]);
        let sealed_new = both.seal(b"aad", b"reading").unwrap();
        assert_eq!(KeyRing::key_id(&sealed_new).unwrap(), 2);
        assert_eq!(both.open(b"aad", &sealed_old).unwrap(), b"reading");
        assert_eq!(both.open(b"aad", &sealed_new).unwrap(), b"reading");
        assert!(matches!(
            old.open(b"aad", &sealed_new),
            Err(SealError::UnknownKey(2))
        ));
        assert!(matches!(
            KeyRing::none().open(b"aad", &sealed_new),
            Err(SealError::NoKeys)
        ));
    }

    #[test]
    fn a_changed_byte_a_changed_aad_or_another_key_fails_to_open() {
        let keys = ring(&[(1, [1; 32])]);
        let sealed = keys.seal(b"header", b"payload").unwrap();
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x40;
            assert!(keys.open(b"header", &bad).is_err(), "byte {i}");
        }
        assert!(matches!(
            keys.open(b"other", &sealed),
            Err(SealError::Forged(1))
        ));
        let impostor = ring(&[(1, [9; 32])]);
        assert!(matches!(
            impostor.open(b"header", &sealed),
            Err(SealError::Forged(1))
        ));
        assert!(keys.open(b"header", &sealed[..OVERHEAD - 1]).is_err());
    }

    #[test]
    fn key_ring_errors_never_echo_the_key() {
        let secret = "c2VjcmV0LWtleS1ub3QtMzItYnl0ZXM=";
        for text in [
            format!("1 2026-11-29T00:00:00Z {secret}"),
            format!("x 2026-11-29T00:00:00Z {secret}"),
            format!("1 {secret}"),
        ] {
            let err = KeyRing::parse("test", &text).unwrap_err().to_string();
            assert!(!err.contains(secret), "{err}");
        }
        assert!(KeyRing::parse("test", "# only a comment\n").is_err());
        let debug = format!("{:?}", ring(&[(7, [7; 32])]));
        assert!(debug.contains("[7]") && !debug.contains("Bw"), "{debug}");
    }

    #[test]
    fn rotate_creates_an_owner_only_file_and_appends_keys() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("spool.keys");
        assert_eq!(rotate(&file).unwrap(), 1);
        assert_eq!(rotate(&file).unwrap(), 2);
        let ring = KeyRing::read_file(&file).unwrap();
        let ids: Vec<_> = ring.list().iter().map(|k| (k.id, k.current)).collect();
        assert_eq!(ids, [(1, false), (2, true)]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
            let err = KeyRing::read_file(&file).unwrap_err().to_string();
            assert!(err.contains("chmod 600"), "{err}");
        }
    }

    #[test]
    fn check_refuses_a_missing_or_wrong_key_and_accepts_a_rotated_ring() {
        let dir = tempfile::tempdir().unwrap();
        let first = ring(&[(1, [1; 32])]);
        assert_eq!(check(dir.path(), &first).unwrap(), Vec::<u32>::new());
        record_current(dir.path(), &first, &[]).unwrap();
        assert_eq!(check(dir.path(), &first).unwrap(), [1]);
        assert!(matches!(
            check(dir.path(), &KeyRing::none()),
            Err(KeyMismatch::Missing { .. })
        ));
        assert!(matches!(
            check(dir.path(), &ring(&[(1, [5; 32])])),
            Err(KeyMismatch::Wrong { id: 1 })
        ));
        assert!(matches!(
            check(dir.path(), &ring(&[(3, [3; 32])])),
            Err(KeyMismatch::NoneOf { .. })
        ));
        let rotated = ring(&[(1, [1; 32]), (2, [2; 32])]);
        record_current(dir.path(), &rotated, &[1]).unwrap();
        assert_eq!(check(dir.path(), &rotated).unwrap(), [1, 2]);
        // After the old key's blocks drained, the old key may go.
        assert_eq!(check(dir.path(), &ring(&[(2, [2; 32])])).unwrap(), [1, 2]);
    }
}
