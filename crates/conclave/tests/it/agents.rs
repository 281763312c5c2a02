//! Agents: create, read, update, delete; validation of every field; cursor pagination; and who may
//! see or change an agent (owner, tenant-visible, admin).

use anyhow::Result;
use serde_json::{json, Value};

use crate::app::{ids, is_utc_timestamp, s, Backend, Fetch, TestApp};

fn agent_path(id: &Value) -> String {
    format!("/api/v1/agents/{}", s(id))
}

async fn agent_crud(backend: Backend) -> Result<()> {
    let (app, _mock) = TestApp::with_mock(backend).await?;
    let admin = app.admin().await?;

    let minimal = app.create_agent(&admin.token, json!({})).await?;
    assert_eq!(minimal["visibility"], "private", "private by default: {minimal}");
    assert_eq!(minimal["library_ids"], json!([]), "{minimal}");
    assert!(
        minimal["temperature"].is_null() && minimal["top_p"].is_null() && minimal["max_tokens"].is_null(),
        "{minimal}"
    );

    let agent = app
        .create_agent(
            &admin.token,
            json!({
                "name": "Contract reviewer",
                "description": "Reads NDAs",
                "instructions": "You review contracts. Be precise.",
                "model": "mock-large",
                "temperature": 0.2,
                "top_p": 0.95,
                "max_tokens": 2048,
                "visibility": "tenant",
            }),
        )
        .await?;
    assert_eq!(agent["owner_id"], admin.user["id"]);
    assert_eq!(agent["name"], "Contract reviewer");
    assert_eq!(agent["description"], "Reads NDAs");
    assert_eq!(agent["instructions"], "You review contracts. Be precise.");
    assert_eq!(agent["model"], "mock-large");
    assert_eq!(agent["temperature"].as_f64(), Some(0.2));
    assert_eq!(agent["top_p"].as_f64(), Some(0.95));
    assert_eq!(agent["max_tokens"], 2048);
    assert_eq!(agent["visibility"], "tenant");
    assert_eq!(agent["library_ids"], json!([]));
    assert!(is_utc_timestamp(&agent["created_at"]) && is_utc_timestamp(&agent["updated_at"]), "{agent}");

    let path = agent_path(&agent["id"]);
    let read = app.get(&path).bearer_auth(&admin.token).fetch().await?.expect(200);
    assert_eq!(read.body, agent, "GET answers what POST answered");

    let patched = app
        .patch(&path)
        .bearer_auth(&admin.token)
        .json(&json!({"name": "NDA reviewer", "temperature": 1.5}))
        .fetch()
        .await?
        .expect(200);
    assert_eq!(patched["name"], "NDA reviewer");
    assert_eq!(patched["temperature"].as_f64(), Some(1.5));
    assert_eq!(patched["instructions"], agent["instructions"], "untouched fields stay");
    assert_eq!(patched["model"], "mock-large");
    assert_eq!(patched["created_at"], agent["created_at"]);
    assert!(s(&patched["updated_at"]) >= s(&agent["updated_at"]), "{}", patched.text);
    let read = app.get(&path).bearer_auth(&admin.token).fetch().await?.expect(200);
    assert_eq!(read["name"], "NDA reviewer");

    let list = app.collect("/api/v1/agents", &admin.token, 50).await?;
    let mut listed = ids(&list);
    listed.sort();
    let mut want = vec![s(&minimal["id"]), s(&agent["id"])];
    want.sort();
    assert_eq!(listed, want);

    app.delete(&path).bearer_auth(&admin.token).fetch().await?.expect(204);
    app.get(&path).bearer_auth(&admin.token).fetch().await?.problem(404);
    app.patch(&path).bearer_auth(&admin.token).json(&json!({"name": "x"})).fetch().await?.problem(404);
    app.delete(&path).bearer_auth(&admin.token).fetch().await?.problem(404);
    app.get("/api/v1/agents/not-a-uuid").bearer_auth(&admin.token).fetch().await?.problem(404);
    app.get(&agent_path(&json!(uuid::Uuid::now_v7().to_string())))
        .bearer_auth(&admin.token)
        .fetch()
        .await?
        .problem(404);
    let list = app.collect("/api/v1/agents", &admin.token, 50).await?;
    assert_eq!(ids(&list), [s(&minimal["id"])]);
    Ok(())
}

async fn agent_fields_are_validated(backend: Backend) -> Result<()> {
    let (app, _mock) = TestApp::with_mock(backend).await?;
    let admin = app.admin().await?;
    let base = json!({"name": "Valid", "instructions": "Be good.", "model": "mock-model"});
    let with = |extra: Value| {
        let mut body = base.clone();
        crate::app::merge(&mut body, extra);
        body
    };

    let too_long_instructions = "i".repeat(32 * 1024 + 1);
    let cases = [
        (json!({"name": ""}), "name"),
        (json!({"name": "n".repeat(101)}), "name"),
        (json!({"instructions": too_long_instructions}), "instructions"),
        (json!({"temperature": 2.01}), "temperature"),
        (json!({"temperature": -0.1}), "temperature"),
        (json!({"top_p": 1.5}), "top_p"),
        (json!({"top_p": -0.01}), "top_p"),
        (json!({"max_tokens": 0}), "max_tokens"),
        (json!({"max_tokens": 1_000_001}), "max_tokens"),
        (json!({"model": "gpt-nonexistent"}), "model"),
        (json!({"library_ids": [uuid::Uuid::now_v7().to_string()]}), "library_ids"),
        (json!({"visibility": "public"}), "visibility"),
    ];
    let mut misses = Vec::new();
    for (extra, field) in &cases {
        let resp = app.post("/api/v1/agents").bearer_auth(&admin.token).json(&with(extra.clone())).fetch().await?;
        misses.extend(resp.invalid_miss(field));
    }
    let missing_model = json!({"name": "No model", "instructions": "x"});
    app.post("/api/v1/agents").bearer_auth(&admin.token).json(&missing_model).fetch().await?.problem(422);
    assert!(app.collect("/api/v1/agents", &admin.token, 50).await?.is_empty(), "nothing was created");

    // The limits themselves are allowed.
    let edge = app
        .create_agent(
            &admin.token,
            json!({"name": "n".repeat(100), "instructions": "i".repeat(32 * 1024),
                   "temperature": 2.0, "top_p": 0.0, "max_tokens": 1_000_000}),
        )
        .await?;
    app.create_agent(&admin.token, json!({"temperature": 0.0, "top_p": 1.0, "max_tokens": 1})).await?;

    // PATCH validates the same way and changes nothing when it refuses.
    let path = agent_path(&edge["id"]);
    for (extra, field) in &cases {
        let resp = app.patch(&path).bearer_auth(&admin.token).json(extra).fetch().await?;
        misses.extend(resp.invalid_miss(field));
    }
    let read = app.get(&path).bearer_auth(&admin.token).fetch().await?.expect(200);
    assert_eq!(read.body, edge);
    assert!(misses.is_empty(), "validation misses:\n{}", misses.join("\n"));
    Ok(())
}

async fn agent_list_is_paginated(backend: Backend) -> Result<()> {
    let (app, _mock) = TestApp::with_mock(backend).await?;
    let admin = app.admin().await?;
    let mut made = Vec::new();
    for i in 0..5 {
        made.push(s(&app.create_agent(&admin.token, json!({"name": format!("Agent {i}")})).await?["id"]));
    }
    for limit in [1, 2, 5, 200] {
        let all = app.collect("/api/v1/agents", &admin.token, limit).await?;
        let mut got = ids(&all);
        assert_eq!(got.len(), 5, "limit {limit}: {got:?}");
        got.sort();
        got.dedup();
        let mut want = made.clone();
        want.sort();
        assert_eq!(got, want, "limit {limit}: every agent exactly once");
    }
    let first = app.get("/api/v1/agents?limit=2").bearer_auth(&admin.token).fetch().await?.expect(200);
    assert!(first["next_cursor"].is_string(), "more pages follow: {}", first.text);
    let default = app.get("/api/v1/agents").bearer_auth(&admin.token).fetch().await?.expect(200);
    assert_eq!(default.items().len(), 5);
    assert!(default["next_cursor"].is_null());

    for bad in ["limit=0", "limit=201", "limit=-1", "limit=ten", "cursor=garbage", "cursor=%00%01"] {
        app.get(&format!("/api/v1/agents?{bad}")).bearer_auth(&admin.token).fetch().await?.problem(400);
    }
    Ok(())
}

async fn agent_visibility_and_ownership(backend: Backend) -> Result<()> {
    let (app, _mock) = TestApp::with_mock(backend).await?;
    let admin = app.admin().await?;
    let alice = app.member("alice").await?;
    let bob = app.member("bob").await?;

    let private = app.create_agent(&alice.token, json!({"name": "Alice private"})).await?;
    let shared = app.create_agent(&alice.token, json!({"name": "Alice shared", "visibility": "tenant"})).await?;
    let own = app.create_agent(&bob.token, json!({"name": "Bob's"})).await?;

    let listed = ids(&app.collect("/api/v1/agents", &bob.token, 50).await?);
    assert!(listed.contains(&s(&shared["id"])), "tenant-visible agents are listed for everyone");
    assert!(listed.contains(&s(&own["id"])));
    assert!(!listed.contains(&s(&private["id"])), "another member's private agent is not listed");

    // Private: as if it did not exist.
    let p = agent_path(&private["id"]);
    app.get(&p).bearer_auth(&bob.token).fetch().await?.problem(404);
    app.patch(&p).bearer_auth(&bob.token).json(&json!({"name": "mine now"})).fetch().await?.problem(404);
    app.delete(&p).bearer_auth(&bob.token).fetch().await?.problem(404);

    // Visible but not Bob's to change.
    let sh = agent_path(&shared["id"]);
    assert_eq!(app.get(&sh).bearer_auth(&bob.token).fetch().await?.expect(200)["name"], "Alice shared");
    app.patch(&sh).bearer_auth(&bob.token).json(&json!({"name": "mine now"})).fetch().await?.problem(403);
    app.delete(&sh).bearer_auth(&bob.token).fetch().await?.problem(403);

    // Nothing changed for Alice.
    assert_eq!(app.get(&p).bearer_auth(&alice.token).fetch().await?.expect(200)["name"], "Alice private");
    assert_eq!(app.get(&sh).bearer_auth(&alice.token).fetch().await?.expect(200)["name"], "Alice shared");

    // The admin may change and delete any agent visible to them.
    let renamed =
        app.patch(&sh).bearer_auth(&admin.token).json(&json!({"name": "Moderated"})).fetch().await?.expect(200);
    assert_eq!(renamed["name"], "Moderated");
    assert_eq!(renamed["owner_id"], alice.user["id"], "the owner stays");
    app.delete(&sh).bearer_auth(&admin.token).fetch().await?.expect(204);
    app.get(&sh).bearer_auth(&alice.token).fetch().await?.problem(404);

    // Making an agent private again hides it.
    let sh2 = app.create_agent(&alice.token, json!({"name": "Briefly shared", "visibility": "tenant"})).await?;
    app.get(&agent_path(&sh2["id"])).bearer_auth(&bob.token).fetch().await?.expect(200);
    app.patch(&agent_path(&sh2["id"]))
        .bearer_auth(&alice.token)
        .json(&json!({"visibility": "private"}))
        .fetch()
        .await?
        .expect(200);
    app.get(&agent_path(&sh2["id"])).bearer_auth(&bob.token).fetch().await?.problem(404);
    Ok(())
}

backend_tests!(agent_crud, agent_fields_are_validated, agent_list_is_paginated, agent_visibility_and_ownership);
