//! Audit checkpoints in the store: recorded once per tenant and sequence number, listed in
//! order, every tenant's head listed for the checkpoint writer; append-only on PostgreSQL.

use conclave_core::ids::*;
use conclave_core::records::*;
use conclave_core::store::Store;
use sqlx::Connection;

use crate::records::now;

fn checkpoint(tenant: TenantId, seq: i64) -> AuditCheckpoint {
    AuditCheckpoint {
        version: 1,
        tenant_id: tenant,
        seq,
        head: vec![seq as u8; 32],
        at: now(),
        key_id: "local-ed25519:test".into(),
        algorithm: SignatureAlgorithm::Ed25519,
        signature: vec![9; 64],
    }
}

fn event(tenant: TenantId) -> NewAuditEvent {
    NewAuditEvent {
        tenant_id: tenant,
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
    }
}

async fn checkpoints_are_kept_once_per_sequence_in_order(store: &dyn Store) {
    let a = store.default_tenant("A").await.unwrap();
    let b = store.create_tenant("B").await.unwrap();
    store.append_audit(&event(a.id)).await.unwrap();
    store.append_audit(&event(a.id)).await.unwrap();
    let heads = store.audit_heads().await.unwrap();
    let head_a = heads.iter().find(|(t, _, _)| *t == a.id).unwrap();
    assert_eq!((head_a.1, head_a.2.as_ref().map(Vec::len)), (2, Some(32)));
    assert_eq!(heads.iter().find(|(t, _, _)| *t == b.id).unwrap().1, 0);

    assert!(store.latest_checkpoint(a.id).await.unwrap().is_none());
    let written: Vec<AuditCheckpoint> = [1, 2, 5].into_iter().map(|seq| checkpoint(a.id, seq)).collect();
    for c in &written {
        assert!(store.append_checkpoint(c).await.unwrap());
    }
    assert!(!store.append_checkpoint(&checkpoint(a.id, 2)).await.unwrap(), "one per sequence number");
    assert!(store.append_checkpoint(&checkpoint(b.id, 2)).await.unwrap(), "per tenant");
    let listed = store.list_checkpoints(a.id, 1, 10).await.unwrap();
    assert_eq!(listed.iter().map(|c| c.seq).collect::<Vec<_>>(), [2, 5]);
    assert_eq!(listed[0], written[1], "read back as written");
    assert_eq!(store.list_checkpoints(a.id, 0, 1).await.unwrap().len(), 1, "limit");
    assert_eq!(store.latest_checkpoint(a.id).await.unwrap().unwrap().seq, 5);
}

crate::both_backends!(checkpoints_are_kept_once_per_sequence_in_order);

#[tokio::test]
async fn postgres_refuses_to_change_or_delete_checkpoints() {
    let db = crate::backend::TestDb::postgres().await;
    let tenant = db.store().default_tenant("Default").await.unwrap();
    db.store().append_checkpoint(&checkpoint(tenant.id, 1)).await.unwrap();
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let update = sqlx::query("UPDATE audit_checkpoints SET seq = 7").execute(&mut conn).await;
    assert!(update.unwrap_err().to_string().contains("append-only"));
    let delete = sqlx::query("DELETE FROM audit_checkpoints").execute(&mut conn).await;
    assert!(delete.unwrap_err().to_string().contains("append-only"));
    assert_eq!(db.store().latest_checkpoint(tenant.id).await.unwrap().unwrap().seq, 1);
    conn.close().await.ok();
    db.finish().await;
}
