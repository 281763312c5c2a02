//! `GET /api/v1/me/export`: everything the caller created, and nothing secret or someone else's.

use anyhow::Result;
use serde_json::{json, Value};

use crate::app::{is_utc_timestamp, s, Backend, Fetch, TestApp};

fn find<'a>(list: &'a Value, id: &Value) -> Option<&'a Value> {
    list.as_array()?.iter().find(|x| x["id"] == *id)
}

async fn export_holds_the_callers_data_only(backend: Backend) -> Result<()> {
    let (app, _mock) = TestApp::with_mock(backend).await?;
    let admin = app.admin().await?;
    let bob = app.member("bob").await?;

    let agent =
        app.create_agent(&admin.token, json!({"name": "Exported agent", "instructions": "Be exportable."})).await?;
    let conv = app.create_conversation(&admin.token, &agent["id"], Some("Exported conversation")).await?;
    app.post_message(&admin.token, &conv["id"], "exported question").await?.expect(201);
    let key = app
        .post("/api/v1/api-keys")
        .bearer_auth(&admin.token)
        .json(&json!({"name": "exported key"}))
        .fetch()
        .await?
        .expect(201);
    let secret = s(&key["key"]);

    let bobs_agent = app.create_agent(&bob.token, json!({"name": "Bob-only agent", "visibility": "tenant"})).await?;
    let bobs_conv = app.create_conversation(&bob.token, &bobs_agent["id"], Some("Bob-only conversation")).await?;
    app.post_message(&bob.token, &bobs_conv["id"], "bob-only question").await?.expect(201);

    let export = app.get("/api/v1/me/export").bearer_auth(&admin.token).fetch().await?.expect(200);
    assert!(export.header("content-type").unwrap_or_default().starts_with("application/json"));
    let body = &export.body;
    assert!(is_utc_timestamp(&body["exported_at"]), "exported_at: {}", export.text);
    assert_eq!(body["user"]["id"], admin.user["id"]);
    assert_eq!(body["user"]["email"], admin.user["email"]);

    let a = find(&body["agents"], &agent["id"]).expect("the agent is exported");
    assert_eq!(a["instructions"], "Be exportable.");
    let c = find(&body["conversations"], &conv["id"]).expect("the conversation is exported");
    assert_eq!(c["title"], "Exported conversation");
    let contents: Vec<String> = c["messages"].as_array().expect("messages").iter().map(|m| s(&m["content"])).collect();
    assert_eq!(contents, ["exported question", "echo: exported question"]);
    let k = find(&body["api_keys"], &key["id"]).expect("the api key is exported");
    assert_eq!(k["name"], "exported key");

    // No secrets: not the key, not a password or its hash.
    assert!(!export.text.contains(&secret), "the API key secret leaked into the export");
    assert!(!export.text.contains("argon2"), "a password hash leaked into the export");
    assert!(!export.text.contains(&admin.password), "the password leaked into the export");
    assert!(!export.text.contains(&admin.token) && !export.text.contains(&admin.cookie), "a token leaked");

    // Nothing of Bob's, not even his tenant-visible agent.
    for theirs in ["Bob-only agent", "Bob-only conversation", "bob-only question"] {
        assert!(!export.text.contains(theirs), "{theirs:?} belongs to someone else");
    }
    // And Bob's export is his.
    let bobs = app.get("/api/v1/me/export").bearer_auth(&bob.token).fetch().await?.expect(200);
    assert!(find(&bobs["conversations"], &bobs_conv["id"]).is_some());
    assert!(find(&bobs["conversations"], &conv["id"]).is_none());
    app.get("/api/v1/me/export").fetch().await?.problem(401);
    Ok(())
}

backend_tests!(export_holds_the_callers_data_only);
