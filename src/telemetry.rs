//! Outpost's own telemetry. Each internal event is one method that both logs (through `tracing`)
//! and bumps its series, so `/metrics` and the logs cannot drift apart (Vector's `InternalEvent`).

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use storage::model::Signal;

/// How a request arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// OTLP/gRPC.
    Grpc,
    /// OTLP/HTTP with a protobuf body.
    HttpProtobuf,
    /// OTLP/HTTP with a JSON body.
    HttpJson,
    /// Prometheus remote write.
    RemoteWrite,
    /// Prometheus scraping.
    Scrape,
    /// Loki push (JSON or protobuf).
    LokiPush,
    /// Pyroscope `/ingest` or the connect `Push`.
    Pyroscope,
    /// Derived at ingest from other signals (span metrics, service graph).
    Derived,
}

impl Protocol {
    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::HttpProtobuf => "http_protobuf",
            Protocol::HttpJson => "http_json",
            Protocol::RemoteWrite => "remote_write",
            Protocol::Scrape => "scrape",
            Protocol::LokiPush => "loki_push",
            Protocol::Pyroscope => "pyroscope",
            Protocol::Derived => "derived",
        }
    }
}

/// Why a whole request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestReject {
    /// Body could not be decoded (protobuf, JSON, gzip).
    Malformed,
    /// Content-Type or Content-Encoding we do not speak.
    UnsupportedMediaType,
    /// Over `limits.max_request_bytes`.
    TooLarge,
    /// Over `limits.max_inflight_requests`.
    Saturated,
    /// Replay still running or shutting down.
    NotReady,
    /// The body did not arrive within `limits.request_body_timeout`.
    BodyTimeout,
    /// The store refused the write (IO error, disk full).
    StorageError,
    /// Resident memory over `memory_limit_bytes`.
    MemoryPressure,
}

impl RequestReject {
    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestReject::Malformed => "malformed",
            RequestReject::UnsupportedMediaType => "unsupported_media_type",
            RequestReject::TooLarge => "too_large",
            RequestReject::Saturated => "saturated",
            RequestReject::NotReady => "not_ready",
            RequestReject::BodyTimeout => "body_timeout",
            RequestReject::StorageError => "storage_error",
            RequestReject::MemoryPressure => "memory_limit",
        }
    }
}

type L2 = [(&'static str, &'static str); 2];
type L3 = [(&'static str, &'static str); 3];

/// The registry and every series Outpost exports about itself.
pub struct Telemetry {
    registry: Registry,
    received_items: Family<L2, Counter>,
    received_bytes: Family<L2, Counter>,
    rejected_items: Family<L2, Counter>,
    rejected_requests: Family<L3, Counter>,
    request_duration: Family<L2, Histogram>,
    wal_fsync: Histogram,
    wal_corruptions: Counter,
    log_chunks_damaged: Counter,
    replay_seconds: Gauge<f64, AtomicU64>,
    replay_records: Gauge,
    ready: Gauge,
    resident_memory: Gauge,
    memory_limit: Gauge,
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

impl Telemetry {
    /// Registers every series.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("outpost");
        let received_items = Family::<L2, Counter>::default();
        let received_bytes = Family::<L2, Counter>::default();
        let rejected_items = Family::<L2, Counter>::default();
        let rejected_requests = Family::<L3, Counter>::default();
        let request_duration =
            Family::<L2, Histogram>::new_with_constructor(|| Histogram::new(exponential_buckets(0.0005, 2.0, 16)));
        let wal_fsync = Histogram::new(exponential_buckets(0.00005, 2.0, 18));
        let wal_corruptions = Counter::default();
        let log_chunks_damaged = Counter::default();
        let replay_seconds = Gauge::<f64, AtomicU64>::default();
        let replay_records = Gauge::default();
        let ready = Gauge::default();
        let resident_memory = Gauge::default();
        let memory_limit = Gauge::default();
        registry.register(
            "received_items",
            "Items accepted and stored, by signal and protocol (samples, log records, spans)",
            received_items.clone(),
        );
        registry.register(
            "received_bytes",
            "Request bytes received as sent on the wire, by signal and protocol",
            received_bytes.clone(),
        );
        registry.register(
            "rejected_items",
            "Items rejected inside accepted requests, by reason",
            rejected_items.clone(),
        );
        registry.register("rejected_requests", "Whole requests refused, by reason", rejected_requests.clone());
        registry.register(
            "ingest_request_duration_seconds",
            "Time from request start to acknowledgement",
            request_duration.clone(),
        );
        registry.register("wal_fsync_duration_seconds", "Duration of WAL fsync calls", wal_fsync.clone());
        registry.register(
            "wal_corruptions",
            "Corrupt WAL segments or records found at replay",
            wal_corruptions.clone(),
        );
        registry.register(
            "log_chunks_damaged",
            "Damaged log chunks found (and skipped) by queries, each counted once",
            log_chunks_damaged.clone(),
        );
        registry.register("wal_replay_duration_seconds", "Time the last WAL replay took", replay_seconds.clone());
        registry.register("wal_replay_records", "Records read by the last WAL replay", replay_records.clone());
        registry.register("ready", "1 once the stores are open and serving", ready.clone());
        registry.register("resident_memory_bytes", "Resident memory of the process", resident_memory.clone());
        registry.register(
            "memory_limit_bytes",
            "Resident memory above which ingest answers retry later",
            memory_limit.clone(),
        );
        Telemetry {
            registry,
            received_items,
            received_bytes,
            rejected_items,
            rejected_requests,
            request_duration,
            wal_fsync,
            wal_corruptions,
            log_chunks_damaged,
            replay_seconds,
            replay_records,
            ready,
            resident_memory,
            memory_limit,
        }
    }

    /// A request was stored (possibly with some items rejected).
    pub fn ingested(
        &self,
        signal: Signal,
        protocol: Protocol,
        outcome: &crate::pipeline::Outcome,
        wire_bytes: usize,
        took: Duration,
    ) {
        let l = [("signal", signal.as_str()), ("protocol", protocol.as_str())];
        self.received_items.get_or_create(&l).inc_by(outcome.accepted);
        self.received_bytes.get_or_create(&l).inc_by(wire_bytes as u64);
        self.request_duration.get_or_create(&l).observe(took.as_secs_f64());
        for (reason, n) in &outcome.reasons {
            self.rejected_items.get_or_create(&[("signal", signal.as_str()), ("reason", reason.as_str())]).inc_by(*n);
        }
        if outcome.rejected > 0 {
            tracing::debug!(
                signal = signal.as_str(),
                protocol = protocol.as_str(),
                accepted = outcome.accepted,
                rejected = outcome.rejected,
                message = %outcome.message,
                "Items rejected"
            );
        }
    }

    /// A whole request was refused.
    pub fn request_rejected(&self, signal: Signal, protocol: Protocol, reason: RequestReject, detail: &str) {
        self.rejected_requests
            .get_or_create(&[("signal", signal.as_str()), ("protocol", protocol.as_str()), ("reason", reason.as_str())])
            .inc();
        match reason {
            RequestReject::StorageError => tracing::warn!(
                signal = signal.as_str(),
                protocol = protocol.as_str(),
                reason = reason.as_str(),
                error = %detail,
                "Request refused"
            ),
            _ => tracing::debug!(
                signal = signal.as_str(),
                protocol = protocol.as_str(),
                reason = reason.as_str(),
                error = %detail,
                "Request refused"
            ),
        }
    }

    /// WAL replay finished and the stores are open.
    pub fn replayed(&self, report: &storage::ReplayReport) {
        self.replay_seconds.set(report.duration.as_secs_f64());
        self.replay_records.set(i64::try_from(report.records).unwrap_or(i64::MAX));
        tracing::info!(
            segments = report.segments,
            records = report.records,
            items = report.items,
            bytes = report.bytes,
            torn_tail_bytes = report.torn_tail_bytes,
            corrupt_segments = report.corrupt.len(),
            took_ms = report.duration.as_millis() as u64,
            "WAL replayed"
        );
    }

    /// A resident-memory measurement; logs when the limit is crossed either way.
    pub fn memory(&self, rss: u64, limit: u64, was_over: bool, over: bool) {
        self.resident_memory.set(i64::try_from(rss).unwrap_or(i64::MAX));
        self.memory_limit.set(i64::try_from(limit).unwrap_or(i64::MAX));
        match (was_over, over) {
            (false, true) => tracing::warn!(rss, limit, "Memory limit reached; refusing writes until below it"),
            (true, false) => tracing::info!(rss, limit, "Memory back under the limit; accepting writes"),
            _ => {}
        }
    }

    /// Readiness changed.
    pub fn set_ready(&self, ready: bool) {
        self.ready.set(i64::from(ready));
    }

    /// The exposition text for `/metrics` (OpenMetrics text format).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

impl storage::StorageEvents for Telemetry {
    fn wal_fsync(&self, d: Duration) {
        self.wal_fsync.observe(d.as_secs_f64());
    }

    fn wal_corruption(&self, path: &std::path::Path, offset: u64, detail: &str) {
        self.wal_corruptions.inc();
        tracing::warn!(path = %path.display(), offset, error = %detail, "Corrupt WAL data skipped");
    }

    fn log_chunk_damaged(&self, path: &std::path::Path, chunk: usize, detail: &str) {
        self.log_chunks_damaged.inc();
        tracing::warn!(path = %path.display(), chunk, error = %detail, "Damaged log chunk skipped by queries");
    }
}
