//! The binding encoding is injective and canonical.

use conclave_crypto::{Binding, FieldName, Purpose};
use proptest::prelude::*;
use uuid::Uuid;

/// Bindings drawn from small pools of ids and names, so that near-identical pairs (one field
/// apart, one id moved to another field, names that are prefixes of each other) come up often.
fn binding() -> impl Strategy<Value = Binding> {
    let id = || prop::option::of((0u128..3).prop_map(Uuid::from_u128));
    let field = prop::option::of(prop::sample::select(vec!["a", "ab", "a.b", "b", "name", "namea"]));
    (
        prop::sample::select(Purpose::ALL.to_vec()),
        (0u128..2).prop_map(Uuid::from_u128),
        (id(), id(), id(), id(), id()),
        prop::option::of(prop_oneof![Just(0u64), Just(1), Just(u64::MAX), any::<u64>()]),
        field,
    )
        .prop_map(|(purpose, tenant, (library, conversation, message, agent, document), version, field)| {
            let mut b = Binding::new(purpose, tenant);
            if let Some(id) = library {
                b = b.with_library(id);
            }
            if let Some(id) = conversation {
                b = b.with_conversation(id);
            }
            if let Some(id) = message {
                b = b.with_message(id);
            }
            if let Some(id) = agent {
                b = b.with_agent(id);
            }
            if let Some(id) = document {
                b = b.with_document(id);
            }
            if let Some(v) = version {
                b = b.with_document_version(v);
            }
            if let Some(f) = field {
                b = b.with_field(FieldName::new(f).unwrap());
            }
            b
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn different_bindings_never_encode_alike(a in binding(), b in binding()) {
        prop_assert_eq!(a == b, a.to_bytes() == b.to_bytes());
    }

    #[test]
    fn encoding_is_prefix_free(a in binding(), b in binding()) {
        // So that `binding ‖ header` cannot be read as another binding with another header.
        let (x, y) = (a.to_bytes(), b.to_bytes());
        if a != b {
            prop_assert!(!y.starts_with(&x));
        }
    }

    #[test]
    fn decode_inverts_encode(a in binding()) {
        prop_assert_eq!(Binding::decode(&a.to_bytes()).unwrap(), a);
    }

    #[test]
    fn decode_never_panics_and_accepts_only_canonical(bytes in prop::collection::vec(any::<u8>(), 0..80)) {
        if let Ok(b) = Binding::decode(&bytes) {
            prop_assert_eq!(b.to_bytes(), bytes);
        }
    }
}

#[test]
fn typed_constructors_differ_by_purpose() {
    let (t, x) = (Uuid::from_u128(1), Uuid::from_u128(2));
    let name = FieldName::from_static("name");
    let all = [
        Binding::tek(t),
        Binding::lek(t, x),
        Binding::cek(t, x),
        Binding::fek(t, x, x, 1),
        Binding::message_content(t, x, x),
        Binding::conversation_title(t, x),
        Binding::agent_field(t, x, name.clone()),
        Binding::document_name(t, x, x),
        Binding::document_segment(t, x, x, 1),
        Binding::library_field(t, x, name.clone()),
        Binding::tenant_field(t, name),
    ];
    let mut encodings: Vec<Vec<u8>> = all.iter().map(Binding::to_bytes).collect();
    encodings.sort();
    encodings.dedup();
    assert_eq!(encodings.len(), all.len());
    // A library id and a conversation id with the same value still differ.
    assert_ne!(
        Binding::new(Purpose::Tek, t).with_library(x).to_bytes(),
        Binding::new(Purpose::Tek, t).with_conversation(x).to_bytes()
    );
}
