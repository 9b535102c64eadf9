//! `runwire publish` against an in-process relay: over http, and over https through a TLS
//! terminator on loopback (as a load balancer would be) whose certificate authority, made with the
//! `openssl` CLI, the command trusts through `SSL_CERT_FILE` as it would any system root.
//! A missing `openssl` fails the test.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};
use support::*;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Runs `runwire publish` with `env` (and nothing else from this process's environment).
async fn publish(env: &[(&str, &str)], data: &str) -> std::process::Output {
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_runwire"))
        .args(["publish", "--run", "cli", "--event", "node.started"])
        .args(["--data", data])
        .env_clear()
        .envs(env.iter().copied())
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(PATIENCE, run)
        .await
        .expect("runwire publish finishes")
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn publish_over_http_and_keep_the_token_out_of_the_log() {
    let (relay, mut c) = Relay::with_client("cli").await;
    c.subscribe("cli", None).await;
    let token = publish_token("cli");
    let url = relay.url("/");
    let env = [
        ("RUNWIRE_URL", url.as_str()),
        ("RUNWIRE_TOKEN", token.as_str()),
        ("RUST_LOG", "trace"),
    ];
    let out = publish(&env, r#"{"node_key":"n1"}"#).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let body: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(body, json!({"run":"cli","seqs":[1]}));
    let ev = c.frame().await;
    assert_eq!(
        (ev["seq"].as_u64(), ev["event"].as_str()),
        (Some(1), Some("node.started"))
    );
    // The HTTP client's own trace lines carry no token either.
    let log = text(&out.stderr);
    let signature = token.rsplit('.').next().unwrap();
    assert!(!log.contains(signature), "a token in the log:\n{log}");

    // Refused by the relay: its answer on stdout, a non-zero exit.
    let out = publish(&env, "{}").await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).contains("invalid_event"));
    assert!(text(&out.stderr).contains("the relay answered 400"));

    // Not a URL the command can use.
    let ftp = [
        ("RUNWIRE_URL", "ftp://127.0.0.1/"),
        ("RUNWIRE_TOKEN", &token),
    ];
    let out = publish(&ftp, "{}").await;
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("http:// or https://"));
}

/// A TLS terminator on loopback in front of `backend`, with `dir`'s server certificate.
fn tls_front(dir: &Path, listener: TcpListener, backend: SocketAddr) -> JoinHandle<()> {
    let certs = CertificateDer::pem_file_iter(dir.join("server.crt"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut plain) = TcpStream::connect(backend).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    })
}

/// A fresh directory, removed on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test]
async fn publish_reaches_an_https_relay() {
    let dir = TempDir(std::env::temp_dir().join(format!("runwire-publish-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&dir.0);
    std::fs::create_dir_all(&dir.0).unwrap();
    tls::make_certificates(&dir.0);
    let relay = Relay::start().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let front = tls_front(&dir.0, listener, relay.addr);
    let token = publish_token("cli");
    let ca = dir.0.join("ca.crt");
    let trusted = [
        ("RUNWIRE_URL", url.as_str()),
        ("RUNWIRE_TOKEN", token.as_str()),
        ("SSL_CERT_FILE", ca.to_str().unwrap()),
    ];
    let out = publish(&trusted, r#"{"node_key":"n1"}"#).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let body: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(body, json!({"run":"cli","seqs":[1]}));

    // Roots that do not include the test's CA: refused before anything is sent.
    let untrusted = [
        ("RUNWIRE_URL", url.as_str()),
        ("RUNWIRE_TOKEN", token.as_str()),
        ("SSL_CERT_FILE", "/dev/null"),
    ];
    let out = publish(&untrusted, r#"{"node_key":"n2"}"#).await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("cannot reach") && stderr.to_lowercase().contains("certificate"),
        "{stderr}"
    );
    let snapshot = relay.state.broker.snapshot("cli".into(), None).await;
    assert_eq!(
        snapshot.unwrap().head,
        1,
        "the refused publish sent nothing"
    );
    front.abort();
    relay.shutdown().await;
}
