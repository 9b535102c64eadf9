//! State machine tests: effects are run by a small harness with a fake clock and a fake relay.

use std::collections::BTreeMap;
use std::format;
use std::string::ToString;

use runwire_protocol::EndReason;
use serde_json::{Value, json};

use super::*;
use crate::wire::Frame;

const T0: f64 = 1_800_000_000_000.0;

/// Runs a [`Machine`]'s effects and records what the app and the relay would see.
struct Harness {
    machine: Machine,
    now: f64,
    timers: BTreeMap<Timer, f64>,
    connected: Option<Kind>,
    connects: Vec<Kind>,
    token_req: Option<u32>,
    /// Every token request: why, the runs it must cover, and whose provider.
    token_asks: Vec<(u32, TokenReason, Vec<String>, Option<SubId>)>,
    sent: Vec<ClientFrame>,
    states: Vec<(ConnState, ConnState, String)>,
    /// (sub, seq) of every event handed to the app.
    events: Vec<(SubId, u64)>,
    run_states: Vec<(SubId, Value)>,
    ends: Vec<(SubId, EndReason)>,
    /// Ends with a reason this client does not know.
    other_ends: Vec<(SubId, String)>,
    errors: Vec<ClientError>,
    current_seq: u64,
}

impl Harness {
    fn new(cfg: Config) -> Self {
        Self {
            machine: Machine::new(cfg, 7),
            now: T0,
            timers: BTreeMap::new(),
            connected: None,
            connects: Vec::new(),
            token_req: None,
            token_asks: Vec::new(),
            sent: Vec::new(),
            states: Vec::new(),
            events: Vec::new(),
            run_states: Vec::new(),
            ends: Vec::new(),
            other_ends: Vec::new(),
            errors: Vec::new(),
            current_seq: 0,
        }
    }

    fn input(&mut self, input: Input<'_>) {
        if let Input::Frame(Ok(Frame::Event(e))) = &input {
            self.current_seq = e.seq;
        }
        for effect in self.machine.handle(input, self.now) {
            match effect {
                Effect::FetchToken { req, reason, own } => {
                    let (runs, sub) = match own {
                        Some((run, sub)) => (std::vec![run], Some(sub)),
                        None => {
                            self.token_req = Some(req);
                            let runs = self.machine.connection_runs().map(str::to_owned).collect();
                            (runs, None)
                        }
                    };
                    self.token_asks.push((req, reason, runs, sub));
                }
                Effect::Connect(kind) => {
                    self.connected = Some(kind);
                    self.connects.push(kind);
                }
                Effect::Disconnect => self.connected = None,
                Effect::Send(frame) => {
                    assert!(
                        self.connected.is_some(),
                        "sent {frame:?} with no connection"
                    );
                    self.sent.push(frame);
                }
                Effect::SetTimer(t, ms) => {
                    self.timers.insert(t, self.now + f64::from(ms));
                }
                Effect::ClearTimer(t) => {
                    self.timers.remove(&t);
                }
                Effect::State {
                    state,
                    previous,
                    reason,
                    ..
                } => self.states.push((previous, state, reason)),
                Effect::Event(sub, _) => self.events.push((sub, self.current_seq)),
                Effect::RunState(sub, state) => self
                    .run_states
                    .push((sub, serde_json::to_value(&*state).unwrap())),
                Effect::End { sub, reason, .. } => {
                    match EndReason::ALL.into_iter().find(|&r| reason.is(r)) {
                        Some(r) => self.ends.push((sub, r)),
                        None => self.other_ends.push((sub, reason.as_str().into())),
                    }
                }
                Effect::Error(e) => self.errors.push(e),
            }
        }
    }

    fn subscribe(&mut self, id: SubId, run: &str) {
        self.input(Input::Subscribe {
            id,
            run,
            since: None,
            wants_state: true,
            own_token: false,
        });
    }

    fn give_token(&mut self, token: &str) {
        let req = self.token_req.take().expect("a token was asked for");
        self.answer(req, Ok(token));
    }

    /// Answers token request `req`: a token, or the provider's failure.
    fn answer(&mut self, req: u32, token: Result<&str, &str>) {
        let token = token.map(str::to_owned).map_err(str::to_owned);
        self.input(Input::Token { req, token });
    }

    /// The provider fails request `req`, and the app is told.
    fn provider_fails(&mut self, req: u32) {
        self.answer(req, Err("backend down"));
        assert_eq!(self.errors.last().unwrap().code, "token_provider");
    }

    /// The transport closes with `code` and no reason.
    fn closed(&mut self, code: u16) {
        self.input(Input::Closed { code, reason: "" });
    }

    fn frame(&mut self, v: Value) {
        self.text(&v.to_string());
    }

    fn text(&mut self, text: &str) {
        self.input(Input::Frame(crate::wire::decode_json(text)));
    }

    fn welcome(&mut self, heartbeat_ms: u64, expires_in_s: u64) {
        let expires_at = (self.now / 1000.0) as u64 + expires_in_s;
        self.frame(json!({"type":"welcome","conn":"c","heartbeat_ms":heartbeat_ms,"expires_at":expires_at,"protocol":1}));
    }

    /// Token, socket open, welcome: a full WebSocket connection.
    fn connect_ws(&mut self) {
        self.give_token("tok");
        assert_eq!(self.connected, Some(Kind::WebSocket));
        self.input(Input::Opened);
        assert_eq!(
            self.sent.last(),
            Some(&ClientFrame::Auth {
                token: "tok".into(),
                batch: true
            })
        );
        self.welcome(25_000, 600);
        assert_eq!(self.machine.state(), ConnState::Open);
    }

    fn subscribed(&mut self, run: &str, seq: u64, epoch: &str) {
        let state = RunState {
            seq,
            ..RunState::default()
        };
        self.frame(json!({"type":"subscribed","run":run,"seq":seq,"state":state,"epoch":epoch}));
    }

    fn event(&mut self, run: &str, seq: u64, name: &str, data: Value) {
        self.frame(json!({"type":"event","run":run,"seq":seq,"event":name,"ts":"2026-01-01T00:00:00.000Z","data":data}));
    }

    fn log(&mut self, run: &str, seq: u64) {
        self.event(run, seq, "log", json!({"level":"info","message":"m"}));
    }

    /// Moves the clock to the earliest armed timer and fires it.
    fn fire_next(&mut self) -> Timer {
        let (&t, &at) = self
            .timers
            .iter()
            .min_by(|a, b| a.1.total_cmp(b.1))
            .expect("a timer is armed");
        self.timers.remove(&t);
        self.now = self.now.max(at);
        self.input(Input::Timer(t));
        t
    }

    fn fire(&mut self, t: Timer) -> f64 {
        let at = self
            .timers
            .remove(&t)
            .unwrap_or_else(|| panic!("{t:?} not armed"));
        let waited = at - self.now;
        self.now = self.now.max(at);
        self.input(Input::Timer(t));
        waited
    }

    fn last_subscribe(&self) -> (String, Option<u64>, Option<String>) {
        self.sent
            .iter()
            .rev()
            .find_map(|f| match f {
                ClientFrame::Subscribe {
                    run, since, epoch, ..
                } => Some((run.clone(), *since, epoch.clone())),
                _ => None,
            })
            .expect("a subscribe was sent")
    }

    fn seqs(&self, sub: SubId) -> Vec<u64> {
        self.events
            .iter()
            .filter(|(s, _)| *s == sub)
            .map(|(_, q)| *q)
            .collect()
    }

    fn state_names(&self) -> Vec<String> {
        self.states
            .iter()
            .map(|(p, s, _)| format!("{}>{}", p.as_str(), s.as_str()))
            .collect()
    }
}

fn ws_cfg() -> Config {
    Config {
        transport: TransportMode::WebSocket,
        ..Config::default()
    }
}

#[test]
fn connects_lazily_and_authenticates_with_a_frame() {
    let mut h = Harness::new(ws_cfg());
    assert_eq!(h.machine.state(), ConnState::Closed);
    assert!(h.connects.is_empty());
    h.subscribe(1, "r1");
    assert_eq!(h.state_names(), ["closed>connecting"]);
    assert!(h.connected.is_none(), "the token comes first");
    h.give_token("tok");
    h.input(Input::Opened);
    assert_eq!(
        h.sent,
        [ClientFrame::Auth {
            token: "tok".into(),
            batch: true
        }],
        "nothing but auth before welcome"
    );
    h.welcome(25_000, 600);
    assert_eq!(h.state_names(), ["closed>connecting", "connecting>open"]);
    assert_eq!(h.last_subscribe(), ("r1".into(), None, None));
    h.subscribed("r1", 3, "e1");
    assert_eq!(h.run_states.len(), 1);
    assert_eq!(h.run_states[0].1["seq"], 3);
    h.log("r1", 4);
    h.log("r1", 5);
    assert_eq!(h.seqs(1), [4, 5]);
    assert_eq!(h.machine.registry().run_of(1).unwrap().last_seq, Some(5));
}

#[test]
fn resumes_after_a_drop_with_since_and_epoch_and_delivers_each_event_once() {
    let mut h = Harness::new(ws_cfg());
    h.subscribe(1, "r1");
    h.connect_ws();
    h.subscribed("r1", 0, "e1");
    for seq in 1..=5 {
        h.log("r1", seq);
    }
    h.closed(1006);
    assert_eq!(h.machine.state(), ConnState::Reconnecting);
    assert!(h.connected.is_none());
    let waited = h.fire(Timer::Backoff);
    assert!((500.0..=1000.0).contains(&waited), "{waited}");
    h.connect_ws();
    assert_eq!(
        h.last_subscribe(),
        ("r1".into(), Some(5), Some("e1".into()))
    );
    h.subscribed("r1", 7, "e1");
    // Replay overlaps what was delivered before the drop.
    for seq in [4, 5, 6, 7, 7, 8] {
        h.log("r1", seq);
    }
    assert_eq!(h.seqs(1), [1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(
        h.state_names(),
        [
            "closed>connecting",
            "connecting>open",
            "open>reconnecting",
            "reconnecting>open"
        ]
    );
    // The fold went on from the state kept across the drop.
    let last = &h.run_states.last().unwrap().1;
    assert_eq!(
        (last["seq"].as_u64(), last["log_count"].as_u64()),
        (Some(8), Some(8))
    );
}

#[test]
fn a_gap_resubscribes_from_the_last_delivered_seq() {
    let mut h = Harness::new(ws_cfg());
    h.subscribe(1, "r1");
    h.connect_ws();
    h.subscribed("r1", 2, "e1");
    h.log("r1", 3);
    h.log("r1", 5); // 4 is missing
    assert_eq!(
        h.last_subscribe(),
        ("r1".into(), Some(3), Some("e1".into()))
    );
    let subscribes = h.sent.len();
    h.log("r1", 6); // still missing 4: no second resubscribe
    assert_eq!(h.sent.len(), subscribes);
    h.log("r1", 4); // in flight before the resubscribe took effect: fine to deliver
    h.subscribed("r1", 6, "e1");
    for seq in [5, 6, 7] {
        h.log("r1", seq);
    }
    assert_eq!(h.seqs(1), [3, 4, 5, 6, 7]);
}

#[test]
fn reset_replaces_the_state_and_is_reported() {
    let mut h = Harness::new(ws_cfg());
    h.subscribe(1, "r1");
    h.connect_ws();
    h.subscribed("r1", 10, "e1");
    h.closed(1012);
    let waited = h.fire(Timer::Backoff);
    assert!(waited <= 500.0, "1012 reconnects at once: {waited}");
    h.connect_ws();
    assert_eq!(h.last_subscribe().1, Some(10));
    let state = RunState {
        seq: 2,
        log_count: 2,
        ..RunState::default()
    };
    h.frame(json!({"type":"reset","run":"r1","seq":2,"state":state,"epoch":"e2"}));
    let last = &h.run_states.last().unwrap().1;
    assert_eq!(
        (last["seq"].as_u64(), last["log_count"].as_u64()),
        (Some(2), Some(2))
    );
    h.log("r1", 3);
    assert_eq!(h.seqs(1), [3]);
    h.closed(1006);
    h.fire(Timer::Backoff);
    h.connect_ws();
    assert_eq!(
        h.last_subscribe(),
        ("r1".into(), Some(3), Some("e2".into()))
    );
}

/// A relay model: holds a run's events, answers subscribes with `subscribed` + replay, and
/// delivers live events. The test scrambles delivery (duplicates, drops, cuts) with a seeded
/// generator and checks the app sees 1..=N exactly once, in order.
#[test]
fn every_event_once_in_order_under_duplicates_drops_and_cuts() {
    for seed in 1..=40u64 {
        let mut rng = Jitter::new(seed);
        let mut h = Harness::new(ws_cfg());
        let total = 300u64;
        let mut published = 0u64;
        h.subscribe(1, "r1");
        h.connect_ws();
        let mut answered = 0;
        let mut steps = 0;
        while h.seqs(1).len() < total as usize {
            steps += 1;
            assert!(steps < 100_000, "seed {seed}: no progress");
            // Answer every subscribe the client sent since last time.
            let subs: Vec<_> = h.sent[answered..]
                .iter()
                .filter_map(|f| match f {
                    ClientFrame::Subscribe { since, .. } => Some(*since),
                    _ => None,
                })
                .collect();
            answered = h.sent.len();
            for since in subs {
                h.subscribed("r1", published, "e1");
                if let Some(since) = since {
                    for seq in since + 1..=published {
                        h.log("r1", seq);
                    }
                }
            }
            if h.connected.is_none() {
                h.fire(Timer::Backoff);
                h.connect_ws();
                continue;
            }
            let r = rng.unit();
            if published < total {
                published += 1;
            }
            if r < 0.05 {
                // Cut the connection; the event is published but not delivered.
                h.closed(1006);
            } else if r < 0.10 {
                // Lost on the way: a gap the client must notice.
            } else if r < 0.20 {
                h.log("r1", published);
                h.log("r1", published);
                let old = published.saturating_sub(1 + (rng.unit() * 5.0) as u64);
                if old > 0 {
                    h.log("r1", old);
                }
            } else {
                h.log("r1", published);
            }
            if published == total && h.connected.is_some() && r >= 0.10 {
                // Nudge: at the end, a resubscribe fetches whatever is still missing.
                h.log("r1", total + 1_000);
            }
        }
        let want: Vec<u64> = (1..=total).collect();
        assert_eq!(h.seqs(1), want, "seed {seed}");
    }
}

#[test]
fn several_app_subscriptions_share_one_run() {
    let mut h = Harness::new(ws_cfg());
    h.subscribe(1, "r1");
    h.connect_ws();
    h.subscribed("r1", 0, "e1");
    h.log("r1", 1);
    h.subscribe(2, "r1");
    assert_eq!(
        h.sent
            .iter()
            .filter(|f| matches!(f, ClientFrame::Subscribe { .. }))
            .count(),
        1
    );
    assert_eq!(
        h.run_states.last().unwrap().0,
        2,
        "the joiner gets the current state"
    );
    h.log("r1", 2);
    assert_eq!(h.seqs(1), [1, 2]);
    assert_eq!(h.seqs(2), [2]);
    h.input(Input::Unsubscribe(1));
    assert!(
        !h.sent
            .iter()
            .any(|f| matches!(f, ClientFrame::Unsubscribe { .. }))
    );
    h.log("r1", 3);
    assert_eq!(h.seqs(1), [1, 2]);
    assert_eq!(h.seqs(2), [2, 3]);
}

#[test]
fn terminal_event_ends_the_subscription_and_the_socket_lingers_then_closes() {
    let mut h = Harness::new(ws_cfg());
    h.subscribe(1, "r1");
    h.connect_ws();
    h.subscribed("r1", 0, "e1");
    h.event("r1", 1, "run.started", json!({}));
    h.event("r1", 2, "run.failed", json!({"error":"boom"}));
    assert_eq!(h.ends, [(1, EndReason::Failed)]);
    let last = &h.run_states.last().unwrap().1;
    assert_eq!(last["status"], "failed");
    assert_eq!(last["error"], "boom");
    h.frame(json!({"type":"unsubscribed","run":"r1","reason":"failed"}));
    assert_eq!(h.ends.len(), 1, "ended once");
    assert!(h.timers.contains_key(&Timer::Linger));
    // A new subscription during the linger keeps the socket.
    h.subscribe(2, "r2");
    assert!(!h.timers.contains_key(&Timer::Linger));
    h.input(Input::Unsubscribe(2));
    assert_eq!(h.ends.last(), Some(&(2, EndReason::Unsubscribed)));
    assert_eq!(
        h.sent.last(),
        Some(&ClientFrame::Unsubscribe { run: "r2".into() })
    );
    let waited = h.fire(Timer::Linger);
    assert_eq!(waited, f64::from(LINGER_MS));
    assert!(h.connected.is_none());
    assert_eq!(h.states.last().unwrap().1, ConnState::Closed);
    assert_eq!(h.states.last().unwrap().2, "idle");
    assert!(h.timers.is_empty(), "{:?}", h.timers);
}

#[test]
fn resubscribing_after_unsubscribe_ignores_the_old_answer() {
    let mut h = Harness::new(ws_cfg());
    h.subscribe(1, "r1");
    h.connect_ws();
    h.subscribed("r1", 0, "e1");
    h.input(Input::Unsubscribe(1));
    h.subscribe(2, "r1");
    h.frame(json!({"type":"unsubscribed","run":"r1","reason":"unsubscribed"}));
    assert!(!h.ends.iter().any(|(s, _)| *s == 2));
    h.subscribed("r1", 0, "e1");
    h.log("r1", 1);
    assert_eq!(h.seqs(2), [1]);
}

#[test]
fn forbidden_close_is_final() {
    let mut h = Harness::new(ws_cfg());
    h.subscribe(1, "r1");
    h.give_token("tok");
    h.input(Input::Opened);
    h.closed(4003);
    assert_eq!(h.machine.state(), ConnState::Closed);
    assert_eq!(h.states.last().unwrap().2, "forbidden");
    assert_eq!(h.ends, [(1, EndReason::Forbidden)]);
    assert!(h.timers.is_empty());
    assert!(h.token_req.is_none());
}

#[test]
fn bad_token_is_final_only_after_a_fresh_one_fails() {
    let mut h = Harness::new(ws_cfg());
    h.subscribe(1, "r1");
    h.give_token("old");
    h.input(Input::Opened);
    h.closed(4002);
    assert_eq!(h.machine.state(), ConnState::Reconnecting);
    h.fire(Timer::Backoff);
    h.give_token("fresh");
    h.input(Input::Opened);
    h.closed(4002);
    assert_eq!(h.machine.state(), ConnState::Closed);
    assert_eq!(h.ends, [(1, EndReason::Forbidden)]);
    assert!(h.timers.is_empty());

    // A fresh token that works clears the strike.
    let mut h = Harness::new(ws_cfg());
    h.subscribe(1, "r1");
    h.connect_ws();
    h.closed(4001);
    h.fire(Timer::Backoff);
    h.connect_ws();
    h.closed(4001);
    assert_eq!(h.machine.state(), ConnState::Reconnecting);
}

#[test]
fn a_static_token_cannot_be_refreshed_so_a_token_close_is_final() {
    let mut h = Harness::new(Config {
        static_token: true,
        ..ws_cfg()
    });
    h.subscribe(1, "r1");
    h.connect_ws();
    assert!(!h.timers.contains_key(&Timer::Refresh));
    h.closed(4001);
    assert_eq!(h.machine.state(), ConnState::Closed);
}

#[test]
fn gives_up_after_max_attempts_and_backoff_grows() {
    let mut h = Harness::new(Config {
        max_attempts: Some(3),
        backoff: Backoff::new(100, 10_000),
        ..ws_cfg()
    });
    h.subscribe(1, "r1");
    h.connect_ws();
    h.closed(1006);
    let mut waits = Vec::new();
    for _ in 0..3 {
        waits.push(h.fire(Timer::Backoff));
        h.give_token("tok");
        h.closed(1006);
    }
    assert_eq!(h.machine.state(), ConnState::Closed);
    assert_eq!(h.states.last().unwrap().2, "max reconnect attempts");
    assert!(h.timers.is_empty());
    assert!(waits[0] >= 100.0 && waits[0] <= 200.0, "{waits:?}");
    assert!(waits[1] >= 100.0 && waits[1] <= 400.0, "{waits:?}");
    assert!(waits[2] >= 100.0 && waits[2] <= 800.0, "{waits:?}");
    assert!(h.ends.is_empty(), "subscriptions stay for a later retry");
    // Going online starts over.
    h.input(Input::Online);
    assert_eq!(h.machine.state(), ConnState::Connecting);
    h.connect_ws();
    assert_eq!(h.last_subscribe().0, "r1");
}

#[test]
fn attempts_time_out() {
    let mut h = Harness::new(ws_cfg());
    h.subscribe(1, "r1");
    // The token provider never answers.
    let waited = h.fire(Timer::Attempt);
    assert_eq!(waited, f64::from(ATTEMPT_TIMEOUT_MS));
    assert_eq!(h.machine.state(), ConnState::Reconnecting);
    let req = h.token_req.take().unwrap();
    h.answer(req, Ok("late"));
    assert!(h.connected.is_none(), "a late token is ignored");
}

#[test]
fn silent_connection_is_pinged_then_declared_dead() {
    let mut h = Harness::new(ws_cfg());
    h.subscribe(1, "r1");
    h.give_token("tok");
    h.input(Input::Opened);
    h.welcome(2_000, 600);
    h.subscribed("r1", 0, "e1");
    // Traffic keeps it alive.
    assert_eq!(h.fire(Timer::Liveness), 2_000.0);
    assert!(!matches!(h.sent.last(), Some(ClientFrame::Ping { .. })));
    // Silence: ping, then give up after the grace.
    assert_eq!(h.fire(Timer::Liveness), 2_000.0);
    assert_eq!(h.sent.last(), Some(&ClientFrame::Ping { id: None }));
    // A pong saves it.
    h.frame(json!({"type":"pong"}));
    h.fire(Timer::Liveness);
    assert_eq!(h.machine.state(), ConnState::Open);
    h.fire(Timer::Liveness);
    assert_eq!(h.sent.last(), Some(&ClientFrame::Ping { id: None }));
    let grace = h.fire(Timer::Liveness);
    assert_eq!(grace, 1_000.0);
    assert_eq!(h.machine.state(), ConnState::Reconnecting);
    assert_eq!(h.states.last().unwrap().2, "heartbeat timeout");
    assert!(h.connected.is_none());
}

#[test]
fn refreshes_the_token_in_place_before_expiry() {
    let mut h = Harness::new(ws_cfg());
    h.subscribe(1, "r1");
    h.give_token("t1");
    h.input(Input::Opened);
    h.welcome(25_000, 100);
    let waited = h.fire(Timer::Refresh);
    assert!((79_000.0..=81_000.0).contains(&waited), "{waited}");
    h.give_token("t2");
    assert_eq!(
        h.sent.last(),
        Some(&ClientFrame::Auth {
            token: "t2".into(),
            batch: false
        })
    );
    h.welcome(25_000, 100);
    assert!(h.timers.contains_key(&Timer::Refresh));
    assert_eq!(h.state_names(), ["closed>connecting", "connecting>open"]);
    // A refused refresh is retried; the connection stays.
    h.frame(json!({"type":"error","code":"auth_failed","message":"bad"}));
    assert_eq!(h.errors.last().unwrap().code, "auth_failed");
    assert_eq!(h.fire(Timer::Refresh), 5_000.0);
    assert!(h.token_req.is_some());
}

#[test]
fn online_and_visible_skip_the_backoff_wait() {
    let mut h = Harness::new(Config {
        backoff: Backoff::new(10_000, 20_000),
        ..ws_cfg()
    });
    h.subscribe(1, "r1");
    h.connect_ws();
    h.closed(1006);
    assert!(h.timers.contains_key(&Timer::Backoff));
    h.input(Input::Online);
    assert!(!h.timers.contains_key(&Timer::Backoff));
    assert!(h.token_req.is_some());
    h.connect_ws();
    // Visible while open: probe instead of trusting a socket that may be dead.
    h.input(Input::Visible);
    assert_eq!(h.sent.last(), Some(&ClientFrame::Ping { id: None }));
}

#[test]
fn auto_falls_back_to_sse_when_websocket_keeps_failing() {
    let mut h = Harness::new(Config::default());
    h.subscribe(1, "r1");
    for _ in 0..WS_FAILURES_BEFORE_SSE {
        h.give_token("tok");
        assert_eq!(h.connected, Some(Kind::WebSocket));
        h.closed(1006);
        h.fire(Timer::Backoff);
    }
    h.give_token("tok");
    assert_eq!(h.connected, Some(Kind::Sse));
    assert_eq!(h.machine.state(), ConnState::Reconnecting);
    // SSE subscribes right away: opening a stream is how it connects.
    assert_eq!(
        h.sent[h.sent.len() - 2..],
        [
            ClientFrame::Auth {
                token: "tok".into(),
                batch: false
            },
            ClientFrame::Subscribe {
                run: "r1".into(),
                since: None,
                epoch: None,
                token: None
            }
        ]
    );
    h.input(Input::Opened);
    assert_eq!(h.machine.state(), ConnState::Open);
    assert_eq!(h.machine.transport(), Some(Kind::Sse));
    h.subscribed("r1", 0, "e1");
    h.log("r1", 1);
    // A dropped SSE connection comes back as SSE and resumes.
    h.closed(1006);
    h.fire(Timer::Backoff);
    h.give_token("tok");
    assert_eq!(h.connected, Some(Kind::Sse));
    assert_eq!(
        h.last_subscribe(),
        ("r1".into(), Some(1), Some("e1".into()))
    );
    // The relay ended the stream (max duration): resume it.
    h.input(Input::Opened);
    h.input(Input::StreamEnded {
        run: "r1",
        finished: false,
    });
    assert_eq!(
        h.last_subscribe(),
        ("r1".into(), Some(1), Some("e1".into()))
    );
    h.input(Input::StreamEnded {
        run: "r1",
        finished: true,
    });
    assert_eq!(h.ends, [(1, EndReason::Completed)]);
}

#[test]
fn token_failures_do_not_count_against_websocket() {
    let mut h = Harness::new(Config::default());
    h.subscribe(1, "r1");
    for _ in 0..3 {
        let req = h.token_req.take().unwrap();
        h.provider_fails(req);
        h.fire(Timer::Backoff);
    }
    assert_eq!(h.errors.len(), 3);
    assert!(h.errors.iter().all(|e| e.code == "token_provider"));
    h.give_token("tok");
    assert_eq!(h.connected, Some(Kind::WebSocket));
}

#[test]
fn bad_input_is_reported_and_the_stream_goes_on() {
    let mut h = Harness::new(ws_cfg());
    h.subscribe(1, "r1");
    h.connect_ws();
    h.subscribed("r1", 0, "e1");
    h.text("{not json");
    h.frame(json!({"type":"surprise","x":1})); // a newer relay's frame: ignored
    h.frame(json!({"run":"r1"}));
    h.frame(json!([1, 2]));
    h.event("r1", 1, "node.failed", json!({"node_key":"n"})); // error missing
    h.event("r1", 2, "custom.thing", json!({"anything": [1]}));
    h.event("r1", 3, "node.failed", json!({"node_key":"n","error":"e"}));
    let codes: Vec<_> = h.errors.iter().map(|e| e.code.as_str()).collect();
    assert_eq!(
        codes,
        ["bad_frame", "bad_frame", "bad_frame", "invalid_event"]
    );
    assert_eq!(h.errors[3].seq, Some(1));
    assert_eq!(h.errors[3].run.as_deref(), Some("r1"));
    assert_eq!(h.seqs(1), [2, 3], "the bad event is skipped, not a gap");
    assert_eq!(h.machine.state(), ConnState::Open);
    let last = &h.run_states.last().unwrap().1;
    assert_eq!(last["nodes"][0]["status"], "failed");
    assert_eq!(last["seq"], 3);
}

#[test]
fn close_ends_everything_for_good() {
    let mut h = Harness::new(ws_cfg());
    h.subscribe(1, "r1");
    h.subscribe(2, "r2");
    h.connect_ws();
    h.input(Input::Close);
    assert_eq!(
        h.ends,
        [(1, EndReason::Unsubscribed), (2, EndReason::Unsubscribed)]
    );
    assert_eq!(h.states.last().unwrap().1, ConnState::Closed);
    assert_eq!(h.states.last().unwrap().2, "client closed");
    assert!(h.connected.is_none());
    assert!(h.timers.is_empty());
    h.subscribe(3, "r3");
    assert!(h.connected.is_none() && h.token_req.is_none());
    assert!(h.machine.is_shut());
}

#[test]
fn subscribing_to_a_finished_run_gets_its_snapshot_then_ends() {
    let mut h = Harness::new(ws_cfg());
    h.subscribe(1, "r1");
    h.connect_ws();
    let state = RunState {
        seq: 9,
        status: RunStatus::Cancelled,
        ..RunState::default()
    };
    h.frame(json!({"type":"subscribed","run":"r1","seq":9,"state":state,"epoch":"e"}));
    h.frame(json!({"type":"unsubscribed","run":"r1","reason":"cancelled"}));
    assert_eq!(h.run_states[0].1["status"], "cancelled");
    assert_eq!(h.ends, [(1, EndReason::Cancelled)]);
    assert_eq!(h.fire_next(), Timer::Linger);
}

#[test]
fn reconnect_drops_the_connection_and_resumes_at_once() {
    let mut h = Harness::new(Config {
        backoff: Backoff::new(10_000, 20_000),
        ..ws_cfg()
    });
    // Nothing subscribed: nothing to do.
    h.input(Input::Reconnect);
    assert_eq!(h.machine.state(), ConnState::Closed);
    assert!(h.token_req.is_none());

    h.subscribe(1, "r1");
    h.connect_ws();
    h.subscribed("r1", 0, "e1");
    h.log("r1", 1);
    h.log("r1", 2);
    h.input(Input::Reconnect);
    assert!(h.connected.is_none(), "the open connection is dropped");
    assert!(!h.timers.contains_key(&Timer::Backoff), "no backoff wait");
    h.connect_ws();
    assert_eq!(
        h.last_subscribe(),
        ("r1".into(), Some(2), Some("e1".into()))
    );
    h.subscribed("r1", 3, "e1");
    for seq in [2, 3] {
        h.log("r1", seq);
    }
    assert_eq!(h.seqs(1), [1, 2, 3]);
    assert_eq!(
        h.state_names(),
        [
            "closed>connecting",
            "connecting>open",
            "open>reconnecting",
            "reconnecting>open"
        ]
    );

    // While waiting for a backoff delay: connect now.
    h.closed(1006);
    assert!(h.timers.contains_key(&Timer::Backoff));
    h.input(Input::Reconnect);
    assert!(!h.timers.contains_key(&Timer::Backoff));
    assert!(h.token_req.is_some());
    h.connect_ws();
    assert_eq!(h.machine.state(), ConnState::Open);
}

#[test]
fn reconnect_starts_again_after_giving_up() {
    let mut h = Harness::new(Config {
        max_attempts: Some(0),
        ..ws_cfg()
    });
    h.subscribe(1, "r1");
    h.connect_ws();
    h.closed(1006);
    assert_eq!(h.machine.state(), ConnState::Closed);
    h.input(Input::Reconnect);
    assert_eq!(h.machine.state(), ConnState::Connecting);
    h.connect_ws();
    assert_eq!(h.machine.state(), ConnState::Open);
    assert_eq!(h.last_subscribe().0, "r1");
}

#[test]
fn a_subscription_refused_for_lack_of_a_slot_waits_for_one() {
    let mut h = Harness::new(ws_cfg());
    h.subscribe(1, "r1");
    h.connect_ws();
    h.subscribed("r1", 0, "e1");
    h.subscribe(2, "r2");
    assert_eq!(h.last_subscribe().0, "r2");
    h.frame(
        json!({"type":"error","code":"too_many_subscriptions","message":"at most 1","run":"r2"}),
    );
    assert_eq!(h.errors.last().unwrap().code, "too_many_subscriptions");
    assert!(h.ends.is_empty(), "the refused subscription stays");
    let sent = h.sent.len();
    // r1 ends: its slot goes to r2.
    h.event("r1", 1, "run.completed", json!({}));
    h.frame(json!({"type":"unsubscribed","run":"r1","reason":"completed"}));
    assert_eq!(h.sent.len(), sent + 1);
    assert_eq!(h.last_subscribe(), ("r2".into(), None, None));
    h.subscribed("r2", 0, "e2");
    h.log("r2", 1);
    assert_eq!(h.seqs(2), [1]);

    // Unsubscribing a subscription that is still waiting sends nothing to the relay.
    h.subscribe(3, "r3");
    h.frame(
        json!({"type":"error","code":"too_many_subscriptions","message":"at most 1","run":"r3"}),
    );
    let sent = h.sent.len();
    h.input(Input::Unsubscribe(3));
    assert_eq!(h.sent.len(), sent);
}

impl Harness {
    fn subscribe_with_token(&mut self, id: SubId, run: &str) {
        self.input(Input::Subscribe {
            id,
            run,
            since: None,
            wants_state: true,
            own_token: true,
        });
    }

    /// Answers the last request to app subscription `sub`'s own provider.
    fn give_run_token(&mut self, sub: SubId, token: &str) {
        let req = self
            .token_asks
            .iter()
            .rev()
            .find(|a| a.3 == Some(sub))
            .expect("its provider was asked")
            .0;
        self.answer(req, Ok(token));
    }

    fn last_ask(&self) -> (TokenReason, Vec<String>, Option<SubId>) {
        let (_, reason, runs, sub) = self.token_asks.last().expect("a token was asked for");
        (*reason, runs.clone(), *sub)
    }

    fn subscribes(&self) -> Vec<(String, Option<String>)> {
        self.sent
            .iter()
            .filter_map(|f| match f {
                ClientFrame::Subscribe { run, token, .. } => Some((run.clone(), token.clone())),
                _ => None,
            })
            .collect()
    }

    fn forbidden(&mut self, run: &str) {
        self.frame(json!({"type":"unsubscribed","run":run,"reason":"forbidden"}));
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn the_token_provider_is_told_the_runs_and_why() {
    let mut h = Harness::new(ws_cfg());
    h.subscribe(1, "r1");
    assert_eq!(h.last_ask(), (TokenReason::Connect, strings(&["r1"]), None));
    h.connect_ws();
    h.subscribe(2, "r2");
    h.fire(Timer::Refresh);
    assert_eq!(
        h.last_ask(),
        (TokenReason::Refresh, strings(&["r1", "r2"]), None)
    );
    h.give_token("t2");
    // The token is refused at the next connection: the fresh one is asked for as such.
    h.closed(4002);
    h.fire(Timer::Backoff);
    assert_eq!(
        h.last_ask(),
        (TokenReason::Refused, strings(&["r1", "r2"]), None)
    );
}

#[test]
fn a_subscription_with_its_own_token_sends_it_and_asks_again_once_when_refused() {
    let mut h = Harness::new(ws_cfg());
    h.subscribe_with_token(1, "own");
    h.subscribe(2, "shared");
    // The connection's token covers the runs without a token of their own.
    assert_eq!(h.last_ask(), (TokenReason::Connect, Vec::new(), None));
    h.connect_ws();
    assert_eq!(h.subscribes(), [("shared".into(), None)]);
    assert_eq!(
        h.last_ask(),
        (TokenReason::Connect, strings(&["own"]), Some(1))
    );
    h.give_run_token(1, "own-1");
    assert_eq!(
        h.subscribes()[1..],
        [("own".to_owned(), Some("own-1".to_owned()))]
    );
    // Refused (the token expired, say): one fresh token, one more try.
    h.forbidden("own");
    assert!(h.ends.is_empty());
    assert_eq!(
        h.last_ask(),
        (TokenReason::Refused, strings(&["own"]), Some(1))
    );
    h.give_run_token(1, "own-2");
    assert_eq!(
        h.subscribes()[2..],
        [("own".to_owned(), Some("own-2".to_owned()))]
    );
    h.subscribed("own", 0, "e1");
    // Accepted since: a later refusal gets its retry again.
    h.forbidden("own");
    h.give_run_token(1, "own-3");
    assert_eq!(h.subscribes().len(), 4);
    // Refused twice in a row: the subscription ends, the other one goes on.
    h.forbidden("own");
    assert_eq!(h.ends, [(1, EndReason::Forbidden)]);
    assert_eq!(h.token_asks.len(), 4, "no more asking");
    // A reconnect resubscribes with the cached token, without asking the provider again.
    h.subscribe_with_token(3, "own2");
    h.give_run_token(3, "x");
    h.closed(1006);
    let asks = h.token_asks.len();
    h.fire(Timer::Backoff);
    h.connect_ws();
    assert_eq!(h.token_asks.len(), asks + 1, "only the connection's token");
    assert!(h.subscribes().ends_with(&[
        ("shared".to_owned(), None),
        ("own2".to_owned(), Some("x".to_owned()))
    ]));
}

#[test]
fn a_run_refused_on_the_connection_token_gets_a_fresh_one_in_place() {
    let mut h = Harness::new(ws_cfg());
    h.subscribe(1, "r1");
    h.connect_ws();
    h.subscribed("r1", 0, "e1");
    h.subscribe(2, "r2");
    h.forbidden("r2");
    assert!(h.ends.is_empty());
    assert_eq!(
        h.last_ask(),
        (TokenReason::Refused, strings(&["r1", "r2"]), None)
    );
    let sent = h.sent.len();
    h.give_token("wider");
    assert_eq!(
        h.sent[sent..],
        [
            ClientFrame::Auth {
                token: "wider".into(),
                batch: false
            },
            ClientFrame::Subscribe {
                run: "r2".into(),
                since: None,
                epoch: None,
                token: None
            }
        ],
        "the new token first, then the subscription again, on the same connection"
    );
    h.forbidden("r2");
    assert_eq!(h.ends, [(2, EndReason::Forbidden)]);
    assert_eq!(h.machine.state(), ConnState::Open);
    assert_eq!(h.connects.len(), 1);

    // A fixed token cannot get any fresher: refused is final at once.
    let mut h = Harness::new(Config {
        static_token: true,
        ..ws_cfg()
    });
    h.subscribe(1, "r1");
    h.connect_ws();
    h.forbidden("r1");
    assert_eq!(h.ends, [(1, EndReason::Forbidden)]);
}

#[test]
fn a_failing_provider_of_a_refused_run_ends_it() {
    let mut h = Harness::new(ws_cfg());
    h.subscribe(1, "r1");
    h.connect_ws();
    h.forbidden("r1");
    let req = h.token_req.take().unwrap();
    h.provider_fails(req);
    assert_eq!(h.ends, [(1, EndReason::Forbidden)]);
    assert_eq!(h.machine.state(), ConnState::Open);
}

#[test]
fn frames_of_a_newer_relay_are_accepted() {
    let mut h = Harness::new(ws_cfg());
    h.subscribe(1, "r1");
    h.subscribe(2, "r2");
    h.connect_ws();
    h.subscribed("r1", 0, "e1");
    h.subscribed("r2", 0, "e1");
    // A reason this client does not know ends the subscription, and the app is told it.
    h.frame(json!({"type":"unsubscribed","run":"r1","reason":"archived"}));
    assert_eq!(h.other_ends, [(1, "archived".to_owned())]);
    // An error code it does not know is reported as it came; a frame type it does not know is
    // ignored.
    h.frame(json!({"type":"error","code":"quota_exceeded","message":"m","run":"r2"}));
    h.frame(json!({"type":"presence","run":"r2","who":[]}));
    assert_eq!(h.errors.len(), 1);
    assert_eq!(
        (h.errors[0].code.as_str(), h.errors[0].run.as_deref()),
        ("quota_exceeded", Some("r2"))
    );
    h.log("r2", 1);
    assert_eq!(h.seqs(2), [1]);
    assert!(h.ends.is_empty());
    assert_eq!(h.machine.state(), ConnState::Open);
}

#[test]
fn going_offline_marks_the_connection_reconnecting_at_once() {
    let mut h = Harness::new(ws_cfg());
    h.subscribe(1, "r1");
    h.connect_ws();
    h.input(Input::Offline);
    assert_eq!(h.machine.state(), ConnState::Reconnecting);
    assert_eq!(h.states.last().unwrap().2, "offline");
    assert!(h.connected.is_none());
    assert!(h.timers.contains_key(&Timer::Backoff));
    // Back online: straight to a new attempt.
    h.input(Input::Online);
    assert!(!h.timers.contains_key(&Timer::Backoff));
    h.connect_ws();
    assert_eq!(h.machine.state(), ConnState::Open);
}

/// Each close code of the protocol's table (the one `docs/protocol.md` prints) leads to its
/// reconnect policy: `Never` stops at once, `WithFreshToken` reconnects at once with a fresh token
/// and stops if that one is refused too, `Immediately` reconnects within the shortest delay every
/// time, `Backoff` waits longer and longer.
#[test]
fn every_close_code_of_the_table_follows_its_policy() {
    let min = 200;
    for code in CloseCode::ALL {
        let mut h = Harness::new(Config {
            backoff: Backoff::new(min, 60_000),
            ..ws_cfg()
        });
        h.subscribe(1, "r1");
        h.connect_ws();
        h.closed(code.code());
        let what = format!("{} ({:?})", code.code(), code.reconnect());
        match code.reconnect() {
            Reconnect::Never => {
                assert_eq!(h.machine.state(), ConnState::Closed, "{what}");
                assert!(!h.timers.contains_key(&Timer::Backoff), "{what}");
                let forbidden = code == CloseCode::Forbidden;
                assert_eq!(h.ends.len(), usize::from(forbidden), "{what}");
            }
            Reconnect::WithFreshToken => {
                assert_eq!(h.machine.state(), ConnState::Reconnecting, "{what}");
                assert_eq!(h.fire(Timer::Backoff), 0.0, "{what}");
                h.give_token("fresh");
                h.input(Input::Opened);
                h.closed(code.code());
                assert_eq!(h.machine.state(), ConnState::Closed, "{what}");
                assert_eq!(h.ends, [(1, EndReason::Forbidden)], "{what}");
            }
            Reconnect::Immediately | Reconnect::Backoff => {
                let mut longest = 0.0_f64;
                for _ in 0..8 {
                    assert_eq!(h.machine.state(), ConnState::Reconnecting, "{what}");
                    longest = longest.max(h.fire(Timer::Backoff));
                    h.give_token("tok");
                    h.input(Input::Opened);
                    h.closed(code.code());
                }
                let immediately = code.reconnect() == Reconnect::Immediately;
                assert_eq!(
                    longest <= f64::from(min),
                    immediately,
                    "{what}: {longest} ms"
                );
                assert!(h.ends.is_empty(), "{what}");
            }
        }
    }
}

impl Harness {
    /// `subscribed` for a run with its own token, which expires `expires_in_s` from now.
    fn subscribed_until(&mut self, run: &str, seq: u64, epoch: &str, expires_in_s: u64) {
        let expires_at = (self.now / 1000.0) as u64 + expires_in_s;
        let state = RunState {
            seq,
            ..RunState::default()
        };
        self.frame(json!({"type":"subscribed","run":run,"seq":seq,"state":state,"epoch":epoch,"expires_at":expires_at}));
    }

    fn last_subscribe_token(&self) -> Option<String> {
        self.subscribes()
            .last()
            .expect("a subscribe was sent")
            .1
            .clone()
    }

    /// A client with one run, `own`, subscribed with its own token `own-1` that expires in 100 s.
    fn with_own_run() -> Self {
        let mut h = Harness::new(ws_cfg());
        h.subscribe_with_token(1, "own");
        h.connect_ws();
        h.give_run_token(1, "own-1");
        h.subscribed_until("own", 0, "e1", 100);
        h
    }
}

#[test]
fn a_run_token_is_refreshed_before_it_expires_and_the_run_resumes_from_its_last_seq() {
    let mut h = Harness::with_own_run();
    h.log("own", 1);
    h.log("own", 2);
    // After 80 % of the token's life its provider is asked for a fresh one.
    assert_eq!(h.timers.get(&Timer::RunRefresh), Some(&(h.now + 80_000.0)));
    let waited = h.fire(Timer::RunRefresh);
    assert_eq!(waited, 80_000.0);
    assert_eq!(
        h.last_ask(),
        (TokenReason::Refresh, strings(&["own"]), Some(1))
    );
    // Events go on meanwhile.
    h.log("own", 3);
    h.give_run_token(1, "own-2");
    assert_eq!(
        h.last_subscribe(),
        ("own".into(), Some(3), Some("e1".into()))
    );
    assert_eq!(h.last_subscribe_token().as_deref(), Some("own-2"));
    assert!(
        !h.timers.contains_key(&Timer::RunRefresh),
        "until the answer"
    );
    // Still live from the old subscription until the relay answers; then its replay overlaps.
    h.log("own", 4);
    h.subscribed_until("own", 4, "e1", 100);
    h.log("own", 3);
    h.log("own", 4);
    h.log("own", 5);
    assert_eq!(h.seqs(1), [1, 2, 3, 4, 5], "every seq once");
    assert!(h.ends.is_empty());
    assert!(h.errors.is_empty(), "{:?}", h.errors);
    assert_eq!(h.timers.get(&Timer::RunRefresh), Some(&(h.now + 80_000.0)));
    assert_eq!(h.machine.state(), ConnState::Open);
    assert_eq!(h.connects.len(), 1, "on the same connection");
}

#[test]
fn a_failed_refresh_is_tried_again_while_the_token_holds() {
    let mut h = Harness::with_own_run();
    h.fire(Timer::RunRefresh);
    let req = h.token_asks.last().unwrap().0;
    h.provider_fails(req);
    assert!(h.ends.is_empty());
    assert_eq!(h.timers.get(&Timer::RunRefresh), Some(&(h.now + 5_000.0)));
    h.fire(Timer::RunRefresh);
    assert_eq!(
        h.last_ask(),
        (TokenReason::Refresh, strings(&["own"]), Some(1))
    );
}

#[test]
fn an_expired_run_token_is_replaced_at_once_and_the_run_resumes() {
    let mut h = Harness::with_own_run();
    h.log("own", 1);
    h.frame(json!({"type":"unsubscribed","run":"own","reason":"token_expired"}));
    assert!(h.ends.is_empty(), "not the end of the subscription");
    assert!(!h.timers.contains_key(&Timer::RunRefresh));
    assert_eq!(
        h.last_ask(),
        (TokenReason::Refresh, strings(&["own"]), Some(1))
    );
    h.give_run_token(1, "own-2");
    assert_eq!(
        h.last_subscribe(),
        ("own".into(), Some(1), Some("e1".into()))
    );
    assert_eq!(h.last_subscribe_token().as_deref(), Some("own-2"));
    h.subscribed_until("own", 2, "e1", 100);
    h.log("own", 2);
    assert_eq!(h.seqs(1), [1, 2]);

    // Expired again while a refresh was already asked for: that answer serves.
    h.fire(Timer::RunRefresh);
    let asks = h.token_asks.len();
    h.frame(json!({"type":"unsubscribed","run":"own","reason":"token_expired"}));
    assert_eq!(h.token_asks.len(), asks, "no second request");
    h.give_run_token(1, "own-3");
    assert_eq!(
        h.last_subscribe(),
        ("own".into(), Some(2), Some("e1".into()))
    );
    h.subscribed_until("own", 2, "e1", 100);

    // Expired, and the provider cannot help: the subscription ends with the relay's reason.
    h.frame(json!({"type":"unsubscribed","run":"own","reason":"token_expired"}));
    let req = h.token_asks.last().unwrap().0;
    h.provider_fails(req);
    assert_eq!(h.ends, [(1, EndReason::TokenExpired)]);
    assert_eq!(h.machine.state(), ConnState::Open);
}

#[test]
fn a_relay_that_does_not_say_when_a_run_token_expires_gets_no_refresh() {
    let mut h = Harness::new(ws_cfg());
    h.subscribe_with_token(1, "own");
    h.connect_ws();
    h.give_run_token(1, "own-1");
    h.subscribed("own", 0, "e1");
    assert!(!h.timers.contains_key(&Timer::RunRefresh));
    // Nor does a run on the connection's token, whatever the frame says.
    let mut h = Harness::new(ws_cfg());
    h.subscribe(1, "r1");
    h.connect_ws();
    h.subscribed_until("r1", 0, "e1", 100);
    assert!(!h.timers.contains_key(&Timer::RunRefresh));
}
