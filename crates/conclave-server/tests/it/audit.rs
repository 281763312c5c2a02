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

async fn verify(h: &Harness, token: &str) -> serde_json::Value {
    let r = h.call(Method::GET, "/api/v1/audit/verify", Some(token), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r.body
}

#[tokio::test]
async fn verify_names_the_first_edited_deleted_reordered_or_truncated_event() {
    use sqlx::Connection;
    let h = Harness::new().await;
    let (admin, _) = h.signup("admin@example.com").await;
    for i in 0..5 {
        h.call(
            Method::POST,
            "/api/v1/agents",
            Some(&admin),
            Some(json!({"name": format!("A{i}"), "model": "conclave-demo"})),
        )
        .await;
    }
    let ok = verify(&h, &admin).await;
    assert_eq!((ok["ok"].as_bool(), ok["events"].as_i64(), ok["first_bad_seq"].as_i64()), (Some(true), Some(6), None));
    assert_eq!(ok["head"].as_str().unwrap().len(), 64);

    let mut db = sqlx::SqliteConnection::connect(&h.db_url()).await.unwrap();
    let exec = |sql: &'static str| sql;
    // Edited.
    sqlx::query(exec("UPDATE audit_events SET action = 'agent.read' WHERE seq = 3")).execute(&mut db).await.unwrap();
    assert_eq!(verify(&h, &admin).await["first_bad_seq"], 3);
    sqlx::query(exec("UPDATE audit_events SET action = 'agent.create' WHERE seq = 3")).execute(&mut db).await.unwrap();
    assert_eq!(verify(&h, &admin).await["ok"], true, "restored, the chain holds again");
    // Reordered: two events swap places.
    sqlx::query(exec("UPDATE audit_events SET seq = -1 WHERE seq = 4")).execute(&mut db).await.unwrap();
    sqlx::query(exec("UPDATE audit_events SET seq = 4 WHERE seq = 5")).execute(&mut db).await.unwrap();
    sqlx::query(exec("UPDATE audit_events SET seq = 5 WHERE seq = -1")).execute(&mut db).await.unwrap();
    assert_eq!(verify(&h, &admin).await["first_bad_seq"], 4);
    // Deleted from the middle.
    sqlx::query(exec("DELETE FROM audit_events WHERE seq = 2")).execute(&mut db).await.unwrap();
    assert_eq!(verify(&h, &admin).await["first_bad_seq"], 2);
    let _ = db.close().await;
}

#[tokio::test]
async fn verify_notices_the_newest_events_removed() {
    use sqlx::Connection;
    let h = Harness::new().await;
    let (admin, _) = h.signup("admin@example.com").await;
    h.call(Method::POST, "/api/v1/agents", Some(&admin), Some(json!({"name": "A", "model": "conclave-demo"}))).await;
    let mut db = sqlx::SqliteConnection::connect(&h.db_url()).await.unwrap();
    sqlx::query("DELETE FROM audit_events WHERE seq = 2").execute(&mut db).await.unwrap();
    let v = verify(&h, &admin).await;
    assert_eq!((v["ok"].as_bool(), v["first_bad_seq"].as_i64()), (Some(false), Some(2)));
    let _ = db.close().await;
}
