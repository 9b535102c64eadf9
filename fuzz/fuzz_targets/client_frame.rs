#![no_main]
//! See `src/client_frame.rs`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| runwire_fuzz::client_frame::run(data));
