//! Fuzzes `WrappedKey::parse` (and `unwrap_key` on what it accepts).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    conclave_crypto::fuzzing::wrapped_key_parse(data);
});
