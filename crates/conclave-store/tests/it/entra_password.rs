//! An Entra ID token as the PostgreSQL password (`CONCLAVE_DATABASE_AUTH=entra`), tokens issued
//! by the Key Vault / Entra stand-in of `conclave-azure`.
//!
//! The machine's PostgreSQL trusts 127.0.0.1, so it never asks for a password. What is proven,
//! and how:
//! - that the token is the password sent at sign-in, and that after `set_postgres_password`
//!   new connections send the refreshed token: against a minimal PostgreSQL wire endpoint in
//!   this file that asks for a cleartext password and records it;
//! - that a pool signs in as the token's role on the real server: against PostgreSQL, with a
//!   role whose password is the token (not checked under trust auth).
//!
//! Not proven here: that Azure Database for PostgreSQL accepts the token (it needs Azure).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use conclave_azure::standin::StandIn;
use conclave_store::Database;
use sqlx::Connection;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::backend::POSTGRES_ADMIN_URL;

const AUDIENCE: &str = "https://ossrdbms-aad.database.windows.net";

/// Accepts connections, asks each for a cleartext password, records it, completes sign-in, and
/// hangs up at the first query, so every later use needs a new connection.
async fn password_recorder() -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let record = record.clone();
            tokio::spawn(async move {
                let Ok(password) = sign_in(&mut sock).await else { return };
                record.lock().unwrap().push(password);
                let mut byte = [0u8; 1];
                let _ = sock.read(&mut byte).await;
            });
        }
    });
    (port, seen)
}

async fn sign_in(sock: &mut tokio::net::TcpStream) -> std::io::Result<String> {
    // Startup, after any SSL or GSS encryption request (declined with 'N').
    loop {
        let len = sock.read_i32().await? as usize;
        let mut body = vec![0u8; len.saturating_sub(4)];
        sock.read_exact(&mut body).await?;
        let code = body.get(..4).map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]])).unwrap_or(0);
        if code == 80_877_103 || code == 80_877_104 {
            sock.write_all(b"N").await?;
            continue;
        }
        break;
    }
    // AuthenticationCleartextPassword.
    sock.write_all(&[b'R', 0, 0, 0, 8, 0, 0, 0, 3]).await?;
    let kind = sock.read_u8().await?;
    assert_eq!(kind, b'p', "a password message");
    let len = sock.read_i32().await? as usize;
    let mut body = vec![0u8; len.saturating_sub(4)];
    sock.read_exact(&mut body).await?;
    let password = String::from_utf8_lossy(body.strip_suffix(&[0]).unwrap_or(&body)).into_owned();
    // AuthenticationOk, BackendKeyData, ReadyForQuery (idle).
    let mut answer = vec![b'R', 0, 0, 0, 8, 0, 0, 0, 0];
    answer.extend_from_slice(&[b'K', 0, 0, 0, 12, 0, 0, 0, 1, 0, 0, 0, 2]);
    answer.extend_from_slice(&[b'Z', 0, 0, 0, 5, b'I']);
    sock.write_all(&answer).await?;
    Ok(password)
}

#[tokio::test]
async fn the_token_is_the_password_and_new_connections_get_the_refreshed_one() {
    let vault = StandIn::start().await.unwrap();
    let (first, second) = (vault.issue_token(AUDIENCE), vault.issue_token(AUDIENCE));
    let (port, seen) = password_recorder().await;
    let url = format!("postgres://conclave-identity@127.0.0.1:{port}/conclave?sslmode=disable");

    let db = Database::connect_postgres_with_password(&url, &first, Duration::from_secs(5)).await.unwrap();
    assert_eq!(*seen.lock().unwrap(), vec![first.clone()]);

    assert!(db.set_postgres_password(&second));
    // The recorder hung up on the idle connection: the next use signs in again.
    let _ = db.clone().into_store().ping().await;
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.first(), Some(&first));
    assert_eq!(seen.last(), Some(&second), "{seen:?}");
    assert!(vault.token_valid_for(&second, AUDIENCE));
}

#[tokio::test]
async fn a_pool_signs_in_as_the_role_whose_password_is_the_token() {
    let vault = StandIn::start().await.unwrap();
    let token = vault.issue_token(AUDIENCE);
    assert!(token.chars().all(|c| c.is_ascii_alphanumeric() || c == '.'), "safe to inline");
    let role = format!("conclave_entra_{}", uuid::Uuid::new_v4().simple());
    let mut admin = sqlx::PgConnection::connect(POSTGRES_ADMIN_URL)
        .await
        .expect("PostgreSQL at 127.0.0.1:5432 (user postgres, trust auth) is needed");
    sqlx::query(&format!("CREATE ROLE {role} LOGIN PASSWORD '{token}'")).execute(&mut admin).await.unwrap();

    let url = format!("postgres://{role}@127.0.0.1:5432/postgres");
    let db = Database::connect_postgres_with_password(&url, &token, Duration::from_secs(5)).await.unwrap();
    db.clone().into_store().ping().await.unwrap();
    // The role exists only for this test, so a pool that pings signed in as it.
    let roles: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE usename = $1")
        .bind(&role)
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert!(roles >= 1, "a session of {role} is open");
    assert!(Database::connect_postgres_with_password("sqlite://x.db", &token, Duration::from_secs(1)).await.is_err());
    db.close().await;
    sqlx::query(&format!("DROP ROLE {role}")).execute(&mut admin).await.ok();
}
