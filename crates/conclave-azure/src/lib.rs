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
