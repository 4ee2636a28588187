//! OTLP profiles in, Pyroscope queries out: `ProfilesService/Export` over gRPC (the OTLP port and
//! the main port) and `POST /v1development/profiles` (protobuf and JSON), with partial success,
//! span links kept for span profiles.

use opentelemetry_proto::tonic::collector::profiles::v1development::profiles_service_client::ProfilesServiceClient;
use opentelemetry_proto::tonic::collector::profiles::v1development::{
    ExportProfilesServiceRequest, ExportProfilesServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::profiles::v1development::{
    Function, Line, Link, Location, Mapping, Profile, ProfilesDictionary, ResourceProfiles, Sample, ScopeProfiles,
    Stack, ValueType,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use outpost::api::pyroscope::proto as q;
use prost::Message;
use storage::Reader as _;

use crate::pyroscope_ingest::{CPU, connect, flamegraph, self_by_name};
use crate::support::{TestServer, now_ns};

/// strings: 0 "", 1 samples, 2 count, 3 cpu, 4 nanoseconds, 5 main, 6 handle, 7 query, 8 /srv/api
fn dictionary() -> ProfilesDictionary {
    let f = |name: i32| Function { name_strindex: name, ..Default::default() };
    let loc = |func: i32| Location {
        mapping_index: 1,
        address: 0x1000 + func as u64,
        lines: vec![Line { function_index: func, line: 10, column: 0 }],
        ..Default::default()
    };
    ProfilesDictionary {
        string_table: ["", "samples", "count", "cpu", "nanoseconds", "main", "handle", "query", "/srv/api"]
            .map(String::from)
            .to_vec(),
        mapping_table: vec![
            Mapping::default(),
            Mapping { memory_start: 0x1000, memory_limit: 0x2000, filename_strindex: 8, ..Default::default() },
        ],
        function_table: vec![Function::default(), f(5), f(6), f(7)],
        location_table: vec![Location::default(), loc(1), loc(2), loc(3)],
        // leaf first
        stack_table: vec![
            Stack::default(),
            Stack { location_indices: vec![2, 1] },    // main;handle
            Stack { location_indices: vec![3, 2, 1] }, // main;handle;query
        ],
        link_table: vec![Link::default(), Link { trace_id: vec![7; 16], span_id: vec![0x11; 8] }],
        attribute_table: vec![Default::default()],
    }
}

/// One CPU profile (`samples`/`count`, period 10 ms) of `service`: `handle` 3 samples, `query` 2
/// samples tagged with the link (span `1111111111111111`); with `bad`, a second profile whose
/// stack index is out of the dictionary.
fn request(service: &str, bad: bool) -> ExportProfilesServiceRequest {
    let profile = |samples: Vec<Sample>| Profile {
        sample_type: Some(ValueType { type_strindex: 1, unit_strindex: 2 }),
        period_type: Some(ValueType { type_strindex: 3, unit_strindex: 4 }),
        period: 10_000_000,
        time_unix_nano: (now_ns() - 10_000_000_000) as u64,
        duration_nano: 10_000_000_000,
        samples,
        ..Default::default()
    };
    let mut profiles = vec![profile(vec![
        Sample { stack_index: 1, values: vec![3], ..Default::default() },
        Sample { stack_index: 2, values: vec![2], link_index: 1, ..Default::default() },
    ])];
    if bad {
        profiles.push(profile(vec![Sample { stack_index: 42, values: vec![1], ..Default::default() }]));
    }
    ExportProfilesServiceRequest {
        resource_profiles: vec![ResourceProfiles {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue { value: Some(Value::StringValue(service.into())) }),
                    key_strindex: 0,
                }],
                ..Default::default()
            }),
            scope_profiles: vec![ScopeProfiles { profiles, ..Default::default() }],
            schema_url: String::new(),
        }],
        dictionary: Some(dictionary()),
    }
}

fn post(url: &str, content_type: &str, body: Vec<u8>) -> (u16, Vec<u8>) {
    let resp =
        reqwest::blocking::Client::new().post(url).header("Content-Type", content_type).body(body).send().unwrap();
    (resp.status().as_u16(), resp.bytes().unwrap().to_vec())
}

#[test]
fn otlp_profiles_over_grpc_and_http_become_flame_graphs() {
    let server = TestServer::start(|_| {});
    // gRPC on the OTLP port and on the main port, with a partial success on the first.
    let (first, second) = server.rt.block_on(async {
        let mut otlp = ProfilesServiceClient::connect(server.otlp_grpc()).await.unwrap();
        let first = otlp.export(request("grpc-svc", true)).await.unwrap().into_inner();
        let mut main = ProfilesServiceClient::connect(server.http()).await.unwrap();
        let second = main.export(request("main-svc", false)).await.unwrap().into_inner();
        (first, second)
    });
    let partial = first.partial_success.expect("one profile rejected");
    assert_eq!(partial.rejected_profiles, 1);
    assert!(partial.error_message.contains("stack index 42 is out of the dictionary"), "{}", partial.error_message);
    assert!(second.partial_success.is_none());

    // OTLP/HTTP protobuf on the OTLP port, JSON on the main port.
    let (status, body) = post(
        &format!("{}/v1development/profiles", server.otlp_http()),
        "application/x-protobuf",
        request("http-pb", false).encode_to_vec(),
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert!(ExportProfilesServiceResponse::decode(body.as_slice()).unwrap().partial_success.is_none());
    let json = serde_json::to_vec(&request("http-json", true)).unwrap();
    let (status, body) = post(&format!("{}/v1development/profiles", server.http()), "application/json", json);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["partialSuccess"]["rejectedProfiles"], 1, "{v}");
    // Undecodable: 400 with a google.rpc.Status.
    let (status, _) =
        post(&format!("{}/v1development/profiles", server.http()), "application/x-protobuf", vec![0xff, 0xff]);
    assert_eq!(status, 400);

    // Each service's CPU flame graph: samples × period, as Pyroscope converts OTLP CPU samples.
    for svc in ["grpc-svc", "main-svc", "http-pb", "http-json"] {
        let fg = flamegraph(&server.http(), CPU, &format!(r#"{{service_name="{svc}"}}"#), None);
        assert_eq!(fg.total, 50_000_000, "{svc}");
        let selfs = self_by_name(&fg);
        assert_eq!((selfs["handle"], selfs["query"]), (30_000_000, 20_000_000), "{svc}");
    }
    // OTLP's own labels.
    let (status, body) = connect(
        &server.http(),
        "LabelValues",
        &q::LabelValuesRequest { name: "__otel__".into(), matchers: vec![], start: 0, end: 0 },
    );
    assert_eq!(status, 200);
    assert_eq!(q::LabelValuesResponse::decode(body.as_slice()).unwrap().names, ["true"]);

    // The link's span: a span profile of the `query` samples of all four services.
    let req = q::SelectMergeSpanProfileRequest {
        profile_type_id: CPU.into(),
        label_selector: "{}".into(),
        span_selector: vec!["1111111111111111".into()],
        start: 0,
        end: now_ns() / 1_000_000 + 1000,
        max_nodes: None,
        format: 1,
    };
    let (status, body) = connect(&server.http(), "SelectMergeSpanProfile", &req);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let fg = q::SelectMergeSpanProfileResponse::decode(body.as_slice()).unwrap().flamegraph.unwrap();
    assert_eq!(fg.total, 4 * 20_000_000);
    // And the trace cross-index finds it from the link's trace id.
    let trace = storage::model::TraceId([7; 16]);
    let found = server.storage().profile_store().span_samples(Some(trace), &[], 0, i64::MAX);
    assert_eq!(found.iter().map(|s| s.value).sum::<i64>(), 4 * 20_000_000);
}
