//! Secrets at rest: values a tenant hands us (a provider's API key) are
//! stored sealed with AES-256-GCM under a master key the operator holds.
//!
//! - Each value gets a fresh random 96-bit nonce; the stored form is
//!   `nonce || ciphertext || tag`, beside the id of the key that sealed it.
//! - The caller names what the value belongs to (a configuration's id) and
//!   which of its fields it is (`key`, `secret`) as associated data, so a
//!   sealed value copied onto another row, or into the row's other field,
//!   does not open.
//! - A key's id is the first 8 bytes of its SHA-256, in hex: it says which key
//!   sealed a value without saying anything about the key.
//! - Rotation: the keyring opens values sealed by the current key or any
//!   previous one, and seals with the current one only; re-sealing every
//!   stored value with the current key retires the old ones.
//!
//! The master key is 32 random bytes, written as base64: in a file
//! (`--secrets-key-file`, created with mode 0600 on the embedded default when
//! missing) or in `SECRETS_KEY`.

use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rand::TryRngCore as _;
use secrecy::{ExposeSecret as _, SecretString};
use sha2::{Digest as _, Sha256};
use uuid::Uuid;

/// The length of a nonce, in bytes.
const NONCE_LEN: usize = 12;

/// Why a secret could not be had.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    /// A key (file or variable) that is not 32 bytes of base64.
    #[error("the secrets key {0} is not 32 bytes of base64")]
    BadKey(String),
    /// The key file could not be read or written.
    #[error("the secrets key file {path}: {reason}")]
    File { path: String, reason: String },
    /// Sealed by a key this service does not hold.
    #[error("sealed with key {0}, which is neither the current nor a previous secrets key")]
    UnknownKey(String),
    /// The value does not open: damaged, or moved from another row.
    #[error("a sealed value does not open (damaged, or not sealed for this record)")]
    Corrupt,
}

/// One master key.
#[derive(Clone)]
pub struct MasterKey {
    id: String,
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKey({})", self.id)
    }
}

impl MasterKey {
    /// A key from its base64 form (`where` names it in errors).
    pub fn from_base64(text: &SecretString, source: &str) -> Result<MasterKey, SecretsError> {
        let bytes = STANDARD
            .decode(text.expose_secret().trim())
            .map_err(|_| SecretsError::BadKey(source.to_owned()))?;
        let bytes: [u8; 32] = bytes
            .try_into()
            .map_err(|_| SecretsError::BadKey(source.to_owned()))?;
        Ok(MasterKey::from_bytes(&bytes))
    }

    fn from_bytes(bytes: &[u8; 32]) -> MasterKey {
        let digest = Sha256::digest(bytes);
        let id = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        MasterKey {
            id,
            cipher: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(bytes)),
        }
    }

    /// A new random key, and its base64 form to keep.
    pub fn generate() -> (MasterKey, SecretString) {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng
            .try_fill_bytes(&mut bytes)
            .expect("the operating system's random number generator failed");
        let text = SecretString::from(STANDARD.encode(bytes));
        (MasterKey::from_bytes(&bytes), text)
    }

    /// The key in `path`; with `create`, a new one is written there (mode
    /// 0600, its folder created) when the file does not exist.
    pub fn from_file(path: &Path, create: bool) -> Result<MasterKey, SecretsError> {
        let shown = path.display().to_string();
        let failed = |e: std::io::Error| SecretsError::File {
            path: shown.clone(),
            reason: e.to_string(),
        };
        match std::fs::read_to_string(path) {
            Ok(text) => MasterKey::from_base64(&SecretString::from(text), &shown),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent).map_err(failed)?;
                }
                let (key, text) = MasterKey::generate();
                write_private(path, text.expose_secret()).map_err(failed)?;
                Ok(key)
            }
            Err(e) => Err(failed(e)),
        }
    }

    /// The key's id, as stored beside what it sealed.
    pub fn id(&self) -> &str {
        &self.id
    }
}

/// Writes a new file only its owner may read (it must not exist yet).
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    writeln!(file, "{text}")?;
    file.sync_all()
}

/// A value as stored: which key sealed it, and `nonce || ciphertext || tag`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub key_id: String,
    pub bytes: Vec<u8>,
}

/// Which of its record's fields a sealed value is (part of the associated
/// data: a value sealed as one field does not open as another).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// A provider configuration's `key` (an access key id).
    Key,
    /// A provider configuration's `secret` (its API key).
    Secret,
    /// An organization's webhook signing secret.
    WebhookSecret,
}

impl Field {
    fn name(self) -> &'static [u8] {
        match self {
            Field::Key => b"key",
            Field::Secret => b"secret",
            Field::WebhookSecret => b"webhook-secret",
        }
    }
}

/// The associated data of `owner`'s `field`: the id's 16 bytes, then the
/// field's name.
fn associated(owner: Uuid, field: Field) -> Vec<u8> {
    [owner.as_bytes().as_slice(), field.name()].concat()
}

/// The current key (seals and opens) and the previous ones (open only).
#[derive(Debug, Clone)]
pub struct Keyring {
    current: MasterKey,
    previous: Vec<MasterKey>,
}

impl Keyring {
    pub fn new(current: MasterKey, previous: Vec<MasterKey>) -> Keyring {
        Keyring { current, previous }
    }

    /// Seals `value` as `owner`'s `field` with the current key.
    pub fn seal(&self, value: &SecretString, owner: Uuid, field: Field) -> Sealed {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng
            .try_fill_bytes(&mut nonce)
            .expect("the operating system's random number generator failed");
        let payload = Payload {
            msg: value.expose_secret().as_bytes(),
            aad: &associated(owner, field),
        };
        let sealed = self
            .current
            .cipher
            .encrypt(Nonce::from_slice(&nonce), payload)
            .expect("AES-GCM seals any value that fits in memory");
        let mut bytes = nonce.to_vec();
        bytes.extend_from_slice(&sealed);
        Sealed {
            key_id: self.current.id.clone(),
            bytes,
        }
    }

    /// Opens `owner`'s `field`, sealed by the current or a previous key.
    pub fn open(
        &self,
        sealed: &Sealed,
        owner: Uuid,
        field: Field,
    ) -> Result<SecretString, SecretsError> {
        let key = std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|k| k.id == sealed.key_id)
            .ok_or_else(|| SecretsError::UnknownKey(sealed.key_id.clone()))?;
        if sealed.bytes.len() < NONCE_LEN {
            return Err(SecretsError::Corrupt);
        }
        let (nonce, ciphertext) = sealed.bytes.split_at(NONCE_LEN);
        let payload = Payload {
            msg: ciphertext,
            aad: &associated(owner, field),
        };
        let plain = key
            .cipher
            .decrypt(Nonce::from_slice(nonce), payload)
            .map_err(|_| SecretsError::Corrupt)?;
        String::from_utf8(plain)
            .map(SecretString::from)
            .map_err(|_| SecretsError::Corrupt)
    }

    /// Whether `sealed` should be sealed again with the current key.
    pub fn is_stale(&self, sealed: &Sealed) -> bool {
        sealed.key_id != self.current.id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> SecretString {
        SecretString::from(s)
    }

    #[test]
    fn values_open_only_for_their_owner_and_never_repeat() {
        let (key, _) = MasterKey::generate();
        let ring = Keyring::new(key, Vec::new());
        let owner = Uuid::now_v7();
        let a = ring.seal(&secret("sk-live-123"), owner, Field::Secret);
        let b = ring.seal(&secret("sk-live-123"), owner, Field::Secret);
        assert_ne!(a.bytes, b.bytes, "a fresh nonce each time");
        assert!(
            !a.bytes
                .windows(b"sk-live-123".len())
                .any(|w| w == b"sk-live-123"),
            "no plain text in the sealed form"
        );
        assert_eq!(
            ring.open(&a, owner, Field::Secret)
                .expect("opens")
                .expose_secret(),
            "sk-live-123"
        );
        assert!(matches!(
            ring.open(&a, Uuid::now_v7(), Field::Secret),
            Err(SecretsError::Corrupt)
        ));
        assert!(
            matches!(ring.open(&a, owner, Field::Key), Err(SecretsError::Corrupt)),
            "a secret moved into the key column does not open"
        );
        let mut damaged = a.clone();
        let last = damaged.bytes.len() - 1;
        damaged.bytes[last] ^= 1;
        assert!(matches!(
            ring.open(&damaged, owner, Field::Secret),
            Err(SecretsError::Corrupt)
        ));
    }

    #[test]
    fn previous_keys_open_and_the_current_one_seals() {
        let (old, _) = MasterKey::generate();
        let (new, _) = MasterKey::generate();
        let owner = Uuid::now_v7();
        let sealed_old =
            Keyring::new(old.clone(), Vec::new()).seal(&secret("v"), owner, Field::Key);
        let rotated = Keyring::new(new.clone(), vec![old]);
        assert!(rotated.is_stale(&sealed_old));
        assert_eq!(
            rotated
                .open(&sealed_old, owner, Field::Key)
                .expect("old opens")
                .expose_secret(),
            "v"
        );
        let resealed = rotated.seal(&secret("v"), owner, Field::Key);
        assert_eq!(resealed.key_id, new.id());
        assert!(!rotated.is_stale(&resealed));
        let forgotten = Keyring::new(new, Vec::new());
        assert!(matches!(
            forgotten.open(&sealed_old, owner, Field::Key),
            Err(SecretsError::UnknownKey(_))
        ));
    }

    #[test]
    fn key_files_are_made_once_private_and_read_back() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("keys/secrets.key");
        assert!(matches!(
            MasterKey::from_file(&path, false),
            Err(SecretsError::File { .. })
        ));
        let made = MasterKey::from_file(&path, true).expect("made");
        let again = MasterKey::from_file(&path, true).expect("read back");
        assert_eq!(made.id(), again.id(), "the same key, not a new one");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(&path, "not base64 at all").expect("write");
        assert!(matches!(
            MasterKey::from_file(&path, true),
            Err(SecretsError::BadKey(_))
        ));
        assert!(matches!(
            MasterKey::from_base64(&secret(&STANDARD.encode([1u8; 16])), "SECRETS_KEY"),
            Err(SecretsError::BadKey(_))
        ));
        assert!(!format!("{made:?}").contains(&STANDARD.encode([0u8; 4])));
    }
}
