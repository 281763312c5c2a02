//! Conclave's customer-managed key hierarchy: the byte formats of wrapped keys and encrypted
//! content, the key providers that hold each tenant's key-encryption key, and the cache of
//! unwrapped keys.
//!
//! # Key hierarchy
//!
//! ```text
//! KEK  (per tenant, in a key provider; versioned)
//!  ├── TEK  (per tenant)        wrapped by the KEK   ── agent, library and tenant fields   (sealed)
//!  ├── LEK  (per library)       wrapped by the KEK   ── document names                     (sealed)
//!  │    └── FEK (per document version) wrapped by the LEK ── document content              (segmented)
//!  └── CEK  (per conversation)  wrapped by the KEK   ── message contents, titles           (sealed)
//! ```
//!
//! Every key is a 256-bit [`Key`]. All encryption is AES-256-GCM with 96-bit nonces and 128-bit
//! tags (checked against Google's Wycheproof vectors, and against data the former RustCrypto
//! backend wrote: `tests/fixtures/`). Every wrapped key and every ciphertext is
//! bound to what it belongs to by associated data: the canonical encoding of a [`Binding`]
//! (purpose, tenant and the ids of the row), followed by the format's own header bytes. Bytes
//! copied to another row, field, document version or tenant fail to decrypt with
//! [`CryptoError::Integrity`].
//!
//! # Formats (version 1; wrapped keys also version 2)
//!
//! | format | used for | module with the byte-by-byte layout |
//! |---|---|---|
//! | binding (associated data) | every operation | [`binding`] |
//! | wrapped key | TEK, LEK, CEK under a KEK; FEK under an LEK (v1); under a KMS RSA key through an intermediate key (v2) | [`wrapped`] |
//! | sealed content | message text, titles, names, settings | [`sealed`] |
//! | segmented content | document content, streamed and range-readable | [`segment`] |
//! | local key file | [`LocalKeyProvider`]'s KEK versions | [`provider::keyfile`] |
//!
//! Every format starts with a version byte (the segmented format with the magic `CNCL` and then
//! its version byte) so later versions can be read beside this one. Version 0 of the sealed format
//! is reserved by the application for legacy plaintext; this crate never writes it. All integers
//! are big-endian. Parsers reject trailing bytes, unknown versions and out-of-range lengths, and
//! never panic on any input (property tests and the `fuzz/` targets check this).
//!
//! # Local key file
//!
//! JSON, mode `0600`, folder `0700`, replaced atomically on every change; per-tenant random KEK
//! versions, so one tenant's version can be destroyed without touching any other tenant. The
//! format and the reasons are in [`provider::keyfile`].
//!
//! # Nonces and limits
//!
//! - Wrapped keys and sealed content use random 96-bit nonces: safe for 2^32 messages per key
//!   (NIST SP 800-38D §8.3), far more than one CEK, TEK or LEK seals.
//! - Segmented content uses a random 56-bit prefix per object, a 32-bit segment counter and a
//!   last-segment flag: at most 2^32 segments per object (256 TiB at 64 KiB segments), and one
//!   FEK per document version, so prefixes do not collide in practice.
//!
//! # Secrets in memory
//!
//! [`Key`] zeroizes on drop, has no `Clone` and prints as `Key(<redacted>)`. AES-256-GCM runs in
//! AWS-LC, whose allocator overwrites a cipher's expanded key (round keys and GHASH table) when
//! the cipher is dropped (the details, and what stays on the stack, are in
//! docs/security-model.md). A failed decryption zeroes the unverified plaintext AWS-LC already
//! wrote. Buffers that held plaintext or key material inside this crate are zeroized before they
//! are released.

pub mod binding;
pub mod cache;
pub mod error;
pub mod key;
pub mod provider;
pub mod sealed;
pub mod segment;
pub mod signing;
pub mod tag;
pub mod wrapped;

mod aead;

#[doc(hidden)]
pub mod fuzzing;

pub use binding::{Binding, FieldName, Purpose};
pub use cache::KeyCache;
pub use error::{CryptoError, Result};
pub use key::{Key, KeyId, KeyRef};
pub use provider::{KeyProvider, LocalCheckpointSigner, LocalKeyProvider, ProviderInfo};
pub use sealed::{open, seal};
pub use segment::{RangeDecryptor, RangePlan, SegmentDecryptor, SegmentEncryptor, SegmentHeader};
pub use signing::{
    public_key_algorithm, public_key_from_pem, public_key_pem, verify_signature, CheckpointSigner, SignatureAlgorithm,
};
pub use tag::lookup_tag;
pub use wrapped::{unwrap_key, wrap_key, wrap_key_v2, ProviderWrap, WrappedKey};
