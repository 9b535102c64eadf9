//! runwire relay
