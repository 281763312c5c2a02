//! Signing keys for audit checkpoints: an asymmetric key held by the key provider, so whoever can
//! write the database cannot forge a checkpoint, and anyone with the public key can check one
//! offline.
//!
//! Implementations: the local key provider keeps an Ed25519 key in its key file; the Azure Key
//! Vault provider signs with an EC-HSM key (`ES256`) through the vault's `sign` operation.

use async_trait::async_trait;

use crate::error::{CryptoError, Result};

/// The signature schemes checkpoints may carry. Verifiers pin the algorithm from the public key
/// they trust, never from the signed document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SignatureAlgorithm {
    /// Ed25519 (RFC 8032): 64-byte signatures.
    #[serde(rename = "Ed25519")]
    Ed25519,
    /// ECDSA P-256 with SHA-256 (RFC 7518 `ES256`): 64-byte `r || s` signatures.
    #[serde(rename = "ES256")]
    Es256,
}

impl SignatureAlgorithm {
    /// The name checkpoints, the database and reports use (as serialised).
    pub fn as_str(self) -> &'static str {
        match self {
            SignatureAlgorithm::Ed25519 => "Ed25519",
            SignatureAlgorithm::Es256 => "ES256",
        }
    }
}

/// A key that signs audit checkpoints.
#[async_trait]
pub trait CheckpointSigner: Send + Sync {
    /// The scheme [`sign`](Self::sign) uses.
    fn algorithm(&self) -> SignatureAlgorithm;

    /// Names the key and its version, recorded in each checkpoint so a verifier picks the right
    /// public key after a rotation.
    fn key_id(&self) -> String;

    /// The public key as DER `SubjectPublicKeyInfo`.
    async fn public_key(&self) -> Result<Vec<u8>>;

    /// Signs `message` (the checkpoint's canonical bytes).
    async fn sign(&self, message: &[u8]) -> Result<Vec<u8>>;
}

/// The DER `SubjectPublicKeyInfo` of an Ed25519 public key.
pub(crate) fn ed25519_public_key_der(key: &ed25519_dalek::VerifyingKey) -> Result<Vec<u8>> {
    use ed25519_dalek::pkcs8::EncodePublicKey as _;
    key.to_public_key_der()
        .map(|doc| doc.as_bytes().to_vec())
        .map_err(|_| CryptoError::InvalidInput("Ed25519 public key could not be encoded"))
}

/// The scheme a DER `SubjectPublicKeyInfo` is for: an Ed25519 key or a P-256 key (ES256).
/// Verifiers take the algorithm from here, from the key they trust.
pub fn public_key_algorithm(spki_der: &[u8]) -> Result<SignatureAlgorithm> {
    use p256::pkcs8::DecodePublicKey as _;
    if ed25519_dalek::VerifyingKey::from_public_key_der(spki_der).is_ok() {
        Ok(SignatureAlgorithm::Ed25519)
    } else if p256::ecdsa::VerifyingKey::from_public_key_der(spki_der).is_ok() {
        Ok(SignatureAlgorithm::Es256)
    } else {
        Err(CryptoError::malformed("public key", "not a DER SubjectPublicKeyInfo of an Ed25519 or P-256 key"))
    }
}

/// Checks `signature` over `message` with the public key `spki_der` (DER
/// `SubjectPublicKeyInfo`), by the key's own algorithm: Ed25519 (64 bytes), or ECDSA P-256 with
/// SHA-256 (`ES256`, 64 bytes `r || s`). A signature that does not verify is
/// [`CryptoError::Integrity`].
pub fn verify_signature(spki_der: &[u8], message: &[u8], signature: &[u8]) -> Result<()> {
    use p256::ecdsa::signature::Verifier as _;
    use p256::pkcs8::DecodePublicKey as _;
    match public_key_algorithm(spki_der)? {
        SignatureAlgorithm::Ed25519 => {
            let key = ed25519_dalek::VerifyingKey::from_public_key_der(spki_der)
                .map_err(|_| CryptoError::malformed("public key", "not an Ed25519 key"))?;
            let signature = ed25519_dalek::Signature::from_slice(signature).map_err(|_| CryptoError::Integrity)?;
            key.verify_strict(message, &signature).map_err(|_| CryptoError::Integrity)
        }
        SignatureAlgorithm::Es256 => {
            let key = p256::ecdsa::VerifyingKey::from_public_key_der(spki_der)
                .map_err(|_| CryptoError::malformed("public key", "not a P-256 key"))?;
            let signature = p256::ecdsa::Signature::from_slice(signature).map_err(|_| CryptoError::Integrity)?;
            key.verify(message, &signature).map_err(|_| CryptoError::Integrity)
        }
    }
}

/// The public key as PEM (`-----BEGIN PUBLIC KEY-----`), for an auditor to keep.
pub fn public_key_pem(spki_der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(spki_der);
    let mut out = String::from("-----BEGIN PUBLIC KEY-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END PUBLIC KEY-----\n");
    out
}

/// The DER bytes of a PEM `PUBLIC KEY` block (the output of [`public_key_pem`] or of
/// `openssl pkey -pubout`); checks that the key is one [`verify_signature`] can use.
pub fn public_key_from_pem(pem: &str) -> Result<Vec<u8>> {
    use base64::Engine as _;
    let body = pem
        .trim()
        .strip_prefix("-----BEGIN PUBLIC KEY-----")
        .and_then(|rest| rest.strip_suffix("-----END PUBLIC KEY-----"))
        .ok_or(CryptoError::malformed("public key", "not a PEM PUBLIC KEY block"))?;
    let b64: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| CryptoError::malformed("public key", "PEM body is not base64"))?;
    public_key_algorithm(&der)?;
    Ok(der)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LocalKeyProvider;

    #[tokio::test]
    async fn local_signer_signs_and_verifies_with_its_public_key() {
        let provider = LocalKeyProvider::ephemeral();
        let signer = provider.checkpoint_signer().await.unwrap();
        assert_eq!(signer.algorithm(), SignatureAlgorithm::Ed25519);
        let public = signer.public_key().await.unwrap();
        assert_eq!(public_key_algorithm(&public).unwrap(), SignatureAlgorithm::Ed25519);
        let sig = signer.sign(b"checkpoint").await.unwrap();
        assert_eq!(sig.len(), 64);
        verify_signature(&public, b"checkpoint", &sig).unwrap();
        assert!(matches!(verify_signature(&public, b"checkpoinT", &sig), Err(CryptoError::Integrity)));
        let mut forged = sig.clone();
        forged[0] ^= 1;
        assert!(matches!(verify_signature(&public, b"checkpoint", &forged), Err(CryptoError::Integrity)));
        assert!(matches!(verify_signature(&public, b"checkpoint", &sig[..63]), Err(CryptoError::Integrity)));
        // The same key on the second call.
        assert_eq!(provider.checkpoint_signer().await.unwrap().key_id(), signer.key_id());
    }

    #[test]
    fn es256_signatures_verify_over_spki() {
        use p256::ecdsa::signature::Signer as _;
        use p256::pkcs8::EncodePublicKey as _;
        let key = p256::ecdsa::SigningKey::random(&mut rand::rngs::OsRng);
        let der = key.verifying_key().to_public_key_der().unwrap().as_bytes().to_vec();
        assert_eq!(public_key_algorithm(&der).unwrap(), SignatureAlgorithm::Es256);
        let sig: p256::ecdsa::Signature = key.sign(b"checkpoint");
        let raw = sig.to_bytes();
        assert_eq!(raw.len(), 64, "r || s, as Key Vault returns it");
        verify_signature(&der, b"checkpoint", &raw).unwrap();
        assert!(matches!(verify_signature(&der, b"other", &raw), Err(CryptoError::Integrity)));
    }

    #[test]
    fn pem_round_trips_and_rejects_garbage() {
        let key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
        let der = ed25519_public_key_der(&key.verifying_key()).unwrap();
        let pem = public_key_pem(&der);
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----\n"));
        assert_eq!(public_key_from_pem(&pem).unwrap(), der);
        assert!(public_key_from_pem("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----").is_err());
        assert!(public_key_from_pem("hello").is_err());
        assert!(public_key_algorithm(b"not a key").is_err());
    }
}
