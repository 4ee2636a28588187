//! Outpost's benchmark harnesses. They run the real `outpost` binary as a child process and drive
//! it over its public protocols; the pieces here are shared between harnesses:
//!
//! - [`child`]: start a server on port 0, read its addresses from its JSON log, drain its stderr;
//! - [`procfs`]: a process' CPU seconds and peak RSS from `/proc`, the machine's description;
//! - [`otlp_load`]: realistic OTLP export requests for every signal, re-stamped per send;
//! - [`sink`]: a decode-and-drop OTLP receiver, the floor Outpost's CPU per item is compared to;
//! - [`prom_load`]: a Prometheus-like series set and its remote-write requests;
//! - [`report`]: number and date formatting and the percentile rule of the reports.
//!
//! Harnesses: `src/bin/ingest_bench.rs` (OTLP ingest throughput and CPU per item),
//! `src/bin/prom_bench.rs` (remote write and PromQL next to Prometheus and VictoriaMetrics),
//! `src/bin/logs_bench.rs`, `src/bin/traces_bench.rs`, `src/bin/profiles_bench.rs`. See
//! `benches/README.md`.

pub mod child;
pub mod otlp_load;
pub mod procfs;
pub mod prom_load;
pub mod report;
pub mod sink;
