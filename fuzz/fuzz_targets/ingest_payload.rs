#![no_main]
//! See `src/ingest_payload.rs`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| runwire_fuzz::ingest_payload::run(data));
