//! Golden tests for `ingest::otlp`.
//!
//! Each `testdata/otlp/<signal>_<case>.json` holds an OTLP/JSON request body as an OTLP/HTTP client
//! sends it (or a JSON array of such bodies, mapped in order against one shared `MetricsState`).
//! The mapped result — counts, reasons, message and the batch's `{:#?}` — is compared with the
//! sibling `<signal>_<case>.expected`. An optional sibling `<signal>_<case>.limits` overrides
//! `Limits` fields, one `field = value` per line (small limits keep the fixtures small).
//! `UPDATE_EXPECT=1 cargo test -p ingest` rewrites the
//! expectations; review the diff.

use std::fmt::{Debug, Write as _};
use std::path::Path;

use ingest::otlp::{self, Limits, LogsOptions, Mapped, MetricsState};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use storage::model::{MetricsBatch, is_stale_nan};

/// 2023-11-14T22:13:20Z; the test data sits in the ten minutes before it.
const NOW_NS: i64 = 1_700_000_000_000_000_000;

#[test]
fn golden() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/otlp");
    let update = std::env::var_os("UPDATE_EXPECT").is_some_and(|v| v == "1");
    let mut cases: Vec<_> = std::fs::read_dir(&dir)
        .expect("testdata/otlp exists")
        .map(|e| e.expect("readable dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    cases.sort();
    assert!(!cases.is_empty(), "no golden cases in {}", dir.display());

    let mut failures = Vec::new();
    for json_path in &cases {
        let name = json_path.file_stem().and_then(|s| s.to_str()).expect("utf-8 file name");
        let input = std::fs::read(json_path).expect("readable case");
        let limits = read_limits(&json_path.with_extension("limits"));
        let actual = check(name, &input, &limits);
        let expected_path = json_path.with_extension("expected");
        if update {
            std::fs::write(&expected_path, &actual).expect("writable expectation");
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if expected != actual {
            failures.push(first_difference(name, &expected, &actual));
        }
    }
    assert!(
        failures.is_empty(),
        "{} golden case(s) differ (UPDATE_EXPECT=1 rewrites them):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Maps one case file and renders the outcome.
fn check(name: &str, input: &[u8], limits: &Limits) -> String {
    let bodies = match serde_json::from_slice(input) {
        Ok(serde_json::Value::Array(items)) => items,
        Ok(single) => vec![single],
        Err(e) => panic!("{name}: not JSON: {e}"),
    };
    let state = MetricsState::new();
    let mut out = String::new();
    for (i, body) in bodies.into_iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let _ = writeln!(out, "# request {}", i + 1);
        let rendered = if name.starts_with("traces_") {
            let req: ExportTraceServiceRequest = serde_json::from_value(body).unwrap_or_else(|e| bad(name, e));
            render(otlp::traces(req, limits, NOW_NS))
        } else if name.starts_with("logs_") {
            let req: ExportLogsServiceRequest = serde_json::from_value(body).unwrap_or_else(|e| bad(name, e));
            render(otlp::logs(req, &LogsOptions::default(), limits, NOW_NS))
        } else if name.starts_with("metrics_") {
            let req: ExportMetricsServiceRequest = serde_json::from_value(body).unwrap_or_else(|e| bad(name, e));
            let mapped = otlp::metrics(req, &state, limits, NOW_NS);
            let stale = stale_markers(&mapped.batch);
            let mut s = render(mapped);
            // Debug prints the staleness marker as plain NaN; name them.
            let _ = writeln!(s, "stale markers: {stale}");
            s
        } else {
            panic!("{name}: the file name must start with traces_, logs_ or metrics_");
        };
        out.push_str(&rendered);
    }
    out
}

fn read_limits(path: &Path) -> Limits {
    let mut limits = Limits::default();
    let Ok(text) = std::fs::read_to_string(path) else {
        return limits;
    };
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (field, value) = line.split_once('=').unwrap_or_else(|| panic!("{line:?}: want field = value"));
        let value: i64 = value.trim().parse().unwrap_or_else(|e| panic!("{line:?}: {e}"));
        let as_usize = || usize::try_from(value).expect("a non-negative size");
        match field.trim() {
            "max_attribute_value_bytes" => limits.max_attribute_value_bytes = as_usize(),
            "max_log_body_bytes" => limits.max_log_body_bytes = as_usize(),
            "max_attributes" => limits.max_attributes = as_usize(),
            "max_label_name_bytes" => limits.max_label_name_bytes = as_usize(),
            "max_label_value_bytes" => limits.max_label_value_bytes = as_usize(),
            "max_labels_per_series" => limits.max_labels_per_series = as_usize(),
            "max_future_ns" => limits.max_future_ns = value,
            "max_age_ns" => limits.max_age_ns = value,
            other => panic!("{}: unknown limit {other:?}", path.display()),
        }
    }
    limits
}

fn bad<T>(name: &str, e: serde_json::Error) -> T {
    panic!("{name}: not an OTLP/JSON request: {e}")
}

fn render<B: Debug>(m: Mapped<B>) -> String {
    let reasons: Vec<String> = m.reasons.iter().map(|(r, n)| format!("{}={n}", r.as_str())).collect();
    format!(
        "accepted: {}, rejected: {}, reasons: [{}]\nmessage: {}\n{:#?}\n",
        m.accepted,
        m.rejected,
        reasons.join(", "),
        m.message,
        m.batch
    )
}

fn stale_markers(b: &MetricsBatch) -> usize {
    b.series
        .iter()
        .map(|s| {
            s.samples.iter().filter(|x| is_stale_nan(x.value)).count()
                + s.histograms.iter().filter(|h| is_stale_nan(h.histogram.count)).count()
        })
        .sum()
}

fn first_difference(name: &str, expected: &str, actual: &str) -> String {
    let mut exp = expected.lines();
    let mut act = actual.lines();
    for line in 1.. {
        match (exp.next(), act.next()) {
            (None, None) => break,
            (e, a) if e == a => continue,
            (e, a) => {
                return format!(
                    "{name}: line {line}\n  expected: {}\n  actual:   {}",
                    e.unwrap_or("<end>"),
                    a.unwrap_or("<end>")
                );
            }
        }
    }
    format!("{name}: differs")
}
