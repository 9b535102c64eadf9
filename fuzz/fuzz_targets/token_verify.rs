#![no_main]
//! See `src/token_verify.rs`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| runwire_fuzz::token_verify::run(data));
