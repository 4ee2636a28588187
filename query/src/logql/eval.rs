//! Evaluation: log queries (pipeline, limit, direction, interval) and metric queries (range
//! aggregations over left-open windows `(t - range - offset, t - offset]`, vector aggregations,
//! binary operators with Prometheus-style vector matching, `label_replace`).
//!
//! A metric query loads each range aggregation's samples once (over the span every step
//! needs) and then evaluates the expression tree step by step.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use storage::model::Labels;
use storage::model::LogRecord;
use storage::{Direction, LineScan, LogLine, LogScan, LogsReader, MatchOp};

use super::ast::*;
use super::pipeline::{self, Builder, Cat, ERROR};
use super::units::{parse_bytes, parse_duration, parse_float};
use super::{Data, Engine, Entry, Error, MatrixSeries, Request, Response, Stats, Stream, VecSample};

/// Loki's default `max_look_back_period`: how far back an instant log query looks.
const INSTANT_LOOKBACK_NS: i64 = 30_000_000_000;

struct Ctx<'a> {
    engine: &'a Engine,
    reader: &'a dyn LogsReader,
    stats: Stats,
    deadline: Instant,
}

pub(crate) fn execute(engine: &Engine, reader: &dyn LogsReader, req: &Request) -> Result<Response, Error> {
    let started = Instant::now();
    let expr = super::parse(&req.query)?;
    let mut ctx = Ctx { engine, reader, stats: Stats::default(), deadline: started + engine.opts.timeout };
    let data = match &expr {
        Expr::Log(l) => {
            if req.limit > engine.opts.max_entries_limit {
                return Err(Error::Limit(format!(
                    "max entries limit per query exceeded, limit > max_entries_limit ({} > {})",
                    req.limit, engine.opts.max_entries_limit
                )));
            }
            if req.instant {
                // Loki 2.9 answers an instant log query with the entries of the look-back period
                // before the time (its `max_look_back_period`, 30 s): [time - 30s, time).
                let r = Request { start_ns: req.end_ns.saturating_sub(INSTANT_LOOKBACK_NS), ..req.clone() };
                Data::Streams(ctx.log_query(l, &r)?)
            } else {
                Data::Streams(ctx.log_query(l, req)?)
            }
        }
        Expr::Metric(m) => ctx.metric_query(m, req)?,
    };
    ctx.stats.exec_time = started.elapsed();
    Ok(Response { data, stats: ctx.stats, warnings: Vec::new() })
}

/// Structured metadata of a record as Loki's OTLP ingestion makes it: the attributes (names
/// normalised as label names, `http.method` → `http_method`), then the trace context and severity
/// fields the record carries.
fn meta_of(r: &LogRecord) -> Vec<(String, String)> {
    let name = |k: &str| -> String {
        k.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect()
    };
    let mut out: Vec<(String, String)> =
        r.attributes.iter().map(|kv| (name(&kv.key), kv.value.to_label_string())).collect();
    let mut add = |k: &str, v: String| {
        if !out.iter().any(|(n, _)| n == k) {
            out.push((k.to_string(), v));
        }
    };
    if let Some(t) = r.trace_id {
        add("trace_id", t.to_hex());
    }
    if let Some(s) = r.span_id {
        add("span_id", s.to_hex());
    }
    if !r.severity_text.is_empty() {
        add("severity_text", r.severity_text.clone());
    }
    if r.severity_number != 0 {
        add("severity_number", r.severity_number.to_string());
    }
    out
}

/// The value a label builder made from `meta` holds for `name` (the last pair of that name).
fn meta_lookup(meta: &[(String, String)], name: &str) -> Option<String> {
    meta.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.clone())
}

/// True when [`meta_of`] gives nothing for `r`.
fn meta_free(r: &storage::model::LogRecord) -> bool {
    r.attributes.is_empty()
        && r.trace_id.is_none()
        && r.span_id.is_none()
        && r.severity_text.is_empty()
        && r.severity_number == 0
}

/// True when [`meta_of`] gives nothing for `line`, using the store's key summary when it has one
/// (so the metadata need not be read).
fn line_meta_free(line: &dyn LogLine) -> bool {
    match line.meta_keys() {
        Some([]) => true,
        _ => meta_free(line.meta()),
    }
}

/// True when one of `names` may be a label [`meta_of`] gives for `line` (see [`meta_has_any`]).
fn line_meta_has_any(line: &dyn LogLine, names: &[String]) -> bool {
    match line.meta_keys() {
        Some(keys) => names.iter().any(|n| {
            keys.iter()
                .any(|k| k.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).eq(n.chars()))
        }),
        None => meta_has_any(line.meta(), names),
    }
}

/// The line filters at the start of `stages` (before anything that rewrites the line): the store
/// may run them on its own threads (they are run again in the pipeline).
fn leading_filters(stages: &[Stage]) -> &[Stage] {
    let n = stages.iter().take_while(|s| matches!(s, Stage::LineFilter(_))).count();
    &stages[..n]
}

/// Literals every line a `|~` regex matches must contain: a single-literal prefix or suffix
/// of the pattern (`timeout after [0-9]+ms` → `timeout after `, `ms`), for index narrowing.
fn regex_literals(re: &regex::Regex) -> Vec<String> {
    use regex_syntax::hir::literal::{ExtractKind, Extractor};
    let Ok(hir) = regex_syntax::ParserBuilder::new().build().parse(re.as_str()) else { return Vec::new() };
    let mut out = Vec::new();
    for prefix in [true, false] {
        let kind = if prefix { ExtractKind::Prefix } else { ExtractKind::Suffix };
        let seq = Extractor::new().kind(kind).extract(&hir);
        // A finite set: every match starts (ends) with one of them, so with their common prefix
        // (suffix). An infinite one says nothing.
        if seq.literals().is_none_or(|l| l.is_empty()) {
            continue;
        }
        let common = if prefix { seq.longest_common_prefix() } else { seq.longest_common_suffix() };
        let text = match common.map(std::str::from_utf8) {
            Some(Ok(t)) => t,
            // Cut inside a character: keep the whole characters of a prefix.
            Some(Err(e)) if prefix => {
                common.and_then(|c| std::str::from_utf8(&c[..e.valid_up_to()]).ok()).unwrap_or("")
            }
            _ => "",
        };
        if !text.is_empty() && !out.iter().any(|o: &String| o == text) {
            out.push(text.to_string());
        }
    }
    out
}

/// True when one of `names` may be a label [`meta_of`] gives for `r`.
fn meta_has_any(r: &storage::model::LogRecord, names: &[String]) -> bool {
    names.iter().any(|n| match n.as_str() {
        "trace_id" if r.trace_id.is_some() => true,
        "span_id" if r.span_id.is_some() => true,
        "severity_text" if !r.severity_text.is_empty() => true,
        "severity_number" if r.severity_number != 0 => true,
        // Attribute names are normalised (`http.method` → `http_method`): compare them so.
        _ => r.attributes.iter().any(|kv| {
            kv.key.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).eq(n.chars())
        }),
    })
}

/// Literal `|=` substrings the store may pre-filter on: those before any stage that rewrites the
/// line.
fn line_hints(l: &LogExpr) -> Vec<String> {
    let mut out = Vec::new();
    for st in &l.stages {
        match st {
            Stage::LineFilter(LineFilter { op: LineFilterOp::Contains, value: LineFilterValue::Text(t) })
                if !t.is_empty() =>
            {
                out.push(t.clone());
            }
            Stage::LineFilter(LineFilter { op: LineFilterOp::Match, value: LineFilterValue::Regex(_, re) }) => {
                out.extend(regex_literals(re));
            }
            Stage::LineFormat(_) | Stage::Unpack | Stage::Decolorize => break,
            _ => {}
        }
    }
    out
}

/// The error of a query that would read more than `max` lines.
fn lines_limit(max: u64) -> Error {
    Error::Limit(format!(
        "the query would read more than {max} log lines (max_lines_scanned); narrow the selector or the time range"
    ))
}

/// True when `l`'s pipeline has a label filter: such pipelines usually drop most lines, so a scan
/// runs [`pipeline::may_pass`] on the store's reading threads (both cores) rather than leaving
/// every line to the one thread that evaluates the query.
fn prefilters(l: &LogExpr) -> bool {
    l.stages.iter().any(|s| matches!(s, Stage::LabelFilter(_)))
}

impl Ctx<'_> {
    /// Scans `l`'s streams over `start..=end` in `dir` order, handing each record to `f` until it
    /// returns false; enforces the deadline and the lines-scanned limit. When `l` has a label
    /// filter (see [`prefilters`]), `f` sees only the lines [`pipeline::may_pass`] keeps: the store
    /// runs that check on its reading threads.
    #[allow(clippy::too_many_arguments)]
    fn scan(
        &mut self,
        l: &LogExpr,
        start: i64,
        end: i64,
        dir: Direction,
        ordered: bool,
        bodies: bool,
        meta: bool,
        f: &mut dyn FnMut(&dyn LogLine) -> bool,
    ) -> Result<(), Error> {
        if end < start {
            return Ok(());
        }
        let scan = LogScan {
            matchers: l.matchers.clone(),
            start_ns: start,
            end_ns: end,
            direction: dir,
            line_contains: line_hints(l),
            trace_id: None,
        };
        let mut err = None;
        let max_lines = self.engine.opts.max_lines_scanned;
        let deadline = self.deadline;
        let stats = &mut self.stats;
        let filters = leading_filters(&l.stages);
        let body_filter = |b: &str| passes_filters(filters, b);
        // Lines the store read and its filters dropped count as scanned too (as in Loki's
        // statistics, every line read).
        let dropped = storage::Dropped::default();
        let line_filter = |line: &dyn LogLine| {
            let meta = std::cell::OnceCell::new();
            let meta_get = |n: &str| meta_lookup(meta.get_or_init(|| meta_of(line.meta())), n);
            pipeline::may_pass(&l.stages, line.body(), line.stream(), &meta_get)
        };
        // The deadline and the lines limit, also for lines the visitor never sees.
        let over_limit = || dropped.get().0 > max_lines;
        let stop = || over_limit() || Instant::now() > deadline;
        let ls = LineScan {
            scan: &scan,
            ordered,
            bodies,
            meta,
            body_filter: if filters.is_empty() { None } else { Some(&body_filter) },
            line_filter: if prefilters(l) { Some(&line_filter) } else { None },
            dropped: Some(&dropped),
            stop: Some(&stop),
        };
        self.reader.scan_lines(&ls, &mut |log| {
            stats.lines_scanned += 1;
            stats.bytes_scanned += log.body().len() as u64;
            if stats.lines_scanned + dropped.get().0 > max_lines {
                err = Some(lines_limit(max_lines));
                return false;
            }
            if stats.lines_scanned.is_multiple_of(4096) && Instant::now() > deadline {
                err = Some(Error::Timeout);
                return false;
            }
            f(log)
        });
        let (lines, bytes) = dropped.get();
        stats.lines_scanned += lines;
        stats.bytes_scanned += bytes;
        // A scan the store stopped (see `stop`) may have returned before the visitor could tell.
        if err.is_none() && stats.lines_scanned > max_lines {
            err = Some(lines_limit(max_lines));
        } else if err.is_none() && Instant::now() > deadline {
            err = Some(Error::Timeout);
        }
        match err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn log_query(&mut self, l: &LogExpr, req: &Request) -> Result<Vec<Stream>, Error> {
        let limit = req.limit as usize;
        let mut streams: BTreeMap<Labels, Vec<Entry>> = BTreeMap::new();
        if limit == 0 {
            return Ok(Vec::new());
        }
        let interval = req.interval_ns;
        let mut last_ts: Option<i64> = None;
        let mut count = 0usize;
        // Log query ranges are [start, end).
        let filter_only = l.is_filter_only();
        // The scan ran `may_pass` already (on the store's threads).
        let prefiltered = prefilters(l);
        // Every entry returned carries its structured metadata.
        self.scan(l, req.start_ns, req.end_ns - 1, req.direction, true, true, true, &mut |log| {
            let ts = log.timestamp_ns();
            // Fast path: only line filters and no metadata (see `meta_of`), so the labels are the
            // stream's.
            let fast = filter_only && line_meta_free(log);
            let (labels, entry) = if fast {
                if !passes_filters(&l.stages, log.body()) {
                    return true;
                }
                let entry = Entry {
                    ts_ns: ts,
                    line: log.body().to_string(),
                    structured_metadata: Vec::new(),
                    parsed: Vec::new(),
                };
                ((**log.stream()).clone(), entry)
            } else {
                let meta = std::cell::OnceCell::new();
                let meta_get = |n: &str| meta_lookup(meta.get_or_init(|| meta_of(log.meta())), n);
                if !prefiltered && !pipeline::may_pass(&l.stages, log.body(), log.stream(), &meta_get) {
                    return true;
                }
                let mut b = Builder::new(log.stream(), meta.get_or_init(|| meta_of(log.meta())));
                let Some(line) = pipeline::run(&l.stages, ts, log.body(), &mut b) else {
                    return true;
                };
                let entry = Entry { ts_ns: ts, line, structured_metadata: b.of(Cat::Meta), parsed: b.of(Cat::Parsed) };
                (b.result(), entry)
            };
            if interval > 0
                && let Some(prev) = last_ts
            {
                let ok = match req.direction {
                    Direction::Forward => ts >= prev.saturating_add(interval),
                    Direction::Backward => ts <= prev.saturating_sub(interval),
                };
                if !ok {
                    return true;
                }
            }
            last_ts = Some(ts);
            streams.entry(labels).or_default().push(entry);
            count += 1;
            if count >= limit {
                return false;
            }
            true
        })?;
        Ok(streams.into_iter().map(|(labels, entries)| Stream { labels, entries }).collect())
    }

    // ---- metric queries ----

    fn metric_query(&mut self, m: &MetricExpr, req: &Request) -> Result<Data, Error> {
        let (start, end, step) = if req.instant || req.step_ns <= 0 {
            (req.end_ns, req.end_ns, 1)
        } else {
            (req.start_ns, req.end_ns, req.step_ns)
        };
        if !req.instant && req.step_ns > 0 && (end - start) / step > 11_000 {
            return Err(Error::Limit(
                "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)"
                    .into(),
            ));
        }
        let mut loaded = HashMap::new();
        self.load(m, (start, end, step), &mut loaded, None)?;
        let ev = Evaluator { loaded: &loaded, max_series: self.engine.opts.max_series };
        let only_literals = is_scalar(m);
        if req.instant || req.step_ns <= 0 {
            let v = ev.eval(m, start)?;
            let t = ms_floor(start);
            return Ok(match v {
                Value::Scalar(v) if only_literals => Data::Scalar { t_ns: t, v },
                Value::Scalar(v) => Data::Vector(vec![VecSample { labels: Labels::new(), t_ns: t, v }]),
                Value::Vector(vec) => {
                    self.check_series(vec.len())?;
                    Data::Vector(vec.into_iter().map(|s| VecSample { labels: s.labels, t_ns: t, v: s.v }).collect())
                }
            });
        }
        let mut series: BTreeMap<Labels, Vec<(i64, f64)>> = BTreeMap::new();
        let mut samples = 0usize;
        let mut t = start;
        while t <= end {
            if Instant::now() > self.deadline {
                return Err(Error::Timeout);
            }
            let tm = ms_floor(t);
            match ev.eval(m, t)? {
                Value::Scalar(v) => series.entry(Labels::new()).or_default().push((tm, v)),
                Value::Vector(vec) => {
                    for s in vec {
                        series.entry(s.labels).or_default().push((tm, s.v));
                    }
                }
            }
            samples += series.len();
            if samples > self.engine.opts.max_samples {
                return Err(Error::Limit(format!(
                    "query processing would load too many samples into memory in query execution (max_samples {})",
                    self.engine.opts.max_samples
                )));
            }
            self.check_series(series.len())?;
            t += step;
        }
        Ok(Data::Matrix(series.into_iter().map(|(labels, samples)| MatrixSeries { labels, samples }).collect()))
    }

    fn check_series(&self, n: usize) -> Result<(), Error> {
        if n > self.engine.opts.max_series {
            return Err(Error::Limit(format!(
                "maximum of series ({}) reached for a single query",
                self.engine.opts.max_series
            )));
        }
        Ok(())
    }

    /// Loads the samples of every range aggregation in `m` for the steps `start, start + step, …`
    /// up to `end` (`steps`). `inject` is the grouping of an enclosing `sum` that Loki pushes down
    /// into the range aggregation's sample extraction (see [`injectable`]).
    fn load(
        &mut self,
        m: &MetricExpr,
        steps: (i64, i64, i64),
        out: &mut HashMap<*const MetricExpr, RangeData>,
        inject: Option<&Grouping>,
    ) -> Result<(), Error> {
        let (start, end, step) = steps;
        match m {
            MetricExpr::Range { op, log, unwrap, range_ns, offset_ns, grouping, .. } => {
                let grouping = grouping.as_ref().or(inject);
                let from = start - offset_ns - range_ns + 1;
                let to = end - offset_ns;
                // Counting aggregations keep per-cell sums instead of samples (see `Grid`).
                let grid = (Grid::sums_suffice(*op) && unwrap.is_none())
                    .then(|| Grid::new(start, end, step, *offset_ns, *range_ns));
                let grid = grid.as_ref();
                // Series in first-seen order, found by label set; and the fast path's series per
                // stream (keyed by the stream's `Arc`, held so the address cannot be reused).
                let mut series: Vec<(Labels, Points)> = Vec::new();
                let mut slot_of: HashMap<Labels, usize> = HashMap::new();
                let mut by_stream: HashMap<usize, (Arc<Labels>, usize)> = HashMap::new();
                let mut fail: Option<Error> = None;
                let mut total = 0usize;
                let max_samples = self.engine.opts.max_samples;
                let filter_only = log.is_filter_only() && unwrap.is_none();
                // Light path: with a `by` grouping and no unwrap, an entry the pipeline keeps as it
                // is needs only the grouping labels (see `pipeline::light_run`).
                let light_names: Option<Vec<&str>> = match grouping {
                    Some(g) if !g.without && unwrap.is_none() => Some(g.labels.iter().map(String::as_str).collect()),
                    _ => None,
                };
                // Without `unwrap` the samples' order within a series does not matter (they are
                // sorted below), so the store may hand lines over in any order.
                let ordered = unwrap.is_some();
                let bodies = !log.stages.is_empty() || matches!(op, RangeOp::Bytes | RangeOp::BytesRate);
                self.scan(log, from, to, Direction::Forward, ordered, bodies, false, &mut |rec| {
                    let ts = rec.timestamp_ns();
                    // Fast path: the series is the stream (or its grouping), when no metadata
                    // label can end up in it (the grouping test first: it needs only the chunk's
                    // key summary, not the metadata).
                    let fast = filter_only
                        && (grouping.is_some_and(|g| !g.without && !line_meta_has_any(rec, &g.labels))
                            || line_meta_free(rec));
                    if fast {
                        if !passes_filters(&log.stages, rec.body()) {
                            return true;
                        }
                        let value = match op {
                            RangeOp::Bytes | RangeOp::BytesRate => rec.body().len() as f64,
                            _ => 1.0,
                        };
                        total += 1;
                        if total > max_samples {
                            fail = Some(Error::Limit(format!(
                                "query processing would load too many samples into memory in query execution (max_samples {max_samples})"
                            )));
                            return false;
                        }
                        let key = Arc::as_ptr(rec.stream()) as usize;
                        let slot = match by_stream.get(&key) {
                            Some((_, slot)) => *slot,
                            None => {
                                let labels = match grouping {
                                    Some(g) => group_labels(rec.stream(), g),
                                    None => (**rec.stream()).clone(),
                                };
                                let slot = *slot_of.entry(labels.clone()).or_insert_with(|| {
                                    series.push((labels, Points::default()));
                                    series.len() - 1
                                });
                                by_stream.insert(key, (Arc::clone(rec.stream()), slot));
                                slot
                            }
                        };
                        series[slot].1.push(ts, value, grid);
                        return true;
                    }
                    let meta = std::cell::OnceCell::new();
                    let meta_get = |n: &str| meta_lookup(meta.get_or_init(|| meta_of(rec.meta())), n);
                    let wanted = light_names.as_deref().unwrap_or(&[]);
                    let light = pipeline::light_run(&log.stages, rec.body(), rec.stream(), &meta_get, wanted);
                    let (labels, value) = match light {
                        pipeline::Light::Drop => return true,
                        // A `by` grouping of an entry kept as it is: the series is the grouping.
                        pipeline::Light::Keep(vals) if light_names.is_some() => {
                            let labels = Labels::from_pairs_keep_empty(
                                wanted.iter().zip(vals).filter_map(|(n, v)| v.map(|v| (*n, v))),
                            );
                            let value = match op {
                                RangeOp::Bytes | RangeOp::BytesRate => rec.body().len() as f64,
                                _ => 1.0,
                            };
                            (labels, value)
                        }
                        _ => {
                            let mut b = Builder::new(rec.stream(), meta.get_or_init(|| meta_of(rec.meta())));
                            let Some(line) = pipeline::run(&log.stages, ts, rec.body(), &mut b) else {
                                return true;
                            };
                            let value = match unwrap {
                                None => match op {
                                    RangeOp::Bytes | RangeOp::BytesRate => line.len() as f64,
                                    _ => 1.0,
                                },
                                Some(u) => {
                                    let Some(raw) = b.get(&u.label).map(str::to_string) else {
                                        return true;
                                    };
                                    let conv = match u.conv {
                                        UnwrapConv::None => parse_float(&raw),
                                        UnwrapConv::Duration => parse_duration(&raw, false).map(|ns| ns / 1e9),
                                        UnwrapConv::Bytes => parse_bytes(&raw),
                                    };
                                    let v = match conv {
                                        Ok(v) => v,
                                        Err(e) => {
                                            if b.err.is_none() {
                                                b.err = Some("SampleExtractionErr".into());
                                                b.err_details = Some(e);
                                            }
                                            0.0
                                        }
                                    };
                                    for f in &u.post_filters {
                                        if !pipeline::label_filter(f, &mut b) {
                                            return true;
                                        }
                                    }
                                    b.labels.remove(&u.label);
                                    v
                                }
                            };
                            let mut labels = b.result();
                            // As Loki's GroupedLabels: with an error the grouping is not applied, so the
                            // error cannot get lost (and becomes a pipeline error below).
                            if let Some(g) = grouping
                                && b.err.is_none()
                            {
                                labels = group_labels(&labels, g);
                            }
                            if labels.get(ERROR).is_some() {
                                fail = Some(pipeline_error(&labels));
                                return false;
                            }
                            (labels, value)
                        }
                    };
                    total += 1;
                    if total > max_samples {
                        fail = Some(Error::Limit(format!(
                            "query processing would load too many samples into memory in query execution (max_samples {max_samples})"
                        )));
                        return false;
                    }
                    let slot = match slot_of.get(&labels) {
                        Some(&slot) => slot,
                        None => {
                            slot_of.insert(labels.clone(), series.len());
                            series.push((labels, Points::default()));
                            series.len() - 1
                        }
                    };
                    series[slot].1.push(ts, value, grid);
                    true
                })?;
                if let Some(e) = fail {
                    return Err(e);
                }
                if !ordered {
                    for (_, points) in &mut series {
                        if let Points::Samples(samples) = points {
                            samples.sort_by_key(|(t, _)| *t);
                        }
                    }
                }
                drop(by_stream);
                let absent = if *op == RangeOp::Absent { absent_labels(&log.matchers) } else { Labels::new() };
                out.insert(m as *const MetricExpr, RangeData { series, absent, grid: grid.cloned() });
                Ok(())
            }
            MetricExpr::Vector { op, inner, grouping, .. } => {
                let by_nothing = Grouping::default();
                let inject = injectable(*op, inner).then(|| grouping.as_ref().unwrap_or(&by_nothing));
                self.load(inner, steps, out, inject)
            }
            MetricExpr::LabelReplace { inner, .. } => self.load(inner, steps, out, None),
            MetricExpr::Binary { lhs, rhs, .. } => {
                self.load(lhs, steps, out, None)?;
                self.load(rhs, steps, out, None)
            }
            MetricExpr::Literal(_) | MetricExpr::VectorLit(_) => Ok(()),
        }
    }
}

/// True when `line` passes every line filter among `stages` (the other stages are ignored).
fn passes_filters(stages: &[Stage], line: &str) -> bool {
    stages.iter().all(|s| match s {
        Stage::LineFilter(f) => pipeline::line_filter(f, line),
        _ => true,
    })
}

/// Loki pushes a `sum`'s grouping down into a directly nested, ungrouped `count_over_time`,
/// `rate`, `bytes_over_time`, `bytes_rate` or `sum_over_time` (summing first by the same labels
/// changes no value and keeps fewer series in memory).
fn injectable(op: VecOp, inner: &MetricExpr) -> bool {
    op == VecOp::Sum
        && matches!(
            inner,
            MetricExpr::Range {
                op: RangeOp::Count | RangeOp::Rate | RangeOp::Bytes | RangeOp::BytesRate | RangeOp::Sum,
                grouping: None,
                ..
            }
        )
}

fn ms_floor(t: i64) -> i64 {
    t.div_euclid(1_000_000) * 1_000_000
}

fn is_scalar(m: &MetricExpr) -> bool {
    match m {
        MetricExpr::Literal(_) => true,
        MetricExpr::Binary { lhs, rhs, .. } => is_scalar(lhs) && is_scalar(rhs),
        _ => false,
    }
}

fn pipeline_error(labels: &Labels) -> Error {
    let e = labels.get(ERROR).unwrap_or("");
    Error::Execution(format!(
        "pipeline error: '{e}' for series: '{labels}'.\nUse a label filter to intentionally skip this error. (e.g | __error__!=\"{e}\").\nTo skip all potential errors you can match empty errors.(e.g __error__=\"\")\nThe label filter can also be specified after unwrap. (e.g | unwrap latency | __error__=\"\" )\n"
    ))
}

/// Labels `absent_over_time` reports: the selector's equality matchers, without any name that
/// another matcher also constrains (as Loki's `absentLabels`).
fn absent_labels(ms: &[storage::Matcher]) -> Labels {
    let mut pairs: Vec<(String, String)> = Vec::new();
    let mut dropped: Vec<&str> = Vec::new();
    for m in ms {
        if m.op == MatchOp::Equal && !pairs.iter().any(|(k, _)| *k == m.name) {
            pairs.push((m.name.clone(), m.value.clone()));
        } else {
            dropped.push(&m.name);
        }
    }
    pairs.retain(|(k, _)| !dropped.contains(&k.as_str()));
    Labels::from_pairs(pairs)
}

fn group_labels(l: &Labels, g: &Grouping) -> Labels {
    if g.without {
        Labels::from_pairs_keep_empty(
            l.iter().filter(|x| !g.labels.contains(&x.name)).map(|x| (x.name.clone(), x.value.clone())),
        )
    } else {
        Labels::from_pairs_keep_empty(
            l.iter().filter(|x| g.labels.contains(&x.name)).map(|x| (x.name.clone(), x.value.clone())),
        )
    }
}

struct RangeData {
    series: Vec<(Labels, Points)>,
    absent: Labels,
    /// The cells of series kept as [`Points::Cells`].
    grid: Option<Grid>,
}

/// The edges of every window a range aggregation is evaluated over (`(t - offset - range, t -
/// offset]` for each step `t`), sorted: cell `j` is `(edges[j - 1], edges[j]]`, so each window is
/// a run of whole cells. An aggregation that only counts and adds integers (`count_over_time`,
/// `rate`, `bytes_over_time`, `bytes_rate` without `unwrap`) can keep a count and a sum per cell
/// instead of every sample: the same answers (integer sums in `f64` are exact in any order), in
/// memory that follows the steps, not the lines (5 M lines were 80 MB of samples).
#[derive(Clone, Debug)]
struct Grid {
    edges: Vec<i64>,
}

impl Grid {
    fn sums_suffice(op: RangeOp) -> bool {
        matches!(op, RangeOp::Count | RangeOp::Rate | RangeOp::Bytes | RangeOp::BytesRate)
    }

    fn new(start: i64, end: i64, step: i64, offset_ns: i64, range_ns: i64) -> Grid {
        let mut edges = Vec::new();
        let mut t = start;
        while t <= end {
            edges.push(t - offset_ns);
            edges.push(t - offset_ns - range_ns);
            if step <= 0 {
                break;
            }
            t += step;
        }
        edges.sort_unstable();
        edges.dedup();
        Grid { edges }
    }

    /// The cell holding `ts`; `None` outside every window.
    fn cell(&self, ts: i64) -> Option<usize> {
        let j = self.edges.partition_point(|&e| e < ts);
        (j > 0 && j < self.edges.len()).then_some(j)
    }

    /// The cells making up the window `(lo, hi]` (both edges of the grid).
    fn window(&self, lo: i64, hi: i64) -> std::ops::Range<usize> {
        let a = self.edges.partition_point(|&e| e <= lo);
        let b = self.edges.partition_point(|&e| e <= hi);
        a..b
    }
}

/// A series' points: its samples, or per-cell (count, sum) once they outnumber the grid's cells.
enum Points {
    Samples(Vec<(i64, f64)>),
    Cells(Vec<(u64, f64)>),
}

impl Default for Points {
    fn default() -> Self {
        Points::Samples(Vec::new())
    }
}

impl Points {
    fn push(&mut self, ts: i64, value: f64, grid: Option<&Grid>) {
        match (&mut *self, grid) {
            (Points::Samples(v), Some(g)) if v.len() >= 2 * g.edges.len() + 64 => {
                let mut cells = vec![(0u64, 0f64); g.edges.len()];
                for (t, x) in v.drain(..).chain(std::iter::once((ts, value))) {
                    if let Some(j) = g.cell(t) {
                        cells[j].0 += 1;
                        cells[j].1 += x;
                    }
                }
                *self = Points::Cells(cells);
            }
            (Points::Samples(v), _) => v.push((ts, value)),
            (Points::Cells(c), Some(g)) => {
                if let Some(j) = g.cell(ts) {
                    c[j].0 += 1;
                    c[j].1 += value;
                }
            }
            (Points::Cells(_), None) => unreachable!("cells are made only with a grid"),
        }
    }
}

#[derive(Clone, Debug)]
struct Sample {
    labels: Labels,
    v: f64,
}

enum Value {
    Scalar(f64),
    Vector(Vec<Sample>),
}

struct Evaluator<'a> {
    loaded: &'a HashMap<*const MetricExpr, RangeData>,
    max_series: usize,
}

impl Evaluator<'_> {
    fn eval(&self, m: &MetricExpr, t: i64) -> Result<Value, Error> {
        match m {
            MetricExpr::Literal(v) => Ok(Value::Scalar(*v)),
            MetricExpr::VectorLit(v) => Ok(Value::Vector(vec![Sample { labels: Labels::new(), v: *v }])),
            MetricExpr::Range { op, param, range_ns, offset_ns, .. } => {
                let data = self
                    .loaded
                    .get(&(m as *const MetricExpr))
                    .ok_or_else(|| Error::Execution("range data not loaded".into()))?;
                let hi = t - offset_ns;
                let lo = hi - range_ns;
                let mut out = Vec::new();
                for (labels, pts) in &data.series {
                    let v = match (pts, &data.grid) {
                        (Points::Samples(pts), _) => {
                            let a = pts.partition_point(|(ts, _)| *ts <= lo);
                            let b = pts.partition_point(|(ts, _)| *ts <= hi);
                            if a >= b {
                                continue;
                            }
                            if *op == RangeOp::Absent {
                                return Ok(Value::Vector(Vec::new()));
                            }
                            range_fn(*op, *param, &pts[a..b], *range_ns)
                        }
                        (Points::Cells(cells), Some(grid)) => {
                            let (n, sum) = cells[grid.window(lo, hi)]
                                .iter()
                                .fold((0u64, 0f64), |(n, s), (cn, cs)| (n + cn, s + cs));
                            if n == 0 {
                                continue;
                            }
                            cell_fn(*op, n, sum, *range_ns)
                        }
                        (Points::Cells(_), None) => return Err(Error::Execution("cells without a grid".into())),
                    };
                    out.push(Sample { labels: labels.clone(), v });
                }
                if *op == RangeOp::Absent {
                    return Ok(Value::Vector(vec![Sample { labels: data.absent.clone(), v: 1.0 }]));
                }
                if out.len() > self.max_series {
                    return Err(Error::Limit(format!(
                        "maximum of series ({}) reached for a single query",
                        self.max_series
                    )));
                }
                Ok(Value::Vector(out))
            }
            MetricExpr::Vector { op, param, inner, grouping } => {
                let v = match self.eval(inner, t)? {
                    Value::Vector(v) => v,
                    Value::Scalar(s) => vec![Sample { labels: Labels::new(), v: s }],
                };
                Ok(Value::Vector(vector_agg(*op, *param, grouping.as_ref(), v)))
            }
            MetricExpr::LabelReplace { inner, dst, replacement, src, regex } => {
                let v = match self.eval(inner, t)? {
                    Value::Vector(v) => v,
                    Value::Scalar(s) => vec![Sample { labels: Labels::new(), v: s }],
                };
                let mut out = Vec::with_capacity(v.len());
                for mut s in v {
                    let sv = s.labels.get(src).unwrap_or("").to_string();
                    if let Some(caps) = regex.captures(&sv) {
                        let mut res = String::new();
                        caps.expand(replacement, &mut res);
                        let mut pairs: Vec<(String, String)> = s
                            .labels
                            .iter()
                            .filter(|l| l.name != *dst)
                            .map(|l| (l.name.clone(), l.value.clone()))
                            .collect();
                        if !res.is_empty() {
                            pairs.push((dst.clone(), res));
                        }
                        s.labels = Labels::from_pairs_keep_empty(pairs);
                    }
                    out.push(s);
                }
                Ok(Value::Vector(out))
            }
            MetricExpr::Binary { op, modifier, lhs, rhs } => {
                let l = self.eval(lhs, t)?;
                let r = self.eval(rhs, t)?;
                binary(*op, modifier, l, r)
            }
        }
    }
}

/// [`range_fn`] of a window of `n` samples whose values add up to `sum`, for the aggregations
/// [`Grid::sums_suffice`] names.
fn cell_fn(op: RangeOp, n: u64, sum: f64, range_ns: i64) -> f64 {
    let secs = range_ns as f64 / 1e9;
    match op {
        RangeOp::Count => n as f64,
        RangeOp::Rate | RangeOp::BytesRate => sum / secs,
        _ => sum,
    }
}

fn range_fn(op: RangeOp, param: Option<f64>, w: &[(i64, f64)], range_ns: i64) -> f64 {
    let secs = range_ns as f64 / 1e9;
    match op {
        RangeOp::Count => w.len() as f64,
        RangeOp::Rate => w.iter().map(|p| p.1).sum::<f64>() / secs,
        RangeOp::Bytes | RangeOp::Sum => w.iter().map(|p| p.1).sum(),
        RangeOp::BytesRate => w.iter().map(|p| p.1).sum::<f64>() / secs,
        RangeOp::Absent => 1.0,
        RangeOp::Avg => {
            let mut mean = 0.0f64;
            let mut count = 0.0f64;
            for (_, v) in w {
                count += 1.0;
                if mean.is_infinite() {
                    if v.is_infinite() && (mean > 0.0) == (*v > 0.0) {
                        continue;
                    }
                    if !v.is_infinite() && !v.is_nan() {
                        continue;
                    }
                }
                mean += v / count - mean / count;
            }
            mean
        }
        RangeOp::Max => w.iter().fold(w[0].1, |m, (_, v)| if *v > m || m.is_nan() { *v } else { m }),
        RangeOp::Min => w.iter().fold(w[0].1, |m, (_, v)| if *v < m || m.is_nan() { *v } else { m }),
        RangeOp::Stdvar | RangeOp::Stddev => {
            let (mut aux, mut count, mut mean) = (0.0, 0.0, 0.0);
            for (_, v) in w {
                count += 1.0;
                let delta = v - mean;
                mean += delta / count;
                aux += delta * (v - mean);
            }
            if op == RangeOp::Stddev { (aux / count).sqrt() } else { aux / count }
        }
        RangeOp::Quantile => {
            let mut vals: Vec<f64> = w.iter().map(|p| p.1).collect();
            quantile(param.unwrap_or(0.0), &mut vals)
        }
        RangeOp::First => w[0].1,
        RangeOp::Last => w[w.len() - 1].1,
        RangeOp::RateCounter => rate_counter(w, range_ns),
    }
}

fn quantile(q: f64, vals: &mut [f64]) -> f64 {
    if vals.is_empty() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    vals.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let n = vals.len() as f64;
    let rank = q * (n - 1.0);
    let lower = rank.floor().max(0.0);
    let upper = (lower + 1.0).min(n - 1.0);
    let weight = rank - rank.floor();
    vals[lower as usize] * (1.0 - weight) + vals[upper as usize] * weight
}

/// Loki 2.9's `rate_counter`: Prometheus' extrapolated rate with counter resets, applied as Loki
/// does it, with sample times in nanoseconds against a range in milliseconds (so the window
/// edge never triggers extrapolation beyond the first sample).
fn rate_counter(w: &[(i64, f64)], range_ns: i64) -> f64 {
    if w.len() < 2 {
        return 0.0;
    }
    let range_ms = range_ns / 1_000_000;
    let first_t = w[0].0;
    let last_t = w[w.len() - 1].0;
    let range_start = first_t - range_ms;
    let range_end = last_t;
    let mut result = w[w.len() - 1].1 - w[0].1;
    let mut last = 0.0;
    for (_, v) in w {
        if *v < last {
            result += last;
        }
        last = *v;
    }
    let mut to_start = (first_t - range_start) as f64 / 1000.0;
    let to_end = (range_end - last_t) as f64 / 1000.0;
    let sampled = (last_t - first_t) as f64 / 1000.0;
    let avg = sampled / (w.len() - 1) as f64;
    if result > 0.0 && w[0].1 >= 0.0 {
        let to_zero = sampled * (w[0].1 / result);
        if to_zero < to_start {
            to_start = to_zero;
        }
    }
    let threshold = avg * 1.1;
    let mut interval = sampled;
    interval += if to_start < threshold { to_start } else { avg / 2.0 };
    interval += if to_end < threshold { to_end } else { avg / 2.0 };
    result *= interval / sampled;
    result / (range_ns as f64 / 1e9)
}

fn group_key(l: &Labels, g: Option<&Grouping>) -> Labels {
    match g {
        None => Labels::new(),
        Some(g) => group_labels(l, g),
    }
}

fn vector_agg(op: VecOp, param: Option<i64>, g: Option<&Grouping>, v: Vec<Sample>) -> Vec<Sample> {
    match op {
        VecOp::Sort | VecOp::SortDesc => {
            let mut v = v;
            v.sort_by(|a, b| {
                let o = a.v.partial_cmp(&b.v).unwrap_or_else(|| a.v.is_nan().cmp(&b.v.is_nan()));
                if op == VecOp::Sort { o } else { o.reverse() }
            });
            return v;
        }
        VecOp::Topk | VecOp::Bottomk => {
            let k = param.unwrap_or(0).max(0) as usize;
            let mut groups: BTreeMap<Labels, Vec<Sample>> = BTreeMap::new();
            for s in v {
                groups.entry(group_key(&s.labels, g)).or_default().push(s);
            }
            let mut out = Vec::new();
            for (_, mut ss) in groups {
                ss.sort_by(|a, b| {
                    let o = cmp_nan_low(a.v, b.v);
                    if op == VecOp::Topk { o.reverse() } else { cmp_nan_high(a.v, b.v) }
                });
                out.extend(ss.into_iter().take(k));
            }
            return out;
        }
        _ => {}
    }
    struct Acc {
        labels: Labels,
        value: f64,
        mean: f64,
        count: f64,
    }
    let mut groups: BTreeMap<Labels, Acc> = BTreeMap::new();
    for s in v {
        let key = group_key(&s.labels, g);
        let acc = groups.entry(key.clone()).or_insert_with(|| Acc {
            labels: key,
            value: match op {
                VecOp::Min | VecOp::Max => s.v,
                _ => 0.0,
            },
            mean: 0.0,
            count: 0.0,
        });
        acc.count += 1.0;
        match op {
            VecOp::Sum => acc.value += s.v,
            VecOp::Avg => {
                if acc.mean.is_infinite() {
                    if !(s.v.is_infinite() && (acc.mean > 0.0) == (s.v > 0.0)) && (s.v.is_infinite() || s.v.is_nan()) {
                        acc.mean += s.v / acc.count - acc.mean / acc.count;
                    }
                } else {
                    acc.mean += s.v / acc.count - acc.mean / acc.count;
                }
            }
            VecOp::Min if (s.v < acc.value || acc.value.is_nan()) => {
                acc.value = s.v;
            }
            VecOp::Max if (s.v > acc.value || acc.value.is_nan()) => {
                acc.value = s.v;
            }
            VecOp::Count => {}
            VecOp::Stddev | VecOp::Stdvar => {
                let delta = s.v - acc.mean;
                acc.mean += delta / acc.count;
                acc.value += delta * (s.v - acc.mean);
            }
            _ => {}
        }
    }
    groups
        .into_values()
        .map(|a| {
            let v = match op {
                VecOp::Avg => a.mean,
                VecOp::Count => a.count,
                VecOp::Stdvar => a.value / a.count,
                VecOp::Stddev => (a.value / a.count).sqrt(),
                _ => a.value,
            };
            Sample { labels: a.labels, v }
        })
        .collect()
}

fn cmp_nan_low(a: f64, b: f64) -> std::cmp::Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Less,
        (false, true) => std::cmp::Ordering::Greater,
        _ => a.partial_cmp(&b).unwrap_or(std::cmp::Ordering::Equal),
    }
}

fn cmp_nan_high(a: f64, b: f64) -> std::cmp::Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Greater,
        (false, true) => std::cmp::Ordering::Less,
        _ => a.partial_cmp(&b).unwrap_or(std::cmp::Ordering::Equal),
    }
}

fn arith(op: BinOp, l: f64, r: f64) -> (f64, bool) {
    match op {
        BinOp::Add => (l + r, true),
        BinOp::Sub => (l - r, true),
        BinOp::Mul => (l * r, true),
        // Loki guards divisions by zero: NaN, not ±Inf.
        BinOp::Div => (if r == 0.0 { f64::NAN } else { l / r }, true),
        BinOp::Mod => (if r == 0.0 { f64::NAN } else { l % r }, true),
        BinOp::Pow => (l.powf(r), true),
        BinOp::Cmp(c) => (l, c.apply(l, r)),
        BinOp::And | BinOp::Or | BinOp::Unless => (l, true),
    }
}

fn signature(l: &Labels, m: &BinModifier) -> Vec<(String, String)> {
    match &m.matching {
        Some((true, on)) => {
            l.iter().filter(|x| on.contains(&x.name)).map(|x| (x.name.clone(), x.value.clone())).collect()
        }
        Some((false, ign)) => {
            l.iter().filter(|x| !ign.contains(&x.name)).map(|x| (x.name.clone(), x.value.clone())).collect()
        }
        None => l.iter().map(|x| (x.name.clone(), x.value.clone())).collect(),
    }
}

fn binary(op: BinOp, m: &BinModifier, l: Value, r: Value) -> Result<Value, Error> {
    match (l, r) {
        (Value::Scalar(a), Value::Scalar(b)) => {
            let (v, keep) = arith(op, a, b);
            Ok(Value::Scalar(if matches!(op, BinOp::Cmp(_)) { f64::from(u8::from(keep)) } else { v }))
        }
        (Value::Vector(v), Value::Scalar(s)) => Ok(Value::Vector(vec_scalar(op, m, v, s, false))),
        (Value::Scalar(s), Value::Vector(v)) => Ok(Value::Vector(vec_scalar(op, m, v, s, true))),
        (Value::Vector(a), Value::Vector(b)) => vec_vec(op, m, a, b).map(Value::Vector),
    }
}

fn vec_scalar(op: BinOp, m: &BinModifier, v: Vec<Sample>, s: f64, swap: bool) -> Vec<Sample> {
    let mut out = Vec::with_capacity(v.len());
    for x in v {
        let (lv, rv) = if swap { (s, x.v) } else { (x.v, s) };
        let (mut value, mut keep) = arith(op, lv, rv);
        // A filtering comparison keeps the left operand: the literal when it is on the left
        // (Loki 2.9; Prometheus would keep the vector's value).
        let _ = rv;
        if m.return_bool {
            value = f64::from(u8::from(keep));
            keep = true;
        }
        if keep {
            out.push(Sample { labels: x.labels, v: value });
        }
    }
    out
}

fn result_metric(l: &Labels, r: &Labels, m: &BinModifier) -> Labels {
    let mut pairs: Vec<(String, String)> = l.iter().map(|x| (x.name.clone(), x.value.clone())).collect();
    if m.group.is_none() {
        match &m.matching {
            Some((true, on)) => pairs.retain(|(k, _)| on.contains(k)),
            Some((false, ign)) => pairs.retain(|(k, _)| !ign.contains(k)),
            None => {}
        }
    }
    if let Some((_, include)) = &m.group {
        for name in include {
            pairs.retain(|(k, _)| k != name);
            if let Some(v) = r.get(name)
                && !v.is_empty()
            {
                pairs.push((name.clone(), v.to_string()));
            }
        }
    }
    Labels::from_pairs_keep_empty(pairs)
}

fn vec_vec(op: BinOp, m: &BinModifier, lhs: Vec<Sample>, rhs: Vec<Sample>) -> Result<Vec<Sample>, Error> {
    match op {
        BinOp::And => {
            let sigs: std::collections::HashSet<_> = rhs.iter().map(|s| signature(&s.labels, m)).collect();
            return Ok(lhs.into_iter().filter(|s| sigs.contains(&signature(&s.labels, m))).collect());
        }
        BinOp::Unless => {
            let sigs: std::collections::HashSet<_> = rhs.iter().map(|s| signature(&s.labels, m)).collect();
            return Ok(lhs.into_iter().filter(|s| !sigs.contains(&signature(&s.labels, m))).collect());
        }
        BinOp::Or => {
            let sigs: std::collections::HashSet<_> = lhs.iter().map(|s| signature(&s.labels, m)).collect();
            let mut out = lhs;
            out.extend(rhs.into_iter().filter(|s| !sigs.contains(&signature(&s.labels, m))));
            return Ok(out);
        }
        _ => {}
    }
    let one_to_many = matches!(m.group, Some((false, _)));
    let (many, one) = if one_to_many { (rhs, lhs) } else { (lhs, rhs) };
    let mut right: HashMap<Vec<(String, String)>, &Sample> = HashMap::new();
    for s in &one {
        let sig = signature(&s.labels, m);
        if let Some(prev) = right.insert(sig.clone(), s) {
            let side = if one_to_many { "left" } else { "right" };
            let _ = (prev, sig);
            return Err(Error::Execution(format!(
                "found duplicate series on the {side} hand-side;many-to-many matching not allowed: matching labels must be unique on one side"
            )));
        }
    }
    let mut out = Vec::new();
    let mut seen: HashMap<Labels, ()> = HashMap::new();
    let mut seen_sigs: HashMap<Vec<(String, String)>, ()> = HashMap::new();
    for s in &many {
        let sig = signature(&s.labels, m);
        let Some(r) = right.get(&sig) else { continue };
        let (lv, rv) = if one_to_many { (r.v, s.v) } else { (s.v, r.v) };
        let (mut value, mut keep) = arith(op, lv, rv);
        if m.return_bool {
            value = f64::from(u8::from(keep));
            keep = true;
        }
        if !keep {
            continue;
        }
        let metric = result_metric(&s.labels, &r.labels, m);
        if m.group.is_none() {
            if seen_sigs.insert(sig, ()).is_some() {
                return Err(Error::Execution(
                    "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)"
                        .into(),
                ));
            }
        } else if seen.insert(metric.clone(), ()).is_some() {
            return Err(Error::Execution(
                "multiple matches for labels: grouping labels must ensure unique matches".into(),
            ));
        }
        out.push(Sample { labels: metric, v: value });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::regex_literals;

    fn lits(p: &str) -> Vec<String> {
        regex_literals(&regex::Regex::new(p).unwrap())
    }

    /// Only literals every match contains come out (they become scan hints, which must never
    /// drop a matching line).
    #[test]
    fn regex_literals_are_required_substrings() {
        assert_eq!(lits("timeout after [0-9]{5}ms"), vec!["timeout after ", "ms"]);
        assert_eq!(lits("error"), vec!["error"]);
        assert_eq!(lits("foo.*"), vec!["foo"]);
        assert!(lits("(?i)error").is_empty());
        assert!(lits("a|b").is_empty());
        assert_eq!(lits("ab(c|d)e"), vec!["ab", "e"]);
        assert_eq!(lits("é[é-ê]x"), vec!["é", "x"]);
        assert!(lits("x*").is_empty());
        assert!(lits(".*").is_empty());
        for (p, line) in [("timeout after [0-9]{5}ms", "x timeout after 12345ms y"), ("fo+bar", "fooobar")] {
            let re = regex::Regex::new(p).unwrap();
            assert!(re.is_match(line));
            assert!(lits(p).iter().all(|l| line.contains(l.as_str())), "{p}");
        }
    }
}
