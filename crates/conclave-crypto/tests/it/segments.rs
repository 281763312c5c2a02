//! The segmented format: round trips at every size that matters, random-access reads, and
//! failure (never a panic, never wrong plaintext) on truncation, reordering, splicing, bit flips
//! and a wrong binding.

use conclave_crypto::segment::{self, decrypt_range, HEADER_LEN};
use conclave_crypto::{
    Binding, CryptoError, Key, RangeDecryptor, RangePlan, SegmentDecryptor, SegmentEncryptor, SegmentHeader,
};
use proptest::prelude::*;
use uuid::Uuid;

fn binding(version: u64) -> Binding {
    Binding::document_segment(Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3), version)
}

/// Encrypts with the incremental writer, pushing in pieces of the given sizes (cycled).
fn encrypt_in_pieces(key: &Key, binding: &Binding, segment_size: u32, plaintext: &[u8], pieces: &[usize]) -> Vec<u8> {
    let mut writer = SegmentEncryptor::with_segment_size(key, binding, segment_size).unwrap();
    let mut out = Vec::new();
    let mut rest = plaintext;
    let mut sizes = pieces.iter().cycle();
    while !rest.is_empty() {
        let n = (*sizes.next().unwrap()).min(rest.len());
        writer.push(&rest[..n], &mut out).unwrap();
        rest = &rest[n..];
    }
    writer.finish(&mut out).unwrap();
    out
}

/// Decrypts with the incremental reader in pieces; returns what it emitted and how it ended.
fn decrypt_in_pieces(key: &Key, binding: &Binding, object: &[u8], piece: usize) -> (Vec<u8>, Result<(), CryptoError>) {
    let mut reader = SegmentDecryptor::new(key, binding);
    let mut out = Vec::new();
    for chunk in object.chunks(piece.max(1)) {
        if let Err(e) = reader.push(chunk, &mut out) {
            return (out, Err(e));
        }
    }
    let end = reader.finish(&mut out);
    (out, end)
}

/// A tampered object must fail, and whatever the reader released before failing must be a true
/// prefix of the plaintext (released segments are authentic; nothing wrong ever comes out).
fn assert_rejected(key: &Key, binding: &Binding, object: &[u8], plaintext: &[u8], piece: usize) -> CryptoError {
    let (emitted, end) = decrypt_in_pieces(key, binding, object, piece);
    assert!(plaintext.starts_with(&emitted), "released bytes that are not the plaintext");
    assert!(segment::decrypt(key, binding, object).is_err());
    match end {
        Err(e) => e,
        Ok(()) => panic!("tampered object decrypted"),
    }
}

/// Splits an object into its header and stored segments (using the true plaintext length).
fn split_segments(object: &[u8], segment_size: u32, plaintext_len: usize) -> (Vec<u8>, Vec<Vec<u8>>) {
    let s = segment_size as usize;
    let mut segments = Vec::new();
    let mut rest = &object[HEADER_LEN..];
    for _ in 0..plaintext_len / s {
        segments.push(rest[..s + 16].to_vec());
        rest = &rest[s + 16..];
    }
    assert_eq!(rest.len(), plaintext_len % s + 16);
    segments.push(rest.to_vec());
    (object[..HEADER_LEN].to_vec(), segments)
}

/// A segment size and a plaintext whose length is often exactly at a boundary.
fn sized_plaintext() -> impl Strategy<Value = (u32, Vec<u8>)> {
    (16u32..256).prop_flat_map(|seg| {
        let s = seg as usize;
        let len =
            prop_oneof![Just(0), Just(1), Just(s - 1), Just(s), Just(s + 1), Just(2 * s), Just(3 * s + 1), 0..5 * s];
        (Just(seg), len.prop_flat_map(|n| prop::collection::vec(any::<u8>(), n)))
    })
}

fn pieces() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(prop_oneof![1usize..4, 1usize..300, Just(4096)], 1..8)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn round_trip((seg, plaintext) in sized_plaintext(), push in pieces(), read in 1usize..400) {
        let key = Key::generate();
        let object = encrypt_in_pieces(&key, &binding(1), seg, &plaintext, &push);
        let header = SegmentHeader::parse(&object[..HEADER_LEN]).unwrap();
        prop_assert_eq!(header.segment_size(), seg);
        prop_assert_eq!(Some(object.len() as u64), header.ciphertext_len(plaintext.len() as u64));
        prop_assert_eq!(header.plaintext_len(object.len() as u64).unwrap(), plaintext.len() as u64);
        let (out, end) = decrypt_in_pieces(&key, &binding(1), &object, read);
        prop_assert!(end.is_ok());
        prop_assert_eq!(&out, &plaintext);
        // The one-shot helpers agree with the incremental writer and reader.
        let whole = segment::encrypt(&key, &binding(1), &plaintext, seg).unwrap();
        prop_assert_eq!(segment::decrypt(&key, &binding(1), &whole).unwrap(), plaintext);
    }

    #[test]
    fn any_truncation_fails((seg, plaintext) in sized_plaintext(), cut in any::<prop::sample::Index>(), read in 1usize..400) {
        let key = Key::generate();
        let object = segment::encrypt(&key, &binding(1), &plaintext, seg).unwrap();
        let cut = cut.index(object.len());
        assert_rejected(&key, &binding(1), &object[..cut], &plaintext, read);
    }

    #[test]
    fn dropping_the_last_segment_is_truncation((seg, plaintext) in sized_plaintext(), read in 1usize..400) {
        let key = Key::generate();
        let object = segment::encrypt(&key, &binding(1), &plaintext, seg).unwrap();
        let (header, segments) = split_segments(&object, seg, plaintext.len());
        let without_last = [header, segments[..segments.len() - 1].concat()].concat();
        let err = assert_rejected(&key, &binding(1), &without_last, &plaintext, read);
        prop_assert!(matches!(err, CryptoError::Truncated), "{err:?}");
    }

    #[test]
    fn reordering_segments_fails(
        (seg, plaintext) in sized_plaintext(),
        i in any::<prop::sample::Index>(),
        j in any::<prop::sample::Index>(),
        read in 1usize..400,
    ) {
        let key = Key::generate();
        let object = segment::encrypt(&key, &binding(1), &plaintext, seg).unwrap();
        let (header, mut segments) = split_segments(&object, seg, plaintext.len());
        if segments.len() < 2 {
            return Ok(());
        }
        let i = i.index(segments.len());
        let j = (i + 1 + j.index(segments.len() - 1)) % segments.len();
        segments.swap(i, j);
        assert_rejected(&key, &binding(1), &[header, segments.concat()].concat(), &plaintext, read);
    }

    #[test]
    fn any_bit_flip_fails((seg, plaintext) in sized_plaintext(), at in any::<prop::sample::Index>(), bit in 0u8..8, read in 1usize..400) {
        let key = Key::generate();
        let mut object = segment::encrypt(&key, &binding(1), &plaintext, seg).unwrap();
        let at = at.index(object.len());
        object[at] ^= 1 << bit;
        assert_rejected(&key, &binding(1), &object, &plaintext, read);
    }

    #[test]
    fn splicing_a_segment_from_another_object_fails(
        (seg, plaintext) in sized_plaintext(),
        i in any::<prop::sample::Index>(),
        same_header in any::<bool>(),
        read in 1usize..400,
    ) {
        // Two objects under the same FEK and binding (for instance a re-upload).
        let key = Key::generate();
        let a = segment::encrypt(&key, &binding(1), &plaintext, seg).unwrap();
        let b = segment::encrypt(&key, &binding(1), &plaintext, seg).unwrap();
        let (header_a, mut segments_a) = split_segments(&a, seg, plaintext.len());
        let (header_b, segments_b) = split_segments(&b, seg, plaintext.len());
        // With B's header and a single segment, the "splice" would be B itself.
        if !same_header && segments_a.len() < 2 {
            return Ok(());
        }
        let i = i.index(segments_a.len());
        segments_a[i] = segments_b[i].clone();
        let header = if same_header { header_a } else { header_b };
        let spliced = [header, segments_a.concat()].concat();
        // With B's header every segment but the spliced one is foreign, so it fails all the same.
        assert_rejected(&key, &binding(1), &spliced, &plaintext, read);
    }

    #[test]
    fn another_binding_or_key_fails((seg, plaintext) in sized_plaintext(), read in 1usize..400) {
        let key = Key::generate();
        let object = segment::encrypt(&key, &binding(1), &plaintext, seg).unwrap();
        let err = assert_rejected(&key, &binding(2), &object, &plaintext, read);
        prop_assert!(matches!(err, CryptoError::Integrity));
        let other_doc = Binding::document_segment(Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(4), 1);
        assert_rejected(&key, &other_doc, &object, &plaintext, read);
        assert_rejected(&Key::generate(), &binding(1), &object, &plaintext, read);
    }

    #[test]
    fn appended_bytes_fail((seg, plaintext) in sized_plaintext(), extra in prop::collection::vec(any::<u8>(), 1..300), read in 1usize..400) {
        let key = Key::generate();
        let object = segment::encrypt(&key, &binding(1), &plaintext, seg).unwrap();
        assert_rejected(&key, &binding(1), &[object, extra].concat(), &plaintext, read);
    }

    #[test]
    fn range_reads_equal_the_slice(
        (seg, plaintext) in sized_plaintext(),
        a in any::<prop::sample::Index>(),
        b in any::<prop::sample::Index>(),
        piece in 1usize..300,
    ) {
        let key = Key::generate();
        let object = segment::encrypt(&key, &binding(1), &plaintext, seg).unwrap();
        let header = SegmentHeader::parse(&object[..HEADER_LEN]).unwrap();
        let (a, b) = (a.index(plaintext.len() + 1), b.index(plaintext.len() + 1));
        let range = a.min(b) as u64..a.max(b) as u64;
        let plan = RangePlan::new(&header, plaintext.len() as u64, range.clone()).unwrap();
        let ct = plan.ciphertext_range();
        prop_assert!(ct.end <= object.len() as u64);
        let bytes = &object[ct.start as usize..ct.end as usize];
        // Never more than the segments the range touches.
        let touched = if range.is_empty() { 0 } else { (range.end - 1) / u64::from(seg) - range.start / u64::from(seg) + 1 };
        prop_assert!(bytes.len() as u64 <= touched * (u64::from(seg) + 16));
        let expected = &plaintext[range.start as usize..range.end as usize];
        prop_assert_eq!(&decrypt_range(&key, &binding(1), &plan, bytes).unwrap(), expected);

        let mut reader = RangeDecryptor::new(&key, &binding(1), plan.clone());
        let mut out = Vec::new();
        for chunk in bytes.chunks(piece) {
            reader.push(chunk, &mut out).unwrap();
        }
        reader.finish().unwrap();
        prop_assert_eq!(&out, expected);

        // A range read that stops short, or that reads under a wrong binding, fails.
        if !bytes.is_empty() {
            let mut short = RangeDecryptor::new(&key, &binding(1), plan.clone());
            let mut out = Vec::new();
            let cut = bytes.len() - 1;
            let pushed = short.push(&bytes[..cut], &mut out);
            prop_assert!(pushed.is_err() || short.finish().is_err());
            prop_assert!(decrypt_range(&key, &binding(2), &plan, bytes).is_err());
        }
    }

    #[test]
    fn in_place_range_reads_equal_the_slice(
        (seg, plaintext) in sized_plaintext(),
        a in any::<prop::sample::Index>(),
        b in any::<prop::sample::Index>(),
        block in 1u64..2000,
        flip in any::<Option<(prop::sample::Index, u8)>>(),
    ) {
        let key = Key::generate();
        let object = segment::encrypt(&key, &binding(1), &plaintext, seg).unwrap();
        let header = SegmentHeader::parse(&object[..HEADER_LEN]).unwrap();
        let (a, b) = (a.index(plaintext.len() + 1), b.index(plaintext.len() + 1));
        let range = a.min(b) as u64..a.max(b) as u64;
        let plan = RangePlan::new(&header, plaintext.len() as u64, range.clone()).unwrap();
        let ct = plan.ciphertext_range();
        let mut stored = object[ct.start as usize..ct.end as usize].to_vec();
        if let Some((at, bit)) = flip.filter(|_| !stored.is_empty()) {
            let at = at.index(stored.len());
            stored[at] ^= 1 << (bit % 8);
        }
        let tampered = stored != object[ct.start as usize..ct.end as usize];

        // Reads of whole segments, as a local file is read for a download.
        let read = plan.whole_segments_len(block) as usize;
        prop_assert_eq!(read % (seg as usize + 16), 0);
        let mut reader = RangeDecryptor::new(&key, &binding(1), plan.clone());
        let mut out = Vec::new();
        let mut failed = false;
        for chunk in stored.chunks_mut(read) {
            match reader.open_in_place(chunk) {
                Ok(ranges) => {
                    for r in ranges {
                        out.extend_from_slice(&chunk[r]);
                    }
                }
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        let expected = &plaintext[range.start as usize..range.end as usize];
        if tampered {
            // Whatever came out before the failure is a true prefix of the range.
            prop_assert!(failed);
            prop_assert!(expected.starts_with(&out));
        } else {
            prop_assert!(!failed);
            reader.finish().unwrap();
            prop_assert_eq!(&out, expected);
        }
    }

    #[test]
    fn a_wrong_plaintext_length_never_yields_wrong_bytes(
        (seg, plaintext) in sized_plaintext(),
        claimed in 0usize..1500,
        a in any::<prop::sample::Index>(),
        b in any::<prop::sample::Index>(),
    ) {
        // The length comes from the database; if it is wrong, a range read fails or is still right.
        let key = Key::generate();
        let object = segment::encrypt(&key, &binding(1), &plaintext, seg).unwrap();
        let header = SegmentHeader::parse(&object[..HEADER_LEN]).unwrap();
        let (a, b) = (a.index(claimed + 1), b.index(claimed + 1));
        let range = a.min(b) as u64..a.max(b) as u64;
        let plan = RangePlan::new(&header, claimed as u64, range.clone()).unwrap();
        let ct = plan.ciphertext_range();
        if let Some(bytes) = object.get(ct.start as usize..ct.end as usize) {
            if let Ok(out) = decrypt_range(&key, &binding(1), &plan, bytes) {
                if range.is_empty() {
                    prop_assert!(out.is_empty());
                } else {
                    prop_assert_eq!(Some(&out[..]), plaintext.get(range.start as usize..range.end as usize));
                }
            }
        }
    }

    #[test]
    fn decryptor_never_panics_on_garbage(bytes in prop::collection::vec(any::<u8>(), 0..600), read in 1usize..100) {
        let key = Key::generate();
        let (_, end) = decrypt_in_pieces(&key, &binding(1), &bytes, read);
        prop_assert!(end.is_err());
        let mut with_header = SegmentHeader::generate(16).unwrap().to_bytes().to_vec();
        with_header.extend_from_slice(&bytes);
        let (_, end) = decrypt_in_pieces(&key, &binding(1), &with_header, read);
        prop_assert!(end.is_err());
    }
}

/// Every cut and every bit flip of one object with a partial last segment, and of one whose
/// plaintext fills its segments exactly (so the last segment is empty).
#[test]
fn exhaustive_cuts_and_flips() {
    let key = Key::generate();
    for len in [0usize, 48, 56] {
        let plaintext: Vec<u8> = (0..len as u8).collect();
        let object = segment::encrypt(&key, &binding(1), &plaintext, 16).unwrap();
        for cut in 0..object.len() {
            for piece in [1, 7, 32, 1000] {
                assert_rejected(&key, &binding(1), &object[..cut], &plaintext, piece);
            }
        }
        for at in 0..object.len() {
            for bit in 0..8 {
                let mut altered = object.clone();
                altered[at] ^= 1 << bit;
                assert_rejected(&key, &binding(1), &altered, &plaintext, 16);
            }
        }
    }
}

#[test]
fn layout_of_a_small_object() {
    let key = Key::generate();
    let object = segment::encrypt(&key, &binding(1), &[7u8; 40], 16).unwrap();
    // Header, two full segments (16 + 16 tag each), last segment of 8 bytes + tag.
    assert_eq!(object.len(), 16 + 2 * 32 + 24);
    assert_eq!(&object[..4], b"CNCL");
    assert_eq!(object[4], 1);
    assert_eq!(&object[5..9], &16u32.to_be_bytes());
    // An empty plaintext is one empty, flagged segment: just its tag.
    assert_eq!(segment::encrypt(&key, &binding(1), &[], 16).unwrap().len(), 32);
    // A plaintext that fills its segments exactly ends with an empty last segment.
    assert_eq!(segment::encrypt(&key, &binding(1), &[0; 32], 16).unwrap().len(), 16 + 2 * 32 + 16);
}

#[test]
fn default_segment_size_is_64k() {
    let key = Key::generate();
    let mut writer = SegmentEncryptor::new(&key, &binding(1));
    assert_eq!(writer.header().segment_size(), 65536);
    let plaintext = vec![0x5a; 65536 * 2 + 100];
    let mut out = Vec::new();
    writer.push(&plaintext[..70000], &mut out).unwrap();
    // Header and one whole segment so far; the rest waits for more input.
    assert_eq!(out.len(), 16 + 65536 + 16);
    writer.push(&plaintext[70000..], &mut out).unwrap();
    writer.finish(&mut out).unwrap();
    assert_eq!(segment::decrypt(&key, &binding(1), &out).unwrap(), plaintext);
}

#[test]
fn two_encryptions_differ() {
    let key = Key::generate();
    let a = segment::encrypt(&key, &binding(1), b"same", 16).unwrap();
    let b = segment::encrypt(&key, &binding(1), b"same", 16).unwrap();
    assert_ne!(a[9..16], b[9..16], "nonce prefixes must be random");
    assert_ne!(a, b);
}

#[test]
fn writer_rejects_bad_segment_sizes() {
    let key = Key::generate();
    for size in [0, 15, (16 << 20) + 1] {
        assert!(SegmentEncryptor::with_segment_size(&key, &binding(1), size).is_err(), "{size}");
    }
}

#[test]
fn reader_refuses_input_after_an_error() {
    let key = Key::generate();
    let mut object = segment::encrypt(&key, &binding(1), &[1; 64], 16).unwrap();
    object[20] ^= 1;
    let mut reader = SegmentDecryptor::new(&key, &binding(1));
    let mut out = Vec::new();
    assert!(reader.push(&object[..48], &mut out).is_err());
    assert!(reader.push(&object[48..], &mut out).is_err());
    assert!(reader.finish(&mut out).is_err());
    assert!(out.is_empty());
}

#[test]
fn range_plan_rejects_ranges_outside_the_plaintext() {
    let header = SegmentHeader::generate(16).unwrap();
    assert!(RangePlan::new(&header, 10, 5..11).is_err());
    #[allow(clippy::reversed_empty_ranges)]
    let backwards = 6..5;
    assert!(RangePlan::new(&header, 10, backwards).is_err());
    let empty = RangePlan::new(&header, 10, 10..10).unwrap();
    assert!(empty.ciphertext_range().is_empty());
    // Ranges in the middle read only the segments they touch.
    let plan = RangePlan::new(&header, 100, 20..40).unwrap();
    assert_eq!(plan.ciphertext_range(), (16 + 32)..(16 + 3 * 32));
    // A range ending in the last, partial segment reads exactly to the end of the object.
    let plan = RangePlan::new(&header, 100, 95..100).unwrap();
    assert_eq!(plan.ciphertext_range().end, header.ciphertext_len(100).unwrap());
}

#[test]
fn in_place_reads_must_hold_whole_segments() {
    let key = Key::generate();
    let plaintext = vec![7u8; 100];
    let object = segment::encrypt(&key, &binding(1), &plaintext, 32).unwrap();
    let header = SegmentHeader::parse(&object[..HEADER_LEN]).unwrap();
    let plan = RangePlan::new(&header, 100, 10..90).unwrap();
    let ct = plan.ciphertext_range();
    let mut stored = object[ct.start as usize..ct.end as usize].to_vec();
    let mut reader = RangeDecryptor::new(&key, &binding(1), plan.clone());
    assert!(reader.open_in_place(&mut stored[..40]).is_err(), "a read that ends inside a segment");
    assert!(reader.open_in_place(&mut stored[..48]).is_err(), "a failed reader refuses more");

    // Opened in place, segment by segment: the ranges point at exactly the asked plaintext.
    let mut reader = RangeDecryptor::new(&key, &binding(1), plan);
    let ranges = reader.open_in_place(&mut stored).unwrap();
    assert_eq!(ranges, vec![10..32, 48..80, 96..122]);
    reader.finish().unwrap();
    let got: Vec<u8> = ranges.into_iter().flat_map(|r| stored[r].to_vec()).collect();
    assert_eq!(got, &plaintext[10..90]);
}
