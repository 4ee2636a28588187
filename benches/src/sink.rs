//! The decode-only floor: a minimal OTLP receiver that decodes every request with prost and drops
//! it. Same HTTP stack as Outpost (axum serving tonic's routes for gRPC, axum for OTLP/HTTP), same
//! allocator (jemalloc, with the default `jemalloc` feature), same start-up log lines, so the
//! harness runs and measures it exactly like Outpost.

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{LogsService, LogsServiceServer};
use opentelemetry_proto::tonic::collector::logs::v1::{ExportLogsServiceRequest, ExportLogsServiceResponse};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{ExportMetricsServiceRequest, ExportMetricsServiceResponse};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use prost::Message;
use tokio::net::TcpListener;
use tonic::codec::CompressionEncoding;
use tonic::{Request, Status};

/// Largest request accepted (Outpost's default `limits.max_request_bytes`).
const MAX_REQUEST_BYTES: usize = 16 << 20;

/// `ingest_bench sink`: the same flags as `outpost` where they matter, so both start alike.
#[derive(clap::Args, Clone, Debug)]
pub struct SinkArgs {
    /// Main HTTP port (OTLP/HTTP and gRPC are served there too).
    #[arg(long, default_value = "127.0.0.1:7070")]
    pub listen: SocketAddr,
    /// OTLP/gRPC port.
    #[arg(long, default_value = "127.0.0.1:4317")]
    pub otlp_grpc_listen: SocketAddr,
    /// OTLP/HTTP port.
    #[arg(long, default_value = "127.0.0.1:4318")]
    pub otlp_http_listen: SocketAddr,
    /// Accepted and ignored: the sink stores nothing.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Accepted and ignored: the sink always logs JSON lines.
    #[arg(long)]
    pub log_format: Option<String>,
}

/// Runs the sink until killed.
pub async fn run(args: SinkArgs) -> anyhow::Result<()> {
    let http = TcpListener::bind(args.listen).await.with_context(|| format!("cannot bind {}", args.listen))?;
    let grpc = TcpListener::bind(args.otlp_grpc_listen)
        .await
        .with_context(|| format!("cannot bind {}", args.otlp_grpc_listen))?;
    let otlp_http = TcpListener::bind(args.otlp_http_listen)
        .await
        .with_context(|| format!("cannot bind {}", args.otlp_http_listen))?;
    log(serde_json::json!({
        "level": "INFO",
        "message": "Listening",
        "http": http.local_addr()?.to_string(),
        "otlp_grpc": grpc.local_addr()?.to_string(),
        "otlp_http": otlp_http.local_addr()?.to_string(),
    }));
    let grpc_router = grpc_routes().into_axum_router();
    let main_router = http_routes().merge(grpc_routes().into_axum_router()).route("/healthz", get(|| async { "ok" }));
    let mut servers = tokio::task::JoinSet::new();
    servers.spawn(async move { axum::serve(http.tap_io(nodelay), main_router).await });
    servers.spawn(async move { axum::serve(grpc.tap_io(nodelay), grpc_router).await });
    servers.spawn(async move { axum::serve(otlp_http.tap_io(nodelay), http_routes()).await });
    log(serde_json::json!({"level": "INFO", "message": "Ready"}));
    while let Some(r) = servers.join_next().await {
        r.context("server task failed")?.context("server failed")?;
    }
    Ok(())
}

/// Without TCP_NODELAY, a gRPC response written as several frames can wait for the client's
/// delayed ACK (Nagle): 40 ms stalls.
fn nodelay(tcp: &mut tokio::net::TcpStream) {
    let _ = tcp.set_nodelay(true);
}

fn log(v: serde_json::Value) {
    eprintln!("{v}");
}

/// gRPC: the three services, gzip accepted, decoded by tonic (prost) and dropped.
fn grpc_routes() -> tonic::service::Routes {
    let mut b = tonic::service::Routes::builder();
    b.add_service(
        TraceServiceServer::new(Sink)
            .accept_compressed(CompressionEncoding::Gzip)
            .max_decoding_message_size(MAX_REQUEST_BYTES),
    )
    .add_service(
        LogsServiceServer::new(Sink)
            .accept_compressed(CompressionEncoding::Gzip)
            .max_decoding_message_size(MAX_REQUEST_BYTES),
    )
    .add_service(
        MetricsServiceServer::new(Sink)
            .accept_compressed(CompressionEncoding::Gzip)
            .max_decoding_message_size(MAX_REQUEST_BYTES),
    );
    b.routes()
}

#[derive(Clone, Copy, Debug, Default)]
struct Sink;

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        req: Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, Status> {
        drop(std::hint::black_box(req.into_inner()));
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl LogsService for Sink {
    async fn export(
        &self,
        req: Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, Status> {
        drop(std::hint::black_box(req.into_inner()));
        Ok(tonic::Response::new(ExportLogsServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Sink {
    async fn export(
        &self,
        req: Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, Status> {
        drop(std::hint::black_box(req.into_inner()));
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

/// OTLP/HTTP with protobuf bodies (gzip or not): decode with prost, drop, answer an empty
/// (full-success) response.
fn http_routes() -> axum::Router {
    axum::Router::new()
        .route(
            "/v1/traces",
            post(|h: HeaderMap, b: Bytes| async move { decode_and_drop::<ExportTraceServiceRequest>(&h, &b) }),
        )
        .route(
            "/v1/logs",
            post(|h: HeaderMap, b: Bytes| async move { decode_and_drop::<ExportLogsServiceRequest>(&h, &b) }),
        )
        .route(
            "/v1/metrics",
            post(|h: HeaderMap, b: Bytes| async move { decode_and_drop::<ExportMetricsServiceRequest>(&h, &b) }),
        )
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
}

fn decode_and_drop<M: Message + Default>(headers: &HeaderMap, body: &[u8]) -> Response {
    let gzip = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("gzip"));
    let inflated;
    let body = if gzip {
        let mut out = Vec::with_capacity(body.len() * 4);
        if let Err(e) = flate2::read::MultiGzDecoder::new(body).take(MAX_REQUEST_BYTES as u64).read_to_end(&mut out) {
            return (StatusCode::BAD_REQUEST, format!("invalid gzip body: {e}")).into_response();
        }
        inflated = out;
        &inflated[..]
    } else {
        body
    };
    match M::decode(body) {
        Ok(m) => {
            drop(std::hint::black_box(m));
            (StatusCode::OK, [(header::CONTENT_TYPE, "application/x-protobuf")], Bytes::new()).into_response()
        }
        Err(e) => (StatusCode::BAD_REQUEST, format!("invalid protobuf export request: {e}")).into_response(),
    }
}
