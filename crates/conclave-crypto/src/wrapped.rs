//! Wrapped keys: a 256-bit key encrypted under a key-encryption key (a KEK version wrapping a
//! TEK, LEK or CEK; an LEK wrapping an FEK), bound to the row it belongs to.
//!
//! Two formats are read; each provider writes one:
//!
//! - **Version 1**: the key is AES-256-GCM-encrypted directly under the KEK version, with the
//!   binding as associated data. Written by [`LocalKeyProvider`](crate::LocalKeyProvider) and for
//!   FEKs under an LEK.
//! - **Version 2**: for a KEK that cannot take associated data (an RSA key in a KMS, used with
//!   `RSA-OAEP-256`). The provider wraps a fresh 256-bit *intermediate* key; the key itself is
//!   AES-256-GCM-encrypted under that intermediate key with the binding as associated data. The
//!   KMS-wrapped intermediate key is part of the authenticated header, so a wrapped key copied to
//!   another row, or one whose intermediate key was swapped for another's, fails like a wrong key.
//!   Written by the Azure Key Vault provider (crate `conclave-azure`).
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
//!
//! # Wrapped-key format, version 2
//!
//! | offset | size | content |
//! |---|---|---|
//! | 0 | 1 | format version, `0x02` |
//! | 1 | 2 | `L`, length of the KEK id, u16 big-endian, 1 to 1024 |
//! | 3 | `L` | KEK id, UTF-8 (the vault key's URL without version) |
//! | 3+L | 4 | KEK version, u32 big-endian (the provider's ordinal of the version below) |
//! | 7+L | 1 | `V`, length of the provider's version name, 1 to 255 |
//! | 8+L | `V` | provider's version name, printable ASCII (a Key Vault key version) |
//! | 8+L+V | 2 | `W`, length of the provider-wrapped intermediate key, u16 big-endian, 1 to 2048 |
//! | 10+L+V | `W` | the intermediate key as the provider wrapped it (`RSA-OAEP-256` ciphertext) |
//! | 10+L+V+W | 12 | AES-GCM nonce, random |
//! | 22+L+V+W | 32 | the wrapped key, AES-256-GCM ciphertext under the intermediate key |
//! | 54+L+V+W | 16 | AES-GCM tag |
//!
//! Total length: exactly `70 + L + V + W` bytes; anything longer or shorter is rejected.
//!
//! Associated data: the binding, followed by the header (bytes `0 .. 10+L+V+W`: everything
//! before the nonce, the provider-wrapped intermediate key included). Both the ordinal and the
//! provider's version name are recorded: the provider unwraps with the name (no lookup), and
//! rotation, retirement and `keys status` speak in ordinals like every other provider.
//!
//! Each version-2 wrapped key has its own intermediate key, so unwrapping one costs one KMS call
//! and proves nothing about any other.

use std::fmt;

use zeroize::Zeroize;

use crate::aead::{random_nonce, Cipher, NONCE_LEN, TAG_LEN};
use crate::binding::Binding;
use crate::error::{CryptoError, Result};
use crate::key::{Key, KeyId, KeyRef};

/// Version byte of the wrapped-key format with the KEK applied directly (AES-256-GCM KEK).
pub const WRAPPED_KEY_VERSION: u8 = 1;

/// Version byte of the wrapped-key format with a provider-wrapped intermediate key.
pub const WRAPPED_KEY_VERSION_2: u8 = 2;

const SEALED_LEN: usize = Key::LEN + TAG_LEN;

/// What a KMS returned when it wrapped a version-2 intermediate key, and under which of its key
/// versions (format in the module docs).
#[derive(Clone, PartialEq, Eq)]
pub struct ProviderWrap {
    version_name: String,
    ciphertext: Vec<u8>,
}

impl ProviderWrap {
    /// Longest provider version name, in bytes.
    pub const MAX_VERSION_NAME_LEN: usize = 255;
    /// Longest provider ciphertext, in bytes (an RSA-16384 block).
    pub const MAX_CIPHERTEXT_LEN: usize = 2048;

    /// `version_name`: 1 to 255 printable ASCII characters; `ciphertext`: 1 to 2048 bytes.
    pub fn new(version_name: impl Into<String>, ciphertext: Vec<u8>) -> Result<Self> {
        let version_name = version_name.into();
        if version_name.is_empty()
            || version_name.len() > Self::MAX_VERSION_NAME_LEN
            || !version_name.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(CryptoError::InvalidInput("a provider version name is 1 to 255 printable ASCII characters"));
        }
        if ciphertext.is_empty() || ciphertext.len() > Self::MAX_CIPHERTEXT_LEN {
            return Err(CryptoError::InvalidInput("a provider-wrapped key is 1 to 2048 bytes"));
        }
        Ok(Self { version_name, ciphertext })
    }

    /// The provider's name for the key version that wrapped the intermediate key.
    pub fn version_name(&self) -> &str {
        &self.version_name
    }

    /// The intermediate key as the provider wrapped it.
    pub fn ciphertext(&self) -> &[u8] {
        &self.ciphertext
    }
}

impl fmt::Debug for ProviderWrap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderWrap")
            .field("version_name", &self.version_name)
            .field("ciphertext_len", &self.ciphertext.len())
            .finish()
    }
}

/// A key wrapped under a KEK (formats in the module docs). Holds no secret: the bytes are safe to
/// store in the database next to the row they belong to.
#[derive(Clone, PartialEq, Eq)]
pub struct WrappedKey {
    kek: KeyRef,
    /// Version 2 only: the intermediate key, wrapped by the provider.
    provider: Option<ProviderWrap>,
    nonce: [u8; NONCE_LEN],
    sealed: [u8; SEALED_LEN],
}

impl WrappedKey {
    /// Parses the stored bytes (version 1 or 2). Never panics, whatever the input.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        const WHAT: &str = "wrapped key";
        let bad = |reason| CryptoError::malformed(WHAT, reason);
        let [version, rest @ ..] = bytes else {
            return Err(bad("empty"));
        };
        if *version != WRAPPED_KEY_VERSION && *version != WRAPPED_KEY_VERSION_2 {
            return Err(CryptoError::UnsupportedVersion { what: WHAT, version: *version });
        }
        let [l0, l1, rest @ ..] = rest else {
            return Err(bad("cut short before the key id length"));
        };
        let id_len = usize::from(u16::from_be_bytes([*l0, *l1]));
        if id_len == 0 || id_len > KeyId::MAX_LEN {
            return Err(bad("key id length out of range"));
        }
        if rest.len() < id_len + 4 {
            return Err(bad("wrong length"));
        }
        let (id, rest) = rest.split_at(id_len);
        let id = std::str::from_utf8(id).map_err(|_| bad("key id is not UTF-8"))?;
        let id = KeyId::new(id).map_err(|_| bad("invalid key id"))?;
        let (kek_version, rest) = rest.split_at(4);
        let kek_version = u32::from_be_bytes(kek_version.try_into().map_err(|_| bad("kek version"))?);

        let (provider, rest) = if *version == WRAPPED_KEY_VERSION_2 {
            let [v_len, rest @ ..] = rest else {
                return Err(bad("cut short before the provider version length"));
            };
            let v_len = usize::from(*v_len);
            if v_len == 0 {
                return Err(bad("provider version length out of range"));
            }
            if rest.len() < v_len + 2 {
                return Err(bad("wrong length"));
            }
            let (name, rest) = rest.split_at(v_len);
            let name = std::str::from_utf8(name).map_err(|_| bad("provider version is not ASCII"))?;
            let [w0, w1, rest @ ..] = rest else {
                return Err(bad("cut short before the provider ciphertext length"));
            };
            let w_len = usize::from(u16::from_be_bytes([*w0, *w1]));
            if w_len == 0 || w_len > ProviderWrap::MAX_CIPHERTEXT_LEN {
                return Err(bad("provider ciphertext length out of range"));
            }
            if rest.len() < w_len {
                return Err(bad("wrong length"));
            }
            let (ciphertext, rest) = rest.split_at(w_len);
            let wrap = ProviderWrap::new(name, ciphertext.to_vec()).map_err(|_| bad("invalid provider version"))?;
            (Some(wrap), rest)
        } else {
            (None, rest)
        };

        if rest.len() != NONCE_LEN + SEALED_LEN {
            return Err(bad("wrong length"));
        }
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        Ok(Self {
            kek: KeyRef::new(id, kek_version),
            provider,
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

    /// The format version: 1 or 2.
    pub fn format_version(&self) -> u8 {
        if self.provider.is_some() {
            WRAPPED_KEY_VERSION_2
        } else {
            WRAPPED_KEY_VERSION
        }
    }

    /// Version 2: the provider-wrapped intermediate key and the provider's version name.
    pub fn provider_wrap(&self) -> Option<&ProviderWrap> {
        self.provider.as_ref()
    }

    fn header(&self) -> Vec<u8> {
        let id = self.kek.id.as_str().as_bytes();
        let extra = self.provider.as_ref().map_or(0, |p| 3 + p.version_name.len() + p.ciphertext.len());
        let mut out = Vec::with_capacity(7 + id.len() + extra + NONCE_LEN + SEALED_LEN);
        out.push(self.format_version());
        // KeyId guarantees at most 1024 bytes.
        out.extend_from_slice(&(id.len() as u16).to_be_bytes());
        out.extend_from_slice(id);
        out.extend_from_slice(&self.kek.version.to_be_bytes());
        if let Some(p) = &self.provider {
            // ProviderWrap guarantees at most 255 and 2048 bytes.
            out.push(p.version_name.len() as u8);
            out.extend_from_slice(p.version_name.as_bytes());
            out.extend_from_slice(&(p.ciphertext.len() as u16).to_be_bytes());
            out.extend_from_slice(&p.ciphertext);
        }
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
        let mut d = f.debug_struct("WrappedKey");
        d.field("kek_id", &self.kek.id).field("kek_version", &self.kek.version);
        if let Some(p) = &self.provider {
            d.field("provider_version", &p.version_name);
        }
        d.finish()
    }
}

/// Wraps `key` under `kek`, recording `kek_ref` (the KEK's id and version) in the header and
/// binding the result to `binding` (format version 1).
pub fn wrap_key(kek: &Key, kek_ref: &KeyRef, key: &Key, binding: &Binding) -> Result<WrappedKey> {
    seal_wrapped(
        WrappedKey { kek: kek_ref.clone(), provider: None, nonce: random_nonce(), sealed: [0; SEALED_LEN] },
        kek,
        key,
        binding,
    )
}

/// Format version 2: wraps `key` under `intermediate`, a fresh key the provider wrapped into
/// `provider` under the KEK version `kek_ref`. The provider's ciphertext is authenticated with the
/// binding. Use a new intermediate key for every call.
pub fn wrap_key_v2(
    intermediate: &Key,
    kek_ref: &KeyRef,
    provider: ProviderWrap,
    key: &Key,
    binding: &Binding,
) -> Result<WrappedKey> {
    let wrapped =
        WrappedKey { kek: kek_ref.clone(), provider: Some(provider), nonce: random_nonce(), sealed: [0; SEALED_LEN] };
    seal_wrapped(wrapped, intermediate, key, binding)
}

fn seal_wrapped(mut wrapped: WrappedKey, kek: &Key, key: &Key, binding: &Binding) -> Result<WrappedKey> {
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

/// Unwraps a key with `kek`: the KEK version for format 1, the intermediate key (as the provider
/// unwrapped it) for format 2. Fails with [`CryptoError::Integrity`] for a wrong key, a wrong
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

    #[test]
    fn version_2_layout_is_byte_exact() {
        let intermediate = Key::generate();
        let key = Key::generate();
        let binding = Binding::tek(Uuid::nil());
        let wrap = ProviderWrap::new("abc", vec![9; 5]).unwrap();
        let w = wrap_key_v2(&intermediate, &kek_ref(2), wrap, &key, &binding).unwrap();
        let bytes = w.to_bytes();
        assert_eq!(bytes.len(), 70 + 10 + 3 + 5);
        assert_eq!(bytes[0], 2);
        assert_eq!(&bytes[13..17], &[0, 0, 0, 2]);
        assert_eq!(bytes[17], 3);
        assert_eq!(&bytes[18..21], b"abc");
        assert_eq!(&bytes[21..23], &[0, 5]);
        assert_eq!(&bytes[23..28], &[9; 5]);
        let parsed = WrappedKey::parse(&bytes).unwrap();
        assert_eq!(parsed, w);
        assert_eq!(parsed.format_version(), 2);
        assert_eq!(parsed.provider_wrap().unwrap().version_name(), "abc");
        assert_eq!(unwrap_key(&intermediate, &parsed, &binding).unwrap().expose_secret(), key.expose_secret());
        // The provider ciphertext is authenticated.
        let mut edited = bytes.clone();
        edited[25] ^= 1;
        let edited = WrappedKey::parse(&edited).unwrap();
        assert!(matches!(unwrap_key(&intermediate, &edited, &binding), Err(CryptoError::Integrity)));
    }
}
