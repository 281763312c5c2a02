//! Single sign-on against a real OpenID Connect provider (npm `oidc-provider`, started from
//! tests/oidc/provider.mjs; `make oidc-provider` installs it). The tests drive the authorization
//! code + PKCE flow like the SPA does and send the ID token (audience = the client id) as the
//! bearer; the attack tests forge tokens with the provider's own key, a foreign key, or none.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::app::{s, Backend, Fetch, TestApp};

pub(crate) const CLIENT_ID: &str = "conclave-spa";
const REDIRECT_URI: &str = "http://127.0.0.1/callback";

/// The provider process; killed (by its own pid) when dropped.
pub struct OidcProvider {
    pub issuer: String,
    child: Child,
    http: reqwest::Client,
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A key the provider holds, for forging tokens.
pub struct ProviderKey {
    pub kid: String,
    pub der: Vec<u8>,
    pub public_pem: String,
}

impl OidcProvider {
    pub async fn start() -> Result<Self> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/oidc");
        if !dir.join("node_modules/oidc-provider").exists() {
            bail!("the OIDC test provider is not installed: run `make oidc-provider` (npm ci in tests/oidc)");
        }
        let mut child = std::process::Command::new("node")
            .arg("provider.mjs")
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting node tests/oidc/provider.mjs (node 20 is needed)")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let issuer = tokio::task::spawn_blocking(move || -> Result<String> {
            for line in BufReader::new(stdout).lines() {
                let line = line?;
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    return v["issuer"].as_str().map(str::to_owned).context("no issuer in the first JSON line");
                }
            }
            Err(anyhow!("the provider stopped before printing its address"))
        });
        let issuer = match tokio::time::timeout(Duration::from_secs(60), issuer).await {
            Ok(joined) => joined??,
            Err(_) => {
                let _ = child.kill();
                bail!("the OIDC provider printed no address within 60 s");
            }
        };
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()?;
        Ok(Self { issuer, child, http })
    }

    pub async fn add_user(&self, id: &str, claims: Value) -> Result<()> {
        let r = self
            .http
            .post(format!("{}/test/users", self.issuer))
            .json(&json!({"id": id, "claims": claims}))
            .send()
            .await?;
        anyhow::ensure!(r.status().is_success(), "adding {id}: {}", r.status());
        Ok(())
    }

    async fn key(&self, path: &str) -> Result<ProviderKey> {
        let v: Value = self.http.get(format!("{}{path}", self.issuer)).send().await?.json().await?;
        let der = base64::engine::general_purpose::STANDARD.decode(s(&v["der"]))?;
        Ok(ProviderKey { kid: s(&v["kid"]), der, public_pem: s(&v["public_pem"]) })
    }

    pub async fn signing_key(&self) -> Result<ProviderKey> {
        self.key("/test/signing-key").await
    }

    pub async fn foreign_key(&self) -> Result<ProviderKey> {
        self.key("/test/foreign-key").await
    }

    /// A new signing key; `retire` removes the older ones from the JWKS.
    pub async fn rotate(&self, retire: bool) -> Result<String> {
        let q = if retire { "?retire=1" } else { "" };
        let v: Value = self.http.post(format!("{}/test/rotate{q}", self.issuer)).send().await?.json().await?;
        Ok(s(&v["kid"]))
    }

    pub async fn jwks_requests(&self) -> Result<u64> {
        let v: Value = self.http.get(format!("{}/test/stats", self.issuer)).send().await?.json().await?;
        v["jwks_requests"].as_u64().context("no jwks_requests")
    }

    /// Signs `user` in with authorization code + PKCE and returns the ID token.
    pub async fn sign_in(&self, user: &str) -> Result<String> {
        let verifier = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        let state = uuid::Uuid::new_v4().simple().to_string();
        let mut url = url::Url::parse(&format!("{}/auth", self.issuer))?;
        url.query_pairs_mut()
            .append_pair("client_id", CLIENT_ID)
            .append_pair("response_type", "code")
            .append_pair("scope", "openid email profile conclave")
            .append_pair("redirect_uri", REDIRECT_URI)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256")
            .append_pair("state", &state)
            .append_pair("nonce", "n")
            .append_pair("login_hint", user);
        // The browser's part: follow redirects by hand, carrying the provider's cookies.
        let mut cookies: HashMap<String, String> = HashMap::new();
        let mut code = None;
        for _ in 0..10 {
            let cookie = cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ");
            let r = self.http.get(url.clone()).header("cookie", cookie).send().await?;
            for c in r.headers().get_all("set-cookie") {
                let pair = c.to_str()?.split(';').next().unwrap_or_default();
                if let Some((k, v)) = pair.split_once('=') {
                    cookies.insert(k.to_owned(), v.to_owned());
                }
            }
            if !r.status().is_redirection() {
                bail!("the provider answered {} at {url}: {}", r.status(), r.text().await.unwrap_or_default());
            }
            let location = r.headers().get("location").context("redirect without location")?.to_str()?.to_owned();
            let next = url.join(&location)?;
            if next.as_str().starts_with(REDIRECT_URI) {
                let q: HashMap<_, _> = next.query_pairs().into_owned().collect();
                anyhow::ensure!(q.get("state") == Some(&state), "state not returned: {next}");
                code = Some(q.get("code").with_context(|| format!("no code in {next}"))?.clone());
                break;
            }
            url = next;
        }
        let code = code.context("the sign-in did not come back to the redirect URI")?;
        let token: Value = self
            .http
            .post(format!("{}/token", self.issuer))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", code.as_str()),
                ("redirect_uri", REDIRECT_URI),
                ("client_id", CLIENT_ID),
                ("code_verifier", verifier.as_str()),
            ])
            .send()
            .await?
            .json()
            .await?;
        token["id_token"].as_str().map(str::to_owned).with_context(|| format!("no id_token in {token}"))
    }
}

/// A server signing in through `provider`, with tenants from `tid` and roles from claims.
pub(crate) async fn sso_server(backend: Backend, provider: &OidcProvider, extra: &[(&str, &str)]) -> Result<TestApp> {
    let mut builder = TestApp::builder(backend)
        .env("CONCLAVE_OIDC_ISSUER", provider.issuer.clone())
        .env("CONCLAVE_OIDC_CLIENT_ID", CLIENT_ID)
        .env("CONCLAVE_OIDC_SCOPES", "openid email profile conclave")
        .env("CONCLAVE_OIDC_TENANT_CLAIM", "tid")
        .env("CONCLAVE_OIDC_TENANTS", "contoso=Contoso, fabrikam=Fabrikam")
        .env("CONCLAVE_OIDC_ROLES", "Conclave.Admin=admin, auditors=auditor");
    for (k, v) in extra {
        builder = builder.env(k, *v);
    }
    builder.start().await
}

pub(crate) fn user_claims(email: &str, name: &str, tid: &str, roles: &[&str], groups: &[&str]) -> Value {
    json!({"email": email, "email_verified": true, "name": name, "tid": tid, "roles": roles, "groups": groups})
}

async fn sso_sign_in_provisions_users_from_claims(backend: Backend) -> Result<()> {
    let provider = OidcProvider::start().await?;
    let app = sso_server(backend, &provider, &[]).await?;
    provider
        .add_user("alice-sub", user_claims("Alice@Contoso.example", "Alice", "contoso", &["Conclave.Admin"], &[]))
        .await?;
    provider.add_user("bob-sub", user_claims("bob@contoso.example", "Bob", "contoso", &[], &["auditors"])).await?;
    provider.add_user("carol-sub", user_claims("carol@fabrikam.example", "Carol", "fabrikam", &[], &["x"])).await?;
    provider.add_user("mallory-sub", user_claims("mallory@evil.example", "Mallory", "unknown-org", &[], &[])).await?;

    // How the SPA signs in, and the local routes gone.
    let config = app.get("/api/v1/auth/config").fetch().await?.expect(200);
    assert_eq!(config["mode"], "oidc");
    assert_eq!(config["issuer"], provider.issuer.as_str());
    assert_eq!(config["client_id"], CLIENT_ID);
    assert_eq!(config["scopes"], json!(["openid", "email", "profile", "conclave"]));
    assert_eq!(config["signup_open"], false);
    let local = json!({"email": "x@example.com", "password": crate::app::PASSWORD, "display_name": "X"});
    app.post("/api/v1/auth/signup").json(&local).fetch().await?.problem(404);
    app.post("/api/v1/auth/login")
        .json(&json!({"email": "x@example.com", "password": "p"}))
        .fetch()
        .await?
        .problem(404);
    app.post("/api/v1/auth/refresh").fetch().await?.problem(404);
    app.post("/api/v1/auth/logout").fetch().await?.problem(404);

    // First sign-in provisions the user: email and name from the claims, role from app roles.
    let alice = provider.sign_in("alice-sub").await?;
    let me = app.get("/api/v1/me").bearer_auth(&alice).fetch().await?.expect(200);
    assert_eq!(me["email"], "alice@contoso.example");
    assert_eq!(me["display_name"], "Alice");
    assert_eq!(me["role"], "admin");
    let again = app.get("/api/v1/me").bearer_auth(&alice).fetch().await?.expect(200);
    assert_eq!(again["id"], me["id"], "the same subject is the same user");

    // Groups map to roles too; the same `tid` is the same tenant, another `tid` another one.
    let bob = provider.sign_in("bob-sub").await?;
    let bob_me = app.get("/api/v1/me").bearer_auth(&bob).fetch().await?.expect(200);
    assert_eq!(bob_me["role"], "auditor");
    assert_eq!(bob_me["tenant_id"], me["tenant_id"]);
    let carol = provider.sign_in("carol-sub").await?;
    let carol_me = app.get("/api/v1/me").bearer_auth(&carol).fetch().await?.expect(200);
    assert_eq!(carol_me["role"], "member", "unmapped groups give the default role");
    assert_ne!(carol_me["tenant_id"], me["tenant_id"]);

    // An organisation that is not mapped is refused (no auto-create configured).
    let mallory = provider.sign_in("mallory-sub").await?;
    app.get("/api/v1/me").bearer_auth(&mallory).fetch().await?.problem(401);

    // Later sign-ins bring the profile in line with the claims; the identity stays the subject,
    // not the email address.
    provider
        .add_user(
            "alice-sub",
            user_claims("alice.new@contoso.example", "Alice N.", "contoso", &["Conclave.Admin"], &[]),
        )
        .await?;
    let alice2 = provider.sign_in("alice-sub").await?;
    let me2 = app.get("/api/v1/me").bearer_auth(&alice2).fetch().await?.expect(200);
    assert_eq!(me2["id"], me["id"]);
    assert_eq!(me2["email"], "alice.new@contoso.example");
    assert_eq!(me2["display_name"], "Alice N.");

    // A disabled user is refused even with a valid token.
    let bob_id = s(&bob_me["id"]);
    app.patch(&format!("/api/v1/admin/users/{bob_id}"))
        .bearer_auth(&alice2)
        .json(&json!({"disabled": true}))
        .fetch()
        .await?
        .expect(200);
    app.get("/api/v1/me").bearer_auth(&bob).fetch().await?.problem(401);

    // API keys keep working in OIDC mode.
    let key =
        app.post("/api/v1/api-keys").bearer_auth(&alice2).json(&json!({"name": "cli"})).fetch().await?.expect(201);
    let by_key = app.get("/api/v1/me").bearer_auth(s(&key["key"])).fetch().await?.expect(200);
    assert_eq!(by_key["id"], me["id"]);

    // Audited: the provisioning, each sign-in once, the profile update.
    let events = app.get("/api/v1/audit/events?limit=200").bearer_auth(&alice2).fetch().await?.expect(200);
    let actions: Vec<String> = events.items().iter().map(|e| s(&e["action"])).collect();
    assert_eq!(actions.iter().filter(|a| *a == "user.provisioned").count(), 2, "alice and bob: {actions:?}");
    assert!(actions.iter().filter(|a| *a == "auth.sso_login").count() >= 3, "{actions:?}");
    assert!(actions.iter().any(|a| a == "user.sso_updated"), "{actions:?}");
    Ok(())
}

backend_tests!(sso_sign_in_provisions_users_from_claims);

/// New keys are picked up when a token names them; old keys work until the JWKS drops them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sso_key_rotation() -> Result<()> {
    let provider = OidcProvider::start().await?;
    let app = sso_server(Backend::Sqlite, &provider, &[("CONCLAVE_OIDC_JWKS_REFETCH_SECONDS", "0")]).await?;
    provider.add_user("alice-sub", user_claims("alice@contoso.example", "Alice", "contoso", &[], &[])).await?;
    let first_kid = provider.signing_key().await?.kid;
    let old = provider.sign_in("alice-sub").await?;
    app.get("/api/v1/me").bearer_auth(&old).fetch().await?.expect(200);
    assert_eq!(kid_of(&old)?, first_kid);

    let second_kid = provider.rotate(false).await?;
    let new = provider.sign_in("alice-sub").await?;
    assert_eq!(kid_of(&new)?, second_kid, "the provider signs with the new key");
    app.get("/api/v1/me").bearer_auth(&new).fetch().await?.expect(200);
    app.get("/api/v1/me").bearer_auth(&old).fetch().await?.expect(200);

    let third_kid = provider.rotate(true).await?;
    let newest = provider.sign_in("alice-sub").await?;
    assert_eq!(kid_of(&newest)?, third_kid);
    app.get("/api/v1/me").bearer_auth(&newest).fetch().await?.expect(200);
    app.get("/api/v1/me").bearer_auth(&old).fetch().await?.problem(401);
    app.get("/api/v1/me").bearer_auth(&new).fetch().await?.problem(401);
    Ok(())
}

fn kid_of(token: &str) -> Result<String> {
    jsonwebtoken::decode_header(token)?.kid.context("no kid")
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default()
}

/// Claims a genuine token of `alice-sub` would carry.
fn genuine_claims(issuer: &str) -> serde_json::Map<String, Value> {
    let now = now();
    json!({
        "iss": issuer, "aud": CLIENT_ID, "sub": "alice-sub", "iat": now, "exp": now + 600,
        "email": "alice@contoso.example", "name": "Alice", "tid": "contoso", "roles": ["Conclave.Admin"],
    })
    .as_object()
    .cloned()
    .unwrap_or_default()
}

fn sign(alg: Algorithm, kid: &str, key: &EncodingKey, claims: &serde_json::Map<String, Value>) -> Result<String> {
    let header = Header { kid: Some(kid.to_owned()), ..Header::new(alg) };
    Ok(jsonwebtoken::encode(&header, claims, key)?)
}

/// A server, its provider with `alice-sub`, and the provider's signing key.
async fn attack_setup() -> Result<(OidcProvider, TestApp, ProviderKey)> {
    let provider = OidcProvider::start().await?;
    provider
        .add_user("alice-sub", user_claims("alice@contoso.example", "Alice", "contoso", &["Conclave.Admin"], &[]))
        .await?;
    let app = sso_server(Backend::Sqlite, &provider, &[]).await?;
    let key = provider.signing_key().await?;
    // The control: a token made here with the provider's key and genuine claims is accepted,
    // so each refusal below is down to the one thing the attack changes.
    let genuine =
        sign(Algorithm::RS256, &key.kid, &EncodingKey::from_rsa_der(&key.der), &genuine_claims(&provider.issuer))?;
    app.get("/api/v1/me").bearer_auth(&genuine).fetch().await?.expect(200);
    Ok((provider, app, key))
}

/// The token is refused like any bad credential: 401, `WWW-Authenticate: Bearer`, and the same
/// problem as no credential at all, so the answer tells nothing about what was wrong.
async fn assert_refused(app: &TestApp, token: &str) -> Result<()> {
    let r = app.get("/api/v1/me").bearer_auth(token).fetch().await?.problem(401);
    assert_eq!(r.header("www-authenticate").as_deref(), Some("Bearer"));
    let none = app.get("/api/v1/me").fetch().await?.problem(401);
    for field in ["type", "title", "detail"] {
        assert_eq!(r[field], none[field], "the refusal differs from a missing credential in {field}: {}", r.text);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_attack_alg_none() -> Result<()> {
    let (provider, app, key) = attack_setup().await?;
    let header = URL_SAFE_NO_PAD.encode(json!({"alg": "none", "typ": "JWT", "kid": key.kid}).to_string());
    let payload = URL_SAFE_NO_PAD.encode(Value::Object(genuine_claims(&provider.issuer)).to_string());
    assert_refused(&app, &format!("{header}.{payload}.")).await?;
    let header = URL_SAFE_NO_PAD.encode(json!({"alg": "none", "typ": "JWT"}).to_string());
    assert_refused(&app, &format!("{header}.{payload}.")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_attack_hs256_with_the_public_key_as_secret() -> Result<()> {
    let (provider, app, key) = attack_setup().await?;
    let claims = genuine_claims(&provider.issuer);
    let forged = sign(Algorithm::HS256, &key.kid, &EncodingKey::from_secret(key.public_pem.as_bytes()), &claims)?;
    assert_refused(&app, &forged).await?;
    // The raw DER of the public key is the other classic secret.
    let der = key.public_pem.lines().filter(|l| !l.starts_with("-----")).collect::<String>();
    let der = base64::engine::general_purpose::STANDARD.decode(der)?;
    assert_refused(&app, &sign(Algorithm::HS256, &key.kid, &EncodingKey::from_secret(&der), &claims)?).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_attack_signed_by_a_key_not_in_the_jwks() -> Result<()> {
    let (provider, app, key) = attack_setup().await?;
    let foreign = provider.foreign_key().await?;
    let claims = genuine_claims(&provider.issuer);
    // Under the real key's id, and under its own.
    assert_refused(&app, &sign(Algorithm::RS256, &key.kid, &EncodingKey::from_rsa_der(&foreign.der), &claims)?).await?;
    assert_refused(&app, &sign(Algorithm::RS256, &foreign.kid, &EncodingKey::from_rsa_der(&foreign.der), &claims)?)
        .await
}

/// Signs `claims` changed by `change` with the provider's real key and checks the refusal.
async fn refused_with_real_key(change: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Result<()> {
    let (provider, app, key) = attack_setup().await?;
    let mut claims = genuine_claims(&provider.issuer);
    change(&mut claims);
    assert_refused(&app, &sign(Algorithm::RS256, &key.kid, &EncodingKey::from_rsa_der(&key.der), &claims)?).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_attack_expired() -> Result<()> {
    // Beyond the 60 s of tolerated skew.
    refused_with_real_key(|c| {
        c.insert("iat".into(), json!(now() - 900));
        c.insert("exp".into(), json!(now() - 120));
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_attack_not_yet_valid() -> Result<()> {
    refused_with_real_key(|c| {
        c.insert("nbf".into(), json!(now() + 600));
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_attack_issued_in_the_future() -> Result<()> {
    refused_with_real_key(|c| {
        c.insert("iat".into(), json!(now() + 600));
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_attack_wrong_issuer() -> Result<()> {
    refused_with_real_key(|c| {
        c.insert("iss".into(), json!("https://evil.example"));
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_attack_wrong_audience() -> Result<()> {
    refused_with_real_key(|c| {
        c.insert("aud".into(), json!("another-client"));
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_attack_missing_exp() -> Result<()> {
    refused_with_real_key(|c| {
        c.remove("exp");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_attack_tampered_payload() -> Result<()> {
    let (provider, app, _key) = attack_setup().await?;
    provider.add_user("bob-sub", user_claims("bob@contoso.example", "Bob", "contoso", &[], &[])).await?;
    let genuine = provider.sign_in("bob-sub").await?;
    app.get("/api/v1/me").bearer_auth(&genuine).fetch().await?.expect(200);
    let parts: Vec<&str> = genuine.split('.').collect();
    let mut claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1])?)?;
    claims["roles"] = json!(["Conclave.Admin"]);
    claims["sub"] = json!("alice-sub");
    let tampered = format!("{}.{}.{}", parts[0], URL_SAFE_NO_PAD.encode(claims.to_string()), parts[2]);
    assert_refused(&app, &tampered).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_attack_unknown_kid_flood_does_not_hammer_the_issuer() -> Result<()> {
    let (provider, app, _key) = attack_setup().await?;
    let foreign = provider.foreign_key().await?;
    let claims = genuine_claims(&provider.issuer);
    let before = provider.jwks_requests().await?;
    for _ in 0..25 {
        let kid = uuid::Uuid::new_v4().to_string();
        assert_refused(&app, &sign(Algorithm::RS256, &kid, &EncodingKey::from_rsa_der(&foreign.der), &claims)?).await?;
    }
    let after = provider.jwks_requests().await?;
    // One fetch per CONCLAVE_OIDC_JWKS_REFETCH_SECONDS (60 s by default), however many kids.
    assert!(after - before <= 1, "25 unknown key ids caused {} key set fetches", after - before);
    Ok(())
}

/// A logout token (or any non-access token type) signed by the issuer is not a credential.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_attack_another_token_type() -> Result<()> {
    let (provider, app, key) = attack_setup().await?;
    let claims = genuine_claims(&provider.issuer);
    let encoding = EncodingKey::from_rsa_der(&key.der);
    for typ in ["logout+jwt", "secevent+jwt", "dpop+jwt"] {
        let header = Header { kid: Some(key.kid.clone()), typ: Some(typ.into()), ..Header::new(Algorithm::RS256) };
        assert_refused(&app, &jsonwebtoken::encode(&header, &claims, &encoding)?).await?;
    }
    // An RFC 9068 access token is one.
    let header = Header { kid: Some(key.kid.clone()), typ: Some("at+jwt".into()), ..Header::new(Algorithm::RS256) };
    app.get("/api/v1/me").bearer_auth(jsonwebtoken::encode(&header, &claims, &encoding)?).fetch().await?.expect(200);
    Ok(())
}

/// A token for several audiences must name this client as its authorised party.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_attack_several_audiences_for_another_client() -> Result<()> {
    let (provider, app, key) = attack_setup().await?;
    let encoding = EncodingKey::from_rsa_der(&key.der);
    let with = |azp: Option<&str>| -> Result<String> {
        let mut claims = genuine_claims(&provider.issuer);
        claims.insert("aud".into(), json!([CLIENT_ID, "another-client"]));
        if let Some(azp) = azp {
            claims.insert("azp".into(), json!(azp));
        }
        sign(Algorithm::RS256, &key.kid, &encoding, &claims)
    };
    assert_refused(&app, &with(None)?).await?;
    assert_refused(&app, &with(Some("another-client"))?).await?;
    app.get("/api/v1/me").bearer_auth(with(Some(CLIENT_ID))?).fetch().await?.expect(200);
    Ok(())
}

/// With `CONCLAVE_OIDC_REQUIRED_SCOPE`, a token without the API's delegated scope (an ID token,
/// an app-only token, a token for another API) is refused; `scp` (Entra) and `scope` both count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_attack_token_without_the_required_scope() -> Result<()> {
    let provider = OidcProvider::start().await?;
    provider
        .add_user("alice-sub", user_claims("alice@contoso.example", "Alice", "contoso", &["Conclave.Admin"], &[]))
        .await?;
    let app = sso_server(Backend::Sqlite, &provider, &[("CONCLAVE_OIDC_REQUIRED_SCOPE", "access_as_user")]).await?;
    let key = provider.signing_key().await?;
    let encoding = EncodingKey::from_rsa_der(&key.der);
    let with = |claim: Option<(&str, &str)>| -> Result<String> {
        let mut claims = genuine_claims(&provider.issuer);
        if let Some((name, value)) = claim {
            claims.insert(name.into(), json!(value));
        }
        sign(Algorithm::RS256, &key.kid, &encoding, &claims)
    };
    assert_refused(&app, &with(None)?).await?;
    assert_refused(&app, &with(Some(("scp", "Files.Read access_as_user_not")))?).await?;
    assert_refused(&app, &provider.sign_in("alice-sub").await?).await?;
    app.get("/api/v1/me").bearer_auth(with(Some(("scp", "Files.Read access_as_user")))?).fetch().await?.expect(200);
    app.get("/api/v1/me").bearer_auth(with(Some(("scope", "openid access_as_user")))?).fetch().await?.expect(200);
    Ok(())
}

/// A tenant that requires MFA refuses SSO tokens whose `amr` shows a single factor (and audits
/// it), and accepts Entra ID's `["pwd", "mfa"]`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_requiring_mfa_refuses_single_factor_sso_tokens() -> Result<()> {
    let (provider, app, key) = attack_setup().await?;
    let encoding = EncodingKey::from_rsa_der(&key.der);
    // A fresh token per call (`jti`), so the short credential cache never answers for it.
    let with_amr = |amr: Option<Value>| -> Result<String> {
        let mut claims = genuine_claims(&provider.issuer);
        claims.insert("jti".into(), json!(uuid::Uuid::new_v4().to_string()));
        if let Some(amr) = amr {
            claims.insert("amr".into(), amr);
        }
        sign(Algorithm::RS256, &key.kid, &encoding, &claims)
    };
    let mfa = with_amr(Some(json!(["pwd", "mfa"])))?;
    app.patch("/api/v1/admin/tenant")
        .bearer_auth(&mfa)
        .json(&json!({"settings": {"require_mfa": true}}))
        .fetch()
        .await?
        .expect(200);
    assert_refused(&app, &with_amr(None)?).await?;
    assert_refused(&app, &with_amr(Some(json!(["pwd"])))?).await?;
    app.get("/api/v1/me").bearer_auth(with_amr(Some(json!(["pwd", "mfa"])))?).fetch().await?.expect(200);
    let events = app
        .get("/api/v1/audit/events?action=auth.sso_login&outcome=failure")
        .bearer_auth(with_amr(Some(json!(["hwk", "pin"])))?)
        .fetch()
        .await?
        .expect(200);
    let text = events.text.clone();
    assert!(text.contains("mfa_missing"), "{text}");
    Ok(())
}
