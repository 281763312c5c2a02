//! Wrapped keys and sealed content: round trips, and failure on a wrong key, a wrong binding or
//! any altered byte; the parser never panics.

use conclave_crypto::{open, seal, unwrap_key, wrap_key, Binding, CryptoError, Key, KeyId, KeyRef, WrappedKey};
use proptest::prelude::*;
use uuid::Uuid;

fn kek_ref() -> KeyRef {
    KeyRef::new(KeyId::new("local:test").unwrap(), 3)
}

fn lek_binding(library: u128) -> Binding {
    Binding::lek(Uuid::from_u128(1), Uuid::from_u128(library))
}

#[test]
fn wrap_round_trip_and_wrong_binding() {
    let kek = Key::generate();
    let lek = Key::generate();
    let wrapped = wrap_key(&kek, &kek_ref(), &lek, &lek_binding(10)).unwrap();
    let parsed = WrappedKey::parse(&wrapped.to_bytes()).unwrap();
    assert_eq!(parsed, wrapped);
    assert_eq!(unwrap_key(&kek, &parsed, &lek_binding(10)).unwrap().expose_secret(), lek.expose_secret());

    // The same wrapped key presented for another library, tenant or purpose.
    for other in [
        lek_binding(11),
        Binding::lek(Uuid::from_u128(2), Uuid::from_u128(10)),
        Binding::cek(Uuid::from_u128(1), Uuid::from_u128(10)),
    ] {
        assert!(matches!(unwrap_key(&kek, &parsed, &other), Err(CryptoError::Integrity)));
    }
    assert!(matches!(unwrap_key(&Key::generate(), &parsed, &lek_binding(10)), Err(CryptoError::Integrity)));
}

#[test]
fn every_altered_byte_of_a_wrapped_key_fails() {
    let kek = Key::generate();
    let bytes = wrap_key(&kek, &kek_ref(), &Key::generate(), &lek_binding(10)).unwrap().to_bytes();
    for i in 0..bytes.len() {
        for bit in 0..8 {
            let mut altered = bytes.clone();
            altered[i] ^= 1 << bit;
            if let Ok(w) = WrappedKey::parse(&altered) {
                assert!(unwrap_key(&kek, &w, &lek_binding(10)).is_err(), "byte {i} bit {bit}");
            }
        }
    }
}

#[test]
fn every_altered_byte_of_a_sealed_value_fails() {
    let key = Key::generate();
    let binding = Binding::message_content(Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3));
    let sealed = seal(&key, &binding, b"privileged and confidential").unwrap();
    for i in 0..sealed.len() {
        for bit in 0..8 {
            let mut altered = sealed.clone();
            altered[i] ^= 1 << bit;
            assert!(open(&key, &binding, &altered).is_err(), "byte {i} bit {bit}");
        }
    }
    for cut in 0..sealed.len() {
        assert!(open(&key, &binding, &sealed[..cut]).is_err(), "cut at {cut}");
    }
}

#[test]
fn sealed_value_moved_to_another_message_fails() {
    let key = Key::generate();
    let (t, c) = (Uuid::from_u128(1), Uuid::from_u128(2));
    let sealed = seal(&key, &Binding::message_content(t, c, Uuid::from_u128(3)), b"hello").unwrap();
    assert!(matches!(
        open(&key, &Binding::message_content(t, c, Uuid::from_u128(4)), &sealed),
        Err(CryptoError::Integrity)
    ));
    assert!(matches!(open(&key, &Binding::conversation_title(t, c), &sealed), Err(CryptoError::Integrity)));
}

#[test]
fn two_seals_of_the_same_text_differ() {
    let key = Key::generate();
    let binding = Binding::conversation_title(Uuid::nil(), Uuid::nil());
    assert_ne!(seal(&key, &binding, b"same").unwrap(), seal(&key, &binding, b"same").unwrap());
}

proptest! {
    #[test]
    fn wrapped_key_parse_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(w) = WrappedKey::parse(&bytes) {
            prop_assert_eq!(w.to_bytes(), bytes);
        }
    }

    #[test]
    fn wrapped_key_parse_never_panics_near_valid(
        id in "[a-z:]{1,20}",
        version in any::<u32>(),
        cut in any::<prop::sample::Index>(),
        flip in any::<prop::sample::Index>(),
    ) {
        let kek = Key::generate();
        let wrapped = wrap_key(&kek, &KeyRef::new(KeyId::new(id).unwrap(), version), &Key::generate(), &lek_binding(1)).unwrap();
        let bytes = wrapped.to_bytes();
        prop_assert!(WrappedKey::parse(&bytes[..cut.index(bytes.len())]).is_err());
        let mut altered = bytes.clone();
        altered[flip.index(bytes.len())] ^= 0x80;
        if let Ok(w) = WrappedKey::parse(&altered) {
            prop_assert!(unwrap_key(&kek, &w, &lek_binding(1)).is_err());
        }
    }

    #[test]
    fn seal_round_trip(plaintext in prop::collection::vec(any::<u8>(), 0..512), message in any::<u128>()) {
        let key = Key::generate();
        let binding = Binding::message_content(Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(message));
        let sealed = seal(&key, &binding, &plaintext).unwrap();
        prop_assert_eq!(sealed.len(), plaintext.len() + 29);
        prop_assert_eq!(open(&key, &binding, &sealed).unwrap(), plaintext);
    }

    #[test]
    fn open_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..100)) {
        let key = Key::generate();
        prop_assert!(open(&key, &Binding::tek(Uuid::nil()), &bytes).is_err());
    }
}
