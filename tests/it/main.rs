//! End-to-end tests: the real server on port 0 in a temp data folder, spoken to with real
//! protocols (OpenTelemetry SDK exporters, OTLP protobuf/JSON bodies, gRPC) and, for crash
//! safety, run as a child process and killed.

mod bad_input;
mod crash;
mod loki_api;
mod loki_otlp;
mod loki_reference;
mod otlp_sdk;
mod prom_api;
mod prom_diff;
mod prom_scrape;
mod prom_util;
mod prom_write;
mod pyroscope_ingest;
mod pyroscope_otlp;
mod pyroscope_query;
mod shell;
mod support;
mod tempo;
mod tidy;
