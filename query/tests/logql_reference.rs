//! The LogQL reference pack (`query/testdata/logql-reference/`, see its README.md): every request
//! Grafana Loki 2.9.13 answered, replayed through our engine over the pack's dataset and compared
//! with Loki's answer under the pack's rules (entries as a set of (labels, time, line) with each
//! stream in direction order; series by exact label set, sample times to the millisecond, values
//! within a relative 1e-6; order only for instant `sort`/`sort_desc`; errors where Loki erred).
//!
//! The dataset is `dataset-1795259580.json`, the generator's `--dump` for END_TS 1795259580 (the
//! recording's END_TS), so the recorded END_TS-relative times shift onto it by adding END_TS.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use query::logql::{Data, Engine, EngineOptions, Request};
use serde_json::Value;
use storage::model::{Labels, LogGroup, LogRecord, LogsBatch, WriteBatch};
use storage::{Direction, MemStore, Reader};

const END_TS: i64 = 1_795_259_580;
const NS: i64 = 1_000_000_000;

/// Queries where Loki 2.9.13's recorded answer shows a Loki bug we deliberately do not copy.
/// Each still runs; a difference is reported, not failed, and any other failure still fails.
const KNOWN_DIFFERENCES: &[(&str, &str)] = &[
    // Loki rewrites `|~ "(?i)literal"` into a case-insensitive substring search whose matcher,
    // after a partial match fails, skips the failing byte instead of retrying it as a match start:
    // "SocketTimeoutException" does not contain "timeout" for Loki 2.9.13. We match the regex.
    ("lf-ci-upper", "Loki's case-insensitive contains skips a byte after a partial match"),
    ("range-rate-ci-regex", "Loki's case-insensitive contains skips a byte after a partial match"),
    // `bytes <= 1KiB`: Loki 2.9.13 leaves out the one entry with bytes=1018 (and keeps 989), as if
    // 1KiB were 1000; go-humanize (which both Loki's lexer and its filter use) says 1024.
    ("labels-bytes-kib", "Loki 2.9.13 drops bytes=1018 from `bytes <= 1KiB`"),
];

fn dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/logql-reference")
}

fn load() -> (MemStore, HashMap<i64, String>) {
    let text = std::fs::read_to_string(dir().join(format!("dataset-{END_TS}.json"))).expect("dataset dump");
    let doc: Value = serde_json::from_str(&text).expect("dataset json");
    let mut groups = Vec::new();
    let mut lines = HashMap::new();
    for s in doc["streams"].as_array().expect("streams") {
        let labels = Labels::from_pairs(
            s["stream"]
                .as_object()
                .expect("stream")
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string())),
        );
        let mut records = Vec::new();
        for v in s["values"].as_array().expect("values") {
            let ts: i64 = v[0].as_str().expect("ts").parse().expect("ts");
            let line = v[1].as_str().expect("line").to_string();
            lines.insert(ts - END_TS * NS, line.clone());
            records.push(LogRecord { timestamp_ns: ts, body: line, ..Default::default() });
        }
        records.sort_by_key(|r| r.timestamp_ns);
        groups.push(LogGroup { stream: labels, records, ..Default::default() });
    }
    let store = MemStore::new();
    store.apply(WriteBatch::Logs(LogsBatch { groups }));
    (store, lines)
}

fn labels_key(v: &Value) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = v
        .as_object()
        .map(|o| o.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string())).collect())
        .unwrap_or_default();
    out.sort();
    out
}

fn our_key(l: &Labels) -> Vec<(String, String)> {
    l.iter().map(|l| (l.name.clone(), l.value.clone())).collect()
}

fn parse_val(s: &str) -> f64 {
    match s {
        "NaN" => f64::NAN,
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        _ => s.parse().unwrap_or(f64::NAN),
    }
}

fn same(want: f64, got: f64) -> bool {
    if want.is_nan() || got.is_nan() {
        return want.is_nan() && got.is_nan();
    }
    if want == got {
        return true;
    }
    if want.is_infinite() || got.is_infinite() {
        return false;
    }
    (want - got).abs() <= 1e-6 * want.abs().min(got.abs())
}

fn rel_ms(t_ns: i64) -> i64 {
    t_ns.div_euclid(1_000_000) * 1_000_000 - END_TS * NS
}

fn sorts(q: &str) -> bool {
    let t = q.trim_start();
    (t.starts_with("sort(") || t.starts_with("sort_desc(") || t.starts_with("sort (") || t.starts_with("sort_desc ("))
        && t.trim_end().ends_with(')')
}

fn check(engine: &Engine, store: &MemStore, lines: &HashMap<i64, String>, q: &Value, ev: &Value) -> Result<(), String> {
    let query = q["query"].as_str().expect("query");
    let r = &ev["request"];
    let path = r["path"].as_str().expect("path");
    let at = |k: &str| r[k].as_i64().map(|v| END_TS * NS + v);
    let mut req = Request { query: query.to_string(), ..Default::default() };
    if path.ends_with("/query") {
        req.instant = true;
        req.end_ns = at("time").expect("time");
        req.start_ns = req.end_ns;
    } else {
        req.start_ns = at("start").expect("start");
        req.end_ns = at("end").expect("end");
        req.step_ns = r["step"].as_f64().map_or(0, |s| (s * 1e9) as i64);
    }
    req.limit = r["limit"].as_u64().unwrap_or(100) as u32;
    req.direction = match r["direction"].as_str() {
        Some("forward") => Direction::Forward,
        _ => Direction::Backward,
    };
    let got = engine.execute(store.log_store(), &req);
    if ev["status"] == "error" {
        return match got {
            Ok(_) => Err(format!("succeeded, but Loki rejects it: {}", ev["error"])),
            Err(_) => Ok(()),
        };
    }
    let got = got.map_err(|e| format!("error: {e}"))?.data;
    let rt = ev["resultType"].as_str().unwrap_or("");
    let result = ev["result"].as_array().cloned().unwrap_or_default();
    match (rt, got) {
        ("streams", Data::Streams(streams)) => {
            let mut want = HashSet::new();
            for s in &result {
                let k = labels_key(&s["stream"]);
                for v in s["values"].as_array().expect("values") {
                    let t = v[0].as_i64().expect("t");
                    let line = match v[1].as_str() {
                        Some(l) => l.to_string(),
                        None => lines.get(&t).cloned().unwrap_or_else(|| panic!("no dataset line at {t}")),
                    };
                    want.insert((k.clone(), t, line));
                }
            }
            let mut have = HashSet::new();
            for s in &streams {
                let k = our_key(&s.labels);
                let ts: Vec<i64> = s.entries.iter().map(|e| e.ts_ns).collect();
                let mut sorted = ts.clone();
                sorted.sort();
                if req.direction == Direction::Backward {
                    sorted.reverse();
                }
                if ts != sorted {
                    return Err(format!("stream {} is not in direction order", s.labels));
                }
                for e in &s.entries {
                    have.insert((k.clone(), e.ts_ns - END_TS * NS, e.line.clone()));
                }
            }
            if want != have {
                let missing: Vec<_> = want.difference(&have).collect();
                let extra: Vec<_> = have.difference(&want).collect();
                let show = |x: Option<&&Flat>| {
                    x.map(|(k, t, l)| format!("{k:?} @{t} {:?}", l.chars().take(120).collect::<String>()))
                        .unwrap_or_default()
                };
                return Err(format!(
                    "{} entries expected, {} returned: {} missing (e.g. {}), {} unexpected (e.g. {})",
                    want.len(),
                    have.len(),
                    missing.len(),
                    show(missing.iter().min_by_key(|x| x.1)),
                    extra.len(),
                    show(extra.iter().min_by_key(|x| x.1))
                ));
            }
            Ok(())
        }
        ("matrix", Data::Matrix(m)) => {
            let want: SeriesMap = result
                .iter()
                .map(|s| {
                    let pts = s["values"]
                        .as_array()
                        .expect("values")
                        .iter()
                        .map(|p| (p[0].as_i64().expect("t"), parse_val(p[1].as_str().expect("v"))))
                        .collect();
                    (labels_key(&s["metric"]), pts)
                })
                .collect();
            let have: SeriesMap = m
                .iter()
                .map(|s| (our_key(&s.labels), s.samples.iter().map(|(t, v)| (rel_ms(*t), *v)).collect()))
                .collect();
            compare_series(&want, &have)
        }
        ("vector", Data::Vector(v)) => {
            let want_order: Vec<Vec<(String, String)>> = result.iter().map(|s| labels_key(&s["metric"])).collect();
            let want: SeriesMap = result
                .iter()
                .map(|s| {
                    let p = &s["value"];
                    (labels_key(&s["metric"]), vec![(p[0].as_i64().expect("t"), parse_val(p[1].as_str().expect("v")))])
                })
                .collect();
            let have_order: Vec<Vec<(String, String)>> = v.iter().map(|s| our_key(&s.labels)).collect();
            let have: SeriesMap = v.iter().map(|s| (our_key(&s.labels), vec![(rel_ms(s.t_ns), s.v)])).collect();
            if have.len() != v.len() {
                return Err("duplicate series in the answer".into());
            }
            compare_series(&want, &have)?;
            if sorts(query) && want_order != have_order {
                return Err(format!("series order differs: want {want_order:?}, got {have_order:?}"));
            }
            Ok(())
        }
        (rt, d) => Err(format!(
            "resultType {rt} expected, got {}",
            match d {
                Data::Streams(_) => "streams",
                Data::Vector(_) => "vector",
                Data::Matrix(_) => "matrix",
                Data::Scalar { .. } => "scalar",
            }
        )),
    }
}

/// One log entry of an answer: (labels, END_TS-relative time, line).
type Flat = (Vec<(String, String)>, i64, String);

type SeriesMap = BTreeMap<Vec<(String, String)>, Vec<(i64, f64)>>;

fn compare_series(want: &SeriesMap, have: &SeriesMap) -> Result<(), String> {
    let missing: Vec<_> = want.keys().filter(|k| !have.contains_key(*k)).collect();
    let extra: Vec<_> = have.keys().filter(|k| !want.contains_key(*k)).collect();
    if !missing.is_empty() || !extra.is_empty() {
        return Err(format!(
            "{} series missing (e.g. {:?}), {} unexpected (e.g. {:?})",
            missing.len(),
            missing.first(),
            extra.len(),
            extra.first()
        ));
    }
    for (k, w) in want {
        let h = &have[k];
        let wt: Vec<i64> = w.iter().map(|p| p.0).collect();
        let ht: Vec<i64> = h.iter().map(|p| p.0).collect();
        if wt != ht {
            return Err(format!(
                "{k:?}: sample times differ: want {:?}.., got {:?}..",
                &wt[..wt.len().min(5)],
                &ht[..ht.len().min(5)]
            ));
        }
        for (a, b) in w.iter().zip(h) {
            if !same(a.1, b.1) {
                return Err(format!("{k:?} @{}: {} instead of {}", a.0, b.1, a.1));
            }
        }
    }
    Ok(())
}

#[test]
fn loki_2_9_13_reference_answers() {
    let (store, lines) = load();
    let text = std::fs::read_to_string(dir().join("answers-loki-2.9.13.json")).expect("answers");
    let doc: Value = serde_json::from_str(&text).expect("answers json");
    assert_eq!(doc["end_ts"].as_i64(), Some(END_TS), "the dataset dump must be for the recording's END_TS");
    let markers = lines.values().filter(|l| l.starts_with("reference pack marker")).count();
    let entries = doc["dataset"]["entries"].as_u64().expect("manifest entries") as usize;
    assert_eq!(lines.len() - markers, entries, "the dump holds exactly the manifest's entries");
    let engine = Engine::new(EngineOptions::default());
    let (mut passed, mut known, mut failed) = (0, 0, Vec::new());
    for q in doc["queries"].as_array().expect("queries") {
        let id = q["id"].as_str().unwrap_or("?");
        let mut problems = Vec::new();
        for ev in q["evaluations"].as_array().expect("evaluations") {
            if let Err(e) = check(&engine, &store, &lines, q, ev) {
                problems.push(format!("  {}: {e}", ev["request"]));
            }
        }
        if problems.is_empty() {
            passed += 1;
        } else if let Some((_, why)) = KNOWN_DIFFERENCES.iter().find(|(k, _)| *k == id) {
            eprintln!("known difference from Loki 2.9.13: {id} ({why}):\n{}", problems.join("\n"));
            known += 1;
        } else {
            failed.push(format!("{id}: {}\n{}", q["query"], problems.join("\n")));
        }
    }
    eprintln!("logql-reference: {passed} passed, {known} known Loki differences, {} failed", failed.len());
    assert!(failed.is_empty(), "{} queries differ from Loki 2.9.13:\n{}", failed.len(), failed.join("\n"));
}
