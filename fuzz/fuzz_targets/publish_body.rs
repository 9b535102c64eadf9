#![no_main]
//! See `src/publish_body.rs`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| runwire_fuzz::publish_body::run(data));
