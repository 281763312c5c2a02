//! LocalKeyProvider against a real key file in a temporary folder.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use conclave_crypto::{Binding, CryptoError, Key, KeyProvider, LocalKeyProvider, WrappedKey};
use uuid::Uuid;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn lek(tenant: Uuid) -> Binding {
    Binding::lek(tenant, Uuid::from_u128(99))
}

#[tokio::test]
async fn creates_the_file_and_folder_private() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secrets/nested/keys.json");
    let provider = LocalKeyProvider::open(&path).await.unwrap();
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(path.parent().unwrap()), 0o700);
    assert_eq!(mode(&dir.path().join("secrets")), 0o700);
    let shown = format!("{provider:?}");
    assert!(shown.starts_with("LocalKeyProvider { path: Some("), "{shown}");
    let info = provider.describe();
    assert_eq!(info.provider, "local");
    assert!(info.key_id.as_str().starts_with("local:"));

    // The first wrap for a tenant gives it version 1, saved with the file still private.
    let tenant = Uuid::now_v7();
    let wrapped = provider.wrap(tenant, &Key::generate(), &lek(tenant)).await.unwrap();
    assert_eq!(wrapped.kek().version, 1);
    assert_eq!(wrapped.kek().id, info.key_id);
    assert_eq!(mode(&path), 0o600);
    // No temporary files left beside it; only the (empty, private) lock file that serialises
    // changes between processes sharing the key file.
    let mut names: Vec<_> =
        std::fs::read_dir(path.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
    names.sort();
    assert_eq!(names, vec![std::ffi::OsString::from("keys.json"), std::ffi::OsString::from("keys.lock")]);
    assert_eq!(mode(&path.with_extension("lock")), 0o600);
}

#[tokio::test]
async fn keys_survive_a_reload() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.json");
    let tenant = Uuid::now_v7();
    let key = Key::generate();
    let (wrapped, key_id) = {
        let provider = LocalKeyProvider::open(&path).await.unwrap();
        (provider.wrap(tenant, &key, &lek(tenant)).await.unwrap().to_bytes(), provider.describe().key_id)
    };
    let provider = LocalKeyProvider::open(&path).await.unwrap();
    assert_eq!(provider.describe().key_id, key_id);
    assert_eq!(provider.current_version(tenant).await.unwrap(), 1);
    let wrapped = WrappedKey::parse(&wrapped).unwrap();
    assert_eq!(provider.unwrap(tenant, &wrapped, &lek(tenant)).await.unwrap().expose_secret(), key.expose_secret());
}

#[tokio::test]
async fn rotate_then_retire() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.json");
    let provider = LocalKeyProvider::open(&path).await.unwrap();
    let tenant = Uuid::now_v7();
    let other_tenant = Uuid::now_v7();
    let (old_key, new_key) = (Key::generate(), Key::generate());

    let old = provider.wrap(tenant, &old_key, &lek(tenant)).await.unwrap();
    let other = provider.wrap(other_tenant, &old_key, &lek(other_tenant)).await.unwrap();
    assert_eq!(provider.rotate(tenant).await.unwrap(), 2);
    assert_eq!(provider.current_version(tenant).await.unwrap(), 2);
    let new = provider.wrap(tenant, &new_key, &lek(tenant)).await.unwrap();
    assert_eq!((old.kek().version, new.kek().version), (1, 2));

    // Both versions unwrap after the rotation.
    assert_eq!(provider.unwrap(tenant, &old, &lek(tenant)).await.unwrap().expose_secret(), old_key.expose_secret());
    assert_eq!(provider.unwrap(tenant, &new, &lek(tenant)).await.unwrap().expose_secret(), new_key.expose_secret());

    // The current version cannot be retired; an unknown one is not found.
    assert!(matches!(provider.retire(tenant, 2).await, Err(CryptoError::InvalidInput(_))));
    assert!(matches!(provider.retire(tenant, 7).await, Err(CryptoError::KeyNotFound { version: 7, .. })));

    provider.retire(tenant, 1).await.unwrap();
    provider.retire(tenant, 1).await.unwrap();
    assert!(matches!(
        provider.unwrap(tenant, &old, &lek(tenant)).await,
        Err(CryptoError::VersionRetired { version: 1, .. })
    ));
    assert!(provider.unwrap(tenant, &new, &lek(tenant)).await.is_ok());
    // Another tenant's version 1 is untouched.
    assert!(provider.unwrap(other_tenant, &other, &lek(other_tenant)).await.is_ok());

    // The retirement is on disk: the material is gone from the file, and stays gone after reload.
    let text = std::fs::read_to_string(&path).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let v1 = &json["tenants"][tenant.to_string()]["versions"]["1"];
    assert!(v1["material"].is_null(), "{v1}");
    assert!(v1["retired_at"].is_string());
    drop(provider);
    let provider = LocalKeyProvider::open(&path).await.unwrap();
    assert!(matches!(provider.unwrap(tenant, &old, &lek(tenant)).await, Err(CryptoError::VersionRetired { .. })));
    assert!(provider.unwrap(tenant, &new, &lek(tenant)).await.is_ok());
    assert_eq!(mode(&path), 0o600);
}

#[tokio::test]
async fn refuses_a_file_others_can_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.json");
    LocalKeyProvider::open(&path).await.unwrap();
    for bad in [0o644, 0o640, 0o604, 0o660] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(bad)).unwrap();
        let err = LocalKeyProvider::open(&path).await.expect_err("must refuse");
        assert!(matches!(err, CryptoError::InsecurePermissions { mode, .. } if mode == bad), "{err:?}");
        let message = err.to_string();
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(message.contains("chmod 600"), "{message}");
    }
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    LocalKeyProvider::open(&path).await.unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
    LocalKeyProvider::open(&path).await.unwrap();
}

#[tokio::test]
async fn refuses_a_damaged_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.json");
    std::fs::write(&path, b"{\"format\": \"something else\"}").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let err = LocalKeyProvider::open(&path).await.expect_err("must refuse");
    assert!(matches!(err, CryptoError::InvalidKeyFile { .. }), "{err:?}");
}

#[tokio::test]
async fn wrong_binding_tenant_and_provider() {
    let provider = LocalKeyProvider::ephemeral();
    let tenant = Uuid::now_v7();
    let wrapped = provider.wrap(tenant, &Key::generate(), &lek(tenant)).await.unwrap();

    // Copied to another library's row.
    let elsewhere = Binding::lek(tenant, Uuid::from_u128(100));
    assert!(matches!(provider.unwrap(tenant, &wrapped, &elsewhere).await, Err(CryptoError::Integrity)));
    // A binding for another tenant than the one asked for.
    let stranger = Uuid::now_v7();
    assert!(matches!(provider.wrap(tenant, &Key::generate(), &lek(stranger)).await, Err(CryptoError::InvalidInput(_))));
    assert!(matches!(provider.unwrap(stranger, &wrapped, &lek(tenant)).await, Err(CryptoError::InvalidInput(_))));
    // Presented under another tenant with a matching binding: that tenant has no such key.
    assert!(matches!(provider.unwrap(stranger, &wrapped, &lek(stranger)).await, Err(CryptoError::KeyNotFound { .. })));
    // Another provider's wrapped key.
    let other = LocalKeyProvider::ephemeral();
    assert!(matches!(other.unwrap(tenant, &wrapped, &lek(tenant)).await, Err(CryptoError::KeyNotFound { .. })));
    // Tampered bytes.
    let mut bytes = wrapped.to_bytes();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    let tampered = WrappedKey::parse(&bytes).unwrap();
    assert!(matches!(provider.unwrap(tenant, &tampered, &lek(tenant)).await, Err(CryptoError::Integrity)));
}

#[tokio::test]
async fn disable_is_a_kill_switch() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.json");
    let provider = LocalKeyProvider::open(&path).await.unwrap();
    let tenant = Uuid::now_v7();
    let wrapped = provider.wrap(tenant, &Key::generate(), &lek(tenant)).await.unwrap();
    provider.disable(tenant).await.unwrap();
    assert!(matches!(provider.unwrap(tenant, &wrapped, &lek(tenant)).await, Err(CryptoError::KeyRevoked { .. })));
    assert!(matches!(provider.wrap(tenant, &Key::generate(), &lek(tenant)).await, Err(CryptoError::KeyRevoked { .. })));
    // Survives a restart.
    drop(provider);
    let provider = LocalKeyProvider::open(&path).await.unwrap();
    assert!(matches!(provider.unwrap(tenant, &wrapped, &lek(tenant)).await, Err(CryptoError::KeyRevoked { .. })));
    provider.enable(tenant).await.unwrap();
    assert!(provider.unwrap(tenant, &wrapped, &lek(tenant)).await.is_ok());
}

#[tokio::test]
async fn concurrent_first_use_creates_one_version() {
    let dir = tempfile::tempdir().unwrap();
    let provider = std::sync::Arc::new(LocalKeyProvider::open(dir.path().join("keys.json")).await.unwrap());
    let tenant = Uuid::now_v7();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let provider = provider.clone();
            tokio::spawn(async move { provider.wrap(tenant, &Key::generate(), &lek(tenant)).await.unwrap() })
        })
        .collect();
    let mut wrapped = Vec::new();
    for task in tasks {
        wrapped.push(task.await.unwrap());
    }
    for w in &wrapped {
        assert_eq!(w.kek().version, 1);
        assert!(provider.unwrap(tenant, w, &lek(tenant)).await.is_ok());
    }
    let reloaded = LocalKeyProvider::open(dir.path().join("keys.json")).await.unwrap();
    for w in &wrapped {
        assert!(reloaded.unwrap(tenant, w, &lek(tenant)).await.is_ok());
    }
}

#[tokio::test]
async fn a_file_that_cannot_be_written_leaves_the_state_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("keys");
    let path = folder.join("keys.json");
    let provider = LocalKeyProvider::open(&path).await.unwrap();
    let tenant = Uuid::now_v7();
    provider.current_version(tenant).await.unwrap();
    // Replace the folder with a file, so the next save fails whoever runs the test (even root).
    std::fs::remove_dir_all(&folder).unwrap();
    std::fs::write(&folder, b"").unwrap();
    assert!(matches!(provider.rotate(tenant).await, Err(CryptoError::Io { .. })));
    assert_eq!(provider.current_version(tenant).await.unwrap(), 1);
}

/// Two processes sharing one data folder (two replicas on one machine): what either creates,
/// both can use, and neither overwrites the other's keys.
#[tokio::test]
async fn providers_sharing_a_key_file_see_each_others_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.json");
    let a = LocalKeyProvider::open(&path).await.unwrap();
    let b = LocalKeyProvider::open(&path).await.unwrap();
    let tenants: Vec<Uuid> = (0..6).map(|_| Uuid::now_v7()).collect();
    let key = Key::generate();
    let bindings: Vec<Binding> = tenants.iter().map(|t| lek(*t)).collect();
    // Both create tenant KEKs at the same time, each for its own and for shared tenants.
    let (from_a, from_b) = tokio::join!(
        futures::future::join_all(tenants.iter().zip(&bindings).map(|(t, bd)| a.wrap(*t, &key, bd))),
        futures::future::join_all(tenants.iter().zip(&bindings).rev().map(|(t, bd)| b.wrap(*t, &key, bd))),
    );
    let from_b: Vec<_> = from_b.into_iter().rev().collect();
    for (i, t) in tenants.iter().enumerate() {
        let wa = from_a[i].as_ref().unwrap();
        let wb = from_b[i].as_ref().unwrap();
        for provider in [&a, &b] {
            for w in [wa, wb] {
                let k = provider.unwrap(*t, w, &lek(*t)).await.unwrap();
                assert_eq!(k.expose_secret(), key.expose_secret());
            }
        }
    }
    // A third process opening the file later sees everything.
    let c = LocalKeyProvider::open(&path).await.unwrap();
    for (i, t) in tenants.iter().enumerate() {
        assert!(c.unwrap(*t, from_a[i].as_ref().unwrap(), &lek(*t)).await.is_ok());
    }
}
