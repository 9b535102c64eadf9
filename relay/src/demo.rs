//! `runwire demo`: simulated workflow runs published through the broker, and the endpoints the
//! demo page uses. Served only with `--demo`; `/demo/token` hands out tokens to anyone, so this
//! is never for production.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use runwire_protocol::token::{ANY_RUN, Claims, Scope};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::broker::BrokerError;
use crate::error::ApiError;
use crate::event::NewEvent;
use crate::state::AppState;
use crate::sync::lock;

/// Recent runs listed by `/demo/runs`.
const RECENT_RUNS: usize = 20;
/// Simulated runs in flight at most.
const MAX_ACTIVE: usize = 8;
/// Seconds a demo token lives.
const TOKEN_TTL: u64 = 600;

/// The simulated workflow: key, label, and the nodes it waits for.
const WORKFLOW: [(&str, &str, &[&str]); 7] = [
    ("fetch", "Fetch orders", &[]),
    ("validate", "Validate schema", &["fetch"]),
    ("clean", "Clean records", &["validate"]),
    ("features", "Build features", &["validate"]),
    ("train", "Train model", &["clean", "features"]),
    ("evaluate", "Evaluate model", &["train"]),
    ("report", "Publish report", &["evaluate"]),
];

/// A run the demo started.
#[derive(Debug, Clone, Serialize)]
pub struct DemoRun {
    /// The run id.
    pub run: String,
    /// When it started, RFC 3339.
    pub started_at: String,
}

/// The demo: the relay it publishes through, and its bookkeeping.
#[derive(Debug)]
pub struct Demo {
    state: AppState,
    recent: Mutex<VecDeque<DemoRun>>,
    active: AtomicUsize,
    counter: AtomicUsize,
}

impl Demo {
    /// A demo publishing through `state`'s broker; nothing runs until [`spawn`] or a
    /// `POST /demo/runs`.
    pub fn new(state: AppState) -> Arc<Self> {
        Arc::new(Self {
            state,
            recent: Mutex::default(),
            active: AtomicUsize::new(0),
            counter: AtomicUsize::new(0),
        })
    }
}

/// The demo routes.
pub fn routes(demo: Arc<Demo>) -> Router<AppState> {
    Router::new()
        .route("/demo/token", get(token))
        .route("/demo/runs", get(list).post(start))
        .with_state(demo)
}

#[derive(Deserialize)]
struct TokenQuery {
    run: Option<String>,
}

/// `GET /demo/token[?run=R]`: a subscribe token for one run, or for every run.
async fn token(State(demo): State<Arc<Demo>>, Query(q): Query<TokenQuery>) -> String {
    let verifier = &demo.state.verifier;
    let clock = verifier.clock();
    verifier.sign(&Claims {
        exp: clock.unix_secs() + TOKEN_TTL,
        iat: Some(clock.unix_secs()),
        runs: Some(vec![q.run.unwrap_or_else(|| ANY_RUN.to_owned())]),
        scope: Scope::Subscribe,
        sub: Some("demo".into()),
        ..Claims::default()
    })
}

/// `GET /demo/runs`: recent runs, newest first.
async fn list(State(demo): State<Arc<Demo>>) -> Json<Vec<DemoRun>> {
    Json(lock(&demo.recent).iter().rev().cloned().collect())
}

/// `POST /demo/runs`: starts a simulated run.
async fn start(State(demo): State<Arc<Demo>>) -> Result<Json<DemoRun>, ApiError> {
    start_run(&demo)
        .map(Json)
        .ok_or(ApiError::Broker(BrokerError::LimitReached))
}

fn start_run(demo: &Arc<Demo>) -> Option<DemoRun> {
    if demo.active.fetch_add(1, Ordering::AcqRel) >= MAX_ACTIVE {
        demo.active.fetch_sub(1, Ordering::AcqRel);
        return None;
    }
    let n = demo.counter.fetch_add(1, Ordering::Relaxed) + 1;
    let mut rng = Rng::seeded(n as u64);
    let run = DemoRun {
        run: format!("demo-{n}-{:04x}", rng.next() & 0xffff),
        started_at: crate::event::now_ts(),
    };
    {
        let mut recent = lock(&demo.recent);
        if recent.len() == RECENT_RUNS {
            recent.pop_front();
        }
        recent.push_back(run.clone());
    }
    let demo = demo.clone();
    let id = run.run.clone();
    tokio::spawn(async move {
        if let Err(e) = simulate(&demo.state, &id, rng).await {
            tracing::warn!(run = %id, error = %e, "demo run stopped");
        }
        demo.active.fetch_sub(1, Ordering::AcqRel);
    });
    Some(run)
}

/// Starts a run at once and another a few seconds after each one ends, until shutdown.
pub fn spawn(demo: Arc<Demo>) {
    tokio::spawn(async move {
        let stop = demo.state.shutting_down();
        tokio::pin!(stop);
        loop {
            if demo.active.load(Ordering::Acquire) == 0 {
                start_run(&demo);
            }
            tokio::select! {
                () = &mut stop => return,
                () = tokio::time::sleep(Duration::from_secs(5)) => {}
            }
        }
    });
}

/// xorshift64*: plenty for jittering a demo, and no dependency.
struct Rng(u64);

impl Rng {
    fn seeded(salt: u64) -> Self {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64;
        Self((t ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

async fn publish(state: &AppState, run: &str, event: &str, data: Value) -> Result<(), BrokerError> {
    let new = NewEvent::parse(event, data).expect("the demo publishes valid events");
    state.broker.publish(run.into(), vec![new]).await?;
    state.metrics.events_published.inc();
    Ok(())
}

async fn simulate(state: &AppState, run: &str, mut rng: Rng) -> Result<(), BrokerError> {
    let graph: Vec<Value> = WORKFLOW
        .iter()
        .map(|(key, label, deps)| json!({"key": key, "label": label, "deps": deps}))
        .collect();
    let started = tokio::time::Instant::now();
    publish(
        state,
        run,
        "run.started",
        json!({
            "workflow": "nightly-orders-model",
            "node_count": WORKFLOW.len(),
            "graph": graph,
        }),
    )
    .await?;
    // One run in six fails, at a node chosen up front.
    let fail_at =
        (rng.between(0, 5) == 0).then(|| rng.between(3, WORKFLOW.len() as u64 - 1) as usize);
    for (i, (key, label, _)) in WORKFLOW.iter().enumerate() {
        let node_started = tokio::time::Instant::now();
        publish(
            state,
            run,
            "run.progress",
            json!({
                "progress": (i * 100 / WORKFLOW.len()) as f64,
                "current_node": key,
            }),
        )
        .await?;
        publish(state, run, "node.started", json!({"node_key": key})).await?;
        publish(
            state,
            run,
            "log",
            json!({"level": "info", "message": format!("{label}: started"), "node_key": key}),
        )
        .await?;
        let steps = rng.between(2, 4);
        for step in 1..=steps {
            tokio::time::sleep(Duration::from_millis(rng.between(250, 700))).await;
            publish(
                state,
                run,
                "node.progress",
                json!({"node_key": key, "progress": (step * 100 / steps) as f64}),
            )
            .await?;
            if rng.between(0, 3) == 0 {
                let (level, message) = match rng.between(0, 2) {
                    0 => ("debug", format!("{label}: batch {step}/{steps} flushed")),
                    1 => (
                        "warning",
                        format!("{label}: {} slow rows retried", rng.between(1, 40)),
                    ),
                    _ => (
                        "info",
                        format!("{label}: {} records processed", rng.between(1_000, 90_000)),
                    ),
                };
                publish(
                    state,
                    run,
                    "log",
                    json!({"level": level, "message": message, "node_key": key}),
                )
                .await?;
            }
        }
        let duration_ms = node_started.elapsed().as_millis() as u64;
        if fail_at == Some(i) {
            let error = format!("{label} failed: upstream returned 503 after 3 retries");
            let failure = [
                (
                    "log",
                    json!({"level": "error", "message": error, "node_key": key}),
                ),
                ("node.failed", json!({"node_key": key, "error": error})),
                ("run.failed", json!({"error": error, "node_key": key})),
            ];
            for (event, data) in failure {
                publish(state, run, event, data).await?;
            }
            return Ok(());
        }
        publish(
            state,
            run,
            "node.completed",
            json!({
                "node_key": key,
                "duration_ms": duration_ms,
                "output_summary": {"rows": rng.between(1_000, 90_000)},
            }),
        )
        .await?;
    }
    publish(
        state,
        run,
        "run.completed",
        json!({
            "total_duration_ms": started.elapsed().as_millis() as u64,
            "node_count": WORKFLOW.len(),
            "result": {"accuracy": (900 + rng.between(0, 90)) as f64 / 1000.0},
        }),
    )
    .await
}
