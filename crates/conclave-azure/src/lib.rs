//! Azure for Conclave without secrets in configuration: Entra ID access tokens from the standard
//! Azure environment (client credentials, workload identity, managed identity), the Azure Key
//! Vault [`KeyProvider`](conclave_crypto::KeyProvider) (`RSA-OAEP-256` on an RSA-HSM key, wrapped-key
//! format 2) and [`CheckpointSigner`](conclave_crypto::CheckpointSigner) (`ES256` on an EC-HSM
//! key), and a token adapter for `object_store`'s Azure Blob client.
//!
//! Everything speaks the documented REST APIs over `reqwest` (rustls). The official SDK crates
//! were not used: the credential chain must run against a local stand-in in tests, with every
//! endpoint (the instance metadata address included) pinned by configuration and a private CA
//! trusted, which the SDK does not offer as plain settings.
//!
//! With the `standin` feature, [`standin`] is a local Entra and Key Vault over TLS for tests.

pub mod blob;
pub mod credential;
pub mod error;
pub mod http;
pub mod keyvault;
pub mod provider;
pub mod refresh;
pub mod signer;

#[cfg(feature = "standin")]
pub mod standin;

pub use credential::{AccessToken, CredentialConfig, TokenCache, TokenCredential};
pub use error::AzureError;
pub use keyvault::{KeyVaultClient, KeyVaultSettings};
pub use provider::KeyVaultKeyProvider;
pub use signer::KeyVaultSigner;

/// The scope of Azure Key Vault tokens.
pub const KEY_VAULT_SCOPE: &str = "https://vault.azure.net/.default";
/// The scope of Azure Database for PostgreSQL tokens (used as the password).
pub const POSTGRES_SCOPE: &str = "https://ossrdbms-aad.database.windows.net/.default";
/// The scope of Azure Cache for Redis tokens (used with `AUTH <object id> <token>`).
pub const REDIS_SCOPE: &str = "https://redis.azure.com/.default";
/// The scope of Azure Storage tokens.
pub const STORAGE_SCOPE: &str = "https://storage.azure.com/.default";

/// The `oid` claim (the identity's object id) of an Entra ID access token, read without
/// checking the signature: the token came from Entra over TLS, and the id only names the
/// Redis user the token signs in as (Redis checks the token itself).
pub fn token_object_id(token: &str) -> Option<String> {
    use base64::Engine as _;
    let payload = token.split('.').nth(1)?;
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&json).ok()?;
    claims.get("oid")?.as_str().filter(|oid| !oid.is_empty()).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;

    #[test]
    fn the_object_id_comes_from_the_token_payload() {
        let encode = |v: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        let token = format!("{}.{}.sig", encode(r#"{"alg":"RS256"}"#), encode(r#"{"oid":"3f2a-oid","aud":"x"}"#));
        assert_eq!(super::token_object_id(&token).as_deref(), Some("3f2a-oid"));
        let no_oid = format!("{}.{}.sig", encode("{}"), encode(r#"{"sub":"s"}"#));
        assert_eq!(super::token_object_id(&no_oid), None);
        assert_eq!(super::token_object_id("standin.abcdef"), None);
        assert_eq!(super::token_object_id("a.!!!.c"), None);
    }
}
