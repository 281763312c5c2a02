//! Data written by earlier builds still opens: ciphertexts produced by the first AES-256-GCM
//! backend (RustCrypto `aes-gcm` 0.10.3, commit 7fb8a50) and committed as fixtures, opened by
//! whichever backend the crate uses now. A backend that differed in any way (algorithm, nonce
//! layout, associated data, tag) fails these tests, so switching backends cannot strand stored
//! documents, messages or wrapped keys.
//!
//! The 64 KiB-segment object is large on purpose: AES-GCM libraries take other code paths
//! (wide vector units, several blocks at once) for long inputs than for the short Wycheproof
//! vectors, and stored documents are almost all long inputs.

use conclave_crypto::segment::{self, RangePlan, SegmentHeader, HEADER_LEN};
use conclave_crypto::{open, unwrap_key, Binding, Key, KeyId, KeyRef, WrappedKey};
use uuid::Uuid;

/// The fixed key every stored vector was made with: bytes 0, 1, …, 31.
fn vector_key() -> Key {
    Key::from_slice(&(0u8..32).collect::<Vec<u8>>()).unwrap()
}

/// The document version the stored objects are bound to.
fn vector_segment_binding() -> Binding {
    Binding::document_segment(Uuid::from_u128(0x0a), Uuid::from_u128(0x0b), Uuid::from_u128(0x0c), 3)
}

/// The plaintext of the stored objects, `len` bytes: not periodic in 16 or 64 KiB, so a segment
/// or block decrypted at the wrong place cannot look right.
fn vector_plaintext(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8 ^ (i >> 16) as u8).collect()
}

/// Plaintext length of the 64 KiB-segment object: two full segments and a last one of 1000 bytes.
const LARGE_LEN: usize = 2 * 65536 + 1000;
/// Plaintext length and segment size of the small object.
const SMALL_LEN: usize = 130;
const SMALL_SEGMENT: u32 = 64;

fn fixture(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

/// Sealed value (format 1) of [`SEALED_TEXT`] under [`vector_key`], bound to a conversation title.
const SEALED: &str = include_str!("../fixtures/sealed-v1.hex");
const SEALED_TEXT: &str = "Merger plan — privileged";

/// Wrapped keys (formats 1 and 2) of the key `[0x5a; 32]` under [`vector_key`], bound to an LEK.
const WRAPPED_V1: &str = include_str!("../fixtures/wrapped-v1.hex");
const WRAPPED_V2: &str = include_str!("../fixtures/wrapped-v2.hex");

fn wrap_binding() -> Binding {
    Binding::lek(Uuid::from_u128(0x0a), Uuid::from_u128(0x0b))
}

fn vector_kek_ref() -> KeyRef {
    KeyRef::new(KeyId::new("local:stored-vectors").unwrap(), 2)
}

#[test]
fn segmented_object_with_64k_segments_opens() {
    let object = fixture("segmented-v1-64k.bin");
    let header = SegmentHeader::parse(&object[..HEADER_LEN]).unwrap();
    assert_eq!(header.segment_size(), 65536);
    assert_eq!(header.plaintext_len(object.len() as u64).unwrap(), LARGE_LEN as u64);
    let plaintext = vector_plaintext(LARGE_LEN);
    assert_eq!(segment::decrypt(&vector_key(), &vector_segment_binding(), &object).unwrap(), plaintext);

    // A range across the boundary of the first two segments, and one in the last segment.
    for range in [65000u64..70000, LARGE_LEN as u64 - 700..LARGE_LEN as u64] {
        let plan = RangePlan::new(&header, LARGE_LEN as u64, range.clone()).unwrap();
        let stored = plan.ciphertext_range();
        let got = segment::decrypt_range(
            &vector_key(),
            &vector_segment_binding(),
            &plan,
            &object[stored.start as usize..stored.end as usize],
        )
        .unwrap();
        assert_eq!(got, &plaintext[range.start as usize..range.end as usize]);
    }

    // The same bytes under another version's binding are refused: the fixture is not opening by
    // accident.
    let other = Binding::document_segment(Uuid::from_u128(0x0a), Uuid::from_u128(0x0b), Uuid::from_u128(0x0c), 4);
    assert!(segment::decrypt(&vector_key(), &other, &object).is_err());
}

#[test]
fn segmented_object_with_small_segments_opens() {
    let object = fixture("segmented-v1-small.bin");
    let header = SegmentHeader::parse(&object[..HEADER_LEN]).unwrap();
    assert_eq!(header.segment_size(), SMALL_SEGMENT);
    assert_eq!(
        segment::decrypt(&vector_key(), &vector_segment_binding(), &object).unwrap(),
        vector_plaintext(SMALL_LEN)
    );
}

#[test]
fn sealed_value_opens() {
    let binding = Binding::conversation_title(Uuid::from_u128(0x0a), Uuid::from_u128(0x0d));
    assert_eq!(open(&vector_key(), &binding, &hex(SEALED)).unwrap(), SEALED_TEXT.as_bytes());
}

#[test]
fn wrapped_keys_unwrap() {
    for (what, stored) in [("v1", WRAPPED_V1), ("v2", WRAPPED_V2)] {
        let wrapped = WrappedKey::parse(&hex(stored)).unwrap();
        assert_eq!(wrapped.kek(), &vector_kek_ref(), "{what}");
        let key = unwrap_key(&vector_key(), &wrapped, &wrap_binding()).unwrap();
        assert_eq!(key.expose_secret(), &[0x5a; 32], "{what}");
    }
}
