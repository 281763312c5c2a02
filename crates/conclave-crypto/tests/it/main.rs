//! Integration tests of conclave-crypto's public API: one binary, one module per concern.

mod binding_props;
mod cache;
mod fuzz_corpus;
mod local_provider;
mod segments;
mod stored_vectors;
mod wrap_and_seal;
mod wrapped_v2;
