//! Each kind of record: written, read back, paged, changed and removed, with the constraints
//! the domain relies on.

use conclave_core::content::Sealed;
use conclave_core::ids::*;
use conclave_core::page::PageRequest;
use conclave_core::principal::{Role, Scope};
use conclave_core::records::*;
use conclave_core::settings::TenantSettings;
use conclave_core::store::{constraints, Lease, PartialSave, Store};
use conclave_core::StoreError;
use time::OffsetDateTime;

pub const REPLICA: uuid::Uuid = uuid::Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001);

pub fn lease() -> Lease {
    Lease { owner: REPLICA, expires_at: now() + time::Duration::seconds(30) }
}

pub fn now() -> OffsetDateTime {
    conclave_core::clock::now()
}

/// Times of a session that began now and ends in `minutes`.
pub fn session_times(minutes: i64) -> SessionTimes {
    let now = now();
    SessionTimes { created_at: now, expires_at: now + time::Duration::minutes(minutes), last_used_at: now }
}

pub fn new_session(id: SessionId, user: UserId, minutes: i64) -> NewSession {
    NewSession { id, user_id: user, times: session_times(minutes), user_agent: None, ip: None }
}

/// The cut-offs of now, with a 12-hour maximum and an idle timeout of `idle_minutes`.
pub fn live(idle_minutes: u64) -> SessionCutoffs {
    SessionCutoffs::at(
        now(),
        std::time::Duration::from_secs(12 * 3600),
        std::time::Duration::from_secs(idle_minutes * 60),
    )
}

pub fn new_user(email: &str, first_admin: bool) -> NewUser {
    NewUser {
        id: UserId::new(),
        email: email.into(),
        display_name: email.split('@').next().unwrap_or("x").into(),
        role: Role::Member,
        first_user_becomes_admin: first_admin,
        password_hash: Some("$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaA".into()),
        must_change_password: false,
    }
}

pub fn agent(tenant: TenantId, owner: UserId, visibility: Visibility) -> AgentRecord {
    AgentRecord {
        tenant_id: tenant,
        id: AgentId::new(),
        owner_id: owner,
        name: Sealed(b"\0Counsel".to_vec()),
        description: None,
        instructions: Sealed(b"\0Be precise.".to_vec()),
        model: "mock-model".into(),
        temperature: Some(0.2),
        top_p: None,
        max_tokens: Some(512),
        library_ids: vec![],
        visibility,
        created_at: now(),
        updated_at: now(),
    }
}

pub fn conversation(tenant: TenantId, owner: UserId, agent: AgentId) -> ConversationRecord {
    ConversationRecord {
        tenant_id: tenant,
        id: ConversationId::new(),
        owner_id: owner,
        agent_id: agent,
        title: None,
        created_at: now(),
        updated_at: now(),
    }
}

pub fn exchange(tenant: TenantId, conversation: ConversationId, text: &str) -> (MessageRecord, MessageRecord) {
    let user = MessageRecord {
        tenant_id: tenant,
        id: MessageId::new(),
        conversation_id: conversation,
        role: MessageRole::User,
        content: Sealed([&[0u8][..], text.as_bytes()].concat()),
        status: MessageStatus::Complete,
        model: None,
        usage: None,
        finish_reason: None,
        error: None,
        reply_to: None,
        created_at: now(),
        updated_at: now(),
    };
    let reply = MessageRecord {
        id: MessageId::new(),
        role: MessageRole::Assistant,
        content: Sealed(vec![0]),
        status: MessageStatus::Streaming,
        model: Some("mock-model".into()),
        reply_to: Some(user.id),
        ..user.clone()
    };
    (user, reply)
}

async fn tenants_and_settings(store: &dyn Store) {
    let a = store.default_tenant("Default").await.unwrap();
    let again = store.default_tenant("Other name").await.unwrap();
    assert_eq!(a.id, again.id, "one default tenant");
    let mut settings = TenantSettings { allowed_models: Some(vec!["mock-model".into()]), ..Default::default() };
    settings.features.insert("beta".into(), true);
    let updated = store.update_tenant(a.id, "Firm", &settings).await.unwrap();
    assert_eq!(updated.name, "Firm");
    assert_eq!(store.get_tenant(a.id).await.unwrap().settings, settings);
    let b = store.create_tenant("Second").await.unwrap();
    assert_ne!(a.id, b.id);
    assert!(matches!(store.get_tenant(TenantId::new()).await, Err(StoreError::NotFound)));
}

async fn first_user_is_admin_and_emails_are_unique(store: &dyn Store) {
    let t = store.default_tenant("Default").await.unwrap();
    let first = store.create_user(t.id, new_user("ada@example.com", true)).await.unwrap();
    let second = store.create_user(t.id, new_user("bob@example.com", true)).await.unwrap();
    assert_eq!(first.role, Role::Admin);
    assert_eq!(second.role, Role::Member);
    let dup = store.create_user(t.id, new_user("ada@example.com", false)).await;
    assert!(matches!(dup, Err(StoreError::Constraint(c)) if c == constraints::USER_EMAIL_UNIQUE));
    // Emails are global: another tenant cannot take the address either.
    let other = store.create_tenant("Other").await.unwrap();
    let dup = store.create_user(other.id, new_user("ada@example.com", false)).await;
    assert!(matches!(dup, Err(StoreError::Constraint(_))));
    let (tenant, login) = store.find_login("ada@example.com").await.unwrap().unwrap();
    assert_eq!((tenant, login.user.id), (t.id, first.id));
    assert!(login.password_hash.is_some());
    assert!(store.find_login("nobody@example.com").await.unwrap().is_none());
}

async fn concurrent_first_signups_make_one_admin(store: &dyn Store) {
    let t = store.default_tenant("Default").await.unwrap();
    let results = futures::future::join_all(
        (0..8).map(|i| store.create_user(t.id, new_user(&format!("u{i}@example.com"), true))),
    )
    .await;
    let admins = results.iter().filter(|r| r.as_ref().unwrap().role == Role::Admin).count();
    assert_eq!(admins, 1);
}

async fn users_page_update_and_last_admin(store: &dyn Store) {
    let t = store.default_tenant("Default").await.unwrap();
    let admin = store.create_user(t.id, new_user("admin@example.com", true)).await.unwrap();
    for i in 0..4 {
        store.create_user(t.id, new_user(&format!("m{i}@example.com"), true)).await.unwrap();
    }
    let p1 = store.list_users(t.id, PageRequest::first(2)).await.unwrap();
    assert_eq!(p1.items.len(), 2);
    let p2 = store.list_users(t.id, PageRequest { limit: 2, after: p1.next }).await.unwrap();
    let p3 = store.list_users(t.id, PageRequest { limit: 2, after: p2.next }).await.unwrap();
    assert_eq!(p3.items.len(), 1);
    assert!(p3.next.is_none());
    let mut ids: Vec<_> = [p1.items, p2.items, p3.items].concat().into_iter().map(|u| u.id).collect();
    ids.dedup();
    assert_eq!(ids.len(), 5);

    let demote = UserPatch { role: Some(Role::Member), ..Default::default() };
    assert!(
        matches!(store.update_user(t.id, admin.id, &demote).await, Err(StoreError::Constraint(c)) if c == "last_admin")
    );
    let disable = UserPatch { disabled: Some(true), ..Default::default() };
    assert!(matches!(store.update_user(t.id, admin.id, &disable).await, Err(StoreError::Constraint(_))));
    assert_eq!(store.get_user(t.id, admin.id).await.unwrap().role, Role::Admin, "refused change rolled back");
    let other = ids.into_iter().find(|id| *id != admin.id).unwrap();
    let promoted = store
        .update_user(
            t.id,
            other,
            &UserPatch { role: Some(Role::Admin), display_name: Some("Eve".into()), ..Default::default() },
        )
        .await
        .unwrap();
    assert_eq!((promoted.role, promoted.display_name.as_str()), (Role::Admin, "Eve"));
    store.update_user(t.id, admin.id, &demote).await.unwrap();
    assert!(matches!(store.update_user(t.id, UserId::new(), &demote).await, Err(StoreError::NotFound)));
    store.set_password(t.id, other, "$argon2id$new", true).await.unwrap();
    let login = store.get_login(t.id, other).await.unwrap();
    assert_eq!(login.password_hash.as_deref(), Some("$argon2id$new"));
    assert!(login.user.must_change_password);
}

async fn sessions_rotate_once_and_revoke(store: &dyn Store) {
    let t = store.default_tenant("Default").await.unwrap();
    let u = store.create_user(t.id, new_user("s@example.com", true)).await.unwrap();
    let session = SessionId::new();
    let token = |kind| TokenRecord {
        tenant_id: t.id,
        id: TokenId::new(),
        session_id: session,
        user_id: u.id,
        kind,
        secret_hash: vec![7; 32],
        expires_at: now() + time::Duration::minutes(5),
        used_at: None,
        session_revoked: false,
        session: session_times(60),
    };
    let (access, refresh) = (token(TokenKind::Access), token(TokenKind::Refresh));
    let mut started = new_session(session, u.id, 60);
    started.times.last_used_at -= time::Duration::minutes(10);
    store.create_session(t.id, &started, &[access.clone(), refresh.clone()]).await.unwrap();
    assert_eq!(store.find_credential(refresh.id.0).await.unwrap(), Some(CredentialRef::Token(t.id)));
    let read = store.get_token(t.id, refresh.id).await.unwrap();
    assert_eq!((read.kind, read.session_revoked, read.used_at), (TokenKind::Refresh, false, None));
    assert_eq!(read.secret_hash, vec![7; 32]);
    assert_eq!(read.session, started.times, "the token carries its session's times");

    let next = token(TokenKind::Refresh);
    let rotated_at = now();
    assert!(store.rotate_refresh(t.id, refresh.id, rotated_at, std::slice::from_ref(&next)).await.unwrap());
    let after = store.get_token(t.id, next.id).await.unwrap().session;
    assert_eq!(after.last_used_at, rotated_at, "a refresh is the session's last use");
    assert_eq!((after.created_at, after.expires_at), (started.times.created_at, started.times.expires_at));
    assert!(
        !store.rotate_refresh(t.id, refresh.id, now(), &[token(TokenKind::Refresh)]).await.unwrap(),
        "second exchange refused"
    );
    assert!(store.get_token(t.id, refresh.id).await.unwrap().used_at.is_some());
    assert!(!store.rotate_refresh(t.id, access.id, now(), &[]).await.unwrap(), "an access token is never exchanged");

    store.revoke_session(t.id, session).await.unwrap();
    assert!(store.get_token(t.id, next.id).await.unwrap().session_revoked);
    assert!(store.get_token(t.id, access.id).await.unwrap().session_revoked);
}

async fn user_sessions_revoked_but_one(store: &dyn Store) {
    let t = store.default_tenant("Default").await.unwrap();
    let u = store.create_user(t.id, new_user("multi@example.com", true)).await.unwrap();
    let mut tokens = Vec::new();
    for _ in 0..3 {
        let session = SessionId::new();
        let tok = TokenRecord {
            tenant_id: t.id,
            id: TokenId::new(),
            session_id: session,
            user_id: u.id,
            kind: TokenKind::Access,
            secret_hash: vec![1; 32],
            expires_at: now() + time::Duration::minutes(5),
            used_at: None,
            session_revoked: false,
            session: session_times(60),
        };
        store.create_session(t.id, &new_session(session, u.id, 60), std::slice::from_ref(&tok)).await.unwrap();
        tokens.push(tok);
    }
    assert_eq!(store.revoke_user_sessions(t.id, u.id, Some(tokens[0].session_id)).await.unwrap(), 2);
    assert_eq!(store.revoke_user_sessions(t.id, u.id, Some(tokens[0].session_id)).await.unwrap(), 0, "already revoked");
    let revoked: Vec<bool> = futures::future::join_all(tokens.iter().map(|tok| store.get_token(t.id, tok.id)))
        .await
        .into_iter()
        .map(|r| r.unwrap().session_revoked)
        .collect();
    assert_eq!(revoked, vec![false, true, true]);
}

/// The session list: only live sessions (not revoked, within both limits), newest first, paged;
/// a user revokes only their own; the single sign-on cut-off only moves forward.
async fn sessions_listed_revoked_and_cut_off(store: &dyn Store) {
    let t = store.default_tenant("Default").await.unwrap();
    let u = store.create_user(t.id, new_user("list@example.com", true)).await.unwrap();
    let other = store.create_user(t.id, new_user("other@example.com", false)).await.unwrap();
    let minutes = time::Duration::minutes;
    let start = |times: SessionTimes, user: UserId| {
        let s = NewSession {
            id: SessionId::new(),
            user_id: user,
            times,
            user_agent: Some("Mozilla/5.0 (Test)".into()),
            ip: Some("203.0.113.7".into()),
        };
        async move {
            store.create_session(t.id, &s, &[]).await.unwrap();
            s
        }
    };
    let n = now();
    let idle = start(
        SessionTimes { created_at: n - minutes(40), expires_at: n + minutes(600), last_used_at: n - minutes(31) },
        u.id,
    )
    .await;
    let expired = start(
        SessionTimes { created_at: n - minutes(600), expires_at: n - minutes(1), last_used_at: n - minutes(2) },
        u.id,
    )
    .await;
    let too_old = start(
        SessionTimes { created_at: n - minutes(13 * 60), expires_at: n + minutes(60), last_used_at: n - minutes(1) },
        u.id,
    )
    .await;
    let a = start(
        SessionTimes { created_at: n - minutes(20), expires_at: n + minutes(700), last_used_at: n - minutes(5) },
        u.id,
    )
    .await;
    let b = start(session_times(720), u.id).await;
    let revoked = start(session_times(720), u.id).await;
    let theirs = start(session_times(720), other.id).await;
    store.revoke_session(t.id, revoked.id).await.unwrap();

    let page = store.list_sessions(t.id, u.id, live(30), PageRequest::first(1)).await.unwrap();
    assert_eq!(page.items.iter().map(|s| s.id).collect::<Vec<_>>(), vec![b.id], "newest first");
    let rest = store.list_sessions(t.id, u.id, live(30), PageRequest { limit: 10, after: page.next }).await.unwrap();
    assert_eq!(
        rest.items.iter().map(|s| s.id).collect::<Vec<_>>(),
        vec![a.id],
        "idle, expired, too old, revoked and another user's are not listed: {:?}",
        [idle.id, expired.id, too_old.id]
    );
    assert!(rest.next.is_none());
    let listed = &rest.items[0];
    assert_eq!((listed.times, listed.user_id, listed.tenant_id), (a.times, u.id, t.id));
    assert_eq!((listed.user_agent.as_deref(), listed.ip.as_deref()), (Some("Mozilla/5.0 (Test)"), Some("203.0.113.7")));
    // A longer idle timeout lists the idle one too.
    assert_eq!(store.list_sessions(t.id, u.id, live(45), PageRequest::default()).await.unwrap().items.len(), 3);

    assert!(!store.revoke_own_session(t.id, u.id, theirs.id).await.unwrap(), "another user's session");
    assert!(!store.revoke_own_session(t.id, u.id, revoked.id).await.unwrap(), "already revoked");
    assert!(store.revoke_own_session(t.id, u.id, a.id).await.unwrap());
    assert_eq!(store.list_sessions(t.id, other.id, live(30), PageRequest::default()).await.unwrap().items.len(), 1);
    // Every unrevoked session counts, expired or not, but the one kept.
    assert_eq!(store.revoke_user_sessions(t.id, u.id, Some(b.id)).await.unwrap(), 3);
    assert_eq!(store.list_sessions(t.id, u.id, live(30), PageRequest::default()).await.unwrap().items[0].id, b.id);

    assert_eq!(store.get_user(t.id, u.id).await.unwrap().tokens_valid_after, None);
    let cut = now();
    store.set_tokens_valid_after(t.id, u.id, cut).await.unwrap();
    store.set_tokens_valid_after(t.id, u.id, cut - minutes(5)).await.unwrap();
    assert_eq!(store.get_user(t.id, u.id).await.unwrap().tokens_valid_after, Some(cut), "never moved back");
    assert_eq!(store.get_login(t.id, u.id).await.unwrap().user.tokens_valid_after, Some(cut));
    assert_eq!(store.get_user(t.id, other.id).await.unwrap().tokens_valid_after, None);
    let missing = store.set_tokens_valid_after(t.id, UserId::new(), cut).await;
    assert!(matches!(missing, Err(StoreError::NotFound)), "{missing:?}");

    // Tenant-wide: every session but the one kept, every user's cut-off but the caller's.
    let later = cut + minutes(1);
    let users = store.list_users(t.id, PageRequest { limit: 100, after: None }).await.unwrap().items.len() as u64;
    assert_eq!(store.revoke_tenant_sessions(t.id, u.id, Some(b.id), later).await.unwrap(), (users, 1), "theirs ended");
    assert_eq!(store.list_sessions(t.id, u.id, live(30), PageRequest::default()).await.unwrap().items[0].id, b.id);
    assert!(store.list_sessions(t.id, other.id, live(30), PageRequest::default()).await.unwrap().items.is_empty());
    assert_eq!(store.get_user(t.id, u.id).await.unwrap().tokens_valid_after, Some(cut), "the caller's own stays");
    assert_eq!(store.get_user(t.id, other.id).await.unwrap().tokens_valid_after, Some(later));
    assert_eq!(store.revoke_tenant_sessions(t.id, u.id, None, cut).await.unwrap(), (users, 1), "then b");
    assert_eq!(store.get_user(t.id, other.id).await.unwrap().tokens_valid_after, Some(later), "never moved back");
}

async fn api_keys_lifecycle(store: &dyn Store) {
    let t = store.default_tenant("Default").await.unwrap();
    let u = store.create_user(t.id, new_user("k@example.com", true)).await.unwrap();
    let key = ApiKey {
        tenant_id: t.id,
        id: ApiKeyId::new(),
        user_id: u.id,
        name: "ci".into(),
        scopes: vec![Scope::AgentsRead],
        created_at: now(),
        expires_at: Some(now() + time::Duration::days(1)),
        last_used_at: None,
    };
    store.create_api_key(&ApiKeyRecord { key: key.clone(), secret_hash: vec![9; 32] }).await.unwrap();
    assert_eq!(store.find_credential(key.id.0).await.unwrap(), Some(CredentialRef::ApiKey(t.id)));
    let read = store.get_api_key(t.id, key.id).await.unwrap();
    assert_eq!(
        (read.key.scopes.clone(), read.key.expires_at, read.secret_hash.clone()),
        (vec![Scope::AgentsRead], key.expires_at, vec![9; 32])
    );
    store.touch_api_key(t.id, key.id, now()).await.unwrap();
    assert!(store.get_api_key(t.id, key.id).await.unwrap().key.last_used_at.is_some());
    assert_eq!(store.list_api_keys(t.id, u.id, PageRequest::default()).await.unwrap().items.len(), 1);
    let other = store.create_user(t.id, new_user("other@example.com", true)).await.unwrap();
    assert!(
        matches!(store.delete_api_key(t.id, other.id, key.id).await, Err(StoreError::NotFound)),
        "only its owner deletes it"
    );
    store.delete_api_key(t.id, u.id, key.id).await.unwrap();
    assert_eq!(store.find_credential(key.id.0).await.unwrap(), None);
    assert!(matches!(store.get_api_key(t.id, key.id).await, Err(StoreError::NotFound)));
}

async fn agents_visibility_and_paging(store: &dyn Store) {
    let t = store.default_tenant("Default").await.unwrap();
    let ada = store.create_user(t.id, new_user("ada@example.com", true)).await.unwrap();
    let bob = store.create_user(t.id, new_user("bob@example.com", true)).await.unwrap();
    let private = agent(t.id, ada.id, Visibility::Private);
    let shared = agent(t.id, ada.id, Visibility::Tenant);
    store.create_agent(&private).await.unwrap();
    store.create_agent(&shared).await.unwrap();
    let read = store.get_agent(t.id, ada.id, private.id).await.unwrap();
    assert_eq!((read.name.clone(), read.temperature, read.max_tokens), (private.name.clone(), Some(0.2), Some(512)));
    assert!(matches!(store.get_agent(t.id, bob.id, private.id).await, Err(StoreError::NotFound)));
    assert!(store.get_agent(t.id, bob.id, shared.id).await.is_ok());
    let bob_sees: Vec<_> = store
        .list_agents(t.id, bob.id, PageRequest::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|a| a.id)
        .collect();
    assert_eq!(bob_sees, vec![shared.id]);
    let ada_sees: Vec<_> = store
        .list_agents(t.id, ada.id, PageRequest::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|a| a.id)
        .collect();
    assert_eq!(ada_sees, vec![shared.id, private.id], "newest first");
    let first = store.list_agents(t.id, ada.id, PageRequest::first(1)).await.unwrap();
    assert_eq!(first.next, Some(shared.id.0));
    let second = store.list_agents(t.id, ada.id, PageRequest { limit: 1, after: first.next }).await.unwrap();
    assert_eq!(second.items[0].id, private.id);
    assert!(second.next.is_none());

    let mut changed = shared.clone();
    changed.visibility = Visibility::Private;
    changed.temperature = None;
    store.update_agent(&changed).await.unwrap();
    assert!(matches!(store.get_agent(t.id, bob.id, shared.id).await, Err(StoreError::NotFound)));
    assert_eq!(store.get_agent(t.id, ada.id, shared.id).await.unwrap().temperature, None);
    store.delete_agent(t.id, shared.id).await.unwrap();
    assert!(matches!(store.delete_agent(t.id, shared.id).await, Err(StoreError::NotFound)));
}

async fn conversations_messages_and_replies(store: &dyn Store) {
    let t = store.default_tenant("Default").await.unwrap();
    let ada = store.create_user(t.id, new_user("ada@example.com", true)).await.unwrap();
    let bob = store.create_user(t.id, new_user("bob@example.com", true)).await.unwrap();
    let a = agent(t.id, ada.id, Visibility::Private);
    store.create_agent(&a).await.unwrap();
    let older = conversation(t.id, ada.id, a.id);
    store.create_conversation(&older).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let newer = conversation(t.id, ada.id, a.id);
    store.create_conversation(&newer).await.unwrap();
    assert!(matches!(store.get_conversation(t.id, bob.id, older.id).await, Err(StoreError::NotFound)));

    // What a first message needs, read at once.
    let context = store.reply_context(t.id, ada.id, older.id).await.unwrap();
    assert_eq!((context.conversation.id, context.conversation.agent_id), (older.id, a.id));
    assert_eq!(context.agent.as_ref().map(|a| a.id), Some(a.id));
    assert_eq!((context.streaming, context.has_messages, context.wrapped_key), (0, false, None));
    assert!(matches!(store.reply_context(t.id, bob.id, older.id).await, Err(StoreError::NotFound)));

    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let (user, reply) = exchange(t.id, older.id, "hello");
    let first_title = Sealed(b"\0hello".to_vec());
    store.insert_exchange(Some(&user), &reply, lease(), Some(&first_title)).await.unwrap();
    let context = store.reply_context(t.id, ada.id, older.id).await.unwrap();
    assert_eq!(context.conversation.title, Some(first_title), "the first exchange names the conversation");
    assert_eq!((context.streaming, context.has_messages), (1, true), "the reply being generated counts");
    // An agent the owner can no longer see (it is bob's and private) is reported as absent.
    let bobs = agent(t.id, bob.id, Visibility::Private);
    store.create_agent(&bobs).await.unwrap();
    let elsewhere = conversation(t.id, ada.id, bobs.id);
    store.create_conversation(&elsewhere).await.unwrap();
    let context = store.reply_context(t.id, ada.id, elsewhere.id).await.unwrap();
    assert!(context.agent.is_none());
    assert_eq!(
        (context.streaming, context.has_messages),
        (1, false),
        "streaming counts every conversation of the owner"
    );
    store.delete_conversation(t.id, ada.id, elsewhere.id).await.unwrap();
    let listed: Vec<_> = store
        .list_conversations(t.id, ada.id, PageRequest::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(listed, vec![older.id, newer.id], "the conversation just written to comes first");
    let page = store.list_conversations(t.id, ada.id, PageRequest::first(1)).await.unwrap();
    let rest = store.list_conversations(t.id, ada.id, PageRequest { limit: 1, after: page.next }).await.unwrap();
    assert_eq!(rest.items[0].id, newer.id);

    let title = Sealed(b"\0Greetings".to_vec());
    store.update_conversation_title(t.id, ada.id, older.id, Some(&title)).await.unwrap();
    assert_eq!(store.get_conversation(t.id, ada.id, older.id).await.unwrap().title, Some(title));
    assert!(matches!(store.update_conversation_title(t.id, bob.id, older.id, None).await, Err(StoreError::NotFound)));

    let messages = store.list_messages(t.id, older.id, PageRequest::default()).await.unwrap().items;
    assert_eq!(
        messages.iter().map(|m| (m.role, m.status)).collect::<Vec<_>>(),
        vec![(MessageRole::User, MessageStatus::Complete), (MessageRole::Assistant, MessageStatus::Streaming)]
    );
    assert_eq!(messages[1].reply_to, Some(user.id));

    let outcome = ReplyOutcome {
        content: Sealed(b"\0Hi there".to_vec()),
        status: MessageStatus::Complete,
        usage: Some(Usage { prompt_tokens: 3, completion_tokens: 2 }),
        finish_reason: Some("stop".into()),
        error: None,
    };
    assert!(store.finish_reply(t.id, reply.id, &outcome).await.unwrap());
    assert!(!store.finish_reply(t.id, reply.id, &outcome).await.unwrap(), "a reply ends once");
    let done = store.get_message(t.id, older.id, reply.id).await.unwrap();
    assert_eq!((done.status, done.usage, done.content), (MessageStatus::Complete, outcome.usage, outcome.content));

    assert!(matches!(store.delete_conversation(t.id, bob.id, older.id).await, Err(StoreError::NotFound)));
    store.delete_conversation(t.id, ada.id, older.id).await.unwrap();
    assert!(
        store.list_messages(t.id, older.id, PageRequest::default()).await.unwrap().items.is_empty(),
        "messages go with it"
    );
    let orphan = exchange(t.id, older.id, "late");
    assert!(
        store.insert_exchange(Some(&orphan.0), &orphan.1, lease(), None).await.is_err(),
        "no messages into a deleted conversation"
    );
}

async fn deleting_a_user_removes_their_data(store: &dyn Store) {
    let t = store.default_tenant("Default").await.unwrap();
    let admin = store.create_user(t.id, new_user("admin@example.com", true)).await.unwrap();
    let leaver = store.create_user(t.id, new_user("leaver@example.com", true)).await.unwrap();
    let private = agent(t.id, leaver.id, Visibility::Private);
    let shared = agent(t.id, leaver.id, Visibility::Tenant);
    store.create_agent(&private).await.unwrap();
    store.create_agent(&shared).await.unwrap();
    let c = conversation(t.id, leaver.id, private.id);
    store.create_conversation(&c).await.unwrap();
    let (m, r) = exchange(t.id, c.id, "secret");
    store.insert_exchange(Some(&m), &r, lease(), None).await.unwrap();
    let key = ApiKey {
        tenant_id: t.id,
        id: ApiKeyId::new(),
        user_id: leaver.id,
        name: "k".into(),
        scopes: vec![],
        created_at: now(),
        expires_at: None,
        last_used_at: None,
    };
    store.create_api_key(&ApiKeyRecord { key: key.clone(), secret_hash: vec![1; 32] }).await.unwrap();

    store.delete_user(t.id, leaver.id, admin.id).await.unwrap();
    assert!(matches!(store.get_user(t.id, leaver.id).await, Err(StoreError::NotFound)));
    assert!(store.find_login("leaver@example.com").await.unwrap().is_none());
    assert_eq!(store.find_credential(key.id.0).await.unwrap(), None);
    assert!(matches!(store.get_conversation(t.id, leaver.id, c.id).await, Err(StoreError::NotFound)));
    assert!(store.list_messages(t.id, c.id, PageRequest::default()).await.unwrap().items.is_empty());
    assert!(matches!(store.get_agent(t.id, admin.id, private.id).await, Err(StoreError::NotFound)));
    assert_eq!(store.get_agent(t.id, admin.id, shared.id).await.unwrap().owner_id, admin.id, "shared agents pass on");
    // The address is free again.
    store.create_user(t.id, new_user("leaver@example.com", false)).await.unwrap();
}

async fn audit_sequence_per_tenant(store: &dyn Store) {
    let a = store.default_tenant("Default").await.unwrap();
    let b = store.create_tenant("Other").await.unwrap();
    let event = |tenant: TenantId, action: &'static str| NewAuditEvent {
        tenant_id: tenant,
        id: AuditEventId::new(),
        at: now(),
        actor_id: None,
        actor_kind: "anonymous",
        action,
        resource_type: "user",
        resource_id: Some("x".into()),
        outcome: Outcome::Success,
        ip: Some("127.0.0.1".into()),
        request_id: Some("r1".into()),
        detail: Some(serde_json::json!({"k": 1})),
    };
    assert_eq!(store.append_audit(&event(a.id, "one")).await.unwrap(), 1);
    assert_eq!(store.append_audit(&event(a.id, "two")).await.unwrap(), 2);
    assert_eq!(store.append_audit(&event(b.id, "other")).await.unwrap(), 1, "each tenant counts alone");
    let many: Vec<_> = (0..10).map(|_| event(a.id, "many")).collect();
    let concurrent = futures::future::join_all(many.iter().map(|e| store.append_audit(e))).await;
    let mut seqs: Vec<i64> = concurrent.into_iter().map(Result::unwrap).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (3..=12).collect::<Vec<_>>(), "no gaps, no duplicates");
    let events = store.list_audit(a.id, &conclave_core::store::AuditFilter::after(1, 100)).await.unwrap();
    assert_eq!(events.len(), 11);
    assert_eq!((events[0].seq, events[0].action.as_str()), (2, "two"));
    assert_eq!(events[0].detail, Some(serde_json::json!({"k": 1})));
    assert!(store
        .list_audit(b.id, &conclave_core::store::AuditFilter::after(0, 100))
        .await
        .unwrap()
        .iter()
        .all(|e| e.action == "other"));
}

async fn reply_leases_cancel_and_expiry(store: &dyn Store) {
    let t = store.default_tenant("Default").await.unwrap();
    let ada = store.create_user(t.id, new_user("ada@example.com", true)).await.unwrap();
    let a = agent(t.id, ada.id, Visibility::Private);
    store.create_agent(&a).await.unwrap();
    let c = conversation(t.id, ada.id, a.id);
    store.create_conversation(&c).await.unwrap();
    let (user, reply) = exchange(t.id, c.id, "question");
    store.insert_exchange(Some(&user), &reply, lease(), None).await.unwrap();
    assert_eq!(store.count_streaming(t.id, ada.id).await.unwrap(), 1);

    let partial = Sealed(b"\0Half an ans".to_vec());
    let saved = store.save_partial(t.id, reply.id, &partial, lease()).await.unwrap();
    assert_eq!((saved.still_owned, saved.cancel_requested), (true, false));
    let stranger = Lease { owner: uuid::Uuid::new_v4(), expires_at: now() + time::Duration::seconds(30) };
    assert!(
        !store.save_partial(t.id, reply.id, &partial, stranger).await.unwrap().still_owned,
        "only the owner writes"
    );
    assert_eq!(store.get_message(t.id, c.id, reply.id).await.unwrap().content, partial);

    assert!(store.request_cancel(t.id, c.id, reply.id).await.unwrap());
    assert!(store.save_partial(t.id, reply.id, &partial, lease()).await.unwrap().cancel_requested);
    assert!(!store.request_cancel(t.id, c.id, user.id).await.unwrap(), "a user message is not streaming");

    // A lease in the future is never expired.
    assert_eq!(store.expire_leases(now(), "gone").await.unwrap(), 0);
    let expired = Lease { owner: REPLICA, expires_at: now() - time::Duration::seconds(1) };
    store.save_partial(t.id, reply.id, &partial, expired).await.unwrap();
    assert_eq!(store.expire_leases(now(), "its server died").await.unwrap(), 1);
    let failed = store.get_message(t.id, c.id, reply.id).await.unwrap();
    assert_eq!((failed.status, failed.error.as_deref()), (MessageStatus::Failed, Some("its server died")));
    assert_eq!(failed.content, partial, "the saved text is kept");
    assert!(
        !store.save_partial(t.id, reply.id, &partial, lease()).await.unwrap().still_owned,
        "an ended reply is not written"
    );
    assert_eq!(store.count_streaming(t.id, ada.id).await.unwrap(), 0);

    // Regenerating: a second reply to the same question, without a new user message.
    let (_, again) = exchange(t.id, c.id, "question");
    let again = MessageRecord { reply_to: Some(user.id), ..again };
    store.insert_exchange(None, &again, lease(), None).await.unwrap();
    assert_eq!(store.list_messages(t.id, c.id, PageRequest::default()).await.unwrap().items.len(), 3);
}

/// Gateway calls' usage rows and audit events go in one transaction: each event takes the next
/// sequence number and extends the hash chain like any other, and if one usage row cannot be
/// written, nothing of the batch is.
async fn audit_with_usage_is_atomic_and_chained(store: &dyn Store) {
    let t = store.default_tenant("Default").await.unwrap();
    let ada = store.create_user(t.id, new_user("ada@example.com", true)).await.unwrap();
    let event = |action: &'static str| NewAuditEvent {
        tenant_id: t.id,
        id: AuditEventId::new(),
        at: now(),
        actor_id: Some(ada.id),
        actor_kind: "user",
        action,
        resource_type: "model",
        resource_id: Some("m".into()),
        outcome: Outcome::Success,
        ip: None,
        request_id: None,
        detail: None,
    };
    let usage = UsageRecord {
        tenant_id: t.id,
        id: uuid::Uuid::now_v7(),
        user_id: ada.id,
        api_key_id: None,
        source: UsageSource::Gateway,
        message_id: None,
        model: "m".into(),
        prompt_tokens: 3,
        completion_tokens: 4,
        estimated: false,
        cost_micro_usd: 7,
        at: now(),
    };
    let other = UsageRecord { id: uuid::Uuid::now_v7(), ..usage.clone() };
    assert_eq!(store.append_audit(&event("before")).await.unwrap(), 1);
    store
        .append_audit_with_usage(&[
            (event("first call"), Some(usage.clone())),
            (event("no usage"), None),
            (event("second call"), Some(other.clone())),
        ])
        .await
        .unwrap();
    let third = UsageRecord { id: uuid::Uuid::now_v7(), ..usage.clone() };
    assert!(
        store
            .append_audit_with_usage(&[(event("third call"), Some(third)), (event("duplicate"), Some(usage.clone()))])
            .await
            .is_err(),
        "the same usage row twice violates its key"
    );
    assert_eq!(store.append_audit(&event("after")).await.unwrap(), 5, "the failed batch took no sequence number");
    let events = store.list_audit(t.id, &conclave_core::store::AuditFilter::after(0, 100)).await.unwrap();
    let actions: Vec<&str> = events.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["before", "first call", "no usage", "second call", "after"]);
    let mut prev = [0u8; 32];
    for e in &events {
        let hash = audit_hash(&prev, e);
        assert_eq!(e.hash.as_deref(), Some(&hash[..]), "event {} extends the chain", e.seq);
        prev = hash;
    }
    let rows = store
        .usage_records(t.id, None, now() - time::Duration::hours(1), now() + time::Duration::hours(1))
        .await
        .unwrap();
    let mut ids: Vec<uuid::Uuid> = rows.iter().map(|r| r.id).collect();
    ids.sort_unstable();
    assert_eq!(ids, [usage.id, other.id], "the two calls' rows, not the failed batch's");
    assert!(rows.iter().all(|r| (r.prompt_tokens, r.completion_tokens) == (3, 4)));
}

/// Many replies' partial saves in one transaction: each answer is that reply's own, in order.
async fn partial_saves_in_one_batch(store: &dyn Store) {
    let t = store.default_tenant("Default").await.unwrap();
    let ada = store.create_user(t.id, new_user("ada@example.com", true)).await.unwrap();
    let a = agent(t.id, ada.id, Visibility::Private);
    store.create_agent(&a).await.unwrap();
    let c = conversation(t.id, ada.id, a.id);
    store.create_conversation(&c).await.unwrap();
    let mut replies = Vec::new();
    for question in ["one", "two", "three", "four"] {
        let (user, reply) = exchange(t.id, c.id, question);
        store.insert_exchange(Some(&user), &reply, lease(), None).await.unwrap();
        replies.push(reply);
    }
    let [mine, cancelled, ended, taken] = &replies[..] else { unreachable!("four replies") };
    assert!(store.request_cancel(t.id, c.id, cancelled.id).await.unwrap());
    let outcome = ReplyOutcome {
        content: Sealed(b"\0done".to_vec()),
        status: MessageStatus::Complete,
        usage: None,
        finish_reason: Some("stop".into()),
        error: None,
    };
    assert!(store.finish_reply(t.id, ended.id, &outcome).await.unwrap());
    let stranger = Lease { owner: uuid::Uuid::new_v4(), expires_at: now() + time::Duration::seconds(30) };
    let save = |id: MessageId, text: &str, lease: Lease| PartialSave {
        tenant: t.id,
        id,
        content: Sealed(format!("\0{text}").into_bytes()),
        lease,
    };
    let saves = [
        save(mine.id, "mine so far", lease()),
        save(cancelled.id, "cancelled so far", lease()),
        save(ended.id, "too late", lease()),
        save(taken.id, "not mine", stranger),
    ];
    let saved = store.save_partials(&saves).await.unwrap();
    let answers: Vec<(bool, bool)> = saved.iter().map(|s| (s.still_owned, s.cancel_requested)).collect();
    assert_eq!(answers, [(true, false), (true, true), (false, false), (false, false)]);
    let content = |id| async move { store.get_message(t.id, c.id, id).await.unwrap().content };
    assert_eq!(content(mine.id).await, saves[0].content, "saved");
    assert_eq!(content(cancelled.id).await, saves[1].content, "saved, and told of the cancel");
    assert_eq!(content(ended.id).await, outcome.content, "an ended reply is not written");
    assert_eq!(content(taken.id).await, taken.content, "only the owner writes");
    assert!(store.save_partials(&[]).await.unwrap().is_empty());
}

crate::both_backends!(
    reply_leases_cancel_and_expiry,
    partial_saves_in_one_batch,
    tenants_and_settings,
    first_user_is_admin_and_emails_are_unique,
    concurrent_first_signups_make_one_admin,
    users_page_update_and_last_admin,
    sessions_rotate_once_and_revoke,
    user_sessions_revoked_but_one,
    sessions_listed_revoked_and_cut_off,
    api_keys_lifecycle,
    agents_visibility_and_paging,
    conversations_messages_and_replies,
    deleting_a_user_removes_their_data,
    audit_sequence_per_tenant,
    audit_with_usage_is_atomic_and_chained,
);
