//! Relay addresses: the WebSocket URL the app configures, and the HTTP base of the SSE streams
//! derived from it (transport.js adds each stream's path). The derivation is transport.js's
//! `relayUrls`, tested in Node by `tests/transport.test.mjs`: in JS it costs a fraction of its
//! size as Rust string handling in the `.wasm` (docs/benchmarks.md, section 6).

use wasm_bindgen::prelude::*;

#[wasm_bindgen(module = "/src/transport.js")]
extern "C" {
    /// `[websocket, http_base]` of the `url` option; throws for an address that is not a relay's.
    #[wasm_bindgen(js_name = relayUrls, catch)]
    fn relay_urls(url: &JsValue) -> Result<js_sys::Array, JsValue>;
}

/// The relay's WebSocket and HTTP bases, from the `url` option, as JS strings (they only go
/// back to transport.js).
#[derive(Debug, Clone)]
pub struct RelayUrl {
    /// `ws(s)://host/…/v1/ws`, as the WebSocket connects to it.
    pub websocket: JsValue,
    /// `http(s)://host/…/v1`: SSE streams live under `{base}/runs/{run}/events`.
    pub http_base: JsValue,
}

impl RelayUrl {
    /// Parses the `url` option: `ws://`, `wss://` (or `http(s)://`, turned into `ws(s)://`),
    /// whose path ends with the WebSocket endpoint (`/v1/ws`). The error is a JS `Error` that
    /// says what is wrong.
    pub fn parse(url: &JsValue) -> Result<Self, JsValue> {
        let urls = relay_urls(url)?;
        Ok(Self {
            websocket: urls.get(0),
            http_base: urls.get(1),
        })
    }
}
