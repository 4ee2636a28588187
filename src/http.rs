//! The HTTP listeners: the main port (every API, OTLP/HTTP under `/v1/*`, gRPC too, and the
//! operational endpoints) and the dedicated OTLP/HTTP port.

pub(crate) mod otlp;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};

use crate::config::RequestLimits;
use crate::pipeline::Pipeline;

pub use otlp::RpcStatus;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The write path.
    pub pipeline: Arc<Pipeline>,
    /// Request limits.
    pub limits: RequestLimits,
    /// The Prometheus query API's engine options and query slots.
    pub prom: Arc<crate::api::prom::PromState>,
    /// Loki push and LogQL settings.
    pub loki: Arc<crate::config::LokiSettings>,
}

fn otlp_routes() -> Router<AppState> {
    Router::new()
        .route("/v1/traces", post(otlp::traces))
        .route("/v1/logs", post(otlp::logs))
        .route("/v1/metrics", post(otlp::metrics))
        .route("/v1development/profiles", post(otlp::profiles))
        // The handlers enforce `limits.max_request_bytes` themselves, compressed and decompressed.
        .layer(DefaultBodyLimit::disable())
}

/// The main port: OTLP/HTTP, OTLP/gRPC (`grpc`), `/healthz`, `/readyz`, `/metrics`.
pub fn main_router(state: AppState, grpc: Router) -> Router {
    otlp_routes()
        .merge(crate::api::routes())
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(self_metrics))
        .with_state(state)
        .merge(grpc)
        // tonic's router answers every unknown path with a gRPC `UNIMPLEMENTED` in a 200 response;
        // HTTP clients (Grafana probing optional endpoints) must see a 404 instead, and a gRPC
        // client maps HTTP 404 to `UNIMPLEMENTED` itself.
        .fallback(not_found)
}

/// What Prometheus, Loki and Tempo (Go's `net/http`) answer for an unknown path.
async fn not_found() -> impl IntoResponse {
    (StatusCode::NOT_FOUND, "404 page not found\n")
}

/// The dedicated OTLP/HTTP port.
pub fn otlp_router(state: AppState) -> Router {
    otlp_routes().with_state(state)
}

/// Liveness: the process serves HTTP.
async fn healthz() -> &'static str {
    "ok\n"
}

/// Readiness: the WAL has been replayed and writes are accepted.
async fn readyz(State(s): State<AppState>) -> impl IntoResponse {
    if s.pipeline.is_ready() { (StatusCode::OK, "ready\n") } else { (StatusCode::SERVICE_UNAVAILABLE, "not ready\n") }
}

/// Outpost's own metrics in the OpenMetrics text format.
async fn self_metrics(State(s): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        s.pipeline.telemetry.encode(),
    )
}
