//! `runwire-bench SCENARIO`: see `docs/benchmarks.md`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use runwire_bench::driver::System;
use runwire_bench::scenario::{Params, Scenario};
use runwire_bench::server::{Launch, parse_relay_url};
use runwire_bench::{Relays, compare, procfs};

/// Measures runwire against Node relays on loopback and prints a comparison table.
#[derive(Debug, Parser)]
#[command(name = "runwire-bench")]
struct Args {
    /// The scenario.
    #[arg(value_enum)]
    scenario: Scenario,
    /// Systems to measure; ratios are of the first to each other.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "runwire,node-ws,socketio"
    )]
    systems: Vec<System>,
    /// Rounds; each measures every system once, in rotating order.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Subscribers (default: the scenario's full size).
    #[arg(long)]
    clients: Option<usize>,
    /// Runs the subscribers are spread over (default: the scenario's).
    #[arg(long)]
    runs: Option<usize>,
    /// many-runs: events per second, all runs together.
    #[arg(long, default_value_t = 2000)]
    rate: u64,
    /// fanout: events per publish request.
    #[arg(long, default_value_t = 10)]
    batch: usize,
    /// fanout: events a subscriber may lag behind the publisher.
    #[arg(long, default_value_t = 20)]
    window: u64,
    /// Seconds measured after the warm-up.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of publishing before measuring.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// storm: events per run before the storm; clients resume from the middle.
    #[arg(long, default_value_t = 20)]
    history: u64,
    /// Connections set up at once outside the storm.
    #[arg(long, default_value_t = 256)]
    connect_concurrency: usize,
    /// Source addresses 127.0.x.y to spread subscribers over (0: one per 16,000).
    #[arg(long, default_value_t = 0)]
    sources: usize,
    /// Seconds any phase may take before the measurement fails.
    #[arg(long, default_value_t = 120.0)]
    timeout: f64,
    /// runwire's relay binary.
    #[arg(long, default_value = "target/release/runwire")]
    relay_bin: PathBuf,
    /// An extra argument for `runwire serve` (repeat for several).
    #[arg(long = "relay-arg", allow_hyphen_values = true)]
    relay_args: Vec<String>,
    /// The Node peers' folder (after `npm ci`).
    #[arg(long, default_value = "bench/peers")]
    peers_dir: PathBuf,
    /// Relays per system, sharing `--redis` (scenario 5).
    #[arg(long, default_value_t = 1)]
    instances: usize,
    /// Redis URL every started relay shares (scenario 5: with `--instances 2`).
    #[arg(long)]
    redis: Option<String>,
    /// Measure relays that are already running (loopback URLs, comma-separated) instead of
    /// starting them; with exactly one system.
    #[arg(long, value_delimiter = ',')]
    relays: Vec<String>,
    /// Process ids of `--relays`, for memory and CPU.
    #[arg(long, value_delimiter = ',')]
    relay_pids: Vec<u32>,
    /// Do not pin the relay and the load tool to separate cores.
    #[arg(long)]
    no_pin: bool,
    /// Where the servers' stderr goes.
    #[arg(long, default_value = "target/bench-logs")]
    log_dir: PathBuf,
}

const SECRET: &str = "runwire-bench-secret-0123456789abcdef0123";

mod soak;

fn main() -> ExitCode {
    // `runwire-bench soak …`: the chaos soak, with flags of its own.
    if std::env::args().nth(1).as_deref() == Some("soak") {
        let args = soak::SoakArgs::parse_from(std::env::args().skip(1));
        // Per subscriber: its socket and the proxy's two.
        if let Err(e) = raise_nofile(args.clients as u64 * 3 + 2048) {
            eprintln!("runwire-bench: {e}");
            return ExitCode::from(2);
        }
        return soak::main(args);
    }
    // `runwire-bench floor …`: the floor system itself, started by the tool like any relay.
    if std::env::args().nth(1).as_deref() == Some("floor") {
        let rest: Vec<String> = std::env::args().skip(2).collect();
        return runwire_bench::floor::main(&rest);
    }
    let args = Args::parse();
    if args.systems.contains(&System::Floor) && args.scenario == Scenario::Storm {
        eprintln!(
            "runwire-bench: the floor does not resume, so it has no storm; drop it from --systems"
        );
        return ExitCode::from(2);
    }
    let (default_clients, default_runs) = args.scenario.defaults();
    let clients = args.clients.unwrap_or(default_clients).max(1);
    let runs = args.runs.unwrap_or(default_runs).clamp(1, clients);
    // One descriptor per subscriber, here and in the relay, plus the publisher's connections.
    if let Err(e) = raise_nofile(clients as u64 + 2048) {
        eprintln!("runwire-bench: {e}");
        return ExitCode::from(2);
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // Servers on core 0, the load tool on the rest; pinned before any thread exists, so every
    // thread of the tool inherits it.
    let pin = !args.no_pin && cores >= 2 && args.relays.is_empty();
    if pin {
        let me = std::process::id().to_string();
        let others = format!("1-{}", cores - 1);
        let ok = std::process::Command::new("taskset")
            .args(["-p", "-c", &others, &me])
            .stdout(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("runwire-bench: taskset failed; pass --no-pin to run unpinned");
            return ExitCode::from(2);
        }
    }
    let relays = if args.relays.is_empty() {
        Relays::Start {
            launch: Launch {
                relay_bin: args.relay_bin.clone(),
                relay_args: args.relay_args.clone(),
                peers_dir: args.peers_dir.clone(),
                secret: SECRET.to_owned(),
                pin: pin.then_some(0),
                redis: args.redis.clone(),
                log_dir: args.log_dir.clone(),
            },
            instances: args.instances,
        }
    } else {
        if args.systems.len() != 1 {
            eprintln!("runwire-bench: --relays measures exactly one system; pass --systems");
            return ExitCode::from(2);
        }
        let addrs: Result<Vec<_>, _> = args.relays.iter().map(|u| parse_relay_url(u)).collect();
        match addrs {
            Ok(addrs) => Relays::External {
                addrs,
                pids: args.relay_pids.clone(),
            },
            Err(e) => {
                eprintln!("runwire-bench: {e}");
                return ExitCode::from(2);
            }
        }
    };
    let params = Params {
        scenario: args.scenario,
        clients,
        runs,
        rate: args.rate.max(1),
        batch: args.batch,
        window: args.window,
        duration: Duration::from_secs_f64(args.duration),
        warmup: Duration::from_secs_f64(args.warmup),
        history: args.history,
        connect_concurrency: args.connect_concurrency,
        sources: args.sources,
        timeout: Duration::from_secs_f64(args.timeout),
        secret: std::env::var("RUNWIRE_BENCH_SECRET").unwrap_or_else(|_| SECRET.to_owned()),
    };
    let workers = if pin { cores - 1 } else { cores };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers.max(1))
        .enable_all()
        .build()
        .expect("tokio runtime");
    println!(
        "scenario {:?}: {clients} clients over {runs} runs{}; {} rounds of {}",
        args.scenario,
        match args.scenario {
            Scenario::ManyRuns => format!(", {} events/s", params.rate),
            Scenario::Storm => format!(
                ", resuming {} of {} events",
                params.history - params.history.max(2) / 2,
                params.history.max(2)
            ),
            _ => String::new(),
        },
        args.rounds,
        args.systems
            .iter()
            .map(|s| s.name())
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("machine: {}", procfs::machine());
    println!(
        "pinning: {}",
        if pin {
            "relays on core 0, load tool on the others"
        } else {
            "none"
        }
    );
    let results = rt.block_on(compare(&params, &args.systems, args.rounds, &relays));
    println!("\n{}", results.table());
    let failed: usize = results.errors.values().map(Vec::len).sum();
    let measured: usize = results.runs.values().map(Vec::len).sum();
    println!("{measured} passed, {failed} failed");
    if failed > 0 || measured == 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Raises the open-file limit to at least `want`: the soft limit up to the hard one, and the hard
/// one too where the process may (root with `CAP_SYS_RESOURCE`). Fails, saying how far it got,
/// when `want` is out of reach; the relay, started by this process, inherits the same limit.
fn raise_nofile(want: u64) -> Result<(), String> {
    let nofile = rlimit::Resource::NOFILE;
    let (soft, hard) = nofile.get().map_err(|e| e.to_string())?;
    if soft >= want {
        return Ok(());
    }
    if nofile.set(want, hard.max(want)).is_ok() {
        return Ok(());
    }
    let _ = nofile.set(hard, hard);
    Err(format!(
        "{want} open files needed but the hard limit is {hard} and cannot be raised here; \
         use at most {} clients",
        hard.saturating_sub(2048)
    ))
}
