//! The body of `POST /v1/runs/{run}/events`: never panics; an accepted body is 1 to 1000 valid
//! events, of which only the last may end the run.
use runwire_protocol::is_valid_event_name;
use runwire_relay::transport::http::{MAX_EVENTS_PER_PUBLISH, parse_events};

/// Runs the target on one input.
pub fn run(data: &[u8]) {
    let Ok(events) = parse_events(data) else {
        return;
    };
    assert!((1..=MAX_EVENTS_PER_PUBLISH).contains(&events.len()));
    let last = events.len() - 1;
    for (i, event) in events.iter().enumerate() {
        assert!(is_valid_event_name(event.name()), "{:?}", event.name());
        assert!(
            i == last || !event.typed.is_terminal(),
            "terminal event {i} of {}",
            events.len()
        );
        assert!(!event.data.is_null(), "null data is stored as {{}}");
    }
}
