//! Outpost's own API under `/outpost/api/v1/*`.

mod related;

use axum::Router;
use axum::routing::get;

use crate::http::AppState;

/// This family's routes.
pub fn routes() -> Router<AppState> {
    Router::new().route("/outpost/api/v1/traces/{id}/related", get(related::related))
}
