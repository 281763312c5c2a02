//! The audit log as auditors read it: every sign-in and change is there, in order, filterable,
//! paged by sequence number, with no content.

use axum::http::{Method, StatusCode};
use serde_json::json;

use crate::harness::Harness;

#[tokio::test]
async fn events_are_listed_in_order_filtered_and_paged() {
    let h = Harness::new().await;
    let (admin, admin_id) = h.signup("admin@example.com").await;
    let agent = h
        .call(
            Method::POST,
            "/api/v1/agents",
            Some(&admin),
            Some(json!({"name": "Secret name", "model": "conclave-demo", "instructions": "secret instructions"})),
        )
        .await;
    let wrong = h
        .call(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(json!({"email": "admin@example.com", "password": "not-the-password-at-all"})),
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);

    let all = h.call(Method::GET, "/api/v1/audit/events", Some(&admin), None).await;
    assert_eq!(all.status, StatusCode::OK, "{}", all.body);
    let items = all.body["items"].as_array().unwrap();
    let seqs: Vec<i64> = items.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>(), "gap-free and in order");
    let actions: Vec<&str> = items.iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["user.signup", "agent.create", "auth.login"]);
    assert_eq!(items[1]["actor_id"], admin_id.as_str());
    assert_eq!(items[1]["resource_id"], agent.body["id"]);
    assert_eq!(items[2]["outcome"], "failure");
    assert!(items.iter().all(|e| e["request_id"].is_string() && e["ip"] == "127.0.0.1"));
    assert!(!all.body.to_string().contains("secret"), "no content in the log");

    let logins = h.call(Method::GET, "/api/v1/audit/events?action=auth.login", Some(&admin), None).await;
    assert_eq!(logins.body["items"].as_array().unwrap().len(), 1);
    let page = h.call(Method::GET, "/api/v1/audit/events?limit=2", Some(&admin), None).await;
    assert_eq!(page.body["next_cursor"], "2");
    let rest = h.call(Method::GET, "/api/v1/audit/events?after_seq=2", Some(&admin), None).await;
    assert_eq!(rest.body["items"][0]["seq"], 3);
    assert!(rest.body["next_cursor"].is_null());
    let mine = h
        .call(Method::GET, &format!("/api/v1/audit/events?actor_id={admin_id}&resource_type=agent"), Some(&admin), None)
        .await;
    assert_eq!(mine.body["items"].as_array().unwrap().len(), 1);
    let bad = h.call(Method::GET, "/api/v1/audit/events?limit=0", Some(&admin), None).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
}
