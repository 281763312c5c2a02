//! Libraries, members, documents and versions, legal hold, and the queries key rotation uses.

use conclave_core::content::Sealed;
use conclave_core::ids::*;
use conclave_core::libraries::*;
use conclave_core::page::PageRequest;
use conclave_core::store::Store;
use conclave_core::StoreError;

use crate::records::{agent, conversation, new_user, now};

fn library(tenant: TenantId, creator: UserId) -> LibraryRecord {
    LibraryRecord {
        tenant_id: tenant,
        id: LibraryId::new(),
        name: Sealed(b"\x01sealed-name".to_vec()),
        description: None,
        legal_hold: false,
        wrapped_key: b"lek-wrapped-v1".to_vec(),
        key_version: 1,
        created_by: creator,
        created_at: now(),
        updated_at: now(),
    }
}

fn document(tenant: TenantId, library: LibraryId, tag: &[u8], version: u64) -> DocumentRecord {
    DocumentRecord {
        tenant_id: tenant,
        id: DocumentId::new(),
        library_id: library,
        name: Sealed(b"\x01sealed-doc-name".to_vec()),
        name_tag: tag.to_vec(),
        current_version: version,
        created_at: now(),
        updated_at: now(),
    }
}

fn version(d: &DocumentRecord, version: u64, by: UserId) -> DocumentVersionRecord {
    DocumentVersionRecord {
        tenant_id: d.tenant_id,
        document_id: d.id,
        version,
        object_key: format!("tenants/{}/documents/{}/v{version}", d.tenant_id.0, d.id.0),
        size: 1000 * version,
        content_type: "text/plain".into(),
        sha256: Sealed(vec![1; 40]),
        wrapped_key: format!("fek-{version}").into_bytes(),
        created_by: by,
        created_at: now(),
    }
}

async fn libraries_members_and_visibility(store: &dyn Store) {
    let tenant = store.default_tenant("T").await.unwrap().id;
    let creator = store.create_user(tenant, new_user("creator@example.com", true)).await.unwrap().id;
    let reader = store.create_user(tenant, new_user("reader@example.com", false)).await.unwrap().id;
    let l = library(tenant, creator);
    store.create_library(&l).await.unwrap();

    let seen = store.get_library(tenant, creator, l.id).await.unwrap();
    assert_eq!(seen.role, Some(LibraryRole::Manager), "the creator manages it");
    assert_eq!(seen.library.wrapped_key, l.wrapped_key);
    assert_eq!(store.get_library(tenant, reader, l.id).await.unwrap().role, None);
    assert!(store.list_libraries(tenant, reader, false, PageRequest::default()).await.unwrap().items.is_empty());
    assert_eq!(store.list_libraries(tenant, reader, true, PageRequest::default()).await.unwrap().items.len(), 1);

    store.put_member(tenant, l.id, reader, LibraryRole::Reader, now()).await.unwrap();
    store.put_member(tenant, l.id, reader, LibraryRole::Editor, now()).await.unwrap();
    let members = store.list_members(tenant, l.id).await.unwrap();
    assert_eq!(members.len(), 2);
    assert_eq!(members.iter().find(|m| m.user_id == reader).unwrap().role, LibraryRole::Editor);
    let listed = store.list_libraries(tenant, reader, false, PageRequest::default()).await.unwrap();
    assert_eq!(listed.items[0].role, Some(LibraryRole::Editor));
    assert!(matches!(
        store.put_member(tenant, l.id, UserId::new(), LibraryRole::Reader, now()).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.put_member(tenant, LibraryId::new(), reader, LibraryRole::Reader, now()).await,
        Err(StoreError::NotFound)
    ));
    assert!(store.remove_member(tenant, l.id, reader).await.unwrap());
    assert!(!store.remove_member(tenant, l.id, reader).await.unwrap());

    let other_tenant = store.create_tenant("Other").await.unwrap().id;
    assert!(matches!(store.get_library(other_tenant, creator, l.id).await, Err(StoreError::NotFound)));
    assert!(store.library_key(other_tenant, l.id).await.unwrap().is_none());

    store
        .update_library(tenant, l.id, &Sealed(b"\x01new".to_vec()), Some(&Sealed(b"\x01d".to_vec())), true, now())
        .await
        .unwrap();
    let updated = store.get_library(tenant, creator, l.id).await.unwrap().library;
    assert!(updated.legal_hold);
    assert_eq!(updated.description, Some(Sealed(b"\x01d".to_vec())));
    assert!(matches!(store.delete_library(tenant, l.id).await, Err(StoreError::Constraint(c)) if c == "legal_hold"));
}

async fn document_versions_conflicts_and_deletion(store: &dyn Store) {
    let tenant = store.default_tenant("T").await.unwrap().id;
    let user = store.create_user(tenant, new_user("u@example.com", true)).await.unwrap().id;
    let l = library(tenant, user);
    store.create_library(&l).await.unwrap();

    let d = document(tenant, l.id, b"tag-a", 1);
    assert_eq!(store.insert_document_version(&d, &version(&d, 1, user)).await.unwrap(), VersionInsert::Stored);
    // A second "first upload" of the same name loses, and changes nothing.
    let twin = document(tenant, l.id, b"tag-a", 1);
    assert_eq!(store.insert_document_version(&twin, &version(&twin, 1, user)).await.unwrap(), VersionInsert::Conflict);
    assert_eq!(store.find_document(tenant, l.id, b"tag-a").await.unwrap().unwrap().id, d.id);
    assert!(store.find_document(tenant, l.id, b"tag-b").await.unwrap().is_none());

    let v2 = DocumentRecord { current_version: 2, ..d.clone() };
    assert_eq!(store.insert_document_version(&v2, &version(&d, 2, user)).await.unwrap(), VersionInsert::Stored);
    // Two uploads racing for version 2: the second loses.
    assert_eq!(store.insert_document_version(&v2, &version(&d, 2, user)).await.unwrap(), VersionInsert::Conflict);

    let current = store.get_document_version(tenant, d.id, None).await.unwrap();
    assert_eq!(current.version.version, 2);
    assert_eq!(current.document.current_version, 2);
    assert_eq!(current.version.wrapped_key, b"fek-2");
    let first = store.get_document_version(tenant, d.id, Some(1)).await.unwrap();
    assert_eq!(first.version.size, 1000);
    assert!(matches!(store.get_document_version(tenant, d.id, Some(3)).await, Err(StoreError::NotFound)));
    let versions = store.list_document_versions(tenant, d.id).await.unwrap();
    assert_eq!(versions.iter().map(|v| v.version).collect::<Vec<_>>(), [2, 1]);

    let other = document(tenant, l.id, b"tag-b", 1);
    store.insert_document_version(&other, &version(&other, 1, user)).await.unwrap();
    let page = store.list_documents(tenant, l.id, PageRequest::first(1)).await.unwrap();
    assert_eq!(page.items.len(), 1);
    let rest = store.list_documents(tenant, l.id, PageRequest { limit: 10, after: page.next }).await.unwrap();
    assert_eq!(rest.items.len(), 1);
    let mut named: Vec<String> = [&versions[0], &versions[1]].iter().map(|v| v.object_key.clone()).collect();
    named.push(store.list_document_versions(tenant, other.id).await.unwrap()[0].object_key.clone());
    named.sort();
    assert_eq!(store.document_objects(tenant).await.unwrap(), named);
    assert_eq!(store.document_objects(TenantId::new()).await.unwrap(), Vec::<String>::new());

    let objects = store.delete_document(tenant, d.id).await.unwrap();
    assert_eq!(objects.len(), 2);
    assert!(!store.document_objects(tenant).await.unwrap().contains(&versions[0].object_key));
    assert!(matches!(store.get_document(tenant, d.id).await, Err(StoreError::NotFound)));
    assert!(matches!(store.delete_document(tenant, d.id).await, Err(StoreError::NotFound)));

    store.update_library(tenant, l.id, &l.name, None, true, now()).await.unwrap();
    assert!(
        matches!(store.delete_document(tenant, other.id).await, Err(StoreError::Constraint(c)) if c == "legal_hold")
    );
    store.update_library(tenant, l.id, &l.name, None, false, now()).await.unwrap();
    let removed = store.delete_library(tenant, l.id).await.unwrap();
    assert_eq!(removed.len(), 1);
    assert!(store.library_key(tenant, l.id).await.unwrap().is_none(), "the library key is destroyed");
    assert!(matches!(store.get_document(tenant, other.id).await, Err(StoreError::NotFound)));
}

async fn wrapped_keys_count_list_and_replace(store: &dyn Store) {
    let tenant = store.default_tenant("T").await.unwrap().id;
    let user = store.create_user(tenant, new_user("u@example.com", true)).await.unwrap().id;
    store.put_tenant_key(tenant, b"tek-v1", 1).await.unwrap();
    assert_eq!(store.put_tenant_key(tenant, b"tek-other", 1).await.unwrap(), b"tek-v1", "the first one stays");
    let l = library(tenant, user);
    store.create_library(&l).await.unwrap();
    let a = agent(tenant, user, conclave_core::records::Visibility::Private);
    store.create_agent(&a).await.unwrap();
    let c = conversation(tenant, user, a.id);
    store.create_conversation(&c).await.unwrap();
    assert_eq!(store.put_conversation_key(tenant, c.id, b"cek-v1", 1).await.unwrap(), b"cek-v1");
    let c2 = conversation(tenant, user, a.id);
    store.create_conversation(&c2).await.unwrap();

    let counts = store.count_wrapped_keys(tenant).await.unwrap();
    for kind in [WrappedKeyKind::Tenant, WrappedKeyKind::Library, WrappedKeyKind::Conversation] {
        let n: u64 = counts.iter().filter(|c| c.kind == kind && c.key_version == Some(1)).map(|c| c.count).sum();
        assert_eq!(n, 1, "{kind:?}: {counts:?}");
    }
    assert_eq!(store.tenants_with_keys().await.unwrap(), vec![tenant]);

    let below = store.wrapped_keys_below(tenant, 2, None, 2).await.unwrap();
    assert_eq!(below.iter().map(|k| k.kind).collect::<Vec<_>>(), [WrappedKeyKind::Tenant, WrappedKeyKind::Library]);
    let last = below.last().map(|k| (k.kind, k.id));
    let next = store.wrapped_keys_below(tenant, 2, last, 10).await.unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].kind, WrappedKeyKind::Conversation);
    assert_eq!(next[0].id, c.id.0);

    for k in below.iter().chain(&next) {
        assert!(store.replace_wrapped_key(tenant, k, b"rewrapped-v2", 2).await.unwrap());
        assert!(!store.replace_wrapped_key(tenant, k, b"again", 2).await.unwrap(), "compare-and-set");
    }
    assert!(store.wrapped_keys_below(tenant, 2, None, 10).await.unwrap().is_empty());
    let counts = store.count_wrapped_keys(tenant).await.unwrap();
    assert!(counts.iter().all(|c| c.key_version == Some(2)), "{counts:?}");
    assert_eq!(store.library_key(tenant, l.id).await.unwrap().unwrap(), b"rewrapped-v2");
    assert_eq!(store.conversation_key(tenant, c.id).await.unwrap().unwrap(), b"rewrapped-v2");
}

crate::both_backends!(
    libraries_members_and_visibility,
    document_versions_conflicts_and_deletion,
    wrapped_keys_count_list_and_replace,
);
