//! Random access: which stored bytes hold a plaintext byte range, and a reader that decrypts
//! just those segments and returns exactly the requested bytes.

use std::ops::Range;

use zeroize::Zeroizing;

use super::header::{SegmentHeader, HEADER_LEN};
use super::SegmentCipher;
use crate::aead::TAG_LEN;
use crate::binding::Binding;
use crate::error::{CryptoError, Result};
use crate::key::Key;

/// The stored bytes to read for a plaintext range. Build it from the object's header (its first
/// 16 bytes) and its plaintext length (kept with the document, or
/// [`SegmentHeader::plaintext_len`] of the object's size).
///
/// The plaintext length decides which segment is flagged last, so a wrong length makes any range
/// that touches the end of the object fail to decrypt rather than return wrong bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangePlan {
    header: SegmentHeader,
    plaintext_len: u64,
    range: Range<u64>,
    first_segment: u64,
    end_segment: u64,
    ciphertext: Range<u64>,
}

impl RangePlan {
    /// Plans reading `range` (plaintext offsets, end exclusive, within `0..=plaintext_len`).
    pub fn new(header: &SegmentHeader, plaintext_len: u64, range: Range<u64>) -> Result<Self> {
        if header.ciphertext_len(plaintext_len).is_none() {
            return Err(CryptoError::InvalidInput("plaintext length needs more than 2^32 segments"));
        }
        if range.start > range.end || range.end > plaintext_len {
            return Err(CryptoError::InvalidInput("range outside the plaintext"));
        }
        let size = u64::from(header.segment_size());
        let (first_segment, end_segment, ciphertext) = if range.is_empty() {
            (0, 0, HEADER_LEN as u64..HEADER_LEN as u64)
        } else {
            let first = range.start / size;
            let last = (range.end - 1) / size;
            let start = header.segment_offset(first);
            let end = header.segment_offset(last) + stored_len(header, plaintext_len, last);
            (first, last + 1, start..end)
        };
        Ok(Self { header: *header, plaintext_len, range, first_segment, end_segment, ciphertext })
    }

    /// The bytes of the stored object to read (offsets from its start, header included).
    pub fn ciphertext_range(&self) -> Range<u64> {
        self.ciphertext.clone()
    }

    /// The plaintext bytes the reader will return.
    pub fn plaintext_range(&self) -> Range<u64> {
        self.range.clone()
    }

    pub fn header(&self) -> &SegmentHeader {
        &self.header
    }

    /// The longest read of at most `max` stored bytes that holds whole segments only (at least
    /// one segment, whatever `max`): reads of this length from the start of
    /// [`ciphertext_range`](Self::ciphertext_range), the last one shorter, are what
    /// [`RangeDecryptor::open_in_place`] takes.
    pub fn whole_segments_len(&self, max: u64) -> u64 {
        let stored = self.header.stored_segment_len();
        (max / stored).max(1) * stored
    }

    fn final_segment(&self) -> u64 {
        self.plaintext_len / u64::from(self.header.segment_size())
    }
}

fn stored_len(header: &SegmentHeader, plaintext_len: u64, index: u64) -> u64 {
    let size = u64::from(header.segment_size());
    if index == plaintext_len / size {
        plaintext_len % size + TAG_LEN as u64
    } else {
        size + TAG_LEN as u64
    }
}

/// Decrypts the segments a [`RangePlan`] names, fed with the bytes of its
/// [`ciphertext_range`](RangePlan::ciphertext_range) in order and in pieces of any size, and
/// emits exactly the planned plaintext. Holds at most one stored segment.
pub struct RangeDecryptor {
    core: SegmentCipher,
    plan: RangePlan,
    index: u64,
    /// A stored segment that arrived in pieces: ciphertext only, so it needs no wiping.
    buf: Vec<u8>,
    failed: bool,
}

impl RangeDecryptor {
    pub fn new(key: &Key, binding: &Binding, plan: RangePlan) -> Self {
        let capacity = plan.header.stored_segment_len() as usize;
        Self {
            core: SegmentCipher::new(key, binding, &plan.header),
            index: plan.first_segment,
            plan,
            buf: Vec::with_capacity(capacity),
            failed: false,
        }
    }

    /// Takes more of the planned ciphertext; appends the requested plaintext of every segment it
    /// completes and verifies.
    pub fn push(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<()> {
        if self.failed {
            return Err(CryptoError::InvalidInput("this decryptor already failed"));
        }
        let result = self.push_inner(data, out);
        self.failed = result.is_err();
        result
    }

    fn push_inner(&mut self, mut data: &[u8], out: &mut Vec<u8>) -> Result<()> {
        while !data.is_empty() {
            if self.index >= self.plan.end_segment {
                return Err(CryptoError::InvalidInput("more ciphertext than the range plan covers"));
            }
            let expected = stored_len(&self.plan.header, self.plan.plaintext_len, self.index) as usize;
            // A whole segment in the input is opened from there, without a copy into `buf`.
            if self.buf.is_empty() && data.len() >= expected {
                let (segment, rest) = data.split_at(expected);
                self.open_segment(segment, out)?;
                data = rest;
                continue;
            }
            let take = (expected - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buf.len() == expected {
                let stored = std::mem::take(&mut self.buf);
                let opened = self.open_segment(&stored, out);
                self.buf = stored;
                self.buf.clear();
                opened?;
            }
        }
        Ok(())
    }

    /// Opens one stored segment and appends the part of its plaintext the plan asks for.
    fn open_segment(&mut self, stored: &[u8], out: &mut Vec<u8>) -> Result<()> {
        let index = u32::try_from(self.index).map_err(|_| CryptoError::InvalidInput("segment index"))?;
        let last = self.index == self.plan.final_segment();
        let segment_start = self.index * u64::from(self.plan.header.segment_size());
        let segment_end = segment_start + stored.len().saturating_sub(TAG_LEN) as u64;
        let lo = (self.plan.range.start.max(segment_start) - segment_start) as usize;
        let hi = (self.plan.range.end.min(segment_end).max(segment_start) - segment_start) as usize;
        if lo == 0 && hi == stored.len().saturating_sub(TAG_LEN) {
            // The whole segment is wanted (every one but the first and last of a range):
            // decrypted straight into `out`.
            self.core.open_append(index, last, stored, out)?;
        } else {
            // Part of it: decrypted into a scratch buffer, wiped after the wanted part is copied.
            let mut plain = Zeroizing::new(Vec::with_capacity(stored.len()));
            self.core.open_append(index, last, stored, &mut plain)?;
            out.extend_from_slice(&plain[lo..hi]);
        }
        self.index += 1;
        Ok(())
    }

    /// Opens, in place, the next planned segments held whole in `stored` (a read of
    /// [`RangePlan::whole_segments_len`] bytes, or what is left of the range), and returns where
    /// the requested plaintext lies in `stored`: one range per segment, in order. Nothing is
    /// copied; the bytes between the ranges (tags, and the parts of the first and last segments
    /// outside the request) are not plaintext to send. On failure the segment that failed is
    /// zeroed and the decryptor refuses further input.
    pub fn open_in_place(&mut self, stored: &mut [u8]) -> Result<Vec<Range<usize>>> {
        if self.failed {
            return Err(CryptoError::InvalidInput("this decryptor already failed"));
        }
        let result = self.open_in_place_inner(stored);
        self.failed = result.is_err();
        result
    }

    fn open_in_place_inner(&mut self, stored: &mut [u8]) -> Result<Vec<Range<usize>>> {
        if !self.buf.is_empty() {
            return Err(CryptoError::InvalidInput("a segment was pushed in part; push the rest"));
        }
        let size = u64::from(self.plan.header.segment_size());
        let mut ranges = Vec::with_capacity(stored.len() / (size as usize + TAG_LEN) + 1);
        let mut at = 0;
        while at < stored.len() {
            if self.index >= self.plan.end_segment {
                return Err(CryptoError::InvalidInput("more ciphertext than the range plan covers"));
            }
            let len = stored_len(&self.plan.header, self.plan.plaintext_len, self.index) as usize;
            let Some(segment) = stored.get_mut(at..at + len) else {
                return Err(CryptoError::InvalidInput("a read must hold whole segments"));
            };
            let index = u32::try_from(self.index).map_err(|_| CryptoError::InvalidInput("segment index"))?;
            self.core.open_in_place(index, self.index == self.plan.final_segment(), segment)?;
            let segment_start = self.index * size;
            let segment_end = segment_start + (len - TAG_LEN) as u64;
            let lo = (self.plan.range.start.max(segment_start) - segment_start) as usize;
            let hi = (self.plan.range.end.min(segment_end) - segment_start) as usize;
            ranges.push(at + lo..at + hi);
            self.index += 1;
            at += len;
        }
        Ok(ranges)
    }

    /// Checks that every planned segment arrived.
    pub fn finish(self) -> Result<()> {
        if self.failed {
            return Err(CryptoError::InvalidInput("this decryptor already failed"));
        }
        if self.index < self.plan.end_segment {
            return Err(CryptoError::Truncated);
        }
        Ok(())
    }
}

/// Decrypts a planned range from exactly the bytes of its ciphertext range, held in memory.
pub fn decrypt_range(key: &Key, binding: &Binding, plan: &RangePlan, ciphertext: &[u8]) -> Result<Vec<u8>> {
    let range = plan.ciphertext_range();
    if ciphertext.len() as u64 != range.end - range.start {
        return Err(CryptoError::InvalidInput("ciphertext is not the planned byte range"));
    }
    let mut reader = RangeDecryptor::new(key, binding, plan.clone());
    let mut out = Vec::with_capacity((plan.range.end - plan.range.start) as usize);
    reader.push(ciphertext, &mut out)?;
    reader.finish()?;
    Ok(out)
}
