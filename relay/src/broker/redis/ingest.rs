//! Ingest: Redis Pub/Sub messages that workers of existing systems already publish, turned into
//! run events. `docs/redis.md` documents the mapping; this module is its single implementation.
//!
//! - The run id is what the pattern's first `*` matched in the channel name
//!   (`workflow-run:*` + `workflow-run:42` → run `42`; `execution:*:events` +
//!   `execution:abc:events` → run `abc`).
//! - A JSON object with a string `event` (the `execution:*:events` shape
//!   `{"event","execution_id","node_key","data","timestamp"}`) becomes that event, with `data` as
//!   its data and the top-level `node_key` added to it when `data` has none. Names are normalized:
//!   `node_started` → `node.started`, `execution_completed` / `workflow_failed` → `run.completed`
//!   / `run.failed`, and so on; another valid event name is carried as it is.
//! - A JSON object with a string `status` (the `workflow-run:*` shape) whose status is terminal
//!   (`Success`/`Completed` → `run.completed`, `Failure`/`Failed`/`Error` → `run.failed`,
//!   `Cancelled` → `run.cancelled`, any case) becomes that terminal event with the payload as its
//!   data, as it came (`run.failed` gains an `error` taken from `error`/`message` when missing).
//! - Anything else (another status, a payload that does not fit the event's shape, non-JSON)
//!   becomes a `custom` event whose data is the payload's JSON (non-JSON text: a JSON string).
//!
//! Every relay started with `--ingest` pattern-subscribes and appends every message it receives
//! (`ingest_loop`); messages carry an id every relay computes alike (`IngestSync`), and the
//! publish script appends a message only once, so each message becomes one event however many
//! relays run, and none is lost while at least one of them is alive.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use runwire_protocol::{event::KNOWN_EVENTS, is_valid_event_name, is_valid_run_id};
use serde_json::{Map, Value};
use tokio::sync::{mpsc, watch};

use super::Shared;
use crate::broker::{BrokerError, NewEvent, RunId};

/// The name unknown payloads are carried under.
pub const CUSTOM_EVENT: &str = "custom";

/// What the pattern's first `*` matched in `channel`, if `channel` matches `pattern`.
///
/// Patterns use Redis' glob syntax; `*` and `?` are understood here, other characters match
/// themselves (the relay refuses patterns with `[` or `\` at start-up).
pub fn run_from_channel<'c>(pattern: &str, channel: &'c str) -> Option<&'c str> {
    let star = pattern.find('*')?;
    let (head, tail) = (&pattern[..star], &pattern[star + 1..]);
    // Redis globs match bytes: `?` takes one byte, which may be half of a character. The head of
    // the pattern has no `*`, so it spans as many bytes of the channel as it has itself.
    if !glob(head.as_bytes(), channel.as_bytes().get(..head.len())?) {
        return None;
    }
    // A capture that starts inside a character is no valid run id (those are ASCII).
    let rest = channel.get(head.len()..)?;
    // The shortest capture after which the rest of the pattern matches.
    (0..=rest.len())
        .filter(|&n| rest.is_char_boundary(n))
        .find(|&n| glob(tail.as_bytes(), &rest.as_bytes()[n..]))
        .map(|n| &rest[..n])
}

/// Whether a pattern is one [`run_from_channel`] understands.
pub fn check_pattern(pattern: &str) -> Result<(), String> {
    if !pattern.contains('*') {
        return Err(format!(
            "ingest pattern {pattern:?} has no `*` to take the run id from"
        ));
    }
    if pattern.contains(['[', ']', '\\']) {
        return Err(format!(
            "ingest pattern {pattern:?}: only `*` and `?` wildcards are supported"
        ));
    }
    Ok(())
}

/// Whether `text` matches `pattern` (`*` any bytes, `?` one byte, anything else itself).
///
/// Iterative, with one backtrack point: after a `*`, a mismatch retries from that `*` one byte
/// further on. At most `pattern.len() × text.len()` steps, whatever the pattern: a channel name
/// chosen by a publisher cannot make it take exponential time, as a naive recursion would with
/// patterns like `a*b*c*…`.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    // Where to retry from: the pattern just after the last `*`, and the text it starts at.
    let mut retry: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                p += 1;
                retry = Some((p, t));
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match retry {
                Some((after_star, from)) => {
                    p = after_star;
                    t = from + 1;
                    retry = Some((after_star, from + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// The mapping of messages in the shapes of the systems runwire replaces, which ingest tries
/// before its own (`None`: not such a message). The app builds it from the compatibility layers
/// that are on; ingest knows none of them. The default maps nothing.
#[derive(Clone, Default)]
pub struct ForeignMessages(Option<Arc<MapFn>>);

type MapFn = dyn Fn(&Value) -> Option<NewEvent> + Send + Sync;

impl ForeignMessages {
    /// A mapping that tries `map` first.
    pub fn new(map: impl Fn(&Value) -> Option<NewEvent> + Send + Sync + 'static) -> Self {
        Self(Some(Arc::new(map)))
    }

    /// The event `value` maps to, if it is such a message.
    pub fn map(&self, value: &Value) -> Option<NewEvent> {
        self.0.as_ref().and_then(|map| map(value))
    }
}

impl std::fmt::Debug for ForeignMessages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = if self.0.is_some() { "on" } else { "none" };
        f.debug_tuple("ForeignMessages").field(&what).finish()
    }
}

/// Maps one message's payload to a run event (see the module docs). Never fails: what does not
/// fit is carried as a `custom` event. A message that `foreign` maps is mapped by it first.
pub fn map_payload(payload: &[u8], foreign: &ForeignMessages) -> NewEvent {
    let value = match serde_json::from_slice::<Value>(payload) {
        Ok(v) => v,
        Err(_) => Value::String(String::from_utf8_lossy(payload).into_owned()),
    };
    if let Some(ev) = foreign.map(&value) {
        return ev;
    }
    if let Value::Object(obj) = &value {
        if let Some(name) = obj.get("event").and_then(Value::as_str) {
            if let Some(ev) = map_named(name, obj) {
                return ev;
            }
        } else if let Some(status) = obj.get("status").and_then(Value::as_str) {
            if let Some(ev) = map_status(status, obj) {
                return ev;
            }
        }
    }
    custom(value)
}

fn custom(value: Value) -> NewEvent {
    NewEvent::parse(CUSTOM_EVENT, value).expect("custom events take any data")
}

fn map_named(name: &str, obj: &Map<String, Value>) -> Option<NewEvent> {
    let name = normalize_name(name)?;
    let mut data = obj
        .get("data")
        .cloned()
        .unwrap_or_else(|| Value::Object(Map::new()));
    if let (Value::Object(d), Some(key @ Value::String(_))) = (&mut data, obj.get("node_key")) {
        d.entry("node_key").or_insert_with(|| key.clone());
    }
    NewEvent::parse(&name, data).ok()
}

/// `node_started` → `node.started`, `execution.failed` → `run.failed`; another valid name as it
/// is; `None` for a name that is not a valid event name at all.
fn normalize_name(name: &str) -> Option<String> {
    let lower = name.trim().to_ascii_lowercase();
    let dotted = lower.replacen('_', ".", 1);
    for candidate in [&lower, &dotted] {
        if KNOWN_EVENTS.contains(&candidate.as_str()) {
            return Some(candidate.clone());
        }
        for alias in ["execution.", "workflow.", "workflow_run.", "job."] {
            if let Some(rest) = candidate.strip_prefix(alias) {
                let run = format!("run.{rest}");
                if KNOWN_EVENTS.contains(&run.as_str()) {
                    return Some(run);
                }
            }
        }
    }
    is_valid_event_name(name).then(|| name.to_owned())
}

fn map_status(status: &str, obj: &Map<String, Value>) -> Option<NewEvent> {
    let name = match status.to_ascii_lowercase().as_str() {
        "success" | "succeeded" | "completed" | "complete" => "run.completed",
        "failure" | "failed" | "error" => "run.failed",
        "cancelled" | "canceled" => "run.cancelled",
        _ => return None,
    };
    let mut data = obj.clone();
    if name == "run.failed" && !data.get("error").is_some_and(Value::is_string) {
        let error = obj
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or(status)
            .to_owned();
        data.insert("error".into(), Value::String(error));
    }
    match NewEvent::parse(name, Value::Object(data)) {
        Ok(ev) => Some(ev),
        // The payload's fields clash with the event's shape (say a `result` that is fine but a
        // `node_count` that is text): the run still ends, with the payload kept whole under
        // `payload`.
        Err(_) => {
            let mut data = Map::new();
            data.insert("payload".into(), Value::Object(obj.clone()));
            if name == "run.failed" {
                data.insert("error".into(), Value::String(status.to_owned()));
            }
            NewEvent::parse(name, Value::Object(data)).ok()
        }
    }
}

/// Ingested messages waiting to be appended. When full, the Pub/Sub reader waits, which delays
/// live delivery on this relay rather than dropping messages.
pub(super) const INGEST_QUEUE: usize = 4096;
/// Largest ingested message, like the largest publish request body; larger ones are dropped.
pub(super) const MAX_INGEST_PAYLOAD: usize = 1024 * 1024;
/// Ingested messages appended per round.
const INGEST_BATCH: usize = 512;

/// Entries of [`IngestSync::counts`] past which a relay asks for an early sync mark, which
/// empties it on every relay.
const MAX_COUNTED: usize = 65_536;

pub(super) struct IngestMsg {
    pub(super) channel: String,
    pub(super) pattern: String,
    pub(super) payload: Vec<u8>,
    /// The message's id, the same on every ingesting relay (see [`IngestSync`]).
    pub(super) id: String,
}

/// Names ingested messages so that every ingesting relay gives a message the same id, and two
/// messages different ids, even identical ones: `<mark>/<hash>/<n>`, where `<mark>` is the last
/// sync mark this connection saw, `<hash>` a hash of the channel and payload, and `<n>` how many
/// messages with that hash came after the mark, this one included.
///
/// Redis delivers every message, marks included, to every subscriber in the same order, so
/// relays that have both seen a mark count the same messages after it. A relay whose Pub/Sub
/// connection is new has not seen one and names nothing (appends nothing) until one arrives; it
/// publishes one as soon as it has subscribed, and every ingesting relay publishes one every
/// `ingest_mark_interval`, which also bounds the counts kept.
#[derive(Debug, Default)]
pub(super) struct IngestSync {
    mark: Option<String>,
    counts: std::collections::HashMap<u64, u32>,
    /// An early mark was asked for and has not arrived yet.
    mark_asked: bool,
}

impl IngestSync {
    /// A mark arrived: count afresh from it.
    pub(super) fn marked(&mut self, mark: &[u8]) {
        self.mark = Some(String::from_utf8_lossy(mark).into_owned());
        self.counts.clear();
        self.mark_asked = false;
    }

    /// The id of the next message on `channel` with `payload`, or `None` before the first mark.
    /// The second value says that the relay should publish an early mark.
    pub(super) fn name(&mut self, channel: &str, payload: &[u8]) -> (Option<String>, bool) {
        let Some(mark) = &self.mark else {
            return (None, false);
        };
        let hash = fnv1a(fnv1a(FNV_OFFSET, channel.as_bytes()) ^ 0xff, payload);
        let n = self.counts.entry(hash).or_insert(0);
        *n += 1;
        let id = format!("{mark}/{hash:016x}/{n}");
        let ask = self.counts.len() > MAX_COUNTED && !self.mark_asked;
        self.mark_asked |= ask;
        (Some(id), ask)
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a: a hash every relay computes alike, whatever its version or process (the standard
/// library's hashers are seeded or may change between releases).
fn fnv1a(mut hash: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// Appends ingested messages, grouped into one publish per run per round. Every ingesting relay
/// does, for every message it receives; `publish.lua` leaves out the ones another relay already
/// appended (by their [`IngestMsg::id`]), so each message becomes one event while at least one
/// ingesting relay is alive.
pub(super) async fn ingest_loop(
    shared: Arc<Shared>,
    rx: Arc<tokio::sync::Mutex<mpsc::Receiver<IngestMsg>>>,
    mut stop: watch::Receiver<()>,
) {
    // Held for the task's life; a task that panicked releases it, and its restart takes over.
    let mut rx = rx.lock().await;
    loop {
        let first = tokio::select! {
            _ = stop.changed() => return,
            m = rx.recv() => match m { Some(m) => m, None => return },
        };
        let mut batch = vec![first];
        while batch.len() < INGEST_BATCH {
            match rx.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        let mut runs: Vec<(RunId, Vec<NewEvent>, Vec<String>)> = Vec::new();
        for msg in batch {
            let run =
                run_from_channel(&msg.pattern, &msg.channel).filter(|run| is_valid_run_id(run));
            let Some(run) = run else {
                tracing::debug!(channel = msg.channel, "ingest: no valid run id in channel");
                shared.stats.ingest_dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let event = map_payload(&msg.payload, &shared.config.foreign_messages);
            match runs.iter_mut().find(|(r, ..)| &**r == run) {
                Some((_, events, ids)) => {
                    events.push(event);
                    ids.push(msg.id);
                }
                None => runs.push((run.into(), vec![event], vec![msg.id])),
            }
        }
        let publishes = runs.into_iter().map(|(run, mut events, mut ids)| {
            // A terminal event ends the batch: what follows it would be refused anyway.
            if let Some(end) = events.iter().position(|e| e.typed.is_terminal()) {
                let extra = events.len() - end - 1;
                shared
                    .stats
                    .ingest_dropped
                    .fetch_add(extra as u64, Ordering::Relaxed);
                events.truncate(end + 1);
                ids.truncate(end + 1);
            }
            let shared = shared.clone();
            async move {
                let n = events.len() as u64;
                match shared.append(run.clone(), events, ids).await {
                    Ok(appended) => shared
                        .stats
                        .ingested
                        .fetch_add(appended.len() as u64, Ordering::Relaxed),
                    Err(BrokerError::RunFinished(_)) => {
                        tracing::debug!(run = %run, "ingest: the run has already ended");
                        shared.stats.ingest_dropped.fetch_add(n, Ordering::Relaxed)
                    }
                    Err(e) => {
                        tracing::warn!(run = %run, error = %e, "ingest: message not appended");
                        shared.stats.ingest_dropped.fetch_add(n, Ordering::Relaxed)
                    }
                };
            }
        });
        futures_util::future::join_all(publishes).await;
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn takes_the_run_from_the_first_star() {
        assert_eq!(
            run_from_channel("workflow-run:*", "workflow-run:42"),
            Some("42")
        );
        assert_eq!(
            run_from_channel("execution:*:events", "execution:ab-1:events"),
            Some("ab-1")
        );
        assert_eq!(
            run_from_channel("execution:*:events", "execution:a:b:events"),
            Some("a:b")
        );
        assert_eq!(run_from_channel("execution:*:events", "execution:a"), None);
        assert_eq!(run_from_channel("workflow-run:*", "other:42"), None);
        assert_eq!(run_from_channel("w?:*", "wx:7"), Some("7"));
        assert!(check_pattern("a:*").is_ok());
        assert!(check_pattern("a:b").is_err());
        assert!(check_pattern("a:[ab]:*").is_err());
    }

    /// The plain recursive definition of a glob match, the oracle for [`glob`].
    fn glob_by_definition(pattern: &[u8], text: &[u8]) -> bool {
        match pattern.split_first() {
            None => text.is_empty(),
            Some((b'*', rest)) => (0..=text.len()).any(|i| glob_by_definition(rest, &text[i..])),
            Some((b'?', rest)) => !text.is_empty() && glob_by_definition(rest, &text[1..]),
            Some((c, rest)) => text.first() == Some(c) && glob_by_definition(rest, &text[1..]),
        }
    }

    #[test]
    fn glob_agrees_with_its_definition() {
        let alphabet = [b'a', b'b', b'*', b'?'];
        let mut words: Vec<Vec<u8>> = vec![Vec::new()];
        for _ in 0..5 {
            let longer: Vec<Vec<u8>> = words
                .iter()
                .filter(|w| w.len() == words.last().map_or(0, Vec::len))
                .flat_map(|w| {
                    alphabet.iter().map(move |&c| {
                        let mut w = w.clone();
                        w.push(c);
                        w
                    })
                })
                .collect();
            words.extend(longer);
        }
        let texts: Vec<&Vec<u8>> = words
            .iter()
            .filter(|w| !w.contains(&b'*') && !w.contains(&b'?'))
            .collect();
        for pattern in &words {
            for text in &texts {
                assert_eq!(
                    glob(pattern, text),
                    glob_by_definition(pattern, text),
                    "{:?} {:?}",
                    String::from_utf8_lossy(pattern),
                    String::from_utf8_lossy(text)
                );
            }
        }
    }

    /// A pattern with many stars against a channel that almost matches: exponential for the
    /// recursive definition (hours at this size), a few thousand steps here.
    #[test]
    fn many_stars_do_not_take_exponential_time() {
        let pattern = format!("w{}x", "*w".repeat(12));
        let channel = "w".repeat(300);
        assert!(!glob(pattern.as_bytes(), channel.as_bytes()));
        assert_eq!(run_from_channel(&pattern, &channel), None);
        let matching = format!("{channel}x");
        assert!(run_from_channel(&pattern, &matching).is_some());
    }

    #[test]
    fn a_wildcard_inside_a_character_takes_no_run_and_does_not_panic() {
        // `?` matches one byte: the first half of `é`; the capture would start mid-character.
        assert_eq!(run_from_channel("w?*", "wé7"), None);
        assert_eq!(run_from_channel("w??*", "wé7"), Some("7"));
        assert_eq!(run_from_channel("*?", "é"), None);
        assert_eq!(run_from_channel("a:*", "a:é"), Some("é"));
    }

    /// Every pattern and channel of up to three symbols from an alphabet of wildcards, ASCII and
    /// 2-, 3- and 4-byte characters: no panic, and a capture is always where the pattern says.
    #[test]
    fn any_pattern_and_channel_name_is_handled_exhaustively() {
        let alphabet = ["", "a", ":", "é", "€", "😀", "*", "?"];
        let mut words = vec![String::new()];
        for _ in 0..3 {
            let longer: Vec<String> = words
                .iter()
                .flat_map(|w| alphabet.iter().map(move |c| format!("{w}{c}")))
                .collect();
            words.extend(longer);
        }
        words.sort();
        words.dedup();
        let mut checked = 0;
        for pattern in words.iter().filter(|w| w.contains('*')) {
            let star = pattern.find('*').unwrap();
            let (head, tail) = (&pattern[..star], &pattern[star + 1..]);
            for channel in words.iter().filter(|w| !w.contains(['*', '?'])) {
                let matches = glob(pattern.as_bytes(), channel.as_bytes());
                match run_from_channel(pattern, channel) {
                    Some(run) => {
                        assert!(matches, "{pattern:?} {channel:?}");
                        let at = run.as_ptr() as usize - channel.as_ptr() as usize;
                        assert_eq!(at, head.len(), "{pattern:?} {channel:?}");
                        assert!(glob(tail.as_bytes(), &channel.as_bytes()[at + run.len()..]));
                    }
                    // Only a match whose capture would split a character has no run.
                    None if matches && channel.is_ascii() => {
                        panic!("{pattern:?} matches {channel:?} but took no run")
                    }
                    None => {}
                }
                checked += 1;
            }
        }
        assert!(checked > 10_000, "{checked}");
    }

    #[test]
    fn relays_that_saw_the_same_mark_name_messages_alike_and_identical_ones_apart() {
        let (mut early, mut late) = (IngestSync::default(), IngestSync::default());
        // Only the early relay is subscribed yet.
        assert!(
            early.name("c:1", b"x").0.is_none(),
            "nothing is named before a mark"
        );
        early.marked(b"m1");
        let before = early.name("c:1", b"same").0.unwrap();
        // The late relay subscribes and its mark reaches both.
        early.marked(b"m2");
        late.marked(b"m2");
        let both = |a: &mut IngestSync, b: &mut IngestSync, ch: &str, p: &[u8]| {
            let (x, y) = (a.name(ch, p).0.unwrap(), b.name(ch, p).0.unwrap());
            assert_eq!(x, y);
            x
        };
        let first = both(&mut early, &mut late, "c:1", b"same");
        let second = both(&mut early, &mut late, "c:1", b"same");
        let elsewhere = both(&mut early, &mut late, "c:2", b"same");
        let other = both(&mut early, &mut late, "c:1", b"other");
        let ids = [&before, &first, &second, &elsewhere, &other];
        for (i, a) in ids.iter().enumerate() {
            for b in &ids[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert!(first.starts_with("m2/") && first.ends_with("/1") && second.ends_with("/2"));
    }

    #[test]
    fn asks_for_an_early_mark_once_when_the_counts_grow_large() {
        let mut sync = IngestSync::default();
        sync.marked(b"m");
        let asks = (0..=MAX_COUNTED as u32 + 10)
            .filter(|i| sync.name("c", &i.to_le_bytes()).1)
            .count();
        assert_eq!(asks, 1);
        sync.marked(b"m2");
        assert!(sync.counts.is_empty());
    }

    /// Random patterns, channel names and payloads (any bytes, any characters): nothing panics.
    #[test]
    fn random_channels_and_payloads_never_panic() {
        random_channels_and_payloads(&ForeignMessages::default());
    }

    /// Maps random patterns, channel names and payloads with ingest's mapping, `foreign` tried
    /// first; it must never panic, and a payload always becomes an event.
    pub(crate) fn random_channels_and_payloads(foreign: &ForeignMessages) {
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let pieces = [
            "*", "?", "a", ":", "-", "{", "}", "é", "€", "😀", "\u{0}", "\n", "\"", "[", "\\",
        ];
        for _ in 0..20_000 {
            let word = |next: &mut dyn FnMut() -> u64, max: u64| -> String {
                (0..next() % max)
                    .map(|_| pieces[(next() % pieces.len() as u64) as usize])
                    .collect()
            };
            let (pattern, channel) = (word(&mut next, 6), word(&mut next, 12));
            if let Some(run) = run_from_channel(&pattern, &channel) {
                assert!(channel.contains(run));
            }
            let _ = check_pattern(&pattern);
            let payload: Vec<u8> = (0..next() % 64).map(|_| next() as u8).collect();
            let text = word(&mut next, 40);
            let ev = map_payload(&payload, foreign);
            assert!(!ev.name().is_empty());
            let _ = map_payload(text.as_bytes(), foreign);
            let _ = map_payload(
                format!(r#"{{"event":"{text}","data":{{}}}}"#).as_bytes(),
                foreign,
            );
            let _ = map_payload(format!(r#"{{"status":"{text}"}}"#).as_bytes(), foreign);
            let _ = map_payload(
                format!(r#"{{"type":"node","status":"{text}"}}"#).as_bytes(),
                foreign,
            );
        }
    }

    fn mapped(payload: &Value) -> (String, Value) {
        let ev = map_payload(payload.to_string().as_bytes(), &ForeignMessages::default());
        (ev.name().to_owned(), ev.data)
    }

    #[test]
    fn maps_execution_events() {
        let (name, data) = mapped(&json!({
            "event": "node_started", "execution_id": "e1", "node_key": "fetch",
            "data": {"attempt": 1}, "timestamp": "2026-01-01T00:00:00Z"
        }));
        assert_eq!(name, "node.started");
        assert_eq!(data, json!({"attempt": 1, "node_key": "fetch"}));
        let (name, _) = mapped(&json!({"event": "execution_completed", "data": {}}));
        assert_eq!(name, "run.completed");
        let (name, data) = mapped(&json!({"event": "workflow.failed", "data": {"error": "x"}}));
        assert_eq!((name.as_str(), data), ("run.failed", json!({"error": "x"})));
        let (name, data) = mapped(&json!({"event": "node.progress", "node_key": "n",
            "data": {"progress": 30}}));
        assert_eq!(
            (name.as_str(), data),
            ("node.progress", json!({"progress": 30, "node_key": "n"}))
        );
        // an unknown but valid name passes through with its data
        let (name, data) = mapped(&json!({"event": "cache.hit", "data": {"k": 1}}));
        assert_eq!((name.as_str(), data), ("cache.hit", json!({"k": 1})));
        // a known name whose data does not fit, or an invalid name: custom with the raw JSON
        let raw = json!({"event": "node.started", "data": {}});
        assert_eq!(mapped(&raw), (CUSTOM_EVENT.into(), raw));
        let raw = json!({"event": "Not A Name!", "data": {}});
        assert_eq!(mapped(&raw), (CUSTOM_EVENT.into(), raw));
    }

    #[test]
    fn maps_workflow_run_statuses() {
        let raw = json!({"status": "Success", "result": {"rows": 3}, "workflow_id": 9});
        assert_eq!(mapped(&raw), ("run.completed".into(), raw));
        let (name, data) = mapped(&json!({"status": "Failure", "message": "boom"}));
        assert_eq!(name, "run.failed");
        assert_eq!(
            data,
            json!({"status": "Failure", "message": "boom", "error": "boom"})
        );
        let (name, data) = mapped(&json!({"status": "FAILURE", "error": "bad"}));
        assert_eq!(
            (name.as_str(), data),
            ("run.failed", json!({"status": "FAILURE", "error": "bad"}))
        );
        let (name, data) = mapped(&json!({"status": "Success", "node_count": "many"}));
        assert_eq!(name, "run.completed");
        assert_eq!(
            data,
            json!({"payload": {"status": "Success", "node_count": "many"}})
        );
        let raw = json!({"status": "Running", "step": 2});
        assert_eq!(mapped(&raw), (CUSTOM_EVENT.into(), raw));
    }

    #[test]
    fn carries_anything_else_as_custom() {
        assert_eq!(mapped(&json!([1, 2])), (CUSTOM_EVENT.into(), json!([1, 2])));
        let ev = map_payload(b"plain text", &ForeignMessages::default());
        assert_eq!(ev.name(), CUSTOM_EVENT);
        assert_eq!(ev.data, json!("plain text"));
    }
}
