//! Model providers as the domain sees them: a streaming chat call and a list of models.
//! `conclave-llm` implements the OpenAI-compatible client and the built-in demo model.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::Stream;
use serde::Serialize;

use crate::records::Usage;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ChatMessage {
    pub role: &'static str,
    pub content: String,
}

#[derive(Debug, Clone, Default)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<ChatMessage>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub max_tokens: Option<u32>,
    pub stop: Vec<String>,
    /// An opaque end-user id passed to the provider for abuse tracking.
    pub user: Option<String>,
}

/// One step of a streamed reply.
#[derive(Debug, Clone, PartialEq)]
pub enum ChatEvent {
    Delta(String),
    Finish { reason: Option<String> },
    Usage(Usage),
}

pub type ChatStream = Pin<Box<dyn Stream<Item = Result<ChatEvent, ProviderError>> + Send>>;

#[derive(Debug, Clone, thiserror::Error)]
pub enum ProviderError {
    #[error("the model provider could not be reached: {0}")]
    Unreachable(String),
    #[error("the model provider did not answer in time")]
    Timeout,
    #[error("the model provider refused the request ({status}): {message}")]
    Upstream { status: u16, message: String },
    #[error("the model provider is rate limiting requests")]
    RateLimited { retry_after: Option<Duration> },
    #[error("the model provider sent a response Conclave could not read: {0}")]
    InvalidResponse(String),
    #[error("the model provider reported an error mid-reply: {0}")]
    Stream(String),
}

#[async_trait]
pub trait ModelProvider: Send + Sync {
    /// Model ids this provider serves, as it lists them.
    async fn list_models(&self) -> Result<Vec<String>, ProviderError>;
    /// Starts a streamed chat completion. Errors before the first event are returned here;
    /// errors after it arrive in the stream.
    async fn stream_chat(&self, request: ChatRequest) -> Result<ChatStream, ProviderError>;
}

/// One configured provider and what the tenant policy needs to know about it.
#[derive(Clone)]
pub struct ProviderEntry {
    pub name: String,
    pub region: Option<String>,
    pub client: Arc<dyn ModelProvider>,
}

/// A model id and the provider that serves it.
#[derive(Clone)]
pub struct ModelRoute {
    pub id: String,
    pub provider: ProviderEntry,
}

/// Every model this server can reach, each mapped to exactly one provider.
#[derive(Clone, Default)]
pub struct ModelCatalog {
    routes: Vec<ModelRoute>,
}

impl ModelCatalog {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a model; a model id already mapped keeps its first provider.
    pub fn add(&mut self, id: impl Into<String>, provider: ProviderEntry) {
        let id = id.into();
        if !self.routes.iter().any(|r| r.id == id) {
            self.routes.push(ModelRoute { id, provider });
        }
    }

    pub fn route(&self, model: &str) -> Option<&ModelRoute> {
        self.routes.iter().find(|r| r.id == model)
    }

    pub fn routes(&self) -> &[ModelRoute] {
        &self.routes
    }

    pub fn model_ids(&self) -> Vec<String> {
        self.routes.iter().map(|r| r.id.clone()).collect()
    }

    pub fn regions(&self) -> Vec<String> {
        let mut regions: Vec<String> = self.routes.iter().filter_map(|r| r.provider.region.clone()).collect();
        regions.sort();
        regions.dedup();
        regions
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}
