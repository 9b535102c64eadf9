//! The mapping of an ingested Redis message to a run event: never panics, never fails, and
//! always yields an event the relay would accept from a publisher, with no compatibility layer
//! on and with the layers the input's first byte chooses (the replaced systems' shapes).
use runwire_relay::broker::NewEvent;
use runwire_relay::broker::redis::ingest::map_payload;
use runwire_relay::compat::{Layer, Layers, foreign_messages};

const LAYERS: [Layer; 4] = [
    Layer::WsRelay,
    Layer::EventBroadcaster,
    Layer::SocketioGateway,
    Layer::SseStream,
];

/// Runs the target on one input.
pub fn run(data: &[u8]) {
    check(data, Layers::default());
    if let Some((&choice, payload)) = data.split_first() {
        let on: Vec<Layer> = (0..LAYERS.len())
            .filter(|i| choice & (1 << i) != 0)
            .map(|i| LAYERS[i])
            .collect();
        check(payload, Layers::of(&on));
    }
}

fn check(payload: &[u8], layers: Layers) {
    let event = map_payload(payload, &foreign_messages(layers));
    let again = NewEvent::parse(event.name(), event.data.clone())
        .unwrap_or_else(|e| panic!("mapped to an event a publisher could not send: {e}"));
    assert_eq!(again.typed, event.typed);
}
