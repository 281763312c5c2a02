//! Argon2id password hashing (RFC 9106) with parameters from configuration.
//!
//! Hashing is CPU- and memory-bound on purpose; callers run it off the async runtime.

use argon2::password_hash::{PasswordHash, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, PasswordHasher as _, Version};
use rand::rngs::OsRng;

/// Argon2id cost parameters. The defaults are OWASP's recommended minimum (19 MiB, 2 passes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordHashingParams {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Default for PasswordHashingParams {
    fn default() -> Self {
        Self { memory_kib: 19_456, iterations: 2, parallelism: 1 }
    }
}

impl PasswordHashingParams {
    /// True when the parameters are below OWASP's minimum for Argon2id.
    pub fn is_weak(&self) -> bool {
        self.memory_kib < 19_456 || self.iterations < 2
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("invalid Argon2 parameters: {0}")]
    Params(String),
    #[error("password hashing failed: {0}")]
    Hash(String),
}

#[derive(Clone)]
pub struct PasswordHasher {
    argon2: Argon2<'static>,
    /// A hash of a random password, verified when the account does not exist so that
    /// "unknown email" and "wrong password" take the same time.
    dummy_hash: String,
}

impl std::fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordHasher").finish_non_exhaustive()
    }
}

impl PasswordHasher {
    pub fn new(params: PasswordHashingParams) -> Result<Self, PasswordError> {
        let params = Params::new(params.memory_kib, params.iterations, params.parallelism, None)
            .map_err(|e| PasswordError::Params(e.to_string()))?;
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let mut hasher = Self { argon2, dummy_hash: String::new() };
        hasher.dummy_hash = hasher.hash(&random_dummy())?;
        Ok(hasher)
    }

    /// Returns the PHC string (`$argon2id$v=19$m=…`), salt included.
    pub fn hash(&self, password: &str) -> Result<String, PasswordError> {
        let salt = SaltString::generate(&mut OsRng);
        self.argon2
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| PasswordError::Hash(e.to_string()))
    }

    /// Verifies against a stored PHC string. A malformed stored hash verifies as false.
    pub fn verify(&self, password: &str, stored: &str) -> bool {
        match PasswordHash::new(stored) {
            Ok(parsed) => self.argon2.verify_password(password.as_bytes(), &parsed).is_ok(),
            Err(_) => false,
        }
    }

    /// Spends the same effort as `verify` on a hash that never matches.
    pub fn verify_dummy(&self, password: &str) -> bool {
        let _ = self.verify(password, &self.dummy_hash);
        false
    }
}

fn random_dummy() -> String {
    crate::token::random_password()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn light() -> PasswordHasher {
        PasswordHasher::new(PasswordHashingParams { memory_kib: 64, iterations: 1, parallelism: 1 }).unwrap()
    }

    #[test]
    fn hash_then_verify() {
        let h = light();
        let stored = h.hash("correct horse battery staple").unwrap();
        assert!(stored.starts_with("$argon2id$v=19$m=64,t=1,p=1$"));
        assert!(h.verify("correct horse battery staple", &stored));
        assert!(!h.verify("correct horse battery stapl", &stored));
    }

    #[test]
    fn same_password_gets_different_salts() {
        let h = light();
        assert_ne!(h.hash("same").unwrap(), h.hash("same").unwrap());
    }

    #[test]
    fn malformed_hash_never_verifies() {
        let h = light();
        assert!(!h.verify("x", "not a phc string"));
        assert!(!h.verify_dummy("x"));
    }

    #[test]
    fn default_params_are_owasp_minimum() {
        assert!(!PasswordHashingParams::default().is_weak());
        assert!(PasswordHashingParams { memory_kib: 256, iterations: 1, parallelism: 1 }.is_weak());
    }
}
