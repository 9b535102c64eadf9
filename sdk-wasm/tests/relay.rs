//! Browser tests against a real relay, reached through the fault-injecting proxy
//! (`tests/fault-proxy`). `scripts/test-sdk.sh` starts both and passes their addresses at compile
//! time; without them every test fails with a message saying so.
#![cfg(target_arch = "wasm32")]

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use js_sys::{Function, Object, Promise, Reflect};
use runwire_protocol::token::{Claims, Scope, sign};
use runwire_sdk::{RunwireClient, Subscription, live_callbacks, live_clients};
use serde_json::{Value, json};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::*;
use web_sys::{Headers, Request, RequestInit};

wasm_bindgen_test_configure!(run_in_browser);

fn setting(value: Option<&'static str>, name: &str) -> &'static str {
    value.unwrap_or_else(|| {
        panic!(
            "{name} is not set: run scripts/test-sdk.sh, which starts a relay and the fault proxy"
        )
    })
}
fn relay() -> &'static str {
    setting(option_env!("RUNWIRE_TEST_RELAY"), "RUNWIRE_TEST_RELAY")
}
fn proxy() -> &'static str {
    setting(option_env!("RUNWIRE_TEST_PROXY"), "RUNWIRE_TEST_PROXY")
}
fn control_url() -> &'static str {
    setting(option_env!("RUNWIRE_TEST_CONTROL"), "RUNWIRE_TEST_CONTROL")
}
fn secret() -> &'static str {
    setting(option_env!("RUNWIRE_TEST_SECRET"), "RUNWIRE_TEST_SECRET")
}
/// The relay's `--ping-interval` (announced as `heartbeat_ms`).
const HEARTBEAT_MS: f64 = 1_000.0;

fn ws_url(http: &str) -> String {
    format!("{}/v1/ws", http.replacen("http://", "ws://", 1))
}

fn now_ms() -> f64 {
    js_sys::Date::now()
}

fn unique_run(prefix: &str) -> String {
    format!("{prefix}-{}", (js_sys::Math::random() * 1e12) as u64)
}

fn mint(run: &str, scope: Scope, ttl_s: u64, key: &str) -> String {
    let now = (now_ms() / 1000.0) as u64;
    let claims = Claims {
        exp: now + ttl_s,
        iat: Some(now),
        run: Some(run.to_owned()),
        scope,
        ..Claims::default()
    };
    sign(&claims, key.as_bytes())
}

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_name = fetch)]
    fn fetch_request(request: &Request) -> Promise;
}

async fn http(
    method: &str,
    url: &str,
    bearer: Option<&str>,
    body: Option<String>,
) -> (u16, String) {
    let headers = Headers::new().unwrap();
    if let Some(t) = bearer {
        headers
            .set("Authorization", &format!("Bearer {t}"))
            .unwrap();
    }
    let init = RequestInit::new();
    init.set_method(method);
    if let Some(b) = body {
        headers.set("Content-Type", "application/json").unwrap();
        init.set_body(&JsValue::from_str(&b));
    }
    init.set_headers(&headers);
    let request = Request::new_with_str_and_init(url, &init).unwrap();
    let response: web_sys::Response = JsFuture::from(fetch_request(&request))
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: {e:?}"))
        .unchecked_into();
    let text = JsFuture::from(response.text().unwrap()).await.unwrap();
    (response.status(), text.as_string().unwrap_or_default())
}

/// Publishes events straight to the relay (not through the proxy); returns their seqs.
async fn publish(run: &str, events: &[Value]) -> Vec<u64> {
    let token = mint(run, Scope::Publish, 60, secret());
    let url = format!("{}/v1/runs/{run}/events", relay());
    let (status, body) = http(
        "POST",
        &url,
        Some(&token),
        Some(Value::from(events.to_vec()).to_string()),
    )
    .await;
    assert_eq!(status, 200, "publish: {body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v["seqs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_u64().unwrap())
        .collect()
}

fn logs(n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| json!({"event":"log","data":{"level":"info","message":format!("line {i}")}}))
        .collect()
}

async fn control(command: &str) {
    let (status, body) = http("POST", &format!("{}/{command}", control_url()), None, None).await;
    assert_eq!(status, 200, "proxy {command}: {body}");
}

async fn sleep(ms: u32) {
    gloo_timers::future::TimeoutFuture::new(ms).await;
}

async fn wait_for(what: &str, timeout_ms: f64, cond: impl Fn() -> bool) {
    let start = now_ms();
    while !cond() {
        assert!(
            now_ms() - start < timeout_ms,
            "timed out after {timeout_ms} ms waiting for {what}"
        );
        sleep(10).await;
    }
}

fn get(v: &JsValue, key: &str) -> JsValue {
    Reflect::get(v, &key.into()).unwrap()
}

/// A client and everything it told the app.
struct Watch {
    client: RunwireClient,
    /// "previous>state:reason" for every state change.
    changes: Rc<RefCell<Vec<String>>>,
    /// (seq, event name, event object) per subscription index.
    events: Rc<RefCell<Vec<(u64, String, JsValue)>>>,
    states: Rc<RefCell<Vec<JsValue>>>,
    ends: Rc<RefCell<Vec<String>>>,
    errors: Rc<RefCell<Vec<String>>>,
    _keep: Vec<Closure<dyn FnMut(JsValue)>>,
}

impl Watch {
    fn new(base: &str, token: JsValue, extra: &[(&str, JsValue)]) -> Self {
        let options = Object::new();
        Reflect::set(&options, &"url".into(), &ws_url(base).into()).unwrap();
        Reflect::set(&options, &"token".into(), &token).unwrap();
        for (k, v) in extra {
            Reflect::set(&options, &(*k).into(), v).unwrap();
        }
        let client = RunwireClient::new(options.into()).unwrap();
        let changes = Rc::new(RefCell::new(Vec::new()));
        let errors = Rc::new(RefCell::new(Vec::new()));
        let c = changes.clone();
        let on_change = Closure::<dyn FnMut(JsValue)>::new(move |ch: JsValue| {
            let s = |k| get(&ch, k).as_string().unwrap_or_default();
            c.borrow_mut()
                .push(format!("{}>{}:{}", s("previous"), s("state"), s("reason")));
        });
        client.on_state_change(on_change.as_ref().unchecked_ref::<Function>().clone());
        let e = errors.clone();
        let on_error = Closure::<dyn FnMut(JsValue)>::new(move |err: JsValue| {
            e.borrow_mut()
                .push(get(&err, "code").as_string().unwrap_or_default());
        });
        client.on_error(on_error.as_ref().unchecked_ref::<Function>().clone());
        Self {
            client,
            changes,
            events: Rc::default(),
            states: Rc::default(),
            ends: Rc::default(),
            errors,
            _keep: vec![on_change, on_error],
        }
    }

    fn subscribe(&mut self, run: &str) -> Subscription {
        self.subscribe_with(run, &[])
    }

    /// `subscribe` with more options (`token`, say).
    fn subscribe_with(&mut self, run: &str, extra: &[(&str, JsValue)]) -> Subscription {
        let events = self.events.clone();
        let on_event = Closure::<dyn FnMut(JsValue)>::new(move |ev: JsValue| {
            let seq = get(&ev, "seq").as_f64().unwrap() as u64;
            let name = get(&ev, "event").as_string().unwrap();
            events.borrow_mut().push((seq, name, ev));
        });
        let events = self.events.clone();
        let on_other = Closure::<dyn FnMut(JsValue)>::new(move |ev: JsValue| {
            let seq = get(&ev, "seq").as_f64().unwrap() as u64;
            let name = format!("other:{}", get(&ev, "event").as_string().unwrap());
            events.borrow_mut().push((seq, name, ev));
        });
        let states = self.states.clone();
        let on_state =
            Closure::<dyn FnMut(JsValue)>::new(move |s: JsValue| states.borrow_mut().push(s));
        let ends = self.ends.clone();
        let on_end = Closure::<dyn FnMut(JsValue)>::new(move |r: JsValue| {
            ends.borrow_mut().push(r.as_string().unwrap())
        });
        let handlers = Object::new();
        for (k, f) in [
            ("onEvent", &on_event),
            ("onOtherEvent", &on_other),
            ("onState", &on_state),
            ("onEnd", &on_end),
        ] {
            Reflect::set(&handlers, &k.into(), f.as_ref()).unwrap();
        }
        for (k, v) in extra {
            Reflect::set(&handlers, &(*k).into(), v).unwrap();
        }
        self._keep.extend([on_event, on_other, on_state, on_end]);
        self.client.subscribe(run, handlers.into()).unwrap()
    }

    fn seqs(&self) -> Vec<u64> {
        self.events.borrow().iter().map(|e| e.0).collect()
    }

    fn changes(&self) -> Vec<String> {
        self.changes.borrow().clone()
    }

    fn count_changes(&self, prefix: &str) -> usize {
        self.changes
            .borrow()
            .iter()
            .filter(|c| c.starts_with(prefix))
            .count()
    }

    async fn wait_open(&self) {
        let client = &self.client;
        wait_for("state open", 15_000.0, || client.state() == "open").await;
    }
}

/// A token provider: the JS function, how often it was called, and the closure behind it.
struct Provider {
    function: JsValue,
    calls: Rc<Cell<u32>>,
    _closure: Closure<dyn FnMut() -> JsValue>,
}

/// A token provider that mints a fresh subscribe token per call (through a promise) and counts
/// its calls.
fn provider(run: &str, ttl_s: u64, key: &'static str) -> Provider {
    let calls = Rc::new(Cell::new(0));
    let c = calls.clone();
    let run = run.to_owned();
    let f = Closure::<dyn FnMut() -> JsValue>::new(move || {
        c.set(c.get() + 1);
        let token = JsValue::from_str(&mint(&run, Scope::Subscribe, ttl_s, key));
        Promise::resolve(&token).into()
    });
    Provider {
        function: f.as_ref().clone(),
        calls,
        _closure: f,
    }
}

#[wasm_bindgen_test]
async fn typed_events_arrive_in_order() {
    control("reset").await;
    let run = unique_run("typed");
    let p = provider(&run, 300, secret());
    let token = p.function.clone();
    let mut w = Watch::new(proxy(), token, &[]);
    let sub = w.subscribe(&run);
    w.wait_open().await;
    wait_for("the snapshot", 5_000.0, || {
        sub.last_seq().as_f64().is_some()
    })
    .await;
    assert_eq!(sub.last_seq().as_f64(), Some(0.0));
    let seqs = publish(
        &run,
        &[
            json!({"event":"run.started","data":{"workflow":"etl","node_count":2}}),
            json!({"event":"node.started","data":{"node_key":"extract"}}),
            json!({"event":"node.progress","data":{"node_key":"extract","progress":50}}),
            json!({"event":"log","data":{"level":"warning","message":"slow"}}),
            json!({"event":"node.failed","data":{"node_key":"load","error":"disk full"}}),
            json!({"event":"custom.thing","data":{"x":1}}),
            json!({"event":"node.completed","data":{"node_key":"extract","duration_ms":12}}),
            json!({"event":"run.completed","data":{"total_duration_ms":40}}),
        ],
    )
    .await;
    assert_eq!(seqs, (1..=8).collect::<Vec<_>>());
    let ends = w.ends.clone();
    wait_for("onEnd", 10_000.0, || !ends.borrow().is_empty()).await;
    assert_eq!(*w.ends.borrow(), ["completed"]);
    assert_eq!(w.seqs(), (1..=8).collect::<Vec<_>>());
    let names: Vec<String> = w.events.borrow().iter().map(|e| e.1.clone()).collect();
    assert_eq!(
        names,
        [
            "run.started",
            "node.started",
            "node.progress",
            "log",
            "node.failed",
            "other:custom.thing",
            "node.completed",
            "run.completed"
        ]
    );
    let failed = w.events.borrow()[4].2.clone();
    assert_eq!(
        get(&get(&failed, "data"), "error").as_string().as_deref(),
        Some("disk full")
    );
    assert_eq!(get(&failed, "run").as_string(), Some(run.clone()));
    // onState after the snapshot and after every event.
    assert_eq!(w.states.borrow().len(), 9);
    let last = w.states.borrow().last().unwrap().clone();
    assert_eq!(
        get(&last, "status").as_string().as_deref(),
        Some("completed")
    );
    assert_eq!(get(&last, "warning_count").as_f64(), Some(1.0));
    let nodes: js_sys::Array = get(&last, "nodes").unchecked_into();
    assert_eq!(nodes.length(), 2);
    assert_eq!(sub.last_seq().as_f64(), Some(8.0));
    assert_eq!(sub.ended().as_string().as_deref(), Some("completed"));
    assert_eq!(get(&sub.state(), "seq").as_f64(), Some(8.0));
    assert!(w.errors.borrow().is_empty(), "{:?}", w.errors.borrow());
    w.client.close();
}

#[wasm_bindgen_test]
async fn every_seq_arrives_once_across_cuts() {
    control("reset").await;
    let run = unique_run("cuts");
    let p = provider(&run, 300, secret());
    let token = p.function.clone();
    let mut w = Watch::new(
        proxy(),
        token,
        &[
            ("minReconnectDelayMs", 20.into()),
            ("maxReconnectDelayMs", 200.into()),
        ],
    );
    let sub = w.subscribe(&run);
    w.wait_open().await;
    wait_for("the snapshot", 5_000.0, || {
        sub.last_seq().as_f64().is_some()
    })
    .await;
    // Publish in the background while the connection is cut over and over.
    let publishing = Rc::new(Cell::new(true));
    let flag = publishing.clone();
    let publisher_run = run.clone();
    wasm_bindgen_futures::spawn_local(async move {
        for _ in 0..16 {
            publish(&publisher_run, &logs(25)).await;
            sleep(40).await;
        }
        flag.set(false);
    });
    let cuts = 6;
    for round in 1..=cuts {
        sleep(60).await;
        control("cut").await;
        let reopened = || w.count_changes("reconnecting>open") == round;
        wait_for("reconnect after a cut", 15_000.0, reopened).await;
    }
    wait_for("publisher", 30_000.0, || !publishing.get()).await;
    publish(&run, &[json!({"event":"run.completed","data":{}})]).await;
    let ends = w.ends.clone();
    wait_for("onEnd", 15_000.0, || !ends.borrow().is_empty()).await;
    let want: Vec<u64> = (1..=16 * 25 + 1).collect();
    assert_eq!(w.seqs(), want, "every seq once, in order");
    assert_eq!(*w.ends.borrow(), ["completed"]);
    assert_eq!(w.count_changes("open>reconnecting"), cuts);
    w.client.close();
}

#[wasm_bindgen_test]
async fn token_is_refreshed_before_it_expires() {
    control("reset").await;
    let run = unique_run("refresh");
    // Tokens live 4 s; the relay closes 4001 five seconds after expiry unless refreshed.
    let p = provider(&run, 4, secret());
    let (token, calls) = (p.function.clone(), p.calls.clone());
    let mut w = Watch::new(proxy(), token, &[]);
    let _sub = w.subscribe(&run);
    w.wait_open().await;
    for i in 0..12u64 {
        publish(&run, &logs(1)).await;
        let events = w.events.clone();
        wait_for("the event", 5_000.0, || {
            events.borrow().len() as u64 == i + 1
        })
        .await;
        sleep(1_000).await;
    }
    assert!(
        calls.get() >= 3,
        "token provider called {} times",
        calls.get()
    );
    assert_eq!(
        w.changes(),
        ["closed>connecting:subscribe", "connecting>open:connected"],
        "no reconnect"
    );
    assert_eq!(w.seqs(), (1..=12).collect::<Vec<_>>());
    w.client.close();
}

#[wasm_bindgen_test]
async fn final_close_codes_stop_reconnecting() {
    control("reset").await;
    // A token the relay cannot verify: fetch a fresh one once, then give up (4002).
    let run = unique_run("badtoken");
    let p = provider(&run, 300, "not-the-relay-secret-not-the-relay-secret");
    let (token, calls) = (p.function.clone(), p.calls.clone());
    let mut w = Watch::new(proxy(), token, &[("minReconnectDelayMs", 20.into())]);
    let _sub = w.subscribe(&run);
    let client = &w.client;
    wait_for("closed", 10_000.0, || {
        client.state() == "closed" && calls.get() > 0
    })
    .await;
    sleep(1_500).await;
    assert_eq!(calls.get(), 2, "one fresh token, then stop");
    assert_eq!(w.client.state(), "closed");
    assert_eq!(*w.ends.borrow(), ["forbidden"]);
    let last = w.changes().last().unwrap().clone();
    assert!(
        last.starts_with("reconnecting>closed:"),
        "{:?}",
        w.changes()
    );
    w.client.close();

    // A publish-scope token is refused for subscribing: 4003, final at once.
    let run = unique_run("scope");
    let mut w = Watch::new(
        proxy(),
        mint(&run, Scope::Publish, 300, secret()).into(),
        &[],
    );
    let _sub = w.subscribe(&run);
    let client = &w.client;
    wait_for("closed", 10_000.0, || {
        client.state() == "closed" && w.changes.borrow().len() > 1
    })
    .await;
    sleep(1_000).await;
    assert_eq!(
        w.changes(),
        ["closed>connecting:subscribe", "connecting>closed:forbidden"]
    );
    assert_eq!(*w.ends.borrow(), ["forbidden"]);
    w.client.close();
}

#[wasm_bindgen_test]
async fn state_changes_follow_the_documented_order() {
    control("reset").await;
    let run = unique_run("order");
    let p = provider(&run, 300, secret());
    let token = p.function.clone();
    let mut w = Watch::new(proxy(), token, &[("minReconnectDelayMs", 20.into())]);
    let sub = w.subscribe(&run);
    w.wait_open().await;
    control("cut").await;
    wait_for("reopen", 10_000.0, || {
        w.count_changes("reconnecting>open") == 1
    })
    .await;
    sub.unsubscribe();
    assert_eq!(*w.ends.borrow(), ["unsubscribed"]);
    let client = &w.client;
    let unsubscribed_at = now_ms();
    wait_for("linger close", 5_000.0, || client.state() == "closed").await;
    assert!(
        now_ms() - unsubscribed_at >= 1_000.0,
        "the socket lingers before closing"
    );
    let _again = w.subscribe(&run);
    w.wait_open().await;
    w.client.close();
    assert_eq!(
        w.changes(),
        [
            "closed>connecting:subscribe",
            "connecting>open:connected",
            "open>reconnecting:connection lost",
            "reconnecting>open:connected",
            "open>closed:idle",
            "closed>connecting:subscribe",
            "connecting>open:connected",
            "open>closed:client closed",
        ]
    );
    assert_eq!(*w.ends.borrow(), ["unsubscribed", "unsubscribed"]);
}

#[wasm_bindgen_test]
async fn a_stalled_connection_is_declared_dead() {
    control("reset").await;
    let run = unique_run("stall");
    let p = provider(&run, 300, secret());
    let token = p.function.clone();
    let mut w = Watch::new(proxy(), token, &[("minReconnectDelayMs", 20.into())]);
    let _sub = w.subscribe(&run);
    w.wait_open().await;
    publish(&run, &logs(1)).await;
    let events = w.events.clone();
    wait_for("first event", 5_000.0, || events.borrow().len() == 1).await;
    control("stall").await;
    let stalled_at = now_ms();
    wait_for("heartbeat timeout", 10_000.0, || {
        w.count_changes("open>reconnecting") == 1
    })
    .await;
    let took = now_ms() - stalled_at;
    // Silence is noticed within one to two heartbeats, then a ping gets a grace to be answered.
    assert!(took >= HEARTBEAT_MS, "declared dead too early: {took} ms");
    assert!(
        took <= 2.0 * HEARTBEAT_MS + 1_000.0 + 1_500.0,
        "declared dead too late: {took} ms"
    );
    assert!(
        w.changes().last().unwrap().ends_with(":heartbeat timeout"),
        "{:?}",
        w.changes()
    );
    publish(&run, &logs(3)).await;
    control("unstall").await;
    w.wait_open().await;
    wait_for("the events published while stalled", 10_000.0, || {
        events.borrow().len() == 4
    })
    .await;
    assert_eq!(w.seqs(), [1, 2, 3, 4]);
    w.client.close();
}

#[wasm_bindgen_test]
async fn falls_back_to_sse_when_websocket_upgrades_are_refused() {
    control("reset").await;
    control("refuse-ws").await;
    let run = unique_run("sse");
    let p = provider(&run, 300, secret());
    let token = p.function.clone();
    let mut w = Watch::new(
        proxy(),
        token,
        &[
            ("minReconnectDelayMs", 20.into()),
            ("maxReconnectDelayMs", 100.into()),
        ],
    );
    let sub = w.subscribe(&run);
    w.wait_open().await;
    assert_eq!(w.client.transport().as_string().as_deref(), Some("sse"));
    wait_for("the snapshot", 5_000.0, || {
        sub.last_seq().as_f64().is_some()
    })
    .await;
    publish(&run, &logs(5)).await;
    let events = w.events.clone();
    wait_for("events over SSE", 10_000.0, || events.borrow().len() == 5).await;
    control("cut").await;
    publish(&run, &logs(5)).await;
    publish(
        &run,
        &[json!({"event":"run.failed","data":{"error":"boom"}})],
    )
    .await;
    let ends = w.ends.clone();
    wait_for("onEnd", 15_000.0, || !ends.borrow().is_empty()).await;
    assert_eq!(w.seqs(), (1..=11).collect::<Vec<_>>());
    assert_eq!(*w.ends.borrow(), ["failed"]);
    assert_eq!(w.client.transport().as_string().as_deref(), Some("sse"));
    assert!(
        w.count_changes("connecting>reconnecting") == 1,
        "{:?}",
        w.changes()
    );
    w.client.close();
    control("reset").await;
}

#[wasm_bindgen_test]
async fn a_thousand_clients_leave_nothing_behind() {
    control("reset").await;
    let run = unique_run("cycles");
    let token = mint(&run, Scope::Subscribe, 600, secret());
    let memory = || {
        wasm_bindgen::memory()
            .unchecked_into::<js_sys::WebAssembly::Memory>()
            .buffer()
            .unchecked_into::<js_sys::ArrayBuffer>()
            .byte_length()
    };
    let heap = || {
        let perf = web_sys::window().unwrap().performance().unwrap();
        let m = get(&perf, "memory");
        if m.is_object() {
            get(&m, "usedJSHeapSize").as_f64()
        } else {
            None
        }
    };
    let mut baseline = 0;
    let heap_start = heap();
    let started = now_ms();
    let mut opening = 0.0;
    // Firefox paces WebSocket opens to one host (about 240 ms each here, against 15 ms in
    // Chrome), so it runs fewer cycles; Chrome runs the full thousand.
    let firefox = web_sys::window()
        .and_then(|w| w.navigator().user_agent().ok())
        .is_some_and(|ua| ua.contains("Firefox"));
    let cycles: u32 = if firefox { 250 } else { 1000 };
    for i in 0..cycles {
        {
            let mut w = Watch::new(relay(), token.clone().into(), &[]);
            let t = now_ms();
            let _sub = w.subscribe(&run);
            w.wait_open().await;
            opening += now_ms() - t;
            w.client.close();
        }
        assert_eq!(live_clients(), 0, "cycle {i}");
        assert_eq!(live_callbacks(), 0, "cycle {i}");
        if i == 99 {
            baseline = memory();
        }
    }
    let grown = memory() - baseline;
    console_log!(
        "{cycles} cycles in {:.0} ms ({:.1} ms to open on average): wasm memory grew {grown} bytes after warm-up; JS heap {:?} -> {:?}",
        now_ms() - started,
        opening / f64::from(cycles),
        heap_start,
        heap()
    );
    assert!(
        grown <= 256 * 1024,
        "wasm memory grew by {grown} bytes over 900 cycles"
    );
}

#[wasm_bindgen_test]
async fn online_and_visibility_skip_the_backoff_wait() {
    control("reset").await;
    let run = unique_run("wake");
    let p = provider(&run, 300, secret());
    let token = p.function.clone();
    // Left alone, the client would wait at least 8 s before reconnecting.
    let backoff = [
        ("minReconnectDelayMs", JsValue::from(8_000)),
        ("maxReconnectDelayMs", JsValue::from(8_000)),
    ];
    let mut w = Watch::new(proxy(), token, &backoff);
    let _sub = w.subscribe(&run);
    w.wait_open().await;
    let window = web_sys::window().unwrap();
    let wakers: [(&str, web_sys::EventTarget); 2] = [
        ("online", window.clone().into()),
        ("visibilitychange", window.document().unwrap().into()),
    ];
    for (round, (event, target)) in wakers.into_iter().enumerate() {
        control("cut").await;
        wait_for("the drop", 5_000.0, || {
            w.count_changes("open>reconnecting") == round + 1
        })
        .await;
        sleep(100).await;
        let woken_at = now_ms();
        target
            .dispatch_event(&web_sys::Event::new(event).unwrap())
            .unwrap();
        wait_for(event, 4_000.0, || {
            w.count_changes("reconnecting>open") == round + 1
        })
        .await;
        assert!(
            now_ms() - woken_at < 4_000.0,
            "{event} did not skip the backoff"
        );
    }
    w.client.close();
}

/// One socket, two runs: one covered by the connection's token, one by a token of its own, which
/// the relay refuses the first time (a token for another run) and the provider is asked again
/// once, with `{ runs: [run], reason: "refused" }`.
#[wasm_bindgen_test]
async fn a_subscription_with_its_own_token_shares_the_socket() {
    control("reset").await;
    let shared = unique_run("shared");
    let own = unique_run("own");
    let p = provider(&shared, 300, secret());
    let mut w = Watch::new(proxy(), p.function.clone(), &[]);
    let asks = Rc::new(RefCell::new(Vec::new()));
    let (a, shared_run, own_run) = (asks.clone(), shared.clone(), own.clone());
    let own_provider = Closure::<dyn FnMut(JsValue) -> JsValue>::new(move |ctx: JsValue| {
        let runs: Vec<String> = js_sys::Array::from(&get(&ctx, "runs"))
            .iter()
            .map(|r| r.as_string().unwrap())
            .collect();
        a.borrow_mut().push(format!(
            "{}:{}",
            runs.join(","),
            get(&ctx, "reason").as_string().unwrap()
        ));
        let run = if a.borrow().len() == 1 {
            &shared_run
        } else {
            &own_run
        };
        let token = JsValue::from_str(&mint(run, Scope::Subscribe, 300, secret()));
        Promise::resolve(&token).into()
    });
    // From seq 0: the refused first try must not make the events published meanwhile part of
    // a snapshot instead of arriving as events.
    let since = || ("since", JsValue::from_f64(0.0));
    let _a = w.subscribe_with(&shared, &[since()]);
    let _b = w.subscribe_with(&own, &[since(), ("token", own_provider.as_ref().clone())]);
    w.wait_open().await;
    publish(&shared, &logs(2)).await;
    publish(&own, &logs(3)).await;
    let events = w.events.clone();
    wait_for("five events", 10_000.0, || events.borrow().len() == 5).await;
    let per_run = |run: &str| -> Vec<u64> {
        w.events
            .borrow()
            .iter()
            .filter(|e| get(&e.2, "run").as_string().as_deref() == Some(run))
            .map(|e| e.0)
            .collect()
    };
    assert_eq!(per_run(&shared), [1, 2]);
    assert_eq!(per_run(&own), [1, 2, 3]);
    assert_eq!(
        *asks.borrow(),
        [format!("{own}:connect"), format!("{own}:refused")]
    );
    assert!(w.ends.borrow().is_empty());
    assert_eq!(
        w.changes(),
        ["closed>connecting:subscribe", "connecting>open:connected"],
        "one connection"
    );
    w.client.close();
    drop(own_provider);
}
