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
/// closing delimiter, holds no delimiter itself, and is what `multer` reads where `multer` reads
/// a first part.
pub fn multipart_first_part(data: &[u8]) -> bool {
    let Some((&frame, rest)) = data.split_first() else { return false };
    let Some(newline) = rest.iter().position(|&b| b == b'\n') else { return false };
    let (content_type, body) = (&rest[..newline], &rest[newline + 1..]);
    let Ok(boundary) = boundary(&String::from_utf8_lossy(content_type)) else { return false };

    let framed = read_first_part(body, usize::from(frame) + 1, &boundary);
    let whole = read_first_part(body, body.len().max(1), &boundary);
    assert_eq!(framed.is_ok(), whole.is_ok(), "frames changed the outcome: {framed:?} / {whole:?}");
    let Ok(content) = framed else { return false };
    assert_eq!(Ok(&content), whole.as_ref(), "frames changed the content");

    let delimiter = format!("\r\n--{boundary}");
    assert!(memchr::memmem::find(&content, delimiter.as_bytes()).is_none(), "the content holds a delimiter");
    let mut tail = content.clone();
    tail.extend_from_slice(delimiter.as_bytes());
    assert!(memchr::memmem::find(body, &tail).is_some(), "the content is not followed by the delimiter in the body");
    if let Some(theirs) = multer_first_part(body, &boundary) {
        assert_eq!(content, theirs, "multer reads other content");
    }
    true
}

/// The first part's content, read from `body` cut into frames of `frame` bytes.
fn read_first_part(body: &[u8], frame: usize, boundary: &str) -> Result<Vec<u8>, MultipartError> {
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
        Ok(content)
    })
}

/// What `multer` reads as the first part's content, or `None` where it refuses the body.
fn multer_first_part(body: &[u8], boundary: &str) -> Option<Vec<u8>> {
    let stream = futures::stream::once(futures::future::ready(Ok::<_, std::io::Error>(Bytes::copy_from_slice(body))));
    futures::executor::block_on(async {
        let mut form = multer::Multipart::new(stream, boundary);
        let field = form.next_field().await.ok()??;
        field.bytes().await.ok().map(|b| b.to_vec())
    })
}
