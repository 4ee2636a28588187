//! Configuration in two stages (ripgrep's lowargs/hiargs, GreptimeDB's layered options):
//! [`RawConfig`] is what the layers say — defaults < TOML file < `OUTPOST_*` environment < flags —
//! deserialized strictly so that every error names its key; [`Config`] is the validated, resolved
//! form the server is built from. Engines never see either: they get plain option structs.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Environment variables in our namespace start with this; nested keys use `__`
/// (`OUTPOST_WAL__FSYNC=interval` sets `wal.fsync`).
pub const ENV_PREFIX: &str = "OUTPOST_";

/// Environment variables that are not config keys (they are read by clap or by the logger).
const ENV_NOT_KEYS: &[&str] = &["OUTPOST_CONFIG", "OUTPOST_LOG"];

/// A configuration error; the message always names the offending key or source.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// TOML syntax error.
    #[error("{origin}: {message}")]
    Syntax {
        /// File or variable.
        origin: String,
        /// Parser message (with line and column).
        message: String,
    },
    /// A key with a wrong type or value, or an unknown key.
    #[error("{origin}: key `{key}`: {message}")]
    Key {
        /// Where the bad value came from (file, environment, flags).
        origin: String,
        /// Dotted key path.
        key: String,
        /// What is wrong.
        message: String,
    },
}

/// Everything the layers can set. Field docs are the reference; `deploy/outpost.example.toml`
/// repeats them for users and is loaded by a test.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    /// Folder for all stores.
    pub data_dir: PathBuf,
    /// Main HTTP listener (queries, UI, OTLP/HTTP, `/metrics`).
    pub listen: String,
    /// OTLP/gRPC listener; empty disables it.
    pub otlp_grpc_listen: String,
    /// OTLP/HTTP listener; empty disables it.
    pub otlp_http_listen: String,
    /// `human` or `json`.
    pub log_format: LogFormat,
    /// tracing filter directive (`info`, `outpost=debug,info`, …).
    pub log_level: String,
    /// Resident memory above which ingest answers "retry later"; absent = a quarter of the
    /// machine's memory, at most 2 GiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_limit_bytes: Option<u64>,
    /// Write-ahead log.
    pub wal: RawWal,
    /// Request and item limits.
    pub limits: RawLimits,
    /// Logs ingest.
    pub logs: RawLogs,
    /// The metrics store.
    pub metrics: RawMetrics,
    /// The traces store.
    pub traces: RawTraces,
    /// PromQL and the Prometheus query API.
    pub query: RawQuery,
    /// Prometheus scraping.
    pub scrape: RawScrape,
}

/// `[query]`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawQuery {
    /// How far back an instant selector looks for a sample (Prometheus `--query.lookback-delta`).
    pub lookback_delta: String,
    /// Longest a query may run (Prometheus `--query.timeout`); a `timeout` parameter can only shorten it.
    pub timeout: String,
    /// Most samples one query may hold in memory at once (Prometheus `--query.max-samples`).
    pub max_samples: usize,
    /// Queries evaluated at once (Prometheus `--query.max-concurrency`); more wait their turn.
    pub max_concurrency: usize,
    /// Most points per series a range query may produce ((end - start) / step).
    pub max_points_per_series: usize,
}

/// `[scrape]`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawScrape {
    /// Default time between scrapes of a target.
    pub interval: String,
    /// Default time allowed for one scrape (at most the interval).
    pub timeout: String,
    /// Scrape Outpost's own `/metrics` (job `outpost`).
    pub self_scrape: bool,
    /// Largest accepted exposition body, in bytes.
    pub max_body_bytes: usize,
    /// Most samples one scrape may return; more fails the scrape (Prometheus `sample_limit`, 0 = none).
    pub sample_limit: usize,
    /// Targets (`[[scrape.targets]]`).
    pub targets: Vec<RawScrapeTarget>,
}

/// One `[[scrape.targets]]` entry.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawScrapeTarget {
    /// The `job` label.
    pub job: String,
    /// `http://host:port/path`; the `instance` label is its `host:port`.
    pub url: String,
    /// Overrides `scrape.interval`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// Overrides `scrape.timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Extra labels put on every series of the target.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Keep the target's own `job`/`instance`/... labels on conflict (Prometheus `honor_labels`).
    #[serde(default)]
    pub honor_labels: bool,
}

impl Default for RawQuery {
    fn default() -> Self {
        RawQuery {
            lookback_delta: "5m".into(),
            timeout: "2m".into(),
            max_samples: 50_000_000,
            max_concurrency: 20,
            max_points_per_series: 11_000,
        }
    }
}

impl Default for RawScrape {
    fn default() -> Self {
        RawScrape {
            interval: "15s".into(),
            timeout: "10s".into(),
            self_scrape: true,
            max_body_bytes: 16 << 20,
            sample_limit: 0,
            targets: Vec::new(),
        }
    }
}

/// `[traces]`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawTraces {
    /// Span files whose newest span is older than this are deleted (`0s` = keep forever).
    pub retention: String,
    /// When nonzero, the oldest span files are deleted while they exceed this many bytes.
    pub retention_bytes: u64,
}

impl Default for RawTraces {
    fn default() -> Self {
        RawTraces { retention: "14d".into(), retention_bytes: 0 }
    }
}

/// `[wal]`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawWal {
    /// `batch` | `interval` | `none`.
    pub fsync: Fsync,
    /// Only with `fsync = "interval"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fsync_interval: Option<String>,
    /// Segment size in bytes before rotation.
    pub segment_bytes: u64,
}

/// WAL fsync policy names.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Fsync {
    /// One fsync per commit group, before acknowledging.
    Batch,
    /// fsync on a timer; acknowledged writes survive a process crash, not a power loss.
    Interval,
    /// Never fsync (the OS decides).
    None,
}

impl Fsync {
    fn as_str(self) -> &'static str {
        match self {
            Fsync::Batch => "batch",
            Fsync::Interval => "interval",
            Fsync::None => "none",
        }
    }
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

/// `[limits]`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawLimits {
    /// Largest accepted request body, compressed and after decompression (bytes); larger → 413 /
    /// gRPC RESOURCE_EXHAUSTED.
    pub max_request_bytes: usize,
    /// Ingest requests in flight at once; more → 429 / gRPC UNAVAILABLE, with a retry hint.
    pub max_inflight_requests: usize,
    /// Time allowed to receive a request body.
    pub request_body_timeout: String,
    /// Longest string or bytes attribute value.
    pub max_attribute_value_bytes: usize,
    /// Longest log body.
    pub max_log_body_bytes: usize,
    /// Most attributes per item.
    pub max_attributes: usize,
    /// Longest metric label name.
    pub max_label_name_bytes: usize,
    /// Longest metric label value.
    pub max_label_value_bytes: usize,
    /// Most labels per metric series.
    pub max_labels_per_series: usize,
    /// Most series in one Prometheus remote-write request; more → 413.
    pub max_series_per_request: usize,
    /// Most samples in one pprof profile (Pyroscope ingest); more → 400 naming this limit.
    pub max_profile_samples: usize,
    /// How far in the future a timestamp may lie.
    pub max_future: String,
    /// How far in the past a timestamp may lie (`0s` = no limit).
    pub max_age: String,
    /// Largest trace served by the Tempo trace-by-id API (protobuf bytes); a larger trace comes
    /// back partial (v2) or is refused (v1).
    pub max_trace_bytes: usize,
}

/// `[logs]`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawLogs {
    /// Resource attributes that become stream labels.
    pub stream_labels: Vec<String>,
    /// Logs older than this are deleted (whole partitions); `0s` keeps everything.
    pub retention: String,
    /// Disk budget of the logs indexes; the oldest partitions go first. 0 = no limit.
    pub max_bytes: u64,
    /// Width of one index partition.
    pub partition: String,
    /// Longest line a Loki push may carry (bytes); longer entries are refused with 400.
    pub max_line_bytes: usize,
    /// Most streams in one Loki push; more → 429.
    pub max_streams_per_push: usize,
    /// Largest `limit` a Loki log query may ask for.
    pub max_entries_limit: u32,
    /// Most series a LogQL metric query may return.
    pub max_query_series: usize,
    /// Deadline of one LogQL query.
    pub query_timeout: String,
}

/// `[metrics]`: the metrics store (`storage::MetricsOptions`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawMetrics {
    /// Blocks whose newest sample is older than this are deleted (`0s` = keep regardless of age).
    pub retention: String,
    /// When nonzero, the oldest blocks are deleted while all blocks exceed this many bytes.
    pub retention_bytes: u64,
    /// Samples older than the newest stored sample minus this are refused (`0s` = each series only
    /// accepts samples at or after its newest one).
    pub out_of_order_window: String,
    /// Exemplars kept per series (in memory and per block).
    pub exemplars_per_series: usize,
    /// Time range of the smallest compacted block.
    pub block_range: String,
}

impl Default for RawMetrics {
    fn default() -> Self {
        RawMetrics {
            retention: "15d".into(),
            retention_bytes: 0,
            out_of_order_window: "10m".into(),
            exemplars_per_series: storage::MetricsOptions::default().exemplars_per_series,
            block_range: "2h".into(),
        }
    }
}

impl Default for RawConfig {
    fn default() -> Self {
        RawConfig {
            data_dir: PathBuf::from("./outpost-data"),
            listen: "127.0.0.1:7070".into(),
            otlp_grpc_listen: "127.0.0.1:4317".into(),
            otlp_http_listen: "127.0.0.1:4318".into(),
            log_format: LogFormat::Human,
            log_level: "info".into(),
            memory_limit_bytes: None,
            wal: RawWal::default(),
            limits: RawLimits::default(),
            logs: RawLogs::default(),
            metrics: RawMetrics::default(),
            query: RawQuery::default(),
            scrape: RawScrape::default(),
            traces: RawTraces::default(),
        }
    }
}

impl Default for RawWal {
    fn default() -> Self {
        RawWal { fsync: Fsync::Batch, fsync_interval: None, segment_bytes: 64 << 20 }
    }
}

impl Default for RawLimits {
    fn default() -> Self {
        let l = ingest::otlp::Limits::default();
        RawLimits {
            max_request_bytes: 16 << 20,
            max_inflight_requests: 64,
            request_body_timeout: "30s".into(),
            max_attribute_value_bytes: l.max_attribute_value_bytes,
            max_log_body_bytes: l.max_log_body_bytes,
            max_attributes: l.max_attributes,
            max_label_name_bytes: l.max_label_name_bytes,
            max_label_value_bytes: l.max_label_value_bytes,
            max_labels_per_series: l.max_labels_per_series,
            max_series_per_request: 100_000,
            max_profile_samples: ingest::pprof::PprofLimits::default().max_samples_per_profile,
            max_future: "10m".into(),
            max_age: "7d".into(),
            max_trace_bytes: crate::api::tempo::DEFAULT_MAX_TRACE_BYTES,
        }
    }
}

impl Default for RawLogs {
    fn default() -> Self {
        let push = ingest::loki_push::PushLimits::default();
        RawLogs {
            stream_labels: ingest::otlp::LogsOptions::default().stream_label_attributes,
            retention: "7d".into(),
            max_bytes: 0,
            partition: "1h".into(),
            max_line_bytes: push.max_line_bytes,
            max_streams_per_push: push.max_streams_per_request,
            max_entries_limit: 5000,
            max_query_series: 500,
            query_timeout: "2m".into(),
        }
    }
}

/// Values given on the command line (highest precedence).
#[derive(Debug, Default, Clone)]
pub struct FlagOverrides {
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--listen`.
    pub listen: Option<String>,
    /// `--otlp-grpc-listen`.
    pub otlp_grpc_listen: Option<String>,
    /// `--otlp-http-listen`.
    pub otlp_http_listen: Option<String>,
    /// `--log-format`.
    pub log_format: Option<LogFormat>,
}

/// The layers, in increasing precedence, each as a TOML table with its origin for messages.
struct Layers(Vec<(String, toml::Table)>);

impl RawConfig {
    /// Loads defaults < `file` < environment (`env` pairs, normally `std::env::vars()`) < flags.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        flags: &FlagOverrides,
    ) -> Result<RawConfig, ConfigError> {
        let mut layers = Layers(Vec::new());
        if let Some(path) = file {
            let text =
                std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
            let table: toml::Table = text.parse().map_err(|e: toml::de::Error| ConfigError::Syntax {
                origin: path.display().to_string(),
                message: e.to_string().trim_end().to_string(),
            })?;
            layers.0.push((path.display().to_string(), table));
        }
        layers.0.push(("environment".into(), env_table(env)?));
        layers.0.push(("command line".into(), flags_table(flags)));
        layers.resolve()
    }
}

impl Layers {
    /// Checks each layer on its own (so a bad key is blamed on the layer that has it), then merges.
    fn resolve(self) -> Result<RawConfig, ConfigError> {
        let mut merged = toml::Table::new();
        for (origin, table) in self.0 {
            deserialize(&origin, table.clone())?;
            merge(&mut merged, table);
        }
        deserialize("configuration", merged)
    }
}

fn deserialize(origin: &str, table: toml::Table) -> Result<RawConfig, ConfigError> {
    serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
        let key = e.path().to_string();
        // toml appends the table ("in `wal`") on a second line; the key already says it.
        let message = e.into_inner().to_string().lines().next().unwrap_or_default().to_string();
        ConfigError::Key { origin: origin.to_string(), key, message }
    })
}

fn merge(into: &mut toml::Table, from: toml::Table) {
    for (k, v) in from {
        match (into.get_mut(&k), v) {
            (Some(toml::Value::Table(a)), toml::Value::Table(b)) => merge(a, b),
            (_, v) => {
                into.insert(k, v);
            }
        }
    }
}

/// `OUTPOST_A__B_C=v` → `a.b_c = v`; `v` is read as a TOML value when it parses as one
/// (numbers, booleans, arrays) and as a string otherwise.
fn env_table(env: impl IntoIterator<Item = (String, String)>) -> Result<toml::Table, ConfigError> {
    let mut out = toml::Table::new();
    let vars: BTreeMap<String, String> = env.into_iter().filter(|(k, _)| k.starts_with(ENV_PREFIX)).collect();
    for (name, value) in vars {
        if ENV_NOT_KEYS.contains(&name.as_str()) {
            continue;
        }
        let path: Vec<String> = name[ENV_PREFIX.len()..].split("__").map(|p| p.to_ascii_lowercase()).collect();
        if path.iter().any(|p| p.is_empty()) {
            return Err(ConfigError::Key {
                origin: "environment".into(),
                key: name,
                message: "malformed variable name".into(),
            });
        }
        let parsed = format!("v = {value}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or(toml::Value::String(value));
        let mut table = &mut out;
        for part in &path[..path.len() - 1] {
            let entry = table.entry(part.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
            table = match entry {
                toml::Value::Table(t) => t,
                _ => {
                    return Err(ConfigError::Key {
                        origin: "environment".into(),
                        key: name,
                        message: "conflicts with another variable".into(),
                    });
                }
            };
        }
        table.insert(path[path.len() - 1].clone(), parsed);
    }
    Ok(out)
}

fn flags_table(f: &FlagOverrides) -> toml::Table {
    let mut t = toml::Table::new();
    if let Some(v) = &f.data_dir {
        t.insert("data_dir".into(), toml::Value::String(v.display().to_string()));
    }
    for (key, v) in
        [("listen", &f.listen), ("otlp_grpc_listen", &f.otlp_grpc_listen), ("otlp_http_listen", &f.otlp_http_listen)]
    {
        if let Some(v) = v {
            t.insert(key.into(), toml::Value::String(v.clone()));
        }
    }
    if let Some(v) = f.log_format {
        let s = match v {
            LogFormat::Human => "human",
            LogFormat::Json => "json",
        };
        t.insert("log_format".into(), toml::Value::String(s.into()));
    }
    t
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Folder for all stores.
    pub data_dir: PathBuf,
    /// Main HTTP listener.
    pub listen: SocketAddr,
    /// OTLP/gRPC listener, if enabled.
    pub otlp_grpc_listen: Option<SocketAddr>,
    /// OTLP/HTTP listener, if enabled.
    pub otlp_http_listen: Option<SocketAddr>,
    /// Log output format.
    pub log_format: LogFormat,
    /// tracing filter directive.
    pub log_level: String,
    /// Resident memory above which ingest is refused with "retry later".
    pub memory_limit_bytes: u64,
    /// Storage options.
    pub storage: storage::StorageOptions,
    /// fsync period when the policy is `interval`.
    pub fsync_interval: Option<Duration>,
    /// Request-level limits enforced by the shell.
    pub requests: RequestLimits,
    /// Item-level limits enforced by `ingest`.
    pub item_limits: ingest::otlp::Limits,
    /// Logs mapping options.
    pub logs: ingest::otlp::LogsOptions,
    /// Loki push limits and LogQL query limits.
    pub loki: LokiSettings,
    /// PromQL engine and Prometheus API options.
    pub query: QueryConfig,
    /// Scraping.
    pub scrape: ScrapeConfig,
}

/// The resolved `[query]` section.
#[derive(Debug, Clone)]
pub struct QueryConfig {
    /// Lookback for instant selectors.
    pub lookback_delta: Duration,
    /// Longest a query may run.
    pub timeout: Duration,
    /// Most samples a query may hold.
    pub max_samples: usize,
    /// Queries evaluated at once.
    pub max_concurrency: usize,
    /// Most points per series of a range query.
    pub max_points_per_series: usize,
}

/// The resolved `[scrape]` section.
#[derive(Debug, Clone)]
pub struct ScrapeConfig {
    /// Scrape Outpost's own `/metrics`.
    pub self_scrape: bool,
    /// Default interval.
    pub interval: Duration,
    /// Default timeout.
    pub timeout: Duration,
    /// Largest exposition body.
    pub max_body_bytes: usize,
    /// Most samples per scrape (0 = none).
    pub sample_limit: usize,
    /// Configured targets.
    pub targets: Vec<ScrapeTarget>,
}

/// A resolved scrape target.
#[derive(Debug, Clone)]
pub struct ScrapeTarget {
    /// `job` label.
    pub job: String,
    /// Full URL.
    pub url: String,
    /// Time between scrapes.
    pub interval: Duration,
    /// Time allowed per scrape.
    pub timeout: Duration,
    /// Extra target labels.
    pub labels: BTreeMap<String, String>,
    /// Keep the target's labels on conflict.
    pub honor_labels: bool,
}

/// Loki push and query settings.
#[derive(Debug, Clone)]
pub struct LokiSettings {
    /// Push validation limits.
    pub push: ingest::loki_push::PushLimits,
    /// Largest `limit` of a log query.
    pub max_entries_limit: u32,
    /// Most series of a metric query.
    pub max_query_series: usize,
    /// Deadline of a query.
    pub query_timeout: Duration,
}

/// Limits on whole requests.
#[derive(Debug, Clone, Copy)]
pub struct RequestLimits {
    /// Largest body, compressed or decompressed.
    pub max_request_bytes: usize,
    /// Concurrent ingest requests.
    pub max_inflight_requests: usize,
    /// Time allowed to receive a body.
    pub body_timeout: Duration,
    /// Most series in one remote-write request.
    pub max_series_per_request: usize,
    /// Largest trace the Tempo API serves whole (protobuf bytes).
    pub max_trace_bytes: usize,
    /// Most samples in one pprof profile.
    pub max_profile_samples: usize,
}

fn key_err(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Key { origin: "configuration".into(), key: key.into(), message: message.into() }
}

fn parse_addr(key: &str, v: &str, optional: bool) -> Result<Option<SocketAddr>, ConfigError> {
    if optional && v.is_empty() {
        return Ok(None);
    }
    v.parse::<SocketAddr>()
        .map(Some)
        .map_err(|e| key_err(key, format!("{v:?} is not a socket address (host:port): {e}")))
}

fn parse_duration(key: &str, v: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(v).map_err(|e| key_err(key, format!("{v:?} is not a duration like 30s, 10m or 7d: {e}")))
}

fn positive(key: &str, v: usize) -> Result<usize, ConfigError> {
    if v == 0 { Err(key_err(key, "must be greater than 0")) } else { Ok(v) }
}

impl RawConfig {
    /// Validates values and their combinations and resolves them.
    pub fn resolve(self) -> Result<Config, ConfigError> {
        if self.data_dir.as_os_str().is_empty() {
            return Err(key_err("data_dir", "must not be empty"));
        }
        let listen = parse_addr("listen", &self.listen, false)?.expect("required address");
        let grpc = parse_addr("otlp_grpc_listen", &self.otlp_grpc_listen, true)?;
        let http = parse_addr("otlp_http_listen", &self.otlp_http_listen, true)?;
        let named = [("listen", Some(listen)), ("otlp_grpc_listen", grpc), ("otlp_http_listen", http)];
        for (i, (ka, a)) in named.iter().enumerate() {
            for (kb, b) in &named[i + 1..] {
                if let (Some(a), Some(b)) = (a, b)
                    && a == b
                    && a.port() != 0
                {
                    return Err(key_err(kb, format!("{b} is already used by `{ka}`")));
                }
            }
        }
        tracing_subscriber::EnvFilter::try_new(&self.log_level)
            .map_err(|e| key_err("log_level", format!("{:?}: {e}", self.log_level)))?;

        let fsync_interval = match (self.wal.fsync, &self.wal.fsync_interval) {
            (Fsync::Interval, None) => Some(Duration::from_secs(1)),
            (Fsync::Interval, Some(v)) => {
                let d = parse_duration("wal.fsync_interval", v)?;
                if d.is_zero() {
                    return Err(key_err("wal.fsync_interval", "must be greater than 0"));
                }
                Some(d)
            }
            (other, Some(_)) => {
                return Err(key_err(
                    "wal.fsync_interval",
                    format!("is set but `wal.fsync` is {:?}; it only applies to fsync = \"interval\"", other.as_str()),
                ));
            }
            (_, None) => None,
        };
        if self.wal.segment_bytes < 4096 {
            return Err(key_err("wal.segment_bytes", "must be at least 4096"));
        }
        let l = &self.limits;
        let requests = RequestLimits {
            max_request_bytes: positive("limits.max_request_bytes", l.max_request_bytes)?,
            max_inflight_requests: positive("limits.max_inflight_requests", l.max_inflight_requests)?,
            body_timeout: parse_duration("limits.request_body_timeout", &l.request_body_timeout)?,
            max_series_per_request: positive("limits.max_series_per_request", l.max_series_per_request)?,
            max_trace_bytes: positive("limits.max_trace_bytes", l.max_trace_bytes)?,
            max_profile_samples: positive("limits.max_profile_samples", l.max_profile_samples)?,
        };
        let max_future = parse_duration("limits.max_future", &l.max_future)?;
        let max_age = parse_duration("limits.max_age", &l.max_age)?;
        let item_limits = ingest::otlp::Limits {
            max_attribute_value_bytes: positive("limits.max_attribute_value_bytes", l.max_attribute_value_bytes)?,
            max_log_body_bytes: positive("limits.max_log_body_bytes", l.max_log_body_bytes)?,
            max_attributes: positive("limits.max_attributes", l.max_attributes)?,
            max_label_name_bytes: positive("limits.max_label_name_bytes", l.max_label_name_bytes)?,
            max_label_value_bytes: positive("limits.max_label_value_bytes", l.max_label_value_bytes)?,
            max_labels_per_series: positive("limits.max_labels_per_series", l.max_labels_per_series)?,
            max_future_ns: i64::try_from(max_future.as_nanos()).unwrap_or(i64::MAX),
            max_age_ns: i64::try_from(max_age.as_nanos()).unwrap_or(i64::MAX),
        };
        if item_limits.max_attribute_value_bytes > requests.max_request_bytes {
            return Err(key_err(
                "limits.max_attribute_value_bytes",
                "is larger than `limits.max_request_bytes`, so it could never apply",
            ));
        }
        for (i, s) in self.logs.stream_labels.iter().enumerate() {
            if s.is_empty() {
                return Err(key_err(&format!("logs.stream_labels[{i}]"), "must not be empty"));
            }
        }
        let lg = &self.logs;
        let retention = parse_duration("logs.retention", &lg.retention)?;
        let partition = parse_duration("logs.partition", &lg.partition)?;
        if partition < Duration::from_secs(60) {
            return Err(key_err("logs.partition", "must be at least 1m"));
        }
        let loki = LokiSettings {
            push: ingest::loki_push::PushLimits {
                max_line_bytes: positive("logs.max_line_bytes", lg.max_line_bytes)?,
                max_streams_per_request: positive("logs.max_streams_per_push", lg.max_streams_per_push)?,
                max_label_name_bytes: item_limits.max_label_name_bytes,
                max_future_ns: item_limits.max_future_ns,
                max_age_ns: item_limits.max_age_ns,
                ..ingest::loki_push::PushLimits::default()
            },
            max_entries_limit: positive("logs.max_entries_limit", lg.max_entries_limit as usize)? as u32,
            max_query_series: positive("logs.max_query_series", lg.max_query_series)?,
            query_timeout: parse_duration("logs.query_timeout", &lg.query_timeout)?,
        };
        let logs_engine = storage::LogsOptions {
            partition_ns: i64::try_from(partition.as_nanos()).unwrap_or(i64::MAX),
            retention_ns: i64::try_from(retention.as_nanos()).unwrap_or(i64::MAX),
            max_bytes: lg.max_bytes,
            ..storage::LogsOptions::default()
        };
        let memory_limit_bytes = match self.memory_limit_bytes {
            Some(0) => return Err(key_err("memory_limit_bytes", "must be greater than 0")),
            Some(v) => v,
            None => default_memory_limit(),
        };
        let storage = storage::StorageOptions {
            data_dir: self.data_dir.clone(),
            wal: storage::WalOptions {
                fsync: match self.wal.fsync {
                    Fsync::Batch => storage::FsyncPolicy::Batch,
                    Fsync::Interval => storage::FsyncPolicy::Interval,
                    Fsync::None => storage::FsyncPolicy::None,
                },
                segment_bytes: self.wal.segment_bytes,
                ..storage::WalOptions::default()
            },
            engines: storage::EngineOptions {
                metrics: self.metrics.resolve()?,
                traces: storage::TracesOptions {
                    retention_ms: i64::try_from(
                        parse_duration("traces.retention", &self.traces.retention)?.as_millis(),
                    )
                    .unwrap_or(i64::MAX),
                    max_bytes: self.traces.retention_bytes,
                    ..storage::TracesOptions::default()
                },
                logs: logs_engine,
                ..storage::EngineOptions::default()
            },
        };
        let q = &self.query;
        let query = QueryConfig {
            lookback_delta: nonzero_duration("query.lookback_delta", &q.lookback_delta)?,
            timeout: nonzero_duration("query.timeout", &q.timeout)?,
            max_samples: positive("query.max_samples", q.max_samples)?,
            max_concurrency: positive("query.max_concurrency", q.max_concurrency)?,
            max_points_per_series: positive("query.max_points_per_series", q.max_points_per_series)?,
        };
        let scrape = resolve_scrape(&self.scrape)?;
        Ok(Config {
            query,
            scrape,
            data_dir: self.data_dir,
            listen,
            otlp_grpc_listen: grpc,
            otlp_http_listen: http,
            log_format: self.log_format,
            log_level: self.log_level,
            memory_limit_bytes,
            storage,
            fsync_interval,
            requests,
            item_limits,
            logs: ingest::otlp::LogsOptions { stream_label_attributes: self.logs.stream_labels },
            loki,
        })
    }
}

impl RawMetrics {
    fn resolve(&self) -> Result<storage::MetricsOptions, ConfigError> {
        let block_range = parse_duration("metrics.block_range", &self.block_range)?;
        if block_range < Duration::from_secs(60) {
            return Err(key_err("metrics.block_range", "must be at least 1m"));
        }
        Ok(storage::MetricsOptions {
            retention: parse_duration("metrics.retention", &self.retention)?,
            retention_bytes: self.retention_bytes,
            ooo_window: parse_duration("metrics.out_of_order_window", &self.out_of_order_window)?,
            exemplars_per_series: positive("metrics.exemplars_per_series", self.exemplars_per_series)?,
            block_range,
        })
    }
}

fn nonzero_duration(key: &str, v: &str) -> Result<Duration, ConfigError> {
    let d = parse_duration(key, v)?;
    if d.is_zero() { Err(key_err(key, "must be greater than 0")) } else { Ok(d) }
}

fn resolve_scrape(s: &RawScrape) -> Result<ScrapeConfig, ConfigError> {
    let interval = nonzero_duration("scrape.interval", &s.interval)?;
    let timeout = nonzero_duration("scrape.timeout", &s.timeout)?;
    let mut targets = Vec::with_capacity(s.targets.len());
    for (i, t) in s.targets.iter().enumerate() {
        let key = |k: &str| format!("scrape.targets[{i}].{k}");
        if t.job.is_empty() {
            return Err(key_err(&key("job"), "must not be empty"));
        }
        let uri: http::Uri = t.url.parse().map_err(|e| key_err(&key("url"), format!("{:?}: {e}", t.url)))?;
        if uri.scheme_str() != Some("http") || uri.authority().is_none() {
            return Err(key_err(&key("url"), format!("{:?} must be an http:// URL with a host", t.url)));
        }
        let t_interval = match &t.interval {
            Some(v) => nonzero_duration(&key("interval"), v)?,
            None => interval,
        };
        let t_timeout = match &t.timeout {
            Some(v) => nonzero_duration(&key("timeout"), v)?,
            None => timeout.min(t_interval),
        };
        if t_timeout > t_interval {
            return Err(key_err(&key("timeout"), "must not be longer than the target's interval"));
        }
        targets.push(ScrapeTarget {
            job: t.job.clone(),
            url: t.url.clone(),
            interval: t_interval,
            timeout: t_timeout,
            labels: t.labels.clone(),
            honor_labels: t.honor_labels,
        });
    }
    Ok(ScrapeConfig {
        self_scrape: s.self_scrape,
        interval,
        timeout: timeout.min(interval),
        max_body_bytes: positive("scrape.max_body_bytes", s.max_body_bytes)?,
        sample_limit: s.sample_limit,
        targets,
    })
}

/// A quarter of the machine's memory, at most 2 GiB (2 GiB when it cannot be read).
fn default_memory_limit() -> u64 {
    const CAP: u64 = 2 << 30;
    let total = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        let line = m.lines().find(|l| l.starts_with("MemTotal:"))?;
        line.split_whitespace().nth(1)?.parse::<u64>().ok().map(|kib| kib * 1024)
    });
    total.map_or(CAP, |t| (t / 4).min(CAP))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn precedence_is_flag_env_file_default() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:1\"\notlp_http_listen = \"127.0.0.1:2\"\n[wal]\nfsync = \"none\"\n",
        )
        .unwrap();
        let flags = FlagOverrides { listen: Some("127.0.0.1:3".into()), ..Default::default() };
        let raw = RawConfig::load(
            Some(&file),
            env(&[("OUTPOST_LISTEN", "127.0.0.1:4"), ("OUTPOST_OTLP_HTTP_LISTEN", "127.0.0.1:5"), ("HOME", "/x")]),
            &flags,
        )
        .unwrap();
        assert_eq!(raw.listen, "127.0.0.1:3");
        assert_eq!(raw.otlp_http_listen, "127.0.0.1:5");
        assert_eq!(raw.wal.fsync, Fsync::None);
        assert_eq!(raw.otlp_grpc_listen, "127.0.0.1:4317");
    }

    #[test]
    fn nested_env_and_typed_values() {
        let raw = RawConfig::load(
            None,
            env(&[
                ("OUTPOST_WAL__FSYNC", "interval"),
                ("OUTPOST_WAL__FSYNC_INTERVAL", "250ms"),
                ("OUTPOST_LIMITS__MAX_INFLIGHT_REQUESTS", "7"),
                ("OUTPOST_LOGS__STREAM_LABELS", r#"["service.name"]"#),
            ]),
            &FlagOverrides::default(),
        )
        .unwrap();
        let c = raw.resolve().unwrap();
        assert_eq!(c.fsync_interval, Some(Duration::from_millis(250)));
        assert_eq!(c.requests.max_inflight_requests, 7);
        assert_eq!(c.logs.stream_label_attributes, vec!["service.name".to_string()]);
    }

    #[test]
    fn scrape_targets_are_validated() {
        let load = |toml: &str| {
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("c.toml");
            std::fs::write(&file, toml).unwrap();
            RawConfig::load(Some(&file), Vec::new(), &FlagOverrides::default()).and_then(RawConfig::resolve)
        };
        let ok = load("[scrape]\ninterval = \"30s\"\n[[scrape.targets]]\njob = \"node\"\nurl = \"http://127.0.0.1:9100/metrics\"\nlabels = { env = \"lab\" }\n").unwrap();
        let t = &ok.scrape.targets[0];
        assert_eq!((t.interval, t.timeout), (Duration::from_secs(30), Duration::from_secs(10)));
        assert_eq!(t.labels["env"], "lab");
        for (bad, key) in [
            ("[[scrape.targets]]\njob = \"\"\nurl = \"http://a:1/m\"\n", "scrape.targets[0].job"),
            ("[[scrape.targets]]\njob = \"j\"\nurl = \"https://a:1/m\"\n", "scrape.targets[0].url"),
            ("[[scrape.targets]]\njob = \"j\"\nurl = \"not a url\"\n", "scrape.targets[0].url"),
            (
                "[[scrape.targets]]\njob = \"j\"\nurl = \"http://a:1/m\"\ninterval = \"5s\"\ntimeout = \"6s\"\n",
                "scrape.targets[0].timeout",
            ),
            ("[query]\nlookback_delta = \"0s\"\n", "query.lookback_delta"),
            ("[query]\nmax_concurrency = 0\n", "query.max_concurrency"),
            ("[limits]\nmax_series_per_request = 0\n", "limits.max_series_per_request"),
        ] {
            let e = load(bad).unwrap_err().to_string();
            assert!(e.contains(key), "{bad}: {e}");
        }
    }

    /// `deploy/outpost.example.toml` documents every key with its default value.
    #[test]
    fn example_config_loads_and_documents_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/outpost.example.toml");
        let raw = RawConfig::load(Some(&path), Vec::new(), &FlagOverrides::default()).unwrap();
        assert_eq!(raw, RawConfig::default());
        let c = raw.resolve().unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:7070");
        assert_eq!(c.otlp_grpc_listen.unwrap().port(), 4317);
        assert_eq!(c.otlp_http_listen.unwrap().port(), 4318);
        assert_eq!(c.data_dir, PathBuf::from("./outpost-data"));
        assert_eq!(c.requests.max_request_bytes, 16 << 20);
        assert_eq!(c.item_limits.max_age_ns, 7 * 86_400 * 1_000_000_000);
        assert!(c.fsync_interval.is_none());
        // Every key of the defaults appears in the example, uncommented (`wal.fsync_interval` is
        // absent from the defaults: it is only valid with another policy).
        let text = std::fs::read_to_string(&path).unwrap();
        let table: toml::Table = text.parse().unwrap();
        let defaults = toml::Table::try_from(RawConfig::default()).unwrap();
        for (section, v) in &defaults {
            match v {
                toml::Value::Table(t) => {
                    for k in t.keys() {
                        assert!(table[section].as_table().unwrap().contains_key(k), "example lacks {section}.{k}");
                    }
                }
                _ => assert!(table.contains_key(section), "example lacks {section}"),
            }
        }
    }

    /// `testdata/config/*.bad.toml`: each starts with `# error: <text>`, text that the error
    /// message must contain (normally the key).
    #[test]
    fn bad_configs_are_rejected_naming_the_key() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/config");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if !path.to_string_lossy().ends_with(".bad.toml") {
                continue;
            }
            n += 1;
            let text = std::fs::read_to_string(&path).unwrap();
            let want = text.lines().next().and_then(|l| l.strip_prefix("# error: ")).expect("first line: # error: ...");
            let err = RawConfig::load(Some(&path), Vec::new(), &FlagOverrides::default())
                .and_then(RawConfig::resolve)
                .map(|_| ())
                .expect_err(&format!("{} should be rejected", path.display()))
                .to_string();
            assert!(err.contains(want), "{}: error {err:?} does not contain {want:?}", path.display());
        }
        assert!(n >= 10, "only {n} bad configs found");
    }

    #[test]
    fn errors_name_the_key_and_origin() {
        let e = RawConfig::load(None, env(&[("OUTPOST_WAL__FSNYC", "batch")]), &FlagOverrides::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("environment") && e.contains("wal") && e.contains("fsnyc"), "{e}");
        let e =
            RawConfig::load(None, env(&[("OUTPOST_LIMITS__MAX_INFLIGHT_REQUESTS", "lots")]), &FlagOverrides::default())
                .unwrap_err()
                .to_string();
        assert!(e.contains("limits.max_inflight_requests"), "{e}");
    }
}
