//! Conversations: create, title search, pagination, rename, delete, the automatic title, and that
//! only the owner ever sees one.

use anyhow::Result;
use serde_json::{json, Value};

use crate::app::{ids, is_utc_timestamp, s, Backend, Fetch, TestApp};

fn conv_path(id: &Value) -> String {
    format!("/api/v1/conversations/{}", s(id))
}

async fn titles(app: &TestApp, token: &str, q: &str) -> Result<Vec<String>> {
    let path = format!("/api/v1/conversations?q={q}");
    let mut t: Vec<String> = app.collect(&path, token, 50).await?.iter().map(|c| s(&c["title"])).collect();
    t.sort();
    Ok(t)
}

async fn conversation_crud_and_search(backend: Backend) -> Result<()> {
    let (app, _mock) = TestApp::with_mock(backend).await?;
    let admin = app.admin().await?;
    let agent = app.create_agent(&admin.token, json!({})).await?;

    let conv = app.create_conversation(&admin.token, &agent["id"], Some("Quarterly Report")).await?;
    assert_eq!(conv["agent_id"], agent["id"]);
    assert_eq!(conv["title"], "Quarterly Report");
    assert!(is_utc_timestamp(&conv["created_at"]) && is_utc_timestamp(&conv["updated_at"]), "{conv}");
    let untitled = app.create_conversation(&admin.token, &agent["id"], None).await?;
    assert!(untitled["title"].is_null(), "no title given: {untitled}");
    app.create_conversation(&admin.token, &agent["id"], Some("Holiday plans")).await?;
    app.create_conversation(&admin.token, &agent["id"], Some("the quarterly budget")).await?;

    let read = app.get(&conv_path(&conv["id"])).bearer_auth(&admin.token).fetch().await?.expect(200);
    assert_eq!(read.body, conv);

    // Search is a case-insensitive substring of titles.
    assert_eq!(titles(&app, &admin.token, "QUARTERLY").await?, ["Quarterly Report", "the quarterly budget"]);
    assert_eq!(titles(&app, &admin.token, "holi").await?, ["Holiday plans"]);
    assert!(titles(&app, &admin.token, "zebra").await?.is_empty());
    assert!(titles(&app, &admin.token, "%25").await?.is_empty(), "`%` is not a wildcard");
    assert!(titles(&app, &admin.token, "_").await?.is_empty(), "`_` is not a wildcard");

    let all = app.collect("/api/v1/conversations", &admin.token, 1).await?;
    let mut got = ids(&all);
    assert_eq!(got.len(), 4);
    got.sort();
    got.dedup();
    assert_eq!(got.len(), 4, "each conversation exactly once across pages");
    app.get("/api/v1/conversations?limit=201").bearer_auth(&admin.token).fetch().await?.problem(400);
    app.get("/api/v1/conversations?cursor=nope").bearer_auth(&admin.token).fetch().await?.problem(400);

    let renamed = app
        .patch(&conv_path(&conv["id"]))
        .bearer_auth(&admin.token)
        .json(&json!({"title": "Annual Report"}))
        .fetch()
        .await?
        .expect(200);
    assert_eq!(renamed["title"], "Annual Report");
    assert_eq!(renamed["id"], conv["id"]);
    assert_eq!(titles(&app, &admin.token, "annual").await?, ["Annual Report"]);

    app.delete(&conv_path(&conv["id"])).bearer_auth(&admin.token).fetch().await?.expect(204);
    app.get(&conv_path(&conv["id"])).bearer_auth(&admin.token).fetch().await?.problem(404);
    app.get(&format!("{}/messages", conv_path(&conv["id"]))).bearer_auth(&admin.token).fetch().await?.problem(404);
    app.delete(&conv_path(&conv["id"])).bearer_auth(&admin.token).fetch().await?.problem(404);
    assert_eq!(app.collect("/api/v1/conversations", &admin.token, 50).await?.len(), 3);

    // Bad agent references.
    let nobody = json!(uuid::Uuid::now_v7().to_string());
    app.post("/api/v1/conversations")
        .bearer_auth(&admin.token)
        .json(&json!({"agent_id": nobody}))
        .fetch()
        .await?
        .invalid("agent_id");
    app.post("/api/v1/conversations")
        .bearer_auth(&admin.token)
        .json(&json!({"agent_id": "not-a-uuid"}))
        .fetch()
        .await?
        .problem(422);
    app.get("/api/v1/conversations/not-a-uuid").bearer_auth(&admin.token).fetch().await?.problem(404);
    Ok(())
}

async fn first_message_names_an_untitled_conversation(backend: Backend) -> Result<()> {
    let (app, _mock) = TestApp::with_mock(backend).await?;
    let admin = app.admin().await?;
    let agent = app.create_agent(&admin.token, json!({})).await?;

    let long =
        "Please summarise the attached master services agreement, focusing on termination and liability caps, thanks";
    assert!(long.len() > 80);
    let conv = app.create_conversation(&admin.token, &agent["id"], None).await?;
    app.post_message(&admin.token, &conv["id"], long).await?.expect(201);
    let title = s(&app.get(&conv_path(&conv["id"])).bearer_auth(&admin.token).fetch().await?.expect(200)["title"]);
    // The first 80 characters, with or without an ellipsis to say it was cut.
    let cut = &long[..80];
    let allowed = [cut.to_owned(), format!("{cut}…"), format!("{}…", &long[..79])];
    assert!(allowed.contains(&title), "title should be the first message cut at 80 characters, got {title:?}");

    let short = app.create_conversation(&admin.token, &agent["id"], None).await?;
    app.post_message(&admin.token, &short["id"], "Hello").await?.expect(201);
    app.post_message(&admin.token, &short["id"], "Second message").await?.expect(201);
    let read = app.get(&conv_path(&short["id"])).bearer_auth(&admin.token).fetch().await?.expect(200);
    assert_eq!(read["title"], "Hello", "later messages do not rename");

    let titled = app.create_conversation(&admin.token, &agent["id"], Some("Chosen")).await?;
    app.post_message(&admin.token, &titled["id"], "Not the title").await?.expect(201);
    let read = app.get(&conv_path(&titled["id"])).bearer_auth(&admin.token).fetch().await?.expect(200);
    assert_eq!(read["title"], "Chosen", "a given title stays");
    Ok(())
}

async fn conversations_are_private(backend: Backend) -> Result<()> {
    let (app, _mock) = TestApp::with_mock(backend).await?;
    let admin = app.admin().await?;
    let alice = app.member("alice").await?;
    let bob = app.member("bob").await?;
    let shared = app.create_agent(&alice.token, json!({"visibility": "tenant"})).await?;
    let private = app.create_agent(&alice.token, json!({})).await?;

    let conv = app.create_conversation(&alice.token, &shared["id"], Some("Alice only")).await?;
    app.post_message(&alice.token, &conv["id"], "my secret").await?.expect(201);
    let path = conv_path(&conv["id"]);

    for intruder in [&bob, &admin] {
        let t = &intruder.token;
        app.get(&path).bearer_auth(t).fetch().await?.problem(404);
        app.patch(&path).bearer_auth(t).json(&json!({"title": "pwned"})).fetch().await?.problem(404);
        app.delete(&path).bearer_auth(t).fetch().await?.problem(404);
        app.get(&format!("{path}/messages")).bearer_auth(t).fetch().await?.problem(404);
        app.post(&format!("{path}/messages"))
            .bearer_auth(t)
            .json(&json!({"content": "hi"}))
            .fetch()
            .await?
            .problem(404);
        assert!(app.collect("/api/v1/conversations", t, 50).await?.is_empty(), "not listed for others");
        assert!(titles(&app, t, "alice").await?.is_empty());
    }

    // Alice's conversation is as she left it.
    let read = app.get(&path).bearer_auth(&alice.token).fetch().await?.expect(200);
    assert_eq!(read["title"], "Alice only");
    let msgs = app.messages(&alice.token, &conv["id"]).await?;
    assert_eq!(msgs.len(), 2, "{msgs:?}");

    // Bob may talk to Alice's shared agent, not her private one.
    let mine = app.create_conversation(&bob.token, &shared["id"], None).await?;
    app.post_message(&bob.token, &mine["id"], "hello").await?.expect(201);
    app.post("/api/v1/conversations")
        .bearer_auth(&bob.token)
        .json(&json!({"agent_id": private["id"]}))
        .fetch()
        .await?
        .invalid("agent_id");
    Ok(())
}

backend_tests!(conversation_crud_and_search, first_message_names_an_untitled_conversation, conversations_are_private);
