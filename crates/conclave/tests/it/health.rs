//! Liveness and readiness probes, the landing page, the published OpenAPI document, and the
//! "listening" log line scripts rely on.

use anyhow::Result;
use serde_json::{json, Value};

use crate::app::{Backend, Fetch, TestApp};

async fn probes_answer_ok(backend: Backend) -> Result<()> {
    let app = TestApp::start(backend).await?;

    let health = app.get("/healthz").fetch().await?.expect(200);
    assert_eq!(health.body, json!({"status": "ok"}));

    let ready = app.get("/readyz").fetch().await?.expect(200);
    assert_eq!(ready["status"], "ok", "{}", ready.text);
    assert_eq!(ready["checks"]["database"], "ok", "{}", ready.text);

    let index = app.get("/").fetch().await?.expect(200);
    let ct = index.header("content-type").unwrap_or_default();
    assert!(ct.starts_with("text/html"), "GET / content-type: {ct}");
    assert!(index.text.contains("/api/v1/openapi.json"), "GET / should point to the OpenAPI document: {}", index.text);
    Ok(())
}

/// Routes of API.md that exist now, with their methods. `{}` stands for any path parameter.
const DOCUMENTED: &[(&str, &[&str])] = &[
    ("/api/v1/auth/signup", &["post"]),
    ("/api/v1/auth/login", &["post"]),
    ("/api/v1/auth/refresh", &["post"]),
    ("/api/v1/auth/logout", &["post"]),
    ("/api/v1/me", &["get"]),
    ("/api/v1/me/password", &["post"]),
    ("/api/v1/me/export", &["get"]),
    ("/api/v1/api-keys", &["get", "post"]),
    ("/api/v1/api-keys/{}", &["delete"]),
    ("/api/v1/admin/users", &["get", "post"]),
    ("/api/v1/admin/users/{}", &["patch", "delete"]),
    ("/api/v1/admin/users/{}/password", &["post"]),
    ("/api/v1/admin/tenant", &["get", "patch"]),
    ("/api/v1/agents", &["get", "post"]),
    ("/api/v1/agents/{}", &["get", "patch", "delete"]),
    ("/api/v1/conversations", &["get", "post"]),
    ("/api/v1/conversations/{}", &["get", "patch", "delete"]),
    ("/api/v1/conversations/{}/messages", &["get", "post"]),
    ("/api/v1/models", &["get"]),
];

/// `/a/{id}/b` -> `/a/{}/b`, so that parameter names do not matter.
fn normalize(path: &str) -> String {
    let mut out = String::new();
    let mut in_param = false;
    for c in path.chars() {
        match c {
            '{' => {
                in_param = true;
                out.push_str("{}");
            }
            '}' => in_param = false,
            _ if in_param => {}
            _ => out.push(c),
        }
    }
    out
}

async fn openapi_describes_every_route(backend: Backend) -> Result<()> {
    let app = TestApp::start(backend).await?;
    let doc = app.get("/api/v1/openapi.json").fetch().await?.expect(200);
    let version = doc["openapi"].as_str().unwrap_or_default();
    assert!(version.starts_with("3.1"), "openapi version should be 3.1.x, got {version:?}");
    let paths = doc["paths"].as_object().expect("openapi.json has paths");
    let by_norm: Vec<(String, &Value)> = paths.iter().map(|(p, v)| (normalize(p), v)).collect();

    let mut expected: Vec<(String, Vec<&str>)> = DOCUMENTED.iter().map(|(p, m)| (p.to_string(), m.to_vec())).collect();
    // Optional in this version; when the route exists, the document must say so.
    if app.get("/api/v1/auth/config").fetch().await?.status != 404 {
        expected.push(("/api/v1/auth/config".into(), vec!["get"]));
    }

    let mut missing = Vec::new();
    for (path, methods) in &expected {
        match by_norm.iter().find(|(p, _)| p == path) {
            None => missing.push(format!("{path} (path absent)")),
            Some((_, item)) => {
                for m in methods {
                    if item.get(*m).is_none() {
                        missing.push(format!("{} {path}", m.to_uppercase()));
                    }
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "openapi.json lacks: {missing:#?}\npaths present: {:?}",
        paths.keys().collect::<Vec<_>>()
    );
    Ok(())
}

/// Scripts find the port in the line `{"msg":"listening","addr":"127.0.0.1:PORT",...}`.
async fn listening_line_follows_the_contract(backend: Backend) -> Result<()> {
    let app = TestApp::start(backend).await?;
    let logs = app.logs();
    let line = logs
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["msg"] == "listening")
        .unwrap_or_else(|| panic!("no JSON line with a top-level \"msg\":\"listening\" in:\n{}", logs.join("\n")));
    assert_eq!(line["addr"], json!(app.addr.to_string()), "addr field of {line}");
    assert_ne!(app.addr.port(), 0);
    Ok(())
}

backend_tests!(probes_answer_ok, openapi_describes_every_route, listening_line_follows_the_contract);
