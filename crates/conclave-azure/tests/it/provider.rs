//! The Key Vault key provider: round trips in wrapped-key format 2 with real RSA-OAEP-256,
//! bindings enforced, rotation, retirement, revocation.

use conclave_azure::KeyVaultKeyProvider;
use conclave_crypto::{Binding, CryptoError, Key, KeyProvider, WrappedKey};
use uuid::Uuid;

use crate::support::{Env, KEK};

fn tenant() -> Uuid {
    Uuid::from_u128(7)
}

fn cek(conversation: u128) -> Binding {
    Binding::cek(tenant(), Uuid::from_u128(conversation))
}

#[tokio::test]
async fn wrap_and_unwrap_round_trip_through_the_vault() {
    let env = Env::start().await;
    let provider = env.provider();
    let key = Key::generate();
    let wrapped = provider.wrap(tenant(), &key, &cek(1)).await.unwrap();
    let stored = WrappedKey::parse(&wrapped.to_bytes()).unwrap();
    assert_eq!(stored.format_version(), 2);
    assert_eq!(stored.kek().id.as_str(), format!("{}/keys/{KEK}", env.standin.url()));
    assert_eq!(stored.kek().version, 1);
    assert_eq!(stored.provider_wrap().unwrap().version_name(), env.standin.versions(KEK)[0]);
    assert_eq!(stored.provider_wrap().unwrap().ciphertext().len(), 256, "RSA-2048 OAEP block");
    let back = provider.unwrap(tenant(), &stored, &cek(1)).await.unwrap();
    assert_eq!(back.expose_secret(), key.expose_secret());
    assert_eq!(provider.describe().provider, "azure-key-vault");
    assert_eq!(env.standin.requests_matching("/wrapkey"), 1);
    assert_eq!(env.standin.requests_matching("/unwrapkey"), 1);
}

#[tokio::test]
async fn a_wrapped_key_copied_to_another_row_fails() {
    let env = Env::start().await;
    let provider = env.provider();
    let wrapped = provider.wrap(tenant(), &Key::generate(), &cek(1)).await.unwrap();
    // The vault unwraps the intermediate key happily; the binding still refuses.
    assert!(matches!(provider.unwrap(tenant(), &wrapped, &cek(2)).await, Err(CryptoError::Integrity)));
    assert!(matches!(provider.unwrap(tenant(), &wrapped, &Binding::tek(tenant())).await, Err(CryptoError::Integrity)));
    // Another tenant's binding is refused before the vault is asked.
    let other = Binding::cek(Uuid::from_u128(8), Uuid::from_u128(1));
    assert!(matches!(provider.unwrap(tenant(), &wrapped, &other).await, Err(CryptoError::InvalidInput(_))));
}

#[tokio::test]
async fn an_altered_vault_ciphertext_is_an_integrity_failure() {
    let env = Env::start().await;
    let provider = env.provider();
    let mut bytes = provider.wrap(tenant(), &Key::generate(), &cek(1)).await.unwrap().to_bytes();
    let header = bytes.len() - 60 - 256;
    bytes[header + 10] ^= 1; // inside the RSA ciphertext
    let altered = WrappedKey::parse(&bytes).unwrap();
    assert!(matches!(provider.unwrap(tenant(), &altered, &cek(1)).await, Err(CryptoError::Integrity)));
}

#[tokio::test]
async fn rotation_keeps_old_versions_unwrapping_and_retirement_ends_them() {
    let env = Env::start().await;
    let provider = env.provider();
    let old_key = Key::generate();
    let old = provider.wrap(tenant(), &old_key, &cek(1)).await.unwrap();
    assert_eq!(provider.current_version(tenant()).await.unwrap(), 1);

    assert_eq!(provider.rotate(tenant()).await.unwrap(), 2);
    assert_eq!(provider.current_version(tenant()).await.unwrap(), 2);
    assert_eq!(env.standin.versions(KEK).len(), 2);
    let new = provider.wrap(tenant(), &Key::generate(), &cek(2)).await.unwrap();
    assert_eq!(new.kek().version, 2);
    assert_eq!(provider.unwrap(tenant(), &old, &cek(1)).await.unwrap().expose_secret(), old_key.expose_secret());

    // A second provider (another replica) learns the ordinals from the vault.
    let replica = KeyVaultKeyProvider::new(env.vault(), KEK).unwrap();
    assert_eq!(replica.current_version(tenant()).await.unwrap(), 2);
    assert_eq!(replica.unwrap(tenant(), &old, &cek(1)).await.unwrap().expose_secret(), old_key.expose_secret());

    assert!(matches!(provider.retire(tenant(), 2).await, Err(CryptoError::InvalidInput(_))), "current version");
    assert!(matches!(provider.retire(tenant(), 9).await, Err(CryptoError::KeyNotFound { version: 9, .. })));
    provider.retire(tenant(), 1).await.unwrap();
    assert!(matches!(
        provider.unwrap(tenant(), &old, &cek(1)).await,
        Err(CryptoError::VersionRetired { version: 1, .. })
    ));
    assert!(provider.unwrap(tenant(), &new, &cek(2)).await.is_ok());
}

#[tokio::test]
async fn a_disabled_key_is_revoked_until_enabled_again() {
    let env = Env::start().await;
    let provider = env.provider();
    let key = Key::generate();
    let wrapped = provider.wrap(tenant(), &key, &cek(1)).await.unwrap();

    env.standin.set_enabled(KEK, None, false);
    assert!(matches!(provider.unwrap(tenant(), &wrapped, &cek(1)).await, Err(CryptoError::KeyRevoked { .. })));
    assert!(matches!(provider.wrap(tenant(), &Key::generate(), &cek(2)).await, Err(CryptoError::KeyRevoked { .. })));
    assert!(matches!(provider.check().await, Err(CryptoError::KeyRevoked { .. })));

    env.standin.set_enabled(KEK, None, true);
    assert_eq!(provider.unwrap(tenant(), &wrapped, &cek(1)).await.unwrap().expose_secret(), key.expose_secret());
    provider.check().await.unwrap();
}

#[tokio::test]
async fn unknown_keys_and_foreign_wrapped_keys_are_not_found() {
    let env = Env::start().await;
    let provider = env.provider();
    let missing = KeyVaultKeyProvider::new(env.vault(), "no-such-key").unwrap();
    assert!(matches!(missing.current_version(tenant()).await, Err(CryptoError::KeyNotFound { .. })));

    // A wrapped key from another vault key, and a format-1 key from the local provider.
    let wrapped = provider.wrap(tenant(), &Key::generate(), &cek(1)).await.unwrap();
    assert!(matches!(missing.unwrap(tenant(), &wrapped, &cek(1)).await, Err(CryptoError::KeyNotFound { .. })));
    let local = conclave_crypto::LocalKeyProvider::ephemeral();
    let v1 = local.wrap(tenant(), &Key::generate(), &cek(1)).await.unwrap();
    assert!(matches!(provider.unwrap(tenant(), &v1, &cek(1)).await, Err(CryptoError::KeyNotFound { .. })));
    assert!(KeyVaultKeyProvider::new(env.vault(), "bad/name").is_err());
}
