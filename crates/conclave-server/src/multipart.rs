//! The `multipart/form-data` reader of uploads: reads the first part's headers, then streams its
//! content as slices of the request body's own frames, cut only where the closing delimiter
//! starts. No byte of the content is copied here (a general parser copies every frame into its
//! own buffer first: 8% of an upload's CPU time, bench/RESULTS.md "Documents").
//!
//! Follows RFC 7578 and RFC 2046 §5.1.1: an optional preamble, the first boundary line (transport
//! padding allowed), the part's header lines, an empty line, then the content up to the next
//! `CRLF--boundary`. What follows the first part is not read.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use memchr::memmem::Finder;

/// The most a preamble, the first boundary line and the part's headers may take together.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// The most header lines a part may have.
const MAX_HEADERS: usize = 32;
/// RFC 2046: a boundary is 1 to 70 characters.
const MAX_BOUNDARY: usize = 70;

/// Why a multipart body could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MultipartError {
    /// The request is not `multipart/form-data` with a usable boundary.
    NotMultipart,
    /// The body breaks the format; the text says where.
    Malformed(&'static str),
    /// The form holds no part at all.
    NoPart,
    /// The body ended before the part's closing delimiter.
    Incomplete,
    /// The request body itself failed (the connection broke, it stalled).
    Body(String),
}

impl std::fmt::Display for MultipartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MultipartError::NotMultipart => f.write_str("the body is not multipart/form-data with a boundary"),
            MultipartError::Malformed(what) => f.write_str(what),
            MultipartError::NoPart => f.write_str("the form has no part"),
            MultipartError::Incomplete => f.write_str("the body ended before the part's closing boundary"),
            MultipartError::Body(e) => write!(f, "the request body failed: {e}"),
        }
    }
}

impl std::error::Error for MultipartError {}

/// The boundary named by a `Content-Type` header value, if it is `multipart/form-data`.
pub fn boundary(content_type: &str) -> Result<String, MultipartError> {
    let boundary = multer::parse_boundary(content_type).map_err(|_| MultipartError::NotMultipart)?;
    if boundary.is_empty() || boundary.len() > MAX_BOUNDARY {
        return Err(MultipartError::NotMultipart);
    }
    Ok(boundary)
}

/// The first part of a form: what its headers say, and its content as a stream.
pub struct Part<S> {
    /// `name` of its `Content-Disposition`.
    pub name: Option<String>,
    /// `filename` of its `Content-Disposition`.
    pub file_name: Option<String>,
    /// Its `Content-Type`.
    pub content_type: Option<String>,
    pub body: PartBody<S>,
}

/// Reads `body` up to the end of the first part's headers.
pub async fn first_part<S, E>(mut body: S, boundary: &str) -> Result<Part<S>, MultipartError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let mut head = BytesMut::new();
    loop {
        if let Some(parsed) = parse_head(&head, boundary.as_bytes())? {
            if parsed.content_start > MAX_HEAD_BYTES {
                return Err(MultipartError::Malformed("the part's headers are too long"));
            }
            let content = head.split_off(parsed.content_start).freeze();
            return Ok(Part {
                name: parsed.name,
                file_name: parsed.file_name,
                content_type: parsed.content_type,
                body: PartBody::new(body, boundary, content),
            });
        }
        if head.len() > MAX_HEAD_BYTES {
            return Err(MultipartError::Malformed("the part's headers are too long"));
        }
        match body.next().await {
            Some(Ok(frame)) => head.extend_from_slice(&frame),
            Some(Err(e)) => return Err(MultipartError::Body(e.to_string())),
            None => return Err(MultipartError::Incomplete),
        }
    }
}

struct Head {
    name: Option<String>,
    file_name: Option<String>,
    content_type: Option<String>,
    content_start: usize,
}

/// The first part's headers, once `head` holds all of them; `None` while it needs more.
fn parse_head(head: &[u8], boundary: &[u8]) -> Result<Option<Head>, MultipartError> {
    let dash_boundary = [b"--", boundary].concat();
    // The first boundary starts the body, or ends the preamble's last line.
    let after_boundary = if head.len() < dash_boundary.len() {
        return Ok(None);
    } else if head.starts_with(&dash_boundary) {
        dash_boundary.len()
    } else {
        let delimiter = [b"\r\n", &dash_boundary[..]].concat();
        match memchr::memmem::find(head, &delimiter) {
            Some(at) => at + delimiter.len(),
            None => return Ok(None),
        }
    };
    let rest = &head[after_boundary..];
    if rest.len() < 2 {
        return Ok(None);
    }
    if rest.starts_with(b"--") {
        return Err(MultipartError::NoPart);
    }
    // Transport padding, then the line's end.
    let padding = rest.iter().take_while(|b| matches!(b, b' ' | b'\t')).count();
    let rest = &rest[padding..];
    if rest.len() < 2 {
        return Ok(None);
    }
    if !rest.starts_with(b"\r\n") {
        return Err(MultipartError::Malformed("the boundary line does not end with CRLF"));
    }
    let headers_start = after_boundary + padding + 2;
    let block = &head[headers_start..];
    let (lines, content_start) = if block.starts_with(b"\r\n") {
        (&block[..0], headers_start + 2)
    } else if block.len() < 2 {
        return Ok(None);
    } else {
        match memchr::memmem::find(block, b"\r\n\r\n") {
            Some(at) => (&block[..at + 4], headers_start + at + 4),
            None => return Ok(None),
        }
    };
    let mut parsed = Head { name: None, file_name: None, content_type: None, content_start };
    if lines.is_empty() {
        return Ok(Some(parsed));
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    match httparse::parse_headers(lines, &mut headers) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) | Err(_) => {
            return Err(MultipartError::Malformed("the part's headers are malformed"))
        }
    }
    for header in headers.iter().take_while(|h| !h.name.is_empty()) {
        let Ok(value) = std::str::from_utf8(header.value) else { continue };
        if header.name.eq_ignore_ascii_case("content-disposition") {
            parsed.name = disposition_param(value, "name");
            parsed.file_name = disposition_param(value, "filename");
        } else if header.name.eq_ignore_ascii_case("content-type") {
            parsed.content_type = Some(value.trim().to_owned());
        }
    }
    Ok(Some(parsed))
}

/// A parameter of a `Content-Disposition` value (`form-data; name="file"; filename="a.pdf"`),
/// its name compared without case. A quoted value may hold `\"`; other backslashes are kept as
/// they are, since browsers send Windows paths unescaped (RFC 7578 §4.2, WHATWG HTML).
fn disposition_param(value: &str, wanted: &str) -> Option<String> {
    // Skip the disposition type.
    let mut rest = &value[value.find(';')? + 1..];
    loop {
        rest = rest.trim_start_matches([' ', '\t', ';']);
        if rest.is_empty() {
            return None;
        }
        let eq = rest.find(['=', ';'])?;
        if rest.as_bytes()[eq] == b';' {
            // A parameter without a value.
            rest = &rest[eq..];
            continue;
        }
        let name = rest[..eq].trim();
        let after = rest[eq + 1..].trim_start_matches([' ', '\t']);
        let (found, next) = if let Some(quoted) = after.strip_prefix('"') {
            let mut out = String::new();
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    '\\' if quoted[i + 1..].starts_with('"') => {
                        out.push('"');
                        chars.next();
                    }
                    c => out.push(c),
                }
            }
            // An unterminated quote takes the rest of the value.
            (out, &quoted[end.unwrap_or(quoted.len())..])
        } else {
            let end = after.find([';', ' ', '\t']).unwrap_or(after.len());
            (after[..end].to_owned(), &after[end..])
        };
        if name.eq_ignore_ascii_case(wanted) {
            return Some(found);
        }
        rest = next;
    }
}

/// The content of a part, as slices of the request's frames. Bytes that may begin the closing
/// delimiter (at most its length, at the end of a frame) are held until the next frame decides.
pub struct PartBody<S> {
    stream: S,
    /// `CRLF--boundary`.
    delimiter: Finder<'static>,
    /// Bytes received and not yet given out.
    pending: Bytes,
    ended: bool,
}

impl<S> PartBody<S> {
    fn new(stream: S, boundary: &str, pending: Bytes) -> Self {
        let delimiter = Finder::new(format!("\r\n--{boundary}").as_bytes()).into_owned();
        Self { stream, delimiter, pending, ended: false }
    }

    /// What `pending` allows to give out now, if anything.
    fn take_pending(&mut self) -> Option<Bytes> {
        if let Some(at) = self.delimiter.find(&self.pending) {
            self.ended = true;
            let content = std::mem::take(&mut self.pending).slice(..at);
            return Some(content).filter(|c| !c.is_empty());
        }
        let keep = possible_delimiter_start(&self.pending, self.delimiter.needle());
        (keep > 0).then(|| self.pending.split_to(keep))
    }
}

/// Where the end of `data` could begin `delimiter` (its length when nowhere): the bytes from there
/// on must wait for the next frame.
fn possible_delimiter_start(data: &[u8], delimiter: &[u8]) -> usize {
    let window = data.len().saturating_sub(delimiter.len() - 1);
    memchr::memchr_iter(delimiter[0], &data[window..])
        .map(|i| window + i)
        .find(|&at| delimiter.starts_with(&data[at..]))
        .unwrap_or(data.len())
}

impl<S, E> Stream for PartBody<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    type Item = Result<Bytes, MultipartError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if this.ended {
                return Poll::Ready(None);
            }
            if !this.pending.is_empty() {
                if let Some(content) = this.take_pending() {
                    return Poll::Ready(Some(Ok(content)));
                }
                if this.ended {
                    return Poll::Ready(None);
                }
            }
            // `pending` is now empty, or a tail shorter than the delimiter that may begin it.
            let frame = match ready!(Pin::new(&mut this.stream).poll_next(cx)) {
                Some(Ok(frame)) => frame,
                Some(Err(e)) => {
                    this.ended = true;
                    return Poll::Ready(Some(Err(MultipartError::Body(e.to_string()))));
                }
                None => {
                    this.ended = true;
                    return Poll::Ready(Some(Err(MultipartError::Incomplete)));
                }
            };
            if this.pending.is_empty() {
                this.pending = frame;
                continue;
            }
            let tail = std::mem::take(&mut this.pending);
            let needle = this.delimiter.needle();
            if frame.len() < needle.len() {
                // A tiny frame: join it to the tail (both shorter than the delimiter).
                this.pending = [&tail[..], &frame[..]].concat().into();
                continue;
            }
            // A delimiter that starts in the tail ends within the frame's first bytes.
            let joint = [&tail[..], &frame[..needle.len() - 1]].concat();
            if let Some(at) = this.delimiter.find(&joint) {
                this.ended = true;
                if at > 0 {
                    return Poll::Ready(Some(Ok(tail.slice(..at))));
                }
                return Poll::Ready(None);
            }
            this.pending = frame;
            return Poll::Ready(Some(Ok(tail)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const BOUNDARY: &str = "conclave-7d1f";

    fn form(content: &[u8]) -> Vec<u8> {
        let mut body = format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a b.txt\"\r\n\
             Content-Type: text/plain\r\n\r\n"
        )
        .into_bytes();
        body.extend_from_slice(content);
        body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
        body
    }

    /// The body in frames cut at `cuts` (positions, in any order).
    fn frames(body: &[u8], cuts: &[usize]) -> Vec<Result<Bytes, String>> {
        let mut cuts: Vec<usize> = cuts.iter().map(|c| (*c).min(body.len())).collect();
        cuts.push(0);
        cuts.push(body.len());
        cuts.sort_unstable();
        cuts.dedup();
        cuts.windows(2).map(|w| Ok(Bytes::copy_from_slice(&body[w[0]..w[1]]))).collect()
    }

    fn read(frames: Vec<Result<Bytes, String>>) -> Result<(Part<()>, Vec<u8>), MultipartError> {
        futures::executor::block_on(async {
            let part = first_part(futures::stream::iter(frames), BOUNDARY).await?;
            let Part { name, file_name, content_type, mut body } = part;
            let mut content = Vec::new();
            while let Some(piece) = body.next().await {
                let piece = piece?;
                assert!(!piece.is_empty(), "no empty pieces");
                content.extend_from_slice(&piece);
            }
            let stub = PartBody::new((), BOUNDARY, Bytes::new());
            Ok((Part { name, file_name, content_type, body: stub }, content))
        })
    }

    #[test]
    fn the_first_part_and_its_headers_are_read() {
        let (part, content) = read(frames(&form(b"hello\r\nworld"), &[])).unwrap();
        assert_eq!(part.name.as_deref(), Some("file"));
        assert_eq!(part.file_name.as_deref(), Some("a b.txt"));
        assert_eq!(part.content_type.as_deref(), Some("text/plain"));
        assert_eq!(content, b"hello\r\nworld");
    }

    #[test]
    fn a_delimiter_cut_anywhere_by_frames_is_found() {
        // Content that ends with what looks like the start of a delimiter, and holds near misses.
        let content = [&b"x\r\n--conclave-7d1\r\n-\r\r\n--"[..], &b"y".repeat(100), b"\r\n--conclave-7d1"].concat();
        let body = form(&content);
        let end = body.len();
        for a in 0..end {
            let (_, got) = read(frames(&body, &[a])).unwrap();
            assert_eq!(got, content, "one cut at {a}");
        }
        // Two cuts close together around the delimiter: frames of one byte, two, ...
        let at = body.len() - BOUNDARY.len() - 8;
        for a in at - 20..end {
            for b in a..(a + 20).min(end) {
                let (_, got) = read(frames(&body, &[a, b, b + 1])).unwrap();
                assert_eq!(got, content, "cuts at {a}, {b}, {}", b + 1);
            }
        }
        // Every byte a frame of its own.
        let (_, got) = read(frames(&body, &(0..end).collect::<Vec<_>>())).unwrap();
        assert_eq!(got, content);
    }

    #[test]
    fn preamble_padding_and_empty_parts_are_taken() {
        let body = format!(
            "a preamble\r\n--{BOUNDARY} \t\r\nContent-Disposition: form-data; NAME=file; filename=\"C:\\dir\\x \\\"q\\\".pdf\"\r\n\r\n\r\n--{BOUNDARY}--"
        );
        let (part, content) = read(frames(body.as_bytes(), &[3, 30])).unwrap();
        assert_eq!(part.name.as_deref(), Some("file"));
        assert_eq!(part.file_name.as_deref(), Some("C:\\dir\\x \"q\".pdf"));
        assert_eq!(part.content_type, None);
        assert!(content.is_empty());

        let bare = format!("--{BOUNDARY}\r\n\r\nabc\r\n--{BOUNDARY}--");
        let (part, content) = read(frames(bare.as_bytes(), &[])).unwrap();
        assert_eq!((part.name, part.file_name), (None, None));
        assert_eq!(content, b"abc");
    }

    #[test]
    fn broken_bodies_are_refused() {
        let err = |body: &[u8]| read(frames(body, &[7])).err();
        assert_eq!(err(format!("--{BOUNDARY}--\r\n").as_bytes()), Some(MultipartError::NoPart));
        assert_eq!(
            err(format!("--{BOUNDARY}xx\r\n\r\n").as_bytes()),
            Some(MultipartError::Malformed("the boundary line does not end with CRLF"))
        );
        assert_eq!(err(b"no boundary at all"), Some(MultipartError::Incomplete));
        assert_eq!(
            err(format!("--{BOUNDARY}\r\nContent-Type: text/plain\r\n").as_bytes()),
            Some(MultipartError::Incomplete)
        );
        assert_eq!(
            err(format!("--{BOUNDARY}\r\nbad header line\r\n\r\nx").as_bytes()),
            Some(MultipartError::Malformed("the part's headers are malformed"))
        );
        let body = form(b"the content");
        assert_eq!(err(&body[..body.len() - 12]), Some(MultipartError::Incomplete), "cut inside the delimiter");
        let huge = format!("--{BOUNDARY}\r\nX-Pad: {}\r\n\r\n", "p".repeat(MAX_HEAD_BYTES));
        assert_eq!(err(huge.as_bytes()), Some(MultipartError::Malformed("the part's headers are too long")));
        let mut failing = frames(&form(b"abc"), &[80]);
        failing.truncate(1);
        failing.push(Err("connection reset".into()));
        assert!(matches!(read(failing), Err(MultipartError::Body(e)) if e.contains("connection reset")));
    }

    #[test]
    fn content_types_name_their_boundary() {
        assert_eq!(boundary("multipart/form-data; boundary=abc").unwrap(), "abc");
        assert_eq!(boundary("multipart/form-data; boundary=\"a b\"").unwrap(), "a b");
        assert_eq!(boundary("application/json"), Err(MultipartError::NotMultipart));
        assert_eq!(boundary("multipart/form-data"), Err(MultipartError::NotMultipart));
        assert_eq!(
            boundary(&format!("multipart/form-data; boundary={}", "b".repeat(71))),
            Err(MultipartError::NotMultipart)
        );
    }

    proptest! {
        /// Any content, cut into frames anywhere, comes out whole: bytes drawn mostly from the
        /// delimiter's own characters, so near-delimiters are common.
        #[test]
        fn any_content_in_any_frames_is_read_back(
            content in proptest::collection::vec(
                prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'-'), Just(b'c'), Just(b'7'), any::<u8>()], 0..400),
            cuts in proptest::collection::vec(0usize..600, 0..12),
        ) {
            prop_assume!(memchr::memmem::find(&content, format!("\r\n--{BOUNDARY}").as_bytes()).is_none());
            let body = form(&content);
            let (part, got) = read(frames(&body, &cuts)).unwrap();
            prop_assert_eq!(part.file_name.as_deref(), Some("a b.txt"));
            prop_assert_eq!(got, content);
        }
    }

    /// What `multer` (a general multipart parser) reads as the first part: its file name and
    /// content, or `None` where it refuses the body.
    fn multer_first(frames: Vec<Result<Bytes, String>>) -> Option<(Option<String>, Vec<u8>)> {
        crate::fuzzing::multer_first_part(frames.into_iter().map(Result::unwrap).collect(), BOUNDARY)
    }

    proptest! {
        /// Against `multer`, on forms that vary where the format allows (preamble, transport
        /// padding, header order and case, more parts after the first), cut into frames anywhere:
        /// both read the same first part.
        #[test]
        fn well_formed_forms_read_as_multer_reads_them(
            preamble in proptest::collection::vec(prop_oneof![Just(b'-'), Just(b'\n'), Just(b'x')], 0..40),
            padding in "[ \t]{0,3}",
            upper in any::<bool>(),
            type_first in any::<bool>(),
            content in proptest::collection::vec(
                prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'-'), Just(b'c'), any::<u8>()], 0..300),
            more in any::<bool>(),
            cuts in proptest::collection::vec(0usize..700, 0..10),
        ) {
            prop_assume!(memchr::memmem::find(&content, format!("\r\n--{BOUNDARY}").as_bytes()).is_none());
            // A preamble must not itself hold a delimiter line.
            prop_assume!(memchr::memmem::find(&preamble, format!("--{BOUNDARY}").as_bytes()).is_none());
            let (cd, ct) = if upper { ("CONTENT-DISPOSITION", "CONTENT-TYPE") } else { ("content-disposition", "Content-Type") };
            let disposition = format!("{cd}: form-data; name=\"file\"; filename=\"n.txt\"");
            let kind = format!("{ct}: text/plain");
            let headers = if type_first { format!("{kind}\r\n{disposition}") } else { format!("{disposition}\r\n{kind}") };
            let mut body = preamble.clone();
            if !preamble.is_empty() {
                body.extend_from_slice(b"\r\n");
            }
            body.extend_from_slice(format!("--{BOUNDARY}{padding}\r\n{headers}\r\n\r\n").as_bytes());
            body.extend_from_slice(&content);
            if more {
                body.extend_from_slice(format!("\r\n--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\ny").as_bytes());
            }
            body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
            let expected = multer_first(frames(&body, &cuts));
            prop_assert!(expected.is_some(), "multer refuses a well-formed form");
            let (part, got) = read(frames(&body, &cuts)).unwrap();
            prop_assert_eq!(Some((part.file_name, got)), expected);
        }

        /// Any damage to a form (a byte changed, removed or added anywhere): the reader never
        /// panics, and the content it reads whole is the content `multer` reads, where `multer`
        /// reads one. (File names of damaged header lines may differ: each parser is lenient in
        /// its own way there, e.g. with an unterminated quote, and names are sanitised anyway.)
        #[test]
        fn damaged_forms_never_read_differently_from_multer(
            content in proptest::collection::vec(prop_oneof![Just(b'\r'), Just(b'-'), any::<u8>()], 0..200),
            at in 0usize..400,
            byte in any::<u8>(),
            edit in 0u8..3,
            cuts in proptest::collection::vec(0usize..500, 0..8),
        ) {
            prop_assume!(memchr::memmem::find(&content, format!("\r\n--{BOUNDARY}").as_bytes()).is_none());
            let mut body = form(&content);
            let at = at.min(body.len() - 1);
            match edit {
                0 => body[at] = byte,
                1 => { body.remove(at); }
                _ => body.insert(at, byte),
            }
            let ours = read(frames(&body, &cuts));
            if let (Ok((_, got)), Some((_, theirs))) = (ours, multer_first(frames(&body, &cuts))) {
                prop_assert_eq!(got, theirs);
            }
        }
    }
}
