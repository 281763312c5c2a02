//! `conclave-demo`: a clearly labelled stand-in model for profile `dev` when no provider is
//! configured. It answers deterministically and says how to configure a real provider.

use std::time::Duration;

use async_trait::async_trait;
use conclave_core::provider::{ChatEvent, ChatRequest, ChatStream, ModelProvider, ProviderError};
use conclave_core::records::Usage;
use futures::StreamExt;

pub const DEMO_MODEL: &str = "conclave-demo";

#[derive(Debug, Clone)]
pub struct DemoProvider {
    /// Pause between words, so the reply streams like a real one.
    word_delay: Duration,
}

impl DemoProvider {
    pub fn new(word_delay: Duration) -> Self {
        Self { word_delay }
    }

    /// The reply to a conversation: the same question always gets the same answer.
    pub fn reply_to(request: &ChatRequest) -> String {
        let question = request.messages.iter().rev().find(|m| m.role == "user").map(|m| m.content.trim()).unwrap_or("");
        let mut quoted: String = question.chars().take(80).collect();
        if question.chars().count() > 80 {
            quoted.push('…');
        }
        format!(
            "This is Conclave's built-in demo model ({DEMO_MODEL}); it does not call a real language model, \
             so it cannot answer \"{quoted}\". Your message was stored like any other. To talk to a real \
             model, set CONCLAVE_PROVIDER_BASE_URL (for example https://openrouter.ai/api/v1) and \
             CONCLAVE_PROVIDER_API_KEY, list the models in CONCLAVE_MODELS, and restart Conclave; the \
             README shows OpenRouter, Azure OpenAI and Ollama."
        )
    }
}

#[async_trait]
impl ModelProvider for DemoProvider {
    async fn list_models(&self) -> Result<Vec<String>, ProviderError> {
        Ok(vec![DEMO_MODEL.to_owned()])
    }

    async fn stream_chat(&self, request: ChatRequest) -> Result<ChatStream, ProviderError> {
        let reply = Self::reply_to(&request);
        let prompt_chars: usize = request.messages.iter().map(|m| m.content.chars().count()).sum();
        let usage = Usage {
            prompt_tokens: u32::try_from(prompt_chars.div_ceil(4)).unwrap_or(u32::MAX),
            completion_tokens: u32::try_from(reply.chars().count().div_ceil(4)).unwrap_or(u32::MAX),
        };
        let words: Vec<String> = reply.split_inclusive(' ').map(str::to_owned).collect();
        let delay = self.word_delay;
        let deltas = futures::stream::iter(words).then(move |w| async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            Ok(ChatEvent::Delta(w))
        });
        let end =
            futures::stream::iter([Ok(ChatEvent::Finish { reason: Some("stop".into()) }), Ok(ChatEvent::Usage(usage))]);
        Ok(Box::pin(deltas.chain(end)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use conclave_core::provider::ChatMessage;

    #[tokio::test]
    async fn deterministic_and_says_what_it_is() {
        let request = ChatRequest {
            model: DEMO_MODEL.into(),
            messages: vec![ChatMessage { role: "user", content: "What is privilege?".into() }],
            ..Default::default()
        };
        let provider = DemoProvider::new(Duration::ZERO);
        let mut text = String::new();
        let mut stream = provider.stream_chat(request.clone()).await.unwrap();
        while let Some(event) = stream.next().await {
            if let ChatEvent::Delta(d) = event.unwrap() {
                text.push_str(&d);
            }
        }
        assert_eq!(text, DemoProvider::reply_to(&request));
        assert!(text.contains("demo") && text.contains("CONCLAVE_PROVIDER_BASE_URL"));
        assert!(text.contains("What is privilege?"));
    }
}
