//! conclave-azure against its local stand-in (TLS with a CA the test makes): every credential
//! flow, the Key Vault key provider and signer, and the failure modes.

mod blob;
mod cache;
mod credentials;
mod errors;
mod provider;
mod refresh;
mod signer;
mod support;
