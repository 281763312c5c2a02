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

/// Turns on checkpoints for the harness (signed with an ephemeral local key, kept in `dir`) and
/// returns the public key; the test writes them with `write_checkpoints` instead of waiting.
async fn checkpoints(h: &Harness, dir: &std::path::Path) -> Vec<u8> {
    use conclave_crypto::CheckpointSigner as _;
    let signer = conclave_crypto::LocalKeyProvider::ephemeral().checkpoint_signer().await.unwrap();
    let public = signer.public_key().await.unwrap();
    h.core.set_checkpointer(conclave_core::checkpoint::Checkpointer::new(
        std::sync::Arc::new(signer),
        vec![std::sync::Arc::new(conclave_core::checkpoint::FileSink::new(dir))],
        std::time::Duration::from_secs(3600),
    ));
    public
}

async fn agents(h: &Harness, token: &str, n: usize) {
    for i in 0..n {
        let r = h
            .call(
                Method::POST,
                "/api/v1/agents",
                Some(token),
                Some(json!({"name": format!("A{i}"), "model": "conclave-demo"})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    }
}

#[tokio::test]
async fn checkpoints_are_signed_written_when_the_head_moves_and_checked_by_verify() {
    let h = Harness::new().await;
    let dir = std::env::temp_dir().join(format!("conclave-cp-it-{}", crate::harness::uuid()));
    let public = checkpoints(&h, &dir).await;
    let (admin, _) = h.signup("admin@example.com").await;
    agents(&h, &admin, 3).await;
    assert_eq!(h.core.write_checkpoints().await.unwrap(), 1);
    assert_eq!(h.core.write_checkpoints().await.unwrap(), 0, "nothing new: no checkpoint");
    let v = verify(&h, &admin).await;
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!((v["checkpoints"].as_i64(), v["checkpoint_seq"].as_i64()), (Some(1), Some(4)));

    // The line in the sink is the documented format and its signature checks out offline.
    let kept = conclave_core::checkpoint::read_dir(&dir).unwrap();
    assert_eq!(kept.len(), 1);
    let c = kept[0].checkpoint.as_ref().unwrap();
    assert_eq!((c.seq, c.algorithm), (4, conclave_crypto::SignatureAlgorithm::Ed25519));
    conclave_crypto::verify_signature(&public, &c.signed_bytes(), &c.signature).unwrap();
    let line = std::fs::read_to_string(conclave_core::checkpoint::FileSink::file_for(&dir, c.tenant_id)).unwrap();
    let doc: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
    for field in ["format", "version", "tenant_id", "seq", "head", "at", "key_id", "algorithm", "signature"] {
        assert!(doc.get(field).is_some(), "checkpoint field {field}: {doc}");
    }

    // Another event, another checkpoint.
    agents(&h, &admin, 1).await;
    assert_eq!(h.core.write_checkpoints().await.unwrap(), 1);
    assert_eq!(conclave_core::checkpoint::read_dir(&dir).unwrap().len(), 2, "appended, not rewritten");
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn a_checkpoint_catches_the_newest_events_removed_with_the_counter_reset() {
    use sqlx::Connection;
    let h = Harness::new().await;
    let dir = std::env::temp_dir().join(format!("conclave-cp-it-{}", crate::harness::uuid()));
    checkpoints(&h, &dir).await;
    let (admin, _) = h.signup("admin@example.com").await;
    agents(&h, &admin, 4).await;
    h.core.write_checkpoints().await.unwrap();

    // An attacker with the database removes events 4 and 5 and rewinds the tenant's counter and
    // head to event 3, so the chain alone looks whole.
    let mut db = sqlx::SqliteConnection::connect(&h.db_url()).await.unwrap();
    sqlx::query("DELETE FROM audit_events WHERE seq > 3").execute(&mut db).await.unwrap();
    sqlx::query(
        "UPDATE tenants SET audit_seq = 3, audit_head = (SELECT hash FROM audit_events e WHERE e.tenant_id = tenants.tenant_id AND e.seq = 3)",
    )
    .execute(&mut db)
    .await
    .unwrap();
    let v = verify(&h, &admin).await;
    assert_eq!((v["ok"].as_bool(), v["first_bad_seq"].as_i64()), (Some(false), Some(4)), "{v}");
    assert_eq!(v["bad_checkpoint"]["seq"], 5, "{v}");
    assert!(v["bad_checkpoint"]["reason"].as_str().unwrap().contains("newest events removed"), "{v}");
    let _ = db.close().await;
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn a_forged_checkpoint_is_named() {
    use sqlx::Connection;
    let h = Harness::new().await;
    let dir = std::env::temp_dir().join(format!("conclave-cp-it-{}", crate::harness::uuid()));
    checkpoints(&h, &dir).await;
    let (admin, _) = h.signup("admin@example.com").await;
    agents(&h, &admin, 2).await;
    h.core.write_checkpoints().await.unwrap();
    let mut db = sqlx::SqliteConnection::connect(&h.db_url()).await.unwrap();
    // The checkpoint row is moved back to vouch for event 2: its signature no longer matches.
    sqlx::query("UPDATE audit_checkpoints SET seq = 2").execute(&mut db).await.unwrap();
    let v = verify(&h, &admin).await;
    assert_eq!(v["ok"], false, "{v}");
    assert_eq!(v["first_bad_seq"], serde_json::Value::Null, "the events themselves are intact: {v}");
    assert_eq!(
        (v["bad_checkpoint"]["seq"].as_i64(), v["bad_checkpoint"]["source"].as_str()),
        (Some(2), Some("database"))
    );
    assert!(v["bad_checkpoint"]["reason"].as_str().unwrap().contains("signature"), "{v}");
    let _ = db.close().await;
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn export_streams_json_lines_equal_to_the_events_list_and_is_audited() {
    use axum::body::Body;
    use axum::http::Request;
    let h = Harness::new().await;
    let (admin, _) = h.signup("admin@example.com").await;
    agents(&h, &admin, 3).await;
    let export = |path: &'static str| {
        let admin = admin.clone();
        let h = &h;
        async move {
            let req =
                Request::get(path).header("authorization", format!("Bearer {admin}")).body(Body::empty()).unwrap();
            let response = h.send(req).await;
            assert_eq!(response.status(), StatusCode::OK);
            assert_eq!(response.headers()["content-type"], "application/x-ndjson");
            let bytes = axum::body::to_bytes(response.into_body(), 1 << 22).await.unwrap();
            let text = String::from_utf8(bytes.to_vec()).unwrap();
            assert!(text.ends_with('\n'));
            text.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()).collect::<Vec<_>>()
        }
    };
    let lines = export("/api/v1/audit/export").await;
    let listed = h.call(Method::GET, "/api/v1/audit/events?limit=200", Some(&admin), None).await;
    let items = listed.body["items"].as_array().unwrap();
    assert_eq!(lines.len(), 4, "the events up to the export");
    assert_eq!(&items[..4], &lines[..], "the same events, field for field");
    assert_eq!(items[4]["action"], "audit.exported", "the export itself is audited");
    assert_eq!(items[4]["detail"]["upto_seq"], 4);
    let after = export("/api/v1/audit/export?after_seq=3").await;
    assert_eq!(after.iter().map(|e| e["seq"].as_i64().unwrap()).collect::<Vec<_>>(), [4, 5]);
    let bad = h.call(Method::GET, "/api/v1/audit/export?after_seq=-1", Some(&admin), None).await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", bad.body);
}

#[tokio::test]
async fn permission_denials_are_audited_but_invisible_resources_are_not() {
    let h = Harness::new().await;
    let (admin, _) = h.signup("admin@example.com").await;
    let (member, member_id) = h.signup("member@example.com").await;
    let agent = h
        .call(Method::POST, "/api/v1/agents", Some(&admin), Some(json!({"name": "Private", "model": "conclave-demo"})))
        .await;
    // 403: known but not allowed.
    let r = h.call(Method::GET, "/api/v1/admin/users", Some(&member), None).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = h.call(Method::GET, "/api/v1/audit/events", Some(&member), None).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // 404: the member cannot see the admin's private agent; not a denial to record.
    let r = h
        .call(Method::GET, &format!("/api/v1/agents/{}", agent.body["id"].as_str().unwrap()), Some(&member), None)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = h.call(Method::GET, "/api/v1/admin/keys", Some(&member), None).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // An API key without the libraries scope: the action and the library it asked for.
    let key = h
        .call(Method::POST, "/api/v1/api-keys", Some(&member), Some(json!({"name": "k", "scopes": ["agents:read"]})))
        .await;
    let key = key.body["key"].as_str().expect("the key, once").to_owned();
    let library = uuid::Uuid::new_v4().to_string();
    let r = h.call(Method::GET, &format!("/api/v1/libraries/{library}/documents"), Some(&key), None).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);

    let log = h.call(Method::GET, "/api/v1/audit/events?limit=200", Some(&admin), None).await;
    let denied: Vec<&serde_json::Value> =
        log.body["items"].as_array().unwrap().iter().filter(|e| e["outcome"] == "denied").collect();
    let actions: Vec<&str> = denied.iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(
        actions,
        ["admin.user_list.denied", "audit.read.denied", "keys.status.denied", "document.list.denied"],
        "{}",
        log.body
    );
    assert_eq!(denied[3]["resource_type"], "library");
    assert_eq!(denied[3]["resource_id"], library.as_str());
    assert!(denied.iter().all(|e| e["actor_id"] == member_id.as_str() && e["detail"]["reason"].is_string()));
}

#[tokio::test]
async fn an_unwritable_audit_log_fails_readiness_until_a_write_succeeds() {
    use sqlx::Connection;
    let h = Harness::new().await;
    let (admin, _) = h.signup("admin@example.com").await;
    let ready = h.call(Method::GET, "/readyz", None, None).await;
    assert_eq!((ready.status, &ready.body["checks"]["audit_log"]), (StatusCode::OK, &json!("ok")));

    let mut db = sqlx::SqliteConnection::connect(&h.db_url()).await.unwrap();
    sqlx::query(
        "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_events BEGIN SELECT RAISE(ABORT, 'disk full'); END",
    )
    .execute(&mut db)
    .await
    .unwrap();
    agents(&h, &admin, 1).await;
    assert_eq!(h.core.audit_failures(), 1, "the failed append is counted");
    let ready = h.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE, "{}", ready.body);
    assert_eq!(ready.body["checks"]["audit_log"], "unwritable");

    sqlx::query("DROP TRIGGER refuse_audit").execute(&mut db).await.unwrap();
    agents(&h, &admin, 1).await;
    let ready = h.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.body);
    let _ = db.close().await;
}

/// A sink that refuses one tenant's checkpoints until told otherwise.
struct RefusingSink {
    inner: conclave_core::checkpoint::FileSink,
    refused: std::sync::Mutex<Option<conclave_core::ids::TenantId>>,
}

#[async_trait::async_trait]
impl conclave_core::checkpoint::CheckpointSink for RefusingSink {
    fn describe(&self) -> String {
        "refusing".into()
    }

    async fn append(&self, c: &conclave_core::records::AuditCheckpoint) -> conclave_core::Result<()> {
        if *self.refused.lock().unwrap() == Some(c.tenant_id) {
            return Err(conclave_core::Error::Unavailable { service: "test sink", detail: "refused".into() });
        }
        self.inner.append(c).await
    }
}

#[tokio::test]
async fn one_tenants_failed_checkpoint_holds_no_other_tenant_back_and_is_retried() {
    let h = Harness::new().await;
    let (admin, _) = h.signup("admin@example.com").await;
    agents(&h, &admin, 1).await;
    let store = h.core.store().clone();
    let other = store.create_tenant("Other firm").await.unwrap();
    let event = |n: usize| conclave_core::records::NewAuditEvent {
        tenant_id: other.id,
        id: conclave_core::ids::AuditEventId::new(),
        at: conclave_core::clock::now(),
        actor_id: None,
        actor_kind: "system",
        action: "test.event",
        resource_type: "test",
        resource_id: Some(n.to_string()),
        outcome: conclave_core::records::Outcome::Success,
        ip: None,
        request_id: None,
        detail: None,
    };
    store.append_audit(&event(1)).await.unwrap();

    let dir = std::env::temp_dir().join(format!("conclave-cp-it-{}", crate::harness::uuid()));
    let signer = conclave_crypto::LocalKeyProvider::ephemeral().checkpoint_signer().await.unwrap();
    let sink = std::sync::Arc::new(RefusingSink {
        inner: conclave_core::checkpoint::FileSink::new(&dir),
        refused: std::sync::Mutex::new(Some(other.id)),
    });
    h.core.set_checkpointer(conclave_core::checkpoint::Checkpointer::new(
        std::sync::Arc::new(signer),
        vec![sink.clone()],
        std::time::Duration::from_secs(3600),
    ));

    assert!(h.core.write_checkpoints().await.is_err(), "the refused tenant's failure is reported");
    let tenants: Vec<_> = store.audit_heads().await.unwrap().into_iter().map(|(t, ..)| t).collect();
    let first = tenants.iter().find(|t| **t != other.id).copied().expect("the first tenant");
    assert!(store.latest_checkpoint(first).await.unwrap().is_some(), "the other tenant was checkpointed anyway");
    assert!(store.latest_checkpoint(other.id).await.unwrap().is_none());

    *sink.refused.lock().unwrap() = None;
    assert_eq!(h.core.write_checkpoints().await.unwrap(), 1, "retried next round");
    assert_eq!(h.core.write_checkpoints().await.unwrap(), 0, "nothing moved since");
    store.append_audit(&event(2)).await.unwrap();
    assert_eq!(h.core.write_checkpoints().await.unwrap(), 1, "a moved log is checkpointed again");
    assert_eq!(store.latest_checkpoint(other.id).await.unwrap().map(|c| c.seq), Some(2));
    let _ = std::fs::remove_dir_all(dir);
}
