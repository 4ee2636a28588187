//! The Tempo HTTP API.

use axum::Router;

use crate::http::AppState;

/// This family's routes.
pub fn routes() -> Router<AppState> {
    Router::new()
}
