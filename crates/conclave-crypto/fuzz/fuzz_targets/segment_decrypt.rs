//! Fuzzes the segment header parser, `SegmentDecryptor` and the range reader.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    conclave_crypto::fuzzing::segment_decrypt(data);
});
