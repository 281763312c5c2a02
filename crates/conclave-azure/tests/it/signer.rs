//! The Key Vault checkpoint signer: ES256 signatures that verify with the published public key.

use conclave_azure::standin::verify_es256;
use conclave_azure::KeyVaultSigner;
use conclave_crypto::{CheckpointSigner, CryptoError, SignatureAlgorithm};

use crate::support::Env;

#[tokio::test]
async fn signs_checkpoints_with_an_ec_key_that_verify_with_its_public_key() {
    let env = Env::start().await;
    let version = env.standin.create_ec_key("conclave-audit");
    let signer = KeyVaultSigner::connect(env.vault(), "conclave-audit").await.unwrap();
    assert_eq!(signer.algorithm(), SignatureAlgorithm::Es256);
    assert!(signer.key_id().ends_with(&format!("/keys/conclave-audit/{version}")), "{}", signer.key_id());
    let spki = signer.public_key().await.unwrap();
    assert_eq!(spki.len(), 91);

    let message = b"checkpoint: tenant 1, sequence 42, hash abc";
    let signature = signer.sign(message).await.unwrap();
    assert_eq!(signature.len(), 64);
    assert!(verify_es256(&spki, message, &signature));
    assert!(!verify_es256(&spki, b"checkpoint: tenant 1, sequence 43, hash abc", &signature));

    // A disabled signing key is the customer revoking it.
    env.standin.set_enabled("conclave-audit", None, false);
    assert!(matches!(signer.sign(message).await, Err(CryptoError::KeyRevoked { .. })));
}

#[tokio::test]
async fn refuses_a_key_that_is_not_ec_p256() {
    let env = Env::start().await;
    env.standin.create_rsa_key("rsa-key");
    assert!(matches!(KeyVaultSigner::connect(env.vault(), "rsa-key").await, Err(CryptoError::KeyUnavailable(_))));
    assert!(matches!(KeyVaultSigner::connect(env.vault(), "missing").await, Err(CryptoError::KeyNotFound { .. })));
}
