//! The relay's one Pub/Sub connection: which runs' `live` channels it is subscribed to, the
//! reader that hands their events to the hub, and reconnection after Redis went away.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use ::redis::Msg;
use ::redis::aio::{PubSubSink, PubSubStream};
use futures_util::StreamExt as _;
use tokio::sync::{mpsc, watch};

use super::ingest::{IngestMsg, IngestSync, MAX_INGEST_PAYLOAD};
use super::{Shared, conn, pause, unavailable};
use crate::broker::{BrokerError, Event, RunId};
use crate::sync::lock;

/// Channels per `SUBSCRIBE` when resubscribing after a reconnect.
const SUBSCRIBE_CHUNK: usize = 512;

impl Shared {
    pub(super) async fn watch(&self, run: RunId) -> Result<(), BrokerError> {
        lock(&self.channels)
            .entry(run.clone())
            .or_default()
            .subscriptions += 1;
        let sink = lock(&self.sink).clone();
        let result = match sink {
            None => Err(unavailable("pub/sub connection is down")),
            Some(mut sink) => self.call(sink.subscribe(self.channel(&run))).await,
        };
        // Failed or not, the caller balances this with `unwatch`; meanwhile the run stays in
        // `channels`, so a reconnecting Pub/Sub connection subscribes to it.
        result
    }

    pub(super) fn unwatch(self: Arc<Self>, run: RunId) {
        let last = {
            let mut channels = lock(&self.channels);
            match channels.get_mut(&run) {
                Some(w) if w.subscriptions > 1 => {
                    w.subscriptions -= 1;
                    false
                }
                Some(_) => {
                    channels.remove(&run);
                    true
                }
                None => false,
            }
        };
        let sink = lock(&self.sink).clone();
        let (true, Some(mut sink), Ok(rt)) = (last, sink, tokio::runtime::Handle::try_current())
        else {
            return;
        };
        rt.spawn(async move {
            let channel = self.channel(&run);
            let _ = self.call(sink.unsubscribe(&channel)).await;
            // A watch of the same run may have subscribed while the unsubscribe was on its way and
            // been undone by it: subscribe again and make its subscriptions catch up.
            if lock(&self.channels).contains_key(&run)
                && self.call(sink.subscribe(&channel)).await.is_ok()
            {
                self.hub.resync(&run);
            }
        });
    }

    /// Hands the events of one `live` message to the hub.
    fn deliver(&self, run: &str, payload: &[u8]) {
        let Ok(payload) = std::str::from_utf8(payload) else {
            tracing::warn!(run, "ignoring a non-UTF-8 live message");
            return;
        };
        let Some((epoch, frames)) = payload.split_once('\n') else {
            tracing::warn!(run, "ignoring a malformed live message");
            return;
        };
        let epoch: Arc<str> = epoch.into();
        let mut last = None;
        // Handed over together: a subscriber the hub writes to directly gets them in one write.
        let mut events = Vec::new();
        for frame in frames.split('\n') {
            match Event::from_frame(epoch.clone(), frame.to_owned()) {
                // The hub delivers by the frame's run: a frame of another run on this channel
                // would reach that run's subscribers out of its order.
                Ok(ev) if *ev.run != *run => {
                    tracing::warn!(
                        run,
                        other = &*ev.run,
                        "ignoring a live frame of another run"
                    );
                }
                Ok(ev) => {
                    last = Some(ev.seq);
                    events.push(Arc::new(ev));
                }
                Err(e) => tracing::warn!(run, error = %e, "ignoring a malformed live frame"),
            }
        }
        self.hub.deliver_all(&events);
        if let Some(seq) = last {
            self.saw(run, &epoch, seq);
        }
    }

    async fn on_message(
        self: &Arc<Self>,
        msg: Msg,
        ingest: Option<&mpsc::Sender<IngestMsg>>,
        sync: &mut IngestSync,
    ) {
        let channel = msg.get_channel_name();
        if msg.from_pattern() {
            let (Some(tx), Ok(pattern)) = (ingest, msg.get_pattern::<String>()) else {
                return;
            };
            // A pattern as wide as `*` also matches the relay's own channels.
            if self.run_of_channel(channel).is_some() || channel == self.marks_channel() {
                return;
            }
            let payload = msg.get_payload_bytes();
            if payload.len() > MAX_INGEST_PAYLOAD {
                tracing::warn!(
                    channel,
                    bytes = payload.len(),
                    "ingest: message too large, dropped"
                );
                self.stats.ingest_dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            let (id, ask_mark) = sync.name(channel, payload);
            if ask_mark {
                self.clone().publish_mark();
            }
            let Some(id) = id else {
                // Before this connection's first mark: the relays that were already ingesting
                // append it; this one cannot yet name it as they do.
                self.stats.ingest_dropped.fetch_add(1, Ordering::Relaxed);
                return;
            };
            let item = IngestMsg {
                channel: channel.to_owned(),
                pattern,
                payload: payload.to_vec(),
                id,
            };
            let _ = tx.send(item).await;
        } else if ingest.is_some() && channel == self.marks_channel() {
            sync.marked(msg.get_payload_bytes());
            self.ingest_synced.store(true, Ordering::Relaxed);
        } else if let Some(run) = self.run_of_channel(channel) {
            self.deliver(run, msg.get_payload_bytes());
        }
    }

    /// Waits (boundedly) until the command connection answers again after an outage.
    async fn commands_ready(&self, stop: &mut watch::Receiver<()>) {
        for _ in 0..20 {
            let mut conn = self.conn();
            let pong: Result<String, _> =
                self.call(::redis::cmd("PING").query_async(&mut conn)).await;
            if pong.is_ok() || !pause(stop, self.config.reconnect_backoff.0).await {
                return;
            }
        }
    }

    /// Subscribes a fresh Pub/Sub connection to everything this relay needs.
    async fn resubscribe(&self, sink: &mut PubSubSink) -> Result<(), BrokerError> {
        let channels: Vec<String> = lock(&self.channels)
            .keys()
            .map(|run| self.channel(run))
            .collect();
        for chunk in channels.chunks(SUBSCRIBE_CHUNK) {
            self.call(sink.subscribe(chunk)).await?;
        }
        if !self.config.ingest.is_empty() {
            self.call(sink.subscribe(self.marks_channel())).await?;
            self.call(sink.psubscribe(&self.config.ingest)).await?;
        }
        Ok(())
    }

    /// Publishes a sync mark for every ingesting relay, this one included (see [`IngestSync`]).
    /// It goes through the command connection, so the Pub/Sub reader does not wait for it.
    pub(super) fn publish_mark(self: Arc<Self>) {
        tokio::spawn(async move {
            let mut conn = self.conn();
            let sent: Result<i64, _> = self
                .call(
                    ::redis::cmd("PUBLISH")
                        .arg(self.marks_channel())
                        .arg(&*self.fresh_epoch())
                        .query_async(&mut conn),
                )
                .await;
            if let Err(e) = sent {
                tracing::warn!(error = %e, "ingest: cannot publish a sync mark");
            }
        });
    }
}

pub(super) async fn pubsub_loop(
    shared: Arc<Shared>,
    ingest: Option<mpsc::Sender<IngestMsg>>,
    mut stop: watch::Receiver<()>,
    ready: Arc<std::sync::Mutex<Option<tokio::sync::oneshot::Sender<()>>>>,
) {
    // A previous run of this task may have ended without cleaning up (it panicked).
    *lock(&shared.sink) = None;
    shared.pubsub_up.store(false, Ordering::Relaxed);
    shared.ingest_synced.store(false, Ordering::Relaxed);
    let (min, max) = shared.config.reconnect_backoff;
    let mut backoff = min;
    // Only the first run announces the first connection; a restarted run's first connection is
    // a reconnection, after which subscriptions catch up.
    let mut ready = lock(&ready).take();
    let mut attempt = 0usize;
    loop {
        let connected = tokio::select! {
            _ = stop.changed() => return,
            c = conn::connect_pubsub(&shared.target, attempt, shared.config.command_timeout) => c,
        };
        attempt += 1;
        let (mut sink, mut stream): (PubSubSink, PubSubStream) = match connected {
            Ok(pubsub) => pubsub.split(),
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "redis pub/sub: cannot connect");
                if !pause(&mut stop, backoff).await {
                    return;
                }
                backoff = (backoff * 2).min(max);
                continue;
            }
        };
        if let Err(e) = shared.resubscribe(&mut sink).await {
            tracing::warn!(error = %e, "redis pub/sub: cannot subscribe");
            if !pause(&mut stop, backoff).await {
                return;
            }
            backoff = (backoff * 2).min(max);
            continue;
        }
        *lock(&shared.sink) = Some(sink.clone());
        shared.pubsub_up.store(true, Ordering::Relaxed);
        backoff = min;
        if let Some(ready) = ready.take() {
            // Nothing watched a run before the first connection.
            let _ = ready.send(());
        } else {
            shared.stats.reconnects.fetch_add(1, Ordering::Relaxed);
            tracing::info!("redis pub/sub: reconnected; subscriptions catch up");
            // Whatever was published while this relay was not subscribed is in the streams; the
            // subscriptions read it through the command connection, so wait for that one too.
            shared.commands_ready(&mut stop).await;
            shared.hub.resync_all();
        }
        // This connection counts ingested messages from the first mark it sees; ask for one now.
        let mut sync = IngestSync::default();
        let ingesting = ingest.is_some();
        if ingesting {
            shared.clone().publish_mark();
        }
        let mut ping = tokio::time::interval(shared.config.health_interval);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let every = shared.config.ingest_mark_interval;
        let mut mark = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        mark.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                msg = stream.next() => match msg {
                    Some(msg) => shared.on_message(msg, ingest.as_ref(), &mut sync).await,
                    None => break,
                },
                // Also a retry when the first mark of this connection could not be published.
                _ = mark.tick(), if ingesting => shared.clone().publish_mark(),
                _ = ping.tick() => {
                    let pong = tokio::time::timeout(
                        shared.config.command_timeout,
                        sink.ping::<::redis::Value>(),
                    );
                    if !matches!(pong.await, Ok(Ok(_))) {
                        break;
                    }
                }
            }
        }
        tracing::warn!("redis pub/sub: connection lost; reconnecting");
        *lock(&shared.sink) = None;
        shared.pubsub_up.store(false, Ordering::Relaxed);
        shared.ingest_synced.store(false, Ordering::Relaxed);
    }
}
