//! Streamed replies over SSE against a provider the test drives event by event: the full
//! sequence, resume with `Last-Event-ID`, several watchers, cancel, disconnect without cancel,
//! provider failures before and during the reply, replay, limits, regenerate.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use conclave_core::provider::{ChatEvent, ProviderError};
use conclave_core::records::Usage;
use futures::StreamExt;
use serde_json::{json, Value};

use crate::harness::Harness;

#[derive(Debug)]
struct SseEvent {
    event: String,
    id: String,
    data: Value,
}

struct SseReader {
    body: axum::body::BodyDataStream,
    buf: String,
}

impl SseReader {
    fn new(response: axum::response::Response) -> SseReader {
        assert_eq!(response.status(), StatusCode::OK);
        let ct = response.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(ct.starts_with("text/event-stream"), "{ct}");
        SseReader { body: response.into_body().into_data_stream(), buf: String::new() }
    }

    /// The next event (comments skipped); `None` when the stream ends.
    async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(pos) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..pos + 2).collect();
                let mut e = SseEvent { event: String::new(), id: String::new(), data: Value::Null };
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        e.event = v.trim().into();
                    } else if let Some(v) = line.strip_prefix("id:") {
                        e.id = v.trim().into();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if e.event.is_empty() {
                    continue;
                }
                e.data = serde_json::from_str(&data).unwrap_or(Value::Null);
                return Some(e);
            }
            let chunk =
                tokio::time::timeout(Duration::from_secs(10), self.body.next()).await.expect("an event within 10 s")?;
            self.buf.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
        }
    }

    /// Events up to and including `done` or `error`.
    async fn until_end(&mut self) -> Vec<SseEvent> {
        let mut out = Vec::new();
        while let Some(e) = self.next().await {
            let end = e.event == "done" || e.event == "error";
            out.push(e);
            if end {
                break;
            }
        }
        out
    }
}

struct Chat {
    h: Harness,
    token: String,
    conversation: String,
}

async fn chat() -> Chat {
    chat_with(|_| {}).await
}

async fn chat_with(adjust: impl FnOnce(&mut conclave_core::CoreConfig)) -> Chat {
    let h = Harness::with(adjust).await;
    let (token, _) = h.signup("ada@example.com").await;
    let agent = h
        .call(
            Method::POST,
            "/api/v1/agents",
            Some(&token),
            Some(json!({"name": "G", "model": "gated", "instructions": "Be brief."})),
        )
        .await;
    assert_eq!(agent.status, StatusCode::CREATED, "{}", agent.body);
    let c =
        h.call(Method::POST, "/api/v1/conversations", Some(&token), Some(json!({"agent_id": agent.body["id"]}))).await;
    Chat { conversation: c.body["id"].as_str().unwrap().to_owned(), token, h }
}

impl Chat {
    async fn post_stream(&self, content: &str) -> axum::response::Response {
        let req = Request::post(format!("/api/v1/conversations/{}/messages", self.conversation))
            .header("authorization", format!("Bearer {}", self.token))
            .header("content-type", "application/json")
            .body(Body::from(json!({"content": content, "stream": true}).to_string()))
            .unwrap();
        self.h.send(req).await
    }

    async fn events(&self, reply: &str, last_event_id: Option<&str>) -> SseReader {
        let mut req = Request::get(format!("/api/v1/conversations/{}/messages/{reply}/events", self.conversation))
            .header("authorization", format!("Bearer {}", self.token));
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id);
        }
        SseReader::new(self.h.send(req.body(Body::empty()).unwrap()).await)
    }

    async fn messages(&self) -> Vec<Value> {
        let r = self
            .h
            .call(
                Method::GET,
                &format!("/api/v1/conversations/{}/messages", self.conversation),
                Some(&self.token),
                None,
            )
            .await;
        r.body["items"].as_array().unwrap().clone()
    }

    /// Waits until the stored reply is no longer streaming.
    async fn settled_reply(&self, reply: &str) -> Value {
        for _ in 0..100 {
            let found = self.messages().await.into_iter().find(|m| m["id"] == reply).unwrap();
            if found["status"] != "streaming" {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("reply {reply} still streaming after 5 s");
    }
}

fn delta(text: &str) -> Result<ChatEvent, ProviderError> {
    Ok(ChatEvent::Delta(text.into()))
}

fn finish() -> Result<ChatEvent, ProviderError> {
    Ok(ChatEvent::Finish { reason: Some("stop".into()) })
}

#[tokio::test]
async fn streams_message_deltas_and_one_done_and_stores_the_text() {
    let c = chat().await;
    let tx = c.h.gated.next_reply();
    for piece in ["Priv", "ilege ", "protects ", "advice ✓"] {
        tx.send(delta(piece)).unwrap();
    }
    tx.send(finish()).unwrap();
    tx.send(Ok(ChatEvent::Usage(Usage { prompt_tokens: 11, completion_tokens: 4 }))).unwrap();
    drop(tx);

    let events = SseReader::new(c.post_stream("What does privilege protect?").await).until_end().await;
    assert_eq!(events[0].event, "message");
    assert_eq!(events[0].data["role"], "user");
    assert_eq!(events[0].data["content"], "What does privilege protect?");
    let reply_id = events[0].data["reply_id"].as_str().unwrap().to_owned();
    let deltas: String =
        events.iter().filter(|e| e.event == "delta").map(|e| e.data["text"].as_str().unwrap()).collect();
    assert_eq!(deltas, "Privilege protects advice ✓");
    assert!(events.iter().filter(|e| e.event == "delta").all(|e| e.data["message_id"] == reply_id.as_str()));
    let ids: Vec<u64> = events.iter().map(|e| e.id.parse().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase: {ids:?}");
    let done = events.last().unwrap();
    assert_eq!(done.event, "done");
    assert_eq!(events.iter().filter(|e| e.event == "done" || e.event == "error").count(), 1);
    assert_eq!(done.data["status"], "complete");
    assert_eq!(done.data["content"], deltas);
    assert_eq!(done.data["usage"], json!({"prompt_tokens": 11, "completion_tokens": 4}));
    assert_eq!(done.data["finish_reason"], "stop");

    let stored = c.messages().await;
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[1]["content"], deltas, "stored content equals the concatenated deltas");
    let sent = c.h.gated.requests.lock().unwrap().last().cloned().unwrap();
    assert_eq!(sent.messages[0].role, "system");
    assert_eq!(sent.messages.last().unwrap().content, "What does privilege protect?");

    // Replaying the finished reply: message, the whole text, done.
    let replay = c.events(&reply_id, None).await.until_end().await;
    assert_eq!(replay.iter().map(|e| e.event.as_str()).collect::<Vec<_>>(), ["message", "delta", "done"]);
    assert_eq!(replay[1].data["text"], deltas);
    assert_eq!(replay[2].id, done.id, "the same event ids on replay");
}

#[tokio::test]
async fn a_dropped_connection_resumes_with_last_event_id_and_tabs_watch_together() {
    let c = chat().await;
    let tx = c.h.gated.next_reply();
    tx.send(delta("Hel")).unwrap();
    let mut first = SseReader::new(c.post_stream("hi").await);
    let opening = first.next().await.unwrap();
    let reply_id = opening.data["reply_id"].as_str().unwrap().to_owned();
    let d = first.next().await.unwrap();
    assert_eq!((d.event.as_str(), d.data["text"].as_str()), ("delta", Some("Hel")));
    let last_seen = d.id.clone();
    drop(first); // the network drops

    let mut other_tab = c.events(&reply_id, None).await;
    assert_eq!(other_tab.next().await.unwrap().event, "message");
    assert_eq!(other_tab.next().await.unwrap().data["text"], "Hel", "a new watcher catches up at once");

    tx.send(delta("lo, ")).unwrap();
    tx.send(delta("world")).unwrap();
    tx.send(finish()).unwrap();
    drop(tx);

    let resumed = c.events(&reply_id, Some(&last_seen)).await.until_end().await;
    assert_ne!(resumed[0].event, "message", "resuming does not repeat the opening event");
    let rest: String =
        resumed.iter().filter(|e| e.event == "delta").map(|e| e.data["text"].as_str().unwrap()).collect();
    assert_eq!(rest, "lo, world");
    assert_eq!(resumed.last().unwrap().event, "done");

    let tab = other_tab.until_end().await;
    let tab_text: String =
        tab.iter().filter(|e| e.event == "delta").map(|e| e.data["text"].as_str().unwrap()).collect();
    assert_eq!(format!("Hel{tab_text}"), "Hello, world");
    assert_eq!(c.settled_reply(&reply_id).await["content"], "Hello, world");
}

#[tokio::test]
async fn cancel_stops_the_provider_and_keeps_the_text_so_far() {
    let c = chat().await;
    let tx = c.h.gated.next_reply();
    tx.send(delta("Partial answer")).unwrap();
    let mut stream = SseReader::new(c.post_stream("long question").await);
    let reply_id = stream.next().await.unwrap().data["reply_id"].as_str().unwrap().to_owned();
    assert_eq!(stream.next().await.unwrap().data["text"], "Partial answer");

    let r =
        c.h.call(
            Method::POST,
            &format!("/api/v1/conversations/{}/messages/{reply_id}/cancel", c.conversation),
            Some(&c.token),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let end = stream.until_end().await;
    let done = end.last().unwrap();
    assert_eq!((done.event.as_str(), done.data["status"].as_str()), ("done", Some("cancelled")));
    assert_eq!(done.data["content"], "Partial answer");
    let stored = c.settled_reply(&reply_id).await;
    assert_eq!((stored["status"].as_str(), stored["content"].as_str()), (Some("cancelled"), Some("Partial answer")));
    // The provider's stream was dropped: nothing listens any more.
    for _ in 0..50 {
        if tx.is_closed() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(tx.is_closed(), "the provider request was stopped");
    // Cancelling again, or cancelling a user message, changes nothing.
    let again =
        c.h.call(
            Method::POST,
            &format!("/api/v1/conversations/{}/messages/{reply_id}/cancel", c.conversation),
            Some(&c.token),
            None,
        )
        .await;
    assert_eq!(again.status, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn a_client_that_goes_away_does_not_cancel() {
    let c = chat().await;
    let tx = c.h.gated.next_reply();
    let mut stream = SseReader::new(c.post_stream("question").await);
    let reply_id = stream.next().await.unwrap().data["reply_id"].as_str().unwrap().to_owned();
    drop(stream);
    tokio::time::sleep(Duration::from_millis(50)).await;
    tx.send(delta("Still ")).unwrap();
    tx.send(delta("answered")).unwrap();
    tx.send(finish()).unwrap();
    drop(tx);
    let stored = c.settled_reply(&reply_id).await;
    assert_eq!((stored["status"].as_str(), stored["content"].as_str()), (Some("complete"), Some("Still answered")));
}

#[tokio::test]
async fn provider_failures_before_and_during_the_reply_end_in_an_error_event() {
    let c = chat().await;
    c.h.gated.fail_next(ProviderError::Upstream { status: 500, message: "overloaded".into() });
    let events = SseReader::new(c.post_stream("first").await).until_end().await;
    assert_eq!(events.iter().map(|e| e.event.as_str()).collect::<Vec<_>>(), ["message", "error"]);
    let error = &events[1].data;
    assert_eq!(error["status"], 502);
    assert!(error["detail"].as_str().unwrap().contains("overloaded"));
    let reply_id = events[0].data["reply_id"].as_str().unwrap();
    assert_eq!(c.settled_reply(reply_id).await["status"], "failed");

    let tx = c.h.gated.next_reply();
    tx.send(delta("half")).unwrap();
    tx.send(Err(ProviderError::Stream("connection reset".into()))).unwrap();
    let events = SseReader::new(c.post_stream("second").await).until_end().await;
    let last = events.last().unwrap();
    assert_eq!(last.event, "error");
    assert_eq!(last.data["partial_content"], "half");
    let reply_id = events[0].data["reply_id"].as_str().unwrap();
    let stored = c.settled_reply(reply_id).await;
    assert_eq!((stored["status"].as_str(), stored["content"].as_str()), (Some("failed"), Some("half")));
    assert!(stored["error"].as_str().unwrap().contains("connection reset"));
    // Both user messages were kept.
    let users: Vec<_> =
        c.messages().await.into_iter().filter(|m| m["role"] == "user").map(|m| m["content"].clone()).collect();
    assert_eq!(users, [json!("first"), json!("second")]);
}

#[tokio::test]
async fn concurrent_replies_per_user_are_limited() {
    let c = chat_with(|config| config.limits.max_replies_per_user = 1).await;
    let tx = c.h.gated.next_reply();
    let mut first = SseReader::new(c.post_stream("one").await);
    let reply_id = first.next().await.unwrap().data["reply_id"].as_str().unwrap().to_owned();
    let second = c.post_stream("two").await;
    assert_eq!(second.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(second.headers().contains_key("retry-after"));
    tx.send(finish()).unwrap();
    drop(tx);
    first.until_end().await;
    c.settled_reply(&reply_id).await;
    let tx = c.h.gated.next_reply();
    tx.send(delta("ok")).unwrap();
    tx.send(finish()).unwrap();
    drop(tx);
    let events = SseReader::new(c.post_stream("three").await).until_end().await;
    assert_eq!(events.last().unwrap().event, "done");
}

#[tokio::test]
async fn regenerate_answers_the_same_question_again() {
    let c = chat().await;
    let tx = c.h.gated.next_reply();
    tx.send(delta("First answer")).unwrap();
    tx.send(finish()).unwrap();
    drop(tx);
    let events = SseReader::new(c.post_stream("The question").await).until_end().await;
    let user_id = events[0].data["id"].as_str().unwrap().to_owned();
    let first_reply = events[0].data["reply_id"].as_str().unwrap().to_owned();

    let tx = c.h.gated.next_reply();
    tx.send(delta("Second answer")).unwrap();
    tx.send(finish()).unwrap();
    drop(tx);
    let r =
        c.h.call(
            Method::POST,
            &format!("/api/v1/conversations/{}/messages/{first_reply}/regenerate", c.conversation),
            Some(&c.token),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["assistant_message"]["content"], "Second answer");
    let request = c.h.gated.requests.lock().unwrap().last().cloned().unwrap();
    let contents: Vec<_> = request.messages.iter().map(|m| m.content.as_str()).collect();
    assert_eq!(contents, ["Be brief.", "The question"], "the earlier answer is not part of the new prompt");

    let tx = c.h.gated.next_reply();
    tx.send(delta("Third")).unwrap();
    tx.send(finish()).unwrap();
    drop(tx);
    let req = Request::post(format!("/api/v1/conversations/{}/messages/{user_id}/regenerate", c.conversation))
        .header("authorization", format!("Bearer {}", c.token))
        .header("accept", "text/event-stream")
        .body(Body::empty())
        .unwrap();
    let events = SseReader::new(c.h.send(req).await).until_end().await;
    assert_eq!(events[0].data["id"], user_id.as_str(), "the message event names the question");
    assert_eq!(events.last().unwrap().data["content"], "Third");
    assert_eq!(c.messages().await.len(), 4);
}

#[tokio::test]
async fn a_quiet_reply_gets_a_ping_comment_every_15_seconds() {
    let c = chat().await;
    let tx = c.h.gated.next_reply();
    let response = c.post_stream("think hard").await;
    let mut body = response.into_body().into_data_stream();
    let started = std::time::Instant::now();
    let mut seen = String::new();
    while !seen.contains(": ping") {
        let chunk =
            tokio::time::timeout(Duration::from_secs(20), body.next()).await.expect("a ping within 20 s").unwrap();
        seen.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
    }
    assert!(started.elapsed() >= Duration::from_secs(14), "no ping before the interval");
    drop(tx);
}

#[tokio::test]
async fn a_region_pin_refuses_providers_elsewhere() {
    let c = chat().await;
    let r =
        c.h.call(
            Method::PATCH,
            "/api/v1/admin/tenant",
            Some(&c.token),
            Some(json!({"settings": {"provider_regions": ["eu"]}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let models = c.h.call(Method::GET, "/api/v1/models", Some(&c.token), None).await;
    let ids: Vec<_> = models.body["items"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["gated-eu"], "only models served from an allowed region");
    let agent =
        c.h.call(Method::POST, "/api/v1/agents", Some(&c.token), Some(json!({"name": "US", "model": "gated"}))).await;
    assert_eq!(agent.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(agent.body["errors"][0]["message"].as_str().unwrap().contains("region"));
    // The conversation made before the pin cannot reach its US model any more.
    let m =
        c.h.call(
            Method::POST,
            &format!("/api/v1/conversations/{}/messages", c.conversation),
            Some(&c.token),
            Some(json!({"content": "q"})),
        )
        .await;
    assert_eq!(m.status, StatusCode::CONFLICT, "{}", m.body);
    assert_eq!(c.h.gated.requests.lock().unwrap().len(), 0, "nothing was sent to the provider");
    let bad =
        c.h.call(
            Method::PATCH,
            "/api/v1/admin/tenant",
            Some(&c.token),
            Some(json!({"settings": {"provider_regions": ["mars"]}})),
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
}
