//! Credential primitives shared by every sign-in path: Argon2id password hashing, the password
//! strength policy, the opaque bearer credentials (API keys, access and refresh tokens), and the
//! verification of an OIDC issuer's JWTs.
//!
//! Nothing here knows about HTTP or storage; `conclave-core` decides when to call what.

pub mod oidc;
mod password;
mod policy;
mod token;
pub mod totp;

pub use password::{PasswordError, PasswordHasher, PasswordHashingParams};
pub use policy::{check_password_strength, PasswordRejection, MIN_PASSWORD_CHARS};
pub use token::{hash_secret, random_password, CredentialKind, IssuedCredential, ParsedCredential, SecretHash};
