//! Span metrics and the service graph, derived from spans at ingest under Tempo's
//! metrics-generator names and labels (`grafana-contracts.md` §6), so Grafana's RED tables and
//! service map work unchanged:
//! - `traces_spanmetrics_calls_total{service, span_name, span_kind, status_code}` (counter);
//! - `traces_spanmetrics_latency_{bucket,sum,count}` (same labels, seconds, Tempo's default
//!   buckets: 2 ms doubling to 16.384 s, then `+Inf`);
//! - `traces_service_graph_request_total`, `traces_service_graph_request_failed_total`,
//!   `traces_service_graph_request_{server,client}_seconds_{bucket,sum,count}` with `client`,
//!   `server`, `connection_type` (`""` — dropped as an empty label —, `messaging_system`,
//!   `database`, `virtual_node`).
//!
//! Every series is a cumulative counter whose running totals live in [`SpanMetricsState`], owned
//! by the caller (like `otlp::MetricsState`). Batches of spans add to the totals; at most once per
//! `collect_interval_ns` (1 s by default; Tempo's generator collects every 15 s) the series touched
//! since the last emission yield one sample each, at the caller's `now` (processing time, as
//! Tempo's generator stamps its samples): from [`SpanMetricsState::derive`] when a batch comes
//! after the interval, else from [`SpanMetricsState::tick`], which the caller runs every second
//! and which also re-emits every active series every 15 s. A series seen for the first time also
//! gets a zero sample 1 ms earlier, so its first increase counts in `rate()` and `increase()`.
//! Exemplars (`trace_id`, `span_id`, the latest since the last emission) go on the calls counter
//! and on the latency bucket the span fell into. Known series are found with the span's own
//! strings (service → name → kind × status), so the per-span work allocates nothing.
//!
//! Service-graph edges pair a client span (kind CLIENT, or PRODUCER for messaging) with the server
//! span (SERVER, or CONSUMER) whose parent it is, whichever arrives first and however many batches
//! apart: the unpaired half waits in a bounded store and expires after `edge_wait_ns`. An expired
//! client span naming its peer (`peer.service`, `db.name`, `db.system`) becomes an edge to a
//! virtual node (`connection_type` `database` for databases, `virtual_node` otherwise). A client
//! span of a database call (`db.system`) is an edge at once, since no server span will come.
//! Invariant: the series count and `pending` never exceed their caps; over the cap new series
//! and new pending halves are dropped (and counted in [`SpanMetricsState::dropped`]).

use std::collections::HashMap;

/// A hash map with a fast non-cryptographic hasher (keys come from spans, looked up per span).
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
use std::sync::{Arc, Mutex};

use storage::model::{
    AnyValue, Exemplar, FloatSample, Labels, MetricMetadata, MetricType, MetricsBatch, Span, SpanId, SpanKind,
    SpansBatch, StatusCode, TimeSeries, TraceId,
};

/// Tempo's default histogram buckets (seconds): `ExponentialBuckets(0.002, 2, 14)`.
pub const DEFAULT_BUCKETS: [f64; 14] =
    [0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048, 4.096, 8.192, 16.384];

/// Settings of the derivation.
#[derive(Clone, Debug, PartialEq)]
pub struct SpanMetricsOptions {
    /// Histogram upper bounds in seconds, ascending (`+Inf` is implied).
    pub buckets: Vec<f64>,
    /// Most series kept (span metrics and service graph together).
    pub max_series: usize,
    /// Most unpaired client/server halves waiting for their other half.
    pub max_pending_edges: usize,
    /// How long an unpaired half waits (ns).
    pub edge_wait_ns: i64,
    /// A series not updated for this long stops being re-emitted by
    /// [`SpanMetricsState::refresh`] and is forgotten (ns; Tempo's default is 15 minutes).
    pub stale_ns: i64,
    /// Totals touched since the last emission are emitted at most this often (ns; 0 = with every
    /// batch). Tempo's generator collects every 15 s; emitting per batch would write a sample of
    /// every touched series per request, more metrics work than the spans themselves.
    pub collect_interval_ns: i64,
    /// [`SpanMetricsState::tick`] re-emits every active series this often (ns; Tempo's 15 s).
    pub refresh_interval_ns: i64,
}

impl Default for SpanMetricsOptions {
    fn default() -> Self {
        SpanMetricsOptions {
            buckets: DEFAULT_BUCKETS.to_vec(),
            max_series: 50_000,
            max_pending_edges: 10_000,
            edge_wait_ns: 10_000_000_000,
            stale_ns: 15 * 60 * 1_000_000_000,
            collect_interval_ns: 1_000_000_000,
            refresh_interval_ns: 15_000_000_000,
        }
    }
}

/// Running totals and unpaired edge halves, shared by every spans request.
#[derive(Debug, Default)]
pub struct SpanMetricsState {
    opts: SpanMetricsOptions,
    // A std Mutex: held only inside the synchronous derivation, never across an `.await`.
    inner: Mutex<Inner>,
}

/// Slots per span name: one per (span kind, status code).
const SPAN_SLOTS: usize = 6 * 3;
/// Slots per edge: one per connection type.
const EDGE_SLOTS: usize = 4;

#[derive(Debug, Default)]
struct Inner {
    /// Span metrics: service → span name → one slot per (kind, status); looked up with the span's
    /// own strings, so a known series costs no allocation.
    spans: FastMap<String, FastMap<String, Vec<Option<SpanSeries>>>>,
    /// Service graph: client → server → one slot per connection type.
    edges: FastMap<String, FastMap<String, [Option<EdgeSeries>; EDGE_SLOTS]>>,
    /// Series with running totals (each [`Totals`] is one); at most `max_series`.
    series: usize,
    /// Unpaired halves, by the span id the other half refers to.
    pending: FastMap<(TraceId, SpanId), Pending>,
    dropped: u64,
    /// When dirty series were last emitted (ns); `None` before the first time.
    last_collect_ns: Option<i64>,
    /// When every active series was last re-emitted (ns); `None` before the first tick.
    last_refresh_ns: Option<i64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Family {
    Calls,
    Latency,
    GraphTotal,
    GraphFailed,
    GraphServer,
    GraphClient,
}

/// The calls counter and latency histogram of one (service, span name, kind, status).
#[derive(Debug)]
struct SpanSeries {
    /// `service`, `span_name`, `span_kind`, `status_code`.
    labels: Labels,
    calls: Totals,
    latency: Totals,
}

/// The series of one (client, server, connection type) edge, each created when first observed.
#[derive(Debug)]
struct EdgeSeries {
    /// `client`, `server`, `connection_type`.
    labels: Labels,
    total: Option<Totals>,
    failed: Option<Totals>,
    server: Option<Totals>,
    client: Option<Totals>,
}

#[derive(Debug, Default, Clone)]
struct Totals {
    count: f64,
    sum: f64,
    /// Per bucket (non-cumulative); histograms only.
    buckets: Vec<f64>,
    /// Touched since the last emission (or due for re-emission).
    dirty: bool,
    /// Last update (ns).
    touched_ns: i64,
    new: bool,
    /// Timestamp of the last sample emitted (ms): each series' samples strictly increase, so two
    /// collections in the same millisecond never replace one another.
    last_ts: i64,
    /// Latest exemplar since the last emission; its labels are built only when emitted.
    exemplar: Option<Ex>,
}

#[derive(Debug, Clone, Copy)]
struct Ex {
    trace_id: TraceId,
    span_id: SpanId,
    value: f64,
    /// Bucket index, or `usize::MAX` for a counter.
    slot: usize,
}

impl Totals {
    fn new(buckets: usize) -> Totals {
        Totals { buckets: vec![0.0; buckets], new: true, ..Totals::default() }
    }

    fn observe(&mut self, now_ns: i64, bounds: Option<&[f64]>, value: f64, ex: Option<(TraceId, SpanId)>) {
        self.dirty = true;
        self.touched_ns = now_ns;
        self.count += 1.0;
        self.sum += value;
        let mut slot = usize::MAX;
        if let Some(b) = bounds {
            slot = b.iter().position(|&ub| value <= ub).unwrap_or(b.len());
            if let Some(c) = self.buckets.get_mut(slot) {
                *c += 1.0;
            }
        }
        if let Some((trace_id, span_id)) = ex {
            self.exemplar = Some(Ex { trace_id, span_id, value, slot });
        }
    }
}

/// A family of one edge, created on first use within the series cap.
fn edge_family<'a>(
    t: &'a mut Option<Totals>,
    series: &mut usize,
    dropped: &mut u64,
    cap: usize,
    buckets: usize,
) -> Option<&'a mut Totals> {
    if t.is_none() {
        if *series >= cap {
            *dropped += 1;
            return None;
        }
        *series += 1;
        *t = Some(Totals::new(buckets));
    }
    t.as_mut()
}

#[derive(Debug, Clone)]
struct Pending {
    /// Which half waits.
    client: bool,
    service: Arc<str>,
    duration_s: f64,
    failed: bool,
    messaging: bool,
    /// For virtual nodes: the peer a client span names.
    peer: Option<(String, ConnectionType)>,
    expires_ns: i64,
    trace_id: TraceId,
    span_id: SpanId,
}

/// The service graph's `connection_type` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ConnectionType {
    /// Plain request/response (the label is absent).
    Direct,
    MessagingSystem,
    Database,
    VirtualNode,
}

impl ConnectionType {
    fn label(self) -> &'static str {
        match self {
            ConnectionType::Direct => "",
            ConnectionType::MessagingSystem => "messaging_system",
            ConnectionType::Database => "database",
            ConnectionType::VirtualNode => "virtual_node",
        }
    }

    fn slot(self) -> usize {
        self as usize
    }
}

fn kind_label(k: SpanKind) -> &'static str {
    match k {
        SpanKind::Unspecified => "SPAN_KIND_UNSPECIFIED",
        SpanKind::Internal => "SPAN_KIND_INTERNAL",
        SpanKind::Server => "SPAN_KIND_SERVER",
        SpanKind::Client => "SPAN_KIND_CLIENT",
        SpanKind::Producer => "SPAN_KIND_PRODUCER",
        SpanKind::Consumer => "SPAN_KIND_CONSUMER",
    }
}

fn status_label(s: StatusCode) -> &'static str {
    match s {
        StatusCode::Unset => "STATUS_CODE_UNSET",
        StatusCode::Ok => "STATUS_CODE_OK",
        StatusCode::Error => "STATUS_CODE_ERROR",
    }
}

fn span_slot(k: SpanKind, s: StatusCode) -> usize {
    let k = match k {
        SpanKind::Unspecified => 0,
        SpanKind::Internal => 1,
        SpanKind::Server => 2,
        SpanKind::Client => 3,
        SpanKind::Producer => 4,
        SpanKind::Consumer => 5,
    };
    let s = match s {
        StatusCode::Unset => 0,
        StatusCode::Ok => 1,
        StatusCode::Error => 2,
    };
    k * 3 + s
}

fn attr_str<'a>(span: &'a Span, key: &str) -> Option<&'a str> {
    span.attributes.iter().find(|kv| kv.key == key).and_then(|kv| match &kv.value {
        AnyValue::String(s) if !s.is_empty() => Some(s.as_str()),
        _ => None,
    })
}

fn duration_s(span: &Span) -> f64 {
    (span.end_time_ns.saturating_sub(span.start_time_ns)).max(0) as f64 / 1e9
}

impl SpanMetricsState {
    /// An empty state with default options.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty state.
    pub fn with_options(opts: SpanMetricsOptions) -> Self {
        SpanMetricsState { opts, inner: Mutex::default() }
    }

    /// Series with running totals.
    pub fn series_count(&self) -> usize {
        self.lock().series
    }

    /// Unpaired edge halves waiting.
    pub fn pending_edges(&self) -> usize {
        self.lock().pending.len()
    }

    /// Series and edge halves dropped over the caps so far.
    pub fn dropped(&self) -> u64 {
        self.lock().dropped
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Plain numbers: a panic elsewhere cannot leave them unusable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds `batch` to the running totals. When `collect_interval_ns` has passed since the last
    /// emission that carried anything, also expires waiting edge halves and returns a sample of every series touched
    /// since; otherwise returns an empty batch (the totals go out with a later batch or
    /// [`SpanMetricsState::tick`]).
    pub fn derive(&self, batch: &SpansBatch, now_ns: i64) -> MetricsBatch {
        let mut inner = self.lock();
        let inner = &mut *inner;
        for group in &batch.groups {
            let service: Arc<str> = Arc::from(group.resource.attr_str("service.name").unwrap_or(""));
            for span in &group.spans {
                self.observe_span(inner, &service, span, now_ns);
                self.edge(inner, &service, span, now_ns);
            }
        }
        self.collect_if_due(inner, now_ns)
    }

    /// Emits expired edges and every series touched since the last emission, now.
    pub fn expire_edges(&self, now_ns: i64) -> MetricsBatch {
        let mut inner = self.lock();
        self.expire(&mut inner, now_ns);
        self.collect(&mut inner, now_ns)
    }

    /// The timer's call (every second or so): every `refresh_interval_ns` a
    /// [`SpanMetricsState::refresh`], otherwise the totals touched since the last emission if
    /// `collect_interval_ns` has passed (so the last spans of a burst are not held back).
    pub fn tick(&self, now_ns: i64) -> MetricsBatch {
        let refresh_due = {
            let mut inner = self.lock();
            let last = *inner.last_refresh_ns.get_or_insert(now_ns);
            now_ns.saturating_sub(last) >= self.opts.refresh_interval_ns || now_ns < last
        };
        if refresh_due {
            return self.refresh(now_ns);
        }
        let mut inner = self.lock();
        self.collect_if_due(&mut inner, now_ns)
    }

    /// Expires edges, then re-emits the current total of every series updated within `stale_ns`
    /// and forgets the others: Tempo's generator writes each active series at every collection
    /// interval, so `rate()` over a quiet period sees a flat line, not a gap.
    pub fn refresh(&self, now_ns: i64) -> MetricsBatch {
        let mut inner = self.lock();
        let inner = &mut *inner;
        inner.last_refresh_ns = Some(now_ns);
        self.expire(inner, now_ns);
        let cutoff = now_ns.saturating_sub(self.opts.stale_ns);
        let mut forgotten = 0usize;
        inner.spans.retain(|_, names| {
            names.retain(|_, slots| {
                for slot in slots.iter_mut() {
                    match slot {
                        Some(s) if s.calls.touched_ns < cutoff => {
                            *slot = None;
                            forgotten += 2;
                        }
                        Some(s) => {
                            s.calls.dirty = true;
                            s.latency.dirty = true;
                        }
                        None => {}
                    }
                }
                slots.iter().any(Option::is_some)
            });
            !names.is_empty()
        });
        inner.edges.retain(|_, servers| {
            servers.retain(|_, slots| {
                for slot in slots.iter_mut() {
                    let Some(e) = slot else { continue };
                    for t in [&mut e.total, &mut e.failed, &mut e.server, &mut e.client] {
                        match t {
                            Some(x) if x.touched_ns < cutoff => {
                                *t = None;
                                forgotten += 1;
                            }
                            Some(x) => x.dirty = true,
                            None => {}
                        }
                    }
                    if e.total.is_none() && e.failed.is_none() && e.server.is_none() && e.client.is_none() {
                        *slot = None;
                    }
                }
                slots.iter().any(Option::is_some)
            });
            !servers.is_empty()
        });
        inner.series -= forgotten.min(inner.series);
        inner.last_collect_ns = Some(now_ns);
        self.collect(inner, now_ns)
    }

    fn collect_if_due(&self, inner: &mut Inner, now_ns: i64) -> MetricsBatch {
        let due = inner
            .last_collect_ns
            .is_none_or(|last| now_ns.saturating_sub(last) >= self.opts.collect_interval_ns || now_ns < last);
        if !due {
            return MetricsBatch::default();
        }
        self.expire(inner, now_ns);
        let out = self.collect(inner, now_ns);
        // The interval runs from the last emission that carried something: after a quiet spell
        // the first batch goes out at once.
        if !out.series.is_empty() {
            inner.last_collect_ns = Some(now_ns);
        }
        out
    }

    fn observe_span(&self, inner: &mut Inner, service: &str, span: &Span, now_ns: i64) {
        let Inner { spans, series, dropped, .. } = inner;
        let full = *series + 2 > self.opts.max_series;
        if !spans.contains_key(service) {
            if full {
                *dropped += 1;
                return;
            }
            spans.insert(service.to_owned(), FastMap::default());
        }
        let Some(names) = spans.get_mut(service) else { return };
        if !names.contains_key(span.name.as_str()) {
            if full {
                *dropped += 1;
                return;
            }
            names.insert(span.name.clone(), (0..SPAN_SLOTS).map(|_| None).collect());
        }
        let Some(slots) = names.get_mut(span.name.as_str()) else { return };
        let Some(slot) = slots.get_mut(span_slot(span.kind, span.status_code)) else { return };
        if slot.is_none() {
            if full {
                *dropped += 1;
                return;
            }
            *series += 2;
            *slot = Some(SpanSeries {
                labels: Labels::from_pairs([
                    ("service", service),
                    ("span_name", span.name.as_str()),
                    ("span_kind", kind_label(span.kind)),
                    ("status_code", status_label(span.status_code)),
                ]),
                calls: Totals::new(0),
                latency: Totals::new(self.opts.buckets.len() + 1),
            });
        }
        let Some(s) = slot.as_mut() else { return };
        let ex = Some((span.trace_id, span.span_id));
        s.calls.observe(now_ns, None, 1.0, ex);
        s.latency.observe(now_ns, Some(&self.opts.buckets), duration_s(span), ex);
    }

    fn edge(&self, inner: &mut Inner, service: &Arc<str>, span: &Span, now_ns: i64) {
        let (client, messaging) = match span.kind {
            SpanKind::Client => (true, false),
            SpanKind::Producer => (true, true),
            SpanKind::Server => (false, false),
            SpanKind::Consumer => (false, true),
            _ => return,
        };
        let failed = span.status_code == StatusCode::Error;
        let d = duration_s(span);
        if client && let Some(db) = attr_str(span, "db.system") {
            // A database call: no server span will come.
            let server = attr_str(span, "db.name").unwrap_or(db);
            let p = Pending {
                client: true,
                service: Arc::clone(service),
                duration_s: d,
                failed,
                messaging: false,
                peer: None,
                expires_ns: 0,
                trace_id: span.trace_id,
                span_id: span.span_id,
            };
            self.record_edge(inner, service, server, ConnectionType::Database, Some(&p), None, now_ns);
            return;
        }
        // The key both halves share: the client's span id.
        let key = if client {
            (span.trace_id, span.span_id)
        } else {
            match span.parent_span_id {
                Some(parent) => (span.trace_id, parent),
                None => return,
            }
        };
        let me = Pending {
            client,
            service: Arc::clone(service),
            duration_s: d,
            failed,
            messaging,
            peer: if client {
                attr_str(span, "peer.service").map(|p| (p.to_owned(), ConnectionType::VirtualNode))
            } else {
                None
            },
            expires_ns: now_ns.saturating_add(self.opts.edge_wait_ns),
            trace_id: span.trace_id,
            span_id: span.span_id,
        };
        match inner.pending.remove(&key) {
            Some(other) if other.client != client => {
                let (c, s) = if client { (&me, &other) } else { (&other, &me) };
                let ct =
                    if c.messaging || s.messaging { ConnectionType::MessagingSystem } else { ConnectionType::Direct };
                self.record_edge(inner, &c.service, &s.service, ct, Some(c), Some(s), now_ns);
            }
            Some(_same) => {
                // A duplicate of the same half: keep the newer.
                inner.pending.insert(key, me);
            }
            None if inner.pending.len() >= self.opts.max_pending_edges => inner.dropped += 1,
            None => {
                inner.pending.insert(key, me);
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn record_edge(
        &self,
        inner: &mut Inner,
        client: &str,
        server: &str,
        ct: ConnectionType,
        c: Option<&Pending>,
        s: Option<&Pending>,
        now_ns: i64,
    ) {
        let cap = self.opts.max_series;
        let Inner { edges, series, dropped, .. } = inner;
        if !edges.contains_key(client) {
            if *series >= cap {
                *dropped += 1;
                return;
            }
            edges.insert(client.to_owned(), FastMap::default());
        }
        let Some(servers) = edges.get_mut(client) else { return };
        if !servers.contains_key(server) {
            if *series >= cap {
                *dropped += 1;
                return;
            }
            servers.insert(server.to_owned(), Default::default());
        }
        let Some(slots) = servers.get_mut(server) else { return };
        let e = slots[ct.slot()].get_or_insert_with(|| EdgeSeries {
            labels: Labels::from_pairs([("client", client), ("server", server), ("connection_type", ct.label())]),
            total: None,
            failed: None,
            server: None,
            client: None,
        });
        let failed = c.is_some_and(|p| p.failed) || s.is_some_and(|p| p.failed);
        let ex = s.or(c).map(|p| (p.trace_id, p.span_id));
        let nb = self.opts.buckets.len() + 1;
        if let Some(t) = edge_family(&mut e.total, series, dropped, cap, 0) {
            t.observe(now_ns, None, 1.0, ex);
        }
        if failed && let Some(t) = edge_family(&mut e.failed, series, dropped, cap, 0) {
            t.observe(now_ns, None, 1.0, ex);
        }
        if let Some(s) = s
            && let Some(t) = edge_family(&mut e.server, series, dropped, cap, nb)
        {
            t.observe(now_ns, Some(&self.opts.buckets), s.duration_s, Some((s.trace_id, s.span_id)));
        }
        if let Some(c) = c
            && let Some(t) = edge_family(&mut e.client, series, dropped, cap, nb)
        {
            t.observe(now_ns, Some(&self.opts.buckets), c.duration_s, Some((c.trace_id, c.span_id)));
        }
    }

    fn expire(&self, inner: &mut Inner, now_ns: i64) {
        let expired: Vec<(TraceId, SpanId)> =
            inner.pending.iter().filter(|(_, p)| p.expires_ns <= now_ns).map(|(k, _)| *k).collect();
        for k in expired {
            let Some(p) = inner.pending.remove(&k) else { continue };
            if let (true, Some((peer, ct))) = (p.client, &p.peer) {
                self.record_edge(inner, &p.service, peer, *ct, Some(&p), None, now_ns);
            }
        }
    }

    fn collect(&self, inner: &mut Inner, now_ns: i64) -> MetricsBatch {
        let ts = now_ns.div_euclid(1_000_000);
        let mut out = MetricsBatch::default();
        let mut families = [false; 6];
        let le: Vec<String> =
            self.opts.buckets.iter().map(|b| format_le(*b)).chain(std::iter::once("+Inf".to_owned())).collect();
        let mut emit = |family: Family, labels: &Labels, t: &mut Totals| {
            if !t.dirty {
                return;
            }
            families[family as usize] = true;
            emit_totals(&mut out, family.name(), labels, t, ts, &le);
        };
        for names in inner.spans.values_mut() {
            for slots in names.values_mut() {
                for s in slots.iter_mut().flatten() {
                    emit(Family::Calls, &s.labels, &mut s.calls);
                    emit(Family::Latency, &s.labels, &mut s.latency);
                }
            }
        }
        for servers in inner.edges.values_mut() {
            for slots in servers.values_mut() {
                for e in slots.iter_mut().flatten() {
                    let families = [
                        (Family::GraphTotal, &mut e.total),
                        (Family::GraphFailed, &mut e.failed),
                        (Family::GraphServer, &mut e.server),
                        (Family::GraphClient, &mut e.client),
                    ];
                    for (f, t) in families {
                        if let Some(t) = t {
                            emit(f, &e.labels, t);
                        }
                    }
                }
            }
        }
        out.series.sort_by(|a, b| a.labels.cmp(&b.labels));
        for f in Family::ALL {
            if families[f as usize] {
                out.metadata.push(f.metadata());
            }
        }
        out
    }
}

/// Appends the samples of one dirty series (a counter, or a histogram's buckets, sum and count)
/// and marks it clean.
fn emit_totals(out: &mut MetricsBatch, name: &str, labels: &Labels, t: &mut Totals, now_ms: i64, le: &[String]) {
    let exemplar = t.exemplar.take();
    let ts = now_ms.max(t.last_ts.saturating_add(1));
    t.last_ts = ts;
    let new = t.new;
    let mut push = |name: &str, le: Option<&str>, value: f64, ex: Option<Ex>| {
        let mut l = labels.clone();
        l.set("__name__", name);
        if let Some(le) = le {
            l.set("le", le);
        }
        let mut samples = Vec::with_capacity(2);
        if new {
            samples.push(FloatSample { timestamp_ms: ts - 1, value: 0.0 });
        }
        samples.push(FloatSample { timestamp_ms: ts, value });
        let exemplars = ex
            .map(|e| {
                let labels = Labels::from_pairs([("trace_id", e.trace_id.to_hex()), ("span_id", e.span_id.to_hex())]);
                vec![Exemplar { labels, value: e.value, timestamp_ms: ts }]
            })
            .unwrap_or_default();
        out.series.push(TimeSeries { labels: l, samples, histograms: Vec::new(), exemplars });
    };
    if t.buckets.is_empty() {
        push(name, None, t.count, exemplar);
    } else {
        let mut cum = 0.0;
        for (i, c) in t.buckets.iter().enumerate() {
            cum += c;
            let ex = exemplar.filter(|e| e.slot == i);
            push(&format!("{name}_bucket"), le.get(i).map(String::as_str), cum, ex);
        }
        push(&format!("{name}_sum"), None, t.sum, None);
        push(&format!("{name}_count"), None, t.count, None);
    }
    t.dirty = false;
    t.new = false;
}

impl Family {
    const ALL: [Family; 6] = [
        Family::Calls,
        Family::Latency,
        Family::GraphTotal,
        Family::GraphFailed,
        Family::GraphServer,
        Family::GraphClient,
    ];

    fn name(self) -> &'static str {
        match self {
            Family::Calls => "traces_spanmetrics_calls_total",
            Family::Latency => "traces_spanmetrics_latency",
            Family::GraphTotal => "traces_service_graph_request_total",
            Family::GraphFailed => "traces_service_graph_request_failed_total",
            Family::GraphServer => "traces_service_graph_request_server_seconds",
            Family::GraphClient => "traces_service_graph_request_client_seconds",
        }
    }

    fn metadata(self) -> MetricMetadata {
        let (ty, help, unit) = match self {
            Family::Calls => {
                (MetricType::Counter, "Spans received, by service, name, kind and status (derived from traces).", "")
            }
            Family::Latency => (MetricType::Histogram, "Span durations (derived from traces).", "seconds"),
            Family::GraphTotal => (MetricType::Counter, "Requests between two services (derived from traces).", ""),
            Family::GraphFailed => {
                (MetricType::Counter, "Failed requests between two services (derived from traces).", "")
            }
            Family::GraphServer => (
                MetricType::Histogram,
                "Server-side request durations between two services (derived from traces).",
                "seconds",
            ),
            Family::GraphClient => (
                MetricType::Histogram,
                "Client-side request durations between two services (derived from traces).",
                "seconds",
            ),
        };
        MetricMetadata {
            metric_family: self.name().to_owned(),
            metric_type: ty,
            help: help.to_owned(),
            unit: unit.to_owned(),
        }
    }
}

/// Prometheus' formatting of a bucket bound (`0.002`, `1`, `16.384`).
fn format_le(b: f64) -> String {
    // Rust's shortest round-trip form is Go's `strconv.FormatFloat(b, 'f', -1, 64)` for these.
    format!("{b}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use storage::model::{KeyValue, Resource, Scope, SpanGroup};

    fn span(t: u8, id: u8, parent: Option<u8>, kind: SpanKind, name: &str, ms: i64, status: StatusCode) -> Span {
        Span {
            trace_id: TraceId([t; 16]),
            span_id: SpanId([id; 8]),
            parent_span_id: parent.map(|p| SpanId([p; 8])),
            name: name.into(),
            kind,
            start_time_ns: 1_000_000_000,
            end_time_ns: 1_000_000_000 + ms * 1_000_000,
            status_code: status,
            ..Span::default()
        }
    }

    fn group(service: &str, spans: Vec<Span>) -> SpanGroup {
        SpanGroup {
            resource: Resource {
                attributes: vec![KeyValue::new("service.name", AnyValue::String(service.into()))],
                ..Resource::default()
            },
            scope: Scope::default(),
            spans,
        }
    }

    fn value(b: &MetricsBatch, sel: &str) -> Option<f64> {
        b.series.iter().find(|s| s.labels.to_string() == sel).and_then(|s| s.samples.last()).map(|s| s.value)
    }

    /// A state that emits with every batch.
    fn every_batch() -> SpanMetricsState {
        SpanMetricsState::with_options(SpanMetricsOptions { collect_interval_ns: 0, ..SpanMetricsOptions::default() })
    }

    #[test]
    fn calls_and_latency_under_tempo_names() {
        let st = every_batch();
        let b = SpansBatch {
            groups: vec![group(
                "shop",
                vec![
                    span(1, 1, None, SpanKind::Server, "GET /", 3, StatusCode::Unset),
                    span(2, 1, None, SpanKind::Server, "GET /", 300, StatusCode::Error),
                ],
            )],
        };
        let m = st.derive(&b, 10_000_000_000);
        let calls = r#"{__name__="traces_spanmetrics_calls_total", service="shop", span_kind="SPAN_KIND_SERVER", span_name="GET /", status_code="STATUS_CODE_UNSET"}"#;
        assert_eq!(value(&m, calls), Some(1.0));
        let s = m.series.iter().find(|s| s.labels.to_string() == calls).unwrap();
        assert_eq!(s.samples[0], FloatSample { timestamp_ms: 9_999, value: 0.0 }, "a new series starts at zero");
        assert_eq!(s.exemplars[0].labels.get("trace_id"), Some(hex_of(1).as_str()));
        let b4 = r#"{__name__="traces_spanmetrics_latency_bucket", le="0.004", service="shop", span_kind="SPAN_KIND_SERVER", span_name="GET /", status_code="STATUS_CODE_ERROR"}"#;
        assert_eq!(value(&m, b4), Some(0.0));
        let b512 = b4.replace("0.004", "0.512");
        assert_eq!(value(&m, &b512), Some(1.0));
        let inf = b4.replace("0.004", "+Inf");
        assert_eq!(value(&m, &inf), Some(1.0));
        let count = r#"{__name__="traces_spanmetrics_latency_count", service="shop", span_kind="SPAN_KIND_SERVER", span_name="GET /", status_code="STATUS_CODE_ERROR"}"#;
        assert_eq!(value(&m, count), Some(1.0));
        // Cumulative across batches; only touched series are emitted.
        let m2 = st.derive(&b, 20_000_000_000);
        assert_eq!(value(&m2, calls), Some(2.0));
        let s = m2.series.iter().find(|s| s.labels.to_string() == calls).unwrap();
        assert_eq!(s.samples.len(), 1);
        // Same millisecond again: the sample moves 1 ms on instead of replacing the last one.
        let m3 = st.derive(&b, 20_000_000_000);
        let s3 = m3.series.iter().find(|s| s.labels.to_string() == calls).unwrap();
        assert_eq!(s3.samples, vec![FloatSample { timestamp_ms: 20_001, value: 3.0 }]);
        assert!(m2.metadata.iter().any(|m| m.metric_family == "traces_spanmetrics_latency"));
    }

    fn hex_of(n: u8) -> String {
        TraceId([n; 16]).to_hex()
    }

    #[test]
    fn edges_pair_across_batches_and_expire_to_virtual_nodes() {
        let st = every_batch();
        let client = SpansBatch {
            groups: vec![group("web", vec![span(1, 1, None, SpanKind::Client, "call", 50, StatusCode::Unset)])],
        };
        let m = st.derive(&client, 1_000);
        assert!(!m.series.iter().any(|s| s.labels.get("__name__") == Some("traces_service_graph_request_total")));
        assert_eq!(st.pending_edges(), 1);
        let server = SpansBatch {
            groups: vec![group("api", vec![span(1, 2, Some(1), SpanKind::Server, "handle", 40, StatusCode::Error)])],
        };
        let m = st.derive(&server, 2_000);
        let total = r#"{__name__="traces_service_graph_request_total", client="web", server="api"}"#;
        assert_eq!(value(&m, total), Some(1.0));
        let failed = r#"{__name__="traces_service_graph_request_failed_total", client="web", server="api"}"#;
        assert_eq!(value(&m, failed), Some(1.0));
        let srv = r#"{__name__="traces_service_graph_request_server_seconds_bucket", client="web", le="0.064", server="api"}"#;
        assert_eq!(value(&m, srv), Some(1.0));
        let cli = r#"{__name__="traces_service_graph_request_client_seconds_count", client="web", server="api"}"#;
        assert_eq!(value(&m, cli), Some(1.0));
        assert_eq!(st.pending_edges(), 0);

        // A client naming its peer, never answered, becomes a virtual-node edge after the wait.
        let mut lone = span(3, 1, None, SpanKind::Client, "call", 5, StatusCode::Unset);
        lone.attributes.push(KeyValue::new("peer.service", AnyValue::String("payments".into())));
        st.derive(&SpansBatch { groups: vec![group("web", vec![lone])] }, 3_000);
        let m = st.expire_edges(3_000 + 11_000_000_000);
        let vn = r#"{__name__="traces_service_graph_request_total", client="web", connection_type="virtual_node", server="payments"}"#;
        assert_eq!(value(&m, vn), Some(1.0));

        // Database calls are edges at once.
        let mut db = span(4, 1, None, SpanKind::Client, "SELECT", 5, StatusCode::Unset);
        db.attributes.push(KeyValue::new("db.system", AnyValue::String("postgresql".into())));
        db.attributes.push(KeyValue::new("db.name", AnyValue::String("orders".into())));
        let m = st.derive(&SpansBatch { groups: vec![group("api", vec![db])] }, 4_000);
        let dbe = r#"{__name__="traces_service_graph_request_total", client="api", connection_type="database", server="orders"}"#;
        assert_eq!(value(&m, dbe), Some(1.0));
    }

    #[test]
    fn refresh_re_emits_active_series_and_forgets_stale_ones() {
        let st = SpanMetricsState::new();
        let b =
            SpansBatch { groups: vec![group("s", vec![span(1, 1, None, SpanKind::Server, "op", 1, StatusCode::Ok)])] };
        st.derive(&b, 1_000_000_000);
        let calls = r#"{__name__="traces_spanmetrics_calls_total", service="s", span_kind="SPAN_KIND_SERVER", span_name="op", status_code="STATUS_CODE_OK"}"#;
        let m = st.refresh(16_000_000_000);
        assert_eq!(value(&m, calls), Some(1.0));
        assert_eq!(m.series.iter().find(|s| s.labels.to_string() == calls).unwrap().samples.len(), 1);
        let m = st.refresh(1_000_000_000 + 16 * 60 * 1_000_000_000);
        assert!(m.series.is_empty());
        assert_eq!(st.series_count(), 0);
    }

    #[test]
    fn totals_go_out_at_most_once_per_collect_interval_and_tick_flushes_the_rest() {
        let st = SpanMetricsState::new();
        let b =
            SpansBatch { groups: vec![group("s", vec![span(1, 1, None, SpanKind::Server, "op", 1, StatusCode::Ok)])] };
        let calls = r#"{__name__="traces_spanmetrics_calls_total", service="s", span_kind="SPAN_KIND_SERVER", span_name="op", status_code="STATUS_CODE_OK"}"#;
        let s = 1_000_000_000;
        assert!(
            st.tick(100 * s - s / 10).series.is_empty(),
            "a tick with nothing to say does not hold back the next batch"
        );
        assert_eq!(value(&st.derive(&b, 100 * s), calls), Some(1.0), "the first batch goes out at once");
        // Within the interval: counted, not emitted.
        assert!(st.derive(&b, 100 * s + s / 2).series.is_empty());
        assert!(st.tick(100 * s + s / 2).series.is_empty());
        // The next tick after the interval carries the total.
        let m = st.tick(101 * s);
        assert_eq!(value(&m, calls), Some(2.0));
        assert!(m.metadata.iter().any(|m| m.metric_family == "traces_spanmetrics_calls_total"));
        // Nothing new: nothing to emit, until the 15-s refresh re-emits every active series.
        assert!(st.tick(103 * s).series.is_empty());
        let m = st.tick(116 * s);
        assert_eq!(value(&m, calls), Some(2.0));
        // A batch after the interval emits its own totals.
        assert_eq!(value(&st.derive(&b, 118 * s), calls), Some(3.0));
    }

    #[test]
    fn caps_bound_the_state() {
        let st = SpanMetricsState::with_options(SpanMetricsOptions { max_series: 2, ..SpanMetricsOptions::default() });
        let spans =
            (0..10u8).map(|i| span(1, i + 1, None, SpanKind::Internal, &format!("op{i}"), 1, StatusCode::Ok)).collect();
        st.derive(&SpansBatch { groups: vec![group("s", spans)] }, 1);
        assert_eq!(st.series_count(), 2);
        assert!(st.dropped() > 0);
    }

    #[test]
    fn le_labels_match_prometheus() {
        assert_eq!(format_le(0.002), "0.002");
        assert_eq!(format_le(16.384), "16.384");
        assert_eq!(format_le(1.0), "1");
    }
}
