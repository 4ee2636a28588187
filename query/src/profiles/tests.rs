use storage::model::{Function, Location, ProfileType};

use super::*;

fn merged(stacks: &[(&[&str], i64)]) -> MergedStacks {
    let mut m = MergedStacks::default();
    let mut ids: HashMap<String, u32> = HashMap::new();
    for (frames, v) in stacks {
        let mut locs = Vec::new();
        for f in frames.iter().rev() {
            let next = ids.len() as u32;
            let id = *ids.entry(f.to_string()).or_insert_with(|| {
                m.functions.push(Function { name: f.to_string(), ..Function::default() });
                m.locations.push(Location { address: 0, lines: vec![(next, 0)], mapping: 0 });
                next
            });
            locs.push(id);
        }
        m.stacks.push((locs, *v));
    }
    m
}

/// Decodes levels back into `(depth, absolute offset, total, self, name)`.
fn decode(fg: &FlameGraph) -> Vec<(usize, i64, i64, i64, String)> {
    let mut out = Vec::new();
    for (d, level) in fg.levels.iter().enumerate() {
        let mut prev_end = 0;
        for q in level.chunks(4) {
            let start = prev_end + q[0];
            out.push((d, start, q[1], q[2], fg.names[q[3] as usize].clone()));
            prev_end = start + q[1];
        }
    }
    out
}

#[test]
fn flamegraph_levels_are_delta_encoded() {
    // root → main → {a (self 3), b → c (self 5)}, main self 2; plus idle (self 1).
    let m = merged(&[(&["main", "a"], 3), (&["main", "b", "c"], 5), (&["main"], 2), (&["idle"], 1)]);
    let fg = flamegraph(&m, 0);
    assert_eq!(fg.total, 11);
    assert_eq!(fg.max_self, 5);
    assert_eq!(fg.names[0], "total");
    let got = decode(&fg);
    let want: Vec<(usize, i64, i64, i64, String)> = vec![
        (0, 0, 11, 0, "total".into()),
        (1, 0, 1, 1, "idle".into()),
        (1, 1, 10, 2, "main".into()),
        (2, 1, 3, 3, "a".into()),
        (2, 4, 5, 0, "b".into()),
        (3, 4, 5, 5, "c".into()),
    ];
    assert_eq!(got, want);
    // Raw encoding of level 2: a starts at 1 (relative to 0), b right after a (relative 0).
    assert_eq!(fg.levels[2][0], 1);
    assert_eq!(fg.levels[2][4], 0);
    let selfs = self_by_function(&fg);
    assert_eq!(selfs.get("c"), Some(&5));
    assert_eq!(selfs.get("main"), Some(&2));
}

#[test]
fn max_nodes_collapses_into_other() {
    let m = merged(&[(&["main", "big"], 100), (&["main", "small1"], 1), (&["main", "small2"], 2)]);
    let fg = flamegraph(&m, 3);
    let got = decode(&fg);
    assert_eq!(fg.total, 103);
    assert!(got.contains(&(2, 0, 100, 100, "big".into())), "{got:?}");
    assert!(got.contains(&(2, 100, 3, 3, "other".into())), "{got:?}");
    assert_eq!(got.len(), 4);
}

#[test]
fn diff_has_both_sides() {
    let l = merged(&[(&["main", "a"], 3)]);
    let r = merged(&[(&["main", "a"], 1), (&["main", "b"], 4)]);
    let d = diff(&l, &r, 0);
    assert_eq!((d.left_ticks, d.right_ticks, d.total), (3, 5, 8));
    assert_eq!(d.levels[0], vec![0, 3, 0, 0, 5, 0, 0]);
    let a = d.names.iter().position(|n| n == "a").unwrap() as i64;
    let b = d.names.iter().position(|n| n == "b").unwrap() as i64;
    assert_eq!(d.levels[2], vec![0, 3, 3, 0, 1, 1, a, 0, 0, 0, 0, 4, 4, b]);
}

#[test]
fn selectors() {
    assert!(parse_selector("{}").unwrap().is_empty());
    assert!(parse_selector("").unwrap().is_empty());
    let m = parse_selector(r#"{service_name="api", pod=~"a.*"}"#).unwrap();
    assert_eq!(m.len(), 2);
    assert!(parse_selector("{service_name=}").is_err());
    assert!(check_profile_type("process_cpu:cpu:nanoseconds:cpu:nanoseconds").is_ok());
    assert!(check_profile_type("cpu").is_err());
}

#[test]
fn series_on_a_step_grid() {
    let ty = ProfileType { name: "process_cpu".into(), ..ProfileType::default() };
    let s = |svc: &str| ProfileSeries { labels: Labels::from_pairs([("service_name", svc)]), profile_type: ty.clone() };
    let totals = ProfileTotals {
        series: vec![s("a"), s("b")],
        points: vec![
            (0, 1_000_000_000, 10, 1),
            (0, 9_000_000_000, 5, 1),
            (1, 10_000_000_000, 7, 1),
            (1, 25_000_000_000, 1, 1),
        ],
    };
    let all = select_series(&totals, 0, 30_000, 10.0, &[], Aggregation::Sum, None).unwrap();
    assert_eq!(all, vec![Series { labels: vec![], points: vec![(10_000, 22.0), (30_000, 1.0)] }]);
    let by = select_series(&totals, 0, 30_000, 10.0, &["service_name".into()], Aggregation::Average, None).unwrap();
    assert_eq!(by[0].points, vec![(10_000, 7.5)]);
    assert_eq!(by[1].labels, vec![("service_name".to_string(), "b".to_string())]);
    let top = select_series(&totals, 0, 30_000, 10.0, &["service_name".into()], Aggregation::Sum, Some(1)).unwrap();
    assert_eq!(top.len(), 1);
    assert_eq!(top[0].labels[0].1, "a");
    assert!(select_series(&totals, 0, 1, 0.0, &[], Aggregation::Sum, None).is_err());
}

#[test]
fn fast_flamegraph_matches_the_tree() {
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    let mut next = |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n.max(1)
    };
    for round in 0..40 {
        let mut m = MergedStacks::default();
        let n_fns = 1 + next(12) as usize;
        for f in 0..n_fns {
            // Repeated names (two functions, one frame name), and the special names.
            let name = match f % 7 {
                5 => "unknown".to_string(),
                6 => "other".to_string(),
                _ => format!("f{}", next(9)),
            };
            m.functions.push(Function { name, ..Function::default() });
        }
        for _ in 0..1 + next(15) {
            let lines = (0..next(3)).map(|_| (next(n_fns as u64 + 1) as u32, 0)).collect(); // may be out of range or empty
            m.locations.push(Location { address: 0, lines, mapping: 0 });
        }
        for _ in 0..next(60) {
            let depth = next(8);
            let stack = (0..depth).map(|_| next(m.locations.len() as u64 + 1) as u32).collect();
            m.stacks.push((stack, 1 + next(1000) as i64));
        }
        for max in [0, 1, 3, 8, 30, 10_000] {
            assert_eq!(flamegraph(&m, max), flamegraph_by_tree(&m, max), "round {round}, max_nodes {max}");
        }
    }
}
