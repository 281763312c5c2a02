//! The OpenAI-compatible gateway and usage: completions streamed and not, `agent:<id>`,
//! OpenAI-shaped errors, usage recorded per call, reports, and monthly budgets.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use conclave_core::provider::ChatEvent;
use conclave_core::records::Usage;
use futures::StreamExt;
use serde_json::{json, Value};

use crate::harness::Harness;

async fn completion(h: &Harness, token: &str, body: Value) -> (StatusCode, String) {
    let req = Request::post("/v1/chat/completions")
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let response = h.send(req).await;
    let status = response.status();
    let mut body = response.into_body().into_data_stream();
    let mut text = String::new();
    while let Some(chunk) = body.next().await {
        text.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
    }
    (status, text)
}

fn script(h: &Harness, pieces: &[&str], usage: Option<Usage>) {
    let tx = h.gated.next_reply();
    for p in pieces {
        tx.send(Ok(ChatEvent::Delta((*p).into()))).unwrap();
    }
    tx.send(Ok(ChatEvent::Finish { reason: Some("stop".into()) })).unwrap();
    if let Some(u) = usage {
        tx.send(Ok(ChatEvent::Usage(u))).unwrap();
    }
}

fn data_lines(sse: &str) -> Vec<String> {
    sse.lines()
        .filter_map(|l| l.strip_prefix("data: ").or_else(|| l.strip_prefix("data:")))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn completions_streamed_and_not_with_usage() {
    let h = Harness::new().await;
    let (token, _) = h.signup("ada@example.com").await;

    script(&h, &["Hello", ", world"], Some(Usage { prompt_tokens: 7, completion_tokens: 3 }));
    let (status, body) =
        completion(&h, &token, json!({"model": "gated", "messages": [{"role": "user", "content": "hi"}]})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["content"], "Hello, world");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["usage"], json!({"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}));

    script(&h, &["Str", "eamed"], None);
    let (status, body) = completion(
        &h,
        &token,
        json!({"model": "gated", "stream": true, "stream_options": {"include_usage": true},
               "messages": [{"role": "system", "content": "terse"}, {"role": "user", "content": [{"type": "text", "text": "hi"}]}]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let lines = data_lines(&body);
    assert_eq!(lines.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = lines[..lines.len() - 1].iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk"));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(text, "Streamed");
    let usage_chunk = chunks.last().unwrap();
    assert_eq!(usage_chunk["choices"], json!([]));
    assert!(
        usage_chunk["usage"]["completion_tokens"].as_u64().unwrap() > 0,
        "estimated when the provider reports none"
    );
    let finish: Vec<_> = chunks.iter().filter_map(|c| c["choices"][0]["finish_reason"].as_str()).collect();
    assert_eq!(finish, ["stop"]);
    let sent = h.gated.requests.lock().unwrap().last().cloned().unwrap();
    assert_eq!((sent.messages[0].role, sent.messages[1].content.as_str()), ("system", "hi"));

    // Both calls are in the caller's usage.
    let report = h.call(Method::GET, "/api/v1/usage?group_by=model", Some(&token), None).await;
    assert_eq!(report.status, StatusCode::OK, "{}", report.body);
    assert_eq!(report.body["items"][0]["key"], "gated");
    assert_eq!(report.body["items"][0]["requests"], 2);
    assert!(report.body["total"]["total_tokens"].as_i64().unwrap() >= 10);
}

/// Calls that end together are written together (one transaction for whatever has gathered):
/// each still gets its usage row and its `gateway.completion` event, and the chain verifies.
#[tokio::test]
async fn concurrent_calls_each_get_usage_and_an_audit_event_in_one_chain() {
    const CALLS: usize = 12;
    let h = Harness::new().await;
    let (token, _) = h.signup("ada@example.com").await;
    for _ in 0..CALLS {
        script(&h, &["a", "b"], Some(Usage { prompt_tokens: 1, completion_tokens: 2 }));
    }
    let body = json!({"model": "gated", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let calls = (0..CALLS).map(|_| completion(&h, &token, body.clone()));
    for (status, text) in futures::future::join_all(calls).await {
        assert_eq!(status, StatusCode::OK, "{text}");
        assert_eq!(data_lines(&text).last().map(String::as_str), Some("[DONE]"), "{text}");
    }
    // Each call's records are stored before its stream ends.
    let report = h.call(Method::GET, "/api/v1/usage?group_by=model", Some(&token), None).await;
    assert_eq!(report.body["items"][0]["requests"], CALLS, "{}", report.body);
    let events =
        h.call(Method::GET, "/api/v1/audit/events?action=gateway.completion&limit=100", Some(&token), None).await;
    assert_eq!(events.status, StatusCode::OK, "{}", events.body);
    assert_eq!(events.body["items"].as_array().map(Vec::len), Some(CALLS), "{}", events.body);
    let verified = h.call(Method::GET, "/api/v1/audit/verify", Some(&token), None).await;
    assert_eq!(verified.body["ok"], true, "{}", verified.body);
}

#[tokio::test]
async fn agents_apply_their_instructions_and_errors_have_openais_shape() {
    let h = Harness::new().await;
    let (token, _) = h.signup("ada@example.com").await;
    let agent = h
        .call(
            Method::POST,
            "/api/v1/agents",
            Some(&token),
            Some(json!({"name": "G", "model": "gated", "instructions": "Cite sources.", "temperature": 0.3})),
        )
        .await;
    let agent_id = agent.body["id"].as_str().unwrap();
    script(&h, &["ok"], None);
    let (status, _) = completion(
        &h,
        &token,
        json!({"model": format!("agent:{agent_id}"), "messages": [{"role": "user", "content": "q"}]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let sent = h.gated.requests.lock().unwrap().last().cloned().unwrap();
    assert_eq!(sent.messages[0].content, "Cite sources.");
    assert_eq!(sent.temperature, Some(0.3));

    for (body, status, code) in [
        (json!({"model": "nope", "messages": [{"role": "user", "content": "q"}]}), 404, Some("model_not_found")),
        (
            json!({"model": "agent:01890000-0000-7000-8000-000000000000", "messages": [{"role": "user", "content": "q"}]}),
            404,
            Some("model_not_found"),
        ),
        (json!({"model": "gated", "messages": []}), 400, None),
        (json!({"model": "gated", "messages": [{"role": "tool", "content": "q"}]}), 400, None),
        (json!({"model": "gated"}), 400, None),
    ] {
        let (s, text) = completion(&h, &token, body.clone()).await;
        assert_eq!(s.as_u16(), status, "{body}: {text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{text}");
        assert!(v["error"]["type"].is_string());
        if let Some(code) = code {
            assert_eq!(v["error"]["code"], code);
        }
    }
    let (s, text) =
        completion(&h, "ck_garbage", json!({"model": "gated", "messages": [{"role": "user", "content": "q"}]})).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap()["error"]["code"], "invalid_api_key");

    let models = h.call(Method::GET, "/v1/models", Some(&token), None).await;
    assert_eq!(models.body["object"], "list");
    let ids: Vec<_> =
        models.body["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap().to_owned()).collect();
    assert!(ids.contains(&"gated".to_owned()) && ids.contains(&"conclave-demo".to_owned()));
}

#[tokio::test]
async fn monthly_budgets_refuse_new_calls_with_429() {
    let h = Harness::new().await;
    let (admin, _) = h.signup("admin@example.com").await;
    let r = h
        .call(
            Method::PATCH,
            "/api/v1/admin/tenant",
            Some(&admin),
            Some(json!({"settings": {"budgets": {"user_monthly_tokens": 10}}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    script(&h, &["spend"], Some(Usage { prompt_tokens: 8, completion_tokens: 4 }));
    let (status, _) =
        completion(&h, &admin, json!({"model": "gated", "messages": [{"role": "user", "content": "q"}]})).await;
    assert_eq!(status, StatusCode::OK);

    let (status, text) =
        completion(&h, &admin, json!({"model": "gated", "messages": [{"role": "user", "content": "q"}]})).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    let v: Value = serde_json::from_str(&text).unwrap();
    assert!(v["error"]["message"].as_str().unwrap().contains("budget"), "{text}");

    // The same budget applies to conversations, as a problem+json.
    let agent =
        h.call(Method::POST, "/api/v1/agents", Some(&admin), Some(json!({"name": "G", "model": "gated"}))).await;
    let c =
        h.call(Method::POST, "/api/v1/conversations", Some(&admin), Some(json!({"agent_id": agent.body["id"]}))).await;
    let m = h
        .call(
            Method::POST,
            &format!("/api/v1/conversations/{}/messages", c.body["id"].as_str().unwrap()),
            Some(&admin),
            Some(json!({"content": "q"})),
        )
        .await;
    assert_eq!(m.status, StatusCode::TOO_MANY_REQUESTS, "{}", m.body);
    assert!(m.body["detail"].as_str().unwrap().contains("renews"));

    // A member's report shows their own usage; the administrator's, the tenant's.
    let (member, _) = h.signup("member@example.com").await;
    let mine = h.call(Method::GET, "/api/v1/usage", Some(&member), None).await;
    assert_eq!((mine.body["scope"].as_str(), mine.body["total"]["requests"].as_i64()), (Some("user"), Some(0)));
    let all = h.call(Method::GET, "/api/v1/usage?group_by=user", Some(&admin), None).await;
    assert_eq!((all.body["scope"].as_str(), all.body["total"]["requests"].as_i64()), (Some("tenant"), Some(1)));
    let bad = h.call(Method::GET, "/api/v1/usage?group_by=week", Some(&admin), None).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let bad = h
        .call(Method::GET, "/api/v1/usage?from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z", Some(&admin), None)
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
}
