//! Entra ID tokens for Azure Blob Storage through `object_store`: plug [`BlobTokenProvider`] into
//! `MicrosoftAzureBuilder::with_credentials` so the document store needs no account key.

use std::sync::Arc;

use async_trait::async_trait;
use object_store::azure::AzureCredential;
use secrecy::ExposeSecret;

use crate::credential::TokenCredential;
use crate::STORAGE_SCOPE;

/// An `object_store` credential provider handing out bearer tokens for
/// `https://storage.azure.com/.default` (cached and refreshed by the credential's `TokenCache`).
pub struct BlobTokenProvider {
    credential: Arc<dyn TokenCredential>,
}

impl BlobTokenProvider {
    pub fn new(credential: Arc<dyn TokenCredential>) -> Self {
        Self { credential }
    }

    /// As the type `MicrosoftAzureBuilder::with_credentials` takes.
    pub fn into_provider(self) -> object_store::azure::AzureCredentialProvider {
        Arc::new(self)
    }
}

impl std::fmt::Debug for BlobTokenProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BlobTokenProvider")
    }
}

#[async_trait]
impl object_store::CredentialProvider for BlobTokenProvider {
    type Credential = AzureCredential;

    async fn get_credential(&self) -> object_store::Result<Arc<AzureCredential>> {
        let token = self
            .credential
            .token(STORAGE_SCOPE)
            .await
            .map_err(|e| object_store::Error::Generic { store: "MicrosoftAzure", source: Box::new(e) })?;
        Ok(Arc::new(AzureCredential::BearerToken(token.token.expose_secret().to_owned())))
    }
}
