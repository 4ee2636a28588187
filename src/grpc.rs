//! OTLP/gRPC: `TraceService`, `LogsService`, `MetricsService` and `ProfilesService`
//! (`v1development`), gzip accepted. The same
//! [`tonic::service::Routes`] serve the dedicated gRPC port and the main HTTP port.

use std::sync::Arc;
use std::time::Instant;

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{LogsService, LogsServiceServer};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::profiles::v1development::profiles_service_server::{
    ProfilesService, ProfilesServiceServer,
};
use opentelemetry_proto::tonic::collector::profiles::v1development::{
    ExportProfilesPartialSuccess, ExportProfilesServiceRequest, ExportProfilesServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use tonic::codec::CompressionEncoding;
use tonic::{Request, Response, Status};

use crate::pipeline::{self, ErrorClass, Outcome, Payload, Pipeline, PipelineError};
use crate::telemetry::Protocol;

/// The OTLP services over one pipeline.
#[derive(Clone)]
pub struct Otlp {
    pipeline: Arc<Pipeline>,
}

/// Bytes of a gRPC request's body as they came off the wire (frame headers included, compressed
/// when the client compressed), counted as tonic reads them: by the time a unary handler runs,
/// its whole message has passed. The received-bytes metric counts these, as OTLP/HTTP counts its
/// body, instead of walking the decoded message for its `encoded_len` (1.7 % of span ingest).
#[derive(Clone, Default)]
struct WireBytes(Arc<std::sync::atomic::AtomicUsize>);

/// Middleware of the gRPC routes: puts a [`WireBytes`] in the request and counts the body into it.
async fn count_wire_bytes(mut req: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    use http_body_util::BodyExt;
    let n = WireBytes::default();
    req.extensions_mut().insert(n.clone());
    let req = req.map(|body| {
        axum::body::Body::new(body.map_frame(move |frame| {
            if let Some(data) = frame.data_ref() {
                n.0.fetch_add(data.len(), std::sync::atomic::Ordering::Relaxed);
            }
            frame
        }))
    });
    next.run(req).await
}

/// The request's wire size: counted by [`count_wire_bytes`], else (a handler called without it)
/// the encoded message's length.
fn wire_size<M: Message>(req: &Request<M>) -> usize {
    match req.extensions().get::<WireBytes>() {
        Some(n) => n.0.load(std::sync::atomic::Ordering::Relaxed),
        None => req.get_ref().encoded_len(),
    }
}

/// Routes for the four services, with gzip accepted and the message size limit applied
/// (tonic answers RESOURCE_EXHAUSTED beyond it), each request's wire bytes counted.
pub fn routes(pipeline: Arc<Pipeline>, max_message_bytes: usize) -> axum::Router {
    let svc = Otlp { pipeline };
    let mut b = tonic::service::Routes::builder();
    b.add_service(
        TraceServiceServer::new(svc.clone())
            .accept_compressed(CompressionEncoding::Gzip)
            .send_compressed(CompressionEncoding::Gzip)
            .max_decoding_message_size(max_message_bytes),
    )
    .add_service(
        LogsServiceServer::new(svc.clone())
            .accept_compressed(CompressionEncoding::Gzip)
            .send_compressed(CompressionEncoding::Gzip)
            .max_decoding_message_size(max_message_bytes),
    )
    .add_service(
        MetricsServiceServer::new(svc.clone())
            .accept_compressed(CompressionEncoding::Gzip)
            .send_compressed(CompressionEncoding::Gzip)
            .max_decoding_message_size(max_message_bytes),
    )
    .add_service(
        ProfilesServiceServer::new(svc)
            .accept_compressed(CompressionEncoding::Gzip)
            .send_compressed(CompressionEncoding::Gzip)
            .max_decoding_message_size(max_message_bytes),
    );
    b.routes().into_axum_router().layer(axum::middleware::from_fn(count_wire_bytes))
}

impl Otlp {
    async fn export(&self, payload: Payload, wire_bytes: usize) -> Result<Outcome, Status> {
        let started = Instant::now();
        let signal = payload.signal();
        let permit = self.pipeline.admit().map_err(|e| {
            self.pipeline.telemetry.request_rejected(signal, Protocol::Grpc, e.reason(), &e.to_string());
            status(e)
        })?;
        self.pipeline.export(payload, Protocol::Grpc, wire_bytes, started, permit).await.map_err(status)
    }
}

/// OTLP/gRPC: UNAVAILABLE is retryable for every client; INVALID_ARGUMENT, INTERNAL and
/// RESOURCE_EXHAUSTED without `RetryInfo` are not.
fn status(e: PipelineError) -> Status {
    let message = e.to_string();
    match e.class() {
        ErrorClass::BadRequest => Status::invalid_argument(message),
        ErrorClass::TooLarge => Status::resource_exhausted(message),
        ErrorClass::Saturated | ErrorClass::Unavailable => Status::unavailable(message),
        ErrorClass::Internal => Status::internal(message),
    }
}

fn partial(o: &Outcome) -> Option<(i64, String)> {
    (o.rejected > 0 || !o.message.is_empty())
        .then(|| (i64::try_from(o.rejected).unwrap_or(i64::MAX), o.message.clone()))
}

#[tonic::async_trait]
impl TraceService for Otlp {
    async fn export(
        &self,
        req: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let size = wire_size(&req);
        let req = req.into_inner();
        let o = Otlp::export(self, Payload::Decoded(pipeline::Request::Traces(req)), size).await?;
        Ok(Response::new(ExportTraceServiceResponse {
            partial_success: partial(&o)
                .map(|(n, m)| ExportTracePartialSuccess { rejected_spans: n, error_message: m }),
        }))
    }
}

#[tonic::async_trait]
impl LogsService for Otlp {
    async fn export(
        &self,
        req: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        let size = wire_size(&req);
        let req = req.into_inner();
        let o = Otlp::export(self, Payload::Decoded(pipeline::Request::Logs(req)), size).await?;
        Ok(Response::new(ExportLogsServiceResponse {
            partial_success: partial(&o)
                .map(|(n, m)| ExportLogsPartialSuccess { rejected_log_records: n, error_message: m }),
        }))
    }
}

#[tonic::async_trait]
impl MetricsService for Otlp {
    async fn export(
        &self,
        req: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        let size = wire_size(&req);
        let req = req.into_inner();
        let o = Otlp::export(self, Payload::Decoded(pipeline::Request::Metrics(req)), size).await?;
        Ok(Response::new(ExportMetricsServiceResponse {
            partial_success: partial(&o)
                .map(|(n, m)| ExportMetricsPartialSuccess { rejected_data_points: n, error_message: m }),
        }))
    }
}

#[tonic::async_trait]
impl ProfilesService for Otlp {
    async fn export(
        &self,
        req: Request<ExportProfilesServiceRequest>,
    ) -> Result<Response<ExportProfilesServiceResponse>, Status> {
        let size = wire_size(&req);
        let req = req.into_inner();
        let o = Otlp::export(self, Payload::Decoded(pipeline::Request::Profiles(req)), size).await?;
        Ok(Response::new(ExportProfilesServiceResponse {
            partial_success: partial(&o)
                .map(|(n, m)| ExportProfilesPartialSuccess { rejected_profiles: n, error_message: m }),
        }))
    }
}
