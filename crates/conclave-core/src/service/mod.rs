//! The domain services, one file a concern, all as methods of [`crate::Conclave`].

pub mod accounts;
pub mod admin;
pub mod agents;
pub mod api_keys;
pub mod audit;
pub mod backup;
pub mod conversations;
pub mod documents;
pub mod events;
pub mod export;
pub mod gateway;
pub mod identity;
pub mod keys;
pub mod libraries;
pub mod mfa;
pub mod models;
pub mod orphans;
pub(crate) mod partial_saves;
pub mod replies;
pub mod sessions;
pub mod usage;
