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

/// Routes for the four services, with gzip accepted and the message size limit applied
/// (tonic answers RESOURCE_EXHAUSTED beyond it).
pub fn routes(pipeline: Arc<Pipeline>, max_message_bytes: usize) -> tonic::service::Routes {
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
    b.routes()
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
        let req = req.into_inner();
        let size = req.encoded_len();
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
        let req = req.into_inner();
        let size = req.encoded_len();
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
        let req = req.into_inner();
        let size = req.encoded_len();
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
        let req = req.into_inner();
        let size = req.encoded_len();
        let o = Otlp::export(self, Payload::Decoded(pipeline::Request::Profiles(req)), size).await?;
        Ok(Response::new(ExportProfilesServiceResponse {
            partial_success: partial(&o)
                .map(|(n, m)| ExportProfilesPartialSuccess { rejected_profiles: n, error_message: m }),
        }))
    }
}
