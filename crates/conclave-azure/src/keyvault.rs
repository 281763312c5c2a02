//! The few Azure Key Vault key operations Conclave uses, over the REST API (api-version 7.4):
//! get a key, list its versions, `wrapkey`, `unwrapkey`, `sign`, `rotate` and update (enable or
//! disable a version). Bearer tokens for `https://vault.azure.net/.default` come from a
//! [`TokenCredential`]; transport errors, 5xx and 429 are retried as the [`RetryPolicy`] says.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use url::Url;
use zeroize::Zeroizing;

use crate::credential::TokenCredential;
use crate::error::{AzureError, Result};
use crate::http::{self, RetryPolicy};
use crate::KEY_VAULT_SCOPE;

const SERVICE: &str = "Azure Key Vault";
/// The REST API version every call names.
pub const API_VERSION: &str = "7.4";
/// At most this many pages of versions are read (25 per page by default: thousands of versions).
const MAX_PAGES: usize = 200;

/// Where the vault is and how to talk to it.
#[derive(Debug, Clone)]
pub struct KeyVaultSettings {
    /// `https://<name>.vault.azure.net` (or a private endpoint).
    pub vault_url: Url,
    /// Extra CA certificates (PEM) to trust: private endpoints and the test stand-in only.
    pub ca_file: Option<PathBuf>,
    pub timeout: Duration,
    pub retry: RetryPolicy,
}

impl KeyVaultSettings {
    pub fn new(vault_url: Url) -> Self {
        Self { vault_url, ca_file: None, timeout: http::DEFAULT_TIMEOUT, retry: RetryPolicy::default() }
    }
}

/// A key version as Key Vault describes it.
#[derive(Debug, Clone)]
pub struct KeyBundle {
    /// `https://<vault>/keys/<name>/<version>`.
    pub kid: String,
    pub version: String,
    pub enabled: bool,
    pub jwk: Jwk,
    pub tags: HashMap<String, String>,
}

/// The public half of a key (RFC 7517 names, base64url values).
#[derive(Debug, Clone, Deserialize)]
pub struct Jwk {
    pub kid: String,
    pub kty: String,
    #[serde(default)]
    pub crv: Option<String>,
    #[serde(default)]
    pub x: Option<String>,
    #[serde(default)]
    pub y: Option<String>,
    #[serde(default)]
    pub n: Option<String>,
}

/// One entry of a key's version list.
#[derive(Debug, Clone)]
pub struct KeyVersion {
    pub version: String,
    pub created: i64,
    pub enabled: bool,
}

#[derive(Deserialize)]
struct BundleWire {
    key: Jwk,
    #[serde(default)]
    attributes: Attributes,
    #[serde(default)]
    tags: HashMap<String, String>,
}

#[derive(Deserialize, Default)]
struct Attributes {
    #[serde(default = "yes")]
    enabled: bool,
    #[serde(default)]
    created: i64,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
struct ListWire {
    #[serde(default)]
    value: Vec<ItemWire>,
    #[serde(rename = "nextLink", default)]
    next_link: Option<String>,
}

#[derive(Deserialize)]
struct ItemWire {
    kid: String,
    #[serde(default)]
    attributes: Attributes,
}

#[derive(Serialize)]
struct OperationRequest<'a> {
    alg: &'a str,
    value: String,
}

#[derive(Deserialize)]
struct OperationResult {
    kid: Option<String>,
    value: String,
}

#[derive(Deserialize)]
struct ErrorWire {
    error: ErrorBody,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

/// A Key Vault client for one vault.
#[derive(Clone)]
pub struct KeyVaultClient {
    http: reqwest::Client,
    vault: Url,
    credential: Arc<dyn TokenCredential>,
    retry: RetryPolicy,
}

impl std::fmt::Debug for KeyVaultClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyVaultClient").field("vault", &self.vault.as_str()).finish_non_exhaustive()
    }
}

impl KeyVaultClient {
    pub fn new(settings: &KeyVaultSettings, credential: Arc<dyn TokenCredential>) -> Result<Self> {
        let http = http::client(settings.ca_file.as_deref(), settings.timeout)?;
        Ok(Self { http, vault: settings.vault_url.clone(), credential, retry: settings.retry.clone() })
    }

    /// The vault's URL without a trailing slash.
    pub fn vault_url(&self) -> String {
        self.vault.as_str().trim_end_matches('/').to_owned()
    }

    /// `https://<vault>/keys/<name>`: the id of a key, all versions.
    pub fn key_url(&self, name: &str) -> String {
        format!("{}/keys/{name}", self.vault_url())
    }

    fn url(&self, path: &str) -> Result<Url> {
        let mut url = Url::parse(&format!("{}/{path}", self.vault_url()))
            .map_err(|e| AzureError::Config(format!("Key Vault URL: {e}")))?;
        url.query_pairs_mut().append_pair("api-version", API_VERSION);
        Ok(url)
    }

    async fn call(
        &self,
        method: reqwest::Method,
        url: Url,
        body: Option<serde_json::Value>,
        retry: &RetryPolicy,
    ) -> Result<Vec<u8>> {
        let token = self.credential.token(KEY_VAULT_SCOPE).await?;
        let resp = http::send(SERVICE, retry, || {
            let mut req = self.http.request(method.clone(), url.clone()).bearer_auth(token.token.expose_secret());
            if let Some(b) = &body {
                req = req.json(b);
            }
            req
        })
        .await?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| http::unavailable(SERVICE, &e))?;
        if status.is_success() {
            return Ok(bytes.to_vec());
        }
        let (code, message) = match serde_json::from_slice::<ErrorWire>(&bytes) {
            Ok(ErrorWire { error }) => (error.code, error.message),
            Err(_) => (String::new(), String::new()),
        };
        Err(AzureError::Vault { status: status.as_u16(), code, message })
    }

    fn parse<T: for<'de> Deserialize<'de>>(body: &[u8], what: &str) -> Result<T> {
        serde_json::from_slice(body)
            .map_err(|e| AzureError::Protocol { service: SERVICE, detail: format!("{what}: {e}") })
    }

    fn bundle(body: &[u8]) -> Result<KeyBundle> {
        let wire: BundleWire = Self::parse(body, "key bundle")?;
        let version = version_of(&wire.key.kid)?;
        Ok(KeyBundle {
            kid: wire.key.kid.clone(),
            version,
            enabled: wire.attributes.enabled,
            jwk: wire.key,
            tags: wire.tags,
        })
    }

    fn path(name: &str, version: Option<&str>, op: Option<&str>) -> String {
        let mut p = format!("keys/{name}");
        if let Some(v) = version {
            p.push('/');
            p.push_str(v);
        }
        if let Some(op) = op {
            p.push('/');
            p.push_str(op);
        }
        p
    }

    /// A key's latest version (`version: None`) or a given one.
    pub async fn get_key(&self, name: &str, version: Option<&str>) -> Result<KeyBundle> {
        let body =
            self.call(reqwest::Method::GET, self.url(&Self::path(name, version, None))?, None, &self.retry).await?;
        Self::bundle(&body)
    }

    /// Every version of a key, oldest first (by creation time, then name).
    pub async fn list_versions(&self, name: &str) -> Result<Vec<KeyVersion>> {
        let mut out = Vec::new();
        let mut url = self.url(&format!("keys/{name}/versions"))?;
        for _ in 0..MAX_PAGES {
            let body = self.call(reqwest::Method::GET, url.clone(), None, &self.retry).await?;
            let page: ListWire = Self::parse(&body, "key versions")?;
            for item in page.value {
                out.push(KeyVersion {
                    version: version_of(&item.kid)?,
                    created: item.attributes.created,
                    enabled: item.attributes.enabled,
                });
            }
            match page.next_link.filter(|l| !l.is_empty()) {
                Some(next) => {
                    let next = Url::parse(&next)
                        .map_err(|e| AzureError::Protocol { service: SERVICE, detail: format!("nextLink: {e}") })?;
                    // Follow links only within this vault, so a bearer token is never sent elsewhere.
                    if next.origin() != self.vault.origin() {
                        return Err(AzureError::Protocol {
                            service: SERVICE,
                            detail: "nextLink points outside the vault".into(),
                        });
                    }
                    url = next;
                }
                None => break,
            }
        }
        out.sort_by(|a, b| a.created.cmp(&b.created).then_with(|| a.version.cmp(&b.version)));
        Ok(out)
    }

    async fn operation(
        &self,
        name: &str,
        version: Option<&str>,
        op: &str,
        alg: &str,
        value: &[u8],
    ) -> Result<(String, Vec<u8>)> {
        let body = serde_json::to_value(OperationRequest { alg, value: URL_SAFE_NO_PAD.encode(value) })
            .map_err(|e| AzureError::Protocol { service: SERVICE, detail: e.to_string() })?;
        let answer = self
            .call(reqwest::Method::POST, self.url(&Self::path(name, version, Some(op)))?, Some(body), &self.retry)
            .await?;
        let result: OperationResult = Self::parse(&answer, op)?;
        let value = URL_SAFE_NO_PAD
            .decode(result.value.trim_end_matches('='))
            .map_err(|e| AzureError::Protocol { service: SERVICE, detail: format!("{op} value: {e}") })?;
        let kid = result.kid.unwrap_or_default();
        Ok((kid, value))
    }

    /// `wrapkey`: returns the version that wrapped (from the answer's `kid`) and the ciphertext.
    /// With `version: None` the key's latest version wraps.
    pub async fn wrap(&self, name: &str, version: Option<&str>, alg: &str, key: &[u8]) -> Result<(String, Vec<u8>)> {
        let (kid, ciphertext) = self.operation(name, version, "wrapkey", alg, key).await?;
        let used = match version {
            Some(v) => v.to_owned(),
            None => version_of(&kid)?,
        };
        Ok((used, ciphertext))
    }

    /// `unwrapkey` with a given version; the plaintext is zeroized when dropped.
    pub async fn unwrap(&self, name: &str, version: &str, alg: &str, ciphertext: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        let (_, plain) = self.operation(name, Some(version), "unwrapkey", alg, ciphertext).await?;
        Ok(Zeroizing::new(plain))
    }

    /// `sign` over a digest the caller computed.
    pub async fn sign(&self, name: &str, version: &str, alg: &str, digest: &[u8]) -> Result<Vec<u8>> {
        Ok(self.operation(name, Some(version), "sign", alg, digest).await?.1)
    }

    /// `rotate`: a new version, made current. Not retried, so one call makes at most one version.
    pub async fn rotate(&self, name: &str) -> Result<KeyBundle> {
        let body = self
            .call(reqwest::Method::POST, self.url(&format!("keys/{name}/rotate"))?, None, &RetryPolicy::once())
            .await?;
        Self::bundle(&body)
    }

    /// Enables or disables a version, and merges `tags` into its tags.
    pub async fn update(
        &self,
        name: &str,
        version: &str,
        enabled: bool,
        tags: Option<HashMap<String, String>>,
    ) -> Result<KeyBundle> {
        let mut body = serde_json::json!({ "attributes": { "enabled": enabled } });
        if let Some(tags) = tags {
            body["tags"] = serde_json::to_value(tags).unwrap_or_default();
        }
        let body = self
            .call(reqwest::Method::PATCH, self.url(&Self::path(name, Some(version), None))?, Some(body), &self.retry)
            .await?;
        Self::bundle(&body)
    }
}

/// The version from a key id `https://<vault>/keys/<name>/<version>`.
pub fn version_of(kid: &str) -> Result<String> {
    let bad = || AzureError::Protocol { service: SERVICE, detail: format!("key id '{kid}' names no version") };
    let url = Url::parse(kid).map_err(|_| bad())?;
    let segments: Vec<&str> = url.path_segments().map(|s| s.filter(|p| !p.is_empty()).collect()).unwrap_or_default();
    match segments.as_slice() {
        ["keys", _, version] => Ok((*version).to_owned()),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_come_from_key_ids() {
        assert_eq!(version_of("https://v.vault.azure.net/keys/kek/0a1b2c").unwrap(), "0a1b2c");
        assert!(version_of("https://v.vault.azure.net/keys/kek").is_err());
        assert!(version_of("not a url").is_err());
    }
}
