//! Reply notices cross replicas through PostgreSQL LISTEN/NOTIFY: what one replica publishes,
//! every replica (itself included) receives, as ids and offsets.

use std::time::Duration;

use conclave_core::ids::MessageId;
use conclave_core::notify::Notice;
use conclave_store::Database;

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
    use conclave_core::notify::Notifier;
    let client = redis::Client::open("redis://127.0.0.1:6379").unwrap();
    // A channel of this test's own, so parallel runs do not hear each other.
    let channel = format!("conclave:test:{}", MessageId::new());
    let a = conclave_store::RedisNotifier::start(client.clone(), &channel)
        .await
        .expect("Redis on 127.0.0.1:6379 (make services starts it)");
    let b = conclave_store::RedisNotifier::start(client, &channel).await.unwrap();
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
