//! Wrapped-key format version 2 (a provider-wrapped intermediate key, the data key under it with
//! the binding as associated data): round trip, and failure on truncation, any bit flip, a swapped
//! binding or a swapped provider ciphertext; the parser never panics on any input.

use conclave_crypto::{
    unwrap_key, wrap_key, wrap_key_v2, Binding, CryptoError, Key, KeyId, KeyRef, ProviderWrap, WrappedKey,
};
use proptest::prelude::*;
use uuid::Uuid;

fn kek_ref() -> KeyRef {
    KeyRef::new(KeyId::new("https://vault.example/keys/conclave-kek").unwrap(), 4)
}

fn binding(conversation: u128) -> Binding {
    Binding::cek(Uuid::from_u128(1), Uuid::from_u128(conversation))
}

/// A v2 wrapped key with a stand-in provider ciphertext (the provider's part is opaque here).
fn wrapped(intermediate: &Key, key: &Key, b: &Binding, provider_bytes: &[u8]) -> WrappedKey {
    let provider = ProviderWrap::new("5f2c0e9a4b7d4c1e8a3b6d9e0f1a2b3c", provider_bytes.to_vec()).unwrap();
    wrap_key_v2(intermediate, &kek_ref(), provider, key, b).unwrap()
}

#[test]
fn round_trip_records_both_versions() {
    let (intermediate, key) = (Key::generate(), Key::generate());
    let w = wrapped(&intermediate, &key, &binding(10), &[7; 256]);
    let parsed = WrappedKey::parse(&w.to_bytes()).unwrap();
    assert_eq!(parsed.kek(), &kek_ref());
    assert_eq!(parsed.format_version(), 2);
    assert_eq!(parsed.provider_wrap().unwrap().version_name(), "5f2c0e9a4b7d4c1e8a3b6d9e0f1a2b3c");
    assert_eq!(parsed.provider_wrap().unwrap().ciphertext(), &[7; 256]);
    assert_eq!(unwrap_key(&intermediate, &parsed, &binding(10)).unwrap().expose_secret(), key.expose_secret());
}

#[test]
fn copied_to_another_row_fails() {
    let (intermediate, key) = (Key::generate(), Key::generate());
    let w = wrapped(&intermediate, &key, &binding(10), &[7; 256]);
    for other in [binding(11), Binding::cek(Uuid::from_u128(2), Uuid::from_u128(10)), Binding::tek(Uuid::from_u128(1))]
    {
        assert!(matches!(unwrap_key(&intermediate, &w, &other), Err(CryptoError::Integrity)));
    }
}

#[test]
fn provider_ciphertext_swapped_between_rows_fails() {
    // Row A's provider ciphertext grafted onto row B's body: even a provider that unwraps it to
    // A's intermediate key cannot open B, and B's own intermediate no longer matches the header.
    let (ia, ib) = (Key::generate(), Key::generate());
    let a = wrapped(&ia, &Key::generate(), &binding(1), &[1; 256]).to_bytes();
    let b = wrapped(&ib, &Key::generate(), &binding(2), &[2; 256]).to_bytes();
    let header_len = a.len() - 60;
    let graft = WrappedKey::parse(&[&a[..header_len], &b[header_len..]].concat()).unwrap();
    assert!(unwrap_key(&ia, &graft, &binding(2)).is_err());
    assert!(unwrap_key(&ib, &graft, &binding(2)).is_err());
}

#[test]
fn every_bit_flip_fails_and_every_truncation_is_rejected() {
    let (intermediate, key) = (Key::generate(), Key::generate());
    let bytes = wrapped(&intermediate, &key, &binding(3), &[0x33; 64]).to_bytes();
    for i in 0..bytes.len() {
        for bit in 0..8 {
            let mut altered = bytes.clone();
            altered[i] ^= 1 << bit;
            if let Ok(w) = WrappedKey::parse(&altered) {
                assert!(unwrap_key(&intermediate, &w, &binding(3)).is_err(), "byte {i} bit {bit}");
            }
        }
    }
    for len in 0..bytes.len() {
        assert!(WrappedKey::parse(&bytes[..len]).is_err(), "truncated to {len}");
    }
    assert!(WrappedKey::parse(&[&bytes[..], &[0]].concat()).is_err(), "trailing byte");
}

#[test]
fn version_1_still_reads() {
    let (kek, key) = (Key::generate(), Key::generate());
    let v1 = wrap_key(&kek, &kek_ref(), &key, &binding(5)).unwrap().to_bytes();
    assert_eq!(v1[0], 1);
    let parsed = WrappedKey::parse(&v1).unwrap();
    assert_eq!(parsed.format_version(), 1);
    assert!(parsed.provider_wrap().is_none());
    assert_eq!(unwrap_key(&kek, &parsed, &binding(5)).unwrap().expose_secret(), key.expose_secret());
}

#[test]
fn provider_wrap_limits() {
    assert!(ProviderWrap::new("", vec![1]).is_err());
    assert!(ProviderWrap::new("a b", vec![1]).is_err());
    assert!(ProviderWrap::new("x".repeat(256), vec![1]).is_err());
    assert!(ProviderWrap::new("v", vec![]).is_err());
    assert!(ProviderWrap::new("v", vec![0; 2049]).is_err());
    assert!(ProviderWrap::new("x".repeat(255), vec![0; 2048]).is_ok());
}

proptest! {
    #[test]
    fn parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..700)) {
        let _ = WrappedKey::parse(&bytes);
        let mut v2 = bytes.clone();
        if let Some(first) = v2.first_mut() { *first = 2; }
        if let Ok(w) = WrappedKey::parse(&v2) {
            prop_assert_eq!(w.to_bytes(), v2);
        }
    }

    #[test]
    fn any_truncation_or_flip_fails(
        provider_len in 1usize..600,
        name_len in 1usize..40,
        cut in any::<prop::sample::Index>(),
        flip in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let (intermediate, key) = (Key::generate(), Key::generate());
        let provider = ProviderWrap::new("v".repeat(name_len), vec![0xa5; provider_len]).unwrap();
        let bytes = wrap_key_v2(&intermediate, &kek_ref(), provider, &key, &binding(9)).unwrap().to_bytes();
        prop_assert!(WrappedKey::parse(&bytes[..cut.index(bytes.len())]).is_err());
        let mut altered = bytes.clone();
        altered[flip.index(bytes.len())] ^= 1 << bit;
        if let Ok(w) = WrappedKey::parse(&altered) {
            prop_assert!(unwrap_key(&intermediate, &w, &binding(9)).is_err());
        }
    }
}
