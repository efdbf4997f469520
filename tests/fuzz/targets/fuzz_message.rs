//! libFuzzer target: `ordo::fuzzing::message_parser` (tests/fuzz/README.md).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ordo::fuzzing::message_parser(data));
