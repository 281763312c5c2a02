//! The writer: plaintext in, in pieces of any size; header and whole encrypted segments out.

use zeroize::{Zeroize, Zeroizing};

use super::header::{SegmentHeader, HEADER_LEN};
use super::SegmentCipher;
use crate::aead::TAG_LEN;
use crate::binding::Binding;
use crate::error::{CryptoError, Result};
use crate::key::Key;

/// Encrypts one object incrementally. Everything it appends to `out`, in order, is the object:
/// the header first, then each segment as soon as it is complete, then the last (flagged)
/// segment from [`finish`](Self::finish). It holds at most one segment of plaintext.
pub struct SegmentEncryptor {
    writer: Writer,
    header: SegmentHeader,
    segment_size: usize,
    pending: Zeroizing<Vec<u8>>,
    header_written: bool,
}

/// Where a [`SegmentEncryptor`] appends the object. A `Vec<u8>` grows by zeroed bytes that the
/// cipher then overwrites; a buffer that is reused (such as an aligned block for direct I/O) can
/// hand out bytes it already holds, so nothing is written twice.
pub trait SegmentOutput {
    /// Lengthens the output by `n` bytes and returns them; whatever they held is overwritten.
    fn grow(&mut self, n: usize) -> &mut [u8];
    /// Shortens the output by `n` bytes (undoes a [`grow`](Self::grow) whose sealing failed).
    fn shrink(&mut self, n: usize);
}

impl SegmentOutput for Vec<u8> {
    fn grow(&mut self, n: usize) -> &mut [u8] {
        let start = self.len();
        self.resize(start + n, 0);
        &mut self[start..]
    }

    fn shrink(&mut self, n: usize) {
        self.truncate(self.len().saturating_sub(n));
    }
}

/// The part that seals, apart from the pending buffer so both can be borrowed at once.
struct Writer {
    core: SegmentCipher,
    next_index: u32,
}

impl SegmentEncryptor {
    /// A writer with the default segment size (64 KiB) and a fresh nonce prefix.
    pub fn new(key: &Key, binding: &Binding) -> Self {
        Self::with_header(key, binding, SegmentHeader::generate_default())
    }

    /// A writer with another segment size (16 bytes to 16 MiB).
    pub fn with_segment_size(key: &Key, binding: &Binding, segment_size: u32) -> Result<Self> {
        Ok(Self::with_header(key, binding, SegmentHeader::generate(segment_size)?))
    }

    fn with_header(key: &Key, binding: &Binding, header: SegmentHeader) -> Self {
        let segment_size = header.segment_size() as usize;
        Self {
            writer: Writer { core: SegmentCipher::new(key, binding, &header), next_index: 0 },
            header,
            segment_size,
            pending: Zeroizing::new(Vec::with_capacity(segment_size)),
            header_written: false,
        }
    }

    /// The header this writer emits first.
    pub fn header(&self) -> &SegmentHeader {
        &self.header
    }

    /// Takes more plaintext and appends to `out` the header (on the first call) and every
    /// segment that is now complete.
    pub fn push<O: SegmentOutput + ?Sized>(&mut self, data: &[u8], out: &mut O) -> Result<()> {
        self.push_inspecting(data, out, |_| {})
    }

    /// As [`push`](Self::push), showing `inspect` the plaintext of each segment right before it
    /// is sealed, in order: all it is shown, this call's and the next calls' and
    /// [`finish_inspecting`](Self::finish_inspecting)'s, is the plaintext. A digest of the
    /// plaintext taken this way reads each segment while it is in the CPU's cache for sealing.
    pub fn push_inspecting<O, F>(&mut self, mut data: &[u8], out: &mut O, mut inspect: F) -> Result<()>
    where
        O: SegmentOutput + ?Sized,
        F: FnMut(&[u8]),
    {
        self.write_header(out);
        if !self.pending.is_empty() {
            let take = (self.segment_size - self.pending.len()).min(data.len());
            self.pending.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.pending.len() < self.segment_size {
                return Ok(());
            }
            inspect(&self.pending);
            let sealed = self.writer.seal(&self.pending, false, out);
            // Only the bytes in use held plaintext: wiping the whole capacity each time would
            // double the work for uploads that arrive in small pieces. The capacity is wiped
            // once, on drop (`Zeroizing`).
            self.pending.as_mut_slice().zeroize();
            self.pending.clear();
            sealed?;
        }
        while data.len() >= self.segment_size {
            let (segment, rest) = data.split_at(self.segment_size);
            inspect(segment);
            self.writer.seal(segment, false, out)?;
            data = rest;
        }
        self.pending.extend_from_slice(data);
        Ok(())
    }

    /// The most plaintext a [`push`](Self::push) takes now without appending more than `room`
    /// bytes: whole segments only, so pushing exactly this much leaves nothing pending.
    pub fn fitting(&self, room: usize) -> usize {
        let header = if self.header_written { 0 } else { HEADER_LEN };
        let segments = room.saturating_sub(header) / (self.segment_size + TAG_LEN);
        (segments * self.segment_size).saturating_sub(self.pending.len())
    }

    /// Appends the last segment (flagged, possibly empty) and, if nothing was pushed, the header.
    pub fn finish<O: SegmentOutput + ?Sized>(self, out: &mut O) -> Result<()> {
        self.finish_inspecting(out, |_| {})
    }

    /// As [`finish`](Self::finish), showing `inspect` the last segment's plaintext.
    pub fn finish_inspecting<O, F>(mut self, out: &mut O, mut inspect: F) -> Result<()>
    where
        O: SegmentOutput + ?Sized,
        F: FnMut(&[u8]),
    {
        self.write_header(out);
        inspect(&self.pending);
        self.writer.seal(&self.pending, true, out)
    }

    fn write_header<O: SegmentOutput + ?Sized>(&mut self, out: &mut O) {
        if !self.header_written {
            out.grow(HEADER_LEN).copy_from_slice(&self.header.to_bytes());
            self.header_written = true;
        }
    }
}

impl Writer {
    /// Appends one sealed segment to `out`, encrypting straight from `plaintext` into `out`.
    fn seal<O: SegmentOutput + ?Sized>(&mut self, plaintext: &[u8], last: bool, out: &mut O) -> Result<()> {
        // A segment that is not last must leave a counter value for the last one.
        if !last && self.next_index == u32::MAX {
            return Err(CryptoError::InvalidInput("a segmented object has at most 2^32 segments"));
        }
        let stored = plaintext.len() + TAG_LEN;
        let (body, tag) = out.grow(stored).split_at_mut(plaintext.len());
        match self.core.seal_into(self.next_index, last, plaintext, body) {
            Ok(sealed) => tag.copy_from_slice(&sealed),
            Err(e) => {
                // Only ciphertext or the output's earlier bytes are there: nothing to wipe.
                out.shrink(stored);
                return Err(e);
            }
        }
        self.next_index = self.next_index.wrapping_add(1);
        Ok(())
    }
}

/// Encrypts a whole plaintext held in memory (tests, small documents).
pub fn encrypt(key: &Key, binding: &Binding, plaintext: &[u8], segment_size: u32) -> Result<Vec<u8>> {
    let mut writer = SegmentEncryptor::with_segment_size(key, binding, segment_size)?;
    let capacity = writer.header().ciphertext_len(plaintext.len() as u64).unwrap_or(0);
    let mut out = Vec::with_capacity(usize::try_from(capacity).unwrap_or(0));
    writer.push(plaintext, &mut out)?;
    writer.finish(&mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    /// Encrypting the stored vector's plaintext again, with its header (so its nonce prefix),
    /// gives the stored bytes exactly: the current backend writes what the first one wrote
    /// (tests/it/stored_vectors.rs has the inputs; the object came from RustCrypto `aes-gcm`).
    #[test]
    fn same_bytes_as_the_stored_vector() {
        let stored = include_bytes!("../../tests/fixtures/segmented-v1-64k.bin");
        let key = Key::from_slice(&(0u8..32).collect::<Vec<u8>>()).unwrap();
        let binding = Binding::document_segment(Uuid::from_u128(0x0a), Uuid::from_u128(0x0b), Uuid::from_u128(0x0c), 3);
        let plaintext: Vec<u8> = (0..2 * 65536 + 1000).map(|i: usize| (i % 251) as u8 ^ (i >> 16) as u8).collect();
        let header = SegmentHeader::parse(&stored[..HEADER_LEN]).unwrap();
        // In uneven pieces, so the pending buffer and the direct path both run.
        let mut writer = SegmentEncryptor::with_header(&key, &binding, header);
        let mut out = Vec::new();
        for piece in plaintext.chunks(40_000) {
            writer.push(piece, &mut out).unwrap();
        }
        writer.finish(&mut out).unwrap();
        assert!(out == stored, "the re-encrypted object differs from the stored vector");
    }

    /// What `inspect` is shown, in pieces of any size, is the plaintext; the object is the same.
    #[test]
    fn inspecting_shows_the_plaintext_in_order() {
        let key = Key::from_slice(&[7u8; 32]).unwrap();
        let binding = Binding::document_segment(Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3), 1);
        let header = SegmentHeader::generate(100).unwrap();
        for len in [0usize, 1, 99, 100, 101, 1000, 1234] {
            let plaintext: Vec<u8> = (0..len).map(|i| (i * 7 % 256) as u8).collect();
            for piece in [1, 37, 100, 250, 2000] {
                let (mut plain, mut shown) = (SegmentEncryptor::with_header(&key, &binding, header), Vec::new());
                let mut inspected = SegmentEncryptor::with_header(&key, &binding, header);
                let (mut a, mut b) = (Vec::new(), Vec::new());
                for chunk in plaintext.chunks(piece) {
                    plain.push(chunk, &mut a).unwrap();
                    inspected.push_inspecting(chunk, &mut b, |s| shown.extend_from_slice(s)).unwrap();
                }
                plain.finish(&mut a).unwrap();
                inspected.finish_inspecting(&mut b, |s| shown.extend_from_slice(s)).unwrap();
                assert_eq!(shown, plaintext, "{len} bytes in pieces of {piece}");
                assert_eq!(a, b);
            }
        }
    }

    /// Pushing exactly what `fitting` allows appends no more than the room, completes whole
    /// segments only (nothing left pending), and is as much as fits: one more segment would not.
    #[test]
    fn fitting_fills_the_room_with_whole_segments() {
        let key = Key::from_slice(&[9u8; 32]).unwrap();
        let binding = Binding::document_segment(Uuid::from_u128(4), Uuid::from_u128(5), Uuid::from_u128(6), 2);
        let header = SegmentHeader::generate(100).unwrap();
        let sealed = 100 + TAG_LEN;
        for already in [0usize, 1, 99, 100, 101, 250] {
            for room in [0usize, HEADER_LEN, HEADER_LEN + sealed - 1, HEADER_LEN + sealed, 3 * sealed + 5, 1000] {
                let mut writer = SegmentEncryptor::with_header(&key, &binding, header);
                let mut out = Vec::new();
                writer.push(&vec![1u8; already], &mut out).unwrap();
                let before = out.len();
                let fits = writer.fitting(room);
                writer.push(&vec![2u8; fits], &mut out).unwrap();
                let appended = out.len() - before;
                assert!(appended <= room, "{already} pushed, room {room}: {appended} appended");
                if fits > 0 {
                    assert!(writer.pending.is_empty(), "{already} pushed, room {room}: a segment left pending");
                }
                assert_eq!(writer.fitting(room - appended), 0, "{already} pushed, room {room}: another segment fits");
                if room >= HEADER_LEN + sealed {
                    assert!(fits > 0, "{already} pushed, room {room}: a segment fits");
                }
            }
        }
    }
}
