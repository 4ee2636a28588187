//! OTLP/HTTP (`POST /v1/traces`, `/v1/metrics`, `/v1/logs`, `/v1development/profiles`) as the
//! OTLP specification has it:
//! protobuf or JSON bodies, optionally gzip; the response in the request's encoding; full success,
//! `partial_success`, 400 with a `google.rpc.Status` for undecodable payloads, 413 over the size
//! limit, 415 for other media types, 429/503 with `Retry-After` when the write path cannot take it.

use std::io::Read;
use std::time::Instant;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::BodyExt;
use opentelemetry_proto::tonic::collector::logs::v1::{ExportLogsPartialSuccess, ExportLogsServiceResponse};
use opentelemetry_proto::tonic::collector::metrics::v1::{ExportMetricsPartialSuccess, ExportMetricsServiceResponse};
use opentelemetry_proto::tonic::collector::profiles::v1development::{
    ExportProfilesPartialSuccess, ExportProfilesServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTracePartialSuccess, ExportTraceServiceResponse};
use prost::Message;
use storage::model::Signal;

use super::AppState;
use crate::pipeline::{ErrorClass, Outcome, Payload, PipelineError, RETRY_AFTER_SECS};
use crate::telemetry::{Protocol, RequestReject};

/// `google.rpc.Status`, the error body OTLP/HTTP prescribes. Field numbers are those of
/// `google/rpc/status.proto`; `details` is never filled, so it is left out of the struct.
#[derive(Clone, PartialEq, Message, serde::Serialize)]
pub struct RpcStatus {
    /// A `google.rpc.Code`.
    #[prost(int32, tag = "1")]
    pub code: i32,
    /// Developer-facing message.
    #[prost(string, tag = "2")]
    pub message: String,
}

/// gRPC codes used in `RpcStatus`.
const CODE_INVALID_ARGUMENT: i32 = 3;
const CODE_RESOURCE_EXHAUSTED: i32 = 8;
const CODE_INTERNAL: i32 = 13;
const CODE_UNAVAILABLE: i32 = 14;

/// POST /v1/traces
pub async fn traces(State(s): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    export(s, Signal::Traces, headers, body).await
}

/// POST /v1/logs
pub async fn logs(State(s): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    export(s, Signal::Logs, headers, body).await
}

/// POST /v1/metrics
pub async fn metrics(State(s): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    export(s, Signal::Metrics, headers, body).await
}

/// POST /v1development/profiles (OTLP profiles, development status)
pub async fn profiles(State(s): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    export(s, Signal::Profiles, headers, body).await
}

/// A refusal, rendered in the request's encoding.
struct Refusal {
    status: StatusCode,
    code: i32,
    reason: RequestReject,
    message: String,
    retry: bool,
}

impl Refusal {
    fn new(status: StatusCode, code: i32, reason: RequestReject, message: impl Into<String>) -> Self {
        Refusal { status, code, reason, message: message.into(), retry: false }
    }

    fn from_pipeline(e: PipelineError) -> Self {
        let (reason, message) = (e.reason(), e.to_string());
        let (status, code, retry) = match e.class() {
            ErrorClass::BadRequest => (StatusCode::BAD_REQUEST, CODE_INVALID_ARGUMENT, false),
            ErrorClass::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, CODE_RESOURCE_EXHAUSTED, false),
            ErrorClass::Saturated => (StatusCode::TOO_MANY_REQUESTS, CODE_RESOURCE_EXHAUSTED, true),
            ErrorClass::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, CODE_UNAVAILABLE, true),
            ErrorClass::Internal => (StatusCode::INTERNAL_SERVER_ERROR, CODE_INTERNAL, false),
        };
        Refusal { retry, ..Refusal::new(status, code, reason, message) }
    }

    fn into_response(self, json: bool) -> Response {
        let status = RpcStatus { code: self.code, message: self.message };
        let mut resp = if json {
            (self.status, [(header::CONTENT_TYPE, "application/json")], serde_json::to_vec(&status).unwrap_or_default())
                .into_response()
        } else {
            (self.status, [(header::CONTENT_TYPE, "application/x-protobuf")], status.encode_to_vec()).into_response()
        };
        if self.retry {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        }
        resp
    }
}

async fn export(s: AppState, signal: Signal, headers: HeaderMap, body: Body) -> Response {
    let started = Instant::now();
    // An unknown media type is answered in JSON: the client evidently does not speak our protobuf.
    let json = match media_type(&headers) {
        Some(MediaType::Protobuf) => false,
        Some(MediaType::Json) => true,
        None => {
            let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("(none)");
            let r = Refusal::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                CODE_INVALID_ARGUMENT,
                RequestReject::UnsupportedMediaType,
                format!("unsupported Content-Type {ct:?}; use application/x-protobuf or application/json"),
            );
            return refuse(&s, signal, Protocol::HttpJson, r, true);
        }
    };
    let protocol = if json { Protocol::HttpJson } else { Protocol::HttpProtobuf };
    let gzip =
        match headers.get(header::CONTENT_ENCODING).map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase()) {
            None => false,
            Some(e) if e.is_empty() || e == "identity" => false,
            Some(e) if e == "gzip" => true,
            Some(e) => {
                let r = Refusal::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    CODE_INVALID_ARGUMENT,
                    RequestReject::UnsupportedMediaType,
                    format!("unsupported Content-Encoding {e:?}; use gzip or none"),
                );
                return refuse(&s, signal, protocol, r, json);
            }
        };
    let max = s.limits.max_request_bytes;
    let too_large = || {
        Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            CODE_RESOURCE_EXHAUSTED,
            RequestReject::TooLarge,
            format!("request body larger than limits.max_request_bytes = {max}"),
        )
    };
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|len| len > drain_cap(max)) {
        // Far over the limit: answer at once; the client sees the 413 or a closed connection.
        return refuse(&s, signal, protocol, too_large(), json);
    }
    let permit = match s.pipeline.admit() {
        Ok(p) => p,
        Err(e) => return refuse(&s, signal, protocol, Refusal::from_pipeline(e), json),
    };
    let wire = match tokio::time::timeout(s.limits.body_timeout, read_body(body, max)).await {
        Err(_) => {
            let r = Refusal::new(
                StatusCode::REQUEST_TIMEOUT,
                CODE_INVALID_ARGUMENT,
                RequestReject::BodyTimeout,
                format!("request body not received within limits.request_body_timeout ({:?})", s.limits.body_timeout),
            );
            return refuse(&s, signal, protocol, r, json);
        }
        Ok(Err(BodyError::TooLarge)) => return refuse(&s, signal, protocol, too_large(), json),
        Ok(Err(BodyError::Read(e))) => {
            let r = Refusal::new(
                StatusCode::BAD_REQUEST,
                CODE_INVALID_ARGUMENT,
                RequestReject::Malformed,
                format!("error reading request body: {e}"),
            );
            return refuse(&s, signal, protocol, r, json);
        }
        Ok(Ok(b)) => b,
    };
    let wire_bytes = wire.len();
    let body = if gzip {
        match gunzip(&wire, max) {
            Ok(b) => b,
            Err(GunzipError::TooLarge) => {
                let mut r = too_large();
                r.message = format!("decompressed request body larger than limits.max_request_bytes = {max}");
                return refuse(&s, signal, protocol, r, json);
            }
            Err(GunzipError::Invalid(e)) => {
                let r = Refusal::new(
                    StatusCode::BAD_REQUEST,
                    CODE_INVALID_ARGUMENT,
                    RequestReject::Malformed,
                    format!("invalid gzip body: {e}"),
                );
                return refuse(&s, signal, protocol, r, json);
            }
        }
    } else {
        wire
    };
    let payload = Payload::Encoded { signal, json, body };
    match s.pipeline.export(payload, protocol, wire_bytes, started, permit).await {
        Ok(outcome) => success(signal, &outcome, json),
        // The pipeline has already counted and logged the refusal.
        Err(e) => Refusal::from_pipeline(e).into_response(json),
    }
}

fn refuse(s: &AppState, signal: Signal, protocol: Protocol, r: Refusal, json: bool) -> Response {
    s.pipeline.telemetry.request_rejected(signal, protocol, r.reason, &r.message);
    r.into_response(json)
}

/// Bytes of an over-limit body read and thrown away so that the client, still sending, gets to see
/// the 413 instead of a reset connection. Bodies declared larger than this are refused unread.
pub(crate) fn drain_cap(max: usize) -> u64 {
    (max as u64).saturating_mul(2).max(64 << 20)
}

pub(crate) enum BodyError {
    TooLarge,
    Read(axum::Error),
}

/// Reads at most `max` bytes; past that, drains up to `drain_cap(max)` and reports `TooLarge`.
pub(crate) async fn read_body(mut body: Body, max: usize) -> Result<Bytes, BodyError> {
    let mut buf = bytes::BytesMut::new();
    let mut seen: u64 = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(BodyError::Read)?;
        let Ok(data) = frame.into_data() else { continue };
        seen += data.len() as u64;
        if seen > max as u64 {
            if seen > drain_cap(max) {
                return Err(BodyError::TooLarge);
            }
            continue;
        }
        buf.extend_from_slice(&data);
    }
    if seen > max as u64 { Err(BodyError::TooLarge) } else { Ok(buf.freeze()) }
}

enum MediaType {
    Protobuf,
    Json,
}

fn media_type(headers: &HeaderMap) -> Option<MediaType> {
    let ct = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let essence = ct.split(';').next()?.trim().to_ascii_lowercase();
    match essence.as_str() {
        "application/x-protobuf" | "application/protobuf" => Some(MediaType::Protobuf),
        "application/json" => Some(MediaType::Json),
        _ => None,
    }
}

pub(crate) enum GunzipError {
    TooLarge,
    Invalid(std::io::Error),
}

/// Decompresses at most `max` bytes; more is `TooLarge` (a gzip bomb stops there).
pub(crate) fn gunzip(data: &[u8], max: usize) -> Result<Bytes, GunzipError> {
    let mut out = Vec::with_capacity((data.len() * 4).min(max));
    let mut dec = flate2::read::MultiGzDecoder::new(data).take(max as u64 + 1);
    dec.read_to_end(&mut out).map_err(GunzipError::Invalid)?;
    if out.len() > max {
        return Err(GunzipError::TooLarge);
    }
    Ok(Bytes::from(out))
}

fn success(signal: Signal, o: &Outcome, json: bool) -> Response {
    let partial = o.rejected > 0 || !o.message.is_empty();
    let rejected = i64::try_from(o.rejected).unwrap_or(i64::MAX);
    let message = o.message.clone();
    macro_rules! respond {
        ($resp:ident, $partial:ident, $field:ident) => {{
            let r = $resp { partial_success: partial.then(|| $partial { $field: rejected, error_message: message }) };
            if json {
                let body = serde_json::to_vec(&r).unwrap_or_default();
                ([(header::CONTENT_TYPE, "application/json")], body).into_response()
            } else {
                ([(header::CONTENT_TYPE, "application/x-protobuf")], r.encode_to_vec()).into_response()
            }
        }};
    }
    match signal {
        Signal::Traces => respond!(ExportTraceServiceResponse, ExportTracePartialSuccess, rejected_spans),
        Signal::Logs => respond!(ExportLogsServiceResponse, ExportLogsPartialSuccess, rejected_log_records),
        Signal::Metrics => respond!(ExportMetricsServiceResponse, ExportMetricsPartialSuccess, rejected_data_points),
        Signal::Profiles => respond!(ExportProfilesServiceResponse, ExportProfilesPartialSuccess, rejected_profiles),
    }
}
