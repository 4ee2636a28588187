//! The Loki HTTP API and Loki push.

use axum::Router;

use crate::http::AppState;

/// This family's routes.
pub fn routes() -> Router<AppState> {
    Router::new()
}
