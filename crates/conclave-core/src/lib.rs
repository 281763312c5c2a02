//! Conclave's domain: who is calling ([`principal`]), who may do what ([`policy`]), and the
//! services behind every route ([`Conclave`]). It defines the traits the outer crates implement
//! ([`store::Store`], [`provider::ModelProvider`], [`content::ContentCodec`]) and never imports
//! HTTP or SQL libraries.

pub mod app;
pub mod auth_cache;
pub mod checkpoint;
pub mod clock;
pub mod content;
pub mod envelope;
pub mod error;
pub mod ids;
pub mod libraries;
pub mod live;
pub mod notify;
pub mod objects;
pub mod page;
pub mod policy;
pub mod principal;
pub mod provider;
pub mod records;
pub mod scan;
pub mod service;
pub mod settings;
pub mod store;
pub mod trace;
pub mod views;

pub use app::{Conclave, CoreConfig, ReplyLimits};
pub use error::{Error, FieldError, Result, StoreError};
