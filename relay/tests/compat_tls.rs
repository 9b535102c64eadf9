//! `rediss://`: the relay's Redis broker and ingest over TLS, against a `redis-server` started with
//! `--tls-port` on loopback and a certificate authority this test makes with the `openssl` CLI. The
//! relay trusts it the way it trusts any root: through the system's roots, here `SSL_CERT_FILE`.
//! A missing `openssl`, `redis-server` or `redis-cli` fails the test.

mod support;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use support::tls::make_certificates;
use support::{Client, SECRET, announced_addr, answers_200, eventually, get_json, subscribe_token};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct TlsRedis {
    port: u16,
    dir: PathBuf,
    child: std::process::Child,
}

impl TlsRedis {
    fn start() -> Self {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("runwire-tls-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        make_certificates(&dir);
        let port = free_port();
        let child = Command::new("redis-server")
            .args([
                "--port",
                "0",
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(["--tls-port", &port.to_string(), "--tls-auth-clients", "no"])
            .arg("--tls-cert-file")
            .arg(dir.join("server.crt"))
            .arg("--tls-key-file")
            .arg(dir.join("server.key"))
            .arg("--tls-ca-cert-file")
            .arg(dir.join("ca.crt"))
            .current_dir(&dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/install-deps.sh test)");
        let server = Self { port, dir, child };
        for _ in 0..250 {
            if server.cli(&["PING"]).is_some_and(|r| r.trim() == "PONG") {
                return server;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("the TLS redis-server did not start");
    }

    /// A command through `redis-cli --tls`, trusting the test's CA.
    fn cli(&self, args: &[&str]) -> Option<String> {
        let out = Command::new("redis-cli")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "--tls",
                "--cacert",
            ])
            .arg(self.dir.join("ca.crt"))
            .args(args)
            .output()
            .expect("redis-cli is installed");
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn relay_command(redis: &TlsRedis, trust: bool) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_runwire"));
    cmd.args(["serve", "--addr", "127.0.0.1:0", "--compat", "ws-relay"])
        .arg("--redis")
        .arg(format!("rediss://127.0.0.1:{}", redis.port))
        .env_clear()
        .env("RUNWIRE_SECRET", SECRET)
        .env("RUST_LOG", "error")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if trust {
        cmd.env("SSL_CERT_FILE", redis.dir.join("ca.crt"));
    } else {
        // Roots that do not include the test's CA.
        cmd.env("SSL_CERT_FILE", "/dev/null");
    }
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_and_ingest_over_tls() {
    let redis = TlsRedis::start();
    let mut child = relay_command(&redis, true).spawn().unwrap();
    let addr = announced_addr(&mut child).await;
    let health: Value = get_json(&format!("http://{addr}/health")).await;
    assert_eq!(health["broker"], json!({"kind":"redis","status":"up"}));
    // ingest runs over TLS: /ready answers 503 until it does
    let ready = &format!("http://{addr}/ready");
    assert!(eventually(|| answers_200(ready), Duration::from_secs(5)).await);
    let mut c = Client::connect(&format!("ws://{addr}/v1/ws")).await;
    c.send(json!({"type":"auth","token":subscribe_token("9")}))
        .await;
    assert_eq!(c.frame().await["type"], "welcome");
    assert_eq!(c.subscribe("9", None).await["type"], "subscribed");
    // a worker publishing over TLS, ingested over TLS, sequenced in Redis over TLS
    for msg in [
        json!({"type":"node","nodeId":"a","status":"Running"}),
        json!({"type":"workflow","status":"Success"}),
    ] {
        let reply = redis
            .cli(&["PUBLISH", "workflow-run:9", &msg.to_string()])
            .unwrap();
        assert_ne!(reply.trim(), "0", "the relay listens on workflow-run:9");
    }
    let events = c.events(2).await;
    assert_eq!(events[0]["event"], "node.started");
    assert_eq!(events[1]["event"], "run.completed");
    assert!(
        redis.cli(&["KEYS", "runwire:*"]).unwrap().contains("{9}"),
        "the run is stored in the TLS Redis"
    );
    child.start_kill().unwrap();
    let _ = child.wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_is_refused() {
    let redis = TlsRedis::start();
    let child = relay_command(&redis, false).spawn().unwrap();
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("the relay gives up on an untrusted Redis")
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("broker") && stderr.to_lowercase().contains("certificate"),
        "{stderr}"
    );
}
