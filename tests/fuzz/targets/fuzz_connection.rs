//! libFuzzer target: `ordo::fuzzing::connection_engine` (tests/fuzz/README.md).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ordo::fuzzing::connection_engine(data));
