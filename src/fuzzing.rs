//! Entry points for the fuzz targets (`examples/fuzz_*.rs`, `tests/fuzz/run.sh`)
//! and the corpus replay test (`tests/fuzz_corpus.rs`).
