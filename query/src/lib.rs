//! Outpost's query engines (PromQL, LogQL, TraceQL, profiles, correlation, SLO) over
//! `storage`'s read traits. Synchronous; no network I/O.
#![warn(missing_docs)]
