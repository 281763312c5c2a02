//! Replays the saved fuzz corpus (`fuzz/corpus/<target>/`) through the same bodies the
//! `cargo fuzz` targets run, so `cargo test` covers them without nightly.

use std::path::{Path, PathBuf};

use conclave_crypto::fuzzing;

fn corpus(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target)
}

/// Runs every saved input; returns (accepted, rejected).
fn replay(target: &str, body: fn(&[u8]) -> bool) -> (usize, usize) {
    let dir = corpus(target);
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let (mut accepted, mut rejected) = (0, 0);
    for entry in entries {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let result = std::panic::catch_unwind(|| body(&data));
        match result {
            Ok(true) => accepted += 1,
            Ok(false) => rejected += 1,
            Err(_) => panic!("fuzz body panicked on {}", path.display()),
        }
    }
    (accepted, rejected)
}

#[test]
fn wrapped_key_parse_corpus() {
    let (accepted, rejected) = replay("wrapped_key_parse", fuzzing::wrapped_key_parse);
    assert!(accepted >= 2 && rejected >= 5, "{accepted} accepted, {rejected} rejected");
}

#[test]
fn segment_decrypt_corpus() {
    let (accepted, rejected) = replay("segment_decrypt", fuzzing::segment_decrypt);
    assert!(accepted >= 3 && rejected >= 3, "{accepted} accepted, {rejected} rejected");
}

#[test]
fn binding_decode_corpus() {
    let (accepted, rejected) = replay("binding_decode", fuzzing::binding_decode);
    assert!(accepted >= 3 && rejected >= 2, "{accepted} accepted, {rejected} rejected");
}

/// Writes the seed corpus. Run by hand after a format change:
/// `cargo test -p conclave-crypto --test it -- --ignored regenerate_fuzz_corpus`
#[test]
#[ignore = "writes files; run by hand to regenerate the seed corpus"]
fn regenerate_fuzz_corpus() {
    use conclave_crypto::segment;
    use conclave_crypto::{wrap_key, Binding, FieldName, Key, KeyId, KeyRef};
    use uuid::Uuid;

    let write = |target: &str, name: &str, data: &[u8]| {
        let dir = corpus(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), data).unwrap();
    };
    let key = fuzzing::fuzz_key();

    let kek_ref = KeyRef::new(KeyId::new("local:fuzz").unwrap(), 1);
    let valid = wrap_key(&key, &kek_ref, &Key::from_slice(&[9; 32]).unwrap(), &fuzzing::fuzz_wrap_binding())
        .unwrap()
        .to_bytes();
    write("wrapped_key_parse", "valid", &valid);
    let other = Binding::lek(Uuid::from_u128(1), Uuid::from_u128(77));
    write("wrapped_key_parse", "other-binding", &wrap_key(&key, &kek_ref, &key, &other).unwrap().to_bytes());
    write("wrapped_key_parse", "truncated", &valid[..valid.len() - 1]);
    write("wrapped_key_parse", "empty", b"");
    let mut v2 = valid.clone();
    v2[0] = 2;
    write("wrapped_key_parse", "version-2", &v2);
    let mut v3 = valid.clone();
    v3[0] = 3;
    write("wrapped_key_parse", "version-3", &v3);
    let provider = conclave_crypto::ProviderWrap::new("0123abcd", vec![0x5a; 256]).unwrap();
    let valid_v2 = conclave_crypto::wrap_key_v2(
        &key,
        &kek_ref,
        provider,
        &Key::from_slice(&[9; 32]).unwrap(),
        &fuzzing::fuzz_wrap_binding(),
    )
    .unwrap()
    .to_bytes();
    write("wrapped_key_parse", "valid-v2", &valid_v2);
    write("wrapped_key_parse", "truncated-v2", &valid_v2[..40]);
    let mut no_id = valid.clone();
    no_id[1..3].copy_from_slice(&[0, 0]);
    write("wrapped_key_parse", "empty-key-id", &no_id);
    let mut huge_id = valid.clone();
    huge_id[1..3].copy_from_slice(&[0xff, 0xff]);
    write("wrapped_key_parse", "huge-key-id", &huge_id);

    let binding = fuzzing::fuzz_segment_binding();
    for (name, len, seg) in [("empty", 0usize, 16u32), ("one-segment", 16, 16), ("partial", 40, 16), ("three", 100, 32)]
    {
        let plaintext: Vec<u8> = (0..len).map(|i| i as u8).collect();
        let object = segment::encrypt(&key, &binding, &plaintext, seg).unwrap();
        write("segment_decrypt", &format!("valid-{name}"), &[&[7u8][..], &object].concat());
        if name == "partial" {
            write("segment_decrypt", "truncated", &[&[5u8][..], &object[..object.len() - 24]].concat());
            let mut flipped = object.clone();
            flipped[30] ^= 4;
            write("segment_decrypt", "flipped", &[&[64u8][..], &flipped].concat());
            write("segment_decrypt", "header-only", &[&[1u8][..], &object[..16]].concat());
        }
    }
    write("segment_decrypt", "empty", b"");
    write("segment_decrypt", "bad-magic", b"\x03XXXX\x01\x00\x00\x00\x10abcdefg0123456789abcdef");

    let t = Uuid::from_u128(5);
    for (name, b) in [
        ("tek", Binding::tek(t)),
        ("fek", Binding::fek(t, t, t, 3)),
        ("agent-field", Binding::agent_field(t, t, FieldName::from_static("instructions"))),
        ("message", Binding::message_content(t, t, t)),
    ] {
        write("binding_decode", name, &b.to_bytes());
    }
    write("binding_decode", "empty", b"");
    let mut out_of_order = Binding::tek(t).to_bytes();
    out_of_order[18] = 2;
    out_of_order.extend([2, 16]);
    out_of_order.extend([0; 16]);
    out_of_order.extend([1, 16]);
    out_of_order.extend([0; 16]);
    write("binding_decode", "out-of-order", &out_of_order);
}
