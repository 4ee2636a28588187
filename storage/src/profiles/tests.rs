use super::*;
use crate::read::{MatchOp, ProfilesReader};

fn ty() -> ProfileType {
    ProfileType {
        name: "process_cpu".into(),
        sample_type: "cpu".into(),
        sample_unit: "nanoseconds".into(),
        period_type: "cpu".into(),
        period_unit: "nanoseconds".into(),
    }
}

fn profile(t: i64, service: &str, span: Option<u8>) -> Profile {
    Profile {
        labels: Labels::from_pairs([("service_name", service), ("__name__", "process_cpu")]),
        profile_type: ty(),
        time_ns: t,
        duration_ns: 10,
        period: 10_000_000,
        functions: vec![
            Function { name: "main".into(), ..Function::default() },
            Function { name: "work".into(), ..Function::default() },
        ],
        locations: vec![
            Location { address: 1, lines: vec![(0, 1)], mapping: 1 },
            Location { address: 2, lines: vec![(1, 2)], mapping: 0 },
        ],
        samples: vec![
            ProfileSample {
                locations: vec![1, 0],
                value: 30,
                span_id: span.map(|s| SpanId([s; 8])),
                labels: vec![Label { name: "trace_id".into(), value: "0102030405060708090a0b0c0d0e0f10".into() }],
            },
            ProfileSample { locations: vec![0], value: 10, span_id: None, labels: vec![] },
        ],
        mappings: vec![Mapping {
            memory_start: 0x1000,
            memory_limit: 0x9000,
            filename: "/usr/bin/app".into(),
            build_id: "abc".into(),
            has_functions: true,
            ..Mapping::default()
        }],
    }
}

/// A profile with its stacks spelled as function names and mapping files (symbol table order is
/// not kept).
type NormSample = (Vec<String>, i64, Option<SpanId>, Vec<Label>);

fn norm(p: &Profile) -> (Labels, String, i64, Vec<NormSample>) {
    let samples = p
        .samples
        .iter()
        .map(|s| {
            let names = s
                .locations
                .iter()
                .flat_map(|l| {
                    let loc = &p.locations[*l as usize];
                    let file = match loc.mapping {
                        0 => String::new(),
                        m => p.mappings[m as usize - 1].filename.clone(),
                    };
                    loc.lines.iter().map(move |(f, _)| format!("{}@{file}", p.functions[*f as usize].name))
                })
                .collect();
            (names, s.value, s.span_id, s.labels.clone())
        })
        .collect();
    (p.labels.clone(), p.profile_type.id(), p.time_ns, samples)
}

fn select<'a>(m: &'a [Matcher], spans: Option<&'a [SpanId]>) -> ProfileSelect<'a> {
    ProfileSelect { matchers: m, start_ns: 0, end_ns: i64::MAX, span_ids: spans, max_samples: 1_000 }
}

#[test]
fn dedups_symbols_and_merges() {
    let head = ProfilesHead::open(None, &ProfilesOptions::default()).unwrap();
    head.apply(WalPos::ZERO, ProfilesBatch { profiles: vec![profile(5, "a", Some(1)), profile(9, "b", None)] });
    {
        let inner = head.inner.read();
        assert_eq!(inner.symbols.functions.len(), 2);
        assert_eq!(inner.symbols.mappings.len(), 1);
        assert_eq!(inner.symbols.locations.len(), 2);
        assert_eq!(inner.symbols.counts().stacks, 2);
        assert_eq!(inner.symbols.series.len(), 2);
    }
    let all = head.merge_stacks(&select(&[], None)).unwrap();
    assert_eq!(all.profiles, 2);
    let mut totals: Vec<i64> = all.stacks.iter().map(|s| s.1).collect();
    totals.sort();
    assert_eq!(totals, [20, 60]);
    let m = [Matcher::new("service_name", MatchOp::Equal, "a").unwrap()];
    assert_eq!(head.merge_stacks(&select(&m, None)).unwrap().stacks.iter().map(|s| s.1).sum::<i64>(), 40);
    let spans = [SpanId([1; 8])];
    let by_span = head.merge_stacks(&select(&[], Some(&spans))).unwrap();
    assert_eq!(by_span.stacks.iter().map(|s| s.1).sum::<i64>(), 30);
    let trace = TraceId::from_hex("0102030405060708090a0b0c0d0e0f10");
    let found = head.span_samples(trace, &[], 0, i64::MAX);
    assert_eq!(found.len(), 1);
    assert_eq!((found[0].samples, found[0].value), (1, 30));
    let small = ProfileSelect { max_samples: 3, ..select(&[], None) };
    assert!(head.merge_stacks(&small).is_err());
    let t = head.profile_totals(&select(&[], None));
    assert_eq!(t.points.iter().map(|p| (p.2, p.3)).collect::<Vec<_>>(), [(40, 2), (40, 2)]);
    let back: Vec<_> = head.profiles(0, 100).iter().map(norm).collect();
    assert_eq!(back, vec![norm(&profile(5, "a", Some(1))), norm(&profile(9, "b", None))]);
    assert_eq!(head.profile_types(0, 100), vec![ty()]);
    assert_eq!(head.profile_types(10, 100), vec![]);
}

#[test]
fn persists_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let opts = ProfilesOptions::default();
    let head = ProfilesHead::open(Some(dir.path()), &opts).unwrap();
    let pos = |o| WalPos { segment: 1, offset: o };
    head.apply(pos(10), ProfilesBatch { profiles: vec![profile(5, "a", Some(1))] });
    assert!(head.persist().unwrap());
    head.apply(pos(20), ProfilesBatch { profiles: vec![profile(9, "b", None)] });
    assert!(head.persist().unwrap());
    head.apply(pos(30), ProfilesBatch { profiles: vec![profile(12, "c", None)] });
    let before = head.profiles(0, 100);
    drop(head);
    let head = ProfilesHead::open(Some(dir.path()), &opts).unwrap();
    // The WAL replays everything; positions up to 20 are skipped.
    for (p, t, s) in [(10, 5, "a"), (20, 9, "b"), (30, 12, "c")] {
        head.apply(pos(p), ProfilesBatch { profiles: vec![profile(t, s, if s == "a" { Some(1) } else { None })] });
    }
    assert_eq!(head.profiles(0, 100), before);
    assert_eq!(head.items(), 6);
    let trace = TraceId::from_hex("0102030405060708090a0b0c0d0e0f10");
    assert_eq!(head.span_samples(trace, &[], 0, i64::MAX).len(), 1);
    // Retention drops old parts.
    assert!(head.persist().unwrap());
    let retained =
        ProfilesHead::open(Some(dir.path()), &ProfilesOptions { retention: Duration::from_nanos(5), max_bytes: 0 })
            .unwrap();
    retained.maintain(0).unwrap(); // cutoff = -5 ns: nothing older
    assert_eq!(retained.items(), 6);
    retained.maintain(1).unwrap(); // cutoff 999_995 ns: everything
    assert_eq!(retained.items(), 0);
    drop(retained);
    let again = ProfilesHead::open(Some(dir.path()), &opts).unwrap();
    assert_eq!(again.items(), 0);
    assert!(!ProfilesHead::open(None, &opts).unwrap().persist().unwrap());
}

/// Many profiles with distinct stacks and values, some tagged with spans.
fn varied(n: usize, t0: i64) -> Vec<Profile> {
    (0..n)
        .map(|i| {
            let mut p = profile(t0 + i as i64, if i % 3 == 0 { "a" } else { "b" }, (i % 4 == 0).then_some(i as u8));
            for s in &mut p.samples {
                s.value += i as i64;
            }
            p.samples.push(ProfileSample {
                locations: vec![(i % 2) as u32, 1],
                value: 7,
                span_id: None,
                labels: vec![],
            });
            p
        })
        .collect()
}

#[test]
fn persisted_rows_are_read_from_parquet() {
    let dir = tempfile::tempdir().unwrap();
    let opts = ProfilesOptions::default();
    let mem = ProfilesHead::open(None, &opts).unwrap();
    let head = ProfilesHead::open(Some(dir.path()), &opts).unwrap();
    let pos = |o| WalPos { segment: 1, offset: o };
    for (k, chunk) in [varied(50, 0), varied(30, 100)].into_iter().enumerate() {
        mem.apply(WalPos::ZERO, ProfilesBatch { profiles: chunk.clone() });
        head.apply(pos(k as u64 + 1), ProfilesBatch { profiles: chunk });
        assert!(head.persist().unwrap());
    }
    // A head part that is not persisted yet, next to the two persisted ones.
    mem.apply(WalPos::ZERO, ProfilesBatch { profiles: varied(5, 200) });
    head.apply(pos(3), ProfilesBatch { profiles: varied(5, 200) });
    {
        let inner = head.inner.read();
        assert_eq!(inner.parts.len(), 3);
        for p in &inner.parts[..2] {
            assert!(p.persisted && p.file.is_some() && p.cols.stacks.is_empty() && p.cols.values.is_empty());
        }
        assert_eq!(inner.parts[2].cols.stacks.len() as u32, inner.parts[2].rows);
    }
    let check = |h: &ProfilesHead| {
        let spans: Vec<SpanId> = (0..85u8).step_by(4).map(|s| SpanId([s; 8])).collect();
        let trace = TraceId::from_hex("0102030405060708090a0b0c0d0e0f10");
        for (lo, hi) in [(0, i64::MAX), (10, 120), (60, 70), (201, 203)] {
            let m = [Matcher::new("service_name", MatchOp::Equal, "b").unwrap()];
            for matchers in [&[][..], &m[..]] {
                for span_sel in [None, Some(&spans[..])] {
                    let sel =
                        ProfileSelect { start_ns: lo, end_ns: hi, max_samples: 10_000, ..select(matchers, span_sel) };
                    assert_eq!(h.merge_stacks(&sel).unwrap(), mem.merge_stacks(&sel).unwrap(), "{lo}..{hi}");
                    assert_eq!(h.profile_totals(&sel), mem.profile_totals(&sel));
                }
            }
            assert_eq!(h.profiles(lo, hi), mem.profiles(lo, hi));
            assert_eq!(h.span_samples(trace, &[], lo, hi), mem.span_samples(trace, &[], lo, hi));
            assert_eq!(h.span_samples(None, &spans[..3], lo, hi), mem.span_samples(None, &spans[..3], lo, hi));
        }
        assert_eq!(h.read_errors(), 0);
    };
    check(&head);
    // After a restart the persisted parts are loaded without their samples.
    drop(head);
    let head = ProfilesHead::open(Some(dir.path()), &opts).unwrap();
    head.apply(pos(3), ProfilesBatch { profiles: varied(5, 200) });
    check(&head);
    assert_eq!(head.items(), mem.items());
}

#[test]
fn unreadable_part_is_skipped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let opts = ProfilesOptions::default();
    let head = ProfilesHead::open(Some(dir.path()), &opts).unwrap();
    head.apply(WalPos { segment: 1, offset: 1 }, ProfilesBatch { profiles: varied(10, 0) });
    assert!(head.persist().unwrap());
    head.apply(WalPos { segment: 1, offset: 2 }, ProfilesBatch { profiles: varied(10, 100) });
    assert!(head.persist().unwrap());
    // Merges read the rows here, not the parts' sums (which stay in memory).
    head.use_sums.store(false, Ordering::Relaxed);
    let first = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .min()
        .unwrap();
    // Replace the file's pages with garbage but keep its length and footer: the footer read at
    // persist time stays valid, the data pages do not decode.
    let mut bytes = std::fs::read(&first).unwrap();
    let half = bytes.len() / 2;
    for b in &mut bytes[4..half] {
        *b = 0xA5;
    }
    std::fs::write(&first, &bytes).unwrap();
    let all = head.merge_stacks(&select(&[], None)).unwrap();
    assert_eq!(all.profiles, 20, "profile rows are in memory; the samples of the damaged part are not");
    let only_second = ProfileSelect { start_ns: 100, ..select(&[], None) };
    assert_eq!(all.stacks.iter().map(|s| s.1).sum::<i64>(), {
        let m = head.merge_stacks(&only_second).unwrap();
        m.stacks.iter().map(|s| s.1).sum::<i64>()
    });
    assert_eq!(head.read_errors(), 1);
    // With sums, series "a" of the damaged part (one profile outside 1..) would be its sums minus
    // rows that cannot be read: it is left out, nothing goes negative, and the error is counted.
    head.use_sums.store(true, Ordering::Relaxed);
    let from_1 = head.merge_stacks(&ProfileSelect { start_ns: 1, ..select(&[], None) }).unwrap();
    assert!(from_1.stacks.iter().all(|s| s.1 > 0));
    assert_eq!(head.read_errors(), 2);
}

/// Merges over series whose profiles a part holds entirely inside the range read the part's sums;
/// the answers are the same as from the rows, in the head, from Parquet and after a reopen.
#[test]
fn part_sums_answer_as_the_rows() {
    let dir = tempfile::tempdir().unwrap();
    let opts = ProfilesOptions::default();
    let head = ProfilesHead::open(Some(dir.path()), &opts).unwrap();
    let pos = |o| WalPos { segment: 1, offset: o };
    head.apply(pos(1), ProfilesBatch { profiles: varied(200, 0) });
    assert!(head.persist().unwrap());
    head.apply(pos(2), ProfilesBatch { profiles: varied(120, 1000) });
    let check = |h: &ProfilesHead| {
        let spans: Vec<SpanId> = (0..40u8).step_by(4).map(|s| SpanId([s; 8])).collect();
        let m = [Matcher::new("service_name", MatchOp::Equal, "b").unwrap()];
        for (lo, hi) in
            [(0, i64::MAX), (0, 199), (0, 198), (0, 1119), (1, 1119), (0, 1118), (150, 1050), (1000, 2000), (7, 7)]
        {
            for matchers in [&[][..], &m[..]] {
                for span_sel in [None, Some(&spans[..])] {
                    let sel =
                        ProfileSelect { start_ns: lo, end_ns: hi, max_samples: 10_000, ..select(matchers, span_sel) };
                    h.use_sums.store(true, Ordering::Relaxed);
                    let with = h.merge_stacks(&sel).unwrap();
                    h.use_sums.store(false, Ordering::Relaxed);
                    let without = h.merge_stacks(&sel).unwrap();
                    assert_eq!(with, without, "{lo}..{hi}");
                    let small = ProfileSelect { max_samples: without.samples.saturating_sub(1), ..sel };
                    h.use_sums.store(true, Ordering::Relaxed);
                    assert_eq!(h.merge_stacks(&small).is_err(), without.samples > 0, "the limit counts rows");
                }
            }
        }
        // 1..=199 leaves out one profile of the first part (t=0, series "a"): series "a" is read as
        // the part's sums minus that profile's rows, series "b" as its sums; no other row is read.
        let rows_read = |sums: bool| {
            h.use_sums.store(sums, Ordering::Relaxed);
            let before = h.rows_read();
            let m = h.merge_stacks(&ProfileSelect { start_ns: 1, end_ns: 199, ..select(&[], None) }).unwrap();
            (h.rows_read() - before, m)
        };
        let ((with, a), (without, b)) = (rows_read(true), rows_read(false));
        h.use_sums.store(true, Ordering::Relaxed);
        assert_eq!(a, b);
        let first_profile_rows = u64::from(h.inner.read().parts[0].profiles[0].len);
        assert_eq!(with, first_profile_rows, "only the rows outside the range are read");
        assert_eq!(without, a.samples, "without sums every row inside is read");
        let inner = h.inner.read();
        assert!(inner.parts.iter().all(|p| p.sums.is_some()), "sums of 3-stack profiles are worth keeping");
    };
    check(&head);
    {
        // The persisted part's sums are packed: sorted by stack, nothing left in the open maps.
        let inner = head.inner.read();
        let sums = inner.parts[0].sums.as_ref().unwrap();
        for s in sums.series.values() {
            assert!(s.open.is_empty() && s.packed.is_sorted() && !s.packed.is_empty());
        }
    }
    drop(head);
    let head = ProfilesHead::open(Some(dir.path()), &opts).unwrap();
    head.apply(pos(2), ProfilesBatch { profiles: varied(120, 1000) });
    check(&head);
}

#[test]
fn sums_are_dropped_when_they_would_not_pay() {
    let head = ProfilesHead::open(None, &ProfilesOptions::default()).unwrap();
    // One profile of two distinct stacks: two sums for three rows.
    head.apply(WalPos::ZERO, ProfilesBatch { profiles: vec![profile(5, "a", None)] });
    let mut inner = head.inner.write();
    let part = inner.parts.last_mut().unwrap();
    assert_eq!(part.sums.as_ref().map(|s| s.entries), Some(2));
    part.finish_sums(Default::default());
    assert!(part.sums.is_none());
}

/// The profiles of one batch (one per sample type of a pprof) reuse the previous profile's symbol
/// ids when their tables are the same: the store ends up as if each were applied on its own.
#[test]
fn profiles_of_one_batch_reuse_symbol_ids() {
    let first = profile(5, "a", Some(1));
    let mut same_tables = profile(5, "a", None);
    same_tables.profile_type.sample_type = "samples".into();
    same_tables.samples[1].locations = vec![1];
    same_tables.samples.push(ProfileSample { locations: vec![0, 1], value: 3, span_id: None, labels: vec![] });
    let mut other_tables = profile(6, "a", None);
    other_tables.functions.reverse();
    other_tables.locations.push(Location { address: 9, lines: vec![(1, 9), (0, 3)], mapping: 1 });
    other_tables.samples[0].locations = vec![2, 0];
    let mut empty_tables = profile(7, "b", None);
    empty_tables.functions.clear();
    empty_tables.locations.clear();
    empty_tables.mappings.clear();
    for s in &mut empty_tables.samples {
        s.locations.clear();
    }
    let batch = vec![first, same_tables.clone(), same_tables, other_tables, empty_tables];
    let together = ProfilesHead::open(None, &ProfilesOptions::default()).unwrap();
    together.apply(WalPos::ZERO, ProfilesBatch { profiles: batch.clone() });
    let apart = ProfilesHead::open(None, &ProfilesOptions::default()).unwrap();
    for p in &batch {
        apart.apply(WalPos::ZERO, ProfilesBatch { profiles: vec![p.clone()] });
    }
    let back: Vec<_> = together.profiles(0, 100).iter().map(norm).collect();
    assert_eq!(back, apart.profiles(0, 100).iter().map(norm).collect::<Vec<_>>());
    assert_eq!(back, batch.iter().map(norm).collect::<Vec<_>>());
    let (a, b) = (together.inner.read(), apart.inner.read());
    assert_eq!(a.symbols.counts(), b.symbols.counts());
    assert_eq!(a.symbols.stack_locations, b.symbols.stack_locations);
}

/// A profile of `service`: `n` functions of its own plus a shared `main`, every sample a
/// `main → fN` stack, tagged with a span and a trace id label of the service's own.
fn service_profile(t: i64, service: &str, n: usize) -> Profile {
    let mut functions = vec![Function { name: "main".into(), ..Function::default() }];
    let mut locations = vec![Location { address: 1, lines: vec![(0, 1)], mapping: 1 }];
    let mut samples = Vec::new();
    for i in 0..n {
        functions.push(Function {
            name: format!("{service}::f{i}"),
            filename: format!("{service}.go"),
            ..Function::default()
        });
        locations.push(Location { address: 100 + i as u64, lines: vec![(i as u32 + 1, 7)], mapping: 2 });
        samples.push(ProfileSample {
            locations: vec![i as u32 + 1, 0],
            value: 1 + i as i64 + t,
            span_id: Some(SpanId([service.as_bytes()[0], 0, 0, 0, 0, 0, (i >> 8) as u8, i as u8])),
            labels: vec![Label { name: "trace_id".into(), value: trace_hex(service, i) }],
        });
    }
    Profile {
        labels: Labels::from_pairs([("service_name", service), ("__name__", "process_cpu")]),
        profile_type: ty(),
        time_ns: t,
        duration_ns: 10,
        period: 10,
        functions,
        locations,
        samples,
        mappings: vec![
            Mapping { filename: "/lib/libc.so".into(), ..Mapping::default() },
            Mapping { filename: format!("/bin/{service}"), ..Mapping::default() },
        ],
    }
}

fn trace_hex(service: &str, i: usize) -> String {
    format!("{:016x}{:016x}", service.as_bytes()[0], i)
}

/// Merged stacks as function names (ids differ between stores) → value.
fn merged_by_name(m: &MergedStacks) -> Vec<(Vec<String>, i64)> {
    let mut out: Vec<(Vec<String>, i64)> = m
        .stacks
        .iter()
        .map(|(locs, v)| {
            let names = locs
                .iter()
                .flat_map(|l| m.locations[*l as usize].lines.iter().map(|(f, _)| m.functions[*f as usize].name.clone()))
                .collect();
            (names, *v)
        })
        .collect();
    out.sort();
    out
}

fn symbols_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("symbols-"))
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

/// When retention drops parts, the symbols only they used are collected at the next persist: the
/// tables shrink in memory and on disk (one snapshot file replaces the deltas), the remaining
/// profiles answer as before (also after a reopen), and new profiles reusing collected symbols get
/// fresh ids.
#[test]
fn retention_collects_unused_symbols() {
    let dir = tempfile::tempdir().unwrap();
    let opts = ProfilesOptions { retention: Duration::from_nanos(1_000), max_bytes: 0 };
    let head = ProfilesHead::open(Some(dir.path()), &opts).unwrap();
    let pos = |o| WalPos { segment: 1, offset: o };
    let old: Vec<Profile> = (0..10).map(|t| service_profile(t, "old", 200)).collect();
    let new: Vec<Profile> = (0..3).map(|t| service_profile(10_000_000 + t, "new", 50)).collect();
    head.apply(pos(1), ProfilesBatch { profiles: old.clone() });
    assert!(head.persist().unwrap());
    head.apply(pos(2), ProfilesBatch { profiles: new.clone() });
    assert!(head.persist().unwrap());
    let m_new = [Matcher::new("service_name", MatchOp::Equal, "new").unwrap()];
    let m_old = [Matcher::new("service_name", MatchOp::Equal, "old").unwrap()];
    let sel_new = ProfileSelect { max_samples: 100_000, ..select(&m_new, None) };
    let sel_old = ProfileSelect { max_samples: 100_000, ..select(&m_old, None) };
    let before = head.merge_stacks(&sel_new).unwrap();
    let before_profiles = head.profiles(0, i64::MAX);
    let before_bytes = symbols_bytes(dir.path());
    // main + 200 + 50 functions, 3 mappings, 251 locations, 250 stacks, 1 + 250 label sets.
    assert_eq!(head.inner.read().symbols.live_counts(), [3, 251, 251, 250, 251]);

    head.maintain(1).unwrap(); // cutoff 999,000 ns: the part of `old` goes
    assert_eq!(head.profiles(0, i64::MAX).len(), 3);
    assert_eq!(head.inner.read().symbols.live_counts(), [3, 251, 251, 250, 251], "collected at the next persist");
    assert_eq!(head.inner.read().trace_spans.len(), 250);
    assert!(head.persist().unwrap());
    assert_eq!(head.inner.read().trace_spans.len(), 50, "traces of the dropped part are forgotten");
    let after = |h: &ProfilesHead| {
        assert_eq!(h.inner.read().symbols.live_counts(), [2, 51, 51, 50, 51]);
        assert_eq!(h.merge_stacks(&sel_new).unwrap(), before);
        assert_eq!(h.merge_stacks(&sel_old).unwrap().stacks, vec![]);
        assert_eq!(h.profiles(0, i64::MAX), before_profiles[10..]);
        let trace = TraceId::from_hex(&trace_hex("new", 3));
        assert_eq!(h.span_samples(trace, &[], 0, i64::MAX).len(), 3);
        assert_eq!(h.read_errors(), 0);
    };
    after(&head);
    {
        let inner = head.inner.read();
        assert_eq!(inner.symbol_files.len(), 1, "one snapshot replaces the deltas");
        assert!(inner.symbols.functions.iter().filter(|f| f.name.starts_with("old::")).count() == 0);
    }
    let after_bytes = symbols_bytes(dir.path());
    assert!(after_bytes * 2 < before_bytes, "symbols on disk: {before_bytes} → {after_bytes} bytes");
    drop(head);
    let head = ProfilesHead::open(Some(dir.path()), &opts).unwrap();
    after(&head);

    // `old` comes back: its symbols get new ids, next to the placeholders of the collected ones.
    let back: Vec<Profile> = (0..2).map(|t| service_profile(20_000_000 + t, "old", 200)).collect();
    head.apply(pos(3), ProfilesBatch { profiles: back.clone() });
    let fresh = ProfilesHead::open(None, &opts).unwrap();
    fresh.apply(WalPos::ZERO, ProfilesBatch { profiles: new.iter().chain(&back).cloned().collect() });
    let check = |h: &ProfilesHead| {
        for sel in [&sel_new, &sel_old] {
            assert_eq!(
                merged_by_name(&h.merge_stacks(sel).unwrap()),
                merged_by_name(&fresh.merge_stacks(sel).unwrap())
            );
        }
        let norm_all = |h: &ProfilesHead| h.profiles(0, i64::MAX).iter().map(norm).collect::<Vec<_>>();
        assert_eq!(norm_all(h), norm_all(&fresh));
    };
    check(&head);
    assert_eq!(head.inner.read().symbols.live_counts(), [3, 251, 251, 250, 251]);
    assert!(head.persist().unwrap()); // a delta after the snapshot
    assert_eq!(head.inner.read().symbol_files.len(), 2);
    drop(head);
    let head = ProfilesHead::open(Some(dir.path()), &opts).unwrap();
    check(&head);
}

/// `maintain` merges runs of small persisted parts into one part (same profiles in the same order,
/// new file, old files deleted); every query answers as before, also after a reopen.
#[test]
fn small_parts_are_compacted() {
    let dir = tempfile::tempdir().unwrap();
    let opts = ProfilesOptions { retention: Duration::ZERO, max_bytes: 0 };
    let mem = ProfilesHead::open(None, &opts).unwrap();
    let head = ProfilesHead::open(Some(dir.path()), &opts).unwrap();
    let pos = |o| WalPos { segment: 1, offset: o };
    for k in 0..6u64 {
        let chunk = varied(20, 100 * k as i64);
        mem.apply(WalPos::ZERO, ProfilesBatch { profiles: chunk.clone() });
        head.apply(pos(k + 1), ProfilesBatch { profiles: chunk });
        assert!(head.persist().unwrap());
    }
    mem.apply(WalPos::ZERO, ProfilesBatch { profiles: varied(5, 900) });
    head.apply(pos(7), ProfilesBatch { profiles: varied(5, 900) });
    let files = |d: &Path| {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .filter(|n| n.starts_with("part-"))
            .collect();
        v.sort();
        v
    };
    assert_eq!(files(dir.path()).len(), 6);
    let check = |h: &ProfilesHead| {
        let spans: Vec<SpanId> = (0..20u8).step_by(4).map(|s| SpanId([s; 8])).collect();
        let trace = TraceId::from_hex("0102030405060708090a0b0c0d0e0f10");
        let m = [Matcher::new("service_name", MatchOp::Equal, "b").unwrap()];
        for (lo, hi) in [(0, i64::MAX), (10, 250), (0, 519), (300, 310), (901, 903)] {
            for matchers in [&[][..], &m[..]] {
                for span_sel in [None, Some(&spans[..])] {
                    let sel =
                        ProfileSelect { start_ns: lo, end_ns: hi, max_samples: 10_000, ..select(matchers, span_sel) };
                    assert_eq!(h.merge_stacks(&sel).unwrap(), mem.merge_stacks(&sel).unwrap(), "{lo}..{hi}");
                    assert_eq!(h.profile_totals(&sel), mem.profile_totals(&sel));
                }
            }
            assert_eq!(h.profiles(lo, hi), mem.profiles(lo, hi));
            assert_eq!(h.span_samples(trace, &[], lo, hi), mem.span_samples(trace, &[], lo, hi));
        }
        assert_eq!(h.read_errors(), 0);
        assert_eq!(h.items(), mem.items());
    };
    check(&head);
    head.maintain(0).unwrap();
    // The six persisted parts became one; the head part is left alone.
    assert_eq!(files(dir.path()).len(), 1);
    {
        let inner = head.inner.read();
        assert_eq!(inner.parts.len(), 2);
        assert!(inner.parts[0].persisted && inner.parts[0].sums.is_some() && inner.parts[0].used.is_some());
        assert_eq!(inner.parts[0].profiles.len(), 120);
        assert!(!inner.parts[1].persisted);
    }
    check(&head);
    head.maintain(0).unwrap(); // nothing more to merge
    assert_eq!(files(dir.path()).len(), 1);
    drop(head);
    let head = ProfilesHead::open(Some(dir.path()), &opts).unwrap();
    head.apply(pos(7), ProfilesBatch { profiles: varied(5, 900) });
    check(&head);
}

#[test]
fn compaction_picks_runs_of_small_parts() {
    let part = |seq: u64, rows: u32, persisted: bool| {
        let mut p = Part::new(seq);
        p.rows = rows;
        p.persisted = persisted;
        p
    };
    // Persisted parts get a file (any will do: only its presence is looked at).
    let with_files = |mut parts: Vec<Part>| {
        let dir = tempfile::tempdir().unwrap();
        let head = ProfilesHead::open(Some(dir.path()), &ProfilesOptions::default()).unwrap();
        head.apply(WalPos { segment: 1, offset: 1 }, ProfilesBatch { profiles: varied(3, 0) });
        head.persist().unwrap();
        let inner = head.inner.read();
        let file = inner.parts[0].file.as_ref().unwrap();
        for p in parts.iter_mut().filter(|p| p.persisted) {
            p.file = Some(persist::PartFile::open(file.path.clone()).unwrap());
        }
        parts
    };
    let small = 1000;
    let big = 600 * 1024;
    let run = |parts: Vec<Part>| persist::compaction_run(&with_files(parts));
    assert_eq!(run((1..=3).map(|s| part(s, small, true)).collect()), None, "fewer than four");
    assert_eq!(run((1..=5).map(|s| part(s, small, true)).collect()), Some(vec![1, 2, 3, 4, 5]));
    // A big part or an unpersisted one breaks a run.
    let mixed = vec![
        part(1, small, true),
        part(2, small, true),
        part(3, big, true),
        part(4, small, true),
        part(5, small, true),
        part(6, small, true),
        part(7, small, true),
        part(8, small, false),
    ];
    assert_eq!(run(mixed), Some(vec![4, 5, 6, 7]));
    // The run stops at the row cap; the rest waits.
    let full: Vec<Part> = (1..=6).map(|s| part(s, 500 * 1024, true)).collect();
    assert_eq!(run(full), Some(vec![1, 2, 3, 4]));
}
