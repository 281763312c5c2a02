//! The crate's one error type. Messages name what failed, never key material or plaintext.

use std::path::PathBuf;

/// Everything that can go wrong in the key hierarchy.
///
/// The key-provider variants are distinct on purpose: the server answers "the customer's key is
/// unreachable, try again" ([`KeyUnavailable`](Self::KeyUnavailable)) differently from "the
/// customer switched the key off" ([`KeyRevoked`](Self::KeyRevoked)), "this data was
/// crypto-shredded" ([`VersionRetired`](Self::VersionRetired)) and "these bytes do not belong
/// here or were altered" ([`Integrity`](Self::Integrity)).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// Authentication failed: wrong key, wrong binding (the bytes were copied from another row,
    /// field or file) or tampered bytes. Deliberately says no more than that.
    #[error("integrity check failed: wrong key, wrong binding or altered data")]
    Integrity,

    /// A segmented stream ended without its last-flagged segment.
    #[error("encrypted stream is truncated: it ended before its final segment")]
    Truncated,

    /// Bytes that do not parse as the named format.
    #[error("malformed {what}: {reason}")]
    Malformed { what: &'static str, reason: &'static str },

    /// A format version this build does not read.
    #[error("unsupported {what} format version {version}")]
    UnsupportedVersion { what: &'static str, version: u8 },

    /// A caller-supplied value outside what the format allows (a range past the end, an empty key
    /// id, a segment size out of bounds, a stream longer than 2^32 segments).
    #[error("invalid argument: {0}")]
    InvalidInput(&'static str),

    /// The key provider could not be reached or did not answer; retrying may succeed.
    #[error("key provider unavailable: {0}")]
    KeyUnavailable(String),

    /// The key exists but its owner disabled or revoked it: the data stays locked until they
    /// enable it again.
    #[error("key {key_id} is revoked or disabled")]
    KeyRevoked { key_id: String },

    /// The key version that wrapped this key has been retired and its material destroyed: the
    /// wrapped key can never be unwrapped again (crypto-shredding).
    #[error("key {key_id} version {version} is retired; keys wrapped under it cannot be unwrapped")]
    VersionRetired { key_id: String, version: u32 },

    /// The provider holds no such key or version (another provider's key, a tenant with no key).
    #[error("key {key_id} version {version} not found in this key provider")]
    KeyNotFound { key_id: String, version: u32 },

    /// The local key file is readable or writable by group or others.
    #[error(
        "key file {path} has mode {mode:03o}, so users other than its owner can read it; \
         run `chmod 600 {path}` and start again",
        path = path.display()
    )]
    InsecurePermissions { path: PathBuf, mode: u32 },

    /// The local key file exists but is not a valid key file.
    #[error("key file {path} is invalid: {reason}", path = path.display())]
    InvalidKeyFile { path: PathBuf, reason: String },

    /// Reading or writing the local key file failed.
    #[error("key file {path}: {source}", path = path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = CryptoError> = std::result::Result<T, E>;

impl CryptoError {
    pub(crate) fn malformed(what: &'static str, reason: &'static str) -> Self {
        Self::Malformed { what, reason }
    }
}
