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
//! by the caller (like `otlp::MetricsState`). A batch of spans yields one sample per series it
//! touched, at the caller's `now` (processing time, as Tempo's generator stamps its samples); a
//! series seen for the first time also gets a zero sample 1 ms earlier, so its first increase
//! counts in `rate()` and `increase()`. Exemplars (`trace_id`, `span_id`) go on the calls counter
//! and on the latency bucket the span fell into.
//!
//! Service-graph edges pair a client span (kind CLIENT, or PRODUCER for messaging) with the server
//! span (SERVER, or CONSUMER) whose parent it is, whichever arrives first and however many batches
//! apart: the unpaired half waits in a bounded store and expires after `edge_wait_ns`. An expired
//! client span naming its peer (`peer.service`, `db.name`, `db.system`) becomes an edge to a
//! virtual node (`connection_type` `database` for databases, `virtual_node` otherwise). A client
//! span of a database call (`db.system`) is an edge at once, since no server span will come.
//! Invariant: `state.series` and `state.pending` never exceed their caps; over the cap new series
//! and new pending halves are dropped (and counted in [`SpanMetricsState::dropped`]).

use std::collections::HashMap;
use std::sync::Mutex;

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
}

impl Default for SpanMetricsOptions {
    fn default() -> Self {
        SpanMetricsOptions {
            buckets: DEFAULT_BUCKETS.to_vec(),
            max_series: 50_000,
            max_pending_edges: 10_000,
            edge_wait_ns: 10_000_000_000,
            stale_ns: 15 * 60 * 1_000_000_000,
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

#[derive(Debug, Default)]
struct Inner {
    /// Key: metric family + labels (without `le`).
    series: HashMap<(Family, Labels), Totals>,
    /// Unpaired halves, by the span id the other half refers to.
    pending: HashMap<(TraceId, SpanId), Pending>,
    dropped: u64,
    /// The `now` of the call in progress (ns).
    now_ns: i64,
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

#[derive(Debug, Default, Clone)]
struct Totals {
    count: f64,
    sum: f64,
    /// Per bucket (non-cumulative); histograms only.
    buckets: Vec<f64>,
    /// Touched by the current batch (or due for re-emission).
    dirty: bool,
    /// Last update (ns).
    touched_ns: i64,
    new: bool,
    /// Timestamp of the last sample emitted (ms): each series' samples strictly increase, so two
    /// batches derived in the same millisecond never replace one another.
    last_ts: i64,
    /// Latest exemplar this batch: (labels, value, bucket index or usize::MAX for the count).
    exemplar: Option<(Labels, f64, usize)>,
}

#[derive(Debug, Clone)]
struct Pending {
    /// Which half waits.
    client: bool,
    service: String,
    duration_s: f64,
    failed: bool,
    messaging: bool,
    /// For virtual nodes: the peer a client span names.
    peer: Option<(String, &'static str)>,
    expires_ns: i64,
    trace_id: TraceId,
    span_id: SpanId,
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

fn attr_str<'a>(span: &'a Span, key: &str) -> Option<&'a str> {
    span.attributes.iter().find(|kv| kv.key == key).and_then(|kv| match &kv.value {
        AnyValue::String(s) if !s.is_empty() => Some(s.as_str()),
        _ => None,
    })
}

fn duration_s(span: &Span) -> f64 {
    (span.end_time_ns.saturating_sub(span.start_time_ns)).max(0) as f64 / 1e9
}

fn exemplar_labels(trace_id: TraceId, span_id: SpanId) -> Labels {
    Labels::from_pairs([("trace_id", trace_id.to_hex()), ("span_id", span_id.to_hex())])
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
        self.lock().series.len()
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

    /// Derives the metrics of `batch`, plus the edges whose wait expired by `now_ns`. Returns an
    /// empty batch when nothing changed.
    pub fn derive(&self, batch: &SpansBatch, now_ns: i64) -> MetricsBatch {
        let mut inner = self.lock();
        let inner = &mut *inner;
        inner.now_ns = now_ns;
        let buckets = &self.opts.buckets;
        for group in &batch.groups {
            let service = group.resource.attr_str("service.name").unwrap_or("").to_owned();
            for span in &group.spans {
                let d = duration_s(span);
                let labels = Labels::from_pairs([
                    ("service", service.as_str()),
                    ("span_name", span.name.as_str()),
                    ("span_kind", kind_label(span.kind)),
                    ("status_code", status_label(span.status_code)),
                ]);
                let ex = exemplar_labels(span.trace_id, span.span_id);
                self.observe(inner, Family::Calls, labels.clone(), None, 1.0, Some((ex.clone(), 1.0)));
                self.observe(inner, Family::Latency, labels, Some(buckets), d, Some((ex, d)));
                self.edge(inner, &service, span, now_ns);
            }
        }
        self.expire(inner, now_ns);
        self.collect(inner, now_ns)
    }

    /// Emits expired edges only (call on a timer so virtual-node edges appear without traffic).
    pub fn expire_edges(&self, now_ns: i64) -> MetricsBatch {
        let mut inner = self.lock();
        inner.now_ns = now_ns;
        self.expire(&mut inner, now_ns);
        self.collect(&mut inner, now_ns)
    }

    /// Expires edges, then re-emits the current total of every series updated within `stale_ns`
    /// and forgets the others: Tempo's generator writes each active series at every collection
    /// interval, so `rate()` over a quiet period sees a flat line, not a gap. Call every 15 s.
    pub fn refresh(&self, now_ns: i64) -> MetricsBatch {
        let mut inner = self.lock();
        inner.now_ns = now_ns;
        self.expire(&mut inner, now_ns);
        let cutoff = now_ns.saturating_sub(self.opts.stale_ns);
        inner.series.retain(|_, t| t.touched_ns >= cutoff);
        for t in inner.series.values_mut() {
            t.dirty = true;
        }
        self.collect(&mut inner, now_ns)
    }

    fn observe(
        &self,
        inner: &mut Inner,
        family: Family,
        labels: Labels,
        buckets: Option<&[f64]>,
        value: f64,
        exemplar: Option<(Labels, f64)>,
    ) {
        let cap = self.opts.max_series;
        let len = inner.series.len();
        let inner_now = inner.now_ns;
        let key = (family, labels);
        let t = match inner.series.get_mut(&key) {
            Some(t) => t,
            None if len >= cap => {
                inner.dropped += 1;
                return;
            }
            None => inner.series.entry(key).or_insert_with(|| Totals {
                buckets: vec![0.0; buckets.map_or(0, |b| b.len() + 1)],
                new: true,
                ..Totals::default()
            }),
        };
        t.dirty = true;
        t.touched_ns = inner_now;
        t.count += 1.0;
        t.sum += value;
        let mut slot = usize::MAX;
        if let Some(b) = buckets {
            slot = b.iter().position(|&ub| value <= ub).unwrap_or(b.len());
            if let Some(c) = t.buckets.get_mut(slot) {
                *c += 1.0;
            }
        }
        if let Some((labels, v)) = exemplar {
            t.exemplar = Some((labels, v, slot));
        }
    }

    fn edge(&self, inner: &mut Inner, service: &str, span: &Span, now_ns: i64) {
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
            let server = attr_str(span, "db.name").unwrap_or(db).to_owned();
            let p = Pending {
                client: true,
                service: service.to_owned(),
                duration_s: d,
                failed,
                messaging: false,
                peer: None,
                expires_ns: 0,
                trace_id: span.trace_id,
                span_id: span.span_id,
            };
            self.record_edge(inner, &p.service, &server, "database", Some(&p), None);
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
            service: service.to_owned(),
            duration_s: d,
            failed,
            messaging,
            peer: if client { attr_str(span, "peer.service").map(|p| (p.to_owned(), "virtual_node")) } else { None },
            expires_ns: now_ns.saturating_add(self.opts.edge_wait_ns),
            trace_id: span.trace_id,
            span_id: span.span_id,
        };
        match inner.pending.remove(&key) {
            Some(other) if other.client != client => {
                let (c, s) = if client { (&me, &other) } else { (&other, &me) };
                let ct = if c.messaging || s.messaging { "messaging_system" } else { "" };
                self.record_edge(inner, &c.service.clone(), &s.service.clone(), ct, Some(c), Some(s));
            }
            Some(same) => {
                // A duplicate of the same half: keep the newer.
                let _ = same;
                inner.pending.insert(key, me);
            }
            None if inner.pending.len() >= self.opts.max_pending_edges => inner.dropped += 1,
            None => {
                inner.pending.insert(key, me);
            }
        }
    }

    fn record_edge(
        &self,
        inner: &mut Inner,
        client: &str,
        server: &str,
        connection_type: &str,
        c: Option<&Pending>,
        s: Option<&Pending>,
    ) {
        let labels = Labels::from_pairs([("client", client), ("server", server), ("connection_type", connection_type)]);
        let failed = c.is_some_and(|p| p.failed) || s.is_some_and(|p| p.failed);
        let ex = s.or(c).map(|p| exemplar_labels(p.trace_id, p.span_id));
        let buckets = self.opts.buckets.clone();
        self.observe(inner, Family::GraphTotal, labels.clone(), None, 1.0, ex.clone().map(|e| (e, 1.0)));
        if failed {
            self.observe(inner, Family::GraphFailed, labels.clone(), None, 1.0, ex.clone().map(|e| (e, 1.0)));
        }
        if let Some(s) = s {
            let e = exemplar_labels(s.trace_id, s.span_id);
            self.observe(
                inner,
                Family::GraphServer,
                labels.clone(),
                Some(&buckets),
                s.duration_s,
                Some((e, s.duration_s)),
            );
        }
        if let Some(c) = c {
            let e = exemplar_labels(c.trace_id, c.span_id);
            self.observe(inner, Family::GraphClient, labels, Some(&buckets), c.duration_s, Some((e, c.duration_s)));
        }
    }

    fn expire(&self, inner: &mut Inner, now_ns: i64) {
        let expired: Vec<(TraceId, SpanId)> =
            inner.pending.iter().filter(|(_, p)| p.expires_ns <= now_ns).map(|(k, _)| *k).collect();
        for k in expired {
            let Some(p) = inner.pending.remove(&k) else { continue };
            if let (true, Some((peer, ct))) = (p.client, p.peer.clone()) {
                self.record_edge(inner, &p.service.clone(), &peer, ct, Some(&p), None);
            }
        }
    }

    fn collect(&self, inner: &mut Inner, now_ns: i64) -> MetricsBatch {
        let ts = now_ns.div_euclid(1_000_000);
        let mut out = MetricsBatch::default();
        let mut families = [false; 6];
        for ((family, labels), t) in inner.series.iter_mut().filter(|(_, t)| t.dirty) {
            families[*family as usize] = true;
            let name = match family {
                Family::Calls => "traces_spanmetrics_calls_total",
                Family::Latency => "traces_spanmetrics_latency",
                Family::GraphTotal => "traces_service_graph_request_total",
                Family::GraphFailed => "traces_service_graph_request_failed_total",
                Family::GraphServer => "traces_service_graph_request_server_seconds",
                Family::GraphClient => "traces_service_graph_request_client_seconds",
            };
            let exemplar = t.exemplar.take();
            let ts = ts.max(t.last_ts.saturating_add(1));
            t.last_ts = ts;
            let mut push = |name: &str, extra: Option<(&str, String)>, value: f64, ex: Option<(Labels, f64)>| {
                let mut l = labels.clone();
                l.set("__name__", name);
                if let Some((k, v)) = extra {
                    l.set(k, v);
                }
                let mut samples = Vec::with_capacity(2);
                if t.new {
                    samples.push(FloatSample { timestamp_ms: ts - 1, value: 0.0 });
                }
                samples.push(FloatSample { timestamp_ms: ts, value });
                let exemplars =
                    ex.map(|(labels, value)| vec![Exemplar { labels, value, timestamp_ms: ts }]).unwrap_or_default();
                out.series.push(TimeSeries { labels: l, samples, histograms: Vec::new(), exemplars });
            };
            if t.buckets.is_empty() {
                push(name, None, t.count, exemplar.map(|(l, v, _)| (l, v)));
            } else {
                let mut cum = 0.0;
                for (i, c) in t.buckets.iter().enumerate() {
                    cum += c;
                    let le = self.opts.buckets.get(i).map_or_else(|| "+Inf".to_owned(), |b| format_le(*b));
                    let ex = exemplar.as_ref().filter(|e| e.2 == i).map(|(l, v, _)| (l.clone(), *v));
                    push(&format!("{name}_bucket"), Some(("le", le)), cum, ex);
                }
                push(&format!("{name}_sum"), None, t.sum, None);
                push(&format!("{name}_count"), None, t.count, None);
            }
            t.dirty = false;
            t.new = false;
        }
        out.series.sort_by(|a, b| a.labels.cmp(&b.labels));
        let meta = |family: &str, ty: MetricType, help: &str, unit: &str| MetricMetadata {
            metric_family: family.to_owned(),
            metric_type: ty,
            help: help.to_owned(),
            unit: unit.to_owned(),
        };
        let all = [
            (
                Family::Calls,
                meta(
                    "traces_spanmetrics_calls_total",
                    MetricType::Counter,
                    "Spans received, by service, name, kind and status (derived from traces).",
                    "",
                ),
            ),
            (
                Family::Latency,
                meta(
                    "traces_spanmetrics_latency",
                    MetricType::Histogram,
                    "Span durations (derived from traces).",
                    "seconds",
                ),
            ),
            (
                Family::GraphTotal,
                meta(
                    "traces_service_graph_request_total",
                    MetricType::Counter,
                    "Requests between two services (derived from traces).",
                    "",
                ),
            ),
            (
                Family::GraphFailed,
                meta(
                    "traces_service_graph_request_failed_total",
                    MetricType::Counter,
                    "Failed requests between two services (derived from traces).",
                    "",
                ),
            ),
            (
                Family::GraphServer,
                meta(
                    "traces_service_graph_request_server_seconds",
                    MetricType::Histogram,
                    "Server-side request durations between two services (derived from traces).",
                    "seconds",
                ),
            ),
            (
                Family::GraphClient,
                meta(
                    "traces_service_graph_request_client_seconds",
                    MetricType::Histogram,
                    "Client-side request durations between two services (derived from traces).",
                    "seconds",
                ),
            ),
        ];
        for (f, m) in all {
            if families[f as usize] {
                out.metadata.push(m);
            }
        }
        out
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

    #[test]
    fn calls_and_latency_under_tempo_names() {
        let st = SpanMetricsState::new();
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
        let st = SpanMetricsState::new();
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
