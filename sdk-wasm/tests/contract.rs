//! The wire contract exists in Rust (`runwire-protocol`), in the SDK's TypeScript declarations
//! (`src/types.d.ts`), in the npm package (`npm/src/index.ts`) and in `docs/protocol.md`. These
//! tests read the TypeScript and the docs and fail when any of them disagrees with the protocol
//! crate: event names and data shapes, run states, end reasons, error codes and close codes.
#![cfg(not(target_arch = "wasm32"))]

use std::cell::RefCell;
use std::collections::BTreeSet;

use runwire_protocol::event::{
    KNOWN_EVENTS, Log, LogLevel, NodeCompleted, NodeFailed, NodeProgress, NodeSkipped, NodeStarted,
    RunCancelled, RunCompleted, RunFailed, RunProgress, RunStarted,
};
use runwire_protocol::{
    CloseCode, EndReason, ErrorCode, NodeState, NodeStatus, Reconnect, RunEvent, RunState,
    RunStatus,
};
use runwire_sdk::wire::Ended;
use serde::de::{self, DeserializeOwned, Deserializer, Visitor};
use serde::{Serialize, forward_to_deserialize_any};
use serde_json::{Map, Value, json};

const TYPES: &str = include_str!("../src/types.d.ts");
const NPM_INDEX: &str = include_str!("../../npm/src/index.ts");
const PROTOCOL_DOC: &str = include_str!("../../docs/protocol.md");

/// The field names (of a struct) or variant names (of an enum) serde knows a type by, as its
/// derived `Deserialize` declares them.
fn serde_names<T: DeserializeOwned>() -> Vec<&'static str> {
    struct Names(RefCell<Vec<&'static str>>);
    impl<'de> Deserializer<'de> for &Names {
        type Error = de::value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("not a struct or an enum"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0.borrow_mut() = fields.to_vec();
            Err(de::Error::custom("names taken"))
        }
        fn deserialize_enum<V: Visitor<'de>>(
            self,
            _: &'static str,
            variants: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0.borrow_mut() = variants.to_vec();
            Err(de::Error::custom("names taken"))
        }
        forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
            option unit unit_struct newtype_struct seq tuple tuple_struct map identifier ignored_any
        }
    }
    let names = Names(RefCell::new(Vec::new()));
    let _ = T::deserialize(&names);
    let names = names.0.into_inner();
    assert!(
        !names.is_empty(),
        "{} has no names",
        std::any::type_name::<T>()
    );
    names
}

/// A struct's fields as TypeScript would declare them: name, whether optional, and the type of
/// the required ones as their default value shows it.
fn rust_fields<T: DeserializeOwned + Serialize + Default>() -> Vec<(String, bool)> {
    let default = serde_json::to_value(T::default()).unwrap();
    serde_names::<T>()
        .into_iter()
        .map(|f| (f.to_owned(), default.get(f).is_none()))
        .collect()
}

/// The members of `export interface {name} { … }`: name, optional, TypeScript type (index
/// signatures left out).
fn ts_interface(name: &str) -> Vec<(String, bool, String)> {
    let start = ["export interface ", name, " {"].concat();
    let body = TYPES
        .split(&start)
        .nth(1)
        .unwrap_or_else(|| panic!("no `interface {name}` in types.d.ts"));
    let body = &body[..body.find("\n}").unwrap_or(body.len())];
    let body = body
        .lines()
        .next()
        .filter(|l| l.ends_with('}'))
        .map_or(body, |l| {
            &l[..l.len() - 1] // a one-line interface
        });
    let mut members = Vec::new();
    let mut rest = body;
    // Doc comments out.
    let mut text = String::new();
    while let Some(i) = rest.find("/**") {
        text.push_str(&rest[..i]);
        rest = &rest[i + rest[i..].find("*/").expect("a closed comment") + 2..];
    }
    text.push_str(rest);
    for member in text
        .split([';', '\n'])
        .map(str::trim)
        .filter(|m| !m.is_empty())
    {
        if member.starts_with('[') {
            continue;
        }
        let (name, ty) = member.split_once(':').unwrap_or_else(|| panic!("{member}"));
        let (name, optional) = match name.trim().strip_suffix('?') {
            Some(n) => (n, true),
            None => (name.trim(), false),
        };
        members.push((name.to_owned(), optional, ty.trim().to_owned()));
    }
    members
}

/// The string literals of `export type {name} = "a" | "b" …;`.
fn ts_union(name: &str) -> Vec<String> {
    let start = ["export type ", name, " = "].concat();
    let body = TYPES
        .split(&start)
        .nth(1)
        .unwrap_or_else(|| panic!("no `type {name}` in types.d.ts"));
    let body = &body[..body.find(';').unwrap()];
    body.split('|')
        .filter_map(|t| {
            t.trim()
                .strip_prefix('"')?
                .strip_suffix('"')
                .map(str::to_owned)
        })
        .collect()
}

/// Fields as `name` or `name?` (optional), sorted.
fn shape(fields: &[(String, bool)]) -> BTreeSet<String> {
    let mark = |optional: bool| if optional { "?" } else { "" };
    sorted(fields.iter().map(|(n, o)| format!("{n}{}", mark(*o))))
}

fn ts_shape(members: &[(String, bool, String)]) -> BTreeSet<String> {
    let fields: Vec<(String, bool)> = members.iter().map(|(n, o, _)| (n.clone(), *o)).collect();
    shape(&fields)
}

fn sorted<I: IntoIterator<Item = S>, S: Into<String>>(items: I) -> BTreeSet<String> {
    items.into_iter().map(Into::into).collect()
}

#[test]
fn event_names_are_the_protocols() {
    // The map of typed events in types.d.ts, in the protocol's order.
    let map = TYPES
        .split("export interface RunEventDataMap {")
        .nth(1)
        .and_then(|b| b.split("\n}").next())
        .expect("RunEventDataMap");
    let names: Vec<&str> = map
        .lines()
        .filter_map(|l| l.trim().strip_prefix('"')?.split('"').next())
        .collect();
    assert_eq!(names, KNOWN_EVENTS, "types.d.ts RunEventDataMap");
    // The npm package's list.
    let list = NPM_INDEX
        .split("export const KNOWN_EVENTS")
        .nth(1)
        .and_then(|b| b.split("];").next())
        .expect("KNOWN_EVENTS in npm/src/index.ts");
    let names: Vec<&str> = list
        .lines()
        .filter_map(|l| l.trim().strip_prefix('"')?.split('"').next())
        .collect();
    assert_eq!(names, KNOWN_EVENTS, "npm/src/index.ts KNOWN_EVENTS");
}

/// Each typed event's data interface has the protocol struct's fields, the same ones optional,
/// and types that accept what the protocol accepts.
#[test]
fn event_data_shapes_are_the_protocols() {
    let shapes: Vec<(&str, Vec<(String, bool)>)> = vec![
        ("run.started", rust_fields::<RunStarted>()),
        ("run.progress", rust_fields::<RunProgress>()),
        ("run.completed", rust_fields::<RunCompleted>()),
        ("run.failed", rust_fields::<RunFailed>()),
        ("run.cancelled", rust_fields::<RunCancelled>()),
        ("node.started", rust_fields::<NodeStarted>()),
        ("node.progress", rust_fields::<NodeProgress>()),
        ("node.completed", rust_fields::<NodeCompleted>()),
        ("node.failed", rust_fields::<NodeFailed>()),
        ("node.skipped", rust_fields::<NodeSkipped>()),
        ("log", rust_fields::<Log>()),
    ];
    assert_eq!(
        shapes.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        KNOWN_EVENTS,
        "every known event has its shape checked here"
    );
    for (event, fields) in shapes {
        let interface = TYPES
            .lines()
            .find_map(|l| {
                l.trim()
                    .strip_prefix(&format!("\"{event}\": "))?
                    .strip_suffix(';')
            })
            .unwrap_or_else(|| panic!("{event} not in RunEventDataMap"));
        let ts = ts_interface(interface);
        assert_eq!(
            ts_shape(&ts),
            shape(&fields),
            "{interface} against the protocol's {event}"
        );
        // The smallest valid data, then each field set to a value of its TypeScript type (and
        // of another type, which must be refused unless the type is `unknown`).
        let base = RunEvent::parse(event, &json!({}))
            .map(|_| Map::new())
            .unwrap_or_else(|_| {
                let mut m = Map::new();
                for (name, optional, ty) in &ts {
                    if !optional {
                        m.insert(name.clone(), sample(ty));
                    }
                }
                m
            });
        assert!(
            RunEvent::parse(event, &Value::Object(base.clone())).is_ok(),
            "{event}: {base:?}"
        );
        for (name, _, ty) in &ts {
            let mut data = base.clone();
            data.insert(name.clone(), sample(ty));
            let ok = RunEvent::parse(event, &Value::Object(data.clone()));
            assert!(ok.is_ok(), "{event}.{name}: {ty} {data:?}: {ok:?}");
            if ty != "unknown" {
                data.insert(name.clone(), json!({"not": ty}));
                assert!(
                    RunEvent::parse(event, &Value::Object(data.clone())).is_err(),
                    "{event}.{name}: declared {ty}, yet an object is accepted"
                );
            }
        }
    }
    let levels = serde_names::<LogLevel>();
    let levels = sorted(levels.into_iter().filter(|l| *l != "warn"));
    assert_eq!(sorted(ts_union("LogLevel")), levels, "LogLevel");
    for l in ts_union("LogLevel") {
        serde_json::from_value::<LogLevel>(json!(l)).unwrap();
    }
}

/// A value of TypeScript type `ty`.
fn sample(ty: &str) -> Value {
    match ty {
        "string" => json!("x"),
        "number" => json!(50),
        "unknown" => json!({"any": [1]}),
        "LogLevel" => json!("info"),
        other => panic!("no sample for TypeScript type {other}"),
    }
}

#[test]
fn run_state_shape_is_the_protocols() {
    for (interface, fields) in [
        ("RunState", rust_fields::<RunState>()),
        ("NodeState", rust_fields::<NodeState>()),
    ] {
        let ts = ts_interface(interface);
        assert_eq!(ts_shape(&ts), shape(&fields), "{interface}");
    }
    assert_eq!(
        sorted(ts_union("RunStatus")),
        sorted(serde_names::<RunStatus>()),
        "RunStatus"
    );
    assert_eq!(
        sorted(ts_union("NodeStatus")),
        sorted(serde_names::<NodeStatus>()),
        "NodeStatus"
    );
}

#[test]
fn end_reasons_are_the_protocols() {
    let names = serde_names::<EndReason>();
    assert_eq!(
        sorted(ts_union("EndReason")),
        sorted(names.clone()),
        "EndReason"
    );
    assert_eq!(
        sorted(EndReason::ALL.map(EndReason::as_str)),
        sorted(names.clone()),
        "EndReason::ALL"
    );
    for r in EndReason::ALL {
        // The SDK knows each one (and passes any other on as it came).
        assert!(Ended::named(r.as_str().into()).is(r));
        assert_eq!(Ended::named(r.as_str().into()), Ended::from(r));
        assert_eq!(serde_json::to_value(r).unwrap(), json!(r.as_str()));
    }
    let other = Ended::named("archived".into());
    assert_eq!(other.as_str(), "archived");
    assert!(!EndReason::ALL.into_iter().any(|r| other.is(r)));
    // docs/protocol.md's `unsubscribed` row lists them.
    let row = PROTOCOL_DOC
        .lines()
        .find(|l| l.starts_with("| `unsubscribed` |"))
        .expect("the unsubscribed row in docs/protocol.md");
    // `unsubscribed` | `run`, `reason`: `completed` \| `failed` …: the names after `reason`.
    let listed = sorted(row.split('`').skip(1).step_by(2).skip(3).map(str::to_owned));
    assert_eq!(listed, sorted(names), "{row}");
}

#[test]
fn error_codes_are_the_protocols() {
    let names = serde_names::<ErrorCode>();
    assert_eq!(
        sorted(ErrorCode::ALL.map(ErrorCode::as_str)),
        sorted(names.clone()),
        "ErrorCode::ALL"
    );
    for c in ErrorCode::ALL {
        assert_eq!(serde_json::to_value(c).unwrap(), json!(c.as_str()));
    }
    // docs/protocol.md's table of error codes.
    let table = PROTOCOL_DOC
        .split("### Error frames")
        .nth(1)
        .expect("docs/protocol.md: Error frames");
    let documented = sorted(
        table
            .lines()
            .skip_while(|l| !l.starts_with("| `code` |"))
            .skip(2)
            .take_while(|l| l.starts_with("| `"))
            .map(|l| l.split('`').nth(1).unwrap().to_owned()),
    );
    assert_eq!(documented, sorted(names), "docs/protocol.md error codes");
}

/// The SDK follows the protocol's table: each close code leads to its documented policy (the
/// docs table itself is checked against the same table in `runwire-protocol`).
#[test]
fn close_codes_have_one_table() {
    let documented: Vec<u16> = PROTOCOL_DOC
        .lines()
        .filter_map(|l| l.strip_prefix("| ")?.split(' ').next()?.parse().ok())
        .filter(|c| (1000..5000).contains(c))
        .collect();
    assert_eq!(
        sorted(documented.iter().map(u16::to_string)),
        sorted(CloseCode::ALL.map(|c| c.code().to_string())),
        "docs/protocol.md close codes"
    );
    for c in CloseCode::ALL {
        assert_eq!(CloseCode::reconnect_for(c.code()), c.reconnect());
    }
    assert_eq!(CloseCode::reconnect_for(1006), Reconnect::Backoff);
}
