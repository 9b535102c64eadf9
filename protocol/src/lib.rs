//! runwire's wire contract, shared by the relay and the browser SDK.
//!
//! - [`event`]: run ids, event names, the typed events and the envelope every event travels in.
//! - [`frame`]: the frames a WebSocket client sends ([`ClientFrame`]) and receives ([`ServerFrame`]).
//! - [`state`]: [`RunState`], the fold of a run's events into its current snapshot.
//! - [`close`]: WebSocket close codes and what a client should do after each.
//! - [`token`] (feature `token`): JWT HS256 claims, signing and verification.
//!
//! Nothing here does I/O, and the crate is `no_std` (it needs only `alloc`), so it builds for
//! `wasm32-unknown-unknown` without pulling the standard library's panic and formatting machinery
//! into the browser SDK.
#![no_std]
#![deny(missing_docs)]

extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod close;
pub mod event;
pub mod frame;
pub mod state;
#[cfg(feature = "token")]
pub mod token;

pub use close::{CloseCode, Reconnect};
pub use event::{Envelope, EventError, RunEvent, is_valid_event_name, is_valid_run_id};
pub use frame::{ClientFrame, EndReason, ErrorCode, ServerFrame};
pub use state::{JsonText, NodeState, NodeStatus, Opaque, RunState, RunStatus};

/// Protocol version announced in the `welcome` frame.
pub const PROTOCOL_VERSION: u32 = 1;
