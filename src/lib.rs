//! The Outpost server: the async shell around the synchronous `storage`, `ingest` and `query`
//! crates. It owns the CLI and config, the listeners (axum for HTTP, tonic for gRPC), the
//! protocol edges, background tasks, shutdown and self-telemetry — and no domain logic.

pub mod api;
pub mod config;
pub mod grpc;
pub mod http;
pub mod pipeline;
pub mod scrape;
pub mod server;
pub mod telemetry;
