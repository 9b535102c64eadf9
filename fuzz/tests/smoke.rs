//! The fuzz targets on stable Rust, without libFuzzer: every input of `corpus/TARGET` (the seeds,
//! and the inputs of crashes found before, kept as regressions), then random mutations of them
//! for `FUZZ_SMOKE_SECONDS` (default 5) per target. The mutations are blind (no coverage
//! feedback): this catches regressions and shallow defects cheaply in CI; the real fuzzing is
//! `scripts/fuzz.sh`. A failing input is written to `artifacts/TARGET/smoke-*` and printed.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Bytes the mutator likes to insert: JSON punctuation, the wildcards of ingest patterns,
/// multi-byte characters, edge numbers.
const TOKENS: [&[u8]; 18] = [
    b"\"",
    b"{",
    b"}",
    b"[",
    b"]",
    b":",
    b",",
    b"\n",
    b"*",
    b"?",
    "é".as_bytes(),
    b"\0",
    b"null",
    b"-1",
    b"1e999",
    b"18446744073709551616",
    b"0.5",
    "\u{10348}".as_bytes(),
];

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn corpus(name: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(name);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} holds no seed", dir.display());
    files
        .into_iter()
        .map(|f| {
            let bytes = std::fs::read(&f).expect("a readable seed");
            (f, bytes)
        })
        .collect()
}

fn mutate(rng: &mut Rng, base: &[u8], other: &[u8]) -> Vec<u8> {
    let mut out = base.to_vec();
    for _ in 0..1 + rng.below(6) {
        let at = rng.below(out.len() + 1);
        match rng.below(7) {
            0 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] ^= 1 << rng.below(8);
            }
            1 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] = rng.next() as u8;
            }
            2 if at < out.len() => {
                let end = (at + 1 + rng.below(8)).min(out.len());
                out.drain(at..end);
            }
            3 => {
                let t = TOKENS[rng.below(TOKENS.len())];
                out.splice(at..at, t.iter().copied());
            }
            4 if !other.is_empty() => {
                let from = rng.below(other.len());
                let end = (from + 1 + rng.below(32)).min(other.len());
                out.splice(at..at, other[from..end].iter().copied());
            }
            5 if !out.is_empty() => {
                let from = rng.below(out.len());
                let end = (from + 1 + rng.below(16)).min(out.len());
                let chunk = out[from..end].to_vec();
                out.splice(at..at, chunk);
            }
            _ => out.insert(at, rng.next() as u8),
        }
    }
    out
}

fn fail(name: &str, what: &str, input: &[u8]) -> ! {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("artifacts")
        .join(name);
    let _ = std::fs::create_dir_all(&dir);
    let file = dir.join(format!("smoke-{:016x}", fnv(input)));
    let _ = std::fs::write(&file, input);
    panic!(
        "{name}: {what} panicked on {:?} (written to {})",
        String::from_utf8_lossy(input),
        file.display()
    );
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

fn smoke(name: &str) {
    let (_, run) = runwire_fuzz::TARGETS
        .iter()
        .find(|(n, _)| *n == name)
        .expect("a known target");
    let seeds = corpus(name);
    let failing: Vec<String> = seeds
        .iter()
        .filter(|(_, input)| catch_unwind(AssertUnwindSafe(|| run(input))).is_err())
        .map(|(path, _)| path.display().to_string())
        .collect();
    assert!(
        failing.is_empty(),
        "{name}: the corpus files {failing:?} fail"
    );
    let seconds: f64 = std::env::var("FUZZ_SMOKE_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5.0);
    let seed = std::env::var("FUZZ_SMOKE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fnv(format!("{:?}", Instant::now()).as_bytes()) | 1);
    let mut rng = Rng(seed);
    let until = Instant::now() + Duration::from_secs_f64(seconds);
    let mut runs = 0u64;
    while Instant::now() < until {
        let base = &seeds[rng.below(seeds.len())].1;
        let other = &seeds[rng.below(seeds.len())].1;
        let input = mutate(&mut rng, base, other);
        if catch_unwind(AssertUnwindSafe(|| run(&input))).is_err() {
            fail(
                name,
                &format!("a mutation (FUZZ_SMOKE_SEED={seed})"),
                &input,
            );
        }
        runs += 1;
    }
    eprintln!(
        "{name}: {} corpus inputs and {runs} mutations, no failure (seed {seed})",
        seeds.len()
    );
}

#[test]
fn client_frame() {
    smoke("client_frame");
}

#[test]
fn token_verify() {
    smoke("token_verify");
}

#[test]
fn publish_body() {
    smoke("publish_body");
}

#[test]
fn ingest_payload() {
    smoke("ingest_payload");
}

#[test]
fn ingest_channel() {
    smoke("ingest_channel");
}

#[test]
fn state_fold() {
    smoke("state_fold");
}

#[test]
fn ws_frames() {
    smoke("ws_frames");
}
