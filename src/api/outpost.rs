//! Outpost's own API under `/outpost/api/v1/*`.

use axum::Router;

use crate::http::AppState;

/// This family's routes.
pub fn routes() -> Router<AppState> {
    Router::new()
}
