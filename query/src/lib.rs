//! Outpost's query engines (PromQL, LogQL, TraceQL, profiles, correlation, SLO) over
//! `storage`'s read traits. Synchronous; no network I/O.
#![warn(missing_docs)]

pub mod logql;
pub mod profiles;
pub mod promql;
pub mod traceql;
