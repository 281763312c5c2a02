//! The second factor of local accounts: TOTP (RFC 6238: HMAC-SHA-1, 6 digits, 30 s steps, one
//! step of clock drift either way) and one-time recovery codes.
//!
//! [`TotpSecret::verify`] returns the time step a code matched; the caller stores the last step
//! used and refuses a step at or before it, so a code cannot be replayed within its window.

use rand::{Rng, RngCore};
use sha2::{Digest, Sha256};
use totp_rs::{Builder, Secret, Totp};

/// 160 bits, the HMAC-SHA-1 block output size RFC 4226 recommends.
const SECRET_BYTES: usize = 20;
pub const STEP_SECONDS: u64 = 30;
pub const DIGITS: usize = 6;
/// How many recovery codes one enrolment gives.
pub const RECOVERY_CODES: usize = 10;
/// Characters in a recovery code: 24 from a 31-letter alphabet without look-alikes, about 119
/// random bits (ASVS 6.5.2 asks for at least 112 for a secret kept as a fast hash).
const RECOVERY_CODE_CHARS: usize = 24;
const RECOVERY_ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";

/// A user's shared TOTP secret. Zeroized when dropped (`totp-rs` with `zeroize`).
pub struct TotpSecret {
    totp: Totp,
}

#[derive(Debug, thiserror::Error)]
#[error("the stored TOTP secret is unusable")]
pub struct BadSecret;

impl TotpSecret {
    /// A fresh random secret.
    pub fn generate(issuer: &str, account: &str) -> Self {
        let mut bytes = [0u8; SECRET_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        let secret = Self::build(Secret::from(bytes.to_vec()), issuer, account);
        bytes.iter_mut().for_each(|b| *b = 0);
        secret.unwrap_or_else(|_| unreachable!("a 160-bit secret with SHA-1 and 6 digits is always valid"))
    }

    /// The secret as stored (base32, as authenticator apps take it).
    pub fn from_base32(base32: &str, issuer: &str, account: &str) -> Result<Self, BadSecret> {
        let secret = Secret::try_from_base32(base32).map_err(|_| BadSecret)?;
        Self::build(secret, issuer, account)
    }

    fn build(secret: Secret, issuer: &str, account: &str) -> Result<Self, BadSecret> {
        let totp = Builder::new()
            .with_secret(secret)
            .with_digits(DIGITS as u8)
            .with_skew(1)
            .with_step_duration(STEP_SECONDS)
            .with_issuer(Some(issuer.replace(':', " ")))
            .with_account_name(account.replace(':', " "))
            .build()
            .map_err(|_| BadSecret)?;
        Ok(Self { totp })
    }

    pub fn base32(&self) -> String {
        self.totp.secret().to_base32()
    }

    /// `otpauth://totp/...`, for a QR code.
    pub fn uri(&self) -> String {
        self.totp.to_url().unwrap_or_default()
    }

    /// The time step `code` matches at `unix_time`, within one step either way.
    pub fn verify(&self, code: &str, unix_time: u64) -> Option<u64> {
        let code = code.trim();
        if code.len() != DIGITS || !code.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        self.totp.check(code, unix_time)
    }

    /// The code for `unix_time` (tests and tools).
    pub fn code_at(&self, unix_time: u64) -> String {
        self.totp.generate(unix_time).to_string()
    }
}

/// Ten fresh recovery codes, formatted for people (`abcd-efgh-jkmn-pqrs-tuvw-xyz2`).
pub fn new_recovery_codes() -> Vec<String> {
    let mut rng = rand::rngs::OsRng;
    (0..RECOVERY_CODES)
        .map(|_| {
            let chars: Vec<char> = (0..RECOVERY_CODE_CHARS)
                .map(|_| RECOVERY_ALPHABET[rng.gen_range(0..RECOVERY_ALPHABET.len())] as char)
                .collect();
            chars.chunks(4).map(|c| c.iter().collect::<String>()).collect::<Vec<_>>().join("-")
        })
        .collect()
}

/// The stored form of a recovery code: SHA-256 over the user id and the code without its
/// separators (about 119 random bits need no slow hash; the user id keeps equal codes apart).
pub fn hash_recovery_code(user: &uuid::Uuid, code: &str) -> Vec<u8> {
    let normalised: String =
        code.chars().filter(|c| c.is_ascii_alphanumeric()).map(|c| c.to_ascii_lowercase()).collect();
    let mut h = Sha256::new();
    h.update(user.as_bytes());
    h.update(normalised.as_bytes());
    h.finalize().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 appendix B, SHA-1 (the secret is "12345678901234567890"; 8-digit vectors cut to 6).
    #[test]
    fn rfc6238_vectors() {
        let secret = Secret::from(b"12345678901234567890".to_vec()).to_base32();
        let totp = TotpSecret::from_base32(&secret, "Conclave", "a@example.com").unwrap();
        for (time, code) in [(59, "287082"), (1111111109, "081804"), (1234567890, "005924"), (2000000000, "279037")] {
            assert_eq!(totp.code_at(time), code, "at {time}");
            assert_eq!(totp.verify(code, time), Some(time / STEP_SECONDS));
        }
    }

    #[test]
    fn one_step_of_drift_either_way_and_no_more() {
        let totp = TotpSecret::generate("Conclave", "a@example.com");
        let t = 1_700_000_000;
        let code = totp.code_at(t);
        assert_eq!(totp.verify(&code, t - STEP_SECONDS), Some(t / STEP_SECONDS));
        assert_eq!(totp.verify(&code, t + STEP_SECONDS), Some(t / STEP_SECONDS));
        assert_eq!(totp.verify(&code, t + 3 * STEP_SECONDS), None);
        assert_eq!(totp.verify("12345", t), None);
        assert_eq!(totp.verify("abcdef", t), None);
    }

    #[test]
    fn secrets_round_trip_and_uris_name_the_account() {
        let totp = TotpSecret::generate("Conclave", "a@example.com");
        let again = TotpSecret::from_base32(&totp.base32(), "Conclave", "a@example.com").unwrap();
        assert_eq!(again.code_at(1_000_000), totp.code_at(1_000_000));
        let uri = totp.uri();
        assert!(uri.starts_with("otpauth://totp/Conclave:a%40example.com?"), "{uri}");
        assert!(uri.contains(&format!("secret={}", totp.base32())), "{uri}");
        assert!(TotpSecret::from_base32("not base32!", "Conclave", "a").is_err());
    }

    #[test]
    fn recovery_codes_are_distinct_and_hashes_ignore_formatting() {
        let codes = new_recovery_codes();
        assert_eq!(codes.len(), RECOVERY_CODES);
        assert_eq!(codes.iter().collect::<std::collections::HashSet<_>>().len(), RECOVERY_CODES);
        assert!(codes.iter().all(|c| c.len() == 29 && c.matches('-').count() == 5));
        let user = uuid::Uuid::new_v4();
        let plain = codes[0].replace('-', "").to_uppercase();
        assert_eq!(hash_recovery_code(&user, &codes[0]), hash_recovery_code(&user, &plain));
        assert_ne!(hash_recovery_code(&user, &codes[0]), hash_recovery_code(&uuid::Uuid::new_v4(), &codes[0]));
    }
}
