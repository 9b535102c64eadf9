//! The mapping of an ingested Redis message to a run event: never panics, never fails, and
//! always yields an event the relay would accept from a publisher.
use runwire_relay::broker::NewEvent;
use runwire_relay::broker::redis::ingest::map_payload;

/// Runs the target on one input.
pub fn run(data: &[u8]) {
    let event = map_payload(data);
    let again = NewEvent::parse(event.name(), event.data.clone())
        .unwrap_or_else(|e| panic!("mapped to an event a publisher could not send: {e}"));
    assert_eq!(again.typed, event.typed);
}
