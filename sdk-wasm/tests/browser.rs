//! Browser tests that need no relay: the JS-side decoder agrees with `runwire-protocol`, states
//! survive the trip to JS and back, the frames the client sends are the protocol's, options are
//! checked, and the decode→fold→callback path is fast enough.
#![cfg(target_arch = "wasm32")]

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use js_sys::{Function, Object, Reflect};
use runwire_protocol::{JsonText, RunEvent, RunState};
use runwire_sdk::driver::{Inner, SubCallbacks, TokenSource, dispatch, dispatch_frame};
use runwire_sdk::machine::{Config, Input, Machine, TransportMode};
use runwire_sdk::url::RelayUrl;
use runwire_sdk::{ClientFrame, js, transport};
use runwire_sdk::{RunwireClient, live_callbacks};
use serde_json::{Value, json};
use wasm_bindgen::prelude::*;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

fn to_js(v: &Value) -> JsValue {
    js_sys::JSON::parse(&v.to_string()).unwrap()
}

/// The frames the client sends (their JSON text written in JS) read back as the protocol's.
#[wasm_bindgen_test]
fn client_frames_are_the_protocols() {
    let frames = [
        ClientFrame::Auth {
            token: "a.b\"c\\d\u{1}\n\u{e9}\u{1F600}".into(),
            batch: false,
        },
        ClientFrame::Auth {
            token: "t".into(),
            batch: true,
        },
        ClientFrame::Subscribe {
            run: "r1".into(),
            since: None,
            epoch: None,
            token: None,
        },
        ClientFrame::Subscribe {
            run: "r:1".into(),
            since: Some(9_007_199_254_740_991), // 2^53 - 1: the largest seq JS holds exactly
            epoch: Some("ep\"1".into()),
            token: Some("a.b\"c".into()),
        },
        ClientFrame::Unsubscribe { run: "r".into() },
        ClientFrame::Ping { id: None },
    ];
    for f in frames {
        let text = transport::frame_text(&f).as_string().unwrap();
        let back: ClientFrame = serde_json::from_str(&text).unwrap();
        assert_eq!(back, f, "{text}");
    }
    let auth = ClientFrame::Auth {
        token: "t".into(),
        batch: false,
    };
    let text = transport::frame_text(&auth).as_string().unwrap();
    assert_eq!(text, r#"{"type":"auth","token":"t"}"#, "no field left over");
}

#[wasm_bindgen_test]
fn js_decoder_agrees_with_the_protocol_on_event_data() {
    // The table the native tests of `decode.rs` read too.
    let cases: Vec<(String, Value)> =
        serde_json::from_str(include_str!("event-data-cases.json")).unwrap();
    for (name, data) in &cases {
        let name = name.as_str();
        let want = RunEvent::parse(name, data).map(|mut e| {
            if let RunEvent::Log(l) = &mut e {
                l.metadata = None; // not decoded for the fold
            }
            e
        });
        let got = js::typed_event(name, &to_js(data)).map(|e| e.map_opaque(opaque));
        match (&want, &got) {
            (Ok(w), Ok(g)) => assert_eq!(w, g, "{name} {data}"),
            // The app's `onError` gets the same message whichever representation was read (the
            // property names in it come from the JS key table in the browser).
            (Err(_), Err(g)) => assert_eq!(
                Some(g),
                runwire_sdk::decode::typed_event(name, data).err().as_ref(),
                "{name} {data}"
            ),
            _ => panic!("{name} {data}: protocol {want:?}, js {got:?}"),
        }
    }
}

#[wasm_bindgen_test]
fn states_round_trip_through_js() {
    let mut state = RunState::default();
    let events = [
        ("run.started", json!({"workflow":"etl","node_count":2})),
        ("node.started", json!({"node_key":"a"})),
        (
            "node.completed",
            json!({"node_key":"a","duration_ms":7,"output_summary":{"rows":[1,2]}}),
        ),
        ("node.failed", json!({"node_key":"b","error":"x"})),
        ("log", json!({"level":"warning","message":"m"})),
        ("run.failed", json!({"error":"boom","node_key":"b"})),
    ];
    for (i, (name, data)) in events.iter().enumerate() {
        let e = RunEvent::parse(name, data).unwrap();
        state.apply(i as u64 + 1, "2026-01-01T00:00:00.000Z", &e);
    }
    // Inside the SDK, opaque values are JSON text (see `opaque`).
    let js_state = js::state_to_js(&state.clone().map_opaque(text));
    // The JS object has exactly the JSON shape of the protocol's serialization.
    let via_js: Value = serde_json::from_str(
        &js_sys::JSON::stringify(&js_state)
            .unwrap()
            .as_string()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        numbers_as_f64(via_js),
        numbers_as_f64(serde_json::to_value(&state).unwrap())
    );
    let back = js::state_from_js(&js_state).unwrap();
    assert_eq!(back.map_opaque(opaque), state);
}

#[wasm_bindgen_test]
fn successive_states_share_the_nodes_that_did_not_change() {
    let mut state = RunState::default();
    let mut seq = 0;
    let mut apply = |state: &mut RunState, name: &str, data: Value| {
        seq += 1;
        let e = RunEvent::parse(name, &data).unwrap();
        state.apply(seq, "2026-01-01T00:00:00.000Z", &e);
    };
    apply(&mut state, "node.started", json!({"node_key":"a"}));
    apply(&mut state, "node.started", json!({"node_key":"b"}));
    let mut objects = js::NodeObjects::default();
    let first = objects.state_to_js(&state.clone().map_opaque(text));
    apply(
        &mut state,
        "node.progress",
        json!({"node_key":"b","progress":50}),
    );
    let second = objects.state_to_js(&state.clone().map_opaque(text));
    let nodes = |s: &JsValue| js_sys::Array::from(&Reflect::get(s, &"nodes".into()).unwrap());
    assert!(!Object::is(&first, &second), "every state is a new object");
    assert!(
        Object::is(&nodes(&first).get(0), &nodes(&second).get(0)),
        "node a did not change"
    );
    assert!(
        !Object::is(&nodes(&first).get(1), &nodes(&second).get(1)),
        "node b did"
    );
    let b = nodes(&second).get(1);
    assert_eq!(
        Reflect::get(&b, &"progress".into()).unwrap().as_f64(),
        Some(50.0)
    );
    assert_eq!(
        Reflect::get(&nodes(&first).get(1), &"progress".into())
            .unwrap()
            .as_f64(),
        None,
        "the earlier state is left as it was"
    );
    // A state with fewer nodes (after a reset) drops the rest.
    let third = objects.state_to_js(&runwire_sdk::RunState::default());
    assert_eq!(nodes(&third).length(), 0);
    let fourth = objects.state_to_js(&state.map_opaque(text));
    assert_eq!(nodes(&fourth).length(), 2);
}

/// The SDK keeps opaque values (`result`, `output_summary`) as their JSON text: the value it
/// stands for.
fn opaque(v: JsonText) -> Value {
    serde_json::from_str(&v.0).unwrap()
}

/// A value as the SDK holds it: its JSON text.
fn text(v: Value) -> JsonText {
    JsonText(v.to_string())
}

/// JS has one number type: `100.0` comes back as `100`.
fn numbers_as_f64(v: Value) -> Value {
    match v {
        Value::Number(n) => json!(n.as_f64().unwrap()),
        Value::Array(a) => Value::Array(a.into_iter().map(numbers_as_f64).collect()),
        Value::Object(m) => {
            Value::Object(m.into_iter().map(|(k, v)| (k, numbers_as_f64(v))).collect())
        }
        v => v,
    }
}

#[wasm_bindgen_test]
fn frames_decode_from_js_objects() {
    let frame = js::decode_frame(&to_js(&json!({"type":"event","run":"r","seq":3,"event":"node.failed","ts":"t","data":{"node_key":"n","error":"e"}}))).unwrap();
    let runwire_sdk::wire::Frame::Event(e) = frame else {
        panic!("{frame:?}")
    };
    assert_eq!(
        (e.run.as_str(), e.seq, e.name.as_str(), e.ts.as_str()),
        ("r", 3, "node.failed", "t")
    );
    assert!(e.typed.is_ok());
    for bad in [
        json!({"type":"event","run":"r","seq":-1,"event":"log","ts":"t"}),
        json!({"run":"r"}),
        json!([1]),
        json!({"type":"subscribed","run":"r","seq":1,"epoch":"e","state":"x"}),
        json!({"type":"unsubscribed","run":"r","reason":7}),
        json!({"type":"welcome","heartbeat_ms":1.5,"expires_at":0}),
        json!({"type":"error","message":"m"}),
        json!({"type":"reset","run":"r","seq":1,"state":{},"epoch":9}),
    ] {
        let got = js::decode_frame(&to_js(&bad));
        assert!(got.is_err(), "{bad}");
        assert_eq!(
            got,
            runwire_sdk::wire::decode_json(&bad.to_string()),
            "{bad}"
        );
    }
}

/// A snapshot whose node list holds something other than objects reads those as pending nodes,
/// as natively, instead of throwing out of the `.wasm`.
#[wasm_bindgen_test]
fn a_node_that_is_not_an_object_reads_as_natively() {
    let state = json!({"status":"running","nodes":[null, 3, {"key":"a","status":"failed"}]});
    let got = js::state_from_js(&to_js(&state)).unwrap();
    assert_eq!(
        Ok(got),
        runwire_sdk::decode::state(&state),
        "the same rules read JS and serde_json values"
    );
}

/// Frames of a newer relay decode in the browser as they do natively (`wire::decode_json`): an
/// unknown `unsubscribed` reason ends the subscription, an unknown error code is kept, an unknown
/// frame type is ignored.
#[wasm_bindgen_test]
fn frames_of_a_newer_relay_decode_as_natively() {
    for frame in [
        json!({"type":"unsubscribed","run":"r","reason":"archived"}),
        json!({"type":"unsubscribed","run":"r","reason":"forbidden"}),
        json!({"type":"error","code":"quota_exceeded","message":"m","run":"r"}),
        json!({"type":"error","code":"too_many_subscriptions","message":"m"}),
        json!({"type":"presence","run":"r","who":["a"]}),
    ] {
        let native = runwire_sdk::wire::decode_json(&frame.to_string());
        assert!(native.is_ok(), "{frame}");
        assert_eq!(js::decode_frame(&to_js(&frame)), native, "{frame}");
    }
}

fn options(pairs: &[(&str, JsValue)]) -> JsValue {
    let o = Object::new();
    for (k, v) in pairs {
        Reflect::set(&o, &(*k).into(), v).unwrap();
    }
    o.into()
}

/// The package's layer checks the options, with the messages apps see, before the module loads
/// (`npm/src/client.ts`, tested in `tests/node/ssr.test.mjs`); the facade does not check them
/// again, but a value out of shape reads as its default instead of panicking, and an address
/// that is not a relay's is still refused.
#[wasm_bindgen_test]
fn options_out_of_shape_read_as_defaults() {
    let url = || ("url", JsValue::from_str("ws://127.0.0.1:9/v1/ws"));
    let token = || ("token", JsValue::from_str("t"));
    assert!(RunwireClient::new(options(&[url(), token()])).is_ok());
    assert!(RunwireClient::new(options(&[token()])).is_err());
    assert!(RunwireClient::new(options(&[("url", "ftp://x/v1/ws".into()), token()])).is_err());
    assert!(RunwireClient::new(JsValue::from_str("ws://x")).is_err());
    assert!(RunwireClient::new(JsValue::UNDEFINED).is_err());
    for odd in [
        ("transport", JsValue::from_str("carrier-pigeon")),
        ("minReconnectDelayMs", (-1).into()),
        ("maxReconnectDelayMs", f64::NAN.into()),
        ("maxReconnectAttempts", "3".into()),
        ("token", 7.into()),
        ("debug", true.into()),
    ] {
        let client = RunwireClient::new(options(&[url(), token(), odd.clone()]));
        assert!(client.is_ok(), "{odd:?}");
        client.unwrap().close();
    }
    let client = RunwireClient::new(options(&[url(), token()])).unwrap();
    assert_eq!(client.state(), "closed");
    for handlers in [
        JsValue::UNDEFINED,
        JsValue::NULL,
        options(&[("stateEvery", "sometimes".into()), ("since", (-2.5).into())]),
    ] {
        let sub = client.subscribe("r1", handlers).unwrap();
        sub.unsubscribe();
    }
    client.close();
    assert!(
        client.subscribe("r1", JsValue::UNDEFINED).is_err(),
        "closed for good"
    );
    drop(client);
    assert_eq!(live_callbacks(), 0);
}

/// A client driven by hand to `open` with `run` subscribed (snapshot at seq 0), without a relay:
/// its socket goes to a port nobody listens on and only fails after the synchronous test is done.
fn open_client(run: &str, callbacks: SubCallbacks) -> Rc<Inner> {
    let machine = Machine::new(
        Config {
            transport: TransportMode::WebSocket,
            ..Config::default()
        },
        1,
    );
    let url = RelayUrl::parse(&"ws://127.0.0.1:9/v1/ws".into()).unwrap();
    let inner = Inner::new(machine, url, TokenSource::Fixed("t".into()), None);
    let wants_state = callbacks.on_state.is_some();
    let (id, _) = inner.add_sub(callbacks);
    dispatch(
        &inner,
        Input::Subscribe {
            id,
            run,
            since: None,
            wants_state,
            own_token: false,
        },
    );
    dispatch(
        &inner,
        Input::Token {
            req: 1,
            token: Ok("t".into()),
        },
    );
    dispatch(&inner, Input::Opened);
    dispatch_frame(
        &inner,
        &frame(
            json!({"type":"welcome","conn":"c","heartbeat_ms":25000,"expires_at":0,"protocol":1}),
        ),
    );
    dispatch_frame(
        &inner,
        &frame(
            json!({"type":"subscribed","run":run,"seq":0,"state":{"seq":0,"status":"pending","progress":0.0,"nodes":[],"log_count":0,"warning_count":0,"error_count":0},"epoch":"e"}),
        ),
    );
    assert_eq!(
        inner.machine().state(),
        runwire_sdk::machine::ConnState::Open
    );
    inner
}

fn frame(v: Value) -> JsValue {
    JsValue::from_str(&v.to_string())
}

fn log_frame(run: &str, seq: u32) -> JsValue {
    frame(
        json!({"type":"event","run":run,"seq":seq,"event":"log","ts":"t","data":{"level":"info","message":"m"}}),
    )
}

/// An app callback that throws: the exception stays with it, and the client carries on with
/// what comes after it (the `onState` of the same event, the next events).
#[wasm_bindgen_test]
fn a_callback_that_throws_stops_nothing() {
    let states = Rc::new(RefCell::new(Vec::new()));
    let states2 = states.clone();
    let on_state = Closure::<dyn FnMut(JsValue)>::new(move |s: JsValue| {
        let seq = Reflect::get(&s, &"seq".into()).unwrap().as_f64().unwrap();
        states2.borrow_mut().push(seq);
    });
    let throws = Function::new_with_args("e", "throw new Error('the app failed')");
    let inner = open_client(
        "r",
        SubCallbacks {
            on_event: Some(throws.clone()),
            on_other_event: None,
            on_state: Some(on_state.as_ref().unchecked_ref::<Function>().clone()),
            on_end: Some(throws),
            state_per_frame: false,
            token: None,
        },
    );
    dispatch_frame(&inner, &log_frame("r", 1));
    dispatch_frame(&inner, &log_frame("r", 2));
    assert_eq!(
        *states.borrow(),
        [0.0, 1.0, 2.0],
        "the snapshot, then each event"
    );
    dispatch(&inner, Input::Close);
    inner.release();
    assert_eq!(live_callbacks(), 0);
}

#[wasm_bindgen_test]
fn closing_from_inside_a_callback_is_safe() {
    let slot: Rc<RefCell<Option<Rc<Inner>>>> = Rc::default();
    let ends = Rc::new(Cell::new(0));
    let seen = Rc::new(Cell::new(0));
    let (slot2, seen2) = (slot.clone(), seen.clone());
    let on_event = Closure::<dyn FnMut(JsValue)>::new(move |_ev: JsValue| {
        seen2.set(seen2.get() + 1);
        let inner = slot2.borrow().clone().unwrap();
        dispatch(&inner, Input::Close);
        inner.release();
    });
    let ends2 = ends.clone();
    let on_end = Closure::<dyn FnMut(JsValue)>::new(move |_r: JsValue| ends2.set(ends2.get() + 1));
    let on_state = Closure::<dyn FnMut(JsValue)>::new(|_s: JsValue| {});
    let inner = open_client(
        "r",
        SubCallbacks {
            on_event: Some(on_event.as_ref().unchecked_ref::<Function>().clone()),
            on_other_event: None,
            on_state: Some(on_state.as_ref().unchecked_ref::<Function>().clone()),
            on_end: Some(on_end.as_ref().unchecked_ref::<Function>().clone()),
            state_per_frame: false,
            token: None,
        },
    );
    *slot.borrow_mut() = Some(inner.clone());
    dispatch_frame(&inner, &log_frame("r", 1));
    dispatch_frame(&inner, &log_frame("r", 2));
    assert_eq!(seen.get(), 1, "nothing after close");
    assert_eq!(ends.get(), 1);
    assert_eq!(
        inner.machine().state(),
        runwire_sdk::machine::ConnState::Closed
    );
    assert_eq!(
        live_callbacks(),
        0,
        "no socket handler or timer outlives close()"
    );
    slot.borrow_mut().take();
}

/// A client subscribed to `r` with `stateEvery: "frame"`, and what its `onState` (`state <seq>
/// <status>`) and `onEnd` (`end <reason>`) calls were, in order.
fn framed_client() -> (Rc<Inner>, Rc<RefCell<Vec<String>>>) {
    let calls: Rc<RefCell<Vec<String>>> = Rc::default();
    let field = |v: &JsValue, k: &str| Reflect::get(v, &k.into()).unwrap();
    let (c1, c2) = (calls.clone(), calls.clone());
    let on_state = Closure::<dyn FnMut(JsValue)>::new(move |s: JsValue| {
        let seq = field(&s, "seq").as_f64().unwrap();
        let status = field(&s, "status").as_string().unwrap();
        c1.borrow_mut().push(format!("state {seq} {status}"));
    });
    let on_end = Closure::<dyn FnMut(JsValue)>::new(move |r: JsValue| {
        c2.borrow_mut()
            .push(format!("end {}", r.as_string().unwrap()));
    });
    let inner = open_client(
        "r",
        SubCallbacks {
            on_event: None,
            on_other_event: None,
            on_state: Some(on_state.into_js_value().unchecked_into()),
            on_end: Some(on_end.into_js_value().unchecked_into()),
            state_per_frame: true,
            token: None,
        },
    );
    (inner, calls)
}

fn completed_frame(run: &str, seq: u32) -> JsValue {
    frame(json!({"type":"event","run":run,"seq":seq,"event":"run.completed","ts":"t","data":{}}))
}

/// `stateEvery: "frame"`: a burst of events gives one `onState`, with the latest state, on the
/// next frame.
#[wasm_bindgen_test]
async fn states_every_frame_coalesce_into_one_call() {
    let (inner, calls) = framed_client();
    for seq in 1..=100 {
        dispatch_frame(&inner, &log_frame("r", seq));
    }
    assert!(calls.borrow().is_empty(), "nothing before the next frame");
    for _ in 0..200 {
        if !calls.borrow().is_empty() {
            break;
        }
        sleep(10).await;
    }
    sleep(50).await;
    assert_eq!(
        *calls.borrow(),
        ["state 100 pending"],
        "one call, the latest state"
    );
    dispatch(&inner, Input::Close);
    inner.release();
    assert_eq!(live_callbacks(), 0);
}

/// `stateEvery: "frame"`: the run's last state comes at once, before `onEnd`, and nothing after
/// it; a subscription the app ends itself gets no state held back.
#[wasm_bindgen_test]
async fn states_every_frame_end_with_the_last_state() {
    let (inner, calls) = framed_client();
    for seq in 1..=3 {
        dispatch_frame(&inner, &log_frame("r", seq));
    }
    dispatch_frame(&inner, &completed_frame("r", 4));
    assert_eq!(*calls.borrow(), ["state 4 completed", "end completed"]);

    let (other, other_calls) = framed_client();
    dispatch_frame(&other, &log_frame("r", 1));
    dispatch(&other, Input::Unsubscribe(1));
    assert_eq!(*other_calls.borrow(), ["end unsubscribed"]);

    sleep(100).await;
    assert_eq!(calls.borrow().len(), 2, "nothing after onEnd");
    assert_eq!(other_calls.borrow().len(), 1, "nothing after onEnd");
    for inner in [inner, other] {
        dispatch(&inner, Input::Close);
        inner.release();
    }
    assert_eq!(live_callbacks(), 0);
}

async fn sleep(ms: u32) {
    gloo_timers::future::TimeoutFuture::new(ms).await;
}

/// Decodes, folds and hands 200,000 events to a JS callback in one go, every seq once and in
/// order, and prints the rate. The speed goal itself lives in the benchmarks (scenario 6 of
/// docs/benchmarks.md, `scripts/bench.sh sdk`), measured in alternating rounds: a floor asserted
/// here would measure the machine's load as much as the SDK.
#[wasm_bindgen_test]
fn decodes_folds_and_delivers_fast() {
    let count = Rc::new(Cell::new(0u32));
    let counter = count.clone();
    let on_event = Closure::<dyn FnMut(JsValue)>::new(move |ev: JsValue| {
        let seq = Reflect::get(&ev, &"seq".into()).unwrap().as_f64().unwrap();
        assert_eq!(seq as u32, counter.get() + 1);
        counter.set(counter.get() + 1);
    });
    let f: &Function = on_event.as_ref().unchecked_ref();
    let inner = open_client(
        "bench",
        SubCallbacks {
            on_event: Some(f.clone()),
            on_other_event: None,
            on_state: None,
            on_end: None,
            state_per_frame: false,
            token: None,
        },
    );
    let n = 200_000u32;
    let kinds = [
        json!({"level":"info","message":"row batch loaded"}),
        json!({"node_key":"extract","progress":42.5}),
        json!({"node_key":"transform"}),
    ];
    let names = ["log", "node.progress", "node.started"];
    let frames: Vec<JsValue> = (1..=n)
        .map(|seq| {
            let k = seq as usize % 3;
            frame(json!({"type":"event","run":"bench","seq":seq,"event":names[k],"ts":"2026-11-22T03:00:00.000Z","data":kinds[k]}))
        })
        .collect();
    let perf = web_sys::window().unwrap().performance().unwrap();
    let start = perf.now();
    for f in &frames {
        dispatch_frame(&inner, f);
    }
    let secs = (perf.now() - start) / 1000.0;
    assert_eq!(count.get(), n);
    let rate = f64::from(n) / secs;
    console_log!("decode+fold+callback: {rate:.0} events/s ({n} events in {secs:.3} s)");
    dispatch(&inner, Input::Close);
    inner.release();
}
