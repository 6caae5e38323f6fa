//! The REST/JSON adapter. Each route's handler (in the resource's module)
//! reads the request into the operation's typed input with the extractors of
//! [`extract`], calls the same [`Service`] method as the gRPC adapter, and
//! writes the view as the platform's JSON. [`ApiError`](crate::error::ApiError)
//! becomes HTTP in [`error`] only.
//!
//! Every response, the framework's own rejections included, is JSON:
//! `{"success": true, ...}` or `{"success": false, "message": "..."}`.

pub mod conversations;
pub mod error;
mod events;
pub mod extract;
mod messages;
mod middleware;
pub mod openapi;
pub mod operations;
mod policies;
mod providers;
mod routes;
pub mod serve;
mod usage;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::middleware as mw;
use tower_http::timeout::TimeoutLayer;

use crate::config::Timeouts;
use crate::observe::Admission;
use crate::protocol::BODY_LIMIT;
use crate::service::Service;

/// The state every handler shares: the service.
pub type AppState = Arc<Service>;

/// How the gateway is set up.
#[derive(Clone)]
pub struct HttpOptions {
    /// How long a request may take before a 504.
    pub timeouts: Timeouts,
    /// Serve `GET /metrics` here (else on a listener of its own).
    pub metrics: bool,
    /// The limit on API requests in flight, shared with gRPC.
    pub admission: Admission,
}

/// The gateway's routes over the shared service.
pub fn router(service: AppState, opts: &HttpOptions) -> Router {
    let metrics = service.metrics().clone();
    // Store work runs on tasks of its own, so a transaction under way
    // still finishes (or rolls back) on its own; only the wait is cut.
    let limit = |d| TimeoutLayer::with_status_code(StatusCode::GATEWAY_TIMEOUT, d);
    let (quick, _) = routes::quick().split_for_parts();
    let (provider_calls, _) = routes::provider_calls().split_for_parts();
    let (operations, _) = routes::operations(opts.metrics).split_for_parts();
    quick
        .route_layer(limit(opts.timeouts.request))
        .merge(provider_calls.route_layer(limit(opts.timeouts.provider_calls)))
        // Only the API routes are limited; the probes never are.
        .route_layer(mw::from_fn_with_state(
            opts.admission.clone(),
            middleware::admit,
        ))
        .route_layer(mw::from_fn_with_state(
            service.store().clone(),
            middleware::read_scope,
        ))
        .merge(operations.route_layer(limit(opts.timeouts.request)))
        .method_not_allowed_fallback(|| async { StatusCode::METHOD_NOT_ALLOWED })
        .fallback(|| async { StatusCode::NOT_FOUND })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(mw::map_response(middleware::json_errors))
        .layer(mw::from_fn(middleware::request_id))
        .layer(mw::from_fn_with_state(metrics, crate::observe::http))
        .with_state(service)
}

/// The metrics alone, for `--metrics-addr`.
pub fn metrics_router(service: AppState) -> Router {
    Router::new()
        .route("/metrics", axum::routing::get(operations::metrics_text))
        .fallback(|| async { StatusCode::NOT_FOUND })
        .layer(mw::map_response(middleware::json_errors))
        .with_state(service)
}
