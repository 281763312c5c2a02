//! Key material ([`Key`]) and the names of key-encryption keys ([`KeyId`], [`KeyRef`]).

use std::fmt;

use rand::rngs::OsRng;
use rand::RngCore;
use secrecy::{ExposeSecret, ExposeSecretMut, SecretBox};

use crate::error::{CryptoError, Result};

/// A 256-bit AES key: a KEK version, TEK, LEK, CEK or FEK.
///
/// The bytes live in one heap allocation that is zeroized when the key is dropped; moving a `Key`
/// moves only the pointer, so no stray copies are left on the stack. There is no `Clone` (share
/// an `Arc<Key>` instead) and `Debug` prints a fixed marker: neither the bytes nor anything
/// derived from them (no fingerprint) ever reach a log.
pub struct Key(SecretBox<[u8; Key::LEN]>);

impl Key {
    /// Key length in bytes.
    pub const LEN: usize = 32;

    /// A fresh key from the operating system's random number generator.
    pub fn generate() -> Self {
        Self(SecretBox::init_with_mut(|bytes: &mut [u8; Self::LEN]| OsRng.fill_bytes(bytes)))
    }

    /// A key from exactly 32 bytes. The caller remains responsible for zeroizing its copy.
    pub fn from_slice(bytes: &[u8]) -> Result<Self> {
        if bytes.len() != Self::LEN {
            return Err(CryptoError::InvalidInput("a key is exactly 32 bytes"));
        }
        Ok(Self::init_with(|k| k.copy_from_slice(bytes)))
    }

    /// Builds a key in place, so its bytes are never held anywhere but the zeroizing box.
    pub(crate) fn init_with(fill: impl FnOnce(&mut [u8; Self::LEN])) -> Self {
        Self(SecretBox::init_with_mut(fill))
    }

    pub(crate) fn bytes_mut(&mut self) -> &mut [u8; Self::LEN] {
        self.0.expose_secret_mut()
    }

    /// The raw key bytes. Only for handing the key to a cipher or a key store; never log them.
    pub fn expose_secret(&self) -> &[u8; Self::LEN] {
        self.0.expose_secret()
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(<redacted>)")
    }
}

/// The name of a key-encryption key as recorded in a wrapped key: a key provider's key id
/// (`local:<uuid>` for the local key file, a key URL for a KMS), or the name of an LEK when the
/// LEK wraps FEKs. UTF-8, 1 to [`KeyId::MAX_LEN`] bytes, no control characters.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(String);

impl KeyId {
    /// Longest key id the wrapped-key format accepts, in bytes.
    pub const MAX_LEN: usize = 1024;

    pub fn new(id: impl Into<String>) -> Result<Self> {
        let id = id.into();
        if id.is_empty() || id.len() > Self::MAX_LEN {
            return Err(CryptoError::InvalidInput("a key id is 1 to 1024 bytes"));
        }
        if id.chars().any(char::is_control) {
            return Err(CryptoError::InvalidInput("a key id has no control characters"));
        }
        Ok(Self(id))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A fresh id for a local key file: `local:` and a random UUID.
    pub(crate) fn new_local() -> Self {
        Self(format!("local:{}", uuid::Uuid::new_v4()))
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({:?})", self.0)
    }
}

impl TryFrom<&str> for KeyId {
    type Error = CryptoError;
    fn try_from(s: &str) -> Result<Self> {
        Self::new(s)
    }
}

/// Which key, at which version, wrapped a key: stored in the wrapped key's header so that
/// unwrapping picks the right version after a rotation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyRef {
    pub id: KeyId,
    pub version: u32,
}

impl KeyRef {
    pub fn new(id: KeyId, version: u32) -> Self {
        Self { id, version }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_bytes() {
        let key = Key::from_slice(&[0xab; 32]).unwrap();
        let shown = format!("{key:?} {key:#?}");
        assert_eq!(shown, "Key(<redacted>) Key(<redacted>)");
        assert!(!shown.to_lowercase().contains("ab"));
    }

    #[test]
    fn generated_keys_differ() {
        assert_ne!(Key::generate().expose_secret(), Key::generate().expose_secret());
    }

    #[test]
    fn from_slice_needs_32_bytes() {
        assert!(Key::from_slice(&[0; 31]).is_err());
        assert!(Key::from_slice(&[0; 33]).is_err());
        assert_eq!(Key::from_slice(&[7; 32]).unwrap().expose_secret(), &[7; 32]);
    }

    #[test]
    fn key_id_rules() {
        assert!(KeyId::new("").is_err());
        assert!(KeyId::new("a\nb").is_err());
        assert!(KeyId::new("x".repeat(1025)).is_err());
        assert_eq!(KeyId::new("local:abc").unwrap().as_str(), "local:abc");
    }
}
