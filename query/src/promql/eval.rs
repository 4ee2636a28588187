//! The evaluator: walks the AST producing one value per evaluation step.
//!
//! Every expression of scalar or instant-vector type evaluates to a [`Val`] holding one entry per
//! step of its [`Steps`]. Range vectors (matrix selectors and subqueries) only occur as function
//! arguments or as the whole query; they become [`RangeInput`]s whose windows are cut per step.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use promql_parser::label::MatchOp as PMatchOp;
use promql_parser::parser::{AtModifier, Call, Expr, MatrixSelector, Offset, SubqueryExpr, VectorSelector};
use storage::model::{Labels, is_stale_nan};
use storage::read::SeriesSet;
use storage::{MatchOp, Matcher, MetricsReader};

use super::value::{FloatHistogram, Point, Sample as PubSample, Series, Value};
use super::{EngineOptions, QueryError, QueryResult};

/// Subquery step when the query gives none (Prometheus' default evaluation interval).
const DEFAULT_SUBQUERY_STEP_MS: i64 = 60_000;

/// An element of an instant vector during evaluation (the timestamp is the step's).
#[derive(Clone, Debug)]
pub(crate) struct S {
    pub labels: Arc<Labels>,
    pub point: Point,
}

impl S {
    pub fn float(labels: Arc<Labels>, v: f64) -> S {
        S { labels, point: Point::Float(v) }
    }

    pub fn f(&self) -> Option<f64> {
        match self.point {
            Point::Float(v) => Some(v),
            Point::Histogram(_) => None,
        }
    }

    pub fn h(&self) -> Option<&FloatHistogram> {
        match &self.point {
            Point::Float(_) => None,
            Point::Histogram(h) => Some(h),
        }
    }
}

pub(crate) type Vector = Vec<S>;

/// A series loaded from storage or computed by a subquery, samples in time order.
#[derive(Clone, Debug, Default)]
pub(crate) struct Loaded {
    pub labels: Arc<Labels>,
    pub floats: Vec<(i64, f64)>,
    pub hists: Vec<(i64, FloatHistogram)>,
}

/// One series' samples inside a range window `[start, end]`.
pub(crate) struct Window<'a> {
    pub floats: &'a [(i64, f64)],
    pub hists: &'a [(i64, FloatHistogram)],
    /// Window start (ms), inclusive.
    pub start: i64,
    /// Window end (ms), inclusive.
    pub end: i64,
}

/// The evaluation steps of one evaluator.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Steps {
    pub start: i64,
    pub end: i64,
    pub interval: i64,
}

impl Steps {
    pub fn len(&self) -> usize {
        if self.end < self.start || self.interval <= 0 {
            0
        } else {
            let n = (i128::from(self.end) - i128::from(self.start)) / i128::from(self.interval) + 1;
            usize::try_from(n).unwrap_or(usize::MAX)
        }
    }

    pub fn ts(&self, i: usize) -> i64 {
        self.start.saturating_add(self.interval.saturating_mul(i as i64))
    }
}

/// The value of an expression at every step.
#[derive(Clone, Debug)]
pub(crate) enum Val {
    Scalar(Vec<f64>),
    Vector(Vec<Vector>),
    String(String),
    /// A range vector at the single step of an instant query.
    Matrix(Vec<Loaded>),
}

/// A range-vector argument: series plus how to place each step's window.
pub(crate) struct RangeInput {
    pub series: Vec<Loaded>,
    pub range: i64,
    pub offset: i64,
    pub at: Option<i64>,
}

impl RangeInput {
    pub fn window_end(&self, ts: i64) -> i64 {
        self.at.unwrap_or(ts).saturating_sub(self.offset)
    }

    pub fn window<'a>(&'a self, s: &'a Loaded, ts: i64) -> Window<'a> {
        let end = self.window_end(ts);
        let start = end.saturating_sub(self.range);
        let fl = s.floats.partition_point(|p| p.0 < start);
        let fh = s.floats.partition_point(|p| p.0 <= end);
        let hl = s.hists.partition_point(|p| p.0 < start);
        let hh = s.hists.partition_point(|p| p.0 <= end);
        Window { floats: &s.floats[fl..fh], hists: &s.hists[hl..hh], start, end }
    }

    /// The same window as [`RangeInput::window`], found by moving `cur`'s indices forward from
    /// the previous step's window when the window did not move back (steps in order), by binary
    /// search otherwise. `cur` must be used with one series only.
    pub fn window_at<'s>(&self, s: &'s Loaded, ts: i64, cur: &mut WindowCursor) -> Window<'s> {
        let end = self.window_end(ts);
        let start = end.saturating_sub(self.range);
        if cur.valid && start >= cur.start && end >= cur.end {
            let fl = &s.floats;
            let hs = &s.hists;
            while cur.fl < fl.len() && fl[cur.fl].0 < start {
                cur.fl += 1;
            }
            cur.fh = cur.fh.max(cur.fl);
            while cur.fh < fl.len() && fl[cur.fh].0 <= end {
                cur.fh += 1;
            }
            while cur.hl < hs.len() && hs[cur.hl].0 < start {
                cur.hl += 1;
            }
            cur.hh = cur.hh.max(cur.hl);
            while cur.hh < hs.len() && hs[cur.hh].0 <= end {
                cur.hh += 1;
            }
        } else {
            cur.fl = s.floats.partition_point(|p| p.0 < start);
            cur.fh = s.floats.partition_point(|p| p.0 <= end);
            cur.hl = s.hists.partition_point(|p| p.0 < start);
            cur.hh = s.hists.partition_point(|p| p.0 <= end);
            cur.valid = true;
        }
        cur.start = start;
        cur.end = end;
        Window { floats: &s.floats[cur.fl..cur.fh], hists: &s.hists[cur.hl..cur.hh], start, end }
    }
}

/// Where one series' previous window was, for [`RangeInput::window_at`]: the window's bounds
/// and the index ranges of its floats (`fl..fh`) and histograms (`hl..hh`).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct WindowCursor {
    valid: bool,
    start: i64,
    end: i64,
    /// Index of the window's first float in the series.
    pub fl: usize,
    fh: usize,
    hl: usize,
    hh: usize,
}

impl Source<'_> {
    /// The same source for an operator that drops `__name__` from every series: series read
    /// from storage come without it.
    pub fn without_names(self) -> Self {
        match self {
            Source::Lazy { set, drop_stale, .. } => Source::Lazy { set, drop_stale, drop_name: true },
            s => s,
        }
    }
}

/// Where a per-series operator ([`Evaluator::per_series`]) takes its series from.
pub(crate) enum Source<'s> {
    /// Read from storage one series at a time; stale markers dropped or not.
    /// With `drop_name`, series come without `__name__` (for operators that drop it anyway:
    /// one copy of the label set per series instead of two).
    Lazy { set: Box<dyn SeriesSet + 's>, drop_stale: bool, drop_name: bool },
    /// Already in memory (`{a="1" or b="2"}` selectors, subqueries), sorted by labels.
    Loaded(Vec<Loaded>),
}

/// What a per-series operator made of one series: its output points by step index, floats and
/// histograms apart (a series has at most one point per step; a `Point` is large).
pub(crate) struct SeriesOut {
    pub labels: Arc<Labels>,
    pub floats: Vec<(u32, f64)>,
    pub hists: Vec<(u32, FloatHistogram)>,
    /// Samples read from storage, counted per step.
    pub touched: usize,
    /// The most samples held at once while evaluating the series, counting its own outputs so
    /// far (the caller adds the outputs of the series before it).
    pub peak: usize,
}

impl SeriesOut {
    /// An empty output for `labels`, with room for `steps` floats.
    pub fn new(labels: Arc<Labels>, steps: usize) -> SeriesOut {
        SeriesOut { labels, floats: Vec::with_capacity(steps), hists: Vec::new(), touched: 0, peak: 0 }
    }

    pub fn push(&mut self, step: usize, p: Point) {
        match p {
            Point::Float(v) => self.floats.push((step as u32, v)),
            Point::Histogram(h) => self.hists.push((step as u32, h)),
        }
    }

    pub fn len(&self) -> usize {
        self.floats.len() + self.hists.len()
    }

    pub fn is_empty(&self) -> bool {
        self.floats.is_empty() && self.hists.is_empty()
    }

    /// Appends the points to per-step vectors.
    pub fn append_to(self, out: &mut [Vector]) {
        for (i, v) in self.floats {
            if let Some(o) = out.get_mut(i as usize) {
                o.push(S { labels: self.labels.clone(), point: Point::Float(v) });
            }
        }
        for (i, h) in self.hists {
            if let Some(o) = out.get_mut(i as usize) {
                o.push(S { labels: self.labels.clone(), point: Point::Histogram(h) });
            }
        }
    }
}

/// Series a worker of [`Evaluator::per_series`] reads and evaluates at a time.
const SERIES_PER_CHUNK: usize = 64;

/// Threads a query uses for per-series work (the machine's cores, at most 8).
fn query_threads() -> usize {
    static N: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *N.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()).min(8))
}

/// A series read from storage as the evaluator holds it, without `__name__` if `no_name`.
fn loaded_from(labels: &Labels, d: storage::read::Samples, drop_stale: bool, no_name: bool) -> Loaded {
    let (floats, hists) = points_of(d, drop_stale);
    let labels = if no_name { labels.without("__name__") } else { labels.clone() };
    Loaded { labels: Arc::new(labels), floats, hists }
}

/// A series' native histograms as the evaluator holds them.
type Hists = Vec<(i64, FloatHistogram)>;

/// A series' samples as the evaluator holds them, stale markers dropped if `drop_stale`.
fn points_of(d: storage::read::Samples, drop_stale: bool) -> (Vec<(i64, f64)>, Hists) {
    // Collected in place: the reader's buffer becomes the float list (same size and alignment).
    let floats: Vec<(i64, f64)> = d
        .floats
        .into_iter()
        .filter(|s| !(drop_stale && is_stale_nan(s.value)))
        .map(|s| (s.timestamp_ms, s.value))
        .collect();
    let hists: Vec<(i64, FloatHistogram)> = d
        .histograms
        .iter()
        .map(|h| (h.timestamp_ms, FloatHistogram::from_native(&h.histogram)))
        .filter(|h| !(drop_stale && is_stale_hist(&h.1)))
        .collect();
    (floats, hists)
}

/// Query-wide state shared by nested evaluators.
pub(crate) struct Ctx<'a> {
    reader: &'a dyn MetricsReader,
    lookback: i64,
    pub max_samples: usize,
    pub deadline: Instant,
    /// Start and end of the whole query, for `@ start()` / `@ end()`.
    pub query_start: i64,
    pub query_end: i64,
    pub warnings: RefCell<Vec<String>>,
    touched: Cell<u64>,
    checks: Cell<u32>,
}

impl Ctx<'_> {
    pub fn check(&self) -> Result<(), QueryError> {
        let n = self.checks.get().wrapping_add(1);
        self.checks.set(n);
        if n.is_multiple_of(64) && Instant::now() > self.deadline {
            return Err(QueryError::Timeout);
        }
        Ok(())
    }

    pub fn check_now(&self) -> Result<(), QueryError> {
        if Instant::now() > self.deadline {
            return Err(QueryError::Timeout);
        }
        Ok(())
    }

    pub fn limit(&self, n: usize) -> Result<(), QueryError> {
        if n > self.max_samples {
            return Err(QueryError::TooManySamples);
        }
        Ok(())
    }

    pub fn touch(&self, n: usize) {
        self.touched.set(self.touched.get() + n as u64);
    }
}

/// Runs a parsed query. `step == 0` means an instant query at `start`.
pub(crate) fn run(
    reader: &dyn MetricsReader,
    opts: &EngineOptions,
    expr: &Expr,
    start: i64,
    end: i64,
    step: i64,
    timeout: Duration,
) -> Result<QueryResult, QueryError> {
    let ctx = Ctx {
        reader,
        lookback: opts.lookback_delta_ms,
        max_samples: opts.max_samples,
        deadline: Instant::now() + timeout,
        query_start: start,
        query_end: end,
        warnings: RefCell::new(Vec::new()),
        touched: Cell::new(0),
        checks: Cell::new(0),
    };
    let instant = step == 0;
    let steps = Steps { start, end, interval: if instant { 1 } else { step } };
    ctx.limit(steps.len())?;
    let ev = Evaluator { ctx: &ctx, steps };
    let val = ev.eval(expr)?;
    let value = match val {
        Val::String(s) => Value::String { t_ms: start, s },
        Val::Scalar(v) if instant => Value::Scalar { t_ms: start, v: v.first().copied().unwrap_or(f64::NAN) },
        Val::Scalar(v) => Value::Matrix(vec![Series {
            labels: Labels::new(),
            floats: v.iter().enumerate().map(|(i, v)| (steps.ts(i), *v)).collect(),
            histograms: Vec::new(),
        }]),
        Val::Vector(steps_v) if instant => Value::Vector(
            steps_v
                .into_iter()
                .next()
                .unwrap_or_default()
                .into_iter()
                .map(|s| PubSample { labels: Arc::unwrap_or_clone(s.labels), t_ms: start, point: s.point })
                .collect(),
        ),
        Val::Vector(steps_v) => Value::Matrix(to_matrix(&steps, steps_v)),
        Val::Matrix(series) => Value::Matrix(
            series
                .into_iter()
                .map(|l| Series { labels: Arc::unwrap_or_clone(l.labels), floats: l.floats, histograms: l.hists })
                .collect(),
        ),
    };
    Ok(QueryResult { value, warnings: ctx.warnings.into_inner(), samples_touched: ctx.touched.get() })
}

/// Groups per-step vectors into series sorted by labels. Elements of one series usually share
/// one `Arc` across steps: it is looked up by address first (the map keeps each `Arc` alive, so an
/// address is never reused meanwhile), by content only for an address not seen before.
fn to_matrix(steps: &Steps, v: Vec<Vector>) -> Vec<Series> {
    let mut by_ptr: HashMap<usize, (Arc<Labels>, usize)> = HashMap::new();
    let mut by_labels: HashMap<Arc<Labels>, usize> = HashMap::new();
    let mut out: Vec<Series> = Vec::new();
    for (i, vec) in v.into_iter().enumerate() {
        let ts = steps.ts(i);
        for s in vec {
            let key = Arc::as_ptr(&s.labels) as usize;
            let idx = match by_ptr.get(&key) {
                Some((_, idx)) => *idx,
                None => {
                    let idx = *by_labels.entry(s.labels.clone()).or_insert_with(|| {
                        out.push(Series { labels: (*s.labels).clone(), floats: Vec::new(), histograms: Vec::new() });
                        out.len() - 1
                    });
                    by_ptr.insert(key, (s.labels.clone(), idx));
                    idx
                }
            };
            let e = &mut out[idx];
            match s.point {
                Point::Float(f) => e.floats.push((ts, f)),
                Point::Histogram(h) => e.histograms.push((ts, h)),
            }
        }
    }
    out.sort_by(|a, b| a.labels.cmp(&b.labels));
    out
}

fn to_loaded(steps: &Steps, v: Vec<Vector>) -> Vec<Loaded> {
    to_matrix(steps, v)
        .into_iter()
        .map(|s| Loaded { labels: Arc::new(s.labels), floats: s.floats, hists: s.histograms })
        .collect()
}

pub(crate) fn duration_ms(d: &Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn offset_ms(o: &Option<Offset>) -> i64 {
    match o {
        None => 0,
        Some(Offset::Pos(d)) => duration_ms(d),
        Some(Offset::Neg(d)) => -duration_ms(d),
    }
}

fn system_time_ms(t: &SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => duration_ms(&d),
        Err(e) => -duration_ms(&e.duration()),
    }
}

/// Storage matchers of a vector selector (its name becomes a `__name__` matcher).
pub(crate) fn selector_matchers(vs: &VectorSelector) -> Result<Vec<Matcher>, QueryError> {
    convert_matchers(vs.name.as_deref(), &vs.matchers.matchers)
}

fn convert_matchers(name: Option<&str>, ms: &[promql_parser::label::Matcher]) -> Result<Vec<Matcher>, QueryError> {
    let mut out = Vec::new();
    if let Some(n) = name {
        out.push(Matcher::eq("__name__", n));
    }
    for m in ms {
        let op = match m.op {
            PMatchOp::Equal => MatchOp::Equal,
            PMatchOp::NotEqual => MatchOp::NotEqual,
            PMatchOp::Re(_) => MatchOp::Regex,
            PMatchOp::NotRe(_) => MatchOp::NotRegex,
        };
        let mm = Matcher::new(m.name.clone(), op, m.value.clone())
            .map_err(|e| QueryError::BadData(format!("parse error: invalid regular expression: {e}")))?;
        out.push(mm);
    }
    Ok(out)
}

pub(crate) fn unwrap_parens(mut e: &Expr) -> &Expr {
    while let Expr::Paren(p) = e {
        e = &p.expr;
    }
    e
}

fn is_stale_hist(h: &FloatHistogram) -> bool {
    is_stale_nan(h.sum)
}

/// The sample an instant selector picks at reference time `t`, with its timestamp.
fn pick(s: &Loaded, t: i64, lookback: i64) -> Option<(i64, Point)> {
    let fi = s.floats.partition_point(|p| p.0 <= t);
    let hi = s.hists.partition_point(|p| p.0 <= t);
    let f = fi.checked_sub(1).map(|i| &s.floats[i]);
    let h = hi.checked_sub(1).map(|i| &s.hists[i]);
    let (ts, point) = match (f, h) {
        (None, None) => return None,
        (Some(f), None) => (f.0, Point::Float(f.1)),
        (None, Some(h)) => (h.0, Point::Histogram(h.1.clone())),
        (Some(f), Some(h)) if f.0 >= h.0 => (f.0, Point::Float(f.1)),
        (Some(_), Some(h)) => (h.0, Point::Histogram(h.1.clone())),
    };
    if ts < t.saturating_sub(lookback) {
        return None;
    }
    match &point {
        Point::Float(v) if is_stale_nan(*v) => None,
        Point::Histogram(h) if is_stale_hist(h) => None,
        _ => Some((ts, point)),
    }
}

pub(crate) struct Evaluator<'a> {
    pub ctx: &'a Ctx<'a>,
    pub steps: Steps,
}

impl<'a> Evaluator<'a> {
    fn at_ms(&self, at: &Option<AtModifier>) -> Option<i64> {
        match at {
            None => None,
            Some(AtModifier::Start) => Some(self.ctx.query_start),
            Some(AtModifier::End) => Some(self.ctx.query_end),
            Some(AtModifier::At(t)) => Some(system_time_ms(t)),
        }
    }

    /// Loads the series of a selector with samples in `[mint, maxt]`.
    fn load(&self, vs: &VectorSelector, mint: i64, maxt: i64, drop_stale: bool) -> Result<Vec<Loaded>, QueryError> {
        self.ctx.check_now()?;
        let mut sets = Vec::new();
        if vs.matchers.or_matchers.is_empty() {
            sets.push(selector_matchers(vs)?);
        } else {
            for group in &vs.matchers.or_matchers {
                sets.push(convert_matchers(vs.name.as_deref(), group)?);
            }
        }
        let mut out: Vec<Loaded> = Vec::new();
        let mut total = 0usize;
        // Only `{a="1" or b="2"}` selectors can see a series twice.
        let mut seen: std::collections::HashSet<Labels> = std::collections::HashSet::new();
        for ms in &sets {
            for ts in self.ctx.reader.select_matching(ms, mint, maxt) {
                if sets.len() > 1 && !seen.insert(ts.labels.clone()) {
                    continue;
                }
                let (floats, hists) =
                    points_of(storage::read::Samples { floats: ts.samples, histograms: ts.histograms }, drop_stale);
                total += floats.len() + hists.len();
                self.ctx.limit(total)?;
                out.push(Loaded { labels: Arc::new(ts.labels), floats, hists });
            }
        }
        if sets.len() > 1 {
            out.sort_by(|a, b| a.labels.cmp(&b.labels));
        }
        Ok(out)
    }

    /// The series of a selector with samples in `[mint, maxt]`, read lazily when the selector
    /// has a single matcher set.
    pub fn source(
        &self,
        vs: &VectorSelector,
        mint: i64,
        maxt: i64,
        drop_stale: bool,
    ) -> Result<Source<'a>, QueryError> {
        if vs.matchers.or_matchers.is_empty() {
            self.ctx.check_now()?;
            let ms = selector_matchers(vs)?;
            let set = self.ctx.reader.select_series(&ms, mint, maxt);
            return Ok(Source::Lazy { set, drop_stale, drop_name: false });
        }
        Ok(Source::Loaded(self.load(vs, mint, maxt, drop_stale)?))
    }

    /// Runs `op` on every series of `src` and hands the results to `sink` in series order.
    /// Series read from storage are read and evaluated on several threads, a batch at a time;
    /// `sink` runs on the calling thread and sees the same order as a sequential run.
    pub fn per_series<F>(
        &self,
        src: Source<'_>,
        op: F,
        sink: &mut dyn FnMut(SeriesOut) -> Result<(), QueryError>,
    ) -> Result<(), QueryError>
    where
        F: Fn(&Loaded) -> Result<SeriesOut, QueryError> + Sync,
    {
        let (set, (drop_stale, no_name)) = match src {
            Source::Loaded(v) => {
                for s in &v {
                    self.ctx.check()?;
                    sink(op(s)?)?;
                }
                return Ok(());
            }
            Source::Lazy { set, drop_stale, drop_name } => (set, (drop_stale, drop_name)),
        };
        let (deadline, max) = (self.ctx.deadline, self.ctx.max_samples);
        let set: &dyn SeriesSet = &*set;
        let one = |i: usize| -> Result<SeriesOut, QueryError> {
            if Instant::now() > deadline {
                return Err(QueryError::Timeout);
            }
            let loaded = loaded_from(set.labels(i), set.read(i), drop_stale, no_name);
            if loaded.floats.len() + loaded.hists.len() > max {
                return Err(QueryError::TooManySamples);
            }
            op(&loaded)
        };
        let n = set.len();
        let threads = query_threads().min(n.div_ceil(SERIES_PER_CHUNK)).max(1);
        if threads == 1 {
            for i in 0..n {
                self.ctx.check()?;
                sink(one(i)?)?;
            }
            return Ok(());
        }
        // Workers take chunks of series in turn (no barrier between batches: a descheduled
        // thread delays only its own chunk); the calling thread hands the results to `sink` in
        // chunk order, so `sink` sees the same order as a sequential run.
        let one = &one;
        let next = AtomicUsize::new(0);
        let stop = AtomicBool::new(false);
        let (next, stop) = (&next, &stop);
        std::thread::scope(|sc| {
            // Bounded: workers wait when the calling thread falls behind.
            let (tx, rx) = std::sync::mpsc::sync_channel::<(usize, Vec<Result<SeriesOut, QueryError>>)>(4 * threads);
            let handles: Vec<_> = (0..threads)
                .map(|_| {
                    let tx = tx.clone();
                    sc.spawn(move || {
                        while !stop.load(Ordering::Relaxed) {
                            let c = next.fetch_add(1, Ordering::Relaxed);
                            let lo = c.saturating_mul(SERIES_PER_CHUNK);
                            if lo >= n {
                                break;
                            }
                            let part: Vec<_> = (lo..(lo + SERIES_PER_CHUNK).min(n)).map(one).collect();
                            if tx.send((c, part)).is_err() {
                                break;
                            }
                        }
                    })
                })
                .collect();
            drop(tx);
            let mut pending: HashMap<usize, Vec<Result<SeriesOut, QueryError>>> = HashMap::new();
            let mut want = 0usize;
            let mut result: Result<(), QueryError> = Ok(());
            // Ends once every worker has finished (or failed) and dropped its sender.
            for (c, part) in rx {
                pending.insert(c, part);
                while let Some(part) = pending.remove(&want) {
                    want += 1;
                    if result.is_err() {
                        continue;
                    }
                    for r in part {
                        if let Err(e) = r.and_then(&mut *sink) {
                            result = Err(e);
                            stop.store(true, Ordering::Relaxed);
                            break;
                        }
                    }
                }
            }
            let mut failed = false;
            for h in handles {
                failed |= h.join().is_err();
            }
            result?;
            if failed || want.saturating_mul(SERIES_PER_CHUNK) < n {
                return Err(QueryError::Execution("query worker failed".into()));
            }
            Ok(())
        })
    }

    pub fn eval(&self, e: &Expr) -> Result<Val, QueryError> {
        self.ctx.check_now()?;
        let n = self.steps.len();
        match e {
            Expr::NumberLiteral(nl) => Ok(Val::Scalar(vec![nl.val; n])),
            Expr::StringLiteral(s) => Ok(Val::String(s.val.clone())),
            Expr::Paren(p) => self.eval(&p.expr),
            Expr::Unary(u) => match self.eval(&u.expr)? {
                Val::Scalar(v) => Ok(Val::Scalar(v.into_iter().map(|x| -x).collect())),
                Val::Vector(steps) => Ok(Val::Vector({
                    let mut names = NameCache::default();
                    steps
                        .into_iter()
                        .map(|vec| {
                            vec.into_iter()
                                .map(|s| S {
                                    labels: names.drop_name(&s.labels),
                                    point: match s.point {
                                        Point::Float(f) => Point::Float(-f),
                                        Point::Histogram(h) => Point::Histogram(h.mul(-1.0)),
                                    },
                                })
                                .collect()
                        })
                        .collect()
                })),
                _ => Err(QueryError::Execution("unary expression only allowed on scalars and vectors".into())),
            },
            Expr::VectorSelector(vs) => self.eval_vector_selector(vs),
            Expr::MatrixSelector(ms) => {
                let input = self.matrix_input(ms)?;
                Ok(Val::Matrix(self.top_level_windows(&input)))
            }
            Expr::Subquery(sq) => {
                let input = self.subquery_input(sq)?;
                Ok(Val::Matrix(self.top_level_windows(&input)))
            }
            Expr::Binary(b) => super::binop::eval_binary(self, b),
            Expr::Aggregate(a) => super::aggr::eval_aggregate(self, a),
            Expr::Call(c) => self.eval_call(c),
            Expr::Extension(_) => Err(QueryError::Execution("unsupported expression".into())),
        }
    }

    fn top_level_windows(&self, input: &RangeInput) -> Vec<Loaded> {
        let ts = self.steps.start;
        let mut out = Vec::new();
        for s in &input.series {
            let w = input.window(s, ts);
            if w.floats.is_empty() && w.hists.is_empty() {
                continue;
            }
            self.ctx.touch(w.floats.len() + w.hists.len());
            out.push(Loaded { labels: s.labels.clone(), floats: w.floats.to_vec(), hists: w.hists.to_vec() });
        }
        out
    }

    /// Reference times of a selector at every step: `(min, max)` and a per-step function.
    fn ref_bounds(&self, at: Option<i64>, offset: i64) -> (i64, i64) {
        match at {
            Some(a) => (a.saturating_sub(offset), a.saturating_sub(offset)),
            None => (self.steps.start.saturating_sub(offset), self.steps.end.saturating_sub(offset)),
        }
    }

    /// Evaluates an instant vector selector; with `timestamps`, each value is the sample's
    /// timestamp in seconds and the metric name is dropped (`timestamp()`).
    pub fn eval_selector_with(&self, vs: &VectorSelector, timestamps: bool) -> Result<Val, QueryError> {
        let n = self.steps.len();
        let mut out: Vec<Vector> = vec![Vec::new(); n];
        self.selector_each(vs, timestamps, &mut |so| {
            so.append_to(&mut out);
            Ok(())
        })?;
        Ok(Val::Vector(out))
    }

    /// The points of an instant vector selector, series by series (see
    /// [`Evaluator::eval_selector_with`]); counts samples and applies the sample limit.
    pub fn selector_each(
        &self,
        vs: &VectorSelector,
        timestamps: bool,
        sink: &mut dyn FnMut(SeriesOut) -> Result<(), QueryError>,
    ) -> Result<(), QueryError> {
        let offset = offset_ms(&vs.offset);
        let at = self.at_ms(&vs.at);
        let (lo, hi) = self.ref_bounds(at, offset);
        let src = self.source(vs, lo.saturating_sub(self.ctx.lookback), hi, false)?;
        let n = self.steps.len();
        let steps = self.steps;
        let lookback = self.ctx.lookback;
        let op = |s: &Loaded| -> Result<SeriesOut, QueryError> {
            let labels = if timestamps { drop_name(&s.labels) } else { s.labels.clone() };
            let mut so = SeriesOut::new(labels, n);
            if s.hists.is_empty() && at.is_none() {
                // Floats only, steps in time order: one cursor moves forward over the samples.
                let fl = &s.floats;
                let mut k = 0usize;
                for i in 0..n {
                    let t = steps.ts(i).saturating_sub(offset);
                    while k < fl.len() && fl[k].0 <= t {
                        k += 1;
                    }
                    let Some(&(sts, v)) = k.checked_sub(1).map(|j| &fl[j]) else { continue };
                    if sts < t.saturating_sub(lookback) || is_stale_nan(v) {
                        continue;
                    }
                    so.floats.push((i as u32, if timestamps { sts as f64 / 1000.0 } else { v }));
                }
                so.touched = so.len();
                so.peak = so.len();
                return Ok(so);
            }
            let mut cached: Option<(i64, Option<(i64, Point)>)> = None;
            for i in 0..n {
                let t = at.unwrap_or(steps.ts(i)).saturating_sub(offset);
                let picked = match &cached {
                    Some((ct, p)) if *ct == t => p.clone(),
                    _ => {
                        let p = pick(s, t, lookback);
                        cached = Some((t, p.clone()));
                        p
                    }
                };
                if let Some((sts, point)) = picked {
                    let point = if timestamps { Point::Float(sts as f64 / 1000.0) } else { point };
                    so.push(i, point);
                }
            }
            so.touched = so.len();
            so.peak = so.len();
            Ok(so)
        };
        let mut total = 0usize;
        let r = self.per_series(src, op, &mut |so| {
            total += so.len();
            self.ctx.limit(total)?;
            sink(so)
        });
        self.ctx.touch(total);
        r
    }

    fn eval_vector_selector(&self, vs: &VectorSelector) -> Result<Val, QueryError> {
        self.eval_selector_with(vs, false)
    }

    pub fn matrix_input(&self, ms: &MatrixSelector) -> Result<RangeInput, QueryError> {
        let vs = &ms.vs;
        let offset = offset_ms(&vs.offset);
        let at = self.at_ms(&vs.at);
        let range = duration_ms(&ms.range);
        let (lo, hi) = self.ref_bounds(at, offset);
        let series = self.load(vs, lo.saturating_sub(range), hi, true)?;
        Ok(RangeInput { series, range, offset, at })
    }

    pub fn subquery_input(&self, sq: &SubqueryExpr) -> Result<RangeInput, QueryError> {
        let offset = offset_ms(&sq.offset);
        let at = self.at_ms(&sq.at);
        let range = duration_ms(&sq.range);
        let interval = sq.step.as_ref().map(duration_ms).filter(|s| *s > 0).unwrap_or(DEFAULT_SUBQUERY_STEP_MS);
        let (lo, hi) = self.ref_bounds(at, offset);
        let first = lo.saturating_sub(range);
        let start = (first.div_euclid(interval) * interval).saturating_add(if first.rem_euclid(interval) == 0 {
            0
        } else {
            interval
        });
        let steps = Steps { start, end: hi, interval };
        self.ctx.limit(steps.len())?;
        let inner = Evaluator { ctx: self.ctx, steps };
        let series = match inner.eval(&sq.expr)? {
            Val::Vector(v) => to_loaded(&steps, v),
            Val::Scalar(v) => vec![Loaded {
                labels: Arc::new(Labels::new()),
                floats: v.iter().enumerate().map(|(i, v)| (steps.ts(i), *v)).collect(),
                hists: Vec::new(),
            }],
            _ => return Err(QueryError::Execution("subquery is only allowed on instant vector".into())),
        };
        Ok(RangeInput { series, range, offset, at })
    }

    /// A range-vector argument as a [`Source`] of series plus the placement of each step's
    /// window (a [`RangeInput`] without series); `None` if `e` is not a range vector.
    pub fn range_source(&self, e: &Expr) -> Result<Option<(Source<'a>, RangeInput)>, QueryError> {
        match unwrap_parens(e) {
            Expr::MatrixSelector(ms) => {
                let vs = &ms.vs;
                let offset = offset_ms(&vs.offset);
                let at = self.at_ms(&vs.at);
                let range = duration_ms(&ms.range);
                let (lo, hi) = self.ref_bounds(at, offset);
                let src = self.source(vs, lo.saturating_sub(range), hi, true)?;
                Ok(Some((src, RangeInput { series: Vec::new(), range, offset, at })))
            }
            Expr::Subquery(sq) => {
                let mut input = self.subquery_input(sq)?;
                let series = std::mem::take(&mut input.series);
                Ok(Some((Source::Loaded(series), input)))
            }
            _ => Ok(None),
        }
    }

    /// A range-vector argument (matrix selector or subquery, possibly in parentheses).
    pub fn range_arg(&self, e: &Expr) -> Result<Option<RangeInput>, QueryError> {
        match unwrap_parens(e) {
            Expr::MatrixSelector(ms) => Ok(Some(self.matrix_input(ms)?)),
            Expr::Subquery(sq) => Ok(Some(self.subquery_input(sq)?)),
            _ => Ok(None),
        }
    }

    fn eval_call(&self, c: &Call) -> Result<Val, QueryError> {
        super::functions::eval_call(self, c)
    }

    /// Per-step scalar values of an expression known to be a scalar.
    pub fn eval_scalar(&self, e: &Expr) -> Result<Vec<f64>, QueryError> {
        match self.eval(e)? {
            Val::Scalar(v) => Ok(v),
            _ => Err(QueryError::Execution("expected scalar".into())),
        }
    }

    /// Per-step vectors of an expression known to be an instant vector.
    pub fn eval_vector(&self, e: &Expr) -> Result<Vec<Vector>, QueryError> {
        match self.eval(e)? {
            Val::Vector(v) => Ok(v),
            _ => Err(QueryError::Execution("expected instant vector".into())),
        }
    }
}

/// [`drop_name`] cached per label set across the steps of one operation; entries keep the input
/// set alive so its address cannot be reused for another set meanwhile.
#[derive(Default)]
pub(crate) struct NameCache(HashMap<usize, (Arc<Labels>, Arc<Labels>)>);

impl NameCache {
    pub fn drop_name(&mut self, l: &Arc<Labels>) -> Arc<Labels> {
        if l.get("__name__").is_none() {
            return l.clone();
        }
        let key = Arc::as_ptr(l) as usize;
        if let Some((_, d)) = self.0.get(&key) {
            return d.clone();
        }
        let d = drop_name(l);
        self.0.insert(key, (l.clone(), d.clone()));
        d
    }
}

/// Labels without `__name__`.
pub(crate) fn drop_name(l: &Arc<Labels>) -> Arc<Labels> {
    if l.get("__name__").is_none() {
        return l.clone();
    }
    let mut n = (**l).clone();
    n.set("__name__", "");
    Arc::new(n)
}

/// Fails when two elements of a vector share a label set.
pub(crate) fn check_unique(v: &[S]) -> Result<(), QueryError> {
    if v.len() < 2 {
        return Ok(());
    }
    let mut seen = std::collections::HashSet::with_capacity(v.len());
    for s in v {
        if !seen.insert(&*s.labels) {
            return Err(QueryError::Execution("vector cannot contain metrics with the same labelset".into()));
        }
    }
    Ok(())
}
