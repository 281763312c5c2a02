//! Opaque bearer credentials: `<prefix>_<id>_<secret>`.
//!
//! The id (a hyphenated UUID, the same one the API shows as the credential's `id`) finds the
//! stored row; only a SHA-256 hash of the 256-bit random
//! secret is stored, and it is compared in constant time. A slow hash is unnecessary for secrets
//! of this entropy, so checking a credential costs microseconds per request.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::rngs::OsRng;
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use uuid::Uuid;

/// What a credential is, told by its prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialKind {
    /// `ck_`: a user's API key.
    ApiKey,
    /// `ca_`: a short-lived access token from sign-in or refresh.
    AccessToken,
    /// `cr_`: a refresh token, carried only in an HttpOnly cookie.
    RefreshToken,
}

impl CredentialKind {
    pub fn prefix(self) -> &'static str {
        match self {
            CredentialKind::ApiKey => "ck",
            CredentialKind::AccessToken => "ca",
            CredentialKind::RefreshToken => "cr",
        }
    }

    fn from_prefix(p: &str) -> Option<Self> {
        match p {
            "ck" => Some(CredentialKind::ApiKey),
            "ca" => Some(CredentialKind::AccessToken),
            "cr" => Some(CredentialKind::RefreshToken),
            _ => None,
        }
    }
}

/// SHA-256 of a credential's secret part: what the database keeps.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretHash(pub [u8; 32]);

impl std::fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretHash(..)")
    }
}

impl SecretHash {
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        <[u8; 32]>::try_from(bytes).ok().map(SecretHash)
    }

    /// Constant-time comparison with the hash of `secret`.
    pub fn matches(&self, secret: &SecretString) -> bool {
        hash_secret(secret.expose_secret()).0.ct_eq(&self.0).into()
    }
}

pub fn hash_secret(secret: &str) -> SecretHash {
    SecretHash(Sha256::digest(secret.as_bytes()).into())
}

/// A freshly issued credential: the full token to hand out once, and what to store.
pub struct IssuedCredential {
    pub id: Uuid,
    pub token: SecretString,
    pub hash: SecretHash,
}

impl IssuedCredential {
    pub fn new(kind: CredentialKind) -> Self {
        let id = Uuid::now_v7();
        let secret = random_secret();
        let hash = hash_secret(&secret);
        let token = SecretString::from(format!("{}_{}_{}", kind.prefix(), id.hyphenated(), secret));
        IssuedCredential { id, token, hash }
    }
}

/// A credential as presented by a client, split but not yet checked.
pub struct ParsedCredential {
    pub kind: CredentialKind,
    pub id: Uuid,
    pub secret: SecretString,
}

impl ParsedCredential {
    /// `None` for anything that is not shaped like one of our credentials.
    pub fn parse(token: &str) -> Option<Self> {
        let (prefix, rest) = token.split_once('_')?;
        let kind = CredentialKind::from_prefix(prefix)?;
        let (id, secret) = rest.split_once('_')?;
        if id.len() != 36 || secret.len() != 43 {
            return None;
        }
        let id = Uuid::try_parse(id).ok()?;
        Some(ParsedCredential { kind, id, secret: SecretString::from(secret.to_owned()) })
    }
}

fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A random temporary password (24 characters from a 256-bit draw) for admin-created accounts.
pub fn random_password() -> String {
    let mut s = random_secret();
    s.truncate(24);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_parse_verify_round_trip() {
        let issued = IssuedCredential::new(CredentialKind::ApiKey);
        let token = issued.token.expose_secret().to_owned();
        assert!(token.starts_with("ck_"));
        let parsed = ParsedCredential::parse(&token).unwrap();
        assert_eq!(parsed.kind, CredentialKind::ApiKey);
        assert_eq!(parsed.id, issued.id);
        assert!(token.starts_with(&format!("ck_{}_", issued.id)), "the key shows its id as the API does");
        assert!(issued.hash.matches(&parsed.secret));
    }

    #[test]
    fn tampered_secret_does_not_match() {
        let issued = IssuedCredential::new(CredentialKind::AccessToken);
        let mut token = issued.token.expose_secret().to_owned();
        let last = token.pop().unwrap();
        token.push(if last == 'A' { 'B' } else { 'A' });
        let parsed = ParsedCredential::parse(&token).unwrap();
        assert!(!issued.hash.matches(&parsed.secret));
    }

    #[test]
    fn rejects_malformed_tokens() {
        for bad in ["", "ck", "ck_", "ck_abc_def", "xx_0190a0b0c0d0e0f00000000000000000_secret", "eyJhbGciOi.x.y"] {
            assert!(ParsedCredential::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn secrets_with_underscores_parse() {
        // base64url secrets may contain '_' themselves; only the first two separate fields.
        let id = Uuid::now_v7();
        let secret = "a_b_c".repeat(8) + "abc";
        let token = format!("cr_{}_{}", id, secret);
        let parsed = ParsedCredential::parse(&token).unwrap();
        assert_eq!(parsed.kind, CredentialKind::RefreshToken);
        assert_eq!(parsed.secret.expose_secret(), secret.as_str());
    }

    #[test]
    fn random_passwords_differ() {
        assert_ne!(random_password(), random_password());
        assert_eq!(random_password().len(), 24);
    }
}
