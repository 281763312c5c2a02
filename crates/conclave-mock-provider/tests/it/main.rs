//! Integration tests: the mock provider and its binary, driven over real HTTP with reqwest the
//! way the project's model client talks to a provider.

mod auth;
mod azure;
mod binary;
mod chat;
mod failures;
mod lifecycle;
mod models;
mod streaming;
mod support;
