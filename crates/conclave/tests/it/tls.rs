//! TLS termination and mutual TLS, with certificates each test makes: a CA, a server
//! certificate for 127.0.0.1 and localhost, a good client certificate, one from another CA and
//! an expired one.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose};
use serde_json::{json, Value};
use time::OffsetDateTime;

use crate::app::{run_cli, start_mock, Backend, Fetch, TempDir, TestApp, PROVIDER_KEY};

struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new(name: &str) -> Result<Ca> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(Ca { cert, key })
    }

    fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A leaf certificate and its key, as PEM: for a server (with `names` as SANs) or a client.
    fn issue(&self, common_name: &str, names: &[&str], client: bool, expired: bool) -> Result<Leaf> {
        let mut params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())?;
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.extended_key_usages =
            vec![if client { ExtendedKeyUsagePurpose::ClientAuth } else { ExtendedKeyUsagePurpose::ServerAuth }];
        let now = OffsetDateTime::now_utc();
        (params.not_before, params.not_after) = if expired {
            (now - time::Duration::days(30), now - time::Duration::days(1))
        } else {
            (now - time::Duration::days(1), now + time::Duration::days(30))
        };
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.cert, &self.key)?;
        Ok(Leaf { cert: cert.pem(), key: key.serialize_pem(), der: cert.der().to_vec() })
    }
}

struct Leaf {
    cert: String,
    key: String,
    der: Vec<u8>,
}

impl Leaf {
    /// Certificate and key in one PEM, as `reqwest::Identity::from_pem` takes them.
    fn identity(&self) -> String {
        format!("{}{}", self.cert, self.key)
    }
}

/// The certificates of one test, written where the server reads them.
struct Pki {
    dir: TempDir,
    ca: Ca,
    server: Leaf,
}

impl Pki {
    fn new() -> Result<Pki> {
        let dir = TempDir::new()?;
        let ca = Ca::new("Conclave test CA")?;
        let server = ca.issue("conclave.test", &["127.0.0.1", "localhost"], false, false)?;
        let pki = Pki { dir, ca, server };
        pki.write("server.pem", &pki.server.cert)?;
        pki.write("server.key", &pki.server.key)?;
        pki.write("ca.pem", &pki.ca.pem())?;
        Ok(pki)
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_string_lossy().into_owned()
    }

    fn write(&self, name: &str, pem: &str) -> Result<()> {
        std::fs::write(self.dir.path().join(name), pem).with_context(|| format!("writing {name}"))
    }

    /// The variables of a server with this certificate, and client authentication if asked.
    fn env(&self, client_auth: Option<&str>) -> Vec<(String, String)> {
        let mut env = vec![
            ("CONCLAVE_TLS_CERT_FILE".to_owned(), self.path("server.pem")),
            ("CONCLAVE_TLS_KEY_FILE".to_owned(), self.path("server.key")),
        ];
        if let Some(mode) = client_auth {
            env.push(("CONCLAVE_TLS_CLIENT_CA_FILE".to_owned(), self.path("ca.pem")));
            env.push(("CONCLAVE_TLS_CLIENT_AUTH".to_owned(), mode.to_owned()));
        }
        env
    }

    async fn start(&self, client_auth: Option<&str>, extra: &[(&str, &str)]) -> Result<TestApp> {
        let mut builder = TestApp::builder(Backend::Sqlite).https(&self.ca.pem());
        for (k, v) in self.env(client_auth) {
            builder = builder.env(&k, v);
        }
        for (k, v) in extra {
            builder = builder.env(k, *v);
        }
        builder.start().await
    }
}

/// Whether a request over a new connection presenting `identity` gets an HTTP answer.
async fn reaches(app: &TestApp, identity: Option<&str>) -> Result<bool> {
    Ok(app.tls_client(identity)?.get(app.url("/healthz")).send().await.is_ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_h2_and_http1_and_the_listening_line_says_tls() -> Result<()> {
    let pki = Pki::new()?;
    let app = pki.start(None, &[]).await?;
    assert!(app.base.starts_with("https://"));
    let line = app.logs().into_iter().find(|l| l.contains("\"listening\"")).context("no listening line")?;
    let line: Value = serde_json::from_str(&line)?;
    assert_eq!(line["tls"], true, "{line}");
    assert_eq!(line["addr"], app.addr.to_string(), "{line}");

    let response = app.get("/healthz").send().await?;
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), reqwest::Version::HTTP_2, "ALPN offers h2 first");
    let http1 = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(pki.ca.pem().as_bytes())?)
        .http1_only()
        .build()?;
    let response = http1.get(app.url("/healthz")).send().await?;
    assert_eq!((response.status().as_u16(), response.version()), (200, reqwest::Version::HTTP_11));

    // A plain HTTP request to the TLS port gets no HTTP answer.
    let plain = reqwest::Client::new().get(format!("http://{}/healthz", app.addr)).send().await;
    assert!(plain.is_err() || plain.is_ok_and(|r| r.status() == 400), "plain HTTP must not be served");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_streams_over_tls() -> Result<()> {
    let pki = Pki::new()?;
    let app = pki.start(None, &[]).await?;
    let admin = app.admin().await?;
    let agent = app.create_agent(&admin.token, json!({"name": "Demo", "model": "conclave-demo"})).await?;
    let conversation = app.create_conversation(&admin.token, &agent["id"], None).await?;
    let mut events = app.post_streamed(&admin.token, &conversation["id"], "hello over TLS").await?;
    let events = events.until_end(Duration::from_secs(60)).await?;
    let last = events.last().context("no events")?;
    assert_eq!(last.event, "done", "the stream ends with its done event: {}", last.data);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_over_tls_lets_a_streamed_reply_finish() -> Result<()> {
    let pki = Pki::new()?;
    let mock = start_mock().await?;
    let mut builder = TestApp::builder(Backend::Sqlite).https(&pki.ca.pem()).provider(&mock);
    for (k, v) in pki.env(None) {
        builder = builder.env(&k, v);
    }
    let mut app = builder.env("CONCLAVE_SHUTDOWN_GRACE_SECONDS", "15").start().await?;
    let admin = app.admin().await?;
    let agent = app.create_agent(&admin.token, json!({})).await?;
    let conversation = app.create_conversation(&admin.token, &agent["id"], None).await?;
    mock.set_script(
        conclave_mock_provider::Script::echo().with_api_key(PROVIDER_KEY).with_response_delay(Duration::from_secs(2)),
    );

    let mut events = app.post_streamed(&admin.token, &conversation["id"], "finish me").await?;
    // The stored user message comes first: the reply is under way when the signal arrives.
    let first = events.expect_event().await?;
    assert_eq!(first.event, "message", "{}", first.data);
    app.terminate()?;
    let rest = events.until_end(Duration::from_secs(30)).await?;
    let done = rest.last().context("no events after the signal")?;
    assert_eq!(done.event, "done", "{}", done.data);
    assert!(done.data.contains("echo: finish me"), "{}", done.data);
    let status = app.wait_exit(Duration::from_secs(20)).await?;
    assert!(status.success(), "exit status after SIGTERM: {status}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_client_auth_refuses_every_client_without_a_good_certificate() -> Result<()> {
    let pki = Pki::new()?;
    let good = pki.ca.issue("build-agent", &["build-agent.example.test"], true, false)?;
    let foreign = Ca::new("Another CA")?.issue("intruder", &[], true, false)?;
    let expired = pki.ca.issue("old-agent", &[], true, true)?;
    let app = pki.start(Some("required"), &[]).await?;
    let line = app.logs().into_iter().find(|l| l.contains("\"listening\"")).context("no listening line")?;
    assert!(line.contains("\"client_auth\":\"required\""), "{line}");

    assert!(reaches(&app, Some(&good.identity())).await?, "a certificate from the client CA is let in");
    assert!(!reaches(&app, None).await?, "no certificate: refused in the handshake");
    assert!(!reaches(&app, Some(&foreign.identity())).await?, "another CA's certificate: refused");
    assert!(!reaches(&app, Some(&expired.identity())).await?, "an expired certificate: refused");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optional_client_auth_lets_browsers_in_and_api_keys_need_a_certificate() -> Result<()> {
    let pki = Pki::new()?;
    let good = pki.ca.issue("build-agent", &["build-agent.example.test"], true, false)?;
    let foreign = Ca::new("Another CA")?.issue("intruder", &[], true, false)?;
    let expired = pki.ca.issue("old-agent", &[], true, true)?;
    let app = pki.start(Some("optional"), &[("CONCLAVE_MTLS_REQUIRED_FOR_API_KEYS", "true")]).await?;

    // A browser: no certificate, signs in and works with its session.
    let admin = app.admin().await?;
    app.get("/api/v1/me").bearer_auth(&admin.token).fetch().await?.expect(200);
    let created = app
        .post("/api/v1/api-keys")
        .bearer_auth(&admin.token)
        .json(&json!({"name": "build agent"}))
        .fetch()
        .await?
        .expect(201);
    let key = created.body["key"].as_str().context("no key")?.to_owned();

    // The API key without a certificate: refused, with a problem that says why.
    let refused = app.get("/api/v1/me").bearer_auth(&key).fetch().await?.expect(401);
    assert_eq!(refused.header("content-type").as_deref(), Some("application/problem+json"));
    assert!(
        refused.body["type"].as_str().unwrap_or_default().ends_with("client-certificate-required"),
        "{}",
        refused.text
    );
    assert!(refused.body["detail"].as_str().unwrap_or_default().contains("client certificate"), "{}", refused.text);
    let gateway = app.get("/v1/models").bearer_auth(&key).fetch().await?.expect(401);
    assert_eq!(gateway.body["error"]["code"], "client_certificate_required", "{}", gateway.text);
    // Probes stay reachable without a certificate.
    app.get("/healthz").fetch().await?.expect(200);

    // With a certificate from the client CA, the same key works, there and on the gateway.
    let machine = app.tls_client(Some(&good.identity()))?;
    let me = machine.get(app.url("/api/v1/me")).bearer_auth(&key).fetch().await?.expect(200);
    assert_eq!(me.body["email"], admin.email);
    machine.get(app.url("/v1/models")).bearer_auth(&key).fetch().await?.expect(200);

    // A presented certificate must still be good: another CA's or an expired one is refused.
    assert!(!reaches(&app, Some(&foreign.identity())).await?, "another CA's certificate: refused");
    assert!(!reaches(&app, Some(&expired.identity())).await?, "an expired certificate: refused");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_certificate_is_served_without_a_restart() -> Result<()> {
    let pki = Pki::new()?;
    let app = pki.start(None, &[]).await?;
    let served = |response: &reqwest::Response| {
        response.extensions().get::<reqwest::tls::TlsInfo>().and_then(|i| i.peer_certificate()).map(<[u8]>::to_vec)
    };
    let first = app.tls_client(None)?.get(app.url("/healthz")).send().await?;
    assert_eq!(served(&first).as_deref(), Some(pki.server.der.as_slice()));

    let next = pki.ca.issue("conclave.test (rotated)", &["127.0.0.1", "localhost"], false, false)?;
    pki.write("server.pem", &next.cert)?;
    pki.write("server.key", &next.key)?;
    app.hangup()?;
    // The reload is asynchronous: new connections get the new certificate once it is done.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let response = app.tls_client(None)?.get(app.url("/healthz")).send().await?;
        if served(&response).as_deref() == Some(next.der.as_slice()) {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the rotated certificate was not served; logs:\n{}",
            app.logs().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The log line may reach the test's reader a moment after the new certificate is served.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !app.logs().iter().any(|l| l.contains("TLS certificate reloaded")) {
        anyhow::ensure!(Instant::now() < deadline, "the reload was not logged");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A broken pair is not taken: the server keeps serving the current one.
    pki.write("server.key", &pki.server.key)?;
    app.hangup()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !app.logs().iter().any(|l| l.contains("TLS certificate not reloaded")) {
        anyhow::ensure!(Instant::now() < deadline, "no reload error logged");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let response = app.tls_client(None)?.get(app.url("/healthz")).send().await?;
    assert_eq!(served(&response).as_deref(), Some(next.der.as_slice()));

    // Without a signal, a change of the files is noticed too (they are checked every 5 s).
    let third = pki.ca.issue("conclave.test (third)", &["127.0.0.1", "localhost"], false, false)?;
    pki.write("server.key", &third.key)?;
    pki.write("server.pem", &third.cert)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let response = app.tls_client(None)?.get(app.url("/healthz")).send().await?;
        if served(&response).as_deref() == Some(third.der.as_slice()) {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "the changed files were not picked up");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_errors_name_the_variable() -> Result<()> {
    let pki = Pki::new()?;
    let other = pki.ca.issue("other", &["localhost"], false, false)?;
    pki.write("other.key", &other.key)?;
    let data = TempDir::new()?;
    let site = ("CONCLAVE_DATA_DIR".to_owned(), data.path().to_string_lossy().into_owned());
    let cases: [(&str, &str, &str); 4] = [
        ("CONCLAVE_TLS_CERT_FILE", "/nonexistent/server.pem", "CONCLAVE_TLS_CERT_FILE"),
        ("CONCLAVE_TLS_KEY_FILE", "/nonexistent/server.key", "CONCLAVE_TLS_KEY_FILE"),
        ("CONCLAVE_TLS_KEY_FILE", "other.key", "is not the key of the certificate"),
        ("CONCLAVE_TLS_CLIENT_CA_FILE", "server.key", "CONCLAVE_TLS_CLIENT_CA_FILE"),
    ];
    for (var, value, expected) in cases {
        let value = if value.starts_with('/') { value.to_owned() } else { pki.path(value) };
        let mut env = pki.env(None);
        env.retain(|(k, _)| k != var);
        env.push((var.to_owned(), value));
        env.push(site.clone());
        let out = run_cli(&["serve"], &env, Duration::from_secs(60)).await?;
        assert!(!out.status.success(), "{var}: started anyway\n{out}");
        assert!(out.all().contains(expected), "{var}: the error should say {expected:?}\n{out}");
    }
    Ok(())
}
