//! Single sign-on identities and tenants, and the TOTP second factor: the store's half of the
//! guarantees (one user per issuer and subject, one tenant per organisation, a code step used
//! once even when two requests race).

use conclave_core::content::Sealed;
use conclave_core::principal::Role;
use conclave_core::records::NewUser;
use conclave_core::store::{constraints, Store};
use conclave_core::StoreError;

use crate::records::new_user;

const ISSUER: &str = "https://login.example/tenant/v2.0";

fn sso_user(email: &str) -> NewUser {
    NewUser { password_hash: None, ..new_user(email, false) }
}

async fn identities_are_issuer_and_subject(store: &dyn Store) {
    let t = store.default_tenant("Default").await.unwrap();
    store.create_user(t.id, new_user("admin@example.com", true)).await.unwrap();
    assert_eq!(store.find_identity(ISSUER, "sub-1").await.unwrap(), None);
    let user = store.provision_identity(t.id, sso_user("ada@example.com"), ISSUER, "sub-1").await.unwrap();
    assert_eq!(store.find_identity(ISSUER, "sub-1").await.unwrap(), Some((t.id, user.id)));
    assert_eq!(store.find_identity("https://other.example", "sub-1").await.unwrap(), None);

    // The same subject again: refused, and nothing of the second user is left behind.
    let again = store.provision_identity(t.id, sso_user("ada2@example.com"), ISSUER, "sub-1").await;
    assert!(matches!(again, Err(StoreError::Constraint(c)) if c == constraints::IDENTITY_UNIQUE));
    assert!(store.find_login("ada2@example.com").await.unwrap().is_none(), "rolled back");
    // An email taken by another account.
    let taken = store.provision_identity(t.id, sso_user("admin@example.com"), ISSUER, "sub-2").await;
    assert!(matches!(taken, Err(StoreError::Constraint(c)) if c == constraints::USER_EMAIL_UNIQUE));
    assert_eq!(store.find_identity(ISSUER, "sub-2").await.unwrap(), None);

    // The profile follows the claims, the email index with it.
    let updated =
        store.update_identity_profile(t.id, user.id, "ada.l@example.com", "Ada L.", Role::Auditor).await.unwrap();
    assert_eq!(
        (updated.email.as_str(), updated.display_name.as_str(), updated.role),
        ("ada.l@example.com", "Ada L.", Role::Auditor)
    );
    assert!(store.find_login("ada@example.com").await.unwrap().is_none());
    assert_eq!(store.find_login("ada.l@example.com").await.unwrap().map(|(_, l)| l.user.id), Some(user.id));
    let clash = store.update_identity_profile(t.id, user.id, "admin@example.com", "Ada", Role::Member).await;
    assert!(matches!(clash, Err(StoreError::Constraint(c)) if c == constraints::USER_EMAIL_UNIQUE));

    // Deleting the user removes the identity.
    let admin = store.find_login("admin@example.com").await.unwrap().unwrap().1.user.id;
    store.delete_user(t.id, user.id, admin).await.unwrap();
    assert_eq!(store.find_identity(ISSUER, "sub-1").await.unwrap(), None);
}

async fn one_tenant_per_organisation(store: &dyn Store) {
    assert_eq!(store.find_sso_tenant(ISSUER, "org-1").await.unwrap(), None);
    let made = futures::future::join_all((0..6).map(|_| store.create_sso_tenant(ISSUER, "org-1", "Org One"))).await;
    let ids: Vec<_> = made.into_iter().map(Result::unwrap).collect();
    assert!(ids.iter().all(|id| *id == ids[0]), "concurrent first sign-ins share one tenant: {ids:?}");
    assert_eq!(store.find_sso_tenant(ISSUER, "org-1").await.unwrap(), Some(ids[0]));
    assert_eq!(store.get_tenant(ids[0]).await.unwrap().name, "Org One");
    let other = store.create_sso_tenant(ISSUER, "org-2", "Org Two").await.unwrap();
    assert_ne!(other, ids[0]);
}

async fn totp_enrolment_steps_and_recovery_codes(store: &dyn Store) {
    let t = store.default_tenant("Default").await.unwrap();
    let u = store.create_user(t.id, new_user("mia@example.com", true)).await.unwrap();
    assert!(store.get_mfa(t.id, u.id).await.unwrap().is_none());
    assert!(!store.use_totp_step(t.id, u.id, 10).await.unwrap(), "nothing enrolled");

    store.put_pending_mfa(t.id, u.id, &Sealed(vec![1, 2, 3])).await.unwrap();
    store.put_pending_mfa(t.id, u.id, &Sealed(vec![1, 4, 5])).await.unwrap();
    let pending = store.get_mfa(t.id, u.id).await.unwrap().unwrap();
    assert!(!pending.enabled);
    assert_eq!(pending.secret, Sealed(vec![1, 4, 5]), "a restart replaces the pending secret");
    assert!(!store.use_totp_step(t.id, u.id, 10).await.unwrap(), "a pending enrolment signs nothing in");

    let codes = vec![vec![1u8; 32], vec![2u8; 32]];
    assert!(store.enable_mfa(t.id, u.id, 100, &codes).await.unwrap());
    assert!(!store.enable_mfa(t.id, u.id, 101, &codes).await.unwrap(), "only a pending enrolment is enabled");
    let on = store.get_mfa(t.id, u.id).await.unwrap().unwrap();
    assert!(on.enabled);
    assert_eq!(on.last_step, Some(100));
    assert_eq!(on.recovery_codes_left, 2);
    assert!(matches!(store.put_pending_mfa(t.id, u.id, &Sealed(vec![9])).await, Err(StoreError::Constraint(_))));

    // A step is used once, and never before the last one; of racing uses exactly one wins.
    assert!(!store.use_totp_step(t.id, u.id, 100).await.unwrap());
    assert!(!store.use_totp_step(t.id, u.id, 99).await.unwrap());
    let raced = futures::future::join_all((0..6).map(|_| store.use_totp_step(t.id, u.id, 101))).await;
    assert_eq!(raced.into_iter().filter(|r| *r.as_ref().unwrap()).count(), 1);

    assert!(store.use_recovery_code(t.id, u.id, &codes[0]).await.unwrap());
    assert!(!store.use_recovery_code(t.id, u.id, &codes[0]).await.unwrap());
    assert!(!store.use_recovery_code(t.id, u.id, &[7u8; 32]).await.unwrap());
    assert_eq!(store.get_mfa(t.id, u.id).await.unwrap().unwrap().recovery_codes_left, 1);
    store.replace_recovery_codes(t.id, u.id, &[vec![3u8; 32]]).await.unwrap();
    assert!(!store.use_recovery_code(t.id, u.id, &codes[1]).await.unwrap(), "replaced codes are void");
    assert!(store.use_recovery_code(t.id, u.id, &[3u8; 32]).await.unwrap());

    assert!(store.delete_mfa(t.id, u.id).await.unwrap());
    assert!(!store.delete_mfa(t.id, u.id).await.unwrap());
    assert!(store.get_mfa(t.id, u.id).await.unwrap().is_none());
}

crate::both_backends!(
    identities_are_issuer_and_subject,
    one_tenant_per_organisation,
    totp_enrolment_steps_and_recovery_codes
);
