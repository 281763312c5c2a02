//! The stand-in's key store and Key Vault key routes.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use p256::ecdsa::signature::hazmat::PrehashSigner;
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use p256::pkcs8::DecodePublicKey;
use rand::RngCore;
use rsa::traits::PublicKeyParts;
use rsa::{Oaep, RsaPrivateKey};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::Sha256;

use super::{lock, Shared, VAULT_AUDIENCE};

/// Checks an ES256 signature (64-byte `r || s`) over `message` with a DER SPKI public key.
pub fn verify_es256(spki: &[u8], message: &[u8], signature: &[u8]) -> bool {
    let (Ok(key), Ok(sig)) = (VerifyingKey::from_public_key_der(spki), Signature::from_slice(signature)) else {
        return false;
    };
    key.verify(message, &sig).is_ok()
}

#[derive(Clone)]
pub(super) enum Material {
    Rsa(Arc<RsaPrivateKey>),
    Ec(Arc<SigningKey>),
}

impl Material {
    pub(super) fn rsa() -> Self {
        match RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048) {
            Ok(k) => Material::Rsa(Arc::new(k)),
            Err(e) => panic!("stand-in RSA key generation failed: {e}"),
        }
    }

    pub(super) fn ec() -> Self {
        Material::Ec(Arc::new(SigningKey::random(&mut rand::rngs::OsRng)))
    }
}

struct Version {
    name: String,
    created: i64,
    enabled: bool,
    tags: HashMap<String, String>,
    material: Material,
}

#[derive(Default)]
pub(super) struct Vault {
    pub(super) base: String,
    keys: HashMap<String, Vec<Version>>,
    clock: i64,
}

impl Vault {
    pub(super) fn add_version(&mut self, name: &str, material: Material) -> String {
        let mut raw = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut raw);
        let version = super::hex(&raw);
        // Strictly increasing creation times, so version order is creation order.
        self.clock = self.clock.max(time::OffsetDateTime::now_utc().unix_timestamp()) + 1;
        self.keys.entry(name.to_owned()).or_default().push(Version {
            name: version.clone(),
            created: self.clock,
            enabled: true,
            tags: HashMap::new(),
            material,
        });
        version
    }

    pub(super) fn versions(&self, name: &str) -> Vec<String> {
        self.keys.get(name).map(|v| v.iter().map(|v| v.name.clone()).collect()).unwrap_or_default()
    }

    pub(super) fn set_enabled(&mut self, name: &str, version: Option<&str>, enabled: bool) {
        for v in self.keys.get_mut(name).into_iter().flatten() {
            if version.is_none_or(|want| want == v.name) {
                v.enabled = enabled;
            }
        }
    }

    fn find(&self, name: &str, version: Option<&str>) -> Option<&Version> {
        let versions = self.keys.get(name)?;
        match version {
            Some(want) => versions.iter().find(|v| v.name == want),
            None => versions.last(),
        }
    }

    fn kid(&self, name: &str, version: &str) -> String {
        format!("{}/keys/{name}/{version}", self.base)
    }

    fn bundle(&self, name: &str, v: &Version) -> Value {
        let kid = self.kid(name, &v.name);
        let key = match &v.material {
            Material::Rsa(k) => json!({
                "kid": kid, "kty": "RSA-HSM", "key_ops": ["wrapKey", "unwrapKey"],
                "n": URL_SAFE_NO_PAD.encode(k.n().to_bytes_be()), "e": URL_SAFE_NO_PAD.encode(k.e().to_bytes_be()),
            }),
            Material::Ec(k) => {
                let point = k.verifying_key().to_encoded_point(false);
                json!({
                    "kid": kid, "kty": "EC-HSM", "crv": "P-256", "key_ops": ["sign", "verify"],
                    "x": URL_SAFE_NO_PAD.encode(point.x().map(|x| x.to_vec()).unwrap_or_default()),
                    "y": URL_SAFE_NO_PAD.encode(point.y().map(|y| y.to_vec()).unwrap_or_default()),
                })
            }
        };
        json!({
            "key": key,
            "attributes": { "enabled": v.enabled, "created": v.created, "updated": v.created, "recoveryLevel": "Recoverable+Purgeable" },
            "tags": v.tags,
        })
    }
}

pub(super) fn routes() -> Router<Shared> {
    Router::new()
        .route("/keys/{name}", get(get_latest))
        .route("/keys/{name}/versions", get(list_versions))
        .route("/keys/{name}/{version}", get(get_version).patch(update).post(latest_operation))
        .route("/keys/{name}/{version}/{op}", post(operation))
}

fn vault_error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(json!({ "error": { "code": code, "message": message } }))).into_response()
}

/// Why a request is refused, if it is: the bearer token must be one the stand-in issued, unexpired, for Key Vault; and every call
/// names an api-version, as Key Vault requires.
fn refusal(state: &Shared, headers: &HeaderMap, query: &HashMap<String, String>) -> Option<Response> {
    let challenge = |msg: &str| {
        let mut resp = vault_error(StatusCode::UNAUTHORIZED, "Unauthorized", msg);
        resp.headers_mut().insert(
            "www-authenticate",
            axum::http::HeaderValue::from_static("Bearer authorization=\"https://login.microsoftonline.com/common\", resource=\"https://vault.azure.net\""),
        );
        resp
    };
    if query.get("api-version").is_none_or(|v| v.is_empty()) {
        return Some(vault_error(StatusCode::BAD_REQUEST, "BadParameter", "api-version is required"));
    }
    let Some(token) =
        headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "))
    else {
        return Some(challenge("AKV10000: Request is missing a Bearer or PoP token."));
    };
    let inner = lock(state);
    match inner.tokens.get(token) {
        None => Some(challenge("AKV10032: Invalid issuer or unknown token.")),
        Some(t) if t.expires <= time::OffsetDateTime::now_utc() => Some(challenge("AKV10013: Token has expired.")),
        Some(t) if t.audience != VAULT_AUDIENCE => Some(challenge("AKV10022: Invalid audience.")),
        Some(_) => None,
    }
}

fn not_found(name: &str) -> Response {
    vault_error(
        StatusCode::NOT_FOUND,
        "KeyNotFound",
        &format!("A key with (name/id) {name} was not found in this key vault."),
    )
}

async fn get_latest(
    State(state): State<Shared>,
    Path(name): Path<String>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    show(&state, &name, None, &headers, &query)
}

async fn get_version(
    State(state): State<Shared>,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    show(&state, &name, Some(&version), &headers, &query)
}

fn show(
    state: &Shared,
    name: &str,
    version: Option<&str>,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
) -> Response {
    if let Some(resp) = refusal(state, headers, query) {
        return resp;
    }
    let inner = lock(state);
    match inner.keys.find(name, version) {
        Some(v) => Json(inner.keys.bundle(name, v)).into_response(),
        None => not_found(name),
    }
}

async fn list_versions(
    State(state): State<Shared>,
    Path(name): Path<String>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if let Some(resp) = refusal(&state, &headers, &query) {
        return resp;
    }
    let inner = lock(&state);
    let Some(versions) = inner.keys.keys.get(&name) else { return not_found(&name) };
    // Newest first, as Key Vault does not promise an order; the client sorts.
    let value: Vec<Value> = versions
        .iter()
        .rev()
        .map(|v| json!({ "kid": inner.keys.kid(&name, &v.name), "attributes": { "enabled": v.enabled, "created": v.created } }))
        .collect();
    Json(json!({ "value": value, "nextLink": null })).into_response()
}

#[derive(Deserialize)]
struct UpdateBody {
    #[serde(default)]
    attributes: Option<UpdateAttributes>,
    #[serde(default)]
    tags: Option<HashMap<String, String>>,
}

#[derive(Deserialize)]
struct UpdateAttributes {
    enabled: Option<bool>,
}

async fn update(
    State(state): State<Shared>,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    Json(body): Json<UpdateBody>,
) -> Response {
    if let Some(resp) = refusal(&state, &headers, &query) {
        return resp;
    }
    let mut inner = lock(&state);
    let Some(v) = inner.keys.keys.get_mut(&name).and_then(|vs| vs.iter_mut().find(|v| v.name == version)) else {
        return not_found(&name);
    };
    if let Some(enabled) = body.attributes.and_then(|a| a.enabled) {
        v.enabled = enabled;
    }
    if let Some(tags) = body.tags {
        v.tags.extend(tags);
    }
    let inner = &*inner;
    let v = inner.keys.find(&name, Some(&version)).map(|v| inner.keys.bundle(&name, v));
    Json(v.unwrap_or_default()).into_response()
}

#[derive(Deserialize)]
struct OperationBody {
    alg: String,
    value: String,
}

/// `POST /keys/{name}/rotate` and the version-less `POST /keys/{name}/wrapkey` (latest version).
async fn latest_operation(
    State(state): State<Shared>,
    Path((name, op)): Path<(String, String)>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    body: axum::body::Bytes,
) -> Response {
    if op == "rotate" {
        if let Some(resp) = refusal(&state, &headers, &query) {
            return resp;
        }
        let material = {
            let inner = lock(&state);
            match inner.keys.find(&name, None) {
                Some(v) => v.material.clone(),
                None => return not_found(&name),
            }
        };
        let fresh = match material {
            Material::Rsa(_) => Material::rsa(),
            Material::Ec(_) => Material::ec(),
        };
        let mut inner = lock(&state);
        let version = inner.keys.add_version(&name, fresh);
        let inner = &*inner;
        let bundle = inner.keys.find(&name, Some(&version)).map(|v| inner.keys.bundle(&name, v));
        return Json(bundle.unwrap_or_default()).into_response();
    }
    run_operation(&state, &name, None, &op, &headers, &query, &body)
}

async fn operation(
    State(state): State<Shared>,
    Path((name, version, op)): Path<(String, String, String)>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    body: axum::body::Bytes,
) -> Response {
    run_operation(&state, &name, Some(&version), &op, &headers, &query, &body)
}

fn run_operation(
    state: &Shared,
    name: &str,
    version: Option<&str>,
    op: &str,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
    body: &[u8],
) -> Response {
    if let Some(resp) = refusal(state, headers, query) {
        return resp;
    }
    let Ok(body) = serde_json::from_slice::<OperationBody>(body) else {
        return vault_error(StatusCode::BAD_REQUEST, "BadParameter", "body must be {alg, value}");
    };
    let Ok(input) = URL_SAFE_NO_PAD.decode(body.value.trim_end_matches('=')) else {
        return vault_error(StatusCode::BAD_REQUEST, "BadParameter", "value is not base64url");
    };
    let (kid, enabled, material) = {
        let inner = lock(state);
        match inner.keys.find(name, version) {
            Some(v) => (inner.keys.kid(name, &v.name), v.enabled, v.material.clone()),
            None => return not_found(name),
        }
    };
    if !enabled {
        return vault_error(
            StatusCode::FORBIDDEN,
            "Forbidden",
            &format!("Operation {op} is not allowed on a disabled key."),
        );
    }
    let output = match (op, body.alg.as_str(), &material) {
        ("wrapkey", "RSA-OAEP-256", Material::Rsa(k)) => {
            match k.to_public_key().encrypt(&mut rand::rngs::OsRng, Oaep::new::<Sha256>(), &input) {
                Ok(c) => c,
                Err(_) => return vault_error(StatusCode::BAD_REQUEST, "BadParameter", "the key is too long to wrap"),
            }
        }
        ("unwrapkey", "RSA-OAEP-256", Material::Rsa(k)) => match k.decrypt(Oaep::new::<Sha256>(), &input) {
            Ok(p) => p,
            Err(_) => return vault_error(StatusCode::BAD_REQUEST, "BadParameter", "The parameter is incorrect."),
        },
        ("sign", "ES256", Material::Ec(k)) => {
            if input.len() != 32 {
                return vault_error(StatusCode::BAD_REQUEST, "BadParameter", "ES256 signs a 32-byte digest");
            }
            let signature: Result<Signature, _> = k.sign_prehash(&input);
            match signature {
                Ok(s) => s.to_bytes().to_vec(),
                Err(_) => return vault_error(StatusCode::BAD_REQUEST, "BadParameter", "signing failed"),
            }
        }
        _ => {
            return vault_error(
                StatusCode::BAD_REQUEST,
                "BadParameter",
                &format!("operation {op} with algorithm {} is not supported by this key", body.alg),
            )
        }
    };
    Json(json!({ "kid": kid, "value": URL_SAFE_NO_PAD.encode(output) })).into_response()
}
