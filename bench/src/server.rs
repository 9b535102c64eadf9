//! Starting and stopping the systems under test: runwire's relay binary and the Node peers.
//!
//! Every system prints `listening on http://ADDR` on stdout once it accepts connections, bound to
//! `127.0.0.1:0`. When the machine has two cores or more, servers run pinned to core 0 and the
//! load tool to the others, so that neither steals the other's CPU.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::driver::System;
use crate::procfs;

/// How to start servers.
#[derive(Debug, Clone)]
pub struct Launch {
    /// runwire's relay binary.
    pub relay_bin: PathBuf,
    /// Extra arguments for `runwire serve` (a broker choice, say).
    pub relay_args: Vec<String>,
    /// The folder holding the Node peers and their `node_modules`.
    pub peers_dir: PathBuf,
    /// The shared token secret.
    pub secret: String,
    /// Pin servers to this core.
    pub pin: Option<usize>,
    /// Redis URL shared by every instance (runwire's and the peers' `--redis`).
    pub redis: Option<String>,
    /// Where servers' stderr goes.
    pub log_dir: PathBuf,
}

/// A running server, killed when dropped.
#[derive(Debug)]
pub struct Server {
    /// Its address.
    pub addr: SocketAddr,
    /// Its process id (the relay itself, not a wrapper).
    pub pid: u32,
    child: Child,
}

impl Server {
    /// Starts instance `instance` of `system` and waits until it listens.
    pub async fn start(system: System, launch: &Launch, instance: usize) -> Result<Self, String> {
        let (program, mut args): (PathBuf, Vec<String>) = match system {
            System::Runwire => {
                let mut args = vec!["serve".into(), "--addr".into(), "127.0.0.1:0".into()];
                if let Some(redis) = &launch.redis {
                    args.extend(["--redis".into(), redis.clone()]);
                }
                args.extend(launch.relay_args.iter().cloned());
                (launch.relay_bin.clone(), args)
            }
            System::NodeWs | System::Socketio => {
                let script = match system {
                    System::NodeWs => "ws-relay.js",
                    _ => "socketio-relay.js",
                };
                let mut args = vec![
                    "--max-old-space-size=8192".into(),
                    launch.peers_dir.join(script).display().to_string(),
                    "--port".into(),
                    "0".into(),
                ];
                if let Some(redis) = &launch.redis {
                    args.extend(["--redis".into(), redis.clone()]);
                }
                ("node".into(), args)
            }
            System::Floor => {
                if launch.redis.is_some() {
                    return Err("the floor has no broker: it runs without --redis".into());
                }
                let me = std::env::current_exe().map_err(|e| format!("the tool's path: {e}"))?;
                (
                    me,
                    vec!["floor".into(), "--addr".into(), "127.0.0.1:0".into()],
                )
            }
        };
        let mut cmd = match launch.pin {
            Some(core) => {
                let mut c = Command::new("taskset");
                args.splice(
                    0..0,
                    ["-c".into(), core.to_string(), program.display().to_string()],
                );
                c.args(&args);
                c
            }
            None => {
                let mut c = Command::new(&program);
                c.args(&args);
                c
            }
        };
        std::fs::create_dir_all(&launch.log_dir).map_err(|e| e.to_string())?;
        let log_path = launch
            .log_dir
            .join(format!("{}-{instance}.log", system.name()));
        let log = std::fs::File::create(&log_path).map_err(|e| e.to_string())?;
        cmd.env("RUNWIRE_SECRET", &launch.secret)
            .env("BENCH_SECRET", &launch.secret)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("starting {}: {e}", system.name()))?;
        let pid = child.id().ok_or("the server exited at once")?;
        let stdout = child.stdout.take().expect("piped");
        let mut lines = BufReader::new(stdout).lines();
        let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await;
        let addr = match first {
            Ok(Ok(Some(line))) => parse_listening(&line)
                .ok_or_else(|| format!("{}: unexpected first line {line:?}", system.name()))?,
            _ => {
                return Err(format!(
                    "{} did not start; see {}",
                    system.name(),
                    log_path.display()
                ));
            }
        };
        // Keep reading stdout so that the server never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Self { addr, pid, child })
    }

    /// The server's memory and CPU now.
    pub fn sample(&self) -> std::io::Result<procfs::Sample> {
        procfs::sample(self.pid)
    }

    /// Stops the server and waits for it to exit.
    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
    }
}

/// The address in a `listening on http://ADDR` line.
pub fn parse_listening(line: &str) -> Option<SocketAddr> {
    line.trim()
        .strip_prefix("listening on http://")?
        .parse()
        .ok()
}

/// The address of a `--relays` entry; only loopback addresses are accepted, so that no load ever
/// leaves the machine.
pub fn parse_relay_url(url: &str) -> Result<SocketAddr, String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("ws://"))
        .unwrap_or(url);
    let addr: SocketAddr = rest
        .trim_end_matches('/')
        .parse()
        .map_err(|_| format!("{url:?}: expected http://IP:PORT"))?;
    if !addr.ip().is_loopback() {
        return Err(format!("{url:?}: only loopback relays may be load-tested"));
    }
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_listening_line() {
        assert_eq!(
            parse_listening("listening on http://127.0.0.1:4321\n"),
            Some("127.0.0.1:4321".parse().unwrap())
        );
        assert_eq!(parse_listening("hello"), None);
    }

    #[test]
    fn relay_urls_must_be_loopback() {
        assert_eq!(
            parse_relay_url("http://127.0.0.1:3101/").unwrap(),
            "127.0.0.1:3101".parse().unwrap()
        );
        assert!(parse_relay_url("http://[::1]:3101").is_ok());
        assert!(parse_relay_url("http://10.0.0.5:3101").is_err());
        assert!(parse_relay_url("http://example.com:80").is_err());
    }
}
