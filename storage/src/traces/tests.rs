use super::*;
use crate::model::{AnyValue, KeyValue, Span, SpanEvent, SpanGroup, SpanId, SpanKind, SpanLink, StatusCode};
use crate::read::TracesReader;

fn tid(n: u8) -> TraceId {
    TraceId([n; 16])
}

pub(crate) fn full_span(trace: u8, span: u8, start: i64) -> Span {
    Span {
        trace_id: tid(trace),
        span_id: SpanId([span; 8]),
        parent_span_id: if span == 1 { None } else { Some(SpanId([1; 8])) },
        trace_state: "k=v".into(),
        flags: 0x301,
        name: format!("op-{span}"),
        kind: SpanKind::Server,
        start_time_ns: start,
        end_time_ns: start + 1_000,
        attributes: vec![
            KeyValue::new("s", AnyValue::String("x".into())),
            KeyValue::new("i", AnyValue::Int(-7)),
            KeyValue::new("d", AnyValue::Double(f64::NEG_INFINITY)),
            KeyValue::new("b", AnyValue::Bytes(vec![0, 1, 255])),
            KeyValue::new("a", AnyValue::Array(vec![AnyValue::Bool(false)])),
            KeyValue::new("k", AnyValue::KvList(vec![KeyValue::new("z", AnyValue::Empty)])),
        ],
        dropped_attributes_count: 3,
        events: vec![SpanEvent {
            time_ns: start + 5,
            name: "ev".into(),
            attributes: vec![KeyValue::new("e", AnyValue::Int(1))],
            dropped_attributes_count: 1,
        }],
        dropped_events_count: 2,
        links: vec![SpanLink {
            trace_id: tid(99),
            span_id: SpanId([9; 8]),
            trace_state: "l=1".into(),
            attributes: vec![KeyValue::new("l", AnyValue::Bool(true))],
            dropped_attributes_count: 4,
            flags: 1,
        }],
        dropped_links_count: 5,
        status_code: StatusCode::Error,
        status_message: "boom".into(),
    }
}

pub(crate) fn batch(service: &str, spans: Vec<Span>) -> SpansBatch {
    SpansBatch {
        groups: vec![SpanGroup {
            resource: Resource {
                attributes: vec![KeyValue::new("service.name", AnyValue::String(service.into()))],
                dropped_attributes_count: 1,
                schema_url: "https://r".into(),
            },
            scope: Scope {
                name: "lib".into(),
                version: "1.2".into(),
                attributes: vec![KeyValue::new("sa", AnyValue::Double(0.5))],
                dropped_attributes_count: 2,
                schema_url: "https://s".into(),
            },
            spans,
        }],
    }
}

pub(crate) fn pos(n: u64) -> WalPos {
    WalPos { segment: 1, offset: n }
}

fn opts() -> TracesOptions {
    TracesOptions { row_group_rows: 3, page_rows: 2, ..TracesOptions::default() }
}

#[test]
fn a_head_over_its_size_flushes_to_a_file_between_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let o = TracesOptions { head_flush_bytes: 20_000, ..opts() };
    let head = TracesHead::open(Some(dir.path()), &o).unwrap();
    // Small enough to stay in the head.
    head.apply(pos(1), batch("shop", vec![full_span(1, 1, 1_000)]));
    assert!(!head.flush_if_large().unwrap());
    assert_eq!(head.state.read().files.len(), 0);
    // Over the limit: the next check writes a file, and the head starts over.
    let mut n = 1;
    for t in 2..=40u8 {
        n += 1;
        head.apply(pos(n), batch("shop", vec![full_span(t, 1, 1_000 + i64::from(t)), full_span(1, t, 2_000)]));
    }
    assert!(head.state.read().head.bytes > 20_000);
    assert!(head.flush_if_large().unwrap());
    assert_eq!(head.state.read().files.len(), 1);
    assert_eq!(head.state.read().head.bytes, 0);
    assert_eq!(head.span_count(), 79);
    // Trace 1's spans: in arrival order, from the file.
    let t1: Vec<u8> = head.trace(tid(1)).iter().map(|s| s.span.span_id.0[0]).collect();
    assert_eq!(t1, (1..=40).collect::<Vec<u8>>());
    head.apply(pos(n + 1), batch("shop", vec![full_span(1, 41, 3_000)]));
    // Reopen and replay every position: what the file holds is skipped, the rest applied.
    drop(head);
    let head = TracesHead::open(Some(dir.path()), &o).unwrap();
    head.apply(pos(1), batch("shop", vec![full_span(1, 1, 1_000)]));
    head.apply(pos(n + 1), batch("shop", vec![full_span(1, 41, 3_000)]));
    assert_eq!(head.span_count(), 80);
    assert_eq!(head.trace(tid(1)).len(), 41);
    // Off when the limit is 0.
    let o = TracesOptions { head_flush_bytes: 0, ..opts() };
    let dir = tempfile::tempdir().unwrap();
    let head = TracesHead::open(Some(dir.path()), &o).unwrap();
    head.apply(pos(1), batch("shop", (1..=40).map(|s| full_span(1, s, 1_000)).collect()));
    assert!(!head.flush_if_large().unwrap());
}

#[test]
fn every_field_survives_a_flush_and_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let head = TracesHead::open(Some(dir.path()), &opts()).unwrap();
    let b = batch("shop", vec![full_span(1, 1, 1_000), full_span(1, 2, 2_000)]);
    head.apply(pos(1), b.clone());
    let before = head.trace(tid(1));
    assert!(head.persist().unwrap());
    assert_eq!(head.trace(tid(1)), before);
    drop(head);
    let head = TracesHead::open(Some(dir.path()), &opts()).unwrap();
    let after = head.trace(tid(1));
    assert_eq!(after.len(), 2);
    assert_eq!(after[0].span, b.groups[0].spans[0]);
    assert_eq!(after[1].span, b.groups[0].spans[1]);
    assert_eq!(*after[0].resource, b.groups[0].resource);
    assert_eq!(*after[0].scope, b.groups[0].scope);
    assert_eq!(head.span_count(), 2);
    // Replay of what the files hold is skipped; later positions are applied.
    head.apply(pos(1), b.clone());
    assert_eq!(head.span_count(), 2);
    head.apply(pos(2), batch("shop", vec![full_span(1, 3, 3_000)]));
    assert_eq!(head.trace(tid(1)).len(), 3);
}

#[test]
fn a_trace_spread_over_files_and_head_reads_back_in_arrival_order() {
    let dir = tempfile::tempdir().unwrap();
    let head = TracesHead::open(Some(dir.path()), &opts()).unwrap();
    let mut n = 0;
    for round in 0..3u8 {
        let mut spans = Vec::new();
        for t in 1..=5u8 {
            n += 1;
            spans.push(full_span(t, 10 + round, 1_000 * i64::from(n)));
        }
        head.apply(pos(u64::from(round) + 1), batch("svc", spans));
        if round < 2 {
            assert!(head.persist().unwrap());
        }
    }
    for t in 1..=5u8 {
        let names: Vec<String> = head.trace(tid(t)).into_iter().map(|s| s.span.name).collect();
        assert_eq!(names, ["op-10", "op-11", "op-12"], "trace {t}");
    }
    assert_eq!(head.trace_ids().len(), 5);
    assert!(head.trace(tid(77)).is_empty());

    // Compaction merges the two small files and keeps the order.
    head.maintain(0).unwrap();
    assert_eq!(head.state.read().files.len(), 1);
    for t in 1..=5u8 {
        let names: Vec<String> = head.trace(tid(t)).into_iter().map(|s| s.span.name).collect();
        assert_eq!(names, ["op-10", "op-11", "op-12"], "trace {t} after compaction");
    }
    drop(head);
    let head = TracesHead::open(Some(dir.path()), &opts()).unwrap();
    assert_eq!(head.trace(tid(3)).len(), 2, "the unflushed round comes back from the WAL, not from files");
    let parquet = fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "parquet"))
        .count();
    assert_eq!(parquet, 1, "merged files are deleted");
}

#[test]
fn scans_visit_the_head_newest_first_then_files_and_prune_by_service_and_name() {
    let dir = tempfile::tempdir().unwrap();
    let head = TracesHead::open(Some(dir.path()), &opts()).unwrap();
    head.apply(pos(1), batch("a", vec![full_span(1, 1, 1_000), full_span(2, 1, 5_000)]));
    head.persist().unwrap();
    head.apply(pos(2), batch("b", vec![full_span(3, 1, 3_000), full_span(1, 2, 9_000)]));
    let all = |scan: &TraceScan| -> Vec<TraceId> {
        let mut v = Vec::new();
        head.scan_traces(scan, &mut |spans| {
            v.push(spans[0].span.trace_id);
            true
        });
        v
    };
    let everything = TraceScan { start_ns: 0, end_ns: i64::MAX, ..TraceScan::default() };
    // Traces 1 and 3 have spans in the head (1 ends last), 2 is only in the file.
    assert_eq!(all(&everything), [tid(1), tid(3), tid(2)]);
    head.persist().unwrap();
    // All in files now: the newest file first (3, and 1 read whole from both files), then 2.
    assert_eq!(all(&everything), [tid(1), tid(3), tid(2)]);
    let b_only = TraceScan { service_name: Some("b".into()), ..everything.clone() };
    assert_eq!(all(&b_only), [tid(1), tid(3)]);
    let early = TraceScan { start_ns: 0, end_ns: 2_000, ..TraceScan::default() };
    assert_eq!(all(&early), [tid(1)]);
    let named = TraceScan { span_name: Some("op-2".into()), ..everything.clone() };
    assert_eq!(all(&named), [tid(1)]);
    // A trace found through one file comes with its spans from every file.
    let mut spans_of_1 = 0;
    head.scan_traces(&b_only, &mut |spans| {
        if spans[0].span.trace_id == tid(1) {
            spans_of_1 = spans.len();
        }
        true
    });
    assert_eq!(spans_of_1, 2);
}

#[test]
fn retention_drops_old_files_by_age_and_by_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let o = TracesOptions { retention_ms: 10_000, compact_below_bytes: 0, ..opts() };
    let head = TracesHead::open(Some(dir.path()), &o).unwrap();
    head.apply(pos(1), batch("a", vec![full_span(1, 1, 1_000_000_000)]));
    head.persist().unwrap();
    head.apply(pos(2), batch("a", vec![full_span(2, 1, 20_000_000_000)]));
    head.persist().unwrap();
    head.maintain(15_000).unwrap();
    assert!(head.trace(tid(1)).is_empty());
    assert_eq!(head.trace(tid(2)).len(), 1);
    drop(head);
    let o = TracesOptions { max_bytes: 1, retention_ms: 0, compact_below_bytes: 0, ..opts() };
    let head = TracesHead::open(Some(dir.path()), &o).unwrap();
    assert_eq!(head.trace(tid(2)).len(), 1);
    head.maintain(0).unwrap();
    assert_eq!(head.span_count(), 0);
}

#[test]
fn memory_only_never_persists() {
    let head = TracesHead::open(None, &opts()).unwrap();
    head.apply(WalPos::ZERO, batch("a", vec![full_span(1, 1, 1)]));
    head.apply(WalPos::ZERO, batch("a", vec![full_span(1, 2, 1)]));
    assert!(!head.persist().unwrap());
    assert_eq!(head.trace(tid(1)).len(), 2);
}

/// Trace-by-id latency over many stored spans: `OUTPOST_TRACE_BENCH_SPANS` spans (default 1 M) in
/// 10-span traces, flushed every 200k spans, then compacted; prints p50/p99 of 1000 lookups.
/// Run: `cargo test -p storage --lib traces::tests::lookup_latency -- --ignored --nocapture`.
#[test]
#[ignore]
fn lookup_latency() {
    let total: usize =
        std::env::var("OUTPOST_TRACE_BENCH_SPANS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let dir = tempfile::tempdir().unwrap();
    let rg: usize = std::env::var("OUTPOST_TRACE_BENCH_RG").ok().and_then(|v| v.parse().ok()).unwrap_or(1024);
    let page: usize = std::env::var("OUTPOST_TRACE_BENCH_PAGE").ok().and_then(|v| v.parse().ok()).unwrap_or(512);
    let o = TracesOptions { row_group_rows: rg, page_rows: page, ..TracesOptions::default() };
    let head = TracesHead::open(Some(dir.path()), &o).unwrap();
    let id = |n: usize| {
        let mut t = [0u8; 16];
        t[..8].copy_from_slice(&(n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15).to_be_bytes());
        t[8..].copy_from_slice(&(n as u64 + 1).to_le_bytes());
        TraceId(t)
    };
    let started = std::time::Instant::now();
    let mut pos = 0u64;
    let mut n = 0usize;
    while n < total {
        let mut spans = Vec::with_capacity(1000);
        for _ in 0..100 {
            let t = id(n / 10);
            for k in 0..10u8 {
                let mut s = full_span(0, k + 1, 1_700_000_000_000_000_000 + n as i64 * 1000);
                s.trace_id = t;
                s.links.clear();
                spans.push(s);
                n += 1;
            }
        }
        pos += 1;
        head.apply(WalPos { segment: 1, offset: pos }, batch("svc", spans));
        if n.is_multiple_of(200_000) {
            head.persist().unwrap();
        }
    }
    head.persist().unwrap();
    let ingest = started.elapsed();
    head.maintain(0).unwrap();
    let files = head.state.read().files.len();
    let mut times = Vec::new();
    for i in 0..1000 {
        let t = id((i * 7919) % (total / 10));
        let s = std::time::Instant::now();
        let spans = head.trace(t);
        times.push(s.elapsed());
        assert_eq!(spans.len(), 10);
    }
    times.sort();
    let bytes: u64 = head.state.read().files.iter().map(|f| f.summary.bytes).sum();
    eprintln!(
        "{total} spans, {files} files, {bytes} bytes ({:.1} B/span), ingest+flush {ingest:?}; lookup p50 {:?} p99 {:?} max {:?}",
        bytes as f64 / total as f64,
        times[500],
        times[990],
        times[999]
    );
}

/// Opens a copy of the frozen image `storage/testdata/compat/<name>/` (a manifest, two span files
/// holding one trace across both), checks what it reads back, then adds a file in today's format
/// and compacts the old and the new together. With `regenerate`, writes the image first (only for
/// the current format version, when it is new).
fn check_frozen_traces_image(name: &str, regenerate: bool) {
    let image = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/compat").join(name);
    let first =
        batch("shop", vec![full_span(1, 1, 1_700_000_000_000_000_000), full_span(2, 1, 1_700_000_000_000_001_000)]);
    let second = batch("cart", vec![full_span(1, 2, 1_700_000_000_000_002_000)]);
    if regenerate {
        let _ = fs::remove_dir_all(&image);
        let head = TracesHead::open(Some(&image), &opts()).unwrap();
        head.apply(pos(1), first.clone());
        head.persist().unwrap();
        head.apply(pos(2), second.clone());
        head.persist().unwrap();
    }
    let tmp = tempfile::tempdir().unwrap();
    for e in fs::read_dir(&image).unwrap() {
        let p = e.unwrap().path();
        fs::copy(&p, tmp.path().join(p.file_name().unwrap())).unwrap();
    }
    let head = TracesHead::open(Some(tmp.path()), &opts()).unwrap();
    assert_eq!(head.state.read().persisted, pos(2));
    let t1 = head.trace(tid(1));
    assert_eq!(t1.len(), 2);
    assert_eq!(t1[0].span, first.groups[0].spans[0]);
    assert_eq!(*t1[0].resource, first.groups[0].resource);
    assert_eq!(*t1[0].scope, first.groups[0].scope);
    assert_eq!(t1[1].span, second.groups[0].spans[0]);
    assert_eq!(*t1[1].resource, second.groups[0].resource);
    assert_eq!(head.trace(tid(2))[0].span, first.groups[0].spans[1]);
    // A file in today's layout next to them, then compaction of the old and the new together.
    let third = batch("pay", vec![full_span(1, 3, 1_700_000_000_000_003_000)]);
    head.apply(pos(3), third.clone());
    head.persist().unwrap();
    head.maintain(0).unwrap();
    assert_eq!(head.state.read().files.len(), 1);
    assert_eq!(head.state.read().files[0].version, file::FORMAT_VERSION, "compaction writes today's format");
    let t1 = head.trace(tid(1));
    assert_eq!(t1.len(), 3);
    assert_eq!(t1[0].span, first.groups[0].spans[0]);
    assert_eq!(t1[1].span, second.groups[0].spans[0]);
    assert_eq!(t1[2].span, third.groups[0].spans[0]);
    assert_eq!(*t1[2].resource, third.groups[0].resource);
    assert_eq!(head.trace(tid(2))[0].span, first.groups[0].spans[1]);
}

/// The frozen format-1 image (attributes, events and links as JSON text) must open, read back
/// unchanged and compact into format 2 forever.
#[test]
fn the_traces_v1_image_still_opens() {
    check_frozen_traces_image("traces-v1", false);
}

/// The frozen format-2 image (postcard nested columns). Regenerate only when adding a format
/// version (and then add the new one instead): `OUTPOST_REGENERATE_COMPAT=1 cargo test -p storage
/// --lib traces_v2`.
#[test]
fn the_traces_v2_image_still_opens() {
    check_frozen_traces_image("traces-v2", std::env::var_os("OUTPOST_REGENERATE_COMPAT").is_some());
}

#[test]
fn a_duration_hint_skips_traces_without_a_long_enough_span_in_files_and_head() {
    let dir = tempfile::tempdir().unwrap();
    let head = TracesHead::open(Some(dir.path()), &opts()).unwrap();
    let long = |t: u8, s: u8| {
        let mut sp = full_span(t, s, 1_000);
        sp.end_time_ns = sp.start_time_ns + 50_000;
        sp
    };
    // Trace 2's long span is in the file; trace 4's part in the file is short but its long span
    // comes later in the head; trace 6 is long and only in the head.
    head.apply(pos(1), batch("a", vec![full_span(1, 1, 1_000), full_span(2, 1, 1_000), long(2, 2)]));
    head.apply(pos(2), batch("a", vec![full_span(3, 1, 1_000), full_span(4, 1, 1_000), full_span(5, 1, 1_000)]));
    assert!(head.persist().unwrap());
    head.apply(pos(3), batch("a", vec![long(4, 2), long(6, 1), full_span(7, 1, 1_000)]));
    let scan = |min: Option<i64>| {
        let s = TraceScan { start_ns: 0, end_ns: i64::MAX, min_span_duration_ns: min, ..TraceScan::default() };
        let mut ids: Vec<u8> =
            (&head as &dyn TracesReader).scan_all(&s).iter().map(|t| t[0].span.trace_id.0[0]).collect();
        ids.sort_unstable();
        ids
    };
    assert_eq!(scan(None), vec![1, 2, 3, 4, 5, 6, 7]);
    assert_eq!(scan(Some(50_000)), vec![2, 4, 6]);
    assert_eq!(scan(Some(50_001)), Vec::<u8>::new());
    assert_eq!(scan(Some(1_000)), vec![1, 2, 3, 4, 5, 6, 7]);
    // Trace 4 comes back whole: its file part and its head part.
    let s = TraceScan { start_ns: 0, end_ns: i64::MAX, min_span_duration_ns: Some(2_000), ..TraceScan::default() };
    let t4: Vec<usize> = (&head as &dyn TracesReader)
        .scan_all(&s)
        .iter()
        .filter(|t| t[0].span.trace_id == tid(4))
        .map(|t| t.len())
        .collect();
    assert_eq!(t4, vec![2]);
}

#[test]
fn compaction_merges_files_as_arrow_rows_with_every_field_resource_and_scope() {
    let dir = tempfile::tempdir().unwrap();
    let head = TracesHead::open(Some(dir.path()), &opts()).unwrap();
    let mut p = 0;
    let mut expected: std::collections::BTreeMap<u8, Vec<StoredSpan>> = Default::default();
    // Three files; services differ per file (and "b" repeats), traces interleave across files,
    // some traces live in one file only, and traces have 1 to 4 spans.
    for (round, service) in ["a", "b", "b"].into_iter().enumerate() {
        let mut spans = Vec::new();
        for t in 1..=9u8 {
            if (t as usize + round).is_multiple_of(3) {
                continue;
            }
            for k in 0..=(t % 4) {
                let mut s = full_span(t, 10 * (round as u8 + 1) + k, 1_000 * i64::from(t) + round as i64);
                s.attributes.push(KeyValue::new("round", AnyValue::Int(round as i64)));
                spans.push(s);
            }
        }
        p += 1;
        let mut b = batch(service, spans);
        b.groups[0].scope.version = format!("v{round}");
        head.apply(pos(p), b);
        assert!(head.persist().unwrap());
    }
    for t in 1..=9u8 {
        expected.insert(t, head.trace(tid(t)));
    }
    let before = head.span_count();
    head.maintain(0).unwrap();
    assert_eq!(head.state.read().files.len(), 1);
    assert_eq!(head.span_count(), before);
    let check = |head: &TracesHead| {
        for (t, want) in &expected {
            assert_eq!(&head.trace(tid(*t)), want, "trace {t}");
        }
        let f = &head.state.read().files[0];
        assert_eq!(f.summary.services.as_deref(), Some(&["a".to_string(), "b".to_string()][..]));
        assert_eq!(f.summary.traces, 9);
        assert_eq!(f.resources.len(), 2, "resources deduplicated across files");
        assert_eq!(f.scopes.len(), 3);
        // The trace table is consecutive and covers every row.
        let mut row = 0;
        for e in &f.traces {
            assert_eq!(e.first_row, row);
            row += e.rows;
        }
        assert_eq!(u64::from(row), before);
    };
    check(&head);
    drop(head);
    let head = TracesHead::open(Some(dir.path()), &opts()).unwrap();
    check(&head);
}

#[test]
fn compaction_picks_runs_of_fresh_small_files_and_never_rewrites_a_big_file_for_a_small_one() {
    let run = compaction_run;
    // Nothing to do.
    assert_eq!(run(&[], 100), None);
    assert_eq!(run(&[10], 100), None);
    assert_eq!(run(&[10, 10], 0), None);
    // Small files together, up to the target.
    assert_eq!(run(&[10, 10, 10], 100), Some((0, 3)));
    assert_eq!(run(&[40, 40, 40], 100), Some((0, 2)));
    // Half the target or more is final: not merged again.
    assert_eq!(run(&[50, 10, 10], 100), Some((1, 3)));
    assert_eq!(run(&[60, 10], 100), None);
    // A merged file is not rewritten for a smaller neighbour, only with at least its own bytes.
    assert_eq!(run(&[30, 10], 100), None);
    assert_eq!(run(&[30, 10, 10], 100), Some((1, 3)), "the small ones merge among themselves");
    assert_eq!(run(&[30, 10, 10, 10], 100), Some((0, 4)));
    assert_eq!(run(&[30, 20, 5, 5], 100), Some((0, 4)));
    assert_eq!(run(&[30, 10, 6, 5], 100), Some((1, 4)));
    assert_eq!(run(&[30, 10, 5, 2], 100), None);
    // The run scan goes on past a run that cannot merge.
    assert_eq!(run(&[45, 1, 70, 3, 3], 100), Some((3, 5)));
    // Run length capped by the target: the rest waits for the next pass.
    assert_eq!(run(&[20, 20, 20, 20, 20, 20], 100), Some((0, 5)));
}

#[test]
fn a_big_file_is_left_alone_while_small_files_next_to_it_merge_among_themselves() {
    let dir = tempfile::tempdir().unwrap();
    let opts = TracesOptions { compact_below_bytes: 1 << 30, ..opts() };
    let head = TracesHead::open(Some(dir.path()), &opts).unwrap();
    let big: Vec<Span> = (1..=99).flat_map(|t| (1..=20).map(move |s| full_span(t, s, 1_000))).collect();
    head.apply(pos(1), batch("a", big));
    head.persist().unwrap();
    head.apply(pos(2), batch("a", vec![full_span(100, 1, 1_000)]));
    head.persist().unwrap();
    let seqs = |h: &TracesHead| h.state.read().files.iter().map(|f| f.summary.seq).collect::<Vec<_>>();
    let sizes: Vec<u64> = head.state.read().files.iter().map(|f| f.summary.bytes).collect();
    assert!(sizes[0] > 3 * sizes[1], "the test needs a big file: {sizes:?}");
    head.maintain(0).unwrap();
    assert_eq!(seqs(&head), vec![1, 2], "the big file is not rewritten for one small one");
    head.apply(pos(3), batch("a", vec![full_span(101, 1, 1_000)]));
    head.persist().unwrap();
    head.maintain(0).unwrap();
    assert_eq!(seqs(&head), vec![1, 4], "the two small files merge, the big one stays");
    assert_eq!(head.span_count(), 1982);
    assert_eq!(head.trace(tid(100)).len(), 1);
    assert_eq!(head.trace(tid(101)).len(), 1);
}

/// Span files compress only the columns zstd shrinks (ids repeated per trace, times, nested
/// cells); the dictionary columns and `span_id` are stored as they are (see `ZSTD_COLUMNS`), and
/// a lookup reads every column but `service_name`.
#[test]
fn span_files_compress_only_the_columns_zstd_shrinks() {
    let dir = tempfile::tempdir().unwrap();
    let head = TracesHead::open(Some(dir.path()), &opts()).unwrap();
    head.apply(pos(1), batch("shop", (1..=9).map(|s| full_span(s % 3, s, 1_000 + i64::from(s))).collect()));
    assert!(head.persist().unwrap());
    let f = std::fs::File::open(file::parquet_path(dir.path(), 1)).unwrap();
    let reader = parquet::file::serialized_reader::SerializedFileReader::new(f).unwrap();
    let meta = parquet::file::reader::FileReader::metadata(&reader);
    let fields = file::schema_fields();
    assert_eq!(fields.last().map(String::as_str), Some("service_name"));
    assert_eq!(file::SERVICE_NAME_COLUMN, fields.len() - 1);
    let zstd: Vec<String> = meta
        .row_group(0)
        .columns()
        .iter()
        .filter(|c| matches!(c.compression(), parquet::basic::Compression::ZSTD(_)))
        .map(|c| c.column_path().string())
        .collect();
    assert_eq!(
        zstd,
        [
            "trace_id",
            "parent_span_id",
            "start_time_unix_nano",
            "end_time_unix_nano",
            "duration_nano",
            "attributes",
            "events",
            "links"
        ]
    );
    // And everything still reads back.
    assert_eq!(head.trace(tid(1)).len(), 3);
    assert_eq!(head.trace(tid(2)).len(), 3);
}

/// A span file's summary lists its spans' distinct names, sorted (gathered by the head as spans
/// arrive); past the cap it lists none, and a search may then match any name in the file.
#[test]
fn file_summaries_list_span_names_up_to_the_cap() {
    let dir = tempfile::tempdir().unwrap();
    let head = TracesHead::open(Some(dir.path()), &opts()).unwrap();
    let named = |trace: u8, span: u16, name: String| {
        let mut s = full_span(trace, 1, 1_000 + i64::from(span));
        s.span_id = SpanId([span.to_be_bytes()[0], span.to_be_bytes()[1], 1, 1, 1, 1, 1, 1]);
        s.name = name;
        s
    };
    let spans = ["b", "a", "b", "c"].iter().enumerate().map(|(i, n)| named(1, i as u16 + 1, n.to_string())).collect();
    head.apply(pos(1), batch("svc", spans));
    assert!(head.persist().unwrap());
    let many = (0..=file::SUMMARY_CAP as u16).map(|i| named(2, i + 1, format!("n{i}"))).collect();
    head.apply(pos(2), batch("svc", many));
    assert!(head.persist().unwrap());
    // The next head starts a fresh set.
    head.apply(pos(3), batch("svc", vec![named(3, 1, "z".into())]));
    assert!(head.persist().unwrap());

    let state = head.state.read();
    let names: Vec<Option<Vec<String>>> = state.files.iter().map(|f| f.summary.span_names.clone()).collect();
    let strings = |v: &[&str]| Some(v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    assert_eq!(names, [strings(&["a", "b", "c"]), None, strings(&["z"])]);
}
