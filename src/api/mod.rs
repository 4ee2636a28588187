//! The query and push APIs of the main port, one module per API family, each owning its wire
//! formats and mapping errors to its protocol's error shape in one place:
//! - [`prom`]: the Prometheus HTTP API (`/api/v1/*`) and remote write (`/api/v1/write`);
//! - [`loki`]: the Loki HTTP API and push (`/loki/api/v1/*`);
//! - [`tempo`]: the Tempo HTTP API (`/api/echo`, `/api/traces/*`, `/api/v2/*`, `/api/search`, ...);
//! - [`pyroscope`]: Pyroscope ingest and the connect querier (`/ingest`, `/querier.v1.*`, ...);
//! - [`outpost`]: Outpost's own API (`/outpost/api/v1/*`).

pub mod loki;
pub mod outpost;
pub mod prom;
pub mod pyroscope;
pub mod tempo;

use axum::Router;

use crate::http::AppState;

/// Every API route, to merge into the main port's router.
pub fn routes() -> Router<AppState> {
    Router::new()
        .merge(prom::routes())
        .merge(loki::routes())
        .merge(tempo::routes())
        .merge(pyroscope::routes())
        .merge(outpost::routes())
}
