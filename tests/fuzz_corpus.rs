//! The fuzz corpus (tests/fuzz/README.md). Replays every committed seed in
//! tests/fuzz/corpus/<target>/ and every saved crash in
//! tests/fuzz/regressions/<target>/ through `ordo::fuzzing::replay`, so a
//! bug the fuzzer once found stays fixed without a fuzzer on the machine.
//!
//! The seeds are written by an ignored test of this file:
//! `cargo test --test fuzz_corpus -- --ignored write_seeds` (deterministic:
//! running it again rewrites the same files; files it does not name, such
//! as inputs copied in from a fuzzing run, are left alone).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ordo::fuzzing::{replay, TARGETS};

#[path = "fuzz_corpus/seeds.rs"]
mod seeds;
use seeds::{connection_seeds, frame_seeds, message_seeds, sasl_seeds, selector_seeds, Seed};

/// The whole replay must finish by then (a debug build; the seeds take
/// seconds). A replay that hangs fails the test, naming its input.
const REPLAY_DEADLINE: Duration = Duration::from_secs(300);

/// Largest seed file: libFuzzer's default `-max_len` grows from the corpus,
/// and small seeds keep executions fast.
const MAX_SEED_SIZE: usize = 64 * 1024;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz")
}

/// (target, file) for every input under `kind` (corpus or regressions),
/// checking that each directory is named after a target.
fn inputs(kind: &str) -> Vec<(String, PathBuf)> {
    let root = fuzz_dir().join(kind);
    let mut found = Vec::new();
    for dir in std::fs::read_dir(&root).unwrap() {
        let dir = dir.unwrap().path();
        if !dir.is_dir() {
            continue;
        }
        let target = dir.file_name().unwrap().to_str().unwrap().to_string();
        assert!(
            TARGETS.contains(&target.as_str()),
            "{}: not a fuzz target (known: {TARGETS:?})",
            dir.display()
        );
        for file in std::fs::read_dir(&dir).unwrap() {
            let file = file.unwrap().path();
            let name = file.file_name().unwrap().to_string_lossy().to_string();
            if file.is_file() && !name.starts_with('.') && !name.starts_with("README") {
                found.push((target.clone(), file));
            }
        }
    }
    found.sort();
    found
}

/// What the replay thread reports.
enum Progress {
    /// It starts on this input.
    Start(PathBuf),
    /// It is done; these inputs panicked.
    Done(Vec<PathBuf>),
}

#[test]
fn every_seed_and_regression_replays_without_panicking() {
    let corpus = inputs("corpus");
    for target in TARGETS {
        assert!(
            corpus.iter().any(|(t, _)| t == target),
            "no seeds for {target}: cargo test --test fuzz_corpus -- --ignored write_seeds"
        );
    }
    let mut all = corpus;
    all.extend(inputs("regressions"));
    let count = all.len();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut panicked = Vec::new();
        for (target, path) in all {
            let data = std::fs::read(&path).unwrap();
            let _ = tx.send(Progress::Start(path.clone()));
            if catch_unwind(AssertUnwindSafe(|| replay(&target, &data))).is_err() {
                panicked.push(path);
            }
        }
        let _ = tx.send(Progress::Done(panicked));
    });
    let deadline = Instant::now() + REPLAY_DEADLINE;
    let mut current = None;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(Progress::Start(path)) => current = Some(path),
            Ok(Progress::Done(panicked)) => {
                assert!(
                    panicked.is_empty(),
                    "{} of {count} inputs panicked (messages above): {panicked:#?}",
                    panicked.len()
                );
                return;
            }
            Err(_) => {
                panic!("replay did not finish within {REPLAY_DEADLINE:?}; stuck on {current:?}")
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Seeds.

#[test]
#[ignore = "writes tests/fuzz/corpus: cargo test --test fuzz_corpus -- --ignored write_seeds"]
fn write_seeds() {
    let sets: [(&str, Vec<Seed>); 5] = [
        ("fuzz_frame", frame_seeds()),
        ("fuzz_sasl", sasl_seeds()),
        ("fuzz_message", message_seeds()),
        ("fuzz_connection", connection_seeds()),
        ("fuzz_selector", selector_seeds()),
    ];
    for (target, seeds) in sets {
        let dir = fuzz_dir().join("corpus").join(target);
        std::fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in seeds {
            assert!(bytes.len() < MAX_SEED_SIZE, "{target}/{name} is too big");
            std::fs::write(dir.join(format!("{name}.bin")), bytes).unwrap();
        }
        let regressions = fuzz_dir().join("regressions").join(target);
        std::fs::create_dir_all(&regressions).unwrap();
        let readme = regressions.join("README.md");
        if !readme.exists() {
            let line = format!(
                "Crash inputs of {target}, replayed by `cargo test --test fuzz_corpus` \
                 (tests/fuzz/README.md).\n"
            );
            std::fs::write(&readme, line).unwrap();
        }
    }
}
