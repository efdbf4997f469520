//! libFuzzer target: `ordo::fuzzing::selector_parser` (tests/fuzz/README.md).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ordo::fuzzing::selector_parser(data));
