//! runwire-bench: a load tool that measures runwire against relays built the usual ways in Node.
//!
//! - [`driver`]: per system, the URL, the hello frames and what received frames mean.
//! - [`client`]: one task per subscriber, checking seqs and recording latency.
//! - [`publish`]: the HTTP publisher every system shares, and tokens.
//! - [`server`]: starting runwire and the Node peers (`bench/peers/`), pinned to their own core.
//! - [`floor`]: the floor, a one-thread server doing only what any relay must.
//! - [`procfs`]: the relay's memory and CPU from `/proc`.
//! - [`scenario`]: idle connections, fan-out, many runs, connect storm.
//! - [`report`]: medians over rounds and the comparison table.
//!
//! [`compare`] runs a scenario against each system in alternating order for several rounds, so
//! that whatever else the machine is doing spreads over all systems alike.

pub mod client;
pub mod driver;
pub mod floor;
pub mod procfs;
pub mod publish;
pub mod report;
pub mod scenario;
pub mod server;

use std::net::SocketAddr;
use std::time::Duration;

use crate::driver::System;
use crate::report::Results;
use crate::scenario::{Params, Target};
use crate::server::{Launch, Server};

/// Where the systems under test come from.
#[derive(Debug, Clone)]
pub enum Relays {
    /// Start `instances` of each system for every measurement, and stop them after it.
    Start {
        /// How to start them.
        launch: Launch,
        /// Relays per system (more than one needs a shared broker: Redis).
        instances: usize,
    },
    /// Relays someone else started (loopback only); their processes are not measured unless
    /// their pids are given.
    External {
        /// Their addresses.
        addrs: Vec<SocketAddr>,
        /// Their process ids.
        pids: Vec<u32>,
    },
}

/// The systems in the order of round `round`: rotated by one each round, so no system always
/// runs first (on a cold machine) or last (after the others' leftovers).
pub fn order(systems: &[System], round: usize) -> Vec<System> {
    let mut v = systems.to_vec();
    if !v.is_empty() {
        let k = round % v.len();
        v.rotate_left(k);
    }
    v
}

/// Runs `params` against every system for `rounds` rounds and collects the results.
pub async fn compare(
    params: &Params,
    systems: &[System],
    rounds: usize,
    relays: &Relays,
) -> Results {
    let mut results = Results {
        systems: systems.to_vec(),
        ..Results::default()
    };
    // Measurements number their source addresses from here; starting at the pid keeps back-to-back
    // invocations off each other's ports still in TIME_WAIT.
    let mut index = std::process::id() as usize;
    for round in 0..rounds {
        for system in order(systems, round) {
            index += 1;
            eprintln!(
                "round {}/{rounds}: {} {:?} ...",
                round + 1,
                system.name(),
                params.scenario
            );
            let outcome = measure_once(params, system, relays, index).await;
            match outcome {
                Ok(m) => {
                    eprintln!("  {}", m.one_line());
                    results.runs.entry(system.name()).or_default().push(m);
                }
                Err(e) => {
                    eprintln!("  FAILED: {e}");
                    results.errors.entry(system.name()).or_default().push(e);
                }
            }
            // Let sockets of the finished measurement close before the next one starts.
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    results
}

async fn measure_once(
    params: &Params,
    system: System,
    relays: &Relays,
    index: usize,
) -> Result<report::Measurement, String> {
    match relays {
        Relays::External { addrs, pids } => {
            let target = Target {
                system,
                addrs: addrs.clone(),
                pids: pids.clone(),
            };
            scenario::measure(params, &target, index).await
        }
        Relays::Start { launch, instances } => {
            let mut servers = Vec::new();
            for i in 0..(*instances).max(1) {
                servers.push(Server::start(system, launch, i).await?);
            }
            let target = Target {
                system,
                addrs: servers.iter().map(|s| s.addr).collect(),
                pids: servers.iter().map(|s| s.pid).collect(),
            };
            // A moment for the runtime to finish starting before the baseline is read.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let outcome = scenario::measure(params, &target, index).await;
            for s in servers {
                s.stop().await;
            }
            outcome
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_rotates_each_round() {
        let s = [System::Runwire, System::NodeWs, System::Socketio];
        assert_eq!(order(&s, 0), s.to_vec());
        assert_eq!(
            order(&s, 1),
            vec![System::NodeWs, System::Socketio, System::Runwire]
        );
        assert_eq!(order(&s, 3), s.to_vec());
        assert!(order(&[], 2).is_empty());
    }
}
