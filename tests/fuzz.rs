//! In-process fuzzing of everything the bridge does with a host's bytes before acting (issue
//! 15): the frame reader, every request decoder and the handlers' input checks
//! (`gcs::fuzz`), fed structure-aware mutations of the recorded traces' requests.
//!
//! Bounded by `GCS_FUZZ_SECONDS` (30 by default; `make fuzz` runs it for long). The run's seed is
//! printed and `GCS_FUZZ_SEED` replays it. An input that panics is saved byte-exact under
//! `target/tmp/fuzz-crashes/` (named `<message type>-<hash>.bin`) and fails the run; copied into
//! `tests/fuzz/regressions/`, it is replayed by every later run.
#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    reason = "test code: a failed unwrap is a failed test"
)]

mod common;

use std::path::{Path, PathBuf};
use std::time::Instant;

use common::mutate::{self, Input, Limits, Rng};
use gcs::protocol::MessageType;

/// Runs one input through both targets; the panic's message if it panics.
fn run_one(input: &Input, stream: &[u8]) -> Result<bool, String> {
    std::panic::catch_unwind(|| {
        let decided = gcs::fuzz::request(MessageType(input.message_type), &input.payload);
        let _ = gcs::fuzz::frames(stream);
        decided.is_ok()
    })
    .map_err(|p| gcs::crash::panic_message(&*p))
}

fn save(dir: &Path, input: &Input) -> PathBuf {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    input.payload.hash(&mut h);
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join(format!(
        "{:08x}-{:016x}.bin",
        input.message_type,
        h.finish()
    ));
    std::fs::write(&path, &input.payload).unwrap();
    path
}

/// A saved input: its message type from the file name, its payload byte-exact.
fn load(path: &Path) -> Input {
    let name = path.file_name().unwrap().to_string_lossy();
    let message_type = u32::from_str_radix(&name[..8], 16).unwrap();
    Input {
        message_type,
        payload: std::fs::read(path).unwrap(),
    }
}

#[test]
fn decoders_and_checks_survive_mutated_traffic() {
    let budget = mutate::fuzz_seconds(30);
    let seed = mutate::fuzz_seed();
    eprintln!("fuzz seed {seed} (GCS_FUZZ_SEED={seed} replays this run) for {budget:?}");
    let seeds = mutate::trace_seeds();
    let keys = mutate::vocabulary(&seeds);
    let limits = Limits {
        big_string: 1 << 20,
        deep: 10_000,
    };
    let crash_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-crashes");
    // Panics are the findings: keep their reports short (the message is saved with the input).
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut rng = Rng::new(seed);
    let start = Instant::now();
    let (mut runs, mut accepted) = (0u64, 0u64);
    let mut crashes = Vec::new();
    // Every seed as it is first: the traces themselves must be accepted where the real host's
    // requests were.
    for input in &seeds {
        if let Err(message) = run_one(input, &[]) {
            crashes.push((save(&crash_dir, input), message));
        }
    }
    while start.elapsed() < budget {
        let input = mutate::mutate(&mut rng, &seeds, &keys, limits);
        let batch: Vec<Input> = (0..1 + rng.below(3))
            .map(|_| {
                mutate::mutate(
                    &mut rng,
                    &seeds,
                    &keys,
                    Limits {
                        big_string: 4096,
                        deep: 200,
                    },
                )
            })
            .collect();
        let stream = mutate::frame_stream(&mut rng, &batch);
        runs += 1;
        match run_one(&input, &stream) {
            Ok(true) => accepted += 1,
            Ok(false) => {}
            Err(message) => {
                let path = save(&crash_dir, &input);
                std::fs::write(path.with_extension("stream"), &stream).unwrap();
                crashes.push((path, message));
            }
        }
    }
    std::panic::set_hook(hook);
    eprintln!(
        "{runs} mutated requests (+ frame streams) in {:?}: {accepted} accepted, {} refused, {} crashes",
        start.elapsed(),
        runs - accepted,
        crashes.len()
    );
    assert!(runs > 1000, "only {runs} inputs in {budget:?}");
    assert!(
        crashes.is_empty(),
        "inputs that panic (saved byte-exact; copy them into tests/fuzz/regressions/):\n{}",
        crashes
            .iter()
            .map(|(p, m)| format!("  {}: {m}", p.display()))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Every input a fuzz run ever found, replayed (`tests/fuzz/regressions/`).
#[test]
fn saved_findings_stay_fixed() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz/regressions");
    let mut replayed = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "bin") {
            let input = load(&path);
            let stream = std::fs::read(path.with_extension("stream")).unwrap_or_default();
            if let Err(message) = run_one(&input, &stream) {
                panic!("{} panics again: {message}", path.display());
            }
            replayed += 1;
        }
    }
    eprintln!("{replayed} saved findings replayed");
    assert!(replayed > 0, "no saved findings in {}", dir.display());
}
