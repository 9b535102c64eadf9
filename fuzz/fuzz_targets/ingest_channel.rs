#![no_main]
//! See `src/ingest_channel.rs`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| runwire_fuzz::ingest_channel::run(data));
