//! `runwire-bench soak`: the chaos soak. Several relays share one Redis (a server, or a 3-node
//! Cluster); subscribers spread over the relays (each through its own fault proxy) and over many
//! runs; a publisher posts events at a steady rate; a chaos driver SIGKILLs and restarts relays,
//! SIGKILLs and restarts Redis, and cuts every client connection of a proxy, at random.
//!
//! Every subscriber resumes after each disconnection with `since` and `epoch` and checks that the
//! seqs of its run arrive exactly once and in order. At the end, with every process back up and
//! the publisher stopped, every subscriber must reach the highest seq the relays acknowledged for
//! its run (every publish answered 2xx). The run passes with no gap, no duplicate, no `reset`
//! (unless Redis is run without persistence, when a `reset` is the allowed discontinuity and is
//! counted), relay memory under a bound, and no panic in any relay's log.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use futures_util::{SinkExt, StreamExt};
use runwire_bench::{procfs, publish};
use runwire_fault_proxy::Proxy;
use runwire_protocol::token::Scope;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

/// The Redis the relays share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RedisMode {
    /// One `redis-server`.
    Standalone,
    /// Three `redis-server`s in cluster mode, no replicas.
    Cluster,
}

/// `runwire-bench soak`.
#[derive(Debug, Parser)]
#[command(name = "runwire-bench soak")]
pub struct SoakArgs {
    /// One Redis server or a 3-node Cluster.
    #[arg(long, value_enum, default_value = "standalone")]
    redis_mode: RedisMode,
    /// Relays sharing the Redis.
    #[arg(long, default_value_t = 3)]
    relays: usize,
    /// Subscribers, spread over the relays and the runs.
    #[arg(long, default_value_t = 2000)]
    pub clients: usize,
    /// Runs.
    #[arg(long, default_value_t = 200)]
    runs: usize,
    /// Events published per second, all runs together.
    #[arg(long, default_value_t = 200)]
    rate: u64,
    /// Seconds of publishing under chaos.
    #[arg(long, default_value_t = 60.0)]
    duration: f64,
    /// Mean seconds between two chaos actions.
    #[arg(long, default_value_t = 5.0)]
    chaos_every: f64,
    /// Seconds the subscribers get, once everything is back up, to reach every acknowledged
    /// event.
    #[arg(long, default_value_t = 60.0)]
    drain: f64,
    /// Run Redis without persistence: a Redis restart loses the data, and the relays must
    /// answer `reset` (counted, allowed) instead of losing or repeating events silently.
    #[arg(long)]
    redis_loses_data: bool,
    /// Largest resident memory of any relay, MiB.
    #[arg(long, default_value_t = 1024)]
    max_rss_mib: u64,
    /// runwire's relay binary.
    #[arg(long, default_value = "target/release/runwire")]
    relay_bin: PathBuf,
    /// `redis-server`.
    #[arg(long, default_value = "redis-server")]
    redis_server: PathBuf,
    /// `redis-cli` (cluster creation).
    #[arg(long, default_value = "redis-cli")]
    redis_cli: PathBuf,
    /// Where the relays' and Redis' logs and Redis' data go (emptied first).
    #[arg(long, default_value = "target/soak")]
    dir: PathBuf,
    /// Random seed (default: from the clock); printed, so a run can be repeated.
    #[arg(long)]
    seed: Option<u64>,
}

const SECRET: &str = "runwire-soak-secret-0123456789abcdef012345";
/// Publishes in flight at once; beyond it the publisher falls behind its rate (and says so).
const PUBLISH_CONCURRENCY: usize = 64;
/// Attempts of one publish (after a 503 or a connection error) before it is given up.
const PUBLISH_ATTEMPTS: usize = 20;

/// A small xorshift generator: the soak needs reproducible choices, not cryptography.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    /// Uniform in `[lo, hi)` seconds.
    fn secs(&mut self, lo: f64, hi: f64) -> Duration {
        let f = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        Duration::from_secs_f64(lo + (hi - lo) * f)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A free loopback port (bound, then released for the process that will own it).
fn free_port() -> std::io::Result<u16> {
    Ok(StdListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A port for a Redis node that is free, with its cluster-bus port (+10,000), and below the
/// kernel's range of ephemeral ports: a node restarted by the chaos takes its port again, which
/// an outgoing connection could otherwise have been given meanwhile.
fn free_node_port(rng: &mut Rng) -> Result<u16, String> {
    for _ in 0..1000 {
        let port = 12_000 + rng.below(10_000) as u16;
        if StdListener::bind(("127.0.0.1", port)).is_ok()
            && StdListener::bind(("127.0.0.1", port + 10_000)).is_ok()
        {
            return Ok(port);
        }
    }
    Err("no free port for a Redis node in 12000-21999 (and +10000)".into())
}

/// Counters of the whole soak.
#[derive(Debug, Default)]
struct Tally {
    published: AtomicU64,
    publish_503: AtomicU64,
    publish_conn_errors: AtomicU64,
    publish_other_errors: AtomicU64,
    publish_given_up: AtomicU64,
    publish_behind: AtomicU64,
    delivered: AtomicU64,
    gaps: AtomicU64,
    duplicates: AtomicU64,
    resets: AtomicU64,
    reconnects: AtomicU64,
    broker_unavailable: AtomicU64,
    protocol_errors: AtomicU64,
    relay_kills: AtomicU64,
    relay_start_failures: AtomicU64,
    redis_restarts: AtomicU64,
    cuts: AtomicU64,
    first_problem: Mutex<Option<String>>,
}

impl Tally {
    fn problem(&self, counter: &AtomicU64, why: impl FnOnce() -> String) {
        counter.fetch_add(1, Ordering::Relaxed);
        let mut first = lock(&self.first_problem);
        if first.is_none() {
            let why = why();
            eprintln!("soak: {why}");
            *first = Some(why);
        }
    }
}

/// One relay process, restarted on the same port.
#[derive(Debug)]
struct Relay {
    index: usize,
    addr: SocketAddr,
    child: Option<Child>,
    pid: Option<u32>,
}

impl Relay {
    async fn start(&mut self, bin: &Path, redis_url: &str, dir: &Path) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(format!("relay-{}.log", self.index)))
            .map_err(|e| e.to_string())?;
        let mut child = Command::new(bin)
            .args([
                "serve",
                "--addr",
                &self.addr.to_string(),
                "--redis",
                redis_url,
            ])
            .env("RUNWIRE_SECRET", SECRET)
            // Info: the relay logs its reconnections and head-check catch-ups there, the trail a
            // subscriber left behind would be traced by.
            .env("RUST_LOG", "warn,runwire=info,runwire_relay=info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", bin.display()))?;
        let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
        match tokio::time::timeout(Duration::from_secs(20), lines.next_line()).await {
            Ok(Ok(Some(line))) if line.starts_with("listening on") => {}
            _ => {
                let _ = child.kill().await;
                return Err(format!("relay {} did not start", self.index));
            }
        }
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        self.pid = child.id();
        self.child = Some(child);
        Ok(())
    }

    async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
        self.pid = None;
    }
}

/// One `redis-server` process, restarted on the same port with the same data directory.
#[derive(Debug)]
struct RedisNode {
    port: u16,
    dir: PathBuf,
    cluster: bool,
    persist: bool,
    child: Option<Child>,
}

impl RedisNode {
    async fn start(&mut self, bin: &Path) -> Result<(), String> {
        std::fs::create_dir_all(&self.dir).map_err(|e| e.to_string())?;
        let mut args: Vec<String> = [
            "--port",
            &self.port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--dir",
            &self.dir.display().to_string(),
            "--logfile",
            "redis.log",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if self.persist {
            // Every acknowledged write is on disk before the reply: a SIGKILL loses nothing.
            args.extend(["--appendonly", "yes", "--appendfsync", "always"].map(String::from));
        } else {
            args.extend(["--appendonly", "no"].map(String::from));
        }
        if self.cluster {
            args.extend(
                [
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "2000",
                    "--cluster-require-full-coverage",
                    "no",
                ]
                .map(String::from),
            );
        }
        let child = Command::new(bin)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", bin.display()))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .is_err()
        {
            if Instant::now() > deadline {
                return Err(format!("redis-server on port {} did not start", self.port));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }
}

/// What the subscribers and the publisher share.
#[derive(Debug)]
struct Shared {
    tally: Tally,
    /// Per run: the seqs the relays acknowledged (2xx) since the last data loss.
    accepted: Vec<Mutex<BTreeSet<u64>>>,
    /// Per subscriber: the last seq it received in order.
    last: Vec<AtomicU64>,
    /// Proxies in front of the relays, one per relay.
    proxies: Vec<SocketAddr>,
    runs: Vec<String>,
    token: String,
    /// Redis runs without persistence: after a restart seqs start again, so a seq acknowledged
    /// twice is expected (once per epoch).
    loses_data: bool,
}

/// Runs the soak; the exit code says whether it passed.
pub fn main(args: SoakArgs) -> ExitCode {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match rt.block_on(soak(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("runwire-bench soak: {e}");
            ExitCode::from(2)
        }
    }
}

async fn soak(args: SoakArgs) -> Result<bool, String> {
    let seed = args.seed.unwrap_or_else(|| publish_seed() | 1);
    let mut rng = Rng(seed);
    let dir = std::path::absolute(&args.dir).map_err(|e| e.to_string())?;
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    println!(
        "soak: {} relays on {:?} Redis{}, {} subscribers over {} runs, {} events/s, {}s of chaos \
         every ~{}s, seed {seed}",
        args.relays,
        args.redis_mode,
        if args.redis_loses_data {
            " without persistence"
        } else {
            " (AOF, fsync always)"
        },
        args.clients,
        args.runs,
        args.rate,
        args.duration,
        args.chaos_every
    );
    println!("machine: {}", procfs::machine());
    println!("load at start: {}", load_average());

    // Redis.
    let nodes_n = match args.redis_mode {
        RedisMode::Standalone => 1,
        RedisMode::Cluster => 3,
    };
    let mut nodes = Vec::new();
    // Its own generator: a seed repeats the same chaos whatever ports were taken.
    let mut ports = Rng(publish_seed() | 1);
    for i in 0..nodes_n {
        let port = free_node_port(&mut ports)?;
        let mut node = RedisNode {
            port,
            dir: dir.join(format!("redis-{i}")),
            cluster: args.redis_mode == RedisMode::Cluster,
            persist: !args.redis_loses_data,
            child: None,
        };
        node.start(&args.redis_server).await?;
        nodes.push(node);
    }
    let redis_url = match args.redis_mode {
        RedisMode::Standalone => format!("redis://127.0.0.1:{}", nodes[0].port),
        RedisMode::Cluster => {
            create_cluster(&args.redis_cli, &nodes).await?;
            let seeds: Vec<String> = nodes
                .iter()
                .map(|n| format!("127.0.0.1:{}", n.port))
                .collect();
            format!("redis+cluster://{}", seeds.join(","))
        }
    };

    // Relays, each behind a fault proxy.
    let mut relays = Vec::new();
    let mut proxies = Vec::new();
    let mut proxy_addrs = Vec::new();
    for index in 0..args.relays.max(1) {
        let port = free_port().map_err(|e| e.to_string())?;
        let mut relay = Relay {
            index,
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            child: None,
            pid: None,
        };
        relay.start(&args.relay_bin, &redis_url, &dir).await?;
        let proxy = Proxy::new(relay.addr);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| e.to_string())?;
        proxy_addrs.push(listener.local_addr().map_err(|e| e.to_string())?);
        tokio::spawn(runwire_fault_proxy::serve(listener, proxy.clone()));
        proxies.push(proxy);
        relays.push(relay);
    }

    let stamp = publish_seed() % 1_000_000_000;
    let runs: Vec<String> = (0..args.runs.max(1))
        .map(|r| format!("soak-{stamp}-{r}"))
        .collect();
    let shared = Arc::new(Shared {
        tally: Tally::default(),
        accepted: runs.iter().map(|_| Mutex::default()).collect(),
        last: (0..args.clients).map(|_| AtomicU64::new(0)).collect(),
        proxies: proxy_addrs,
        runs,
        token: publish::token(SECRET, "*", Scope::Subscribe),
        loses_data: args.redis_loses_data,
    });
    let relay_addrs: Vec<SocketAddr> = relays.iter().map(|r| r.addr).collect();

    // Subscribers, connected before publishing starts.
    let (stop_tx, stop_rx) = watch::channel(false);
    let ready = Arc::new(AtomicU64::new(0));
    let mut subscribers = Vec::new();
    let gate = Arc::new(tokio::sync::Semaphore::new(128));
    for id in 0..args.clients {
        let (shared, stop, ready, gate) =
            (shared.clone(), stop_rx.clone(), ready.clone(), gate.clone());
        subscribers.push(tokio::spawn(subscriber(id, shared, stop, ready, gate)));
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while ready.load(Ordering::Relaxed) < args.clients as u64 {
        if Instant::now() > deadline {
            return Err(format!(
                "only {} of {} subscribers subscribed in 120 s",
                ready.load(Ordering::Relaxed),
                args.clients
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("{} subscribers subscribed", args.clients);

    // Memory of every relay, every second.
    let peak_rss = Arc::new(AtomicU64::new(0));
    let pids = Arc::new(Mutex::new(relays.iter().map(|r| r.pid).collect::<Vec<_>>()));
    let sampler = {
        let (peak, pids, mut stop) = (peak_rss.clone(), pids.clone(), stop_rx.clone());
        tokio::spawn(async move {
            loop {
                for pid in lock(&pids).iter().flatten() {
                    if let Ok(s) = procfs::sample(*pid) {
                        peak.fetch_max(s.rss_bytes, Ordering::Relaxed);
                    }
                }
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        })
    };

    // The publisher.
    let (pub_stop_tx, pub_stop_rx) = watch::channel(false);
    let publisher = tokio::spawn(publisher(
        shared.clone(),
        relay_addrs,
        args.rate.max(1),
        pub_stop_rx,
        rng.next(),
    ));

    // Chaos.
    let started = Instant::now();
    let duration = Duration::from_secs_f64(args.duration);
    while started.elapsed() < duration {
        let wait = rng.secs(args.chaos_every * 0.5, args.chaos_every * 1.5);
        tokio::time::sleep(wait.min(duration.saturating_sub(started.elapsed()))).await;
        if started.elapsed() >= duration {
            break;
        }
        let t = &shared.tally;
        match rng.below(10) {
            0..5 => {
                let k = rng.below(relays.len());
                relays[k].kill().await;
                lock(&pids)[k] = None;
                t.relay_kills.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(rng.secs(0.2, 2.0)).await;
                restart_relay(&mut relays[k], &args, &redis_url, &dir, t).await;
                lock(&pids)[k] = relays[k].pid;
            }
            5..8 => {
                let k = rng.below(proxies.len());
                proxies[k].cut();
                t.cuts.fetch_add(1, Ordering::Relaxed);
            }
            _ => {
                let k = rng.below(nodes.len());
                nodes[k].kill().await;
                t.redis_restarts.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(rng.secs(0.2, 1.5)).await;
                nodes[k].start(&args.redis_server).await?;
            }
        }
    }
    // Everything back up, publishing stopped, then the subscribers catch up.
    for (k, relay) in relays.iter_mut().enumerate() {
        if relay.child.is_none() {
            restart_relay(relay, &args, &redis_url, &dir, &shared.tally).await;
            lock(&pids)[k] = relay.pid;
        }
    }
    let _ = pub_stop_tx.send(true);
    let _ = publisher.await;
    let published_for = started.elapsed();
    let drain_deadline = Instant::now() + Duration::from_secs_f64(args.drain);
    let behind = loop {
        let behind = lagging(&shared, args.clients);
        if behind.is_empty() || Instant::now() > drain_deadline {
            break behind;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // What Redis holds for the runs left behind, read before anything stops: whether the
    // acknowledged events are stored (the relays did not deliver them) or not (Redis lost them).
    let mut stored = Vec::new();
    let mut runs_behind: Vec<usize> = behind
        .iter()
        .map(|(id, _, _)| id % shared.runs.len())
        .collect();
    runs_behind.sort_unstable();
    runs_behind.dedup();
    for run in runs_behind.into_iter().take(3) {
        let name = &shared.runs[run];
        stored.push(format!(
            "{name}: stored head and epoch {}",
            stored_head(&args.redis_cli, nodes[0].port, name).await
        ));
    }
    if !behind.is_empty() {
        // How each relay sees itself and its Redis while subscribers are left behind, kept with
        // its log.
        for relay in &relays {
            let report = relay_report(relay.addr).await;
            let path = dir.join(format!("relay-{}.state", relay.index));
            if let Err(e) = std::fs::write(&path, report) {
                eprintln!("soak: writing {}: {e}", path.display());
            }
        }
    }
    let _ = stop_tx.send(true);
    for s in subscribers {
        let _ = s.await;
    }
    let _ = sampler.await;
    for relay in &mut relays {
        relay.kill().await;
    }
    for node in &mut nodes {
        node.kill().await;
    }

    // The verdict.
    let t = &shared.tally;
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let panics = panics_in_logs(&dir);
    let peak_mib = get(&peak_rss) / (1024 * 1024);
    let resets = get(&t.resets);
    println!(
        "\nsoak results after {:.0} s of publishing:",
        published_for.as_secs_f64()
    );
    println!(
        "  events acknowledged (2xx)  {} ({:.0}/s)",
        get(&t.published),
        get(&t.published) as f64 / published_for.as_secs_f64()
    );
    // Also counts events a relay appended but could not acknowledge (it was killed mid-request):
    // the retry appends the event again under a new seq, which subscribers receive like any other.
    println!("  events delivered           {}", get(&t.delivered));
    println!(
        "  publish retries            {} (503) + {} (connection errors) + {} (other); {} given up; \
         {} ticks behind the rate",
        get(&t.publish_503),
        get(&t.publish_conn_errors),
        get(&t.publish_other_errors),
        get(&t.publish_given_up),
        get(&t.publish_behind)
    );
    println!(
        "  chaos                      {} relay SIGKILLs, {} Redis restarts, {} proxy cuts \
         ({} relay starts failed and were retried)",
        get(&t.relay_kills),
        get(&t.redis_restarts),
        get(&t.cuts),
        get(&t.relay_start_failures)
    );
    println!(
        "  subscriber reconnects      {} ({} broker_unavailable answers)",
        get(&t.reconnects),
        get(&t.broker_unavailable)
    );
    println!("  gaps (lost)                {}", get(&t.gaps));
    println!("  duplicates                 {}", get(&t.duplicates));
    println!("  resets                     {resets}");
    println!("  protocol errors            {}", get(&t.protocol_errors));
    println!("  behind after the drain     {} subscribers", behind.len());
    println!(
        "  peak relay RSS             {peak_mib} MiB (bound {} MiB)",
        args.max_rss_mib
    );
    println!("  panics in relay logs       {}", panics.len());
    println!("  load at end                {}", load_average());
    if let Some(first) = lock(&t.first_problem).as_ref() {
        println!("  first problem              {first}");
    }
    for (id, last, want) in behind.iter().take(5) {
        println!(
            "  subscriber {id} ({}) at seq {last}, acknowledged up to {want}",
            shared.runs[id % shared.runs.len()]
        );
    }
    for line in &stored {
        println!("  {line}");
    }
    if !behind.is_empty() {
        println!("  relay logs: {}", dir.display());
    }
    for line in panics.iter().take(5) {
        println!("  {line}");
    }
    // Without persistence the acknowledged heads of lost epochs are not comparable with the new
    // seqs, so only continuity (and `reset` as the one discontinuity) is checked.
    let resets_ok = resets == 0 || args.redis_loses_data;
    let caught_up = behind.is_empty() || args.redis_loses_data;
    let pass = get(&t.gaps) == 0
        && get(&t.duplicates) == 0
        && get(&t.protocol_errors) == 0
        && resets_ok
        && caught_up
        && panics.is_empty()
        && peak_mib <= args.max_rss_mib
        && get(&t.published) > 0;
    println!("{}", if pass { "PASS" } else { "FAIL" });
    Ok(pass)
}

async fn restart_relay(relay: &mut Relay, args: &SoakArgs, url: &str, dir: &Path, t: &Tally) {
    // Redis may be restarting too: a relay refuses to start without it, so try again.
    for _ in 0..60 {
        match relay.start(&args.relay_bin, url, dir).await {
            Ok(()) => return,
            Err(_) => {
                t.relay_start_failures.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    eprintln!("soak: relay {} would not start again", relay.index);
}

/// Subscribers that have not reached their run's highest acknowledged seq:
/// `(subscriber, its last seq, the acknowledged head)`.
fn lagging(shared: &Shared, clients: usize) -> Vec<(usize, u64, u64)> {
    let heads: Vec<u64> = shared
        .accepted
        .iter()
        .map(|a| lock(a).last().copied().unwrap_or(0))
        .collect();
    (0..clients)
        .filter_map(|id| {
            let last = shared.last[id].load(Ordering::Relaxed);
            let want = heads[id % heads.len()];
            (last < want).then_some((id, last, want))
        })
        .collect()
}

/// A relay's `/health` and the lines of its `/metrics` that say how its Redis broker does.
async fn relay_report(addr: SocketAddr) -> String {
    let http = reqwest::Client::new();
    let mut report = String::new();
    for path in ["health", "metrics"] {
        let got = http
            .get(format!("http://{addr}/{path}"))
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        let text = match got {
            Ok(resp) => resp.text().await.unwrap_or_else(|e| e.to_string()),
            Err(e) => format!("GET /{path}: {e}"),
        };
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            if path == "health" || line.contains("redis") || line.contains("subscriptions") {
                report.push_str(line);
                report.push('\n');
            }
        }
    }
    report
}

/// `HMGET` of a run's head and epoch, through any node (`-c` follows a cluster's redirects).
async fn stored_head(cli: &Path, port: u16, run: &str) -> String {
    let out = Command::new(cli)
        .args(["-c", "-p", &port.to_string(), "HMGET"])
        .arg(format!("runwire:{{{run}}}:meta"))
        .args(["head", "epoch"])
        .output()
        .await;
    match out {
        Ok(out) => String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" "),
        Err(e) => format!("(redis-cli: {e})"),
    }
}

fn panics_in_logs(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "log") {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            for line in text.lines().filter(|l| l.contains("panicked")) {
                found.push(format!("{}: {line}", path.display()));
            }
        }
    }
    found
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn publish_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
}

async fn create_cluster(cli: &Path, nodes: &[RedisNode]) -> Result<(), String> {
    let mut cmd = Command::new(cli);
    cmd.arg("--cluster").arg("create");
    for n in nodes {
        cmd.arg(format!("127.0.0.1:{}", n.port));
    }
    let out = cmd
        .arg("--cluster-yes")
        .output()
        .await
        .map_err(|e| format!("redis-cli: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        ));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut ok = true;
        for n in nodes {
            let info = Command::new(cli)
                .args(["-p", &n.port.to_string(), "cluster", "info"])
                .output()
                .await
                .map_err(|e| format!("redis-cli: {e}"))?;
            ok &= String::from_utf8_lossy(&info.stdout).contains("cluster_state:ok");
        }
        if ok {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err("the cluster did not reach cluster_state:ok in 30 s".into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Posts `soak.tick` events at `rate` per second, round-robin over the runs and the relays.
async fn publisher(
    shared: Arc<Shared>,
    relays: Vec<SocketAddr>,
    rate: u64,
    mut stop: watch::Receiver<bool>,
    seed: u64,
) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .pool_idle_timeout(Duration::from_secs(2))
        .build()
        .expect("HTTP client");
    let token = Arc::new(publish::token(SECRET, "*", Scope::Publish));
    let slots = Arc::new(tokio::sync::Semaphore::new(PUBLISH_CONCURRENCY));
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n = 0u64;
    let mut inflight = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            _ = tick.tick() => {}
        }
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            shared.tally.publish_behind.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let run = (n as usize) % shared.runs.len();
        let first = ((n ^ seed) as usize) % relays.len();
        n += 1;
        let (http, token, relays, shared) =
            (http.clone(), token.clone(), relays.clone(), shared.clone());
        inflight.spawn(async move {
            let _permit = permit;
            publish_one(&http, &token, &relays, first, run, n, &shared).await;
        });
        while inflight.try_join_next().is_some() {}
    }
    while inflight.join_next().await.is_some() {}
}

/// One event, retried on another relay after a 503 or a connection error.
async fn publish_one(
    http: &reqwest::Client,
    token: &str,
    relays: &[SocketAddr],
    first: usize,
    run: usize,
    n: u64,
    shared: &Shared,
) {
    let t = &shared.tally;
    let body = json!({"event": "soak.tick", "data": {"n": n}}).to_string();
    for attempt in 0..PUBLISH_ATTEMPTS {
        let addr = relays[(first + attempt) % relays.len()];
        let url = format!("http://{addr}/v1/runs/{}/events", shared.runs[run]);
        let sent = http
            .post(&url)
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await;
        match sent {
            Ok(resp) if resp.status().is_success() => {
                let seqs = resp
                    .json::<Value>()
                    .await
                    .ok()
                    .and_then(|v| v["seqs"].as_array().and_then(|a| a.first()?.as_u64()));
                let Some(seq) = seqs else {
                    t.problem(&t.protocol_errors, || {
                        format!("publish to {url}: no seq in the 2xx answer")
                    });
                    return;
                };
                if !lock(&shared.accepted[run]).insert(seq) && !shared.loses_data {
                    t.problem(&t.duplicates, || {
                        format!("{}: seq {seq} acknowledged twice", shared.runs[run])
                    });
                }
                t.published.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Ok(resp) if resp.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE => {
                t.publish_503.fetch_add(1, Ordering::Relaxed);
            }
            Ok(resp) => {
                let status = resp.status();
                let text = resp.text().await.unwrap_or_default();
                t.problem(&t.publish_other_errors, || {
                    format!("publish to {url}: {status} {text:.200}")
                });
            }
            // The relay died or was not up: the event may or may not have been appended; a
            // retry appends it (again), under a seq the subscribers must see once like any other.
            Err(_) => {
                t.publish_conn_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        tokio::time::sleep(Duration::from_millis(100 + 50 * attempt as u64)).await;
    }
    t.publish_given_up.fetch_add(1, Ordering::Relaxed);
}

/// One subscriber: subscribes to its run through a relay's proxy, checks each event's seq, and
/// resumes (`since`, `epoch`) through the next relay after every disconnection.
async fn subscriber(
    id: usize,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    ready: Arc<AtomicU64>,
    gate: Arc<tokio::sync::Semaphore>,
) {
    let t = &shared.tally;
    let run = &shared.runs[id % shared.runs.len()];
    let mut last = 0u64;
    let mut epoch: Option<String> = None;
    let mut subscribed_once = false;
    for attempt in 0usize.. {
        if *stop.borrow() {
            return;
        }
        if attempt > 0 {
            t.reconnects.fetch_add(1, Ordering::Relaxed);
            let backoff = Duration::from_millis(100 + ((id * 37 + attempt * 101) % 400) as u64);
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                _ = tokio::time::sleep(backoff) => {}
            }
        }
        let proxy = shared.proxies[(id + attempt) % shared.proxies.len()];
        let connect = async {
            let _permit = gate.acquire().await;
            tokio_tungstenite::connect_async(format!("ws://{proxy}/v1/ws")).await
        };
        let mut ws = match tokio::time::timeout(Duration::from_secs(10), connect).await {
            Ok(Ok((ws, _))) => ws,
            _ => continue,
        };
        let mut subscribe = json!({"type": "subscribe", "run": run, "since": last});
        if let Some(e) = &epoch {
            subscribe["epoch"] = json!(e);
        }
        let hello = [
            json!({"type": "auth", "token": shared.token}).to_string(),
            subscribe.to_string(),
        ];
        let mut sent = true;
        for text in hello {
            sent &= ws.send(Message::text(text)).await.is_ok();
        }
        if !sent {
            continue;
        }
        loop {
            let msg = tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                msg = ws.next() => msg,
            };
            let text = match msg {
                Some(Ok(Message::Text(text))) => text,
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => continue,
            };
            let Ok(frame) = serde_json::from_str::<Value>(text.as_str()) else {
                t.problem(&t.protocol_errors, || format!("not JSON: {text:.200}"));
                break;
            };
            match frame["type"].as_str().unwrap_or("") {
                "welcome" | "pong" => {}
                "subscribed" => {
                    let head = frame["seq"].as_u64().unwrap_or(0);
                    // Empty: the run has no events yet (the Redis broker creates nothing for a
                    // read), and its first event brings the epoch.
                    let e = frame["epoch"]
                        .as_str()
                        .filter(|e| !e.is_empty())
                        .map(str::to_owned);
                    if epoch.is_some() && e != epoch {
                        t.problem(&t.protocol_errors, || {
                            format!("{run}: epoch changed from {epoch:?} to {e:?} without reset")
                        });
                    }
                    if head < last {
                        t.problem(&t.gaps, || {
                            format!("{run}: head {head} below the {last} already received")
                        });
                    }
                    epoch = e;
                    if !subscribed_once {
                        subscribed_once = true;
                        ready.fetch_add(1, Ordering::Relaxed);
                    }
                }
                "reset" => {
                    let seq = frame["seq"].as_u64().unwrap_or(0);
                    t.resets.fetch_add(1, Ordering::Relaxed);
                    eprintln!("soak: {run}: reset at seq {seq} (had {last})");
                    last = seq;
                    shared.last[id].store(last, Ordering::Relaxed);
                    epoch = frame["epoch"].as_str().map(str::to_owned);
                    if !subscribed_once {
                        subscribed_once = true;
                        ready.fetch_add(1, Ordering::Relaxed);
                    }
                }
                "event" => {
                    let seq = frame["seq"].as_u64().unwrap_or(0);
                    if seq <= last {
                        t.problem(&t.duplicates, || {
                            format!("{run}: seq {seq} again (last {last}) at subscriber {id}")
                        });
                    } else {
                        if seq != last + 1 {
                            t.problem(&t.gaps, || {
                                format!("{run}: seq {seq} after {last} at subscriber {id}")
                            });
                        }
                        last = seq;
                        shared.last[id].store(last, Ordering::Relaxed);
                        t.delivered.fetch_add(1, Ordering::Relaxed);
                    }
                }
                "error" if frame["code"] == "broker_unavailable" => {
                    t.broker_unavailable.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                _ => {
                    t.problem(&t.protocol_errors, || {
                        format!("{run}: unexpected {text:.200}")
                    });
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_reproducible_and_in_range() {
        let (mut a, mut b) = (Rng(7), Rng(7));
        for _ in 0..100 {
            assert_eq!(a.next(), b.next());
            let k = a.below(3);
            assert!(k < 3);
            assert_eq!(b.below(3), k);
            let d = a.secs(0.5, 1.5);
            assert!(d >= Duration::from_secs_f64(0.5) && d < Duration::from_secs_f64(1.5));
            assert_eq!(b.secs(0.5, 1.5), d);
        }
    }
}
