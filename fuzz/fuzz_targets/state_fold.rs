#![no_main]
//! See `src/state_fold.rs`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| runwire_fuzz::state_fold::run(data));
