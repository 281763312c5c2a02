//! Wrapped keys: a 256-bit key encrypted under a key-encryption key (a KEK version wrapping a
//! TEK, LEK or CEK; an LEK wrapping an FEK), bound to the row it belongs to.
//!
//! # Wrapped-key format, version 1
//!
//! | offset | size | content |
//! |---|---|---|
//! | 0 | 1 | format version, `0x01` |
//! | 1 | 2 | `L`, length of the KEK id, u16 big-endian, 1 to 1024 |
//! | 3 | `L` | KEK id, UTF-8 (for example `local:6f1c…`, a KMS key URL) |
//! | 3+L | 4 | KEK version, u32 big-endian |
//! | 7+L | 12 | AES-GCM nonce, random |
//! | 19+L | 32 | the wrapped key, AES-256-GCM ciphertext |
//! | 51+L | 16 | AES-GCM tag |
//!
//! Total length: exactly `67 + L` bytes; anything longer or shorter is rejected.
//!
//! Associated data: the [binding](crate::binding) of the wrapped key, followed by the header
//! (bytes `0 .. 7+L`: version, KEK id and KEK version). The KEK id and version are therefore
//! authenticated too: a header edited to point at another version fails like a wrong key.

use std::fmt;

use zeroize::Zeroize;

use crate::aead::{random_nonce, Cipher, NONCE_LEN, TAG_LEN};
use crate::binding::Binding;
use crate::error::{CryptoError, Result};
use crate::key::{Key, KeyId, KeyRef};

/// Version byte of the wrapped-key format.
pub const WRAPPED_KEY_VERSION: u8 = 1;

const SEALED_LEN: usize = Key::LEN + TAG_LEN;

/// A key wrapped under a KEK (format in the module docs). Holds no secret: the bytes are safe to
/// store in the database next to the row they belong to.
#[derive(Clone, PartialEq, Eq)]
pub struct WrappedKey {
    kek: KeyRef,
    nonce: [u8; NONCE_LEN],
    sealed: [u8; SEALED_LEN],
}

impl WrappedKey {
    /// Parses the stored bytes. Never panics, whatever the input.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        const WHAT: &str = "wrapped key";
        let bad = |reason| CryptoError::malformed(WHAT, reason);
        let [version, rest @ ..] = bytes else {
            return Err(bad("empty"));
        };
        if *version != WRAPPED_KEY_VERSION {
            return Err(CryptoError::UnsupportedVersion { what: WHAT, version: *version });
        }
        let [l0, l1, rest @ ..] = rest else {
            return Err(bad("cut short before the key id length"));
        };
        let id_len = usize::from(u16::from_be_bytes([*l0, *l1]));
        if id_len == 0 || id_len > KeyId::MAX_LEN {
            return Err(bad("key id length out of range"));
        }
        if rest.len() != id_len + 4 + NONCE_LEN + SEALED_LEN {
            return Err(bad("wrong length"));
        }
        let (id, rest) = rest.split_at(id_len);
        let id = std::str::from_utf8(id).map_err(|_| bad("key id is not UTF-8"))?;
        let id = KeyId::new(id).map_err(|_| bad("invalid key id"))?;
        let (version, rest) = rest.split_at(4);
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        Ok(Self {
            kek: KeyRef::new(id, u32::from_be_bytes(version.try_into().map_err(|_| bad("kek version"))?)),
            nonce: nonce.try_into().map_err(|_| bad("nonce"))?,
            sealed: sealed.try_into().map_err(|_| bad("ciphertext"))?,
        })
    }

    /// The stored bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.header();
        out.extend_from_slice(&self.nonce);
        out.extend_from_slice(&self.sealed);
        out
    }

    /// Which KEK, at which version, wrapped this key.
    pub fn kek(&self) -> &KeyRef {
        &self.kek
    }

    fn header(&self) -> Vec<u8> {
        let id = self.kek.id.as_str().as_bytes();
        let mut out = Vec::with_capacity(7 + id.len() + NONCE_LEN + SEALED_LEN);
        out.push(WRAPPED_KEY_VERSION);
        // KeyId guarantees at most 1024 bytes.
        out.extend_from_slice(&(id.len() as u16).to_be_bytes());
        out.extend_from_slice(id);
        out.extend_from_slice(&self.kek.version.to_be_bytes());
        out
    }

    fn aad(&self, binding: &Binding) -> Vec<u8> {
        let mut aad = binding.to_bytes();
        aad.extend_from_slice(&self.header());
        aad
    }
}

impl fmt::Debug for WrappedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WrappedKey").field("kek_id", &self.kek.id).field("kek_version", &self.kek.version).finish()
    }
}

/// Wraps `key` under `kek`, recording `kek_ref` (the KEK's id and version) in the header and
/// binding the result to `binding`.
pub fn wrap_key(kek: &Key, kek_ref: &KeyRef, key: &Key, binding: &Binding) -> Result<WrappedKey> {
    let mut wrapped = WrappedKey { kek: kek_ref.clone(), nonce: random_nonce(), sealed: [0; SEALED_LEN] };
    let aad = wrapped.aad(binding);
    let (body, tag) = wrapped.sealed.split_at_mut(Key::LEN);
    body.copy_from_slice(key.expose_secret());
    match Cipher::new(kek).seal_in_place(&wrapped.nonce, &aad, body) {
        Ok(t) => tag.copy_from_slice(&t),
        Err(e) => {
            // Never leave the key in the clear, even on a path AES-GCM cannot take for 32 bytes.
            body.zeroize();
            return Err(e);
        }
    }
    Ok(wrapped)
}

/// Unwraps a key with `kek`. Fails with [`CryptoError::Integrity`] for a wrong KEK, a wrong
/// binding (the wrapped key was copied from another row) or altered bytes.
pub fn unwrap_key(kek: &Key, wrapped: &WrappedKey, binding: &Binding) -> Result<Key> {
    let aad = wrapped.aad(binding);
    let (body, tag) = wrapped.sealed.split_at(Key::LEN);
    // Decrypt inside the key's own zeroizing allocation: the plaintext never exists elsewhere.
    let mut key = Key::init_with(|k| k.copy_from_slice(body));
    Cipher::new(kek).open_in_place(&wrapped.nonce, &aad, key.bytes_mut(), tag)?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn kek_ref(version: u32) -> KeyRef {
        KeyRef::new(KeyId::new("local:test").unwrap(), version)
    }

    #[test]
    fn layout_is_byte_exact() {
        let kek = Key::generate();
        let key = Key::generate();
        let binding = Binding::tek(Uuid::nil());
        let bytes = wrap_key(&kek, &kek_ref(7), &key, &binding).unwrap().to_bytes();
        assert_eq!(bytes.len(), 67 + "local:test".len());
        assert_eq!(bytes[0], 1);
        assert_eq!(&bytes[1..3], &[0, 10]);
        assert_eq!(&bytes[3..13], b"local:test");
        assert_eq!(&bytes[13..17], &[0, 0, 0, 7]);
        let parsed = WrappedKey::parse(&bytes).unwrap();
        assert_eq!(parsed.kek(), &kek_ref(7));
        assert_eq!(unwrap_key(&kek, &parsed, &binding).unwrap().expose_secret(), key.expose_secret());
    }

    #[test]
    fn header_is_authenticated() {
        let kek = Key::generate();
        let binding = Binding::tek(Uuid::nil());
        let mut bytes = wrap_key(&kek, &kek_ref(1), &Key::generate(), &binding).unwrap().to_bytes();
        bytes[16] = 2; // KEK version 1 -> 2, same KEK bytes
        let edited = WrappedKey::parse(&bytes).unwrap();
        assert!(matches!(unwrap_key(&kek, &edited, &binding), Err(CryptoError::Integrity)));
    }

    #[test]
    fn debug_shows_only_the_kek_reference() {
        let w = wrap_key(&Key::generate(), &kek_ref(3), &Key::generate(), &Binding::tek(Uuid::nil())).unwrap();
        assert_eq!(format!("{w:?}"), r#"WrappedKey { kek_id: KeyId("local:test"), kek_version: 3 }"#);
    }
}
