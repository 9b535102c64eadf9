//! The relay's parse of a WebSocket client frame (`/v1/ws` text messages): never panics, and a
//! frame it accepts survives a round trip through its own JSON (floats within one part in 10^15;
//! the relay parses floats exactly, with serde_json's `float_roundtrip`, so a subnormal `ping` id
//! comes back in the `pong` as it was sent).
use runwire_protocol::ClientFrame;
use runwire_relay::transport::ws::parse_frame;

use crate::same;

/// Runs the target on one input.
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(frame) = parse_frame(text) {
        let json = serde_json::to_string(&frame).expect("a client frame serializes");
        let back: ClientFrame = serde_json::from_str(&json).expect("its own JSON parses");
        let (a, b) = (serde_json::to_value(&frame), serde_json::to_value(&back));
        assert!(same(&a.unwrap(), &b.unwrap()), "round trip of {json}");
    }
}
