//! The operators' routes: liveness, readiness, metrics. Never limited by
//! admission, so the service can always say how it is.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use super::error::{ErrorReply, error_response};
use crate::service::NotReady;

/// A health answer.
#[derive(Serialize, ToSchema)]
pub struct HealthReply {
    /// Always `true`.
    pub success: bool,
    /// `ok` (alive) or `ready` (the database answers).
    pub status: String,
}

/// Liveness: the process is up and serving HTTP.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "Alive", body = HealthReply)))]
pub async fn healthz() -> Json<HealthReply> {
    Json(HealthReply {
        success: true,
        status: "ok".into(),
    })
}

/// Readiness: not shutting down, and the database answers.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready", body = HealthReply),
        (status = 503, description = "Shutting down, the database is unreachable, or its disk is full", body = ErrorReply),
    ))]
pub async fn readyz(State(service): State<AppState>) -> Response {
    match service.ready().await {
        Ok(()) => Json(HealthReply {
            success: true,
            status: "ready".into(),
        })
        .into_response(),
        Err(NotReady::ShuttingDown) => {
            error_response(StatusCode::SERVICE_UNAVAILABLE, "Shutting down")
        }
        Err(NotReady::Database) => {
            error_response(StatusCode::SERVICE_UNAVAILABLE, "Database unreachable")
        }
        Err(NotReady::DiskFull) => error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "Database cannot write: its disk is full",
        ),
    }
}

/// Prometheus metrics, in the OpenMetrics text format (here unless the
/// service runs with `--metrics-addr`, which moves them to a port of their own).
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "The metrics",
        content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8", body = String)))]
pub async fn metrics_text(State(service): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
        )],
        service.metrics().render(service.store()),
    )
        .into_response()
}
