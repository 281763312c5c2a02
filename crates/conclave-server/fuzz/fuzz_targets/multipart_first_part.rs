//! Fuzzes the multipart reader of uploads: the boundary from a `Content-Type`, the first part's
//! headers and its content, in frames of any size, against `multer`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    conclave_server::fuzzing::multipart_first_part(data);
});
