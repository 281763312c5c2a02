//! Model providers: one OpenAI-compatible client (OpenRouter, Azure OpenAI, Ollama, vLLM,
//! llama.cpp server, OpenAI itself) with its streaming parser, and the built-in demo model that
//! makes a fresh install work offline.

mod demo;
mod openai;
mod sse;

pub use demo::{DemoProvider, DEMO_MODEL};
pub use openai::{OpenAiCompatible, ProviderKind, ProviderSettings};
