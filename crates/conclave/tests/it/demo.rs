//! Without a provider, profile `dev` offers the built-in `conclave-demo` model, which answers
//! deterministically and says how to configure a real provider.

use anyhow::Result;
use serde_json::json;

use crate::app::{s, Backend, Fetch, TestApp};

async fn the_demo_model_answers_without_a_provider(backend: Backend) -> Result<()> {
    let app = TestApp::start(backend).await?;
    let admin = app.admin().await?;

    let models = app.get("/api/v1/models").bearer_auth(&admin.token).fetch().await?.expect(200);
    let listed: Vec<String> = models.items().iter().map(|m| s(&m["id"])).collect();
    assert_eq!(listed, ["conclave-demo"], "{}", models.text);

    app.post("/api/v1/agents")
        .bearer_auth(&admin.token)
        .json(&json!({"name": "No", "instructions": "x", "model": "mock-model"}))
        .fetch()
        .await?
        .invalid("model");
    let agent = app.create_agent(&admin.token, json!({"model": "conclave-demo"})).await?;

    let mut answers = Vec::new();
    for _ in 0..2 {
        let conv = app.create_conversation(&admin.token, &agent["id"], None).await?;
        let resp = app.post_message(&admin.token, &conv["id"], "What can you do?").await?.expect(201);
        let reply = &resp["assistant_message"];
        assert_eq!(reply["status"], "complete");
        assert_eq!(reply["model"], "conclave-demo");
        let text = s(&reply["content"]);
        assert!(text.to_lowercase().contains("demo"), "the reply says it is a demo: {text}");
        assert!(text.contains("CONCLAVE_PROVIDER_BASE_URL"), "the reply says how to set a provider: {text}");
        answers.push(text);
    }
    assert_eq!(answers[0], answers[1], "same question, same answer");
    Ok(())
}

backend_tests!(the_demo_model_answers_without_a_provider);
