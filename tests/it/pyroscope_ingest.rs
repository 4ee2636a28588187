//! Pyroscope ingest end to end: real profiles (the `pprof` crate in this process, Go's
//! `runtime/pprof` in a child) pushed to `/ingest` and `Push`, read back through the connect
//! querier; bad payloads get clear 4xx answers; profiles survive a checkpoint and a reopen.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use ingest::pprof::proto as pp;
use outpost::api::pyroscope::proto as q;
use prost::Message;
use storage::Reader as _;

use crate::support::{TestServer, now_ns};

pub const CPU: &str = "process_cpu:cpu:nanoseconds:cpu:nanoseconds";

/// A connect unary call with a binary protobuf body; returns status and body.
pub fn connect<M: Message>(base: &str, method: &str, msg: &M) -> (u16, Vec<u8>) {
    let resp = reqwest::blocking::Client::new()
        .post(format!("{base}/querier.v1.QuerierService/{method}"))
        .header("Content-Type", "application/proto")
        .header("Connect-Protocol-Version", "1")
        .body(msg.encode_to_vec())
        .send()
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.bytes().unwrap().to_vec())
}

/// `SelectMergeStacktraces` over everything of `profile_type` matching `selector`.
pub fn flamegraph(base: &str, profile_type: &str, selector: &str, max_nodes: Option<i64>) -> q::FlameGraph {
    let req = q::SelectMergeStacktracesRequest {
        profile_type_id: profile_type.into(),
        label_selector: selector.into(),
        start: 0,
        end: now_ns() / 1_000_000 + 3_600_000,
        max_nodes,
        format: 0,
        stack_trace_selector: None,
    };
    let (status, body) = connect(base, "SelectMergeStacktraces", &req);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    q::SelectMergeStacktracesResponse::decode(body.as_slice()).unwrap().flamegraph.unwrap_or_default()
}

/// Self value per function name, decoded from the flame graph's levels.
pub fn self_by_name(fg: &q::FlameGraph) -> BTreeMap<String, i64> {
    let levels: Vec<Vec<i64>> = fg.levels.iter().map(|l| l.values.clone()).collect();
    let f = query::profiles::FlameGraph { names: fg.names.clone(), levels, total: fg.total, max_self: fg.max_self };
    query::profiles::self_by_function(&f)
}

pub fn post_ingest(base: &str, query: &str, body: Vec<u8>, content_type: Option<&str>) -> (u16, String) {
    let mut req = reqwest::blocking::Client::new().post(format!("{base}/ingest?{query}")).body(body);
    if let Some(ct) = content_type {
        req = req.header("Content-Type", ct);
    }
    let resp = req.send().unwrap();
    let status = resp.status().as_u16();
    (status, resp.text().unwrap())
}

/// Sum of the values of sample type `sample_type` in an encoded (maybe gzipped) pprof profile.
fn pprof_sum(data: &[u8], sample_type: &str) -> i64 {
    let p = ingest::pprof::decode(data, &ingest::pprof::PprofLimits::default()).unwrap();
    let i = p.sample_type.iter().position(|st| p.string_table[st.r#type as usize] == sample_type).unwrap();
    p.sample.iter().map(|s| s.value[i]).sum()
}

fn burn(ms: u64) -> u64 {
    let end = std::time::Instant::now() + std::time::Duration::from_millis(ms);
    let mut x = 1u64;
    while std::time::Instant::now() < end {
        for _ in 0..10_000 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        }
    }
    x
}

#[test]
fn pprof_crate_cpu_profile_round_trips_through_ingest() {
    let server = TestServer::start(|_| {});
    // Profile this process until at least a few samples are in.
    let mut encoded = Vec::new();
    for _ in 0..20 {
        let guard = pprof::ProfilerGuardBuilder::default()
            .frequency(1000)
            .blocklist(&["libc", "libgcc", "pthread", "vdso"])
            .build()
            .unwrap();
        std::hint::black_box(burn(300));
        let report = guard.report().build().unwrap();
        let profile = report.pprof().unwrap();
        encoded.clear();
        pprof::protos::Message::encode(&profile, &mut encoded).unwrap();
        if profile.sample.len() >= 3 {
            break;
        }
    }
    let want = pprof_sum(&encoded, "cpu");
    assert!(want > 0, "the profiler took no samples");
    let now = now_ns() / 1_000_000_000;
    let (status, text) = post_ingest(
        &server.http(),
        &format!("name=rust-app%7Benv%3Dtest%7D&from={}&until={now}&format=pprof&spyName=rustspy", now - 10),
        encoded.clone(),
        None,
    );
    assert_eq!(status, 200, "{text}");
    let fg = flamegraph(&server.http(), CPU, r#"{service_name="rust-app"}"#, Some(-1));
    assert_eq!(fg.total, want);
    assert_eq!(fg.names[0], "total");
    // The same file read by `go tool pprof -top`: its total and top 10 functions by self value.
    if let Some(go) = go_toolchain("pprof_crate_cpu_profile_round_trips_through_ingest: go tool pprof") {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("rust-cpu.pprof");
        std::fs::write(&file, &encoded).unwrap();
        let (top, total) = go_top(go, &file);
        assert!(!top.is_empty());
        assert_eq!(total, want);
        assert_flamegraph_is_go_top(&server.http(), "rust-app", &top, total);
    }
    // The samples count type is there too, with the sample count as total.
    let fg = flamegraph(&server.http(), "process_cpu:samples:count:cpu:nanoseconds", "{}", None);
    assert_eq!(fg.total, pprof_sum(&encoded, "samples"));
    // Labels as Pyroscope sets them.
    let (status, body) = connect(
        &server.http(),
        "LabelValues",
        &q::LabelValuesRequest { name: "pyroscope_spy".into(), matchers: vec![], start: 0, end: 0 },
    );
    assert_eq!(status, 200);
    assert_eq!(q::LabelValuesResponse::decode(body.as_slice()).unwrap().names, ["rustspy"]);
}

/// `go tool pprof -top` rows: (function, flat ns), and the total ns. `-symbolize=none` shows the
/// function names the file holds, as Pyroscope does: by default pprof demangles them again for
/// display, which trims a Rust name such as `spec_next<i32>` to `spec_next` (C++ template rules).
fn go_top(go: &str, file: &Path) -> (Vec<(String, i64)>, i64) {
    let out = Command::new(go)
        .args(["tool", "pprof", "-symbolize=none", "-top", "-nodecount=10", "-nodefraction=0", "-sample_index=cpu"])
        .arg("-unit=ns")
        .arg(file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    parse_go_top(&String::from_utf8_lossy(&out.stdout))
}

/// The rows and total of a `go tool pprof -top -unit=ns` report.
fn parse_go_top(text: &str) -> (Vec<(String, i64)>, i64) {
    let ns = |s: &str| -> i64 { s.trim_end_matches("ns").parse().unwrap() };
    let mut total = None;
    let mut rows = Vec::new();
    let mut in_rows = false;
    for line in text.lines() {
        if let Some(rest) = line.split(" of ").nth(1).filter(|_| line.starts_with("Showing nodes accounting for")) {
            total = Some(ns(rest.trim_end_matches(" total")));
        } else if line.trim_start().starts_with("flat") {
            in_rows = true;
        } else if in_rows {
            let mut fields: Vec<&str> = line.split_whitespace().collect();
            // pprof marks a function reached only (or partly) through inlined calls
            // with a trailing `(inline)` / `(partial-inline)` column; it is not part
            // of the name, and the node still holds every sample of that function.
            if matches!(fields.last(), Some(&("(inline)" | "(partial-inline)"))) && fields.len() > 6 {
                fields.pop();
            }
            if fields.len() >= 6 {
                rows.push((fields[5..].join(" "), ns(fields[0])));
            }
        }
    }
    (rows, total.unwrap_or_else(|| panic!("no total in:\n{text}")))
}

#[test]
fn go_top_rows_drop_the_inline_column() {
    let text = "File: main\nType: cpu\nShowing nodes accounting for 30000000ns, 100% of 30000000ns total\n      flat  flat%   sum%        cum   cum%\n  20000000ns 66.67% 66.67%   20000000ns 66.67%  main.spin\n  10000000ns 33.33%   100%   10000000ns 33.33%  runtime.(*mspan).init (inline)\n         0     0%   100%   10000000ns 33.33%  runtime.mallocgc (partial-inline)\n";
    let (rows, total) = parse_go_top(text);
    assert_eq!(total, 30_000_000);
    assert_eq!(
        rows,
        [
            ("main.spin".to_string(), 20_000_000),
            ("runtime.(*mspan).init".to_string(), 10_000_000),
            ("runtime.mallocgc".to_string(), 0)
        ]
    );
}

#[test]
fn go_runtime_pprof_profile_matches_go_tool_pprof() {
    let Some(go) = go_toolchain("go_runtime_pprof_profile_matches_go_tool_pprof") else { return };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cpu.pprof");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/testdata/pprof-go");
    let out = Command::new(go)
        .arg("run")
        .arg(".")
        .arg(&file)
        .current_dir(&src)
        .env("GOFLAGS", "-mod=mod")
        .env("GOCACHE", dir.path().join("gocache"))
        .env("GOPATH", dir.path().join("gopath"))
        .output()
        .unwrap();
    assert!(out.status.success(), "go run failed: {}", String::from_utf8_lossy(&out.stderr));
    let data = std::fs::read(&file).unwrap();
    let (top, total) = go_top(go, &file);
    assert!(!top.is_empty());

    let server = TestServer::start(|_| {});
    let now = now_ns() / 1_000_000_000;
    // As Pyroscope's Go SDK sends it: multipart with a `profile` field.
    let boundary = "outpost-test-boundary";
    let mut body = Vec::new();
    write!(
        body,
        "--{boundary}\r\nContent-Disposition: form-data; name=\"profile\"; filename=\"profile.pprof\"\r\nContent-Type: application/octet-stream\r\n\r\n"
    )
    .unwrap();
    body.extend_from_slice(&data);
    write!(body, "\r\n--{boundary}--\r\n").unwrap();
    let (status, text) = post_ingest(
        &server.http(),
        &format!("name=go-app&from={}&until={now}&format=pprof", now - 10),
        body,
        Some(&format!("multipart/form-data; boundary={boundary}")),
    );
    assert_eq!(status, 200, "{text}");
    assert_flamegraph_is_go_top(&server.http(), "go-app", &top, total);
}

/// The `go` toolchain, or `None` (the caller skips) when it is not installed and CI does not
/// require it.
fn go_toolchain(test: &str) -> Option<&'static str> {
    match Command::new("go").arg("version").output() {
        Ok(o) if o.status.success() => Some("go"),
        _ => {
            if std::env::var("CI_REQUIRE_GO").as_deref() == Ok("1") {
                panic!("CI_REQUIRE_GO=1 but the go toolchain is not installed");
            }
            eprintln!("notice: skipping {test}: go is not installed");
            None
        }
    }
}

/// `SelectMergeStacktraces` of `service`'s CPU profiles has `go tool pprof -top`'s total, and
/// each of its top functions has the same self value.
fn assert_flamegraph_is_go_top(base: &str, service: &str, top: &[(String, i64)], total: i64) {
    let fg = flamegraph(base, CPU, &format!(r#"{{service_name="{service}"}}"#), Some(-1));
    assert_eq!(fg.total, total);
    let selfs = self_by_name(&fg);
    for (name, flat) in top {
        assert_eq!(selfs.get(name).copied().unwrap_or(0), *flat, "self of {name}");
    }
}

#[test]
fn push_endpoint_accepts_connect_proto_and_json() {
    let server = TestServer::start(|_| {});
    let profile = small_profile(&[(&["main", "work"], 7)], None);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&profile.encode_to_vec()).unwrap();
    let req = pp::PushRequest {
        series: vec![pp::RawProfileSeries {
            labels: vec![
                pp::LabelPair { name: "__name__".into(), value: "process_cpu".into() },
                pp::LabelPair { name: "service_name".into(), value: "pushed".into() },
            ],
            samples: vec![pp::RawSample { raw_profile: gz.finish().unwrap(), id: "x".into() }],
        }],
    };
    let client = reqwest::blocking::Client::new();
    let resp = client
        .post(format!("{}/push.v1.PusherService/Push", server.http()))
        .header("Content-Type", "application/proto")
        .header("Connect-Protocol-Version", "1")
        .body(req.encode_to_vec())
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["content-type"], "application/proto");
    // protojson: bytes as base64.
    let b64 = base64_encode(&small_profile(&[(&["main", "idle"], 3)], None).encode_to_vec());
    let json = serde_json::json!({"series": [{"labels": [{"name": "__name__", "value": "process_cpu"}, {"name": "service_name", "value": "pushed"}], "samples": [{"rawProfile": b64}]}]});
    let resp = client
        .post(format!("{}/push.v1.PusherService/Push", server.http()))
        .header("Content-Type", "application/json")
        .body(json.to_string())
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let fg = flamegraph(&server.http(), CPU, r#"{service_name="pushed"}"#, None);
    assert_eq!(fg.total, 10);
    // No __name__: a connect invalid_argument.
    let bad = pp::PushRequest { series: vec![pp::RawProfileSeries { labels: vec![], samples: vec![] }] };
    let resp = client
        .post(format!("{}/push.v1.PusherService/Push", server.http()))
        .header("Content-Type", "application/proto")
        .body(bad.encode_to_vec())
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let err: serde_json::Value = resp.json().unwrap();
    assert_eq!(err["code"], "invalid_argument");
    assert!(err["message"].as_str().unwrap().contains("__name__"), "{err}");
}

fn base64_encode(data: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in data.chunks(3) {
        let n =
            (u32::from(c[0]) << 16) | (u32::from(*c.get(1).unwrap_or(&0)) << 8) | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A CPU pprof profile (sample type cpu/nanoseconds) of `stacks` (root first), optionally with a
/// `span_id` label on every sample.
pub fn small_profile(stacks: &[(&[&str], i64)], span: Option<&str>) -> pp::Profile {
    let mut strings = vec![String::new(), "cpu".into(), "nanoseconds".into(), "span_id".into()];
    let span_idx = span.map(|s| {
        strings.push(s.into());
        strings.len() as i64 - 1
    });
    let mut functions: Vec<pp::Function> = Vec::new();
    let mut samples = Vec::new();
    for (frames, v) in stacks {
        let mut locs = Vec::new();
        for f in frames.iter().rev() {
            let id = match functions.iter().position(|x| strings[x.name as usize] == *f) {
                Some(i) => i as u64 + 1,
                None => {
                    strings.push(f.to_string());
                    functions.push(pp::Function {
                        id: functions.len() as u64 + 1,
                        name: strings.len() as i64 - 1,
                        ..Default::default()
                    });
                    functions.len() as u64
                }
            };
            locs.push(id);
        }
        let label = span_idx.map(|s| pp::Label { key: 3, str: s, ..Default::default() }).into_iter().collect();
        samples.push(pp::Sample { location_id: locs, value: vec![*v], label });
    }
    let location = functions
        .iter()
        .map(|f| pp::Location {
            id: f.id,
            line: vec![pp::Line { function_id: f.id, line: 1, column: 0 }],
            ..Default::default()
        })
        .collect();
    pp::Profile {
        sample_type: vec![pp::ValueType { r#type: 1, unit: 2 }],
        sample: samples,
        location,
        function: functions,
        string_table: strings,
        period_type: Some(pp::ValueType { r#type: 1, unit: 2 }),
        period: 10_000_000,
        time_nanos: now_ns() - 5_000_000_000,
        duration_nanos: 10_000_000_000,
        ..Default::default()
    }
}

#[test]
fn bad_profiles_get_clear_errors() {
    let server = TestServer::start(|raw| {
        raw.limits.max_request_bytes = 32 << 20;
        raw.limits.max_profile_samples = 100_000;
    });
    let base = server.http();
    let q = "name=bad&from=1&until=2&format=pprof";
    // Corrupt protobuf.
    let (status, text) = post_ingest(&base, q, b"\x0a\xff\xff\xff\xff not a profile".to_vec(), None);
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("invalid profile"), "{text}");
    // A gzip bomb: 64 MiB of zeros in a few KiB.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&vec![0u8; 64 << 20]).unwrap();
    let bomb = gz.finish().unwrap();
    assert!(bomb.len() < 1 << 20);
    let (status, text) = post_ingest(&base, q, bomb.clone(), None);
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("maximum decompressed size"), "{text}");
    // The same bomb as the transport encoding.
    let resp = reqwest::blocking::Client::new()
        .post(format!("{base}/ingest?{q}"))
        .header("Content-Encoding", "gzip")
        .body(bomb)
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 413);
    // Unknown profile types: pprof sample types and folded app suffixes.
    let mut p = small_profile(&[(&["a"], 1)], None);
    p.string_table[1] = "frobs".into();
    let (status, text) = post_ingest(&base, q, p.encode_to_vec(), None);
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("unknown profile type"), "{text}");
    let (status, text) = post_ingest(&base, "name=app.frobnicate&from=1&until=2", b"a;b 1\n".to_vec(), None);
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("unknown profile type: frobnicate"), "{text}");
    // A million samples: over the per-profile limit, refused with the limit named.
    let mut big = small_profile(&[(&["main", "hot"], 1)], None);
    let one = big.sample[0].clone();
    big.sample = vec![one; 1_000_000];
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&big.encode_to_vec()).unwrap();
    let (status, text) = post_ingest(&base, q, gz.finish().unwrap(), None);
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("limits.max_profile_samples"), "{text}");
    // Missing name.
    let (status, text) = post_ingest(&base, "from=1&until=2", b"a 1".to_vec(), None);
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("name"), "{text}");
    // Nothing of the above was stored; the server still works.
    assert_eq!(server.storage().item_counts().profiles, 0);
    let (status, text) = post_ingest(&base, "name=ok.cpu&from=1&until=2", b"a;b 2\n".to_vec(), None);
    assert_eq!(status, 200, "{text}");
    assert_eq!(server.storage().item_counts().profiles, 1);
}

#[test]
fn profiles_survive_checkpoint_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let open =
        || storage::Storage::open(storage::StorageOptions::new(dir.path()), Arc::new(storage::NoEvents)).unwrap().0;
    let limits = ingest::pprof::PprofLimits::default();
    let batch = |stacks: &[(&[&str], i64)], span: Option<&str>| {
        let req = pp::PushRequest {
            series: vec![pp::RawProfileSeries {
                labels: vec![
                    pp::LabelPair { name: "__name__".into(), value: "process_cpu".into() },
                    pp::LabelPair { name: "service_name".into(), value: "persisted".into() },
                ],
                samples: vec![pp::RawSample {
                    raw_profile: small_profile(stacks, span).encode_to_vec(),
                    id: String::new(),
                }],
            }],
        };
        storage::model::WriteBatch::Profiles(ingest::pprof::push(req, &limits, now_ns()).unwrap())
    };
    let store = open();
    store.write(batch(&[(&["main", "a"], 5)], Some("00000000000000aa"))).unwrap();
    store.checkpoint().unwrap();
    store.write(batch(&[(&["main", "b"], 7)], None)).unwrap();
    store.checkpoint().unwrap();
    store.write(batch(&[(&["main", "c"], 11)], None)).unwrap(); // only in the WAL
    let before = store.profile_store().profiles(0, i64::MAX);
    assert_eq!(before.len(), 3);
    store.close().unwrap();
    drop(store);
    assert!(dir.path().join("profiles/MANIFEST.json").exists());
    let parts = std::fs::read_dir(dir.path().join("profiles"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".parquet"))
        .count();
    assert_eq!(parts, 2);
    let store = open();
    let after = store.profile_store().profiles(0, i64::MAX);
    assert_eq!(after, before);
    assert_eq!(store.item_counts().profiles, 3);
    let spans = [storage::model::SpanId::from_hex("00000000000000aa").unwrap()];
    let found = store.profile_store().span_samples(None, &spans, 0, i64::MAX);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].value, 5);
}

#[test]
fn mappings_come_back_in_select_merge_profile() {
    let server = TestServer::start(|_| {});
    let mut profile = small_profile(&[(&["main", "work"], 7), (&["main"], 3)], None);
    profile.string_table.extend(["/usr/local/bin/shop".to_string(), "9e1f00d".to_string()]);
    let n = profile.string_table.len() as i64;
    profile.mapping = vec![pp::Mapping {
        id: 1,
        memory_start: 0x40_0000,
        memory_limit: 0x90_0000,
        file_offset: 0x1000,
        filename: n - 2,
        build_id: n - 1,
        has_functions: true,
        ..Default::default()
    }];
    for l in &mut profile.location {
        l.mapping_id = 1;
    }
    let now = now_ns() / 1_000_000_000;
    let query = format!("name=mapped&from={}&until={now}&format=pprof", now - 10);
    let (status, text) = post_ingest(&server.http(), &query, profile.encode_to_vec(), None);
    assert_eq!(status, 200, "{text}");
    let (status, body) = connect(
        &server.http(),
        "SelectMergeProfile",
        &q::SelectMergeProfileRequest {
            profile_type_id: CPU.into(),
            label_selector: r#"{service_name="mapped"}"#.into(),
            start: 0,
            end: now * 1000 + 1000,
            max_nodes: None,
            stack_trace_selector: None,
        },
    );
    assert_eq!(status, 200);
    let p = pp::Profile::decode(body.as_slice()).unwrap();
    assert_eq!(p.mapping.len(), 1);
    let m = &p.mapping[0];
    let s = |i: i64| p.string_table[i as usize].as_str();
    assert_eq!((s(m.filename), s(m.build_id)), ("/usr/local/bin/shop", "9e1f00d"));
    assert_eq!((m.memory_start, m.memory_limit, m.file_offset, m.has_functions), (0x40_0000, 0x90_0000, 0x1000, true));
    assert!(p.location.iter().all(|l| l.mapping_id == m.id));
    assert_eq!(p.sample.iter().map(|s| s.value[0]).sum::<i64>(), 10);
}
