//! Fuzzes `Binding::decode`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    conclave_crypto::fuzzing::binding_decode(data);
});
