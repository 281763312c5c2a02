//! Keyed lookup tags: a deterministic HMAC-SHA256 of a value under a subkey of a content key, so
//! the database can find equal values (a document name re-uploaded to the same library) without
//! storing them in clear. Equal inputs under the same key and binding give equal tags; without
//! the key, a tag reveals nothing but that equality.
//!
//! Subkey: `HMAC-SHA256(key, "conclave lookup tag v1")`, so the content key itself is never used
//! with two algorithms. Tag: `HMAC-SHA256(subkey, binding ‖ value)`.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroize;

use crate::binding::Binding;
use crate::key::Key;

type HmacSha256 = Hmac<Sha256>;

const SUBKEY_LABEL: &[u8] = b"conclave lookup tag v1";

/// The lookup tag of `value`, bound to `binding`.
pub fn lookup_tag(key: &Key, binding: &Binding, value: &[u8]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key.expose_secret()).expect("HMAC takes keys of any length");
    mac.update(SUBKEY_LABEL);
    let mut subkey: [u8; 32] = mac.finalize().into_bytes().into();
    let mut mac = HmacSha256::new_from_slice(&subkey).expect("HMAC takes keys of any length");
    subkey.zeroize();
    mac.update(&binding.to_bytes());
    mac.update(value);
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    #[test]
    fn equal_inputs_equal_tags_anything_else_differs() {
        let key = Key::generate();
        let (t, l, d) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let b = Binding::document_name(t, l, d);
        assert_eq!(lookup_tag(&key, &b, b"brief.pdf"), lookup_tag(&key, &b, b"brief.pdf"));
        assert_ne!(lookup_tag(&key, &b, b"brief.pdf"), lookup_tag(&key, &b, b"brief2.pdf"));
        assert_ne!(lookup_tag(&key, &b, b"brief.pdf"), lookup_tag(&Key::generate(), &b, b"brief.pdf"));
        let other = Binding::document_name(t, Uuid::new_v4(), d);
        assert_ne!(lookup_tag(&key, &b, b"brief.pdf"), lookup_tag(&key, &other, b"brief.pdf"));
    }
}
