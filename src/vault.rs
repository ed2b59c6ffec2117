//! The token vault: AES-256-GCM with a key ring. Every ciphertext names the key that
//! sealed it, so keys can be rotated while old ciphertexts stay readable, and is
//! bound to its row and field (associated data), so a ciphertext copied into another
//! connection's row does not decrypt.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, Generate, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use secrecy::{ExposeSecret, SecretBox, SecretString};
use serde::Deserialize;

use crate::domain::{ConnectionId, WebhookEndpointId};

/// Where the vault's keys come from (`[vault]` in the settings).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaultSettings {
    /// Base64 of a 32-byte key; takes precedence over `key_file`. New tokens are
    /// sealed with it.
    pub key: SecretString,
    /// Earlier keys, comma-separated (base64 has no commas), still able to open
    /// what they sealed until `finsync tokens rotate-key` has re-sealed everything
    /// under `key`. One string so that it can come from one environment variable.
    pub previous_keys: SecretString,
    /// Where the key lives when `key` is empty; created (owner-only) if missing and
    /// `generate_key` is on.
    pub key_file: PathBuf,
    pub generate_key: bool,
}

/// Context string binding a sealed token to its connection and column.
pub fn seal_context(connection: ConnectionId, field: &str) -> String {
    format!("connection:{connection}:{field}")
}

/// Context string binding a sealed idempotent answer to its key's row.
pub fn idempotent_answer_context(key_id: &str) -> String {
    format!("idempotency_key:{key_id}:body")
}

/// Context string binding a webhook endpoint's sealed signing secret to its row.
pub fn webhook_secret_context(endpoint: WebhookEndpointId) -> String {
    format!("webhook_endpoint:{endpoint}:secret")
}

/// Format version byte, first in every ciphertext.
const FORMAT_V1: u8 = 1;
const NONCE_LEN: usize = 12;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VaultError {
    #[error("vault: no key configured (set FINSYNC__VAULT__KEY to base64 of 32 random bytes)")]
    NoKey,
    #[error("vault: the key must be base64 of exactly 32 bytes")]
    BadKey,
    #[error("vault: cannot read or create the key file {path}: {source}")]
    KeyFile {
        path: String,
        source: std::io::Error,
    },
    #[error("vault: ciphertext is sealed with key `{0}`, which is not in the key ring")]
    UnknownKey(String),
    #[error("vault: ciphertext is damaged or belongs to another record")]
    Corrupt,
}

/// The key ring. `current` seals; every key in `keys` can open.
pub struct Vault {
    current: String,
    keys: BTreeMap<String, Aes256Gcm>,
    /// Per key: an HMAC key derived from it, for [`Vault::keyed_hash`].
    derived_keys: BTreeMap<String, SecretString>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("current", &self.current)
            .field("keys", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Vault {
    /// Builds the ring from settings: `vault.key` if set, else `vault.key_file`,
    /// generating the file (owner-only) when the settings allow it.
    pub fn from_settings(settings: &VaultSettings) -> Result<Self, VaultError> {
        let mut vault = Self::current_from_settings(settings)?;
        for previous in settings
            .previous_keys
            .expose_secret()
            .split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
        {
            vault.add_key(previous)?;
        }
        Ok(vault)
    }

    /// A new random key, base64, for `vault.key`.
    pub fn generate_key() -> SecretString {
        SecretString::from(STANDARD.encode(<[u8; 32]>::generate()))
    }

    /// The id of the key that sealed `sealed`, if it is readable at all.
    pub fn sealed_with(sealed: &[u8]) -> Option<&str> {
        let (&key_len, rest) = sealed.get(1..)?.split_first()?;
        std::str::from_utf8(rest.get(..usize::from(key_len))?).ok()
    }

    fn current_from_settings(settings: &VaultSettings) -> Result<Self, VaultError> {
        let configured = settings.key.expose_secret().trim();
        if !configured.is_empty() {
            return Self::single(configured);
        }
        if settings.key_file.as_os_str().is_empty() {
            return Err(VaultError::NoKey);
        }
        let path = &settings.key_file;
        match fs::read_to_string(path) {
            Ok(text) => Self::single(text.trim()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && settings.generate_key => {
                let encoded = STANDARD.encode(<[u8; 32]>::generate());
                match write_owner_only(path, &encoded) {
                    Ok(()) => Self::single(&encoded),
                    // Another process created it first: use theirs.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        let text =
                            fs::read_to_string(path).map_err(|source| VaultError::KeyFile {
                                path: path.display().to_string(),
                                source,
                            })?;
                        Self::single(text.trim())
                    }
                    Err(source) => Err(VaultError::KeyFile {
                        path: path.display().to_string(),
                        source,
                    }),
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(VaultError::NoKey),
            Err(source) => Err(VaultError::KeyFile {
                path: path.display().to_string(),
                source,
            }),
        }
    }

    /// A ring of one key; its id is derived from the key so that every process
    /// configured with the same key agrees on it without configuring ids.
    pub fn single(encoded: &str) -> Result<Self, VaultError> {
        let mut vault = Self {
            current: String::new(),
            keys: BTreeMap::new(),
            derived_keys: BTreeMap::new(),
        };
        vault.current = vault.add_key(encoded)?;
        Ok(vault)
    }

    /// Adds a key that can open old ciphertexts; returns its id.
    pub fn add_key(&mut self, encoded: &str) -> Result<String, VaultError> {
        let bytes = SecretBox::new(Box::new(
            STANDARD.decode(encoded).map_err(|_| VaultError::BadKey)?,
        ));
        let cipher =
            Aes256Gcm::new_from_slice(bytes.expose_secret()).map_err(|_| VaultError::BadKey)?;
        let id = key_id(bytes.expose_secret());
        let derived = crate::fingerprint::sha256_hex(
            &[b"finsync derived\0".as_slice(), bytes.expose_secret()].concat(),
        );
        self.keys.insert(id.clone(), cipher);
        self.derived_keys
            .insert(id.clone(), SecretString::from(derived));
        Ok(id)
    }

    /// A stable, keyed stand-in for `value` (a user id) in records that must
    /// outlive it, such as the audit trail: the same value gives the same
    /// pseudonym under the same current key, and nobody without the key can tell
    /// which value it stands for. Rotating the key starts new pseudonyms.
    pub fn pseudonym(&self, value: &str) -> Result<String, VaultError> {
        let mut hex = self.keyed_hash("pseudonym", value)?;
        hex.truncate(32);
        Ok(hex)
    }

    /// Whether `mac` is [`Self::keyed_hash`] of `value` for `purpose` under any key
    /// of the ring (so what an earlier key signed still checks after a rotation).
    pub fn keyed_hash_matches(&self, purpose: &str, value: &str, mac: &str) -> bool {
        self.derived_keys
            .values()
            .any(|key| crate::fingerprint::same(&keyed_mac(key, purpose, value), mac))
    }

    /// HMAC-SHA256 (hex) of `value` for one `purpose`, under a key derived from the
    /// current vault key: what signs values finsync hands out and must recognise
    /// (status page forms and sessions, the audit trail's purge records), with
    /// nothing more to configure.
    pub fn keyed_hash(&self, purpose: &str, value: &str) -> Result<String, VaultError> {
        let key = self
            .derived_keys
            .get(&self.current)
            .ok_or(VaultError::NoKey)?;
        Ok(keyed_mac(key, purpose, value))
    }

    pub fn current_key_id(&self) -> &str {
        &self.current
    }

    /// Seals `plaintext` for one field of one record (`context`, e.g.
    /// `connection:<id>:access_token`).
    pub fn seal(&self, context: &str, plaintext: &SecretString) -> Result<Vec<u8>, VaultError> {
        let cipher = self.keys.get(&self.current).ok_or(VaultError::NoKey)?;
        let nonce = Nonce::generate();
        let sealed = cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext.expose_secret().as_bytes(),
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| VaultError::Corrupt)?;
        let key = self.current.as_bytes();
        let mut out = Vec::with_capacity(2 + key.len() + NONCE_LEN + sealed.len());
        out.push(FORMAT_V1);
        out.push(u8::try_from(key.len()).map_err(|_| VaultError::BadKey)?);
        out.extend_from_slice(key);
        out.extend_from_slice(nonce.as_slice());
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    pub fn open(&self, context: &str, sealed: &[u8]) -> Result<SecretString, VaultError> {
        let (&version, rest) = sealed.split_first().ok_or(VaultError::Corrupt)?;
        let (&key_len, rest) = rest.split_first().ok_or(VaultError::Corrupt)?;
        if version != FORMAT_V1 || rest.len() < usize::from(key_len) + NONCE_LEN {
            return Err(VaultError::Corrupt);
        }
        let (key, rest) = rest.split_at(usize::from(key_len));
        let (nonce, body) = rest.split_at(NONCE_LEN);
        let key = std::str::from_utf8(key).map_err(|_| VaultError::Corrupt)?;
        let cipher = self
            .keys
            .get(key)
            .ok_or_else(|| VaultError::UnknownKey(key.to_owned()))?;
        let nonce = Nonce::try_from(nonce).map_err(|_| VaultError::Corrupt)?;
        let plain = cipher
            .decrypt(
                &nonce,
                Payload {
                    msg: body,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| VaultError::Corrupt)?;
        String::from_utf8(plain)
            .map(SecretString::from)
            .map_err(|_| VaultError::Corrupt)
    }
}

/// First 8 bytes of SHA-256 of the key, hex: identifies a key without revealing it.
/// HMAC-SHA256 (hex) of `purpose`, a NUL and `value`, under `key`.
fn keyed_mac(key: &SecretString, purpose: &str, value: &str) -> String {
    use hmac::Mac;
    let mac = crate::fingerprint::hmac_sha256(key, &[purpose.as_bytes(), b"\0", value.as_bytes()]);
    hex::encode(mac.finalize().into_bytes())
}

fn key_id(key: &[u8]) -> String {
    let mut id = crate::fingerprint::sha256_hex(key);
    id.truncate(16);
    id
}

fn write_owner_only(path: &Path, contents: &str) -> std::io::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent)?;
    }
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> String {
        STANDARD.encode([7u8; 32])
    }

    #[test]
    fn sealed_tokens_open_only_in_their_own_context() {
        let vault = Vault::single(&key()).unwrap();
        let token = SecretString::from("mer_at_secret-value");
        let sealed = vault.seal("connection:a:access_token", &token).unwrap();
        assert!(
            !sealed
                .windows(b"secret-value".len())
                .any(|w| w == b"secret-value")
        );
        let opened = vault.open("connection:a:access_token", &sealed).unwrap();
        assert_eq!(opened.expose_secret(), "mer_at_secret-value");
        assert!(matches!(
            vault.open("connection:b:access_token", &sealed),
            Err(VaultError::Corrupt)
        ));
    }

    #[test]
    fn a_rotated_ring_still_opens_old_ciphertexts() {
        let old = Vault::single(&key()).unwrap();
        let sealed = old.seal("ctx", &SecretString::from("t")).unwrap();
        let mut ring = Vault::single(&STANDARD.encode([9u8; 32])).unwrap();
        assert!(matches!(
            ring.open("ctx", &sealed),
            Err(VaultError::UnknownKey(_))
        ));
        ring.add_key(&key()).unwrap();
        assert_eq!(ring.open("ctx", &sealed).unwrap().expose_secret(), "t");
    }

    #[test]
    fn generated_key_file_is_owner_only_and_reused() {
        let dir = std::env::temp_dir().join(format!("finsync-vault-{}", uuid::Uuid::new_v4()));
        let settings = VaultSettings {
            key: SecretString::from(""),
            previous_keys: SecretString::from(""),
            key_file: dir.join("vault.key"),
            generate_key: true,
        };
        let first = Vault::from_settings(&settings).unwrap();
        let second = Vault::from_settings(&settings).unwrap();
        assert_eq!(first.current_key_id(), second.current_key_id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.join("vault.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn production_without_a_key_refuses() {
        let settings = VaultSettings {
            key: SecretString::from(""),
            previous_keys: SecretString::from(""),
            key_file: "".into(),
            generate_key: false,
        };
        assert!(matches!(
            Vault::from_settings(&settings),
            Err(VaultError::NoKey)
        ));
    }
}
