//! The write path shared by every OTLP receiver (traces, logs, metrics, profiles): admission (in-flight limit, readiness), decoding,
//! mapping into the model (`ingest`), and the durable write (`storage`). Receivers only translate
//! their protocol to and from these calls; the CPU-bound steps run on the blocking pool.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use ingest::otlp::{Limits, LogsOptions, MetricsState, RejectReason};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::profiles::v1development::ExportProfilesServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use storage::Storage;
use storage::model::{Signal, WriteBatch};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::telemetry::{Protocol, RequestReject, Telemetry};

/// Seconds a client is told to wait before retrying a refused write.
pub const RETRY_AFTER_SECS: u64 = 1;

/// A decoded OTLP export request.
pub enum Request {
    /// Spans.
    Traces(ExportTraceServiceRequest),
    /// Log records.
    Logs(ExportLogsServiceRequest),
    /// Metric data points.
    Metrics(ExportMetricsServiceRequest),
    /// Profiles (OTLP `v1development`).
    Profiles(ExportProfilesServiceRequest),
}

impl Request {
    fn signal(&self) -> Signal {
        match self {
            Request::Traces(_) => Signal::Traces,
            Request::Logs(_) => Signal::Logs,
            Request::Metrics(_) => Signal::Metrics,
            Request::Profiles(_) => Signal::Profiles,
        }
    }
}

/// An OTLP export request, decoded or still in its wire encoding.
pub enum Payload {
    /// Already decoded (gRPC: tonic decodes).
    Decoded(Request),
    /// Undecoded HTTP body (decompressed); decoded on the blocking pool.
    Encoded {
        /// Which export request the body holds.
        signal: Signal,
        /// Protobuf or JSON.
        json: bool,
        /// The body.
        body: Bytes,
    },
}

impl Payload {
    /// The signal the request carries.
    pub fn signal(&self) -> Signal {
        match self {
            Payload::Decoded(r) => r.signal(),
            Payload::Encoded { signal, .. } => *signal,
        }
    }
}

/// What an accepted request came to.
#[derive(Debug, Default, Clone)]
pub struct Outcome {
    /// Items stored.
    pub accepted: u64,
    /// Items rejected (reported as OTLP partial success).
    pub rejected: u64,
    /// Rejections by reason.
    pub reasons: Vec<(RejectReason, u64)>,
    /// Human summary for `partial_success.error_message`.
    pub message: String,
}

/// Why a whole request failed.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// Stores not open yet, or shutting down: retry later.
    #[error("not ready: {0}")]
    NotReady(&'static str),
    /// The process is at its memory limit: retry later.
    #[error("memory limit reached ({rss} bytes resident, memory_limit_bytes = {limit}); retry later")]
    MemoryPressure {
        /// Resident bytes when last measured.
        rss: u64,
        /// The configured limit.
        limit: u64,
    },
    /// Too many requests in flight: retry later.
    #[error("too many ingest requests in flight (limits.max_inflight_requests = {0}); retry later")]
    Saturated(usize),
    /// The body is not a valid export request.
    #[error("{0}")]
    Malformed(String),
    /// The store refused the write; nothing of the request was acknowledged.
    #[error("write failed: {0}")]
    Storage(storage::WriteError),
    /// A bug (a panicked task); nothing of the request was acknowledged.
    #[error("internal error: {0}")]
    Internal(String),
}

/// How a receiver should answer a failure, whatever its protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The client sent something wrong: do not retry.
    BadRequest,
    /// The request is over a size limit: do not retry as is.
    TooLarge,
    /// Too many requests at once: retry later (429).
    Saturated,
    /// Temporarily unable (not ready, shutting down, disk full or failing): retry later (503).
    Unavailable,
    /// A bug: do not retry.
    Internal,
}

impl PipelineError {
    /// The telemetry reason.
    pub fn reason(&self) -> RequestReject {
        match self {
            PipelineError::NotReady(_) => RequestReject::NotReady,
            PipelineError::Saturated(_) => RequestReject::Saturated,
            PipelineError::MemoryPressure { .. } => RequestReject::MemoryPressure,
            PipelineError::Malformed(_) => RequestReject::Malformed,
            PipelineError::Storage(_) | PipelineError::Internal(_) => RequestReject::StorageError,
        }
    }

    /// The protocol-independent class of the failure.
    pub fn class(&self) -> ErrorClass {
        match self {
            PipelineError::NotReady(_) | PipelineError::MemoryPressure { .. } => ErrorClass::Unavailable,
            PipelineError::Saturated(_) => ErrorClass::Saturated,
            PipelineError::Malformed(_) => ErrorClass::BadRequest,
            PipelineError::Storage(storage::WriteError::TooLarge { .. }) => ErrorClass::TooLarge,
            PipelineError::Storage(e) if e.is_retryable() || matches!(e, storage::WriteError::Closed) => {
                ErrorClass::Unavailable
            }
            PipelineError::Storage(_) | PipelineError::Internal(_) => ErrorClass::Internal,
        }
    }
}

/// Shared state of the write path.
pub struct Pipeline {
    storage: OnceLock<Arc<Storage>>,
    closing: AtomicBool,
    /// Resident bytes at the last measurement, and the limit above which writes are refused.
    rss: AtomicU64,
    memory_limit: u64,
    inflight: Arc<Semaphore>,
    max_inflight: usize,
    limits: Limits,
    logs: LogsOptions,
    metrics_state: MetricsState,
    /// Span metrics and service-graph running totals (derived from every spans batch).
    span_metrics: ingest::spanmetrics::SpanMetricsState,
    /// Limits of OTLP profiles (the pprof ones: samples and symbols per profile).
    profile_limits: ingest::pprof::PprofLimits,
    /// Self-telemetry.
    pub telemetry: Arc<Telemetry>,
}

impl Pipeline {
    /// A pipeline with no store yet (`set_storage` makes it ready).
    pub fn new(
        max_inflight: usize,
        memory_limit: u64,
        limits: Limits,
        logs: LogsOptions,
        telemetry: Arc<Telemetry>,
    ) -> Self {
        Pipeline {
            storage: OnceLock::new(),
            closing: AtomicBool::new(false),
            rss: AtomicU64::new(0),
            memory_limit,
            inflight: Arc::new(Semaphore::new(max_inflight)),
            max_inflight,
            limits,
            logs,
            metrics_state: MetricsState::new(),
            span_metrics: ingest::spanmetrics::SpanMetricsState::new(),
            profile_limits: ingest::pprof::PprofLimits::default(),
            telemetry,
        }
    }

    /// Sets the limits OTLP profiles are mapped under (the Pyroscope ingest's, from the config).
    pub fn with_profile_limits(mut self, limits: ingest::pprof::PprofLimits) -> Self {
        self.profile_limits = limits;
        self
    }

    /// Makes the pipeline ready once replay is done.
    pub fn set_storage(&self, storage: Arc<Storage>) {
        let _ = self.storage.set(storage);
        self.telemetry.set_ready(true);
    }

    /// The item limits every protocol's mapping enforces.
    pub fn item_limits(&self) -> &Limits {
        &self.limits
    }

    /// The store, once open.
    pub fn storage(&self) -> Option<&Arc<Storage>> {
        self.storage.get()
    }

    /// Forgets delta → cumulative running totals of series idle for `max_idle`; returns how many.
    pub fn evict_idle_metrics_state(&self, max_idle: std::time::Duration) -> usize {
        self.metrics_state.evict_idle(now_ns(), i64::try_from(max_idle.as_nanos()).unwrap_or(i64::MAX))
    }

    /// Records a resident-memory measurement; writes are refused while it is over the limit.
    pub fn set_resident_memory(&self, rss: u64) {
        let was_over = self.rss.swap(rss, Ordering::Relaxed) > self.memory_limit;
        let over = rss > self.memory_limit;
        self.telemetry.memory(rss, self.memory_limit, was_over, over);
    }

    /// True when writes are accepted.
    pub fn is_ready(&self) -> bool {
        self.storage.get().is_some() && !self.closing.load(Ordering::Acquire)
    }

    /// Refuses new writes (shutdown).
    pub fn close(&self) {
        self.closing.store(true, Ordering::Release);
        self.telemetry.set_ready(false);
    }

    /// Admission: a permit for one request, or why not. Taken before the body is read, so the
    /// limit also bounds memory held by bodies in transit.
    pub fn admit(&self) -> Result<OwnedSemaphorePermit, PipelineError> {
        if self.storage.get().is_none() {
            return Err(PipelineError::NotReady("replaying the write-ahead log"));
        }
        if self.closing.load(Ordering::Acquire) {
            return Err(PipelineError::NotReady("shutting down"));
        }
        let rss = self.rss.load(Ordering::Relaxed);
        if rss > self.memory_limit {
            return Err(PipelineError::MemoryPressure { rss, limit: self.memory_limit });
        }
        self.inflight.clone().try_acquire_owned().map_err(|_| PipelineError::Saturated(self.max_inflight))
    }

    /// Decodes (if needed), maps and durably writes one request. Holds `_permit` until done.
    pub async fn export(
        self: &Arc<Self>,
        payload: Payload,
        protocol: Protocol,
        wire_bytes: usize,
        started: Instant,
        _permit: OwnedSemaphorePermit,
    ) -> Result<Outcome, PipelineError> {
        let signal = payload.signal();
        let this = Arc::clone(self);
        let result = tokio::task::spawn_blocking(move || this.export_blocking(payload))
            .await
            .unwrap_or_else(|e| Err(PipelineError::Internal(format!("write task failed: {e}"))));
        match &result {
            Ok(outcome) => self.telemetry.ingested(signal, protocol, outcome, wire_bytes, started.elapsed()),
            Err(e) => self.telemetry.request_rejected(signal, protocol, e.reason(), &e.to_string()),
        }
        result
    }

    /// The write path for every protocol other than OTLP: runs `map` (decode, validate, map into
    /// the model; it gets the wall-clock now in ns) on the blocking pool, writes the batch durably
    /// and records the request in self-telemetry. Holds `_permit` (from [`Pipeline::admit`]) until
    /// done. A `map` error is the request's error (use `PipelineError::Malformed` for bad input).
    pub async fn write_mapped<F>(
        self: &Arc<Self>,
        signal: Signal,
        protocol: Protocol,
        wire_bytes: usize,
        started: Instant,
        _permit: OwnedSemaphorePermit,
        map: F,
    ) -> Result<Outcome, PipelineError>
    where
        F: FnOnce(i64) -> Result<(WriteBatch, Outcome), PipelineError> + Send + 'static,
    {
        let this = Arc::clone(self);
        let result = tokio::task::spawn_blocking(move || {
            let storage = this.storage.get().ok_or(PipelineError::NotReady("replaying the write-ahead log"))?;
            let (mut batch, mut outcome) = map(now_ns())?;
            admit_metrics(storage, &mut batch, &mut outcome);
            if !batch.is_empty() {
                storage.write(batch).map_err(PipelineError::Storage)?;
            }
            Ok(outcome)
        })
        .await
        .unwrap_or_else(|e| Err(PipelineError::Internal(format!("write task failed: {e}"))));
        match &result {
            Ok(outcome) => self.telemetry.ingested(signal, protocol, outcome, wire_bytes, started.elapsed()),
            Err(e) => self.telemetry.request_rejected(signal, protocol, e.reason(), &e.to_string()),
        }
        result
    }

    fn export_blocking(&self, payload: Payload) -> Result<Outcome, PipelineError> {
        let storage = self.storage.get().ok_or(PipelineError::NotReady("replaying the write-ahead log"))?;
        let now = now_ns();
        let request = match payload {
            Payload::Encoded { signal, json, body } => decode(signal, json, &body)?,
            Payload::Decoded(request) => request,
        };
        let (batch, outcome) = match request {
            Request::Traces(req) => {
                let m = ingest::otlp::traces(req, &self.limits, now);
                (
                    WriteBatch::Spans(m.batch),
                    Outcome { accepted: m.accepted, rejected: m.rejected, reasons: m.reasons, message: m.message },
                )
            }
            Request::Logs(req) => {
                let m = ingest::otlp::logs(req, &self.logs, &self.limits, now);
                (
                    WriteBatch::Logs(m.batch),
                    Outcome { accepted: m.accepted, rejected: m.rejected, reasons: m.reasons, message: m.message },
                )
            }
            Request::Metrics(req) => {
                let m = ingest::otlp::metrics(req, &self.metrics_state, &self.limits, now);
                (
                    WriteBatch::Metrics(m.batch),
                    Outcome { accepted: m.accepted, rejected: m.rejected, reasons: m.reasons, message: m.message },
                )
            }
            Request::Profiles(req) => {
                let m = ingest::otlp::profiles(req, &self.profile_limits, &self.limits, now)
                    .map_err(PipelineError::Malformed)?;
                (
                    WriteBatch::Profiles(m.batch),
                    Outcome { accepted: m.accepted, rejected: m.rejected, reasons: m.reasons, message: m.message },
                )
            }
        };
        let (mut batch, mut outcome) = (batch, outcome);
        admit_metrics(storage, &mut batch, &mut outcome);
        let derived = match &batch {
            WriteBatch::Spans(spans) if !batch.is_empty() => Some(self.span_metrics.derive(spans, now)),
            _ => None,
        };
        if !batch.is_empty() {
            storage.write(batch).map_err(PipelineError::Storage)?;
        }
        if let Some(metrics) = derived {
            self.write_derived(storage, metrics);
        }
        Ok(outcome)
    }

    /// Writes span metrics and service-graph series derived from acknowledged spans. A failure is
    /// reported in self-telemetry and does not fail the spans request, which is already durable.
    fn write_derived(&self, storage: &Storage, metrics: storage::model::MetricsBatch) {
        if metrics.series.is_empty() {
            return;
        }
        let started = Instant::now();
        let accepted = metrics.item_count() as u64;
        let batch = WriteBatch::Metrics(metrics);
        match storage.write(batch) {
            Ok(()) => {
                let outcome = Outcome { accepted, ..Outcome::default() };
                self.telemetry.ingested(Signal::Metrics, Protocol::Derived, &outcome, 0, started.elapsed());
            }
            Err(e) => {
                let e = PipelineError::Storage(e);
                self.telemetry.request_rejected(Signal::Metrics, Protocol::Derived, e.reason(), &e.to_string());
            }
        }
    }

    /// Span metrics' timer: writes the totals held back since the last emission, the
    /// service-graph edges whose other half never came (virtual nodes), and every 15 s every
    /// active series (as Tempo's generator collects); call every second.
    pub fn refresh_span_metrics(&self) {
        if let Some(storage) = self.storage.get() {
            let metrics = self.span_metrics.tick(now_ns());
            self.write_derived(storage, metrics);
        }
    }
}

/// Applies the metrics store's out-of-order window before the WAL write, so that nothing is
/// acknowledged that the store would drop: refused samples are counted as rejected
/// (`timestamp_too_old`) and named in the outcome's message.
fn admit_metrics(storage: &Storage, batch: &mut WriteBatch, outcome: &mut Outcome) {
    let dropped = match batch {
        WriteBatch::Metrics(b) => storage.stores().admit_metrics(b),
        WriteBatch::Samples(b) => storage.stores().admit_packed(b),
        _ => return,
    };
    if dropped == 0 {
        return;
    }
    outcome.accepted = outcome.accepted.saturating_sub(dropped);
    outcome.rejected += dropped;
    match outcome.reasons.iter_mut().find(|(r, _)| *r == RejectReason::TimestampTooOld) {
        Some((_, n)) => *n += dropped,
        None => outcome.reasons.push((RejectReason::TimestampTooOld, dropped)),
    }
    let note = format!(
        "{dropped} samples out of bounds: older than the newest stored sample minus metrics.out_of_order_window"
    );
    outcome.message = if outcome.message.is_empty() { note } else { format!("{}; {note}", outcome.message) };
}

fn decode(signal: Signal, json: bool, body: &[u8]) -> Result<Request, PipelineError> {
    fn pb<M: Message + Default>(body: &[u8]) -> Result<M, PipelineError> {
        M::decode(body).map_err(|e| PipelineError::Malformed(format!("invalid protobuf export request: {e}")))
    }
    fn js<M: serde::de::DeserializeOwned>(body: &[u8]) -> Result<M, PipelineError> {
        serde_json::from_slice(body)
            .map_err(|e| PipelineError::Malformed(format!("invalid OTLP/JSON export request: {e}")))
    }
    Ok(match (signal, json) {
        (Signal::Traces, false) => Request::Traces(pb(body)?),
        (Signal::Traces, true) => Request::Traces(js(body)?),
        (Signal::Logs, false) => Request::Logs(pb(body)?),
        (Signal::Logs, true) => Request::Logs(js(body)?),
        (Signal::Metrics, false) => Request::Metrics(pb(body)?),
        (Signal::Metrics, true) => Request::Metrics(js(body)?),
        (Signal::Profiles, false) => Request::Profiles(pb(body)?),
        (Signal::Profiles, true) => Request::Profiles(js(body)?),
    })
}

/// Wall-clock now in ns since the epoch.
pub fn now_ns() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}
