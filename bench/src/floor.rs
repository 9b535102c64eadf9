//! The floor: the least work any relay must do for the fan-out and many-runs scenarios, as a
//! system the tool measures beside the others (`runwire-bench floor` starts it).
//!
//! One thread (a current-thread tokio runtime), the same WebSocket connections and the same
//! publish request as the other systems, and nothing else: no token is checked, nothing is kept
//! for resume, there are no pings or timers, no metrics, no logging. A published event is encoded
//! once into a WebSocket frame, and the frames of one publish request are written to each
//! subscriber of the run with one non-blocking `write()` straight from the publish handler; only
//! what the socket does not take is queued for the connection's task. So per delivery it costs at
//! most one system call plus a look-up of the run's subscribers: what the kernel needs, and what
//! any relay must spend at least.
//!
//! It speaks the `node-ws` peer's protocol (`/ws?token=T`, `{"sub":RUN}`, `{"ok":RUN,"seq":N}`,
//! events as `{"run":RUN,"seq":S,"event":NAME,"ts":MS,"data":{..}}`), so it shares that driver.
//! It does not resume: `since` is ignored, so scenario 4 (storm) does not apply to it.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::process::ExitCode;
use std::rc::Rc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

/// A request head larger than this closes the connection.
const MAX_HEAD: usize = 8 * 1024;
/// A request body or client frame larger than this closes the connection.
const MAX_BODY: usize = 1 << 20;
/// Bytes a subscriber may have queued (what its socket did not take) before it is dropped: the
/// floor's only bound, as every relay needs one.
const MAX_QUEUED: usize = 4 << 20;

/// `runwire-bench floor [--addr ADDR]`: serves until killed, printing `listening on http://ADDR`
/// once it accepts connections.
pub fn main(args: &[String]) -> ExitCode {
    let addr = match args {
        [] => "127.0.0.1:0".to_owned(),
        [flag, addr] if flag == "--addr" => addr.clone(),
        _ => {
            eprintln!("usage: runwire-bench floor [--addr 127.0.0.1:PORT]");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("floor: runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let local = tokio::task::LocalSet::new();
    let served = local.block_on(&rt, async {
        let listener = TcpListener::bind(&addr).await?;
        let addr = listener.local_addr()?;
        println!("listening on http://{addr}");
        use std::io::Write as _;
        io::stdout().flush()?;
        serve(listener, std::future::pending()).await
    });
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("floor: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Accepts connections on `listener` until `shutdown` completes. Must run inside a
/// [`tokio::task::LocalSet`] on a current-thread runtime.
pub async fn serve(listener: TcpListener, shutdown: impl Future<Output = ()>) -> io::Result<()> {
    let floor = Rc::new(Floor::default());
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            () = &mut shutdown => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                // Out of descriptors, say: the connection is refused, the server goes on.
                Err(e) => {
                    eprintln!("floor: accept: {e}");
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let floor = floor.clone();
        tokio::task::spawn_local(async move {
            if let Err(e) = connection(floor, stream).await
                && e.kind() != io::ErrorKind::UnexpectedEof
            {
                eprintln!("floor: connection: {e}");
            }
        });
    }
}

/// Every run's seq and subscribers.
#[derive(Debug, Default)]
struct Floor {
    runs: RefCell<HashMap<String, Run>>,
}

#[derive(Debug, Default)]
struct Run {
    seq: u64,
    subscribers: Vec<Rc<Subscriber>>,
}

/// One WebSocket connection, as the publish path sees it.
#[derive(Debug)]
struct Subscriber {
    stream: TcpStream,
    /// Bytes the socket did not take yet; written by the connection's task.
    queued: RefCell<Vec<u8>>,
    /// Wakes the connection's task when `queued` stops being empty.
    wake: Notify,
    /// Too slow (more than `MAX_QUEUED` queued) or the socket failed.
    dropped: Cell<bool>,
}

impl Subscriber {
    /// Writes `frame` now if nothing is queued before it, and queues what the socket refuses.
    fn send(&self, frame: &[u8]) {
        if self.dropped.get() {
            return;
        }
        let mut queued = self.queued.borrow_mut();
        if queued.is_empty() {
            let rest = match self.stream.try_write(frame) {
                Ok(n) => &frame[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => frame,
                Err(_) => return self.drop_it(),
            };
            if rest.is_empty() {
                return;
            }
            queued.extend_from_slice(rest);
            self.wake.notify_one();
        } else if queued.len() + frame.len() > MAX_QUEUED {
            drop(queued);
            self.drop_it();
        } else {
            queued.extend_from_slice(frame);
        }
    }

    fn drop_it(&self) {
        self.dropped.set(true);
        self.wake.notify_one();
    }

    /// Writes what is queued until the socket would block; frees the buffer once empty.
    fn flush(&self) -> io::Result<()> {
        let mut queued = self.queued.borrow_mut();
        while !queued.is_empty() {
            match self.stream.try_write(&queued) {
                Ok(n) => {
                    queued.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        *queued = Vec::new();
        Ok(())
    }
}

/// Reads a request head; answers publishes and health checks on this connection until it closes,
/// or turns it into a WebSocket.
async fn connection(floor: Rc<Floor>, stream: TcpStream) -> io::Result<()> {
    let mut buf = Vec::new();
    loop {
        let end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            if buf.len() > MAX_HEAD {
                return Err(io::Error::other("request head too large"));
            }
            read_more(&stream, &mut buf).await?;
        };
        let head = std::str::from_utf8(&buf[..end])
            .map_err(|_| io::Error::other("request head is not UTF-8"))?
            .to_owned();
        buf.drain(..end);
        let mut lines = head.split("\r\n");
        let mut request = lines.next().unwrap_or("").split(' ');
        let (method, path) = (request.next().unwrap_or(""), request.next().unwrap_or(""));
        let mut length = 0usize;
        let mut ws_key = None;
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = value
                    .parse()
                    .map_err(|_| io::Error::other("bad content-length"))?;
            } else if name.eq_ignore_ascii_case("sec-websocket-key") {
                ws_key = Some(value.to_owned());
            }
        }
        if method == "GET" && path.starts_with("/ws") {
            let Some(key) = ws_key else {
                return Err(io::Error::other("GET /ws without sec-websocket-key"));
            };
            let answer = format!(
                "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\
                 sec-websocket-accept: {}\r\n\r\n",
                derive_accept_key(key.as_bytes())
            );
            write_all(&stream, answer.as_bytes()).await?;
            return websocket(floor, stream, buf).await;
        }
        if length > MAX_BODY {
            return Err(io::Error::other("request body too large"));
        }
        while buf.len() < length {
            read_more(&stream, &mut buf).await?;
        }
        let body: Vec<u8> = buf.drain(..length).collect();
        let (status, answer) = match (method, path.strip_prefix("/v1/runs/")) {
            ("POST", Some(rest)) => match rest.strip_suffix("/events") {
                Some(run) if !run.is_empty() && !run.contains('/') => floor.publish(run, &body),
                _ => ("404 Not Found", r#"{"error":"not found"}"#.to_owned()),
            },
            ("GET", _) if path == "/health" => ("200 OK", r#"{"status":"ok"}"#.to_owned()),
            _ => ("404 Not Found", r#"{"error":"not found"}"#.to_owned()),
        };
        let response = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{answer}",
            answer.len()
        );
        write_all(&stream, response.as_bytes()).await?;
    }
}

impl Floor {
    /// Numbers the events in `body` (one or an array of `{"event":NAME,"data":{..}}`), encodes
    /// each once and writes it to the run's subscribers.
    fn publish(&self, run: &str, body: &[u8]) -> (&'static str, String) {
        let events = match serde_json::from_slice::<serde_json::Value>(body) {
            Ok(serde_json::Value::Array(events)) => events,
            Ok(one) => vec![one],
            Err(_) => return ("400 Bad Request", r#"{"error":"invalid JSON"}"#.to_owned()),
        };
        if events.iter().any(|e| !e["event"].is_string()) {
            return (
                "400 Bad Request",
                r#"{"error":"invalid events"}"#.to_owned(),
            );
        }
        let ts = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let run_json = serde_json::Value::from(run).to_string();
        let mut runs = self.runs.borrow_mut();
        let state = runs.entry(run.to_owned()).or_default();
        let first = state.seq + 1;
        // The request's frames, back to back: every subscriber of the run gets all of them in one
        // write, as a relay that gathers a burst does.
        let mut frames = Vec::new();
        for event in &events {
            state.seq += 1;
            let data = match &event["data"] {
                serde_json::Value::Null => "{}".to_owned(),
                data => data.to_string(),
            };
            let text = format!(
                r#"{{"run":{run_json},"seq":{},"event":{},"ts":{ts},"data":{data}}}"#,
                state.seq, event["event"]
            );
            push_text_frame(&mut frames, text.as_bytes());
        }
        state.subscribers.retain(|s| !s.dropped.get());
        for subscriber in &state.subscribers {
            subscriber.send(&frames);
        }
        (
            "200 OK",
            format!(
                r#"{{"run":{run_json},"first":{first},"last":{}}}"#,
                state.seq
            ),
        )
    }

    /// Adds `subscriber` to `run` and answers with the run's head.
    fn subscribe(&self, run: &str, subscriber: &Rc<Subscriber>) {
        let mut runs = self.runs.borrow_mut();
        let state = runs.entry(run.to_owned()).or_default();
        if !state.subscribers.iter().any(|s| Rc::ptr_eq(s, subscriber)) {
            state.subscribers.push(subscriber.clone());
        }
        let ok = format!(
            r#"{{"ok":{},"seq":{}}}"#,
            serde_json::Value::from(run),
            state.seq
        );
        subscriber.send(&text_frame(ok.as_bytes()));
    }

    fn unsubscribe_all(&self, subscriber: &Rc<Subscriber>, runs: &[String]) {
        let mut all = self.runs.borrow_mut();
        for run in runs {
            if let Some(state) = all.get_mut(run) {
                state.subscribers.retain(|s| !Rc::ptr_eq(s, subscriber));
            }
        }
    }
}

/// Serves one WebSocket connection: subscriptions in, queued frames out.
async fn websocket(floor: Rc<Floor>, stream: TcpStream, mut buf: Vec<u8>) -> io::Result<()> {
    let me = Rc::new(Subscriber {
        stream,
        queued: RefCell::new(Vec::new()),
        wake: Notify::new(),
        dropped: Cell::new(false),
    });
    let mut runs: Vec<String> = Vec::new();
    let outcome = async {
        loop {
            while let Some((opcode, payload, used)) = client_frame(&buf)? {
                buf.drain(..used);
                match opcode {
                    // Text: `{"sub":RUN}`.
                    1 => {
                        let frame: serde_json::Value = serde_json::from_slice(&payload)
                            .map_err(|_| io::Error::other("bad frame"))?;
                        let Some(run) = frame["sub"].as_str() else {
                            return Err(io::Error::other("bad frame"));
                        };
                        floor.subscribe(run, &me);
                        if !runs.iter().any(|r| r == run) {
                            runs.push(run.to_owned());
                        }
                    }
                    // Close: answer it and end.
                    8 => {
                        me.send(&[0x88, 0]);
                        let _ = me.flush();
                        return Ok(());
                    }
                    // Ping: pong.
                    9 => {
                        let mut pong = vec![0x8A, payload.len() as u8];
                        pong.extend_from_slice(&payload);
                        me.send(&pong);
                    }
                    10 => {}
                    _ => return Err(io::Error::other("unexpected frame")),
                }
            }
            if buf.capacity() > 4096 && buf.is_empty() {
                buf = Vec::new();
            }
            if me.dropped.get() {
                return Err(io::Error::other("subscriber dropped"));
            }
            let queued = !me.queued.borrow().is_empty();
            tokio::select! {
                ready = me.stream.readable() => {
                    ready?;
                    read_more(&me.stream, &mut buf).await?;
                }
                ready = me.stream.writable(), if queued => {
                    ready?;
                    me.flush()?;
                }
                () = me.wake.notified(), if !queued => {}
            }
        }
    }
    .await;
    floor.unsubscribe_all(&me, &runs);
    outcome
}

/// The first complete frame a client sent in `buf`: its opcode, unmasked payload and length.
fn client_frame(buf: &[u8]) -> io::Result<Option<(u8, Vec<u8>, usize)>> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let (b0, b1) = (buf[0], buf[1]);
    if b0 & 0x80 == 0 || b1 & 0x80 == 0 {
        return Err(io::Error::other("fragmented or unmasked client frame"));
    }
    let (len, mut at) = match b1 & 0x7F {
        126 if buf.len() >= 4 => (usize::from(u16::from_be_bytes([buf[2], buf[3]])), 4),
        127 if buf.len() >= 10 => {
            let n = u64::from_be_bytes(buf[2..10].try_into().expect("8 bytes"));
            (usize::try_from(n).unwrap_or(usize::MAX), 10)
        }
        126 | 127 => return Ok(None),
        n => (usize::from(n), 2),
    };
    if len > MAX_BODY {
        return Err(io::Error::other("client frame too large"));
    }
    if buf.len() < at + 4 + len {
        return Ok(None);
    }
    let mask = [buf[at], buf[at + 1], buf[at + 2], buf[at + 3]];
    at += 4;
    let payload = buf[at..at + len]
        .iter()
        .enumerate()
        .map(|(i, b)| b ^ mask[i % 4])
        .collect();
    Ok(Some((b0 & 0x0F, payload, at + len)))
}

/// `payload` as an unmasked, final text frame.
fn text_frame(payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(payload.len() + 10);
    push_text_frame(&mut frame, payload);
    frame
}

/// Appends `payload` to `frame` as an unmasked, final text frame.
fn push_text_frame(frame: &mut Vec<u8>, payload: &[u8]) {
    frame.push(0x81);
    match payload.len() {
        n if n < 126 => frame.push(n as u8),
        n if n <= 0xFFFF => {
            frame.push(126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(payload);
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Appends what the socket has to `buf`; fails at end of stream.
async fn read_more(stream: &TcpStream, buf: &mut Vec<u8>) -> io::Result<()> {
    loop {
        stream.readable().await?;
        let mut chunk = [0u8; 2048];
        match stream.try_read(&mut chunk) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                return Ok(());
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
}

async fn write_all(stream: &TcpStream, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        stream.writable().await?;
        match stream.try_write(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    async fn next<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>) -> String
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => t.to_string(),
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    #[test]
    fn frames() {
        assert_eq!(text_frame(b"hi"), vec![0x81, 2, b'h', b'i']);
        let long = text_frame(&[b'x'; 300]);
        assert_eq!(&long[..4], &[0x81, 126, 1, 44]);
        assert_eq!(long.len(), 304);
        // "Hi" masked with 1,2,3,4.
        let masked = [0x81, 0x82, 1, 2, 3, 4, b'H' ^ 1, b'i' ^ 2, 0x89];
        assert_eq!(client_frame(&masked).unwrap(), Some((1, b"Hi".to_vec(), 8)));
        assert_eq!(client_frame(&masked[..7]).unwrap(), None);
        assert!(client_frame(&[0x81, 0x02, b'H', b'i']).is_err());
    }

    /// A subscriber gets its head, then every published event in order, as the node-ws driver
    /// reads them; a second publish continues the seqs.
    #[test]
    fn delivers_published_events_to_subscribers() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let local = tokio::task::LocalSet::new();
        local.block_on(&rt, async {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let server = tokio::task::spawn_local(serve(listener, async {
                let _ = stopped.await;
            }));
            let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws?token=T"))
                .await
                .unwrap();
            ws.send(Message::text(r#"{"sub":"r1"}"#)).await.unwrap();
            assert_eq!(next(&mut ws).await, r#"{"ok":"r1","seq":0}"#);
            let publisher = crate::publish::Publisher::new(addr, "unused-by-the-floor");
            publisher.ticks("r1", &[5, 6]).await.unwrap();
            publisher.ticks("r2", &[9]).await.unwrap();
            publisher.ticks("r1", &[7]).await.unwrap();
            let sub = crate::driver::Subscription {
                run: "r1".into(),
                since: None,
                token: "T".into(),
            };
            for (seq, t) in [(1, 5), (2, 6), (3, 7)] {
                let text = next(&mut ws).await;
                assert_eq!(
                    crate::driver::classify(crate::driver::System::Floor, &sub, &text),
                    crate::driver::Incoming::Event { seq, t_ns: Some(t) },
                    "{text}"
                );
            }
            ws.close(None).await.unwrap();
            stop.send(()).unwrap();
            server.await.unwrap().unwrap();
        });
    }
}
