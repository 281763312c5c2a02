//! The body of the `cargo fuzz` target in `fuzz/`, kept here so the saved corpus replays through
//! the same code as an ordinary test (`tests/it/fuzz_corpus.rs`). It returns whether the input
//! was accepted, and panics only when an invariant breaks (which is what the fuzzer looks for).

use bytes::Bytes;
use futures::StreamExt;

use crate::multipart::{boundary, first_part, MultipartError};

/// The multipart reader on any bytes: the first byte sets the frame size (1 to 256 bytes), the
/// first line after it is the `Content-Type` value, the rest is the request body.
///
/// Invariants: no panic; no empty piece of content; the content read does not depend on how
/// the body is cut into frames; content read whole is a slice of the body followed by the
/// closing delimiter, holds no delimiter itself, and, for a part with a named
/// `Content-Disposition` (what an upload needs), is what `multer` reads where `multer` reads a
/// first part. (A part with no header lines at all, `--b CRLF CRLF content`, is content from the
/// first byte after the empty line, as RFC 2046 §5.1.1 has it; `multer` takes the lines after it
/// for headers. Uploads refuse such a part for want of a name. And a boundary line after a bare
/// LF or CR is no boundary here, as in the RFC, where `multer` takes one after a bare LF: bodies
/// with such lines are not compared.)
pub fn multipart_first_part(data: &[u8]) -> bool {
    let Some((&frame, rest)) = data.split_first() else { return false };
    let Some(newline) = rest.iter().position(|&b| b == b'\n') else { return false };
    let (content_type, body) = (&rest[..newline], &rest[newline + 1..]);
    let Ok(boundary) = boundary(&String::from_utf8_lossy(content_type)) else { return false };

    let framed = read_first_part(body, usize::from(frame) + 1, &boundary);
    let whole = read_first_part(body, body.len().max(1), &boundary);
    assert_eq!(framed.is_ok(), whole.is_ok(), "frames changed the outcome: {framed:?} / {whole:?}");
    let Ok((named, content)) = framed else { return false };
    assert_eq!(Ok(&(named, content.clone())), whole.as_ref(), "frames changed the part");

    let delimiter = format!("\r\n--{boundary}");
    assert!(memchr::memmem::find(&content, delimiter.as_bytes()).is_none(), "the content holds a delimiter");
    let mut tail = content.clone();
    tail.extend_from_slice(delimiter.as_bytes());
    assert!(memchr::memmem::find(body, &tail).is_some(), "the content is not followed by the delimiter in the body");
    if named && only_crlf_boundaries(body, &boundary) {
        if let Some((_, theirs)) = multer_first_part(vec![Bytes::copy_from_slice(body)], &boundary) {
            assert_eq!(content, theirs, "multer reads other content");
        }
    }
    true
}

/// Whether every `--boundary` in `body` starts it or follows a CRLF.
fn only_crlf_boundaries(body: &[u8], boundary: &str) -> bool {
    let dash = format!("--{boundary}");
    memchr::memmem::find_iter(body, dash.as_bytes()).all(|at| at == 0 || (at >= 2 && &body[at - 2..at] == b"\r\n"))
}

/// Whether the first part's `Content-Disposition` names it, and its content, read from `body`
/// cut into frames of `frame` bytes.
fn read_first_part(body: &[u8], frame: usize, boundary: &str) -> Result<(bool, Vec<u8>), MultipartError> {
    let frames: Vec<Result<Bytes, std::io::Error>> =
        body.chunks(frame).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
    futures::executor::block_on(async {
        let mut part = first_part(futures::stream::iter(frames), boundary).await?;
        let mut content = Vec::new();
        while let Some(piece) = part.body.next().await {
            let piece = piece?;
            assert!(!piece.is_empty(), "an empty piece of content");
            content.extend_from_slice(&piece);
        }
        Ok((part.name.is_some(), content))
    })
}

/// What `multer` reads as the first part (its file name and content) from a body in `frames`,
/// or `None` where it refuses the body. The reference the multipart reader is tested against.
pub(crate) fn multer_first_part(frames: Vec<Bytes>, boundary: &str) -> Option<(Option<String>, Vec<u8>)> {
    let stream = futures::stream::iter(frames.into_iter().map(Ok::<_, std::io::Error>));
    futures::executor::block_on(async {
        let mut form = multer::Multipart::new(stream, boundary);
        let field = form.next_field().await.ok()??;
        let file_name = field.file_name().map(str::to_owned);
        let content = field.bytes().await.ok()?;
        Some((file_name, content.to_vec()))
    })
}
