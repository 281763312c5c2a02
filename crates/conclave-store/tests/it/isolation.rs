//! Tenant isolation: every call is scoped by tenant, so a row of one tenant is invisible through
//! another's scope even with its exact ids. And the audit log is append-only in PostgreSQL.

use conclave_core::ids::*;
use conclave_core::page::PageRequest;
use conclave_core::principal::Role;
use conclave_core::records::*;
use conclave_core::store::Store;
use conclave_core::StoreError;
use sqlx::Connection;

use crate::records::{agent, conversation, exchange, lease, new_user, now};

async fn another_tenant_sees_nothing(store: &dyn Store) {
    let a = store.default_tenant("A").await.unwrap();
    let b = store.create_tenant("B").await.unwrap();
    let ada = store.create_user(a.id, new_user("ada@a.example", true)).await.unwrap();
    let eve = store.create_user(b.id, new_user("eve@b.example", true)).await.unwrap();
    assert_eq!(eve.role, Role::Admin, "first user of tenant B");
    let shared = agent(a.id, ada.id, Visibility::Tenant);
    store.create_agent(&shared).await.unwrap();
    let c = conversation(a.id, ada.id, shared.id);
    store.create_conversation(&c).await.unwrap();
    let (m, r) = exchange(a.id, c.id, "privileged");
    store.insert_exchange(Some(&m), &r, lease(), None).await.unwrap();

    // Tenant B's scope with tenant A's ids, even naming A's user as the viewer.
    assert!(matches!(store.get_user(b.id, ada.id).await, Err(StoreError::NotFound)));
    assert!(matches!(store.get_agent(b.id, ada.id, shared.id).await, Err(StoreError::NotFound)));
    assert!(matches!(store.get_agent(b.id, eve.id, shared.id).await, Err(StoreError::NotFound)));
    assert!(store.list_agents(b.id, eve.id, PageRequest::default()).await.unwrap().items.is_empty());
    assert!(matches!(store.get_conversation(b.id, ada.id, c.id).await, Err(StoreError::NotFound)));
    assert!(store.list_messages(b.id, c.id, PageRequest::default()).await.unwrap().items.is_empty());
    assert!(matches!(store.get_message(b.id, c.id, m.id).await, Err(StoreError::NotFound)));
    assert_eq!(store.list_users(b.id, PageRequest::default()).await.unwrap().items.len(), 1);

    // Writes through the wrong scope change nothing.
    let outcome = ReplyOutcome {
        content: conclave_core::content::Sealed(b"\0forged".to_vec()),
        status: MessageStatus::Complete,
        usage: None,
        finish_reason: None,
        error: None,
    };
    assert!(!store.finish_reply(b.id, r.id, &outcome).await.unwrap());
    assert!(matches!(store.delete_conversation(b.id, ada.id, c.id).await, Err(StoreError::NotFound)));
    assert!(matches!(store.delete_agent(b.id, shared.id).await, Err(StoreError::NotFound)));
    assert!(matches!(store.update_user(b.id, ada.id, &UserPatch::default()).await, Err(StoreError::NotFound)));
    assert!(matches!(store.delete_user(b.id, ada.id, eve.id).await, Err(StoreError::NotFound)));
    assert!(matches!(store.set_password(b.id, ada.id, "x", false).await, Err(StoreError::NotFound)));
    assert_eq!(store.get_message(a.id, c.id, r.id).await.unwrap().status, MessageStatus::Streaming);
    assert!(store.get_user(a.id, ada.id).await.is_ok());

    let session = SessionId::new();
    let token = TokenRecord {
        tenant_id: a.id,
        id: TokenId::new(),
        session_id: session,
        user_id: ada.id,
        kind: TokenKind::Refresh,
        secret_hash: vec![0; 32],
        expires_at: now() + time::Duration::minutes(1),
        used_at: None,
        session_revoked: false,
        session: crate::records::session_times(60),
    };
    let new_session = crate::records::new_session(session, ada.id, 60);
    store.create_session(a.id, &new_session, std::slice::from_ref(&token)).await.unwrap();
    assert!(matches!(store.get_token(b.id, token.id).await, Err(StoreError::NotFound)));
    assert!(!store.rotate_refresh(b.id, token.id, now(), &[]).await.unwrap());
    store.revoke_session(b.id, session).await.unwrap();
    assert!(!store.revoke_own_session(b.id, ada.id, session).await.unwrap());
    assert_eq!(store.revoke_user_sessions(b.id, ada.id, None).await.unwrap(), 0);
    let live = crate::records::live(30);
    assert!(store.list_sessions(b.id, ada.id, live, PageRequest::default()).await.unwrap().items.is_empty());
    assert!(matches!(store.set_tokens_valid_after(b.id, ada.id, now()).await, Err(StoreError::NotFound)));
    assert_eq!(store.revoke_tenant_sessions(b.id, UserId::new(), None, now()).await.unwrap().1, 0);
    assert!(!store.get_token(a.id, token.id).await.unwrap().session_revoked, "another tenant cannot revoke it");
    assert_eq!(store.list_sessions(a.id, ada.id, live, PageRequest::default()).await.unwrap().items.len(), 1);
    assert_eq!(store.get_user(a.id, ada.id).await.unwrap().tokens_valid_after, None);
}

crate::both_backends!(another_tenant_sees_nothing);

#[tokio::test]
async fn postgres_refuses_to_change_or_delete_audit_events() {
    let db = crate::backend::TestDb::postgres().await;
    let tenant = db.store().default_tenant("Default").await.unwrap();
    let event = NewAuditEvent {
        tenant_id: tenant.id,
        id: AuditEventId::new(),
        at: now(),
        actor_id: None,
        actor_kind: "anonymous",
        action: "user.signup",
        resource_type: "user",
        resource_id: None,
        outcome: Outcome::Success,
        ip: None,
        request_id: None,
        detail: None,
    };
    db.store().append_audit(&event).await.unwrap();
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let update = sqlx::query("UPDATE audit_events SET action = 'forged'").execute(&mut conn).await;
    assert!(update.unwrap_err().to_string().contains("append-only"));
    let delete = sqlx::query("DELETE FROM audit_events").execute(&mut conn).await;
    assert!(delete.unwrap_err().to_string().contains("append-only"));
    assert_eq!(
        db.store().list_audit(tenant.id, &conclave_core::store::AuditFilter::after(0, 10)).await.unwrap()[0].action,
        "user.signup"
    );
    conn.close().await.ok();
    db.finish().await;
}

/// With the append-only trigger dropped (a database owner can), an edited event is still caught
/// by the hash chain.
#[tokio::test]
async fn postgres_tampering_past_the_trigger_breaks_the_chain() {
    let db = crate::backend::TestDb::postgres().await;
    let tenant = db.store().default_tenant("Default").await.unwrap();
    for action in ["user.signup", "agent.create", "agent.update"] {
        let event = NewAuditEvent {
            tenant_id: tenant.id,
            id: AuditEventId::new(),
            at: now(),
            actor_id: None,
            actor_kind: "user",
            action,
            resource_type: "agent",
            resource_id: Some("a".into()),
            outcome: Outcome::Success,
            ip: Some("10.0.0.1".into()),
            request_id: Some("r".into()),
            detail: Some(serde_json::json!({"visibility": "tenant", "max_tokens": 512, "temperature": 0.25})),
        };
        db.store().append_audit(&event).await.unwrap();
    }
    let ok = conclave_core::service::audit::verify_chain(db.store(), tenant.id).await.unwrap();
    assert!(ok.ok, "{ok:?}");
    assert_eq!(ok.events, 3);
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::query("DROP TRIGGER audit_events_append_only ON audit_events").execute(&mut conn).await.unwrap();
    sqlx::query("UPDATE audit_events SET ip = '192.0.2.66' WHERE seq = 2").execute(&mut conn).await.unwrap();
    let bad = conclave_core::service::audit::verify_chain(db.store(), tenant.id).await.unwrap();
    assert_eq!((bad.ok, bad.first_bad_seq), (false, Some(2)));
    conn.close().await.ok();
    db.finish().await;
}
