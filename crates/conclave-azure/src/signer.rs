//! [`KeyVaultSigner`]: audit checkpoints signed with `ES256` by an EC-HSM P-256 key in Key Vault
//! (`CONCLAVE_AUDIT_SIGNING_KEY_NAME`, default `conclave-audit`). The version is fixed when the
//! signer connects and recorded in every checkpoint through [`key_id`](CheckpointSigner::key_id).

use async_trait::async_trait;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use conclave_crypto::{CheckpointSigner, CryptoError, SignatureAlgorithm};
use sha2::{Digest, Sha256};

use crate::error::AzureError;
use crate::keyvault::KeyVaultClient;

/// The default signing key name.
pub const DEFAULT_SIGNING_KEY_NAME: &str = "conclave-audit";

/// DER `SubjectPublicKeyInfo` prefix of an uncompressed P-256 point (id-ecPublicKey, prime256v1).
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce,
    0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// Signs with a Key Vault EC P-256 key (module docs).
#[derive(Debug)]
pub struct KeyVaultSigner {
    client: KeyVaultClient,
    name: String,
    version: String,
    kid: String,
    spki: Vec<u8>,
}

impl KeyVaultSigner {
    /// Reads the key's latest version and its public key; refuses a key that is not EC P-256.
    pub async fn connect(client: KeyVaultClient, name: &str) -> Result<Self, CryptoError> {
        let bundle = client.get_key(name, None).await.map_err(|e| map(e, name))?;
        let jwk = &bundle.jwk;
        if !matches!(jwk.kty.as_str(), "EC" | "EC-HSM") || jwk.crv.as_deref() != Some("P-256") {
            return Err(CryptoError::KeyUnavailable(format!(
                "Key Vault key {name} is {} {}, not an EC P-256 key",
                jwk.kty,
                jwk.crv.as_deref().unwrap_or("")
            )));
        }
        let coord = |c: &Option<String>| {
            c.as_deref()
                .and_then(|v| URL_SAFE_NO_PAD.decode(v.trim_end_matches('=')).ok())
                .filter(|b| b.len() == 32)
                .ok_or_else(|| CryptoError::KeyUnavailable(format!("Key Vault key {name}: bad EC public key")))
        };
        let (x, y) = (coord(&jwk.x)?, coord(&jwk.y)?);
        let mut spki = P256_SPKI_PREFIX.to_vec();
        spki.push(0x04);
        spki.extend_from_slice(&x);
        spki.extend_from_slice(&y);
        Ok(Self { client, name: name.to_owned(), version: bundle.version, kid: bundle.kid, spki })
    }
}

fn map(e: AzureError, name: &str) -> CryptoError {
    match e {
        AzureError::Vault { status: 403, .. } => CryptoError::KeyRevoked { key_id: name.to_owned() },
        AzureError::Vault { status: 404, .. } => CryptoError::KeyNotFound { key_id: name.to_owned(), version: 0 },
        other => CryptoError::KeyUnavailable(other.to_string()),
    }
}

#[async_trait]
impl CheckpointSigner for KeyVaultSigner {
    fn algorithm(&self) -> SignatureAlgorithm {
        SignatureAlgorithm::Es256
    }

    fn key_id(&self) -> String {
        self.kid.clone()
    }

    async fn public_key(&self) -> Result<Vec<u8>, CryptoError> {
        Ok(self.spki.clone())
    }

    async fn sign(&self, message: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let digest = Sha256::digest(message);
        let signature =
            self.client.sign(&self.name, &self.version, "ES256", &digest).await.map_err(|e| map(e, &self.name))?;
        if signature.len() != 64 {
            return Err(CryptoError::KeyUnavailable(format!(
                "Key Vault returned a {}-byte ES256 signature, not 64",
                signature.len()
            )));
        }
        Ok(signature)
    }
}
