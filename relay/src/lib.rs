//! runwire relay.
pub mod broker;
pub mod hub;
pub mod metrics;
