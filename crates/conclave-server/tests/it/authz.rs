//! The authorisation matrix. Routes come from the router's own declarations (the OpenAPI
//! document `conclave_server::api()` builds with it); every one must have a rule below, so a new
//! route without a rule fails this test. Each route is then tried anonymously, with each role,
//! and with another user's and another tenant's credentials against the owner's resource ids.

use std::sync::atomic::{AtomicUsize, Ordering};

use axum::http::{Method, StatusCode};
use conclave_auth::{PasswordHasher, PasswordHashingParams};
use conclave_core::ids::UserId;
use conclave_core::principal::Role;
use conclave_core::records::NewUser;
use serde_json::{json, Value};

use crate::harness::Harness;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Rule {
    /// No credentials needed.
    Public,
    /// Any signed-in user, acting on their own data.
    Signed,
    /// Tenant administrators only.
    Admin,
    /// Tenant administrators only, for an action that would sign the matrix's own principals
    /// out: the administrator's call carries an unconfirmed body and must get as far as its
    /// validation (422); the action itself has its own test.
    AdminUnconfirmed,
    /// Administrators and auditors.
    Auditors,
    /// Administrators, on a user of their own tenant (the `{id}`).
    AdminOnUser,
    /// Only the owner of the `{id}` resource sees it; everyone else gets 404.
    Owner(Resource),
    /// A library only its members see; administrators get what `AdminSees` says.
    Library(AdminSees),
}

/// What a tenant administrator who is not a member gets on a library route.
#[derive(Debug, Clone, Copy, PartialEq)]
enum AdminSees {
    /// Administrators manage every library.
    Success,
    /// Documents are for members only.
    Forbidden,
    /// Destructive for the fixture (deleting the library or its owner's membership): not tried.
    NotTried,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Resource {
    Agent,
    Conversation,
    ApiKey,
    Document,
    Session,
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

fn unique_email() -> String {
    format!("matrix-{}@example.com", COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// The rule for each route, and a well-formed body so that the answer is about permission, not
/// about shape.
fn rule(method: &Method, path: &str) -> Option<(Rule, Option<Value>)> {
    use Resource::*;
    use Rule::*;
    let strong = "another-correct-horse-battery-9";
    Some(match (method.as_str(), path) {
        ("GET", "/healthz") | ("GET", "/readyz") | ("GET", "/api/v1/auth/config") => (Public, None),
        ("POST", "/api/v1/auth/signup") => {
            (Public, Some(json!({"email": unique_email(), "password": strong, "display_name": "M"})))
        }
        ("POST", "/api/v1/auth/login") => (Public, Some(json!({"email": "nobody@example.com", "password": strong}))),
        ("POST", "/api/v1/auth/refresh") | ("POST", "/api/v1/auth/logout") => (Public, None),
        ("GET", "/api/v1/me") | ("GET", "/api/v1/me/export") | ("GET", "/api/v1/models") => (Signed, None),
        ("POST", "/api/v1/me/password") => {
            (Signed, Some(json!({"current_password": "wrong-guess-entirely", "new_password": strong})))
        }
        ("POST", "/api/v1/me/mfa/totp") => (Signed, None),
        ("POST", "/api/v1/me/mfa/totp/confirm") | ("POST", "/api/v1/me/mfa/recovery-codes") => {
            (Signed, Some(json!({"code": "000000"})))
        }
        ("DELETE", "/api/v1/me/mfa") => {
            (Signed, Some(json!({"current_password": "wrong-guess-entirely", "code": "000000"})))
        }
        ("DELETE", "/api/v1/admin/users/{id}/mfa") => (AdminOnUser, None),
        ("GET", "/api/v1/me/sessions") | ("POST", "/api/v1/me/sessions/revoke-others") => (Signed, None),
        ("DELETE", "/api/v1/me/sessions/{id}") => (Owner(Session), None),
        ("POST", "/api/v1/admin/users/{id}/sessions/revoke") => (AdminOnUser, None),
        ("POST", "/api/v1/admin/sessions/revoke") => (AdminUnconfirmed, Some(json!({"confirm": false}))),
        ("GET", "/api/v1/api-keys") | ("GET", "/api/v1/agents") | ("GET", "/api/v1/conversations") => (Signed, None),
        ("POST", "/api/v1/api-keys") => (Signed, Some(json!({"name": "matrix"}))),
        ("POST", "/api/v1/agents") => (Signed, Some(json!({"name": "Matrix", "model": "conclave-demo"}))),
        ("POST", "/api/v1/conversations") => {
            (Signed, Some(json!({"agent_id": "01890000-0000-7000-8000-000000000000"})))
        }
        ("GET", "/api/v1/usage") | ("GET", "/v1/models") => (Signed, None),
        ("POST", "/v1/chat/completions") => {
            (Signed, Some(json!({"model": "conclave-demo", "messages": [{"role": "user", "content": "hi"}]})))
        }
        ("GET", "/api/v1/admin/users") | ("GET", "/api/v1/admin/tenant") | ("GET", "/api/v1/admin/keys") => {
            (Admin, None)
        }
        ("POST", "/api/v1/admin/keys/rotate") => (Admin, None),
        ("GET", "/api/v1/audit/events") | ("GET", "/api/v1/audit/verify") | ("GET", "/api/v1/audit/export") => {
            (Auditors, None)
        }
        ("POST", "/api/v1/admin/users") => {
            (Admin, Some(json!({"email": unique_email(), "display_name": "N", "role": "member"})))
        }
        ("PATCH", "/api/v1/admin/tenant") => (Admin, Some(json!({"name": "Matrix tenant"}))),
        ("PATCH", "/api/v1/admin/users/{id}") => (AdminOnUser, Some(json!({"display_name": "Renamed"}))),
        ("DELETE", "/api/v1/admin/users/{id}") => (AdminOnUser, None),
        ("POST", "/api/v1/admin/users/{id}/password") => (AdminOnUser, Some(json!({"new_password": strong}))),
        ("GET", "/api/v1/agents/{id}") | ("DELETE", "/api/v1/agents/{id}") => (Owner(Agent), None),
        ("PATCH", "/api/v1/agents/{id}") => (Owner(Agent), Some(json!({"name": "Stolen"}))),
        ("GET", "/api/v1/conversations/{id}") | ("DELETE", "/api/v1/conversations/{id}") => (Owner(Conversation), None),
        ("GET", "/api/v1/conversations/{id}/messages") => (Owner(Conversation), None),
        ("PATCH", "/api/v1/conversations/{id}") => (Owner(Conversation), Some(json!({"title": "Stolen"}))),
        ("POST", "/api/v1/conversations/{id}/messages") => (Owner(Conversation), Some(json!({"content": "hi"}))),
        ("DELETE", "/api/v1/api-keys/{id}") => (Owner(ApiKey), None),
        ("GET", "/api/v1/libraries") => (Signed, None),
        ("POST", "/api/v1/libraries") => (Signed, Some(json!({"name": "Matrix library"}))),
        ("GET", "/api/v1/libraries/{id}") | ("GET", "/api/v1/libraries/{id}/members") => {
            (Library(AdminSees::Success), None)
        }
        ("PATCH", "/api/v1/libraries/{id}") => (Library(AdminSees::Success), Some(json!({"description": "Seen"}))),
        ("PUT", "/api/v1/libraries/{id}/members/{user_id}") => {
            (Library(AdminSees::Success), Some(json!({"role": "manager"})))
        }
        ("DELETE", "/api/v1/libraries/{id}") | ("DELETE", "/api/v1/libraries/{id}/members/{user_id}") => {
            (Library(AdminSees::NotTried), None)
        }
        ("GET", "/api/v1/libraries/{id}/documents") | ("POST", "/api/v1/libraries/{id}/documents") => {
            (Library(AdminSees::Forbidden), None)
        }
        ("GET", "/api/v1/documents/{id}")
        | ("GET", "/api/v1/documents/{id}/versions")
        | ("GET", "/api/v1/documents/{id}/content")
        | ("DELETE", "/api/v1/documents/{id}") => (Owner(Document), None),
        ("GET", "/api/v1/conversations/{id}/messages/{message_id}/events") => (Owner(Conversation), None),
        ("POST", "/api/v1/conversations/{id}/messages/{message_id}/cancel") => (Owner(Conversation), None),
        ("POST", "/api/v1/conversations/{id}/messages/{message_id}/regenerate") => (Owner(Conversation), None),
        _ => return None,
    })
}

struct World {
    admin: String,
    owner: String,
    owner_id: String,
    other: String,
    auditor: String,
    foreign_admin: String,
    agent: String,
    conversation: String,
    /// The reply to a message the owner posted.
    reply: String,
    api_key: String,
    library: String,
    document: String,
    /// The owner's session.
    session: String,
}

async fn world(h: &Harness) -> World {
    let (admin, _) = h.signup("admin@a.example").await;
    let (owner, owner_id) = h.signup("owner@a.example").await;
    let (other, _) = h.signup("other@a.example").await;
    let strong = "correct-horse-battery-staple-42";
    let r = h
        .call(
            Method::POST,
            "/api/v1/admin/users",
            Some(&admin),
            Some(json!({"email": "auditor@a.example", "password": strong, "display_name": "Aud", "role": "auditor"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let auditor = login(h, "auditor@a.example").await;

    // A second tenant with its own administrator, made through the store (local sign-up only
    // ever joins the default tenant).
    let store = h.core.store();
    let b = store.create_tenant("B").await.unwrap();
    let hasher = PasswordHasher::new(PasswordHashingParams { memory_kib: 64, iterations: 1, parallelism: 1 }).unwrap();
    store
        .create_user(
            b.id,
            NewUser {
                id: UserId::new(),
                email: "admin@b.example".into(),
                display_name: "B admin".into(),
                role: Role::Admin,
                first_user_becomes_admin: true,
                password_hash: Some(hasher.hash(strong).unwrap()),
                must_change_password: false,
            },
        )
        .await
        .unwrap();
    let foreign_admin = login(h, "admin@b.example").await;

    let agent = h
        .call(Method::POST, "/api/v1/agents", Some(&owner), Some(json!({"name": "Private", "model": "conclave-demo"})))
        .await;
    assert_eq!(agent.status, StatusCode::CREATED, "{}", agent.body);
    let agent = agent.body["id"].as_str().unwrap().to_owned();
    let conversation =
        h.call(Method::POST, "/api/v1/conversations", Some(&owner), Some(json!({"agent_id": agent}))).await;
    let conversation = conversation.body["id"].as_str().unwrap().to_owned();
    let exchange = h
        .call(
            Method::POST,
            &format!("/api/v1/conversations/{conversation}/messages"),
            Some(&owner),
            Some(json!({"content": "hello"})),
        )
        .await;
    assert_eq!(exchange.status, StatusCode::CREATED, "{}", exchange.body);
    let reply = exchange.body["assistant_message"]["id"].as_str().unwrap().to_owned();
    let key = h.call(Method::POST, "/api/v1/api-keys", Some(&owner), Some(json!({"name": "mine"}))).await;
    let api_key = key.body["id"].as_str().unwrap().to_owned();
    let library = h.call(Method::POST, "/api/v1/libraries", Some(&owner), Some(json!({"name": "Owner's"}))).await;
    let library = library.body["id"].as_str().unwrap().to_owned();
    let document = h.upload(&owner, &library, "memo.txt", "text/plain", b"privileged memo").await;
    assert_eq!(document.status, StatusCode::CREATED, "{}", document.body);
    let document = document.body["id"].as_str().unwrap().to_owned();
    let sessions = h.call(Method::GET, "/api/v1/me/sessions", Some(&owner), None).await;
    assert_eq!(sessions.status, StatusCode::OK, "{}", sessions.body);
    let session = sessions.body["items"][0]["id"].as_str().unwrap().to_owned();
    World {
        admin,
        owner,
        owner_id,
        other,
        auditor,
        foreign_admin,
        agent,
        conversation,
        reply,
        api_key,
        library,
        document,
        session,
    }
}

async fn login(h: &Harness, email: &str) -> String {
    let r = h
        .call(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(json!({"email": email, "password": "correct-horse-battery-staple-42"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r.body["access_token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn every_route_has_a_rule_and_denies_whoever_it_must() {
    let (_, doc) = conclave_server::api();
    let h = Harness::new().await;
    let w = world(&h).await;
    let mut routes = Vec::new();
    for (path, item) in &doc.paths.paths {
        let item = serde_json::to_value(item).unwrap();
        for method in
            item.as_object().unwrap().keys().filter(|k| ["get", "post", "put", "patch", "delete"].contains(&k.as_str()))
        {
            routes.push((method.to_uppercase().parse::<Method>().unwrap(), path.clone()));
        }
    }
    assert!(routes.len() >= 30, "only {} routes found", routes.len());
    let missing: Vec<_> =
        routes.iter().filter(|(m, p)| rule(m, p).is_none()).map(|(m, p)| format!("{m} {p}")).collect();
    assert!(missing.is_empty(), "routes without an authorisation rule: {missing:?}");

    let mut failures = Vec::new();
    let mut check = |what: String, status: StatusCode, ok: bool| {
        if !ok {
            failures.push(format!("{what}: got {status}"));
        }
    };
    for (method, path) in &routes {
        let (rule, _) = rule(method, path).unwrap();
        let concrete = match rule {
            Rule::Owner(Resource::Agent) => path.replace("{id}", &w.agent),
            Rule::Owner(Resource::Conversation) => {
                path.replace("{id}", &w.conversation).replace("{message_id}", &w.reply)
            }
            Rule::Owner(Resource::ApiKey) => path.replace("{id}", &w.api_key),
            Rule::Owner(Resource::Document) => path.replace("{id}", &w.document),
            Rule::Owner(Resource::Session) => path.replace("{id}", &w.session),
            Rule::Library(_) => path.replace("{id}", &w.library).replace("{user_id}", &w.owner_id),
            Rule::AdminOnUser => path.replace("{id}", &w.owner_id),
            _ => path.clone(),
        };
        let body = || rule_body(method, path);
        let anonymous = h.call(method.clone(), &concrete, None, body()).await.status;
        if rule == Rule::Public {
            // Served to anyone: a 401 here can only be about the credentials in the body or
            // cookie (login, refresh), never a demand for a bearer token.
            check(
                format!("anonymous {method} {path}"),
                anonymous,
                !matches!(anonymous.as_u16(), 403..=405) && !anonymous.is_server_error(),
            );
            continue;
        }
        check(format!("anonymous {method} {path}"), anonymous, anonymous == StatusCode::UNAUTHORIZED);
        let garbage = h.call(method.clone(), &concrete, Some("ca_garbage"), body()).await.status;
        check(format!("garbage token {method} {path}"), garbage, garbage == StatusCode::UNAUTHORIZED);

        match rule {
            Rule::Public => unreachable!(),
            Rule::Signed => {
                for (who, token) in [("member", &w.other), ("auditor", &w.auditor), ("admin", &w.admin)] {
                    let s = h.call(method.clone(), &concrete, Some(token), body()).await.status;
                    check(
                        format!("{who} {method} {path}"),
                        s,
                        !matches!(s.as_u16(), 401 | 403 | 404) && !s.is_server_error(),
                    );
                }
            }
            Rule::Admin => {
                for (who, token) in [("member", &w.other), ("auditor", &w.auditor)] {
                    let s = h.call(method.clone(), &concrete, Some(token), body()).await.status;
                    check(format!("{who} {method} {path}"), s, s == StatusCode::FORBIDDEN);
                }
                let s = h.call(method.clone(), &concrete, Some(&w.admin), body()).await.status;
                check(format!("admin {method} {path}"), s, s.is_success());
            }
            Rule::AdminUnconfirmed => {
                for (who, token) in [("member", &w.other), ("auditor", &w.auditor)] {
                    let s = h.call(method.clone(), &concrete, Some(token), body()).await.status;
                    check(format!("{who} {method} {path}"), s, s == StatusCode::FORBIDDEN);
                }
                let s = h.call(method.clone(), &concrete, Some(&w.admin), body()).await.status;
                check(format!("admin {method} {path}"), s, s == StatusCode::UNPROCESSABLE_ENTITY);
            }
            Rule::Auditors => {
                let s = h.call(method.clone(), &concrete, Some(&w.other), body()).await.status;
                check(format!("member {method} {path}"), s, s == StatusCode::FORBIDDEN);
                for (who, token) in [("auditor", &w.auditor), ("admin", &w.admin)] {
                    let s = h.call(method.clone(), &concrete, Some(token), body()).await.status;
                    check(format!("{who} {method} {path}"), s, s.is_success());
                }
            }
            Rule::AdminOnUser => {
                for (who, token) in [("member", &w.other), ("auditor", &w.auditor)] {
                    let s = h.call(method.clone(), &concrete, Some(token), body()).await.status;
                    check(format!("{who} {method} {path}"), s, s == StatusCode::FORBIDDEN);
                }
                let s = h.call(method.clone(), &concrete, Some(&w.foreign_admin), body()).await.status;
                check(format!("foreign admin {method} {path}"), s, s == StatusCode::NOT_FOUND);
            }
            Rule::Library(admin_sees) => {
                for (who, token) in
                    [("other member", &w.other), ("auditor", &w.auditor), ("foreign admin", &w.foreign_admin)]
                {
                    let s = h.call(method.clone(), &concrete, Some(token), body()).await.status;
                    check(format!("{who} {method} {path}"), s, s == StatusCode::NOT_FOUND);
                }
                let expected = match admin_sees {
                    AdminSees::Success => |s: StatusCode| s.is_success(),
                    AdminSees::Forbidden => |s: StatusCode| s == StatusCode::FORBIDDEN,
                    AdminSees::NotTried => continue,
                };
                let s = h.call(method.clone(), &concrete, Some(&w.admin), body()).await.status;
                check(format!("admin {method} {path}"), s, expected(s));
            }
            Rule::Owner(_) => {
                for (who, token) in [
                    ("other member", &w.other),
                    ("auditor", &w.auditor),
                    ("admin", &w.admin),
                    ("foreign admin", &w.foreign_admin),
                ] {
                    let s = h.call(method.clone(), &concrete, Some(token), body()).await.status;
                    check(format!("{who} {method} {path}"), s, s == StatusCode::NOT_FOUND);
                }
            }
        }
    }
    assert!(failures.is_empty(), "authorisation failures:\n{}", failures.join("\n"));

    // Nothing the others tried changed the owner's data.
    for path in [
        format!("/api/v1/agents/{}", w.agent),
        format!("/api/v1/conversations/{}", w.conversation),
        format!("/api/v1/conversations/{}/messages", w.conversation),
        format!("/api/v1/libraries/{}", w.library),
        format!("/api/v1/documents/{}/content", w.document),
    ] {
        let r = h.call(Method::GET, &path, Some(&w.owner), None).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.body);
    }
    let agent = h.call(Method::GET, &format!("/api/v1/agents/{}", w.agent), Some(&w.owner), None).await;
    assert_eq!(agent.body["name"], "Private");
    let keys = h.call(Method::GET, "/api/v1/api-keys", Some(&w.owner), None).await;
    assert_eq!(keys.body["items"][0]["id"], w.api_key.as_str());
    let me = h.call(Method::GET, "/api/v1/me", Some(&w.owner), None).await;
    assert_eq!(me.body["display_name"], "Test", "foreign and unprivileged PATCHes changed nothing");
    let sessions = h.call(Method::GET, "/api/v1/me/sessions", Some(&w.owner), None).await;
    assert_eq!(sessions.body["items"][0]["id"], w.session.as_str(), "nobody else ended the owner's session");
}

fn rule_body(method: &Method, path: &str) -> Option<Value> {
    rule(method, path).and_then(|(_, body)| body)
}
