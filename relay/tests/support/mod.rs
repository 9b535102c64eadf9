//! Test support: a relay on 127.0.0.1:0, tokens, and WebSocket, SSE and HTTP clients.
#![allow(dead_code)] // each test file uses a different part

pub mod tls;

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::ws::Message as WsMessage;
use futures_util::{SinkExt, StreamExt};
use runwire_protocol::token::{Claims, Scope, sign};
use runwire_relay::auth::Clock;
use runwire_relay::{AppState, Config};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const SECRET: &str = "test-secret-0123456789abcdef-0123456789";
/// How long a test waits for something that should happen promptly.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// What [`eventually`] waits for: a condition that holds (`true`), or a value that has come
/// (`Some`).
pub trait Outcome {
    fn holds(&self) -> bool;
}

impl Outcome for bool {
    fn holds(&self) -> bool {
        *self
    }
}

impl<T> Outcome for Option<T> {
    fn holds(&self) -> bool {
        self.is_some()
    }
}

/// Checks `condition` every 10 ms until it holds or `deadline` has passed, and returns its last
/// outcome: `true` or `Some` if it came in time. For what the relay does on its own time (a task
/// ending, a slot freed) where there is nothing to await.
pub async fn eventually<O, F, Fut>(mut condition: F, deadline: Duration) -> O
where
    O: Outcome,
    F: FnMut() -> Fut,
    Fut: Future<Output = O>,
{
    let end = tokio::time::Instant::now() + deadline;
    loop {
        let outcome = condition().await;
        if outcome.holds() || tokio::time::Instant::now() >= end {
            return outcome;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// What [`channel_sink`] writes to.
pub type ChannelSink =
    std::pin::Pin<Box<dyn futures_util::Sink<WsMessage, Error = axum::Error> + Send>>;

/// The relay's half of a WebSocket made of a channel, for driving a connection with paused time:
/// a sink whose messages go into a channel of `capacity`, and the channel's receiving end. A full
/// channel is a client that does not read: the relay's write waits.
pub fn channel_sink(capacity: usize) -> (ChannelSink, tokio::sync::mpsc::Receiver<WsMessage>) {
    let (tx, rx) = tokio::sync::mpsc::channel::<WsMessage>(capacity);
    let sink = futures_util::sink::unfold(tx, |tx, msg: WsMessage| async move {
        tx.send(msg).await.map_err(axum::Error::new)?;
        Ok::<_, axum::Error>(tx)
    });
    (Box::pin(sink), rx)
}

/// What the relay reads from a [`ChannelSocket`].
pub type ChannelStream = tokio_stream::wrappers::ReceiverStream<Result<WsMessage, axum::Error>>;

/// The client's end of a WebSocket made of two channels, for driving a connection with paused
/// time: what it sends goes to the relay's stream, what the relay writes to its sink comes out of
/// `next`, stamped with how long after the socket's opening it came.
pub struct ChannelSocket {
    pub to_relay: tokio::sync::mpsc::Sender<Result<WsMessage, axum::Error>>,
    from_relay: tokio::sync::mpsc::Receiver<WsMessage>,
    pub started: tokio::time::Instant,
}

impl ChannelSocket {
    /// A socket with room for `to_relay` messages on their way to the relay and `from_relay` on
    /// their way back, and the relay's end of it.
    pub fn open(to_relay: usize, from_relay: usize) -> (Self, ChannelSink, ChannelStream) {
        let (tx, rx) = tokio::sync::mpsc::channel(to_relay);
        let (sink, from_relay) = channel_sink(from_relay);
        let socket = Self {
            to_relay: tx,
            from_relay,
            started: tokio::time::Instant::now(),
        };
        (
            socket,
            sink,
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )
    }

    /// The next message (`None`: the relay dropped the socket) and when it came.
    pub async fn next(&mut self) -> (Option<WsMessage>, Duration) {
        let m = self.from_relay.recv().await;
        (m, self.started.elapsed())
    }

    /// The next message, which must be a text frame, parsed.
    pub async fn frame(&mut self) -> Value {
        match self.next().await.0 {
            Some(WsMessage::Text(t)) => serde_json::from_str(t.as_str()).unwrap(),
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    pub async fn send(&self, v: Value) {
        self.to_relay
            .send(Ok(WsMessage::Text(v.to_string().into())))
            .await
            .unwrap();
    }

    pub async fn pong(&self) {
        self.to_relay
            .send(Ok(WsMessage::Pong(Default::default())))
            .await
            .unwrap();
    }
}

/// A connection under test, whose socket is a [`ChannelSocket`], and the relay state it runs in.
/// Each test file gives it the constructor and the checks it needs.
pub struct Harness {
    pub socket: ChannelSocket,
    pub state: AppState,
}

impl std::ops::Deref for Harness {
    type Target = ChannelSocket;
    fn deref(&self) -> &ChannelSocket {
        &self.socket
    }
}

impl std::ops::DerefMut for Harness {
    fn deref_mut(&mut self) -> &mut ChannelSocket {
        &mut self.socket
    }
}

/// `n` log events, `m0` to `m{n-1}`, ready to publish.
pub fn log_events(n: usize) -> Vec<runwire_relay::event::NewEvent> {
    (0..n)
        .map(|i| {
            runwire_relay::event::NewEvent::parse(
                "log",
                json!({"level":"info","message":format!("m{i}")}),
            )
            .unwrap()
        })
        .collect()
}

/// Whether `GET url` answers 200 (a relay's `/ready`, say).
pub async fn answers_200(url: &str) -> bool {
    reqwest::get(url).await.is_ok_and(|r| r.status() == 200)
}

/// The address that a `runwire serve` child process announces on its first line of output.
pub async fn announced_addr(child: &mut tokio::process::Child) -> String {
    use tokio::io::AsyncBufReadExt as _;
    let stdout = child.stdout.take().expect("the child's stdout is piped");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let line = tokio::time::timeout(PATIENCE, lines.next_line())
        .await
        .expect("the relay prints its address")
        .unwrap()
        .expect("a first line");
    line.strip_prefix("listening on http://")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned()
}

/// The seqs of a publish's answer.
pub fn published_seqs(body: &Value) -> Vec<u64> {
    body["seqs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_u64().unwrap())
        .collect()
}

pub fn config() -> Config {
    let mut c = Config::with_secret(SECRET);
    c.addr = "127.0.0.1:0".parse().unwrap();
    c
}

/// A relay serving on a loopback port until dropped.
pub struct Relay {
    pub addr: SocketAddr,
    pub state: AppState,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl Relay {
    pub async fn start() -> Self {
        Self::with(config()).await
    }

    /// A relay with the test config, and a `/v1/ws` client authenticated with a subscribe token
    /// for `run`.
    pub async fn with_client(run: &str) -> (Self, Client) {
        let relay = Self::start().await;
        let client = Client::authed(&relay, &subscribe_token(run)).await;
        (relay, client)
    }

    /// A relay with the test config changed by `tweak`.
    pub async fn tweaked(tweak: impl FnOnce(&mut Config)) -> Self {
        let mut config = config();
        tweak(&mut config);
        Self::with(config).await
    }

    pub async fn with(config: Config) -> Self {
        let state = AppState::new(config, Clock::System).expect("valid config");
        Self::with_state(state).await
    }

    pub async fn with_state(state: AppState) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(runwire_relay::serve(listener, state.clone(), async {
            let _ = stopped.await;
        }));
        Self {
            addr,
            state,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    /// Triggers shutdown and waits for `serve` to return.
    pub async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        let task = self.task.take().unwrap();
        tokio::time::timeout(PATIENCE, task)
            .await
            .expect("relay drained in time")
            .unwrap()
            .unwrap();
    }

    /// Triggers shutdown without waiting.
    pub fn begin_shutdown(&mut self) -> JoinHandle<std::io::Result<()>> {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap()
    }

    pub async fn publish(&self, run: &str, events: Value) -> reqwest::Response {
        reqwest::Client::new()
            .post(self.url(&format!("/v1/runs/{run}/events")))
            .bearer_auth(publish_token(run))
            .json(&events)
            .send()
            .await
            .unwrap()
    }

    /// Publishes and returns the seqs assigned.
    pub async fn publish_ok(&self, run: &str, events: Value) -> Vec<u64> {
        let resp = self.publish(run, events).await;
        assert_eq!(
            resp.status(),
            200,
            "publish failed: {:?}",
            resp.text().await
        );
        published_seqs(&resp.json().await.unwrap())
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

pub fn now() -> u64 {
    Clock::System.unix_secs()
}

pub fn token_with(claims: Claims) -> String {
    sign(&claims, SECRET.as_bytes())
}

pub fn claims(run: &str, scope: Scope) -> Claims {
    Claims {
        exp: now() + 300,
        iat: Some(now()),
        run: Some(run.into()),
        scope,
        ..Claims::default()
    }
}

pub fn subscribe_token(run: &str) -> String {
    token_with(claims(run, Scope::Subscribe))
}

/// A subscribe token for `run` whose `runs` claim covers `runs` (`"*"`: every run).
pub fn runs_token(run: &str, runs: &[&str]) -> String {
    token_with(Claims {
        runs: Some(runs.iter().map(|r| r.to_string()).collect()),
        ..claims(run, Scope::Subscribe)
    })
}

pub fn publish_token(run: &str) -> String {
    token_with(claims(run, Scope::Publish))
}

/// The `runwire` binary, with none of its settings taken from the environment of the tests.
pub fn runwire() -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_runwire"));
    cmd.env_remove("RUNWIRE_SECRET")
        .env_remove("RUNWIRE_TOKEN")
        .env_remove("RUNWIRE_URL");
    cmd.kill_on_drop(true);
    cmd
}

/// `runwire publish` of one event to the relay at `url`, signed with [`SECRET`].
pub async fn cli_publish(url: &str, run: &str, event: &str, data: &str) -> std::process::Output {
    runwire()
        .args(["publish", "--run", run, "--event", event, "--data", data])
        .env("RUNWIRE_URL", url)
        .env("RUNWIRE_SECRET", SECRET)
        .output()
        .await
        .unwrap()
}

/// The body of `GET url`.
pub async fn get_text(url: &str) -> String {
    reqwest::get(url).await.unwrap().text().await.unwrap()
}

/// The body of `GET url`, parsed as JSON.
pub async fn get_json<T: serde::de::DeserializeOwned>(url: &str) -> T {
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

/// The body of `GET url` with the bearer `token`, parsed as JSON.
pub async fn get_json_with<T: serde::de::DeserializeOwned>(url: &str, token: &str) -> T {
    get_with(url, token).await.json().await.unwrap()
}

/// `GET url` with the bearer `token`.
pub async fn get_with(url: &str, token: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

/// The value of the sample `name` in a `/metrics` text.
pub fn sample(text: &str, name: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
        .to_owned()
}

pub fn log(i: u64) -> Value {
    json!({"event":"log","data":{"level":"info","message":format!("line {i}")}})
}

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A WebSocket test client.
pub struct Client {
    pub ws: Ws,
}

/// What a client read.
#[derive(Debug)]
pub enum Read {
    Frame(Value),
    Closed(Option<u16>),
}

impl Client {
    pub async fn connect(url: &str) -> Self {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("connect");
        Self { ws }
    }

    /// Connects to `/v1/ws`, authenticates and checks the welcome.
    pub async fn authed(relay: &Relay, token: &str) -> Self {
        let mut c = Self::connect(&relay.ws_url("/v1/ws")).await;
        c.send(json!({"type":"auth","token":token})).await;
        let welcome = c.frame().await;
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        c
    }

    pub async fn send(&mut self, v: Value) {
        self.ws.send(Message::text(v.to_string())).await.unwrap();
    }

    pub async fn send_raw(&mut self, m: Message) {
        self.ws.send(m).await.unwrap();
    }

    /// The next text frame or the close; pings are answered by tungstenite and skipped here.
    pub async fn read(&mut self) -> Read {
        loop {
            let msg = tokio::time::timeout(PATIENCE, self.ws.next())
                .await
                .expect("a frame in time");
            match msg {
                Some(Ok(Message::Text(t))) => {
                    return Read::Frame(serde_json::from_str(&t).unwrap());
                }
                Some(Ok(Message::Close(frame))) => {
                    return Read::Closed(frame.map(|f: CloseFrame| u16::from(f.code)));
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Read::Closed(None),
            }
        }
    }

    pub async fn frame(&mut self) -> Value {
        match self.read().await {
            Read::Frame(v) => v,
            Read::Closed(code) => panic!("closed ({code:?}) while a frame was expected"),
        }
    }

    /// Subscribes to `run` with a subscribe token of the run's own, next to the connection's.
    pub async fn subscribe_with_own_token(&mut self, run: &str) {
        self.send(json!({"type":"subscribe","run":run,"token":subscribe_token(run)}))
            .await;
        let sub = self.frame().await;
        assert_eq!(sub["type"], "subscribed", "{sub}");
    }

    /// The next frame, which must be an event: its run and seq.
    pub async fn event_at(&mut self) -> (String, u64) {
        let e = self.frame().await;
        let at = (e["run"].as_str(), e["seq"].as_u64());
        match at {
            (Some(run), Some(seq)) if e["type"] == "event" => (run.to_owned(), seq),
            _ => panic!("expected an event, got {e}"),
        }
    }

    /// Reads until the close and returns its code; frames before it are returned too.
    pub async fn closed(&mut self) -> (Option<u16>, Vec<Value>) {
        let mut frames = Vec::new();
        loop {
            match self.read().await {
                Read::Frame(v) => frames.push(v),
                Read::Closed(code) => return (code, frames),
            }
        }
    }

    pub async fn subscribe(&mut self, run: &str, since: Option<u64>) -> Value {
        let mut frame = json!({"type":"subscribe","run":run});
        if let Some(s) = since {
            frame["since"] = json!(s);
        }
        self.send(frame).await;
        self.frame().await
    }

    /// Reads event frames of `run` until `count` arrived; fails on anything unexpected.
    pub async fn events(&mut self, count: usize) -> Vec<Value> {
        let mut out = Vec::with_capacity(count);
        while out.len() < count {
            let f = self.frame().await;
            assert_eq!(f["type"], "event", "expected an event, got {f}");
            out.push(f);
        }
        out
    }
}

pub fn seqs(events: &[Value]) -> Vec<u64> {
    events.iter().map(|e| e["seq"].as_u64().unwrap()).collect()
}

/// A Server-Sent Events reader over a streaming response.
pub struct Sse {
    pub status: u16,
    stream: Option<futures_util::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>>,
    buf: String,
}

/// One SSE message.
#[derive(Debug, Clone, Default)]
pub struct SseMessage {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
    pub comment: bool,
}

impl SseMessage {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap()
    }
}

impl Sse {
    pub async fn open(url: &str, headers: &[(&str, &str)]) -> Self {
        let mut req = reqwest::Client::new().get(url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        Self {
            status,
            stream: Some(resp.bytes_stream().boxed()),
            buf: String::new(),
        }
    }

    /// The next message (comments included), or None at the end of the stream.
    pub async fn next(&mut self) -> Option<SseMessage> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut msg = SseMessage::default();
                for line in block.lines() {
                    if let Some(rest) = line.strip_prefix(':') {
                        let _ = rest;
                        msg.comment = true;
                    } else if let Some(v) = line.strip_prefix("id: ") {
                        msg.id = Some(v.into());
                    } else if let Some(v) = line.strip_prefix("event: ") {
                        msg.event = Some(v.into());
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        msg.data.push_str(v);
                    }
                }
                return Some(msg);
            }
            let stream = self.stream.as_mut()?;
            match tokio::time::timeout(PATIENCE, stream.next())
                .await
                .expect("sse data in time")
            {
                Some(Ok(chunk)) => self.buf.push_str(std::str::from_utf8(&chunk).unwrap()),
                _ => {
                    self.stream = None;
                    return None;
                }
            }
        }
    }

    /// The next message that is not a comment or a `retry:` hint.
    pub async fn message(&mut self) -> Option<SseMessage> {
        loop {
            let m = self.next().await?;
            if !m.comment && (m.event.is_some() || !m.data.is_empty()) {
                return Some(m);
            }
        }
    }
}
