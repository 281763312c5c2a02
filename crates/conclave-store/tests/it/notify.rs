//! Reply notices cross replicas through PostgreSQL LISTEN/NOTIFY: what one replica publishes,
//! every replica (itself included) receives, as ids and offsets.

use std::time::Duration;

use conclave_core::ids::MessageId;
use conclave_core::notify::Notice;
use conclave_core::notify::Notifier;
use conclave_store::testing::{PrivateRedis, PrivateRedisOptions};
use conclave_store::{Database, RedisNotifier, RedisTarget, SharedRedis};

#[tokio::test]
async fn postgres_notices_reach_every_replica() {
    let db = crate::backend::TestDb::postgres().await;
    let a = Database::connect(&db.url, Duration::from_secs(5)).await.unwrap();
    let b = Database::connect(&db.url, Duration::from_secs(5)).await.unwrap();
    let (na, nb) = (a.notifier().await.unwrap(), b.notifier().await.unwrap());
    let (mut on_a, mut on_b) = (na.subscribe(), nb.subscribe());
    let id = MessageId::new();
    na.publish(Notice::Progress { message: id, offset: 128 }).await;
    nb.publish(Notice::Cancel { message: id }).await;
    for rx in [&mut on_a, &mut on_b] {
        let first = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.expect("a notice").unwrap();
        let second = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.expect("a notice").unwrap();
        assert_eq!((first, second), (Notice::Progress { message: id, offset: 128 }, Notice::Cancel { message: id }));
    }
    a.close().await;
    b.close().await;
    db.finish().await;
}

#[tokio::test]
async fn sqlite_notices_stay_in_the_process() {
    let db = crate::backend::TestDb::sqlite().await;
    let n = Database::connect(&db.url, Duration::from_secs(5)).await.unwrap().notifier().await.unwrap();
    let mut rx = n.subscribe();
    let id = MessageId::new();
    n.publish(Notice::Cancel { message: id }).await;
    assert_eq!(rx.recv().await.unwrap(), Notice::Cancel { message: id });
    db.finish().await;
}

#[tokio::test]
async fn redis_notices_reach_every_replica() {
    let redis = SharedRedis::connect(RedisTarget::new("redis://127.0.0.1:6379", None).unwrap(), None, None)
        .await
        .expect("Redis on 127.0.0.1:6379 (make services starts it)");
    // A channel of this test's own, so parallel runs do not hear each other.
    let channel = format!("conclave:test:{}", MessageId::new());
    let a = conclave_store::RedisNotifier::start(redis.clone(), &channel).await.unwrap();
    let b = conclave_store::RedisNotifier::start(redis, &channel).await.unwrap();
    let (mut on_a, mut on_b) = (a.subscribe(), b.subscribe());
    let id = MessageId::new();
    a.publish(Notice::Progress { message: id, offset: 64 }).await;
    b.publish(Notice::Cancel { message: id }).await;
    for rx in [&mut on_a, &mut on_b] {
        let first = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.expect("a notice").unwrap();
        let second = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.expect("a notice").unwrap();
        assert_eq!((first, second), (Notice::Progress { message: id, offset: 64 }, Notice::Cancel { message: id }));
    }
}

/// Azure Cache for Redis with Entra ID: the password is a token that expires, and Redis cuts
/// the connections signed in with it. Over TLS (a CA of the test's own), with an ACL user
/// whose first password is revoked after the renewal: publishing and the subscription both
/// carry on with the new token.
#[tokio::test]
async fn redis_notices_carry_on_with_a_renewed_token_over_tls() {
    let redis = PrivateRedis::start_with(PrivateRedisOptions { acl_user: Some("replica-oid".into()), tls: true });
    redis.add_password("token-1");
    let ca = std::fs::read(redis.ca_file()).unwrap();
    let target = RedisTarget::new(&redis.tls_url_for_acl_user(), Some(ca)).unwrap();
    assert!(target.uses_tls());
    let shared = SharedRedis::connect(target.clone(), None, Some("token-1")).await.expect("TLS sign-in with token-1");
    let channel = "conclave:replies";
    let notifier = RedisNotifier::start(shared.clone(), channel).await.unwrap();
    let mut heard = notifier.subscribe();
    let id = MessageId::new();
    notifier.publish(Notice::Progress { message: id, offset: 1 }).await;
    let first = tokio::time::timeout(Duration::from_secs(5), heard.recv()).await.expect("a notice").unwrap();
    assert_eq!(first, Notice::Progress { message: id, offset: 1 });

    redis.add_password("token-2");
    shared.set_password("token-2").unwrap();
    redis.only_password_and_cut("token-2");

    // Both directions work again, signed in with token-2 only.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let mut offset = 2;
    loop {
        notifier.publish(Notice::Progress { message: id, offset }).await;
        let got = tokio::time::timeout(Duration::from_millis(300), async {
            loop {
                match heard.recv().await {
                    Ok(Notice::Progress { offset: o, .. }) if o == offset => return true,
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(_) => return false,
                }
            }
        })
        .await;
        if got == Ok(true) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no notice went round after the renewal");
        offset += 1;
    }
    assert!(redis.connections_of_acl_user() >= 2, "a publisher and a subscriber, both back");

    // The revoked token is refused: the sign-in is really checked.
    assert!(SharedRedis::connect(target, None, Some("token-1")).await.is_err());
}
