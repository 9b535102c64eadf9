//! The accept loop: every TCP connection the relay holds, HTTP and upgraded WebSockets alike.
//!
//! What it defends against is a client that connects and then sends nothing, or its request
//! headers a byte at a time (slowloris). Such a client needs no token, and without limits enough
//! of them exhaust the process's file descriptors, after which nothing is answered at all.
//!
//! - A request's headers must arrive within `--header-timeout`; the same timer closes a
//!   keep-alive connection that sends no next request for that long (hyper starts it whenever a
//!   connection waits for a request head).
//! - At most `--max-http-connections` connections are open at once. When a new one arrives at the
//!   cap, the oldest connection that has not yet completed a request's headers is closed to make
//!   room: silent and slow sockets then cannot keep out a health check or a real client. Only
//!   when every open connection has been served (requests in flight, WebSockets, SSE streams) is
//!   the new one refused, by closing it at once.
//! - Accept errors such as `EMFILE` back off ([`accept_backoff`]) instead of spinning.
//!
//! A connection's slot is held by its socket, so an upgraded WebSocket keeps its slot until it
//! closes. At shutdown the loop stops accepting, connections without a request are closed, and
//! every other one finishes its in-flight request; WebSockets and SSE streams close themselves on
//! the relay's shutdown flag.

use std::collections::BTreeMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use bytes::Bytes;
use hyper::server::conn::http1;
use hyper::upgrade::Upgraded;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tower::ServiceExt as _;

use crate::metrics::Metrics;
use crate::state::AppState;
use crate::transport::ws::codec::put_header;

/// How long the accept loop waits after its `consecutive`-th failed accept in a row (from 1):
/// 10 ms doubling up to 1 s. Out of file descriptors (`EMFILE`), a retry at once fails again at
/// once; waiting lets closing connections give some back, and logs at most about once a second.
pub fn accept_backoff(consecutive: u32) -> Duration {
    const FIRST: Duration = Duration::from_millis(10);
    const MAX: Duration = Duration::from_secs(1);
    let doublings = consecutive.saturating_sub(1).min(16);
    (FIRST * (1 << doublings)).min(MAX)
}

/// Errors about one connection (it was reset before we took it, say), not about the listener:
/// accept again at once.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

/// The open connections and, among them, the ones not served yet (no complete request head).
#[derive(Debug)]
struct Slots {
    metrics: Arc<Metrics>,
    max: usize,
    next_id: AtomicU64,
    /// Connections without a complete request head yet, oldest first: the ones closed to make
    /// room. Bounded by `max`.
    unserved: Mutex<BTreeMap<u64, Evict>>,
}

#[derive(Debug)]
struct Evict {
    close: oneshot::Sender<()>,
    released: Arc<AtomicBool>,
}

/// A connection's place under the cap; given back when the socket is dropped.
#[derive(Debug)]
struct Slot {
    slots: Arc<Slots>,
    id: u64,
    /// Set once the slot no longer counts (evicted, or dropped).
    released: Arc<AtomicBool>,
}

impl Slots {
    /// A slot for a new connection, and the signal that evicts it; None when it must be refused.
    fn admit(self: &Arc<Self>) -> Option<(Slot, oneshot::Receiver<()>)> {
        let mut unserved = self.unserved.lock().unwrap_or_else(PoisonError::into_inner);
        if self.metrics.http_connections.get() >= i64::try_from(self.max).unwrap_or(i64::MAX) {
            let (_, oldest) = unserved.pop_first()?;
            release(&self.metrics, &oldest.released);
            let _ = oldest.close.send(());
            self.metrics.http_connections_evicted.inc();
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let released = Arc::new(AtomicBool::new(false));
        let (close, closed) = oneshot::channel();
        unserved.insert(
            id,
            Evict {
                close,
                released: released.clone(),
            },
        );
        self.metrics.http_connections.inc();
        let slot = Slot {
            slots: self.clone(),
            id,
            released,
        };
        Some((slot, closed))
    }

    /// Whether the connection has not completed a request head yet.
    fn is_unserved(&self, id: u64) -> bool {
        self.unserved
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(&id)
    }

    /// The connection completed a request head: it is no longer closed to make room.
    fn served(&self, id: u64) {
        self.unserved
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
    }
}

fn release(metrics: &Metrics, released: &AtomicBool) {
    if !released.swap(true, Ordering::Relaxed) {
        metrics.http_connections.dec();
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.served(self.id);
        release(&self.slots.metrics, &self.released);
    }
}

/// Bytes of writes gathered before they go to the socket; a flush writes them out sooner.
const WRITE_BUFFER: usize = 8 * 1024;

/// A connection's TCP socket and what was written to it but not sent yet, shared by the task that
/// serves the connection and by whoever writes a live event to it directly (the hub, for a
/// WebSocket whose task waits with nothing of its own to write: see `hub`).
///
/// Writes are whole: every write either leaves nothing behind or leaves its unsent part in
/// `pending`, so a direct write, which only happens while `pending` is empty, never lands in the
/// middle of another frame.
#[derive(Debug)]
pub struct Socket {
    stream: TcpStream,
    /// Written, not yet sent. Empty, and unallocated, between bursts.
    pending: Mutex<Vec<u8>>,
}

/// What [`Socket::try_send`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirectWrite {
    /// All of it went to the socket.
    Sent,
    /// Part went to the socket and the rest waits in the socket's pending bytes: whoever serves
    /// the connection must flush it (within its write timeout).
    Partial,
    /// Nothing was written: the socket is busy (bytes pending, a write in progress) or full, or
    /// failed. The caller queues the data for the connection's task instead.
    Refused,
}

impl Socket {
    /// A socket with nothing pending.
    pub fn new(stream: TcpStream) -> Self {
        Self {
            stream,
            pending: Mutex::new(Vec::new()),
        }
    }

    /// Bytes pending, for tests.
    #[cfg(test)]
    pub(crate) fn pending_len(&self) -> usize {
        self.lock_pending().len()
    }

    /// Sends what is pending, as the connection's flush does, for tests.
    #[cfg(test)]
    pub(crate) async fn send_pending(&self) -> io::Result<()> {
        std::future::poll_fn(|cx| self.poll_send_pending(cx, &mut self.lock_pending())).await
    }

    /// Writes `bytes` now, without waiting, if nothing else is pending or being written.
    pub fn try_send(&self, bytes: &[u8]) -> DirectWrite {
        let Ok(mut pending) = self.pending.try_lock() else {
            return DirectWrite::Refused;
        };
        if !pending.is_empty() {
            return DirectWrite::Refused;
        }
        match self.stream.try_write(bytes) {
            Ok(n) if n == bytes.len() => DirectWrite::Sent,
            Ok(0) | Err(_) => DirectWrite::Refused,
            Ok(n) => {
                pending.extend_from_slice(&bytes[n..]);
                DirectWrite::Partial
            }
        }
    }

    /// Writes to the socket once it is ready.
    fn poll_write_now(&self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        loop {
            std::task::ready!(self.stream.poll_write_ready(cx))?;
            match self.stream.try_write(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                result => return Poll::Ready(result),
            }
        }
    }

    /// Sends what is pending; ready once all of it went out.
    fn poll_send_pending(
        &self,
        cx: &mut Context<'_>,
        pending: &mut Vec<u8>,
    ) -> Poll<io::Result<()>> {
        let mut sent = 0;
        let result = loop {
            if sent == pending.len() {
                break Poll::Ready(Ok(()));
            }
            match self.poll_write_now(cx, &pending[sent..]) {
                Poll::Ready(Ok(0)) => break Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => sent += n,
                Poll::Ready(Err(e)) => break Poll::Ready(Err(e)),
                Poll::Pending => break Poll::Pending,
            }
        };
        if sent == pending.len() {
            *pending = Vec::new();
        } else {
            pending.drain(..sent);
        }
        result
    }

    /// Ready once another frame may go into the write buffer: at [`WRITE_BUFFER`] bytes or more,
    /// what is pending is sent first.
    pub fn poll_room(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut pending = self.lock_pending();
        if pending.len() < WRITE_BUFFER {
            return Poll::Ready(Ok(()));
        }
        self.poll_send_pending(cx, &mut pending)
    }

    /// Puts a whole WebSocket frame in the write buffer, for the next flush to send.
    pub fn push_frame(&self, opcode: u8, payload: &[u8]) {
        let mut pending = self.lock_pending();
        if pending.capacity() == 0 {
            // Room for a few small frames at once; a burst grows it by doubling.
            pending.reserve((payload.len() + 10).max(512));
        }
        put_header(&mut pending, opcode, payload.len());
        pending.extend_from_slice(payload);
    }

    /// Sends what is pending; ready once all of it went out (and the buffer is freed).
    pub fn poll_flush(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_send_pending(cx, &mut self.lock_pending())
    }

    fn lock_pending(&self) -> std::sync::MutexGuard<'_, Vec<u8>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A socket that holds its connection's slot, through an upgrade to a WebSocket too: hyper serves
/// HTTP on it, and a WebSocket upgraded from it reads its frames from it
/// ([`Held::from_upgraded`]) and writes through its [`Socket`].
///
/// It also gathers writes until a flush (or [`WRITE_BUFFER`] bytes), so that a burst of small
/// writes costs one `send()` rather than one each. The buffer is freed whenever it has been
/// written out: a connection that received a burst and went quiet holds none.
#[derive(Debug)]
pub struct Held {
    socket: Arc<Socket>,
    _slot: Slot,
}

impl Held {
    fn new(stream: TcpStream, slot: Slot) -> Self {
        Self {
            socket: Arc::new(Socket::new(stream)),
            _slot: slot,
        }
    }

    /// The socket, shared with whoever writes to it.
    pub fn socket(&self) -> &Arc<Socket> {
        &self.socket
    }

    /// The connection an HTTP upgrade handed over, and the bytes hyper had read from it past the
    /// request; `None` when the connection did not come through [`serve`].
    pub fn from_upgraded(upgraded: Upgraded) -> Option<(Self, Bytes)> {
        let parts = upgraded.downcast::<TokioIo<Self>>().ok()?;
        Some((parts.io.into_inner(), parts.read_buf))
    }
}

impl AsyncRead for Held {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let stream = &self.socket.stream;
        loop {
            std::task::ready!(stream.poll_read_ready(cx))?;
            match stream.try_read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for Held {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let socket = &*self.socket;
        let mut pending = socket.lock_pending();
        if pending.len() + buf.len() > WRITE_BUFFER {
            std::task::ready!(socket.poll_send_pending(cx, &mut pending))?;
            if buf.len() >= WRITE_BUFFER {
                // Whatever the socket does not take at once waits in `pending`: a write is whole.
                let sent = match socket.poll_write_now(cx, buf) {
                    Poll::Ready(Ok(n)) => n,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => 0,
                };
                pending.extend_from_slice(&buf[sent..]);
                return Poll::Ready(Ok(buf.len()));
            }
        }
        if pending.capacity() == 0 {
            // Room for a few small frames at once; a burst grows it by doubling.
            pending.reserve(buf.len().max(512));
        }
        pending.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let socket = &*self.socket;
        socket.poll_send_pending(cx, &mut socket.lock_pending())
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let socket = &*self.socket;
        std::task::ready!(socket.poll_send_pending(cx, &mut socket.lock_pending()))?;
        Poll::Ready(socket2::SockRef::from(&socket.stream).shutdown(std::net::Shutdown::Write))
    }
}

/// Serves `router` on `listener` until the relay shuts down, then waits for every connection to
/// finish its in-flight request (the caller bounds the wait with the drain time).
pub async fn serve(listener: TcpListener, router: Router, state: AppState) {
    let config = &state.config;
    // HTTP/1.1 only, as before; served directly rather than through a version sniffer, which
    // would wait for a first byte before any timer starts.
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_timeout);
    let slots = Arc::new(Slots {
        metrics: state.metrics.clone(),
        max: config.max_http_connections,
        next_id: AtomicU64::new(0),
        unserved: Mutex::default(),
    });
    let mut connections = JoinSet::new();
    let stop = state.shutting_down();
    tokio::pin!(stop);
    let mut failures = 0u32;
    loop {
        let accepted = tokio::select! {
            biased;
            () = &mut stop => break,
            // Reap finished connections so the set stays as small as what is open.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => {
                failures = 0;
                stream
            }
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                failures = failures.saturating_add(1);
                state.metrics.accept_errors.inc();
                let wait = accept_backoff(failures);
                tracing::warn!(error = %e, retry_in = ?wait, "accept failed");
                tokio::select! {
                    () = &mut stop => break,
                    () = tokio::time::sleep(wait) => continue,
                }
            }
        };
        let Some((slot, evicted)) = slots.admit() else {
            state.metrics.http_connections_refused.inc();
            drop(stream);
            continue;
        };
        let id = slot.id;
        let held = Held::new(stream, slot);
        let io = TokioIo::new(held);
        let first = Arc::new(AtomicBool::new(true));
        let service = router.clone().map_request({
            let slots = slots.clone();
            move |request: Request<_>| {
                if first.swap(false, Ordering::Relaxed) {
                    slots.served(id);
                }
                request
            }
        });
        let slots = slots.clone();
        let builder = builder.clone();
        let mut stopping = state.shutdown_flag();
        connections.spawn(async move {
            let conn = builder
                .serve_connection(io, TowerToHyperService::new(service))
                .with_upgrades();
            tokio::pin!(conn);
            tokio::pin!(evicted);
            let mut draining = false;
            let mut evictable = true;
            loop {
                tokio::select! {
                    result = conn.as_mut() => {
                        if let Err(e) = result {
                            tracing::trace!(error = %e, "connection ended");
                        }
                        return;
                    }
                    // Closed to make room for a newer connection: drop it. An error means it
                    // was served and can no longer be evicted; a oneshot is polled only once.
                    evict = &mut evicted, if evictable => match evict {
                        Ok(()) => return,
                        Err(_) => evictable = false,
                    },
                    _ = stopping.wait_for(|s| *s), if !draining => {
                        // No request yet, so none to finish: a silent or slow socket must not
                        // hold up the drain until its header timeout.
                        if slots.is_unserved(id) {
                            return;
                        }
                        draining = true;
                        conn.as_mut().graceful_shutdown();
                    }
                }
            }
        });
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_10ms_to_a_second() {
        let ms = |n| accept_backoff(n).as_millis();
        assert_eq!(ms(0), 10);
        assert_eq!(ms(1), 10);
        assert_eq!(ms(2), 20);
        assert_eq!(ms(3), 40);
        assert_eq!(ms(7), 640);
        assert_eq!(ms(8), 1000);
        assert_eq!(ms(1000), 1000);
        assert_eq!(ms(u32::MAX), 1000);
    }

    #[test]
    fn only_listener_errors_back_off() {
        assert!(is_connection_error(
            &io::ErrorKind::ConnectionAborted.into()
        ));
        // EMFILE
        assert!(!is_connection_error(&io::Error::from_raw_os_error(24)));
    }

    fn slots(max: usize) -> Arc<Slots> {
        Arc::new(Slots {
            metrics: Arc::default(),
            max,
            next_id: AtomicU64::new(0),
            unserved: Mutex::default(),
        })
    }

    /// An accepted socket in its wrapper, and the client's end.
    async fn held_and_peer() -> (Held, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let peer = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        let (slot, _) = slots(4).admit().unwrap();
        (Held::new(stream, slot), peer)
    }

    /// Writes are gathered until a flush, then go out together, and the buffer is freed: a
    /// connection that received a burst keeps no write buffer.
    #[tokio::test]
    async fn writes_wait_for_a_flush_and_the_buffer_is_freed() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut held, mut peer) = held_and_peer().await;
        for frame in [&b"one,"[..], b"two,", b"three"] {
            held.write_all(frame).await.unwrap();
        }
        assert_eq!(*held.socket.lock_pending(), b"one,two,three");
        let mut scratch = [0u8; 64];
        assert_eq!(
            peer.try_read(&mut scratch).unwrap_err().kind(),
            io::ErrorKind::WouldBlock,
            "nothing is sent before the flush"
        );
        held.flush().await.unwrap();
        assert_eq!(held.socket.lock_pending().capacity(), 0);
        let mut got = vec![0u8; 13];
        peer.read_exact(&mut got).await.unwrap();
        assert_eq!(got, b"one,two,three");

        // Past the buffer's size, what is pending goes out first, and a large write directly.
        let big = vec![7u8; WRITE_BUFFER + 1];
        held.write_all(b"head").await.unwrap();
        held.write_all(&big).await.unwrap();
        held.flush().await.unwrap();
        assert_eq!(held.socket.lock_pending().capacity(), 0);
        let mut got = vec![0u8; 4 + big.len()];
        peer.read_exact(&mut got).await.unwrap();
        assert_eq!(&got[..4], b"head");
        assert!(got[4..].iter().all(|&b| b == 7));
    }

    /// A write the socket takes only in part leaves the rest pending rather than split between
    /// calls, and a direct write waits until nothing is pending: frames never interleave.
    #[tokio::test]
    async fn writes_are_whole_and_direct_writes_wait_for_pending_bytes() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut held, mut peer) = held_and_peer().await;
        let socket = held.socket.clone();
        // Far more than a fresh loopback socket takes at once.
        let big = vec![1u8; 16 * 1024 * 1024];
        let n = std::future::poll_fn(|cx| Pin::new(&mut held).poll_write(cx, &big))
            .await
            .unwrap();
        assert_eq!(n, big.len(), "taken whole");
        assert!(socket.pending_len() > 0);
        assert_eq!(socket.try_send(b"x"), DirectWrite::Refused);
        let reader = tokio::spawn(async move {
            let mut got = vec![0u8; 16 * 1024 * 1024 + 2];
            peer.read_exact(&mut got).await.unwrap();
            got
        });
        held.flush().await.unwrap();
        assert_eq!(socket.pending_len(), 0);
        assert_eq!(socket.try_send(b"xy"), DirectWrite::Sent);
        let got = reader.await.unwrap();
        assert!(got[..big.len()].iter().all(|&b| b == 1));
        assert_eq!(&got[big.len()..], b"xy");
    }

    #[test]
    fn at_the_cap_the_oldest_unserved_connection_makes_room() {
        let s = slots(2);
        let (a, mut a_closed) = s.admit().unwrap();
        let (b, mut b_closed) = s.admit().unwrap();
        s.served(a.id);
        assert_eq!(s.metrics.http_connections.get(), 2);
        // Full: b (not served) is closed to admit c.
        let (c, _) = s.admit().unwrap();
        assert_eq!(b_closed.try_recv(), Ok(()));
        assert!(a_closed.try_recv().is_err());
        assert_eq!(s.metrics.http_connections.get(), 2);
        assert_eq!(s.metrics.http_connections_evicted.get(), 1);
        drop(b); // its socket closes later: counted once only
        assert_eq!(s.metrics.http_connections.get(), 2);
        // Every connection served: the next one is refused.
        s.served(c.id);
        assert!(s.admit().is_none());
        drop((a, c));
        assert_eq!(s.metrics.http_connections.get(), 0);
        assert!(s.admit().is_some());
    }
}
