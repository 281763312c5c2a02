//! Document content in fixed-size encrypted segments: the STREAM construction of Hoang,
//! Reyhanitabar, Rogaway and Vizár ("Online Authenticated-Encryption and its Nonce-Reuse
//! Misuse-Resistance", CRYPTO 2015) over AES-256-GCM. Streams in constant memory, detects
//! truncation, reordering and splicing, and decrypts any byte range without the rest.
//!
//! # Segmented-content format, version 1
//!
//! An encrypted object is a 16-byte header followed by one or more segments.
//!
//! Header:
//!
//! | offset | size | content |
//! |---|---|---|
//! | 0 | 4 | magic, ASCII `CNCL` |
//! | 4 | 1 | format version, `0x01` |
//! | 5 | 4 | segment size `S`, u32 big-endian, 16 to 16 MiB (default 65536) |
//! | 9 | 7 | nonce prefix, random per object |
//!
//! Segments, numbered `i = 0, 1, …, N-1` from the start:
//!
//! - plaintext is cut into `N = ⌊P / S⌋ + 1` segments, where `P` is the plaintext length: every
//!   segment but the last holds exactly `S` bytes, and the last holds the remaining
//!   `P mod S` bytes, from 0 to `S-1`. A plaintext that fills its segments exactly therefore ends
//!   with an empty last segment, and an empty plaintext is one empty segment. This rule makes the
//!   layout a function of `P` alone, and lets a reader decide "not last" as soon as it holds
//!   `S + 16` bytes.
//! - segment `i` is stored as AES-256-GCM ciphertext (as long as its plaintext) followed by the
//!   16-byte tag, so a full segment takes `S + 16` bytes and the object `16 + P + 16·N` bytes.
//! - nonce of segment `i`: nonce prefix (7 bytes) ‖ `i` as u32 big-endian (4 bytes) ‖ last flag
//!   (1 byte: `0x01` for segment `N-1`, `0x00` for all others). At most 2^32 segments.
//! - associated data of every segment: the [binding](crate::binding) (purpose
//!   `DocumentSegment`: tenant, library, document, version) followed by the 16 header bytes.
//!
//! What this gives: a segment moved to another position fails (the counter is in the nonce); a
//! stream cut at a segment boundary fails (no segment carries the last flag); a segment taken
//! from another object under the same FEK fails (another nonce prefix); an object copied to
//! another document or version fails (the binding); an edited header fails (it is in the
//! associated data of every segment).
//!
//! Readers: [`SegmentDecryptor`] for a whole object, [`RangePlan`] and [`RangeDecryptor`] (or
//! [`decrypt_range`]) for a byte range. Plaintext a reader emits before its `finish` succeeds is
//! authentic, but the object may still prove truncated: a caller streaming it onwards must abort
//! the response, not complete it, when `finish` fails.

mod decrypt;
mod encrypt;
mod header;
mod range;

pub use decrypt::{decrypt, SegmentDecryptor};
pub use encrypt::{encrypt, SegmentEncryptor, SegmentOutput};
pub use header::{
    SegmentHeader, DEFAULT_SEGMENT_SIZE, HEADER_LEN, MAGIC, MAX_SEGMENT_SIZE, MIN_SEGMENT_SIZE, NONCE_PREFIX_LEN,
    SEGMENTED_VERSION,
};
pub use range::{decrypt_range, RangeDecryptor, RangePlan};

use crate::aead::{Cipher, NONCE_LEN, TAG_LEN};
use crate::binding::Binding;
use crate::error::Result;
use crate::key::Key;

/// The cipher, associated data and nonce prefix of one object, shared by its writer and readers.
struct SegmentCipher {
    cipher: Cipher,
    aad: Vec<u8>,
    prefix: [u8; NONCE_PREFIX_LEN],
}

impl SegmentCipher {
    fn new(key: &Key, binding: &Binding, header: &SegmentHeader) -> Self {
        Self::from_cipher(Cipher::new(key), binding.to_bytes(), header)
    }

    fn from_cipher(cipher: Cipher, mut aad: Vec<u8>, header: &SegmentHeader) -> Self {
        aad.extend_from_slice(&header.to_bytes());
        Self { cipher, aad, prefix: header.nonce_prefix() }
    }

    fn nonce(&self, index: u32, last: bool) -> [u8; NONCE_LEN] {
        let mut nonce = [0u8; NONCE_LEN];
        nonce[..NONCE_PREFIX_LEN].copy_from_slice(&self.prefix);
        nonce[NONCE_PREFIX_LEN..NONCE_LEN - 1].copy_from_slice(&index.to_be_bytes());
        nonce[NONCE_LEN - 1] = u8::from(last);
        nonce
    }

    /// Seals one segment's plaintext into `ciphertext` (as long as it) and returns the tag.
    fn seal_into(&self, index: u32, last: bool, plaintext: &[u8], ciphertext: &mut [u8]) -> Result<[u8; TAG_LEN]> {
        self.cipher.seal_into(&self.nonce(index, last), &self.aad, plaintext, ciphertext)
    }

    /// Opens one stored segment (ciphertext ‖ tag) in place; its plaintext is then
    /// `stored[..len - 16]`. On failure the segment's ciphertext is zeroed.
    fn open_in_place(&self, index: u32, last: bool, stored: &mut [u8]) -> Result<()> {
        let Some(body_len) = stored.len().checked_sub(TAG_LEN) else {
            return Err(crate::error::CryptoError::Truncated);
        };
        let (body, tag) = stored.split_at_mut(body_len);
        self.cipher.open_in_place(&self.nonce(index, last), &self.aad, body, tag)
    }

    /// Opens one stored segment (ciphertext ‖ tag) and appends its plaintext to `out`; on
    /// failure `out` is left as it was.
    fn open_append(&self, index: u32, last: bool, stored: &[u8], out: &mut Vec<u8>) -> Result<()> {
        let start = out.len();
        out.resize(start + stored.len().saturating_sub(TAG_LEN), 0);
        let opened = self.open_into(index, last, stored, &mut out[start..]);
        if opened.is_err() {
            // Zeroed by `open_into`: nothing unverified is left in the spare capacity.
            out.truncate(start);
        }
        opened
    }

    /// Opens one stored segment (ciphertext ‖ tag) into `plaintext`, which is 16 bytes shorter
    /// than `stored`; on failure `plaintext` is zeroed.
    fn open_into(&self, index: u32, last: bool, stored: &[u8], plaintext: &mut [u8]) -> Result<()> {
        let Some(body_len) = stored.len().checked_sub(TAG_LEN) else {
            return Err(crate::error::CryptoError::Truncated);
        };
        let (body, tag) = stored.split_at(body_len);
        self.cipher.open_into(&self.nonce(index, last), &self.aad, body, tag, plaintext)
    }
}
