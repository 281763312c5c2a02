//! The `object_store` credential adapter hands out Entra ID tokens for Azure Storage.

use conclave_azure::blob::BlobTokenProvider;
use object_store::azure::AzureCredential;

use crate::support::Env;

#[tokio::test]
async fn blob_requests_get_a_storage_bearer_token() {
    let env = Env::start().await;
    let provider = BlobTokenProvider::new(env.credential()).into_provider();
    let credential = provider.get_credential().await.unwrap();
    let AzureCredential::BearerToken(token) = credential.as_ref() else {
        panic!("a bearer token, not {credential:?}");
    };
    assert!(env.standin.token_valid_for(token, "https://storage.azure.com"));
    // Cached: the second request reuses the token.
    provider.get_credential().await.unwrap();
    assert_eq!(env.standin.token_requests(), 1);
}
