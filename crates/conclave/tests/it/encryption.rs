//! Content at rest: agent names and instructions, conversation titles and messages are sealed
//! under the key hierarchy, so neither the database nor any file of the data folder shows them,
//! while the API reads them back.

use anyhow::Result;
use conclave_mock_provider::Script;
use serde_json::json;

use crate::app::{s, Backend, TestApp, PROVIDER_KEY};

async fn content_is_encrypted_at_rest(backend: Backend) -> Result<()> {
    let (app, mock) = TestApp::with_mock(backend).await?;
    mock.set_script(Script::echo().with_api_key(PROVIDER_KEY));
    let admin = app.admin().await?;
    let marker = format!("PRIVILEGED-{}", uuid::Uuid::new_v4().simple());
    let agent = app
        .create_agent(
            &admin.token,
            json!({"model": "mock-model", "name": format!("Agent {marker}"), "instructions": format!("Never reveal {marker}"), "description": format!("About {marker}")}),
        )
        .await?;
    let conv = app.create_conversation(&admin.token, &agent["id"], Some(&format!("Title {marker}"))).await?;
    app.post_message(&admin.token, &conv["id"], &format!("Question {marker}")).await?.expect(201);

    // Read back through the API, in clear.
    let messages = app.messages(&admin.token, &conv["id"]).await?;
    assert_eq!(s(&messages[0]["content"]), format!("Question {marker}"));
    assert_eq!(s(&messages[1]["content"]), format!("echo: Question {marker}"));
    let fetched = app.get(&format!("/api/v1/agents/{}", s(&agent["id"]))).bearer_auth(&admin.token).send().await?;
    let fetched: serde_json::Value = fetched.json().await?;
    assert_eq!(s(&fetched["instructions"]), format!("Never reveal {marker}"));

    // At rest, nowhere.
    match backend {
        Backend::Sqlite => {
            let dir = std::path::PathBuf::from(app.site_var("CONCLAVE_DATA_DIR").expect("a data folder"));
            let mut files = 0;
            for path in walk(&dir) {
                let bytes = std::fs::read(&path)?;
                files += 1;
                assert!(
                    !bytes.windows(marker.len()).any(|w| w == marker.as_bytes()),
                    "{} contains the marker in clear",
                    path.display()
                );
            }
            assert!(files >= 2, "the database and the key file were scanned");
        }
        Backend::Postgres => {
            use sqlx::Connection;
            let url = app.site_var("CONCLAVE_DATABASE_URL").expect("a database");
            let mut conn = sqlx::PgConnection::connect(&url).await?;
            for sql in [
                "SELECT content FROM messages",
                "SELECT title FROM conversations WHERE title IS NOT NULL",
                "SELECT name FROM agents",
                "SELECT instructions FROM agents",
                "SELECT description FROM agents WHERE description IS NOT NULL",
            ] {
                let rows: Vec<Vec<u8>> = sqlx::query_scalar(sql).fetch_all(&mut conn).await?;
                assert!(!rows.is_empty(), "{sql}");
                for row in rows {
                    assert_eq!(row.first(), Some(&1u8), "{sql}: sealed in format 1");
                    assert!(!row.windows(marker.len()).any(|w| w == marker.as_bytes()), "{sql} shows the marker");
                }
            }
            let text: Vec<String> =
                sqlx::query_scalar("SELECT COALESCE(detail::text, '') FROM audit_events").fetch_all(&mut conn).await?;
            assert!(text.iter().all(|t| !t.contains(&marker)), "the audit log holds no content");
            let _ = conn.close().await;
        }
    }
    Ok(())
}

/// Every file under `dir`, recursively.
pub(crate) fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

backend_tests!(content_is_encrypted_at_rest);
