//! The scenarios. Each one measures one system once and returns its numbers, or an error when
//! the system did not do the job: a subscriber failed, an event went missing, arrived twice or
//! out of order. Every wait has a deadline, and every publishing loop a bound in time and count.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::ValueEnum;
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use runwire_protocol::token::Scope;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

use crate::client::{self, Counters, Plan, now_ns};
use crate::driver::{Subscription, System};
use crate::procfs::{self, Sample};
use crate::publish::{self, Publisher};
use crate::report::{Better, Measurement};

/// Which scenario to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// 1. Many connected, subscribed, idle clients: relay memory per connection.
    Idle,
    /// 2. Many subscribers of one run, events published as fast as they are delivered.
    Fanout,
    /// 3. Subscribers spread over many runs, events at a fixed open-loop rate: latency.
    ManyRuns,
    /// 4. Every client connects, authenticates and resumes at once, as after a relay restart.
    Storm,
}

impl Scenario {
    /// Default (clients, runs) of the full-size scenario.
    pub fn defaults(self) -> (usize, usize) {
        match self {
            Self::Idle => (50_000, 1_000),
            Self::Fanout => (10_000, 1),
            Self::ManyRuns => (10_000, 1_000),
            Self::Storm => (10_000, 100),
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Params {
    /// The scenario.
    pub scenario: Scenario,
    /// Subscribers.
    pub clients: usize,
    /// Runs they are spread over.
    pub runs: usize,
    /// Events per second, all runs together (`many-runs`).
    pub rate: u64,
    /// Events per publish request (`fanout`).
    pub batch: usize,
    /// Events a subscriber may be behind the publisher (`fanout`).
    pub window: u64,
    /// How long the measurement lasts after the warm-up.
    pub duration: Duration,
    /// Publishing before the measurement starts.
    pub warmup: Duration,
    /// Events per run before the storm; clients resume from the middle of them (`storm`).
    pub history: u64,
    /// Connections being set up at once (not for `storm`, which opens all at once).
    pub connect_concurrency: usize,
    /// Source addresses the subscribers are spread over; 0 picks one per 16,000 clients.
    pub sources: usize,
    /// The longest any phase may take before the measurement fails.
    pub timeout: Duration,
    /// The token secret.
    pub secret: String,
}

/// The system being measured: where its relays listen and which processes they are.
#[derive(Debug, Clone)]
pub struct Target {
    /// The system.
    pub system: System,
    /// Its relays; subscribers are spread over them, and events are published to the first.
    pub addrs: Vec<SocketAddr>,
    /// Their process ids, for memory and CPU (empty for relays started elsewhere).
    pub pids: Vec<u32>,
}

impl Target {
    fn sample(&self) -> Result<Option<Sample>, String> {
        if self.pids.is_empty() {
            return Ok(None);
        }
        procfs::sample_all(&self.pids)
            .map(Some)
            .map_err(|e| format!("reading /proc: {e}"))
    }
}

/// Runs `p.scenario` against `target`. `index` numbers the measurement (source addresses).
pub async fn measure(p: &Params, target: &Target, index: usize) -> Result<Measurement, String> {
    match p.scenario {
        Scenario::Idle => idle(p, target, index).await,
        Scenario::Fanout => fanout(p, target, index).await,
        Scenario::ManyRuns => many_runs(p, target, index).await,
        Scenario::Storm => storm(p, target, index).await,
    }
}

/// Subscribers of one measurement, stopped (and awaited) by `finish`.
struct Fleet {
    counters: Arc<Counters>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Fleet {
    /// Starts one subscriber per `(run, since)`; at most `limit` connect at once.
    fn spawn(
        p: &Params,
        target: &Target,
        index: usize,
        subs: Vec<(String, Option<u64>)>,
        limit: Option<usize>,
    ) -> Self {
        let counters = Arc::new(Counters::default());
        let (stop, stop_rx) = watch::channel(false);
        let sources = if p.sources == 0 {
            subs.len().div_ceil(16_000).max(1)
        } else {
            p.sources
        };
        let gate = limit.map(|n| Arc::new(Semaphore::new(n.max(1))));
        let connect_timeout = p.timeout.min(Duration::from_secs(60));
        let tasks = subs
            .into_iter()
            .enumerate()
            .map(|(id, (run, since))| {
                let plan = Plan {
                    system: target.system,
                    addr: target.addrs[id % target.addrs.len()],
                    source: client::source_address(index, id % sources),
                    sub: Subscription {
                        token: publish::token(&p.secret, &run, Scope::Subscribe),
                        run,
                        since,
                    },
                    id,
                };
                let (counters, stop_rx, gate) = (counters.clone(), stop_rx.clone(), gate.clone());
                tokio::spawn(async move {
                    let permit = match gate {
                        Some(g) => Some(g.acquire_owned().await.expect("never closed")),
                        None => None,
                    };
                    client::subscriber(plan, counters, stop_rx, connect_timeout, permit).await;
                })
            })
            .collect();
        Self {
            counters,
            stop,
            tasks,
        }
    }

    /// Waits until `n` subscribers are ready; fails at the first failed subscriber or at the
    /// deadline.
    async fn ready(&self, n: usize, timeout: Duration) -> Result<Duration, String> {
        let start = Instant::now();
        loop {
            self.check()?;
            let ready = self.counters.ready.load(Ordering::Relaxed);
            if ready >= n as u64 {
                return Ok(start.elapsed());
            }
            if start.elapsed() > timeout {
                return Err(format!(
                    "only {ready} of {n} subscribers ready after {timeout:?}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until `expected` events were delivered in total.
    async fn delivered(&self, expected: u64, timeout: Duration) -> Result<(), String> {
        let start = Instant::now();
        loop {
            self.check()?;
            let got = self.counters.delivered.load(Ordering::Relaxed);
            if got > expected {
                return Err(format!("{got} events delivered, {expected} expected"));
            }
            if got == expected {
                return Ok(());
            }
            if start.elapsed() > timeout {
                return Err(format!(
                    "{} of {expected} events missing {timeout:?} after publishing stopped",
                    expected - got
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn check(&self) -> Result<(), String> {
        let c = &self.counters;
        let failed = c.failed.load(Ordering::Relaxed);
        if failed > 0 {
            return Err(format!(
                "{failed} subscribers failed; first: {}",
                c.first_error().unwrap_or_default()
            ));
        }
        let (gaps, dups) = (
            c.gaps.load(Ordering::Relaxed),
            c.duplicates.load(Ordering::Relaxed),
        );
        if gaps + dups > 0 {
            return Err(format!("{gaps} seq gaps and {dups} duplicates"));
        }
        Ok(())
    }

    async fn finish(self) {
        let _ = self.stop.send(true);
        let aborts: Vec<_> = self.tasks.iter().map(JoinHandle::abort_handle).collect();
        let all = futures_util::future::join_all(self.tasks);
        if tokio::time::timeout(Duration::from_secs(10), all)
            .await
            .is_err()
        {
            aborts.iter().for_each(tokio::task::AbortHandle::abort);
        }
    }
}

/// One measured window: the relay's samples and the events delivered from its start to its end.
struct Window {
    s0: Option<Sample>,
    s1: Option<Sample>,
    delivered: f64,
    secs: f64,
}

impl Window {
    /// Records latency for `duration`, sampling the relay and the delivered count at both ends.
    /// Recording is left on: the caller stops it when its events are all in.
    async fn record(
        target: &Target,
        counters: &Counters,
        duration: Duration,
    ) -> Result<Self, String> {
        let (s0, d0, t0) = (
            target.sample()?,
            counters.delivered.load(Ordering::Relaxed),
            Instant::now(),
        );
        counters.reset_latency();
        counters.recording.store(true, Ordering::Relaxed);
        tokio::time::sleep(duration).await;
        let (s1, d1, elapsed) = (
            target.sample()?,
            counters.delivered.load(Ordering::Relaxed),
            t0.elapsed(),
        );
        Ok(Self {
            s0,
            s1,
            delivered: (d1 - d0) as f64,
            secs: elapsed.as_secs_f64(),
        })
    }

    /// Delivered events per second and, where the relay was sampled, per CPU-second and its cores.
    fn push_rates(&self, m: &mut Measurement) {
        m.push(
            "delivered events/s",
            self.delivered / self.secs,
            Better::Higher,
        );
        if let (Some(s0), Some(s1)) = (&self.s0, &self.s1) {
            let cpu = s1.cpu_secs - s0.cpu_secs;
            m.push(
                "delivered events per relay CPU-second",
                self.delivered / cpu.max(0.01),
                Better::Higher,
            );
            m.push("relay CPU used (cores)", cpu / self.secs, Better::Neither);
        }
    }
}

/// The latency metrics: name and quantile.
const LATENCY_QUANTILES: [(&str, f64); 3] = [
    ("latency p50 (ms)", 0.5),
    ("latency p99 (ms)", 0.99),
    ("latency p99.9 (ms)", 0.999),
];

/// The latency at each of `quantiles` (a metric name, and the quantile), in ms.
fn push_latency(m: &mut Measurement, lat: &Histogram<u64>, quantiles: &[(&'static str, f64)]) {
    for &(name, q) in quantiles {
        m.push(name, ms(lat.value_at_quantile(q)), Better::Lower);
    }
}

fn run_name(prefix: &str, i: usize) -> String {
    format!("{prefix}-{i}")
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / 1024.0 / 1024.0
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

async fn idle(p: &Params, target: &Target, index: usize) -> Result<Measurement, String> {
    let before = target.sample()?;
    let subs = (0..p.clients)
        .map(|i| (run_name("idle", i % p.runs), None))
        .collect();
    let fleet = Fleet::spawn(p, target, index, subs, Some(p.connect_concurrency));
    let result = async {
        let took = fleet.ready(p.clients, p.timeout).await?;
        // Let the relay settle (buffers of the connect phase freed) before reading its memory.
        tokio::time::sleep(Duration::from_secs(2)).await;
        fleet.check()?;
        let after = target.sample()?;
        // Every connection must still be subscribed: one event per run reaches every client.
        let publisher = Publisher::new(target.addrs[0], &p.secret);
        let now = now_ns();
        let results: Vec<Result<(), String>> = futures_util::stream::iter(0..p.runs)
            .map(|r| {
                let publisher = publisher.clone();
                async move { publisher.ticks(&run_name("idle", r), &[now]).await }
            })
            .buffer_unordered(64)
            .collect()
            .await;
        results.into_iter().collect::<Result<Vec<()>, String>>()?;
        fleet
            .delivered(p.clients as u64, Duration::from_secs(30))
            .await?;
        let mut m = Measurement::default();
        if let (Some(before), Some(after)) = (before, after) {
            let per_conn =
                after.rss_bytes.saturating_sub(before.rss_bytes) as f64 / p.clients as f64;
            m.push(
                "relay memory per idle connection (bytes)",
                per_conn,
                Better::Lower,
            );
            m.push(
                "relay RSS, all connected (MiB)",
                mib(after.rss_bytes),
                Better::Lower,
            );
        }
        m.push(
            "connect and subscribe all (s)",
            took.as_secs_f64(),
            Better::Lower,
        );
        Ok(m)
    }
    .await;
    fleet.finish().await;
    result
}

async fn fanout(p: &Params, target: &Target, index: usize) -> Result<Measurement, String> {
    // A run of its own per measurement: with a shared broker (Redis), runs outlive relays.
    let run = format!("fanout-{index}");
    let subs = (0..p.clients).map(|_| (run.clone(), None)).collect();
    let fleet = Fleet::spawn(p, target, index, subs, Some(p.connect_concurrency));
    let result = async {
        fleet.ready(p.clients, p.timeout).await?;
        let counters = fleet.counters.clone();
        let publisher = Publisher::new(target.addrs[0], &p.secret);
        let n = p.clients as u64;
        let (batch, window) = (p.batch.max(1), p.window.max(p.batch as u64));
        let deadline = Instant::now() + p.warmup + p.duration;
        let published = Arc::new(AtomicU64::new(0));
        // Publishes while every subscriber is at most `window` events behind; stops at the
        // deadline, or at the timeout when delivery stalls.
        let pub_task = {
            let (counters, published, timeout) = (counters.clone(), published.clone(), p.timeout);
            let run = run.clone();
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    let sent = published.load(Ordering::Relaxed);
                    let want = sent.saturating_sub(window) * n;
                    let stalled = Instant::now();
                    while counters.delivered.load(Ordering::Relaxed) < want {
                        counters.wake_at.store(want, Ordering::Relaxed);
                        if counters.delivered.load(Ordering::Relaxed) >= want {
                            break;
                        }
                        let _ = tokio::time::timeout(
                            Duration::from_millis(50),
                            counters.wake.notified(),
                        )
                        .await;
                        if stalled.elapsed() > timeout {
                            return Err(format!("delivery stalled for {timeout:?}"));
                        }
                    }
                    counters.wake_at.store(0, Ordering::Relaxed);
                    let t = now_ns();
                    publisher.ticks(&run, &vec![t; batch]).await?;
                    published.fetch_add(batch as u64, Ordering::Relaxed);
                }
                Ok::<(), String>(())
            })
        };
        tokio::time::sleep(p.warmup).await;
        let window = Window::record(target, &counters, p.duration).await?;
        counters.recording.store(false, Ordering::Relaxed);
        pub_task.await.map_err(|e| e.to_string())??;
        fleet
            .delivered(
                published.load(Ordering::Relaxed) * n,
                Duration::from_secs(15),
            )
            .await?;
        let lat = counters.latency();
        let mut m = Measurement::default();
        window.push_rates(&mut m);
        if let Some(s1) = &window.s1 {
            m.push("relay RSS (MiB)", mib(s1.rss_bytes), Better::Lower);
        }
        push_latency(&mut m, &lat, &LATENCY_QUANTILES[..2]);
        Ok(m)
    }
    .await;
    fleet.finish().await;
    result
}

async fn many_runs(p: &Params, target: &Target, index: usize) -> Result<Measurement, String> {
    let subs = (0..p.clients)
        .map(|i| (run_name("many", i % p.runs), None))
        .collect();
    let mut per_run = vec![0u64; p.runs];
    for i in 0..p.clients {
        per_run[i % p.runs] += 1;
    }
    let fleet = Fleet::spawn(p, target, index, subs, Some(p.connect_concurrency));
    let result = async {
        fleet.ready(p.clients, p.timeout).await?;
        let counters = fleet.counters.clone();
        let publisher = Publisher::new(target.addrs[0], &p.secret);
        let total = (p.rate as f64 * (p.warmup + p.duration).as_secs_f64()) as u64;
        let period_ns = 1_000_000_000 / p.rate.max(1);
        let start = Instant::now() + Duration::from_millis(100);
        let start_ns = now_ns() + 100_000_000;
        let errors = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        // Open loop: event i is due at start + i × period whatever happened to earlier ones, and
        // carries its due time, so a relay that falls behind shows it as latency. At most 512
        // requests are in flight; a relay that holds more than that back delays the schedule,
        // which the due timestamps still charge to it.
        let pub_task = {
            let (per_run, errors) = (per_run.clone(), errors.clone());
            tokio::spawn(async move {
                let inflight = Arc::new(Semaphore::new(512));
                let mut expected = 0u64;
                for i in 0..total {
                    let due = start + Duration::from_nanos(i * period_ns);
                    tokio::time::sleep_until(due.into()).await;
                    let permit = inflight.clone().acquire_owned().await.expect("open");
                    let r = (i % per_run.len() as u64) as usize;
                    expected += per_run[r];
                    let (publisher, errors) = (publisher.clone(), errors.clone());
                    let t = start_ns + i * period_ns;
                    tokio::spawn(async move {
                        if let Err(e) = publisher.ticks(&run_name("many", r), &[t]).await {
                            errors.lock().expect("not poisoned").push(e);
                        }
                        drop(permit);
                    });
                }
                // Wait for the last requests.
                let _ = inflight.acquire_many(512).await;
                expected
            })
        };
        tokio::time::sleep_until((start + p.warmup).into()).await;
        let window = Window::record(target, &counters, p.duration).await?;
        let expected = pub_task.await.map_err(|e| e.to_string())?;
        if let Some(e) = errors.lock().expect("not poisoned").first() {
            return Err(e.clone());
        }
        fleet.delivered(expected, Duration::from_secs(15)).await?;
        counters.recording.store(false, Ordering::Relaxed);
        let lat = counters.latency();
        let mut m = Measurement::default();
        push_latency(&mut m, &lat, &LATENCY_QUANTILES);
        m.push("latency max (ms)", ms(lat.max()), Better::Lower);
        window.push_rates(&mut m);
        Ok(m)
    }
    .await;
    fleet.finish().await;
    result
}

async fn storm(p: &Params, target: &Target, index: usize) -> Result<Measurement, String> {
    // A history to resume from: every run has `history` events; clients saw the first half.
    let publisher = Publisher::new(target.addrs[0], &p.secret);
    let history = p.history.max(2);
    let now = now_ns();
    let results: Vec<Result<(), String>> = futures_util::stream::iter(0..p.runs)
        .map(|r| {
            let publisher = publisher.clone();
            async move {
                // Requests carry at most 1,000 events.
                let mut left = history as usize;
                while left > 0 {
                    let n = left.min(1000);
                    publisher
                        .ticks(&run_name("storm", r), &vec![now; n])
                        .await?;
                    left -= n;
                }
                Ok(())
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    results.into_iter().collect::<Result<Vec<()>, String>>()?;
    let since = history / 2;
    let subs = (0..p.clients)
        .map(|i| (run_name("storm", i % p.runs), Some(since)))
        .collect();
    let s0 = target.sample()?;
    let fleet = Fleet::spawn(p, target, index, subs, None);
    let result = async {
        let took = fleet.ready(p.clients, p.timeout).await?;
        let s1 = target.sample()?;
        let expected = p.clients as u64 * (history - since);
        fleet.delivered(expected, Duration::from_secs(5)).await?;
        let ready = fleet.counters.ready_times();
        let mut m = Measurement::default();
        m.push(
            "all subscribed and resumed (s)",
            took.as_secs_f64(),
            Better::Lower,
        );
        m.push(
            "resumed p50 (ms)",
            ready.value_at_quantile(0.5) as f64,
            Better::Lower,
        );
        m.push(
            "resumed p99 (ms)",
            ready.value_at_quantile(0.99) as f64,
            Better::Lower,
        );
        if let (Some(s0), Some(s1)) = (s0, s1) {
            m.push(
                "relay CPU for the storm (s)",
                s1.cpu_secs - s0.cpu_secs,
                Better::Lower,
            );
        }
        Ok(m)
    }
    .await;
    fleet.finish().await;
    result
}
