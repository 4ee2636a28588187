//! Prometheus scraping: each configured target (and Outpost's own `/metrics`, job `outpost`) is
//! fetched every interval over HTTP/1.1 (hyper's client connection, one connection per scrape,
//! gzip accepted), parsed as OpenMetrics or the 0.0.4 text format (`ingest::prom_text`) and
//! written through the pipeline like any other ingest.
//!
//! Semantics follow Prometheus' scrape loop:
//! - every series gets the target labels `job`, `instance` (the URL's `host:port`) and the
//!   target's extra labels; with `honor_labels = false` a scraped label of the same name is kept
//!   as `exported_<name>` (prefix repeated while taken), with `honor_labels = true` the scraped
//!   value wins;
//! - samples without a timestamp get the scrape's start time;
//! - the report series `up`, `scrape_duration_seconds`, `scrape_samples_scraped`,
//!   `scrape_samples_post_metric_relabeling` and `scrape_series_added` are written every scrape;
//! - a series that was in the previous scrape and is not in this one, or every series when the
//!   scrape fails, gets a staleness marker at the scrape time (series with explicit timestamps
//!   never do, as in Prometheus).

use std::collections::HashSet;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use ingest::prom_text::{self, Exposition, Format};
use storage::model::{Exemplar, FloatSample, Labels, MetricsBatch, STALE_NAN_BITS, Signal, TimeSeries, WriteBatch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::{ScrapeConfig, ScrapeTarget};
use crate::pipeline::{Outcome, Pipeline};
use crate::telemetry::Protocol;

/// What Prometheus sends as `Accept` (OpenMetrics preferred, the text format as fallback).
const ACCEPT: &str = "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.3,*/*;q=0.1";

/// The scrape targets and the outcome of their last scrape, for `/api/v1/targets`.
#[derive(Default)]
pub struct Targets {
    /// Registered once at start; the std mutex is never held across an await.
    list: std::sync::Mutex<Vec<Arc<TargetState>>>,
}

/// One target's description and last scrape.
pub struct TargetState {
    /// The job.
    pub job: String,
    /// The URL scraped.
    pub url: String,
    /// Target labels (`job`, `instance`, extra).
    pub labels: Labels,
    /// Interval.
    pub interval: Duration,
    /// Timeout.
    pub timeout: Duration,
    /// The last scrape, if any (std mutex: held for a copy only).
    last: std::sync::Mutex<Option<LastScrape>>,
}

/// The outcome of a scrape.
#[derive(Clone, Debug)]
pub struct LastScrape {
    /// When it started.
    pub at: SystemTime,
    /// How long it took, in seconds.
    pub duration_s: f64,
    /// Empty when it succeeded.
    pub error: String,
}

impl TargetState {
    /// The last scrape, if there was one.
    pub fn last(&self) -> Option<LastScrape> {
        self.last.lock().ok().and_then(|l| l.clone())
    }
}

impl Targets {
    /// Every target, in configuration order (the self-scrape last).
    pub fn list(&self) -> Vec<Arc<TargetState>> {
        self.list.lock().map(|l| l.clone()).unwrap_or_default()
    }

    fn add(&self, t: Arc<TargetState>) {
        if let Ok(mut l) = self.list.lock() {
            l.push(t);
        }
    }
}

/// A target ready to scrape.
#[derive(Debug, Clone)]
pub struct Target {
    /// `host:port` to connect to.
    authority: String,
    /// Path and query to request.
    path: String,
    /// `job`, `instance` and extra labels.
    labels: Labels,
    interval: Duration,
    timeout: Duration,
    honor_labels: bool,
}

impl Target {
    /// A target from its configuration; `None` for a URL without a host.
    pub fn new(t: &ScrapeTarget) -> Option<Target> {
        let uri: http::Uri = t.url.parse().ok()?;
        let authority = uri.authority()?.as_str().to_string();
        let host_port = if uri.port().is_some() { authority.clone() } else { format!("{authority}:80") };
        let path = uri.path_and_query().map(|p| p.as_str().to_string()).unwrap_or_else(|| "/".into());
        let mut pairs: Vec<(String, String)> = t.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        pairs.push(("job".into(), t.job.clone()));
        pairs.push(("instance".into(), host_port.clone()));
        Some(Target {
            authority: host_port,
            path,
            labels: Labels::from_pairs(pairs),
            interval: t.interval,
            timeout: t.timeout,
            honor_labels: t.honor_labels,
        })
    }
}

/// Starts one scrape loop per target (plus the self-scrape of `self_addr` when enabled) in `set`.
pub fn spawn(
    config: &ScrapeConfig,
    self_addr: SocketAddr,
    pipeline: Arc<Pipeline>,
    registry: &Targets,
    stop: CancellationToken,
    set: &mut JoinSet<()>,
) {
    let mut targets: Vec<ScrapeTarget> = config.targets.clone();
    if config.self_scrape {
        let mut addr = self_addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(if addr.is_ipv4() {
                std::net::Ipv4Addr::LOCALHOST.into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            });
        }
        targets.push(ScrapeTarget {
            job: "outpost".into(),
            url: format!("http://{addr}/metrics"),
            interval: config.interval,
            timeout: config.timeout,
            labels: Default::default(),
            honor_labels: false,
        });
    }
    for t in &targets {
        let Some(target) = Target::new(t) else {
            tracing::warn!(url = %t.url, "Scrape target has no host; skipped");
            continue;
        };
        let limits = Limits { max_body_bytes: config.max_body_bytes, sample_limit: config.sample_limit };
        let state = Arc::new(TargetState {
            job: t.job.clone(),
            url: t.url.clone(),
            labels: target.labels.clone(),
            interval: target.interval,
            timeout: target.timeout,
            last: std::sync::Mutex::new(None),
        });
        registry.add(Arc::clone(&state));
        set.spawn(run(target, limits, Arc::clone(&pipeline), state, stop.clone()));
    }
}

#[derive(Clone, Copy)]
struct Limits {
    max_body_bytes: usize,
    sample_limit: usize,
}

async fn run(
    target: Target,
    limits: Limits,
    pipeline: Arc<Pipeline>,
    state: Arc<TargetState>,
    stop: CancellationToken,
) {
    let mut previous: HashSet<Labels> = HashSet::new();
    let mut interval = tokio::time::interval(target.interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = interval.tick() => {}
        }
        if !pipeline.is_ready() {
            continue;
        }
        let started = Instant::now();
        let at = SystemTime::now();
        let t_ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
        let fetched = tokio::time::timeout(target.timeout, fetch(&target, limits.max_body_bytes))
            .await
            .unwrap_or_else(|_| Err(format!("scrape timed out after {:?}", target.timeout)));
        let parsed = match fetched {
            Ok((body, format)) => {
                let sample_limit = limits.sample_limit;
                tokio::task::spawn_blocking(move || {
                    let text = std::str::from_utf8(&body).map_err(|e| format!("body is not UTF-8: {e}"))?;
                    prom_text::parse(text, format, sample_limit).map_err(|e| e.to_string())
                })
                .await
                .unwrap_or_else(|e| Err(format!("parse task failed: {e}")))
            }
            Err(e) => Err(e),
        };
        if let Err(e) = &parsed {
            tracing::debug!(instance = %target.authority, path = %target.path, error = %e, "Scrape failed");
        }
        let duration = started.elapsed().as_secs_f64();
        if let Ok(mut last) = state.last.lock() {
            let error = parsed.as_ref().err().cloned().unwrap_or_default();
            *last = Some(LastScrape { at, duration_s: duration, error });
        }
        let (batch, current) = build_batch(&target, parsed.ok(), t_ms, duration, &previous);
        previous = current;
        let permit = match pipeline.admit() {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(error = %e, "Scrape result not written");
                continue;
            }
        };
        let accepted = batch.item_count() as u64;
        let wrote = pipeline
            .write_mapped(Signal::Metrics, Protocol::Scrape, 0, started, permit, move |_| {
                Ok((WriteBatch::Metrics(batch), Outcome { accepted, ..Outcome::default() }))
            })
            .await;
        if let Err(e) = wrote {
            tracing::debug!(error = %e, "Scrape result not written");
        }
    }
}

/// GETs the target; the body (gunzipped) and its format.
async fn fetch(target: &Target, max_body: usize) -> Result<(Bytes, Format), String> {
    let stream = tokio::net::TcpStream::connect(&target.authority).await.map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.map_err(|e| format!("handshake: {e}"))?;
    let conn = tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = http::Request::get(target.path.as_str())
        .header(http::header::HOST, target.authority.as_str())
        .header(http::header::ACCEPT, ACCEPT)
        .header(http::header::ACCEPT_ENCODING, "gzip")
        .header(http::header::USER_AGENT, concat!("Outpost/", env!("CARGO_PKG_VERSION")))
        .header("X-Prometheus-Scrape-Timeout-Seconds", format!("{}", target.timeout.as_secs_f64()))
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("request: {e}"))?;
    let result = async {
        let resp = sender.send_request(req).await.map_err(|e| format!("request: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("server returned HTTP status {}", resp.status()));
        }
        let headers = resp.headers().clone();
        let body = Limited::new(resp.into_body(), max_body)
            .collect()
            .await
            .map_err(|e| format!("body (limit scrape.max_body_bytes = {max_body}): {e}"))?
            .to_bytes();
        let format = Format::from_content_type(headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()));
        let gzip = headers
            .get(http::header::CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("gzip"));
        let body = if gzip {
            let mut out = Vec::new();
            flate2::read::MultiGzDecoder::new(&body[..])
                .take(max_body as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| format!("gzip: {e}"))?;
            if out.len() > max_body {
                return Err(format!("body larger than scrape.max_body_bytes = {max_body}"));
            }
            Bytes::from(out)
        } else {
            body
        };
        Ok((body, format))
    }
    .await;
    conn.abort();
    result
}

/// Applies the target labels to a scraped label set (`honor_labels` semantics).
fn target_labels(target: &Target, name: &str, scraped: &[(String, String)]) -> Labels {
    let mut pairs: Vec<(String, String)> = Vec::with_capacity(scraped.len() + target.labels.len() + 1);
    pairs.extend(scraped.iter().filter(|(k, _)| k != "__name__").cloned());
    for l in target.labels.iter() {
        let pos = pairs.iter().position(|(k, _)| *k == l.name);
        match pos {
            Some(_) if target.honor_labels => {}
            Some(i) => {
                let mut exported = format!("exported_{}", l.name);
                while pairs.iter().any(|(k, _)| *k == exported) {
                    exported = format!("exported_{exported}");
                }
                pairs[i].0 = exported;
                pairs.push((l.name.clone(), l.value.clone()));
            }
            None => pairs.push((l.name.clone(), l.value.clone())),
        }
    }
    pairs.push(("__name__".into(), name.to_string()));
    Labels::from_pairs(pairs)
}

/// The batch one scrape writes, and the set of series (without explicit timestamps) it saw.
fn build_batch(
    target: &Target,
    exposition: Option<Exposition>,
    t_ms: i64,
    duration_s: f64,
    previous: &HashSet<Labels>,
) -> (MetricsBatch, HashSet<Labels>) {
    let mut batch = MetricsBatch::default();
    let mut current = HashSet::new();
    let mut seen_any = HashSet::new();
    let up = exposition.is_some();
    let mut scraped = 0usize;
    let mut added = 0usize;
    if let Some(e) = exposition {
        scraped = e.samples.len();
        batch.metadata = e.metadata;
        for s in e.samples {
            let labels = target_labels(target, &s.name, &s.labels);
            if !seen_any.insert(labels.clone()) {
                continue; // A duplicate series in one page: the first sample wins, as in Prometheus.
            }
            let ts = s.timestamp_ms.unwrap_or(t_ms);
            if s.timestamp_ms.is_none() {
                if !previous.contains(&labels) {
                    added += 1;
                }
                current.insert(labels.clone());
            }
            let exemplars = s
                .exemplar
                .map(|x| Exemplar {
                    labels: Labels::from_pairs(x.labels),
                    value: x.value,
                    timestamp_ms: x.timestamp_ms.unwrap_or(ts),
                })
                .into_iter()
                .collect();
            batch.series.push(TimeSeries {
                labels,
                samples: vec![FloatSample { timestamp_ms: ts, value: s.value }],
                histograms: Vec::new(),
                exemplars,
            });
        }
    }
    let stale = f64::from_bits(STALE_NAN_BITS);
    for gone in previous.difference(&current) {
        batch.series.push(TimeSeries {
            labels: gone.clone(),
            samples: vec![FloatSample { timestamp_ms: t_ms, value: stale }],
            histograms: Vec::new(),
            exemplars: Vec::new(),
        });
    }
    let report = [
        ("up", if up { 1.0 } else { 0.0 }),
        ("scrape_duration_seconds", duration_s),
        ("scrape_samples_scraped", scraped as f64),
        ("scrape_samples_post_metric_relabeling", scraped as f64),
        ("scrape_series_added", added as f64),
    ];
    for (name, v) in report {
        let mut labels = target.labels.clone();
        labels.set("__name__", name);
        batch.series.push(TimeSeries {
            labels,
            samples: vec![FloatSample { timestamp_ms: t_ms, value: v }],
            histograms: Vec::new(),
            exemplars: Vec::new(),
        });
    }
    (batch, current)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(honor: bool) -> Target {
        Target::new(&ScrapeTarget {
            job: "node".into(),
            url: "http://127.0.0.1:9100/metrics".into(),
            interval: Duration::from_secs(15),
            timeout: Duration::from_secs(10),
            labels: [("env".to_string(), "lab".to_string())].into_iter().collect(),
            honor_labels: honor,
        })
        .unwrap()
    }

    fn page(text: &str) -> Option<Exposition> {
        Some(prom_text::parse(text, Format::Text, 0).unwrap())
    }

    fn find<'a>(b: &'a MetricsBatch, name: &str) -> Vec<&'a TimeSeries> {
        b.series.iter().filter(|s| s.labels.get("__name__") == Some(name)).collect()
    }

    #[test]
    fn labels_conflicts_and_report() {
        let t = target(false);
        let (b, cur) =
            build_batch(&t, page("a{job=\"x\",exported_job=\"y\"} 1\nb 2 1000\n"), 5000, 0.5, &HashSet::new());
        let a = find(&b, "a")[0];
        assert_eq!(
            a.labels.to_string(),
            r#"{__name__="a", env="lab", exported_exported_job="x", exported_job="y", instance="127.0.0.1:9100", job="node"}"#
        );
        assert_eq!(a.samples[0].timestamp_ms, 5000);
        assert_eq!(find(&b, "b")[0].samples[0].timestamp_ms, 1000);
        assert_eq!(find(&b, "up")[0].samples[0].value, 1.0);
        assert_eq!(find(&b, "scrape_samples_scraped")[0].samples[0].value, 2.0);
        assert_eq!(find(&b, "scrape_series_added")[0].samples[0].value, 1.0);
        assert_eq!(cur.len(), 1);

        let h = target(true);
        let (b, _) = build_batch(&h, page("a{job=\"x\"} 1\n"), 5000, 0.5, &HashSet::new());
        assert_eq!(find(&b, "a")[0].labels.get("job"), Some("x"));
    }

    #[test]
    fn staleness_on_disappearance_and_failure() {
        let t = target(false);
        let (_, prev) = build_batch(&t, page("a 1\nb 2\n"), 1000, 0.1, &HashSet::new());
        let (b, prev) = build_batch(&t, page("a 1\n"), 2000, 0.1, &prev);
        let bs = find(&b, "b");
        assert_eq!(bs.len(), 1);
        assert!(storage::model::is_stale_nan(bs[0].samples[0].value));
        assert_eq!(find(&b, "scrape_series_added")[0].samples[0].value, 0.0);
        let (b, prev) = build_batch(&t, None, 3000, 0.1, &prev);
        assert!(storage::model::is_stale_nan(find(&b, "a")[0].samples[0].value));
        assert_eq!(find(&b, "up")[0].samples[0].value, 0.0);
        assert!(prev.is_empty());
    }
}
