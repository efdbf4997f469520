//! libFuzzer target: `ordo::fuzzing::frame_decoder` (tests/fuzz/README.md).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ordo::fuzzing::frame_decoder(data));
