//! Messages: what a reply looks like, what the provider is sent (instructions, history, agent
//! parameters, the key), usage, listing, content limits, and a conversation whose agent is gone.

use anyhow::Result;
use conclave_mock_provider::{Script, Usage};
use serde_json::{json, Value};

use crate::app::{ids, is_utc_timestamp, s, Backend, Fetch, TestApp, PROVIDER_KEY};

#[track_caller]
fn assert_message(m: &Value, conversation_id: &Value, role: &str) {
    assert!(m["id"].is_string(), "{m}");
    assert_eq!(m["conversation_id"], *conversation_id, "{m}");
    assert_eq!(m["role"], role, "{m}");
    assert!(m["content"].is_string(), "{m}");
    assert!(m["status"].is_string(), "{m}");
    assert!(is_utc_timestamp(&m["created_at"]), "{m}");
}

async fn a_reply_is_stored_and_listed(backend: Backend) -> Result<()> {
    let (app, mock) = TestApp::with_mock(backend).await?;
    let admin = app.admin().await?;
    let agent = app.create_agent(&admin.token, json!({"model": "mock-large"})).await?;
    let conv = app.create_conversation(&admin.token, &agent["id"], None).await?;

    mock.set_script(
        Script::echo().with_api_key(PROVIDER_KEY).with_usage(Usage::Report { prompt_tokens: 11, completion_tokens: 7 }),
    );
    let resp = app.post_message(&admin.token, &conv["id"], "Hello there").await?.expect(201);
    let user = &resp["user_message"];
    let reply = &resp["assistant_message"];
    assert_message(user, &conv["id"], "user");
    assert_message(reply, &conv["id"], "assistant");
    assert_eq!(user["content"], "Hello there");
    assert_eq!(reply["content"], "echo: Hello there");
    assert_eq!(reply["status"], "complete");
    assert_eq!(reply["finish_reason"], "stop");
    assert_eq!(reply["model"], "mock-large");
    assert_eq!(reply["usage"], json!({"prompt_tokens": 11, "completion_tokens": 7}));
    assert_ne!(user["id"], reply["id"]);

    // Without usage from the provider, it is estimated.
    mock.set_script(
        Script::text("A longer answer of several words.").with_api_key(PROVIDER_KEY).with_usage(Usage::Omit),
    );
    let resp = app.post_message(&admin.token, &conv["id"], "And now?").await?.expect(201);
    let reply2 = &resp["assistant_message"];
    assert_eq!(reply2["content"], "A longer answer of several words.");
    let usage = &reply2["usage"];
    assert!(
        usage["prompt_tokens"].as_u64().is_some_and(|n| n > 0)
            && usage["completion_tokens"].as_u64().is_some_and(|n| n > 0),
        "usage is estimated when the provider omits it: {reply2}"
    );

    // A multi-chunk reply arrives whole.
    mock.set_script(Script::text("one two three four five six").with_api_key(PROVIDER_KEY).with_chunks(6));
    let resp = app.post_message(&admin.token, &conv["id"], "Count").await?.expect(201);
    assert_eq!(resp["assistant_message"]["content"], "one two three four five six");

    // Listed oldest first, with the same ids and contents, page by page too.
    let all = app.messages(&admin.token, &conv["id"]).await?;
    let contents: Vec<String> = all.iter().map(|m| s(&m["content"])).collect();
    assert_eq!(
        contents,
        [
            "Hello there",
            "echo: Hello there",
            "And now?",
            "A longer answer of several words.",
            "Count",
            "one two three four five six"
        ]
    );
    let roles: Vec<String> = all.iter().map(|m| s(&m["role"])).collect();
    assert_eq!(roles, ["user", "assistant", "user", "assistant", "user", "assistant"]);
    assert_eq!(all[0]["id"], user["id"]);
    assert_eq!(all[1], *reply, "the listed reply is what the post answered");
    let paged = app.collect(&format!("/api/v1/conversations/{}/messages", s(&conv["id"])), &admin.token, 1).await?;
    assert_eq!(ids(&paged), ids(&all));
    Ok(())
}

async fn the_provider_gets_instructions_history_and_parameters(backend: Backend) -> Result<()> {
    let (app, mock) = TestApp::with_mock(backend).await?;
    let admin = app.admin().await?;
    let agent = app
        .create_agent(
            &admin.token,
            json!({"instructions": "You are terse.", "model": "mock-large", "temperature": 0.3, "top_p": 0.9, "max_tokens": 256}),
        )
        .await?;
    let conv = app.create_conversation(&admin.token, &agent["id"], None).await?;
    app.post_message(&admin.token, &conv["id"], "First question").await?.expect(201);
    app.post_message(&admin.token, &conv["id"], "Second question").await?.expect(201);

    let requests = mock.requests();
    assert_eq!(requests.len(), 2, "one provider call per message: {requests:?}");
    let last = &requests[1];
    assert_eq!(last["model"], "mock-large");
    let roles_and_text: Vec<(String, String)> = last["messages"]
        .as_array()
        .expect("messages array")
        .iter()
        .map(|m| (s(&m["role"]), s(&m["content"])))
        .collect();
    let pair = |r: &str, c: &str| (r.to_owned(), c.to_owned());
    assert_eq!(
        roles_and_text,
        [
            pair("system", "You are terse."),
            pair("user", "First question"),
            pair("assistant", "echo: First question"),
            pair("user", "Second question"),
        ]
    );
    assert_eq!(last["temperature"].as_f64(), Some(0.3));
    assert_eq!(last["top_p"].as_f64(), Some(0.9));
    let max = last.get("max_tokens").or_else(|| last.get("max_completion_tokens"));
    assert_eq!(max, Some(&json!(256)), "{last}");

    for headers in mock.request_headers() {
        let auth = headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("authorization")).map(|(_, v)| v.clone());
        assert_eq!(auth.as_deref(), Some("Bearer test-key"), "the provider key is sent");
    }

    // An agent without parameters sends none.
    let plain = app.create_agent(&admin.token, json!({"instructions": "Plain."})).await?;
    let conv2 = app.create_conversation(&admin.token, &plain["id"], None).await?;
    app.post_message(&admin.token, &conv2["id"], "Hi").await?.expect(201);
    let req = mock.requests().pop().expect("a third request");
    assert_eq!(req["model"], "mock-model");
    for key in ["temperature", "top_p"] {
        assert!(req.get(key).is_none_or(Value::is_null), "{key} not set on the agent, yet sent: {req}");
    }
    assert_eq!(req["messages"].as_array().map(Vec::len), Some(2), "system + user only: {req}");
    Ok(())
}

async fn message_content_is_validated(backend: Backend) -> Result<()> {
    let (app, mock) = TestApp::with_mock(backend).await?;
    let admin = app.admin().await?;
    let agent = app.create_agent(&admin.token, json!({})).await?;
    let conv = app.create_conversation(&admin.token, &agent["id"], None).await?;
    let path = format!("/api/v1/conversations/{}/messages", s(&conv["id"]));

    app.post(&path).bearer_auth(&admin.token).json(&json!({"content": ""})).fetch().await?.invalid("content");
    let over = "x".repeat(65_537);
    app.post(&path).bearer_auth(&admin.token).json(&json!({"content": over})).fetch().await?.invalid("content");
    // 65,536 bytes of multi-byte text is fewer characters but still the limit in bytes.
    let over_bytes = "é".repeat(32_769);
    app.post(&path).bearer_auth(&admin.token).json(&json!({"content": over_bytes})).fetch().await?.invalid("content");
    app.post(&path).bearer_auth(&admin.token).json(&json!({})).fetch().await?.problem(422);
    assert_eq!(mock.request_count(), 0, "refused messages never reach the provider");
    assert!(app.messages(&admin.token, &conv["id"]).await?.is_empty(), "and are not stored");

    let exact = "y".repeat(65_536);
    let resp = app.post_message(&admin.token, &conv["id"], &exact).await?.expect(201);
    assert_eq!(resp["user_message"]["content"].as_str().map(str::len), Some(65_536));
    Ok(())
}

async fn a_conversation_whose_agent_was_deleted_conflicts(backend: Backend) -> Result<()> {
    let (app, mock) = TestApp::with_mock(backend).await?;
    let admin = app.admin().await?;
    let agent = app.create_agent(&admin.token, json!({})).await?;
    let conv = app.create_conversation(&admin.token, &agent["id"], None).await?;
    app.post_message(&admin.token, &conv["id"], "before").await?.expect(201);

    app.delete(&format!("/api/v1/agents/{}", s(&agent["id"]))).bearer_auth(&admin.token).fetch().await?.expect(204);
    app.post_message(&admin.token, &conv["id"], "after").await?.problem(409);
    assert_eq!(mock.request_count(), 1, "the provider was not called for the refused message");

    // The history is still readable.
    let msgs = app.messages(&admin.token, &conv["id"]).await?;
    let contents: Vec<String> = msgs.iter().map(|m| s(&m["content"])).collect();
    assert_eq!(contents[..2], ["before", "echo: before"]);
    Ok(())
}

backend_tests!(
    a_reply_is_stored_and_listed,
    the_provider_gets_instructions_history_and_parameters,
    message_content_is_validated,
    a_conversation_whose_agent_was_deleted_conflicts,
);
