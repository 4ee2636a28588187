//! Protocol payloads mapped and validated into Outpost's model.
//!
//! Job: turn decoded wire payloads (today OTLP metrics, logs and traces) into `storage::model`
//! batches, enforcing the ingest limits and reporting what was rejected and why, so the protocol
//! edge can answer with OTLP partial success.
//!
//! Invariants:
//! - Everything here is synchronous and pure apart from the explicit delta-to-cumulative state
//!   ([`otlp::MetricsState`]) the caller passes in: no I/O, no clocks (the caller passes `now`),
//!   no async runtime, no servers. Only protobuf *message* types are used.
//! - Requests are taken by value and their strings are moved into the model; the hot path does
//!   not clone per item.
#![warn(missing_docs)]

pub mod loki_push;
pub mod otlp;
pub mod pprof;
pub mod prom_text;
pub mod remote_write;
pub mod spanmetrics;
