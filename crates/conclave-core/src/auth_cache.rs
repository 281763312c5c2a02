//! A short-lived, in-process cache of verified bearer credentials (access tokens and API keys)
//! and the principal each stands for, so that a busy client is not looked up in the database on
//! every call.
//!
//! - An entry is keyed by the credential's id and keeps only the SHA-256 of its secret, compared
//!   in constant time; a presented secret that does not match is a miss, checked in the database.
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
use secrecy::ExposeSecret;
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

#[derive(Default)]
struct Inner {
    entries: HashMap<(bool, Uuid), Entry>,
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

fn key(parsed: &ParsedCredential) -> (bool, Uuid) {
    (parsed.kind == CredentialKind::ApiKey, parsed.id)
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
        if self.ttl.is_zero() {
            return Err(Ticket(0));
        }
        let inner = self.lock();
        match inner.entries.get(&key(parsed)) {
            Some(e) if e.until > Instant::now() && e.secret.matches(&parsed.secret) => Ok(e.principal.clone()),
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
        let entry = Entry {
            secret: hash_secret(parsed.secret.expose_secret()),
            principal: principal.clone(),
            until: now + ttl,
        };
        inner.entries.insert(key(parsed), entry);
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
}
