//! A TCP proxy for tests that can cut every connection, silence the open ones for good, stall
//! traffic, refuse new connections, or refuse only WebSocket upgrades, on command from an HTTP
//! control API.
//!
//! - [`Proxy`]: the shared fault switches and counters.
//! - [`serve`]: accepts connections and pumps bytes to the upstream, obeying the switches.
//! - [`control`]: the control API (`POST /cut`, `/hang`, `/stall`, `/unstall`, `/refuse`,
//!   `/accept`, `/refuse-ws`, `/allow-ws`, `/reset`; `GET /stats`). Every response allows any
//!   origin, so browser tests drive it with `fetch`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Longest HTTP request head read when WebSocket upgrades are refused.
const MAX_HEAD: usize = 16 * 1024;

/// The fault switches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    /// Forward nothing in either direction (connections stay open).
    pub stalled: bool,
    /// Close new connections at once.
    pub refuse: bool,
    /// Answer WebSocket upgrade requests with 403; plain HTTP passes.
    pub refuse_ws: bool,
}

/// Shared state of a proxy.
#[derive(Debug)]
pub struct Proxy {
    upstream: SocketAddr,
    faults: watch::Sender<Faults>,
    /// Bumped by `cut`: every connection open at that moment closes.
    cuts: watch::Sender<u64>,
    /// Bumped by `hang`: every connection open at that moment stops forwarding, for good.
    hangs: watch::Sender<u64>,
    accepted: AtomicU64,
    active: AtomicU64,
    refused: AtomicU64,
    ws_refused: AtomicU64,
}

impl Proxy {
    /// A proxy to `upstream` with no fault switched on.
    pub fn new(upstream: SocketAddr) -> Arc<Self> {
        Arc::new(Self {
            upstream,
            faults: watch::Sender::new(Faults::default()),
            cuts: watch::Sender::new(0),
            hangs: watch::Sender::new(0),
            accepted: AtomicU64::new(0),
            active: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            ws_refused: AtomicU64::new(0),
        })
    }

    /// Changes the switches.
    pub fn set(&self, f: impl FnOnce(&mut Faults)) {
        self.faults.send_modify(f);
    }

    /// Closes every open connection; returns how many were open.
    pub fn cut(&self) -> u64 {
        self.cuts.send_modify(|g| *g += 1);
        self.active.load(Ordering::Relaxed)
    }

    /// Every open connection goes silent: it stays open but forwards nothing more in either
    /// direction, as behind a peer or middlebox that died without closing it, until a `cut`.
    /// New connections pass. Returns how many were open.
    pub fn hang(&self) -> u64 {
        self.hangs.send_modify(|g| *g += 1);
        self.active.load(Ordering::Relaxed)
    }

    /// Counters as JSON.
    pub fn stats(&self) -> serde_json::Value {
        serde_json::json!({
            "accepted": self.accepted.load(Ordering::Relaxed),
            "active": self.active.load(Ordering::Relaxed),
            "refused": self.refused.load(Ordering::Relaxed),
            "ws_refused": self.ws_refused.load(Ordering::Relaxed),
        })
    }
}

/// Accepts connections on `listener` forever.
pub async fn serve(listener: TcpListener, proxy: Arc<Proxy>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        proxy.accepted.fetch_add(1, Ordering::Relaxed);
        if proxy.faults.borrow().refuse {
            proxy.refused.fetch_add(1, Ordering::Relaxed);
            drop(client);
            continue;
        }
        let proxy = proxy.clone();
        tokio::spawn(async move {
            proxy.active.fetch_add(1, Ordering::Relaxed);
            let _ = connection(client, &proxy).await;
            proxy.active.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

async fn connection(mut client: TcpStream, proxy: &Proxy) -> std::io::Result<()> {
    let mut cuts = proxy.cuts.subscribe();
    cuts.mark_unchanged();
    let mut hangs = proxy.hangs.subscribe();
    hangs.mark_unchanged();
    let mut head = Vec::new();
    if proxy.faults.borrow().refuse_ws {
        read_head(&mut client, &mut head).await?;
        if is_websocket_upgrade(&head) {
            proxy.ws_refused.fetch_add(1, Ordering::Relaxed);
            client
                .write_all(
                    b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                )
                .await?;
            return client.shutdown().await;
        }
    }
    let mut upstream = TcpStream::connect(proxy.upstream).await?;
    upstream.write_all(&head).await?;
    let (mut cr, mut cw) = client.into_split();
    let (mut ur, mut uw) = upstream.into_split();
    tokio::select! {
        r = pump(&mut cr, &mut uw, proxy.faults.subscribe()) => return r,
        r = pump(&mut ur, &mut cw, proxy.faults.subscribe()) => return r,
        _ = cuts.changed() => return Ok(()),
        _ = hangs.changed() => {}
    }
    // Hung: both sockets stay open, unread and unwritten, until a cut.
    let _ = cuts.changed().await;
    drop((cr, cw, ur, uw));
    Ok(())
}

async fn read_head(client: &mut TcpStream, head: &mut Vec<u8>) -> std::io::Result<()> {
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD {
        let n = tokio::time::timeout(Duration::from_secs(10), client.read(&mut buf))
            .await
            .map_err(|_| std::io::ErrorKind::TimedOut)??;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    Ok(())
}

/// Whether an HTTP request head asks for a WebSocket upgrade.
pub fn is_websocket_upgrade(head: &[u8]) -> bool {
    let text = String::from_utf8_lossy(head).to_ascii_lowercase();
    text.lines().any(|l| {
        l.split_once(':')
            .is_some_and(|(k, v)| k.trim() == "upgrade" && v.trim() == "websocket")
    })
}

/// Copies `from` to `to`, holding every byte while the proxy is stalled.
async fn pump(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    mut faults: watch::Receiver<Faults>,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        wait_unstalled(&mut faults).await;
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return to.shutdown().await;
        }
        wait_unstalled(&mut faults).await;
        to.write_all(&buf[..n]).await?;
    }
}

async fn wait_unstalled(faults: &mut watch::Receiver<Faults>) {
    // `wait_for` errs only when the sender is gone, which outlives every connection.
    let _ = faults.wait_for(|f| !f.stalled).await;
}

/// What a control route does to the faults.
type Switch = fn(&mut Faults);

/// The control routes that switch faults, and what each one does.
const SWITCHES: [(&str, Switch); 7] = [
    ("/stall", |f| f.stalled = true),
    ("/unstall", |f| f.stalled = false),
    ("/refuse", |f| f.refuse = true),
    ("/accept", |f| f.refuse = false),
    ("/refuse-ws", |f| f.refuse_ws = true),
    ("/allow-ws", |f| f.refuse_ws = false),
    ("/reset", |f| *f = Faults::default()),
];

/// The control API: `POST` one of [`SWITCHES`], `/cut` or `/hang`, `GET /stats`; a switch answers
/// with the stats.
pub fn control(proxy: Arc<Proxy>) -> Router {
    fn ok(proxy: &Proxy) -> Response {
        axum::Json(proxy.stats()).into_response()
    }
    let mut router = Router::new()
        .route(
            "/cut",
            post(|State(p): State<Arc<Proxy>>| async move {
                let cut = p.cut();
                axum::Json(serde_json::json!({ "cut": cut })).into_response()
            }),
        )
        .route(
            "/hang",
            post(|State(p): State<Arc<Proxy>>| async move {
                let hung = p.hang();
                axum::Json(serde_json::json!({ "hung": hung })).into_response()
            }),
        );
    for (path, switch) in SWITCHES {
        let set = move |State(p): State<Arc<Proxy>>| async move {
            p.set(switch);
            ok(&p)
        };
        router = router.route(path, post(set));
    }
    router
        .route(
            "/stats",
            get(|State(p): State<Arc<Proxy>>| async move { ok(&p) }),
        )
        .layer(axum::middleware::map_response(|mut res: Response| async {
            res.headers_mut().insert(
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                HeaderValue::from_static("*"),
            );
            res
        }))
        .with_state(proxy)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo_server() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    async fn start() -> (Arc<Proxy>, SocketAddr) {
        let proxy = Proxy::new(echo_server().await);
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(serve(l, proxy.clone()));
        (proxy, addr)
    }

    async fn read_some(s: &mut TcpStream, ms: u64) -> Option<Vec<u8>> {
        let mut buf = [0u8; 64];
        match tokio::time::timeout(Duration::from_millis(ms), s.read(&mut buf)).await {
            Ok(Ok(n)) => Some(buf[..n].to_vec()),
            _ => None,
        }
    }

    #[tokio::test]
    async fn forwards_cuts_and_stalls() {
        let (proxy, addr) = start().await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"hello").await.unwrap();
        assert_eq!(read_some(&mut s, 2000).await.unwrap(), b"hello");

        proxy.set(|f| f.stalled = true);
        s.write_all(b"held").await.unwrap();
        assert_eq!(read_some(&mut s, 300).await, None, "nothing passes a stall");
        proxy.set(|f| f.stalled = false);
        assert_eq!(read_some(&mut s, 2000).await.unwrap(), b"held");

        assert_eq!(proxy.cut(), 1);
        assert_eq!(read_some(&mut s, 2000).await.unwrap(), b"", "cut: EOF");
    }

    #[tokio::test]
    async fn a_hang_silences_open_connections_for_good_and_new_ones_pass() {
        let (proxy, addr) = start().await;
        let mut old = TcpStream::connect(addr).await.unwrap();
        old.write_all(b"before").await.unwrap();
        assert_eq!(read_some(&mut old, 2000).await.unwrap(), b"before");

        assert_eq!(proxy.hang(), 1);
        old.write_all(b"lost").await.unwrap();
        assert_eq!(
            read_some(&mut old, 500).await,
            None,
            "no answer, and no EOF either"
        );
        let mut new = TcpStream::connect(addr).await.unwrap();
        new.write_all(b"after").await.unwrap();
        assert_eq!(read_some(&mut new, 2000).await.unwrap(), b"after");
        assert_eq!(read_some(&mut old, 300).await, None, "still silent");

        proxy.cut();
        assert_eq!(
            read_some(&mut old, 2000).await.unwrap(),
            b"",
            "a cut closes it"
        );
    }

    #[tokio::test]
    async fn refuses_connections_and_websocket_upgrades() {
        let (proxy, addr) = start().await;
        proxy.set(|f| f.refuse = true);
        let mut s = TcpStream::connect(addr).await.unwrap();
        assert!(matches!(
            read_some(&mut s, 2000).await.as_deref(),
            Some(b"") | None
        ));
        proxy.set(|f| {
            f.refuse = false;
            f.refuse_ws = true;
        });
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(
            b"GET /v1/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        )
        .await
        .unwrap();
        let answer = read_some(&mut s, 2000).await.unwrap();
        assert!(answer.starts_with(b"HTTP/1.1 403"), "{answer:?}");
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /v1/runs/r/events HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let answer = read_some(&mut s, 2000).await.unwrap();
        assert!(answer.starts_with(b"GET /v1/runs"), "plain HTTP passes");
        assert_eq!(proxy.stats()["ws_refused"], 1);
        assert_eq!(proxy.stats()["refused"], 1);
    }

    /// Each control route switches its fault and answers with the stats.
    #[tokio::test]
    async fn control_routes_switch_faults() {
        let (proxy, _) = start().await;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let control_addr = listener.local_addr().unwrap();
        let api = control(proxy.clone());
        tokio::spawn(async move { axum::serve(listener, api).await });
        let post = |path: &'static str| async move {
            let mut s = TcpStream::connect(control_addr).await.unwrap();
            let request = format!(
                "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            s.write_all(request.as_bytes()).await.unwrap();
            let mut answer = Vec::new();
            s.read_to_end(&mut answer).await.unwrap();
            String::from_utf8(answer).unwrap()
        };
        let faults = || {
            let f = proxy.faults.borrow();
            (f.stalled, f.refuse, f.refuse_ws)
        };
        for (path, after) in [
            ("/stall", (true, false, false)),
            ("/refuse", (true, true, false)),
            ("/refuse-ws", (true, true, true)),
            ("/unstall", (false, true, true)),
            ("/accept", (false, false, true)),
            ("/allow-ws", (false, false, false)),
            ("/refuse", (false, true, false)),
            ("/reset", (false, false, false)),
        ] {
            let answer = post(path).await;
            assert!(answer.starts_with("HTTP/1.1 200"), "{path}: {answer}");
            assert!(answer.contains("\"accepted\""), "{path}: {answer}");
            assert_eq!(faults(), after, "{path}");
        }
    }

    #[test]
    fn detects_upgrades() {
        assert!(is_websocket_upgrade(
            b"GET / HTTP/1.1\r\nupgrade:  WebSocket\r\n\r\n"
        ));
        assert!(!is_websocket_upgrade(
            b"GET / HTTP/1.1\r\nX-Upgrade: websocket\r\n\r\n"
        ));
    }
}
