//! The plain HTTP API: publish, run state, health, readiness, metrics, and the built-in page.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use runwire_protocol::event::is_terminal_event;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::broker::BrokerHealth;
use crate::error::ApiError;
use crate::event::NewEvent;
use crate::metrics::Sample;
use crate::state::AppState;
use crate::transport::extract::{Authorized, Publish, Subscribe};

/// Largest publish body.
pub const MAX_PUBLISH_BODY: usize = 1024 * 1024;
/// Most events in one publish.
pub const MAX_EVENTS_PER_PUBLISH: usize = 1000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishItem {
    event: String,
    #[serde(default)]
    data: Value,
}

/// The answer to a publish.
#[derive(Debug, Serialize, Deserialize)]
pub struct Published {
    /// The run.
    pub run: String,
    /// The seqs assigned, in the order of the events sent.
    pub seqs: Vec<u64>,
}

pub fn parse_events(body: &[u8]) -> Result<Vec<NewEvent>, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request("invalid_json", format!("invalid JSON: {e}")))?;
    let items = match value {
        Value::Array(items) => items,
        other => vec![other],
    };
    if items.is_empty() || items.len() > MAX_EVENTS_PER_PUBLISH {
        return Err(ApiError::bad_request(
            "invalid_batch",
            format!("send 1 to {MAX_EVENTS_PER_PUBLISH} events"),
        ));
    }
    let last = items.len() - 1;
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let at = |msg: String| {
                let msg = if last == 0 {
                    msg
                } else {
                    format!("event {i}: {msg}")
                };
                ApiError::bad_request("invalid_event", msg)
            };
            let item: PublishItem = serde_json::from_value(item).map_err(|e| {
                at(format!(
                    "expected {{\"event\": name, \"data\": {{…}}}}: {e}"
                ))
            })?;
            if i != last && is_terminal_event(&item.event) {
                return Err(at(format!(
                    "{} must be the last event of a batch",
                    item.event
                )));
            }
            NewEvent::parse(&item.event, item.data).map_err(|e| at(e.to_string()))
        })
        .collect()
}

/// Publish bodies in shapes other than runwire's: a replaced system's (`compat`).
pub trait OtherBodies: Send + Sync + std::fmt::Debug {
    /// `None` when `body` is in none of these shapes (runwire's own rules apply), else its
    /// events, or why they are refused.
    fn parse(&self, body: &[u8]) -> Option<Result<Vec<NewEvent>, ApiError>>;
}

/// `POST /v1/runs/{run}/events`.
pub async fn publish(
    State(state): State<AppState>,
    authorized: Result<Authorized<Publish>, ApiError>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Published>, ApiError> {
    let started = std::time::Instant::now();
    let result = async {
        let run = authorized?.run;
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|n| n > MAX_PUBLISH_BODY) {
            return Err(ApiError::TooLarge(MAX_PUBLISH_BODY));
        }
        let body = axum::body::to_bytes(body, MAX_PUBLISH_BODY)
            .await
            .map_err(|e| {
                if e.to_string().contains("length limit") {
                    ApiError::TooLarge(MAX_PUBLISH_BODY)
                } else {
                    ApiError::bad_request("invalid_body", format!("could not read the body: {e}"))
                }
            })?;
        let other = state.other_bodies.as_ref().and_then(|o| o.parse(&body));
        let events = match other {
            Some(events) => events?,
            None => parse_events(&body)?,
        };
        let accepted = state.broker.publish(run.as_str().into(), events).await?;
        state.metrics.events_published.add(accepted.len() as u64);
        Ok(Json(Published {
            run,
            seqs: accepted.iter().map(|e| e.seq).collect(),
        }))
    }
    .await;
    if result.is_err() {
        state.metrics.publish_rejected.inc();
    }
    state.metrics.publish_duration.observe(started.elapsed());
    result
}

/// `GET /v1/runs/{run}`.
pub async fn run_state(
    State(state): State<AppState>,
    Authorized { run, .. }: Authorized<Subscribe>,
) -> Result<Response, ApiError> {
    let snapshot = state.broker.snapshot(run.as_str().into(), None).await?;
    Ok(Json(serde_json::json!({
        "run": run,
        "seq": snapshot.head,
        "epoch": &*snapshot.epoch,
        "state": &*snapshot.state,
    }))
    .into_response())
}

fn broker_json(state: &AppState) -> (bool, Value) {
    let health = state.broker.health();
    let up = health == BrokerHealth::Up;
    let broker = serde_json::json!({
        "kind": state.broker.kind(),
        "status": health.as_str(),
    });
    (up, broker)
}

/// `GET /health`: always 200 while the process serves; says how the broker is.
pub async fn health(State(state): State<AppState>) -> Json<Value> {
    let (up, broker) = broker_json(&state);
    Json(serde_json::json!({
        "status": if up { "ok" } else { "degraded" },
        "broker": broker,
    }))
}

/// `GET /ready`: 503 while the broker is down, so a load balancer sends clients elsewhere.
pub async fn ready(State(state): State<AppState>) -> Response {
    let (up, broker) = broker_json(&state);
    let status = if up {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(serde_json::json!({ "ready": up, "broker": broker })),
    )
        .into_response()
}

/// `GET /metrics`; with `--metrics-token`, only for `Authorization: Bearer <token>`.
pub async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(expected) = state.config.metrics_token.as_deref() {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
            .unwrap_or_default();
        if !same_bytes(given, expected.as_bytes()) {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "a metrics token is required\n",
            )
                .into_response();
        }
    }
    let mut samples = vec![Sample {
        name: "runwire_broker_up",
        help: "Whether the broker is reachable (1) or not (0).",
        counter: false,
        value: u64::from(state.broker.health() == BrokerHealth::Up),
    }];
    samples.extend(state.broker.samples());
    let text = state.metrics.render(&samples);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// Compares in time that depends on the lengths only, not on where the bytes differ.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `GET /`: the built-in page for trying the relay in a browser.
pub async fn index() -> Html<&'static str> {
    Html(include_str!("../../static/index.html"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err_code(body: &str) -> String {
        match parse_events(body.as_bytes()) {
            Err(ApiError::BadRequest { code, message }) => format!("{code}: {message}"),
            Err(e) => panic!("unexpected {e:?}"),
            Ok(_) => "ok".into(),
        }
    }

    #[test]
    fn parses_one_event_or_a_batch() {
        assert_eq!(
            parse_events(br#"{"event":"log","data":{"level":"info","message":"m"}}"#)
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            parse_events(br#"[{"event":"run.started"},{"event":"x.y"}]"#)
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn refuses_bad_bodies_clearly() {
        assert!(err_code("{").starts_with("invalid_json"));
        assert!(err_code("[]").starts_with("invalid_batch"));
        assert!(err_code(r#"{"event":"Bad"}"#).starts_with("invalid_event"));
        assert!(err_code(r#"{"event":"node.started","data":{}}"#).contains("node_key"));
        assert!(
            err_code(r#"{"event":"log","data":{"level":"info","message":"m"},"extra":1}"#)
                .starts_with("invalid_event")
        );
        assert!(err_code(r#"[{"event":"run.completed"},{"event":"log","data":{"level":"info","message":"m"}}]"#)
            .contains("event 0: run.completed must be the last"));
        let many = format!(
            "[{}]",
            vec![r#"{"event":"x"}"#; MAX_EVENTS_PER_PUBLISH + 1].join(",")
        );
        assert!(err_code(&many).starts_with("invalid_batch"));
    }
}
