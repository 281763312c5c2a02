//! The bodies of the `cargo fuzz` targets in `fuzz/`, kept here so the saved corpus replays
//! through the same code as ordinary tests. Each returns whether the input was accepted, and
//! panics only when an invariant breaks (which is what the fuzzer looks for).

use uuid::Uuid;

use crate::binding::Binding;
use crate::key::Key;
use crate::segment::{self, RangePlan, SegmentDecryptor, SegmentHeader, HEADER_LEN};
use crate::wrapped::{unwrap_key, WrappedKey};

/// The key the fuzz corpus is encrypted under. Public test data, not a secret.
pub const FUZZ_KEY: [u8; 32] = *b"conclave fuzz key, not a secret!";

pub fn fuzz_key() -> Key {
    Key::init_with(|k| k.copy_from_slice(&FUZZ_KEY))
}

/// The binding of the fuzz corpus's segmented objects.
pub fn fuzz_segment_binding() -> Binding {
    Binding::document_segment(Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3), 1)
}

/// The binding of the fuzz corpus's wrapped keys.
pub fn fuzz_wrap_binding() -> Binding {
    Binding::lek(Uuid::from_u128(1), Uuid::from_u128(2))
}

/// `WrappedKey::parse` on any bytes (formats 1 and 2): never panics, and what it accepts re-encodes to the same
/// bytes and goes through `unwrap_key` without panicking.
pub fn wrapped_key_parse(data: &[u8]) -> bool {
    let Ok(wrapped) = WrappedKey::parse(data) else {
        return false;
    };
    assert_eq!(wrapped.to_bytes(), data, "parse then encode must give back the input");
    unwrap_key(&fuzz_key(), &wrapped, &fuzz_wrap_binding()).is_ok()
}

/// `Binding::decode` on any bytes: what it accepts re-encodes to the same bytes.
pub fn binding_decode(data: &[u8]) -> bool {
    let Ok(binding) = Binding::decode(data) else {
        return false;
    };
    assert_eq!(binding.to_bytes(), data, "decode then encode must give back the input");
    true
}

/// The segment header parser and the segment readers on any bytes. The first input byte picks
/// the size of the pieces the object is pushed in; the rest is the object. Never panics; when
/// the whole object decrypts, every range read must agree with it.
pub fn segment_decrypt(data: &[u8]) -> bool {
    let Some((&chunk, object)) = data.split_first() else {
        return false;
    };
    let key = fuzz_key();
    let binding = fuzz_segment_binding();
    let header = object.get(..HEADER_LEN).and_then(|h| SegmentHeader::parse(h).ok());

    let mut reader = SegmentDecryptor::new(&key, &binding);
    let mut plaintext = Vec::new();
    let mut ok = object.chunks(usize::from(chunk).max(1)).all(|piece| reader.push(piece, &mut plaintext).is_ok());
    ok = ok && reader.finish(&mut plaintext).is_ok();
    if ok {
        assert_eq!(segment::decrypt(&key, &binding, object).ok().as_deref(), Some(&plaintext[..]));
    }

    // Random access over the same bytes, with a range the input chooses.
    if let Some(header) = header {
        if let Ok(len) = header.plaintext_len(object.len() as u64) {
            let a = u64::from(chunk).wrapping_mul(7) % (len + 1);
            let b = (a + u64::from(chunk)).min(len);
            if let Ok(plan) = RangePlan::new(&header, len, a..b) {
                let range = plan.ciphertext_range();
                let bytes = object.get(range.start as usize..range.end as usize).unwrap_or_default();
                if let Ok(part) = segment::decrypt_range(&key, &binding, &plan, bytes) {
                    assert_eq!(part.len() as u64, b - a);
                    if ok {
                        assert_eq!(part, plaintext[a as usize..b as usize]);
                    }
                }
            }
        }
    }
    ok
}
