use super::*;
use crate::model::{AnyValue, KeyValue, LogGroup, LogRecord};
use crate::read::{LogsReader, MatchOp};

const H: i64 = 3600 * 1_000_000_000;

fn rec(t: i64, body: &str) -> LogRecord {
    LogRecord { timestamp_ns: t, body: body.to_string(), ..LogRecord::default() }
}

fn group(svc: &str, records: Vec<LogRecord>) -> LogGroup {
    LogGroup {
        stream: Labels::from_pairs([("service_name", svc)]),
        resource: Resource {
            attributes: vec![KeyValue::new("service.name", AnyValue::String(svc.into()))],
            ..Resource::default()
        },
        records,
        ..LogGroup::default()
    }
}

fn pos(n: u64) -> WalPos {
    WalPos { segment: 1, offset: n }
}

fn bodies(store: &LogsHead, scan: &LogScan) -> Vec<String> {
    let mut out = Vec::new();
    store.scan(scan, &mut |l| {
        out.push(l.record.body.clone());
        true
    });
    out
}

fn all(start: i64, end: i64) -> LogScan {
    LogScan { start_ns: start, end_ns: end, ..LogScan::default() }
}

#[test]
fn timestamp_order_with_ties_in_arrival_order() {
    let head = LogsHead::open(None, &LogsOptions::default()).unwrap();
    head.apply(WalPos::ZERO, LogsBatch { groups: vec![group("a", vec![rec(20, "a1"), rec(10, "a2")])] });
    head.apply(
        WalPos::ZERO,
        LogsBatch { groups: vec![group("b", vec![rec(20, "b1")]), group("a", vec![rec(20, "a3")])] },
    );
    let logs = |m: &[(String, String)], s, e| head.logs(m, s, e).into_iter().map(|l| l.record.body).collect::<Vec<_>>();
    assert_eq!(logs(&[], 0, 100), vec!["a2", "a1", "b1", "a3"]);
    assert_eq!(logs(&[("service_name".into(), "a".into())], 0, 100), vec!["a2", "a1", "a3"]);
    assert_eq!(logs(&[], 11, 20), vec!["a1", "b1", "a3"]);
    assert_eq!(head.items(), 4);
    assert!(!head.persist().unwrap());
}

/// The same queries must give the same answers from the head, from the indexes, and from a mix.
#[test]
fn head_and_partitions_answer_alike_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let opts = LogsOptions::default();
    let store = LogsHead::open(Some(dir.path()), &opts).unwrap();
    let t0 = 1_700_000_000 * 1_000_000_000i64;
    let trace = TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").unwrap();
    let mut traced = rec(t0 + 5, "GET /api/users status=500 took 12ms");
    traced.trace_id = Some(trace);
    store.apply(pos(10), LogsBatch { groups: vec![group("api", vec![rec(t0, "xerror=1 started"), traced])] });
    store.apply(
        pos(20),
        LogsBatch { groups: vec![group("db", vec![rec(t0 + H, "slow query"), rec(t0 + 1, "conn error: reset")])] },
    );
    let check = |store: &LogsHead| {
        assert_eq!(
            bodies(store, &all(0, i64::MAX)),
            vec!["xerror=1 started", "conn error: reset", "GET /api/users status=500 took 12ms", "slow query"]
        );
        let mut back = all(0, i64::MAX);
        back.direction = Direction::Backward;
        assert_eq!(bodies(store, &back)[0], "slow query");
        // "error" sits inside the token "xerror": the hint must not prune it.
        let mut s = all(0, i64::MAX);
        s.line_contains = vec!["error".into()];
        assert_eq!(bodies(store, &s), vec!["xerror=1 started", "conn error: reset"]);
        s.line_contains = vec![" /api/".into()];
        assert_eq!(bodies(store, &s), vec!["GET /api/users status=500 took 12ms"]);
        let mut s = all(0, i64::MAX);
        s.matchers = vec![Matcher::new("service_name", MatchOp::Regex, "d.*").unwrap()];
        assert_eq!(bodies(store, &s), vec!["conn error: reset", "slow query"]);
        let by_trace = store.logs_by_trace(trace);
        assert_eq!(by_trace.len(), 1);
        assert_eq!(by_trace[0].stream.get("service_name"), Some("api"));
        assert_eq!(by_trace[0].resource.attr_str("service.name"), Some("api"));
        let names = |s, e| {
            store.streams(&[], s, e).iter().map(|l| l.get("service_name").unwrap().to_string()).collect::<Vec<_>>()
        };
        assert_eq!(names(0, i64::MAX), vec!["api", "db"]);
        assert_eq!(names(t0 + 2, t0 + 10), vec!["api"]);
        assert_eq!(names(t0 + H, t0 + H), vec!["db"]);
        assert_eq!(store.items(), 4);
    };
    check(&store);
    assert!(store.persist().unwrap());
    check(&store);
    let mut traced2 = rec(t0 + 7, "late line");
    traced2.trace_id = Some(trace);
    store.apply(pos(30), LogsBatch { groups: vec![group("api", vec![traced2])] });
    assert_eq!(store.logs_by_trace(trace).len(), 2);
    drop(store);

    // Reopen: what was persisted is there; a replay skips it and re-applies the rest.
    let store = LogsHead::open(Some(dir.path()), &opts).unwrap();
    assert_eq!(store.items(), 4);
    store.apply(pos(10), LogsBatch { groups: vec![group("api", vec![rec(t0, "xerror=1 started")])] });
    store.apply(pos(20), LogsBatch { groups: vec![group("db", vec![rec(t0 + H, "slow query")])] });
    let mut traced2 = rec(t0 + 7, "late line");
    traced2.trace_id = Some(trace);
    store.apply(pos(30), LogsBatch { groups: vec![group("api", vec![traced2])] });
    assert_eq!(store.items(), 5);
    assert_eq!(store.logs_by_trace(trace).len(), 2);
    store.persist().unwrap();
    drop(store);
    let store = LogsHead::open(Some(dir.path()), &opts).unwrap();
    assert_eq!(store.items(), 5);
    let mut s = all(0, i64::MAX);
    s.line_contains = vec!["late".into()];
    assert_eq!(bodies(&store, &s), vec!["late line"]);
}

#[test]
fn early_stop_and_retention() {
    let dir = tempfile::tempdir().unwrap();
    let opts = LogsOptions { retention_ns: 2 * H, ..LogsOptions::default() };
    let store = LogsHead::open(Some(dir.path()), &opts).unwrap();
    let t0 = 100 * H;
    for i in 0..5 {
        store.apply(pos(i as u64 + 1), LogsBatch { groups: vec![group("a", vec![rec(t0 + i * H, &format!("l{i}"))])] });
    }
    store.persist().unwrap();
    let mut seen = Vec::new();
    let mut s = all(0, i64::MAX);
    s.direction = Direction::Backward;
    store.scan(&s, &mut |l| {
        seen.push(l.record.body.clone());
        seen.len() < 2
    });
    assert_eq!(seen, vec!["l4", "l3"]);
    // now = t0 + 5h: partitions ending at or before t0 + 3h go.
    store.maintain((t0 + 5 * H) / 1_000_000).unwrap();
    assert_eq!(bodies(&store, &all(0, i64::MAX)), vec!["l3", "l4"]);
    let parts = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_str().unwrap().starts_with("part-"));
    assert_eq!(parts.count(), 2);
    // Size limit: only the newest partition is kept.
    let opts = LogsOptions { max_bytes: 1, ..LogsOptions::default() };
    drop(store);
    let store = LogsHead::open(Some(dir.path()), &opts).unwrap();
    store.maintain(0).unwrap();
    assert_eq!(bodies(&store, &all(0, i64::MAX)), vec!["l4"]);
}

/// Rough figures (debug build, so pessimistic): `cargo test -p storage logs::tests::measure -- --ignored --nocapture`.
#[test]
#[ignore]
fn measure() {
    let dir = tempfile::tempdir().unwrap();
    let store = LogsHead::open(Some(dir.path()), &LogsOptions::default()).unwrap();
    let n = 200_000i64;
    let t0 = 1_700_000_000 * 1_000_000_000i64;
    let started = std::time::Instant::now();
    for b in 0..(n / 1000) {
        let records = (0..1000)
            .map(|i| {
                let k = b * 1000 + i;
                rec(
                    t0 + k * 1_000_000,
                    &format!("GET /api/v1/users/{k} status={} took {}ms user=u{}", 200 + k % 7, k % 97, k % 1000),
                )
            })
            .collect();
        store.apply(pos(b as u64 + 1), LogsBatch { groups: vec![group(&format!("svc{}", b % 8), records)] });
    }
    let applied = started.elapsed();
    let started = std::time::Instant::now();
    store.persist().unwrap();
    let persisted = started.elapsed();
    let bytes: u64 = store.state.read().partitions.values().map(|p| p.bytes).sum();
    let mut by_ext: BTreeMap<String, u64> = BTreeMap::new();
    for p in store.state.read().partitions.values() {
        for e in std::fs::read_dir(&p.dir).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().to_string();
            let ext = name.rsplit('.').next().unwrap_or("").to_string();
            *by_ext.entry(ext).or_default() += e.metadata().unwrap().len();
        }
    }
    eprintln!("by file type: {by_ext:?}");
    let started = std::time::Instant::now();
    let mut s = all(0, i64::MAX);
    s.line_contains = vec!["status=203 took".into()];
    let hits = bodies(&store, &s).len();
    let filtered = started.elapsed();
    eprintln!(
        "{n} records: apply {applied:?}, persist {persisted:?}, {bytes} bytes on disk ({:.1} B/record), filter scan {filtered:?} ({hits} hits)",
        bytes as f64 / n as f64
    );
}

#[test]
fn a_large_head_flushes_on_demand_and_stays_queryable() {
    let dir = tempfile::tempdir().unwrap();
    let opts = LogsOptions { head_flush_bytes: 2_000, ..LogsOptions::default() };
    let store = LogsHead::open(Some(dir.path()), &opts).unwrap();
    store.apply(pos(1), LogsBatch { groups: vec![group("a", (0..5).map(|i| rec(i, "small")).collect())] });
    // Under the threshold: nothing to do.
    assert!(!store.flush_if_large().unwrap());
    assert_eq!(store.state.read().head.len(), 5);
    store.apply(pos(2), LogsBatch { groups: vec![group("a", (5..40).map(|i| rec(i, "a longer line")).collect())] });
    assert!(store.flush_if_large().unwrap());
    assert_eq!(store.state.read().head.len(), 0, "the flush drained the head");
    assert_eq!(bodies(&store, &all(0, 100)).len(), 40);
    assert!(!store.flushing.load(std::sync::atomic::Ordering::Acquire));
}

/// Many size-triggered flushes while records arrive for two partitions lose and duplicate nothing.
#[test]
fn repeated_flushes_across_partitions_keep_every_record() {
    let dir = tempfile::tempdir().unwrap();
    let opts = LogsOptions { head_flush_bytes: 20_000, ..LogsOptions::default() };
    let store = LogsHead::open(Some(dir.path()), &opts).unwrap();
    let mut n = 0i64;
    for b in 0..200u64 {
        let recs: Vec<LogRecord> = (0..50)
            .map(|_| {
                n += 1;
                // Spread over two hours so batches straddle the partition boundary.
                rec(n * (2 * H / 10_000), "some line with words")
            })
            .collect();
        store.apply(pos(b + 1), LogsBatch { groups: vec![group(if b % 2 == 0 { "a" } else { "b" }, recs)] });
        store.flush_if_large().unwrap();
    }
    store.persist().unwrap();
    assert_eq!(bodies(&store, &all(0, 3 * H)).len(), 10_000);
    let reopened = LogsHead::open(Some(dir.path()), &opts).unwrap();
    assert_eq!(bodies(&reopened, &all(0, 3 * H)).len(), 10_000);
}

/// The records of the frozen v1 image (`testdata/compat/logs-v1`): two streams, metadata, trace
/// context, two partitions, two commits.
fn compat_batches() -> Vec<(WalPos, LogsBatch)> {
    let t0 = 1_700_000_000 * 1_000_000_000i64;
    let trace = TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").unwrap();
    let mut full = rec(t0 + 5, "GET /api/users status=500 took 12ms");
    full.trace_id = Some(trace);
    full.span_id = crate::model::SpanId::from_hex("b7ad6b7169203331");
    full.severity_number = 17;
    full.severity_text = "ERROR".into();
    full.observed_timestamp_ns = t0 + 9;
    full.attributes = vec![KeyValue::new("http.method", AnyValue::String("GET".into()))];
    full.flags = 1;
    full.event_name = "request".into();
    vec![
        (pos(10), LogsBatch { groups: vec![group("api", vec![rec(t0, "xerror=1 started"), full])] }),
        (
            pos(20),
            LogsBatch { groups: vec![group("db", vec![rec(t0 + H, "slow query"), rec(t0 + 1, "conn error: reset")])] },
        ),
        (pos(30), LogsBatch { groups: vec![group("api", vec![rec(t0 + 7, "late line")])] }),
    ]
}

#[test]
fn the_logs_v1_image_is_migrated() {
    let image = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/compat/logs-v1");
    let batches = compat_batches();
    if std::env::var_os("OUTPOST_REGENERATE_COMPAT").is_some() {
        let _ = std::fs::remove_dir_all(&image);
        let store = LogsHead::open(Some(&image), &LogsOptions::default()).unwrap();
        for (i, (p, b)) in batches.iter().enumerate() {
            store.apply(*p, b.clone());
            if i != 1 {
                store.persist().unwrap();
            }
        }
        drop(store);
    }
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&image, tmp.path());
    let store = LogsHead::open(Some(tmp.path()), &LogsOptions::default()).unwrap();
    let got = store.logs(&[], 0, i64::MAX);
    let mut want: Vec<(i64, LogRecord)> = Vec::new();
    for (_, b) in &batches {
        for g in &b.groups {
            for r in &g.records {
                want.push((r.timestamp_ns, r.clone()));
            }
        }
    }
    want.sort_by_key(|(t, _)| *t);
    assert_eq!(
        got.iter().map(|l| l.record.clone()).collect::<Vec<_>>(),
        want.into_iter().map(|(_, r)| r).collect::<Vec<_>>()
    );
    assert_eq!(got[2].resource.attr_str("service.name"), Some("api"));
    assert_eq!(got[1].stream.get("service_name"), Some("db"));
    // Replay of the WAL after the migration skips what the v1 partitions had committed.
    for (p, b) in &batches {
        store.apply(*p, b.clone());
    }
    assert_eq!(store.items(), 5);
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}

/// `lines` (timestamp, body) are in `scan`'s direction by timestamp.
fn assert_in_scan_order(lines: &[(i64, String)], scan: &LogScan, what: &str) {
    let ts: Vec<i64> = lines.iter().map(|g| g.0).collect();
    let mut sorted = ts.clone();
    sorted.sort();
    if scan.direction == Direction::Backward {
        sorted.reverse();
    }
    assert_eq!(ts, sorted, "{what} order, {scan:?}");
}

/// Index narrowing never drops a match: random lines (tokens, numbers, long hex runs, trace ids)
/// in several streams, flushed in several commits plus a head, against a brute-force filter, for
/// random substring hints, trace ids, ranges and both directions, through `scan`, the unordered
/// `scan_lines`, and `scan_lines` with a body filter and a line filter (in order or not, with the
/// lines they drop counted).
#[test]
fn narrowing_never_drops_a_match() {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut rnd = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let words = ["error", "info", "GET", "POST", "/api/v1/users", "timeout", "ünï", "x", "status=500", "db"];
    let dir = tempfile::tempdir().unwrap();
    let store =
        LogsHead::open(Some(dir.path()), &LogsOptions { partition_ns: H / 4, ..LogsOptions::default() }).unwrap();
    let t0 = 1_700_000_000 * 1_000_000_000i64;
    let mut all_recs: Vec<(String, LogRecord)> = Vec::new();
    let mut traces = Vec::new();
    for b in 0..12u64 {
        let mut groups = Vec::new();
        for s in 0..3 {
            let mut recs = Vec::new();
            for _ in 0..rnd(60) {
                let mut body = String::new();
                for _ in 0..1 + rnd(8) {
                    match rnd(4) {
                        0 => body.push_str(&format!("{:016x}{:016x}{:x}", rnd(u64::MAX), rnd(u64::MAX), rnd(256))),
                        1 => body.push_str(&rnd(100_000).to_string()),
                        _ => body.push_str(words[rnd(words.len() as u64) as usize]),
                    }
                    body.push([' ', '=', ',', '"'][rnd(4) as usize]);
                }
                let mut r = rec(t0 + rnd(H as u64) as i64, &body);
                if rnd(3) == 0 {
                    let t = TraceId::from_hex(&format!("{:032x}", rnd(40) + 1)).unwrap();
                    r.trace_id = Some(t);
                    traces.push(t);
                }
                all_recs.push((format!("s{s}"), r.clone()));
                recs.push(r);
            }
            groups.push(group(&format!("s{s}"), recs));
        }
        store.apply(pos(b + 1), LogsBatch { groups });
        if b % 4 != 3 {
            store.persist().unwrap();
        }
    }
    let mut hints: Vec<String> = words.iter().map(|w| w.to_string()).collect();
    for (_, r) in all_recs.iter().take(40) {
        let b = &r.body;
        let (i, j) = (rnd(b.len() as u64) as usize, rnd(b.len() as u64) as usize);
        let (i, j) = (i.min(j), i.max(j) + 1);
        if let Some(h) = b.get(i..j.min(b.len())) {
            hints.push(h.to_string());
        }
        if let Some(h) = b.get(i..(i + 33).min(b.len())) {
            hints.push(h.to_string());
        }
        // A whole long run, as a trace-id needle would be.
        if let Some(run) = b.split(|c: char| !c.is_alphanumeric()).find(|r| r.len() >= 32) {
            hints.push(run.to_string());
            hints.push(format!(" {run}"));
        }
    }
    hints.push(" GET ".into());
    hints.push("=500,".into());
    for k in 0..300 {
        let mut scan = all(t0 + rnd(H as u64) as i64 - H / 8, t0 + rnd(2 * H as u64) as i64);
        if k % 3 == 0 {
            scan.start_ns = 0;
            scan.end_ns = i64::MAX;
        }
        scan.line_contains = (0..rnd(3)).map(|_| hints[rnd(hints.len() as u64) as usize].clone()).collect();
        if rnd(5) == 0 && !traces.is_empty() {
            scan.trace_id = Some(traces[rnd(traces.len() as u64) as usize]);
        }
        if rnd(4) == 0 {
            scan.matchers = vec![Matcher::new("service_name", MatchOp::Regex, "s[01]").unwrap()];
        }
        scan.direction = if rnd(2) == 0 { Direction::Forward } else { Direction::Backward };
        let selected: Vec<&(String, LogRecord)> = all_recs
            .iter()
            .filter(|(s, r)| {
                r.timestamp_ns >= scan.start_ns
                    && r.timestamp_ns <= scan.end_ns
                    && (scan.matchers.is_empty() || s != "s2")
                    && scan.trace_id.is_none_or(|t| r.trace_id == Some(t))
                    && scan.line_contains.iter().all(|h| r.body.contains(h.as_str()))
            })
            .collect();
        let mut want: Vec<(i64, String)> = selected.iter().map(|(_, r)| (r.timestamp_ns, r.body.clone())).collect();
        let mut got: Vec<(i64, String)> = Vec::new();
        store.scan(&scan, &mut |l| {
            got.push((l.record.timestamp_ns, l.record.body.clone()));
            true
        });
        assert_in_scan_order(&got, &scan, "scan");
        got.sort();
        want.sort();
        assert_eq!(got, want, "{scan:?}");
        let mut lean: Vec<(i64, String)> = Vec::new();
        let ls = crate::read::LineScan {
            scan: &scan,
            ordered: false,
            bodies: true,
            meta: false,
            body_filter: None,
            line_filter: None,
            dropped: None,
            stop: None,
        };
        store.scan_lines(&ls, &mut |l| {
            lean.push((l.timestamp_ns(), l.body().to_string()));
            true
        });
        lean.sort();
        assert_eq!(lean, want, "unordered, {scan:?}");
        // Through a body filter and a line filter (stream label, metadata, body), which the
        // store runs on its reading threads, in order or not.
        let body_filter = |b: &str| !b.contains("=500,");
        let line_filter = |l: &dyn crate::read::LogLine| {
            l.stream().get("service_name") == Some("s0")
                || l.body().len().is_multiple_of(2)
                || l.meta().trace_id.is_some()
        };
        let mut want_filtered: Vec<(i64, String)> = selected
            .iter()
            .filter(|(s, r)| {
                !r.body.contains("=500,") && (s == "s0" || r.body.len().is_multiple_of(2) || r.trace_id.is_some())
            })
            .map(|(_, r)| (r.timestamp_ns, r.body.clone()))
            .collect();
        let ordered = k % 2 == 0;
        let dropped = crate::read::Dropped::default();
        let ls = crate::read::LineScan {
            scan: &scan,
            ordered,
            bodies: true,
            meta: ordered,
            body_filter: Some(&body_filter),
            line_filter: Some(&line_filter),
            dropped: Some(&dropped),
            stop: None,
        };
        let mut filtered: Vec<(i64, String)> = Vec::new();
        store.scan_lines(&ls, &mut |l| {
            filtered.push((l.timestamp_ns(), l.body().to_string()));
            true
        });
        if ordered {
            assert_in_scan_order(&filtered, &scan, "filtered scan");
        }
        filtered.sort();
        want_filtered.sort();
        assert_eq!(filtered, want_filtered, "filtered, {scan:?}");
        // Every line read is either visited or counted as dropped (chunks the index rules out
        // are neither; without hints and outside trace-id scans it rules none out).
        if scan.line_contains.is_empty() && scan.trace_id.is_none() {
            let body_bytes = |v: &[(i64, String)]| v.iter().map(|(_, b)| b.len() as u64).sum::<u64>();
            let (lines, bytes) = dropped.get();
            assert_eq!(lines, (want.len() - want_filtered.len()) as u64, "dropped lines, {scan:?}");
            assert_eq!(bytes, body_bytes(&want) - body_bytes(&want_filtered), "dropped bytes, {scan:?}");
        }
    }
}

/// Records damaged-chunk reports.
#[derive(Default)]
struct DamageLog(Mutex<Vec<(std::path::PathBuf, usize, String)>>);

impl crate::StorageEvents for DamageLog {
    fn log_chunk_damaged(&self, path: &std::path::Path, chunk: usize, detail: &str) {
        self.0.lock().push((path.to_path_buf(), chunk, detail.to_string()));
    }
}

/// A damaged chunk on disk (a flipped byte) is skipped by scans, never a panic, and reported
/// once through the storage events; the other chunks still answer. A data file no commit refers
/// to (a flush cut short) is deleted at open.
#[test]
fn damaged_chunks_are_skipped_and_uncommitted_files_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let opts = LogsOptions::default();
    let store = LogsHead::open(Some(dir.path()), &opts).unwrap();
    let t0 = 1_700_000_000 * 1_000_000_000i64;
    store.apply(pos(1), LogsBatch { groups: vec![group("a", vec![rec(t0, "first line")])] });
    store.persist().unwrap();
    store.apply(pos(2), LogsBatch { groups: vec![group("b", vec![rec(t0 + 1, "second line")])] });
    store.persist().unwrap();
    drop(store);
    let part = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_str().unwrap().starts_with("part-"))
        .unwrap();
    let f = part.join("chunks-1.dat");
    let mut bytes = std::fs::read(&f).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 0x55;
    std::fs::write(&f, bytes).unwrap();
    std::fs::write(part.join("chunks-9.dat"), b"torn").unwrap();
    let store = LogsHead::open(Some(dir.path()), &opts).unwrap();
    let events = Arc::new(DamageLog::default());
    store.set_events(Arc::clone(&events) as Arc<dyn crate::StorageEvents>);
    assert!(!part.join("chunks-9.dat").exists());
    assert_eq!(bodies(&store, &all(0, i64::MAX)), vec!["second line"]);
    let mut s = all(0, i64::MAX);
    s.line_contains = vec!["line".into()];
    assert_eq!(bodies(&store, &s), vec!["second line"]);
    assert_eq!(store.streams(&[], 0, i64::MAX).len(), 2, "a damaged chunk still counts for its stream");
    let reports = events.0.lock().clone();
    assert_eq!(reports.len(), 1, "once per chunk, however many scans: {reports:?}");
    // The damaged chunk is the one stored in `chunks-1.dat` (its number depends on the order the
    // index lists chunks in).
    let in_file_1 = {
        let st = store.state.read();
        let p = st.partitions.values().next().unwrap();
        p.chunks.iter().position(|c| c.file == 1).unwrap()
    };
    let (path, chunk, detail) = &reports[0];
    assert_eq!((path, *chunk), (&part, in_file_1));
    assert!(detail.starts_with("damaged log chunk"), "{detail}");
}

/// A scan whose `stop` answers true reads no more chunks: the deadline and the lines limit hold
/// even when the filters drop every line and the visitor never runs.
#[test]
fn a_stopped_scan_reads_no_more_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let store = LogsHead::open(Some(dir.path()), &LogsOptions::default()).unwrap();
    let t0 = 1_700_000_000 * 1_000_000_000i64;
    for b in 0..4 {
        let recs = (0..50).map(|i| rec(t0 + b * 100 + i, &format!("line {b} {i}"))).collect();
        store.apply(pos(b as u64 + 1), LogsBatch { groups: vec![group("a", recs)] });
        store.persist().unwrap();
    }
    let scan = LogScan { start_ns: 0, end_ns: i64::MAX, ..LogScan::default() };
    let run = |stop: &(dyn Fn() -> bool + Sync), ordered: bool| {
        let dropped = crate::read::Dropped::default();
        let drop_all = |_: &str| false;
        let ls = crate::read::LineScan {
            scan: &scan,
            ordered,
            bodies: true,
            meta: false,
            body_filter: Some(&drop_all),
            line_filter: None,
            dropped: Some(&dropped),
            stop: Some(stop),
        };
        let mut visited = 0;
        store.scan_lines(&ls, &mut |_| {
            visited += 1;
            true
        });
        assert_eq!(visited, 0);
        dropped.get().0
    };
    for ordered in [false, true] {
        assert_eq!(run(&|| false, ordered), 200, "every line read and dropped");
        assert_eq!(run(&|| true, ordered), 0, "no chunk read");
    }
}

/// Resident pages (KiB) of this process' maps of the logs chunk files under `dir`
/// (`/proc/self/smaps`; Linux).
#[cfg(target_os = "linux")]
fn chunk_rss_kib(dir: &std::path::Path) -> u64 {
    crate::mmap::mapped_rss_kib(&[dir.to_str().unwrap(), "chunks-"])
}

/// A scan leaves none of the chunks it read mapped into the process (their pages stay in the
/// page cache), and scanning again reads the same records.
#[cfg(target_os = "linux")]
#[test]
fn scanned_chunks_leave_the_process_rss() {
    let dir = tempfile::tempdir().unwrap();
    let store = LogsHead::open(Some(dir.path()), &LogsOptions::default()).unwrap();
    // Lines that do not compress to nothing: about 2 MB of chunks over 8 streams.
    let mut x: u64 = 1;
    for b in 0..40u64 {
        let recs: Vec<LogRecord> = (0..500)
            .map(|k| {
                x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1442695040888963407);
                rec((b * 500 + k) as i64 * 1_000_000, &format!("request {x:016x} took {}ms", x % 997))
            })
            .collect();
        store.apply(pos(b + 1), LogsBatch { groups: vec![group(&format!("s{}", b % 8), recs)] });
    }
    store.persist().unwrap();
    let first = bodies(&store, &all(0, H));
    assert_eq!(first.len(), 20_000);
    assert_eq!(chunk_rss_kib(dir.path()), 0, "chunk pages still mapped after the scan");
    assert_eq!(bodies(&store, &all(0, H)), first);
    assert_eq!(chunk_rss_kib(dir.path()), 0);
    // Needle look-ups probe every chunk's bloom filter, read without the map: nothing is mapped
    // after them either (through the map, the kernel's fault-around mapped most of the files).
    let trace = LogScan { trace_id: TraceId::from_hex(&"ab".repeat(16)), ..all(0, H) };
    assert!(bodies(&store, &trace).is_empty());
    assert_eq!(chunk_rss_kib(dir.path()), 0, "bloom filters left mapped by the trace look-up");
    let needle = LogScan { line_contains: vec!["request 0123456789abcdef".into()], ..all(0, H) };
    assert!(bodies(&store, &needle).is_empty());
    assert_eq!(chunk_rss_kib(dir.path()), 0, "pages left mapped by the needle scan");
    // A chunk entry pointing past the end of its file (a damaged index) is refused before its
    // filter is read, and a needle scan keeps the chunk for the reader to report.
    let part = Arc::clone(store.state.read().partitions.values().next().unwrap());
    let mut bad = (*part).clone();
    let mut chunks = (*bad.chunks).clone();
    chunks[0].offset = 1 << 40;
    bad.chunks = Arc::new(chunks);
    let e = bad.read_bloom(0, &mut Vec::new()).unwrap_err();
    assert!(e.to_string().contains("out of its file's bounds"), "{e}");
    assert!(part.read_bloom(0, &mut Vec::new()).is_ok());
    // A needle that is there is still found.
    let there = first[12_345].clone();
    let found = LogScan { line_contains: vec![there.clone()], ..all(0, H) };
    assert_eq!(bodies(&store, &found), [there]);
}
