//! libFuzzer target: `ordo::fuzzing::sasl_exchange` (tests/fuzz/README.md).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ordo::fuzzing::sasl_exchange(data));
