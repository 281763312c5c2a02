//! In-process tests of the HTTP surface: the authorisation matrix over every route the router
//! serves, and the OpenAPI document against the router.

mod audit;
mod authz;
mod documents;
mod edge;
mod fuzz_corpus;
mod gateway;
mod harness;
mod limits;
mod openapi;
mod sessions;
mod streaming;
