//! Single sign-on as an OAuth resource server: an issuer's signed JWT, checked against the keys the
//! issuer publishes. Discovery once at start-up (the issuer in the document must be the configured
//! one, byte for byte), the JWKS cached and fetched again on a schedule (key rotation) and when a
//! token names a key id not seen yet (at most once per `refetch_interval`, so a flood of made-up
//! key ids cannot make the server hammer the issuer).
//!
//! A token is accepted only when all of these hold:
//! - its header names a key in the JWKS (`kid`), and its `alg` is one of RS256, PS256 or ES256
//!   and fits that key (the key's own `alg` when the JWKS states one, else its type): `none` and
//!   the HMAC family never verify anything here, so an RSA public key cannot be used as an HMAC
//!   secret;
//! - the signature verifies with that key;
//! - `iss` equals the issuer, `aud` contains the audience, `exp`, `iat` and `sub` are present,
//!   `exp` is in the future and `nbf` (when present) and `iat` in the past, each within `leeway`;
//! - its header `typ`, when present, names a plain JWT or an access token (`at+jwt`, RFC 9068):
//!   logout, security-event or DPoP proof tokens signed by the same issuer are not credentials;
//! - a token for several audiences names the configured client in `azp` (OIDC Core 3.1.3.7), so
//!   a token another client obtained for itself and also for us is refused;
//! - with a required scope configured, `scp` (Entra ID) or `scope` lists it: a token the user
//!   never consented to for this API is refused.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::sync::{Mutex, RwLock};

/// The only signature algorithms accepted.
pub const ALLOWED_ALGORITHMS: [Algorithm; 3] = [Algorithm::RS256, Algorithm::PS256, Algorithm::ES256];

/// Why a token or the issuer was refused. The messages are for the server log: the client only
/// ever learns that its bearer credential was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("the issuer could not be reached or answered badly: {0}")]
    Issuer(String),
    #[error("the discovery document names issuer '{found}', not the configured '{expected}'")]
    IssuerMismatch { expected: String, found: String },
    #[error("the token is not a well-formed JWT")]
    Malformed,
    #[error("the token's algorithm is not allowed or does not fit its key")]
    Algorithm,
    #[error("the token names no key the issuer publishes")]
    UnknownKey,
    #[error("the token was refused: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone)]
pub struct OidcSettings {
    /// Exactly as the issuer writes it in its tokens and its discovery document.
    pub issuer: String,
    /// The `aud` a token must carry (the API's app id URI, or the SPA's client id when the SPA
    /// sends its ID token).
    pub audience: String,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`.
    pub leeway: Duration,
    /// How often the key set is fetched again even when every token names a known key.
    pub jwks_max_age: Duration,
    /// The least time between two fetches caused by unknown key ids.
    pub refetch_interval: Duration,
    /// Extra trust anchors (PEM) for a private issuer.
    pub ca_pem: Option<Vec<u8>>,
    /// Plain `http://` issuers (development and tests only; `check-config` refuses it in production).
    pub allow_http: bool,
    /// The SPA's client id: the `azp` a token for several audiences must carry.
    pub client_id: Option<String>,
    /// A delegated scope every token must carry in `scp` or `scope` (e.g. `access_as_user`).
    pub required_scope: Option<String>,
}

/// A token that passed every check: who it is, and all its claims for mapping.
#[derive(Debug, Clone)]
pub struct VerifiedToken {
    pub issuer: String,
    pub subject: String,
    pub claims: Map<String, Value>,
}

/// Verifies bearer JWTs. Implemented by [`OidcVerifier`]; tests of the layers above may stub it.
#[async_trait::async_trait]
pub trait TokenVerifier: Send + Sync + 'static {
    async fn verify(&self, token: &str) -> Result<VerifiedToken, OidcError>;

    /// Changes whenever the issuer's key set is replaced: a verification cached under an older
    /// value must be done again (the key that signed it may be gone).
    fn keys_generation(&self) -> u64 {
        0
    }
}

struct KeySet {
    keys: HashMap<String, PublishedKey>,
    fetched_at: Instant,
}

struct PublishedKey {
    key: DecodingKey,
    /// The algorithms this key may verify: the one the JWKS declares, or those its type allows.
    algorithms: Vec<Algorithm>,
}

pub struct OidcVerifier {
    settings: OidcSettings,
    http: reqwest::Client,
    jwks_uri: String,
    keys: RwLock<KeySet>,
    /// When an unknown key id last caused a fetch; held while fetching so concurrent requests
    /// wait for one fetch instead of starting their own.
    last_refetch: Mutex<Option<Instant>>,
    /// Bumped on every replacement of `keys`.
    generation: std::sync::atomic::AtomicU64,
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

impl OidcVerifier {
    /// Reads the issuer's discovery document and its keys. Fails when the issuer is unreachable,
    /// names another issuer, or publishes no usable key.
    pub async fn discover(settings: OidcSettings) -> Result<Self, OidcError> {
        let mut builder = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .https_only(!settings.allow_http);
        if let Some(pem) = &settings.ca_pem {
            for cert in reqwest::Certificate::from_pem_bundle(pem).map_err(|e| OidcError::Issuer(e.to_string()))? {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder.build().map_err(|e| OidcError::Issuer(e.to_string()))?;
        let url = format!("{}/.well-known/openid-configuration", settings.issuer.trim_end_matches('/'));
        let discovery: Discovery = get_json(&http, &url).await?;
        if discovery.issuer != settings.issuer {
            return Err(OidcError::IssuerMismatch { expected: settings.issuer.clone(), found: discovery.issuer });
        }
        let keys = fetch_keys(&http, &discovery.jwks_uri).await?;
        if keys.is_empty() {
            return Err(OidcError::Issuer("the JWKS holds no RS256, PS256 or ES256 signing key".into()));
        }
        Ok(Self {
            settings,
            http,
            jwks_uri: discovery.jwks_uri,
            keys: RwLock::new(KeySet { keys, fetched_at: Instant::now() }),
            last_refetch: Mutex::new(None),
            generation: std::sync::atomic::AtomicU64::new(0),
        })
    }

    pub fn settings(&self) -> &OidcSettings {
        &self.settings
    }

    /// Fetches the key set again when an unknown key id asks for it, unless that happened less
    /// than `refetch_interval` ago. True when the set was replaced.
    async fn refetch_for_unknown_key(&self) -> bool {
        let mut last = self.last_refetch.lock().await;
        if last.is_some_and(|t| t.elapsed() < self.settings.refetch_interval) {
            return false;
        }
        *last = Some(Instant::now());
        self.replace_keys().await
    }

    async fn replace_keys(&self) -> bool {
        match fetch_keys(&self.http, &self.jwks_uri).await {
            Ok(keys) => {
                *self.keys.write().await = KeySet { keys, fetched_at: Instant::now() };
                self.generation.fetch_add(1, std::sync::atomic::Ordering::Release);
                true
            }
            Err(e) => {
                // The keys held stay in use; the issuer may be back by the next attempt.
                tracing::warn!(error = %e, "fetching the OIDC issuer's keys failed");
                false
            }
        }
    }

    /// The key and the algorithm pinned for this token, refreshing the set when it is old or
    /// the key id is new.
    async fn key_for(&self, kid: &str, alg: Algorithm) -> Result<(DecodingKey, Algorithm), OidcError> {
        let stale = self.keys.read().await.fetched_at.elapsed() > self.settings.jwks_max_age;
        if stale {
            let mut last = self.last_refetch.lock().await;
            if self.keys.read().await.fetched_at.elapsed() > self.settings.jwks_max_age {
                *last = Some(Instant::now());
                self.replace_keys().await;
            }
        }
        for attempt in 0..2 {
            if let Some(found) = self.keys.read().await.keys.get(kid) {
                if !found.algorithms.contains(&alg) {
                    return Err(OidcError::Algorithm);
                }
                return Ok((found.key.clone(), alg));
            }
            if attempt == 0 && !self.refetch_for_unknown_key().await {
                break;
            }
        }
        Err(OidcError::UnknownKey)
    }
}

#[async_trait::async_trait]
impl TokenVerifier for OidcVerifier {
    fn keys_generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    async fn verify(&self, token: &str) -> Result<VerifiedToken, OidcError> {
        // `decode_header` refuses `alg: none` (not an algorithm jsonwebtoken knows); the
        // allow-list then refuses everything but RS256, PS256 and ES256.
        let header = jsonwebtoken::decode_header(token).map_err(|_| OidcError::Malformed)?;
        if !ALLOWED_ALGORITHMS.contains(&header.alg) {
            return Err(OidcError::Algorithm);
        }
        if let Some(typ) = header.typ.as_deref() {
            if !matches!(typ.to_ascii_lowercase().as_str(), "jwt" | "at+jwt" | "application/at+jwt") {
                return Err(OidcError::Invalid(format!("a '{typ}' token is not a bearer credential")));
            }
        }
        let kid = header.kid.ok_or(OidcError::UnknownKey)?;
        let (key, alg) = self.key_for(&kid, header.alg).await?;

        let mut validation = Validation::new(alg);
        validation.algorithms = vec![alg];
        validation.set_issuer(&[&self.settings.issuer]);
        validation.set_audience(&[&self.settings.audience]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        validation.leeway = self.settings.leeway.as_secs();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = true;
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation)
            .map_err(|e| OidcError::Invalid(e.to_string()))?;
        let claims = data.claims;

        // jsonwebtoken requires `iat` but does not look at it: a token issued in the future is
        // from a skewed or hostile issuer.
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default();
        match claims.get("iat").and_then(Value::as_u64) {
            Some(iat) if iat <= now + self.settings.leeway.as_secs() => {}
            _ => return Err(OidcError::Invalid("iat is missing or in the future".into())),
        }
        self.check_party_and_scope(&claims)?;
        let subject = claims
            .get("sub")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty() && s.len() <= 255)
            .ok_or_else(|| OidcError::Invalid("sub is missing or unusable".into()))?
            .to_owned();
        Ok(VerifiedToken { issuer: self.settings.issuer.clone(), subject, claims })
    }
}

impl OidcVerifier {
    /// `azp` for several audiences, and the required scope.
    fn check_party_and_scope(&self, claims: &Map<String, Value>) -> Result<(), OidcError> {
        let audiences = match claims.get("aud") {
            Some(Value::Array(list)) => list.len(),
            _ => 1,
        };
        if audiences > 1 {
            let azp = claims.get("azp").and_then(Value::as_str);
            if azp.is_none() || azp != self.settings.client_id.as_deref() {
                return Err(OidcError::Invalid("a token for several audiences must name this client in azp".into()));
            }
        }
        if let Some(required) = &self.settings.required_scope {
            let granted = ["scp", "scope"]
                .iter()
                .filter_map(|name| claims.get(*name).and_then(Value::as_str))
                .any(|list| list.split(' ').any(|s| s == required));
            if !granted {
                return Err(OidcError::Invalid(format!("the token does not carry the scope '{required}'")));
            }
        }
        Ok(())
    }
}

async fn get_json<T: serde::de::DeserializeOwned>(http: &reqwest::Client, url: &str) -> Result<T, OidcError> {
    let response = http.get(url).send().await.map_err(|e| OidcError::Issuer(format!("{url}: {e}")))?;
    if !response.status().is_success() {
        return Err(OidcError::Issuer(format!("{url} answered {}", response.status())));
    }
    // Discovery documents and key sets are small; a bigger answer is not one.
    let body = response.bytes().await.map_err(|e| OidcError::Issuer(format!("{url}: {e}")))?;
    if body.len() > 1024 * 1024 {
        return Err(OidcError::Issuer(format!("{url} answered more than 1 MiB")));
    }
    serde_json::from_slice(&body).map_err(|e| OidcError::Issuer(format!("{url}: {e}")))
}

/// The issuer's signing keys that can verify an allowed algorithm, by key id. Keys of other
/// types, for encryption, or without an id are skipped rather than failing the whole set.
async fn fetch_keys(http: &reqwest::Client, url: &str) -> Result<HashMap<String, PublishedKey>, OidcError> {
    #[derive(Deserialize)]
    struct RawSet {
        keys: Vec<Value>,
    }
    let set: RawSet = get_json(http, url).await?;
    Ok(set.keys.into_iter().filter_map(|v| serde_json::from_value::<Jwk>(v).ok()).filter_map(usable_key).collect())
}

fn usable_key(jwk: Jwk) -> Option<(String, PublishedKey)> {
    let kid = jwk.common.key_id.clone()?;
    if jwk.common.public_key_use.as_ref().is_some_and(|u| *u != jsonwebtoken::jwk::PublicKeyUse::Signature) {
        return None;
    }
    let by_type = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => vec![Algorithm::RS256, Algorithm::PS256],
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => vec![Algorithm::ES256],
        _ => return None,
    };
    let algorithms = match jwk.common.key_algorithm {
        None => by_type,
        Some(declared) => {
            let declared = match declared {
                KeyAlgorithm::RS256 => Algorithm::RS256,
                KeyAlgorithm::PS256 => Algorithm::PS256,
                KeyAlgorithm::ES256 => Algorithm::ES256,
                _ => return None,
            };
            if !by_type.contains(&declared) {
                return None;
            }
            vec![declared]
        }
    };
    let key = DecodingKey::from_jwk(&jwk).ok()?;
    Some((kid, PublishedKey { key, algorithms }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwk(v: Value) -> Option<Vec<Algorithm>> {
        usable_key(serde_json::from_value(v).unwrap()).map(|(_, k)| k.algorithms)
    }

    const N: &str = "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw";

    #[test]
    fn only_signing_keys_of_allowed_types_are_kept_and_pinned() {
        assert_eq!(
            jwk(serde_json::json!({"kty": "RSA", "kid": "a", "n": N, "e": "AQAB"})),
            Some(vec![Algorithm::RS256, Algorithm::PS256])
        );
        assert_eq!(
            jwk(serde_json::json!({"kty": "RSA", "kid": "a", "alg": "PS256", "n": N, "e": "AQAB"})),
            Some(vec![Algorithm::PS256])
        );
        // A key declared for HMAC, one for encryption, and one without an id are all ignored.
        assert_eq!(jwk(serde_json::json!({"kty": "RSA", "kid": "a", "alg": "HS256", "n": N, "e": "AQAB"})), None);
        assert_eq!(jwk(serde_json::json!({"kty": "RSA", "kid": "a", "use": "enc", "n": N, "e": "AQAB"})), None);
        assert_eq!(jwk(serde_json::json!({"kty": "RSA", "n": N, "e": "AQAB"})), None);
        assert_eq!(jwk(serde_json::json!({"kty": "oct", "kid": "h", "k": "c2VjcmV0"})), None);
        // An EC key may not claim an RSA algorithm.
        assert_eq!(
            jwk(serde_json::json!({"kty": "EC", "kid": "e", "crv": "P-256", "alg": "RS256",
                "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"})),
            None
        );
    }
}
