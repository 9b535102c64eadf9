//! Subscribers: one task per WebSocket connection, and the counters they share.
//!
//! A subscriber connects from one of several `127.0.x.y` source addresses (one address has only
//! ~28k ephemeral ports), sends its driver's hello, and then checks every event it receives: seqs
//! must follow each other with no gap and no duplicate, from the head (or the resume point) the
//! system acknowledged. Latency is the receive time minus the publisher's timestamp in the event.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use tokio::net::TcpSocket;
use tokio::sync::{Notify, OwnedSemaphorePermit, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::driver::{self, Incoming, Subscription, System};

/// Latency histograms are sharded so that subscribers on different threads rarely share a lock.
const SHARDS: usize = 32;
/// Largest latency recorded, µs (longer ones are clamped to it).
const MAX_LATENCY_US: u64 = 600_000_000;

/// Counters shared by every subscriber of one measurement.
#[derive(Debug)]
pub struct Counters {
    /// When the measurement started (the storm's clock).
    pub t0: Instant,
    /// Subscribers whose subscription was acknowledged and whose replay (if any) arrived.
    pub ready: AtomicU64,
    /// Subscribers that failed: connect error, refusal, or the connection ended early.
    pub failed: AtomicU64,
    /// Events received, over all subscribers.
    pub delivered: AtomicU64,
    /// Events whose seq skipped ahead of the previous one's successor.
    pub gaps: AtomicU64,
    /// Events whose seq was not above the previous one.
    pub duplicates: AtomicU64,
    /// Latency is recorded only while this is set (after the warm-up).
    pub recording: AtomicBool,
    latency_us: Vec<Mutex<Histogram<u64>>>,
    ready_ms: Mutex<Histogram<u64>>,
    first_error: Mutex<Option<String>>,
    /// The publisher sleeps on this until `delivered` reaches `wake_at`.
    pub wake: Notify,
    /// See `wake`; 0 when nobody waits.
    pub wake_at: AtomicU64,
}

impl Default for Counters {
    fn default() -> Self {
        let hist = || Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid bounds");
        Self {
            t0: Instant::now(),
            ready: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            gaps: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            recording: AtomicBool::new(false),
            latency_us: (0..SHARDS).map(|_| Mutex::new(hist())).collect(),
            ready_ms: Mutex::new(hist()),
            first_error: Mutex::new(None),
            wake: Notify::new(),
            wake_at: AtomicU64::new(0),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Nanoseconds since the Unix epoch: the clock both the publisher and subscribers read.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

impl Counters {
    /// Merged publish→receive latency, µs.
    pub fn latency(&self) -> Histogram<u64> {
        let mut all = lock(&self.latency_us[0]).clone();
        for shard in &self.latency_us[1..] {
            all.add(&*lock(shard)).expect("same bounds");
        }
        all
    }

    /// Time from `t0` until each subscriber was ready, ms.
    pub fn ready_times(&self) -> Histogram<u64> {
        lock(&self.ready_ms).clone()
    }

    /// The first failure any subscriber saw.
    pub fn first_error(&self) -> Option<String> {
        lock(&self.first_error).clone()
    }

    fn fail(&self, why: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let mut first = lock(&self.first_error);
        if first.is_none() {
            *first = Some(why);
        }
    }

    fn delivered_one(&self) {
        let n = self.delivered.fetch_add(1, Ordering::Relaxed) + 1;
        let at = self.wake_at.load(Ordering::Relaxed);
        if at != 0 && n >= at {
            self.wake.notify_one();
        }
    }

    /// Forgets latency recorded so far (the warm-up's).
    pub fn reset_latency(&self) {
        for shard in &self.latency_us {
            lock(shard).reset();
        }
    }
}

/// Where and how one subscriber connects.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The system it speaks to.
    pub system: System,
    /// The relay's address.
    pub addr: SocketAddr,
    /// The loopback address it connects from.
    pub source: Ipv4Addr,
    /// What it subscribes to.
    pub sub: Subscription,
    /// Index, for sharding.
    pub id: usize,
}

/// Source address `k` of measurement `m`: `127.0.(m % 250 + 1).(k + 1)`. Each measurement gets
/// its own addresses so that ports left in TIME_WAIT by the previous one are not needed again.
pub fn source_address(measurement: usize, k: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, (measurement % 250 + 1) as u8, (k % 254 + 1) as u8)
}

/// Client-side WebSocket buffers kept small: tens of thousands of them live in this process.
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .write_buffer_size(0)
}

/// Runs one subscriber until `stop` is set. `permit` (the connect-concurrency limit) is released
/// once the subscriber is ready.
pub async fn subscriber(
    plan: Plan,
    counters: Arc<Counters>,
    mut stop: watch::Receiver<bool>,
    connect_timeout: Duration,
    mut permit: Option<OwnedSemaphorePermit>,
) {
    let connect = async {
        let socket = TcpSocket::new_v4()?;
        socket.bind(SocketAddr::V4(SocketAddrV4::new(plan.source, 0)))?;
        let stream = socket.connect(plan.addr).await?;
        stream.set_nodelay(true)?;
        let url = driver::url(plan.system, plan.addr, &plan.sub);
        tokio_tungstenite::client_async_with_config(url, stream, Some(ws_config()))
            .await
            .map_err(std::io::Error::other)
    };
    let mut ws = match tokio::time::timeout(connect_timeout, connect).await {
        Ok(Ok((ws, _))) => ws,
        Ok(Err(e)) => return counters.fail(format!("connect from {}: {e}", plan.source)),
        Err(_) => return counters.fail(format!("connect: no answer in {connect_timeout:?}")),
    };
    for text in driver::hello(plan.system, &plan.sub) {
        if let Err(e) = ws.feed(Message::text(text)).await {
            return counters.fail(format!("send: {e}"));
        }
    }
    if let Err(e) = ws.flush().await {
        return counters.fail(format!("send: {e}"));
    }
    // `head` once subscribed; `last` is the last seq seen (or the resume point).
    let mut head: Option<u64> = None;
    let mut last = 0u64;
    let mut ready = false;
    let shard = &counters.latency_us[plan.id % SHARDS];
    loop {
        let msg = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => return,
            msg = ws.next() => msg,
        };
        let text = match msg {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Close(frame))) => {
                return counters.fail(format!("closed by the relay: {frame:?}"));
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return counters.fail(format!("read: {e}")),
            None => return counters.fail("connection ended".to_owned()),
        };
        match driver::classify(plan.system, &plan.sub, text.as_str()) {
            Incoming::Event { seq, t_ns } => {
                if head.is_none() {
                    return counters.fail(format!("event {seq} before the subscription answer"));
                }
                if seq <= last {
                    counters.duplicates.fetch_add(1, Ordering::Relaxed);
                } else {
                    if seq != last + 1 {
                        counters.gaps.fetch_add(1, Ordering::Relaxed);
                    }
                    last = seq;
                }
                if let Some(t) = t_ns.filter(|_| counters.recording.load(Ordering::Relaxed)) {
                    let us = now_ns().saturating_sub(t) / 1000;
                    let _ = lock(shard).record(us.clamp(1, MAX_LATENCY_US));
                }
                counters.delivered_one();
            }
            Incoming::Subscribed { head: h } => {
                head = Some(h);
                last = match plan.sub.since {
                    Some(since) if since <= h => since,
                    _ => h,
                };
            }
            Incoming::Reply(text) => {
                if let Err(e) = ws.send(Message::text(text)).await {
                    return counters.fail(format!("send: {e}"));
                }
            }
            Incoming::Ignore => {}
            Incoming::Refused(text) => return counters.fail(format!("refused: {text}")),
        }
        if !ready && head.is_some_and(|h| last >= h) {
            ready = true;
            permit.take();
            counters.ready.fetch_add(1, Ordering::Relaxed);
            let ms = counters.t0.elapsed().as_millis() as u64;
            let _ = lock(&counters.ready_ms).record(ms.clamp(1, MAX_LATENCY_US));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_addresses_stay_in_loopback_and_differ_per_measurement() {
        let a = source_address(0, 0);
        assert_eq!(a, Ipv4Addr::new(127, 0, 1, 1));
        assert!(a.is_loopback());
        assert_ne!(source_address(1, 0), a);
        assert!(source_address(999, 300).is_loopback());
    }

    #[test]
    fn merges_latency_shards() {
        let c = Counters::default();
        lock(&c.latency_us[0]).record(10).unwrap();
        lock(&c.latency_us[5]).record(1000).unwrap();
        let h = c.latency();
        assert_eq!(h.len(), 2);
        assert_eq!(h.max(), h.highest_equivalent(1000));
        c.reset_latency();
        assert_eq!(c.latency().len(), 0);
    }
}
