//! A stand-in per test, the environment that points a credential at it, and clients built on it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use conclave_azure::http::RetryPolicy;
use conclave_azure::standin::StandIn;
use conclave_azure::{CredentialConfig, KeyVaultClient, KeyVaultKeyProvider, KeyVaultSettings, TokenCredential};

pub const TENANT: &str = "11111111-2222-3333-4444-555555555555";
pub const CLIENT: &str = "conclave-app";
pub const SECRET: &str = "s3cret-value";
pub const KEK: &str = "conclave-kek";

pub struct Env {
    pub standin: StandIn,
    pub ca_file: PathBuf,
    _dir: tempfile::TempDir,
}

impl Env {
    pub async fn start() -> Self {
        let standin = StandIn::start().await.expect("start the Key Vault stand-in");
        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("ca.pem");
        standin.write_ca(&ca_file).unwrap();
        standin.add_client_secret(CLIENT, SECRET);
        Self { standin, ca_file, _dir: dir }
    }

    pub fn dir(&self) -> &std::path::Path {
        self._dir.path()
    }

    /// The variables `CredentialConfig::from_env` reads: the CA file, and `vars`.
    pub fn config(&self, vars: &[(&str, &str)]) -> CredentialConfig {
        let mut map: HashMap<String, String> = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        map.insert("CONCLAVE_AZURE_CA_FILE".into(), self.ca_file.display().to_string());
        let mut config = CredentialConfig::from_env(|k| map.get(k).cloned()).unwrap();
        config.retry = fast_retry();
        config
    }

    /// Client credentials against the stand-in.
    pub fn client_secret_config(&self) -> CredentialConfig {
        let url = self.standin.url();
        self.config(&[
            ("AZURE_TENANT_ID", TENANT),
            ("AZURE_CLIENT_ID", CLIENT),
            ("AZURE_CLIENT_SECRET", SECRET),
            ("AZURE_AUTHORITY_HOST", &url),
        ])
    }

    pub fn credential(&self) -> Arc<dyn TokenCredential> {
        self.client_secret_config().build().unwrap()
    }

    pub fn settings(&self) -> KeyVaultSettings {
        let mut settings = KeyVaultSettings::new(self.standin.url().parse().unwrap());
        settings.ca_file = Some(self.ca_file.clone());
        settings.retry = fast_retry();
        settings.timeout = Duration::from_secs(5);
        settings
    }

    pub fn vault(&self) -> KeyVaultClient {
        KeyVaultClient::new(&self.settings(), self.credential()).unwrap()
    }

    /// A provider on a fresh RSA key.
    pub fn provider(&self) -> KeyVaultKeyProvider {
        self.standin.create_rsa_key(KEK);
        KeyVaultKeyProvider::new(self.vault(), KEK).unwrap()
    }
}

/// Quick retries, so failure tests finish fast.
pub fn fast_retry() -> RetryPolicy {
    RetryPolicy { attempts: 3, base_delay: Duration::from_millis(20), max_retry_after: Duration::from_secs(5) }
}
