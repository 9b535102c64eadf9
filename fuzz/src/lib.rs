//! runwire's fuzz targets as plain functions of the input bytes, so that libFuzzer
//! (`fuzz_targets/`, run by `scripts/fuzz.sh`) and the stable smoke test (`tests/smoke.rs`, run
//! by `scripts/test-fuzz.sh`) exercise the same code. Each panics when the code under test
//! panics or breaks an invariant stated in the target's module docs.

pub mod client_frame;
pub mod ingest_channel;
pub mod ingest_payload;
pub mod publish_body;
pub mod state_fold;
pub mod token_verify;
pub mod ws_frames;

/// A target: it panics when the code under test panics or breaks an invariant.
pub type Target = fn(&[u8]);

/// Every target by name; the name is also its corpus folder, `corpus/NAME`.
pub const TARGETS: [(&str, Target); 7] = [
    ("client_frame", client_frame::run),
    ("token_verify", token_verify::run),
    ("publish_body", publish_body::run),
    ("ingest_payload", ingest_payload::run),
    ("ingest_channel", ingest_channel::run),
    ("state_fold", state_fold::run),
    ("ws_frames", ws_frames::run),
];

/// JSON equality, with floats equal within one part in 10^15: serde_json's default float parsing
/// may differ from the exact value by one unit in the last place, so a float does not always
/// survive a round trip through its text bit for bit.
pub fn same(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            let (x, y) = (
                x.as_f64().unwrap_or(f64::NAN),
                y.as_f64().unwrap_or(f64::NAN),
            );
            x == y || (x - y).abs() <= x.abs().max(y.abs()) * 1e-15
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}
