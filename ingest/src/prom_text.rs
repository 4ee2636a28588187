//! The Prometheus text exposition format 0.0.4 and OpenMetrics 1.0 text, for scraping.
//!
//! Written here rather than taken from a crate: `prometheus-parse` (0.2.5) handles only the
//! 0.0.4 format (no OpenMetrics `# EOF`, `# UNIT`, exemplars or second-precision timestamps) and
//! has seen no release since 2023; `openmetrics-parser` is LGPL-3.0. The grammar is small and
//! line-oriented, so a hand-written parser is short and gives Prometheus' error behaviour: any
//! malformed line fails the whole scrape.
//!
//! Invariants: [`parse`] never panics on any input; names, values and label strings are
//! unescaped (`\\`, `\"`, `\n`); timestamps come out in milliseconds for both formats; metadata
//! (TYPE/HELP/UNIT) is reported per family in first-seen order.

use storage::model::{MetricMetadata, MetricType};

/// Which text format a body is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `text/plain; version=0.0.4`.
    Text,
    /// `application/openmetrics-text`.
    OpenMetrics,
}

impl Format {
    /// The format announced by a `Content-Type` header (text when absent or unknown, as Prometheus).
    pub fn from_content_type(ct: Option<&str>) -> Format {
        match ct {
            Some(ct) if ct.trim_start().to_ascii_lowercase().starts_with("application/openmetrics-text") => {
                Format::OpenMetrics
            }
            _ => Format::Text,
        }
    }
}

/// One scraped sample.
#[derive(Clone, Debug, PartialEq)]
pub struct ParsedSample {
    /// Metric name.
    pub name: String,
    /// Labels in exposition order (not including the name).
    pub labels: Vec<(String, String)>,
    /// Value.
    pub value: f64,
    /// Explicit timestamp in ms, if the line had one.
    pub timestamp_ms: Option<i64>,
    /// An OpenMetrics exemplar.
    pub exemplar: Option<ParsedExemplar>,
}

/// An OpenMetrics exemplar.
#[derive(Clone, Debug, PartialEq)]
pub struct ParsedExemplar {
    /// Exemplar labels.
    pub labels: Vec<(String, String)>,
    /// Value.
    pub value: f64,
    /// Timestamp in ms, if given.
    pub timestamp_ms: Option<i64>,
}

/// A parsed exposition.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Exposition {
    /// Samples in order.
    pub samples: Vec<ParsedSample>,
    /// Family metadata.
    pub metadata: Vec<MetricMetadata>,
}

/// A parse failure: line number (1-based) and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    /// Line number.
    pub line: usize,
    /// Message.
    pub message: String,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for ParseError {}

/// Parses a whole exposition body. `max_samples` (0 = none) stops a runaway page early.
pub fn parse(body: &str, format: Format, max_samples: usize) -> Result<Exposition, ParseError> {
    let mut out = Exposition::default();
    let mut meta_index: Vec<(String, usize)> = Vec::new();
    let mut saw_eof = false;
    let total = body.split('\n').count();
    for (i, raw) in body.split('\n').enumerate() {
        let line_no = i + 1;
        let err = |message: String| ParseError { line: line_no, message };
        let line = if format == Format::Text { raw.trim_end_matches('\r') } else { raw };
        if saw_eof {
            if line.is_empty() && i + 1 == total {
                continue;
            }
            return Err(err("data after # EOF".into()));
        }
        let trimmed = if format == Format::Text { line.trim() } else { line };
        if trimmed.is_empty() {
            if format == Format::OpenMetrics && i + 1 != total {
                return Err(err("empty line".into()));
            }
            continue;
        }
        if let Some(rest) = trimmed.strip_prefix('#') {
            if format == Format::OpenMetrics && rest == " EOF" {
                saw_eof = true;
                continue;
            }
            let rest = rest.trim_start_matches([' ', '\t']);
            let (kw, rest) = split_word(rest);
            let kind = match kw {
                "HELP" => 0,
                "TYPE" => 1,
                "UNIT" if format == Format::OpenMetrics => 2,
                _ if format == Format::Text => continue, // A comment.
                _ => return Err(err(format!("unknown comment {trimmed:?}"))),
            };
            let rest = rest.trim_start_matches([' ', '\t']);
            let (name, text) = split_word(rest);
            if name.is_empty() {
                return Err(err("metadata line without a metric name".into()));
            }
            let text = text.strip_prefix([' ', '\t']).unwrap_or(text);
            let idx = match meta_index.iter().find(|(n, _)| n == name) {
                Some((_, idx)) => *idx,
                None => {
                    out.metadata.push(MetricMetadata {
                        metric_family: name.to_string(),
                        metric_type: MetricType::Unknown,
                        help: String::new(),
                        unit: String::new(),
                    });
                    meta_index.push((name.to_string(), out.metadata.len() - 1));
                    out.metadata.len() - 1
                }
            };
            let m = &mut out.metadata[idx];
            match kind {
                0 => m.help = unescape_help(text, format),
                1 => {
                    m.metric_type = match text.trim() {
                        "counter" => MetricType::Counter,
                        "gauge" => MetricType::Gauge,
                        "histogram" => MetricType::Histogram,
                        "gaugehistogram" if format == Format::OpenMetrics => MetricType::GaugeHistogram,
                        "summary" => MetricType::Summary,
                        "info" if format == Format::OpenMetrics => MetricType::Info,
                        "stateset" if format == Format::OpenMetrics => MetricType::StateSet,
                        "untyped" | "unknown" => MetricType::Unknown,
                        other => return Err(err(format!("invalid metric type {other:?}"))),
                    }
                }
                _ => m.unit = text.trim().to_string(),
            }
            continue;
        }
        let sample = parse_sample(trimmed, format).map_err(err)?;
        out.samples.push(sample);
        if max_samples > 0 && out.samples.len() > max_samples {
            return Err(err(format!("more than {max_samples} samples (scrape.sample_limit)")));
        }
    }
    if format == Format::OpenMetrics && !saw_eof {
        return Err(ParseError { line: total, message: "missing # EOF".into() });
    }
    Ok(out)
}

fn split_word(s: &str) -> (&str, &str) {
    match s.find([' ', '\t']) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, ""),
    }
}

fn unescape_help(s: &str, format: Format) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('\\') => out.push('\\'),
            Some('"') if format == Format::OpenMetrics => out.push('"'),
            Some(o) => {
                out.push('\\');
                out.push(o);
            }
            None => out.push('\\'),
        }
    }
    out
}

/// Labels as parsed: the metric name when given inside the braces, and the pairs.
type ParsedLabels = (Option<String>, Vec<(String, String)>);

/// A cursor over one sample line.
struct Cursor<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<char> {
        self.s[self.pos..].chars().next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(' ' | '\t')) {
            self.pos += 1;
        }
    }

    fn ident(&mut self, metric: bool) -> &'a str {
        let start = self.pos;
        while let Some(c) = self.peek() {
            let ok =
                c.is_ascii_alphabetic() || c == '_' || (metric && c == ':') || (self.pos > start && c.is_ascii_digit());
            if !ok {
                break;
            }
            self.pos += 1;
        }
        &self.s[start..self.pos]
    }

    fn quoted(&mut self) -> Result<String, String> {
        if self.bump() != Some('"') {
            return Err("expected a quoted string".into());
        }
        let mut out = String::new();
        loop {
            match self.bump() {
                None => return Err("unterminated quoted string".into()),
                Some('"') => return Ok(out),
                Some('\\') => match self.bump() {
                    Some('n') => out.push('\n'),
                    Some('\\') => out.push('\\'),
                    Some('"') => out.push('"'),
                    Some(c) => {
                        out.push('\\');
                        out.push(c);
                    }
                    None => return Err("unterminated quoted string".into()),
                },
                Some(c) => out.push(c),
            }
        }
    }

    fn word(&mut self) -> &'a str {
        let start = self.pos;
        while let Some(c) = self.peek() {
            if c == ' ' || c == '\t' {
                break;
            }
            self.pos += c.len_utf8();
        }
        &self.s[start..self.pos]
    }

    /// `{a="1",b="2"}` (the opening brace already consumed). A quoted entry without `=` is the
    /// metric name (the UTF-8 syntax), returned separately.
    fn labels(&mut self) -> Result<ParsedLabels, String> {
        let mut name = None;
        let mut labels = Vec::new();
        loop {
            self.skip_ws();
            match self.peek() {
                Some('}') => {
                    self.pos += 1;
                    return Ok((name, labels));
                }
                None => return Err("unterminated label set".into()),
                _ => {}
            }
            let label = if self.peek() == Some('"') {
                let q = self.quoted()?;
                self.skip_ws();
                if matches!(self.peek(), Some(',' | '}')) {
                    if name.is_some() || !labels.is_empty() {
                        return Err("metric name must come first in the label set".into());
                    }
                    name = Some(q);
                    if self.peek() == Some(',') {
                        self.pos += 1;
                    }
                    continue;
                }
                q
            } else {
                let l = self.ident(false);
                if l.is_empty() {
                    return Err(format!("invalid label name at {:?}", &self.s[self.pos..]));
                }
                l.to_string()
            };
            self.skip_ws();
            if self.bump() != Some('=') {
                return Err(format!("expected '=' after label name {label:?}"));
            }
            self.skip_ws();
            let value = self.quoted()?;
            if labels.iter().any(|(n, _): &(String, String)| *n == label) {
                return Err(format!("duplicate label name {label:?}"));
            }
            labels.push((label, value));
            self.skip_ws();
            match self.bump() {
                Some(',') => {}
                Some('}') => return Ok((name, labels)),
                _ => return Err("expected ',' or '}' in label set".into()),
            }
        }
    }
}

fn parse_value(s: &str) -> Result<f64, String> {
    match s {
        "NaN" | "nan" => return Ok(f64::NAN),
        "+Inf" | "Inf" | "+inf" | "inf" => return Ok(f64::INFINITY),
        "-Inf" | "-inf" => return Ok(f64::NEG_INFINITY),
        _ => {}
    }
    if s.is_empty() || s.eq_ignore_ascii_case("infinity") || s.eq_ignore_ascii_case("+infinity") {
        return Err(format!("invalid value {s:?}"));
    }
    s.parse::<f64>().map_err(|_| format!("invalid value {s:?}"))
}

fn parse_timestamp(s: &str, format: Format) -> Result<i64, String> {
    match format {
        Format::Text => s.parse::<i64>().map_err(|_| format!("invalid timestamp {s:?}")),
        Format::OpenMetrics => {
            let f: f64 = s.parse().map_err(|_| format!("invalid timestamp {s:?}"))?;
            if !f.is_finite() || f.abs() > 9.2e15 {
                return Err(format!("invalid timestamp {s:?}"));
            }
            Ok((f * 1000.0).round() as i64)
        }
    }
}

fn parse_sample(line: &str, format: Format) -> Result<ParsedSample, String> {
    let mut c = Cursor { s: line, pos: 0 };
    let mut name = c.ident(true).to_string();
    c.skip_ws();
    let mut labels = Vec::new();
    if c.peek() == Some('{') {
        c.pos += 1;
        let (qname, l) = c.labels()?;
        if let Some(q) = qname {
            if !name.is_empty() {
                return Err("metric name given twice".into());
            }
            name = q;
        }
        labels = l;
    }
    if name.is_empty() {
        return Err(format!("invalid metric name at {line:?}"));
    }
    c.skip_ws();
    let value = parse_value(c.word())?;
    c.skip_ws();
    let mut timestamp_ms = None;
    if c.peek().is_some() && c.peek() != Some('#') {
        timestamp_ms = Some(parse_timestamp(c.word(), format)?);
        c.skip_ws();
    }
    let mut exemplar = None;
    if c.peek() == Some('#') {
        if format == Format::Text {
            return Err("unexpected text after the sample".into());
        }
        c.pos += 1;
        c.skip_ws();
        if c.bump() != Some('{') {
            return Err("invalid exemplar: expected '{'".into());
        }
        let (_, elabels) = c.labels()?;
        c.skip_ws();
        let evalue = parse_value(c.word())?;
        c.skip_ws();
        let mut ets = None;
        if c.peek().is_some() {
            ets = Some(parse_timestamp(c.word(), format)?);
        }
        exemplar = Some(ParsedExemplar { labels: elabels, value: evalue, timestamp_ms: ets });
    }
    c.skip_ws();
    if c.peek().is_some() {
        return Err(format!("unexpected text {:?} after the sample", &line[c.pos..]));
    }
    Ok(ParsedSample { name, labels, value, timestamp_ms, exemplar })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_format() {
        let body = "# HELP http_requests_total The total.\\nSecond line.\n# TYPE http_requests_total counter\n\
                    http_requests_total{method=\"post\",code=\"200\"} 1027 1395066363000\n\
                    http_requests_total{method=\"p\\\"q\\\\\"} 3\n\
                    # a comment\n\n\
                    metric_without_labels 12.47\n\
                    weird{a=\"b\",} +Inf\n\
                    nan_metric NaN\n\
                    rpc_duration_seconds{quantile=\"0.5\"} 4.773e-05\n";
        let e = parse(body, Format::Text, 0).unwrap();
        assert_eq!(e.samples.len(), 6);
        assert_eq!(e.samples[0].labels, vec![("method".into(), "post".into()), ("code".into(), "200".into())]);
        assert_eq!(e.samples[0].timestamp_ms, Some(1_395_066_363_000));
        assert_eq!(e.samples[1].labels[0].1, "p\"q\\");
        assert_eq!(e.samples[3].value, f64::INFINITY);
        assert!(e.samples[4].value.is_nan());
        assert_eq!(e.metadata[0].metric_type, MetricType::Counter);
        assert_eq!(e.metadata[0].help, "The total.\nSecond line.");
    }

    #[test]
    fn openmetrics() {
        let body = "# TYPE foo histogram\n# UNIT foo seconds\n# HELP foo Latency.\n\
                    foo_bucket{le=\"0.5\"} 3 # {trace_id=\"abc\"} 0.27 1700000000.5\n\
                    foo_bucket{le=\"+Inf\"} 5\nfoo_count 5 1700000000.250\nfoo_sum 1.5\n# EOF\n";
        let e = parse(body, Format::OpenMetrics, 0).unwrap();
        assert_eq!(e.samples.len(), 4);
        let ex = e.samples[0].exemplar.as_ref().unwrap();
        assert_eq!(ex.labels, vec![("trace_id".into(), "abc".into())]);
        assert_eq!(ex.timestamp_ms, Some(1_700_000_000_500));
        assert_eq!(e.samples[2].timestamp_ms, Some(1_700_000_000_250));
        assert_eq!(e.metadata[0].unit, "seconds");
        assert_eq!(e.metadata[0].metric_type, MetricType::Histogram);
        assert!(parse("foo 1\n", Format::OpenMetrics, 0).unwrap_err().message.contains("EOF"));
        assert!(parse("# EOF\nfoo 1\n", Format::OpenMetrics, 0).is_err());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bad in [
            "foo{",
            "foo{a=\"b\"",
            "foo{a=b} 1",
            "foo 1 2 3",
            "foo{a=\"1\",a=\"2\"} 1",
            "{} 1",
            "foo abc",
            "foo",
            "foo 1 1.5",
            "\u{1F600} 1",
            "foo{\"a\"=\"b\"",
            "foo # {a=\"b\"} 1",
        ] {
            assert!(parse(bad, Format::Text, 0).is_err(), "{bad:?}");
        }
        assert!(parse("a 1\nb 2\nc 3\n", Format::Text, 2).is_err());
        let e = parse("{\"my.metric\", \"a.b\"=\"x\"} 1\n", Format::Text, 0).unwrap();
        assert_eq!(e.samples[0].name, "my.metric");
        assert_eq!(e.samples[0].labels[0].0, "a.b");
    }

    /// Mutated pages (bytes flipped, cut, duplicated) never panic, in either format.
    #[test]
    fn mutations_never_panic() {
        let page = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\",y=\"\\\"q\"} 1.5e3 1700000000000\n\
                    # TYPE h histogram\nh_bucket{le=\"0.5\"} 3 # {trace_id=\"abc\"} 0.2 1.5\nh_count 3\n# EOF\n";
        let mut seed: u64 = 7;
        let mut rnd = |n: usize| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            ((seed >> 33) as usize) % n.max(1)
        };
        for _ in 0..20_000 {
            let mut b = page.as_bytes().to_vec();
            for _ in 0..1 + rnd(4) {
                if b.is_empty() {
                    break;
                }
                let i = rnd(b.len());
                match rnd(3) {
                    0 => {
                        const ALPHABET: &[u8] = b"{}\"=,# \n\\ae1.+-";
                        b[i] = ALPHABET[rnd(ALPHABET.len())];
                    }
                    1 => {
                        b.truncate(i);
                    }
                    _ => {
                        let j = rnd(b.len());
                        let chunk: Vec<u8> = b[i.min(j)..i.max(j)].to_vec();
                        b.splice(i..i, chunk);
                    }
                }
            }
            let text = String::from_utf8_lossy(&b);
            let _ = parse(&text, Format::Text, 0);
            let _ = parse(&text, Format::OpenMetrics, 0);
        }
    }
}
