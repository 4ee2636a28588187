//! `POST /api/v1/write`: Prometheus remote write v1. Answers as Prometheus' receiver does: 204
//! when stored; 400 with a text body for a request that must not be retried (undecodable, invalid
//! series, samples out of bounds); 413 over the size or series limits; 429/503 with `Retry-After`
//! when the write path is saturated or not ready; 500 when the store fails.

use std::time::Instant;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ingest::remote_write::{self, RemoteWriteError};
use storage::model::{Signal, WriteBatch};

use crate::http::AppState;
use crate::pipeline::{ErrorClass, Outcome, PipelineError, RETRY_AFTER_SECS};
use crate::telemetry::{Protocol, RequestReject};

fn text(status: StatusCode, msg: String) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], msg + "\n").into_response()
}

fn refuse(s: &AppState, status: StatusCode, reason: RequestReject, msg: String) -> Response {
    s.pipeline.telemetry.request_rejected(Signal::Metrics, Protocol::RemoteWrite, reason, &msg);
    text(status, msg)
}

fn pipeline_error(e: PipelineError) -> Response {
    let (status, retry) = match e.class() {
        ErrorClass::BadRequest => (StatusCode::BAD_REQUEST, false),
        ErrorClass::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, false),
        ErrorClass::Saturated => (StatusCode::TOO_MANY_REQUESTS, true),
        ErrorClass::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, true),
        ErrorClass::Internal => (StatusCode::INTERNAL_SERVER_ERROR, false),
    };
    let mut r = text(status, e.to_string());
    if retry {
        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
    }
    r
}

/// `POST /api/v1/write`
pub async fn remote_write(State(s): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let started = Instant::now();
    // Remote write 2.0 senders announce their message type and fall back to 1.0 on 415.
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if let Some(proto) = ct.split(';').skip(1).find_map(|p| p.trim().strip_prefix("proto="))
        && proto.trim() != "prometheus.WriteRequest"
    {
        let msg =
            format!("unsupported remote write message {proto:?}; send prometheus.WriteRequest (remote write 1.0)");
        return refuse(&s, StatusCode::UNSUPPORTED_MEDIA_TYPE, RequestReject::UnsupportedMediaType, msg);
    }
    let permit = match s.pipeline.admit() {
        Ok(p) => p,
        Err(e) => {
            s.pipeline.telemetry.request_rejected(Signal::Metrics, Protocol::RemoteWrite, e.reason(), &e.to_string());
            return pipeline_error(e);
        }
    };
    let max = s.limits.max_request_bytes;
    let wire = match tokio::time::timeout(s.limits.body_timeout, axum::body::to_bytes(body, max)).await {
        Err(_) => {
            let msg =
                format!("request body not received within limits.request_body_timeout ({:?})", s.limits.body_timeout);
            return refuse(&s, StatusCode::REQUEST_TIMEOUT, RequestReject::BodyTimeout, msg);
        }
        Ok(Err(e)) => {
            let too_large =
                std::error::Error::source(&e).is_some_and(|src| src.is::<http_body_util::LengthLimitError>());
            if too_large {
                let msg = format!("request body larger than limits.max_request_bytes = {max}");
                return refuse(&s, StatusCode::PAYLOAD_TOO_LARGE, RequestReject::TooLarge, msg);
            }
            return refuse(&s, StatusCode::BAD_REQUEST, RequestReject::Malformed, format!("error reading body: {e}"));
        }
        Ok(Ok(b)) => b,
    };
    let wire_bytes = wire.len();
    let limits = s.pipeline.item_limits().clone();
    let max_series = s.limits.max_series_per_request;
    // Decoding and validation run on the blocking pool; refusals are answered here with the status
    // Prometheus gives them, so they do not go through the pipeline's generic classes.
    let mapped = tokio::task::spawn_blocking(move || {
        remote_write::decode_and_map(&wire, max, &limits, max_series, crate::pipeline::now_ns())
    })
    .await;
    let mapped = match mapped {
        Err(e) => {
            return refuse(&s, StatusCode::INTERNAL_SERVER_ERROR, RequestReject::StorageError, format!("{e}"));
        }
        Ok(Err(e)) => {
            let (status, reason) = match e {
                RemoteWriteError::TooLarge { .. } | RemoteWriteError::TooManySeries { .. } => {
                    (StatusCode::PAYLOAD_TOO_LARGE, RequestReject::TooLarge)
                }
                _ => (StatusCode::BAD_REQUEST, RequestReject::Malformed),
            };
            return refuse(&s, status, reason, e.to_string());
        }
        Ok(Ok(m)) => m,
    };
    let (accepted, batch) = match mapped {
        remote_write::Decoded::Packed { batch, samples } => (samples, WriteBatch::Samples(batch)),
        remote_write::Decoded::Full(m) => (m.samples + m.histograms, WriteBatch::Metrics(m.batch)),
    };
    let result = s
        .pipeline
        .write_mapped(Signal::Metrics, Protocol::RemoteWrite, wire_bytes, started, permit, move |_now| {
            Ok((batch, Outcome { accepted, ..Outcome::default() }))
        })
        .await;
    match result {
        // As Prometheus: the in-bounds samples are stored, and the sender is told (400, not
        // retried) that the rest were out of bounds.
        Ok(o) if o.rejected > 0 => (StatusCode::BAD_REQUEST, o.message).into_response(),
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => pipeline_error(e),
    }
}
