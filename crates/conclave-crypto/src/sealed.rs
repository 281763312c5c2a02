//! Small content sealed in one piece: message text, conversation titles, agent and document
//! names, settings. Whole values that fit in memory; documents use [`crate::segment`].
//!
//! # Sealed-content format, version 1
//!
//! | offset | size | content |
//! |---|---|---|
//! | 0 | 1 | format version, `0x01` |
//! | 1 | 12 | AES-GCM nonce, random |
//! | 13 | `n` | AES-256-GCM ciphertext, as long as the plaintext |
//! | 13+n | 16 | AES-GCM tag |
//!
//! Total length: `29 + n` bytes. Associated data: the [binding](crate::binding) followed by the
//! version byte. Version byte `0x00` is reserved by the application for legacy UTF-8 plaintext
//! (`conclave-core`'s `FORMAT_PLAINTEXT`): this crate never emits it and [`open`] rejects it.

use crate::aead::{random_nonce, Cipher, NONCE_LEN, TAG_LEN};
use crate::binding::Binding;
use crate::error::{CryptoError, Result};
use crate::key::Key;

/// Version byte of the sealed-content format.
pub const SEALED_VERSION: u8 = 1;

/// Bytes a sealed value adds to its plaintext.
pub const SEALED_OVERHEAD: usize = 1 + NONCE_LEN + TAG_LEN;

/// Seals `plaintext` under `key`, bound to `binding`.
pub fn seal(key: &Key, binding: &Binding, plaintext: &[u8]) -> Result<Vec<u8>> {
    let nonce = random_nonce();
    let mut out = Vec::with_capacity(SEALED_OVERHEAD + plaintext.len());
    out.push(SEALED_VERSION);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plaintext);
    let tag = Cipher::new(key).seal_in_place(&nonce, &aad(binding), &mut out[1 + NONCE_LEN..])?;
    out.extend_from_slice(&tag);
    Ok(out)
}

/// Opens a value sealed by [`seal`]. Fails with [`CryptoError::Integrity`] for a wrong key, a
/// wrong binding (the value was copied from another row or field) or altered bytes.
pub fn open(key: &Key, binding: &Binding, sealed: &[u8]) -> Result<Vec<u8>> {
    const WHAT: &str = "sealed value";
    let [version, rest @ ..] = sealed else {
        return Err(CryptoError::malformed(WHAT, "empty"));
    };
    if *version != SEALED_VERSION {
        return Err(CryptoError::UnsupportedVersion { what: WHAT, version: *version });
    }
    if rest.len() < NONCE_LEN + TAG_LEN {
        return Err(CryptoError::malformed(WHAT, "shorter than nonce and tag"));
    }
    let (nonce, rest) = rest.split_at(NONCE_LEN);
    let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
    let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| CryptoError::malformed(WHAT, "nonce"))?;
    let mut plaintext = ciphertext.to_vec();
    Cipher::new(key).open_in_place(&nonce, &aad(binding), &mut plaintext, tag)?;
    Ok(plaintext)
}

fn aad(binding: &Binding) -> Vec<u8> {
    let mut aad = binding.to_bytes();
    aad.push(SEALED_VERSION);
    aad
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    #[test]
    fn layout_and_round_trip() {
        let key = Key::generate();
        let binding = Binding::conversation_title(Uuid::nil(), Uuid::max());
        let sealed = seal(&key, &binding, b"Merger plan").unwrap();
        assert_eq!(sealed.len(), SEALED_OVERHEAD + 11);
        assert_eq!(sealed[0], 1);
        assert_eq!(open(&key, &binding, &sealed).unwrap(), b"Merger plan");
        assert_eq!(open(&key, &binding, &seal(&key, &binding, b"").unwrap()).unwrap(), b"");
    }

    #[test]
    fn legacy_plaintext_and_short_input_are_rejected() {
        let key = Key::generate();
        let binding = Binding::tek(Uuid::nil());
        assert!(matches!(open(&key, &binding, b"\0hello"), Err(CryptoError::UnsupportedVersion { version: 0, .. })));
        assert!(open(&key, &binding, &[]).is_err());
        assert!(open(&key, &binding, &[1; 28]).is_err());
    }
}
