//! The whole-object reader: ciphertext in, in pieces of any size; verified plaintext out.

use super::header::{SegmentHeader, HEADER_LEN};
use super::SegmentCipher;
use crate::aead::{Cipher, TAG_LEN};
use crate::binding::Binding;
use crate::error::{CryptoError, Result};
use crate::key::Key;

/// Decrypts one object incrementally, verifying each segment before releasing its plaintext.
/// Holds at most one stored segment (`S + 16` bytes). After any error it refuses further input.
///
/// A segment is known to be "not last" as soon as `S + 16` bytes of it have arrived (the last
/// segment is always shorter), so the reader never waits on data it does not need.
pub struct SegmentDecryptor {
    state: State,
}

enum State {
    /// Collecting the header; the cipher and binding bytes wait for it (the header is part of the
    /// associated data).
    Header {
        cipher: Cipher,
        binding: Vec<u8>,
        buf: Vec<u8>,
    },
    Body(Body),
    Failed,
}

struct Body {
    core: SegmentCipher,
    stored_len: usize,
    /// A stored segment that arrived in pieces: ciphertext only (segments are decrypted from it
    /// into the output, never in place), so it needs no wiping.
    buf: Vec<u8>,
    next_index: u32,
}

impl SegmentDecryptor {
    pub fn new(key: &Key, binding: &Binding) -> Self {
        Self {
            state: State::Header {
                cipher: Cipher::new(key),
                binding: binding.to_bytes(),
                buf: Vec::with_capacity(HEADER_LEN),
            },
        }
    }

    /// Takes more of the object and appends to `out` the plaintext of every segment completed
    /// and verified by it. On error nothing from the failing segment is appended.
    pub fn push(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<()> {
        let result = self.push_inner(data, out);
        if result.is_err() {
            self.state = State::Failed;
        }
        result
    }

    fn push_inner(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<()> {
        let data = match std::mem::replace(&mut self.state, State::Failed) {
            State::Header { cipher, binding, mut buf } => {
                let take = (HEADER_LEN - buf.len()).min(data.len());
                buf.extend_from_slice(&data[..take]);
                if buf.len() < HEADER_LEN {
                    self.state = State::Header { cipher, binding, buf };
                    return Ok(());
                }
                let header = SegmentHeader::parse(&buf)?;
                let stored_len = header.stored_segment_len() as usize;
                self.state = State::Body(Body {
                    core: SegmentCipher::from_cipher(cipher, binding, &header),
                    stored_len,
                    buf: Vec::with_capacity(stored_len),
                    next_index: 0,
                });
                &data[take..]
            }
            other => {
                self.state = other;
                data
            }
        };
        match &mut self.state {
            State::Body(body) => body.push(data, out),
            State::Failed => Err(CryptoError::InvalidInput("this decryptor already failed")),
            State::Header { .. } => Ok(()),
        }
    }

    /// Ends the object: decrypts the last segment, which must carry the last flag. An object that
    /// stops at a segment boundary, or inside the header, is [`CryptoError::Truncated`].
    pub fn finish(self, out: &mut Vec<u8>) -> Result<()> {
        match self.state {
            State::Header { .. } => Err(CryptoError::Truncated),
            State::Failed => Err(CryptoError::InvalidInput("this decryptor already failed")),
            State::Body(mut body) => {
                if body.buf.len() < TAG_LEN {
                    return Err(CryptoError::Truncated);
                }
                body.open_buffered(true, out)
            }
        }
    }
}

impl Body {
    fn push(&mut self, mut data: &[u8], out: &mut Vec<u8>) -> Result<()> {
        while !data.is_empty() {
            // A whole segment in the input is opened straight into `out`: one copy, not two.
            if self.buf.is_empty() && data.len() >= self.stored_len {
                let (segment, rest) = data.split_at(self.stored_len);
                self.open_into(segment, out)?;
                data = rest;
                continue;
            }
            let take = (self.stored_len - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buf.len() == self.stored_len {
                // A full-length segment is never the last one.
                if self.next_index == u32::MAX {
                    return Err(CryptoError::malformed("segmented object", "more than 2^32 segments"));
                }
                self.open_buffered(false, out)?;
                self.next_index += 1;
            }
        }
        Ok(())
    }

    /// Opens a full-length (so not last) segment from the input, appending its plaintext.
    fn open_into(&mut self, segment: &[u8], out: &mut Vec<u8>) -> Result<()> {
        if self.next_index == u32::MAX {
            return Err(CryptoError::malformed("segmented object", "more than 2^32 segments"));
        }
        self.core.open_append(self.next_index, false, segment, out)?;
        self.next_index += 1;
        Ok(())
    }

    fn open_buffered(&mut self, last: bool, out: &mut Vec<u8>) -> Result<()> {
        let opened = self.core.open_append(self.next_index, last, &self.buf, out);
        self.buf.clear();
        opened
    }
}

/// Decrypts a whole object held in memory (tests, small documents).
pub fn decrypt(key: &Key, binding: &Binding, object: &[u8]) -> Result<Vec<u8>> {
    let mut reader = SegmentDecryptor::new(key, binding);
    let mut out = Vec::with_capacity(object.len());
    reader.push(object, &mut out)?;
    reader.finish(&mut out)?;
    Ok(out)
}
