#![no_main]
//! See `src/ws_frames.rs`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| runwire_fuzz::ws_frames::run(data));
