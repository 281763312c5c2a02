//! The 16-byte header of a segmented object, and the layout arithmetic that follows from it.

use rand::rngs::OsRng;
use rand::RngCore;

use crate::aead::TAG_LEN;
use crate::error::{CryptoError, Result};

/// First four bytes of every segmented object.
pub const MAGIC: [u8; 4] = *b"CNCL";
/// Version byte of the segmented-content format.
pub const SEGMENTED_VERSION: u8 = 1;
/// Length of the header in bytes.
pub const HEADER_LEN: usize = 16;
/// Length of the random nonce prefix in bytes.
pub const NONCE_PREFIX_LEN: usize = 7;
/// Segment size used unless the writer chooses another: 64 KiB.
pub const DEFAULT_SEGMENT_SIZE: u32 = 65536;
/// Smallest segment size a header may name.
pub const MIN_SEGMENT_SIZE: u32 = 16;
/// Largest segment size a header may name. Bounds what a reader allocates for a header it did
/// not write.
pub const MAX_SEGMENT_SIZE: u32 = 16 << 20;

const TAG: u64 = TAG_LEN as u64;
const HEADER: u64 = HEADER_LEN as u64;
/// The counter is a u32, so an object has at most 2^32 segments.
const MAX_SEGMENTS: u64 = 1 << 32;

/// A parsed header: the segment size and the object's nonce prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    segment_size: u32,
    nonce_prefix: [u8; NONCE_PREFIX_LEN],
}

impl SegmentHeader {
    /// A header for a new object: the given segment size and a random nonce prefix.
    pub fn generate(segment_size: u32) -> Result<Self> {
        check_segment_size(segment_size)?;
        Ok(Self::fresh(segment_size))
    }

    /// A header for a new object with the default segment size.
    pub fn generate_default() -> Self {
        Self::fresh(DEFAULT_SEGMENT_SIZE)
    }

    fn fresh(segment_size: u32) -> Self {
        let mut nonce_prefix = [0u8; NONCE_PREFIX_LEN];
        OsRng.fill_bytes(&mut nonce_prefix);
        Self { segment_size, nonce_prefix }
    }

    /// Parses exactly [`HEADER_LEN`] bytes. Never panics, whatever the input.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        const WHAT: &str = "segment header";
        let bytes: &[u8; HEADER_LEN] =
            bytes.try_into().map_err(|_| CryptoError::malformed(WHAT, "a header is exactly 16 bytes"))?;
        if bytes[..4] != MAGIC {
            return Err(CryptoError::malformed(WHAT, "bad magic"));
        }
        if bytes[4] != SEGMENTED_VERSION {
            return Err(CryptoError::UnsupportedVersion { what: WHAT, version: bytes[4] });
        }
        let segment_size = u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]);
        check_segment_size(segment_size).map_err(|_| CryptoError::malformed(WHAT, "segment size out of range"))?;
        let mut nonce_prefix = [0u8; NONCE_PREFIX_LEN];
        nonce_prefix.copy_from_slice(&bytes[9..]);
        Ok(Self { segment_size, nonce_prefix })
    }

    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[..4].copy_from_slice(&MAGIC);
        out[4] = SEGMENTED_VERSION;
        out[5..9].copy_from_slice(&self.segment_size.to_be_bytes());
        out[9..].copy_from_slice(&self.nonce_prefix);
        out
    }

    /// Plaintext bytes per segment (`S`).
    pub fn segment_size(&self) -> u32 {
        self.segment_size
    }

    pub(crate) fn nonce_prefix(&self) -> [u8; NONCE_PREFIX_LEN] {
        self.nonce_prefix
    }

    /// Number of segments of a plaintext of `plaintext_len` bytes: `⌊P / S⌋ + 1`.
    pub fn segment_count(&self, plaintext_len: u64) -> u64 {
        plaintext_len / u64::from(self.segment_size) + 1
    }

    /// Length of the whole object (header included) for a plaintext of `plaintext_len` bytes, or
    /// `None` if that plaintext needs more than 2^32 segments.
    pub fn ciphertext_len(&self, plaintext_len: u64) -> Option<u64> {
        let segments = self.segment_count(plaintext_len);
        if segments > MAX_SEGMENTS {
            return None;
        }
        Some(HEADER + plaintext_len + segments * TAG)
    }

    /// Plaintext length of an object of `ciphertext_len` bytes (header included), as a reader
    /// learns it from the object store; an error for a length no object can have.
    pub fn plaintext_len(&self, ciphertext_len: u64) -> Result<u64> {
        let bad = || CryptoError::malformed("segmented object", "impossible length");
        let body = ciphertext_len.checked_sub(HEADER).ok_or_else(bad)?;
        let stored = self.stored_segment_len();
        let (full, rest) = (body / stored, body % stored);
        // The last segment is at least its tag, and shorter than a full segment.
        let last = rest.checked_sub(TAG).ok_or_else(bad)?;
        if full + 1 > MAX_SEGMENTS {
            return Err(bad());
        }
        Ok(full * u64::from(self.segment_size) + last)
    }

    /// Stored length of a full segment: `S + 16`.
    pub(crate) fn stored_segment_len(&self) -> u64 {
        u64::from(self.segment_size) + TAG
    }

    /// Offset in the object where segment `index` starts.
    pub(crate) fn segment_offset(&self, index: u64) -> u64 {
        HEADER + index * self.stored_segment_len()
    }
}

pub(crate) fn check_segment_size(segment_size: u32) -> Result<()> {
    if (MIN_SEGMENT_SIZE..=MAX_SEGMENT_SIZE).contains(&segment_size) {
        Ok(())
    } else {
        Err(CryptoError::InvalidInput("segment size must be 16 bytes to 16 MiB"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_layout() {
        let header = SegmentHeader::generate(65536).unwrap();
        let bytes = header.to_bytes();
        assert_eq!(&bytes[..5], b"CNCL\x01");
        assert_eq!(&bytes[5..9], &[0, 1, 0, 0]);
        assert_eq!(SegmentHeader::parse(&bytes).unwrap(), header);
    }

    #[test]
    fn parse_rejects_bad_headers() {
        let good = SegmentHeader::generate(64).unwrap().to_bytes();
        assert!(SegmentHeader::parse(&good[..15]).is_err());
        assert!(SegmentHeader::parse(&[&good[..], &[0]].concat()).is_err());
        let mut magic = good;
        magic[0] = b'X';
        assert!(SegmentHeader::parse(&magic).is_err());
        let mut version = good;
        version[4] = 2;
        assert!(matches!(SegmentHeader::parse(&version), Err(CryptoError::UnsupportedVersion { version: 2, .. })));
        for size in [0u32, 15, MAX_SEGMENT_SIZE + 1, u32::MAX] {
            let mut b = good;
            b[5..9].copy_from_slice(&size.to_be_bytes());
            assert!(SegmentHeader::parse(&b).is_err(), "size {size}");
        }
    }

    #[test]
    fn lengths_are_inverse() {
        let header = SegmentHeader::generate(16).unwrap();
        for p in 0..200u64 {
            let c = header.ciphertext_len(p).unwrap();
            assert_eq!(header.plaintext_len(c).unwrap(), p);
        }
        assert_eq!(header.ciphertext_len(0), Some(32));
        assert_eq!(header.ciphertext_len(16), Some(16 + 32 + 16));
        // Lengths that fall inside a tag are impossible.
        assert!(header.plaintext_len(31).is_err());
        assert!(header.plaintext_len(16 + 32 + 15).is_err());
        assert!(header.plaintext_len(0).is_err());
    }

    #[test]
    fn segment_limit() {
        let header = SegmentHeader::generate(16).unwrap();
        assert!(header.ciphertext_len(16 * ((1 << 32) - 1) + 15).is_some());
        assert!(header.ciphertext_len(16 * (1 << 32)).is_none());
        assert!(header.plaintext_len(u64::MAX).is_err());
    }
}
