//! A short-lived, in-process cache of verified bearer credentials (access tokens, API keys and
//! the single sign-on issuer's JWTs) and the principal each stands for, so that a busy client is
//! not looked up in the database (nor its JWT signature checked) on every call.
//!
//! - An entry is keyed by the credential's id (a JWT's: the first half of its SHA-256) and keeps
//!   only the SHA-256 of its secret (a JWT's: of the whole token), compared in constant time; a
//!   presented secret that does not match is a miss, checked in the database.
//! - An entry lives at most the configured TTL (`CONCLAVE_AUTH_CACHE_TTL_SECONDS`, 0 switches the
//!   cache off), and never past the credential's own expiry.
//! - Every change through this process that can withdraw or alter a credential or its user
//!   (sign-out, session or key revocation, password change or reset, user update, disable or
//!   deletion, MFA reset) empties the whole cache, and a lookup that started before such a change
//!   does not store its (possibly stale) result. A change made on another replica, or directly
//!   in the database, is seen here within the TTL.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use conclave_auth::{hash_secret, CredentialKind, ParsedCredential, SecretHash};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::principal::Principal;

/// Most credentials kept at once; beyond this, new ones are not cached until entries expire.
pub const MAX_ENTRIES: usize = 10_000;

struct Entry {
    secret: SecretHash,
    principal: Principal,
    until: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    AccessToken,
    ApiKey,
    Jwt,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<(Kind, Uuid), Entry>,
    /// Bumped by every invalidation: a lookup stores its result only if none happened meanwhile.
    generation: u64,
}

pub struct CredentialCache {
    ttl: Duration,
    inner: Mutex<Inner>,
}

/// Where a lookup stood before it went to the database.
#[derive(Debug, Clone, Copy)]
pub struct Ticket(u64);

fn key(parsed: &ParsedCredential) -> (Kind, Uuid) {
    let kind = if parsed.kind == CredentialKind::ApiKey { Kind::ApiKey } else { Kind::AccessToken };
    (kind, parsed.id)
}

/// A JWT's entry is named by the issuer's key-set generation too: once the key set is replaced,
/// every cached verification misses and is done again against the new keys.
fn jwt_key(bearer: &str, keys_generation: u64) -> (Kind, Uuid) {
    let digest = Sha256::new().chain_update(keys_generation.to_le_bytes()).chain_update(bearer.as_bytes()).finalize();
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest[..16]);
    (Kind::Jwt, Uuid::from_bytes(id))
}

impl CredentialCache {
    pub fn new(ttl: Duration) -> Self {
        CredentialCache { ttl, inner: Mutex::new(Inner::default()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cached principal for this credential, if it is cached, fresh, and the secret matches;
    /// otherwise the ticket to hand back to [`Self::store`] after verifying it in the database.
    pub fn get(&self, parsed: &ParsedCredential) -> Result<Principal, Ticket> {
        self.lookup(key(parsed), &parsed.secret)
    }

    /// As [`Self::get`], for a single sign-on JWT (the whole token is its secret) verified
    /// against the issuer's key set of generation `keys_generation`.
    pub fn get_jwt(&self, bearer: &str, keys_generation: u64) -> Result<Principal, Ticket> {
        self.lookup(jwt_key(bearer, keys_generation), &SecretString::from(bearer.to_owned()))
    }

    fn lookup(&self, key: (Kind, Uuid), secret: &SecretString) -> Result<Principal, Ticket> {
        if self.ttl.is_zero() {
            return Err(Ticket(0));
        }
        let inner = self.lock();
        match inner.entries.get(&key) {
            Some(e) if e.until > Instant::now() && e.secret.matches(secret) => Ok(e.principal.clone()),
            _ => Err(Ticket(inner.generation)),
        }
    }

    /// Keeps a verified credential, unless the cache was invalidated since the ticket was taken.
    /// `expires_at` is the credential's own expiry, if it has one.
    pub fn store(
        &self,
        ticket: Ticket,
        parsed: &ParsedCredential,
        principal: &Principal,
        expires_at: Option<OffsetDateTime>,
    ) {
        self.keep(ticket, key(parsed), parsed.secret.expose_secret(), principal, expires_at);
    }

    /// As [`Self::store`], for a single sign-on JWT; `expires_at` is its `exp`.
    pub fn store_jwt(
        &self,
        ticket: Ticket,
        bearer: &str,
        keys_generation: u64,
        principal: &Principal,
        expires_at: Option<OffsetDateTime>,
    ) {
        self.keep(ticket, jwt_key(bearer, keys_generation), bearer, principal, expires_at);
    }

    fn keep(
        &self,
        ticket: Ticket,
        key: (Kind, Uuid),
        secret: &str,
        principal: &Principal,
        expires_at: Option<OffsetDateTime>,
    ) {
        if self.ttl.is_zero() {
            return;
        }
        let now = Instant::now();
        let mut ttl = self.ttl;
        if let Some(at) = expires_at {
            let left = at - crate::clock::now();
            if !left.is_positive() {
                return;
            }
            ttl = ttl.min(left.unsigned_abs());
        }
        let mut inner = self.lock();
        if inner.generation != ticket.0 {
            return;
        }
        if inner.entries.len() >= MAX_ENTRIES {
            inner.entries.retain(|_, e| e.until > now);
            if inner.entries.len() >= MAX_ENTRIES {
                return;
            }
        }
        let entry = Entry { secret: hash_secret(secret), principal: principal.clone(), until: now + ttl };
        inner.entries.insert(key, entry);
    }

    /// Forgets every cached credential: called on any change that may withdraw one.
    pub fn invalidate(&self) {
        let mut inner = self.lock();
        inner.generation += 1;
        inner.entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{SessionId, TenantId, UserId};
    use crate::principal::{Credential, Role};
    use conclave_auth::IssuedCredential;

    fn principal() -> Principal {
        Principal {
            tenant_id: TenantId(Uuid::new_v4()),
            user_id: UserId(Uuid::new_v4()),
            role: Role::Member,
            credential: Credential::Session(SessionId(Uuid::new_v4())),
            must_change_password: false,
            mfa_enrollment_pending: false,
        }
    }

    fn credential() -> ParsedCredential {
        let issued = IssuedCredential::new(CredentialKind::AccessToken);
        ParsedCredential::parse(issued.token.expose_secret()).unwrap()
    }

    #[test]
    fn a_verified_credential_is_served_from_the_cache_only_with_its_secret() {
        let cache = CredentialCache::new(Duration::from_secs(60));
        let cred = credential();
        let Err(ticket) = cache.get(&cred) else { panic!("empty cache answered") };
        let p = principal();
        cache.store(ticket, &cred, &p, None);
        assert_eq!(cache.get(&cred).expect("cached").user_id, p.user_id);
        let other = IssuedCredential::new(CredentialKind::AccessToken);
        let mut forged = ParsedCredential::parse(other.token.expose_secret()).unwrap();
        forged.id = cred.id;
        assert!(cache.get(&forged).is_err(), "a wrong secret must miss");
    }

    #[test]
    fn invalidation_empties_the_cache_and_voids_lookups_in_flight() {
        let cache = CredentialCache::new(Duration::from_secs(60));
        let (a, b) = (credential(), credential());
        let Err(ticket) = cache.get(&a) else { panic!() };
        cache.store(ticket, &a, &principal(), None);
        let Err(in_flight) = cache.get(&b) else { panic!() };
        cache.invalidate();
        assert!(cache.get(&a).is_err(), "invalidated entry served");
        cache.store(in_flight, &b, &principal(), None);
        assert!(cache.get(&b).is_err(), "a lookup from before the invalidation was stored");
    }

    #[test]
    fn entries_never_outlive_the_credential_or_a_zero_ttl() {
        let cache = CredentialCache::new(Duration::from_secs(60));
        let cred = credential();
        let Err(ticket) = cache.get(&cred) else { panic!() };
        cache.store(ticket, &cred, &principal(), Some(crate::clock::now() - time::Duration::seconds(1)));
        assert!(cache.get(&cred).is_err(), "an expired credential was cached");
        let off = CredentialCache::new(Duration::ZERO);
        let Err(ticket) = off.get(&cred) else { panic!() };
        off.store(ticket, &cred, &principal(), None);
        assert!(off.get(&cred).is_err(), "a zero TTL must not cache");
    }

    #[test]
    fn a_jwt_is_served_from_the_cache_only_when_whole_and_never_past_its_exp() {
        let cache = CredentialCache::new(Duration::from_secs(60));
        let jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhZGEifQ.c2lnbmF0dXJl";
        let Err(ticket) = cache.get_jwt(jwt, 1) else { panic!("empty cache answered") };
        let p = principal();
        cache.store_jwt(ticket, jwt, 1, &p, Some(crate::clock::now() + time::Duration::minutes(5)));
        assert_eq!(cache.get_jwt(jwt, 1).expect("cached").user_id, p.user_id);
        assert!(cache.get_jwt(&format!("{jwt}x"), 1).is_err(), "another token misses");
        assert!(cache.get_jwt(jwt, 2).is_err(), "a replaced key set misses");
        let parsed = credential();
        assert!(cache.get(&parsed).is_err(), "kinds never share entries");
        cache.invalidate();
        assert!(cache.get_jwt(jwt, 1).is_err());
        let Err(ticket) = cache.get_jwt(jwt, 1) else { panic!() };
        cache.store_jwt(ticket, jwt, 1, &p, Some(crate::clock::now() - time::Duration::seconds(1)));
        assert!(cache.get_jwt(jwt, 1).is_err(), "an expired JWT was cached");
    }
}
